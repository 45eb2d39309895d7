//! QModel → `.tflite` bytes. The quantized model already has TFLite's layouts and parameters,
//! so this is a one-to-one serialization: one buffer per constant (after the empty sentinel
//! buffer 0 that activations point at), one opcode per (builtin, version), ops in order.

use std::collections::BTreeMap;

use effv2_quantize::{ConstData, DType, FusedAct, OpKind, Padding, QModel, QOp, Quant};

use super::codes::{min_runtime_version, op_code, OpCode};
use super::schema::{self as fb, Fbb};

#[derive(Debug, thiserror::Error)]
pub enum TfliteError {
    #[error(transparent)]
    Quantize(#[from] effv2_quantize::QuantizeError),
    #[error("tensor {tensor:?}: {why}")]
    Tensor { tensor: String, why: String },
    #[error("op {op} ({node:?}): {why}")]
    Op { op: &'static str, node: String, why: String },
    #[error("the model is too large for a flatbuffer (over 2 GiB)")]
    TooLarge,
}

/// Serialize `model`; `description` goes into the model's description string.
pub fn write_tflite(model: &QModel, description: &str) -> Result<Vec<u8>, TfliteError> {
    check_refs(model)?;
    let mut b = Fbb::with_capacity(1024 + 2 * model.constant_bytes());
    // Opcodes in first-use order.
    let mut codes: Vec<OpCode> = vec![];
    let mut code_index = BTreeMap::new();
    for op in &model.ops {
        let c = op_code(model, op);
        code_index.entry(c).or_insert_with(|| {
            codes.push(c);
            codes.len() - 1
        });
    }
    // Buffers: 0 = empty sentinel; then one per constant; then the runtime-version metadata.
    let mut buffers = vec![fb::buffer(&mut b, None)];
    let mut buffer_of = vec![0u32; model.tensors.len()];
    for (i, t) in model.tensors.iter().enumerate() {
        let bytes: Vec<u8> = match &t.data {
            Some(ConstData::I8(v)) => v.iter().map(|&x| x as u8).collect(),
            Some(ConstData::I32(v)) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            None => continue,
        };
        let data = fb::aligned_bytes(&mut b, &bytes);
        buffers.push(fb::buffer(&mut b, Some(data)));
        buffer_of[i] = (buffers.len() - 1) as u32;
    }
    let mut version = [0u8; 16];
    let v = min_runtime_version(&codes).as_bytes();
    version[..v.len()].copy_from_slice(v);
    let data = fb::aligned_bytes(&mut b, &version);
    buffers.push(fb::buffer(&mut b, Some(data)));
    let version_buffer = (buffers.len() - 1) as u32;

    let mut tensors = Vec::with_capacity(model.tensors.len());
    for (i, t) in model.tensors.iter().enumerate() {
        let dims: Vec<i32> = t.shape.iter().map(|&d| d as i32).collect();
        let shape = b.create_vector(&dims);
        let name = b.create_string(&t.name);
        let quantization = match &t.quant {
            Quant::None => None,
            Quant::PerTensor(p) => Some(fb::quantization(&mut b, &[p.scale], &[p.zero_point as i64], 0)),
            Quant::PerChannel { scales, axis } => Some(fb::quantization(&mut b, scales, &vec![0i64; scales.len()], *axis as i32)),
        };
        let dtype = match t.dtype {
            DType::Int8 => fb::tensor_type::INT8,
            DType::UInt8 => fb::tensor_type::UINT8,
            DType::Int32 => fb::tensor_type::INT32,
        };
        tensors.push(fb::tensor(&mut b, fb::TensorFields { shape, dtype, buffer: buffer_of[i], name, quantization }));
    }
    let mut operators = Vec::with_capacity(model.ops.len());
    for op in &model.ops {
        let opts = options(&mut b, model, op)?;
        let ins: Vec<i32> = op.inputs.iter().map(|&t| t as i32).collect();
        let outs: Vec<i32> = op.outputs.iter().map(|&t| t as i32).collect();
        let (inputs, outputs) = (b.create_vector(&ins), b.create_vector(&outs));
        let opcode = code_index[&op_code(model, op)] as u32;
        operators.push(fb::operator(&mut b, opcode, inputs, outputs, opts));
    }
    let op_codes: Vec<_> = codes.iter().map(|c| fb::operator_code(&mut b, c.builtin, c.version)).collect();
    let subgraph = fb::SubGraphFields {
        tensors: b.create_vector(&tensors),
        inputs: b.create_vector(&[model.input as i32]),
        outputs: b.create_vector(&[model.output as i32]),
        operators: b.create_vector(&operators),
        name: b.create_string("main"),
    };
    let subgraph = fb::subgraph(&mut b, subgraph);
    let meta_name = b.create_string("min_runtime_version");
    let meta = fb::metadata(&mut b, meta_name, version_buffer);
    let fields = fb::ModelFields {
        operator_codes: b.create_vector(&op_codes),
        subgraphs: b.create_vector(&[subgraph]),
        description: b.create_string(description),
        buffers: b.create_vector(&buffers),
        metadata: b.create_vector(&[meta]),
    };
    let root = fb::model(&mut b, fields);
    b.finish(root, Some(fb::FILE_IDENTIFIER));
    Ok(b.finished_data().to_vec())
}

fn options<'a>(b: &mut Fbb<'a>, model: &QModel, op: &QOp) -> Result<Option<(u8, flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>)>, TfliteError> {
    let padding = |p: Padding| if p == Padding::Same { fb::PADDING_SAME } else { fb::PADDING_VALID };
    let act = |a: FusedAct| if a == FusedAct::Relu6 { fb::ACT_RELU6 } else { fb::ACT_NONE };
    let stride = |s: usize| i32::try_from(s).map_err(|_| op_err(op, "stride out of range"));
    Ok(Some(match &op.kind {
        OpKind::Conv2d { stride: s, padding: p, act: a } => (fb::options::CONV_2D, fb::conv2d_options(b, padding(*p), stride(*s)?, act(*a))),
        OpKind::DepthwiseConv2d { stride: s, padding: p, act: a } => {
            (fb::options::DEPTHWISE_CONV_2D, fb::depthwise_options(b, padding(*p), stride(*s)?, act(*a)))
        }
        OpKind::Add => (fb::options::ADD, fb::activation_options(b, fb::ACT_NONE)),
        OpKind::Mul => (fb::options::MUL, fb::activation_options(b, fb::ACT_NONE)),
        OpKind::Logistic => return Ok(None),
        OpKind::Mean { keep_dims } => (fb::options::REDUCER, fb::reducer_options(b, *keep_dims)),
        OpKind::Reshape => {
            let out = op.outputs.first().and_then(|&t| model.tensors.get(t)).ok_or_else(|| op_err(op, "no output"))?;
            let dims: Vec<i32> = out.shape.iter().map(|&d| d as i32).collect();
            let v = b.create_vector(&dims);
            (fb::options::RESHAPE, fb::reshape_options(b, v))
        }
        OpKind::Pad => (fb::options::PAD, fb::empty_options(b)),
        OpKind::Quantize => (fb::options::QUANTIZE, fb::empty_options(b)),
    }))
}

fn op_err(op: &QOp, why: &str) -> TfliteError {
    TfliteError::Op { op: op.kind.name(), node: op.node.clone(), why: why.into() }
}

/// Every tensor index in range, every shape representable, and not over the flatbuffer limit:
/// checked up front so serialization cannot fail halfway (or panic inside the builder).
fn check_refs(model: &QModel) -> Result<(), TfliteError> {
    let n = model.tensors.len();
    if model.input >= n || model.output >= n {
        return Err(TfliteError::Tensor { tensor: "<io>".into(), why: "model input or output does not exist".into() });
    }
    for op in &model.ops {
        if op.inputs.iter().chain(&op.outputs).any(|&t| t >= n) {
            return Err(op_err(op, "names a tensor that does not exist"));
        }
    }
    for t in &model.tensors {
        if t.shape.iter().any(|&d| i32::try_from(d).is_err()) {
            return Err(TfliteError::Tensor { tensor: t.name.clone(), why: "a dimension exceeds int32".into() });
        }
    }
    // Data, padding and per-tensor tables: stay well inside the builder's 2 GiB cap.
    if model.constant_bytes() + 512 * (n + model.ops.len()) > (1 << 31) - (1 << 24) {
        return Err(TfliteError::TooLarge);
    }
    Ok(())
}
