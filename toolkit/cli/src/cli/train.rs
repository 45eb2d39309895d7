//! `effv2-edge train`: flags → a validated `TrainConfig` → `effv2_train::run` on the CPU engine,
//! with a progress bar (loss, accuracy, img/s) and one summary line per epoch.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use effv2_edge::cli_args::ShapeArgs;
use effv2_edge::spec::{variant, FusedStages, ModelOptions, ModelSpec};
use effv2_edge::graph::Graph;
use effv2_edge::weights::Weights;
use effv2_train::cpu::CpuTrainer;
use effv2_train::{TrainEngine, TrainError};
use effv2_train::data::{AugmentConfig, FASHION_LABELS};
use effv2_train::optim::Optimizer;
use effv2_train::progressive::{Progressive, Style};
use effv2_train::run::{self, Event, Precision, TrainConfig};
use effv2_train::schedule::Decay;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Opt {
    Rmsprop,
    Sgd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LrDecay {
    Exponential,
    Cosine,
    Constant,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    PaperS,
    PaperM,
    PaperL,
    OfficialS,
    OfficialM,
    OfficialL,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    Fp32,
    Tf32,
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Where to train: cpu (the CPU engine) or cuda (the CUDA engine: cuDNN, cuBLAS, NVRTC kernels; GPU 0, or --gpus N)
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// fp32; with --device cuda also tf32 (f32 values, convs and products on TF32 tensor cores, like PyTorch's allow_tf32) or bf16 mixed precision (bf16 activations and gradients, f32 master weights and optimizer)
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    pub precision: PrecisionArg,
    /// --device cuda: train data-parallel on GPUs 0..N (NCCL, synchronised BN); --batch-size is the global batch
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// Variant: efficientnetv2-b0..b3, -s, -m, -l, -xl (or b0, s, …)
    #[arg(long, required_unless_present = "resume")]
    pub model: Option<String>,
    /// Fused-MBConv placement: official, none, all, N (first N stages) or a list like 0,1,3
    #[arg(long)]
    pub fused_stages: Option<FusedStages>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// fashion-mnist (Debian's dataset-fashion-mnist) or a directory with train/ and test/ class folders
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Epochs in all, split across the progressive-learning stages
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per step (with --gpus, the global batch)
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate (default: the official 0.016 × batch/256)
    #[arg(long)]
    pub lr: Option<f64>,
    /// rmsprop (the official TF1 RMSProp) or sgd (with --momentum)
    #[arg(long, value_enum, default_value_t = Opt::Rmsprop)]
    pub optimizer: Opt,
    /// SGD momentum (RMSProp uses the official decay 0.9, momentum 0.9, eps 1e-3)
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// L2 weight decay of conv and linear weights (official 1e-5)
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f32,
    /// Linear learning-rate warm-up from 0, in epochs
    #[arg(long, default_value_t = 1.0)]
    pub warmup_epochs: f64,
    /// Learning-rate schedule after the warm-up
    #[arg(long, value_enum, default_value_t = LrDecay::Exponential)]
    pub lr_decay: LrDecay,
    /// Exponential decay: factor and period (official: 0.97 every 2.4 epochs, staircase)
    #[arg(long, default_value_t = 0.97)]
    pub decay_rate: f64,
    /// Exponential decay period in epochs (see --decay-rate)
    #[arg(long, default_value_t = 2.4)]
    pub decay_epochs: f64,
    /// Label smoothing of the targets (official 0.1)
    #[arg(long, default_value_t = 0.1)]
    pub label_smoothing: f32,
    /// EMA decay with TF's warm-up rule (official 0.9999 suits 100k+ steps); 0 disables EMA
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f32,
    /// Progressive-learning stages (1 = fixed-size baseline at --max-size)
    #[arg(long, default_value_t = 1)]
    pub stages: usize,
    /// Regularization ranges and sizes of the paper's Table 6 or the official code (sizes can be overridden)
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Interpolation: paper (first stage at the minimum) or official (see effv2_train::progressive)
    #[arg(long, default_value = "paper", value_parser = parse_style)]
    pub style: Style,
    /// First stage's training size (default: the preset's, or half of --max-size with several stages)
    #[arg(long)]
    pub min_size: Option<usize>,
    /// Final training size (default: 32 for fashion-mnist, else the variant's train size)
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Eval size (default: --max-size)
    #[arg(long)]
    pub eval_size: Option<usize>,
    /// RandAugment magnitude of the first stage
    #[arg(long, default_value_t = 0.0)]
    pub randaug_min: f64,
    /// RandAugment magnitude of the last stage (0 = off)
    #[arg(long, default_value_t = 0.0)]
    pub randaug_max: f64,
    /// Mixup α of the first stage (mixing weights drawn from Beta(α, α); 0 = off)
    #[arg(long, default_value_t = 0.0)]
    pub mixup_min: f64,
    /// Mixup α of the last stage (0 = off)
    #[arg(long, default_value_t = 0.0)]
    pub mixup_max: f64,
    /// CutMix α of the first stage (box areas drawn from Beta(α, α); 0 = off)
    #[arg(long, default_value_t = 0.0)]
    pub cutmix_min: f64,
    /// CutMix α of the last stage (0 = off)
    #[arg(long, default_value_t = 0.0)]
    pub cutmix_max: f64,
    /// Classifier dropout of the first stage (default: the last stage's)
    #[arg(long)]
    pub dropout_min: Option<f64>,
    /// Smallest random-crop area (official V2: 0.05; default 0.08; fashion-mnist 1.0 = no crop, since
    /// cropping 28 px garments cost accuracy in our runs)
    #[arg(long)]
    pub min_crop_area: Option<f64>,
    /// No random horizontal flips
    #[arg(long)]
    pub no_flip: bool,
    /// Train on the first N training images only
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Seed of the initial weights, the data order, the augmentations and the dropout masks
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Data-loading threads (decode and augment; the batches are the same for any count). Default:
    /// 2 with the CPU engine, which needs the cores itself; with --device cuda, every core but one
    /// (at most 16), so loading keeps up with the GPU
    #[arg(long)]
    pub workers: Option<usize>,
    /// Run directory: metrics.jsonl, curves.svg, last/ and best/ checkpoints
    #[arg(short, long, required_unless_present = "resume")]
    pub output: Option<PathBuf>,
    /// Continue the run in RUN_DIR with the schedule it was started with
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["model", "output"])]
    pub resume: Option<PathBuf>,
}

