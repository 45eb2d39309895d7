//! The folded graph as an int8 TFLite-shaped model, op by op: conv (+ fused ReLU6) → CONV_2D /
//! DEPTHWISE_CONV_2D (after a PAD where the pads are not SAME's), SiLU → LOGISTIC + MUL,
//! sigmoid → LOGISTIC, global pool → MEAN over H,W, SE scale → broadcast MUL, residual → ADD,
//! classifier → 1×1 CONV_2D then RESHAPE to `[1, classes]`.

use effv2_edge::graph::{ActKind, Conv, Graph, Linear, Node, Op, ValueId};
use effv2_edge::weights::Weights;

use crate::layout::{conv_filter_ohwi, depthwise_filter_1hwc, pad_plan, PadPlan};
use crate::model::*;
use crate::params::{bias_scales, quantize_bias, ChannelWeights, QParams, LOGISTIC_OUTPUT};
use crate::QuantizeError;

/// Lower the BN-folded `graph` with activation `ranges` (per graph value) to an int8 model.
pub fn lower(graph: &Graph, weights: &Weights, ranges: &[Option<(f32, f32)>], io: IoType) -> Result<QModel, QuantizeError> {
    if ranges.len() != graph.nodes.len() {
        return Err(QuantizeError::Internal(format!("{} ranges for {} graph values", ranges.len(), graph.nodes.len())));
    }
    let mut l = Lowering { g: graph, w: weights, ranges, tensors: vec![], ops: vec![], of: vec![None; graph.nodes.len()] };
    let readers = graph.readers();
    let mut fused_into_conv = vec![false; graph.nodes.len()];
    let mut input = None;
    for (i, node) in graph.nodes.iter().enumerate() {
        let ins: Vec<Option<TensorId>> = node.inputs.iter().map(|&v| l.of[v]).collect();
        let x = |k: usize| ins.get(k).copied().flatten().ok_or_else(|| unsupported(node, "reads a value that has no int8 tensor"));
        let t = match &node.op {
            Op::Input => {
                let t = l.activation(i, vec![1, node.shape.h, node.shape.w, node.shape.c])?;
                input = Some(t);
                t
            }
            Op::DropPath { .. } | Op::Dropout { .. } => x(0)?,
            Op::Conv(c) => {
                // ReLU6 that only this conv feeds is fused, as TFLite does: one int8 output.
                let relu6 = match readers[i].as_slice() {
                    &[r] if i != graph.output => {
                        matches!(graph.nodes[r].op, Op::Act(ActKind::Relu6)).then_some(r)
                    }
                    _ => None,
                };
                let out_value = relu6.unwrap_or(i);
                let t = l.conv(node, c, x(0)?, out_value, relu6.is_some())?;
                if let Some(r) = relu6 {
                    fused_into_conv[r] = true;
                    l.of[r] = Some(t);
                }
                t
            }
            Op::Act(ActKind::Relu6) if fused_into_conv[i] => continue,
 Op::Act(ActKind::Relu6) => return Err(unsupported(node, "a ReLU6 that does not directly follow the conv it could fuse into")),
            Op::Act(ActKind::Sigmoid) => l.logistic(node, x(0)?)?,
            Op::Act(ActKind::Silu) => {
                let xt = x(0)?;
                let sig = l.logistic(node, xt)?;
                let out = l.activation(i, l.tensors[xt].shape.clone())?;
                l.op(node, OpKind::Mul, vec![xt, sig], out)
            }
            Op::GlobalAvgPool => {
                let axes = l.constant(format!("{}.axes", node.name), vec![2], ConstData::I32(vec![1, 2]));
                let out = l.activation(i, vec![1, 1, 1, node.shape.c])?;
                l.op(node, OpKind::Mean { keep_dims: true }, vec![x(0)?, axes], out)
            }
            Op::Mul => {
                let out = l.activation(i, l.shape4(node))?;
                l.op(node, OpKind::Mul, vec![x(0)?, x(1)?], out)
            }
            Op::Add => {
                let out = l.activation(i, l.shape4(node))?;
                l.op(node, OpKind::Add, vec![x(0)?, x(1)?], out)
            }
            Op::Linear(lin) => l.linear(node, lin, x(0)?, i)?,
            Op::BatchNorm(_) => return Err(unsupported(node, "batch norm must be folded into its conv first")),
        };
        l.of[i] = Some(t);
    }
    let input = input.ok_or_else(|| QuantizeError::Internal("the graph has no input node".into()))?;
    let out_node = &graph.nodes[graph.output];
    let mut output = l.of[graph.output].ok_or_else(|| QuantizeError::Internal("the output was never computed".into()))?;
    if out_node.shape.h == 1 && out_node.shape.w == 1 {
        // Logits as [1, classes], like a converter's classifier output.
        let c = out_node.shape.c;
        let shape = l.constant(format!("{}.shape", out_node.name), vec![2], ConstData::I32(vec![1, c as i32]));
        let t = l.tensor(format!("{}.flat", out_node.name), vec![1, c], DType::Int8, l.tensors[output].quant.clone());
        output = l.op(out_node, OpKind::Reshape, vec![output, shape], t);
    }
    let (input, output) = match io {
        IoType::Int8 => (input, output),
        IoType::UInt8 => l.uint8_boundaries(input, output)?,
    };
    Ok(QModel { tensors: l.tensors, ops: l.ops, input, output })
}

