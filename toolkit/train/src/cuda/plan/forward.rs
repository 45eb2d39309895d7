//! The forward pass as launches, training or eval mode.

use effv2_edge::graph::{Graph, Op};
use effv2_runtime::plan::launch::{row_tile, row_tile_threads, to_nhwc_args, Arg, ConvShape, PaddedInto};

use super::row_product::RowProduct;
use super::sums::SumInputs;
use super::{act_code, geom, infer, infer_wide, train, train_wide, Buffers, Kernel, TrainLaunch, TrainLayout};
use crate::cpu::bn::RUNNING_MOMENTUM;

impl TrainLayout {
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

    /// A 1x1 conv over `rows` pixels as a cuBLAS product, where the lowering says so.
    pub(super) fn row_product(&self, c: &effv2_edge::graph::Conv, rows: usize) -> Option<RowProduct> {
        RowProduct::of_conv(c, rows).filter(|_| self.lowering.gemm_1x1)
    }

    /// The activation code fused into BN node `i` (0: none).
    pub(super) fn fused_code(&self, i: usize) -> i32 {
        self.fused_act[i].map_or(0, |(_, k)| k)
    }

    /// Whether `node` is an activation its BN applies (see [`TrainLayout::fused_act`]).
    pub(super) fn is_fused_act(&self, node: &effv2_edge::graph::Node) -> bool {
        matches!(node.op, Op::Act(_)) && node.inputs.first().is_some_and(|&x| self.fused_act[x].is_some())
    }

    /// `y = x · mask` of drop-path / dropout node `i` (its forward, and with gradients for x and y
    /// its backward), the step's mask of that node from the `masks` buffer; `+ skip` where that is
    /// not 0 (the residual Add the mask alone feeds, [`TrainLayout::mask_into_add`]).
    pub(super) fn apply_mask(&self, graph: &Graph, i: usize, masks: u64, x: u64, skip: u64, y: u64) -> TrainLaunch {
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
    pub(super) fn bn_apply(&self, graph: &Graph, i: usize, masks: Option<u64>, x: u64, stats: [u64; 4], arena: u64) -> TrainLaunch {
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
    pub(super) fn tiled(&self, kernel: Kernel, total: usize, c: usize, mut args: Vec<Arg>) -> TrainLaunch {
        let rpt = row_tile(total, c, self.tile_min_threads);
        args.push(Arg::I32(rpt as i32));
        TrainLaunch::Kernel { kernel, total: row_tile_threads(total, c, rpt), args }
    }
}
