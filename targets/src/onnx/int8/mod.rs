//! int8 ONNX in QOperator form, from the same int8 model (`QModel`) the coral target writes — so
//! its parameters are the calibrated TFLite ones and our int8 reference executor predicts it.
//!
//! Convolutions (and the classifier, a 1×1 conv) become `QLinearConv`: int8 activations,
//! per-channel int8 weights, int32 bias — integer kernels in tract (im2col + i8 matmul) and in
//! onnxruntime. ONNX's standard domain has no integer form of the element-wise ops
//! (QLinearAdd/Mul/Sigmoid/GlobalAveragePool are com.microsoft contrib ops, which tract does not
//! register), so they are `DequantizeLinear → op → QuantizeLinear` with the model's own
//! parameters: tract turns the unary `DQ → Sigmoid → Q` chains into 256-entry lookup tables and
//! runs Add/Mul/GlobalAveragePool in f32 between the conversions; onnxruntime fuses the same
//! patterns into its QLinear* kernels. The model takes float NCHW `input` (QuantizeLinear first)
//! and returns float `logits` (DequantizeLinear last), like the fp32 artifact.

mod layout;

use std::collections::HashSet;

use effv2_quantize::{ConstData, DType, FusedAct, OpKind, QModel, QOp, QParams, Quant, TensorId};

use super::proto::*;
use super::write::{encode_model, int, ints, value_info};
use super::{OnnxError, OnnxOptions, INPUT, OUTPUT};
use layout::{hwc_to_c1hw, ohwi_to_oihw, onnx_pads, relu6_is_saturation, Pads};

/// How convolutions are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Int8Form {
    /// `QLinearConv`: integer convolution in every runtime.
    #[default]
    QLinear,
    /// `DequantizeLinear(x), DequantizeLinear(int8 weights, per channel), DequantizeLinear(int32
    /// bias) → Conv → QuantizeLinear`: onnxruntime fuses it back into QLinearConv; tract folds the
    /// weight dequantization at load time and runs its f32 convolution (its integer convolution is
    /// unfused and slow), rounding to the same int8 grid at every tensor.
    Qdq,
}

impl std::str::FromStr for Int8Form {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qlinear" => Ok(Int8Form::QLinear),
            "qdq" => Ok(Int8Form::Qdq),
            _ => Err(format!("unknown int8 ONNX form {s:?} (qlinear, qdq)")),
        }
    }
}

impl std::fmt::Display for Int8Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Int8Form::QLinear => "qlinear",
            Int8Form::Qdq => "qdq",
        })
    }
}

/// Serialize the int8 model `q` (batch 1, NHWC, TFLite layouts) as int8 ONNX with a static batch
/// of `opts.batch`, convolutions in `form`.
pub fn write_int8_onnx(q: &QModel, opts: &OnnxOptions, form: Int8Form) -> Result<Vec<u8>, OnnxError> {
    let mut w = Writer { q, form, nodes: vec![], inits: vec![], value: vec![None; q.tensors.len()], padded: vec![None; q.tensors.len()], used: HashSet::new(), qparams: vec![None; q.tensors.len()] };
    // The graph's own input and output names are taken.
    w.used.extend([INPUT.to_string(), OUTPUT.to_string()]);
    let n = opts.batch.max(1) as i64;
    let (h, wd, c) = hwc(q, q.input, "the model input")?;
    let input = w.quantize(INPUT.to_string(), q.input)?;
    w.value[q.input] = Some(input);
    for op in &q.ops {
        w.op(op)?;
    }
    let out = w.int_value(q.output, "the model output")?;
    let (s, z) = w.qparams(q.output)?;
    w.node("DequantizeLinear", "output.dequantize", vec![out, s, z], OUTPUT, vec![]);
    // Logits [1, classes] → [N, classes]; any other output (a truncated model) [1,H,W,C] → NCHW.
    let out_dims: Vec<i64> = match q.output_tensor().shape.as_slice() {
        &[1, h, w, c] => vec![n, c as i64, h as i64, w as i64],
        s => std::iter::once(n).chain(s.iter().skip(1).map(|&d| d as i64)).collect(),
    };
    let graph = GraphProto {
        node: w.nodes,
        name: "effv2-int8".into(),
        initializer: w.inits,
        doc_string: String::new(),
        input: vec![value_info(INPUT, &[n, c as i64, h as i64, wd as i64])],
        output: vec![value_info(OUTPUT, &out_dims)],
        value_info: vec![],
    };
    Ok(encode_model(graph, opts))
}

fn unsupported(node: &str, op: &str, why: impl Into<String>) -> OnnxError {
    OnnxError::Unsupported { node: node.into(), op: op.into(), why: why.into() }
}

