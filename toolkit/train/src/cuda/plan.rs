//! A training graph lowered to the CUDA training engine's forward launches over raw addresses, with
//! no GPU code (as `effv2_runtime::plan::launch` does for inference): every value of the graph
//! kept in one f32 NHWC arena (the backward reads them), parameters in device layout (OHWI convs,
//! `[k·k, C]` depthwise), BN statistics in scratch, masks from the host. The same launches run on
//! the device or, in tests, on the host with the kernels compiled as C++.
//!
//! The forward (training or eval mode) and the backward; `super::engine` runs them on a GPU.

use effv2_edge::graph::{Graph, Op, Role, Shape};
use effv2_edge::weights::Weights;
use effv2_runtime::plan::arena::plan_intervals;
use effv2_runtime::plan::launch::{kernel_threads, row_tile, row_tile_threads, to_nhwc_args, wide_threads, Arg, BlasGemm, ConvShape, DType, PaddedInto, ROW_TILE_MIN_THREADS};
use effv2_runtime::plan::layout::{depthwise_to_hwc, oihw_to_ohwi};

use super::{CHAN_CHUNK_ROWS, CHAN_GROUP, CHAN_MIN_THREADS, DW_CHUNK_ROWS};
use crate::cpu::bn::RUNNING_MOMENTUM;
use crate::cpu::node_mask;
use crate::optim::{decays, Optimizer};
use crate::parallel::Shard;
use crate::TrainError;

/// Which kernel source a launch's function comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `effv2_runtime::cuda::KERNELS` (f32 build): shared with inference.
    Infer(&'static str),
    /// [`super::TRAIN_KERNELS`].
    Train(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub enum TrainLaunch {
    /// A kernel over `total` elements (grid-stride; any launch shape).
    Kernel { kernel: Kernel, total: usize, args: Vec<Arg> },
    /// cuDNN forward conv, NHWC, OHWI filter, symmetric padding.
    Conv { shape: ConvShape, x: u64, w: u64, y: u64 },
    /// cuDNN backward data of that conv: `dx` from `dy` and the filter, or added to `dx`
    /// (β = 1) where `accumulate`.
    ConvBackwardData { shape: ConvShape, dy: u64, w: u64, dx: u64, accumulate: bool },
    /// cuDNN backward filter: `dw` from the input and `dy`.
    ConvBackwardFilter { shape: ConvShape, x: u64, dy: u64, dw: u64 },
    /// cuBLAS: `c = op(a) · op(b)`.
    Gemm { g: BlasGemm, a: u64, b: u64, c: u64 },
    /// Data parallelism: sum `count` elements at `ptr` over the replicas' group, in place (NCCL).
    AllReduce { ptr: u64, count: usize, dtype: Summed },
}

/// Element type of an [`TrainLaunch::AllReduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summed {
    F32,
    F64,
}

/// Addresses of the buffers a launch list works on (device memory, or host memory in tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    /// Activations, their gradients and scratch ([`TrainLayout::arena_bytes`]).
    pub arena: u64,
    /// f32 parameters (master weights, BN statistics) in device layout.
    pub params: u64,
    /// Mixed precision: the 16-bit copy of `params` the convolutions and the classifier read
    /// (element `i` of `params` at element `i`; see [`TrainLayout::refresh_weights16`]). Unused in f32.
    pub weights16: u64,
    /// f32 parameter gradients ([`TrainLayout::pgrad_at`]).
    pub grads: u64,
    /// f32 dropout / drop-path masks.
    pub masks: u64,
    /// f32 NCHW input, f32 logits, f32 dLoss/dLogits.
    pub input: u64,
    pub logits: u64,
    pub dlogits: u64,
}

/// Choices in lowering a training graph, all on by default; the engine reads the first two from
/// the environment (`EFFV2_CUDA_FUSE_BN_ACT=0`, `EFFV2_CUDA_GEMM_1X1=0`) so a GPU run can time
/// each against the plain lowering, and the host tests replay both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lowering {
    /// A BN's activation fused into it where it alone reads the BN's output ([`TrainLayout::fused_act`]).
    pub fuse_bn_act: bool,
    /// 1x1 convs (stride 1, no padding) as cuBLAS products instead of cuDNN convolutions.
    pub gemm_1x1: bool,
    /// A residual Add's gradient kept in the slot of the input it hands it to unchanged
    /// ([`TrainLayout::grad_of_add`]) instead of copied there (off: the tests' reference for the
    /// shared slots' lifetimes).
    pub share_skip_grads: bool,
    /// An SE block's input gradient from its two readers (the gate multiply and the pool) in one
    /// pass at the pool's backward ([`TrainLayout::se_mul_of_pool`]) instead of two.
    pub fuse_se_backward: bool,
    /// A BN that only a residual Add reads applied by one pass that writes the Add's output
    /// ([`TrainLayout::bn_into_add`]), its own output never stored.
    pub fuse_bn_add: bool,
    /// Rows per partial of the per-channel sums ([`CHAN_CHUNK_ROWS`], at most: see
    /// `chan_min_threads`) and of the depthwise filter gradients ([`DW_CHUNK_ROWS`]): fewer rows,
    /// more threads and more partials to add (the engine reads `EFFV2_CUDA_CHAN_ROWS` /
    /// `EFFV2_CUDA_DW_ROWS` so a GPU run can time the trade).
    pub chan_chunk_rows: usize,
    pub dw_chunk_rows: usize,
    /// A per-channel sum over fewer rows than this many threads would take at `chan_chunk_rows`
    /// rows a partial halves its rows (down to [`CHAN_MIN_CHUNK_ROWS`]) until it has them
    /// ([`Lowering::chan_rows`]); 0 keeps `chan_chunk_rows` everywhere (`EFFV2_CUDA_CHAN_THREADS`).
    pub chan_min_threads: usize,
}

/// Fewest rows a partial of a per-channel sum takes however few threads its launch has.
pub const CHAN_MIN_CHUNK_ROWS: usize = 8;

impl Lowering {
    /// Rows per partial of a per-channel sum over `rows` rows of `c` channels: `chan_chunk_rows`,
    /// halved while the launch (a thread per partial and 8 channels) would have fewer than
    /// `chan_min_threads` threads. A thread adds its rows one tile after another, so the few
    /// threads of a small sum each wait for memory once per tile of a long chunk: S@224 b128's
    /// sums at 7x7 and 14x14 launch 19k-47k threads at 64 rows.
    pub fn chan_rows(&self, rows: usize, c: usize) -> usize {
        let mut r = self.chan_chunk_rows.max(1);
        while r > CHAN_MIN_CHUNK_ROWS && wide_threads(rows.div_ceil(r) * c, c) < self.chan_min_threads {
            r /= 2;
        }
        r
    }
}

impl Default for Lowering {
    fn default() -> Self {
        Lowering { fuse_bn_act: true, gemm_1x1: true, share_skip_grads: true, fuse_se_backward: true, fuse_bn_add: true, chan_chunk_rows: CHAN_CHUNK_ROWS, dw_chunk_rows: DW_CHUNK_ROWS, chan_min_threads: CHAN_MIN_THREADS }
    }
}

