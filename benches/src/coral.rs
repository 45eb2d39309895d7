//! `sweep --target coral`: for each Fused-MBConv placement, build the int8 Edge TPU artifact
//! (synthetic calibration by default: only op mapping, bytes and the prediction are reported,
//! none of which depend on the ranges) and collect op mapping, parameter footprint vs the
//! on-chip cache and the predicted latency. Latency is measured only when a runtime can open
//! the artifact on a device; otherwise the row says "no device".

use std::path::{Path, PathBuf};
use std::time::Instant;

use effv2_edge::spec::ModelOptions;
use effv2_runtime::RuntimeError;
use effv2_targets::coral::calib::CalibSource;
use effv2_targets::coral::cost::{CostModel, Prediction, FITTED};
use effv2_targets::coral::{build_coral, method_name, CoralBuild, RangeMethod};
use effv2_targets::source::ModelSource;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::machine::Machine;
use crate::measure::{measure_artifact, MeasureOptions};
use crate::stats::Summary;
use crate::sweep::{dir_name, plan_sweep, SweepPlan};
use crate::{io_err, BenchError};

#[derive(Clone, Debug)]
pub struct CoralSweepOptions {
    pub model: String,
    /// Placement list (see [`parse_placements`]); None: every k = 0..=stages.
    pub placements: Option<String>,
    pub image_size: Option<usize>,
    /// Model options shared by every placement (their `fused_stages` is ignored).
    pub options: ModelOptions,
    pub calib: CalibSource,
    pub calib_images: usize,
    /// Seed of the fresh weights (and synthetic calibration images).
    pub seed: u64,
    /// Timing, used only when a runtime opens the artifact on a device.
    pub measure: MeasureOptions,
    pub out_dir: PathBuf,
    pub keep_artifacts: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct CoralSettings {
    pub target: String,
    pub model: String,
    pub placements: String,
    pub image_size: usize,
    pub options: ModelOptions,
    pub calibration: String,
    pub calibration_images: usize,
    pub synthetic_calibration: bool,
    pub method: String,
    pub weight_seed: u64,
}

/// What the sweep knows about timing on a device.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    /// "no device: …" or the backend and device it ran on.
    pub status: String,
    pub latency_ms: Option<Summary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CoralRow {
    pub fused_stages: String,
    pub stages: String,
    pub official: bool,
    pub baseline_only: bool,
    pub params: u64,
    pub macs: u64,
    pub ops: usize,
    pub ops_on_edgetpu: usize,
    /// "#12 LOGISTIC (blocks.0.0.act): why", when an op falls back to the CPU.
    pub first_cpu_op: Option<String>,
    /// LOGISTIC + MUL ops (SiLU and SE gates): each adds per-op overhead on the Edge TPU.
    pub logistic_mul_ops: usize,
    pub param_bytes: u64,
    pub cache_bytes: u64,
    pub streamed_bytes: u64,
    pub fits_on_chip: bool,
    pub largest_activation_bytes: u64,
    pub tflite_bytes: u64,
    pub predicted: Prediction,
    pub predicted_vs_official: f64,
    pub compiler: String,
    pub measured: Measured,
}

#[derive(Clone, Debug, Serialize)]
pub struct CoralSweepReport {
    pub bench_version: String,
    pub date_utc: String,
    pub machine: Machine,
    /// "no device" unless a runtime measured on an Edge TPU.
    pub device: String,
    pub settings: CoralSettings,
    pub cost_model: CostModel,
    pub official_stages: String,
    pub rows: Vec<CoralRow>,
    pub wall_s: f64,
}

pub fn run_coral_sweep(o: &CoralSweepOptions, progress: &ProgressBar) -> Result<CoralSweepReport, BenchError> {
    let started = Instant::now();
    if o.calib_images == 0 {
        return Err(BenchError::Args("--calib-images must be at least 1".into()));
    }
    let SweepPlan { variant: v, spec, base, official_stages, placements, image_size } =
        plan_sweep(&o.model, &o.options, o.placements.as_deref(), o.image_size)?;
    let artifacts = o.out_dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).map_err(io_err(&artifacts))?;
    progress.set_length(placements.len() as u64);

