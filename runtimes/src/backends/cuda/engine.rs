//! The CUDA engine: a plan turned, once at load, into a fixed list of launches over one
//! activation arena (offsets from the static memory plan), one parameter buffer (weights repacked
//! for NHWC, f32 biases), one cuDNN workspace and a cuBLAS handle for the 1x1-image matrix products. A run copies the input in, replays the launches
//! (as one captured CUDA graph when capture works) and copies the logits out; nothing is allocated.

use std::sync::Arc;

use cudarc::driver::{sys::CUstreamCaptureMode, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use super::blas::Blas;
use super::switch_on;
use super::cudnn::{self, DType, Handle};
use super::profile::{self, PassTimer, Profile};
use crate::plan::launch::{grid, Arg, BlasGemm, LaunchSpec, Layout, BLOCK, KERNEL_NAMES};
use crate::plan::NetPlan;

/// The inference kernels as NVRTC compiles them: the activation type first (`precision.cu`).
pub const KERNELS: &str = concat!(include_str!("precision.cu"), include_str!("kernels.cu"));
/// Largest cuDNN workspace an algorithm may ask for.
const MAX_WORKSPACE: usize = 512 << 20;
/// Workspace offered to algorithms while timing them (freed before the engine runs).
const TUNE_WORKSPACE: usize = 256 << 20;

/// Time cuDNN's algorithms for every conv on its own buffers (once per distinct shape) and keep the
/// fastest; returns the workspace the chosen ones need. Overwrites activations (before any run).
fn tune_convs(cudnn: &Handle, stream: &Arc<CudaStream>, launches: &mut [Launch]) -> Result<usize, String> {
    let ws = stream.alloc_zeros::<u8>(TUNE_WORKSPACE).map_err(|e| fail("allocating the tuning workspace", e))?;
    let ws_ptr = ptr(&ws, stream);
    let mut chosen: std::collections::HashMap<cudnn::ConvShape, (cudarc::cudnn::sys::cudnnConvolutionFwdAlgo_t, usize)> = Default::default();
    let mut need = 0;
    for l in launches.iter_mut() {
        if let Launch::Conv { conv, x, w, y } = l {
            let (algo, len) = *chosen.entry(conv.shape).or_insert_with(|| {
                unsafe { conv.tune(cudnn, *x, *w, *y, ws_ptr, TUNE_WORKSPACE) };
                (conv.algo, conv.workspace)
            });
            (conv.algo, conv.workspace) = (algo, len);
            need = need.max(len);
        }
    }
    stream.synchronize().map_err(|e| fail("tuning convolutions", e))?;
    Ok(need)
}

enum Launch {
    Kernel { f: usize, total: usize, args: Vec<Arg> },
    Conv { conv: cudnn::Conv, x: u64, w: u64, y: u64 },
    Gemm { g: BlasGemm, w: u64, x: u64, y: u64 },
}

pub struct Engine {
    /// Device memory the engine holds: activations, parameters, workspace, input and output.
    pub device_bytes: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cudnn: Handle,
    blas: Blas,
    dtype: DType,
    fns: Vec<CudaFunction>,
    launches: Vec<Launch>,
    workspace: (u64, usize),
    input: CudaSlice<f32>,
    /// Pinned host memory the input is staged in (see [`stage`]), so its upload is one DMA.
    staged: PinnedHostSlice<f32>,
    output: CudaSlice<f32>,
    graph: Option<CudaGraph>,
    /// `EFFV2_CUDA_PROFILE`: per-launch times of every pass (run launch by launch), printed on drop.
    profile: Option<Profile>,
    // Kept alive for the raw addresses in `launches`.
    _arena: CudaSlice<u8>,
    _params: CudaSlice<u8>,
    _workspace: CudaSlice<u8>,
}

/// `dst = src` (same length) for an upload from pinned memory: large copies split over up to 8
/// threads, as one core cannot fill pinned, write-combined memory as fast as the link drains it
/// (the driver's own pageable path measured 8.4 GB/s on the H200 machine).
pub fn stage(src: &[f32], dst: &mut [f32]) {
    const ONE_THREAD: usize = 1 << 18; // 1 MiB: below, spawning costs more than it saves
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if src.len() <= ONE_THREAD || threads == 1 {
        dst.copy_from_slice(src);
        return;
    }
    let piece = src.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (d, c) in dst.chunks_mut(piece).zip(src.chunks(piece)) {
            s.spawn(move || d.copy_from_slice(c));
        }
    });
}

