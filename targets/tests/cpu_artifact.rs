//! `--target cpu` artifacts: written through our ONNX writer, run by tract via effv2-runtime,
//! equal to the CPU reference engine; bad artifacts fail with clear errors.

mod peers;

use effv2_edge::tensor::nan_max;
use std::path::Path;

use effv2_edge::engine::CpuEngine;
use effv2_edge::weights::calibrate_batchnorm;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{FusedStages, ModelOptions};
use effv2_runtime::{open, OpenOptions, Target};
use effv2_targets::cpu::{build_cpu, CpuBuild};
use effv2_targets::source::{LoadedModel, ModelSource};



fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let max_b = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, nan_max) / max_b
}

/// Build, run with tract (through effv2-runtime) and onnxruntime, and compare both with the
/// reference engine on the same input: (tract rel err, onnxruntime rel err).
///
/// Random deep networks amplify f32 rounding (every runtime, PyTorch included, drifts ~1e-5 from
/// an f64 run of them), so BN statistics are first calibrated on this very input: activations
/// then stay normalised, as in a trained network.
fn check(model: &str, options: ModelOptions, size: usize, batch: usize, dir: &Path) -> (f32, f32) {
    let source = ModelSource::Fresh { model: model.into(), options, seed: 3 };
    let m = source.load_for_size(Some(size)).unwrap();
    let graph = m.graph(Some(size)).unwrap();
    let shape = [batch, 3, size, size];
    let x = Rng::new(11).normal_tensor(shape.to_vec());
    let m = LoadedModel { weights: calibrate_batchnorm(&graph, &m.weights, &x).unwrap(), ..m };
    let manifest = build_cpu(&m, &CpuBuild { image_size: Some(size), batch }, dir).unwrap();
    assert_eq!(manifest.input.shape, shape.to_vec());
    let mut rt = open(dir, &OpenOptions { expect_target: Some(Target::Cpu), ..Default::default() }).unwrap();
    assert_eq!(rt.input_shape(), shape);
    let tract = rt.run(x.data()).unwrap();
    // Two threads: a run entered on tract's worker pool, its products split over both workers.
    let mut rt2 = open(dir, &OpenOptions { threads: Some(2), ..Default::default() }).unwrap();
    assert!(rt2.device().contains("2 threads"), "{}", rt2.device());
    let tract2 = rt2.run(x.data()).unwrap();
    assert!(rel_err(&tract2, &tract) < 1e-6, "2 threads vs 1: {}", rel_err(&tract2, &tract));
    let ort = peers::onnxruntime(dir, &x);
    let want = CpuEngine::new(&graph, &m.weights).unwrap().run(&x).unwrap();
    (rel_err(&tract, want.data()), rel_err(&ort, want.data()))
}

