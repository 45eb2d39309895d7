//! A plan lowered to launches over raw addresses, with no GPU code: the static memory layout
//! (activation arena, scratch, parameter bytes) and the ordered kernel/conv launches with their
//! exact argument lists. The CUDA engine replays these on the device; tests replay them on the host
//! with the same kernel source compiled as C++, so argument order and offsets are checked without a
//! GPU.

use super::arena::{plan_arena, Arena, ALIGN};
use super::layout::{depthwise_to_hwc, oihw_to_ohwi};
use super::{NetPlan, Step};

/// Kernels of `kernels.cu`, by index.
pub const KERNEL_NAMES: [&str; 14] = ["nchw_to_nhwc", "to_f32", "bias_act", "bias_act_add", "bias_act_pad", "act_only", "depthwise", "depthwise_pool", "pool", "pool_rows", "gate_mul", "add", "pad", "pad_border"];

/// Fewest threads (`batch · oh · ⌈ow / POOL_SEGMENT⌉ · c / 8`) for which a depthwise conv whose
/// output the SE pool reads runs as `depthwise_pool` (a thread per [`POOL_SEGMENT`] pixels of a row,
/// their sums for the pool): below, so few threads would leave most of a GPU idle (b0 at batch 1
/// has 1,680 of them at 14x14), so the conv keeps a pixel per thread and the pool its own pass.
pub const POOL_FUSION_MIN_THREADS: usize = 1 << 15;
/// Output pixels of a row per `depthwise_pool` thread: long enough to cut the pool's reads
/// (oh · ⌈ow / 8⌉ partials per channel instead of oh · ow values), short enough to keep several
/// waves of threads (S at 384, batch 128: 1.1 M threads at 24x24).
pub const POOL_SEGMENT: usize = 8;

/// Row segments of an `oh x ow` output per sample: `depthwise_pool`'s partial sums per channel,
/// which `pool_rows` adds up.
fn pool_pieces(oh: usize, ow: usize) -> usize {
    oh * ow.div_ceil(POOL_SEGMENT)
}
/// Threads per block of every kernel launch.
pub const BLOCK: u32 = 256;
/// Elements per thread on the kernels' vector path (`VEC` in kernels.cu).
pub const VEC: usize = 8;

/// Threads of a launch over `total` elements whose kernel takes the vector path when `unit` (its
/// channel count, or `total` itself for kernels without channels) is a multiple of VEC — the
/// test the kernels make (precision.cu) — else one thread per element.
pub fn wide_threads(total: usize, unit: usize) -> usize {
    if unit.is_multiple_of(VEC) {
        total / VEC
    } else {
        total
    }
}

/// Most rows a thread of a row-tiled kernel takes (`ROW_TILE` in precision.cu).
pub const ROW_TILE: usize = 4;
/// Threads a row-tiled launch keeps where it can: tiles grow only while the launch still has
/// this many (about what an H100/H200 holds resident), so small batches (Jetson, batch 1) keep
/// a thread per VEC elements.
pub const ROW_TILE_MIN_THREADS: usize = 1 << 17;

/// Rows per thread (`rpt`) of a row-tiled kernel (precision.cu's row tiles) over `total`
/// elements of `c` channels: the most, up to [`ROW_TILE`], that leaves the launch `min_threads`
/// threads (the engines pass [`ROW_TILE_MIN_THREADS`], tests 0); 1 where `c` is not a multiple
/// of VEC (the kernels' scalar path).
pub fn row_tile(total: usize, c: usize, min_threads: usize) -> usize {
    if c == 0 || !c.is_multiple_of(VEC) {
        return 1;
    }
    let (rows, groups) = (total / c, c / VEC);
    [4, 2].into_iter().filter(|&r| r <= ROW_TILE).find(|&r| rows.div_ceil(r) * groups >= min_threads).unwrap_or(1)
}

/// Threads of a row-tiled launch of `rpt` rows a tile: a tile each, or an element each where `c`
/// is not a multiple of VEC.
pub fn row_tile_threads(total: usize, c: usize, rpt: usize) -> usize {
    if c == 0 || !c.is_multiple_of(VEC) {
        return total;
    }
    (total / c).div_ceil(rpt) * (c / VEC)
}