struct Lowering<'a> {
    g: &'a Graph,
    w: &'a Weights,
    ranges: &'a [Option<(f32, f32)>],
    tensors: Vec<QTensor>,
    ops: Vec<QOp>,
    /// The int8 tensor holding each graph value.
    of: Vec<Option<TensorId>>,
}

fn unsupported(node: &Node, why: &str) -> QuantizeError {
    QuantizeError::Unsupported { node: node.name.clone(), op: node.op.kind_name().into(), why: why.into() }
}

impl Lowering<'_> {
    fn shape4(&self, node: &Node) -> Vec<usize> {
        vec![1, node.shape.h, node.shape.w, node.shape.c]
    }

    fn tensor(&mut self, name: String, shape: Vec<usize>, dtype: DType, quant: Quant) -> TensorId {
        self.tensors.push(QTensor { name, shape, dtype, quant, data: None });
        self.tensors.len() - 1
    }

    fn constant(&mut self, name: String, shape: Vec<usize>, data: ConstData) -> TensorId {
        let dtype = if matches!(data, ConstData::I8(_)) { DType::Int8 } else { DType::Int32 };
        self.tensors.push(QTensor { name, shape, dtype, quant: Quant::None, data: Some(data) });
        self.tensors.len() - 1
    }

    /// An int8 activation holding graph value `v`, with the calibrated range of `v`.
    fn activation(&mut self, v: ValueId, shape: Vec<usize>) -> Result<TensorId, QuantizeError> {
        let (lo, hi) = self.ranges[v].ok_or_else(|| QuantizeError::NoRange { node: self.g.nodes[v].name.clone() })?;
        let name = self.g.nodes[v].name.clone();
        Ok(self.tensor(name, shape, DType::Int8, Quant::PerTensor(QParams::from_range(lo, hi))))
    }

    fn op(&mut self, node: &Node, kind: OpKind, inputs: Vec<TensorId>, out: TensorId) -> TensorId {
        self.ops.push(QOp { kind, inputs, outputs: vec![out], node: node.name.clone() });
        out
    }

    fn logistic(&mut self, node: &Node, x: TensorId) -> Result<TensorId, QuantizeError> {
        let shape = self.tensors[x].shape.clone();
        let out = self.tensor(format!("{}.sigmoid", node.name), shape, DType::Int8, Quant::PerTensor(LOGISTIC_OUTPUT));
        Ok(self.op(node, OpKind::Logistic, vec![x], out))
    }

    fn param(&self, id: usize) -> Result<&[f32], QuantizeError> {
        let p = self.g.params.get(id).ok_or_else(|| QuantizeError::Internal(format!("parameter #{id} does not exist")))?;
        Ok(self.w.get(&p.name)?.data())
    }

    /// Filter and bias constants for per-channel weights `q` read by input `x`.
    fn filter_and_bias(&mut self, node: &Node, q: ChannelWeights, shape: Vec<usize>, axis: usize, bias: &[f32], x: TensorId) -> Result<(TensorId, TensorId), QuantizeError> {
        let in_scale = self.tensors[x].params().ok_or_else(|| QuantizeError::Internal("conv input without per-tensor parameters".into()))?.scale;
        let bscales = bias_scales(in_scale, &q.scales);
        let qb = quantize_bias(bias, &bscales);
        let n = q.scales.len();
        let f = self.tensor(format!("{}.weight", node.name), shape, DType::Int8, Quant::PerChannel { scales: q.scales, axis });
        self.tensors[f].data = Some(ConstData::I8(q.values));
        let b = self.tensor(format!("{}.bias", node.name), vec![n], DType::Int32, Quant::PerChannel { scales: bscales, axis: 0 });
        self.tensors[b].data = Some(ConstData::I32(qb));
        Ok((f, b))
    }

    fn conv(&mut self, node: &Node, c: &Conv, x: TensorId, out_value: ValueId, relu6: bool) -> Result<TensorId, QuantizeError> {
        if c.groups != 1 && !c.is_depthwise() {
            return Err(unsupported(node, &format!("grouped conv with {} groups (only 1 or depthwise)", c.groups)));
        }
        let xs = self.tensors[x].shape.clone();
        let (in_h, in_w) = (xs[1], xs[2]);
        let plan = pad_plan(c.pads, (in_h, in_w), c.kernel, c.stride, (node.shape.h, node.shape.w));
        let (x, padding) = match plan {
            PadPlan::Same => (x, Padding::Same),
            PadPlan::Valid => (x, Padding::Valid),
            PadPlan::Explicit(p) => {
                let pads = [0, 0, p.top, p.bottom, p.left, p.right, 0, 0].map(|v| v as i32).to_vec();
                let paddings = self.constant(format!("{}.paddings", node.name), vec![4, 2], ConstData::I32(pads));
                let shape = vec![1, in_h + p.top + p.bottom, in_w + p.left + p.right, xs[3]];
                let quant = self.tensors[x].quant.clone();
                let padded = self.tensor(format!("{}.pad", node.name), shape, DType::Int8, quant);
                (self.op(node, OpKind::Pad, vec![x, paddings], padded), Padding::Valid)
            }
        };
        let w = self.param(c.weight)?.to_vec();
        let bias = match c.bias {
            Some(b) => self.param(b)?.to_vec(),
            None => vec![0.0; c.out_ch],
        };
        let act = if relu6 { FusedAct::Relu6 } else { FusedAct::None };
        let k = c.kernel;
        let (kind, q, shape, axis) = if c.is_depthwise() {
            let q = depthwise_filter_1hwc(&w, c.out_ch, k);
            (OpKind::DepthwiseConv2d { stride: c.stride, padding, act }, q, vec![1, k, k, c.out_ch], 3)
        } else {
            let q = conv_filter_ohwi(&w, c.out_ch, c.in_ch, k);
            (OpKind::Conv2d { stride: c.stride, padding, act }, q, vec![c.out_ch, k, k, c.in_ch], 0)
        };
        let (f, b) = self.filter_and_bias(node, q, shape, axis, &bias, x)?;
        let out = self.activation(out_value, self.shape4(node))?;
        Ok(self.op(node, kind, vec![x, f, b], out))
    }

    /// The classifier as a 1×1 CONV_2D on the pooled `[1,1,1,in]` tensor: per-class weight scales
    /// (FULLY_CONNECTED is per-tensor in TFLite's int8 spec) and no reshape before it.
    fn linear(&mut self, node: &Node, l: &Linear, x: TensorId, v: ValueId) -> Result<TensorId, QuantizeError> {
        let w = self.param(l.weight)?.to_vec();
        let bias = self.param(l.bias)?.to_vec();
        let q = conv_filter_ohwi(&w, l.out_features, l.in_features, 1);
        let shape = vec![l.out_features, 1, 1, l.in_features];
        let (f, b) = self.filter_and_bias(node, q, shape, 0, &bias, x)?;
        let out = self.activation(v, vec![1, 1, 1, l.out_features])?;
        let kind = OpKind::Conv2d { stride: 1, padding: Padding::Valid, act: FusedAct::None };
        Ok(self.op(node, kind, vec![x, f, b], out))
    }

    /// uint8 model I/O: QUANTIZE uint8→int8 after the input and int8→uint8 before the output.
    fn uint8_boundaries(&mut self, input: TensorId, output: TensorId) -> Result<(TensorId, TensorId), QuantizeError> {
        let as_u8 = |t: &QTensor, name: String| -> Result<QTensor, QuantizeError> {
            let p = t.params().ok_or_else(|| QuantizeError::Internal("model I/O without per-tensor parameters".into()))?;
            Ok(QTensor { name, shape: t.shape.clone(), dtype: DType::UInt8, quant: Quant::PerTensor(p.as_uint8()), data: None })
        };
        let u_in = as_u8(&self.tensors[input], "input_uint8".into())?;
        self.tensors.push(u_in);
        let u_in = self.tensors.len() - 1;
        let quantize = |input, output, node: &str| QOp { kind: OpKind::Quantize, inputs: vec![input], outputs: vec![output], node: node.into() };
        self.ops.insert(0, quantize(u_in, input, "input"));
        let u_out = as_u8(&self.tensors[output], "output_uint8".into())?;
        self.tensors.push(u_out);
        let u_out = self.tensors.len() - 1;
        self.ops.push(quantize(output, u_out, "output"));
        Ok((u_in, u_out))
    }
}
