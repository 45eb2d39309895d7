//! The one graph every consumer reads: typed ops with per-sample shapes and named parameter slots.

use serde::Serialize;

/// A value is the output of one node; node 0 is the graph input.
pub type ValueId = usize;
/// Index into [`Graph::params`].
pub type ParamId = usize;

/// Per-sample shape, channels first (the batch dimension is left to the engines).
/// Pooled values and logits are `[C, 1, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        Shape { c, h, w }
    }
    pub fn numel(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// Explicit zero padding of a conv, already resolved for the graph's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Pads {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

impl Pads {
    pub fn is_symmetric(&self) -> bool {
        self.top == self.bottom && self.left == self.right
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conv {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    /// 1 = regular conv; `in_ch` = depthwise.
    pub groups: usize,
    pub pads: Pads,
    /// OIHW: `[out_ch, in_ch / groups, k, k]`.
    pub weight: ParamId,
    pub bias: Option<ParamId>,
}

impl Conv {
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_ch && self.in_ch == self.out_ch
    }
    pub fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.groups == 1
    }
}

/// Inference-mode batch norm: `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BatchNorm {
    pub ch: usize,
    pub eps: f32,
    pub weight: ParamId,
    pub bias: ParamId,
    pub mean: ParamId,
    pub var: ParamId,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    /// `[out, in]`.
    pub weight: ParamId,
    pub bias: ParamId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActKind {
    Silu,
    Relu6,
    Sigmoid,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Input,
    Conv(Conv),
    BatchNorm(BatchNorm),
    Act(ActKind),
    /// Mean over H and W: `[C,H,W] -> [C,1,1]`.
    GlobalAvgPool,
    /// `x * gate` with gate `[C,1,1]` broadcast over H and W (the SE excitation).
    Mul,
    /// Residual sum of two equal shapes.
    Add,
    /// Stochastic depth on a residual branch: identity at inference, per-sample drop in training.
    DropPath { survival: f32 },
    /// Classifier dropout: identity at inference.
    Dropout { rate: f32 },
    /// `[in,1,1] -> [out,1,1]`.
    Linear(Linear),
}

impl Op {
    /// The parameter slots this op reads.
    pub fn params(&self) -> Vec<ParamId> {
        match self {
            Op::Conv(c) => std::iter::once(c.weight).chain(c.bias).collect(),
            Op::BatchNorm(b) => vec![b.weight, b.bias, b.mean, b.var],
            Op::Linear(l) => vec![l.weight, l.bias],
            _ => vec![],
        }
    }

    /// Mutable access to the parameter slots, in the order of [`Op::params`].
    pub fn params_mut(&mut self) -> Vec<&mut ParamId> {
        match self {
            Op::Conv(c) => std::iter::once(&mut c.weight).chain(c.bias.as_mut()).collect(),
            Op::BatchNorm(b) => vec![&mut b.weight, &mut b.bias, &mut b.mean, &mut b.var],
            Op::Linear(l) => vec![&mut l.weight, &mut l.bias],
            _ => vec![],
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv(c) if c.is_depthwise() => "depthwise_conv",
            Op::Conv(_) => "conv",
            Op::BatchNorm(_) => "batch_norm",
            Op::Act(ActKind::Silu) => "silu",
            Op::Act(ActKind::Relu6) => "relu6",
            Op::Act(ActKind::Sigmoid) => "sigmoid",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Mul => "mul",
            Op::Add => "add",
            Op::DropPath { .. } => "drop_path",
            Op::Dropout { .. } => "dropout",
            Op::Linear(_) => "linear",
        }
    }
}

/// Where a node sits in the network, for reports (per-stage costs, per-op target mapping).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Stem,
    Block { stage: usize, index: usize },
    Head,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub shape: Shape,
    pub scope: Scope,
}

/// What a parameter tensor is for (decides trainability, weight decay, init, quantization).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ConvWeight,
    LinearWeight,
    Bias,
    BnWeight,
    BnBias,
    BnMean,
    BnVar,
}

impl Role {
    /// Running statistics are buffers, not parameters (PyTorch's count excludes them).
    pub fn is_trainable(self) -> bool {
        !matches!(self, Role::BnMean | Role::BnVar)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
}

impl Param {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub params: Vec<Param>,
    pub output: ValueId,
}

impl Graph {
    pub fn input_shape(&self) -> Shape {
        self.nodes[0].shape
    }
    pub fn output_shape(&self) -> Shape {
        self.nodes[self.output].shape
    }
    pub fn param(&self, name: &str) -> Option<(ParamId, &Param)> {
        self.params.iter().enumerate().find(|(_, p)| p.name == name)
    }
    /// The nodes that read each value, in node order (a node reading it twice is listed twice;
    /// the graph's output is not a reader here).
    pub fn readers(&self) -> Vec<Vec<ValueId>> {
        let mut readers = vec![vec![]; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                readers[v].push(i);
            }
        }
        readers
    }
    /// How many nodes read each value (the output counts as one reader).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        uses[self.output] += 1;
        uses
    }
}
