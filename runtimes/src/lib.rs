//! effv2-runtime: the small crate apps embed to run effv2-edge artifacts.
//!
//! `open(dir)` verifies `manifest.json` (format, shapes, sha256 of every file), picks the backend
//! for the artifact's target, and returns a [`Runtime`]. Backends sit behind cargo features so an
//! app pulls only what it uses; a backend that is not compiled in, or whose system library is
//! missing, is a clear [`RuntimeError`], never a panic.

pub mod manifest;
pub mod plan;
pub mod preprocess;
mod backends;

use std::path::{Path, PathBuf};

pub use backends::{backends, probe, BackendInfo, BackendStatus, Readiness};
/// Environment variables naming libtensorflowlite_c and libedgetpu (else the standard names).
#[cfg(feature = "edgetpu")]
pub use backends::{EDGETPU_ENV, TFLITE_ENV};
#[cfg(feature = "tract")]
pub use backends::{avoid_tract_amx_int8, tract_dense_conv_kernel, tract_depthwise_kernel, tract_optimize, tract_kernels, tract_qdq_rewrite};
/// The CUDA backend's library probe, kernel compiler and graph switch (for tools and tests).
#[cfg(feature = "cuda")]
pub use backends::cuda;
pub use manifest::{Manifest, Precision, Target};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {why}")]
    Artifact { path: PathBuf, why: String },
    #[error("artifact is for target {found}, not {wanted}")]
    WrongTarget { wanted: Target, found: Target },
    #[error("backend {backend:?} is not available: {why}")]
    Unavailable { backend: String, why: String },
    #[error("input has {got} values; this runtime takes {want} ({shape:?} float32 {layout})")]
    InputSize { got: usize, want: usize, shape: Vec<usize>, layout: String },
    #[error("{backend}: {why}")]
    Backend { backend: String, why: String },
}

/// Options for opening an artifact.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Batch size to run (default: the manifest's).
    pub batch: Option<usize>,
    /// Worker threads (default: 1; backends that cannot use more ignore it).
    pub threads: Option<usize>,
    /// Refuse artifacts of another target.
    pub expect_target: Option<Target>,
}

/// A loaded model, ready to run batches.
pub trait Runtime: Send {
    /// Backend name, e.g. "tract".
    fn backend(&self) -> &str;
    /// Where it runs, e.g. "cpu x86_64, 2 threads".
    fn device(&self) -> String;
    /// True when the model runs on the target's accelerator (the Edge TPU for coral), false on
    /// a CPU — including a backend's CPU fallback, which `device()` explains.
    fn on_accelerator(&self) -> bool {
        false
    }
    /// The verified manifest of the artifact.
    fn manifest(&self) -> &Manifest;
    /// Input shape this runtime was prepared for: [N, C, H, W].
    fn input_shape(&self) -> [usize; 4];
    /// Run one batch (float32 NCHW, preprocessed) and return the logits, [N, classes] row-major.
    fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, RuntimeError>;
    /// GPU backends: run the network again on the batch already on the device, without the host
    /// copies, and wait for it — for throughput comparable with frameworks that keep batches on
    /// the GPU. `None` where a backend has no such split.
    fn run_on_device(&mut self) -> Option<Result<(), RuntimeError>> {
        None
    }
}

/// Verify the artifact at `dir` and open it with the backend for its target.
pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Box<dyn Runtime>, RuntimeError> {
    let manifest = Manifest::load_verified(dir)?;
    if let Some(wanted) = opts.expect_target {
        if wanted != manifest.target {
            return Err(RuntimeError::WrongTarget { wanted, found: manifest.target });
        }
    }
    backends::open(dir, manifest, opts)
}

/// Shared input check for backends.
#[cfg_attr(not(any(feature = "tract", feature = "edgetpu", feature = "cuda")), allow(dead_code))]
pub(crate) fn check_input(input: &[f32], shape: [usize; 4]) -> Result<(), RuntimeError> {
    let want = shape.iter().product();
    if input.len() != want {
        return Err(RuntimeError::InputSize { got: input.len(), want, shape: shape.to_vec(), layout: "NCHW".into() });
    }
    Ok(())
}
