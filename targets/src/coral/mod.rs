//! `--target coral`: a full-integer `.tflite` for the Coral Edge TPU, with an Edge TPU report
//! (op mapping and partition, parameter bytes vs the on-chip cache, activation sizes, MACs and a
//! predicted latency from a cost model fitted to Coral's published latencies), and — when
//! `edgetpu_compiler` is on PATH — the compiled model, its log and a comparison with our report.

pub mod analysis;
mod build;
pub mod compiler;
pub mod cost;
pub mod reference;
pub mod report;
mod report_md;
pub mod validate;

pub use build::*;
/// Calibration sources live in [`crate::calib`] (shared with the cpu int8 build); kept here by path.
pub use crate::calib;
pub use report_md::markdown;
/// Re-exported so callers (the CLI, the bench) need no direct dependency on effv2-quantize.
pub use effv2_quantize::{IoType, RangeMethod};

use effv2_edge::engine::EngineError;
use effv2_edge::graph::GraphError;
use effv2_quantize::QuantizeError;

use crate::artifact::ArtifactError;
use crate::source::SourceError;
use crate::tflite::TfliteError;

#[derive(Debug, thiserror::Error)]
pub enum CoralError {
    #[error(transparent)]
    Calib(#[from] crate::calib::CalibError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Tflite(#[from] TfliteError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error("internal error (a bug): {0}")]
    Internal(String),
}
