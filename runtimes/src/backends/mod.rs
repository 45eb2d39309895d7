//! Backend registry: which backend runs which target, and whether it is compiled in.

use std::path::Path;

use crate::manifest::{Manifest, Target};
use crate::{OpenOptions, Runtime, RuntimeError};

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "edgetpu")]
mod edgetpu;
#[cfg(feature = "tract")]
mod tract;

#[cfg(feature = "edgetpu")]
pub use edgetpu::{EDGETPU_ENV, TFLITE_ENV};
#[cfg(feature = "tract")]
pub use tract::{avoid_tract_amx_int8, dense_conv_kernel as tract_dense_conv_kernel, depthwise_kernel as tract_depthwise_kernel, optimize as tract_optimize, kernels as tract_kernels};

#[derive(Clone, Debug)]
pub struct BackendInfo {
    pub name: &'static str,
    pub target: Target,
    /// Compiled into this build (its cargo feature is on).
    pub compiled: bool,
}

pub fn backends() -> Vec<BackendInfo> {
    vec![
        BackendInfo { name: "tract", target: Target::Cpu, compiled: cfg!(feature = "tract") },
        BackendInfo { name: "edgetpu", target: Target::Coral, compiled: cfg!(feature = "edgetpu") },
        BackendInfo { name: "cuda", target: Target::Jetson, compiled: cfg!(feature = "cuda") },
    ]
}

pub(crate) fn open(dir: &Path, manifest: Manifest, opts: &OpenOptions) -> Result<Box<dyn Runtime>, RuntimeError> {
    match manifest.target {
        #[cfg(feature = "tract")]
        Target::Cpu => Ok(Box::new(tract::TractRuntime::open(dir, manifest, opts)?)),
        #[cfg(not(feature = "tract"))]
        Target::Cpu => {
            let _ = (dir, opts);
            Err(not_compiled("tract", "tract"))
        }
        #[cfg(feature = "edgetpu")]
        Target::Coral => Ok(Box::new(edgetpu::EdgeTpuRuntime::open(dir, manifest, opts)?)),
        #[cfg(not(feature = "edgetpu"))]
        Target::Coral => Err(not_compiled("edgetpu", "edgetpu")),
        #[cfg(feature = "cuda")]
        Target::Jetson => Ok(Box::new(cuda::CudaRuntime::open(dir, manifest, opts)?)),
        #[cfg(not(feature = "cuda"))]
        Target::Jetson => Err(not_compiled("cuda", "cuda")),
    }
}

#[allow(dead_code)]
fn not_compiled(backend: &str, feature: &str) -> RuntimeError {
    RuntimeError::Unavailable {
        backend: backend.into(),
        why: format!("not compiled in; rebuild effv2-runtime with the `{feature}` cargo feature"),
    }
}
