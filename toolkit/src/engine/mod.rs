//! The f32 CPU reference engine: folds BN, packs weights for NHWC kernels (GEMM for 1×1 and
//! im2col'd k×k convs, a direct depthwise kernel), fuses conv → activation → residual add, and
//! runs on rayon's global pool.

mod check;
mod conv;
mod depthwise;
mod elementwise;
mod exec;
mod linear;
mod matmul;
pub mod naive;
mod plan;
mod pointwise;
mod pool;

use std::sync::Mutex;

use crate::graph::{fold_checked, FoldError, Graph, Shape, ValueId};
use crate::tensor::Tensor;
use crate::weights::{Weights, WeightsError};

/// Most values one activation of a batch may hold (8 GiB of f32): larger batches are refused
/// up front instead of failing inside an allocation.
pub const MAX_ACTIVATION_VALUES: usize = 1 << 31;
/// Activation buffers an engine keeps between runs.
const MAX_SPARE_BUFFERS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("input must be [N, {}, {}, {}] float32 (NCHW, N >= 1), got shape {got:?}", want.c, want.h, want.w)]
    InputShape { want: Shape, got: Vec<usize> },
    #[error("batch {batch} is too large: one activation would hold more than {MAX_ACTIVATION_VALUES} values")]
    TooLarge { batch: usize },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("node {node:?}: {op} is not supported by the CPU engine")]
    Unsupported { node: String, op: String },
    #[error("malformed graph at node {node:?}: {reason}")]
    Graph { node: String, reason: String },
    #[error("internal engine error (a bug): {0}")]
    Internal(String),
}

/// Time spent in one step of [`CpuEngine::run_profiled`].
#[derive(Clone, Debug, PartialEq)]
pub struct StepTime {
    /// The graph node the step starts at (a fused step also covers its activation and add).
    pub node: String,
    /// `pointwise`, `im2col`, `depthwise`, `act`, `pool`, `mul` or `add`.
    pub kernel: &'static str,
    pub seconds: f64,
}

/// How an engine plans its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Fuse each conv with the activation and residual add that directly follow it (the fast
    /// default). Off, every value of the folded graph is computed by a step of its own, so
    /// [`CpuEngine::run_observed`] sees them all (int8 calibration needs the pre-activation conv
    /// outputs that fusion never writes).
    pub fuse: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { fuse: true }
    }
}

/// A network prepared for repeated f32 inference. `Send + Sync`: share one across threads.
pub struct CpuEngine {
    graph: Graph,
    plan: plan::Plan,
    /// Activation buffers kept between runs; a concurrent run just starts with none.
    spare: Mutex<Vec<Vec<f32>>>,
}

impl CpuEngine {
    /// Checks the weights against `graph`, folds BN, packs the weights and fuses epilogues.
    pub fn new(graph: &Graph, weights: &Weights) -> Result<Self, EngineError> {
        Self::with_options(graph, weights, EngineOptions::default())
    }

    /// [`Self::new`] with explicit planning options.
    pub fn with_options(graph: &Graph, weights: &Weights, options: EngineOptions) -> Result<Self, EngineError> {
        weights.check(graph)?;
        let (graph, weights) = fold_checked(graph, weights)?;
        let plan = plan::build(&graph, &weights, options.fuse)?;
        Ok(CpuEngine { graph, plan, spare: Mutex::new(Vec::new()) })
    }

    /// `input`: `[N, C, H, W]` NCHW with `(C, H, W) == graph.input_shape()`. Returns `[N, classes]`
    /// when the output is `[C, 1, 1]` (the classifier), else the output as `[N, C, H, W]`.
    pub fn run(&self, input: &Tensor) -> Result<Tensor, EngineError> {
        self.run_inner(input, None, None)
    }

    /// [`Self::run`] that hands every value a step computes to `observe` as `(value, data)`, in
    /// execution order: `value` is a node of [`Self::graph`] (0 = the input), `data` its whole
    /// batch in NHWC order (`[N, H, W, C]`). Identity nodes (dropout, drop-path) are never
    /// reported: they share their input's value. With fusion on, values folded into a conv's
    /// epilogue are not reported either; build with `EngineOptions { fuse: false }` to see all.
    pub fn run_observed(&self, input: &Tensor, observe: &mut dyn FnMut(ValueId, &[f32])) -> Result<Tensor, EngineError> {
        self.run_inner(input, None, Some(observe))
    }

    /// [`Self::run`] that also reports the time of each step, in execution order.
    pub fn run_profiled(&self, input: &Tensor) -> Result<(Tensor, Vec<StepTime>), EngineError> {
        let mut secs = Vec::with_capacity(self.plan.steps.len());
        let out = self.run_inner(input, Some(&mut secs), None)?;
        let steps = self.plan.steps.iter().zip(secs);
        let times = steps.map(|(s, seconds)| StepTime { node: s.name.clone(), kernel: s.kernel_name(), seconds }).collect();
        Ok((out, times))
    }

    /// The folded graph this engine executes.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// `(node, kernel)` of each step in execution order: which fast path each conv takes.
    pub fn kernels(&self) -> Vec<(&str, &'static str)> {
        self.plan.steps.iter().map(|s| (s.name.as_str(), s.kernel_name())).collect()
    }

