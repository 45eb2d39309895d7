//! The CUDA training engine: [`TrainLayout`]'s launch lists run on a GPU. Parameters, gradients,
//! optimizer slots and EMA shadows stay on the device in the layout the launches address
//! (OHWI convs, `[k·k, C]` depthwise); activations live in one arena per batch size. cuDNN does
//! the convolutions and their two backward passes, cuBLAS the classifier, NVRTC-compiled kernels
//! (the inference engine's f32 build and [`super::TRAIN_KERNELS`]) everything else. Only the
//! input, the masks, the logits and dLoss/dLogits cross to the host per step.
//!
//! The forward (per mode) and the backward are captured as CUDA graphs on their second run and
//! replayed from then on ([`CUDA_GRAPH_ENV`] `=0`: launched one by one).
//!
//! Only the forward waits for the GPU (its logits are needed on the host): backward, step and
//! EMA update return once their launches are queued, so the host stages the next batch, and a
//! second stream uploads it, while the GPU is still on the last one's backward. A fault in those
//! launches is reported by the next call that waits (the next forward, or a copy of the weights).
//!
//! Every library is dlopened on first use: without a driver, [`CudaTrainer::new`] fails with
//! "no CUDA driver found" instead of panicking.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream, PinnedHostSlice};
use effv2_edge::graph::Graph;
use effv2_edge::tensor::Tensor;
use effv2_edge::weights::Weights;
use effv2_runtime::cuda::blas::Blas;
use effv2_runtime::cuda::cudnn::{ConvGrad, DType, Handle};
use effv2_runtime::cuda::profile::{self, PassTimer, Profile};
use effv2_runtime::cuda::{compile_kernels, compile_source, fail, launch_kernel, probe_libraries, ptr, stage, switch_on, CUDA_GRAPH_ENV, CUDNN_TUNE_ENV};
use effv2_runtime::plan::launch::{ConvShape, KERNEL_NAMES};

use super::nccl::NcclGroup;
use super::plan::{Buffers, Kernel, Lowering, TrainLaunch, TrainLayout};
use super::{train_kernels_source, CHAN_CHUNK_ROWS, CHAN_GROUP, CHAN_MIN_THREADS, DW_CHUNK_ROWS, TRAIN_KERNEL_NAMES};
use crate::cpu::{check_supported, TrainerConfig};
use crate::parallel::{DataParallel, Replica, Shard};
use crate::run::Precision;
use crate::{Mode, TrainEngine, TrainError};

/// Largest cuDNN workspace one convolution's algorithms may ask for.
const MAX_WORKSPACE: usize = 256 << 20;
/// `0`: BN and its activation as two launch groups each way (see [`Lowering`]).
pub const FUSE_BN_ACT_ENV: &str = "EFFV2_CUDA_FUSE_BN_ACT";
/// `0`: 1x1 convs on cuDNN instead of cuBLAS.
pub const GEMM_1X1_ENV: &str = "EFFV2_CUDA_GEMM_1X1";
/// Rows per partial of the per-channel sums (at most) and of the depthwise filter gradients, and
/// the threads a sum's launch keeps by taking fewer (see [`Lowering::chan_chunk_rows`]), for timing
/// the choices on a GPU.
pub const CHAN_ROWS_ENV: &str = "EFFV2_CUDA_CHAN_ROWS";
pub const DW_ROWS_ENV: &str = "EFFV2_CUDA_DW_ROWS";
pub const CHAN_THREADS_ENV: &str = "EFFV2_CUDA_CHAN_THREADS";

/// A count of `what` from `var` within `range`, `default` where unset; anything else is a
/// configuration error.
fn count_from_env(var: &str, default: usize, range: std::ops::RangeInclusive<usize>, what: &str) -> Result<usize, TrainError> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => v.trim().parse().ok().filter(|n| range.contains(n)).ok_or_else(|| TrainError::Config(format!("{var}={v}: expected a number of {what} from {} to {}", range.start(), range.end()))),
    }
}

fn dev(e: String) -> TrainError {
    TrainError::Device(e)
}

/// A launch list the engine may capture as a CUDA graph: the forward in each mode (on the raw
/// weights or the EMA shadows) and the backward. (The optimizer step is three launches whose
/// learning rate changes every step: nothing to gain.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Forward { train: bool, ema: bool },
    Backward,
}

