//! `--target jetson`'s plan for the CUDA engine. Everywhere: the plan, run on the CPU the way the
//! engine's kernels run it (NHWC, repacked weights, bias then activation, asymmetric padding),
//! equals the reference engine. On a machine with a CUDA GPU: effv2-runtime's CUDA backend equals
//! the reference engine (fp32 rel err < 1e-4, fp16 < 1e-2) for b0 and s; without one, opening the
//! artifact is a clear error naming the missing driver.

use std::path::Path;

use effv2_edge::engine::CpuEngine;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{Activation, FusedStages, ModelOptions, Padding};
use effv2_edge::tensor::Tensor;
use effv2_edge::weights::calibrate_batchnorm;
use effv2_runtime::plan::layout::{depthwise_to_hwc, oihw_to_ohwi};
use effv2_runtime::plan::{Act, NetPlan, Step};
use effv2_runtime::{open, OpenOptions, Precision, RuntimeError, Target};
use effv2_targets::cpu::CpuBuild;
use effv2_targets::cuda_plan::cuda_plan;
use effv2_targets::jetson::build_jetson;
use effv2_targets::source::{LoadedModel, ModelSource};

fn act(x: f32, a: Act) -> f32 {
    match a {
        Act::None => x,
        Act::Silu => x / (1.0 + (-x).exp()),
        Act::Relu6 => x.clamp(0.0, 6.0),
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
    }
}

/// The plan executed as the CUDA engine does, in NHWC with its weight layouts; logits [N, classes].
fn run_like_the_engine(plan: &NetPlan, weights: &[f32], x: &Tensor) -> Vec<f32> {
    let shapes = plan.shapes().unwrap();
    let n = x.shape()[0];
    let [c0, h0, w0] = plan.input;
    let mut vals: Vec<Vec<f32>> = vec![vec![0.0; n * c0 * h0 * w0]];
    for b in 0..n {
        for ch in 0..c0 {
            for p in 0..h0 * w0 {
                vals[0][(b * h0 * w0 + p) * c0 + ch] = x.data()[(b * c0 + ch) * h0 * w0 + p];
            }
        }
    }
    for (i, s) in plan.steps.iter().enumerate() {
        let [oc, oh, ow] = shapes[i + 1];
        let mut y = vec![0.0; n * oc * oh * ow];
        match *s {
            Step::Conv { x: xi, out_ch, kernel: k, stride, groups, pads: [t, l, _, _], weight, bias, act: a } => {
                let [c, h, w] = shapes[xi];
                let g = plan.conv_geom(s, shapes[xi]).unwrap();
                let wt = &weights[weight..weight + g.weight_len];
                let bs = &weights[bias..bias + out_ch];
                let cin = c / groups;
                let depthwise = groups > 1 && groups == c && out_ch == c;
                let packed = if depthwise { depthwise_to_hwc(wt, c, k) } else { oihw_to_ohwi(wt, out_ch, cin, k) };
                let xv = &vals[xi];
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for o in 0..out_ch {
                                let mut acc = bs[o];
                                for ky in 0..k {
                                    let iy = (oy * stride + ky) as isize - t as isize;
                                    for kx in 0..k {
                                        let ix = (ox * stride + kx) as isize - l as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let px = ((b * h + iy as usize) * w + ix as usize) * c;
                                        if depthwise {
                                            acc += xv[px + o] * packed[(ky * k + kx) * c + o];
                                        } else {
                                            let g0 = o / (out_ch / groups) * cin;
                                            for ic in 0..cin {
                                                acc += xv[px + g0 + ic] * packed[((o * k + ky) * k + kx) * cin + ic];
                                            }
                                        }
                                    }
                                }
                                y[((b * oh + oy) * ow + ox) * out_ch + o] = act(acc, a);
                            }
                        }
                    }
                }
            }
            Step::Act { x: xi, act: a } => y.iter_mut().zip(&vals[xi]).for_each(|(o, &v)| *o = act(v, a)),
            Step::Pool { x: xi } => {
                let [c, h, w] = shapes[xi];
                for b in 0..n {
                    for ch in 0..c {
                        let s: f32 = (0..h * w).map(|p| vals[xi][(b * h * w + p) * c + ch]).sum();
                        y[b * c + ch] = s / (h * w) as f32;
                    }
                }
            }
            Step::Mul { x: xi, gate } => {
                let hwc = oh * ow * oc;
                for (j, o) in y.iter_mut().enumerate() {
                    *o = vals[xi][j] * vals[gate][j / hwc * oc + j % oc];
                }
            }
            Step::Add { a, b } => y.iter_mut().enumerate().for_each(|(j, o)| *o = vals[a][j] + vals[b][j]),
        }
        vals.push(y);
    }
    vals.swap_remove(plan.output)
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let max_b = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / max_b
}

