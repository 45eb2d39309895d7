//! Quick latency check of the CPU engine: EfficientNetV2-B0 at 224×224, batch 1, random weights.
//! `cargo run --release -p effv2-edge --example engine_timing [-- --profile]`
//! (RAYON_NUM_THREADS sets the thread count.)

use effv2_edge::engine::naive::random_weights;
use effv2_edge::rng::Rng;
use effv2_edge::engine::CpuEngine;
use effv2_edge::graph::build;
use effv2_edge::spec::{ModelOptions, ModelSpec};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = ModelSpec::from_name("efficientnetv2-b0", ModelOptions::default())?;
    let graph = build(&spec, 224, 224)?;
    let engine = CpuEngine::new(&graph, &random_weights(&graph, 1))?;
    let x = Rng::new(2).uniform_tensor(vec![1, 3, 224, 224], -2.0, 2.0);
    for _ in 0..3 {
        engine.run(&x)?;
    }
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            engine.run(&x).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    let median = (ms[9] + ms[10]) / 2.0;
    println!("efficientnetv2-b0 224x224 batch 1, {} rayon threads: median {median:.2} ms (min {:.2}, max {:.2}) over 20 runs", rayon::current_num_threads(), ms[0], ms[19]);
    if std::env::args().any(|a| a == "--profile") {
        print_profile(&engine, &x)?;
    }
    Ok(())
}

/// Time per kernel kind, summed over 10 runs' step timings.
fn print_profile(engine: &CpuEngine, x: &effv2_edge::Tensor) -> Result<(), Box<dyn std::error::Error>> {
    let mut by_kernel: Vec<(&'static str, f64)> = Vec::new();
    let mut by_node: Vec<(String, f64)> = Vec::new();
    for run in 0..10 {
        let (_, steps) = engine.run_profiled(x)?;
        for (i, s) in steps.into_iter().enumerate() {
            match by_kernel.iter_mut().find(|(k, _)| *k == s.kernel) {
                Some(e) => e.1 += s.seconds / 10.0,
                None => by_kernel.push((s.kernel, s.seconds / 10.0)),
            }
            if run == 0 {
                by_node.push((format!("{} [{}]", s.node, s.kernel), 0.0));
            }
            by_node[i].1 += s.seconds / 10.0;
        }
    }
    by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (k, s) in &by_kernel {
        println!("  {k:>10}: {:.2} ms", s * 1e3);
    }
    by_node.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("  slowest steps:");
    for (n, s) in by_node.iter().take(12) {
        println!("    {:.3} ms  {n}", s * 1e3);
    }
    Ok(())
}
