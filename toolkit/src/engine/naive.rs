//! The slow reference path the engine is tested against: a direct NCHW conv and a whole-graph
//! interpreter, both in f64 with BN applied unfolded; plus deterministic random weights for tests
//! and timing. Not for production use: it trusts the graph's structure.

use super::EngineError;
use crate::graph::{ActKind, Conv, Graph, Op, Role, Shape};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::weights::Weights;

/// Direct convolution by the definition: `x` NCHW `[batch, input]`, `w` OIHW. Returns NCHW output.
pub fn conv2d(x: &[f64], batch: usize, input: Shape, c: &Conv, w: &[f64], bias: Option<&[f64]>) -> (Vec<f64>, Shape) {
    let (k, st, p, s) = (c.kernel, c.stride, c.pads, input);
    let out = Shape::new(c.out_ch, (s.h + p.top + p.bottom - k) / st + 1, (s.w + p.left + p.right - k) / st + 1);
    let (cin_g, cout_g) = (c.in_ch / c.groups, c.out_ch / c.groups);
    let mut y = vec![0.0; batch * out.numel()];
    for (i, y) in y.iter_mut().enumerate() {
        let (n, o, oy, ox) = (i / out.numel(), i / (out.h * out.w) % out.c, i / out.w % out.h, i % out.w);
        *y = bias.map_or(0.0, |b| b[o]);
        for ci in 0..cin_g {
            let ic = o / cout_g * cin_g + ci;
            for ky in 0..k {
                for kx in 0..k {
                    let (iy, ix) = ((oy * st + ky).wrapping_sub(p.top), (ox * st + kx).wrapping_sub(p.left));
                    if iy < s.h && ix < s.w {
                        *y += x[((n * s.c + ic) * s.h + iy) * s.w + ix] * w[((o * cin_g + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
    }
    (y, out)
}

/// Interpret `graph` node by node on an NCHW batch. Output as [`super::CpuEngine::run`] gives it.
pub fn run(graph: &Graph, weights: &Weights, input: &Tensor) -> Result<Tensor, EngineError> {
    weights.check(graph)?;
    let want = graph.input_shape();
    let batch = match *input.shape() {
        [n, c, h, w] if n > 0 && Shape::new(c, h, w) == want => n,
        _ => return Err(EngineError::InputShape { want, got: input.shape().to_vec() }),
    };
    let p = |id: usize| -> Vec<f64> { weights.get(&graph.params[id].name).map(|t| t.data().iter().map(|&v| v as f64).collect()).unwrap_or_default() };
    let mut vals: Vec<Vec<f64>> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let x = |k: usize| &vals[node.inputs[k]];
        let src = node.inputs.first().map(|&v| graph.nodes[v].shape).unwrap_or(node.shape);
        let hw = src.h * src.w;
        let y: Vec<f64> = match &node.op {
            Op::Input => input.data().iter().map(|&v| v as f64).collect(),
            Op::Conv(c) => conv2d(x(0), batch, src, c, &p(c.weight), c.bias.map(p).as_deref()).0,
            Op::BatchNorm(b) => {
                let (g, beta, m, v) = (p(b.weight), p(b.bias), p(b.mean), p(b.var));
                let ch = |i: usize| i / hw % b.ch;
                x(0).iter().enumerate().map(|(i, &t)| (t - m[ch(i)]) / (v[ch(i)] + b.eps as f64).sqrt() * g[ch(i)] + beta[ch(i)]).collect()
            }
            Op::Act(k) => x(0).iter().map(|&t| act(*k, t)).collect(),
            Op::GlobalAvgPool => x(0).chunks(hw).map(|c| c.iter().sum::<f64>() / hw as f64).collect(),
            Op::Mul => x(0).iter().enumerate().map(|(i, &t)| t * x(1)[i / hw]).collect(),
            Op::Add => x(0).iter().zip(x(1)).map(|(a, b)| a + b).collect(),
            Op::DropPath { .. } | Op::Dropout { .. } => x(0).clone(),
            Op::Linear(l) => {
                let (w, b) = (p(l.weight), p(l.bias));
                let (fi, fo) = (l.in_features, l.out_features);
                let dot = |n: usize, o: usize| b[o] + (0..fi).map(|i| w[o * fi + i] * x(0)[n * fi + i]).sum::<f64>();
                (0..batch * fo).map(|j| dot(j / fo, j % fo)).collect()
            }
        };
        vals.push(y);
    }
    let s = graph.output_shape();
    let data = vals.swap_remove(graph.output).into_iter().map(|v| v as f32).collect();
    let shape = if s.h == 1 && s.w == 1 { vec![batch, s.c] } else { vec![batch, s.c, s.h, s.w] };
    Tensor::new(shape, data).map_err(|e| EngineError::Internal(e.to_string()))
}

fn act(k: ActKind, x: f64) -> f64 {
    match k {
        ActKind::Silu => x / (1.0 + (-x).exp()),
        ActKind::Relu6 => x.clamp(0.0, 6.0),
        ActKind::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// Random weights for every parameter of `graph`, scaled so activations stay O(1) through a deep
/// network (He-uniform convs, BN statistics near identity with positive variances).
pub fn random_weights(graph: &Graph, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    let mut w = Weights::new();
    for p in &graph.params {
        let fan_in = p.shape.iter().skip(1).product::<usize>().max(1) as f32;
        let (lo, hi) = match p.role {
            Role::ConvWeight | Role::LinearWeight => (-(6.0 / fan_in).sqrt(), (6.0 / fan_in).sqrt()),
            Role::Bias | Role::BnBias | Role::BnMean => (-0.1, 0.1),
            Role::BnWeight | Role::BnVar => (0.5, 1.5),
        };
        w.insert(p.name.clone(), rng.uniform_tensor(p.shape.clone(), lo, hi));
    }
    w
}