/// A fresh model whose BN statistics are calibrated on `x` (random deep nets otherwise amplify
/// rounding; see cpu_artifact.rs), with the reference engine's logits for `x`.
fn model_and_reference(model: &str, options: ModelOptions, size: usize, x: &Tensor) -> (LoadedModel, Vec<f32>) {
    let m = ModelSource::Fresh { model: model.into(), options, seed: 3 }.load_for_size(Some(size)).unwrap();
    let graph = m.graph(Some(size)).unwrap();
    let m = LoadedModel { weights: calibrate_batchnorm(&graph, &m.weights, x).unwrap(), ..m };
    let want = CpuEngine::new(&graph, &m.weights).unwrap().run(x).unwrap().into_data();
    (m, want)
}

#[test]
fn the_plan_run_as_the_cuda_engine_runs_it_equals_the_reference_engine() {
    let small = |fused: &str| ModelOptions {
        width: Some(0.5),
        depth: Some(0.5),
        num_classes: 10,
        fused_stages: fused.parse::<FusedStages>().unwrap(),
        ..Default::default()
    };
    let relu = ModelOptions { activation: Activation::Relu6, se: false, padding: Padding::Symmetric, ..small("2") };
    for (name, options, size) in [("official", small("official"), 64), ("none", small("none"), 64), ("all", small("all"), 48), ("relu6/no-se", relu, 67)] {
        let x = Rng::new(7).normal_tensor(vec![2, 3, size, size]);
        let (m, want) = model_and_reference("efficientnetv2-b0", options, size, &x);
        let (plan, weights) = cuda_plan(&m.graph(Some(size)).unwrap(), &m.weights).unwrap();
        let got = run_like_the_engine(&plan, &weights, &x);
        let e = rel_err(&got, &want);
        println!("{name}: rel err {e:.2e}");
        assert!(e < 1e-4, "{name}: {e}");
    }
}

fn build(m: &LoadedModel, size: usize, batch: usize, precision: Precision, dir: &Path) {
    build_jetson(m, &CpuBuild { image_size: Some(size), batch }, precision, dir).unwrap();
}

#[test]
fn the_cuda_backend_equals_the_reference_engine_or_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    if let Err(e) = effv2_runtime::cuda::probe_libraries() {
        // No GPU here: the artifact still builds, and opening it says why it cannot run.
        let x = Rng::new(1).normal_tensor(vec![1, 3, 32, 32]);
        let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() };
        let (m, _) = model_and_reference("efficientnetv2-b0", o, 32, &x);
        build(&m, 32, 1, Precision::Fp16, tmp.path());
        let err = open(tmp.path(), &OpenOptions { expect_target: Some(Target::Jetson), ..Default::default() }).err().expect("no GPU, no runtime");
        assert!(matches!(&err, RuntimeError::Unavailable { backend, .. } if backend == "cuda"), "{err}");
        assert_eq!(err.to_string(), e.to_string());
        assert!(err.to_string().contains("no CUDA driver found"), "{err}");
        return;
    }
    let cases = [
        ("efficientnetv2-b0", 224, "official"),
        ("efficientnetv2-b0", 224, "all"),
        ("efficientnetv2-s", 224, "official"),
        ("efficientnetv2-s", 384, "none"),
    ];
    for (model, size, fused) in cases {
        let x = Rng::new(5).normal_tensor(vec![2, 3, size, size]);
        let o = ModelOptions { fused_stages: fused.parse().unwrap(), ..Default::default() };
        let (m, want) = model_and_reference(model, o, size, &x);
        for (precision, tol) in [(Precision::Fp32, 1e-4), (Precision::Fp16, 1e-2)] {
            let dir = tmp.path().join(format!("{model}-{size}-{fused}-{precision}"));
            build(&m, size, 2, precision, &dir);
            let mut rt = open(&dir, &OpenOptions::default()).unwrap();
            let got = rt.run(x.data()).unwrap();
            let e = rel_err(&got, &want);
            println!("{model} @{size} fused {fused} {precision} on {}: rel err {e:.2e}", rt.device());
            assert!(e < tol, "{model} {size} {fused} {precision}: {e}");
        }
    }
}