/// The stem and the Fused-MBConv stages' convs run on effv2-runtime's direct AVX-512 kernel inside
/// tract's plan (where the CPU has AVX-512): the 3x3s with their SiLU folded in and no Pad node
/// left in front, the 1x1 projections with their residual add; the MBConv stages' 1x1 convs on its
/// channel-last product, their depthwise convs on its fused depthwise + SiLU + SE-pooling pass, the
/// SE products and the classifier on its matrix-vector pass. (Numerics: the tests around this one compare whole runs with the
/// reference engine and onnxruntime.)
#[cfg(target_arch = "x86_64")]
#[test]
fn tract_runs_the_dense_convs_on_our_direct_kernel() {
    use tract_onnx::prelude::*;
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("skipped: no AVX-512 ({})", effv2_runtime::tract_dense_conv_kernel());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options: ModelOptions::default(), seed: 1 };
    build_cpu(&source.load_for_size(Some(224)).unwrap(), &CpuBuild { image_size: Some(224), batch: 1 }, dir.path()).unwrap();
    let typed = tract_onnx::onnx().model_for_path(dir.path().join("model.onnx")).unwrap().with_input_fact(0, f32::fact([1, 3, 224, 224]).into()).unwrap().into_typed().unwrap();
    let model = effv2_runtime::tract_optimize(typed).unwrap();
    let direct: Vec<_> = model.nodes().iter().filter(|n| n.op().name() == "Effv2DirectConv").collect();
    let info: Vec<String> = direct.iter().map(|n| format!("{} {}", n.name, n.op().info().unwrap()[0])).collect();
    // The stem and 5 fused 3x3 convs with their SiLU, and the 4 fused blocks' 1x1 projections,
    // the 2 with a skip connection adding it.
    assert_eq!(direct.len(), 10, "{info:#?}");
    assert_eq!(info.iter().filter(|i| i.contains("3x3") && i.ends_with("SiLU")).count(), 6, "{info:#?}");
    assert_eq!(info.iter().filter(|i| i.contains("project") && i.contains("1x1")).count(), 4, "{info:#?}");
    assert_eq!(info.iter().filter(|i| i.ends_with("+ residual")).count(), 2, "{info:#?}");
    assert!(!model.nodes().iter().any(|n| n.op().name() == "Pad"), "no explicit pads left");
    // Every 1x1 conv of the MBConv stages and the head on our channel-last product: 16 blocks'
    // expand (with SiLU) and project convs (13 adding a residual, all 16 taking the SE gate in
    // their weights instead of a gate product over the image), and the head (SiLU).
    let pointwise: Vec<String> = model.nodes().iter().filter(|n| n.op().name() == "Effv2Pointwise").map(|n| format!("{} {}", n.name, n.op().info().unwrap()[0])).collect();
    assert_eq!(pointwise.len(), 33, "{pointwise:#?}");
    assert_eq!(pointwise.iter().filter(|i| i.contains("expand") && i.ends_with("SiLU")).count(), 16, "{pointwise:#?}");
    assert_eq!(pointwise.iter().filter(|i| i.contains("project") && i.ends_with("+ residual")).count(), 13, "{pointwise:#?}");
    assert_eq!(pointwise.iter().filter(|i| i.contains("project") && i.contains("SE gate")).count(), 16, "{pointwise:#?}");
    assert!(pointwise.iter().any(|i| i.starts_with("head") && i.ends_with("SiLU")), "{pointwise:#?}");
    let products: Vec<_> = model.nodes().iter().filter(|n| n.op().name().contains("Mul") && !n.op().name().contains("MatMul") && !n.op().name().contains("Scalar")).map(|n| n.name.clone()).collect();
    assert!(products.is_empty(), "gate products left: {products:?}");
    // Block boundaries moved channel-last: only the first MBConv block reads a channel-first image
    // (the last fused stage's output).
    assert_eq!(pointwise.iter().filter(|i| i.contains("chw → hwc")).count(), 1, "{pointwise:#?}");
    // The 16 depthwise convs with their SiLU and the SE pooling sum as one pass each.
    let depthwise: Vec<String> = model.nodes().iter().filter(|n| n.op().name() == "Effv2Depthwise").map(|n| n.op().info().unwrap()[0].clone()).collect();
    assert_eq!(depthwise.len(), 16, "{depthwise:#?}");
    assert!(depthwise.iter().all(|i| i.ends_with("SiLU + pixel sums")), "{depthwise:#?}");
    assert_eq!(model.nodes().iter().filter(|n| n.op().name() == "Reduce<Sum>").count(), 1, "only the head's pooling stays tract's");
    // The 32 SE products on a 1x1 image and the classifier as streaming matrix-vector products.
    let matvec: Vec<String> = model.nodes().iter().filter(|n| n.op().name() == "Effv2MatVec").map(|n| n.name.clone()).collect();
    assert_eq!(matvec.len(), 33, "{matvec:#?}");
    assert!(!model.nodes().iter().any(|n| n.op().name() == "OptMatMul"), "a product left to tract");
    // A batch of two keeps its batch axis through the graph: the same convs are ours (the SE
    // products and the classifier become matrix products, tract's).
    let typed = tract_onnx::onnx().model_for_path(dir.path().join("model.onnx")).unwrap().with_input_fact(0, f32::fact([2, 3, 224, 224]).into()).unwrap().into_typed().unwrap();
    let model = effv2_runtime::tract_optimize(typed).unwrap();
    let count = |op: &str| model.nodes().iter().filter(|n| n.op().name() == op).count();
    assert_eq!((count("Effv2DirectConv"), count("Effv2Pointwise"), count("Effv2Depthwise")), (10, 33, 16));
    assert_eq!(count("MoveAxis"), 0, "no layout shuffles left in a batch");
}

#[test]
fn tract_and_onnxruntime_run_our_onnx_like_the_reference_engine() {
    let dir = tempfile::tempdir().unwrap();
    let small = |fused: &str| ModelOptions {
        width: Some(0.5),
        depth: Some(0.5),
        num_classes: 10,
        fused_stages: fused.parse::<FusedStages>().unwrap(),
        ..Default::default()
    };
    for fused in ["official", "none", "0,1,3", "all"] {
        let (t, o) = check("efficientnetv2-b0", small(fused), 64, 2, &dir.path().join(fused));
        println!("b0 w0.5 fused {fused}: tract {t:.2e} onnxruntime {o:.2e}");
        assert!(t < 1e-4 && o < 1e-4, "{fused}: {t} {o}");
    }
    let relu = ModelOptions { activation: effv2_edge::spec::Activation::Relu6, se: false, padding: effv2_edge::spec::Padding::Symmetric, ..small("2") };
    let (t, o) = check("efficientnetv2-b0", relu, 67, 1, &dir.path().join("lite"));
    assert!(t < 1e-4 && o < 1e-4, "relu6/no-se: {t} {o}");
}

