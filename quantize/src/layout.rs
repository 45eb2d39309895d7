//! Weight layouts and padding: our OIHW f32 parameters as TFLite's int8 tensors, and how a conv's
//! explicit pads are spelled in TFLite (SAME, VALID, or an explicit PAD before a VALID conv).

use effv2_edge::graph::Pads;

use crate::params::{quantize_weights_per_channel, ChannelWeights};

/// OIHW `[o, i, k, k]` → per-output-channel int8 in OHWI `[o, k, k, i]` (CONV_2D's filter).
pub fn conv_filter_ohwi(oihw: &[f32], o: usize, i: usize, k: usize) -> ChannelWeights {
    let q = quantize_weights_per_channel(oihw, o);
    let mut values = vec![0i8; q.values.len()];
    for oc in 0..o {
        for ic in 0..i {
            for ky in 0..k {
                for kx in 0..k {
                    values[((oc * k + ky) * k + kx) * i + ic] = q.values[((oc * i + ic) * k + ky) * k + kx];
                }
            }
        }
    }
    ChannelWeights { values, scales: q.scales }
}

/// Depthwise OIHW `[c, 1, k, k]` → per-channel int8 in `[1, k, k, c]` (DEPTHWISE_CONV_2D's filter).
pub fn depthwise_filter_1hwc(oihw: &[f32], c: usize, k: usize) -> ChannelWeights {
    let q = quantize_weights_per_channel(oihw, c);
    let mut values = vec![0i8; q.values.len()];
    for ch in 0..c {
        for t in 0..k * k {
            values[t * c + ch] = q.values[ch * k * k + t];
        }
    }
    ChannelWeights { values, scales: q.scales }
}

/// How a conv's pads are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadPlan {
    /// The pads are TensorFlow SAME's for this input size.
    Same,
    /// No padding.
    Valid,
    /// Anything else (PyTorch's symmetric pads on a stride-2 conv over an even side): PAD op.
    Explicit(Pads),
}

/// TensorFlow SAME pads of one side: (before, after, output side).
pub fn same_pads(side: usize, k: usize, stride: usize) -> (usize, usize, usize) {
    let out = side.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + k).saturating_sub(side);
    (total / 2, total - total / 2, out)
}

/// The plan for `pads` on an `in_h × in_w` input producing `out_h × out_w`.
pub fn pad_plan(pads: Pads, in_hw: (usize, usize), k: usize, stride: usize, out_hw: (usize, usize)) -> PadPlan {
    let (top, bottom, oh) = same_pads(in_hw.0, k, stride);
    let (left, right, ow) = same_pads(in_hw.1, k, stride);
    if pads == (Pads { top, left, bottom, right }) && (oh, ow) == out_hw {
        PadPlan::Same
    } else if pads == Pads::default() {
        PadPlan::Valid
    } else {
        PadPlan::Explicit(pads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_move_to_tflite_layouts() {
        // o=2, i=3, k=1: OHWI = OIHW for 1×1; values chosen so each channel's max is 127.
        let w: Vec<f32> = vec![1.0, 2.0, 3.0, -6.0, 5.0, 4.0];
        let q = conv_filter_ohwi(&w, 2, 3, 1);
        assert_eq!(q.values, vec![42, 85, 127, -127, 106, 85]);
        // o=1, i=2, k=2: OIHW [1,2,2,2] → OHWI [1,2,2,2]: (ky,kx,ic).
        let w: Vec<f32> = (1..=8).map(|v| v as f32 * 127.0 / 8.0).collect();
        let q = conv_filter_ohwi(&w, 1, 2, 2);
        let want: Vec<i8> = [1, 5, 2, 6, 3, 7, 4, 8].iter().map(|v| (*v as f32 * 127.0 / 8.0 / (127.0 / 127.0)).round() as i8).collect();
        assert_eq!(q.values, want);
        // Depthwise c=2, k=2: [c, k·k] → [k·k, c].
        let w = [127.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -127.0];
        let q = depthwise_filter_1hwc(&w, 2, 2);
        assert_eq!(q.values, vec![127, 0, 0, 0, 0, 0, 0, -127]);
        let w = [1.0, 2.5, 3.0, 4.0, -4.0, 0.0, 0.0, 0.0];
        assert_eq!(depthwise_filter_1hwc(&w, 2, 2).values, vec![32, -127, 79, 0, 95, 0, 127, 0]);
    }

    #[test]
    fn pads_map_to_same_valid_or_explicit() {
        let p = |top, left, bottom, right| Pads { top, left, bottom, right };
        // TF SAME 224 -> 112, k3 s2: all padding at the end.
        assert_eq!(pad_plan(p(0, 0, 1, 1), (224, 224), 3, 2, (112, 112)), PadPlan::Same);
        // PyTorch symmetric on the same conv differs from SAME.
        assert_eq!(pad_plan(p(1, 1, 1, 1), (224, 224), 3, 2, (112, 112)), PadPlan::Explicit(p(1, 1, 1, 1)));
        // ... but equals it on an odd side, and for stride 1.
        assert_eq!(pad_plan(p(1, 1, 1, 1), (225, 225), 3, 2, (113, 113)), PadPlan::Same);
        assert_eq!(pad_plan(p(1, 1, 1, 1), (56, 56), 3, 1, (56, 56)), PadPlan::Same);
        assert_eq!(pad_plan(p(0, 0, 0, 0), (7, 7), 1, 1, (7, 7)), PadPlan::Same);
        assert_eq!(pad_plan(p(0, 0, 0, 0), (7, 7), 3, 1, (5, 5)), PadPlan::Valid);
        assert_eq!(same_pads(1, 3, 2), (1, 1, 1));
    }
}
