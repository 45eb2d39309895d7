//! effv2-quantize: post-training int8 quantization of the effv2-edge graph, with TFLite's
//! parameters and arithmetic.
//!
//! Flow: [`Calibration::run`] folds BN and runs the f32 engine (unfused) over calibration batches,
//! observing every value; [`Calibration::quantize`] picks ranges ([`RangeMethod`]) and lowers the
//! graph to a [`QModel`] — TFLite-shaped (NHWC, OHWI / `[1,k,k,C]` filters, per-channel symmetric
//! weights, per-tensor asymmetric activations, int32 biases at s_in·s_w), so writers serialize it
//! as is; [`QModel::execute`] runs it in integer arithmetic, bit for bit as TFLite's reference
//! kernels do ([`fixed`] holds the fixed-point helpers they share).

mod calibrate;
mod exec;
pub mod fixed;
pub mod layout;
mod lower;
pub mod model;
pub mod observe;
pub mod params;

pub use calibrate::Calibration;
pub use exec::Buf;
pub use lower::lower;
pub use model::{ConstData, DType, FusedAct, IoType, OpKind, Padding, QModel, QOp, QTensor, Quant, TensorId};
pub use observe::RangeMethod;
pub use params::QParams;

use effv2_edge::engine::EngineError;
use effv2_edge::graph::{FoldError, Graph, Shape};
use effv2_edge::weights::{Weights, WeightsError};
use effv2_edge::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("the calibration set is empty: give at least one image")]
    EmptyCalibration,
    #[error("calibration batch {index} has shape {got:?}, expected [N, {}, {}, {}] float32 (NCHW, N >= 1)", want.c, want.h, want.w)]
    CalibrationShape { index: usize, want: Shape, got: Vec<usize> },
    #[error("{method:?} needs histograms: calibrate with histograms on")]
    NoHistograms { method: RangeMethod },
    #[error("node {node:?}: {op} cannot be quantized to int8 TFLite ops ({why})")]
    Unsupported { node: String, op: String, why: String },
    #[error("value {node:?} was never observed during calibration, so it has no range")]
    NoRange { node: String },
    #[error("input has shape {got:?}, the model expects {want:?}")]
    InputShape { want: Vec<usize>, got: Vec<usize> },
    #[error("int8 execution of {op} ({node:?}) failed: {reason}")]
    Exec { node: String, op: &'static str, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("internal quantizer error (a bug): {0}")]
    Internal(String),
}

/// What [`quantize`] does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantizeOptions {
    pub method: RangeMethod,
    pub io: IoType,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions { method: RangeMethod::Percentile(99.99), io: IoType::Int8 }
    }
}

/// Calibrate `graph` (BN folded or not) on `batches` and lower it to an int8 model.
pub fn quantize(graph: &Graph, weights: &Weights, batches: &[Tensor], opts: &QuantizeOptions) -> Result<QModel, QuantizeError> {
    Calibration::run(graph, weights, batches, opts.method.needs_histogram())?.quantize(opts.method, opts.io)
}