/// [`wide_threads`] for inference kernel `kernel` over `total` elements of `c` channels (the
/// row-tiled `bias_act` and `bias_act_add` take [`row_tile_threads`]).
pub fn kernel_threads(kernel: &str, total: usize, c: usize) -> usize {
    match kernel {
        "depthwise" | "gate_mul" => wide_threads(total, c),
        "add" | "act_only" => wide_threads(total, total),
        _ => total,
    }
}

/// The activation type `T` and its `ld` / `st` conversions, which every kernel source (the
/// inference kernels, the training kernels) is compiled after; [`DType::kernel_defines`] picks the type.
pub const PRECISION_CU: &str = include_str!("../backends/cuda/precision.cu");

/// Element type of activations and weights (biases are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    Bf16,
}

impl DType {
    pub fn bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    /// The macros `kernels.cu` is compiled with for activations of this type.
    pub fn kernel_defines(self) -> Vec<String> {
        match self {
            DType::F32 => vec![],
            DType::F16 => vec!["-DEFFV2_HALF".into()],
            DType::Bf16 => vec!["-DEFFV2_BF16".into()],
        }
    }
}

/// One kernel argument, passed by value like CUDA's kernel parameter array.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl Arg {
    /// The argument in an 8-byte little-endian slot (a 4-byte one in the low half), as host
    /// harnesses hand kernel parameter arrays around.
    pub fn slot(self) -> u64 {
        match self {
            Arg::Ptr(p) => p,
            Arg::I32(v) => v as u32 as u64,
            Arg::I64(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
            Arg::F64(v) => v.to_bits(),
        }
    }
}

/// A conv for cuDNN: NHWC input `[n, c, h, w]`, OHWI filter, symmetric padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub out_ch: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: [usize; 2],
    pub groups: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LaunchSpec {
    /// `KERNEL_NAMES[f]` in `total` threads (the output elements, or a VEC-th of them: [`kernel_threads`]).
    Kernel { f: usize, total: usize, args: Vec<Arg> },
    /// `y = conv(x, w)` (no bias; a `bias_act` launch follows).
    Conv { shape: ConvShape, x: u64, w: u64, y: u64 },
    /// A 1x1 conv on a 1x1 image (the classifier, the SE projections) as a matrix product for
    /// cuBLAS: `y[batch, out] = x[batch, k] · w[out, k]ᵀ`, all row-major in `dtype` (no bias; a
    /// `bias_act` launch follows).
    Gemm { batch: usize, out: usize, k: usize, x: u64, w: u64, y: u64 },
}

impl ConvShape {
    /// cuDNN pads symmetrically; an asymmetric "same" padding `[t, l, b, r]` is done by copying the
    /// NHWC input at `*x` into `scratch` with the exact padding (the `pad` kernel) and running the
    /// conv unpadded on that copy. Returns the `pad` launch's (threads, kernel arguments) and switches `self`
    /// and `*x` to it; `None`, with nothing changed, when the padding is symmetric. The arguments
    /// after the first three (h, w, c, padded h, padded w, t, l) also describe the inverse crop.
    pub fn pad_into(&mut self, [t, l, b, r]: [usize; 4], x: &mut u64, scratch: u64) -> Option<(usize, Vec<Arg>)> {
        if (t, l) == (b, r) {
            return None;
        }
        let (h, w, c) = (self.h, self.w, self.c);
        let (ph, pw) = (h + t + b, w + l + r);
        let total = self.n * c * ph * pw;
        let mut args = vec![Arg::Ptr(*x), Arg::Ptr(scratch), Arg::I64(total as i64)];
        args.extend([h, w, c, ph, pw, t, l].map(|v| Arg::I32(v as i32)));
        (*x, self.h, self.w, self.pad) = (scratch, ph, pw, [0, 0]);
        Some((wide_threads(total, c), args))
    }
}

/// Where a tensor `[n, h, w, c]` is written with its zero padding `[t, l, b, r]` around it (the
/// copy an asymmetric-padding conv reads): padded height and width and the interior's offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaddedInto {
    pub ph: usize,
    pub pw: usize,
    pub top: usize,
    pub left: usize,
}

