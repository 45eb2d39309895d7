//! CPU backend: the artifact's ONNX through tract, input shape fixed (so tract picks its
//! specialised depthwise kernels) and an optional multi-threaded executor.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::manifest::Manifest;

#[cfg(target_arch = "x86_64")]
mod depthwise_c;
mod channel_scale;
mod qdq;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod depthwise_block;
#[cfg(target_arch = "x86_64")]
mod direct_conv;
#[cfg(target_arch = "x86_64")]
mod matvec;
#[cfg(target_arch = "x86_64")]
mod pointwise;
#[cfg(target_arch = "x86_64")]
mod int8_pointwise;
#[cfg(target_arch = "x86_64")]
mod int8_direct_conv;

/// Which channel-inner depthwise kernel tract runs here (x86_64: ours, filed in its registry).
/// Anything using tract in this process gets it once this crate is linked.
pub fn depthwise_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let name = depthwise_c::active_kernel();
    #[cfg(not(target_arch = "x86_64"))]
    let name = tract_linalg::routines::depthwise_c_f32().map(|_| "tract's own");
    name.unwrap_or("none (depthwise stays NCHW)")
}
use crate::{check_input, OpenOptions, Runtime, RuntimeError};

/// tract 0.23.9's AMX int8 matrix kernel (`avx512amx_mmm_i32_8x8`) loads its B tiles past the end
/// of their packed panels: on a CPU with AMX (Xeon Sapphire Rapids and later) an int8 QLinear model
/// segfaults whenever a panel happens to end at a page boundary — the sporadic SIGSEGV our int8
/// tests hit, made certain with a guard page after every allocation (Electric Fence; gdb stops on
/// that `tileloadd`). Until tract fixes it, effv2-runtime takes AMX int8 out of the instruction set
/// tract dispatches on, as a process-wide default below the environment (`TRACT_CPU_ISA` set by a
/// user still wins), so int8 products run on the AVX-512 kernels. It must happen before tract first
/// probes the CPU: `open` calls it, and so must code that runs tract itself before any `open`.
pub fn avoid_tract_amx_int8() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only if another deployment config set this knob first; then theirs stands.
        let _ = tract_onnx::tract_core::knobs::set_config_global("TRACT_CPU_ISA", "-amx-int8");
    });
}

/// A new f32 tensor of `shape` for an op of ours to fill. Not zeroed, since `fill` writes every
/// element: a zeroed buffer of a few MB is fresh pages from the OS on every run, whose faults
/// cost more than the stem's arithmetic.
fn filled_f32(shape: &[usize], fill: impl FnOnce(&mut [f32])) -> TractResult<TValue> {
    let mut out = unsafe { Tensor::uninitialized::<f32>(shape)? };
    fill(out.to_plain_array_view_mut::<f32>()?.as_slice_mut().ok_or_else(|| TractError::msg("a fresh tensor is contiguous"))?);
    Ok(out.into_tvalue())
}

/// A contiguous tensor's values (an input of one of our ops).
fn plain<T: Datum>(t: &TValue) -> TractResult<&[T]> {
    t.try_as_plain_ram()?.as_slice::<T>()
}

/// The only reader of `id`'s output when it is an `op_name` node (and the output not a model
/// output): an op our kernel can take over.
fn single_reader<'m>(model: &'m TypedModel, id: usize, op_name: &str) -> TractResult<Option<&'m TypedNode>> {
    if model.output_outlets()?.contains(&OutletId::new(id, 0)) {
        return Ok(None);
    }
    Ok(model.single_succ(id)?.filter(|s| s.op().name() == op_name))
}

/// The single reader of `id`'s output if it is an `Add`, with the other operand.
fn single_add(model: &TypedModel, id: usize) -> TractResult<Option<(usize, OutletId)>> {
    let Some(add) = single_reader(model, id, "Add")?.filter(|s| s.inputs.len() == 2) else { return Ok(None) };
    let other = if add.inputs[0].node == id { add.inputs[1] } else { add.inputs[0] };
    Ok(Some((add.id, other)))
}

