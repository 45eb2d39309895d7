//! A folded graph turned into kernel steps: weights packed, identity ops dropped, and each conv
//! fused with the activation and residual add that directly follow it.

use super::check::check_graph;
use super::conv::{Geometry, Im2col};
use super::depthwise::Depthwise;
use super::elementwise::Epilogue;
use super::pointwise::Pointwise;
use super::{linear, EngineError};
use crate::graph::{ActKind, Conv, Graph, Op, ParamId, Shape, ValueId};
use crate::weights::Weights;

pub(super) enum Kernel {
    Pointwise(Pointwise),
    Im2col(Im2col),
    Depthwise(Depthwise),
}

pub(super) enum StepKind {
    /// Conv or linear, then `act(acc + bias) [+ residual]`.
    Conv { x: ValueId, kernel: Kernel, epi: Epilogue, residual: Option<ValueId> },
    Act { x: ValueId, kind: ActKind },
    Pool { x: ValueId },
    Mul { x: ValueId, gate: ValueId },
    Add { a: ValueId, b: ValueId },
}

pub(super) struct Step {
    /// The graph node the step starts at (for reports).
    pub name: String,
    /// Value the step writes (the last node it covers).
    pub out: ValueId,
    pub kind: StepKind,
}

impl Step {
    pub fn inputs(&self) -> Vec<ValueId> {
        match &self.kind {
            StepKind::Conv { x, residual, .. } => std::iter::once(*x).chain(*residual).collect(),
            StepKind::Act { x, .. } | StepKind::Pool { x } => vec![*x],
            StepKind::Mul { x, gate } => vec![*x, *gate],
            StepKind::Add { a, b } => vec![*a, *b],
        }
    }

    pub fn kernel_name(&self) -> &'static str {
        match &self.kind {
            StepKind::Conv { kernel: Kernel::Pointwise(_), .. } => "pointwise",
            StepKind::Conv { kernel: Kernel::Im2col(_), .. } => "im2col",
            StepKind::Conv { kernel: Kernel::Depthwise(_), .. } => "depthwise",
            StepKind::Act { .. } => "act",
            StepKind::Pool { .. } => "pool",
            StepKind::Mul { .. } => "mul",
            StepKind::Add { .. } => "add",
        }
    }
}

pub(super) struct Plan {
    pub steps: Vec<Step>,
    /// Per value: how many step inputs read it (+1 for the graph output).
    pub uses: Vec<usize>,
    /// Per value: its per-sample shape.
    pub shapes: Vec<Shape>,
    pub output: ValueId,
}

/// `fuse`: fold each conv's sole-reader activation and residual add into its epilogue. Off, every
/// graph value is materialised by a step of its own (what calibration observers need to see).
pub(super) fn build(g: &Graph, w: &Weights, fuse: bool) -> Result<Plan, EngineError> {
    check_graph(g)?;
    let n = g.nodes.len();
    // Identity ops (inference dropout / drop-path) forward their input's value.
    let mut canon: Vec<ValueId> = (0..n).collect();
    for (i, node) in g.nodes.iter().enumerate() {
        if matches!(node.op, Op::DropPath { .. } | Op::Dropout { .. }) {
            canon[i] = canon[node.inputs[0]];
        }
    }
    let mut readers = vec![vec![]; n];
    for (i, node) in g.nodes.iter().enumerate().filter(|&(i, _)| canon[i] == i) {
        node.inputs.iter().for_each(|&v| readers[canon[v]].push(i));
    }
    let output = canon[g.output];
    // The one node that reads `v`, if nothing else (the graph output included) does.
    let sole_reader = |v: ValueId| match readers[v].as_slice() {
        &[r] if fuse && v != output => Some(r),
        _ => None,
    };
    let mut ready = vec![false; n];
    ready[0] = true;
    let mut covered = vec![false; n];
    let mut steps = Vec::new();
    for (i, node) in g.nodes.iter().enumerate().skip(1) {
        if canon[i] != i || covered[i] {
            continue;
        }
        let x = canon[node.inputs[0]];
        let (kind, out) = match &node.op {
            Op::Conv(_) | Op::Linear(_) => {
                let (kernel, bias) = pack(g, w, i)?;
                let (mut out, mut act, mut residual) = (i, None, None);
                if let Some(r) = sole_reader(out) {
                    if let Op::Act(k) = g.nodes[r].op {
                        (out, act, covered[r]) = (r, Some(k), true);
                    }
                }
                if let Some(r) = sole_reader(out) {
                    let other = g.nodes[r].inputs.iter().map(|&v| canon[v]).find(|&v| v != out);
                    if let (Op::Add, Some(other)) = (&g.nodes[r].op, other) {
                        if ready[other] {
                            (out, residual, covered[r]) = (r, Some(other), true);
                        }
                    }
                }
                (StepKind::Conv { x, kernel, epi: Epilogue { bias, act }, residual }, out)
            }
            Op::Act(kind) => (StepKind::Act { x, kind: *kind }, i),
            Op::GlobalAvgPool => (StepKind::Pool { x }, i),
            Op::Mul => (StepKind::Mul { x, gate: canon[node.inputs[1]] }, i),
            Op::Add => (StepKind::Add { a: x, b: canon[node.inputs[1]] }, i),
            op => return Err(EngineError::Unsupported { node: node.name.clone(), op: op.kind_name().into() }),
        };
        ready[out] = true;
        steps.push(Step { name: node.name.clone(), out, kind });
    }
    let mut uses = vec![0; n];
    steps.iter().flat_map(Step::inputs).for_each(|v| uses[v] += 1);
    uses[output] += 1;
    let shapes = g.nodes.iter().map(|n| n.shape).collect();
    Ok(Plan { steps, uses, shapes, output })
}

/// Packed kernel and bias of conv/linear node `i`.
fn pack(g: &Graph, w: &Weights, i: usize) -> Result<(Kernel, Vec<f32>), EngineError> {
    let node = &g.nodes[i];
    let data = |id: ParamId| w.get(&g.params[id].name).map(|t| t.data());
    match &node.op {
        Op::Linear(l) => {
            let (k, epi) = linear::pack(l, data(l.weight)?, data(l.bias)?);
            Ok((Kernel::Pointwise(k), epi.bias))
        }
        Op::Conv(c) => {
            let bias = match c.bias {
                Some(b) => data(b)?.to_vec(),
                None => vec![0.0; c.out_ch],
            };
            Ok((conv_kernel(c, g.nodes[node.inputs[0]].shape, node.shape, data(c.weight)?), bias))
        }
        op => Err(EngineError::Unsupported { node: node.name.clone(), op: op.kind_name().into() }),
    }
}

/// The fastest kernel for a (checked) conv: pointwise GEMM, depthwise direct, or im2col + GEMM.
fn conv_kernel(c: &Conv, input: Shape, output: Shape, oihw: &[f32]) -> Kernel {
    let pads_zero = c.pads == Default::default();
    if c.is_pointwise() && pads_zero {
        return Kernel::Pointwise(Pointwise::pack(c.in_ch, c.out_ch, oihw));
    }
    let geo = Geometry {
        in_c: input.c,
        in_h: input.h,
        in_w: input.w,
        out_h: output.h,
        out_w: output.w,
        k: c.kernel,
        stride: c.stride,
        pads: c.pads,
    };
    if c.is_depthwise() {
        Kernel::Depthwise(Depthwise::pack(geo, oihw))
    } else {
        Kernel::Im2col(Im2col::pack(geo, c.out_ch, oihw))
    }
}
