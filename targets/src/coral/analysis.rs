//! What each op of an int8 model asks of the Edge TPU: whether it maps (the rule check plus the
//! compiler's single-subgraph partition), its work (MACs or elements), its parameter bytes and
//! its activation sizes. The report and the cost model both read this.

use serde::Serialize;

use effv2_quantize::{ConstData, OpKind, QModel, QOp};

use crate::tflite::check_edgetpu;

/// How an op uses the chip, for the cost model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// CONV_2D (any kernel, the classifier too): the systolic array's native work.
    Conv,
    /// DEPTHWISE_CONV_2D: one input channel per output channel, far less reuse.
    Depthwise,
    /// ADD, MUL, LOGISTIC, MEAN, PAD, QUANTIZE: a pass over the elements.
    Elementwise,
    /// RESHAPE: no data movement on the chip.
    Layout,
}

impl OpClass {
    pub fn of(kind: &OpKind) -> OpClass {
        match kind {
            OpKind::Conv2d { .. } => OpClass::Conv,
            OpKind::DepthwiseConv2d { .. } => OpClass::Depthwise,
            OpKind::Reshape => OpClass::Layout,
            _ => OpClass::Elementwise,
        }
    }
}

/// One op of the model as the Edge TPU sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpStat {
    pub index: usize,
    /// TFLite builtin, e.g. "CONV_2D".
    pub op: &'static str,
    pub version: i32,
    /// The graph node it comes from.
    pub node: String,
    pub class: OpClass,
    pub on_edgetpu: bool,
    /// Why it runs on the CPU (empty when mapped).
    pub why_not: Vec<String>,
    /// Multiply-accumulates (conv and depthwise).
    pub macs: u64,
    /// Elements an element-wise op processes (the input for MEAN, the output otherwise).
    pub elements: u64,
    /// int8 weights + int32 biases.
    pub param_bytes: u64,
    /// Bytes of the activation inputs and of the output (int8/uint8: one byte per element).
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub output_shape: Vec<usize>,
}

/// Every op, in execution order, with the compiler's partition applied.
pub fn analyze(model: &QModel) -> Vec<OpStat> {
    let checks = check_edgetpu(model);
    let first_cpu = checks.iter().position(|c| !c.supported());
    model
        .ops
        .iter()
        .zip(checks)
        .map(|(op, check)| {
            let mut why_not = check.problems.clone();
            if let Some(k) = first_cpu {
                if check.index > k && why_not.is_empty() {
                    why_not.push(format!(
                        "after op #{k} ({}), the first unmapped op: the compiler maps one subgraph from the input \
                         (\"More than one subgraph is not supported\")",
                        model.ops[k].node
                    ));
                }
            }
            let out = op.outputs.first().and_then(|&t| model.tensors.get(t));
            OpStat {
                index: check.index,
                op: check.op,
                version: check.version,
                node: op.node.clone(),
                class: OpClass::of(&op.kind),
                on_edgetpu: why_not.is_empty(),
                why_not,
                macs: macs(model, op),
                elements: elements(model, op),
                param_bytes: param_bytes(model, op),
                input_bytes: op.inputs.iter().filter_map(|&t| model.tensors.get(t)).filter(|t| t.data.is_none()).map(|t| t.numel() as u64).sum(),
                output_bytes: out.map(|t| t.numel() as u64).unwrap_or(0),
                output_shape: out.map(|t| t.shape.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

fn numel(model: &QModel, t: Option<&usize>) -> u64 {
    t.and_then(|&t| model.tensors.get(t)).map(|t| t.numel() as u64).unwrap_or(0)
}

fn macs(model: &QModel, op: &QOp) -> u64 {
    let out = numel(model, op.outputs.first());
    let filter = op.inputs.get(1).and_then(|&t| model.tensors.get(t));
    match (&op.kind, filter.map(|f| f.shape.as_slice())) {
        // [O, kh, kw, I]: each output element reads kh·kw·I inputs.
        (OpKind::Conv2d { .. }, Some(&[_, kh, kw, i])) => out * (kh * kw * i) as u64,
        // [1, kh, kw, C]: each output element reads kh·kw inputs of its own channel.
        (OpKind::DepthwiseConv2d { .. }, Some(&[_, kh, kw, _])) => out * (kh * kw) as u64,
        _ => 0,
    }
}

fn elements(model: &QModel, op: &QOp) -> u64 {
    match OpClass::of(&op.kind) {
        OpClass::Elementwise if matches!(op.kind, OpKind::Mean { .. }) => numel(model, op.inputs.first()),
        OpClass::Elementwise => numel(model, op.outputs.first()),
        _ => 0,
    }
}

/// Filter and bias bytes of conv/depthwise ops (the small int32 constants of MEAN, RESHAPE and
/// PAD — axes, shapes, paddings — are op parameters, not model parameters).
fn param_bytes(model: &QModel, op: &QOp) -> u64 {
    if !matches!(op.kind, OpKind::Conv2d { .. } | OpKind::DepthwiseConv2d { .. }) {
        return 0;
    }
    op.inputs[1..]
        .iter()
        .filter_map(|&t| model.tensors.get(t))
        .map(|t| match &t.data {
            Some(ConstData::I8(v)) => v.len() as u64,
            Some(ConstData::I32(v)) => 4 * v.len() as u64,
            None => 0,
        })
        .sum()
}
