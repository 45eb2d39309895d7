//! Batch norm on `[rows, C]` (NHWC flattened): training mode with batch statistics and running
//! averages, eval mode with the running statistics, and the training-mode backward. Channel sums
//! go through fixed-size row chunks in f64, so they are accurate and thread-count independent.

use rayon::prelude::*;

use crate::parallel::Collective;
use crate::TrainError;

/// Rows per partial sum.
pub const CHUNK_ROWS: usize = 256;

/// PyTorch `momentum = 0.1`, i.e. TF/Keras decay 0.9 (the official `bn_momentum`).
pub const RUNNING_MOMENTUM: f32 = 0.1;

/// Per-channel `Σ f(row, c)` over all rows.
fn channel_sums(x: &[f32], c: usize, f: impl Fn(usize, usize, f32) -> f64 + Sync) -> Vec<f64> {
    let partials: Vec<Vec<f64>> = x
        .par_chunks(CHUNK_ROWS * c)
        .enumerate()
        .map(|(b, chunk)| {
            let mut s = vec![0f64; c];
            for (r, row) in chunk.chunks_exact(c).enumerate() {
                for (ch, v) in row.iter().enumerate() {
                    s[ch] += f(b * CHUNK_ROWS + r, ch, *v);
                }
            }
            s
        })
        .collect();
    let mut total = vec![0f64; c];
    for p in &partials {
        total.iter_mut().zip(p).for_each(|(t, v)| *t += v);
    }
    total
}

/// What the backward pass needs from a training-mode forward.
#[derive(Clone, Debug, Default)]
pub struct Saved {
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    /// Rows the statistics were taken over: the global batch's under data parallelism.
    pub rows: f64,
}

/// Per-channel sums of this replica's rows, summed over the data-parallel group when there is
/// one (synchronised BN); `rows` rides along as the last element.
fn group_sums(mut sums: Vec<f64>, rows: f64, group: Option<&dyn Collective>) -> Result<(Vec<f64>, f64), TrainError> {
    let Some(g) = group else { return Ok((sums, rows)) };
    sums.push(rows);
    g.all_reduce_f64(&mut sums)?;
    let rows = sums.pop().expect("rows pushed above");
    Ok((sums, rows))
}

pub struct Params<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
}

/// Batch statistics (of the group's whole batch under data parallelism); updates
/// `running_mean`/`running_var` (unbiased variance, as PyTorch and TF's fused batch norm keep it).
pub fn forward_train(p: &Params, x: &[f32], y: &mut [f32], running_mean: &mut [f32], running_var: &mut [f32], group: Option<&dyn Collective>) -> Result<Saved, TrainError> {
    let c = p.gamma.len();
    let (sums, n) = group_sums(channel_sums(x, c, |_, _, v| v as f64), (x.len() / c) as f64, group)?;
    let mean: Vec<f64> = sums.into_iter().map(|s| s / n).collect();
    let (sq, _) = group_sums(channel_sums(x, c, |_, ch, v| (v as f64 - mean[ch]).powi(2)), n, group)?;
    let var: Vec<f64> = sq.into_iter().map(|s| s / n).collect();
    let invstd: Vec<f32> = var.iter().map(|v| (1.0 / (v + p.eps as f64).sqrt()) as f32).collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    apply(p, x, y, &mean, &invstd);
    let unbias = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    for ch in 0..c {
        running_mean[ch] += RUNNING_MOMENTUM * (mean[ch] - running_mean[ch]);
        running_var[ch] += RUNNING_MOMENTUM * ((var[ch] * unbias) as f32 - running_var[ch]);
    }
    Ok(Saved { mean, invstd, rows: n })
}

pub fn forward_eval(p: &Params, x: &[f32], y: &mut [f32], running_mean: &[f32], running_var: &[f32]) {
    let invstd: Vec<f32> = running_var.iter().map(|v| 1.0 / (v + p.eps).sqrt()).collect();
    apply(p, x, y, running_mean, &invstd);
}

fn apply(p: &Params, x: &[f32], y: &mut [f32], mean: &[f32], invstd: &[f32]) {
    let c = mean.len();
    let scale: Vec<f32> = invstd.iter().zip(p.gamma).map(|(i, g)| i * g).collect();
    let shift: Vec<f32> = (0..c).map(|ch| p.beta[ch] - mean[ch] * scale[ch]).collect();
    y.par_chunks_mut(CHUNK_ROWS * c).zip(x.par_chunks(CHUNK_ROWS * c)).for_each(|(yc, xc)| {
        for (yr, xr) in yc.chunks_exact_mut(c).zip(xc.chunks_exact(c)) {
            for (((yv, xv), s), t) in yr.iter_mut().zip(xr).zip(&scale).zip(&shift) {
                *yv = xv * s + t;
            }
        }
    });
}

/// Training-mode gradients: `dx = γ·σ⁻¹/N · (N·dy − Σdy − x̂·Σ(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
/// Under data parallelism the sums in `dx` run over the group's batch (`N` is its row count);
/// `dγ`, `dβ` stay this replica's share, summed with every other gradient afterwards.
#[allow(clippy::too_many_arguments)]
pub fn backward(p: &Params, s: &Saved, x: &[f32], dy: &[f32], dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32], group: Option<&dyn Collective>) -> Result<(), TrainError> {
    let c = p.gamma.len();
    let n = s.rows as f32;
    let xhat = |r: usize, ch: usize| (x[r * c + ch] - s.mean[ch]) * s.invstd[ch];
    let mut sdy = channel_sums(dy, c, |_, _, d| d as f64);
    let mut sdyx = channel_sums(dy, c, |r, ch, d| (d * xhat(r, ch)) as f64);
    for ch in 0..c {
        dgamma[ch] = sdyx[ch] as f32;
        dbeta[ch] = sdy[ch] as f32;
    }
    if let Some(g) = group {
        let mut both = [sdy, sdyx].concat();
        g.all_reduce_f64(&mut both)?;
        sdyx = both.split_off(c);
        sdy = both;
    }
    let k: Vec<f32> = (0..c).map(|ch| p.gamma[ch] * s.invstd[ch] / n).collect();
    let (mdy, mdyx): (Vec<f32>, Vec<f32>) = (0..c).map(|ch| (sdy[ch] as f32, sdyx[ch] as f32)).unzip();
    dx.par_chunks_mut(CHUNK_ROWS * c).enumerate().for_each(|(b, dxc)| {
        for (r, dxr) in dxc.chunks_exact_mut(c).enumerate() {
            let row = b * CHUNK_ROWS + r;
            for (ch, v) in dxr.iter_mut().enumerate() {
                *v = k[ch] * (n * dy[row * c + ch] - mdy[ch] - xhat(row, ch) * mdyx[ch]);
            }
        }
    });
    Ok(())
}