/// Loader threads when --workers is not given: the CPU engine keeps the cores for its own threads;
/// a GPU step leaves them to decoding and augmentation.
fn default_workers(device: Device) -> usize {
    match device {
        Device::Cpu => 2,
        Device::Cuda => effv2_train::data::gpu_loader_workers(),
    }
}

fn parse_style(s: &str) -> Result<Style, String> {
    match s {
        "paper" => Ok(Style::Paper),
        "official" => Ok(Style::Official),
        _ => Err(format!("unknown style {s:?} (paper or official)")),
    }
}

fn classes_of(data: &str) -> Result<usize> {
    if data == "fashion-mnist" {
        return Ok(FASHION_LABELS.len());
    }
    let train = Path::new(data).join("train");
    let n = std::fs::read_dir(&train).with_context(|| format!("reading {}", train.display()))?.flatten().filter(|e| e.path().is_dir()).count();
    Ok(n)
}

fn config(a: &TrainArgs) -> Result<TrainConfig> {
    let name = a.model.as_deref().context("--model is required")?;
    let v = variant(name)?;
    let fashion = a.data == "fashion-mnist";
    let base = ModelOptions { num_classes: classes_of(&a.data)?, in_channels: if fashion { 1 } else { 3 }, ..Default::default() };
    let options = a.shape.apply_with_placement(base, a.fused_stages.as_ref());
    let spec = ModelSpec::new(&v, options.clone())?;
    let mut prog = match a.preset {
        Some(Preset::PaperS) => Progressive::paper("s", a.stages),
        Some(Preset::PaperM) => Progressive::paper("m", a.stages),
        Some(Preset::PaperL) => Progressive::paper("l", a.stages),
        Some(Preset::OfficialS) => Progressive::official("s", a.stages),
        Some(Preset::OfficialM) => Progressive::official("m", a.stages),
        Some(Preset::OfficialL) => Progressive::official("l", a.stages),
        None => None,
    }
    .unwrap_or_else(|| {
        let max = if fashion { 32 } else { spec.train_size };
        let dp = spec.dropout;
        Progressive {
            stages: a.stages,
            style: a.style,
            size: (max, max),
            randaug: (a.randaug_min, a.randaug_max),
            mixup: (a.mixup_min, a.mixup_max),
            cutmix: (a.cutmix_min, a.cutmix_max),
            dropout: (a.dropout_min.unwrap_or(dp), dp),
        }
    });
    if let Some(m) = a.max_size {
        prog.size.1 = m;
    }
    prog.size.0 = a.min_size.unwrap_or(if a.stages > 1 && a.preset.is_none() { prog.size.1 / 2 } else { prog.size.0.min(prog.size.1) });
    let channels = options.in_channels;
    let optimizer = match a.optimizer {
        Opt::Rmsprop => Optimizer::tf_rmsprop(),
        Opt::Sgd => Optimizer::Sgd { momentum: a.momentum, nesterov: false },
    };
    let decay = match a.lr_decay {
        LrDecay::Exponential => Decay::Exponential { rate: a.decay_rate, every_epochs: a.decay_epochs, staircase: true },
        LrDecay::Cosine => Decay::Cosine,
        LrDecay::Constant => Decay::Constant,
    };
    Ok(TrainConfig {
        variant: v.name.to_string(),
        options,
        data: a.data.clone(),
        train_limit: a.train_limit,
        test_limit: a.test_limit,
        epochs: a.epochs,
        batch: a.batch_size,
        optimizer,
        lr: a.lr.unwrap_or(0.016 * a.batch_size as f64 / 256.0),
        warmup_epochs: a.warmup_epochs,
        decay,
        weight_decay: a.weight_decay,
        label_smoothing: a.label_smoothing,
        ema_decay: (a.ema_decay > 0.0).then_some(a.ema_decay),
        eval_size: a.eval_size.unwrap_or(prog.size.1),
        progressive: prog,
        augment: AugmentConfig {
            min_area: a.min_crop_area.unwrap_or(if fashion { 1.0 } else { 0.08 }),
            flip: !a.no_flip,
            randaug_layers: 2,
            mean: vec![0.5; channels],
            std: vec![0.5; channels],
        },
        seed: a.seed,
        workers: a.workers.unwrap_or_else(|| default_workers(a.device)).max(1),
        precision: match a.precision {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Tf32 => Precision::Tf32,
            PrecisionArg::Bf16 => Precision::Bf16,
        },
        gpus: a.gpus,
    })
}