/// Captured launch lists and what the next run of each phase does. A graph holds the addresses
/// and arguments of its launches, so every change of buffers (batch size, cuDNN workspace), of the
/// graph (a progressive stage) or of the shard drops them all.
#[derive(Default)]
struct Graphs {
    captured: HashMap<Phase, CudaGraph>,
    /// Phases run once eagerly since the last drop: the next run captures (the first one let
    /// cuDNN and cuBLAS pick and set up their kernels, which capture must not see).
    ran: HashSet<Phase>,
    /// Phases whose capture failed: launched one by one from then on (said once).
    failed: HashSet<Phase>,
}

impl Graphs {
    fn drop_all(&mut self) {
        self.captured.clear();
        self.ran.clear();
    }
}

/// Activations and per-step buffers for one batch size.
struct Batch {
    layout: TrainLayout,
    arena: CudaSlice<u8>,
    masks: CudaSlice<f32>,
    input: CudaSlice<f32>,
    /// Pinned (page-locked) host memory the input is staged in (`effv2_runtime::cuda::stage`), so
    /// its upload is one DMA at the link's speed, queued on the copy stream.
    staged: PinnedHostSlice<f32>,
    logits: CudaSlice<f32>,
    dlogits: CudaSlice<f32>,
}

pub struct CudaTrainer {
    /// Data parallelism: the group's communicators and this replica's rank (dropped first, before
    /// the stream and context its sums run on).
    group: Option<(Arc<NcclGroup>, usize)>,
    /// This replica's rows of the global batch in the next forward.
    shard: Shard,
    config: TrainerConfig,
    graph: Graph,
    /// Where parameters sit in `params` (and in every buffer laid out like it): the same for every
    /// batch size and progressive stage.
    param_layout: TrainLayout,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// The input's upload runs on a stream of its own, so the DMA overlaps the backward and update
    /// of the previous step still running on `stream`, which waits for `input_ready` before the
    /// forward reads it.
    copy: Arc<CudaStream>,
    input_ready: CudaEvent,
    cudnn: Handle,
    blas: Blas,
    infer_fns: HashMap<&'static str, CudaFunction>,
    train_fns: HashMap<&'static str, CudaFunction>,
    convs: HashMap<ConvShape, ConvGrad>,
    workspace: CudaSlice<u8>,
    params: CudaSlice<u8>,
    /// Storage of activations and their gradients (f32, or bf16 for mixed precision), and in bf16
    /// the 16-bit copy of `params` the convs and the classifier read.
    dtype: DType,
    /// tf32 precision: f32 convs and products on TF32 tensor cores (the values stay f32).
    tf32: bool,
    weights16: Option<CudaSlice<u8>>,
    grads: CudaSlice<u8>,
    slots: Vec<CudaSlice<u8>>,
    ema: Option<CudaSlice<u8>>,
    batch: Option<Batch>,
    /// Whether the last forward was in training mode (what a backward needs).
    trained: bool,
    /// `EFFV2_CUDA_PROFILE`: per-launch times summed over the steps, printed on drop.
    profile: Option<Profile>,
    /// Whether cuDNN times its algorithms per conv shape (on unless `EFFV2_CUDNN_TUNE=0`).
    tune: bool,
    /// The plan's fusions, each on unless its variable is `0` (for A/B timing on a GPU).
    lowering: Lowering,
    /// `EFFV2_CUDA_GRAPH` (on unless `0`): forward and backward replay captured CUDA graphs from
    /// their second run (not while profiling, nor in a group of GPUs, whose NCCL sums stay eager).
    use_graphs: bool,
    graphs: Graphs,
    device: String,
}

// The CUDA handles are used only through `&mut self`, one call at a time, and every call binds
// the context to the calling thread first.
unsafe impl Send for CudaTrainer {}

impl CudaTrainer {
    /// `precision`: fp32; tf32 (f32 values, convs and products on TF32 tensor cores); or bf16 mixed
    /// precision (bf16 activations and gradients, f32 master weights, statistics and optimizer).
    pub fn new(graph: &Graph, weights: &Weights, config: TrainerConfig, precision: Precision) -> Result<Self, TrainError> {
        Self::on_device(0, graph, weights, config, precision)
    }

