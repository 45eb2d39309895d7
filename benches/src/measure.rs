//! Time one artifact: open it (verified), run once cold, warm up, then time every iteration
//! on its own with a monotonic clock.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use effv2_edge::rng::Rng;
use effv2_runtime::{OpenOptions, Runtime};
use serde::Serialize;

use crate::machine::{peak_rss_bytes, Machine};
use crate::stats::Summary;
use crate::BenchError;

/// How `stats` computes percentiles, written into every report.
pub const PERCENTILE_METHOD: &str = "nearest-rank";

#[derive(Clone, Debug)]
pub struct MeasureOptions {
    /// Untimed runs after the first (cold) one.
    pub warmup: usize,
    /// Timed runs; at least 1.
    pub iters: usize,
    /// Backend worker threads (None: the runtime's default, 1).
    pub threads: Option<usize>,
    /// Batch to run (None: the artifact's).
    pub batch: Option<usize>,
    /// Seed of the fixed random input.
    pub seed: u64,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions { warmup: 10, iters: 50, threads: None, batch: None, seed: 0 }
    }
}

impl MeasureOptions {
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.iters == 0 {
            return Err(BenchError::Args("--iters must be at least 1".into()));
        }
        if self.threads == Some(0) {
            return Err(BenchError::Args("--threads must be at least 1".into()));
        }
        if self.batch == Some(0) {
            return Err(BenchError::Args("--batch must be at least 1".into()));
        }
        Ok(())
    }
}

/// The artifact as its manifest describes it.
#[derive(Clone, Debug, Serialize)]
pub struct ArtifactInfo {
    pub path: String,
    pub target: String,
    pub precision: String,
    pub variant: String,
    pub fused_stages: String,
    pub params: u64,
    pub macs: u64,
    pub num_classes: usize,
    pub toolkit_version: String,
}

/// One `effv2-bench run`: the JSON object `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub bench_version: String,
    pub artifact: ArtifactInfo,
    pub backend: String,
    pub device: String,
    /// On the target's accelerator (the Edge TPU), not a CPU or a CPU fallback.
    pub on_accelerator: bool,
    pub machine: Machine,
    /// [N, C, H, W] actually run.
    pub input_shape: [usize; 4],
    pub batch: usize,
    pub threads: usize,
    pub warmup: usize,
    pub iters: usize,
    pub input_seed: u64,
    /// Manifest verification + backend load and optimisation.
    pub load_s: f64,
    /// The first run after loading, not part of the statistics.
    pub first_run_ms: f64,
    pub percentile_method: String,
    pub latency_ms: Summary,
    /// batch / mean latency.
    pub throughput_ips: f64,
    /// p50 latency per 10⁹ multiply-accumulates of the batch.
    pub ms_per_gmac: f64,
    /// GPU backends: the same iterations on the batch already on the device (no host copies),
    /// the figure comparable with frameworks timed on GPU-resident batches. Null elsewhere.
    pub device_latency_ms: Option<Summary>,
    pub device_throughput_ips: Option<f64>,
    /// Peak RSS of this process so far (in a sweep: of every artifact measured until then).
    pub peak_rss_bytes: Option<u64>,
    /// The timed latencies themselves (a sweep pools its rounds' samples).
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

/// Open the artifact at `dir` and measure it.
pub fn measure_artifact(dir: &Path, opts: &MeasureOptions) -> Result<RunReport, BenchError> {
    opts.validate()?;
    let t0 = Instant::now();
    let open = OpenOptions { batch: opts.batch, threads: opts.threads, expect_target: None };
    let mut rt = effv2_runtime::open(dir, &open)?;
    let load_s = t0.elapsed().as_secs_f64();
    measure_runtime(rt.as_mut(), dir, load_s, opts)
}

