//! The CUDA backend's `plan.json` + `weights.bin`, written from the BN-folded graph: one step per
//! graph op, each conv's activation fused into it when the activation is the conv's only reader,
//! inference-time identities (drop path, dropout) removed.

use effv2_edge::graph::{fold_batchnorm, ActKind, FoldError, Graph, Op};
use effv2_edge::weights::Weights;
use effv2_runtime::plan::{Act, NetPlan, Step, PLAN_FORMAT};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("node {node:?}: {why}")]
    Node { node: String, why: String },
}

fn act_of(k: ActKind) -> Act {
    match k {
        ActKind::Silu => Act::Silu,
        ActKind::Relu6 => Act::Relu6,
        ActKind::Sigmoid => Act::Sigmoid,
    }
}

/// The plan and its weights (f32, in step order) for `graph` with `weights`.
pub fn cuda_plan(graph: &Graph, weights: &Weights) -> Result<(NetPlan, Vec<f32>), PlanError> {
    let (g, w) = fold_batchnorm(graph, weights)?;
    let uses = g.use_counts();
    let readers = g.readers();
    let mut value_of = vec![usize::MAX; g.nodes.len()];
    let mut fused_into = vec![None; g.nodes.len()];
    let mut steps = vec![];
    let mut data: Vec<f32> = vec![];
    let s = g.input_shape();
    for (i, node) in g.nodes.iter().enumerate() {
        let fail = |why: &str| PlanError::Node { node: node.name.clone(), why: why.into() };
        let x = node.inputs.first().map(|&v| value_of[v]);
        let mut push_params = |ids: &[usize]| -> Result<Vec<usize>, PlanError> {
            ids.iter()
                .map(|&p| {
                    let t = w.get(&g.params[p].name).map_err(|e| fail(&e.to_string()))?;
                    data.extend_from_slice(t.data());
                    Ok(data.len() - t.numel())
                })
                .collect()
        };
        let step = match &node.op {
            Op::Input => {
                value_of[i] = 0;
                continue;
            }
            Op::Dropout { .. } | Op::DropPath { .. } => {
                value_of[i] = x.ok_or_else(|| fail("has no input"))?;
                continue;
            }
            Op::Act(_) if fused_into[i].is_some() => {
                value_of[i] = value_of[fused_into[i].unwrap()];
                continue;
            }
            Op::Conv(c) => {
                let bias = c.bias.ok_or_else(|| fail("conv without a bias after BN folding"))?;
                let at = push_params(&[c.weight, bias])?;
                // Fuse the activation that alone reads this conv.
                let act = match readers[i].as_slice() {
                    &[r] if uses[i] == 1 => match g.nodes[r].op {
                        Op::Act(k) => {
                            fused_into[r] = Some(i);
                            act_of(k)
                        }
                        _ => Act::None,
                    },
                    _ => Act::None,
                };
                let [t, l, b, r] = [c.pads.top, c.pads.left, c.pads.bottom, c.pads.right];
                Step::Conv { x: x.unwrap(), out_ch: c.out_ch, kernel: c.kernel, stride: c.stride, groups: c.groups, pads: [t, l, b, r], weight: at[0], bias: at[1], act }
            }
            Op::Linear(l) => {
                let at = push_params(&[l.weight, l.bias])?;
                Step::Conv { x: x.unwrap(), out_ch: l.out_features, kernel: 1, stride: 1, groups: 1, pads: [0; 4], weight: at[0], bias: at[1], act: Act::None }
            }
            Op::Act(k) => Step::Act { x: x.unwrap(), act: act_of(*k) },
            Op::GlobalAvgPool => Step::Pool { x: x.unwrap() },
            Op::Mul => Step::Mul { x: value_of[node.inputs[0]], gate: value_of[node.inputs[1]] },
            Op::Add => Step::Add { a: value_of[node.inputs[0]], b: value_of[node.inputs[1]] },
            Op::BatchNorm(_) => return Err(fail("batch norm left after folding")),
        };
        steps.push(step);
        value_of[i] = steps.len();
    }
    let plan = NetPlan { format: PLAN_FORMAT, input: [s.c, s.h, s.w], steps, output: value_of[g.output], weights_len: data.len() };
    // Our own writer must produce a plan the runtime accepts.
    plan.shapes().map_err(|why| PlanError::Node { node: "<plan>".into(), why })?;
    Ok((plan, data))
}

/// `weights.bin` bytes.
pub fn weights_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use effv2_edge::engine::naive;
    use effv2_edge::graph::build;
    use effv2_edge::spec::{ModelOptions, ModelSpec};

    #[test]
    fn every_value_shape_matches_the_graph_and_acts_fuse_into_convs() {
        let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 7, ..Default::default() };
        let g = build(&ModelSpec::from_name("b0", o).unwrap(), 32, 32).unwrap();
        let w = naive::random_weights(&g, 3);
        let (plan, data) = cuda_plan(&g, &w).unwrap();
        assert_eq!(plan.weights_len, data.len());
        let shapes = plan.shapes().unwrap();
        assert_eq!(shapes[plan.output], [7, 1, 1]);
        let convs = g.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_) | Op::Linear(_))).count();
        assert_eq!(plan.steps.iter().filter(|s| matches!(s, Step::Conv { .. })).count(), convs);
        // Every SiLU follows a conv alone here; the SE gates' sigmoids too.
        assert!(plan.steps.iter().all(|s| !matches!(s, Step::Act { .. })));
        let (folded, _) = fold_batchnorm(&g, &w).unwrap();
        assert_eq!(data.len(), folded.params.iter().map(|p| p.numel()).sum::<usize>());
    }
}
