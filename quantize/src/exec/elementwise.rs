//! ADD, MUL, LOGISTIC, PAD and QUANTIZE as TFLite's int8 kernels compute them, with each op's
//! parameters derived exactly as its `Prepare` does (including which products are f32 and which
//! f64: the multipliers must come out bit-identical).

use super::{Buf, View};
use crate::fixed::{multiply_by_quantized_multiplier, quantize_multiplier};
use crate::model::{DType, QTensor};

fn out_params(out: &QTensor) -> Result<crate::params::QParams, String> {
    out.params().ok_or_else(|| format!("output {:?} has no per-tensor parameters", out.name))
}

/// int8 ADD: both inputs are brought to a common scale 2·max(s1, s2) with 20 bits of headroom
/// (`left_shift` 20), summed, and requantized to the output.
pub(super) fn add(a: &View, b: &View, out: &QTensor) -> Result<Buf, String> {
    let (pa, pb, po) = (a.params()?, b.params()?, out_params(out)?);
    let (xa, xb) = (a.i8s()?, b.i8s()?);
    if xa.len() != xb.len() || xa.len() != out.numel() {
        return Err(format!("ADD of {} and {} values into {}", xa.len(), xb.len(), out.numel()));
    }
    const LEFT_SHIFT: u32 = 20;
    let twice_max = (2.0 * pa.scale.max(pb.scale)) as f64;
    let (m1, s1) = quantize_multiplier(pa.scale as f64 / twice_max);
    let (m2, s2) = quantize_multiplier(pb.scale as f64 / twice_max);
    let (mo, so) = quantize_multiplier(twice_max / ((1u32 << LEFT_SHIFT) as f32 * po.scale) as f64);
    let y = xa
        .iter()
        .zip(xb)
        .map(|(&x1, &x2)| {
            let v1 = multiply_by_quantized_multiplier((x1 as i32 - pa.zero_point) << LEFT_SHIFT, m1, s1);
            let v2 = multiply_by_quantized_multiplier((x2 as i32 - pb.zero_point) << LEFT_SHIFT, m2, s2);
            let raw = multiply_by_quantized_multiplier(v1.wrapping_add(v2), mo, so).wrapping_add(po.zero_point);
            raw.clamp(-128, 127) as i8
        })
        .collect();
    Ok(Buf::I8(y))
}

/// int8 MUL: `(x1 − z1)·(x2 − z2)` requantized by s1·s2/s_out (that ratio computed in f32, as
/// TFLite's Prepare does). The second input may be `[1,1,1,C]`, broadcast over H and W.
pub(super) fn mul(a: &View, b: &View, out: &QTensor) -> Result<Buf, String> {
    let (pa, pb, po) = (a.params()?, b.params()?, out_params(out)?);
    let (xa, xb) = (a.i8s()?, b.i8s()?);
    let channels = *b.t.shape.last().unwrap_or(&0);
    let broadcast = xb.len() != xa.len();
    let gate_ok = b.t.shape.len() == 4 && b.t.shape[..3] == [1, 1, 1] && a.t.shape.last() == Some(&channels);
    if xa.len() != out.numel() || (broadcast && !gate_ok) || channels == 0 {
        return Err(format!("MUL of {:?} by {:?} into {:?}", a.t.shape, b.t.shape, out.shape));
    }
    let (m, s) = quantize_multiplier((pa.scale * pb.scale / po.scale) as f64);
    let y = xa
        .iter()
        .enumerate()
        .map(|(i, &x1)| {
            let x2 = if broadcast { xb[i % channels] } else { xb[i] };
            let prod = (x1 as i32 - pa.zero_point) * (x2 as i32 - pb.zero_point);
            multiply_by_quantized_multiplier(prod, m, s).wrapping_add(po.zero_point).clamp(-128, 127) as i8
        })
        .collect();
    Ok(Buf::I8(y))
}

