//! The forward pass: every node in graph order. Training mode keeps all values and what each
//! backward needs (BN statistics, masks); eval mode frees each value after its last reader.

use effv2_edge::graph::{Conv, Op, Shape};
use effv2_edge::rng::Rng;

use super::conv::Geo;
use super::{bn, conv, depthwise, ops, to_nchw, to_nhwc, Aux, CpuTrainer};
use crate::parallel::Shard;
use crate::TrainError;

pub(super) fn geo(c: &Conv, src: Shape, out: Shape) -> Geo {
    Geo { cin: c.in_ch, cout: c.out_ch, h: src.h, w: src.w, oh: out.h, ow: out.w, k: c.kernel, stride: c.stride, pads: c.pads }
}

/// Mask stream of node `i` for a step's seed.
pub fn node_rng(seed: u64, i: usize) -> Rng {
    Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The training-step mask of node `i` (`op`, `sample` values per sample) for `batch` rows: drawn
/// for the whole global batch from the step's seed and cut to `shard`'s rows, so data-parallel
/// replicas apply what one engine would. `None` where the op drops nothing. What both engines
/// apply (the CUDA one uploads it).
pub fn node_mask(op: &Op, sample: usize, batch: usize, shard: Shard, seed: u64, i: usize) -> Option<Vec<f32>> {
    let global = shard.global_batch(batch);
    let (draw, per) = match *op {
        Op::DropPath { survival } if survival < 1.0 => (ops::drop_path_mask(global, survival, &mut node_rng(seed, i)), 1),
        Op::Dropout { rate } if rate > 0.0 => (ops::dropout_mask(global * sample, rate, &mut node_rng(seed, i)), sample),
        _ => return None,
    };
    Some(shard.slice_rows(&draw, per, batch).to_vec())
}

impl CpuTrainer {
    pub(super) fn run_forward(&mut self, input: &[f32], batch: usize, train: bool, seed: u64) -> Result<Vec<f32>, TrainError> {
        let graph = &self.graph;
        let ishape = graph.input_shape();
        if batch == 0 || input.len() != batch * ishape.numel() {
            return Err(TrainError::Size { what: "input batch (NCHW)", want: batch.max(1) * ishape.numel(), got: input.len() });
        }
        let n = graph.nodes.len();
        let mut remaining = graph.use_counts();
        let mut vals: Vec<Vec<f32>> = vec![vec![]; n];
        let mut aux: Vec<Aux> = vec![Aux::None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            let out = node.shape;
            let src = node.inputs.first().map(|&j| graph.nodes[j].shape).unwrap_or(out);
            let x = node.inputs.first().map(|&j| vals[j].as_slice()).unwrap_or(&[]);
            let mut y = vec![0.0; batch * out.numel()];
            match &node.op {
                Op::Input => y = to_nhwc(input, ishape),
                Op::Conv(c) => {
                    let g = geo(c, src, out);
                    let w = &self.params[c.weight];
                    if c.groups == 1 {
                        conv::forward(&g, x, w, c.bias.map(|b| self.params[b].as_slice()), &mut y);
                    } else {
                        depthwise::forward(&g, x, w, &mut y);
                        if let Some(b) = c.bias {
                            let b = &self.params[b];
                            y.chunks_exact_mut(c.out_ch).for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b));
                        }
                    }
                }
                Op::BatchNorm(b) => {
                    let (gamma, beta) = (self.params[b.weight].clone(), self.params[b.bias].clone());
                    let p = bn::Params { gamma: &gamma, beta: &beta, eps: b.eps };
                    if train {
                        let mut rm = std::mem::take(&mut self.params[b.mean]);
                        let mut rv = std::mem::take(&mut self.params[b.var]);
                        let saved = bn::forward_train(&p, x, &mut y, &mut rm, &mut rv, self.group.as_deref());
                        self.params[b.mean] = rm;
                        self.params[b.var] = rv;
                        aux[i] = Aux::Bn(saved?);
                    } else {
                        bn::forward_eval(&p, x, &mut y, &self.params[b.mean], &self.params[b.var]);
                    }
                }
                Op::Act(k) => ops::act_forward(*k, x, &mut y),
                Op::GlobalAvgPool => ops::pool_forward(x, src.h * src.w, src.c, &mut y),
                Op::Mul => ops::mul_forward(x, &vals[node.inputs[1]], src.h * src.w, src.c, &mut y),
                Op::Add => {
                    let b = &vals[node.inputs[1]];
                    y.iter_mut().zip(x.iter().zip(b)).for_each(|(y, (a, b))| *y = a + b);
                }
                Op::DropPath { .. } | Op::Dropout { .. } => match train.then(|| node_mask(&node.op, out.numel(), batch, self.shard, seed, i)).flatten() {
                    Some(mask) => {
                        // A drop-path value covers a whole sample, a dropout value one element.
                        let per = if matches!(node.op, Op::DropPath { .. }) { out.numel() } else { 1 };
                        ops::apply_mask(x, &mask, per, &mut y);
                        aux[i] = Aux::Mask(mask);
                    }
                    None => y.copy_from_slice(x),
                },
                Op::Linear(l) => ops::linear_forward(x, &self.params[l.weight], &self.params[l.bias], l.in_features, l.out_features, &mut y),
            }
            vals[i] = y;
            if !train {
                for &j in &node.inputs {
                    remaining[j] -= 1;
                    if remaining[j] == 0 {
                        vals[j] = vec![];
                    }
                }
            }
        }
        let out = to_nchw(&vals[graph.output], graph.output_shape());
        if train {
            self.vals = vals;
            self.aux = aux;
            self.batch = batch;
        } else {
            self.vals.clear();
            self.aux.clear();
        }
        Ok(out)
    }
}
