//! One error type for training: engine misuse, bad data, I/O on run directories.

use effv2_edge::engine::EngineError;
use effv2_edge::graph::GraphError;
use effv2_edge::weights::{CheckpointError, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("node {node:?}: {op} is not supported by the training engine")]
    Unsupported { node: String, op: String },
    #[error("input holds {got} values, expected {want} ({what})")]
    Size { what: &'static str, want: usize, got: usize },
    #[error("{0}")]
    Misuse(String),
    /// A data-parallel collective gave up because another replica failed (that one's error is the
    /// one to report).
    #[error("data-parallel group aborted: another replica failed")]
    GroupAborted,
    /// The CUDA engine: a missing driver or library, or a failed CUDA call (named).
    #[error("CUDA: {0}")]
    Device(String),
    #[error("the new graph's parameters differ from the engine's (param {0:?}); progressive stages must keep the model")]
    ParamsChanged(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Config(String),
    #[error("loss became {value} at epoch {epoch}, step {step}; stopped (the last good checkpoint is kept). Try a lower --lr or --batch-size")]
    NonFinite { value: f32, epoch: usize, step: u64 },
}

impl TrainError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.as_ref().display().to_string(), source }
    }
}
