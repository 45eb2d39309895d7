//! Per-launch GPU times, for finding where a pass spends its time (`EFFV2_CUDA_PROFILE=1`): an
//! event recorded after every launch, the gaps between them added up per label ("conv fwd 3x3
//! 24->48 s2 @112x112", a kernel's name, ...) and printed as a table, slowest first. Profiled
//! passes run launch by launch (no CUDA graph), so their sum is a little above a replayed pass.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{sys::CUevent_flags, CudaEvent, CudaStream, DriverError};

use crate::plan::launch::{BlasGemm, ConvShape};

/// Set to `1` to time every launch of the CUDA engines and print where the time went.
pub const PROFILE_ENV: &str = "EFFV2_CUDA_PROFILE";

pub fn enabled() -> bool {
    std::env::var(PROFILE_ENV).is_ok_and(|v| v != "0" && !v.is_empty())
}

/// Events around one pass's launches.
pub struct PassTimer {
    start: CudaEvent,
    marks: Vec<(String, CudaEvent)>,
}

impl PassTimer {
    pub fn start(stream: &Arc<CudaStream>) -> Result<PassTimer, DriverError> {
        Ok(PassTimer { start: stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?, marks: vec![] })
    }

    /// The launch just enqueued ends here.
    pub fn mark(&mut self, stream: &Arc<CudaStream>, label: String) -> Result<(), DriverError> {
        let e = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        self.marks.push((label, e));
        Ok(())
    }

    /// Waits for the pass; each launch's label and milliseconds.
    pub fn finish(self) -> Result<Vec<(String, f64)>, DriverError> {
        let mut prev = &self.start;
        let mut out = Vec::with_capacity(self.marks.len());
        for (label, e) in &self.marks {
            out.push((label.clone(), prev.elapsed_ms(e)? as f64));
            prev = e;
        }
        Ok(out)
    }
}

/// Times summed per label over the passes profiled. The first pass is left out once a second
/// begins: it pays one-off costs (a 3-pass profile of an S@224 b128 training step on the H200 had two
/// GEMMs average 30 and 14 ms a pass, a thousand times what their sizes take: their first calls).
#[derive(Default)]
pub struct Profile {
    by_label: HashMap<String, (f64, usize)>,
    passes: usize,
    first_left_out: bool,
}

impl Profile {
    /// A new pass begins: launches [`Profile::extend`] adds from now on count towards it.
    pub fn start_pass(&mut self) {
        if self.passes == 1 && !self.first_left_out {
            self.by_label.clear();
            self.passes = 0;
            self.first_left_out = true;
        }
        self.passes += 1;
    }

    /// One more pass, made of these launches.
    pub fn add(&mut self, pass: Vec<(String, f64)>) {
        self.start_pass();
        self.extend(pass);
    }

    /// More launches of the current pass (a training step is several enqueues).
    pub fn extend(&mut self, pass: Vec<(String, f64)>) {
        for (label, ms) in pass {
            let e = self.by_label.entry(label).or_default();
            e.0 += ms;
            e.1 += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.passes == 0
    }

    /// A table: per kind (the label's first word), then the `top` slowest labels.
    pub fn report(&self, title: &str, top: usize) -> String {
        let total: f64 = self.by_label.values().map(|v| v.0).sum();
        let mut kinds: HashMap<&str, (f64, usize)> = HashMap::new();
        for (label, (ms, n)) in &self.by_label {
            let k = kinds.entry(label.split(' ').next().unwrap_or("")).or_default();
            k.0 += ms;
            k.1 += n;
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        let warmup = if self.first_left_out { " (after a first pass left out)" } else { "" };
        let mut s = format!("{title}: {} passes{warmup}, {:.2} ms per pass\n  by kind:\n", self.passes, total / self.passes.max(1) as f64);
        for (k, (ms, n)) in kinds {
            s += &format!("  {:>9.3} ms/pass {:>5.1}% {:>6} launches  {k}\n", ms / self.passes as f64, 100.0 * ms / total, n / self.passes);
        }
        let mut rows: Vec<_> = self.by_label.iter().collect();
        rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
        s += &format!("  slowest {top}:\n");
        for (label, (ms, n)) in rows.into_iter().take(top) {
            s += &format!("  {:>9.3} ms/pass {:>5.1}% x{:<4} {label}\n", ms / self.passes as f64, 100.0 * ms / total, n / self.passes);
        }
        s
    }
}

/// "3x3 g1 24->48 s2 @112x112 n128": a conv's shape for a label.
pub fn conv_label(s: &ConvShape) -> String {
    format!("{}x{} g{} {}->{} s{} @{}x{} n{}", s.kernel, s.kernel, s.groups, s.c, s.out_ch, s.stride, s.h, s.w, s.n)
}

pub fn gemm_label(g: &BlasGemm) -> String {
    format!("{}x{}x{}", g.m, g.n, g.k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_averages_per_pass_and_ranks_kinds_and_launches_slowest_first() {
        let mut p = Profile::default();
        // The first pass (one-off costs) is left out once a second begins.
        p.add(vec![("conv-fwd 3x3 a".into(), 300.0), ("gemm 1x2x3".into(), 50.0)]);
        for _ in 0..2 {
            p.add(vec![("conv-fwd 3x3 a".into(), 3.0), ("depthwise n=8".into(), 1.0), ("depthwise n=16".into(), 4.0)]);
        }
        let r = p.report("test", 2);
        assert!(r.starts_with("test: 2 passes (after a first pass left out), 8.00 ms per pass"), "{r}");
        assert!(!r.contains("gemm"), "{r}");
        let kinds: Vec<&str> = r.lines().skip(2).take(2).collect();
        assert!(kinds[0].ends_with("depthwise") && kinds[0].contains("5.000 ms/pass") && kinds[0].contains(" 2 launches"), "{r}");
        assert!(kinds[1].ends_with("conv-fwd") && kinds[1].contains("3.000 ms/pass"), "{r}");
        let slowest: Vec<&str> = r.lines().skip(5).collect();
        assert_eq!(slowest.len(), 2, "{r}");
        assert!(slowest[0].ends_with("depthwise n=16") && slowest[1].ends_with("conv-fwd 3x3 a"), "{r}");
    }

    #[test]
    fn a_single_pass_is_kept_and_a_step_of_several_enqueues_is_one_pass() {
        let mut p = Profile::default();
        p.start_pass();
        p.extend(vec![("gemm 1x2x3".into(), 2.0)]);
        p.extend(vec![("chan_partials n=4".into(), 1.0)]);
        let r = p.report("step", 5);
        assert!(r.starts_with("step: 1 passes, 3.00 ms per pass"), "{r}");
    }
}
