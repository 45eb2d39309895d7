//! Builds the graph from a resolved [`ModelSpec`] for one input size. The only place the
//! network's wiring is written down.

use super::ir::*;
use crate::spec::{Activation, BlockKind, BlockSpec, ModelSpec, Padding};

/// Largest input side accepted: keeps a typo from allocating gigabytes.
pub const MAX_INPUT_SIDE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("input size {h}x{w} is out of range (each side 1..={MAX_INPUT_SIDE})")]
    InputSize { h: usize, w: usize },
}

/// Resolve one conv's padding and output side for the model's padding convention.
pub fn conv_geometry(padding: Padding, side: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    match padding {
        Padding::TfSame => {
            let out = side.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(side);
            (total / 2, total - total / 2, out)
        }
        Padding::Symmetric => {
            let p = (kernel - 1) / 2;
            (p, p, (side + 2 * p - kernel) / stride + 1)
        }
    }
}

pub fn build(spec: &ModelSpec, h: usize, w: usize) -> Result<Graph, GraphError> {
    if h == 0 || w == 0 || h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
        return Err(GraphError::InputSize { h, w });
    }
    let o = &spec.options;
    let mut b = Builder {
        g: Graph { nodes: vec![], params: vec![], output: 0 },
        padding: o.padding,
        eps: o.bn_eps as f32,
        act: match o.activation {
            Activation::Silu => ActKind::Silu,
            Activation::Relu6 => ActKind::Relu6,
        },
        scope: Scope::Stem,
    };
    let x = b.node("input", Op::Input, vec![], Shape::new(o.in_channels, h, w));
    let mut x = b.conv_bn(x, "stem", spec.stem_ch, 3, 2, 1, true);
    for blk in spec.blocks() {
        b.scope = Scope::Block { stage: blk.stage, index: blk.index };
        x = b.block(x, &blk);
    }
    b.scope = Scope::Head;
    let x = b.conv_bn(x, "head", spec.head_ch, 1, 1, 1, true);
    let x = b.node("head.pool", Op::GlobalAvgPool, vec![x], Shape::new(spec.head_ch, 1, 1));
    let x = b.node("head.dropout", Op::Dropout { rate: spec.dropout as f32 }, vec![x], Shape::new(spec.head_ch, 1, 1));
    let weight = b.param("classifier.weight", vec![o.num_classes, spec.head_ch], Role::LinearWeight);
    let bias = b.param("classifier.bias", vec![o.num_classes], Role::Bias);
    let lin = Linear { in_features: spec.head_ch, out_features: o.num_classes, weight, bias };
    let out = b.node("classifier", Op::Linear(lin), vec![x], Shape::new(o.num_classes, 1, 1));
    b.g.output = out;
    Ok(b.g)
}

struct Builder {
    g: Graph,
    padding: Padding,
    eps: f32,
    act: ActKind,
    scope: Scope,
}

impl Builder {
    fn param(&mut self, name: &str, shape: Vec<usize>, role: Role) -> ParamId {
        self.g.params.push(Param { name: name.to_string(), shape, role });
        self.g.params.len() - 1
    }

    fn node(&mut self, name: &str, op: Op, inputs: Vec<ValueId>, shape: Shape) -> ValueId {
        self.g.nodes.push(Node { name: name.to_string(), op, inputs, shape, scope: self.scope });
        self.g.nodes.len() - 1
    }

    fn shape(&self, v: ValueId) -> Shape {
        self.g.nodes[v].shape
    }

    /// `{prefix}.conv` (no bias) → `{prefix}.bn` → optional `{prefix}.act`.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(&mut self, x: ValueId, prefix: &str, out_ch: usize, k: usize, stride: usize, groups: usize, act: bool) -> ValueId {
        let y = self.conv(x, &format!("{prefix}.conv"), out_ch, k, stride, groups, false);
        let y = self.bn(y, &format!("{prefix}.bn"));
        if act {
            self.act(y, &format!("{prefix}.act"), self.act)
        } else {
            y
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, x: ValueId, name: &str, out_ch: usize, k: usize, stride: usize, groups: usize, bias: bool) -> ValueId {
        let s = self.shape(x);
        let (top, bottom, oh) = conv_geometry(self.padding, s.h, k, stride);
        let (left, right, ow) = conv_geometry(self.padding, s.w, k, stride);
        let weight = self.param(&format!("{name}.weight"), vec![out_ch, s.c / groups, k, k], Role::ConvWeight);
        let bias = bias.then(|| self.param(&format!("{name}.bias"), vec![out_ch], Role::Bias));
        let conv = Conv {
            in_ch: s.c,
            out_ch,
            kernel: k,
            stride,
            groups,
            pads: Pads { top, left, bottom, right },
            weight,
            bias,
        };
        self.node(name, Op::Conv(conv), vec![x], Shape::new(out_ch, oh, ow))
    }