/// An error at a named stage of loading or running.
pub fn fail(stage: &str, e: impl std::fmt::Debug) -> String {
    format!("{stage}: {e:?}")
}

/// The kernels' PTX for `dtype` (NVRTC; no GPU needed). `arch` like "compute_90".
pub fn compile_kernels(dtype: DType, arch: Option<String>) -> Result<cudarc::nvrtc::Ptx, String> {
    compile_source(KERNELS, "effv2_kernels.cu", dtype.kernel_defines(), arch)
}

/// `0`: the depthwise kernels take k at run time instead of being compiled for k = 3 (their taps
/// unrolled), so a GPU run can time the two (`-DEFFV2_DW_RUNTIME_K`).
pub const DW_UNROLL_ENV: &str = "EFFV2_CUDA_DW_UNROLL";

/// Any of our CUDA sources to PTX with NVRTC (the training engine's kernels go through here too).
pub fn compile_source(src: &str, name: &str, mut options: Vec<String>, arch: Option<String>) -> Result<cudarc::nvrtc::Ptx, String> {
    // Our sources are device code only; unannotated functions (the generic lambdas precision.cu's
    // with_act dispatches to) are device functions.
    options.push("-default-device".into());
    if !switch_on(DW_UNROLL_ENV) {
        options.push("-DEFFV2_DW_RUNTIME_K".into());
    }
    if let Some(a) = arch {
        options.push(format!("--gpu-architecture={a}"));
    }
    let opts = CompileOptions { options, name: Some(name.into()), ..Default::default() };
    compile_ptx_with_opts(src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => format!("NVRTC could not compile {name}:\n{}", log.to_string_lossy()),
        e => fail("NVRTC", e),
    })
}