/// Where every value, parameter and statistic lives for one graph and batch size. Offsets are in
/// bytes from the start of their buffer (arena, params, masks).
pub struct TrainLayout {
    pub batch: usize,
    /// Storage of activations and their gradients: f32, or bf16 for mixed precision (then the
    /// convs and the classifier read a bf16 copy of the weights; everything else stays f32).
    pub dtype: DType,
    /// Each node's output value in the arena (NHWC, `dtype`).
    pub value_at: Vec<usize>,
    /// Padded-input scratch (asymmetric "same" padding for cuDNN), `dtype`.
    pub pad_at: usize,
    /// Mixed precision: a weight gradient as cuDNN writes it (bf16) before it is widened
    /// into `grads`, and dLoss/dLogits narrowed to bf16.
    pub wgrad16_at: usize,
    pub dlogits16_at: usize,
    /// f64 per-channel partial sums (two per channel, see `chan_partials`).
    pub partials_at: usize,
    /// Second-level f64 partials of the per-channel sums (`chan_regroup`), and how many chunk
    /// partials each of them adds ([`CHAN_GROUP`]; see [`TrainLayout::with_lowering`]).
    pub partials2_at: usize,
    pub chan_group: usize,
    /// The two f64 per-channel sums being computed, `[2, C]`: a BN's mean and mean square, or
    /// Σdy and Σdy·x̂ in its backward (a bias gradient uses the first).
    pub sums64_at: usize,
    /// Per BN node: saved f32 mean and invstd (what its backward reads).
    pub bn_saved_at: Vec<Option<(usize, usize)>>,
    /// Per BN node whose output only an activation reads: that node and its activation code. The
    /// BN writes the activation's output directly (`bn_apply` with the activation), and its
    /// backward starts from the activation's gradient (the BN output recomputed from its input):
    /// the BN's own value and gradient are never stored, two passes over the tensor fewer each way.
    pub fused_act: Vec<Option<(usize, i32)>>,
    /// Per drop-path / dropout node read only by a residual Add (one such mask per Add): that Add,
    /// which applies the mask both ways — forward `x · mask + skip` from the mask's input, so the
    /// masked value is never stored; backward its own gradient times the mask straight into the
    /// mask's input gradient, so the mask node has no gradient (a copy of the Add's) either.
    pub mask_into_add: Vec<Option<usize>>,
    /// Per node whose last reader is a residual Add that hands it its gradient unchanged (the
    /// Add's input that is not a [`TrainLayout::mask_into_add`] mask; one per Add): that Add, whose
    /// gradient slot is this node's too, so the Add's backward copies nothing.
    pub grad_of_add: Vec<Option<usize>>,
    /// Per global-average pool of an SE block (its input read by it and by the gate multiply
    /// alone): that multiply, whose input gradient (dy · gate) the pool's backward writes with its
    /// own in one pass, so the multiply's gradient and the gate's value live until then.
    pub se_mul_of_pool: Vec<Option<usize>>,
    /// Per BN (without a fused activation) whose output only a residual Add reads, directly or
    /// through a drop-path the Add applies ([`TrainLayout::mask_into_add`]): that Add, whose output
    /// `bn_apply_add` writes (BN(x) · mask + skip) — the BN's output is never stored (its backward
    /// reads its input), and the Add launches nothing.
    pub bn_into_add: Vec<Option<usize>>,
    /// Per such BN whose branch reaches its Add through a drop-path: that mask node. The BN's
    /// backward reads the Add's gradient times the mask itself, so the BN keeps no gradient.
    pub bn_add_mask: Vec<Option<usize>>,
    /// A zero f32 bias for depthwise convs without one.
    pub zeros_at: usize,
    pub arena_bytes: usize,
    /// Each parameter in device layout, f32, in a buffer of `params_bytes` (what
    /// [`TrainLayout::pack_weights`] fills; optimizer slots and EMA shadows are laid out alike).
    pub param_at: Vec<usize>,
    pub params_bytes: usize,
    /// What the launch lists fuse or hand to cuBLAS.
    pub lowering: Lowering,
    /// Threads the row-tiled kernels (bias_act, bn_apply, bn_backward_dx) keep at least
    /// (`effv2_runtime::plan::launch::row_tile`; tests set 0 to tile every launch).
    pub tile_min_threads: usize,
    /// Bytes of the parameters with weight decay, which lead the buffer (the other trainable ones
    /// follow, up to `grads_bytes`, then the BN statistics).
    pub decayed_bytes: usize,
    /// Each value's gradient in the arena (NHWC, `dtype`; none for the input), a scratch gradient for
    /// second contributions, and each trainable parameter's gradient in `grads` (device layout).
    pub grad_at: Vec<Option<usize>>,
    /// The step of the training pass through which each node's value and gradient keep their
    /// arena bytes (node i's forward is step i, its backward step 2n − 1 − i; see
    /// [`TrainLayout::plan_values_and_grads`]).
    pub kept_until: Kept,
    pub tmp_at: usize,
    pub pgrad_at: Vec<Option<usize>>,
    pub grads_bytes: usize,
    /// Each dropout / drop-path node's mask in the mask buffer (f32), `mask_len` floats in all.
    pub mask_at: Vec<Option<usize>>,
    pub mask_len: usize,
    /// Data parallelism: which rows of the global batch this replica's `batch` are. When set
    /// (`global` > 0), BN statistics and the backward's per-channel sums are summed over the group
    /// by [`TrainLaunch::AllReduce`]s (synchronised BN), and so are the parameter gradients at the
    /// end of the backward; masks are the global batch's draws, this shard's rows.
    pub shard: Shard,
}

fn align(n: usize) -> usize {
    n.next_multiple_of(256)
}

fn geom(s: Shape) -> [usize; 3] {
    [s.c, s.h, s.w]
}

impl TrainLayout {
    /// The f32 layout.
    pub fn new(graph: &Graph, batch: usize) -> TrainLayout {
        Self::with_dtype(graph, batch, DType::F32)
    }

    /// Activations and their gradients stored as `dtype`: f32, or bf16 for mixed precision. (f16
    /// lays out too, for tests that check errors scale with the storage precision; the engine
    /// trains f32 or bf16 only, as f16 would need loss scaling.)
    pub fn with_dtype(graph: &Graph, batch: usize, dtype: DType) -> TrainLayout {
        Self::with_lowering(graph, batch, dtype, CHAN_GROUP, Lowering::default())
    }

    /// As [`TrainLayout::with_dtype`], with `chan_group` chunk partials per first-level sum
    /// (tests lower it so small networks take the regrouped path) and the [`Lowering`] choices.
    pub fn with_lowering(graph: &Graph, batch: usize, dtype: DType, chan_group: usize, lowering: Lowering) -> TrainLayout {
        let chan_group = chan_group.max(2);
        let lowering = Lowering { chan_chunk_rows: lowering.chan_chunk_rows.max(1), dw_chunk_rows: lowering.dw_chunk_rows.max(1), ..lowering };
        let eb = dtype.bytes();
        let mut at = 0usize;
        let mut take = |bytes: usize| {
            let a = at;
            at += align(bytes);
            a
        };
        let (mut pad_len, mut max_c, mut dw_partials, mut cudnn_weight) = (0usize, 1usize, 0usize, 1usize);
        // Chunk partials of the largest per-channel sum (a BN's or a bias gradient's: over a
        // node's rows and channels), and of their first-level regrouping.
        let (mut sum_partials, mut sum_partials2) = (1usize, 1usize);
        for n in &graph.nodes {
            let src = n.inputs.first().map(|&j| graph.nodes[j].shape).unwrap_or(n.shape);
            max_c = max_c.max(n.shape.c);
            for sh in [src, n.shape] {
                let rows = batch * sh.h * sh.w;
                let chunks = rows.div_ceil(lowering.chan_rows(rows, sh.c));
                sum_partials = sum_partials.max(chunks * 2 * sh.c);
                sum_partials2 = sum_partials2.max(chunks.div_ceil(chan_group) * 2 * sh.c);
            }
            if let Op::Conv(c) = &n.op {
                if c.is_depthwise() {
                    dw_partials = dw_partials.max((batch * n.shape.h * n.shape.w).div_ceil(lowering.dw_chunk_rows) * c.kernel * c.kernel * src.c);
                }
                // A weight gradient cuDNN writes in the values' type (cuBLAS writes f32 itself).
                if !c.is_depthwise() && (RowProduct::of_conv(c, 1).is_none() || !lowering.gemm_1x1) {
                    cudnn_weight = cudnn_weight.max(graph.params[c.weight].numel());
                }
                let p = c.pads;
                if c.groups == 1 && (p.top, p.left) != (p.bottom, p.right) {
                    pad_len = pad_len.max(batch * src.c * (src.h + p.top + p.bottom) * (src.w + p.left + p.right));
                }
            }
        }
        let pad_at = take(eb * pad_len);
        let wgrad16_at = take(if dtype == DType::F32 { 0 } else { 2 * cudnn_weight });
        let dlogits16_at = take(if dtype == DType::F32 { 0 } else { 2 * batch * graph.nodes[graph.output].shape.numel() });
        // f64 partial sums: a BN's per-channel sums, or a depthwise filter gradient's (one at a time).
        let partials_at = take(8 * sum_partials.max(dw_partials));
        let partials2_at = take(8 * sum_partials2);
        let sums64_at = take(16 * max_c);
        let zeros_at = take(4 * max_c);
        let bn_saved_at = graph.nodes.iter().map(|n| matches!(n.op, Op::BatchNorm(_)).then(|| (take(4 * n.shape.c), take(4 * n.shape.c)))).collect();
        let tmp_at = take(eb * batch * graph.nodes.iter().map(|n| n.shape.numel()).max().unwrap_or(1).max(pad_len / batch.max(1)));
        let fused_act = if lowering.fuse_bn_act { fused_activations(graph) } else { vec![None; graph.nodes.len()] };
        let mask_into_add = masks_into_adds(graph);
        let grad_of_add = if lowering.share_skip_grads { skips_of_adds(graph, &mask_into_add) } else { vec![None; graph.nodes.len()] };
        let se_mul_of_pool = if lowering.fuse_se_backward { se_multiplies(graph) } else { vec![None; graph.nodes.len()] };
        let bn_into_add = if lowering.fuse_bn_add { bns_into_adds(graph, &fused_act, &mask_into_add) } else { vec![None; graph.nodes.len()] };
        let bn_add_mask: Vec<Option<usize>> = (0..graph.nodes.len())
            .map(|i| {
                let add = bn_into_add[i]?;
                graph.nodes[add].inputs.iter().copied().find(|&m| mask_into_add[m] == Some(add) && graph.nodes[m].inputs[0] == i)
            })
            .collect();
        let shares = Shares { fused_act: &fused_act, into_add: &mask_into_add, of_add: &grad_of_add, se_mul_of_pool: &se_mul_of_pool, bn_into_add: &bn_into_add, bn_add_mask: &bn_add_mask };
        let (value_at, grad_at, kept_until, lifetimes_bytes) = Self::plan_values_and_grads(graph, shares, batch * eb, at);
        let arena_bytes = at + lifetimes_bytes;
        // Trainable parameters first, those with weight decay leading, then the BN statistics: the
        // optimizer updates each group in one launch over a contiguous range, and the gradients
        // are laid out as the trainable prefix (the same offsets).
        let group = |r: Role| if !r.is_trainable() { 2 } else if decays(r) { 0 } else { 1 };
        let (mut param_at, mut params_bytes, mut group_end) = (vec![0; graph.params.len()], 0, [0; 3]);
        for (g, end) in group_end.iter_mut().enumerate() {
            for (id, p) in graph.params.iter().enumerate().filter(|(_, p)| group(p.role) == g) {
                param_at[id] = params_bytes;
                params_bytes += align(4 * p.numel());
            }
            *end = params_bytes;
        }
        let pgrad_at = graph.params.iter().zip(&param_at).map(|(p, &at)| p.role.is_trainable().then_some(at)).collect();
        let (decayed_bytes, grads_bytes) = (group_end[0], group_end[1]);
        let mut mask_len = 0;
        let mut mask_at = vec![None; graph.nodes.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            let floats = match n.op {
                Op::DropPath { .. } => batch,
                Op::Dropout { .. } => batch * n.shape.numel(),
                _ => continue,
            };
            mask_at[i] = Some(4 * mask_len);
            mask_len += floats;
        }
        TrainLayout { batch, dtype, value_at, pad_at, wgrad16_at, dlogits16_at, partials_at, partials2_at, chan_group, sums64_at, bn_saved_at, fused_act, mask_into_add, grad_of_add, se_mul_of_pool, bn_into_add, bn_add_mask, zeros_at, arena_bytes, param_at, params_bytes, lowering, tile_min_threads: ROW_TILE_MIN_THREADS, decayed_bytes, grad_at, kept_until, tmp_at, pgrad_at, grads_bytes, mask_at, mask_len, shard: Shard::default() }
    }