impl PaddedInto {
    pub fn new(h: usize, w: usize, [t, l, b, r]: [usize; 4]) -> PaddedInto {
        PaddedInto { ph: h + t + b, pw: w + l + r, top: t, left: l }
    }

    /// No padding: the tensor as it is.
    pub fn none(h: usize, w: usize) -> PaddedInto {
        PaddedInto { ph: h, pw: w, top: 0, left: 0 }
    }

    fn i32s(self) -> [Arg; 4] {
        [self.ph, self.pw, self.top, self.left].map(|v| Arg::I32(v as i32))
    }

    /// `pad_border`'s (threads, arguments): zeros on the border of `y`, an `[n, ph, pw, c]` tensor
    /// whose interior (`h x w`) a producer writes.
    pub fn border(self, y: u64, n: usize, c: usize, h: usize, w: usize) -> (usize, Vec<Arg>) {
        let total = n * (self.ph * self.pw - h * w) * c;
        let args = [vec![Arg::Ptr(y), Arg::I64(total as i64)], [h, w, c].map(|v| Arg::I32(v as i32)).to_vec(), self.i32s().to_vec()].concat();
        (wide_threads(total, c), args)
    }
}

/// `nchw_to_nhwc`'s arguments: the f32 NCHW `x` `[n, c, h, w]` into `y` in `dtype` NHWC, at `into`'s
/// offset in a padded tensor (or [`PaddedInto::none`]). `c = h = w = 1` narrows a flat array.
pub fn to_nhwc_args(x: u64, y: u64, n: usize, [c, h, w]: [usize; 3], into: PaddedInto) -> Vec<Arg> {
    [vec![Arg::Ptr(x), Arg::Ptr(y), Arg::I64((n * c * h * w) as i64)], [c, h, w].map(|v| Arg::I32(v as i32)).to_vec(), into.i32s().to_vec()].concat()
}

/// A column-major BLAS gemm, `C = op(A) · op(B)` with `op(A)` m x k and `op(B)` k x n: what a
/// [`LaunchSpec::Gemm`] asks cuBLAS for (A = the weights, B = the input, C = the output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlasGemm {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
    /// C in f32 whatever A and B hold (cuBLAS's mixed-type gemm): a weight gradient from 16-bit
    /// values straight into the f32 gradients, without a 16-bit copy to widen.
    pub c_f32: bool,
    /// `C += op(A) · op(B)` (β = 1): a second gradient contribution added in place.
    pub accumulate: bool,
}

impl BlasGemm {
    /// Row-major `y[batch, out] = x[batch, k] · w[out, k]ᵀ` is column-major `yᵀ = w · xᵀ`: `w` read
    /// as a k x out column-major matrix and transposed, `x` as k x batch, `yᵀ` out x batch.
    pub fn for_linear(batch: usize, out: usize, k: usize) -> BlasGemm {
        BlasGemm { trans_a: true, trans_b: false, m: out, n: batch, k, lda: k, ldb: k, ldc: out, c_f32: false, accumulate: false }
    }
}

/// Grid size of a kernel over `total` elements (the kernels stride over the rest).
pub fn grid(total: usize) -> u32 {
    total.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32
}

/// How many steps read each value.
fn reader_counts(plan: &NetPlan, values: usize) -> Vec<usize> {
    let mut readers = vec![0usize; values];
    for s in &plan.steps {
        for v in s.inputs() {
            readers[v] += 1;
        }
    }
    readers
}

/// [`Layout::add_fused`]: per step, whether it is a conv (not depthwise) whose output is read by
/// the next step alone, an Add of it and another value, and is not the plan's output. The Add's
/// output is then written at the conv's step, one step before the arena plan has it born: only the
/// conv's own inputs can have been freed for it in between, and the conv has read them by then.
fn residual_adds(plan: &NetPlan, shapes: &[[usize; 3]], readers: &[usize]) -> Vec<bool> {
    (0..plan.steps.len())
        .map(|i| {
            let Step::Conv { x, out_ch, groups, .. } = plan.steps[i] else { return false };
            let next_adds = matches!(plan.steps.get(i + 1), Some(&Step::Add { a, b }) if (a == i + 1) != (b == i + 1));
            !is_depthwise(shapes[x][0], out_ch, groups) && next_adds && readers[i + 1] == 1 && plan.output != i + 1
        })
        .collect()
}

