//! Range observers: what real range each int8 tensor should cover, from calibration data.
//! Min/max keeps every observed value; the histogram methods clip rare outliers, which buys
//! resolution for the bulk of the values (SiLU's skewed, heavy-tailed pre-activations above all).

/// How an activation's range is chosen from the values seen in calibration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip both tails at this percentile of the observed values (e.g. 99.99: the range keeps
    /// [0.01%, 99.99%]).
    Percentile(f64),
    /// The clipping range minimising the expected squared quantization error (rounding inside,
    /// clipping outside), searched on a histogram.
    Mse,
}

impl RangeMethod {
    pub fn needs_histogram(&self) -> bool {
        !matches!(self, RangeMethod::MinMax)
    }
}

/// Histogram resolution: fine enough that a 256-level grid over any sub-range spans many bins.
pub const BINS: usize = 2048;

/// Running statistics of one tensor.
#[derive(Clone, Debug)]
pub struct Stats {
    pub min: f32,
    pub max: f32,
    /// Counts over `[min, max]` in [`BINS`] equal bins (second calibration pass).
    hist: Vec<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { min: f32::INFINITY, max: f32::NEG_INFINITY, hist: vec![] }
    }
}

impl Stats {
    pub fn seen(&self) -> bool {
        self.min <= self.max
    }

    /// First pass: track the extremes (non-finite values are ignored).
    pub fn observe_min_max(&mut self, data: &[f32]) {
        for &v in data.iter().filter(|v| v.is_finite()) {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    /// Second pass: histogram over the first pass's `[min, max]`.
    pub fn observe_histogram(&mut self, data: &[f32]) {
        if !self.seen() {
            return;
        }
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
        }
        let width = (self.max - self.min) as f64;
        let per = if width > 0.0 { BINS as f64 / width } else { 0.0 };
        for &v in data.iter().filter(|v| v.is_finite()) {
            let b = ((v - self.min) as f64 * per) as usize;
            self.hist[b.min(BINS - 1)] += 1;
        }
    }

    /// The chosen real range (always containing 0), or `None` when nothing was observed.
    pub fn range(&self, method: RangeMethod) -> Option<(f32, f32)> {
        if !self.seen() {
            return None;
        }
        let (min, max) = (self.min.min(0.0), self.max.max(0.0));
        let total: u64 = self.hist.iter().sum();
        if total == 0 || self.max <= self.min {
            return Some((min, max));
        }
        Some(match method {
            RangeMethod::MinMax => (min, max),
            RangeMethod::Percentile(p) => {
                let tail = ((100.0 - p.clamp(50.0, 100.0)) / 100.0 * total as f64).floor() as u64;
                let lo = self.quantile_from_bottom(tail).min(0.0);
                let hi = self.quantile_from_top(tail).max(0.0);
                (lo, hi)
            }
            RangeMethod::Mse => self.mse_range(min, max),
        })
    }

    fn bin_width(&self) -> f64 {
        (self.max - self.min) as f64 / BINS as f64
    }

    /// The lower edge of the first bin whose cumulative count from the bottom exceeds `skip`.
    fn quantile_from_bottom(&self, skip: u64) -> f32 {
        let mut acc = 0;
        for (b, &c) in self.hist.iter().enumerate() {
            acc += c;
            if acc > skip {
                return (self.min as f64 + b as f64 * self.bin_width()) as f32;
            }
        }
        self.max
    }

    /// The upper edge of the last bin whose cumulative count from the top exceeds `skip`.
    fn quantile_from_top(&self, skip: u64) -> f32 {
        let mut acc = 0;
        for (b, &c) in self.hist.iter().enumerate().rev() {
            acc += c;
            if acc > skip {
                return (self.min as f64 + (b + 1) as f64 * self.bin_width()) as f32;
            }
        }
        self.min
    }

    /// Grid search over shrunk `[lo, hi]` (each end scaled toward 0 independently): rounding
    /// error s²/12 for values inside, squared distance to the clip for values outside.
    fn mse_range(&self, min: f32, max: f32) -> (f32, f32) {
        const STEPS: usize = 24;
        // Geometric steps from the full range down to ~5% of it: finer where small clips matter.
        let fractions: Vec<f64> = (0..STEPS).map(|i| 0.88f64.powi(i as i32)).collect();
        let w = self.bin_width();
        let centres: Vec<f64> = (0..BINS).map(|b| self.min as f64 + (b as f64 + 0.5) * w).collect();
        let mut best = (f64::INFINITY, min, max);
        for &fl in &fractions {
            let lo = min as f64 * fl;
            for &fh in &fractions {
                let hi = max as f64 * fh;
                let s = (hi - lo) / 255.0;
                let inside = s * s / 12.0;
                let mut err = 0.0;
                for (&x, &c) in centres.iter().zip(&self.hist) {
                    if c == 0 {
                        continue;
                    }
                    let e = if x < lo { (lo - x).powi(2) } else if x > hi { (x - hi).powi(2) } else { inside };
                    err += e * c as f64;
                }
                if err < best.0 {
                    best = (err, lo as f32, hi as f32);
                }
            }
        }
        (best.1, best.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(data: &[f32]) -> Stats {
        let mut s = Stats::default();
        s.observe_min_max(data);
        s.observe_histogram(data);
        s
    }

    #[test]
    fn min_max_keeps_everything_and_contains_zero() {
        let s = stats(&[1.0, 2.0, f32::NAN, 5.0]);
        assert_eq!(s.range(RangeMethod::MinMax), Some((0.0, 5.0)));
        assert_eq!(Stats::default().range(RangeMethod::MinMax), None);
        assert_eq!(stats(&[-2.0, -1.0]).range(RangeMethod::Mse), Some((-2.0, 0.0)));
    }

    #[test]
    fn robust_methods_clip_a_lone_outlier() {
        // 1,000,000 values spread over [-1, 1] and one at 100.
        let mut data: Vec<f32> = (0..1_000_000).map(|i| -1.0 + 2.0 * i as f32 / 999_999.0).collect();
        data.push(100.0);
        let s = stats(&data);
        assert_eq!(s.range(RangeMethod::MinMax), Some((-1.0, 100.0)));
        let (lo, hi) = s.range(RangeMethod::Percentile(99.9)).unwrap();
        assert!((-1.0..-0.9).contains(&lo) && (0.9..1.2).contains(&hi), "{lo} {hi}");
        // MSE trades the outlier's clipping error against rounding error on the bulk:
        // (100 − hi)² + 10⁶·((hi + 1)/255)²/12 is least near hi ≈ 43.
        let (lo, hi) = s.range(RangeMethod::Mse).unwrap();
        assert!(lo <= -0.9 && (30.0..60.0).contains(&hi), "{lo} {hi}");
    }
}
