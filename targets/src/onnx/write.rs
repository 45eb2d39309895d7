//! Graph → ONNX. BN is folded first; the rest is a direct, node-by-node translation with
//! static shapes, input `input` (float32 NCHW) and output `logits`.

use effv2_edge::graph::{fold_batchnorm, ActKind, Graph, Op};
use effv2_edge::weights::Weights;
use effv2_quantize::params::quantize_weights_per_channel;
use prost::Message;

use super::proto::*;

pub const INPUT: &str = "input";
pub const OUTPUT: &str = "logits";
pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error(transparent)]
    Fold(#[from] effv2_edge::graph::FoldError),
    #[error("node {node:?}: {op} cannot be written to ONNX ({why})")]
    Unsupported { node: String, op: String, why: String },
}

/// How SiLU is spelled. tract rewrites `x * sigmoid(x)` into its fused SiLU kernel; ORT and
/// TensorRT fuse it too. (`Swish` is only in opset 24+.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SiluForm {
    #[default]
    SigmoidMul,
}

#[derive(Clone, Debug)]
pub struct OnnxOptions {
    pub batch: usize,
    pub silu: SiluForm,
    /// `key=value` pairs stored in the model's metadata_props.
    pub metadata: Vec<(String, String)>,
    /// TensorRT-style explicit int8: calibrated real range of every value of the BN-folded graph
    /// (indexed like its nodes). Each conv then reads `DequantizeLinear(QuantizeLinear(x))` with a
    /// symmetric int8 scale (zero point 0) and per-channel symmetric int8 weights; the rest stays
    /// float, for TensorRT to fuse.
    pub qdq_ranges: Option<Vec<Option<(f32, f32)>>>,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        OnnxOptions { batch: 1, silu: SiluForm::SigmoidMul, metadata: vec![], qdq_ranges: None }
    }
}

/// Serialize `graph` with `weights` as an ONNX model (bytes of a `ModelProto`).
pub fn write_onnx(graph: &Graph, weights: &Weights, opts: &OnnxOptions) -> Result<Vec<u8>, OnnxError> {
    let (g, w) = fold_batchnorm(graph, weights)?;
    let mut b = GraphBuilder { nodes: vec![], initializers: vec![], names: vec![String::new(); g.nodes.len()] };
    if let Some(r) = &opts.qdq_ranges {
        if r.len() != g.nodes.len() {
            return Err(OnnxError::Unsupported { node: "<graph>".into(), op: "QDQ".into(), why: format!("{} ranges for {} values", r.len(), g.nodes.len()) });
        }
    }
    // Conv weights written as int8 + DequantizeLinear instead of float initializers.
    let mut quantized_weights = std::collections::HashSet::new();
    let n = opts.batch as i64;
    let shape4 = |s: effv2_edge::graph::Shape| vec![n, s.c as i64, s.h as i64, s.w as i64];
    let mut input = None;
    for (i, node) in g.nodes.iter().enumerate() {
        let ins: Vec<String> = node.inputs.iter().map(|&v| b.names[v].clone()).collect();
        let x = |k: usize| ins[k].clone();
        let out = node.name.clone();
        match &node.op {
            Op::Input => {
                input = Some(value_info(INPUT, &shape4(node.shape)));
                b.names[i] = INPUT.to_string();
                continue;
            }
            Op::Conv(c) => {
                let mut inputs = vec![x(0), g.params[c.weight].name.clone()];
                if let Some(ranges) = &opts.qdq_ranges {
                    let v = node.inputs[0];
                    let (lo, hi) = ranges[v].ok_or_else(|| OnnxError::Unsupported {
                        node: node.name.clone(),
                        op: "QDQ".into(),
                        why: format!("no calibrated range for its input {:?}", g.nodes[v].name),
                    })?;
                    inputs[0] = b.qdq_activation(&x(0), &out, lo.abs().max(hi.abs()));
                    let wp = &g.params[c.weight];
                    inputs[1] = b.qdq_weight(&wp.name, w.get(&wp.name).expect("fold returns every weight"));
                    quantized_weights.insert(c.weight);
                }
                inputs.extend(c.bias.map(|p| g.params[p].name.clone()));
                let k = c.kernel as i64;
                let p = c.pads;
                let attrs = vec![
                    ints("kernel_shape", &[k, k]),
                    ints("strides", &[c.stride as i64, c.stride as i64]),
                    ints("pads", &[p.top as i64, p.left as i64, p.bottom as i64, p.right as i64]),
                    ints("dilations", &[1, 1]),
                    int("group", c.groups as i64),
                ];
                b.node("Conv", &out, inputs, &out, attrs);
            }
            Op::BatchNorm(bn) => {
                let names = [bn.weight, bn.bias, bn.mean, bn.var].map(|p| g.params[p].name.clone());
                let mut inputs = vec![x(0)];
                inputs.extend(names);
                b.node("BatchNormalization", &out, inputs, &out, vec![float("epsilon", bn.eps)]);
            }
            Op::Act(ActKind::Silu) => {
                let sig = format!("{out}.sigmoid");
                b.node("Sigmoid", &sig, vec![x(0)], &sig, vec![]);
                b.node("Mul", &out, vec![x(0), sig], &out, vec![]);
            }
            Op::Act(ActKind::Sigmoid) => b.node("Sigmoid", &out, vec![x(0)], &out, vec![]),
            Op::Act(ActKind::Relu6) => {
                let (lo, hi) = (b.scalar(&format!("{out}.min"), 0.0), b.scalar(&format!("{out}.max"), 6.0));
                b.node("Clip", &out, vec![x(0), lo, hi], &out, vec![]);
            }
            Op::GlobalAvgPool => b.node("GlobalAveragePool", &out, vec![x(0)], &out, vec![]),
            Op::Mul => b.node("Mul", &out, vec![x(0), x(1)], &out, vec![]),
            Op::Add => b.node("Add", &out, vec![x(0), x(1)], &out, vec![]),
            Op::DropPath { .. } | Op::Dropout { .. } => {
                // Identity at inference: alias the input.
                b.names[i] = x(0);
                continue;
            }
            Op::Linear(l) => {
                let flat = format!("{out}.flatten");
                b.node("Flatten", &flat, vec![x(0)], &flat, vec![int("axis", 1)]);
                let inputs = vec![flat, g.params[l.weight].name.clone(), g.params[l.bias].name.clone()];
                b.node("Gemm", &out, inputs, &out, vec![int("transB", 1)]);
            }
        }
        b.names[i] = out;
    }
    // Rename the final value to the public output name.
    let last = b.names[g.output].clone();
    for node in &mut b.nodes {
        for o in node.output.iter_mut().chain(node.input.iter_mut()) {
            if *o == last {
                *o = OUTPUT.to_string();
            }
        }
    }
    for (id, p) in g.params.iter().enumerate() {
        if quantized_weights.contains(&id) {
            continue;
        }
        let t = w.get(&p.name).expect("fold returns a weight for every param");
        b.initializers.push(TensorProto {
            dims: t.shape().iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: p.name.clone(),
            raw_data: t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    let out_shape = g.output_shape();
    let graph_proto = GraphProto {
        node: b.nodes,
        name: "effv2".into(),
        initializer: b.initializers,
        doc_string: String::new(),
        input: input.into_iter().collect(),
        output: vec![value_info(OUTPUT, &[n, out_shape.c as i64])],
        value_info: vec![],
    };
    Ok(encode_model(graph_proto, opts))
}

/// The serialized opset-13 model around `graph`, with `opts.metadata`.
pub(super) fn encode_model(graph: GraphProto, opts: &OnnxOptions) -> Vec<u8> {
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "effv2-edge".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: String::new(),
        graph: Some(graph),
        metadata_props: opts.metadata.iter().map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() }).collect(),
    };
    model.encode_to_vec()
}

struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// ONNX value name of each graph value.
    names: Vec<String>,
}

impl GraphBuilder {
    fn node(&mut self, op: &str, name: &str, inputs: Vec<String>, output: &str, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op.to_string(),
            domain: String::new(),
            attribute,
        });
    }

    fn init(&mut self, name: String, dims: Vec<i64>, data_type: i32, raw_data: Vec<u8>) -> String {
        self.initializers.push(TensorProto { dims, data_type, name: name.clone(), raw_data });
        name
    }

    /// `DequantizeLinear(QuantizeLinear(x))`, symmetric int8 covering `[-amax, amax]`; returns the
    /// dequantized value's name.
    fn qdq_activation(&mut self, x: &str, consumer: &str, amax: f32) -> String {
        let scale = if amax.is_finite() && amax > 0.0 { amax / 127.0 } else { 1e-8 };
        let s = self.init(format!("{consumer}.x_scale"), vec![], data_type::FLOAT, scale.to_le_bytes().to_vec());
        let z = self.init(format!("{consumer}.x_zero_point"), vec![], data_type::INT8, vec![0]);
        let (q, dq) = (format!("{consumer}.x_q"), format!("{consumer}.x_dq"));
        self.node("QuantizeLinear", &q, vec![x.into(), s.clone(), z.clone()], &q, vec![]);
        self.node("DequantizeLinear", &dq, vec![q, s, z], &dq, vec![]);
        dq
    }

    /// Per-output-channel symmetric int8 weight and its DequantizeLinear (axis 0), producing the
    /// float weight under its own name.
    fn qdq_weight(&mut self, name: &str, t: &effv2_edge::tensor::Tensor) -> String {
        let o = t.shape()[0];
        let q = quantize_weights_per_channel(t.data(), o);
        let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let qi = self.init(format!("{name}.int8"), dims, data_type::INT8, q.values.iter().map(|&v| v as u8).collect());
        let s = self.init(format!("{name}.scale"), vec![o as i64], data_type::FLOAT, q.scales.iter().flat_map(|v| v.to_le_bytes()).collect());
        let z = self.init(format!("{name}.zero_point"), vec![o as i64], data_type::INT8, vec![0; o]);
        self.node("DequantizeLinear", &format!("{name}.dq"), vec![qi, s, z], name, vec![int("axis", 0)]);
        name.to_string()
    }

    fn scalar(&mut self, name: &str, v: f32) -> String {
        self.init(name.into(), vec![], data_type::FLOAT, v.to_le_bytes().to_vec())
    }
}

pub(super) fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims.iter().map(|&d| Dimension { dim_value: Some(d) }).collect() }),
            }),
        }),
    }
}

pub(super) fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints: v.to_vec(), ..Default::default() }
}

pub(super) fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::INT, i: Some(v), ..Default::default() }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f: Some(v), ..Default::default() }
}
