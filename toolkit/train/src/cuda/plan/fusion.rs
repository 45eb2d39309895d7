//! Which nodes the launch lists fuse: patterns found in the graph (a BN and the activation that
//! alone reads it, a drop-path its residual Add alone reads, ...), one vector per pattern, indexed
//! by node, as [`TrainLayout`](super::TrainLayout) keeps them.

use effv2_edge::graph::{Graph, Op};

use super::act_code;

/// Per node: for a BN whose output only an activation reads (and that is not the graph's
/// output), that activation's node and code ([`TrainLayout::fused_act`](super::TrainLayout::fused_act)).
pub(super) fn fused_activations(graph: &Graph) -> Vec<Option<(usize, i32)>> {
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

/// [`TrainLayout::mask_into_add`](super::TrainLayout::mask_into_add): per node, the residual Add that is the only reader of this
/// drop-path / dropout output (the first such mask of each Add).
pub(super) fn masks_into_adds(graph: &Graph) -> Vec<Option<usize>> {
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

/// [`TrainLayout::grad_of_add`](super::TrainLayout::grad_of_add): per node, the residual Add that is its last reader and hands it
/// its gradient unchanged (an input other than the Add's mask, read by nothing after the Add; the
/// first such input of each Add).
pub(super) fn skips_of_adds(graph: &Graph, into_add: &[Option<usize>]) -> Vec<Option<usize>> {
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

/// [`TrainLayout::bn_into_add`](super::TrainLayout::bn_into_add): per BN without a fused activation whose only reader is a
/// two-input Add, or a drop-path (one mask per sample) that Add alone reads and applies.
pub(super) fn bns_into_adds(graph: &Graph, fused_act: &[Option<(usize, i32)>], into_add: &[Option<usize>]) -> Vec<Option<usize>> {
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

/// [`TrainLayout::se_mul_of_pool`](super::TrainLayout::se_mul_of_pool): per global-average pool whose input has exactly two readers,
/// the pool and a multiply by a gate (its second input, another node), that multiply.
pub(super) fn se_multiplies(graph: &Graph) -> Vec<Option<usize>> {
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
