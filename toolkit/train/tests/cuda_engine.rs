//! The CUDA training engine on a GPU against the CPU trainer: a few training steps (forward in
//! training mode, backward, RMSProp step, EMA) from the same weights, masks and inputs, then eval
//! and EMA-eval forwards, and a state round trip into a second engine. Without a GPU the engine
//! must fail with the missing piece named, never panic.
#![cfg(feature = "cuda")]

use effv2_edge::tensor::nan_max;
use effv2_edge::engine::naive::random_weights;
use effv2_edge::graph::build;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec};
use effv2_runtime::cuda::{probe_libraries, switch_on, CUDA_GRAPH_ENV};
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::cuda::engine::CudaTrainer;
use effv2_train::cuda::nccl::NcclGroup;
use effv2_train::cuda::plan::Summed;
use effv2_train::loss::softmax_cross_entropy;
use effv2_train::run::Precision;
use effv2_train::{Mode, TrainEngine, TrainError};

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let max_b = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, nan_max) / max_b
}

#[test]
fn cuda_trainer_equals_the_cpu_trainer_or_names_what_is_missing() {
    let options = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, drop_path: 0.2, dropout: Some(0.2), ..Default::default() };
    let g = build(&ModelSpec::from_name("b0", options).unwrap(), 48, 48).unwrap();
    let w = random_weights(&g, 3);
    let config = TrainerConfig { weight_decay: 1e-3, ..Default::default() };
    let mut gpu = match CudaTrainer::new(&g, &w, config, Precision::Fp32) {
        Ok(t) => t,
        Err(e) => {
            let why = e.to_string();
            assert!(probe_libraries().is_err(), "a GPU machine could not start the engine: {why}");
            assert!(why.contains("no CUDA driver found") || why.contains("NVRTC") || why.contains("cuDNN") || why.contains("cuBLAS"), "{why}");
            eprintln!("skipped on this machine: {why}");
            return;
        }
    };
    println!("engine on {}", gpu.device());
    let mut cpu = CpuTrainer::new(&g, &w, config).unwrap();
    let batch = 16;
    let s = g.input_shape();
    let mut rng = Rng::new(4);
    let classes = 10;
    three_steps(&mut cpu, &mut gpu, &mut rng, batch, s.numel(), classes, 1e-3, "fp32");
    // Steps 2 and 3 replayed the forward and the backward as captured CUDA graphs (captured on
    // their second run), unless switched off.
    println!("CUDA graphs captured: {}", gpu.captured_graphs());
    if switch_on(CUDA_GRAPH_ENV) && !effv2_runtime::cuda::profile::enabled() {
        assert_eq!(gpu.captured_graphs(), 2, "the training forward and the backward replay captured graphs");
    }
    let worst = |a: &effv2_edge::weights::Weights, b: &effv2_edge::weights::Weights| {
        g.params.iter().map(|p| (rel_err(a.get(&p.name).unwrap().data(), b.get(&p.name).unwrap().data()), p.name.clone())).fold((0f32, String::new()), |m, e| if e.0 > m.0 { e } else { m })
    };
    let (we, wn) = worst(&gpu.weights().unwrap(), &cpu.weights().unwrap());
    let (ee, en) = worst(&gpu.ema_weights().unwrap().unwrap(), &cpu.ema_weights().unwrap().unwrap());
    println!("after 3 steps: weights worst rel err {we:.2e} ({wn}), EMA {ee:.2e} ({en})");
    assert!(we < 1e-3 && ee < 1e-3, "weights {we} ({wn}), EMA {ee} ({en})");

    let x: Vec<f32> = (0..8 * s.numel()).map(|_| rng.normal() as f32).collect();
    for mode in [Mode::Eval, Mode::EvalEma] {
        let e = rel_err(&gpu.forward(&x, 8, mode, 0).unwrap(), &cpu.forward(&x, 8, mode, 0).unwrap());
        println!("{mode:?} logits (batch 8) rel err {e:.2e}");
        assert!(e < 1e-3, "{mode:?}: {e}");
    }
    assert!(gpu.backward(&vec![0.0; 8 * classes]).is_err(), "no backward after an eval forward");

    // The state round trip a resumed run takes.
    let mut again = CudaTrainer::new(&g, &w, config, Precision::Fp32).unwrap();
    again.load_state(&gpu.weights().unwrap(), gpu.ema_weights().unwrap().as_ref(), &gpu.optimizer_state().unwrap()).unwrap();
    assert_eq!(again.forward(&x, 8, Mode::EvalEma, 0).unwrap(), gpu.forward(&x, 8, Mode::EvalEma, 0).unwrap());
    let a = again.optimizer_state().unwrap();
    let b = gpu.optimizer_state().unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.0 == y.0 && x.1.data() == y.1.data()), "optimizer slots survive the round trip");

    // The same steps in bf16 mixed precision and in tf32 (f32 values, cuDNN and cuBLAS allowed TF32
    // tensor cores: 10-bit mantissa inputs, f32 sums): rounding-limited (the host replay in
    // cuda_train_plan.rs checks the bf16 launch list itself), so only loosely close to the f32 CPU
    // trainer, tf32 between fp32 and bf16; the figures are printed for the record.
    for (precision, logits_tol, weights_tol) in [(Precision::Bf16, 0.2, 0.2), (Precision::Tf32, 2e-2, 5e-2)] {
        let label = precision.name();
        let mut gpu = CudaTrainer::new(&g, &w, config, precision).unwrap();
        println!("engine on {}", gpu.device());
        let mut cpu = CpuTrainer::new(&g, &w, config).unwrap();
        three_steps(&mut cpu, &mut gpu, &mut rng, batch, s.numel(), classes, logits_tol, label);
        let (we, wn) = worst(&gpu.weights().unwrap(), &cpu.weights().unwrap());
        println!("{label} after 3 steps: weights worst rel err {we:.2e} ({wn})");
        assert!(we < weights_tol, "{label} weights {we} ({wn})");
    }
}

