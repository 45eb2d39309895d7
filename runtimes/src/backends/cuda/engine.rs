//! The CUDA engine: a plan turned, once at load, into a fixed list of launches over one
//! activation arena (offsets from the static memory plan), one parameter buffer (weights repacked
//! for NHWC, f32 biases) and one cuDNN workspace. A run copies the input in, replays the launches
//! (as one captured CUDA graph when capture works) and copies the logits out; nothing is allocated.

use std::sync::Arc;

use cudarc::driver::{sys::CUstreamCaptureMode, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};

use super::cudnn::{self, ConvShape, DType, Handle};
use crate::plan::arena::{plan_arena, ALIGN};
use crate::plan::layout::{depthwise_to_hwc, oihw_to_ohwi};
use crate::plan::{NetPlan, Step};

pub const KERNELS: &str = include_str!("kernels.cu");
const KERNEL_NAMES: [&str; 9] = ["nchw_to_nhwc", "to_f32", "bias_act", "act_only", "depthwise", "pool", "gate_mul", "add", "pad"];
/// Largest cuDNN workspace an algorithm may ask for.
const MAX_WORKSPACE: usize = 512 << 20;

#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
}

enum Launch {
    Kernel { f: usize, total: usize, args: Vec<Arg> },
    Conv { conv: cudnn::Conv, x: u64, w: u64, y: u64 },
}

pub struct Engine {
    pub graph_captured: bool,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    cudnn: Handle,
    fns: Vec<CudaFunction>,
    launches: Vec<Launch>,
    workspace: (u64, usize),
    input: CudaSlice<f32>,
    output: CudaSlice<f32>,
    graph: Option<CudaGraph>,
    // Kept alive for the raw addresses in `launches`.
    _arena: CudaSlice<u8>,
    _params: CudaSlice<u8>,
    _workspace: CudaSlice<u8>,
}

/// An error at a named stage of loading or running.
pub fn fail(stage: &str, e: impl std::fmt::Debug) -> String {
    format!("{stage}: {e:?}")
}

/// The kernels' PTX for `dtype` (NVRTC; no GPU needed). `arch` like "compute_90".
pub fn compile_kernels(dtype: DType, arch: Option<String>) -> Result<cudarc::nvrtc::Ptx, String> {
    let mut options = vec![];
    if dtype == DType::F16 {
        options.push("-DEFFV2_HALF".to_string());
    }
    if let Some(a) = arch {
        options.push(format!("--gpu-architecture={a}"));
    }
    let opts = CompileOptions { options, name: Some("effv2_kernels.cu".into()), ..Default::default() };
    compile_ptx_with_opts(KERNELS, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => format!("NVRTC could not compile the kernels:\n{}", log.to_string_lossy()),
        e => fail("NVRTC", e),
    })
}

fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p
}

/// Host bytes of parameters: T-typed weights and f32 biases, each block 256-byte aligned.
struct ParamBytes {
    bytes: Vec<u8>,
    dtype: DType,
}

impl ParamBytes {
    fn push_t(&mut self, v: &[f32]) -> usize {
        let at = self.bytes.len();
        match self.dtype {
            DType::F32 => self.bytes.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            DType::F16 => self.bytes.extend(v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes())),
        }
        self.bytes.resize(self.bytes.len().next_multiple_of(256), 0);
        at
    }
    fn push_f32(&mut self, v: &[f32]) -> usize {
        let at = self.bytes.len();
        self.bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        self.bytes.resize(self.bytes.len().next_multiple_of(256), 0);
        at
    }
}

