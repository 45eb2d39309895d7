//! Backend registry: which backend runs which target, and whether it is compiled in.

use std::path::Path;

use serde::Serialize;

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
pub use tract::{avoid_tract_amx_int8, dense_conv_kernel as tract_dense_conv_kernel, depthwise_kernel as tract_depthwise_kernel, optimize as tract_optimize, kernels as tract_kernels, qdq_rewrite as tract_qdq_rewrite};

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

/// Whether a backend's artifacts run on this machine, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Readiness {
    /// Its target's artifacts run here as deployed: cpu on this CPU, coral on an Edge TPU, jetson
    /// on a CUDA GPU.
    Ready,
    /// They run, but not on the accelerator: coral artifacts on TFLite's CPU kernels.
    CpuFallback,
    /// They cannot be opened here; the status's `detail` says why.
    Unavailable,
}

/// What one backend found on this machine: for a device check before measuring
/// (`effv2-bench devices`), so a missing driver or library shows up before a run does.
#[derive(Clone, Debug, Serialize)]
pub struct BackendStatus {
    pub name: &'static str,
    pub target: Target,
    pub compiled: bool,
    pub readiness: Readiness,
    /// The accelerators found, one line each (GPUs, Edge TPUs); empty for the CPU.
    pub devices: Vec<String>,
    /// The libraries and versions found, or why the backend cannot run here.
    pub detail: String,
}

/// One backend's findings, before the registry adds its name.
#[cfg_attr(not(any(feature = "tract", feature = "edgetpu", feature = "cuda")), allow(dead_code))]
pub(crate) struct Found {
    pub readiness: Readiness,
    pub devices: Vec<String>,
    pub detail: String,
}

#[cfg_attr(not(any(feature = "edgetpu", feature = "cuda")), allow(dead_code))]
impl Found {
    pub fn unavailable(why: impl Into<String>) -> Found {
        Found { readiness: Readiness::Unavailable, devices: vec![], detail: why.into() }
    }
}

/// Every backend's status on this machine. Loads the libraries a backend would (never a panic
/// where one is missing) but opens no device: it does not disturb a device another process uses.
pub fn probe() -> Vec<BackendStatus> {
    backends()
        .into_iter()
        .map(|b| {
            let found = match b.target {
                #[cfg(feature = "tract")]
                Target::Cpu => tract::probe(),
                #[cfg(feature = "edgetpu")]
                Target::Coral => edgetpu::probe(),
                #[cfg(feature = "cuda")]
                Target::Jetson => cuda::probe(),
                #[allow(unreachable_patterns)]
                _ => Found::unavailable(not_compiled_why(b.name)),
            };
            BackendStatus { name: b.name, target: b.target, compiled: b.compiled, readiness: found.readiness, devices: found.devices, detail: found.detail }
        })
        .collect()
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
    RuntimeError::Unavailable { backend: backend.into(), why: not_compiled_why(feature) }
}

fn not_compiled_why(feature: &str) -> String {
    format!("not compiled in; rebuild effv2-runtime with the `{feature}` cargo feature")
}