/// Three training steps of both engines on the same random batches: training-mode forward (the
/// GPU's logits within `tol` of the CPU's, and finite), both backwards from the CPU's loss
/// gradient (so only the engines differ), an RMSProp step and an EMA update each.
#[allow(clippy::too_many_arguments)]
fn three_steps(cpu: &mut CpuTrainer, gpu: &mut dyn TrainEngine, rng: &mut Rng, batch: usize, sample: usize, classes: usize, tol: f32, label: &str) {
    for step in 0..3u64 {
        let x: Vec<f32> = (0..batch * sample).map(|_| rng.normal() as f32).collect();
        let targets: Vec<f32> = (0..batch).flat_map(|i| (0..classes).map(move |c| if c == (i + step as usize) % classes { 1.0 } else { 0.0 })).collect();
        let want = cpu.forward(&x, batch, Mode::Train, step).unwrap();
        let got = gpu.forward(&x, batch, Mode::Train, step).unwrap();
        let e = rel_err(&got, &want);
        println!("{label} step {step}: training-mode logits rel err {e:.2e}");
        assert!(e < tol && got.iter().all(|v| v.is_finite()), "{label} step {step}: logits {e}");
        let (_, dlogits) = softmax_cross_entropy(&want, &targets, classes);
        cpu.backward(&dlogits).unwrap();
        gpu.backward(&dlogits).unwrap();
        cpu.step(0.01).unwrap();
        gpu.step(0.01).unwrap();
        cpu.ema_update(0.5).unwrap();
        gpu.ema_update(0.5).unwrap();
    }
}

/// Data-parallel training on every GPU here against one CPU trainer on the global batch (the
/// host replay in cuda_train_plan.rs checks the synchronised launch lists themselves). One GPU:
/// the group of one is the engine itself, a second GPU is refused by name, and NCCL still loads
/// and sums over a single rank. No GPU: the missing piece is named.
#[test]
fn data_parallel_on_the_gpus_here_equals_one_engine_or_names_what_is_missing() {
    let options = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, drop_path: 0.2, dropout: Some(0.2), ..Default::default() };
    let g = build(&ModelSpec::from_name("b0", options).unwrap(), 48, 48).unwrap();
    let w = random_weights(&g, 3);
    let config = TrainerConfig { weight_decay: 1e-3, ..Default::default() };
    // The driver is probed first: counting devices without one would panic in the loader.
    let gpus = match probe_libraries().ok().map(|()| cudarc::driver::CudaContext::device_count()) {
        Some(Ok(n)) if n > 0 => n as usize,
        _ => {
            let why = CudaTrainer::data_parallel(2, &g, &w, config, Precision::Fp32).err().expect("no GPU here").to_string();
            assert!(why.contains("no CUDA driver found") || why.contains("NVRTC") || why.contains("cuDNN") || why.contains("cuBLAS"), "{why}");
            eprintln!("skipped on this machine: {why}");
            return;
        }
    };
    let mut dp = CudaTrainer::data_parallel(gpus, &g, &w, config, Precision::Fp32).unwrap();
    for rank in 0..dp.replicas() {
        println!("replica {rank}: {}", dp.replica(rank).device());
    }
    let mut cpu = CpuTrainer::new(&g, &w, config).unwrap();
    let mut rng = Rng::new(4);
    // A global batch that does not split evenly over two or more GPUs.
    let batch = 4 * gpus + 1;
    three_steps(&mut cpu, &mut dp, &mut rng, batch, g.input_shape().numel(), 10, 1e-3, &format!("{gpus} GPU(s)"));
    let worst = g.params.iter().map(|p| rel_err(dp.weights().unwrap().get(&p.name).unwrap().data(), cpu.weights().unwrap().get(&p.name).unwrap().data())).fold(0f32, nan_max);
    println!("{gpus} GPU(s) after 3 steps: weights worst rel err {worst:.2e}");
    assert!(worst < 1e-3, "{worst}");
    if gpus == 1 {
        let refused = CudaTrainer::data_parallel(2, &g, &w, config, Precision::Fp32).err().expect("one GPU here");
        assert!(matches!(&refused, TrainError::Config(m) if m.contains("1 CUDA GPU")), "{refused}");
    }
    // NCCL itself, on one rank: loads, forms a communicator, sums in place (the identity).
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    match NcclGroup::new(vec![ctx.clone()]) {
        Ok(group) => {
            let data: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
            let buf = stream.clone_htod(&data).unwrap();
            let (p, _sync) = cudarc::driver::DevicePtr::device_ptr(&buf, &stream);
            unsafe { group.all_reduce(0, p, data.len(), Summed::F64, &stream) }.unwrap();
            drop(_sync);
            assert_eq!(stream.clone_dtoh(&buf).unwrap(), data);
            println!("NCCL: one-rank all-reduce of 1000 f64 ok");
        }
        Err(e) => panic!("NCCL on a GPU machine: {e}"),
    }
}