    let mut build = CoralBuild::new(o.calib.clone());
    build.image_size = Some(image_size);
    build.calib_images = o.calib_images;
    build.seed = o.seed;
    let mut rows = Vec::with_capacity(placements.len());
    let mut synthetic = false;
    for (i, (fs, baseline_only, mask)) in placements.iter().enumerate() {
        let label = fs.to_string();
        let dir = artifacts.join(format!("{i:02}-{}", dir_name(&label)));
        progress.set_message(format!("{label} {mask} building"));
        let options = ModelOptions { fused_stages: fs.clone(), ..base.clone() };
        let model = ModelSource::Fresh { model: o.model.clone(), options, seed: o.seed }.load_for_size(Some(image_size))?;
        let cost = model.graph(Some(image_size))?.cost();
        let out = build_coral(&model, &build, &dir)?;
        let r = &out.report;
        synthetic |= r.calibration.info.synthetic;
        let measured = measure(&dir, &o.measure)?;
        progress.suspend(|| {
            eprintln!(
                "fused stages {label:>8} {mask}: {}/{} ops on the Edge TPU, {:6.2} MiB int8 params, predicted {:6.2} ms",
                r.partition.on_edgetpu,
                r.partition.ops,
                r.parameters.total_bytes as f64 / 1048576.0,
                r.latency.predicted.total_ms
            )
        });
        rows.push(CoralRow {
            fused_stages: label,
            stages: mask.clone(),
            official: *mask == official_stages,
            baseline_only: *baseline_only,
            params: cost.params,
            macs: cost.macs,
            ops: r.partition.ops,
            ops_on_edgetpu: r.partition.on_edgetpu,
            first_cpu_op: r.partition.first_cpu_op.as_ref().map(|f| format!("#{} {} ({}): {}", f.index, f.op, f.node, f.why.join("; "))),
            logistic_mul_ops: r.op_types.iter().filter(|t| t.op == "LOGISTIC" || t.op == "MUL").map(|t| t.count).sum(),
            param_bytes: r.parameters.total_bytes,
            cache_bytes: r.parameters.cache_bytes,
            streamed_bytes: r.parameters.streamed_bytes,
            fits_on_chip: r.parameters.fits_on_chip,
            largest_activation_bytes: r.activations.largest.as_ref().map(|l| l.bytes).unwrap_or(0),
            tflite_bytes: r.tflite.bytes,
            predicted: r.latency.predicted.clone(),
            predicted_vs_official: f64::NAN,
            compiler: r.compiler.summary.clone(),
            measured,
        });
        progress.inc(1);
    }
    if !o.keep_artifacts {
        std::fs::remove_dir_all(&artifacts).map_err(io_err(&artifacts))?;
    }
    let official = rows.iter().find(|r| r.official).map(|r| r.predicted.total_ms).unwrap_or(f64::NAN);
    for r in &mut rows {
        r.predicted_vs_official = r.predicted.total_ms / official;
    }
    progress.finish_and_clear();
    let device = if rows.iter().any(|r| r.measured.latency_ms.is_some()) { rows[0].measured.status.clone() } else { "no device".into() };
    let report = CoralSweepReport {
        bench_version: env!("CARGO_PKG_VERSION").into(),
        date_utc: crate::report::utc_now(),
        machine: Machine::detect(),
        device,
        settings: CoralSettings {
            target: "coral".into(),
            model: v.name.to_string(),
            placements: spec,
            image_size,
            options: base,
            calibration: o.calib.to_string(),
            calibration_images: o.calib_images,
            synthetic_calibration: synthetic,
            method: method_name(RangeMethod::Percentile(99.99)),
            weight_seed: o.seed,
        },
        cost_model: FITTED,
        official_stages,
        rows,
        wall_s: started.elapsed().as_secs_f64(),
    };
    crate::coral_report::write_all(&report, &o.out_dir)?;
    Ok(report)
}

/// Time the artifact when a runtime runs it on an Edge TPU; "no device" otherwise (a CPU
/// fallback's latency is not the Edge TPU's, so it is not reported as measured).
fn measure(dir: &Path, m: &MeasureOptions) -> Result<Measured, BenchError> {
    match measure_artifact(dir, m) {
        Ok(r) if r.on_accelerator => Ok(Measured { status: format!("{} on {}", r.backend, r.device), latency_ms: Some(r.latency_ms) }),
        Ok(r) => Ok(Measured { status: format!("no device ({} ran it on {})", r.backend, r.device), latency_ms: None }),
        Err(BenchError::Runtime(RuntimeError::Unavailable { backend, why })) => {
            Ok(Measured { status: format!("no device (effv2-runtime: {backend}: {why})"), latency_ms: None })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{JSON_FILE, MD_FILE, SVG_FILE};

    #[test]
    fn tiny_coral_sweep_writes_reports_without_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let o = CoralSweepOptions {
            model: "efficientnetv2-b0".into(),
            placements: Some("0..=1".into()),
            image_size: Some(64),
            options: ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() },
            calib: CalibSource::Synthetic,
            calib_images: 2,
            seed: 0,
            measure: MeasureOptions { warmup: 0, iters: 1, ..Default::default() },
            out_dir: dir.path().join("sweep"),
            keep_artifacts: false,
        };
        let r = run_coral_sweep(&o, &ProgressBar::hidden()).unwrap();
        // k = 0, 1 and the official network as the baseline.
        assert_eq!(r.rows.iter().map(|r| r.stages.as_str()).collect::<Vec<_>>(), ["MMMMMM", "FMMMMM", "FFFMMM"]);
        assert!(r.rows[2].baseline_only && r.rows[2].official && r.rows[2].predicted_vs_official == 1.0);
        for row in &r.rows {
            assert_eq!(row.ops, row.ops_on_edgetpu);
            assert!(row.fits_on_chip && row.predicted.total_ms > 0.0);
            assert!(row.measured.latency_ms.is_none() && row.measured.status.starts_with("no device"), "{}", row.measured.status);
        }
        // Fusing stage 0 removes its expand/depthwise pair and SE: fewer ops.
        assert!(r.rows[1].ops < r.rows[0].ops);
        assert_eq!(r.device, "no device");
        assert!(!o.out_dir.join("artifacts").exists());
        let md = std::fs::read_to_string(o.out_dir.join(MD_FILE)).unwrap();
        assert!(md.contains("on coral (Edge TPU, int8)") && md.contains("| no device |") && md.contains("**official (baseline)**"), "{md}");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(o.out_dir.join(JSON_FILE)).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 3);
        assert_eq!(json["settings"]["synthetic_calibration"], true);
        let svg = std::fs::read_to_string(o.out_dir.join(SVG_FILE)).unwrap();
        crate::svg::check_well_formed(&svg).unwrap();
        assert!(svg.contains("on-chip cache 7 MiB") && svg.contains("predicted latency") && !svg.contains("p90"), "{svg}");
    }
}
