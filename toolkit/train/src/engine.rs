//! The interface the training loop drives. Everything a backend owns — activations, gradients,
//! optimizer slots, EMA shadows — stays inside it; only logits, the loss gradient and host copies
//! of the weights cross the boundary, so a CUDA engine fits the same loop.

use effv2_edge::graph::Graph;
use effv2_edge::tensor::Tensor;
use effv2_edge::weights::Weights;

use crate::TrainError;

/// How a forward pass treats BN, dropout and stochastic depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics (running stats updated), dropout and drop-path masks drawn from the seed.
    Train,
    /// Running statistics, no dropout: the raw weights.
    Eval,
    /// As [`Mode::Eval`] with the EMA shadows of the weights and BN statistics (falls back to the
    /// raw weights when the engine keeps no EMA).
    EvalEma,
}

pub trait TrainEngine {
    /// Backend name for logs (`cpu`, `cuda`).
    fn name(&self) -> &'static str;

    /// Switch to another graph of the same model — another image size or dropout rate (a
    /// progressive stage) — keeping weights, optimizer slots and EMA.
    fn set_graph(&mut self, graph: &Graph) -> Result<(), TrainError>;

    /// `input`: `[batch, C, H, W]` NCHW. Returns the logits `[batch, classes]`. `seed` draws the
    /// dropout and drop-path masks, so a step replays exactly.
    fn forward(&mut self, input: &[f32], batch: usize, mode: Mode, seed: u64) -> Result<Vec<f32>, TrainError>;

    /// Gradients of every trainable parameter from dLoss/dLogits of the last [`Mode::Train`]
    /// forward (the loss already averaged over the batch).
    fn backward(&mut self, dlogits: &[f32]) -> Result<(), TrainError>;

    /// One optimizer update with the gradients of the last backward.
    fn step(&mut self, lr: f32) -> Result<(), TrainError>;

    /// `shadow = decay·shadow + (1-decay)·value` for every weight and BN statistic.
    fn ema_update(&mut self, decay: f32) -> Result<(), TrainError>;

    /// Host copy of the raw weights, BN running statistics included. (An error only where the
    /// weights live on a device that failed.)
    fn weights(&self) -> Result<Weights, TrainError>;

    /// Host copy of the EMA shadows, when the engine keeps them.
    fn ema_weights(&self) -> Result<Option<Weights>, TrainError>;

    /// Optimizer slots by name (`<param>/<slot>`), for resuming.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>, TrainError>;

    /// Restore what [`weights`](Self::weights), [`ema_weights`](Self::ema_weights) and
    /// [`optimizer_state`](Self::optimizer_state) gave.
    fn load_state(&mut self, weights: &Weights, ema: Option<&Weights>, slots: &[(String, Tensor)]) -> Result<(), TrainError>;
}
