//! Data-dependent BN statistics: each BN's running mean/var become the statistics its input has on
//! a calibration batch, in execution order — what a trained network's BN holds. A freshly
//! initialised network then keeps activations O(1) instead of growing block after block, which
//! makes it numerically well-conditioned for cross-runtime checks and int8 calibration demos.

use super::store::Weights;
use crate::engine::{CpuEngine, EngineError};
use crate::graph::{Graph, Op, ValueId};
use crate::tensor::Tensor;

/// Calibrate every BN of `graph` on `input` (`[N, C, H, W]`), segment by segment with the fast
/// engine (about as costly as four forward passes).
pub fn calibrate_batchnorm(graph: &Graph, weights: &Weights, input: &Tensor) -> Result<Weights, EngineError> {
    weights.check(graph)?;
    let mut w = weights.clone();
    let mut x = input.clone();
    let cuts = cut_points(graph);
    for seg in cuts.windows(2) {
        let (from, to) = (seg[0], seg[1]);
        for bn_node in from + 1..=to {
            let Op::BatchNorm(bn) = &graph.nodes[bn_node].op else { continue };
            let pre = run_piece(graph, &w, from, graph.nodes[bn_node].inputs[0], &x)?;
            let (mean, var) = channel_stats(&pre, bn.ch);
            w.insert(graph.params[bn.mean].name.clone(), Tensor::new(vec![bn.ch], mean).expect("bn.ch values"));
            w.insert(graph.params[bn.var].name.clone(), Tensor::new(vec![bn.ch], var).expect("bn.ch values"));
        }
        x = run_piece(graph, &w, from, to, &x)?;
    }
    Ok(w)
}

/// Values after which nothing reads an earlier value: the graph can be cut there. Conv outputs are
/// skipped so a conv always stays with the BN it feeds (the engine folds them together).
fn cut_points(graph: &Graph) -> Vec<ValueId> {
    let n = graph.nodes.len();
    let mut earliest_read_after = vec![usize::MAX; n + 1];
    for i in (0..n).rev() {
        let here = graph.nodes[i].inputs.iter().copied().min().unwrap_or(usize::MAX);
        earliest_read_after[i] = earliest_read_after[i + 1].min(here);
    }
    let mut cuts: Vec<ValueId> =
        (0..n).filter(|&i| earliest_read_after[i + 1] >= i && !matches!(graph.nodes[i].op, Op::Conv(_))).collect();
    if cuts.last() != Some(&graph.output) {
        cuts.push(graph.output);
    }
    cuts
}

/// Run the piece of `graph` from value `from` (holding `x`) to value `to`; the result as NCHW.
fn run_piece(graph: &Graph, w: &Weights, from: ValueId, to: ValueId, x: &Tensor) -> Result<Tensor, EngineError> {
    if from == to {
        return Ok(x.clone());
    }
    let piece = graph.cut(from, to).map_err(|e| EngineError::Internal(e.to_string()))?;
    let mut pw = Weights::new();
    for p in &piece.params {
        pw.insert(p.name.clone(), w.get(&p.name)?.clone());
    }
    let y = CpuEngine::new(&piece, &pw)?.run(x)?;
    let s = piece.output_shape();
    let n = x.shape()[0];
    Tensor::new(vec![n, s.c, s.h, s.w], y.into_data()).map_err(|e| EngineError::Internal(e.to_string()))
}

/// Per-channel mean and (biased) variance of an NCHW tensor.
fn channel_stats(t: &Tensor, c: usize) -> (Vec<f32>, Vec<f32>) {
    let (n, hw) = (t.shape()[0], t.shape()[2] * t.shape()[3]);
    let count = (n * hw) as f64;
    let mut mean = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for (i, chunk) in t.data().chunks_exact(hw).enumerate() {
        let ch = i % c;
        for &v in chunk {
            mean[ch] += v as f64;
            sq[ch] += (v as f64) * (v as f64);
        }
    }
    let var = mean.iter().zip(&sq).map(|(m, s)| ((s / count) - (m / count).powi(2)).max(0.0) as f32).collect();
    (mean.iter().map(|m| (m / count) as f32).collect(), var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build;
    use crate::rng::Rng;
    use crate::spec::{ModelOptions, ModelSpec};
    use crate::weights::init_weights;

    #[test]
    fn calibrated_network_normalises_every_bn_and_keeps_logits_small() {
        let spec = ModelSpec::from_name("b0", ModelOptions { width: Some(0.5), depth: Some(0.5), ..Default::default() }).unwrap();
        let g = build(&spec, 64, 64).unwrap();
        let w0 = init_weights(&g, 5);
        let x = Rng::new(1).normal_tensor(vec![2, 3, 64, 64]);
        let w = calibrate_batchnorm(&g, &w0, &x).unwrap();
        // Re-measuring a calibrated BN's input gives back its stored statistics.
        let cuts = cut_points(&g);
        let bn_node = g.nodes.iter().rposition(|n| matches!(n.op, Op::BatchNorm(_))).unwrap();
        let Op::BatchNorm(bn) = &g.nodes[bn_node].op else { unreachable!() };
        let pre = run_piece(&g, &w, 0, g.nodes[bn_node].inputs[0], &x).unwrap();
        let (mean, var) = channel_stats(&pre, bn.ch);
        let stored = w.get(&g.params[bn.var].name).unwrap().data();
        assert!(var.iter().zip(stored).all(|(a, b)| (a - b).abs() <= 1e-3 * b.max(1e-3)));
        assert!(mean.iter().zip(w.get(&g.params[bn.mean].name).unwrap().data()).all(|(a, b)| (a - b).abs() < 1e-3));
        assert!(cuts.len() > 5, "{cuts:?}");
        let logits = CpuEngine::new(&g, &w).unwrap().run(&x).unwrap();
        assert!(logits.max_abs() < 50.0, "{}", logits.max_abs());
    }
}
