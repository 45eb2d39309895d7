//! The int8 reference executor: runs a [`QModel`] in integer arithmetic exactly as TFLite's
//! reference kernels (`BUILTIN_REF`) do, so its outputs predict the interpreter's bit for bit.
//! One sample at a time (the models are batch 1, as the Edge TPU requires).

mod conv;
mod elementwise;
mod mean;

use effv2_edge::Tensor;

use crate::fixed::round_f32;
use crate::model::{ConstData, DType, OpKind, QModel, QOp, QTensor};
use crate::params::QParams;
use crate::QuantizeError;

/// The integers of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Buf {
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl Buf {
    pub fn len(&self) -> usize {
        match self {
            Buf::I8(v) => v.len(),
            Buf::U8(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values widened to i32 (for comparisons and dequantization).
    pub fn to_i32(&self) -> Vec<i32> {
        match self {
            Buf::I8(v) => v.iter().map(|&x| x as i32).collect(),
            Buf::U8(v) => v.iter().map(|&x| x as i32).collect(),
        }
    }
}

impl QModel {
    fn io_params(&self, t: &QTensor) -> Result<QParams, QuantizeError> {
        t.params().ok_or_else(|| QuantizeError::Internal(format!("I/O tensor {:?} has no per-tensor parameters", t.name)))
    }

    /// One NCHW f32 batch `[N, C, H, W]` as the model's per-sample NHWC input integers.
    pub fn quantize_input(&self, x: &Tensor) -> Result<Vec<Buf>, QuantizeError> {
        let t = self.input_tensor();
        let (h, w, c) = match t.shape.as_slice() {
            &[1, h, w, c] => (h, w, c),
            s => return Err(QuantizeError::Internal(format!("model input shape {s:?} is not [1, H, W, C]"))),
        };
        let n = match *x.shape() {
            [n, xc, xh, xw] if n > 0 && (xc, xh, xw) == (c, h, w) => n,
            _ => return Err(QuantizeError::InputShape { want: vec![0, c, h, w], got: x.shape().to_vec() }),
        };
        let p = self.io_params(t)?;
        // uint8 inputs carry their own zero point (the int8 one + 128) and clamp to [0, 255].
        let (lo, hi) = if t.dtype == DType::UInt8 { (0, 255) } else { (-128, 127) };
        let mut out = Vec::with_capacity(n);
        for s in 0..n {
            let img = &x.data()[s * c * h * w..(s + 1) * c * h * w];
            let mut q = vec![0i32; c * h * w];
            for ch in 0..c {
                for i in 0..h * w {
                    let v = round_f32(img[ch * h * w + i] / p.scale) + p.zero_point as i64;
                    q[i * c + ch] = v.clamp(lo, hi) as i32;
                }
            }
            out.push(match t.dtype {
                DType::UInt8 => Buf::U8(q.iter().map(|&v| v as u8).collect()),
                _ => Buf::I8(q.iter().map(|&v| v as i8).collect()),
            });
        }
        Ok(out)
    }

    /// The output integers as real values.
    pub fn dequantize_output(&self, out: &Buf) -> Result<Vec<f32>, QuantizeError> {
        let p = self.io_params(self.output_tensor())?;
        Ok(out.to_i32().into_iter().map(|q| p.dequantize(q)).collect())
    }

    /// Run one sample: `input` holds the input tensor's integers (NHWC), the result the output's.
    pub fn execute(&self, input: &Buf) -> Result<Buf, QuantizeError> {
        let mut vals = self.execute_traced(input)?;
        vals[self.output].take().ok_or_else(|| QuantizeError::Internal("the output was never computed".into()))
    }

    /// [`Self::execute`] keeping every tensor's integers (`None` for constants): for per-tensor
    /// error reports against the f32 engine.
    pub fn execute_traced(&self, input: &Buf) -> Result<Vec<Option<Buf>>, QuantizeError> {
        let t = self.input_tensor();
        let dtype_ok = matches!((input, t.dtype), (Buf::I8(_), DType::Int8) | (Buf::U8(_), DType::UInt8));
        if !dtype_ok || input.len() != t.numel() {
            return Err(QuantizeError::InputShape { want: t.shape.clone(), got: vec![input.len()] });
        }
        let mut vals: Vec<Option<Buf>> = vec![None; self.tensors.len()];
        vals[self.input] = Some(input.clone());
        for op in &self.ops {
            let out = run_op(self, op, &vals).map_err(|reason| QuantizeError::Exec { node: op.node.clone(), op: op.kind.name(), reason })?;
            let &[o] = op.outputs.as_slice() else {
                return Err(QuantizeError::Exec { node: op.node.clone(), op: op.kind.name(), reason: "ops have exactly one output".into() });
            };
            if out.len() != self.tensors[o].numel() {
                return Err(QuantizeError::Internal(format!("{} wrote {} values for {:?}", op.kind.name(), out.len(), self.tensors[o].shape)));
            }
            vals[o] = Some(out);
        }
        Ok(vals)
    }

    /// Quantize `x` (NCHW f32), execute every sample and dequantize: `[N, outputs]`.
    pub fn run_f32(&self, x: &Tensor) -> Result<Tensor, QuantizeError> {
        let inputs = self.quantize_input(x)?;
        let mut data = vec![];
        for i in &inputs {
            data.extend(self.dequantize_output(&self.execute(i)?)?);
        }
        let per = self.output_tensor().numel();
        Tensor::new(vec![inputs.len(), per], data).map_err(|e| QuantizeError::Internal(e.to_string()))
    }
}

/// What a kernel needs of one tensor.
pub(crate) struct View<'a> {
    pub t: &'a QTensor,
    pub buf: Option<&'a Buf>,
}

impl View<'_> {
    /// The int8 values, exactly as many as the shape says (kernels index by shape).
    pub fn i8s(&self) -> Result<&[i8], String> {
        let v = match (self.buf, &self.t.data) {
            (Some(Buf::I8(v)), _) => v,
            (None, Some(ConstData::I8(v))) => v,
            _ => return Err(format!("tensor {:?} is not an int8 value here", self.t.name)),
        };
        self.sized(v)
    }
    pub fn i32s(&self) -> Result<&[i32], String> {
        match &self.t.data {
            Some(ConstData::I32(v)) => self.sized(v),
            _ => Err(format!("tensor {:?} is not an int32 constant", self.t.name)),
        }
    }
    fn sized<'v, T>(&self, v: &'v [T]) -> Result<&'v [T], String> {
        if v.len() == self.t.numel() {
            Ok(v)
        } else {
            Err(format!("tensor {:?} holds {} values for shape {:?}", self.t.name, v.len(), self.t.shape))
        }
    }
    pub fn params(&self) -> Result<QParams, String> {
        self.t.params().ok_or_else(|| format!("tensor {:?} has no per-tensor parameters", self.t.name))
    }
    /// `[1, H, W, C]` as (H, W, C).
    pub fn hwc(&self) -> Result<(usize, usize, usize), String> {
        match self.t.shape.as_slice() {
            &[1, h, w, c] => Ok((h, w, c)),
            s => Err(format!("tensor {:?} has shape {s:?}, not [1, H, W, C]", self.t.name)),
        }
    }
}