/// Measure an already opened runtime (`load_s` is how long opening it took).
pub fn measure_runtime(rt: &mut dyn Runtime, dir: &Path, load_s: f64, opts: &MeasureOptions) -> Result<RunReport, BenchError> {
    opts.validate()?;
    let shape = rt.input_shape();
    let input = fixed_input(shape, opts.seed);
    let classes = rt.manifest().num_classes;

    let t = Instant::now();
    let out = rt.run(&input)?;
    let first_run_ms = t.elapsed().as_secs_f64() * 1e3;
    check_output(rt, &out, shape[0], classes)?;
    for _ in 0..opts.warmup {
        black_box(rt.run(black_box(&input))?);
    }
    let mut samples = Vec::with_capacity(opts.iters);
    for _ in 0..opts.iters {
        let t = Instant::now();
        let out = rt.run(black_box(&input))?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        black_box(out);
    }
    let latency_ms = Summary::from_samples(&samples).expect("iters >= 1 and durations are never NaN");
    let mut device_samples = Vec::new();
    for _ in 0..opts.iters {
        let t = Instant::now();
        match rt.run_on_device() {
            None => break,
            Some(r) => r?,
        }
        device_samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let device_latency_ms = Summary::from_samples(&device_samples);

    let m = rt.manifest();
    let batch = shape[0];
    Ok(RunReport {
        bench_version: env!("CARGO_PKG_VERSION").into(),
        artifact: ArtifactInfo {
            path: dir.display().to_string(),
            target: m.target.to_string(),
            precision: m.precision.to_string(),
            variant: m.model.variant.clone(),
            fused_stages: m.model.fused_stages.clone(),
            params: m.model.params,
            macs: m.model.macs,
            num_classes: m.num_classes,
            toolkit_version: m.toolkit_version.clone(),
        },
        backend: rt.backend().to_string(),
        device: rt.device(),
        on_accelerator: rt.on_accelerator(),
        machine: Machine::detect(),
        input_shape: shape,
        batch,
        threads: opts.threads.unwrap_or(1),
        warmup: opts.warmup,
        iters: opts.iters,
        input_seed: opts.seed,
        load_s,
        first_run_ms,
        percentile_method: PERCENTILE_METHOD.into(),
        throughput_ips: throughput_ips(&latency_ms, batch),
        ms_per_gmac: ms_per_gmac(&latency_ms, batch, m.model.macs),
        latency_ms,
        device_throughput_ips: device_latency_ms.as_ref().map(|d| throughput_ips(d, batch)),
        device_latency_ms,
        peak_rss_bytes: peak_rss_bytes(),
        samples_ms: samples,
    })
}

/// Images per second at the mean latency of runs of `batch` images.
pub fn throughput_ips(latency_ms: &Summary, batch: usize) -> f64 {
    batch as f64 / (latency_ms.mean / 1e3)
}

/// p50 latency per 10⁹ multiply-accumulates of the batch (NaN when the MAC count is unknown).
pub fn ms_per_gmac(latency_ms: &Summary, batch: usize, macs_per_image: u64) -> f64 {
    let gmacs = macs_per_image as f64 * batch as f64 / 1e9;
    if gmacs > 0.0 { latency_ms.p50 / gmacs } else { f64::NAN }
}

/// A seeded standard-normal input (what a normalised image looks like), the same on every
/// machine so runs are comparable.
pub fn fixed_input(shape: [usize; 4], seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..shape.iter().product::<usize>()).map(|_| rng.normal() as f32).collect()
}

/// A fast but wrong backend must not produce a number: check the logits' size and finiteness.
fn check_output(rt: &dyn Runtime, out: &[f32], batch: usize, classes: usize) -> Result<(), BenchError> {
    let bad = |extra: &str| BenchError::BadOutput {
        backend: rt.backend().to_string(),
        got: out.len(),
        batch,
        classes,
        extra: extra.to_string(),
    };
    if out.len() != batch * classes {
        return Err(bad(""));
    }
    if let Some(i) = out.iter().position(|x| !x.is_finite()) {
        return Err(bad(&format!(" with a non-finite value at index {i}")));
    }
    Ok(())
}

/// Human-readable summary of a run (what `run` prints without `--json`).
pub fn describe(r: &RunReport) -> String {
    let l = &r.latency_ms;
    let a = &r.artifact;
    let rss = r.peak_rss_bytes.map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))).unwrap_or_else(|| "n/a".into());
    let [n, c, h, w] = r.input_shape;
    format!(
        "artifact   {} ({} {}, fused stages {}, {:.2} M params, {:.3} GMACs/image)\n\
         runtime    {} on {} (artifact target {}, toolkit {})\n\
         machine    {}\n\
         input      [{n}, {c}, {h}, {w}], {} warm-up + {} timed iterations\n\
         load       {:.3} s, first run {:.2} ms\n\
         latency    p50 {:.2} ms  p90 {:.2}  p99 {:.2}  min {:.2}  mean {:.2}  (ms, {})\n\
         throughput {:.1} images/s, {:.2} ms per GMAC\n\
         peak RSS   {rss}",
        a.path,
        a.variant,
        a.precision,
        a.fused_stages,
        a.params as f64 / 1e6,
        a.macs as f64 / 1e9,
        r.backend,
        r.device,
        a.target,
        a.toolkit_version,
        r.machine.describe(),
        r.warmup,
        r.iters,
        r.load_s,
        r.first_run_ms,
        l.p50,
        l.p90,
        l.p99,
        l.min,
        l.mean,
        r.percentile_method,
        r.throughput_ips,
        r.ms_per_gmac,
    ) + &match (&r.device_latency_ms, r.device_throughput_ips) {
        (Some(d), Some(ips)) => format!("\non device  p50 {:.2} ms  mean {:.2} ms, {ips:.1} images/s (batch already on the GPU, no host copies)", d.p50, d.mean),
        _ => String::new(),
    }
}