    fn bn(&mut self, x: ValueId, name: &str) -> ValueId {
        let c = self.shape(x).c;
        let eps = self.eps;
        let mut p = |leaf: &str, role| self.param(&format!("{name}.{leaf}"), vec![c], role);
        let bn = BatchNorm {
            ch: c,
            eps,
            weight: p("weight", Role::BnWeight),
            bias: p("bias", Role::BnBias),
            mean: p("running_mean", Role::BnMean),
            var: p("running_var", Role::BnVar),
        };
        let shape = self.shape(x);
        self.node(name, Op::BatchNorm(bn), vec![x], shape)
    }

    fn act(&mut self, x: ValueId, name: &str, kind: ActKind) -> ValueId {
        let shape = self.shape(x);
        self.node(name, Op::Act(kind), vec![x], shape)
    }

    /// Squeeze-excite: mean → 1×1 conv (bias) → act → 1×1 conv (bias) → sigmoid → x·gate.
    fn se(&mut self, x: ValueId, prefix: &str, se_ch: usize) -> ValueId {
        let c = self.shape(x).c;
        let p = self.node(&format!("{prefix}.pool"), Op::GlobalAvgPool, vec![x], Shape::new(c, 1, 1));
        let r = self.conv(p, &format!("{prefix}.reduce"), se_ch, 1, 1, 1, true);
        let r = self.act(r, &format!("{prefix}.act"), self.act);
        let e = self.conv(r, &format!("{prefix}.expand"), c, 1, 1, 1, true);
        let gate = self.act(e, &format!("{prefix}.gate"), ActKind::Sigmoid);
        let shape = self.shape(x);
        self.node(&format!("{prefix}.scale"), Op::Mul, vec![x, gate], shape)
    }

    fn block(&mut self, input: ValueId, b: &BlockSpec) -> ValueId {
        let p = format!("blocks.{}.{}", b.stage, b.index);
        let mut x = input;
        match b.kind {
            BlockKind::MbConv => {
                if b.expand != 1 {
                    x = self.conv_bn(x, &format!("{p}.expand"), b.mid_ch, 1, 1, 1, true);
                }
                x = self.conv_bn(x, &format!("{p}.dw"), b.mid_ch, b.kernel, b.stride, b.mid_ch, true);
                if let Some(se) = b.se_ch {
                    x = self.se(x, &format!("{p}.se"), se);
                }
                x = self.conv_bn(x, &format!("{p}.project"), b.out_ch, 1, 1, 1, false);
            }
            BlockKind::FusedMbConv if b.expand != 1 => {
                x = self.conv_bn(x, &format!("{p}.fused"), b.mid_ch, b.kernel, b.stride, 1, true);
                if let Some(se) = b.se_ch {
                    x = self.se(x, &format!("{p}.se"), se);
                }
                x = self.conv_bn(x, &format!("{p}.project"), b.out_ch, 1, 1, 1, false);
            }
            BlockKind::FusedMbConv => {
                // Expand ratio 1: one k×k conv straight to the output width, with activation.
                // SE (only when asked for) sits before it, as in the official code.
                if let Some(se) = b.se_ch {
                    x = self.se(x, &format!("{p}.se"), se);
                }
                x = self.conv_bn(x, &format!("{p}.fused"), b.out_ch, b.kernel, b.stride, 1, true);
            }
        }
        if !b.residual {
            return x;
        }
        if b.survival < 1.0 {
            let shape = self.shape(x);
            x = self.node(&format!("{p}.drop_path"), Op::DropPath { survival: b.survival }, vec![x], shape);
        }
        let shape = self.shape(x);
        self.node(&format!("{p}.add"), Op::Add, vec![x, input], shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_same_pads_odd_pixel_at_the_end() {
        // 224 -> 112 with k3 s2: total pad 1, all at the bottom/right.
        assert_eq!(conv_geometry(Padding::TfSame, 224, 3, 2), (0, 1, 112));
        // 225 -> 113: total pad 2, split 1/1.
        assert_eq!(conv_geometry(Padding::TfSame, 225, 3, 2), (1, 1, 113));
        assert_eq!(conv_geometry(Padding::TfSame, 7, 3, 1), (1, 1, 7));
        assert_eq!(conv_geometry(Padding::TfSame, 1, 3, 2), (1, 1, 1));
        assert_eq!(conv_geometry(Padding::Symmetric, 224, 3, 2), (1, 1, 112));
        assert_eq!(conv_geometry(Padding::Symmetric, 225, 3, 2), (1, 1, 113));
        assert_eq!(conv_geometry(Padding::Symmetric, 1, 1, 1), (0, 0, 1));
    }
}
