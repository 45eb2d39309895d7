//! The training loop: stages, epochs, steps, evaluation, checkpoints and metrics, driving any
//! [`TrainEngine`](crate::TrainEngine). Everything random comes from the config's seed by (epoch, step, batch), so
//! `--resume` after a kill replays the identical schedule from the last completed epoch.

pub mod checkpoint;
mod eval;
mod fit;
pub mod metrics;

use serde::{Deserialize, Serialize};

use effv2_edge::spec::{CropMode, Interpolation, ModelOptions, ModelSpec, Preprocess};
use effv2_edge::weights::{ModelConfig, FORMAT_VERSION};

use crate::data::AugmentConfig;
use crate::optim::Optimizer;
use crate::progressive::Progressive;
use crate::schedule::Decay;
use crate::TrainError;

pub use eval::{evaluate, EvalResult};
pub use fit::{resume, train, Event, Summary};

/// Everything that decides a run; saved with every checkpoint so a resume needs only the directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub variant: String,
    pub options: ModelOptions,
    /// `fashion-mnist` or an ImageFolder directory.
    pub data: String,
    /// Use only the first N training / test samples (smoke runs and tests).
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub warmup_epochs: f64,
    pub decay: Decay,
    pub weight_decay: f32,
    pub label_smoothing: f32,
    /// EMA decay (TF warm-up rule applied); `None` keeps no EMA.
    pub ema_decay: Option<f32>,
    pub progressive: Progressive,
    pub eval_size: usize,
    pub augment: AugmentConfig,
    pub seed: u64,
    pub workers: usize,
    /// Storage of activations and gradients on the CUDA engine (the CPU engine trains fp32);
    /// absent in configs written before it existed.
    #[serde(default)]
    pub precision: Precision,
    /// GPUs to train on data-parallel (`--device cuda`); `batch` is the global batch, split over them.
    #[serde(default = "one")]
    pub gpus: usize,
}

fn one() -> usize {
    1
}

/// Training precision: fp32; tf32 (f32 storage, the convolutions and products on TF32 tensor cores
/// as PyTorch's `allow_tf32`: inputs rounded to a 10-bit mantissa, f32 sums; CUDA only); or bf16
/// mixed precision (bf16 activations and gradients, f32 master weights, statistics and optimizer;
/// no loss scaling needed; CUDA only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Tf32,
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Tf32, Precision::Bf16];

    /// The precision [`Precision::name`] names.
    pub fn from_name(name: &str) -> Option<Precision> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.to_string()));
        self.progressive.validate()?;
        if self.epochs == 0 || self.batch == 0 {
            return bad("--epochs and --batch-size must be at least 1");
        }
        if self.gpus == 0 || self.batch < self.gpus {
            return bad("--gpus must be at least 1 and at most --batch-size (the global batch is split over the GPUs)");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) || self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return bad("--label-smoothing must be in [0, 1) and --weight-decay >= 0");
        }
        if self.ema_decay.is_some_and(|d| !(0.0..1.0).contains(&d)) {
            return bad("--ema-decay must be in [0, 1)");
        }
        if self.eval_size == 0 || self.augment.mean.len() != self.options.in_channels || self.augment.std.contains(&0.0) {
            return bad("eval size must be positive and mean/std need one non-zero value per input channel");
        }
        ModelSpec::from_name(&self.variant, self.options.clone()).map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(())
    }

    /// The checkpoint config: the model, eval preprocessing (whole image resized, as in training's
    /// eval) and class names.
    pub fn model_config(&self, labels: Vec<String>) -> ModelConfig {
        let preprocess = Preprocess {
            mean: self.augment.mean.clone(),
            std: self.augment.std.clone(),
            interpolation: Interpolation::Bilinear,
            size: self.eval_size,
            crop_pct: 1.0,
            crop: CropMode::Squash,
        };
        ModelConfig { format_version: FORMAT_VERSION, variant: self.variant.clone(), options: self.options.clone(), preprocess, labels: Some(labels), source: None }
    }
}