pub fn run(a: &TrainArgs) -> Result<()> {
    if a.device == Device::Cpu && a.precision != PrecisionArg::Fp32 && a.resume.is_none() {
        bail!("--precision {} is for the CUDA engine (--device cuda); the CPU engine trains fp32", a.precision.to_possible_value().expect("a named value").get_name());
    }
    if a.gpus == 0 {
        bail!("--gpus must be at least 1");
    }
    if a.device == Device::Cpu && a.gpus != 1 {
        bail!("--gpus {} is for --device cuda", a.gpus);
    }
    match a.device {
        Device::Cpu => fit(a, CpuTrainer::for_run),
        #[cfg(feature = "cuda")]
        Device::Cuda => {
            // Before the run directory is made: a machine without a driver gets its name, and no debris.
            effv2_runtime::cuda::probe_libraries().map_err(|e| anyhow::anyhow!("--device cuda: {e}"))?;
            fit(a, |g: &Graph, w: &Weights, cfg: &TrainConfig| {
                let e = effv2_train::cuda::engine::CudaTrainer::data_parallel_for_run(g, w, cfg)?;
                for rank in 0..e.replicas() {
                    eprintln!("training on {}", e.replica(rank).device());
                }
                Ok(e)
            })
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda => bail!("--device cuda: this effv2-edge was built without the `cuda` feature"),
    }
}

/// The epoch loop on the engine `make` builds, with a progress bar.
fn fit<E: TrainEngine>(a: &TrainArgs, make: impl FnOnce(&Graph, &Weights, &TrainConfig) -> std::result::Result<E, TrainError>) -> Result<()> {
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}").expect("valid template").progress_chars("=> "));
    let mut on = |e: Event| match e {
        Event::Resumed { epochs_done } => bar.suspend(|| eprintln!("resuming after epoch {epochs_done}")),
        Event::EpochStart { epoch, epochs, steps, stage } => {
            bar.reset();
            bar.set_length(steps as u64);
            bar.set_prefix(format!("epoch {epoch}/{epochs} @{}px", stage.size));
        }
        Event::Step { step_in_epoch, loss, top1, images_per_sec, .. } => {
            bar.set_position(step_in_epoch as u64);
            bar.set_message(format!("loss {loss:.3} acc {:.1}% {images_per_sec:.0} img/s", top1 * 100.0));
        }
        // suspend + eprintln, not println: a hidden bar (stderr not a terminal) drops println lines.
        Event::Epoch(m) => bar.suspend(|| eprintln!(
            "epoch {:>3} stage {} {}px: loss {:.4} train {:.2}% test top-1 {:.2}% top-5 {:.2}% | {:.0} img/s, {:.0}s (total {:.0}s)",
            m.epoch,
            m.stage,
            m.size,
            m.train_loss,
            m.train_top1 * 100.0,
            m.test_top1 * 100.0,
            m.test_top5 * 100.0,
            m.images_per_sec,
            m.epoch_seconds,
            m.train_seconds
        )),
    };
    let (summary, dir) = match &a.resume {
        Some(dir) => (run::resume(dir, make, &mut on)?, dir.clone()),
        None => {
            let cfg = config(a)?;
            let dir = a.output.clone().context("-o RUN_DIR is required")?;
            (run::train(cfg, &dir, make, &mut on)?, dir)
        }
    };
    bar.finish_and_clear();
    if summary.best_top1 < 0.0 {
        bail!("no epoch ran");
    }
    eprintln!(
        "done: {} epochs, best test top-1 {:.2}%, {:.0}s of training; checkpoints {}/last and {}/best",
        summary.epochs,
        summary.best_top1 * 100.0,
        summary.train_seconds,
        dir.display(),
        dir.display()
    );
    Ok(())
}
