//! effv2-bench: latency of effv2-edge artifacts on the device they run on, and the
//! Fused-MBConv placement sweep (build each placement, measure it, write a report and a plot).
//!
//! The `effv2-bench` binary and `effv2-edge bench` both parse [`cli::BenchCommand`] and call
//! [`cli::execute`], so they run the same code.

pub mod cli;
pub mod coral;
pub mod coral_report;
pub mod data_rate;
pub mod devices;
pub mod machine;
pub mod measure;
pub mod report;
pub mod stats;
pub mod svg;
pub mod sweep;
pub mod train_step;

use std::path::PathBuf;

/// Everything that can go wrong in a bench run; the binaries add exit codes.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Runtime(#[from] effv2_runtime::RuntimeError),
    #[error(transparent)]
    Build(#[from] effv2_targets::cpu::BuildError),
    #[error(transparent)]
    Source(#[from] effv2_targets::source::SourceError),
    #[error(transparent)]
    Coral(#[from] effv2_targets::coral::CoralError),
    #[error(transparent)]
    Spec(#[from] effv2_edge::spec::SpecError),
    #[error(transparent)]
    Graph(#[from] effv2_edge::graph::GraphError),
    #[error("bad --fused-stages {spec:?}: {why}")]
    Placement { spec: String, why: String },
    #[error(transparent)]
    Train(#[from] effv2_train::TrainError),
    #[error("{0}")]
    Args(String),
    #[error("--target {0} is not implemented yet in this version (cpu, jetson and coral are)")]
    TargetNotImplemented(effv2_runtime::Target),
    #[error("{backend} returned {got} values for a [{batch}, {classes}] output{extra}")]
    BadOutput { backend: String, got: usize, batch: usize, classes: usize, extra: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io { path: path.to_path_buf(), source }
}
