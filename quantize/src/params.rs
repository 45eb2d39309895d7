//! Quantization parameters as TFLite defines them (real = scale · (q − zero_point)):
//! per-tensor asymmetric int8 activations, per-channel symmetric int8 weights, int32 biases at
//! input scale × weight scale.

use crate::fixed::round_f32;

/// Per-tensor affine parameters of an int8 (or uint8) tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl QParams {
    /// Activation parameters covering `[min, max]`: the range is widened to contain 0 and the
    /// zero point is an integer in `[-128, 127]`, so real 0.0 (conv padding, ReLU's floor) is
    /// exactly representable. A degenerate range gets a tiny positive span.
    pub fn from_range(min: f32, max: f32) -> QParams {
        let (min, max) = (min.min(0.0) as f64, max.max(0.0) as f64);
        // Finite, non-zero span: a constant-zero tensor still needs a valid scale.
        let span = if (max - min).is_finite() && max - min > 1e-8 { max - min } else { 1e-8 };
        let scale = (span / 255.0) as f32;
        let zp = (-128.0 - min / scale as f64).round().clamp(-128.0, 127.0) as i32;
        QParams { scale, zero_point: zp }
    }

    /// The real range this tensor can hold.
    pub fn range(&self) -> (f32, f32) {
        (self.dequantize(-128), self.dequantize(127))
    }

    pub fn quantize(&self, x: f32) -> i8 {
        (round_f32(x / self.scale) + self.zero_point as i64).clamp(-128, 127) as i8
    }

    pub fn dequantize(&self, q: i32) -> f32 {
        self.scale * (q - self.zero_point) as f32
    }

    /// The same real grid stored as uint8 (TFLite's uint8 I/O convention: zero point + 128).
    pub fn as_uint8(&self) -> QParams {
        QParams { scale: self.scale, zero_point: self.zero_point + 128 }
    }
}

/// Fixed output parameters of int8 LOGISTIC, checked by TFLite's kernel.
pub const LOGISTIC_OUTPUT: QParams = QParams { scale: 1.0 / 256.0, zero_point: -128 };

/// Per-output-channel symmetric int8 weights: `q = round(w / s_c)` in `[-127, 127]`, zero point 0.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelWeights {
    /// Quantized values in the float tensor's order (channel-major).
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

/// Quantize `w` (laid out `[channels, per_channel]`) per channel. An all-zero channel gets scale
/// 1 (any scale represents it; a zero scale would make the bias scale zero).
pub fn quantize_weights_per_channel(w: &[f32], channels: usize) -> ChannelWeights {
    let per = w.len().checked_div(channels).unwrap_or(0);
    let mut values = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for c in 0..channels {
        let row = &w[c * per..(c + 1) * per];
        let max_abs = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max_abs > 0.0 && max_abs.is_finite() { max_abs / 127.0 } else { 1.0 };
        values.extend(row.iter().map(|&v| round_f32(v / scale).clamp(-127, 127) as i8));
        scales.push(scale);
    }
    ChannelWeights { values, scales }
}

/// Bias scale of each output channel: input scale × weight scale, in f32 as the file stores it.
pub fn bias_scales(input_scale: f32, weight_scales: &[f32]) -> Vec<f32> {
    weight_scales.iter().map(|&s| input_scale * s).collect()
}

/// int32 biases at `scales`, saturated to the int32 range.
pub fn quantize_bias(bias: &[f32], scales: &[f32]) -> Vec<i32> {
    bias.iter()
        .zip(scales)
        .map(|(&b, &s)| (b as f64 / s as f64).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_params_make_zero_exact() {
        let p = QParams::from_range(-1.0, 3.0);
        assert_eq!(p.scale, 4.0 / 255.0);
        assert_eq!(p.zero_point, -64); // -128 + 1/(4/255) = -64.25 -> -64
        assert_eq!(p.dequantize(p.zero_point), 0.0);
        // All-positive ranges start at 0; all-negative end at 0.
        assert_eq!(QParams::from_range(0.5, 6.0).zero_point, -128);
        assert_eq!(QParams::from_range(-6.0, -0.5).zero_point, 127);
        let z = QParams::from_range(0.0, 0.0);
        assert!(z.scale > 0.0 && z.zero_point == -128);
        assert_eq!(p.quantize(100.0), 127);
        assert_eq!(p.quantize(-100.0), -128);
        assert_eq!(p.quantize(0.0), -64);
        assert_eq!(p.as_uint8().zero_point, 64);
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        let w = [0.3, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.1, -0.01];
        let q = quantize_weights_per_channel(&w, 3);
        assert_eq!(q.scales, vec![1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(q.values, vec![38, -127, 32, 0, 0, 0, 127, 70, -1]);
        let s = bias_scales(0.5, &q.scales);
        assert_eq!(quantize_bias(&[1.0, -3.0, 1e30], &s), vec![254, -6, i32::MAX]);
    }
}
