//! Batch-norm folding: every inference BN that directly follows a conv becomes part of that conv's
//! weight and bias, so engines only ever run conv + bias.

use std::collections::HashMap;

use super::ir::*;
use crate::tensor::Tensor;
use crate::weights::{Weights, WeightsError};

#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("cannot fold batch norm {node:?}: {reason}")]
    Unfoldable { node: String, reason: String },
    #[error("malformed graph at node {node:?}: {reason}")]
    Malformed { node: String, reason: String },
}

/// Fold every `Conv → BatchNorm` pair (the conv's output read by the BN alone) into the conv.
/// Returns the rewritten graph (renumbered nodes, only the params it reads) and its weights.
/// New biases are named `{conv node}.bias`. The arithmetic runs in f64.
pub fn fold_batchnorm(graph: &Graph, weights: &Weights) -> Result<(Graph, Weights), FoldError> {
    weights.check(graph)?;
    fold_checked(graph, weights)
}

/// [`fold_batchnorm`] for weights already checked against `graph`.
pub(crate) fn fold_checked(graph: &Graph, weights: &Weights) -> Result<(Graph, Weights), FoldError> {
    let malformed = |node: &Node, reason: String| FoldError::Malformed { node: node.name.clone(), reason };
    for (i, node) in graph.nodes.iter().enumerate() {
        if let Some(&bad) = node.inputs.iter().find(|&&v| v >= i) {
            return Err(malformed(node, format!("reads value {bad}, which is not computed before it")));
        }
        if let Some(p) = node.op.params().into_iter().find(|&p| p >= graph.params.len()) {
            return Err(malformed(node, format!("names parameter #{p}, but the graph has {}", graph.params.len())));
        }
    }
    if graph.output >= graph.nodes.len() {
        return Err(FoldError::Malformed { node: "<output>".into(), reason: format!("output #{} does not exist", graph.output) });
    }
    let bn_of = pair_up(graph)?;
    let mut out = Rewrite { graph, weights, params: vec![], tensors: Weights::new(), interned: HashMap::new() };
    let mut nodes: Vec<Node> = Vec::with_capacity(graph.nodes.len());
    let mut remap = vec![0; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let op = match (&node.op, bn_of[i]) {
            (Op::BatchNorm(_), _) => {
                // Folded into its conv, emitted earlier (pair_up rejects every other BN).
                remap[i] = remap[node.inputs[0]];
                continue;
            }
            (Op::Conv(c), Some((b, bn))) => out.folded_conv(node, c, &graph.nodes[b].name, bn)?,
            (op, _) => map_params(op, |p| out.intern(p))?,
        };
        let inputs = node.inputs.iter().map(|&v| remap[v]).collect();
        nodes.push(Node { name: node.name.clone(), op, inputs, shape: node.shape, scope: node.scope });
        remap[i] = nodes.len() - 1;
    }
    let folded = Graph { nodes, params: out.params, output: remap[graph.output] };
    Ok((folded, out.tensors))
}

/// For each conv, the BN it absorbs; an error for any BN that cannot be folded.
fn pair_up(graph: &Graph) -> Result<Vec<Option<(usize, &BatchNorm)>>, FoldError> {
    let uses = graph.use_counts();
    let mut param_readers = vec![0usize; graph.params.len()];
    for n in &graph.nodes {
        for p in n.op.params() {
            param_readers[p] += 1;
        }
    }
    let mut bn_of = vec![None; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let Op::BatchNorm(bn) = &node.op else { continue };
        let fail = |reason: &str| Err(FoldError::Unfoldable { node: node.name.clone(), reason: reason.into() });
        let &[src] = node.inputs.as_slice() else { return fail("it does not have exactly one input") };
        let Op::Conv(c) = &graph.nodes[src].op else { return fail("its input is not a conv") };
        if uses[src] != 1 {
            return fail("the conv before it has other readers");
        }
        if c.out_ch != bn.ch {
            return fail("its channel count differs from the conv's");
        }
        if param_readers[c.weight] != 1 || c.bias.is_some_and(|b| param_readers[b] != 1) {
            return fail("the conv shares its parameters with another node");
        }
        bn_of[src] = Some((i, bn));
    }
    Ok(bn_of)
}

struct Rewrite<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    params: Vec<Param>,
    tensors: Weights,
    /// Old param id → new, so shared params stay shared.
    interned: HashMap<ParamId, ParamId>,
}

