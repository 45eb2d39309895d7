//! The quantized model: TFLite-shaped (NHWC tensors with quantization parameters, constant
//! buffers, builtin ops in execution order), so the TFLite writer is a plain serializer of it and
//! the int8 reference executor runs exactly what the file will say.

use crate::params::QParams;

/// Index into [`QModel::tensors`].
pub type TensorId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    Int8,
    UInt8,
    Int32,
}

/// Model input/output element type. uint8 I/O adds a QUANTIZE op at each boundary (the int8 grid
/// shifted by 128), the form older Edge TPU runtimes and uint8 camera pipelines expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoType {
    #[default]
    Int8,
    UInt8,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Quant {
    /// Plain integers (shapes, axes, paddings).
    None,
    PerTensor(QParams),
    /// Symmetric per-channel scales along `axis` (zero points all 0): conv and depthwise
    /// weights and their biases.
    PerChannel { scales: Vec<f32>, axis: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstData {
    I8(Vec<i8>),
    I32(Vec<i32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub quant: Quant,
    /// Constant contents (weights, biases, op parameters); `None` for activations.
    pub data: Option<ConstData>,
}

impl QTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Per-tensor parameters, when the tensor has them.
    pub fn params(&self) -> Option<QParams> {
        match &self.quant {
            Quant::PerTensor(p) => Some(*p),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    /// TensorFlow SAME: output = ceil(in / stride), the odd pixel of padding at the bottom/right.
    Same,
    Valid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedAct {
    None,
    /// Clamp to the quantized image of [0, 6] in the output's own parameters.
    Relu6,
}

/// The builtin ops the int8 model uses — the Edge-TPU-mappable subset of TFLite.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// Inputs (x, filter [O,kh,kw,I], bias int32 [O]).
    Conv2d { stride: usize, padding: Padding, act: FusedAct },
    /// Inputs (x, filter [1,kh,kw,C], bias int32 [C]); depth multiplier 1.
    DepthwiseConv2d { stride: usize, padding: Padding, act: FusedAct },
    Add,
    /// Second input may be `[1,1,1,C]`, broadcast over H and W (the SE gate).
    Mul,
    /// Output parameters fixed at 1/256, -128.
    Logistic,
    /// Inputs (x, axes int32 const); our models reduce axes [1, 2].
    Mean { keep_dims: bool },
    /// Inputs (x, new shape int32 const); same parameters in and out.
    Reshape,
    /// Inputs (x, paddings int32 [rank, 2]); pads with the zero point (real 0).
    Pad,
    /// int8 ↔ uint8 requantization at the model boundary.
    Quantize,
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Conv2d { .. } => "CONV_2D",
            OpKind::DepthwiseConv2d { .. } => "DEPTHWISE_CONV_2D",
            OpKind::Add => "ADD",
            OpKind::Mul => "MUL",
            OpKind::Logistic => "LOGISTIC",
            OpKind::Mean { .. } => "MEAN",
            OpKind::Reshape => "RESHAPE",
            OpKind::Pad => "PAD",
            OpKind::Quantize => "QUANTIZE",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QOp {
    pub kind: OpKind,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
    /// The graph node this op comes from (for reports and errors).
    pub node: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QModel {
    pub tensors: Vec<QTensor>,
    /// In execution order.
    pub ops: Vec<QOp>,
    pub input: TensorId,
    pub output: TensorId,
}

impl QModel {
    pub fn input_tensor(&self) -> &QTensor {
        &self.tensors[self.input]
    }
    pub fn output_tensor(&self) -> &QTensor {
        &self.tensors[self.output]
    }

    /// Bytes of constant data (weights, biases, op parameters).
    pub fn constant_bytes(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| match &t.data {
                Some(ConstData::I8(v)) => v.len(),
                Some(ConstData::I32(v)) => 4 * v.len(),
                None => 0,
            })
            .sum()
    }
}