/// [`Layout::pad_fused`]: per step, whether it is a conv (not depthwise) with asymmetric padding
/// whose input, read by it alone, is the output of the step just before (or the network input) and
/// is written by a kernel that can write it padded: the input conversion, a conv's bias and
/// activation, or a conv's bias, activation and residual Add (`add_fused`). Nothing runs between
/// the producer and the conv, so the scratch block holding the padded copy is still intact.
fn padded_by_producer(plan: &NetPlan, shapes: &[[usize; 3]], readers: &[usize], add_fused: &[bool]) -> Vec<bool> {
    (0..plan.steps.len())
        .map(|j| {
            let Step::Conv { x, out_ch, groups, pads: [t, l, b, r], .. } = plan.steps[j] else { return false };
            if x != j || (t, l) == (b, r) || is_depthwise(shapes[x][0], out_ch, groups) || readers[x] != 1 || plan.output == x {
                return false;
            }
            match j.checked_sub(1).map(|p| (p, &plan.steps[p])) {
                None => true,
                Some((p, &Step::Conv { x, out_ch, groups, .. })) => !is_depthwise(shapes[x][0], out_ch, groups) && !add_fused[p],
                Some((p, Step::Add { .. })) => p > 0 && add_fused[p - 1],
                Some(_) => false,
            }
        })
        .collect()
}

fn is_depthwise(c: usize, out_ch: usize, groups: usize) -> bool {
    groups > 1 && groups == c && out_ch == c
}

/// Where everything lives for one batch size and data type.
pub struct Layout {
    pub dtype: DType,
    pub batch: usize,
    pub shapes: Vec<[usize; 3]>,
    pub arena: Arena,
    /// Bytes of the activation arena, scratch included.
    pub arena_bytes: usize,
    /// Byte offset of the scratch block (padded copies for asymmetric-padding convs).
    pub scratch_at: usize,
    /// Repacked weights (dtype) and biases (f32), each block 256-byte aligned.
    pub params: Vec<u8>,
    /// Byte offsets of each step's (weight, bias) in `params` (convs only).
    pub param_at: Vec<(usize, usize)>,
    /// f32 elements of the NCHW input and of the logits.
    pub input_len: usize,
    pub output_len: usize,
    /// Per step: a depthwise conv that also sums its rows for the SE pool reading its output
    /// (`depthwise_pool`, then `pool_rows`; see [`Layout::fuse_pools`]).
    pub pool_fused: Vec<bool>,
    /// Byte offset of the f32 row sums those convs write (after the scratch block).
    pub partials_at: usize,
    /// Threads the row-tiled kernels keep at least ([`row_tile`]; tests set 0 to tile every launch).
    pub tile_min_threads: usize,
    /// Per step: a (non-depthwise) conv whose output only the next step, a residual Add, reads —
    /// `bias_act_add` instead of its `bias_act` adds the Add's other input and writes the Add's
    /// output, and the Add launches nothing (two passes over the tensor fewer).
    pub add_fused: Vec<bool>,
    /// Per step: an asymmetric-padding conv whose input's producer writes it straight into the
    /// padded scratch copy (`bias_act_pad` or `nchw_to_nhwc` with an offset, then `pad_border`):
    /// no `pad` pass reading it back ([`padded_by_producer`]).
    pub pad_fused: Vec<bool>,
}

fn push_block(bytes: &mut Vec<u8>, v: &[f32], dtype: DType) -> usize {
    let at = bytes.len();
    match dtype {
        DType::F32 => bytes.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        DType::F16 => bytes.extend(v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes())),
        DType::Bf16 => bytes.extend(v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())),
    }
    bytes.resize(bytes.len().next_multiple_of(256), 0);
    at
}

