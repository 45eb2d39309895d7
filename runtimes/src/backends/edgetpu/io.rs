//! The float interface the `Runtime` trait promises, on a model with integer NHWC I/O: NCHW
//! floats → NHWC int8/uint8 with the input's scale and zero point, and integer logits → floats.
//! Rounding is TFLite's (half away from zero, `x / scale` in f32), so the integers equal what
//! effv2-quantize's `QModel::quantize_input` feeds its reference executor.

/// An integer I/O tensor's element type and affine parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IntIo {
    pub unsigned: bool,
    pub scale: f32,
    pub zero_point: i32,
}

impl IntIo {
    fn range(&self) -> (i64, i64) {
        if self.unsigned {
            (0, 255)
        } else {
            (-128, 127)
        }
    }

    /// One NCHW image `[c, h, w]` as the model's NHWC bytes.
    pub fn quantize_nchw(&self, x: &[f32], c: usize, h: usize, w: usize) -> Vec<u8> {
        let (lo, hi) = self.range();
        let mut out = vec![0u8; c * h * w];
        for ch in 0..c {
            for (i, &v) in x[ch * h * w..(ch + 1) * h * w].iter().enumerate() {
                // `as i64` saturates and maps NaN to 0: no panic on any input.
                let q = ((v / self.scale).round() as i64).saturating_add(self.zero_point as i64).clamp(lo, hi);
                // Stored as the byte TFLite reads: two's complement for int8.
                out[i * c + ch] = if self.unsigned { q as u8 } else { q as i8 as u8 };
            }
        }
        out
    }

    /// Output bytes as real values.
    pub fn dequantize(&self, bytes: &[u8]) -> Vec<f32> {
        bytes
            .iter()
            .map(|&b| {
                let q = if self.unsigned { b as i32 } else { b as i8 as i32 };
                self.scale * (q - self.zero_point) as f32
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_nchw_into_nhwc_and_back() {
        let p = IntIo { unsigned: false, scale: 0.5, zero_point: -3 };
        // c=2, h=1, w=3: channel 0 = [0, 1, 2], channel 1 = [-1, 100, -100].
        let x = [0.0, 1.0, 2.0, -1.0, 100.0, -100.0];
        let q = p.quantize_nchw(&x, 2, 1, 3);
        let as_i8: Vec<i8> = q.iter().map(|&b| b as i8).collect();
        assert_eq!(as_i8, vec![-3, -5, -1, 127, 1, -128]);
        assert_eq!(p.dequantize(&[(-1i8) as u8, 127u8]), vec![1.0, 65.0]);
        // Ties round away from zero, like TFLite: 0.25 / 0.5 = 0.5 -> 1; -0.25 -> -1.
        assert_eq!(p.quantize_nchw(&[0.25, -0.25], 1, 1, 2).iter().map(|&b| b as i8).collect::<Vec<_>>(), vec![-2, -4]);
        let u = IntIo { unsigned: true, scale: 1.0, zero_point: 128 };
        assert_eq!(u.quantize_nchw(&[-1000.0, 0.0, f32::NAN, 1e30], 1, 2, 2), vec![0, 128, 128, 255]);
        assert_eq!(u.dequantize(&[0, 255]), vec![-128.0, 127.0]);
    }
}
