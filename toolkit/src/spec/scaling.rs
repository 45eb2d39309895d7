//! Width/depth scaling with the official EfficientNetV2 rounding (`effnetv2_model.py`).

/// Channels are multiples of this.
pub const DEPTH_DIVISOR: usize = 8;

/// `round_filters`: scale, then round to the nearest multiple of 8 (halves up), at least 8.
/// Unlike EfficientNet V1 there is no "+8 if we lost more than 10%" correction.
pub fn round_filters(filters: usize, width: f64) -> usize {
    let scaled = filters as f64 * width;
    let d = DEPTH_DIVISOR as f64;
    let rounded = ((scaled + d / 2.0) as usize) / DEPTH_DIVISOR * DEPTH_DIVISOR;
    rounded.max(DEPTH_DIVISOR)
}

/// `round_repeats`: `int(math.ceil(depth * repeats))`, in the same f64 arithmetic as the official
/// code and timm, so float quirks such as 25 × 2.2 = 55.00000000000001 → 56 match them exactly.
pub fn round_repeats(repeats: usize, depth: f64) -> usize {
    ((repeats as f64 * depth).ceil() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_official_b2_b3() {
        // B2 (w=1.1): 32,16,32,48,96,112,192,1280 -> 32,16,32,56,104,120,208,1408
        let b2: Vec<_> = [32, 16, 32, 48, 96, 112, 192, 1280].iter().map(|&f| round_filters(f, 1.1)).collect();
        assert_eq!(b2, [32, 16, 32, 56, 104, 120, 208, 1408]);
        // B3 (w=1.2): stem 40, head 1536
        let b3: Vec<_> = [32, 16, 32, 48, 96, 112, 192, 1280].iter().map(|&f| round_filters(f, 1.2)).collect();
        assert_eq!(b3, [40, 16, 40, 56, 112, 136, 232, 1536]);
    }

    #[test]
    fn filters_identity_at_one_and_floor_of_eight() {
        for f in [8, 16, 24, 32, 48, 64, 1280] {
            assert_eq!(round_filters(f, 1.0), f);
        }
        assert_eq!(round_filters(16, 0.1), 8);
        // 11 channels round down to 8: no V1-style 90% bump.
        assert_eq!(round_filters(44, 0.25), 8);
    }

    #[test]
    fn repeats_are_ceiled() {
        assert_eq!(round_repeats(1, 1.1), 2);
        assert_eq!(round_repeats(8, 1.1), 9);
        assert_eq!(round_repeats(10, 1.1), 11);
        // 25 × 2.2 = 55.00000000000001 in f64: Python's math.ceil gives 56, and so do we.
        assert_eq!(round_repeats(25, 2.2), 56);
        assert_eq!(round_repeats(8, 1.4), 12);
        assert_eq!(round_repeats(3, 1.0), 3);
        assert_eq!(round_repeats(5, 0.1), 1);
    }
}
