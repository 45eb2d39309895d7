//! `effv2-bench train-step`: training throughput of a [`TrainEngine`] (the CPU engine or the CUDA
//! one) on one synthetic batch held on the host: each timed step is what the training loop does per
//! batch — training-mode forward, softmax cross-entropy on the host, backward, RMSProp step, EMA —
//! without data loading, so the figure is the engine's. Reports images/s, achieved TFLOP/s
//! (3 × 2 × MACs per image: forward, and backward's data and weight gradients) and memory.

use std::time::Instant;

use effv2_edge::graph::build;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec};
use effv2_edge::weights::init_weights;
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::loss::softmax_cross_entropy;
use effv2_train::run::Precision;
use effv2_train::{Mode, TrainEngine};
use serde::Serialize;

use crate::machine::{peak_rss_bytes, Machine};
use crate::stats::Summary;
use crate::BenchError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainDevice {
    Cpu,
    Cuda,
}

#[derive(Clone, Debug)]
pub struct TrainStepOptions {
    pub device: TrainDevice,
    /// fp32, or (CUDA only) tf32 or bf16 mixed precision.
    pub precision: Precision,
    pub model: String,
    pub options: ModelOptions,
    pub image_size: usize,
    /// The global batch; with `gpus` > 1 it is split over GPUs 0..gpus (data parallel, NCCL).
    pub batch: usize,
    pub gpus: usize,
    pub warmup: usize,
    pub iters: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainStepReport {
    pub bench_version: &'static str,
    pub device: TrainDevice,
    /// "fp32", "tf32" or "bf16" (mixed precision).
    pub precision: &'static str,
    /// The engine's own description (GPU name, precision) or the CPU's.
    pub engine: String,
    pub model: String,
    pub image_size: usize,
    pub batch: usize,
    pub gpus: usize,
    pub params: u64,
    pub gmacs_per_image: f64,
    pub step_ms: Summary,
    pub throughput_ips: f64,
    /// Useful FLOPs (3 × 2 × MACs per image) over the mean step time.
    pub achieved_tflops: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Device memory the engine holds (CUDA; summed over the GPUs).
    pub device_bytes: Option<u64>,
    pub machine: Machine,
}

pub fn measure_train_step(o: &TrainStepOptions) -> Result<TrainStepReport, BenchError> {
    if o.batch == 0 || o.iters == 0 || o.gpus == 0 || o.batch < o.gpus {
        return Err(BenchError::Args("--batch and --iters must be at least 1, --gpus between 1 and --batch".into()));
    }
    if o.gpus > 1 && o.device != TrainDevice::Cuda {
        return Err(BenchError::Args(format!("--gpus {} is for --device cuda", o.gpus)));
    }
    let spec = ModelSpec::from_name(&o.model, o.options.clone())?;
    let graph = build(&spec, o.image_size, o.image_size)?;
    let weights = init_weights(&graph, o.seed);
    let config = TrainerConfig::default();
    let cost = graph.cost();
    match o.device {
        TrainDevice::Cpu if o.precision != Precision::Fp32 => Err(BenchError::Args(format!("the CPU engine trains fp32; --precision {} is for --device cuda", o.precision.name()))),
        TrainDevice::Cpu => {
            let threads = rayon::current_num_threads();
            let engine = CpuTrainer::new(&graph, &weights, config)?;
            run(o, engine, format!("cpu engine, {threads} threads"), |_| None, cost)
        }
        TrainDevice::Cuda => cuda(o, &graph, &weights, config, cost),
    }
}

#[cfg(feature = "cuda")]
fn cuda(o: &TrainStepOptions, graph: &effv2_edge::graph::Graph, weights: &effv2_edge::weights::Weights, config: TrainerConfig, cost: effv2_edge::graph::Cost) -> Result<TrainStepReport, BenchError> {
    let engine = effv2_train::cuda::engine::CudaTrainer::data_parallel(o.gpus, graph, weights, config, o.precision)?;
    let name = format!("cuda {}{}", engine.replica(0).device(), if o.gpus > 1 { format!(" (x{} GPUs)", o.gpus) } else { String::new() });
    run(o, engine, name, |e| Some((0..e.replicas()).map(|r| e.replica(r).device_bytes() as u64).sum()), cost)
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &TrainStepOptions, _: &effv2_edge::graph::Graph, _: &effv2_edge::weights::Weights, _: TrainerConfig, _: effv2_edge::graph::Cost) -> Result<TrainStepReport, BenchError> {
    Err(BenchError::Args("--device cuda needs effv2-bench built with the `cuda` feature".into()))
}

/// `device_bytes` is read after the steps, when the engine holds its activations too.
fn run<E: TrainEngine>(o: &TrainStepOptions, mut engine: E, name: String, device_bytes: impl Fn(&E) -> Option<u64>, cost: effv2_edge::graph::Cost) -> Result<TrainStepReport, BenchError> {
    let s = o.options.in_channels * o.image_size * o.image_size;
    let classes = o.options.num_classes;
    let mut rng = Rng::new(o.seed ^ 0x5eed);
    let x: Vec<f32> = (0..o.batch * s).map(|_| rng.normal() as f32).collect();
    let targets: Vec<f32> = (0..o.batch).flat_map(|_| {
        let label = rng.below(classes);
        (0..classes).map(move |c| if c == label { 1.0 } else { 0.0 })
    }).collect();
    let mut times = Vec::with_capacity(o.iters);
    for i in 0..o.warmup + o.iters {
        let t = Instant::now();
        let logits = engine.forward(&x, o.batch, Mode::Train, i as u64)?;
        let (loss, dlogits) = softmax_cross_entropy(&logits, &targets, classes);
        if !loss.is_finite() {
            return Err(BenchError::Args(format!("the loss became {loss} at step {i}")));
        }
        engine.backward(&dlogits)?;
        engine.step(1e-3)?;
        engine.ema_update(0.9999)?;
        if i >= o.warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let step_ms = Summary::from_samples(&times).expect("at least one timed step");
    let throughput_ips = crate::measure::throughput_ips(&step_ms, o.batch);
    Ok(TrainStepReport {
        bench_version: env!("CARGO_PKG_VERSION"),
        device: o.device,
        precision: o.precision.name(),
        engine: name,
        model: o.model.clone(),
        image_size: o.image_size,
        batch: o.batch,
        gpus: o.gpus,
        params: cost.params,
        gmacs_per_image: cost.macs as f64 / 1e9,
        step_ms,
        throughput_ips,
        achieved_tflops: 6.0 * cost.macs as f64 * throughput_ips / 1e12,
        peak_rss_bytes: peak_rss_bytes(),
        device_bytes: device_bytes(&engine),
        machine: Machine::detect(),
    })
}

pub fn describe(r: &TrainStepReport) -> String {
    format!(
        "{} @{}px batch {} on {}: step p50 {:.2} ms (mean {:.2}), {:.1} images/s, {:.3} TFLOP/s achieved ({:.3} GMACs/image, {:.2} M params), peak RSS {} MiB{}",
        r.model,
        r.image_size,
        r.batch,
        r.engine,
        r.step_ms.p50,
        r.step_ms.mean,
        r.throughput_ips,
        r.achieved_tflops,
        r.gmacs_per_image,
        r.params as f64 / 1e6,
        r.peak_rss_bytes.map_or("?".into(), |b| (b >> 20).to_string()),
        r.device_bytes.map_or(String::new(), |b| format!(", {} MiB on the device", b >> 20)),
    )
}
