//! The Edge TPU latency model: a per-op roofline plus per-op overhead, USB transfers, and
//! parameter streaming beyond the on-chip cache.
//!
//! ```text
//! op time    t_i = t_op + max(MACs_i · c_mac, elements_i · c_el)
//! compute    T_c = Σ_i max(MACs_i · c_mac, elements_i · c_el)           (ops on the Edge TPU)
//! streaming  T_s = max(0, parameter bytes − cache) / B_usb
//! latency    T   = max(T_c, T_s) + N_ops · t_op + (input + output bytes) / B_usb
//! ```
//!
//! `c_mac`: the matrix unit's time per multiply-accumulate (full convs are bound by it);
//! `c_el`: time per output element through the activation path — depthwise convs (9 or 25
//! MACs per output) and element-wise ops (ADD, MUL, LOGISTIC, MEAN, PAD, QUANTIZE) are bound by
//! it, which is why depthwise layers use the chip poorly; `t_op`: fixed cost of each layer.
//! Streamed parameters arrive over USB while earlier layers compute, so streaming costs time
//! only when it outlasts the compute. `c_mac`, `c_el` and `t_op` are fitted ([`fit`]) to
//! Coral's published latencies (docs/coral/cost_model.md); `B_usb` and the cache are set from
//! published figures, not fitted.

use serde::Serialize;

use super::analysis::{OpClass, OpStat};

/// Nominal peak: 4 TOPS int8 = 2·10¹² MAC/s (only used to express `c_mac` as an efficiency).
pub const PEAK_MACS_PER_S: f64 = 2e12;
/// On-chip parameter cache usable by one model: compiler logs print used + remaining ≈ 7.0 MiB
/// (edge-targets.md §1.4).
pub const CACHE_BYTES: u64 = 7 << 20;
/// USB 3.0 host ↔ Edge TPU throughput, MB/s: Inception V3 grows from 12.0 MB / 13.4 ms (224 px)
/// to 23.9 MB / 42.8 ms (299 px); with both runs bound by parameter streaming that is
/// 11.9 MB per 29.4 ms ≈ 405 MB/s.
pub const USB_MB_PER_S: f64 = 405.0;

/// The fitted constants.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CostModel {
    /// Picoseconds per multiply-accumulate on the matrix unit.
    pub mac_ps: f64,
    /// Picoseconds per output element on the activation path.
    pub element_ps: f64,
    /// Microseconds of fixed cost per op.
    pub op_overhead_us: f64,
    pub usb_mb_per_s: f64,
    pub cache_bytes: u64,
}

/// The constants [`fit`] returns for the fit set of [`super::reference::REFERENCE_NETS`]
/// (checked by a test, so this stays the fit's result).
pub const FITTED: CostModel = CostModel {
    mac_ps: 2.06,
    element_ps: 81.5,
    op_overhead_us: 23.5,
    usb_mb_per_s: USB_MB_PER_S,
    cache_bytes: CACHE_BYTES,
};

/// A predicted latency and where it goes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    pub total_ms: f64,
    /// Σ of the per-op roofline terms.
    pub compute_ms: f64,
    /// The part of compute bound by the matrix unit (convs)…
    pub mac_bound_ms: f64,
    /// …and by the activation path (depthwise, element-wise).
    pub element_bound_ms: f64,
    pub overhead_ms: f64,
    /// Streaming the parameters that do not fit the cache (overlapped with compute).
    pub stream_ms: f64,
    /// Whether streaming, not compute, sets the time.
    pub stream_bound: bool,
    /// Input and output over USB.
    pub io_ms: f64,
    pub ops: usize,
    /// Ops left to the CPU (their host time is not predicted; `total_ms` covers the Edge TPU).
    pub cpu_ops: usize,
}

impl CostModel {
    /// Compute time of one op in ms (without the per-op overhead); 0 for ops on the CPU.
    pub fn op_compute_ms(&self, s: &OpStat) -> f64 {
        if !s.on_edgetpu {
            return 0.0;
        }
        let (mac, el) = self.op_terms_ms(s);
        mac.max(el)
    }

    /// Predicted time of one op including its overhead (0 on the CPU).
    pub fn op_ms(&self, s: &OpStat) -> f64 {
        if s.on_edgetpu {
            self.op_compute_ms(s) + self.op_overhead_us * 1e-3
        } else {
            0.0
        }
    }

    fn op_terms_ms(&self, s: &OpStat) -> (f64, f64) {
        let elements = match s.class {
            OpClass::Conv | OpClass::Depthwise => s.output_bytes,
            OpClass::Elementwise => s.elements,
            OpClass::Layout => 0,
        };
        (s.macs as f64 * self.mac_ps * 1e-9, elements as f64 * self.element_ps * 1e-9)
    }

