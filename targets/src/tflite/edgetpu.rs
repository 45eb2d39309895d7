//! What the Edge TPU (compiler 16) maps, as a rule table over the int8 model the writer
//! serializes one-to-one (edge-targets.md §1.1–1.2, §1.5): which builtins at which versions, and
//! the per-op constraints; plus the model-wide tensor rules (int8, static shapes, batch 1, at
//! most the 3 innermost dimensions above 1). The later Edge TPU report is built from this.

use effv2_quantize::{ConstData, DType, OpKind, QModel, QOp, QTensor};

use super::codes::{builtin_name, op_code};
use super::schema::builtin;

/// One supported builtin.
#[derive(Clone, Copy, Debug)]
pub struct OpRule {
    pub builtin: i32,
    /// Newest op version the Edge TPU compiler 16 accepts for it (newer: "Operation version not
    /// supported").
    pub max_version: i32,
    /// The constraint as Coral documents it.
    pub constraint: &'static str,
}

/// The builtins our writer may emit, as Coral's supported-ops table lists them.
pub const OP_RULES: &[OpRule] = &[
    OpRule { builtin: builtin::CONV_2D, max_version: 3, constraint: "same dilation in x and y" },
    OpRule { builtin: builtin::DEPTHWISE_CONV_2D, max_version: 3, constraint: "same dilation in x and y; depth multiplier 1 (kept, undocumented limit)" },
    OpRule { builtin: builtin::FULLY_CONNECTED, max_version: 4, constraint: "default weight format only" },
    OpRule { builtin: builtin::ADD, max_version: 2, constraint: "none" },
    OpRule { builtin: builtin::MUL, max_version: 3, constraint: "none (broadcast by a [1,1,1,C] gate: compilers since 2020)" },
    OpRule { builtin: builtin::LOGISTIC, max_version: 2, constraint: "none" },
    OpRule { builtin: builtin::MEAN, max_version: 2, constraint: "no batch reduction; a channel reduction needs C % 4 == 0" },
    OpRule { builtin: builtin::RESHAPE, max_version: 1, constraint: "may stay on the CPU for large tensors" },
    OpRule { builtin: builtin::PAD, max_version: 2, constraint: "not along the batch dimension" },
    OpRule { builtin: builtin::QUANTIZE, max_version: 1, constraint: "runtime 13+ (int8 <-> uint8 at the I/O edge)" },
];

/// How one op fares against the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct OpCheck {
    pub index: usize,
    pub node: String,
    pub op: &'static str,
    pub version: i32,
    /// Why the Edge TPU would not map it; empty = supported.
    pub problems: Vec<String>,
}

impl OpCheck {
    pub fn supported(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check every op of `model` (in order) against [`OP_RULES`] and the tensor rules.
pub fn check_edgetpu(model: &QModel) -> Vec<OpCheck> {
    model.ops.iter().enumerate().map(|(index, op)| check_op(model, index, op)).collect()
}

fn check_op(model: &QModel, index: usize, op: &QOp) -> OpCheck {
    let code = op_code(model, op);
    let mut problems = vec![];
    match OP_RULES.iter().find(|r| r.builtin == code.builtin) {
        None => problems.push(format!("{} is not an Edge TPU op", builtin_name(code.builtin))),
        Some(r) if code.version > r.max_version => {
            problems.push(format!("version {} is newer than the compiler knows ({})", code.version, r.max_version))
        }
        Some(_) => {}
    }
    let tensor = |i: usize| model.tensors.get(i);
    let boundary = op.kind == OpKind::Quantize;
    for (slot, &t) in op.inputs.iter().chain(&op.outputs).enumerate() {
        let Some(t) = tensor(t) else {
            problems.push(format!("operand {slot} does not exist"));
            continue;
        };
        problems.extend(tensor_problems(t, boundary));
    }
    let input = op.inputs.first().and_then(|&t| tensor(t));
    match &op.kind {
        OpKind::DepthwiseConv2d { .. } => {
            let (f, x) = (op.inputs.get(1).and_then(|&t| tensor(t)), input);
            if let (Some(f), Some(x)) = (f, x) {
                if f.shape.last() != x.shape.last() {
                    problems.push("depth multiplier is not 1".into());
                }
            }
        }
        OpKind::Mean { .. } => match op.inputs.get(1).and_then(|&t| tensor(t)).and_then(|t| t.data.as_ref()) {
            Some(ConstData::I32(axes)) => {
                if axes.contains(&0) {
                    problems.push("MEAN reduces the batch dimension".into());
                }
                let c = input.and_then(|x| x.shape.last().copied()).unwrap_or(0);
                if axes.contains(&3) && !c.is_multiple_of(4) {
                    problems.push(format!("MEAN over channels needs C % 4 == 0 (C = {c})"));
                }
            }
            _ => problems.push("MEAN axes are not an int32 constant".into()),
        },
        OpKind::Pad => match op.inputs.get(1).and_then(|&t| tensor(t)).and_then(|t| t.data.as_ref()) {
            Some(ConstData::I32(p)) if p.len() >= 2 && p[0] == 0 && p[1] == 0 => {}
            _ => problems.push("PAD along the batch dimension (or paddings not constant)".into()),
        },
        _ => {}
    }
    OpCheck { index, node: op.node.clone(), op: builtin_name(code.builtin), version: code.version, problems }
}

/// Model-wide tensor rules: 8-bit activations and weights (int32 only for biases and op
/// parameters; uint8 only across the boundary QUANTIZE), static non-empty shapes, rank ≤ 4 with
/// only the 3 innermost dimensions above 1 (so batch 1).
fn tensor_problems(t: &QTensor, boundary: bool) -> Vec<String> {
    let mut p = vec![];
    match (t.dtype, &t.data) {
        (DType::Int8, _) => {}
        (DType::UInt8, None) if boundary => {}
        (DType::Int32, Some(_)) => {}
        (d, _) => p.push(format!("tensor {:?} is {d:?}{}", t.name, if t.data.is_some() { " constant" } else { "" })),
    }
    if t.shape.is_empty() || t.shape.contains(&0) {
        p.push(format!("tensor {:?} has no static non-empty shape", t.name));
    }
    // Constants (filters [O,kh,kw,I], paddings) are parameters, not mapped activations.
    if t.data.is_none() {
        let outer = t.shape.len().saturating_sub(3);
        if t.shape.len() > 4 || t.shape[..outer].iter().any(|&d| d > 1) {
            p.push(format!("tensor {:?} {:?}: only the 3 innermost dimensions may exceed 1 (batch 1)", t.name, t.shape));
        }
    }
    p
}