impl Rewrite<'_> {
    fn intern(&mut self, old: ParamId) -> Result<ParamId, FoldError> {
        if let Some(&new) = self.interned.get(&old) {
            return Ok(new);
        }
        let p = &self.graph.params[old];
        let t = self.weights.get(&p.name)?.clone();
        let new = self.push(p.clone(), t);
        self.interned.insert(old, new);
        Ok(new)
    }

    fn push(&mut self, p: Param, t: Tensor) -> ParamId {
        self.tensors.insert(p.name.clone(), t);
        self.params.push(p);
        self.params.len() - 1
    }

    /// `w' = w·s`, `b' = (b - mean)·s + beta` with `s = gamma / sqrt(var + eps)`, per output channel.
    fn folded_conv(&mut self, conv_node: &Node, c: &Conv, bn_name: &str, bn: &BatchNorm) -> Result<Op, FoldError> {
        let fail = |reason: String| FoldError::Unfoldable { node: bn_name.to_string(), reason };
        let get = |id: ParamId| self.weights.get(&self.graph.params[id].name);
        let w = get(c.weight)?;
        let (gamma, beta, mean, var) = (get(bn.weight)?.data(), get(bn.bias)?.data(), get(bn.mean)?.data(), get(bn.var)?.data());
        let out = c.out_ch;
        if out == 0 || w.shape().first() != Some(&out) || [gamma, beta, mean, var].iter().any(|t| t.len() != out) {
            return Err(fail(format!("its parameters or the conv weight do not have {out} channels")));
        }
        let bias_name = match c.bias {
            Some(b) => self.graph.params[b].name.clone(),
            None => format!("{}.bias", conv_node.name),
        };
        if c.bias.is_none() && self.graph.param(&bias_name).is_some() {
            return Err(fail(format!("the new bias name {bias_name:?} is already taken")));
        }
        let old_bias = match c.bias {
            Some(b) => Some(get(b)?.data()),
            None => None,
        };
        let per_out = w.numel() / out;
        let mut wf = Vec::with_capacity(w.numel());
        let mut bf = Vec::with_capacity(out);
        for o in 0..out {
            let s = gamma[o] as f64 / (var[o] as f64 + bn.eps as f64).sqrt();
            let b = old_bias.map_or(0.0, |b| b[o] as f64);
            let folded_b = (b - mean[o] as f64) * s + beta[o] as f64;
            if !s.is_finite() || !folded_b.is_finite() {
                return Err(fail(format!("channel {o} folds to a non-finite value (running_var + eps must be positive)")));
            }
            wf.extend(w.data()[o * per_out..(o + 1) * per_out].iter().map(|&v| (v as f64 * s) as f32));
            bf.push(folded_b as f32);
        }
        let wt = Tensor::new(w.shape().to_vec(), wf).map_err(|e| fail(e.to_string()))?;
        let bt = Tensor::new(vec![out], bf).map_err(|e| fail(e.to_string()))?;
        let weight = self.push(self.graph.params[c.weight].clone(), wt);
        let bias = Some(self.push(Param { name: bias_name, shape: vec![out], role: Role::Bias }, bt));
        Ok(Op::Conv(Conv { weight, bias, ..c.clone() }))
    }
}