impl Layout {
    pub fn new(plan: &NetPlan, weights: &[f32], batch: usize, dtype: DType) -> Result<Layout, String> {
        let shapes = plan.shapes()?;
        if weights.len() != plan.weights_len {
            return Err(format!("{} weights for a plan of {}", weights.len(), plan.weights_len));
        }
        let sizes: Vec<usize> = shapes.iter().map(|s| batch * s.iter().product::<usize>()).collect();
        let inputs: Vec<Vec<usize>> = plan.steps.iter().map(|s| s.inputs()).collect();
        let arena = plan_arena(&sizes, &inputs, plan.output);
        let mut scratch_len = 0;
        let mut params = vec![];
        let mut param_at = vec![(0, 0); plan.steps.len()];
        for (i, s) in plan.steps.iter().enumerate() {
            if let Step::Conv { x, out_ch, kernel, groups, pads: [t, l, b, r], weight, bias, .. } = *s {
                let [c, h, w] = shapes[x];
                if (t, l) != (b, r) && !is_depthwise(c, out_ch, groups) {
                    scratch_len = scratch_len.max(batch * c * (h + t + b) * (w + l + r));
                }
                let g = plan.conv_geom(s, shapes[x])?;
                let wt = &weights[weight..weight + g.weight_len];
                let packed = if is_depthwise(c, out_ch, groups) { depthwise_to_hwc(wt, c, kernel) } else { oihw_to_ohwi(wt, out_ch, c / groups, kernel) };
                param_at[i] = (push_block(&mut params, &packed, dtype), push_block(&mut params, &weights[bias..bias + out_ch], DType::F32));
            }
        }
        let eb = dtype.bytes();
        let scratch_at = arena.size * eb;
        let arena_bytes = (arena.size + scratch_len.next_multiple_of(ALIGN)) * eb;
        let [c0, h0, w0] = plan.input;
        let output_len = batch * shapes[plan.output][0];
        let partials_at = arena_bytes.next_multiple_of(256);
        let readers = reader_counts(plan, shapes.len());
        let add_fused = residual_adds(plan, &shapes, &readers);
        let pad_fused = padded_by_producer(plan, &shapes, &readers, &add_fused);
        let mut layout = Layout { dtype, batch, shapes, arena, arena_bytes, scratch_at, params, param_at, input_len: batch * c0 * h0 * w0, output_len, pool_fused: vec![], partials_at, tile_min_threads: ROW_TILE_MIN_THREADS, add_fused, pad_fused };
        layout.fuse_pools(plan, POOL_FUSION_MIN_THREADS);
        Ok(layout)
    }

