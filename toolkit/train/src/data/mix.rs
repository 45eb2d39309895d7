//! Mixup and CutMix the official way (`datasets.py` `mixing`): with both on, the first half of the
//! batch gets mixup and the second half CutMix; each half's partner images are that half
//! reversed. Mixup draws a per-sample λ ~ Beta(α, α) and keeps max(λ, 1−λ); CutMix cuts a box
//! whose area fraction is drawn from Beta(α, α) and weights the targets by the area actually cut.

use serde::{Deserialize, Serialize};

use effv2_edge::rng::Rng;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MixConfig {
    pub mixup: f64,
    pub cutmix: f64,
}

/// Gamma(shape, 1) by Marsaglia–Tsang (shape < 1 boosted by U^(1/shape)).
fn gamma(shape: f64, rng: &mut Rng) -> f64 {
    if shape < 1.0 {
        return gamma(shape + 1.0, rng) * rng.uniform().max(f64::MIN_POSITIVE).powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal();
        let v = (1.0 + c * x).powi(3);
        if v > 0.0 && rng.uniform().max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A Beta(a, b) draw.
pub fn beta(a: f64, b: f64, rng: &mut Rng) -> f64 {
    let (x, y) = (gamma(a, rng), gamma(b, rng));
    if x + y > 0.0 {
        x / (x + y)
    } else {
        0.5
    }
}

/// Mix `n` samples of `x` (`[n, c, h, w]`) and their `targets` (`[n, classes]`) in place.
pub fn mix_batch(x: &mut [f32], targets: &mut [f32], n: usize, chw: (usize, usize, usize), cfg: MixConfig, rng: &mut Rng) {
    let (c, h, w) = chw;
    let (len, classes) = (c * h * w, targets.len() / n.max(1));
    let (xs, ts) = (x.to_vec(), targets.to_vec());
    let half = match (cfg.mixup > 0.0, cfg.cutmix > 0.0) {
        (false, false) => return,
        (true, true) => n / 2,
        (true, false) => n,
        (false, true) => 0,
    };
    for (lo, hi, mixup) in [(0, half, true), (half, n, false)] {
        for i in lo..hi {
            let j = lo + hi - 1 - i;
            let (xi, xj) = (&xs[i * len..][..len], &xs[j * len..][..len]);
            let out = &mut x[i * len..][..len];
            let keep = if mixup {
                let l = beta(cfg.mixup, cfg.mixup, rng);
                let l = l.max(1.0 - l) as f32;
                out.iter_mut().zip(xi.iter().zip(xj)).for_each(|(o, (a, b))| *o = l * a + (1.0 - l) * b);
                l as f64
            } else {
                let r = beta(cfg.cutmix, cfg.cutmix, rng).sqrt();
                let (bh, bw) = ((h as f64 * r) as usize, (w as f64 * r) as usize);
                let (cy, cx) = (rng.below(h), rng.below(w));
                let (y0, y1) = (cy.saturating_sub(bh / 2), (cy + bh / 2).min(h));
                let (x0, x1) = (cx.saturating_sub(bw / 2), (cx + bw / 2).min(w));
                for ch in 0..c {
                    for y in y0..y1 {
                        let r = (ch * h + y) * w;
                        out[r + x0..r + x1].copy_from_slice(&xj[r + x0..r + x1]);
                    }
                }
                1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64
            };
            let t = &mut targets[i * classes..][..classes];
            for k in 0..classes {
                t[k] = (keep * ts[i * classes + k] as f64 + (1.0 - keep) * ts[j * classes + k] as f64) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_mean_matches() {
        let mut rng = Rng::new(1);
        for (a, b) in [(0.2, 0.2), (2.0, 5.0), (1.0, 1.0)] {
            let m = (0..20_000).map(|_| beta(a, b, &mut rng)).sum::<f64>() / 20_000.0;
            assert!((m - a / (a + b)).abs() < 0.01, "Beta({a},{b}) mean {m}");
        }
    }

    #[test]
    fn halves_mix_with_their_reversal_and_targets_follow_pixels() {
        let n = 4;
        let mut x: Vec<f32> = (0..n).flat_map(|i| vec![i as f32; 16]).collect();
        let mut t = vec![0.0; n * 4];
        (0..n).for_each(|i| t[i * 4 + i] = 1.0);
        mix_batch(&mut x, &mut t, n, (1, 4, 4), MixConfig { mixup: 0.5, cutmix: 0.5 }, &mut Rng::new(2));
        // Sample 0 mixes only with 1 (mixup half), sample 2 only with 3 (cutmix half).
        let lam = t[0];
        assert!(lam >= 0.5 && (t[1] - (1.0 - lam)).abs() < 1e-6 && t[2] == 0.0);
        assert!(x[..16].iter().all(|v| (v - (1.0 - lam)).abs() < 1e-5));
        let cut = x[32..48].iter().filter(|&&v| v == 3.0).count() as f32 / 16.0;
        assert!((t[2 * 4 + 3] - cut).abs() < 1e-6 && (t[2 * 4 + 2] - (1.0 - cut)).abs() < 1e-6);
        for row in t.chunks(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