/// The op with each parameter id replaced by `f(id)`.
fn map_params(op: &Op, mut f: impl FnMut(ParamId) -> Result<ParamId, FoldError>) -> Result<Op, FoldError> {
    let mut op = op.clone();
    for p in op.params_mut() {
        *p = f(*p)?;
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{naive, CpuEngine};
    use crate::graph::build;
    use crate::spec::{ModelOptions, ModelSpec};

    fn small_b0() -> Graph {
        let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() };
        build(&ModelSpec::from_name("b0", o).unwrap(), 32, 32).unwrap()
    }

    #[test]
    fn folds_every_bn_and_keeps_the_function() {
        let g = small_b0();
        let w = naive::random_weights(&g, 11);
        let (f, fw) = fold_batchnorm(&g, &w).unwrap();
        fw.check(&f).unwrap();
        assert!(f.nodes.iter().all(|n| !matches!(n.op, Op::BatchNorm(_))));
        let bns = g.nodes.iter().filter(|n| matches!(n.op, Op::BatchNorm(_))).count();
        assert_eq!(f.nodes.len(), g.nodes.len() - bns);
        assert!(f.params.iter().all(|p| !p.name.contains(".bn.")));
        for n in &f.nodes {
            if let Op::Conv(c) = &n.op {
                let bias = &f.params[c.bias.expect("every conv has a bias after folding")];
                assert_eq!(bias.role, Role::Bias);
                assert!(bias.name == format!("{}.bias", n.name), "{} for {}", bias.name, n.name);
            }
            assert!(n.inputs.iter().all(|&v| f.nodes[v].shape.c > 0));
        }
        assert_eq!(f.output_shape(), g.output_shape());
        let x = crate::rng::Rng::new(12).uniform_tensor(vec![2, 3, 32, 32], -1.0, 1.0);
        let want = naive::run(&g, &w, &x).unwrap();
        let rel = |t: &Tensor| t.max_abs_diff(&want).unwrap() / want.max_abs();
        // The fold alone (f64 reference on both sides): only the f32 rounding of folded weights.
        assert!(rel(&naive::run(&f, &fw, &x).unwrap()) < 1e-6);
        // The fast engine on the folded graph.
        assert!(rel(&CpuEngine::new(&g, &w).unwrap().run(&x).unwrap()) < 1e-5);
    }

    /// input → conv (bias) → bn → act, with the conv also read by `extra_reader` when set.
    fn tiny(extra_reader: bool) -> (Graph, Weights) {
        let node = |name: &str, op, inputs: Vec<usize>| Node { name: name.into(), op, inputs, shape: Shape::new(2, 3, 3), scope: Scope::Stem };
        let p = |name: &str, shape: Vec<usize>, role| Param { name: name.into(), shape, role };
        let conv = Conv { in_ch: 2, out_ch: 2, kernel: 1, stride: 1, groups: 1, pads: Pads::default(), weight: 0, bias: Some(1) };
        let bn = BatchNorm { ch: 2, eps: 1e-3, weight: 2, bias: 3, mean: 4, var: 5 };
        let mut nodes = vec![node("in", Op::Input, vec![]), node("c", Op::Conv(conv), vec![0]), node("c.bn", Op::BatchNorm(bn), vec![1])];
        nodes.push(node("a", Op::Act(ActKind::Relu6), vec![2]));
        if extra_reader {
            nodes.push(node("sum", Op::Add, vec![1, 3]));
        }
        let params = vec![
            p("c.w", vec![2, 2, 1, 1], Role::ConvWeight),
            p("c.b", vec![2], Role::Bias),
            p("bn.g", vec![2], Role::BnWeight),
            p("bn.b", vec![2], Role::BnBias),
            p("bn.m", vec![2], Role::BnMean),
            p("bn.v", vec![2], Role::BnVar),
        ];
        let g = Graph { output: nodes.len() - 1, nodes, params };
        let w = naive::random_weights(&g, 4);
        (g, w)
    }

    #[test]
    fn an_existing_bias_is_folded_under_its_own_name() {
        let (g, w) = tiny(false);
        let (f, fw) = fold_batchnorm(&g, &w).unwrap();
        let names: Vec<&str> = f.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["c.w", "c.b"]);
        assert_eq!(f.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["in", "c", "a"]);
        assert_eq!((f.output, f.nodes[2].inputs.as_slice()), (2, &[1][..]));
        let x = crate::rng::Rng::new(1).uniform_tensor(vec![1, 2, 3, 3], -1.0, 1.0);
        let (a, b) = (naive::run(&g, &w, &x).unwrap(), naive::run(&f, &fw, &x).unwrap());
        assert!(a.max_abs_diff(&b).unwrap() <= 1e-6 * a.max_abs());
    }

    #[test]
    fn a_bn_that_cannot_fold_is_an_error_naming_it() {
        let (g, w) = tiny(true);
        let err = fold_batchnorm(&g, &w).unwrap_err();
        assert!(matches!(&err, FoldError::Unfoldable { node, .. } if node == "c.bn"), "{err}");
        let (mut g, mut w) = tiny(false);
        g.nodes[2].inputs = vec![0]; // BN straight on the input
        assert!(matches!(fold_batchnorm(&g, &w), Err(FoldError::Unfoldable { node, .. }) if node == "c.bn"));
        g.nodes[2].inputs = vec![1];
        w.insert("bn.v", Tensor::new(vec![2], vec![-1.0, 1.0]).unwrap());
        let err = fold_batchnorm(&g, &w).unwrap_err().to_string();
        assert!(err.contains("c.bn") && err.contains("channel 0"), "{err}");
    }
}