    /// Predict the latency of `ops` (from [`super::analysis::analyze`]) with `io_bytes` crossing
    /// USB per inference (model input + output, or + the tensor at the CPU cut).
    pub fn predict(&self, ops: &[OpStat], io_bytes: u64) -> Prediction {
        let tpu: Vec<&OpStat> = ops.iter().filter(|s| s.on_edgetpu).collect();
        let (mut mac_bound, mut element_bound) = (0.0, 0.0);
        for s in &tpu {
            let (m, e) = self.op_terms_ms(s);
            if m >= e {
                mac_bound += m;
            } else {
                element_bound += e;
            }
        }
        let compute_ms = mac_bound + element_bound;
        let params: u64 = tpu.iter().map(|s| s.param_bytes).sum();
        let stream_ms = params.saturating_sub(self.cache_bytes) as f64 / (self.usb_mb_per_s * 1e3);
        let overhead_ms = tpu.len() as f64 * self.op_overhead_us * 1e-3;
        let io_ms = io_bytes as f64 / (self.usb_mb_per_s * 1e3);
        Prediction {
            total_ms: compute_ms.max(stream_ms) + overhead_ms + io_ms,
            compute_ms,
            mac_bound_ms: mac_bound,
            element_bound_ms: element_bound,
            overhead_ms,
            stream_ms,
            stream_bound: stream_ms > compute_ms,
            io_ms,
            ops: tpu.len(),
            cpu_ops: ops.len() - tpu.len(),
        }
    }

    /// `c_mac` as a fraction of the nominal peak.
    pub fn mac_efficiency(&self) -> f64 {
        1e12 / self.mac_ps / PEAK_MACS_PER_S
    }
}

/// One network to fit to: its ops, USB bytes per inference and published latency.
pub struct Sample<'a> {
    pub ops: &'a [OpStat],
    pub io_bytes: u64,
    pub published_ms: f64,
}

