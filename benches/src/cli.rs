//! Command-line types shared by `effv2-bench` and `effv2-edge bench`, and the code they run.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use effv2_edge::cli_args::{ModelArgs, ShapeArgs};
use effv2_edge::spec::ModelOptions;
use effv2_runtime::{Precision, Target};
use effv2_train::run::Precision as TrainPrecision;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::coral::{run_coral_sweep, CoralSweepOptions};
use crate::coral_report;
use crate::measure::{describe, measure_artifact, MeasureOptions};
use effv2_targets::coral::calib::CalibSource;
use crate::report;
use crate::sweep::{run_sweep, SweepOptions};
use crate::train_step::{self, measure_train_step, TrainDevice, TrainStepOptions};
use crate::BenchError;

/// The standalone binary's command line.
#[derive(Parser, Debug)]
#[command(name = "effv2-bench", version, about = "Latency of effv2-edge artifacts on this device, and the Fused-MBConv placement sweep")]
pub struct Cli {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process: size does not matter
pub enum BenchCommand {
    /// Measure one artifact directory (any target this build's runtime supports)
    Run(RunArgs),
    /// Build every Fused-MBConv placement of a model, measure each, write report.{json,md,svg}
    Sweep(SweepArgs),
    /// Training throughput of the CPU or CUDA training engine: full steps on a synthetic batch
    TrainStep(TrainStepArgs),
    /// What this machine can run: each backend's libraries, accelerators (GPUs, Edge TPUs) and
    /// readiness, found without opening a device
    Devices(DevicesArgs),
    /// Training images/s the data pipeline delivers here (read, decode, crop, RandAugment,
    /// mixup/cutmix on worker threads, as `train` runs it), to set against `train-step`'s
    Data(DataArgs),
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// synthetic (500x375 JPEGs written to a temporary folder, so decoding is timed), fashion-mnist,
    /// or an ImageFolder directory (its train/ split when it has one)
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// Training image size
    #[arg(long, default_value_t = 224)]
    pub image_size: usize,
    /// Images per batch
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Loader threads (default: as `train --device cuda` uses, every core but one, 2 to 16)
    #[arg(long)]
    pub workers: Option<usize>,
    /// Batches timed (after a first, untimed one)
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
    /// RandAugment magnitude, two ops per image (0: none); the paper's last stage of S uses 15
    #[arg(long, default_value_t = 10.0)]
    pub randaug: f64,
    /// Mixup alpha (0: none)
    #[arg(long, default_value_t = 0.0)]
    pub mixup: f64,
    /// Cutmix alpha (0: none)
    #[arg(long, default_value_t = 0.0)]
    pub cutmix: f64,
    /// Smallest random-resized-crop area, as a fraction of the image
    #[arg(long, default_value_t = 0.08)]
    pub min_crop_area: f64,
    /// Seed of the crops and augmentation draws (and of the synthetic images)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// --data synthetic: write the JPEGs to this new or empty directory and keep them (one
    /// folder per class), e.g. for scripts/py/data_peer.py to read the same files
    #[arg(long, value_name = "DIR")]
    pub keep_synthetic: Option<PathBuf>,
    /// Print one JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DevicesArgs {
    /// Fail (exit status 1, naming why) unless these targets' artifacts run on their accelerator
    /// here, e.g. `--require coral` or `--require cpu,jetson`
    #[arg(long, value_delimiter = ',')]
    pub require: Vec<Target>,
    /// Print one JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TrainStepArgs {
    /// cpu (the CPU training engine) or cuda (the CUDA one, GPU 0, or GPUs 0..N with --gpus N)
    #[arg(long, value_enum, default_value_t = TrainDevice::Cpu)]
    pub device: TrainDevice,
    /// fp32, or (cuda only) tf32 (TF32 tensor-core convs and products on f32 values) or bf16 mixed precision
    #[arg(long, default_value = "fp32", value_parser = clap::builder::PossibleValuesParser::new(TrainPrecision::ALL.map(TrainPrecision::name)))]
    pub precision: String,
    /// Variant, Fused-MBConv placement and model options (width, depth, classes, …)
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training image size (default: the variant's train size)
    #[arg(long)]
    pub image_size: Option<usize>,
    /// The global batch (split over the GPUs with --gpus)
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// cuda: data-parallel over GPUs 0..N (NCCL, synchronised BN)
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// Untimed steps first (the CUDA engine captures its graphs on the second)
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Seed of the initial weights and the synthetic batch
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

/// Timing flags shared by `run` and `sweep`.
#[derive(Args, Debug, Clone)]
pub struct TimingArgs {
    /// Untimed iterations after the first (cold) run
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Timed iterations
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Backend worker threads (default 1)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the fixed random input
    #[arg(long, default_value_t = 0)]
    pub input_seed: u64,
}

impl TimingArgs {
    fn options(&self, batch: Option<usize>) -> MeasureOptions {
        MeasureOptions { warmup: self.warmup, iters: self.iters, threads: self.threads, batch, seed: self.input_seed }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Artifact directory (model + manifest.json, from `effv2-edge build`)
    #[arg(long)]
    pub artifact: PathBuf,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Batch to run (default: the artifact's)
    #[arg(long)]
    pub batch: Option<usize>,
    /// Print one JSON object on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    /// cpu (ONNX through tract, measured), jetson (our CUDA engine on this machine's GPU, measured) or
    /// coral (int8 Edge TPU: mapping, footprint, predicted latency)
    #[arg(long)]
    pub target: Target,
    /// jetson: fp16, bf16 or fp32 [default: fp16]; cpu: fp32 [default] or int8 (each placement
    /// calibrated on --calib and written as `build --target cpu --precision int8` does)
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Variant: efficientnetv2-b0..b3, -s, -m, -l, -xl (or just b0, s, …)
    #[arg(long)]
    pub model: String,
    /// Placements: A..=B or A..B (first k stages fused, for each k), or a ;-separated list of
    /// --fused-stages specs like "none;3;0,1,3" [default: 0..=number of stages]
    #[arg(long)]
    pub fused_stages: Option<String>,
    /// Input size (default: the variant's eval size)
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Model options shared by every placement (width, depth, activation, SE, …)
    #[command(flatten)]
    pub shape: ShapeArgs,
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Static batch of each artifact
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seed of the fresh weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// coral, and cpu int8: calibration images — a folder of PNG/JPEG, fashion-mnist, or synthetic [default: synthetic]
    #[arg(long, value_name = "SRC")]
    pub calib: Option<String>,
    /// coral, and cpu int8: calibration images per placement
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub calib_images: usize,
    /// Keep REPORT_DIR/artifacts/ (deleted after measuring by default)
    #[arg(long)]
    pub keep_artifacts: bool,
    /// Time every placement this many times, interleaved (A B C … C B A …), pooling the samples, so
    /// the machine's drift hits every placement alike (cpu and jetson sweeps)
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Report directory
    #[arg(short, long, value_name = "REPORT_DIR")]
    pub output: PathBuf,
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "fp32" => Ok(Precision::Fp32),
        "fp16" => Ok(Precision::Fp16),
        "bf16" => Ok(Precision::Bf16),
        "int8" => Ok(Precision::Int8),
        _ => Err(format!("{s:?}: sweeps run fp32, fp16, bf16 or int8")),
    }
}

/// Run a parsed bench command; results go to stdout, progress to stderr.
pub fn execute(cmd: &BenchCommand) -> Result<(), BenchError> {
    match cmd {
        BenchCommand::Run(a) => run(a),
        BenchCommand::Sweep(a) => sweep(a),
        BenchCommand::TrainStep(a) => train_step(a),
        BenchCommand::Devices(a) => devices(a),
        BenchCommand::Data(a) => data_rate(a),
    }
}

fn data_rate(a: &DataArgs) -> Result<(), BenchError> {
    if a.keep_synthetic.is_some() && a.data != "synthetic" {
        return Err(BenchError::Args("--keep-synthetic is for --data synthetic".into()));
    }
    let o = crate::data_rate::DataOptions {
        data: a.data.clone(),
        image_size: a.image_size,
        batch: a.batch,
        workers: a.workers.unwrap_or_else(effv2_train::data::gpu_loader_workers),
        batches: a.batches,
        randaug: a.randaug,
        mixup: a.mixup,
        cutmix: a.cutmix,
        min_crop_area: a.min_crop_area,
        seed: a.seed,
        keep_synthetic: a.keep_synthetic.clone(),
    };
    let r = crate::data_rate::measure_data(&o)?;
    let text = if a.json { serde_json::to_string(&r).expect("reports serialize") } else { crate::data_rate::describe(&r) };
    print_line(&text)
}

fn devices(a: &DevicesArgs) -> Result<(), BenchError> {
    let r = crate::devices::detect();
    let text = if a.json { serde_json::to_string(&r).expect("reports serialize") } else { crate::devices::describe(&r) };
    // The findings first, so a failed --require still shows all of them.
    print_line(&text)?;
    crate::devices::check_required(&r, &a.require)
}

fn train_step(a: &TrainStepArgs) -> Result<(), BenchError> {
    let options = a.model.options(ModelOptions::default());
    let size = match a.image_size {
        Some(s) => s,
        None => effv2_edge::spec::variant(&a.model.model).map_err(|e| BenchError::Args(e.to_string()))?.train_size,
    };
    let o = TrainStepOptions { device: a.device, precision: TrainPrecision::from_name(&a.precision).expect("clap took one of the names"), model: a.model.model.clone(), options, image_size: size, batch: a.batch, gpus: a.gpus, warmup: a.warmup, iters: a.iters, seed: a.seed };
    let r = measure_train_step(&o)?;
    let text = if a.json { serde_json::to_string(&r).expect("reports serialize") } else { train_step::describe(&r) };
    print_line(&text)
}

fn run(a: &RunArgs) -> Result<(), BenchError> {
    let r = measure_artifact(&a.artifact, &a.timing.options(a.batch))?;
    let text = if a.json { serde_json::to_string(&r).expect("reports serialize") } else { describe(&r) };
    print_line(&text)
}

fn sweep(a: &SweepArgs) -> Result<(), BenchError> {
    let precision = a.precision.unwrap_or(if a.target == Target::Jetson { Precision::Fp16 } else { Precision::Fp32 });
    let quantized = a.target == Target::Coral || (a.target == Target::Cpu && precision == Precision::Int8);
    if !quantized && a.calib.is_some() {
        return Err(BenchError::Args("--calib is for --target coral and --target cpu --precision int8".into()));
    }
    let calib = a.calib.as_deref().unwrap_or("synthetic").parse::<CalibSource>().map_err(|e| BenchError::Args(e.to_string()))?;
    let o = SweepOptions {
        target: a.target,
        precision,
        calib,
        calib_images: a.calib_images,
        model: a.model.clone(),
        placements: a.fused_stages.clone(),
        image_size: a.image_size,
        options: a.shape.apply(ModelOptions::default()),
        batch: a.batch,
        measure: a.timing.options(None),
        seed: a.seed,
        out_dir: a.output.clone(),
        keep_artifacts: a.keep_artifacts,
        rounds: a.rounds,
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {bar:24} {pos}/{len} placements {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    if a.target == Target::Coral {
        let co = CoralSweepOptions {
            model: o.model,
            placements: o.placements,
            image_size: o.image_size,
            options: o.options,
            calib: o.calib,
            calib_images: o.calib_images,
            seed: o.seed,
            measure: o.measure,
            out_dir: o.out_dir,
            keep_artifacts: o.keep_artifacts,
        };
        let r = run_coral_sweep(&co, &bar);
        bar.finish_and_clear();
        let mut text = coral_report::markdown(&r?);
        text.push_str(&format!("\nwrote {} (report.json, report.md, report.svg)", a.output.display()));
        return print_line(&text);
    }
    let r = run_sweep(&o, &bar);
    bar.finish_and_clear(); // also on error, so the message is not glued to a stale bar
    let r = r?;
    let mut text = report::markdown(&r);
    text.push_str(&format!("\nwrote {} (report.json, report.md, report.svg)", a.output.display()));
    print_line(&text)
}

/// stdout write that reports a closed pipe as an error instead of panicking like println!.
fn print_line(text: &str) -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|_| out.flush()).map_err(|source| BenchError::Io { path: "<stdout>".into(), source })
}
