//! The CUDA training engine's launch lists (`effv2_train::cuda::plan`) replayed on the host — its
//! kernels and the inference kernels compiled as C++, plain loops for cuDNN and cuBLAS — equal the
//! CPU training engine: the training-mode forward (logits, the BN running statistics it updates,
//! dropout and drop-path masks drawn for the same seed) and the backward (every parameter's
//! gradient).

use std::path::Path;

use effv2_edge::engine::naive::random_weights;
use effv2_edge::graph::{build, Graph, Op};
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec, Padding};
use effv2_runtime::plan::host::HostKernels;
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::cuda::plan::{Kernel, TrainLaunch, TrainLayout};
use effv2_train::cuda::TRAIN_KERNELS;
use effv2_train::{Mode, TrainEngine};

/// The inference and training kernels with the cuDNN / cuBLAS stand-ins, as one host library.
fn host_library(dir: &Path) -> HostKernels {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_host/train_harness.cpp");
    HostKernels::compile(&harness, &[("TRAIN_KERNELS_CU", TRAIN_KERNELS)], dir).unwrap()
}

fn replay(host: &HostKernels, launches: &[TrainLaunch]) {
    for l in launches {
        unsafe {
            match l {
                TrainLaunch::Kernel { kernel: Kernel::Infer(name) | Kernel::Train(name), total, args } => host.kernel(name, *total, args),
                TrainLaunch::Conv { shape, x, w, y } => host.conv(*shape, *x, *w, *y),
                TrainLaunch::Gemm { g, a, b, c } => host.gemm(*g, *a, *b, *c),
                TrainLaunch::ConvBackwardData { shape, dy, w, dx } => host.conv_backward_data(*shape, *dy, *w, *dx),
                TrainLaunch::ConvBackwardFilter { shape, x, dy, dw } => host.conv_backward_filter(*shape, *x, *dy, *dw),
            }
        }
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let max_b = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / max_b
}

/// A parameter gradient from the engine's device layout back to the graph's (OIHW convs).
fn to_oihw(g: &Graph, id: usize, dev: &[f32]) -> Vec<f32> {
    let conv = g.nodes.iter().find_map(|n| match &n.op {
        Op::Conv(c) if c.weight == id => Some(c.clone()),
        _ => None,
    });
    let Some(c) = conv else { return dev.to_vec() };
    let (o, i, k) = (c.out_ch, c.in_ch / c.groups, c.kernel);
    let mut w = vec![0.0; dev.len()];
    for oc in 0..o {
        for ic in 0..i {
            for t in 0..k * k {
                // OHWI (groups 1) or [k·k, C] (depthwise: i = 1, the channel is oc).
                w[(oc * i + ic) * k * k + t] = if c.is_depthwise() { dev[t * o + oc] } else { dev[(oc * k * k + t) * i + ic] };
            }
        }
    }
    w
}

fn graph(options: ModelOptions, size: usize) -> Graph {
    build(&ModelSpec::from_name("b0", options).unwrap(), size, size).unwrap()
}

#[test]
fn the_training_launches_replayed_on_the_host_equal_the_cpu_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = host_library(tmp.path());
    let small = |fused: &str, padding| ModelOptions {
        width: Some(0.25),
        depth: Some(0.25),
        num_classes: 7,
        fused_stages: fused.parse().unwrap(),
        padding,
        drop_path: 0.3,
        dropout: Some(0.2),
        ..Default::default()
    };
    for (name, o, size) in [("official tf-same", small("official", Padding::TfSame), 40), ("none symmetric", small("none", Padding::Symmetric), 33)] {
        let g = graph(o, size);
        let batch = 3;
        let w = random_weights(&g, 5);
        let s = g.input_shape();
        let mut rng = Rng::new(6);
        let x: Vec<f32> = (0..batch * s.numel()).map(|_| rng.normal() as f32).collect();
        let seed = 42;

        let mut cpu = CpuTrainer::new(&g, &w, TrainerConfig { ema: false, ..Default::default() }).unwrap();
        let want = cpu.forward(&x, batch, Mode::Train, seed).unwrap();
        let want_w = cpu.weights();
        let dlogits: Vec<f32> = (0..want.len()).map(|_| rng.normal() as f32).collect();
        cpu.backward(&dlogits).unwrap();
        let want_g = cpu.grads();

        let layout = TrainLayout::new(&g, &w, batch).unwrap();
        let mut arena = vec![0u64; layout.arena_bytes.div_ceil(8)];
        let mut params = vec![0u64; layout.params.len().div_ceil(8)];
        unsafe { std::ptr::copy_nonoverlapping(layout.params.as_ptr(), params.as_mut_ptr() as *mut u8, layout.params.len()) };
        let masks = layout.masks(&g, seed);
        let mut logits = vec![f32::NAN; want.len()];
        let launches = layout.forward(&g, arena.as_mut_ptr() as u64, params.as_mut_ptr() as u64, masks.as_ptr() as u64, x.as_ptr() as u64, logits.as_mut_ptr() as u64);
        replay(&lib, &launches);

        let e = rel_err(&logits, &want);
        println!("{name}: training-mode logits rel err {e:.2e} ({} launches)", launches.len());
        assert!(e < 1e-4, "{name}: logits {e}");
        // Running statistics, read back from the parameter buffer (BN params keep their layout).
        let bytes = unsafe { std::slice::from_raw_parts(params.as_ptr() as *const u8, layout.params.len()) };
        let mut checked = 0;
        for n in &g.nodes {
            let Op::BatchNorm(b) = &n.op else { continue };
            for id in [b.mean, b.var] {
                let p = &g.params[id];
                let at = layout.param_at[id];
                let got: Vec<f32> = bytes[at..at + 4 * p.numel()].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                let e = rel_err(&got, want_w.get(&p.name).unwrap().data());
                assert!(e < 1e-5, "{name}: {} {e}", p.name);
                checked += 1;
            }
        }
        assert!(checked > 10, "{checked} BN statistics");

        let mut grads = vec![f32::NAN; layout.grads_bytes / 4];
        let back = layout.backward(&g, arena.as_mut_ptr() as u64, params.as_mut_ptr() as u64, grads.as_mut_ptr() as u64, masks.as_ptr() as u64, dlogits.as_ptr() as u64);
        replay(&lib, &back);
        // Gradients that are zero in exact arithmetic (a BN bias whose output only feeds another
        // conv + BN: shift-invariant) come out as ~1e-7 noise on both sides; errors are measured
        // against each tensor's scale, but no less than 1e-3 of the largest gradient anywhere.
        let absmax = |v: &[f32]| v.iter().fold(0f32, |a, b| a.max(b.abs()));
        let floor = 1e-3 * want_g.iter().map(|(_, t)| absmax(t.data())).fold(0f32, f32::max);
        let mut worst = (0f32, String::new());
        let mut compared = 0;
        for (id, p) in g.params.iter().enumerate() {
            let Some(at) = layout.pgrad_at[id] else { continue };
            let got = to_oihw(&g, id, &grads[at / 4..][..p.numel()]);
            let want = want_g.get(&p.name).unwrap().data();
            let e = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / absmax(want).max(floor);
            if e > worst.0 {
                worst = (e, p.name.clone());
            }
            compared += 1;
        }
        println!("{name}: {compared} parameter gradients, worst rel err {:.2e} ({}), {} backward launches", worst.0, worst.1, back.len());
        assert!(worst.0 < 1e-3, "{name}: {} gradient rel err {}", worst.1, worst.0);
        let dropped = masks.iter().filter(|&&m| m == 0.0).count();
        assert!(dropped > 0, "the masks drop something");
    }
}