/// The u8 grid the values on `outlet` lie on, when an int8 graph's table wrote them: a table op,
/// or a kernel of ours that applied one in its epilogue.
#[cfg(target_arch = "x86_64")]
fn grid_of(model: &TypedModel, outlet: OutletId) -> Option<qdq::Grid> {
    let node = model.node(outlet.node);
    let table = (node.op_as::<qdq::QuantTable>())
        .or_else(|| node.op_as::<pointwise::Pointwise>()?.table.as_ref())
        .or_else(|| node.op_as::<direct_conv::DirectConv>()?.table.as_ref())
        .or_else(|| node.op_as::<depthwise_block::Depthwise>()?.table.as_ref());
    table?.grid()
}

/// How an int8 kernel reading `outlet` gets its u8 codes, and the outlet it then reads: a table
/// op that only this reader reads is taken in (the kernel reads the table's input and maps its
/// quantized index to the code of the table's value: one pass over the image fewer, e.g. an
/// SE gate product's table before the project conv); otherwise the values' own grid.
#[cfg(target_arch = "x86_64")]
fn input_codes(model: &TypedModel, outlet: OutletId) -> TractResult<Option<(OutletId, qdq::InputCodes)>> {
    let node = model.node(outlet.node);
    if let Some(t) = node.op_as::<qdq::QuantTable>() {
        let alone = model.outlet_successors(outlet).len() == 1 && !model.output_outlets()?.contains(&outlet);
        if let Some(codes) = qdq::InputCodes::through(t).filter(|_| alone) {
            return Ok(Some((node.inputs[0], codes)));
        }
    }
    Ok(grid_of(model, outlet).map(|g| (outlet, qdq::InputCodes::of_grid(g))))
}

/// tract's optimisation of a typed model with our kernels in it: decluttered, an int8 QDQ graph's
/// quantize / dequantize chains made tables (`qdq`, any CPU), then on x86_64 with
/// AVX-512 the dense convs of the stem and fused stages (`direct_conv`), the MBConv stages moved
/// channel-last between blocks with their 1x1 convs and SE gates (`pointwise`), their depthwise
/// convs with SiLU and SE pooling (`depthwise_block`) and the matrix-vector products
/// (`matvec`) swapped in; on any CPU the SE gate products tract would broadcast slowly
/// (`channel_scale`); then tract's own codegen. What every tract run of an artifact goes
/// through (the profiling example too).
pub fn optimize(model: TypedModel) -> TractResult<TypedModel> {
    let mut model = model.into_decluttered()?;
    qdq::rewrite(&mut model)?;
    #[cfg(target_arch = "x86_64")]
    direct_conv::rewrite(&mut model)?;
    #[cfg(target_arch = "x86_64")]
    pointwise::rewrite(&mut model)?;
    #[cfg(target_arch = "x86_64")]
    depthwise_block::rewrite(&mut model)?;
    #[cfg(target_arch = "x86_64")]
    matvec::rewrite(&mut model)?;
    channel_scale::rewrite(&mut model)?;
    model.into_optimized()
}

/// The int8 QDQ rewrites alone (part of [`optimize`]) on a decluttered model: dequantized
/// weights folded to constants, and each run of element-wise ops after a QuantizeLinear made one
/// table op. Returns (constants folded, tables made). For tests that compare against tract's own
/// graph, which must give the same outputs to the bit.
pub fn qdq_rewrite(model: &mut TypedModel) -> TractResult<(usize, usize)> {
    qdq::rewrite(model)
}

/// Which dense-conv kernel the tract backend uses for the stem and fused stages here.
pub fn dense_conv_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if direct_conv::enabled() {
        return "effv2 direct avx512";
    }
    "tract im2col"
}