    fn run_inner(
        &self,
        input: &Tensor,
        times: Option<&mut Vec<f64>>,
        observe: Option<exec::Observer<'_>>,
    ) -> Result<Tensor, EngineError> {
        let want = self.graph.input_shape();
        let batch = match *input.shape() {
            [n, c, h, w] if n > 0 && Shape::new(c, h, w) == want => n,
            _ => return Err(EngineError::InputShape { want, got: input.shape().to_vec() }),
        };
        let largest = self.plan.shapes.iter().map(Shape::numel).max().unwrap_or(0);
        if largest.checked_mul(batch).is_none_or(|v| v > MAX_ACTIVATION_VALUES) {
            return Err(EngineError::TooLarge { batch });
        }
        let mut pool = exec::BufPool { free: self.spare.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default() };
        let mut x = pool.take(input.numel());
        transpose(input.data(), &mut x, batch, want.c, want.h * want.w);
        let out = exec::execute(&self.plan, x, batch, &mut pool, times, observe)?;
        let s = self.plan.shapes[self.plan.output];
        let result = if s.h == 1 && s.w == 1 {
            Tensor::new(vec![batch, s.c], out)
        } else {
            let mut nchw = vec![0.0; out.len()];
            transpose(&out, &mut nchw, batch, s.h * s.w, s.c);
            pool.give(out);
            Tensor::new(vec![batch, s.c, s.h, s.w], nchw)
        };
        // Keep the largest few: enough for the next run, bounded whatever the batch sizes.
        pool.free.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        pool.free.truncate(MAX_SPARE_BUFFERS);
        if let Ok(mut spare) = self.spare.lock() {
            *spare = pool.free;
        }
        result.map_err(|e| EngineError::Internal(e.to_string()))
    }
}

/// Per sample, `[a, b] -> [b, a]` (NCHW ↔ NHWC with a, b = C, H·W or H·W, C).
fn transpose(x: &[f32], out: &mut [f32], batch: usize, a: usize, b: usize) {
    for n in 0..batch {
        let (src, dst) = (&x[n * a * b..][..a * b], &mut out[n * a * b..][..a * b]);
        for i in 0..a {
            for j in 0..b {
                dst[j * a + i] = src[i * b + j];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{build, Op};
    use crate::rng::Rng;
    use crate::spec::{ModelOptions, ModelSpec};

    #[test]
    fn unfused_run_observes_every_value_once_and_agrees_with_the_fused_run() {
        let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() };
        let g = build(&ModelSpec::from_name("b0", o).unwrap(), 32, 32).unwrap();
        let w = naive::random_weights(&g, 3);
        let x = Rng::new(4).uniform_tensor(vec![2, 3, 32, 32], -1.0, 1.0);
        let fused = CpuEngine::new(&g, &w).unwrap();
        let plain = CpuEngine::with_options(&g, &w, EngineOptions { fuse: false }).unwrap();
        let fg = plain.graph();
        let (folded, fw) = crate::graph::fold_batchnorm(&g, &w).unwrap();
        assert_eq!(fg, &folded);
        let mut seen: Vec<Option<Vec<f32>>> = vec![None; fg.nodes.len()];
        let y = plain
            .run_observed(&x, &mut |v, data| {
                assert!(seen[v].is_none(), "value {v} reported twice");
                seen[v] = Some(data.to_vec());
            })
            .unwrap();
        for (i, n) in fg.nodes.iter().enumerate() {
            let identity = matches!(n.op, Op::DropPath { .. } | Op::Dropout { .. });
            assert_eq!(seen[i].is_some(), !identity, "{}", n.name);
            if let Some(d) = &seen[i] {
                assert_eq!(d.len(), 2 * n.shape.numel(), "{}", n.name);
            }
        }
        assert_eq!(seen[fg.output].as_deref(), Some(y.data()));
        let want = fused.run(&x).unwrap();
        assert!(y.max_abs_diff(&want).unwrap() <= 1e-5 * want.max_abs());
        // A value in the middle equals the engine run on the graph cut there (NHWC vs NCHW).
        let mid = fg.nodes.iter().rposition(|n| matches!(n.op, Op::Add)).unwrap();
        let piece = fg.cut(0, mid).unwrap();
        let mut pw = Weights::new();
        piece.params.iter().for_each(|p| pw.insert(p.name.clone(), fw.get(&p.name).unwrap().clone()));
        let direct = CpuEngine::new(&piece, &pw).unwrap().run(&x).unwrap();
        let s = fg.nodes[mid].shape;
        let got = seen[mid].as_ref().unwrap();
        for (i, want) in direct.data().iter().enumerate() {
            let (n, c, hw) = (i / (s.c * s.h * s.w), (i / (s.h * s.w)) % s.c, i % (s.h * s.w));
            assert!((got[(n * s.h * s.w + hw) * s.c + c] - want).abs() <= 1e-5, "element {i}");
        }
        // Fused, the pre-activation conv outputs are never written.
        let mut fused_seen = vec![false; fused.graph().nodes.len()];
        fused.run_observed(&x, &mut |v, _| fused_seen[v] = true).unwrap();
        let conv_then_act = |i: usize| matches!(fg.nodes[i].op, Op::Conv(_)) && matches!(fg.nodes.get(i + 1).map(|n| &n.op), Some(Op::Act(_)));
        assert!((0..fg.nodes.len()).any(conv_then_act));
        assert!((0..fg.nodes.len()).filter(|&i| conv_then_act(i)).all(|i| !fused_seen[i]));
    }
}