/// Least squares on relative error over `samples`: `c_mac` and `c_el` on a log grid (then a
/// finer one around the best point), `t_op ≥ 0` in closed form for each grid point. `usb` and
/// cache come from `base`.
pub fn fit(samples: &[Sample], base: CostModel) -> CostModel {
    let loss_and_overhead = |mac_ps: f64, element_ps: f64| -> (f64, f64) {
        let m = CostModel { mac_ps, element_ps, op_overhead_us: 0.0, ..base };
        // p_i = a_i + n_i·t (t in ms); minimise Σ ((a_i + n_i·t − y_i)/y_i)².
        let (mut num, mut den) = (0.0, 0.0);
        let terms: Vec<(f64, f64, f64)> = samples
            .iter()
            .map(|s| {
                let p = m.predict(s.ops, s.io_bytes);
                (p.total_ms, p.ops as f64, s.published_ms)
            })
            .collect();
        for &(a, n, y) in &terms {
            num += (n / y) * ((y - a) / y);
            den += (n / y) * (n / y);
        }
        let t = if den > 0.0 { (num / den).max(0.0) } else { 0.0 };
        let loss = terms.iter().map(|&(a, n, y)| ((a + n * t - y) / y).powi(2)).sum();
        (loss, t * 1e3)
    };
    let mut best = (f64::INFINITY, base.mac_ps, base.element_ps, 0.0);
    let search = |mac: (f64, f64), el: (f64, f64), steps: usize, best: &mut (f64, f64, f64, f64)| {
        for i in 0..=steps {
            for j in 0..=steps {
                let lerp = |(lo, hi): (f64, f64), k: usize| (lo.ln() + (hi.ln() - lo.ln()) * k as f64 / steps as f64).exp();
                let (c_mac, c_el) = (lerp(mac, i), lerp(el, j));
                let (loss, t) = loss_and_overhead(c_mac, c_el);
                if loss < best.0 {
                    *best = (loss, c_mac, c_el, t);
                }
            }
        }
    };
    search((0.5, 20.0), (1.0, 2000.0), 120, &mut best);
    let (m0, e0) = (best.1, best.2);
    search((m0 / 1.1, m0 * 1.1), (e0 / 1.2, e0 * 1.2), 120, &mut best);
    // Three significant digits: the constants are written into the source and the docs.
    let round3 = |x: f64| {
        if x == 0.0 || !x.is_finite() {
            return x;
        }
        let p = 10f64.powi(2 - x.abs().log10().floor().clamp(-30.0, 30.0) as i32);
        (x * p).round() / p
    };
    CostModel { mac_ps: round3(best.1), element_ps: round3(best.2), op_overhead_us: round3(best.3), ..base }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(class: OpClass, macs: u64, elements: u64, out: u64, params: u64, on: bool) -> OpStat {
        OpStat {
            index: 0,
            op: "X",
            version: 1,
            node: "n".into(),
            class,
            on_edgetpu: on,
            why_not: vec![],
            macs,
            elements,
            param_bytes: params,
            input_bytes: 0,
            output_bytes: out,
            output_shape: vec![],
        }
    }

    const M: CostModel = CostModel { mac_ps: 2.0, element_ps: 100.0, op_overhead_us: 20.0, usb_mb_per_s: 400.0, cache_bytes: 1000 };

    #[test]
    fn each_op_is_bound_by_its_larger_term() {
        // A conv with 1000 MACs per output element: 2 ms of MACs vs 0.1 ms of elements.
        let conv = op(OpClass::Conv, 1_000_000_000, 0, 1_000_000, 0, true);
        // A 3×3 depthwise: 9 MACs per output element: 0.018 ms vs 0.1 ms → element-bound.
        let dw = op(OpClass::Depthwise, 9_000_000, 0, 1_000_000, 0, true);
        let add = op(OpClass::Elementwise, 0, 1_000_000, 1_000_000, 0, true);
        let reshape = op(OpClass::Layout, 0, 0, 1000, 0, true);
        assert!((M.op_compute_ms(&conv) - 2.0).abs() < 1e-12);
        assert!((M.op_compute_ms(&dw) - 0.1).abs() < 1e-12);
        assert!((M.op_compute_ms(&add) - 0.1).abs() < 1e-12);
        assert_eq!(M.op_compute_ms(&reshape), 0.0);
        assert!((M.op_ms(&reshape) - 0.02).abs() < 1e-12);
        let p = M.predict(&[conv, dw, add, reshape], 400_000);
        assert!((p.mac_bound_ms - 2.0).abs() < 1e-12 && (p.element_bound_ms - 0.2).abs() < 1e-12);
        assert!((p.overhead_ms - 0.08).abs() < 1e-12 && (p.io_ms - 1.0).abs() < 1e-12);
        assert!((p.total_ms - 3.28).abs() < 1e-12, "{p:?}");
    }

    #[test]
    fn streaming_overlaps_compute_until_it_dominates() {
        let small = op(OpClass::Conv, 1_000_000_000, 0, 0, 900, true);
        assert_eq!(M.predict(std::slice::from_ref(&small), 0).stream_ms, 0.0);
        // 400,000 bytes over the cache at 400 MB/s = 1 ms < 2 ms of compute: hidden.
        let mid = op(OpClass::Conv, 1_000_000_000, 0, 0, 401_000, true);
        let p = M.predict(&[mid], 0);
        assert!((p.stream_ms - 1.0).abs() < 1e-12 && !p.stream_bound && (p.total_ms - 2.02).abs() < 1e-12);
        // 4 ms of streaming > 2 ms of compute: streaming sets the time.
        let big = op(OpClass::Conv, 1_000_000_000, 0, 0, 1_601_000, true);
        let p = M.predict(&[big], 0);
        assert!(p.stream_bound && (p.total_ms - 4.02).abs() < 1e-12, "{p:?}");
    }

    #[test]
    fn cpu_ops_cost_nothing_here_and_are_counted() {
        let on = op(OpClass::Conv, 1_000_000_000, 0, 0, 0, true);
        let off = op(OpClass::Conv, 1_000_000_000, 0, 0, 5000, false);
        assert_eq!(M.op_ms(&off), 0.0);
        let p = M.predict(&[on, off], 0);
        assert_eq!((p.ops, p.cpu_ops), (1, 1));
        assert_eq!(p.stream_ms, 0.0, "CPU ops' parameters never go to the cache");
        assert!((p.total_ms - 2.02).abs() < 1e-12);
    }

    #[test]
    fn fit_recovers_known_constants() {
        let truth = CostModel { mac_ps: 3.0, element_ps: 50.0, op_overhead_us: 30.0, usb_mb_per_s: 400.0, cache_bytes: 1 << 30 };
        let nets: Vec<Vec<OpStat>> = vec![
            vec![op(OpClass::Conv, 2_000_000_000, 0, 500_000, 0, true); 10],
            vec![op(OpClass::Depthwise, 5_000_000, 0, 3_000_000, 0, true); 20],
            (0..60).map(|i| op(if i % 2 == 0 { OpClass::Conv } else { OpClass::Elementwise }, 10_000_000, 200_000, 200_000, 0, true)).collect(),
            vec![op(OpClass::Layout, 0, 0, 0, 0, true); 5],
        ];
        let samples: Vec<Sample> = nets.iter().map(|ops| Sample { ops, io_bytes: 100_000, published_ms: truth.predict(ops, 100_000).total_ms }).collect();
        let got = fit(&samples, CostModel { mac_ps: 1.0, element_ps: 1.0, op_overhead_us: 0.0, ..truth });
        for (a, b) in [(got.mac_ps, 3.0), (got.element_ps, 50.0), (got.op_overhead_us, 30.0)] {
            assert!((a / b - 1.0).abs() < 0.02, "{got:?}");
        }
    }
}
