//! The fixed-point arithmetic of TFLite's int8 kernels (gemmlowp's helpers and TFLite's
//! "double rounding" requantization, the default build of the CPU kernels). Every int8 op of the
//! reference executor rescales through these, so they are written once and tested against
//! hand-computed values, including the ties where the two roundings of the double-rounding path
//! disagree with a single exact rounding.

/// `round(a·b / 2^31)` with ties rounded up for positive products and toward zero for negative
/// ones (gemmlowp's nudge), saturating the one overflowing case `MIN·MIN` to `i32::MAX`.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Rust's `/` truncates toward zero like C++'s, which the nudge above relies on.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero. `exponent` in `0..=31`.
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    debug_assert!(exponent <= 31);
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's `MultiplyByQuantizedMultiplier` (double rounding): `x · m/2^31 · 2^shift`, with a
/// left shift applied before the high multiply and a right shift rounded after it.
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.max(0) as u32;
    let right = (-shift).max(0) as u32;
    // The kernels' int32 left shift wraps on overflow in practice; never panic on it.
    let shifted = x.wrapping_mul(1i32.wrapping_shl(left));
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right.min(31))
}

/// A real multiplier as TFLite stores it: `value ≈ multiplier/2^31 · 2^shift` with the mantissa in
/// `[2^30, 2^31)` (TFLite's `QuantizeMultiplier`). Zero, and magnitudes below ~2^-31, give
/// `(0, 0)`.
pub fn quantize_multiplier(value: f64) -> (i32, i32) {
    if value == 0.0 || !value.is_finite() {
        return (0, 0);
    }
    let (q, mut shift) = frexp(value);
    let mut q_fixed = (q * (1u64 << 31) as f64).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    (q_fixed as i32, shift)
}

/// `value = m · 2^e` with `|m|` in `[0.5, 1)`, like C's `frexp` (finite, non-zero input).
fn frexp(value: f64) -> (f64, i32) {
    let bits = value.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if exp == 0 {
        // Subnormal: scale into the normal range first.
        let (m, e) = frexp(value * (1u64 << 54) as f64);
        return (m, e - 54);
    }
    let m = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (m, exp - 1022)
}

/// TFLite's `TfLiteRound` on f32 (`std::round`: half away from zero), as an integer.
pub fn round_f32(x: f32) -> i64 {
    x.round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_mul_matches_hand_computed_values() {
        let half = 1 << 30; // 0.5 in Q31
        assert_eq!(saturating_rounding_doubling_high_mul(half, half), 1 << 29);
        assert_eq!(saturating_rounding_doubling_high_mul(3, half), 2); // 1.5 -> 2
        assert_eq!(saturating_rounding_doubling_high_mul(-3, half), -1); // -1.5 -> -1 (nudge)
        assert_eq!(saturating_rounding_doubling_high_mul(-5, half), -2); // -2.5 -> -2
        assert_eq!(saturating_rounding_doubling_high_mul(7, half), 4); // 3.5 -> 4
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX), -i32::MAX);
        assert_eq!(saturating_rounding_doubling_high_mul(-half, half), -(1 << 29));
        assert_eq!(saturating_rounding_doubling_high_mul(100, 1_717_986_918), 80); // 100·0.8
    }

    #[test]
    fn divide_by_pot_rounds_ties_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2);
        assert_eq!(rounding_divide_by_pot(-3, 2), -1);
        assert_eq!(rounding_divide_by_pot(-2, 2), -1); // -0.5 -> -1
        assert_eq!(rounding_divide_by_pot(1, 2), 0);
        assert_eq!(rounding_divide_by_pot(7, 0), 7);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
    }

    #[test]
    fn quantize_multiplier_normalises_the_mantissa() {
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        assert_eq!(quantize_multiplier(0.75), (1_610_612_736, 0));
        assert_eq!(quantize_multiplier(0.1), (1_717_986_918, -3)); // 0.8·2^31 = 1717986918.4
        assert_eq!(quantize_multiplier(3.0), (1_610_612_736, 2));
        // A mantissa that rounds up to 2^31 is halved and the exponent bumped.
        assert_eq!(quantize_multiplier(1.0 - 2f64.powi(-40)), (1 << 30, 1));
        assert_eq!(quantize_multiplier(2f64.powi(-40)), (0, 0));
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        assert_eq!(quantize_multiplier(f64::MIN_POSITIVE / 4.0), (0, 0));
        assert_eq!(frexp(f64::MIN_POSITIVE / 4.0), (0.5, -1023));
    }

    #[test]
    fn requantization_rounds_twice_like_tflite() {
        assert_eq!(multiply_by_quantized_multiplier(100, 1 << 30, 0), 50);
        assert_eq!(multiply_by_quantized_multiplier(100, 1_717_986_918, -3), 10);
        // 5·0.25 = 1.25, but 5·0.5 = 2.5 rounds to 3 first, and 3/2 = 1.5 rounds to 2.
        assert_eq!(multiply_by_quantized_multiplier(5, 1 << 30, -1), 2);
        assert_eq!(multiply_by_quantized_multiplier(-5, 1 << 30, -1), -1); // -2.5 -> -2 -> -1
        assert_eq!(multiply_by_quantized_multiplier(3, 1 << 30, 2), 6); // left shift first
        assert_eq!(multiply_by_quantized_multiplier(-7, 1_610_612_736, 2), -21);
        assert_eq!(multiply_by_quantized_multiplier(1 << 20, 0, 0), 0);
        assert_eq!(round_f32(2.5), 3);
        assert_eq!(round_f32(-2.5), -3);
        assert_eq!(round_f32(-0.4), 0);
    }
}