/// (H, W, C) of a `[1, H, W, C]` tensor.
fn hwc(q: &QModel, t: TensorId, what: &str) -> Result<(usize, usize, usize), OnnxError> {
    match q.tensors.get(t).map(|t| t.shape.as_slice()) {
        Some(&[1, h, w, c]) => Ok((h, w, c)),
        s => Err(unsupported(what, "tensor", format!("shape {s:?} is not [1, H, W, C]"))),
    }
}

struct Writer<'a> {
    q: &'a QModel,
    form: Int8Form,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    /// The ONNX name of each int8 tensor's value (NCHW).
    value: Vec<Option<String>>,
    /// Outputs of PAD ops: their input and pads, folded into the conv that reads them.
    padded: Vec<Option<(TensorId, Pads)>>,
    used: HashSet<String>,
    /// Scale and zero-point initializers of each tensor, made once.
    qparams: Vec<Option<(String, String)>>,
}

impl Writer<'_> {
    /// `base`, or `base#k` if taken: node outputs and initializers share ONNX's one namespace.
    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while !self.used.insert(name.clone()) {
            k += 1;
            name = format!("{base}#{k}");
        }
        name
    }

    fn node(&mut self, op: &str, name: &str, input: Vec<String>, output: &str, attribute: Vec<AttributeProto>) {
        let name = self.unique(&format!("{name}.node"));
        self.nodes.push(NodeProto { input, output: vec![output.to_string()], name, op_type: op.into(), domain: String::new(), attribute });
    }

    fn init(&mut self, name: &str, dims: Vec<i64>, data_type: i32, raw_data: Vec<u8>) -> String {
        let name = self.unique(name);
        self.inits.push(TensorProto { dims, data_type, name: name.clone(), raw_data });
        name
    }

    fn params(&self, t: TensorId) -> Result<QParams, OnnxError> {
        let qt = &self.q.tensors[t];
        qt.params().ok_or_else(|| unsupported(&qt.name, "tensor", "no per-tensor quantization parameters"))
    }

    /// (scale, zero point) initializers of tensor `t`, typed as its integers.
    fn qparams(&mut self, t: TensorId) -> Result<(String, String), OnnxError> {
        if let Some(p) = &self.qparams[t] {
            return Ok(p.clone());
        }
        let p = self.params(t)?;
        let name = self.q.tensors[t].name.clone();
        let s = self.init(&format!("{name}.scale"), vec![], data_type::FLOAT, p.scale.to_le_bytes().to_vec());
        // Activations travel as uint8 (int8 value + 128, zero point + 128: the same real values
        // and the same requantization): x86 integer kernels (onnxruntime's, tract's) are built for
        // u8 activations × i8 weights, and run s8 × s8 on a slow path.
        let zp = match self.q.tensors[t].dtype {
            DType::UInt8 => p.zero_point.clamp(0, 255) as u8,
            _ => (p.zero_point.clamp(-128, 127) + 128) as u8,
        };
        let dt = data_type::UINT8;
        let z = self.init(&format!("{name}.zero_point"), vec![], dt, vec![zp]);
        self.qparams[t] = Some((s.clone(), z.clone()));
        Ok((s, z))
    }

    fn int_value(&self, t: TensorId, reader: &str) -> Result<String, OnnxError> {
        if self.padded[t].is_some() {
            return Err(unsupported(reader, "PAD", "a padded tensor is only supported as a convolution's input"));
        }
        self.value[t].clone().ok_or_else(|| unsupported(reader, "tensor", format!("reads tensor #{t} before it is computed")))
    }

    /// QuantizeLinear of float `x` into tensor `t`'s integers; returns the int value's name.
    fn quantize(&mut self, x: String, t: TensorId) -> Result<String, OnnxError> {
        let (s, z) = self.qparams(t)?;
        let out = self.unique(&self.q.tensors[t].name.clone());
        self.node("QuantizeLinear", &out.clone(), vec![x, s, z], &out, vec![]);
        Ok(out)
    }

    /// A DequantizeLinear of tensor `t` of its own (one reader each, so tract can fold unary
    /// chains into lookup tables).
    fn dequantize(&mut self, t: TensorId, reader: &str) -> Result<String, OnnxError> {
        let x = self.int_value(t, reader)?;
        let (s, z) = self.qparams(t)?;
        let out = self.unique(&format!("{x}.float"));
        self.node("DequantizeLinear", &out.clone(), vec![x, s, z], &out, vec![]);
        Ok(out)
    }

    /// `DQ(inputs…) → op → Q(out)`.
    fn float_op(&mut self, op: &QOp, onnx_op: &str, inputs: &[TensorId], extra: Vec<String>, attrs: Vec<AttributeProto>) -> Result<(), OnnxError> {
        let mut xs = inputs.iter().map(|&t| self.dequantize(t, &op.node)).collect::<Result<Vec<_>, _>>()?;
        xs.extend(extra);
        let out = op.outputs[0];
        let f = self.unique(&format!("{}.float", self.q.tensors[out].name));
        self.node(onnx_op, &f.clone(), xs, &f, attrs);
        let v = self.quantize(f, out)?;
        self.value[out] = Some(v);
        Ok(())
    }

    fn input(&self, op: &QOp, k: usize) -> Result<TensorId, OnnxError> {
        op.inputs.get(k).copied().filter(|&t| t < self.q.tensors.len()).ok_or_else(|| unsupported(&op.node, op.kind.name(), format!("input {k} is missing")))
    }

    fn op(&mut self, op: &QOp) -> Result<(), OnnxError> {
        let name = op.kind.name();
        let &[out] = op.outputs.as_slice() else { return Err(unsupported(&op.node, name, "ops have exactly one output")) };
        if out >= self.q.tensors.len() {
            return Err(unsupported(&op.node, name, "output tensor does not exist"));
        }
        match &op.kind {
            OpKind::Conv2d { .. } | OpKind::DepthwiseConv2d { .. } => self.conv(op, out),
            OpKind::Add => self.float_op(op, "Add", &[self.input(op, 0)?, self.input(op, 1)?], vec![], vec![]),
            OpKind::Mul => self.float_op(op, "Mul", &[self.input(op, 0)?, self.input(op, 1)?], vec![], vec![]),
            OpKind::Logistic => self.float_op(op, "Sigmoid", &[self.input(op, 0)?], vec![], vec![]),
            OpKind::Quantize => self.float_op(op, "Identity", &[self.input(op, 0)?], vec![], vec![]),
            OpKind::Mean { keep_dims } => {
                let axes = match &self.q.tensors[self.input(op, 1)?].data {
                    Some(ConstData::I32(a)) => a.clone(),
                    _ => vec![],
                };
                if !keep_dims || axes != [1, 2] {
                    return Err(unsupported(&op.node, name, format!("only the mean over H and W keeping dims (axes {axes:?}, keep_dims {keep_dims})")));
                }
                self.float_op(op, "GlobalAveragePool", &[self.input(op, 0)?], vec![], vec![])
            }
            OpKind::Reshape => {
                // [N,C,1,1] → [N,C] is the same order in NCHW and NHWC only when H = W = 1.
                let x = self.input(op, 0)?;
                let (h, w, _) = hwc(self.q, x, &op.node)?;
                if h != 1 || w != 1 || self.q.tensors[out].shape.len() != 2 {
                    return Err(unsupported(&op.node, name, "only the [1,1,1,C] → [1,C] classifier reshape"));
                }
                let xv = self.int_value(x, &op.node)?;
                let v = self.unique(&self.q.tensors[out].name.clone());
                self.node("Flatten", &v.clone(), vec![xv], &v, vec![int("axis", 1)]);
                self.value[out] = Some(v);
                Ok(())
            }
            OpKind::Pad => {
                let x = self.input(op, 0)?;
                let p = match &self.q.tensors[self.input(op, 1)?].data {
                    Some(ConstData::I32(p)) if p.len() == 8 && p.iter().all(|&v| v >= 0) && p[..2] == [0, 0] && p[6..] == [0, 0] => p.clone(),
                    _ => return Err(unsupported(&op.node, name, "paddings must be a non-negative [4, 2] constant padding only H and W")),
                };
                if self.padded[x].is_some() {
                    return Err(unsupported(&op.node, name, "a PAD of a PAD"));
                }
                self.padded[out] = Some((x, [p[2], p[3], p[4], p[5]].map(|v| v as usize)));
                Ok(())
            }
        }
    }

    fn conv(&mut self, op: &QOp, out: TensorId) -> Result<(), OnnxError> {
        let name = op.kind.name();
        let (stride, padding, act, depthwise) = match op.kind {
            OpKind::Conv2d { stride, padding, act } => (stride, padding, act, false),
            OpKind::DepthwiseConv2d { stride, padding, act } => (stride, padding, act, true),
            _ => return Err(unsupported(&op.node, name, "not a convolution")),
        };
        let (x, pre) = match self.padded[self.input(op, 0)?] {
            Some(p) => p,
            None => (self.input(op, 0)?, [0; 4]),
        };
        let (h, w, c) = hwc(self.q, x, &op.node)?;
        let (f, b) = (&self.q.tensors[self.input(op, 1)?], &self.q.tensors[self.input(op, 2)?]);
        let (Some(ConstData::I8(wv)), Quant::PerChannel { scales, .. }, Some(ConstData::I32(bias))) = (&f.data, &f.quant, &b.data) else {
            return Err(unsupported(&op.node, name, "filter must be per-channel int8 and bias int32 constants"));
        };
        let (o, k, weights, dims, group) = match (f.shape.as_slice(), depthwise) {
            (&[1, kh, kw, fc], true) if kh == kw && fc == c && wv.len() == f.numel() => (c, kh, hwc_to_c1hw(wv, kh, c), vec![c, 1, kh, kh], c),
            (&[fo, kh, kw, fi], false) if kh == kw && fi == c && wv.len() == f.numel() => (fo, kh, ohwi_to_oihw(wv, fo, kh, c), vec![fo, c, kh, kh], 1),
            (s, _) => return Err(unsupported(&op.node, name, format!("filter shape {s:?} does not fit a {c}-channel input"))),
        };
        if scales.len() != o || bias.len() != o || stride == 0 {
            return Err(unsupported(&op.node, name, format!("{} scales and {} biases for {o} output channels", scales.len(), bias.len())));
        }
        let xv = self.value[x].clone().ok_or_else(|| unsupported(&op.node, name, "reads a tensor before it is computed"))?;
        let (xs, xz) = self.qparams(x)?;
        let base = f.name.clone();
        let wname = self.init(&base, dims.iter().map(|&d| d as i64).collect(), data_type::INT8, weights.iter().map(|&v| v as u8).collect());
        let ws = self.init(&format!("{base}.scale"), vec![o as i64], data_type::FLOAT, scales.iter().flat_map(|s| s.to_le_bytes()).collect());
        let wz = self.init(&format!("{base}.zero_point"), vec![o as i64], data_type::INT8, vec![0; o]);
        let bname = self.init(&b.name.clone(), vec![o as i64], data_type::INT32, bias.iter().flat_map(|v| v.to_le_bytes()).collect());
        let attrs = vec![
            ints("kernel_shape", &[k as i64, k as i64]),
            ints("strides", &[stride as i64, stride as i64]),
            ints("pads", &onnx_pads(pre, padding, h, w, k, stride)),
            ints("dilations", &[1, 1]),
            int("group", group as i64),
        ];
        let clamp = act == FusedAct::Relu6 && !relu6_is_saturation(self.params(out)?);
        let out_name = self.q.tensors[out].name.clone();
        let v = match self.form {
            Int8Form::QLinear => {
                let (ys, yz) = self.qparams(out)?;
                let inputs = vec![xv, xs, xz, wname, ws, wz, ys, yz, bname];
                let v = self.unique(&if clamp { format!("{out_name}.conv") } else { out_name });
                self.node("QLinearConv", &v.clone(), inputs, &v, attrs);
                v
            }
            Int8Form::Qdq => {
                // Bias scale = input scale × weight scale, zero point 0: what TFLite's int32 bias means.
                let x_scale = self.params(x)?.scale;
                let bs = self.init(&format!("{}.scale", b.name), vec![o as i64], data_type::FLOAT, scales.iter().flat_map(|s| (x_scale * s).to_le_bytes()).collect());
                let bz = self.init(&format!("{}.zero_point", b.name), vec![o as i64], data_type::INT32, vec![0; 4 * o]);
                let xf = self.dequantize(x, &op.node)?;
                let wf = self.unique(&format!("{wname}.float"));
                self.node("DequantizeLinear", &wf.clone(), vec![wname, ws, wz], &wf, vec![int("axis", 0)]);
                let bf = self.unique(&format!("{bname}.float"));
                self.node("DequantizeLinear", &bf.clone(), vec![bname, bs, bz], &bf, vec![int("axis", 0)]);
                let yf = self.unique(&format!("{out_name}.float"));
                self.node("Conv", &yf.clone(), vec![xf, wf, bf], &yf, attrs);
                self.quantize(yf, out)?
            }
        };
        self.value[out] = Some(v);
        if clamp {
            // ReLU6's range is not the output's int8 range: clamp in real values, like TFLite's
            // quantized activation range (a 256-entry table in tract).
            let lo = self.init(&format!("{}.min", op.node), vec![], data_type::FLOAT, 0f32.to_le_bytes().to_vec());
            let hi = self.init(&format!("{}.max", op.node), vec![], data_type::FLOAT, 6f32.to_le_bytes().to_vec());
            self.float_op(op, "Clip", &[out], vec![lo, hi], vec![])?;
        }
        Ok(())
    }
}
