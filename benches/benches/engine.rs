//! The CPU reference engine on efficientnetv2-b0 @224, batch 1 (official placement, fresh
//! weights). Few samples: one iteration is tens of milliseconds.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use effv2_bench::measure::fixed_input;
use effv2_edge::engine::CpuEngine;
use effv2_edge::graph::build;
use effv2_edge::spec::{ModelOptions, ModelSpec};
use effv2_edge::weights::init_weights;
use effv2_edge::Tensor;

fn engine_b0(c: &mut Criterion) {
    let spec = ModelSpec::from_name("efficientnetv2-b0", ModelOptions::default()).expect("b0 exists");
    let graph = build(&spec, 224, 224).expect("b0 builds at 224");
    let engine = CpuEngine::new(&graph, &init_weights(&graph, 0)).expect("engine prepares b0");
    let x = Tensor::new(vec![1, 3, 224, 224], fixed_input([1, 3, 224, 224], 0)).expect("shape matches");

    let mut g = c.benchmark_group("cpu_engine");
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    g.sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(1));
    g.bench_function("efficientnetv2-b0@224", |b| b.iter(|| engine.run(std::hint::black_box(&x)).expect("runs")));
    g.finish();
}

criterion_group!(benches, engine_b0);
criterion_main!(benches);
