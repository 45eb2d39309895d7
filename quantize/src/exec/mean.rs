//! int8 MEAN over H and W with keep_dims. TFLite's reference resolver runs the generic
//! `QuantizedMeanOrSum` for it: an int32 sum per channel, minus `zp_in · n`, then one
//! `MultiplyByQuantizedMultiplier` whose multiplier folds in_scale/out_scale and 1/n (the mantissa
//! pre-shifted left by ⌊log2 n⌋ and integer-divided by n). The default resolver's optimized
//! 4-D mean rounds differently; that is what the LSB comparison against it measures.

use super::{Buf, View};
use crate::fixed::{multiply_by_quantized_multiplier, quantize_multiplier};
use crate::model::QTensor;

/// `(multiplier, shift)` of the mean of `n` values from `in_scale` to `out_scale`.
pub(crate) fn mean_multiplier(in_scale: f32, out_scale: f32, n: usize) -> (i32, i32) {
    let (m, shift) = quantize_multiplier(in_scale as f64 / out_scale as f64);
    let n = n.max(1) as i64;
    let log2 = 63 - (n as u64).leading_zeros() as i32;
    let s = log2.min(32).min(31 + shift);
    // A negative `s` (only for absurd scale ratios) would be a right shift in C; keep it defined.
    let m = if s >= 0 { ((m as i64) << s) / n } else { ((m as i64) >> (-s)) / n };
    (m as i32, shift - s)
}

pub(super) fn mean_hw(x: &View, axes: &View, out: &QTensor) -> Result<Buf, String> {
    let (h, w, c) = x.hwc()?;
    let ax = axes.i32s()?;
    if !(ax == [1, 2] || ax == [2, 1]) || out.shape != [1, 1, 1, c] {
        return Err(format!("only MEAN over axes [1, 2] with keep_dims is supported, got axes {ax:?} -> {:?}", out.shape));
    }
    let (pi, po) = (x.params()?, out.params().ok_or("output without per-tensor parameters")?);
    let n = h * w;
    let (m, s) = mean_multiplier(pi.scale, po.scale, n);
    let xq = x.i8s()?;
    let mut sums = vec![0i32; c];
    for px in xq.chunks_exact(c) {
        for (acc, &v) in sums.iter_mut().zip(px) {
            *acc = acc.wrapping_add(v as i32);
        }
    }
    let y = sums
        .iter()
        .map(|&sum| {
            let shifted = (sum as i64 - pi.zero_point as i64 * n as i64) as i32;
            multiply_by_quantized_multiplier(shifted, m, s).wrapping_add(po.zero_point).clamp(-128, 127) as i8
        })
        .collect();
    Ok(Buf::I8(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_multiplier_folds_one_over_n() {
        // Equal scales, n = 4: 2^30 << 2 / 4 = 2^30, shift 1 − 2 = −1 → ×0.25.
        assert_eq!(mean_multiplier(0.5, 0.5, 4), (1 << 30, -1));
        // n = 49 (7×7): ⌊log2 49⌋ = 5; (2^30 << 5) / 49 = 701_219_150 (truncated).
        assert_eq!(mean_multiplier(1.0, 1.0, 49), (701_219_150, -4));
        assert_eq!(multiply_by_quantized_multiplier(49 * 10, 701_219_150, -4), 10);
    }
}
