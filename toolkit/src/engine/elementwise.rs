//! Elementwise work: activations, the conv epilogue (bias, activation, residual), SE scaling, add.
//! Loops are branch-free over contiguous slices so they auto-vectorise.

use rayon::prelude::*;

use crate::graph::ActKind;

/// Elements per rayon task for plain elementwise passes.
const PAR_CHUNK: usize = 1 << 15;

/// `exp(x)` to about 1 ulp (Cephes `expf`: x = n·ln2 + r, a degree-7 polynomial in r, times 2^n),
/// written with plain arithmetic and bit casts so loops over it vectorise, unlike libm's `expf`.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer held in the low bits
    let x = x.clamp(-87.3, 88.3); // keeps 2^n a normal float; exp is 0/overflow beyond anyway
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4; // Cody–Waite split of ln 2
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let n_int = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    e * f32::from_bits((n_int.wrapping_add(127) << 23) as u32)
}

/// Below this, sigmoid (and so SiLU) returns 0. e^-40 ≈ 4e-18 only ever scales other values, and
/// going lower makes subnormals: x86 takes a ~100-cycle assist per subnormal division result or
/// FMA input (SE gates of saturated channels feed the next GEMM).
const SIGMOID_FLUSH_BELOW: f32 = -40.0;

/// `1 + e^-x`, the exponent capped so that dividing by it never gives a subnormal (the capped
/// range is flushed to 0 by the callers anyway).
#[inline(always)]
fn one_plus_exp_neg(x: f32) -> f32 {
    1.0 + exp((-x).min(-SIGMOID_FLUSH_BELOW))
}

#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    let s = 1.0 / one_plus_exp_neg(x);
    if x < SIGMOID_FLUSH_BELOW {
        0.0
    } else {
        s
    }
}

#[inline(always)]
fn act(kind: ActKind, v: f32) -> f32 {
    match kind {
        ActKind::Silu => {
            let s = v / one_plus_exp_neg(v);
            if v < SIGMOID_FLUSH_BELOW {
                0.0
            } else {
                s
            }
        }
        ActKind::Relu6 => v.clamp(0.0, 6.0),
        ActKind::Sigmoid => sigmoid(v),
    }
}

/// Apply `kind` in place (one `match` per slice, so each loop is a straight vector loop).
pub(super) fn act_slice(kind: ActKind, xs: &mut [f32]) {
    match kind {
        ActKind::Silu => xs.iter_mut().for_each(|v| *v = act(ActKind::Silu, *v)),
        ActKind::Relu6 => xs.iter_mut().for_each(|v| *v = act(ActKind::Relu6, *v)),
        ActKind::Sigmoid => xs.iter_mut().for_each(|v| *v = act(ActKind::Sigmoid, *v)),
    }
}

pub(super) fn act_par(kind: ActKind, xs: &mut [f32]) {
    xs.par_chunks_mut(PAR_CHUNK).for_each(|c| act_slice(kind, c));
}

/// What follows a conv or linear on its `[rows, ch]` output: `y = act(acc + bias) [+ residual]`.
#[derive(Clone, Debug)]
pub(super) struct Epilogue {
    pub bias: Vec<f32>,
    pub act: Option<ActKind>,
}

impl Epilogue {
    /// `out` holds whole rows of `bias.len()` channels; `residual` (same layout) is added last.
    pub fn apply(&self, out: &mut [f32], residual: Option<&[f32]>) {
        let ch = self.bias.len();
        for row in out.chunks_exact_mut(ch) {
            row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
            if let Some(k) = self.act {
                act_slice(k, row);
            }
        }
        if let Some(res) = residual {
            out.iter_mut().zip(res).for_each(|(v, r)| *v += r);
        }
    }
}

/// SE scaling in place: `x[n, p, c] *= gate[n, c]` over `[batch, pixels, ch]`.
pub(super) fn scale_by_gate(x: &mut [f32], gate: &[f32], ch: usize) {
    let batch = (gate.len() / ch.max(1)).max(1);
    x.par_chunks_mut((x.len() / batch).max(1)).zip(gate.par_chunks(ch)).for_each(|(xs, g)| {
        for px in xs.chunks_exact_mut(ch) {
            px.iter_mut().zip(g).for_each(|(v, g)| *v *= g);
        }
    });
}

/// `acc += other`, elementwise.
pub(super) fn add_into(acc: &mut [f32], other: &[f32]) {
    acc.par_chunks_mut(PAR_CHUNK).zip(other.par_chunks(PAR_CHUNK)).for_each(|(a, b)| {
        a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn activations_are_stable_at_extremes() {
        for x in [-1e30f32, -500.0, -88.0, 0.0, 88.0, 500.0, 1e30] {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - want).abs() < 1e-7, "sigmoid({x})");
            assert!(act(ActKind::Silu, x).is_finite(), "silu({x})");
        }
        assert_eq!(act(ActKind::Relu6, -3.0), 0.0);
        assert_eq!(act(ActKind::Relu6, 7.5), 6.0);
        assert_eq!(act(ActKind::Relu6, 2.5), 2.5);
    }

    #[test]
    fn epilogue_order_is_bias_act_then_residual() {
        let epi = Epilogue { bias: vec![1.0, -10.0], act: Some(ActKind::Relu6) };
        let mut out = vec![0.5, 3.0, 9.0, 20.0];
        epi.apply(&mut out, Some(&[1.0, 1.0, 1.0, 1.0]));
        assert_eq!(out, [2.5, 1.0, 7.0, 7.0]);
    }

    #[test]
    fn gate_broadcasts_per_sample_and_channel() {
        let mut x = vec![1.0; 2 * 3 * 2]; // batch 2, 3 pixels, 2 channels
        scale_by_gate(&mut x, &[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(x, [1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 3.0, 4.0]);
    }
}
