//! CUDA backend for `--target jetson` artifacts (any CUDA GPU): `plan.json` + `weights.bin` run by
//! our own engine — cuDNN convolutions (NHWC, fp16 or fp32 with f32 accumulation), NVRTC kernels
//! for depthwise convs and the element-wise work, a static memory plan and CUDA-graph replay.
//! Every CUDA library is dlopened on first use (cudarc's dynamic loading), so this builds and
//! runs on machines without CUDA; there, opening an artifact is a clear error.

pub mod blas;
pub mod cudnn;
mod engine;
mod probe;
pub mod profile;

use std::path::Path;

use cudarc::driver::CudaContext;

pub use cudnn::DType;
pub use engine::{compile_kernels, compile_source, fail, launch_kernel, ptr, stage, DW_UNROLL_ENV, KERNELS};
use engine::Engine;
pub(crate) use probe::probe;

use crate::manifest::{Manifest, Precision};
use crate::plan::{read_weights, NetPlan, PLAN_ROLE, WEIGHTS_ROLE};
use crate::{check_input, OpenOptions, Runtime, RuntimeError};

/// Set to `0` to launch kernels one by one instead of replaying a captured CUDA graph.
pub const CUDA_GRAPH_ENV: &str = "EFFV2_CUDA_GRAPH";
/// Set to `0` to keep cuDNN's heuristic algorithm choice instead of timing the candidates at load.
pub const CUDNN_TUNE_ENV: &str = "EFFV2_CUDNN_TUNE";

/// A switch that is on unless its variable is `0` ([`CUDA_GRAPH_ENV`], [`CUDNN_TUNE_ENV`]).
pub fn switch_on(var: &str) -> bool {
    std::env::var(var).map_or(true, |v| v != "0")
}

fn err(why: impl Into<String>) -> RuntimeError {
    RuntimeError::Backend { backend: "cuda".into(), why: why.into() }
}

fn unavailable(why: impl Into<String>) -> RuntimeError {
    RuntimeError::Unavailable { backend: "cuda".into(), why: why.into() }
}

/// Checks that the libraries the engine dlopens are present, naming the first that is not.
/// (cudarc panics on a missing library, so this runs before any CUDA call.)
pub fn probe_libraries() -> Result<(), RuntimeError> {
    missing_library().map_or(Ok(()), |why| Err(unavailable(why)))
}

/// "no X found (hint)" for the first library the engine dlopens that is not present.
fn missing_library() -> Option<String> {
    type Probe = (&'static str, fn() -> bool, &'static str);
    let libs: [Probe; 4] = [
        ("CUDA driver", || unsafe { cudarc::driver::sys::is_culib_present() }, "libcuda.so.1: no NVIDIA driver on this machine"),
        ("NVRTC", nvrtc_present, "libnvrtc.so: add the CUDA toolkit's lib folder to LD_LIBRARY_PATH"),
        ("cuDNN", || unsafe { cudarc::cudnn::sys::is_culib_present() }, "libcudnn.so.9: install cuDNN 9 or add its folder to LD_LIBRARY_PATH"),
        ("cuBLAS", || unsafe { cudarc::cublas::sys::is_culib_present() }, "libcublas.so.13: add the CUDA toolkit's lib folder to LD_LIBRARY_PATH"),
    ];
    libs.into_iter().find(|(_, present, _)| !present()).map(|(what, _, hint)| format!("no {what} found ({hint})"))
}

/// Whether libnvrtc can be loaded (kernels compile without a GPU).
pub fn nvrtc_present() -> bool {
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Set by scripts/test.sh (which installs NVRTC): then a test may not skip for want of it.
pub const REQUIRE_NVRTC_ENV: &str = "EFFV2_REQUIRE_NVRTC";

/// For tests that compile kernels: whether NVRTC is here; panics if it is missing although
/// [`REQUIRE_NVRTC_ENV`] says it must not be, and says so when the caller is about to skip.
pub fn nvrtc_for_tests() -> bool {
    if nvrtc_present() {
        return true;
    }
    assert!(std::env::var(REQUIRE_NVRTC_ENV).is_err(), "{REQUIRE_NVRTC_ENV} is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)");
    eprintln!("skipped: no libnvrtc on this machine");
    false
}

pub struct CudaRuntime {
    manifest: Manifest,
    engine: Engine,
    shape: [usize; 4],
    device: String,
}

// The engine's CUDA handles are used only through `&mut self`, one call at a time, and each run
// binds the context to the calling thread first.
unsafe impl Send for CudaRuntime {}

impl CudaRuntime {
    pub fn open(dir: &Path, manifest: Manifest, opts: &OpenOptions) -> Result<Self, RuntimeError> {
        let dtype = match manifest.precision {
            Precision::Fp32 => DType::F32,
            Precision::Fp16 => DType::F16,
            Precision::Bf16 => DType::Bf16,
            p => return Err(err(format!("the CUDA engine runs fp32, fp16 and bf16 artifacts, not {p}"))),
        };
        let read = |role: &str| {
            let f = manifest.file(role).ok_or_else(|| err(format!("the artifact has no {role:?} file (built before the CUDA backend existed?)")))?;
            let path = Manifest::path_of(dir, f);
            std::fs::read(&path).map_err(|e| RuntimeError::Artifact { path: path.clone(), why: e.to_string() })
        };
        let plan_bytes = read(PLAN_ROLE)?;
        let plan = NetPlan::from_json(&String::from_utf8_lossy(&plan_bytes)).map_err(|e| err(format!("plan.json: {e}")))?;
        let weights = read_weights(&read(WEIGHTS_ROLE)?, &plan).map_err(|e| err(format!("weights.bin: {e}")))?;
        let [_, c, h, w] = <[usize; 4]>::try_from(manifest.input.shape.as_slice()).map_err(|_| err("manifest input is not 4-D"))?;
        if [c, h, w] != plan.input {
            return Err(err(format!("plan input {:?} differs from the manifest's {:?}", plan.input, [c, h, w])));
        }
        let n = opts.batch.unwrap_or(manifest.input.shape[0]).max(1);

        probe_libraries()?;
        let ctx = CudaContext::new(0).map_err(|e| unavailable(format!("no usable CUDA GPU ({e})")))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().unwrap_or((0, 0));
        let engine = Engine::new(ctx, &plan, &weights, n, dtype, switch_on(CUDA_GRAPH_ENV), switch_on(CUDNN_TUNE_ENV)).map_err(err)?;
        let mode = if engine.graph_captured() { "CUDA graph" } else { "eager launches" };
        let mib = engine.device_bytes as f64 / (1024.0 * 1024.0);
        let device = format!("cuda {name} (sm_{major}{minor}), {}, {mode}, {mib:.0} MiB device memory", manifest.precision);
        Ok(CudaRuntime { manifest, engine, shape: [n, c, h, w], device })
    }
}

impl Runtime for CudaRuntime {
    fn backend(&self) -> &str {
        "cuda"
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn on_accelerator(&self) -> bool {
        true
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn input_shape(&self) -> [usize; 4] {
        self.shape
    }

    fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        check_input(input, self.shape)?;
        self.engine.run(input).map_err(err)
    }

    fn run_on_device(&mut self) -> Option<Result<(), RuntimeError>> {
        Some(self.engine.rerun().map_err(err))
    }
}