    /// The engine on GPU `ordinal`.
    pub fn on_device(ordinal: usize, graph: &Graph, weights: &Weights, config: TrainerConfig, precision: Precision) -> Result<Self, TrainError> {
        // Storage of activations and gradients; TF32 changes only how cuDNN and cuBLAS multiply.
        let (dtype, tf32) = match precision {
            Precision::Fp32 => (DType::F32, false),
            Precision::Tf32 => (DType::F32, true),
            Precision::Bf16 => (DType::Bf16, false),
        };
        weights.check(graph)?;
        check_supported(graph)?;
        let lowering = Lowering {
            fuse_bn_act: switch_on(FUSE_BN_ACT_ENV),
            gemm_1x1: switch_on(GEMM_1X1_ENV),
            chan_chunk_rows: count_from_env(CHAN_ROWS_ENV, CHAN_CHUNK_ROWS, 1..=4096, "rows")?,
            dw_chunk_rows: count_from_env(DW_ROWS_ENV, DW_CHUNK_ROWS, 1..=4096, "rows")?,
            chan_min_threads: count_from_env(CHAN_THREADS_ENV, CHAN_MIN_THREADS, 0..=1 << 24, "threads")?,
            ..Lowering::default()
        };
        probe_libraries().map_err(|e| dev(e.to_string()))?;
        let ctx = CudaContext::new(ordinal).map_err(|e| dev(format!("no usable CUDA GPU {ordinal} ({e:?})")))?;
        let stream = ctx.new_stream().map_err(|e| dev(fail("creating a stream", e)))?;
        let copy = ctx.new_stream().map_err(|e| dev(fail("creating the upload stream", e)))?;
        let input_ready = ctx.new_event(None).map_err(|e| dev(fail("creating an event", e)))?;
        // Launches in order on one stream, over raw addresses; the one crossing between streams (the
        // input's upload) is ordered by `input_ready`: cudarc's per-buffer events would only cost time.
        unsafe { ctx.disable_event_tracking() };
        let cudnn = Handle::new(&stream).map_err(|e| dev(fail("creating the cuDNN handle", e)))?;
        let blas = Blas::new(&stream, tf32).map_err(dev)?;
        let (major, minor) = ctx.compute_capability().map_err(|e| dev(fail("reading the compute capability", e)))?;
        let arch = format!("compute_{major}{minor}");
        let load = |ptx, names: &[&'static str]| -> Result<HashMap<&'static str, CudaFunction>, TrainError> {
            let module = ctx.load_module(ptx).map_err(|e| dev(fail("loading kernels", e)))?;
            names.iter().map(|&n| Ok((n, module.load_function(n).map_err(|e| dev(fail(n, e)))?))).collect()
        };
        // Both sources are compiled for the storage type: the arena's activations and gradients
        // (and the bf16 weight copy) are `dtype`, and every kernel that touches them reads it as T.
        let infer_fns = load(compile_kernels(dtype, Some(arch.clone())).map_err(dev)?, &KERNEL_NAMES)?;
        let train_fns = load(compile_source(&train_kernels_source(), "effv2_train_kernels.cu", dtype.kernel_defines(), Some(arch)).map_err(dev)?, &TRAIN_KERNEL_NAMES)?;

        let param_layout = TrainLayout::with_dtype(graph, 1, dtype);
        let initial = param_layout.pack_weights(graph, weights)?;
        let up = |bytes: &[u8], what: &str| stream.clone_htod(bytes).map_err(|e| dev(fail(what, e)));
        let params = up(&initial, "uploading the weights")?;
        let grads = stream.alloc_zeros::<u8>(param_layout.grads_bytes.max(256)).map_err(|e| dev(fail("allocating gradients", e)))?;
        let slots = param_layout.initial_slots(graph, &config.optimizer).iter().map(|s| up(s, "uploading optimizer slots")).collect::<Result<_, _>>()?;
        let ema = if config.ema { Some(up(&initial, "uploading the EMA shadows")?) } else { None };
        let workspace = stream.alloc_zeros::<u8>(256).map_err(|e| dev(fail("allocating the cuDNN workspace", e)))?;
        let weights16 = match dtype {
            DType::F32 => None,
            _ => Some(stream.alloc_zeros::<u8>(param_layout.params_bytes / 2).map_err(|e| dev(fail("allocating the bf16 weights", e)))?),
        };
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let mut trainer = CudaTrainer {
            group: None,
            shard: Shard::default(),
            config,
            graph: graph.clone(),
            param_layout,
            ctx,
            stream,
            copy,
            input_ready,
            cudnn,
            blas,
            infer_fns,
            train_fns,
            convs: HashMap::new(),
            workspace,
            params,
            dtype,
            tf32,
            weights16,
            grads,
            slots,
            ema,
            batch: None,
            trained: false,
            profile: profile::enabled().then(Profile::default),
            tune: switch_on(CUDNN_TUNE_ENV),
            lowering,
            use_graphs: switch_on(CUDA_GRAPH_ENV) && !profile::enabled(),
            graphs: Graphs::default(),
            device: format!("{name} (sm_{major}{minor}), {}", match precision {
                Precision::Fp32 => "fp32",
                Precision::Tf32 => "tf32 (f32 values, TF32 tensor-core convs and products)",
                Precision::Bf16 => "bf16 mixed precision",
            }),
        };
        trainer.refresh_weights16(false)?;
        Ok(trainer)
    }

    /// bf16: narrow the f32 weights (or the EMA shadows, when there are some) into the 16-bit copy.
    fn refresh_weights16(&mut self, from_ema: bool) -> Result<(), TrainError> {
        let Some(w16) = &self.weights16 else { return Ok(()) };
        let src = match (from_ema, &self.ema) {
            (true, Some(e)) => ptr(e, &self.stream),
            _ => ptr(&self.params, &self.stream),
        };
        let launch = self.param_layout.refresh_weights16(src, ptr(w16, &self.stream)).expect("a 16-bit layout");
        self.enqueue(std::slice::from_ref(&launch))
    }

    fn weights16_ptr(&self) -> u64 {
        self.weights16.as_ref().map_or(0, |w| ptr(w, &self.stream))
    }

    /// Data-parallel training on GPUs `0..gpus`, one engine per GPU on a thread of its own,
    /// summing over NCCL: each forward's batch is the global one, split over the GPUs. With one
    /// GPU it is that GPU's engine, run on the caller's thread.
    pub fn data_parallel(gpus: usize, graph: &Graph, weights: &Weights, config: TrainerConfig, precision: Precision) -> Result<DataParallel<Self>, TrainError> {
        probe_libraries().map_err(|e| dev(e.to_string()))?;
        let have = CudaContext::device_count().map_err(|e| dev(fail("counting GPUs", e)))? as usize;
        if gpus == 0 || gpus > have {
            return Err(TrainError::Config(format!("--gpus {gpus}: this machine has {have} CUDA GPU(s)")));
        }
        let mut replicas = (0..gpus).map(|i| Self::on_device(i, graph, weights, config, precision)).collect::<Result<Vec<_>, _>>()?;
        // One GPU needs no communicator (nor NCCL installed).
        if gpus > 1 {
            let group = NcclGroup::new(replicas.iter().map(|r| r.ctx.clone()).collect())?;
            for (rank, r) in replicas.iter_mut().enumerate() {
                r.group = Some((group.clone(), rank));
                r.use_graphs = false;
                r.device = format!("{} [rank {rank} of {gpus}]", r.device);
            }
        }
        DataParallel::new(replicas, graph.nodes[graph.output].shape.numel())
    }

    /// The engine a [`crate::run::TrainConfig`] asks for (the factory `train`/`resume` take): its
    /// precision, on its `gpus` (one: that GPU's engine itself).
    pub fn data_parallel_for_run(graph: &Graph, weights: &Weights, cfg: &crate::run::TrainConfig) -> Result<DataParallel<Self>, TrainError> {
        Self::data_parallel(cfg.gpus, graph, weights, TrainerConfig::for_run(cfg), cfg.precision)
    }

    /// The GPU, for logs.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Launch lists replayed as captured CUDA graphs now (forward modes and backward; see `EFFV2_CUDA_GRAPH`).
    pub fn captured_graphs(&self) -> usize {
        self.graphs.captured.len()
    }

    /// Device memory the engine holds now (buffers it allocated; cuDNN's and cuBLAS's handles aside).
    pub fn device_bytes(&self) -> usize {
        let batch = self.batch.as_ref().map_or(0, |b| b.arena.len() + 4 * (b.masks.len() + b.input.len() + b.logits.len() + b.dlogits.len()));
        self.params.len() + self.weights16.as_ref().map_or(0, |w| w.len()) + self.grads.len() + self.slots.iter().map(|s| s.len()).sum::<usize>() + self.ema.as_ref().map_or(0, |e| e.len()) + self.workspace.len() + batch
    }

    fn bind(&self) -> Result<(), TrainError> {
        self.ctx.bind_to_thread().map_err(|e| dev(fail("binding the CUDA context", e)))
    }

    /// Buffers for `batch` samples of the current graph (kept while the batch size stays).
    fn ensure_batch(&mut self, batch: usize) -> Result<(), TrainError> {
        if self.batch.as_ref().is_some_and(|b| b.layout.batch == batch) {
            return Ok(());
        }
        self.batch = None; // free the old arena first
        self.graphs.drop_all();
        let layout = TrainLayout::with_lowering(&self.graph, batch, self.dtype, CHAN_GROUP, self.lowering);
        debug_assert_eq!(layout.param_at, self.param_layout.param_at);
        let alloc_f32 = |n: usize, what: &str| self.stream.alloc_zeros::<f32>(n.max(1)).map_err(|e| dev(fail(what, e)));
        let classes = self.graph.nodes[self.graph.output].shape.numel();
        let input_len = batch * self.graph.input_shape().numel();
        let batch_buffers = Batch {
            arena: self.stream.alloc_zeros::<u8>(layout.arena_bytes.max(256)).map_err(|e| dev(fail(&format!("allocating activations for batch {batch}"), e)))?,
            masks: alloc_f32(layout.mask_len, "allocating masks")?,
            input: alloc_f32(input_len, "allocating the input")?,
            // SAFETY: page-locked host memory of this context, only written through as_mut_slice
            // (which waits for the upload that last read it).
            staged: unsafe { self.ctx.alloc_pinned::<f32>(input_len.max(1)) }.map_err(|e| dev(fail("allocating pinned memory for the input", e)))?,
            logits: alloc_f32(batch * classes, "allocating the logits")?,
            dlogits: alloc_f32(batch * classes, "allocating dlogits")?,
            layout,
        };
        self.batch = Some(batch_buffers);
        Ok(())
    }

    /// cuDNN descriptors and algorithms for every conv shape in `launches`, and a workspace that
    /// fits them all.
    fn prepare(&mut self, launches: &[TrainLaunch]) -> Result<(), TrainError> {
        let mut need = self.workspace.len();
        for l in launches {
            let shape = match l {
                TrainLaunch::Conv { shape, .. } | TrainLaunch::ConvBackwardData { shape, .. } | TrainLaunch::ConvBackwardFilter { shape, .. } => *shape,
                _ => continue,
            };
            if !self.convs.contains_key(&shape) {
                let c = ConvGrad::new(&self.cudnn, shape, self.dtype, MAX_WORKSPACE, self.tune, self.tf32).map_err(|e| dev(fail(&format!("cuDNN conv {shape:?}"), e)))?;
                self.convs.insert(shape, c);
            }
            need = need.max(self.convs[&shape].workspace);
        }
        if need > self.workspace.len() {
            self.workspace = self.stream.alloc_zeros::<u8>(need).map_err(|e| dev(fail("allocating the cuDNN workspace", e)))?;
            self.graphs.drop_all(); // they address the old one
        }
        Ok(())
    }

    /// Runs `phase`'s launches (built by `launches` only when needed): its captured graph if there
    /// is one; else eagerly, capturing them instead on the phase's second run. A capture that
    /// fails is said once, and the phase is launched one by one from then on.
    fn run_phase(&mut self, phase: Phase, launches: impl FnOnce(&Self) -> Vec<TrainLaunch>) -> Result<(), TrainError> {
        if let Some(g) = self.graphs.captured.get(&phase) {
            return g.launch().map_err(|e| dev(fail("replaying a captured CUDA graph", e)));
        }
        let launches = launches(self);
        let capture = self.use_graphs && !self.graphs.failed.contains(&phase) && !self.graphs.ran.insert(phase);
        if !capture {
            return self.enqueue(&launches);
        }
        match self.capture(&launches) {
            Ok(g) => {
                g.launch().map_err(|e| dev(fail("launching a captured CUDA graph", e)))?;
                self.graphs.captured.insert(phase, g);
                Ok(())
            }
            Err(why) => {
                eprintln!("warning: CUDA graph capture of the {phase:?} launches failed ({why}); launching them one by one");
                self.graphs.failed.insert(phase);
                self.enqueue(&launches)
            }
        }
    }

    /// `launches` captured (not run) as a CUDA graph. Every conv's descriptors and the workspace
    /// exist already (the phase ran once), so capture sees no allocation.
    fn capture(&mut self, launches: &[TrainLaunch]) -> Result<CudaGraph, String> {
        self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(|e| fail("beginning the capture", e))?;
        let enqueued = self.enqueue(launches);
        // Always end the capture, so the stream takes work again whatever happened.
        let graph = self.stream.end_capture(CUgraphInstantiate_flags(0));
        enqueued.map_err(|e| e.to_string())?;
        graph.map_err(|e| fail("ending the capture", e))?.ok_or_else(|| "nothing was captured".to_string())
    }

    /// Enqueue `launches` on the stream, in order.
    fn enqueue(&mut self, launches: &[TrainLaunch]) -> Result<(), TrainError> {
        self.prepare(launches)?;
        let mut timer = self.profile.as_ref().map(|_| PassTimer::start(&self.stream)).transpose().map_err(|e| dev(fail("recording a profiling event", e)))?;
        let (ws, ws_len) = (ptr(&self.workspace, &self.stream), self.workspace.len());
        for (i, l) in launches.iter().enumerate() {
            let at = |what: &str| format!("launch {i} ({what})");
            match l {
                TrainLaunch::Kernel { kernel, total, args } => {
                    let (name, f) = match kernel {
                        Kernel::Infer(n) => (n, self.infer_fns.get(n)),
                        Kernel::Train(n) => (n, self.train_fns.get(n)),
                    };
                    let f = f.ok_or_else(|| dev(format!("{}: no kernel {name}", at(name))))?;
                    unsafe { launch_kernel(&self.stream, f, *total, args) }.map_err(|e| dev(fail(&at(name), e)))?;
                }
                TrainLaunch::Conv { shape, x, w, y } => {
                    unsafe { self.convs[shape].conv.launch(&self.cudnn, *x, *w, *y, ws, ws_len) }.map_err(|e| dev(fail(&at("cuDNN conv"), e)))?
                }
                TrainLaunch::ConvBackwardData { shape, dy, w, dx, accumulate } => {
                    unsafe { self.convs[shape].backward_data(&self.cudnn, *dy, *w, *dx, *accumulate, ws, ws_len) }.map_err(|e| dev(fail(&at("cuDNN backward data"), e)))?
                }
                TrainLaunch::ConvBackwardFilter { shape, x, dy, dw } => {
                    unsafe { self.convs[shape].backward_filter(&self.cudnn, *x, *dy, *dw, ws, ws_len) }.map_err(|e| dev(fail(&at("cuDNN backward filter"), e)))?
                }
                TrainLaunch::Gemm { g, a, b, c } => unsafe { self.blas.gemm(self.dtype, *g, *a, *b, *c) }.map_err(|e| dev(format!("{}: {e}", at("cuBLAS"))))?,
                TrainLaunch::AllReduce { ptr, count, dtype } => {
                    let (group, rank) = self.group.as_ref().ok_or_else(|| TrainError::Misuse(format!("{}: a sum over replicas in an engine that is not one", at("all-reduce"))))?;
                    unsafe { group.all_reduce(*rank, *ptr, *count, *dtype, &self.stream) }?
                }
            }
            if let Some(t) = timer.as_mut() {
                t.mark(&self.stream, launch_label(l)).map_err(|e| dev(fail("recording a profiling event", e)))?;
            }
        }
        if let (Some(t), Some(p)) = (timer, self.profile.as_mut()) {
            p.extend(t.finish().map_err(|e| dev(fail("timing the launches", e)))?);
        }
        Ok(())
    }

    fn sync(&self, what: &str) -> Result<(), TrainError> {
        self.stream.synchronize().map_err(|e| dev(fail(what, e)))
    }

    /// A parameter-layout buffer back as weights in the graph's layout.
    fn to_weights(&self, buf: &CudaSlice<u8>) -> Result<Weights, TrainError> {
        self.bind()?;
        let bytes = self.stream.clone_dtoh(buf).map_err(|e| dev(fail("copying weights to the host", e)))?;
        let mut w = Weights::new();
        for (id, p) in self.graph.params.iter().enumerate() {
            let data = self.param_layout.unpack(&self.graph, &bytes, id);
            w.insert(p.name.clone(), Tensor::new(p.shape.clone(), data).expect("sized from the param"));
        }
        Ok(w)
    }

}

/// A launch's line in the `EFFV2_CUDA_PROFILE` table: its kind first, then its shape.
fn launch_label(l: &TrainLaunch) -> String {
    match l {
        TrainLaunch::Kernel { kernel: Kernel::Infer(n) | Kernel::Train(n), total, .. } => format!("{n} n={total}"),
        TrainLaunch::Conv { shape, .. } => format!("conv-fwd {}", profile::conv_label(shape)),
        TrainLaunch::ConvBackwardData { shape, .. } => format!("conv-bwd-data {}", profile::conv_label(shape)),
        TrainLaunch::ConvBackwardFilter { shape, .. } => format!("conv-bwd-filter {}", profile::conv_label(shape)),
        TrainLaunch::Gemm { g, .. } => format!("gemm {}", profile::gemm_label(g)),
        TrainLaunch::AllReduce { count, dtype, .. } => format!("all-reduce {count} {dtype:?}"),
    }
}

impl Drop for CudaTrainer {
    fn drop(&mut self) {
        if let Some(p) = self.profile.as_ref().filter(|p| !p.is_empty()) {
            eprintln!("{}", p.report(&format!("CUDA training launches, {}", self.device), 40));
        }
    }
}

fn upload(stream: &Arc<CudaStream>, bytes: &[u8], to: &mut CudaSlice<u8>) -> Result<(), TrainError> {
    stream.memcpy_htod(bytes, to).map_err(|e| dev(fail("copying to the device", e)))
}

impl TrainEngine for CudaTrainer {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn set_graph(&mut self, graph: &Graph) -> Result<(), TrainError> {
        check_supported(graph)?;
        if graph.params != self.graph.params {
            let which = graph.params.iter().zip(&self.graph.params).find(|(a, b)| a != b).map(|(p, _)| p.name.clone());
            return Err(TrainError::ParamsChanged(which.unwrap_or_else(|| format!("{} params instead of {}", graph.params.len(), self.graph.params.len()))));
        }
        self.graph = graph.clone();
        self.batch = None;
        self.graphs.drop_all();
        self.trained = false;
        Ok(())
    }