/// The 256-entry table TFLite's int8 LOGISTIC builds in Prepare (used by both its reference and
/// its default kernel): dequantize in f32, `1 / (1 + expf(−x))`, scale by 256, round half away,
/// add the zero point, clamp. Indexed by `q + 128`.
pub(crate) fn logistic_table(input: crate::params::QParams, output: crate::params::QParams) -> [i8; 256] {
    let inverse_scale = 1.0f32 / output.scale;
    let mut lut = [0i8; 256];
    for (i, slot) in lut.iter_mut().enumerate() {
        let q = i as i32 - 128;
        let x = input.scale * (q - input.zero_point) as f32;
        let y = 1.0f32 / (1.0f32 + (-x).exp());
        let rescaled = (y * inverse_scale).round();
        *slot = ((rescaled + output.zero_point as f32) as i32).clamp(-128, 127) as i8;
    }
    lut
}

pub(super) fn logistic(x: &View, out: &QTensor) -> Result<Buf, String> {
    let (pi, po) = (x.params()?, out_params(out)?);
    if po != crate::params::LOGISTIC_OUTPUT {
        return Err(format!("LOGISTIC output must be scale 1/256, zero point -128, not {po:?}"));
    }
    let lut = logistic_table(pi, po);
    Ok(Buf::I8(x.i8s()?.iter().map(|&q| lut[(q as i32 + 128) as usize]).collect()))
}

/// PAD of a `[1,H,W,C]` tensor with the output zero point (real 0); paddings `[4, 2]` int32.
pub(super) fn pad(x: &View, paddings: &View, out: &QTensor) -> Result<Buf, String> {
    let (h, w, c) = x.hwc()?;
    let p = paddings.i32s()?;
    let zp = out_params(out)?.zero_point;
    let (top, bottom, left, right) = match p {
        &[0, 0, t, b, l, r, 0, 0] if t >= 0 && b >= 0 && l >= 0 && r >= 0 => (t as usize, b as usize, l as usize, r as usize),
        _ => return Err(format!("paddings {p:?}: only non-negative H and W padding")),
    };
    let (oh, ow) = (h + top + bottom, w + left + right);
    if out.shape != [1, oh, ow, c] || !(-128..=127).contains(&zp) {
        return Err(format!("PAD output {:?} does not match {oh}x{ow}x{c}", out.shape));
    }
    let xq = x.i8s()?;
    let mut y = vec![zp as i8; oh * ow * c];
    for iy in 0..h {
        let dst = ((iy + top) * ow + left) * c;
        y[dst..dst + w * c].copy_from_slice(&xq[iy * w * c..(iy + 1) * w * c]);
    }
    Ok(Buf::I8(y))
}

/// QUANTIZE between int8 and uint8 (TFLite's `Requantize`): with equal scales and zero points
/// 128 apart it only flips the top bit; otherwise it rescales by in_scale/out_scale.
pub(super) fn requantize(x: &View, out: &QTensor) -> Result<Buf, String> {
    let (pi, po) = (x.params()?, out_params(out)?);
    let (m, s) = quantize_multiplier(pi.scale as f64 / po.scale as f64);
    let vals: Vec<i32> = match x.buf {
        Some(b) => b.to_i32(),
        None => return Err("QUANTIZE of a constant".into()),
    };
    let (lo, hi) = match out.dtype {
        DType::Int8 => (-128, 127),
        DType::UInt8 => (0, 255),
        DType::Int32 => return Err("QUANTIZE to int32 is not supported".into()),
    };
    let y = vals.iter().map(|&v| (multiply_by_quantized_multiplier(v - pi.zero_point, m, s) + po.zero_point).clamp(lo, hi));
    // (The top-bit flip TFLite takes for the equal-scale case gives the same integers.)
    Ok(match out.dtype {
        DType::UInt8 => Buf::U8(y.map(|v| v as u8).collect()),
        _ => Buf::I8(y.map(|v| v as i8).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{QParams, LOGISTIC_OUTPUT};

    #[test]
    fn logistic_table_is_monotone_and_centred() {
        let lut = logistic_table(QParams { scale: 0.1, zero_point: 0 }, LOGISTIC_OUTPUT);
        assert_eq!(lut[128], 0); // σ(0) = 0.5 → 128 − 128
        assert!(lut.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(lut[0], -128 + (256.0f32 / (1.0 + 12.8f32.exp())).round() as i8);
        assert_eq!(lut[255], 127); // σ(12.7)·256 rounds to 256, clamped
    }
}
