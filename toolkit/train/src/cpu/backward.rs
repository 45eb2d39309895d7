//! The backward pass: nodes in reverse order, each turning its output gradient into gradients of
//! its inputs (summed where a value has several readers) and of its parameters.

use effv2_edge::graph::Op;

use super::forward::geo;
use super::{bn, conv, depthwise, ops, to_nchw, to_nhwc, Aux, CpuTrainer};
use crate::TrainError;

fn accumulate(dvals: &mut [Option<Vec<f32>>], j: usize, g: Vec<f32>) {
    match &mut dvals[j] {
        Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, v)| *a += v),
        None => dvals[j] = Some(g),
    }
}

impl CpuTrainer {
    pub(super) fn run_backward(&mut self, dout: &[f32]) -> Result<(), TrainError> {
        if self.vals.is_empty() {
            return Err(TrainError::Misuse("backward needs a Mode::Train forward first".into()));
        }
        let graph = &self.graph;
        let batch = self.batch;
        let oshape = graph.output_shape();
        if dout.len() != batch * oshape.numel() {
            return Err(TrainError::Size { what: "dLoss/dLogits", want: batch * oshape.numel(), got: dout.len() });
        }
        self.grads.iter_mut().for_each(|g| g.fill(0.0));
        let n = graph.nodes.len();
        let mut dvals: Vec<Option<Vec<f32>>> = vec![None; n];
        dvals[graph.output] = Some(to_nhwc(dout, oshape));
        let want_input = self.want_input_grad;
        let need = |j: usize| j != 0 || want_input;
        for i in (1..n).rev() {
            let Some(dy) = dvals[i].take() else { continue };
            let node = &graph.nodes[i];
            let (out, j) = (node.shape, node.inputs[0]);
            let src = graph.nodes[j].shape;
            let x = &self.vals[j];
            let zeros = || vec![0.0; x.len()];
            match &node.op {
                Op::Input => {}
                Op::Conv(c) => {
                    let g = geo(c, src, out);
                    let mut dx = need(j).then(zeros);
                    let mut dw = std::mem::take(&mut self.grads[c.weight]);
                    if c.groups == 1 {
                        let mut db = c.bias.map(|b| std::mem::take(&mut self.grads[b]));
                        conv::backward(&g, x, &self.params[c.weight], &dy, dx.as_deref_mut(), &mut dw, db.as_deref_mut());
                        if let (Some(b), Some(db)) = (c.bias, db) {
                            self.grads[b] = db;
                        }
                    } else {
                        depthwise::backward(&g, x, &self.params[c.weight], &dy, dx.as_deref_mut(), &mut dw);
                        if let Some(b) = c.bias {
                            let db = &mut self.grads[b];
                            dy.chunks_exact(c.out_ch).for_each(|r| db.iter_mut().zip(r).for_each(|(s, v)| *s += v));
                        }
                    }
                    self.grads[c.weight] = dw;
                    if let Some(dx) = dx {
                        accumulate(&mut dvals, j, dx);
                    }
                }
                Op::BatchNorm(b) => {
                    let Aux::Bn(saved) = &self.aux[i] else { return Err(TrainError::Misuse("BN statistics missing".into())) };
                    let p = bn::Params { gamma: &self.params[b.weight], beta: &self.params[b.bias], eps: b.eps };
                    let (mut dg, mut db) = (vec![0.0; b.ch], vec![0.0; b.ch]);
                    let mut dx = zeros();
                    bn::backward(&p, saved, x, &dy, &mut dx, &mut dg, &mut db, self.group.as_deref())?;
                    self.grads[b.weight] = dg;
                    self.grads[b.bias] = db;
                    accumulate(&mut dvals, j, dx);
                }
                Op::Act(k) => {
                    let mut dx = zeros();
                    ops::act_backward(*k, x, &self.vals[i], &dy, &mut dx);
                    accumulate(&mut dvals, j, dx);
                }
                Op::GlobalAvgPool => {
                    let mut dx = zeros();
                    ops::pool_backward(&dy, src.h * src.w, src.c, &mut dx);
                    accumulate(&mut dvals, j, dx);
                }
                Op::Mul => {
                    let k = node.inputs[1];
                    let (mut dx, mut dg) = (zeros(), vec![0.0; self.vals[k].len()]);
                    ops::mul_backward(x, &self.vals[k], &dy, src.h * src.w, src.c, &mut dx, &mut dg);
                    accumulate(&mut dvals, j, dx);
                    accumulate(&mut dvals, k, dg);
                }
                Op::Add => {
                    accumulate(&mut dvals, node.inputs[1], dy.clone());
                    accumulate(&mut dvals, j, dy);
                }
                Op::DropPath { .. } | Op::Dropout { .. } => match &self.aux[i] {
                    Aux::Mask(mask) => {
                        let per = if matches!(node.op, Op::DropPath { .. }) { out.numel() } else { 1 };
                        let mut dx = zeros();
                        ops::apply_mask(&dy, mask, per, &mut dx);
                        accumulate(&mut dvals, j, dx);
                    }
                    _ => accumulate(&mut dvals, j, dy),
                },
                Op::Linear(l) => {
                    let (mut dw, mut db, mut dx) = (vec![0.0; l.in_features * l.out_features], vec![0.0; l.out_features], zeros());
                    ops::linear_backward(x, &self.params[l.weight], &dy, l.in_features, l.out_features, &mut dx, &mut dw, &mut db);
                    self.grads[l.weight] = dw;
                    self.grads[l.bias] = db;
                    accumulate(&mut dvals, j, dx);
                }
            }
        }
        self.input_grad = match (want_input, dvals[0].take()) {
            (true, Some(d)) => to_nchw(&d, graph.input_shape()),
            _ => vec![],
        };
        self.vals.clear();
        self.aux.clear();
        self.sum_grads_over_group()
    }

    /// Data parallelism: every replica ends up with the gradients of the whole global batch.
    fn sum_grads_over_group(&mut self) -> Result<(), TrainError> {
        let Some(g) = &self.group else { return Ok(()) };
        let mut flat: Vec<f32> = self.grads.concat();
        g.all_reduce_f32(&mut flat)?;
        let mut rest = flat.as_slice();
        for gr in &mut self.grads {
            let (mine, tail) = rest.split_at(gr.len());
            gr.copy_from_slice(mine);
            rest = tail;
        }
        Ok(())
    }
}