fn run_op(m: &QModel, op: &QOp, vals: &[Option<Buf>]) -> Result<Buf, String> {
    let view = |k: usize| -> Result<View<'_>, String> {
        let &id = op.inputs.get(k).ok_or_else(|| format!("missing input {k}"))?;
        let t = m.tensors.get(id).ok_or_else(|| format!("input {k} names tensor #{id}, which does not exist"))?;
        let buf = vals[id].as_ref();
        if buf.is_none() && t.data.is_none() {
            return Err(format!("input {k} ({:?}) is read before it is computed", t.name));
        }
        Ok(View { t, buf })
    };
    let out = op.outputs.first().and_then(|&o| m.tensors.get(o)).ok_or("missing output")?;
    match &op.kind {
        OpKind::Conv2d { stride, padding, act } => conv::conv2d(&view(0)?, &view(1)?, &view(2)?, out, *stride, *padding, *act, false),
        OpKind::DepthwiseConv2d { stride, padding, act } => {
            conv::conv2d(&view(0)?, &view(1)?, &view(2)?, out, *stride, *padding, *act, true)
        }
        OpKind::Add => elementwise::add(&view(0)?, &view(1)?, out),
        OpKind::Mul => elementwise::mul(&view(0)?, &view(1)?, out),
        OpKind::Logistic => elementwise::logistic(&view(0)?, out),
        OpKind::Mean { .. } => mean::mean_hw(&view(0)?, &view(1)?, out),
        OpKind::Reshape => Ok(Buf::I8(view(0)?.i8s()?.to_vec())),
        OpKind::Pad => elementwise::pad(&view(0)?, &view(1)?, out),
        OpKind::Quantize => elementwise::requantize(&view(0)?, out),
    }
}