/// Which kernels run the network's ops here, in words: the depthwise convs (our fused pass, or
/// tract's with the registry's channel-inner kernel), the dense convs, the 1x1 convs and the
/// matrix-vector products. For `device()` and the bench reports.
pub fn kernels() -> String {
    #[cfg(target_arch = "x86_64")]
    let (depthwise, pointwise, matvec, int8) = (
        depthwise_block::enabled().then_some("effv2 avx512 (+ SiLU + SE pooling)"),
        pointwise::enabled().then_some("effv2 avx512 12x32 channel-last"),
        matvec::enabled().then_some("effv2 avx512 streaming"),
        int8_pointwise::enabled().then_some("effv2 avx512 VNNI u8×i8 (dense and 1x1)"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (depthwise, pointwise, matvec, int8) = (None::<&str>, None::<&str>, None::<&str>, None::<&str>);
    let depthwise = depthwise.map_or_else(|| format!("tract, kernel {}", depthwise_kernel()), str::to_string);
    format!(
        "depthwise {depthwise}, dense conv {}, 1x1 conv {}, matrix-vector {}, int8 conv {}",
        dense_conv_kernel(),
        pointwise.unwrap_or("tract matmul"),
        matvec.unwrap_or("tract matmul"),
        int8.unwrap_or("as f32")
    )
}

/// cpu artifacts run wherever this backend is compiled: the CPU and the kernels tract will use.
pub(crate) fn probe() -> super::Found {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let detail = format!("{} CPU, {cores} logical cores; {}", std::env::consts::ARCH, kernels());
    super::Found { readiness: super::Readiness::Ready, devices: vec![], detail }
}

pub struct TractRuntime {
    manifest: Manifest,
    plan: Arc<TypedSimplePlan>,
    shape: [usize; 4],
    threads: usize,
    /// The pool tract's matrix products split over. A run is entered on one of its workers, so
    /// the calling thread does not sit beside them: with a thread per core, a third runnable
    /// thread (the caller running SiLU or depthwise while the workers spin down) took a core
    /// from them after every product.
    pool: Option<Arc<rayon::ThreadPool>>,
}

fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend { backend: "tract".into(), why: format!("{e:#}") }
}

impl TractRuntime {
    pub fn open(dir: &Path, manifest: Manifest, opts: &OpenOptions) -> Result<Self, RuntimeError> {
        avoid_tract_amx_int8();
        let file = manifest.file("model").expect("verified manifest has a model");
        let path = Manifest::path_of(dir, file);
        let [_, c, h, w] = <[usize; 4]>::try_from(manifest.input.shape.as_slice()).expect("verified 4-D input");
        let n = opts.batch.unwrap_or(manifest.input.shape[0]).max(1);
        let threads = opts.threads.unwrap_or(1).max(1);
        let model = tract_onnx::onnx()
            .model_for_path(&path)
            .map_err(err)?
            .with_input_fact(0, f32::fact([n, c, h, w]).into())
            .map_err(err)?
            .into_typed()
            .map_err(err)?;
        let model = optimize(model).map_err(err)?;
        let mut options = RunOptions::default();
        let mut pool = None;
        if threads > 1 {
            let workers = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("effv2-tract-{i}"))
                .build()
                .map_err(|e| err(format!("cannot start {threads} threads: {e}")))?;
            let workers = Arc::new(workers);
            options.executor = Some(tract_linalg::multithread::Executor::MultiThread(workers.clone()));
            pool = Some(workers);
        }
        let plan = model.into_runnable_with_options(&options).map_err(err)?;
        Ok(TractRuntime { manifest, plan, shape: [n, c, h, w], threads, pool })
    }
}

impl Runtime for TractRuntime {
    fn backend(&self) -> &str {
        "tract"
    }

    fn device(&self) -> String {
        let threads = format!("{} thread{}", self.threads, if self.threads == 1 { "" } else { "s" });
        format!("cpu {}, {threads}, {}", std::env::consts::ARCH, kernels())
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn input_shape(&self) -> [usize; 4] {
        self.shape
    }

    fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        check_input(input, self.shape)?;
        let t = Tensor::from_shape(&self.shape, input).map_err(err)?;
        let plan = &self.plan;
        let out = match &self.pool {
            Some(pool) => pool.install(|| plan.run(tvec!(t.into()))),
            None => plan.run(tvec!(t.into())),
        }
        .map_err(err)?;
        let logits = out[0].to_plain_array_view::<f32>().map_err(err)?;
        Ok(logits.iter().copied().collect())
    }
}