impl Engine {
    pub fn new(ctx: Arc<CudaContext>, plan: &NetPlan, weights: &[f32], batch: usize, dtype: DType, use_graph: bool) -> Result<Engine, String> {
        let shapes = plan.shapes()?;
        let stream = ctx.new_stream().map_err(|e| fail("creating a stream", e))?;
        // One stream, launches in order: cudarc's per-buffer events would only cost time and
        // would break graph capture.
        unsafe { ctx.disable_event_tracking() };
        let cudnn = Handle::new(&stream).map_err(|e| fail("creating the cuDNN handle", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| fail("reading the compute capability", e))?;
        let ptx = compile_kernels(dtype, Some(format!("compute_{major}{minor}")))?;
        let module = ctx.load_module(ptx).map_err(|e| fail("loading the kernels", e))?;
        let fns = KERNEL_NAMES.iter().map(|n| module.load_function(n).map_err(|e| fail(n, e))).collect::<Result<Vec<_>, _>>()?;

        // Activation arena (+ a scratch block for convs whose padding cuDNN cannot take).
        let sizes: Vec<usize> = shapes.iter().map(|s| batch * s.iter().product::<usize>()).collect();
        let inputs: Vec<Vec<usize>> = plan.steps.iter().map(|s| s.inputs()).collect();
        let arena = plan_arena(&sizes, &inputs, plan.output);
        let mut scratch_len = 0;
        for s in &plan.steps {
            if let Step::Conv { x, pads: [t, l, b, r], .. } = *s {
                if (t, l) != (b, r) {
                    let [c, h, w] = shapes[x];
                    scratch_len = scratch_len.max(batch * c * (h + t + b) * (w + l + r));
                }
            }
        }
        let eb = dtype.bytes();
        let arena_bytes = (arena.size + scratch_len.next_multiple_of(ALIGN)) * eb;
        let arena_buf = stream.alloc_zeros::<u8>(arena_bytes.max(256)).map_err(|e| fail("allocating activations", e))?;
        let base = ptr(&arena_buf, &stream);
        let at = |v: usize| base + (arena.offsets[v] * eb) as u64;
        let scratch = base + (arena.size * eb) as u64;

        // Parameters, repacked.
        let mut pb = ParamBytes { bytes: vec![], dtype };
        let mut param_at = vec![(0usize, 0usize); plan.steps.len()];
        for (i, s) in plan.steps.iter().enumerate() {
            if let Step::Conv { x, out_ch, kernel, groups, weight, bias, .. } = *s {
                let g = plan.conv_geom(s, shapes[x])?;
                let w = &weights[weight..weight + g.weight_len];
                let c = shapes[x][0];
                let packed = if is_depthwise(c, out_ch, groups) { depthwise_to_hwc(w, c, kernel) } else { oihw_to_ohwi(w, out_ch, c / groups, kernel) };
                param_at[i] = (pb.push_t(&packed), pb.push_f32(&weights[bias..bias + out_ch]));
            }
        }
        let params = stream.clone_htod(&pb.bytes).map_err(|e| fail("uploading weights", e))?;
        let pbase = ptr(&params, &stream);

        let [c0, h0, w0] = plan.input;
        let input = stream.alloc_zeros::<f32>(batch * c0 * h0 * w0).map_err(|e| fail("allocating the input", e))?;
        let classes = shapes[plan.output][0];
        let output = stream.alloc_zeros::<f32>(batch * classes).map_err(|e| fail("allocating the output", e))?;

        let k = |name: &str| KERNEL_NAMES.iter().position(|n| *n == name).unwrap();
        let mut launches = vec![Launch::Kernel {
            f: k("nchw_to_nhwc"),
            total: sizes[0],
            args: vec![Arg::Ptr(ptr(&input, &stream)), Arg::Ptr(at(0)), Arg::I64(sizes[0] as i64), Arg::I32(c0 as i32), Arg::I32((h0 * w0) as i32)],
        }];
        let mut workspace_len = 0;
        for (i, s) in plan.steps.iter().enumerate() {
            let y = at(i + 1);
            let total = sizes[i + 1];
            let tot = Arg::I64(total as i64);
            let [c, h, w] = shapes.get(s.inputs()[0]).copied().unwrap_or([0; 3]);
            let [oc, oh, ow] = shapes[i + 1];
            match *s {
                Step::Conv { x, out_ch, kernel, stride, groups, pads: [t, l, b, r], act, .. } => {
                    let (wp, bp) = (pbase + param_at[i].0 as u64, pbase + param_at[i].1 as u64);
                    if is_depthwise(c, out_ch, groups) {
                        let a = [h, w, c, oh, ow, kernel, stride, t, l].map(|v| Arg::I32(v as i32));
                        let mut args = vec![Arg::Ptr(at(x)), Arg::Ptr(wp), Arg::Ptr(bp), Arg::Ptr(y), tot];
                        args.extend(a);
                        args.push(Arg::I32(act.code()));
                        launches.push(Launch::Kernel { f: k("depthwise"), total, args });
                        continue;
                    }
                    let (mut src, mut shape) = (at(x), ConvShape { n: batch, c, h, w, out_ch, oh, ow, kernel, stride, pad: [t, l], groups });
                    if (t, l) != (b, r) {
                        let (ph, pw) = (h + t + b, w + l + r);
                        let ptotal = batch * c * ph * pw;
                        let a = [h, w, c, ph, pw, t, l].map(|v| Arg::I32(v as i32));
                        let mut args = vec![Arg::Ptr(at(x)), Arg::Ptr(scratch), Arg::I64(ptotal as i64)];
                        args.extend(a);
                        launches.push(Launch::Kernel { f: k("pad"), total: ptotal, args });
                        (src, shape.h, shape.w, shape.pad) = (scratch, ph, pw, [0, 0]);
                    }
                    let conv = cudnn::Conv::new(&cudnn, shape, dtype, MAX_WORKSPACE).map_err(|e| fail(&format!("cuDNN conv of step {i} ({shape:?})"), e))?;
                    workspace_len = workspace_len.max(conv.workspace);
                    launches.push(Launch::Conv { conv, x: src, w: wp, y });
                    let args = vec![Arg::Ptr(y), Arg::Ptr(bp), tot, Arg::I32(oc as i32), Arg::I32(act.code())];
                    launches.push(Launch::Kernel { f: k("bias_act"), total, args });
                }
                Step::Act { x, act } => {
                    let args = vec![Arg::Ptr(at(x)), Arg::Ptr(y), tot, Arg::I32(act.code())];
                    launches.push(Launch::Kernel { f: k("act_only"), total, args });
                }
                Step::Pool { x } => {
                    let args = vec![Arg::Ptr(at(x)), Arg::Ptr(y), tot, Arg::I32((h * w) as i32), Arg::I32(c as i32)];
                    launches.push(Launch::Kernel { f: k("pool"), total, args });
                }
                Step::Mul { x, gate } => {
                    let args = vec![Arg::Ptr(at(x)), Arg::Ptr(at(gate)), Arg::Ptr(y), tot, Arg::I32((h * w) as i32), Arg::I32(c as i32)];
                    launches.push(Launch::Kernel { f: k("gate_mul"), total, args });
                }
                Step::Add { a, b } => {
                    let args = vec![Arg::Ptr(at(a)), Arg::Ptr(at(b)), Arg::Ptr(y), tot];
                    launches.push(Launch::Kernel { f: k("add"), total, args });
                }
            }
        }
        let out_total = batch * classes;
        launches.push(Launch::Kernel {
            f: k("to_f32"),
            total: out_total,
            args: vec![Arg::Ptr(at(plan.output)), Arg::Ptr(ptr(&output, &stream)), Arg::I64(out_total as i64)],
        });
        let ws = stream.alloc_zeros::<u8>(workspace_len.max(256)).map_err(|e| fail("allocating the cuDNN workspace", e))?;
        let workspace = (ptr(&ws, &stream), workspace_len);
        let mut engine = Engine {
            graph_captured: false,
            ctx,
            stream,
            cudnn,
            fns,
            launches,
            workspace,
            input,
            output,
            graph: None,
            _arena: arena_buf,
            _params: params,
            _workspace: ws,
        };
        // One eager pass (cuDNN initialises lazily), then capture the same launches.
        engine.enqueue()?;
        engine.stream.synchronize().map_err(|e| fail("first run", e))?;
        if use_graph {
            engine.capture();
        }
        Ok(engine)
    }

    fn enqueue(&self) -> Result<(), String> {
        for (i, l) in self.launches.iter().enumerate() {
            match l {
                Launch::Kernel { f, total, args } => {
                    let mut b = self.stream.launch_builder(&self.fns[*f]);
                    for a in args {
                        match a {
                            Arg::Ptr(p) => b.arg(p),
                            Arg::I32(v) => b.arg(v),
                            Arg::I64(v) => b.arg(v),
                        };
                    }
                    let blocks = total.div_ceil(256).clamp(1, 1 << 20) as u32;
                    let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
                    unsafe { b.launch(cfg) }.map_err(|e| fail(&format!("launch {i} ({})", KERNEL_NAMES[*f]), e))?;
                }
                Launch::Conv { conv, x, w, y } => {
                    unsafe { conv.launch(&self.cudnn, *x, *w, *y, self.workspace.0, self.workspace.1) }.map_err(|e| fail(&format!("launch {i} (cuDNN conv)"), e))?;
                }
            }
        }
        Ok(())
    }

    /// Capture the launches as one CUDA graph; on any failure keep launching them one by one.
    fn capture(&mut self) {
        if self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).is_err() {
            return;
        }
        let enqueued = self.enqueue();
        let flags = cudarc::driver::sys::CUgraphInstantiate_flags(0);
        let graph = self.stream.end_capture(flags);
        if let (Ok(()), Ok(Some(g))) = (enqueued, graph) {
            self.graph = Some(g);
            self.graph_captured = true;
        }
    }

    /// Logits for one batch of float32 NCHW input.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, String> {
        self.ctx.bind_to_thread().map_err(|e| fail("binding the CUDA context", e))?;
        self.stream.memcpy_htod(input, &mut self.input).map_err(|e| fail("copying the input", e))?;
        match &self.graph {
            Some(g) => g.launch().map_err(|e| fail("replaying the CUDA graph", e))?,
            None => self.enqueue()?,
        }
        let mut out = vec![0.0f32; self.output.len()];
        self.stream.memcpy_dtoh(&self.output, &mut out).map_err(|e| fail("copying the logits", e))?;
        self.stream.synchronize().map_err(|e| fail("running the network", e))?;
        Ok(out)
    }
}

fn is_depthwise(c: usize, out_ch: usize, groups: usize) -> bool {
    groups > 1 && groups == c && out_ch == c
}
