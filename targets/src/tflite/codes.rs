//! Which TFLite builtin and op version each quantized op is written as. The versions are those
//! TFLite's own versioning (`op_version.cc`) gives these full-int8 signatures, which are the ones
//! the Edge TPU compiler 16 knows (edge-targets.md §1.5, §6).

use effv2_quantize::{OpKind, QModel, QOp};

use super::schema::builtin;

/// A builtin op at a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpCode {
    pub builtin: i32,
    pub version: i32,
}

pub fn builtin_name(code: i32) -> &'static str {
    match code {
        builtin::ADD => "ADD",
        builtin::CONV_2D => "CONV_2D",
        builtin::DEPTHWISE_CONV_2D => "DEPTHWISE_CONV_2D",
        builtin::FULLY_CONNECTED => "FULLY_CONNECTED",
        builtin::LOGISTIC => "LOGISTIC",
        builtin::MUL => "MUL",
        builtin::RESHAPE => "RESHAPE",
        builtin::PAD => "PAD",
        builtin::MEAN => "MEAN",
        builtin::QUANTIZE => "QUANTIZE",
        _ => "UNKNOWN",
    }
}

/// The opcode `op` of `model` is written with.
pub fn op_code(model: &QModel, op: &QOp) -> OpCode {
    let (builtin, version) = match &op.kind {
        OpKind::Conv2d { .. } => (builtin::CONV_2D, 3),
        OpKind::DepthwiseConv2d { .. } => (builtin::DEPTHWISE_CONV_2D, 3),
        OpKind::Add => (builtin::ADD, 2),
        OpKind::Mul => (builtin::MUL, if mul_rescale_at_least_one(model, op) { 3 } else { 2 }),
        OpKind::Logistic => (builtin::LOGISTIC, 2),
        OpKind::Mean { .. } => (builtin::MEAN, 2),
        OpKind::Reshape => (builtin::RESHAPE, 1),
        OpKind::Pad => (builtin::PAD, 2),
        OpKind::Quantize => (builtin::QUANTIZE, 1),
    };
    OpCode { builtin, version }
}

/// MUL needs version 3 when s1·s2/s_out ≥ 1 (evaluated in f32, as the versioning code does).
fn mul_rescale_at_least_one(model: &QModel, op: &QOp) -> bool {
    let scale = |i: Option<&usize>| i.and_then(|&t| model.tensors.get(t)).and_then(|t| t.params()).map(|p| p.scale);
    match (scale(op.inputs.first()), scale(op.inputs.get(1)), scale(op.outputs.first())) {
        (Some(a), Some(b), Some(o)) if a != 0.0 && b != 0.0 && o != 0.0 => a * b / o >= 1.0,
        _ => false,
    }
}

/// A runtime version string for the `min_runtime_version` metadata converters write: MUL v3 came
/// with TFLite 1.15, every other op here by 1.14. (Optional for interpreters.)
pub fn min_runtime_version(codes: &[OpCode]) -> &'static str {
    if codes.iter().any(|c| c.builtin == builtin::MUL && c.version >= 3) {
        "1.15.0"
    } else {
        "1.14.0"
    }
}
