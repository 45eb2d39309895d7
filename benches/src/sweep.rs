//! The Fused-MBConv placement sweep: for each placement, build the artifact with fresh weights,
//! measure it, and collect one report row. The official placement is always measured, so every
//! row can be compared with it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use effv2_edge::spec::{variant, BlockKind, FusedStages, ModelOptions, ModelSpec, Variant};
use effv2_runtime::{Precision, Target};
use effv2_targets::calib::CalibSource;
use effv2_targets::cpu::{build_cpu, build_cpu_int8, CpuBuild, CpuInt8};
use effv2_targets::onnx::Int8Form;
use effv2_targets::jetson::build_jetson;
use effv2_targets::source::ModelSource;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::machine::{peak_rss_bytes, Machine};
use crate::measure::{measure_artifact, ms_per_gmac, throughput_ips, MeasureOptions, RunReport, PERCENTILE_METHOD};
use crate::stats::Summary;
use crate::{io_err, BenchError};

/// Parse a sweep placement list.
///
/// - `A..=B` / `A..B`: "the first k stages fused" for each k in the range (k = 0: none fused);
/// - otherwise a `;`-separated list of `--fused-stages` specs (`none;3;0,1,3`), where an item
///   may itself be a range.
///
/// Every placement must fit a model of `num_stages` stages.
pub fn parse_placements(spec: &str, num_stages: usize) -> Result<Vec<FusedStages>, BenchError> {
    let bad = |why: String| BenchError::Placement { spec: spec.to_string(), why };
    let mut out = Vec::new();
    for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((a, b)) = item.split_once("..") {
            let (b, inclusive) = match b.strip_prefix('=') {
                Some(b) => (b, true),
                None => (b, false),
            };
            let num = |t: &str| {
                t.trim().parse::<usize>().map_err(|_| bad(format!("{item:?} is not a range of stage counts like 0..=6 or 0..7")))
            };
            let (lo, hi) = (num(a)?, num(b)?);
            let hi = if inclusive { hi } else { hi.checked_sub(1).ok_or_else(|| bad(format!("{item:?} is an empty range")))? };
            if lo > hi {
                return Err(bad(format!("{item:?} is an empty range")));
            }
            if hi > num_stages {
                return Err(bad(format!(
                    "{item:?} goes up to k = {hi} fused stages, but this model has {num_stages} stages (k = 0..={num_stages})"
                )));
            }
            out.extend((lo..=hi).map(FusedStages::First));
        } else {
            let fs: FusedStages = item.parse().map_err(|e: effv2_edge::spec::SpecError| bad(e.to_string()))?;
            fs.validate(num_stages).map_err(|e| bad(e.to_string()))?;
            out.push(fs);
        }
    }
    if out.is_empty() {
        return Err(bad("no placements given".into()));
    }
    Ok(out)
}

/// Which stages a placement fuses, as resolved for this variant: `FFFMMM` (F = Fused-MBConv,
/// M = MBConv). Two placements with the same mask build the same network.
pub fn stage_mask(v: &Variant, base: &ModelOptions, fs: &FusedStages) -> Result<String, BenchError> {
    let spec = ModelSpec::new(v, ModelOptions { fused_stages: fs.clone(), ..base.clone() })?;
    Ok(spec.stages.iter().map(|s| if s.kind == BlockKind::FusedMbConv { 'F' } else { 'M' }).collect())
}

/// What a sweep (cpu or coral) builds, resolved and checked before anything is built.
pub struct SweepPlan {
    pub variant: Variant,
    /// The placement list as given, or `0..=stages`.
    pub spec: String,
    /// The model options with the official placement; each row swaps in its own.
    pub base: ModelOptions,
    /// Stage mask of the official placement.
    pub official_stages: String,
    /// (placement, added only as the baseline, its stage mask); the official placement is
    /// appended as a baseline when no listed placement builds the same network.
    pub placements: Vec<(FusedStages, bool, String)>,
    pub image_size: usize,
}