/// One grid-stride kernel over `total` elements, in blocks of [`BLOCK`] threads, with a launch
/// list's arguments.
///
/// # Safety
/// `args` must match the kernel's parameters and address live device buffers of the sizes it reads.
pub unsafe fn launch_kernel(stream: &Arc<CudaStream>, f: &CudaFunction, total: usize, args: &[Arg]) -> Result<(), cudarc::driver::DriverError> {
    let mut b = stream.launch_builder(f);
    for a in args {
        match a {
            Arg::Ptr(p) => b.arg(p),
            Arg::I32(v) => b.arg(v),
            Arg::I64(v) => b.arg(v),
            Arg::F32(v) => b.arg(v),
            Arg::F64(v) => b.arg(v),
        };
    }
    let cfg = LaunchConfig { grid_dim: (grid(total), 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    unsafe { b.launch(cfg) }.map(|_| ())
}

/// The device address of a buffer (the engine and cuBLAS work on raw addresses).
pub fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p
}

impl Engine {
    pub fn new(ctx: Arc<CudaContext>, plan: &NetPlan, weights: &[f32], batch: usize, dtype: DType, use_graph: bool, tune: bool) -> Result<Engine, String> {
        let layout = Layout::new(plan, weights, batch, dtype)?;
        let stream = ctx.new_stream().map_err(|e| fail("creating a stream", e))?;
        // One stream, launches in order: cudarc's per-buffer events would only cost time and
        // would break graph capture.
        unsafe { ctx.disable_event_tracking() };
        let cudnn = Handle::new(&stream).map_err(|e| fail("creating the cuDNN handle", e))?;
        let blas = Blas::new(&stream, false)?;
        let (major, minor) = ctx.compute_capability().map_err(|e| fail("reading the compute capability", e))?;
        let ptx = compile_kernels(dtype, Some(format!("compute_{major}{minor}")))?;
        let module = ctx.load_module(ptx).map_err(|e| fail("loading the kernels", e))?;
        let fns = KERNEL_NAMES.iter().map(|n| module.load_function(n).map_err(|e| fail(n, e))).collect::<Result<Vec<_>, _>>()?;

        let arena = stream.alloc_zeros::<u8>(layout.arena_bytes.max(256)).map_err(|e| fail("allocating activations", e))?;
        let params = stream.clone_htod(&layout.params).map_err(|e| fail("uploading weights", e))?;
        let input = stream.alloc_zeros::<f32>(layout.input_len).map_err(|e| fail("allocating the input", e))?;
        // SAFETY: page-locked host memory of this context, written only through as_mut_slice
        // (which waits for the upload that last read it).
        let staged = unsafe { ctx.alloc_pinned::<f32>(layout.input_len.max(1)) }.map_err(|e| fail("allocating pinned memory for the input", e))?;
        let output = stream.alloc_zeros::<f32>(layout.output_len).map_err(|e| fail("allocating the output", e))?;
        let specs = layout.launches(plan, ptr(&arena, &stream), ptr(&params, &stream), ptr(&input, &stream), ptr(&output, &stream));
        let mut workspace_len = 0;
        let mut launches = Vec::with_capacity(specs.len());
        for (i, spec) in specs.into_iter().enumerate() {
            launches.push(match spec {
                LaunchSpec::Kernel { f, total, args } => Launch::Kernel { f, total, args },
                LaunchSpec::Conv { shape, x, w, y } => {
                    let conv = cudnn::Conv::new(&cudnn, shape, dtype, MAX_WORKSPACE, false).map_err(|e| fail(&format!("cuDNN conv of launch {i} ({shape:?})"), e))?;
                    workspace_len = workspace_len.max(conv.workspace);
                    Launch::Conv { conv, x, w, y }
                }
                LaunchSpec::Gemm { batch, out, k, x, w, y } => Launch::Gemm { g: BlasGemm::for_linear(batch, out, k), w, x, y },
            });
        }
        if tune {
            workspace_len = tune_convs(&cudnn, &stream, &mut launches)?;
        }
        let ws = stream.alloc_zeros::<u8>(workspace_len.max(256)).map_err(|e| fail("allocating the cuDNN workspace", e))?;
        let workspace = (ptr(&ws, &stream), workspace_len);
        let device_bytes = arena.len() + params.len() + ws.len() + 4 * (input.len() + output.len());
        let mut engine = Engine {
            device_bytes,
            ctx,
            stream,
            cudnn,
            blas,
            dtype,
            fns,
            launches,
            workspace,
            input,
            staged,
            output,
            graph: None,
            profile: profile::enabled().then(Profile::default),
            _arena: arena,
            _params: params,
            _workspace: ws,
        };
        // One eager pass (cuDNN initialises lazily), then capture the same launches.
        engine.enqueue(None)?;
        engine.stream.synchronize().map_err(|e| fail("first run", e))?;
        if use_graph && engine.profile.is_none() {
            engine.capture();
        }
        Ok(engine)
    }

    /// Enqueue the launches in order; with a timer, an event after each.
    fn enqueue(&self, mut timer: Option<&mut PassTimer>) -> Result<(), String> {
        for (i, l) in self.launches.iter().enumerate() {
            match l {
                Launch::Kernel { f, total, args } => {
                    unsafe { launch_kernel(&self.stream, &self.fns[*f], *total, args) }.map_err(|e| fail(&format!("launch {i} ({})", KERNEL_NAMES[*f]), e))?;
                }
                Launch::Conv { conv, x, w, y } => {
                    unsafe { conv.launch(&self.cudnn, *x, *w, *y, self.workspace.0, self.workspace.1) }.map_err(|e| fail(&format!("launch {i} (cuDNN conv)"), e))?;
                }
                Launch::Gemm { g, w, x, y } => {
                    unsafe { self.blas.gemm(self.dtype, *g, *w, *x, *y) }.map_err(|e| format!("launch {i}: {e}"))?;
                }
            }
            if let Some(t) = timer.as_deref_mut() {
                let label = match l {
                    Launch::Kernel { f, total, .. } => format!("{} n={total}", KERNEL_NAMES[*f]),
                    Launch::Conv { conv, .. } => format!("conv-fwd {}", profile::conv_label(&conv.shape)),
                    Launch::Gemm { g, .. } => format!("gemm {}", profile::gemm_label(g)),
                };
                t.mark(&self.stream, label).map_err(|e| fail("recording a profiling event", e))?;
            }
        }
        Ok(())
    }

    /// Capture the launches as one CUDA graph; on any failure keep launching them one by one.
    fn capture(&mut self) {
        if self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).is_err() {
            return;
        }
        let enqueued = self.enqueue(None);
        let flags = cudarc::driver::sys::CUgraphInstantiate_flags(0);
        let graph = self.stream.end_capture(flags);
        if let (Ok(()), Ok(Some(g))) = (enqueued, graph) {
            self.graph = Some(g);
        }
    }

    /// Whether runs replay one captured CUDA graph (else the launches go one by one).
    pub fn graph_captured(&self) -> bool {
        self.graph.is_some()
    }

    /// Enqueue one forward pass on the input already on the device.
    fn forward(&mut self) -> Result<(), String> {
        if let Some(mut profile) = self.profile.take() {
            let timed = PassTimer::start(&self.stream).map_err(|e| fail("recording a profiling event", e)).and_then(|mut timer| {
                self.enqueue(Some(&mut timer))?;
                timer.finish().map_err(|e| fail("timing the launches", e))
            });
            let added = timed.map(|pass| profile.add(pass));
            self.profile = Some(profile);
            return added;
        }
        match &self.graph {
            Some(g) => g.launch().map_err(|e| fail("replaying the CUDA graph", e)),
            None => self.enqueue(None),
        }
    }

    /// The forward pass again on the input already on the device; waits for it.
    pub fn rerun(&mut self) -> Result<(), String> {
        self.ctx.bind_to_thread().map_err(|e| fail("binding the CUDA context", e))?;
        self.forward()?;
        self.stream.synchronize().map_err(|e| fail("running the network", e))
    }

    /// Logits for one batch of float32 NCHW input.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, String> {
        self.ctx.bind_to_thread().map_err(|e| fail("binding the CUDA context", e))?;
        if input.len() != self.input.len() {
            return Err(format!("input of {} values for a plan of {}", input.len(), self.input.len()));
        }
        stage(input, self.staged.as_mut_slice().map_err(|e| fail("waiting for the input's last upload", e))?);
        self.stream.memcpy_htod(&self.staged, &mut self.input).map_err(|e| fail("copying the input", e))?;
        self.forward()?;
        let mut out = vec![0.0f32; self.output.len()];
        self.stream.memcpy_dtoh(&self.output, &mut out).map_err(|e| fail("copying the logits", e))?;
        self.stream.synchronize().map_err(|e| fail("running the network", e))?;
        Ok(out)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(p) = self.profile.as_ref().filter(|p| !p.is_empty()) {
            eprintln!("{}", p.report(&format!("CUDA inference launches ({:?})", self.dtype), 40));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stage;

    #[test]
    fn stage_copies_every_value_whatever_the_length() {
        // Empty, one thread, just over the split, and an uneven split over several threads.
        for n in [0usize, 5, 1 << 18, (1 << 18) + 1, 3_000_001] {
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; n];
            stage(&src, &mut dst);
            assert!(dst == src, "{n} values");
        }
    }
}
