//! The backward pass as launches: every trainable parameter's gradient from dLoss/dLogits.

use effv2_edge::graph::{Graph, Op};
use effv2_runtime::plan::launch::{Arg, ConvShape, DType};

use super::row_product::RowProduct;
use super::sums::SumInputs;
use super::{act_code, infer, infer_wide, narrow_args, train, train_wide, Buffers, Kernel, Summed, TrainLaunch, TrainLayout};

impl TrainLayout {
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
    pub(super) fn sync_sums(&self, at: u64, count: usize) -> Option<TrainLaunch> {
        (self.shard.global > 0).then_some(TrainLaunch::AllReduce { ptr: at, count, dtype: Summed::F64 })
    }
}
