//! The small ops, forward and backward on NHWC: activations, global pooling, the SE gate multiply,
//! masks (dropout, drop-path) and the classifier's linear layer.

use rayon::prelude::*;

use super::gemm::{gemm, Mat};
use effv2_edge::graph::ActKind;
use effv2_edge::rng::Rng;

const PAR_CHUNK: usize = 1 << 14;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn act_forward(kind: ActKind, x: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(y, x)| match kind {
        ActKind::Silu => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x * sigmoid(x)),
        ActKind::Relu6 => y.iter_mut().zip(x).for_each(|(y, &x)| *y = x.clamp(0.0, 6.0)),
        ActKind::Sigmoid => y.iter_mut().zip(x).for_each(|(y, &x)| *y = sigmoid(x)),
    });
}

/// `dx` from the op's input `x` and output `y`.
pub fn act_backward(kind: ActKind, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let chunks = dx.par_chunks_mut(PAR_CHUNK).zip(dy.par_chunks(PAR_CHUNK)).zip(x.par_chunks(PAR_CHUNK).zip(y.par_chunks(PAR_CHUNK)));
    chunks.for_each(|((dx, dy), (x, y))| {
        let it = dx.iter_mut().zip(dy).zip(x.iter().zip(y));
        match kind {
            // d/dx x·σ(x) = σ + x·σ·(1-σ)
            ActKind::Silu => it.for_each(|((dx, dy), (&x, _))| {
                let s = sigmoid(x);
                *dx = dy * s * (1.0 + x * (1.0 - s));
            }),
            ActKind::Relu6 => it.for_each(|((dx, dy), (&x, _))| *dx = if x > 0.0 && x < 6.0 { *dy } else { 0.0 }),
            ActKind::Sigmoid => it.for_each(|((dx, dy), (_, &y))| *dx = dy * y * (1.0 - y)),
        }
    });
}

/// `[n, hw, c] -> [n, c]`.
pub fn pool_forward(x: &[f32], hw: usize, c: usize, y: &mut [f32]) {
    y.par_chunks_mut(c).zip(x.par_chunks(hw * c)).for_each(|(y, x)| {
        y.fill(0.0);
        x.chunks_exact(c).for_each(|px| y.iter_mut().zip(px).for_each(|(s, v)| *s += v));
        y.iter_mut().for_each(|s| *s /= hw as f32);
    });
}

pub fn pool_backward(dy: &[f32], hw: usize, c: usize, dx: &mut [f32]) {
    dx.par_chunks_mut(hw * c).zip(dy.par_chunks(c)).for_each(|(dx, dy)| {
        dx.chunks_exact_mut(c).for_each(|px| px.iter_mut().zip(dy).for_each(|(d, g)| *d = g / hw as f32));
    });
}

/// `y[n, p, c] = x[n, p, c] · gate[n, c]`.
pub fn mul_forward(x: &[f32], gate: &[f32], hw: usize, c: usize, y: &mut [f32]) {
    y.par_chunks_mut(hw * c).zip(x.par_chunks(hw * c)).zip(gate.par_chunks(c)).for_each(|((y, x), g)| {
        for (yp, xp) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            yp.iter_mut().zip(xp).zip(g).for_each(|((y, x), g)| *y = x * g);
        }
    });
}

pub fn mul_backward(x: &[f32], gate: &[f32], dy: &[f32], hw: usize, c: usize, dx: &mut [f32], dgate: &mut [f32]) {
    let per = hw * c;
    dx.par_chunks_mut(per).zip(dgate.par_chunks_mut(c)).enumerate().for_each(|(n, (dx, dg))| {
        let (x, dy, g) = (&x[n * per..][..per], &dy[n * per..][..per], &gate[n * c..][..c]);
        dg.fill(0.0);
        for ((dxp, xp), dyp) in dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c)) {
            for ch in 0..c {
                dxp[ch] = dyp[ch] * g[ch];
                dg[ch] += dyp[ch] * xp[ch];
            }
        }
    });
}

/// Inverted-dropout mask: 0 with probability `rate`, else `1/(1-rate)`; one value per element.
pub fn dropout_mask(len: usize, rate: f32, rng: &mut Rng) -> Vec<f32> {
    let keep = 1.0 - rate;
    (0..len).map(|_| if rng.uniform() < keep as f64 { 1.0 / keep } else { 0.0 }).collect()
}

/// Stochastic depth: one draw per sample, 0 or `1/survival`, as the official `drop_connect`.
pub fn drop_path_mask(batch: usize, survival: f32, rng: &mut Rng) -> Vec<f32> {
    (0..batch).map(|_| if rng.uniform() < survival as f64 { 1.0 / survival } else { 0.0 }).collect()
}

/// `y = x · mask[i / per]` (`per` = 1 for dropout, the sample size for drop-path). Also the backward.
pub fn apply_mask(x: &[f32], mask: &[f32], per: usize, y: &mut [f32]) {
    y.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).enumerate().for_each(|(b, (y, x))| {
        let base = b * PAR_CHUNK;
        y.iter_mut().zip(x).enumerate().for_each(|(i, (y, x))| *y = x * mask[(base + i) / per]);
    });
}

/// `y[n, out] = x[n, in] · Wᵀ + b`.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], fin: usize, fout: usize, y: &mut [f32]) {
    let n = x.len() / fin;
    gemm(y, Mat::new(x, n, fin), Mat::new(w, fout, fin).t(), false);
    y.chunks_exact_mut(fout).for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b));
}

#[allow(clippy::too_many_arguments)]
pub fn linear_backward(x: &[f32], w: &[f32], dy: &[f32], fin: usize, fout: usize, dx: &mut [f32], dw: &mut [f32], db: &mut [f32]) {
    let n = x.len() / fin;
    gemm(dw, Mat::new(dy, n, fout).t(), Mat::new(x, n, fin), false);
    gemm(dx, Mat::new(dy, n, fout), Mat::new(w, fout, fin), false);
    db.fill(0.0);
    dy.chunks_exact(fout).for_each(|r| db.iter_mut().zip(r).for_each(|(s, v)| *s += v));
}