    fn forward(&mut self, input: &[f32], batch: usize, mode: Mode, seed: u64) -> Result<Vec<f32>, TrainError> {
        let want = batch * self.graph.input_shape().numel();
        if batch == 0 || input.len() != want {
            return Err(TrainError::Size { what: "input batch (NCHW)", want, got: input.len() });
        }
        self.bind()?;
        self.ensure_batch(batch)?;
        let train = mode == Mode::Train;
        let on_ema = mode == Mode::EvalEma && self.ema.is_some();
        let params = match (on_ema, &self.ema) {
            (true, Some(shadow)) => ptr(shadow, &self.stream),
            _ => ptr(&self.params, &self.stream),
        };
        if on_ema {
            self.refresh_weights16(true)?;
        }
        let weights16 = self.weights16_ptr();
        let b = self.batch.as_mut().expect("buffers for this batch");
        b.layout.shard = self.shard;
        if train && b.layout.mask_len > 0 {
            let masks = b.layout.masks(&self.graph, seed);
            self.stream.memcpy_htod(&masks, &mut b.masks).map_err(|e| dev(fail("copying masks", e)))?;
        }
        let staged = b.staged.as_mut_slice().map_err(|e| dev(fail("waiting for the input's last upload", e)))?;
        stage(input, staged);
        // The input buffer is free to overwrite: the last forward, its only reader, finished before
        // this call returned (the backward and update it may overlap do not read it).
        self.copy.memcpy_htod(&b.staged, &mut b.input).map_err(|e| dev(fail("copying the input", e)))?;
        self.input_ready.record(&self.copy).map_err(|e| dev(fail("recording the input's upload", e)))?;
        self.stream.wait(&self.input_ready).map_err(|e| dev(fail("waiting for the input's upload", e)))?;
        let s = &self.stream;
        let bufs = Buffers { arena: ptr(&b.arena, s), params, weights16, grads: 0, masks: ptr(&b.masks, s), input: ptr(&b.input, s), logits: ptr(&b.logits, s), dlogits: 0 };
        self.trained = false;
        if let (true, Some(p)) = (train, self.profile.as_mut()) {
            p.start_pass(); // a training step: its forward, backward and update launches follow
        }
        self.run_phase(Phase::Forward { train, ema: on_ema }, |me| me.batch.as_ref().expect("buffers for this batch").layout.forward(&me.graph, train, &bufs))?;
        if on_ema {
            self.refresh_weights16(false)?; // back to the trained weights
        }
        let b = self.batch.as_ref().expect("buffers for this batch");
        let logits = self.stream.clone_dtoh(&b.logits).map_err(|e| dev(fail("copying the logits", e)))?;
        self.sync("the forward pass (or the backward / update queued before it)")?;
        self.trained = train;
        Ok(logits)
    }