pub fn plan_sweep(model: &str, options: &ModelOptions, placements: Option<&str>, image_size: Option<usize>) -> Result<SweepPlan, BenchError> {
    let v = variant(model)?;
    let num_stages = v.table.len();
    let spec = placements.map(str::to_string).unwrap_or_else(|| format!("0..={num_stages}"));
    let base = ModelOptions { fused_stages: FusedStages::Official, ..options.clone() };
    // Check the model options (and every mask) before building anything.
    let official_stages = stage_mask(&v, &base, &FusedStages::Official)?;
    let mut planned = parse_placements(&spec, num_stages)?
        .into_iter()
        .map(|p| stage_mask(&v, &base, &p).map(|mask| (p, false, mask)))
        .collect::<Result<Vec<_>, _>>()?;
    if !planned.iter().any(|(_, _, mask)| *mask == official_stages) {
        planned.push((FusedStages::Official, true, official_stages.clone()));
    }
    let image_size = image_size.unwrap_or(v.preprocess.size);
    Ok(SweepPlan { variant: v, spec, base, official_stages, placements: planned, image_size })
}

#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// cpu (ONNX through tract) or jetson (the CUDA engine on any CUDA GPU).
    pub target: Target,
    /// fp32 or int8 (QDQ ONNX, calibrated on `calib`) for cpu; fp16, bf16 or fp32 for jetson.
    pub precision: Precision,
    /// cpu int8: calibration images and how many, per placement.
    pub calib: CalibSource,
    pub calib_images: usize,
    pub model: String,
    /// Placement list (see [`parse_placements`]); None: every k = 0..=stages.
    pub placements: Option<String>,
    pub image_size: Option<usize>,
    /// Model options shared by every placement (their `fused_stages` is ignored).
    pub options: ModelOptions,
    /// Static batch written into each artifact and run.
    pub batch: usize,
    pub measure: MeasureOptions,
    /// Seed of the fresh weights.
    pub seed: u64,
    pub out_dir: PathBuf,
    pub keep_artifacts: bool,
    /// Measure every placement this many times, interleaved (all placements, then all again, in
    /// alternating order), pooling the samples: the machine's drift then lands on every placement
    /// alike instead of on whichever ran while it was slow.
    pub rounds: usize,
}

/// Settings a report was made with (the reproducible part of a sweep).
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub target: String,
    pub model: String,
    pub placements: String,
    pub image_size: usize,
    /// Options shared by every placement (fused_stages: the official one).
    pub options: ModelOptions,
    pub batch: usize,
    pub threads: usize,
    pub warmup: usize,
    /// Per round: each placement was timed `rounds × iters` times in all.
    pub iters: usize,
    pub rounds: usize,
    pub weight_seed: u64,
    pub input_seed: u64,
    pub precision: String,
    pub percentile_method: String,
}

/// One measured placement.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    /// The placement as `--fused-stages` text ("3", "none", "0,1,3", "official").
    pub fused_stages: String,
    /// Resolved stage kinds, `FFFMMM`.
    pub stages: String,
    /// Builds the variant's own network.
    pub official: bool,
    /// Not asked for: added only as the baseline of `p50_vs_official`.
    pub baseline_only: bool,
    pub params: u64,
    /// Per image.
    pub macs: u64,
    pub load_s: f64,
    pub latency_ms: Summary,
    pub throughput_ips: f64,
    pub ms_per_gmac: f64,
    /// p50 / the official placement's p50.
    pub p50_vs_official: f64,
}

