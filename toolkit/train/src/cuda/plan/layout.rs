//! Where a training step keeps what: the arena (values and gradients sharing space by lifetime,
//! scratch), the parameter buffer and the mask buffer.

use effv2_edge::graph::{Graph, Op, Role};
use effv2_runtime::plan::arena::plan_intervals;
use effv2_runtime::plan::launch::{DType, ROW_TILE_MIN_THREADS};

use super::fusion::{bns_into_adds, fused_activations, masks_into_adds, se_multiplies, skips_of_adds};
use super::row_product::RowProduct;
use super::{align, Kept, Lowering, TrainLayout, CHAN_GROUP};
use crate::cpu::node_mask;
use crate::optim::decays;
use crate::parallel::Shard;

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
    pub(super) fn plan_values_and_grads(graph: &Graph, shares: Shares, per_element: usize, base: usize) -> (Vec<usize>, Vec<Option<usize>>, Kept, usize) {
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
}

/// How nodes share or hand on their values and gradients, for the arena plan
/// ([`TrainLayout::plan_values_and_grads`]; each field is the [`TrainLayout`] one of that name).
#[derive(Clone, Copy)]
pub(super) struct Shares<'a> {
    pub(super) fused_act: &'a [Option<(usize, i32)>],
    pub(super) into_add: &'a [Option<usize>],
    pub(super) of_add: &'a [Option<usize>],
    pub(super) se_mul_of_pool: &'a [Option<usize>],
    pub(super) bn_into_add: &'a [Option<usize>],
    pub(super) bn_add_mask: &'a [Option<usize>],
}