    fn backward(&mut self, dlogits: &[f32]) -> Result<(), TrainError> {
        if !self.trained {
            return Err(TrainError::Misuse("backward needs a Mode::Train forward first".into()));
        }
        self.bind()?;
        let weights16 = self.weights16_ptr();
        let b = self.batch.as_mut().expect("a trained forward leaves its buffers");
        if dlogits.len() != b.dlogits.len() {
            return Err(TrainError::Size { what: "dlogits", want: b.dlogits.len(), got: dlogits.len() });
        }
        self.stream.memcpy_htod(dlogits, &mut b.dlogits).map_err(|e| dev(fail("copying dlogits", e)))?;
        let s = &self.stream;
        let bufs = Buffers { arena: ptr(&b.arena, s), params: ptr(&self.params, s), weights16, grads: ptr(&self.grads, s), masks: ptr(&b.masks, s), input: 0, logits: 0, dlogits: ptr(&b.dlogits, s) };
        // Queued, not waited for (see the module doc).
        self.run_phase(Phase::Backward, |me| me.batch.as_ref().expect("buffers for this batch").layout.backward(&me.graph, &bufs))
    }

    fn step(&mut self, lr: f32) -> Result<(), TrainError> {
        self.bind()?;
        let s = &self.stream;
        let slots: Vec<u64> = self.slots.iter().map(|b| ptr(b, s)).collect();
        let launches = self.param_layout.optimizer_step(&self.config.optimizer, ptr(&self.params, s), ptr(&self.grads, s), &slots, lr, self.config.weight_decay);
        self.enqueue(&launches)?;
        self.refresh_weights16(false)
    }

