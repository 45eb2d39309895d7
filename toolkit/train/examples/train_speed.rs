//! Training-step throughput of the CPU engine on random data:
//! `cargo run --release -p effv2-train --example train_speed -- b0 0.5 0.5 32 128 [fused]`.

use std::time::Instant;

use effv2_edge::graph::build;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec};
use effv2_edge::weights::init_weights;
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::loss::{smoothed_onehot, softmax_cross_entropy};
use effv2_train::{Mode, TrainEngine};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let (w, d): (f64, f64) = (arg(1, "0.5").parse().unwrap(), arg(2, "0.5").parse().unwrap());
    let (size, batch): (usize, usize) = (arg(3, "32").parse().unwrap(), arg(4, "128").parse().unwrap());
    let fused = arg(5, "official").parse().unwrap();
    let o = ModelOptions { width: Some(w), depth: Some(d), num_classes: 10, in_channels: 1, fused_stages: fused, ..Default::default() };
    let spec = ModelSpec::from_name(&arg(0, "b0"), o).unwrap();
    let g = build(&spec, size, size).unwrap();
    let cost = g.cost();
    let mut t = CpuTrainer::new(&g, &init_weights(&g, 1), TrainerConfig::default()).unwrap();
    let x = Rng::new(2).normal_tensor(vec![batch, 1, size, size]);
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let tgt = smoothed_onehot(&labels, 10, 0.1);
    let (mut tf, mut tb) = (0.0, 0.0);
    let steps = 6;
    for s in 0..steps {
        let t0 = Instant::now();
        let y = t.forward(x.data(), batch, Mode::Train, s).unwrap();
        let t1 = Instant::now();
        let (_, dl) = softmax_cross_entropy(&y, &tgt, 10);
        t.backward(&dl).unwrap();
        t.step(0.01).unwrap();
        if s > 0 {
            tf += (t1 - t0).as_secs_f64();
            tb += t1.elapsed().as_secs_f64();
        }
    }
    let n = (steps - 1) as f64;
    println!(
        "{} w{w} d{d} @{size} batch {batch}: {} params, {:.1} MMACs/img; fwd {:.0} ms, bwd+step {:.0} ms -> {:.0} img/s",
        spec.variant,
        cost.params,
        cost.macs as f64 / 1e6,
        tf / n * 1e3,
        tb / n * 1e3,
        batch as f64 * n / (tf + tb)
    );
}
