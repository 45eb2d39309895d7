//! `effv2-edge build --target cpu|coral [--precision fp32|int8]`: a deployable artifact directory.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use effv2_edge::cli_args::ShapeArgs;
use effv2_edge::spec::{FusedStages, ModelOptions};
use effv2_runtime::Target;
use effv2_targets::calib::CalibSource;
use effv2_targets::coral::compiler::CompilerChoice;
use effv2_targets::coral::{build_coral, CoralBuild, CoralOutcome, IoType, RangeMethod};
use effv2_targets::cpu::{build_cpu, build_cpu_int8, CpuBuild, CpuInt8};
use effv2_targets::jetson::{build_jetson, build_jetson_int8};
use effv2_targets::onnx::Int8Form;
use effv2_runtime::manifest::Precision;
use effv2_targets::source::ModelSource;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// cpu (ONNX for tract/onnxruntime), coral (int8 TFLite for the Edge TPU + report) or jetson (plan + weights for our CUDA runtime, and ONNX + trtexec commands for TensorRT)
    #[arg(long)]
    pub target: Target,
    /// cpu: fp32 (default) or int8 (calibrated like coral; needs --calib). coral: int8 only. jetson: fp16 (default), bf16, fp32, or int8 (explicit-QDQ ONNX for TensorRT)
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Build from this checkpoint...
    #[arg(long, conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
    /// ...or from a variant with freshly initialised, BN-calibrated weights (architecture benchmarking)
    #[arg(long)]
    pub model: Option<String>,
    /// Fused-MBConv placement of --model: official, none, all, N (first N stages) or a list like 0,1,3
    #[arg(long, requires = "model")]
    pub fused_stages: Option<FusedStages>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Input size (default: the checkpoint's / variant's eval size)
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Static batch size written into the artifact (cpu, jetson; coral is batch 1)
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seed for fresh weights (and synthetic calibration images)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// int8 (coral; cpu and jetson with --precision int8): calibration images — a folder of PNG/JPEG (recursive), fashion-mnist, or synthetic
    #[arg(long, value_name = "SRC")]
    pub calib: Option<String>,
    /// int8: number of calibration images
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub calib_images: usize,
    /// int8: how activation ranges are chosen (percentile = 99.99th)
    #[arg(long, value_enum, default_value_t = CalibMethod::Percentile)]
    pub calib_method: CalibMethod,
    /// cpu --precision int8: convolutions as qlinear (QLinearConv) or qdq (DequantizeLinear -> Conv -> QuantizeLinear:
    /// onnxruntime fuses it back to integer kernels, tract runs float convolutions on the int8 grid)
    #[arg(long, value_name = "FORM", default_value_t = Int8Form::Qdq)]
    pub int8_onnx: Int8Form,
    /// coral: model input/output integer type
    #[arg(long, value_enum, default_value_t = IoArg::Int8)]
    pub io: IoArg,
    /// coral: edgetpu_compiler to run (default: from PATH, when there is one)
    #[arg(long, value_name = "PATH")]
    pub edgetpu_compiler: Option<PathBuf>,
    /// coral: do not run edgetpu_compiler even when it is on PATH
    #[arg(long, conflicts_with = "edgetpu_compiler")]
    pub no_compile: bool,
    /// Output artifact directory (replaced atomically if it holds a previous artifact)
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CalibMethod {
    Minmax,
    Percentile,
    Mse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    Fp16,
    Bf16,
    Int8,
}

