//! Hand-built graphs and a finite-difference checker for the training engine's gradients.
#![allow(dead_code)]

use effv2_edge::engine::naive::random_weights;
use effv2_edge::graph::*;
use effv2_edge::rng::Rng;
use effv2_edge::spec::Padding;
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::{Mode, TrainEngine};

pub struct B {
    pub g: Graph,
}

impl B {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        let mut b = B { g: Graph { nodes: vec![], params: vec![], output: 0 } };
        b.node(Op::Input, vec![], Shape::new(c, h, w));
        b
    }
    fn node(&mut self, op: Op, inputs: Vec<ValueId>, shape: Shape) -> ValueId {
        let name = format!("n{}", self.g.nodes.len());
        self.g.nodes.push(Node { name, op, inputs, shape, scope: Scope::Stem });
        self.g.output = self.g.nodes.len() - 1;
        self.g.output
    }
    fn param(&mut self, shape: Vec<usize>, role: Role) -> ParamId {
        self.g.params.push(Param { name: format!("p{}", self.g.params.len()), shape, role });
        self.g.params.len() - 1
    }
    pub fn shape(&self, v: ValueId) -> Shape {
        self.g.nodes[v].shape
    }
    #[allow(clippy::too_many_arguments)]
    pub fn conv(&mut self, x: ValueId, out_ch: usize, k: usize, stride: usize, depthwise: bool, pad: Padding, bias: bool) -> ValueId {
        let s = self.shape(x);
        let (top, bottom, oh) = conv_geometry(pad, s.h, k, stride);
        let (left, right, ow) = conv_geometry(pad, s.w, k, stride);
        let groups = if depthwise { s.c } else { 1 };
        let weight = self.param(vec![out_ch, s.c / groups, k, k], Role::ConvWeight);
        let bias = bias.then(|| self.param(vec![out_ch], Role::Bias));
        let c = Conv { in_ch: s.c, out_ch, kernel: k, stride, groups, pads: Pads { top, left, bottom, right }, weight, bias };
        self.node(Op::Conv(c), vec![x], Shape::new(out_ch, oh, ow))
    }
    pub fn bn(&mut self, x: ValueId) -> ValueId {
        let s = self.shape(x);
        let bn = BatchNorm {
            ch: s.c,
            eps: 1e-3,
            weight: self.param(vec![s.c], Role::BnWeight),
            bias: self.param(vec![s.c], Role::BnBias),
            mean: self.param(vec![s.c], Role::BnMean),
            var: self.param(vec![s.c], Role::BnVar),
        };
        self.node(Op::BatchNorm(bn), vec![x], s)
    }
    pub fn op(&mut self, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let s = self.shape(inputs[0]);
        let shape = if op == Op::GlobalAvgPool { Shape::new(s.c, 1, 1) } else { s };
        self.node(op, inputs, shape)
    }
    pub fn linear(&mut self, x: ValueId, out: usize) -> ValueId {
        let fin = self.shape(x).c;
        let l = Linear { in_features: fin, out_features: out, weight: self.param(vec![out, fin], Role::LinearWeight), bias: self.param(vec![out], Role::Bias) };
        self.node(Op::Linear(l), vec![x], Shape::new(out, 1, 1))
    }
}

fn trainer(g: &Graph, w: &effv2_edge::weights::Weights) -> CpuTrainer {
    let mut t = CpuTrainer::new(g, w, TrainerConfig { ema: false, ..Default::default() }).unwrap();
    t.want_input_grad = true;
    t
}