    /// The parameter buffer's bytes for `weights` (checked against the graph first).
    pub fn pack_weights(&self, graph: &Graph, weights: &Weights) -> Result<Vec<u8>, TrainError> {
        weights.check(graph)?;
        self.pack(graph, |id| Ok(weights.get(&graph.params[id].name)?.data().to_vec()))
    }

    /// A parameter-shaped tensor (weight, optimizer slot, EMA shadow) in the device's layout:
    /// OHWI for convs, `[k·k, C]` for depthwise, the rest as the graph has it.
    pub fn to_device_layout(graph: &Graph, id: usize, data: &[f32]) -> Vec<f32> {
        match conv_of(graph, id) {
            Some(c) if c.is_depthwise() => depthwise_to_hwc(data, c.out_ch, c.kernel),
            Some(c) => oihw_to_ohwi(data, c.out_ch, c.in_ch / c.groups, c.kernel),
            None => data.to_vec(),
        }
    }

    /// Every parameter-shaped tensor, `get(id)` in the graph's layout, as one buffer laid out like
    /// the parameters ([`TrainLayout::param_at`]).
    pub fn pack(&self, graph: &Graph, mut get: impl FnMut(usize) -> Result<Vec<f32>, TrainError>) -> Result<Vec<u8>, TrainError> {
        let mut buf = vec![0u8; self.params_bytes];
        for (id, p) in graph.params.iter().enumerate() {
            let data = get(id)?;
            if data.len() != p.numel() {
                return Err(TrainError::Size { what: "parameter-shaped tensor", want: p.numel(), got: data.len() });
            }
            let dev = Self::to_device_layout(graph, id, &data);
            buf[self.param_at[id]..][..4 * dev.len()].copy_from_slice(&dev.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        }
        Ok(buf)
    }

    /// Parameter `id` out of a buffer laid out like the parameters, in the graph's layout.
    pub fn unpack(&self, graph: &Graph, buf: &[u8], id: usize) -> Vec<f32> {
        let n = graph.params[id].numel();
        let dev: Vec<f32> = buf[self.param_at[id]..][..4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Self::to_graph_layout(graph, id, &dev)
    }

    /// A parameter from device layout back to the graph's (OIHW convs; the rest is unchanged).
    pub fn to_graph_layout(graph: &Graph, id: usize, dev: &[f32]) -> Vec<f32> {
        let Some(c) = conv_of(graph, id) else { return dev.to_vec() };
        let (o, i, k) = (c.out_ch, c.in_ch / c.groups, c.kernel);
        let mut w = vec![0.0; dev.len()];
        for oc in 0..o {
            for ic in 0..i {
                for t in 0..k * k {
                    // OHWI (groups 1) or [k·k, C] (depthwise: i = 1, the channel is oc).
                    w[(oc * i + ic) * k * k + t] = if c.is_depthwise() { dev[t * o + oc] } else { dev[(oc * k * k + t) * i + ic] };
                }
            }
        }
        w
    }

    /// Offsets (from `base`) of every node's value and gradient, sharing space by lifetime over one
    /// training step: node `i`'s forward runs at time `i` and its backward at `2n − 1 − i`. A
    /// value lives from its forward through its own backward (the last to read it: a node's
    /// backward reads its own value and its inputs'). A gradient lives from the backward of its
    /// last consumer (which writes it first) through its own node's backward; the input and
    /// the output (whose gradient is dLoss/dLogits, outside the arena) have none, nor have nodes
    /// nothing reads. So gradients reuse the values of the nodes already back-propagated.
    /// A BN with a fused activation (`fused_act`) stores neither: its value is the activation's
    /// (written at the BN's time), and the activation's gradient lives on through the BN's backward.
    /// A drop-path read only by a residual Add (`mask_into_add`) has neither: the Add reads the
    /// mask's input in the forward, and that input's gradient is written at the Add's backward.
    /// A node that takes its last reader's (an Add's) gradient unchanged (`grad_of_add`) keeps it
    /// in the Add's slot, which then lives on through that node's backward. An SE block's gate
    /// multiply hands its input gradient to the pool's backward (`se_mul_of_pool`): its own
    /// gradient and the gate's value live until then. A BN written into its residual Add's output
    /// (`bn_into_add`) stores no value; through a drop-path (`bn_add_mask`) it keeps no gradient
    /// either, and the Add's lives on through the BN's backward.
    /// Returns the value offsets, the gradient offsets, the steps through which each is kept and
    /// the bytes they span.
    /// `per_element`: bytes of one element times the batch.
    fn plan_values_and_grads(graph: &Graph, shares: Shares, per_element: usize, base: usize) -> (Vec<usize>, Vec<Option<usize>>, Kept, usize) {
        let Shares { fused_act, into_add, of_add, se_mul_of_pool, bn_into_add, bn_add_mask } = shares;
        let n = graph.nodes.len();
        let backward_at = |i: usize| 2 * n - 1 - i;
        // A mask read only by a residual Add hands its input's gradient over at the Add's backward,
        // and has none of its own.
        let mut last_consumer: Vec<Option<usize>> = vec![None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            let writes_at = into_add[i].unwrap_or(i);
            for &j in &node.inputs {
                last_consumer[j] = Some(last_consumer[j].map_or(writes_at, |c| c.max(writes_at)));
            }
        }
        // The fused BN an activation's value and gradient stand in for.
        let mut fused_bn = vec![None; n];
        for (i, f) in fused_act.iter().enumerate() {
            if let Some((j, _)) = *f {
                fused_bn[j] = Some(i);
            }
        }
        // Nodes that may keep a gradient; of those, the ones whose value is stored.
        let may_have_grad = |i: usize| fused_act[i].is_none() && into_add[i].is_none();
        let stored: Vec<usize> = (0..n).filter(|&i| may_have_grad(i) && bn_into_add[i].is_none()).collect();
        let bytes = |i: usize| align(per_element * graph.nodes[i].shape.numel());
        let mut lens: Vec<usize> = stored.iter().map(|&i| bytes(i)).collect();
        let mut born: Vec<usize> = stored.iter().map(|&i| fused_bn[i].unwrap_or(i)).collect();
        // Each value's last backward: its own, or for an SE gate the pool's that reads it.
        let mut value_last_use: Vec<usize> = (0..n).map(backward_at).collect();
        for (p, m) in se_mul_of_pool.iter().enumerate() {
            if let Some(m) = *m {
                value_last_use[graph.nodes[m].inputs[1]] = backward_at(p);
            }
        }
        let mut dies: Vec<usize> = stored.iter().map(|&i| value_last_use[i]).collect();
        let with_grad: Vec<(usize, usize)> = (0..n)
            .filter(|&j| may_have_grad(j) && !matches!(graph.nodes[j].op, Op::Input) && j != graph.output && of_add[j].is_none() && bn_add_mask[j].is_none())
            .filter_map(|j| last_consumer[j].map(|c| (j, c)))
            .collect();
        // Each gradient's last backward: its node's (or its fused BN's), or for an Add's, that of
        // the node sharing its slot — along chains of residual blocks, the first block's input
        // (in node order, so an Add takes on what its own skip input took on).
        let mut last_use: Vec<usize> = (0..n).map(|j| backward_at(fused_bn[j].unwrap_or(j))).collect();
        // A BN that reads its Add's gradient (masked) itself: the Add's gradient until its backward.
        for (i, m) in bn_add_mask.iter().enumerate() {
            if let (Some(_), Some(add)) = (m, bn_into_add[i]) {
                last_use[add] = last_use[add].max(backward_at(i));
            }
        }
        for (j, c) in of_add.iter().enumerate() {
            if let Some(c) = *c {
                last_use[c] = last_use[c].max(last_use[j]);
            }
        }
        for (p, m) in se_mul_of_pool.iter().enumerate() {
            if let Some(m) = *m {
                last_use[m] = backward_at(p);
            }
        }
        for &(j, c) in &with_grad {
            lens.push(bytes(j));
            born.push(backward_at(c));
            dies.push(last_use[j]);
        }
        let (offsets, total) = plan_intervals(&lens, &born, &dies);
        let mut value_at = vec![0; n];
        for (k, &i) in stored.iter().enumerate() {
            value_at[i] = base + offsets[k];
        }
        for (i, f) in fused_act.iter().enumerate() {
            if let Some((j, _)) = *f {
                value_at[i] = value_at[j];
            }
        }
        // Never stored (its Add's output is written instead), nor read: where that output is.
        for (i, add) in bn_into_add.iter().enumerate() {
            if let Some(add) = *add {
                value_at[i] = value_at[add];
            }
        }
        // Never read (its Add reads the input): where the input's is, for a valid address.
        for (i, add) in into_add.iter().enumerate() {
            if add.is_some() {
                value_at[i] = value_at[graph.nodes[i].inputs[0]];
            }
        }
        let mut grad_at = vec![None; n];
        for (k, &(j, _)) in with_grad.iter().enumerate() {
            grad_at[j] = Some(base + offsets[stored.len() + k]);
        }
        // Last node first: an Add's slot is known before its skip input takes it.
        for (j, c) in of_add.iter().enumerate().rev() {
            if let Some(c) = *c {
                grad_at[j] = grad_at[c];
            }
        }
        (value_at, grad_at, Kept { value: value_last_use, grad: last_use }, total)
    }

    /// The step's dropout and drop-path masks (the CPU engine's draws for the same seed), laid
    /// out as [`TrainLayout::mask_at`] says; masks of rate 0 / survival 1 are all ones.
    pub fn masks(&self, graph: &Graph, seed: u64) -> Vec<f32> {
        let mut m = vec![1.0f32; self.mask_len];
        for (i, n) in graph.nodes.iter().enumerate() {
            let Some(at) = self.mask_at[i] else { continue };
            let Some(draw) = node_mask(&n.op, n.shape.numel(), self.batch, self.shard, seed, i) else { continue };
            m[at / 4..][..draw.len()].copy_from_slice(&draw);
        }
        m
    }

    /// The launches of one forward pass, given the addresses of the arena, the parameters, the
    /// mask buffer, the NCHW f32 input and the f32 logits. `train`: BN on batch statistics with
    /// the running averages updated, masks applied (what the backward follows); otherwise eval
    /// mode: BN on the running statistics, dropout and drop-path the identity.
    pub fn forward(&self, graph: &Graph, train_mode: bool, b: &Buffers) -> Vec<TrainLaunch> {
        let Buffers { arena, masks, input, logits, .. } = *b;
        let batch = self.batch;
        let v = |i: usize| arena + self.value_at[i] as u64;
        let p = |id: usize| b.params + self.param_at[id] as u64;
        let weight_of = |id: usize| self.weight(b, id);
        let a = |off: usize| arena + off as u64;
        let i32s = |xs: &[usize]| xs.iter().map(|&x| Arg::I32(x as i32)).collect::<Vec<_>>();
        let mut out = vec![];
        for (i, node) in graph.nodes.iter().enumerate() {
            let s = node.shape;
            let total = batch * s.numel();
            let tot = Arg::I64(total as i64);
            let y = v(i);
            let src = node.inputs.first().map(|&j| graph.nodes[j].shape).unwrap_or(s);
            let x = node.inputs.first().map(|&j| v(j)).unwrap_or(0);
            match &node.op {
                Op::Input => out.push(infer("nchw_to_nhwc", total, to_nhwc_args(input, y, batch, [s.c, s.h, s.w], PaddedInto::none(s.h, s.w)))),
                Op::Conv(c) => {
                    let [ic, h, w] = geom(src);
                    let pd = c.pads;
                    if c.is_depthwise() {
                        let bias = c.bias.map(p).unwrap_or(a(self.zeros_at));
                        let geo = i32s(&[h, w, ic, s.h, s.w, c.kernel, c.stride, pd.top, pd.left]);
                        out.push(infer_wide("depthwise", total, s.c, [vec![Arg::Ptr(x), Arg::Ptr(weight_of(c.weight)), Arg::Ptr(bias), Arg::Ptr(y), tot], geo, vec![Arg::I32(0)]].concat()));
                        continue;
                    }
                    if let Some(rp) = self.row_product(c, batch * s.h * s.w) {
                        out.push(TrainLaunch::Gemm { g: rp.forward(), a: weight_of(c.weight), b: x, c: y });
                    } else {
                        let mut shape = ConvShape { n: batch, c: ic, h, w, out_ch: c.out_ch, oh: s.h, ow: s.w, kernel: c.kernel, stride: c.stride, pad: [pd.top, pd.left], groups: 1 };
                        let mut from = x;
                        if let Some((threads, args)) = shape.pad_into([pd.top, pd.left, pd.bottom, pd.right], &mut from, a(self.pad_at)) {
                            out.push(infer("pad", threads, args));
                        }
                        out.push(TrainLaunch::Conv { shape, x: from, w: weight_of(c.weight), y });
                    }
                    if let Some(b) = c.bias {
                        out.push(self.tiled(Kernel::Infer("bias_act"), total, s.c, vec![Arg::Ptr(y), Arg::Ptr(p(b)), tot, Arg::I32(s.c as i32), Arg::I32(0)]));
                    }
                }
                Op::BatchNorm(b) if !train_mode => {
                    let (_, invstd) = self.bn_saved_at[i].map(|(m, s)| (a(m), a(s))).expect("a BN node has saved slots");
                    out.push(train("bn_eval_invstd", s.c, vec![Arg::Ptr(p(b.var)), Arg::Ptr(invstd), Arg::I32(s.c as i32), Arg::F32(b.eps)]));
                    out.push(self.bn_apply(graph, i, None, x, [p(b.mean), invstd, p(b.weight), p(b.bias)], arena));
                }
                // A mask its residual Add alone reads is applied by that Add (and is the identity in eval mode).
                Op::DropPath { .. } | Op::Dropout { .. } if self.mask_into_add[i].is_some() => {}
                Op::DropPath { .. } | Op::Dropout { .. } if !train_mode => out.push(train_wide("copy", total, s.c, vec![Arg::Ptr(x), Arg::Ptr(y), tot])),
                Op::BatchNorm(b) => {
                    let rows = batch * s.h * s.w;
                    // Each replica's share of the global mean and variance, summed over the group.
                    let global_rows = self.shard.global_batch(batch) * s.h * s.w;
                    // Mean and mean square in one pass over x.
                    let (m64, msq64) = self.sums64(arena, s.c);
                    let (mean, invstd) = self.bn_saved_at[i].map(|(m, s)| (a(m), a(s))).expect("a BN node has saved slots");
                    let scale = 1.0 / global_rows as f64;
                    let stats = [Arg::Ptr(mean), Arg::Ptr(invstd), Arg::Ptr(p(b.mean)), Arg::Ptr(p(b.var))];
                    let tail = [Arg::I64(global_rows as i64), Arg::F32(b.eps), Arg::F32(RUNNING_MOMENTUM)];
                    if let Some(sum) = self.sync_sums(m64, 2 * s.c) {
                        out.extend(self.chan_sums(arena, SumInputs { a: x, ..Default::default() }, rows, s.c, scale, m64, [0, 0]));
                        out.push(sum);
                        out.push(train("bn_finalize", s.c, [&[Arg::Ptr(m64), Arg::Ptr(msq64)][..], &stats, &[Arg::I32(s.c as i32)], &tail].concat()));
                    } else {
                        let (sums, last, n) = self.chan_partials(arena, SumInputs { a: x, ..Default::default() }, rows, s.c);
                        out.extend(sums);
                        out.push(train("bn_finish", s.c, [&[Arg::Ptr(last), Arg::I64(n as i64), Arg::I32(s.c as i32), Arg::F64(scale)][..], &stats, &tail].concat()));
                    }
                    out.push(self.bn_apply(graph, i, Some(masks), x, [mean, invstd, p(b.weight), p(b.bias)], arena));
                }
                // Written by its BN (fused).
                Op::Act(_) if self.is_fused_act(node) => {}
                Op::Act(k) => out.push(infer_wide("act_only", total, s.c, vec![Arg::Ptr(x), Arg::Ptr(y), tot, Arg::I32(act_code(*k))])),
                Op::GlobalAvgPool => out.push(infer("pool", total, [vec![Arg::Ptr(x), Arg::Ptr(y), tot], i32s(&[src.h * src.w, src.c])].concat())),
                Op::Mul => out.push(infer_wide("gate_mul", total, s.c, [vec![Arg::Ptr(x), Arg::Ptr(v(node.inputs[1])), Arg::Ptr(y), tot], i32s(&[s.h * s.w, s.c])].concat())),
                // Written by the BN that is its branch's end (bn_into_add).
                Op::Add if self.bn_into_add.contains(&Some(i)) => {}
                Op::Add => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    match [a, b].map(|j| self.mask_into_add[j] == Some(i)) {
                        // y = x · mask + skip, from the mask's input.
                        [true, _] | [_, true] if train_mode => {
                            let (m, skip) = if self.mask_into_add[a] == Some(i) { (a, b) } else { (b, a) };
                            out.push(self.apply_mask(graph, m, masks, v(graph.nodes[m].inputs[0]), v(skip), y));
                        }
                        masked => {
                            let [a, b] = [(a, masked[0]), (b, masked[1])].map(|(j, m)| v(if m { graph.nodes[j].inputs[0] } else { j }));
                            out.push(infer_wide("add", total, s.c, vec![Arg::Ptr(a), Arg::Ptr(b), Arg::Ptr(y), tot]));
                        }
                    }
                }
                Op::DropPath { .. } | Op::Dropout { .. } => out.push(self.apply_mask(graph, i, masks, x, 0, y)),
                Op::Linear(l) => {
                    let rp = RowProduct { rows: batch, inp: l.in_features, out: l.out_features };
                    out.push(TrainLaunch::Gemm { g: rp.forward(), a: weight_of(l.weight), b: x, c: y });
                    out.push(self.tiled(Kernel::Infer("bias_act"), total, s.c, vec![Arg::Ptr(y), Arg::Ptr(p(l.bias)), tot, Arg::I32(s.c as i32), Arg::I32(0)]));
                }
            }
        }
        let o = graph.output;
        let n_out = batch * graph.nodes[o].shape.numel();
        out.push(infer("to_f32", n_out, vec![Arg::Ptr(v(o)), Arg::Ptr(logits), Arg::I64(n_out as i64)]));
        out
    }

    /// Where the convs and the classifier read weight `id`: the f32 parameter, or its bf16 copy.
    fn weight(&self, b: &Buffers, id: usize) -> u64 {
        match self.dtype {
            DType::F32 => b.params + self.param_at[id] as u64,
            _ => b.weights16 + (self.param_at[id] / 2) as u64,
        }
    }

    /// Mixed precision: the bf16 copy of the whole parameter buffer (`weights16`, element for
    /// element) from the f32 one, after every change of the weights; `None` in f32.
    pub fn refresh_weights16(&self, params: u64, weights16: u64) -> Option<TrainLaunch> {
        let n = self.params_bytes / 4;
        (self.dtype != DType::F32).then(|| infer("nchw_to_nhwc", n, narrow_args(params, weights16, n)))
    }

    /// One optimizer update of every trainable parameter from its gradient at `grads`, in two
    /// launches (with and without weight decay: each a contiguous range, alignment gaps zero). The
    /// optimizer's slots live in buffers laid out like the parameters (`slots[k]` for slot `k` of
    /// [`Optimizer::slot_names`]); weight decay as [`decays`] says.
    #[allow(clippy::too_many_arguments)]
    pub fn optimizer_step(&self, opt: &Optimizer, params: u64, grads: u64, slots: &[u64], lr: f32, weight_decay: f32) -> Vec<TrainLaunch> {
        let mut out = vec![];
        for (from, to, wd) in [(0, self.decayed_bytes, weight_decay), (self.decayed_bytes, self.grads_bytes, 0.0)] {
            if to == from {
                continue;
            }
            let (at, n) = (from as u64, (to - from) / 4);
            let (w, g) = (Arg::Ptr(params + at), Arg::Ptr(grads + at));
            let slot = |k: usize| Arg::Ptr(slots[k] + at);
            out.push(match *opt {
                Optimizer::RmsProp { decay, momentum, eps } => {
                    train("rmsprop_step", n, vec![w, g, slot(0), slot(1), Arg::I64(n as i64), Arg::F32(lr), Arg::F32(decay), Arg::F32(momentum), Arg::F32(eps), Arg::F32(wd)])
                }
                Optimizer::Sgd { momentum, nesterov } => train("sgd_step", n, vec![w, g, slot(0), Arg::I64(n as i64), Arg::F32(lr), Arg::F32(momentum), Arg::I32(nesterov as i32), Arg::F32(wd)]),
            });
        }
        out
    }

    /// The optimizer's slots at their initial values, laid out like the parameters.
    pub fn initial_slots(&self, graph: &Graph, opt: &Optimizer) -> Vec<Vec<u8>> {
        (0..opt.slot_names().len())
            .map(|k| self.pack(graph, |id| Ok(opt.init_slots(graph.params[id].numel()).swap_remove(k))).expect("slots sized from the params"))
            .collect()
    }

    /// `shadow ← shadow − (1−decay)·(shadow − value)` over the whole parameter buffer (weights and
    /// BN statistics, as the CPU engine; alignment padding is zero on both sides).
    pub fn ema_update(&self, shadow: u64, params: u64, decay: f32) -> TrainLaunch {
        let n = self.params_bytes / 4;
        train("ema_update", n, vec![Arg::Ptr(shadow), Arg::Ptr(params), Arg::I64(n as i64), Arg::F32(decay)])
    }

    /// Where [`TrainLayout::chan_sums`] leaves its two sums over `c` channels (`sums64_at`).
    fn sums64(&self, arena: u64, c: usize) -> (u64, u64) {
        let at = arena + self.sums64_at as u64;
        (at, at + 8 * c as u64)
    }

    /// A 1x1 conv over `rows` pixels as a cuBLAS product, where the lowering says so.
    fn row_product(&self, c: &effv2_edge::graph::Conv, rows: usize) -> Option<RowProduct> {
        RowProduct::of_conv(c, rows).filter(|_| self.lowering.gemm_1x1)
    }

    /// The activation code fused into BN node `i` (0: none).
    fn fused_code(&self, i: usize) -> i32 {
        self.fused_act[i].map_or(0, |(_, k)| k)
    }

    /// Whether `node` is an activation its BN applies (see [`TrainLayout::fused_act`]).
    fn is_fused_act(&self, node: &effv2_edge::graph::Node) -> bool {
        matches!(node.op, Op::Act(_)) && node.inputs.first().is_some_and(|&x| self.fused_act[x].is_some())
    }

    /// The two per-channel sums `chan_partials` takes from `with` over `rows`, times `scale`, into
    /// `to[0..2c]` through chunk partials, which are then added as `2c` channels; where given,
    /// f32 copies of each half too (`f32_halves`, see chan_finish).
    #[allow(clippy::too_many_arguments)]
    fn chan_sums(&self, arena: u64, with: SumInputs, rows: usize, c: usize, scale: f64, to: u64, f32_halves: [u64; 2]) -> Vec<TrainLaunch> {
        let (mut out, last, n) = self.chan_partials(arena, with, rows, c);
        let [lo, hi] = f32_halves.map(Arg::Ptr);
        out.push(train("chan_finish", 2 * c, vec![Arg::Ptr(last), Arg::I64(n as i64), Arg::I32(2 * c as i32), Arg::F64(scale), Arg::Ptr(to), lo, hi]));
        out
    }

    /// [`TrainLayout::chan_sums`] up to the final sum: the launches, and where their `[n, 2c]`
    /// partials end up and `n`.
    fn chan_partials(&self, arena: u64, with: SumInputs, rows: usize, c: usize) -> (Vec<TrainLaunch>, u64, usize) {
        let part = arena + self.partials_at as u64;
        let chunk = self.lowering.chan_rows(rows, c);
        let chunks = rows.div_ceil(chunk);
        let SumInputs { a, b, mean, invstd, gamma, beta, mask, per, mode, kind } = with;
        let mut args: Vec<Arg> = [a, b, mean, invstd, gamma, beta].map(Arg::Ptr).to_vec();
        let kernel = if mask == 0 {
            "chan_partials"
        } else {
            assert!(mode == 1 && kind == 0, "a masked BN gradient has no fused activation");
            args.extend([Arg::Ptr(mask), Arg::I64(per as i64)]);
            "chan_partials_masked"
        };
        args.extend([Arg::Ptr(part), Arg::I64(rows as i64), Arg::I32(c as i32), Arg::I32(chunk as i32)]);
        if mask == 0 {
            args.extend([Arg::I32(mode), Arg::I32(kind)]);
        }
        // A thread per chunk and VEC channels where c is a multiple of VEC.
        let mut out = vec![train(kernel, wide_threads(chunks * c, c), args)];
        let c = 2 * c;
        if chunks <= self.chan_group {
            return (out, part, chunks);
        }
        // Many chunks: sum them in groups first, so the final sum per channel is short.
        let part2 = arena + self.partials2_at as u64;
        let groups = chunks.div_ceil(self.chan_group);
        out.push(train("chan_regroup", groups * c, vec![Arg::Ptr(part), Arg::I64(chunks as i64), Arg::I32(c as i32), Arg::I32(self.chan_group as i32), Arg::Ptr(part2)]));
        (out, part2, groups)
    }

    /// `Σ dy` over rows per channel into a parameter gradient (a bias).
    fn bias_grad(&self, arena: u64, dy: u64, rows: usize, c: usize, to: u64) -> Vec<TrainLaunch> {
        let (s64, _) = self.sums64(arena, c);
        self.chan_sums(arena, SumInputs { a: dy, ..Default::default() }, rows, c, 1.0, s64, [to, 0])
    }

    /// The launches of the backward pass after [`TrainLayout::forward`]: `dlogits` (f32, `[batch,
    /// classes]`) in, every trainable parameter's gradient out at `grads` (device layout, see
    /// [`TrainLayout::pgrad_at`]). A value read by several ops gets their gradients summed.
    pub fn backward(&self, graph: &Graph, b: &Buffers) -> Vec<TrainLaunch> {
        let Buffers { arena, grads, masks, dlogits, .. } = *b;
        let batch = self.batch;
        let n = graph.nodes.len();
        let f32_mode = self.dtype == DType::F32;
        let a = |off: usize| arena + off as u64;
        let dlogits_t = if f32_mode { dlogits } else { a(self.dlogits16_at) };
        let v = |i: usize| arena + self.value_at[i] as u64;
        let g = |i: usize| if i == graph.output { dlogits_t } else { arena + self.grad_at[i].expect("a gradient slot") as u64 };
        let p = |id: usize| b.params + self.param_at[id] as u64;
        let weight_of = |id: usize| self.weight(b, id);
        let pg = |id: usize| grads + self.pgrad_at[id].expect("a trainable parameter") as u64;
        // A weight gradient from cuDNN: straight into `grads` in f32; in bf16 through the 16-bit
        // scratch, then widened (cuBLAS writes f32 from 16-bit values itself: RowProduct::weight_grad).
        let wgrad = |id: usize| if f32_mode { pg(id) } else { a(self.wgrad16_at) };
        let widen = |id: usize, out: &mut Vec<TrainLaunch>| {
            if !f32_mode {
                let n = graph.params[id].numel();
                out.push(infer("to_f32", n, vec![Arg::Ptr(a(self.wgrad16_at)), Arg::Ptr(pg(id)), Arg::I64(n as i64)]));
            }
        };
        let i32s = |xs: &[usize]| xs.iter().map(|&x| Arg::I32(x as i32)).collect::<Vec<_>>();
        let tmp = a(self.tmp_at);
        let mut seen = vec![false; n];
        seen[graph.output] = true;
        // A BN that reads its residual Add's gradient itself (bn_add_mask) has one as soon as the Add.
        for (i, m) in self.bn_add_mask.iter().enumerate() {
            seen[i] |= m.is_some();
        }
        let mut out = vec![];
        if !f32_mode {
            let nl = batch * graph.nodes[graph.output].shape.numel();
            out.push(infer("nchw_to_nhwc", nl, narrow_args(dlogits, dlogits_t, nl)));
        }
        for i in (0..n).rev() {
            let node = &graph.nodes[i];
            if matches!(node.op, Op::Input) || !seen[i] {
                continue;
            }
            let s = node.shape;
            let total = batch * s.numel();
            // A BN with its activation fused starts from the activation's gradient.
            // A BN that reads its residual Add's gradient through the mask starts from that.
            let dy = match (self.bn_add_mask[i], self.bn_into_add[i]) {
                (Some(_), Some(add)) => g(add),
                _ => g(self.fused_act[i].map_or(i, |(j, _)| j)),
            };
            let x = node.inputs.first().copied().unwrap_or(0);
            if self.is_fused_act(node) {
                seen[x] = true; // its BN's backward takes it on
                continue;
            }
            let src = graph.nodes[x].shape;
            let xtotal = batch * src.numel();
            // Whether input j's gradient is written for the first time (Some(true)) or added to
            // (Some(false)); None for the network input, which keeps none.
            let mut claim = |j: usize| (!matches!(graph.nodes[j].op, Op::Input)).then(|| !std::mem::replace(&mut seen[j], true));
            // Input j's gradient from `f(destination, add)`: straight into its slot the first
            // time; after that added in place by producers that can (`adds`: cuBLAS and cuDNN with
            // β = 1, asked by `add`), else through the scratch gradient and the add kernel.
            let mut contrib = |j: usize, out: &mut Vec<TrainLaunch>, adds: bool, f: &dyn Fn(u64, bool) -> Vec<TrainLaunch>| match claim(j) {
                None => {}
                Some(true) => out.extend(f(g(j), false)),
                Some(false) if adds => out.extend(f(g(j), true)),
                Some(false) => {
                    let t = batch * graph.nodes[j].shape.numel();
                    out.extend(f(tmp, false));
                    // acc += tmp: the inference `add`, in place (each element reads and writes its own index).
                    out.push(infer_wide("add", t, graph.nodes[j].shape.c, vec![Arg::Ptr(g(j)), Arg::Ptr(tmp), Arg::Ptr(g(j)), Arg::I64(t as i64)]));
                }
            };
            match &node.op {
                Op::Input => {}
                Op::Linear(l) => {
                    let rp = RowProduct { rows: batch, inp: l.in_features, out: l.out_features };
                    out.push(TrainLaunch::Gemm { g: rp.weight_grad(), a: v(x), b: dy, c: pg(l.weight) });
                    out.extend(self.bias_grad(arena, dy, batch, l.out_features, pg(l.bias)));
                    contrib(x, &mut out, true, &|dst, add| vec![TrainLaunch::Gemm { g: rp.input_grad(add), a: weight_of(l.weight), b: dy, c: dst }]);
                }
                Op::DropPath { .. } | Op::Dropout { .. } => contrib(x, &mut out, false, &|dst, _| vec![self.apply_mask(graph, i, masks, dy, 0, dst)]),
                Op::Add => {
                    for &j in &node.inputs {
                        if self.mask_into_add[j] == Some(i) {
                            let masked = graph.nodes[j].inputs[0];
                            if self.bn_add_mask[masked] == Some(j) {
                                // That BN reads this gradient times the mask itself (it is `seen`
                                // from the start): nothing written.
                                continue;
                            }
                            // The mask's backward applied here, into its input's gradient (the mask
                            // node, never `seen`, is then skipped).
                            contrib(masked, &mut out, false, &|dst, _| vec![self.apply_mask(graph, j, masks, dy, 0, dst)]);
                            continue;
                        }
                        if self.grad_of_add[j] == Some(i) {
                            // Its gradient is this one, in the same slot: nothing to copy (the Add, its
                            // last reader, writes it first).
                            contrib(j, &mut out, true, &|dst, add| {
                                assert!(!add && dst == dy, "node {j} shares the gradient slot of Add {i}, its first writer");
                                vec![]
                            });
                            continue;
                        }
                        contrib(j, &mut out, false, &|dst, _| vec![train_wide("copy", total, s.c, vec![Arg::Ptr(dy), Arg::Ptr(dst), Arg::I64(total as i64)])]);
                    }
                }
                Op::Mul => {
                    let gate = node.inputs[1];
                    let hw_c = i32s(&[s.h * s.w, s.c]);
                    // In an SE block the pool's backward writes x's gradient with this one (se_mul_of_pool).
                    if !self.se_mul_of_pool.contains(&Some(i)) {
                        contrib(x, &mut out, false, &|dst, _| vec![infer_wide("gate_mul", total, s.c, [vec![Arg::Ptr(dy), Arg::Ptr(v(gate)), Arg::Ptr(dst), Arg::I64(total as i64)], hw_c.clone()].concat())]);
                    }
                    contrib(gate, &mut out, false, &|dst, _| vec![train("gate_mul_backward_dgate", batch * s.c, [vec![Arg::Ptr(v(x)), Arg::Ptr(dy), Arg::Ptr(dst), Arg::I64(batch as i64)], hw_c.clone()].concat())]);
                }
                Op::GlobalAvgPool => {
                    // In an SE block, with the gate multiply's dx: its gradient times the gate.
                    let (dprod, gate) = self.se_mul_of_pool[i].map_or((0, 0), |m| (g(m), v(graph.nodes[m].inputs[1])));
                    let tail = i32s(&[src.h * src.w, src.c]);
                    contrib(x, &mut out, false, &|dst, _| vec![train_wide("pool_backward", xtotal, src.c, [vec![Arg::Ptr(dy), Arg::Ptr(dprod), Arg::Ptr(gate), Arg::Ptr(dst), Arg::I64(xtotal as i64)], tail.clone()].concat())]);
                }
                Op::Act(k) => {
                    let code = act_code(*k);
                    contrib(x, &mut out, false, &|dst, _| vec![train_wide("act_backward", total, s.c, vec![Arg::Ptr(v(x)), Arg::Ptr(v(i)), Arg::Ptr(dy), Arg::Ptr(dst), Arg::I64(total as i64), Arg::I32(code)])]);
                }
                Op::BatchNorm(b) => {
                    let rows = batch * s.h * s.w;
                    // Σdy and Σdy·x̂ in one pass over dy (or the fused activation's gradient) and x.
                    let (sdy, sdyx) = self.sums64(arena, s.c);
                    let (mean, invstd) = self.bn_saved_at[i].map(|(m, s)| (a(m), a(s))).expect("a BN node has saved slots");
                    let kind = self.fused_code(i);
                    // Written into its residual Add's output through a drop-path: its gradient is
                    // the Add's (dy) times the mask, read as such (bn_add_mask).
                    let mask = self.bn_add_mask[i].map_or(0, |m| masks + self.mask_at[m].expect("mask slot") as u64);
                    let per = s.h * s.w;
                    let with = SumInputs { a: dy, b: v(x), mean, invstd, gamma: p(b.weight), beta: p(b.bias), mask, per, mode: 1, kind };
                    // dβ = Σdy, dγ = Σdy·x̂ in f32 too: this replica's share (summed with every
                    // gradient at the end); dx needs the group's sums and row count.
                    out.extend(self.chan_sums(arena, with, rows, s.c, 1.0, sdy, [pg(b.bias), pg(b.weight)]));
                    out.extend(self.sync_sums(sdy, 2 * s.c));
                    let global_rows = self.shard.global_batch(batch) * s.h * s.w;
                    let args = vec![Arg::Ptr(v(x)), Arg::Ptr(dy), Arg::Ptr(mask), Arg::I64(per as i64), Arg::Ptr(mean), Arg::Ptr(invstd), Arg::Ptr(p(b.weight)), Arg::Ptr(p(b.bias)), Arg::Ptr(sdy), Arg::Ptr(sdyx)];
                    let tail = |dst| vec![Arg::Ptr(dst), Arg::I64(total as i64), Arg::I32(s.c as i32), Arg::I64(global_rows as i64), Arg::I32(kind)];
                    contrib(x, &mut out, false, &|dst, _| vec![self.tiled(Kernel::Train("bn_backward_dx"), total, s.c, [args.clone(), tail(dst)].concat())]);
                }
                Op::Conv(c) => {
                    if let Some(bias) = c.bias {
                        out.extend(self.bias_grad(arena, dy, batch * s.h * s.w, s.c, pg(bias)));
                    }
                    let pd = c.pads;
                    if c.is_depthwise() {
                        let geo = i32s(&[src.h, src.w, src.c, s.h, s.w, c.kernel, c.stride, pd.top, pd.left]);
                        let taps_c = src.c * c.kernel * c.kernel;
                        let chunks = (batch * s.h * s.w).div_ceil(self.lowering.dw_chunk_rows);
                        let part = a(self.partials_at);
                        out.push(train_wide("depthwise_backward_dw", chunks * taps_c, src.c, [vec![Arg::Ptr(v(x)), Arg::Ptr(dy), Arg::Ptr(part), Arg::I64(batch as i64)], geo.clone(), vec![Arg::I32(self.lowering.dw_chunk_rows as i32)]].concat()));
                        out.push(train("depthwise_dw_finish", taps_c, vec![Arg::Ptr(part), Arg::I64(chunks as i64), Arg::I32(taps_c as i32), Arg::Ptr(pg(c.weight))]));
                        contrib(x, &mut out, false, &|dst, _| vec![train_wide("depthwise_backward_dx", xtotal, src.c, [vec![Arg::Ptr(dy), Arg::Ptr(weight_of(c.weight)), Arg::Ptr(dst), Arg::I64(xtotal as i64)], geo.clone()].concat())]);
                        continue;
                    }
                    if let Some(rp) = self.row_product(c, batch * s.h * s.w) {
                        out.push(TrainLaunch::Gemm { g: rp.weight_grad(), a: v(x), b: dy, c: pg(c.weight) });
                        let wt = weight_of(c.weight);
                        contrib(x, &mut out, true, &|dst, add| vec![TrainLaunch::Gemm { g: rp.input_grad(add), a: wt, b: dy, c: dst }]);
                        continue;
                    }
                    let (h, w) = (src.h, src.w);
                    let mut shape = ConvShape { n: batch, c: src.c, h, w, out_ch: c.out_ch, oh: s.h, ow: s.w, kernel: c.kernel, stride: c.stride, pad: [pd.top, pd.left], groups: 1 };
                    let padded = a(self.pad_at);
                    let mut from = v(x);
                    // The forward's padded copy is gone (the scratch is shared): pad again.
                    let pad = shape.pad_into([pd.top, pd.left, pd.bottom, pd.right], &mut from, padded);
                    if let Some((threads, args)) = &pad {
                        out.push(infer("pad", *threads, args.clone()));
                    }
                    out.push(TrainLaunch::ConvBackwardFilter { shape, x: from, dy, dw: wgrad(c.weight) });
                    widen(c.weight, &mut out);
                    let wt = weight_of(c.weight);
                    contrib(x, &mut out, pad.is_none(), &|dst, accumulate| match &pad {
                        // The gradient of the padded copy, cropped back (same geometry as the pad).
                        Some((_, pad_args)) => {
                            let crop = [vec![Arg::Ptr(padded), Arg::Ptr(dst), Arg::I64(xtotal as i64)], pad_args[3..].to_vec()].concat();
                            vec![TrainLaunch::ConvBackwardData { shape, dy, w: wt, dx: padded, accumulate: false }, train_wide("crop", xtotal, src.c, crop)]
                        }
                        None => vec![TrainLaunch::ConvBackwardData { shape, dy, w: wt, dx: dst, accumulate }],
                    });
                }
            }
        }
        if self.shard.global > 0 {
            // Every replica steps from the global batch's gradients.
            out.push(TrainLaunch::AllReduce { ptr: grads, count: self.grads_bytes / 4, dtype: Summed::F32 });
        }
        out
    }

    /// Synchronised BN: `count` f64 per-channel sums at `at` summed over the data-parallel group.
    fn sync_sums(&self, at: u64, count: usize) -> Option<TrainLaunch> {
        (self.shard.global > 0).then_some(TrainLaunch::AllReduce { ptr: at, count, dtype: Summed::F64 })
    }
}

/// `y[rows, out] = x[rows, inp] · w[out, inp]ᵀ` over row-major values: the classifier (a row per
/// sample), and a 1x1 conv with stride 1 and no padding on NHWC values (a row per pixel), which
/// is a plain matrix product: cuBLAS runs it and its two gradients (cuDNN's conv kernels, and its
/// deterministic backward-filter algorithms above all, were several times slower on these).
/// The products as column-major GEMMs, `w` being `a` or the output.
#[derive(Clone, Copy, Debug)]
struct RowProduct {
    rows: usize,
    inp: usize,
    out: usize,
}

impl RowProduct {
    fn of_conv(c: &effv2_edge::graph::Conv, rows: usize) -> Option<RowProduct> {
        let p = c.pads;
        (c.is_pointwise() && [p.top, p.left, p.bottom, p.right] == [0; 4]).then_some(RowProduct { rows, inp: c.in_ch, out: c.out_ch })
    }