impl SweepRow {
    /// The x-axis / table label: "3", "official" (a baseline row) and so on.
    pub fn label(&self) -> String {
        self.fused_stages.clone()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub bench_version: String,
    pub date_utc: String,
    pub machine: Machine,
    pub backend: String,
    pub device: String,
    pub settings: Settings,
    /// Stage kinds of the variant's own table.
    pub official_stages: String,
    pub rows: Vec<SweepRow>,
    pub peak_rss_bytes: Option<u64>,
    pub wall_s: f64,
}

/// Run the sweep and write `report.json`, `report.md` and `report.svg` into `out_dir`.
pub fn run_sweep(o: &SweepOptions, progress: &ProgressBar) -> Result<SweepReport, BenchError> {
    let started = Instant::now();
    match (o.target, o.precision) {
        (Target::Cpu, Precision::Fp32 | Precision::Int8) | (Target::Jetson, Precision::Fp16 | Precision::Bf16 | Precision::Fp32) => {}
        (Target::Coral, _) => return Err(BenchError::TargetNotImplemented(o.target)),
        (t, p) => return Err(BenchError::Args(format!("--target {t} sweeps run at fp32 or int8 (cpu) or fp16/bf16/fp32 (jetson), not {p}"))),
    }
    o.measure.validate()?;
    if o.batch == 0 || o.rounds == 0 {
        return Err(BenchError::Args("--batch and --rounds must be at least 1".into()));
    }
    let SweepPlan { variant: v, spec, base, official_stages, placements, image_size } =
        plan_sweep(&o.model, &o.options, o.placements.as_deref(), o.image_size)?;
    if o.target == Target::Jetson {
        // Say so before building anything when this machine cannot run the CUDA engine.
        cuda_ready()?;
    }

    let artifacts = o.out_dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).map_err(io_err(&artifacts))?;
    progress.set_length((placements.len() * (1 + o.rounds)) as u64);
    // Build every placement first, then time them round by round.
    let mut built = Vec::with_capacity(placements.len());
    for (i, (fs, _, mask)) in placements.iter().enumerate() {
        let label = fs.to_string();
        let dir = artifacts.join(format!("{i:02}-{}", dir_name(&label)));
        progress.set_message(format!("{label} {mask} building"));
        built.push((dir.clone(), build_one(o, &base, fs, image_size, &dir)?));
        progress.inc(1);
    }
    let mut m = o.measure.clone();
    m.batch = Some(o.batch);
    let mut runs: Vec<Vec<RunReport>> = vec![vec![]; placements.len()];
    for round in 0..o.rounds {
        let order: Vec<usize> = if round % 2 == 0 { (0..placements.len()).collect() } else { (0..placements.len()).rev().collect() };
        for i in order {
            let (fs, _, mask) = &placements[i];
            let label = fs.to_string();
            progress.set_message(format!("{label} {mask} measuring (round {} of {})", round + 1, o.rounds));
            let r = measure_artifact(&built[i].0, &m)?;
            let (params, macs) = built[i].1;
            progress.suspend(|| {
                eprintln!(
                    "fused stages {label:>8} {mask}: p50 {:8.2} ms  p90 {:8.2} ms  {:6.2} M params  {:.3} GMACs{}",
                    r.latency_ms.p50,
                    r.latency_ms.p90,
                    params as f64 / 1e6,
                    macs as f64 / 1e9,
                    if o.rounds > 1 { format!("  (round {})", round + 1) } else { String::new() }
                )
            });
            runs[i].push(r);
            progress.inc(1);
        }
    }
    let mut rows = Vec::with_capacity(placements.len());
    let mut runtime = (String::new(), String::new());
    for (((fs, baseline_only, mask), (_, (params, macs))), reports) in placements.iter().zip(&built).zip(runs) {
        let samples: Vec<f64> = reports.iter().flat_map(|r| r.samples_ms.iter().copied()).collect();
        let latency_ms = Summary::from_samples(&samples).expect("rounds and iters are at least 1");
        let last = reports.last().expect("rounds >= 1");
        runtime = (last.backend.clone(), last.device.clone());
        rows.push(SweepRow {
            fused_stages: fs.to_string(),
            stages: mask.clone(),
            official: *mask == official_stages,
            baseline_only: *baseline_only,
            params: *params,
            macs: *macs,
            load_s: reports.iter().map(|r| r.load_s).sum::<f64>() / reports.len() as f64,
            throughput_ips: throughput_ips(&latency_ms, o.batch),
            ms_per_gmac: ms_per_gmac(&latency_ms, o.batch, *macs),
            latency_ms,
            p50_vs_official: f64::NAN,
        });
    }
    if !o.keep_artifacts {
        std::fs::remove_dir_all(&artifacts).map_err(io_err(&artifacts))?;
    }
    let official_p50 = rows.iter().find(|r| r.official).map(|r| r.latency_ms.p50).unwrap_or(f64::NAN);
    for r in &mut rows {
        r.p50_vs_official = r.latency_ms.p50 / official_p50;
    }
    progress.finish_and_clear();

    let report = SweepReport {
        bench_version: env!("CARGO_PKG_VERSION").into(),
        date_utc: crate::report::utc_now(),
        machine: Machine::detect(),
        backend: runtime.0,
        device: runtime.1,
        settings: Settings {
            target: o.target.to_string(),
            model: v.name.to_string(),
            placements: spec,
            image_size,
            options: base.clone(),
            batch: o.batch,
            threads: o.measure.threads.unwrap_or(1),
            warmup: o.measure.warmup,
            iters: o.measure.iters,
            rounds: o.rounds,
            weight_seed: o.seed,
            input_seed: o.measure.seed,
            precision: o.precision.to_string(),
            percentile_method: PERCENTILE_METHOD.into(),
        },
        official_stages,
        rows,
        peak_rss_bytes: peak_rss_bytes(),
        wall_s: started.elapsed().as_secs_f64(),
    };
    crate::report::write_all(&report, &o.out_dir)?;
    Ok(report)
}

