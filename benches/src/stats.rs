//! Latency statistics over per-iteration samples.
//!
//! Percentiles use the **nearest-rank** method: for n sorted samples x₁ ≤ … ≤ xₙ, the p-th
//! percentile (0 < p ≤ 100) is x_r with r = ⌈p·n/100⌉ (r clamped to 1..=n; p = 0 gives x₁).
//! It always returns an observed sample, never an interpolated one, which is what trtexec and
//! the benchmark-practice notes use. Examples: n = 2 → p50 = x₁, p90 = p99 = x₂; n = 4 → p50 = x₂.

use serde::Serialize;

/// Summary of a set of samples (any unit; the bench uses milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Population standard deviation (divides by n).
    pub std: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Nearest-rank percentile of samples that are already sorted ascending; `None` when empty or
/// `p` is outside 0..=100.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    // Integer rank arithmetic where possible so that p·n/100 landing exactly on an integer
    // (e.g. p50 of 4) is not pushed one rank up by float error.
    let exact = p * n as f64 / 100.0;
    let rank = if (exact - exact.round()).abs() < 1e-9 { exact.round() } else { exact.ceil() } as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

impl Summary {
    /// Summarise `samples` in any order. `None` for no samples or a NaN sample.
    pub fn from_samples(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let pct = |p| percentile_sorted(&s, p).expect("non-empty");
        Some(Summary {
            n,
            min: s[0],
            max: s[n - 1],
            mean,
            std: var.sqrt(),
            p50: pct(50.0),
            p90: pct(90.0),
            p95: pct(95.0),
            p99: pct(99.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_nan_give_none() {
        assert_eq!(Summary::from_samples(&[]), None);
        assert_eq!(Summary::from_samples(&[1.0, f64::NAN]), None);
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[1.0], 101.0), None);
        assert_eq!(percentile_sorted(&[1.0], -1.0), None);
    }

    #[test]
    fn one_sample_is_every_statistic() {
        let s = Summary::from_samples(&[7.5]).unwrap();
        assert_eq!((s.n, s.min, s.max, s.mean, s.std), (1, 7.5, 7.5, 7.5, 0.0));
        assert_eq!((s.p50, s.p90, s.p95, s.p99), (7.5, 7.5, 7.5, 7.5));
    }

    #[test]
    fn two_samples() {
        // ⌈0.5·2⌉ = 1 → the lower sample; ⌈0.9·2⌉ = 2 → the upper one.
        let s = Summary::from_samples(&[3.0, 1.0]).unwrap();
        assert_eq!((s.p50, s.p90, s.p99), (1.0, 3.0, 3.0));
        assert_eq!((s.min, s.max, s.mean, s.std), (1.0, 3.0, 2.0, 1.0));
    }

    #[test]
    fn odd_count_median_is_the_middle() {
        let s = Summary::from_samples(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.p90, 5.0); // ⌈4.5⌉ = 5
        assert_eq!(s.min, 1.0);
    }

    #[test]
    fn even_count_median_is_the_lower_middle() {
        let s = Summary::from_samples(&[4.0, 2.0, 3.0, 1.0]).unwrap();
        assert_eq!(s.p50, 2.0); // rank 2 exactly, not 3
        assert_eq!(s.p90, 4.0);
    }

    #[test]
    fn hundred_samples_hit_exact_ranks() {
        // 1..=100 shuffled: the p-th percentile is p itself.
        let v: Vec<f64> = (0..100).map(|i| ((i * 37) % 100 + 1) as f64).collect();
        let s = Summary::from_samples(&v).unwrap();
        assert_eq!((s.p50, s.p90, s.p95, s.p99, s.max), (50.0, 90.0, 95.0, 99.0, 100.0));
        assert_eq!(s.mean, 50.5);
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&sorted, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&sorted, 100.0), Some(100.0));
        assert_eq!(percentile_sorted(&sorted, 0.5), Some(1.0));
        assert_eq!(percentile_sorted(&sorted, 99.5), Some(100.0));
    }

    #[test]
    fn all_equal_values() {
        let s = Summary::from_samples(&[2.5; 9]).unwrap();
        assert_eq!((s.min, s.max, s.p50, s.p99, s.mean, s.std), (2.5, 2.5, 2.5, 2.5, 2.5, 0.0));
    }
}
