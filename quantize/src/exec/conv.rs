//! CONV_2D and DEPTHWISE_CONV_2D with per-channel weights, as TFLite's reference integer kernels:
//! an int32 sum of `w · (x − x_zp)` over the taps inside the image (padding contributes nothing),
//! plus the bias, requantized per channel by `MultiplyByQuantizedMultiplier`, plus the output zero
//! point, clamped to the fused activation's quantized range.

use rayon::prelude::*;

use super::{Buf, View};
use crate::fixed::{multiply_by_quantized_multiplier, quantize_multiplier, round_f32};
use crate::model::{FusedAct, Padding, QTensor, Quant};
use crate::params::QParams;

/// The quantized clamp of a fused activation (TFLite's `CalculateActivationRangeQuantized`, with
/// its f32 division and round-half-away).
pub(crate) fn activation_range(act: FusedAct, out: QParams) -> (i32, i32) {
    let q = |v: f32| (out.zero_point as i64 + round_f32(v / out.scale)).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    match act {
        FusedAct::None => (-128, 127),
        FusedAct::Relu6 => ((-128).max(q(0.0)), 127.min(q(6.0))),
    }
}

/// Per-channel `(multiplier, shift)` for `in_scale · w_scale_c / out_scale`, computed in f64 from
/// the f32 scales as TFLite's `PopulateConvolutionQuantizationParams` does.
fn channel_multipliers(in_scale: f32, w_scales: &[f32], out_scale: f32) -> Vec<(i32, i32)> {
    w_scales.iter().map(|&s| quantize_multiplier(in_scale as f64 * s as f64 / out_scale as f64)).collect()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d(x: &View, f: &View, b: &View, out: &QTensor, stride: usize, padding: Padding, act: FusedAct, depthwise: bool) -> Result<Buf, String> {
    let (h, w, c) = x.hwc()?;
    let xp = x.params()?;
    let op = out.params().ok_or("output without per-tensor parameters")?;
    let (oh, ow, oc) = match out.shape.as_slice() {
        &[1, oh, ow, oc] => (oh, ow, oc),
        s => return Err(format!("output shape {s:?} is not [1, H, W, C]")),
    };
    let (k, kw) = match (f.t.shape.as_slice(), depthwise) {
        (&[1, kh, kw, fc], true) if fc == oc && c == oc => (kh, kw),
        (&[fo, kh, kw, fi], false) if fo == oc && fi == c => (kh, kw),
        (s, _) => return Err(format!("filter shape {s:?} does not fit input {c} / output {oc} channels")),
    };
    if k != kw || stride == 0 {
        return Err("only square kernels and positive strides".into());
    }
    let Quant::PerChannel { scales, .. } = &f.t.quant else { return Err("filter without per-channel scales".into()) };
    let (wq, bias) = (f.i8s()?, b.i32s()?);
    if scales.len() != oc || bias.len() != oc || wq.len() != f.t.numel() {
        return Err(format!("{} scales and {} biases for {oc} channels", scales.len(), bias.len()));
    }
    // TFLite SAME pads floor(total / 2) before; VALID none (explicit pads come from a PAD op).
    let (pad_t, pad_l) = match padding {
        Padding::Same => (same_before(h, k, stride, oh), same_before(w, k, stride, ow)),
        Padding::Valid => (0, 0),
    };
    let want_h = if padding == Padding::Same { h.div_ceil(stride) } else { (h.saturating_sub(k)) / stride + 1 };
    let want_w = if padding == Padding::Same { w.div_ceil(stride) } else { (w.saturating_sub(k)) / stride + 1 };
    if h < k && padding == Padding::Valid || (oh, ow) != (want_h, want_w) {
        return Err(format!("output {oh}x{ow} does not follow from input {h}x{w}, kernel {k}, stride {stride}"));
    }
    let mults = channel_multipliers(xp.scale, scales, op.scale);
    let (lo, hi) = activation_range(act, op);
    let (xq, in_off, out_zp) = (x.i8s()?, -xp.zero_point, op.zero_point);
    let mut y = vec![0i8; oh * ow * oc];
    y.par_chunks_mut(ow * oc).enumerate().for_each(|(oy, row)| {
        for ox in 0..ow {
            for o in 0..oc {
                let mut acc = 0i32;
                for ky in 0..k {
                    let iy = (oy * stride + ky) as isize - pad_t as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * stride + kx) as isize - pad_l as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let px = (iy as usize * w + ix as usize) * c;
                        acc = acc.wrapping_add(if depthwise {
                            wq[(ky * k + kx) * oc + o] as i32 * (xq[px + o] as i32 + in_off)
                        } else {
                            let taps = &wq[((o * k + ky) * k + kx) * c..][..c];
                            dot(taps, &xq[px..px + c], in_off)
                        });
                    }
                }
                acc = acc.wrapping_add(bias[o]);
                let (m, s) = mults[o];
                let v = multiply_by_quantized_multiplier(acc, m, s).wrapping_add(out_zp);
                row[ox * oc + o] = v.clamp(lo, hi) as i8;
            }
        }
    });
    Ok(Buf::I8(y))
}

/// TFLite's SAME padding before: `((out − 1)·stride + k − in) / 2`, at least 0.
fn same_before(side: usize, k: usize, stride: usize, out: usize) -> usize {
    ((out.saturating_sub(1)) * stride + k).saturating_sub(side) / 2
}

/// `Σ w·(x + off)` in wrapping int32 (the C kernels' int32 accumulator).
fn dot(w: &[i8], x: &[i8], off: i32) -> i32 {
    w.iter().zip(x).fold(0i32, |acc, (&a, &b)| acc.wrapping_add(a as i32 * (b as i32 + off)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu6_clamp_is_the_quantized_image_of_0_and_6() {
        let p = QParams { scale: 6.0 / 255.0, zero_point: -128 };
        assert_eq!(activation_range(FusedAct::Relu6, p), (-128, 127));
        let p = QParams { scale: 0.05, zero_point: -100 };
        assert_eq!(activation_range(FusedAct::Relu6, p), (-100, 20));
        let p = QParams { scale: 0.01, zero_point: 0 };
        assert_eq!(activation_range(FusedAct::Relu6, p), (0, 127));
        assert_eq!(activation_range(FusedAct::None, p), (-128, 127));
    }
}
