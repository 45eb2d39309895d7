//! effv2-runtime's tract backend on a b0 @224 cpu artifact (official placement, fresh weights)
//! built into a temp dir: the latency an app embedding the runtime sees, batch 1, 1 thread.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use effv2_bench::measure::fixed_input;
use effv2_edge::spec::ModelOptions;
use effv2_runtime::OpenOptions;
use effv2_targets::cpu::{build_cpu, CpuBuild};
use effv2_targets::source::ModelSource;

fn tract_b0(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let art = dir.path().join("b0");
    let model = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options: ModelOptions::default(), seed: 0 }
        .load()
        .expect("b0 loads");
    build_cpu(&model, &CpuBuild { image_size: Some(224), batch: 1 }, &art).expect("artifact builds");
    let mut rt = effv2_runtime::open(&art, &OpenOptions { threads: Some(1), ..OpenOptions::default() }).expect("artifact opens");
    let x = fixed_input(rt.input_shape(), 0);

    let mut g = c.benchmark_group("tract_runtime");
    g.sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(5));
    g.sampling_mode(SamplingMode::Flat).throughput(Throughput::Elements(1));
    g.bench_function("efficientnetv2-b0@224/1-thread", |b| b.iter(|| rt.run(std::hint::black_box(&x)).expect("runs")));
    g.finish();
}

criterion_group!(benches, tract_b0);
criterion_main!(benches);