/// `Σ y·r` in f64 for a training-mode forward with a fixed mask seed.
fn projected(g: &Graph, w: &effv2_edge::weights::Weights, x: &[f32], batch: usize, r: &[f32]) -> f64 {
    let y = trainer(g, w).forward(x, batch, Mode::Train, 11).unwrap();
    y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Compare analytic gradients of the input and every trainable parameter with central
/// differences at `probes` random coordinates each. `skip(v)` excludes input values near kinks.
pub fn gradcheck(g: &Graph, batch: usize, seed: u64, probes: usize, skip: impl Fn(f32) -> bool) {
    gradcheck_eps(g, batch, seed, probes, skip, 1e-2)
}

pub fn gradcheck_eps(g: &Graph, batch: usize, seed: u64, probes: usize, skip: impl Fn(f32) -> bool, eps: f32) {
    let mut rng = Rng::new(seed);
    let mut w = random_weights(g, seed);
    let s = g.input_shape();
    let x: Vec<f32> = (0..batch * s.numel()).map(|_| rng.normal() as f32 * 1.5).collect();
    let o = g.output_shape();
    let r: Vec<f32> = (0..batch * o.numel()).map(|_| rng.normal() as f32).collect();
    let mut t = trainer(g, &w);
    t.forward(&x, batch, Mode::Train, 11).unwrap();
    t.backward(&r).unwrap();
    let (dx, grads) = (t.input_grad().to_vec(), t.grads());
    let check = |what: &str, an: f32, fd: f64, scale: f32| {
        let tol = 2e-2 * an.abs().max(fd.abs() as f32) + 2e-3 * scale.max(1e-2);
        assert!((an as f64 - fd).abs() <= tol as f64, "{what}: analytic {an} vs finite difference {fd}");
    };
    let scale = dx.iter().fold(0f32, |m, v| m.max(v.abs()));
    for _ in 0..probes {
        let i = rng.below(x.len());
        if skip(x[i]) {
            continue;
        }
        let (mut a, mut b) = (x.clone(), x.clone());
        a[i] += eps;
        b[i] -= eps;
        let fd = (projected(g, &w, &a, batch, &r) - projected(g, &w, &b, batch, &r)) / (2.0 * eps as f64);
        check(&format!("input[{i}]"), dx[i], fd, scale);
    }
    for p in g.params.iter().filter(|p| p.role.is_trainable()) {
        let an = grads.get(&p.name).unwrap().data().to_vec();
        let scale = an.iter().fold(0f32, |m, v| m.max(v.abs()));
        for _ in 0..probes.min(an.len()) {
            let i = rng.below(an.len());
            let orig = w.get(&p.name).unwrap().clone();
            let mut eval = |d: f32| {
                let mut t = orig.clone();
                t.data_mut()[i] += d;
                w.insert(p.name.clone(), t);
                projected(g, &w, &x, batch, &r)
            };
            let fd = (eval(eps) - eval(-eps)) / (2.0 * eps as f64);
            w.insert(p.name.clone(), orig);
            check(&format!("{}[{i}] ({:?})", p.name, p.role), an[i], fd, scale);
        }
    }
}

/// Directional check for deep graphs, where single coordinates drown in f32 noise: for the input
/// and each trainable tensor, `(L(θ+εv) − L(θ−εv))/2ε` against `∇L·v` for a random direction `v`.
pub fn gradcheck_directional(g: &Graph, batch: usize, seed: u64, eps: f32, rtol: f64) {
    let mut rng = Rng::new(seed);
    let mut w = random_weights(g, seed);
    let s = g.input_shape();
    let x: Vec<f32> = (0..batch * s.numel()).map(|_| rng.normal() as f32).collect();
    let r: Vec<f32> = (0..batch * g.output_shape().numel()).map(|_| rng.normal() as f32).collect();
    let mut t = trainer(g, &w);
    t.forward(&x, batch, Mode::Train, 11).unwrap();
    t.backward(&r).unwrap();
    let (dx, grads) = (t.input_grad().to_vec(), t.grads());
    // f32 rounding of the forward, seen through the difference quotient.
    let y = trainer(g, &w).forward(&x, batch, Mode::Train, 11).unwrap();
    let noise = 1e-6 * y.iter().zip(&r).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>() / eps as f64;
    let compare = |what: &str, an: f64, fd: f64, scale: f64| {
        assert!((an - fd).abs() <= rtol * an.abs().max(fd.abs()) + 1e-4 * scale + noise, "{what}: analytic {an} vs finite difference {fd} (noise {noise})");
    };
    // Richardson: (4·D(ε/2) − D(ε))/3 cancels the O(ε²) term of the central difference.
    let richardson = |f: &mut dyn FnMut(f32) -> f64| {
        let d = |f: &mut dyn FnMut(f32) -> f64, e: f32| (f(e) - f(-e)) / (2.0 * e as f64);
        let (a, b) = (d(f, eps), d(f, eps / 2.0));
        (4.0 * b - a) / 3.0
    };
    let v: Vec<f32> = (0..x.len()).map(|_| rng.normal() as f32).collect();
    let shifted = |d: f32| x.iter().zip(&v).map(|(a, b)| a + d * b).collect::<Vec<f32>>();
    let fd = richardson(&mut |d| projected(g, &w, &shifted(d), batch, &r));
    let an: f64 = dx.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
    let norm = |a: &[f32], b: &[f32]| (a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() * b.iter().map(|v| (*v as f64).powi(2)).sum::<f64>()).sqrt();
    compare("input", an, fd, norm(&dx, &v));
    for p in g.params.iter().filter(|p| p.role.is_trainable()) {
        let gp = grads.get(&p.name).unwrap().data().to_vec();
        let v: Vec<f32> = (0..gp.len()).map(|_| rng.normal() as f32).collect();
        let orig = w.get(&p.name).unwrap().clone();
        let mut eval = |d: f32| {
            let mut t = orig.clone();
            t.data_mut().iter_mut().zip(&v).for_each(|(a, b)| *a += d * b);
            w.insert(p.name.clone(), t);
            projected(g, &w, &x, batch, &r)
        };
        let fd = richardson(&mut eval);
        w.insert(p.name.clone(), orig);
        let an: f64 = gp.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
        compare(&format!("{} ({:?})", p.name, p.role), an, fd, norm(&gp, &v));
    }
}