#[cfg(feature = "cuda")]
fn cuda_ready() -> Result<(), BenchError> {
    Ok(effv2_runtime::cuda::probe_libraries()?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_ready() -> Result<(), BenchError> {
    Err(BenchError::Args("--target jetson needs effv2-bench built with the `cuda` feature".into()))
}

/// Build one placement's artifact into `dir`; returns (params, MACs per image) of its graph.
fn build_one(o: &SweepOptions, base: &ModelOptions, fs: &FusedStages, size: usize, dir: &Path) -> Result<(u64, u64), BenchError> {
    let options = ModelOptions { fused_stages: fs.clone(), ..base.clone() };
    let model = ModelSource::Fresh { model: o.model.clone(), options, seed: o.seed }.load()?;
    let cost = model.graph(Some(size))?.cost();
    let opts = CpuBuild { image_size: Some(size), batch: o.batch };
    match (o.target, o.precision) {
        (Target::Jetson, p) => {
            build_jetson(&model, &opts, p, dir)?;
        }
        (_, Precision::Int8) => {
            // As `build --target cpu --precision int8` writes it: QDQ convolutions.
            let q = CpuInt8 { calib_images: o.calib_images, seed: o.seed, form: Int8Form::Qdq, ..CpuInt8::new(o.calib.clone()) };
            build_cpu_int8(&model, &opts, &q, dir)?;
        }
        _ => {
            build_cpu(&model, &opts, dir)?;
        }
    }
    Ok((cost.params, cost.macs))
}

/// "0,1,3" → "0-1-3", "3," → "3-": a file-name-safe form of a placement label.
pub(crate) fn dir_name(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> Result<Vec<FusedStages>, BenchError> {
        parse_placements(spec, 6)
    }

    #[test]
    fn ranges_mean_first_k_stages() {
        assert_eq!(p("0..=6").unwrap(), (0..=6).map(FusedStages::First).collect::<Vec<_>>());
        assert_eq!(p("2..4").unwrap(), vec![FusedStages::First(2), FusedStages::First(3)]);
        assert_eq!(p(" 3..=3 ").unwrap(), vec![FusedStages::First(3)]);
    }

    #[test]
    fn semicolon_lists_of_specs() {
        let got = p("none;3;0,1,3;official;all;5,").unwrap();
        assert_eq!(
            got,
            vec![
                FusedStages::Only(Default::default()),
                FusedStages::First(3),
                FusedStages::Only([0, 1, 3].into()),
                FusedStages::Official,
                FusedStages::All,
                FusedStages::Only([5].into()),
            ]
        );
        assert_eq!(p("none;1..=2;").unwrap().len(), 3);
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let msg = |s: &str| p(s).unwrap_err().to_string();
        assert!(msg("0..=7").contains("6 stages"), "{}", msg("0..=7"));
        assert!(msg("7").contains("6 stages"), "{}", msg("7"));
        assert!(msg("0,6").contains("stage 6"), "{}", msg("0,6"));
        assert!(msg("3..2").contains("empty range"));
        assert!(msg("0..0").contains("empty range"));
        assert!(msg("a..=3").contains("range"));
        assert!(msg("1..=x").contains("range"));
        assert!(msg("x").contains("bad --fused-stages"));
        assert!(msg("").contains("no placements"));
        assert!(msg(" ; ").contains("no placements"));
        assert!(msg("-1..=2").contains("range"));
    }

    #[test]
    fn masks_resolve_placements() {
        let v = variant("efficientnetv2-b0").unwrap();
        let base = ModelOptions::default();
        assert_eq!(stage_mask(&v, &base, &FusedStages::Official).unwrap(), "FFFMMM");
        assert_eq!(stage_mask(&v, &base, &FusedStages::First(3)).unwrap(), "FFFMMM");
        assert_eq!(stage_mask(&v, &base, &FusedStages::First(0)).unwrap(), "MMMMMM");
        assert_eq!(stage_mask(&v, &base, &FusedStages::Only([0, 1, 3].into())).unwrap(), "FFMFMM");
    }

    #[test]
    fn dir_names_are_safe() {
        assert_eq!(dir_name("0,1,3"), "0-1-3");
        assert_eq!(dir_name("3,"), "3-");
        assert_eq!(dir_name("official"), "official");
    }
}