    fn ema_update(&mut self, decay: f32) -> Result<(), TrainError> {
        let Some(shadow) = &self.ema else { return Ok(()) };
        let launch = self.param_layout.ema_update(ptr(shadow, &self.stream), ptr(&self.params, &self.stream), decay);
        self.bind()?;
        self.enqueue(std::slice::from_ref(&launch))
    }

    fn weights(&self) -> Result<Weights, TrainError> {
        self.to_weights(&self.params)
    }

    fn ema_weights(&self) -> Result<Option<Weights>, TrainError> {
        self.ema.as_ref().map(|e| self.to_weights(e)).transpose()
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        self.bind()?;
        let names = self.config.optimizer.slot_names();
        let host = self.slots.iter().map(|s| self.stream.clone_dtoh(s).map_err(|e| dev(fail("copying optimizer slots to the host", e)))).collect::<Result<Vec<_>, _>>()?;
        let mut out = vec![];
        for (id, p) in self.graph.params.iter().enumerate() {
            if !p.role.is_trainable() {
                continue;
            }
            for (name, bytes) in names.iter().zip(&host) {
                let data = self.param_layout.unpack(&self.graph, bytes, id);
                out.push((format!("{}/{name}", p.name), Tensor::new(p.shape.clone(), data).expect("sized from the param")));
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, weights: &Weights, ema: Option<&Weights>, slots: &[(String, Tensor)]) -> Result<(), TrainError> {
        weights.check(&self.graph)?;
        let g = &self.graph;
        let from = |w: &Weights| self.param_layout.pack(g, |id| Ok(w.get(&g.params[id].name)?.data().to_vec()));
        let params = from(weights)?;
        let shadow = match (ema, self.config.ema) {
            (Some(e), true) => Some(from(e)?),
            (None, true) => Some(params.clone()),
            (_, false) => None,
        };
        let lookup: HashMap<&str, &Tensor> = slots.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let opt = self.config.optimizer;
        let mut slot_bufs = vec![];
        for (k, name) in opt.slot_names().iter().enumerate() {
            slot_bufs.push(self.param_layout.pack(g, |id| {
                let p = &g.params[id];
                if !p.role.is_trainable() {
                    return Ok(opt.init_slots(p.numel()).swap_remove(k));
                }
                let key = format!("{}/{name}", p.name);
                let t = lookup.get(key.as_str()).ok_or_else(|| TrainError::Misuse(format!("optimizer state has no slot {key:?}")))?;
                Ok(t.data().to_vec())
            })?);
        }
        // Everything checked: now overwrite the device copies.
        self.bind()?;
        upload(&self.stream, &params, &mut self.params)?;
        if let (Some(bytes), Some(buf)) = (shadow, &mut self.ema) {
            upload(&self.stream, &bytes, buf)?;
        }
        for (bytes, buf) in slot_bufs.iter().zip(&mut self.slots) {
            upload(&self.stream, bytes, buf)?;
        }
        self.refresh_weights16(false)?;
        self.sync("loading the training state")
    }
}

impl Replica for CudaTrainer {
    fn set_shard(&mut self, shard: Shard) {
        if shard != self.shard {
            self.graphs.drop_all(); // the launches' row counts change
        }
        self.shard = shard;
    }

    fn abort_group(&self) {
        if let Some((g, _)) = &self.group {
            g.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_from_the_environment_are_checked() {
        // A variable of this test's own (the process environment is shared between tests).
        let var = "EFFV2_TEST_ROWS_FROM_ENV";
        assert_eq!(count_from_env(var, 64, 1..=4096, "rows").unwrap(), 64);
        for (v, want) in [("16", Some(16)), (" 32 ", Some(32)), ("0", None), ("-4", None), ("lots", None), ("5000", None)] {
            unsafe { std::env::set_var(var, v) };
            let got = count_from_env(var, 64, 1..=4096, "rows");
            assert_eq!(got.as_ref().ok().copied(), want, "{v}");
            if want.is_none() {
                assert!(got.unwrap_err().to_string().contains(var), "{v}");
            }
        }
        unsafe { std::env::remove_var(var) };
    }
}