    /// y (a = w, b = x).
    fn forward(self) -> BlasGemm {
        BlasGemm::for_linear(self.rows, self.out, self.inp)
    }

    /// dw[out, inp] = dyᵀ · x, column-major dwᵀ = xᵀ · dy (a = x, b = dy), in f32 whatever the
    /// values' type: straight into the parameter gradients.
    fn weight_grad(self) -> BlasGemm {
        BlasGemm { trans_a: false, trans_b: true, m: self.inp, n: self.out, k: self.rows, lda: self.inp, ldb: self.out, ldc: self.inp, c_f32: true, accumulate: false }
    }

    /// dx[rows, inp] = dy · w, column-major dxᵀ = wᵀ · dyᵀ (a = w, b = dy); added to dx where
    /// `accumulate` (a second gradient contribution).
    fn input_grad(self, accumulate: bool) -> BlasGemm {
        BlasGemm { trans_a: false, trans_b: false, m: self.inp, n: self.rows, k: self.out, lda: self.inp, ldb: self.out, ldc: self.inp, c_f32: false, accumulate }
    }
}

/// [`TrainLayout::kept_until`]: per node, steps (for a gradient with no slot of its own, its node's
/// backward: never read).
#[derive(Clone, Debug, Default)]
pub struct Kept {
    pub value: Vec<usize>,
    pub grad: Vec<usize>,
}

/// What `chan_partials` reads (0 where unused): `a` (and in mode 1 the BN input `b`, its saved
/// statistics and parameters, the fused activation `kind`, and a drop-path `mask` scaling `a`,
/// one factor per `per` rows).
#[derive(Clone, Copy, Default)]
struct SumInputs {
    a: u64,
    b: u64,
    mean: u64,
    invstd: u64,
    gamma: u64,
    beta: u64,
    mask: u64,
    per: usize,
    mode: i32,
    kind: i32,
}

/// How nodes share or hand on their values and gradients, for the arena plan
/// ([`TrainLayout::plan_values_and_grads`]; each field is the [`TrainLayout`] one of that name).
#[derive(Clone, Copy)]
struct Shares<'a> {
    fused_act: &'a [Option<(usize, i32)>],
    into_add: &'a [Option<usize>],
    of_add: &'a [Option<usize>],
    se_mul_of_pool: &'a [Option<usize>],
    bn_into_add: &'a [Option<usize>],
    bn_add_mask: &'a [Option<usize>],
}

