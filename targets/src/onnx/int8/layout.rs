//! The int8 model's TFLite layouts as ONNX's: filters back to OIHW, TFLite padding (SAME, VALID,
//! or an explicit PAD before a VALID conv) as a conv's own `pads`, and the fused ReLU6 check.

use effv2_quantize::layout::same_pads;
use effv2_quantize::{Padding, QParams};

/// CONV_2D filter `[o, kh, kw, i]` → `[o, i, kh, kw]`.
pub fn ohwi_to_oihw(v: &[i8], o: usize, k: usize, i: usize) -> Vec<i8> {
    let mut out = vec![0i8; v.len()];
    for oc in 0..o {
        for ic in 0..i {
            for t in 0..k * k {
                out[(oc * i + ic) * k * k + t] = v[(oc * k * k + t) * i + ic];
            }
        }
    }
    out
}

/// DEPTHWISE_CONV_2D filter `[1, kh, kw, c]` → `[c, 1, kh, kw]`.
pub fn hwc_to_c1hw(v: &[i8], k: usize, c: usize) -> Vec<i8> {
    let mut out = vec![0i8; v.len()];
    for ch in 0..c {
        for t in 0..k * k {
            out[ch * k * k + t] = v[t * c + ch];
        }
    }
    out
}

/// Pads as (top, bottom, left, right).
pub type Pads = [usize; 4];

/// ONNX `pads` ([top, left, bottom, right]) of a conv over an `h × w` input that a PAD op first
/// padded by `pre`, then TFLite `padding` with kernel `k` and `stride`.
pub fn onnx_pads(pre: Pads, padding: Padding, h: usize, w: usize, k: usize, stride: usize) -> [i64; 4] {
    let [t, b, l, r] = pre;
    let (st, sb, sl, sr) = match padding {
        Padding::Same => {
            let (st, sb, _) = same_pads(h + t + b, k, stride);
            let (sl, sr, _) = same_pads(w + l + r, k, stride);
            (st, sb, sl, sr)
        }
        Padding::Valid => (0, 0, 0, 0),
    };
    [(t + st) as i64, (l + sl) as i64, (b + sb) as i64, (r + sr) as i64]
}

/// True when saturating to int8 already is the fused ReLU6's clamp: real 0 is the lowest int8
/// value and 6 at or above the highest (TFLite's quantized activation range, its rounding).
pub fn relu6_is_saturation(out: QParams) -> bool {
    let six = out.zero_point as i64 + (6.0f32 / out.scale).round() as i64;
    out.zero_point <= -128 && six >= 127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_return_to_onnx_layouts() {
        // o=1, k=2, i=2: OHWI (ky,kx,ic) → OIHW (ic,ky,kx).
        assert_eq!(ohwi_to_oihw(&[1, 5, 2, 6, 3, 7, 4, 8], 1, 2, 2), vec![1, 2, 3, 4, 5, 6, 7, 8]);
        // c=2, k=2: [k·k, c] → [c, k·k].
        assert_eq!(hwc_to_c1hw(&[1, 5, 2, 6, 3, 7, 4, 8], 2, 2), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn pads_combine_pad_ops_and_same() {
        // TF SAME 224 → 112, k3 s2: the odd pixel at the end.
        assert_eq!(onnx_pads([0; 4], Padding::Same, 224, 224, 3, 2), [0, 0, 1, 1]);
        // PyTorch's symmetric pads came as a PAD op before a VALID conv.
        assert_eq!(onnx_pads([1, 1, 1, 1], Padding::Valid, 224, 224, 3, 2), [1, 1, 1, 1]);
        assert_eq!(onnx_pads([0; 4], Padding::Same, 7, 7, 3, 1), [1, 1, 1, 1]);
        assert_eq!(onnx_pads([0; 4], Padding::Valid, 7, 7, 1, 1), [0; 4]);
    }

    #[test]
    fn relu6_clamp_equals_saturation_only_when_the_range_is_0_to_6_or_less() {
        assert!(relu6_is_saturation(QParams::from_range(0.0, 6.0)));
        assert!(relu6_is_saturation(QParams { scale: 4.0 / 255.0, zero_point: -128 }));
        assert!(!relu6_is_saturation(QParams::from_range(0.0, 8.0)));
        assert!(!relu6_is_saturation(QParams::from_range(-1.0, 4.0)));
    }
}