/// What `run` builds.
enum Plan {
    Cpu(Option<CpuInt8>),
    Coral(Box<CoralBuild>),
    Jetson(Precision),
    JetsonInt8(CpuInt8),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IoArg {
    Int8,
    Uint8,
}

pub fn run(a: &BuildArgs) -> Result<()> {
    let source = match (&a.checkpoint, &a.model) {
        (Some(c), _) => ModelSource::Checkpoint(c.clone()),
        (None, Some(m)) => ModelSource::Fresh {
            model: m.clone(),
            options: a.shape.apply_with_placement(ModelOptions::default(), a.fused_stages.as_ref()),
            seed: a.seed,
        },
        (None, None) => bail!("give --checkpoint CKPT or --model NAME"),
    };
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let precision = a.precision.unwrap_or(match a.target {
        Target::Coral => PrecisionArg::Int8,
        Target::Jetson => PrecisionArg::Fp16,
        Target::Cpu => PrecisionArg::Fp32,
    });
    if a.target != Target::Coral && (a.edgetpu_compiler.is_some() || a.no_compile) {
        bail!("--edgetpu-compiler and --no-compile are for --target coral");
    }
    let plan = match (a.target, precision) {
        (Target::Cpu, PrecisionArg::Fp32) => Plan::Cpu(None),
        (Target::Cpu, PrecisionArg::Int8) => Plan::Cpu(Some(cpu_int8_options(a, "--target cpu --precision int8")?)),
        (Target::Cpu, PrecisionArg::Fp16 | PrecisionArg::Bf16) => bail!("--target cpu builds fp32 or int8 (tract and onnxruntime run 16-bit floats no faster on CPUs)"),
        (Target::Coral, PrecisionArg::Int8) => Plan::Coral(Box::new(coral_options(a)?)),
        (Target::Coral, _) => bail!("--target coral is int8 only (the Edge TPU runs integer models); drop --precision"),
        (Target::Jetson, PrecisionArg::Fp16) => Plan::Jetson(Precision::Fp16),
        (Target::Jetson, PrecisionArg::Bf16) => Plan::Jetson(Precision::Bf16),
        (Target::Jetson, PrecisionArg::Fp32) => Plan::Jetson(Precision::Fp32),
        (Target::Jetson, PrecisionArg::Int8) => {
            Plan::JetsonInt8(cpu_int8_options(a, "--target jetson --precision int8")?)
        }
    };
    if precision != PrecisionArg::Int8 && a.calib.is_some() {
        bail!("--calib is for int8 builds: add --precision int8 (cpu builds are fp32 by default)");
    }
    let model = source.load_for_size(a.image_size)?;
    let build = CpuBuild { image_size: a.image_size, batch: a.batch };
    let manifest = match plan {
        Plan::Cpu(Some(q)) => build_cpu_int8(&model, &build, &q, &a.output)?.manifest,
        Plan::Cpu(None) => build_cpu(&model, &build, &a.output)?,
        Plan::Jetson(p) => build_jetson(&model, &build, p, &a.output)?,
        Plan::JetsonInt8(q) => build_jetson_int8(&model, &build, &q, &a.output)?,
        Plan::Coral(opts) => {
            let outcome = build_coral(&model, &opts, &a.output)?;
            eprintln!("{}", coral_summary(&outcome, &a.output));
            return Ok(());
        }
    };
    eprintln!(
        "built {} ({} fused stages, {}x{}) for {} ({}) -> {}",
        manifest.model.variant,
        manifest.model.fused_stages,
        manifest.input.shape[2],
        manifest.input.shape[3],
        manifest.target,
        manifest.precision,
        a.output.display()
    );
    if let Some(q) = &manifest.quantization {
        eprintln!("  calibration: {} ({} images, {})", q.calibration, q.calibration_images, q.method);
        if q.synthetic_calibration {
            eprintln!("  warning: calibrated on synthetic images; ranges of real data may differ");
        }
    }
    if manifest.target == Target::Jetson {
        for n in &manifest.notes {
            eprintln!("  {n}");
        }
    }
    Ok(())
}

/// `--calib` parsed; an int8 build of `what` needs one.
fn calib_source(a: &BuildArgs, what: &str) -> Result<CalibSource> {
    let Some(calib) = &a.calib else {
        bail!("{what} needs --calib SRC: a folder of PNG/JPEG images, fashion-mnist, or synthetic");
    };
    if a.calib_images == 0 {
        bail!("--calib-images must be at least 1");
    }
    Ok(calib.parse::<CalibSource>()?)
}

fn range_method(m: CalibMethod) -> RangeMethod {
    match m {
        CalibMethod::Minmax => RangeMethod::MinMax,
        CalibMethod::Percentile => RangeMethod::Percentile(99.99),
        CalibMethod::Mse => RangeMethod::Mse,
    }
}

fn cpu_int8_options(a: &BuildArgs, what: &str) -> Result<CpuInt8> {
    let mut q = CpuInt8::new(calib_source(a, what)?);
    (q.calib_images, q.method, q.seed, q.form) = (a.calib_images, range_method(a.calib_method), a.seed, a.int8_onnx);
    Ok(q)
}

fn coral_options(a: &BuildArgs) -> Result<CoralBuild> {
    let calib = calib_source(a, "--target coral")?;
    if a.batch != 1 {
        bail!("--target coral builds batch 1 (the Edge TPU maps only batch-1 tensors); drop --batch");
    }
    let mut o = CoralBuild::new(calib);
    o.image_size = a.image_size;
    o.calib_images = a.calib_images;
    o.method = range_method(a.calib_method);
    o.io = match a.io {
        IoArg::Int8 => IoType::Int8,
        IoArg::Uint8 => IoType::UInt8,
    };
    o.compiler = match (&a.edgetpu_compiler, a.no_compile) {
        (Some(p), _) => CompilerChoice::Path(p.clone()),
        (None, true) => CompilerChoice::Off,
        (None, false) => CompilerChoice::Auto,
    };
    o.seed = a.seed;
    Ok(o)
}

/// What a coral build made, for the terminal.
fn coral_summary(o: &CoralOutcome, dir: &std::path::Path) -> String {
    let r = &o.report;
    let p = &r.parameters;
    let mut lines = vec![
        format!(
            "built {} ({} fused stages `{}`, {}x{}) for coral (int8, {} I/O) -> {}",
            r.model.variant,
            r.model.fused_stages,
            r.model.stages,
            r.model.image_size,
            r.model.image_size,
            r.tflite.input.dtype,
            dir.display()
        ),
        format!("  Edge TPU ops: {} of {} mapped{}", r.partition.on_edgetpu, r.partition.ops, match &r.partition.first_cpu_op {
            Some(f) => format!("; CPU from op #{} {} ({}): {}", f.index, f.op, f.node, f.why.join("; ")),
            None => String::new(),
        }),
        format!(
            "  parameters: {:.2} MiB vs {:.2} MiB on-chip cache{}",
            p.total_bytes as f64 / 1048576.0,
            p.cache_bytes as f64 / 1048576.0,
            if p.fits_on_chip { " (fits)".to_string() } else { format!(" ({:.2} MiB streamed per inference)", p.streamed_bytes as f64 / 1048576.0) }
        ),
        format!("  predicted latency (USB Accelerator, cost model): {:.2} ms; measured: no device", r.latency.predicted.total_ms),
        format!("  calibration: {} ({} images, {})", r.calibration.info.source, r.calibration.info.images, r.calibration.method),
        format!("  edgetpu_compiler: {}", r.compiler.summary),
        format!("  report: {}", dir.join("edgetpu_report.md").display()),
    ];
    if r.calibration.info.synthetic {
        lines.push(format!("  warning: {}", r.calibration.info.note));
    }
    lines.join("\n")
}