#[test]
fn full_size_b0_and_s_match() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("efficientnetv2-b0", 224, "official"),
        ("efficientnetv2-b0", 224, "none"),
        ("efficientnetv2-b0", 224, "6"),
        ("efficientnetv2-b0", 225, "0,2,4"),
        ("efficientnetv2-s", 384, "official"),
        ("efficientnetv2-s", 160, "none"),
        ("efficientnetv2-s", 192, "all"),
    ];
    for (model, size, fused) in cases {
        let o = ModelOptions { fused_stages: fused.parse().unwrap(), ..Default::default() };
        let (t, r) = check(model, o, size, 1, &dir.path().join(format!("{model}-{fused}")));
        println!("{model}@{size} fused {fused}: tract {t:.2e} onnxruntime {r:.2e}");
        assert!(t < 1e-4 && r < 1e-4, "{model} {fused}: {t} {r}");
    }
}

#[test]
fn bad_artifacts_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("a");
    let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 4, ..Default::default() };
    let m = ModelSource::Fresh { model: "b0".into(), options: o, seed: 1 }.load().unwrap();
    build_cpu(&m, &CpuBuild { image_size: Some(32), batch: 1 }, &art).unwrap();
    let err = |o: &OpenOptions| open(&art, o).err().map(|e| e.to_string()).unwrap_or_default();

    assert!(err(&OpenOptions { expect_target: Some(Target::Coral), ..Default::default() }).contains("target cpu, not coral"));
    let mut rt = open(&art, &OpenOptions::default()).unwrap();
    assert!(rt.run(&[0.0; 10]).unwrap_err().to_string().contains("input has 10 values"));
    drop(rt);

    // An altered model file.
    let model = art.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, &bytes).unwrap();
    assert!(err(&OpenOptions::default()).contains("checksum mismatch"));
    std::fs::remove_file(&model).unwrap();
    assert!(err(&OpenOptions::default()).contains("cannot be read"));
    std::fs::write(art.join("manifest.json"), b"{").unwrap();
    assert!(err(&OpenOptions::default()).contains("invalid manifest"));
    assert!(open(dir.path(), &OpenOptions::default()).err().unwrap().to_string().contains("is this an artifact directory"));

    // A directory that is not an artifact is never replaced.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), b"mine").unwrap();
    assert!(build_cpu(&m, &CpuBuild { image_size: Some(32), batch: 1 }, &other).is_err());
    assert_eq!(std::fs::read(other.join("keep.txt")).unwrap(), b"mine");
}

/// On x86_64 tract ships no channel-inner depthwise kernel; effv2-runtime files one in its routine
/// registry, and tract's own `ChangeAxes` pass then runs every depthwise conv of the MBConv stages
/// channel-last (input `[H, W, C]`) instead of W-inner NCHW, which is 5x faster on 14x14 / 7x7
/// planes (README, "Speed"). This checks that the artifact's plan really takes that path.
#[cfg(target_arch = "x86_64")]
#[test]
fn tract_runs_depthwise_channel_last_with_our_x86_kernel() {
    use tract_onnx::prelude::*;
    effv2_runtime::avoid_tract_amx_int8();
    let kernel = effv2_runtime::tract_depthwise_kernel();
    if !std::arch::is_x86_feature_detected!("fma") {
        eprintln!("skipped: no FMA, so no channel-inner kernel ({kernel})");
        return;
    }
    assert!(kernel.starts_with("effv2_x86_64_"), "tract runs {kernel}");
    let dir = tempfile::tempdir().unwrap();
    let source = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options: ModelOptions::default(), seed: 1 };
    build_cpu(&source.load_for_size(Some(224)).unwrap(), &CpuBuild { image_size: Some(224), batch: 1 }, dir.path()).unwrap();
    let model = tract_onnx::onnx()
        .model_for_path(dir.path().join("model.onnx"))
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
        .unwrap()
        .into_optimized()
        .unwrap();
    let depthwise: Vec<_> = model.nodes().iter().filter(|n| n.op().name() == "DepthWiseConv").collect();
    // b0: 3 MBConv stages of 3 + 5 + 8 blocks, one depthwise conv each.
    assert_eq!(depthwise.len(), 16);
    for node in depthwise {
        let input = model.outlet_fact(node.inputs[0]).unwrap().shape.as_concrete().unwrap().to_vec();
        let weight = model.outlet_fact(node.inputs[1]).unwrap().shape.as_concrete().unwrap().to_vec();
        let channels = *weight.last().unwrap();
        assert_eq!(input.last(), Some(&channels), "{}: input {input:?} is not channel-last (weight {weight:?})", node.name);
    }
}