/// Per node: for a BN whose output only an activation reads (and that is not the graph's
/// output), that activation's node and code ([`TrainLayout::fused_act`]).
fn fused_activations(graph: &Graph) -> Vec<Option<(usize, i32)>> {
    let readers = graph.readers();
    (0..graph.nodes.len())
        .map(|i| match (&graph.nodes[i].op, readers[i].as_slice()) {
            (Op::BatchNorm(_), &[j]) if i != graph.output => match graph.nodes[j].op {
                Op::Act(k) => Some((j, act_code(k))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The conv whose weight parameter `id` is.
fn conv_of(graph: &Graph, id: usize) -> Option<effv2_edge::graph::Conv> {
    graph.nodes.iter().find_map(|n| match &n.op {
        Op::Conv(c) if c.weight == id => Some(c.clone()),
        _ => None,
    })
}

impl TrainLayout {
    /// `y = x · mask` of drop-path / dropout node `i` (its forward, and with gradients for x and y
    /// its backward), the step's mask of that node from the `masks` buffer; `+ skip` where that is
    /// not 0 (the residual Add the mask alone feeds, [`TrainLayout::mask_into_add`]).
    fn apply_mask(&self, graph: &Graph, i: usize, masks: u64, x: u64, skip: u64, y: u64) -> TrainLaunch {
        let node = &graph.nodes[i];
        let total = self.batch * node.shape.numel();
        // A drop-path keeps or drops whole samples, a dropout single elements.
        let per = if matches!(node.op, Op::DropPath { .. }) { node.shape.numel() } else { 1 };
        let mask = masks + self.mask_at[i].expect("mask slot") as u64;
        train_wide("apply_mask", total, per, vec![Arg::Ptr(x), Arg::Ptr(mask), Arg::Ptr(skip), Arg::Ptr(y), Arg::I64(total as i64), Arg::I64(per as i64)])
    }

    /// BN node `i` applied to its input `x` with `stats` (mean, invstd, γ, β): into its own value
    /// (with its fused activation), or where it is the branch end of a residual Add
    /// ([`TrainLayout::bn_into_add`]) into that Add's output, times the Add's drop-path mask from
    /// `masks` where one is given (training mode) and plus the Add's other input.
    fn bn_apply(&self, graph: &Graph, i: usize, masks: Option<u64>, x: u64, stats: [u64; 4], arena: u64) -> TrainLaunch {
        let s = graph.nodes[i].shape;
        let total = self.batch * s.numel();
        let v = |j: usize| arena + self.value_at[j] as u64;
        let stats = stats.map(Arg::Ptr);
        let tail = [Arg::I64(total as i64), Arg::I32(s.c as i32)];
        let Some(add) = self.bn_into_add[i] else {
            let args = [&[Arg::Ptr(x), Arg::Ptr(v(i))][..], &stats, &tail, &[Arg::I32(self.fused_code(i))]].concat();
            return self.tiled(Kernel::Train("bn_apply"), total, s.c, args);
        };
        // The Add's input on the BN's side is the BN or its drop-path (bn_add_mask); the other one
        // is the skip.
        let end = self.bn_add_mask[i].unwrap_or(i);
        let skip = *graph.nodes[add].inputs.iter().find(|&&j| j != end).expect("a two-input Add");
        let mask = match (masks, self.bn_add_mask[i]) {
            (Some(masks), Some(m)) => masks + self.mask_at[m].expect("mask slot") as u64,
            _ => 0,
        };
        let args = [&[Arg::Ptr(x), Arg::Ptr(v(skip)), Arg::Ptr(mask), Arg::I64((s.h * s.w) as i64), Arg::Ptr(v(add))][..], &stats, &tail].concat();
        self.tiled(Kernel::Train("bn_apply_add"), total, s.c, args)
    }

    /// A row-tiled kernel (bias_act, bn_apply, bn_backward_dx; precision.cu's row tiles) over
    /// `total` elements of `c` channels: `args`, then its rows per thread, in a thread per tile.
    fn tiled(&self, kernel: Kernel, total: usize, c: usize, mut args: Vec<Arg>) -> TrainLaunch {
        let rpt = row_tile(total, c, self.tile_min_threads);
        args.push(Arg::I32(rpt as i32));
        TrainLaunch::Kernel { kernel, total: row_tile_threads(total, c, rpt), args }
    }
}

/// [`TrainLayout::mask_into_add`]: per node, the residual Add that is the only reader of this
/// drop-path / dropout output (the first such mask of each Add).
fn masks_into_adds(graph: &Graph) -> Vec<Option<usize>> {
    let readers = graph.readers();
    let mut taken = vec![false; graph.nodes.len()];
    (0..graph.nodes.len())
        .map(|j| match (&graph.nodes[j].op, readers[j].as_slice()) {
            // One per Add: it applies that mask itself in the forward (x · mask + skip).
            (Op::DropPath { .. } | Op::Dropout { .. }, &[c]) if matches!(graph.nodes[c].op, Op::Add) && j != graph.output && !taken[c] => {
                taken[c] = true;
                Some(c)
            }
            _ => None,
        })
        .collect()
}

/// [`TrainLayout::grad_of_add`]: per node, the residual Add that is its last reader and hands it
/// its gradient unchanged (an input other than the Add's mask, read by nothing after the Add; the
/// first such input of each Add).
fn skips_of_adds(graph: &Graph, into_add: &[Option<usize>]) -> Vec<Option<usize>> {
    let readers = graph.readers();
    let mut taken = vec![false; graph.nodes.len()];
    (0..graph.nodes.len())
        .map(|j| {
            let c = *readers[j].last()?;
            let add = &graph.nodes[c];
            let hands_on = matches!(add.op, Op::Add) && c != graph.output && into_add[j].is_none() && !matches!(graph.nodes[j].op, Op::Input) && add.inputs.iter().filter(|&&k| k == j).count() == 1;
            (hands_on && !std::mem::replace(&mut taken[c], true)).then_some(c)
        })
        .collect()
}

/// [`TrainLayout::bn_into_add`]: per BN without a fused activation whose only reader is a
/// two-input Add, or a drop-path (one mask per sample) that Add alone reads and applies.
fn bns_into_adds(graph: &Graph, fused_act: &[Option<(usize, i32)>], into_add: &[Option<usize>]) -> Vec<Option<usize>> {
    let readers = graph.readers();
    let two_input_add = |c: usize, j: usize| matches!(graph.nodes[c].op, Op::Add) && graph.nodes[c].inputs.len() == 2 && graph.nodes[c].inputs.iter().filter(|&&k| k == j).count() == 1;
    (0..graph.nodes.len())
        .map(|i| {
            let (Op::BatchNorm(_), &[r], None) = (&graph.nodes[i].op, readers[i].as_slice(), fused_act[i]) else { return None };
            let add = match graph.nodes[r].op {
                Op::Add => r,
                Op::DropPath { .. } => into_add[r]?,
                _ => return None,
            };
            (i != graph.output && two_input_add(add, if add == r { i } else { r })).then_some(add)
        })
        .collect()
}

/// [`TrainLayout::se_mul_of_pool`]: per global-average pool whose input has exactly two readers,
/// the pool and a multiply by a gate (its second input, another node), that multiply.
fn se_multiplies(graph: &Graph) -> Vec<Option<usize>> {
    let readers = graph.readers();
    (0..graph.nodes.len())
        .map(|p| {
            let x = *graph.nodes[p].inputs.first()?;
            let &[a, b] = readers[x].as_slice() else { return None };
            let m = if a == p { b } else { a };
            let mul = &graph.nodes[m];
            let se = matches!(graph.nodes[p].op, Op::GlobalAvgPool) && matches!(mul.op, Op::Mul) && mul.inputs[0] == x && mul.inputs[1] != x && m != graph.output;
            se.then_some(m)
        })
        .collect()
}

/// `nchw_to_nhwc`'s arguments narrowing `n` f32 values at `from` to the activation type at `to`.
fn narrow_args(from: u64, to: u64, n: usize) -> Vec<Arg> {
    to_nhwc_args(from, to, n, [1, 1, 1], PaddedInto::none(1, 1))
}

fn infer(name: &'static str, total: usize, args: Vec<Arg>) -> TrainLaunch {
    TrainLaunch::Kernel { kernel: Kernel::Infer(name), total, args }
}

/// An inference kernel over `total` elements of `c` channels, in as many threads as its vector
/// path takes ([`kernel_threads`]).
fn infer_wide(name: &'static str, total: usize, c: usize, args: Vec<Arg>) -> TrainLaunch {
    infer(name, kernel_threads(name, total, c), args)
}

/// A training kernel over `total` elements of `c` channels, in as many threads as its vector path
/// in train_kernels.cu takes ([`wide_threads`]: by `c` for the kernels whose wide path needs whole
/// VECs of channels (or of a drop-path mask's elements, for `apply_mask`), by elements else).
fn train_wide(name: &'static str, total: usize, c: usize, args: Vec<Arg>) -> TrainLaunch {
    let by_c = matches!(name, "depthwise_backward_dx" | "depthwise_backward_dw" | "pool_backward" | "apply_mask" | "crop");
    let unit = if by_c { c } else { total };
    train(name, wide_threads(total, unit), args)
}

fn train(name: &'static str, total: usize, args: Vec<Arg>) -> TrainLaunch {
    TrainLaunch::Kernel { kernel: Kernel::Train(name), total, args }
}

/// The kernels' activation codes (`effv2_runtime::plan::Act`).
fn act_code(k: effv2_edge::graph::ActKind) -> i32 {
    use effv2_edge::graph::ActKind::*;
    match k {
        Silu => 1,
        Relu6 => 2,
        Sigmoid => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sums_take_shorter_partials_until_they_have_threads() {
        let l = Lowering::default();
        // S@224 b128: 14x14 and 7x7 sums shorten, the 112x112 stem's keeps 64 rows (75k threads).
        assert_eq!(l.chan_rows(128 * 7 * 7, 1536), 16);
        assert_eq!(l.chan_rows(128 * 14 * 14, 960), 32);
        assert_eq!(l.chan_rows(128 * 112 * 112, 24), 64);
        // Bias gradients over the batch alone, and channels off the vector path: the floor.
        assert_eq!(l.chan_rows(128, 1280), CHAN_MIN_CHUNK_ROWS);
        assert_eq!(l.chan_rows(6272, 19), CHAN_MIN_CHUNK_ROWS);
        // Switched off: the chunk rows everywhere.
        assert_eq!(Lowering { chan_min_threads: 0, ..l }.chan_rows(6272, 1536), CHAN_CHUNK_ROWS);
        assert_eq!(Lowering { chan_chunk_rows: 4, ..l }.chan_rows(6272, 1536), 4);
    }
}