    /// Picks the depthwise convs that sum their rows for the SE pool (channels a multiple of
    /// VEC, at least `min_threads` rows x channel groups; tests pass 0 to take every one) and sizes
    /// the arena for their row sums.
    pub fn fuse_pools(&mut self, plan: &NetPlan, min_threads: usize) {
        let pooled: Vec<usize> = plan.steps.iter().filter_map(|s| if let Step::Pool { x } = *s { Some(x) } else { None }).collect();
        let mut partial_bytes = 0;
        self.pool_fused = plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let Step::Conv { x, out_ch, groups, .. } = *s else { return false };
                let [c, _, _] = self.shapes[x];
                let [_, oh, ow] = self.shapes[i + 1];
                let pieces = self.batch * pool_pieces(oh, ow);
                let fused = is_depthwise(c, out_ch, groups) && c % VEC == 0 && pooled.contains(&(i + 1)) && pieces * c / VEC >= min_threads;
                if fused {
                    partial_bytes = partial_bytes.max(4 * pieces * c);
                }
                fused
            })
            .collect();
        self.arena_bytes = self.partials_at + partial_bytes;
    }

    /// Where value `v` is written when its reader, step `v`, takes it padded from its producer
    /// ([`Layout::pad_fused`]): that conv's padding around `v`'s shape, in the scratch block.
    fn padded_into(&self, plan: &NetPlan, v: usize) -> Option<PaddedInto> {
        match plan.steps.get(v) {
            Some(&Step::Conv { pads, .. }) if self.pad_fused[v] => Some(PaddedInto::new(self.shapes[v][1], self.shapes[v][2], pads)),
            _ => None,
        }
    }

    /// The launches of one forward pass, given the device (or host) addresses of the arena, the
    /// parameters, the f32 input and the f32 output.
    pub fn launches(&self, plan: &NetPlan, arena: u64, params: u64, input: u64, output: u64) -> Vec<LaunchSpec> {
        let eb = self.dtype.bytes() as u64;
        let at = |v: usize| arena + self.arena.offsets[v] as u64 * eb;
        let scratch = arena + self.scratch_at as u64;
        let partials = arena + self.partials_at as u64;
        let size = |v: usize| self.batch * self.shapes[v].iter().product::<usize>();
        let k = |name: &str| KERNEL_NAMES.iter().position(|n| *n == name).expect("known kernel");
        let i32s = |v: &[usize]| v.iter().map(|&x| Arg::I32(x as i32)).collect::<Vec<_>>();
        let [c0, h0, w0] = plan.input;
        let padded = |v: usize| self.padded_into(plan, v);
        // Zeros around a padded copy in the scratch block whose interior is written by its producer.
        let border = |p: PaddedInto, [c, h, w]: [usize; 3]| {
            let (total, args) = p.border(scratch, self.batch, c, h, w);
            LaunchSpec::Kernel { f: k("pad_border"), total, args }
        };
        let into0 = padded(0);
        let mut out = vec![LaunchSpec::Kernel {
            f: k("nchw_to_nhwc"),
            total: size(0),
            args: to_nhwc_args(input, if into0.is_some() { scratch } else { at(0) }, self.batch, plan.input, into0.unwrap_or(PaddedInto::none(h0, w0))),
        }];
        if let Some(p) = into0 {
            out.push(border(p, [c0, h0, w0]));
        }
        for (i, s) in plan.steps.iter().enumerate() {
            let (y, total) = (at(i + 1), size(i + 1));
            let tot = Arg::I64(total as i64);
            let [c, h, w] = self.shapes[s.inputs()[0]];
            let [oc, oh, ow] = self.shapes[i + 1];
            let (kernel, args) = match *s {
                Step::Conv { x, out_ch, kernel, stride, groups, pads: [t, l, b, r], act, .. } => {
                    let (wp, bp) = (params + self.param_at[i].0 as u64, params + self.param_at[i].1 as u64);
                    let geo = [i32s(&[h, w, c, oh, ow, kernel, stride, t, l]), vec![Arg::I32(act.code())]].concat();
                    if self.pool_fused[i] {
                        // VEC channels of POOL_SEGMENT pixels per thread, their sums for the pool after it.
                        let threads = self.batch * pool_pieces(oh, ow) * c / VEC;
                        let args = [vec![Arg::Ptr(at(x)), Arg::Ptr(wp), Arg::Ptr(bp), Arg::Ptr(y), Arg::Ptr(partials), Arg::I64(threads as i64)], geo, vec![Arg::I32(POOL_SEGMENT as i32)]].concat();
                        out.push(LaunchSpec::Kernel { f: k("depthwise_pool"), total: threads, args });
                        continue;
                    }
                    if is_depthwise(c, out_ch, groups) {
                        ("depthwise", [vec![Arg::Ptr(at(x)), Arg::Ptr(wp), Arg::Ptr(bp), Arg::Ptr(y), tot], geo].concat())
                    } else {
                        if (h, w, oh, ow, kernel, groups, t + l + b + r) == (1, 1, 1, 1, 1, 1, 0) {
                            out.push(LaunchSpec::Gemm { batch: self.batch, out: out_ch, k: c, x: at(x), w: wp, y });
                        } else {
                            let mut shape = ConvShape { n: self.batch, c, h, w, out_ch, oh, ow, kernel, stride, pad: [t, l], groups };
                            let mut src = at(x);
                            match shape.pad_into([t, l, b, r], &mut src, scratch) {
                                // Its producer wrote it padded.
                                Some(_) if self.pad_fused[i] => {}
                                Some((threads, args)) => out.push(LaunchSpec::Kernel { f: k("pad"), total: threads, args }),
                                None => {}
                            }
                            out.push(LaunchSpec::Conv { shape, x: src, w: wp, y });
                        }
                        let rpt = row_tile(total, oc, self.tile_min_threads);
                        // With the residual Add after it: the Add's other input, and the value written is the Add's.
                        let skip = match plan.steps.get(i + 1) {
                            Some(&Step::Add { a, b }) if self.add_fused[i] => Some(at(if a == i + 1 { b } else { a })),
                            _ => None,
                        };
                        let written = if skip.is_some() { i + 2 } else { i + 1 };
                        let into = padded(written);
                        let tail = vec![tot, Arg::I32(oc as i32), Arg::I32(act.code()), Arg::I32(rpt as i32)];
                        let threads = row_tile_threads(total, oc, rpt);
                        // In place; into the Add's output; or into the padded copy the next conv reads.
                        let (kernel, args) = match (into, skip) {
                            (Some(p), skip) => ("bias_act_pad", [vec![Arg::Ptr(y), Arg::Ptr(bp), Arg::Ptr(skip.unwrap_or(0)), Arg::Ptr(scratch)], tail, i32s(&[oh, ow]), p.i32s().to_vec()].concat()),
                            (None, Some(skip)) => ("bias_act_add", [vec![Arg::Ptr(y), Arg::Ptr(bp), Arg::Ptr(skip), Arg::Ptr(at(written))], tail].concat()),
                            (None, None) => ("bias_act", [vec![Arg::Ptr(y), Arg::Ptr(bp)], tail].concat()),
                        };
                        out.push(LaunchSpec::Kernel { f: k(kernel), total: threads, args });
                        if let Some(p) = into {
                            out.push(border(p, [oc, oh, ow]));
                        }
                        continue;
                    }
                }
                Step::Act { x, act } => ("act_only", vec![Arg::Ptr(at(x)), Arg::Ptr(y), tot, Arg::I32(act.code())]),
                Step::Pool { x } if x > 0 && self.pool_fused[x - 1] => ("pool_rows", [vec![Arg::Ptr(partials), Arg::Ptr(y), tot], i32s(&[pool_pieces(h, w), h * w, c])].concat()),
                Step::Pool { x } => ("pool", [vec![Arg::Ptr(at(x)), Arg::Ptr(y), tot], i32s(&[h * w, c])].concat()),
                Step::Mul { x, gate } => ("gate_mul", [vec![Arg::Ptr(at(x)), Arg::Ptr(at(gate)), Arg::Ptr(y), tot], i32s(&[h * w, c])].concat()),
                // Written by the conv before it.
                Step::Add { .. } if i > 0 && self.add_fused[i - 1] => continue,
                Step::Add { a, b } => ("add", vec![Arg::Ptr(at(a)), Arg::Ptr(at(b)), Arg::Ptr(y), tot]),
            };
            out.push(LaunchSpec::Kernel { f: k(kernel), total: kernel_threads(kernel, total, oc), args });
        }
        let total = self.output_len;
        out.push(LaunchSpec::Kernel { f: k("to_f32"), total, args: vec![Arg::Ptr(at(plan.output)), Arg::Ptr(output), Arg::I64(total as i64)] });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_tiles_grow_only_while_the_launch_keeps_its_threads() {
        // S at 384, batch 128, stage 5's expanded tensor (24x24x960): 4 rows a thread, 2.2M threads.
        let (rows, c) = (128 * 24 * 24, 960);
        assert_eq!(row_tile(rows * c, c, ROW_TILE_MIN_THREADS), 4);
        assert_eq!(row_tile_threads(rows * c, c, 4), rows / 4 * c / VEC);
        // Batch 1 on a Jetson (7x7x1536): too few rows to share, a thread per VEC elements.
        assert_eq!(row_tile(49 * 1536, 1536, ROW_TILE_MIN_THREADS), 1);
        assert_eq!(row_tile_threads(49 * 1536, 1536, 1), 49 * 1536 / VEC);
        // In between: 2 rows keep enough threads where 4 would not; an uneven last tile counts.
        let rows = 2 * ROW_TILE_MIN_THREADS / 8 + 1;
        assert_eq!(row_tile(rows * 64, 64, ROW_TILE_MIN_THREADS), 2);
        assert_eq!(row_tile_threads(rows * 64, 64, 2), rows.div_ceil(2) * 8);
        // Channels off the vector path: an element a thread, whatever the size.
        assert_eq!(row_tile(1 << 30, 12, 0), 1);
        assert_eq!(row_tile_threads(600, 12, 1), 600);
        // Tests ask for the most rows everywhere.
        assert_eq!(row_tile(3 * 16, 16, 0), ROW_TILE);
    }
}
