//! `--target cpu --precision int8`: the QOperator ONNX runs in tract (through effv2-runtime) and
//! in onnxruntime, close to our int8 reference executor and agreeing with the f32 engine's top-1.

mod peers;

use effv2_edge::tensor::nan_max;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use effv2_edge::engine::CpuEngine;
use effv2_edge::io::npy;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{Activation, ModelOptions, Padding};
use effv2_edge::weights::calibrate_batchnorm;
use effv2_edge::Tensor;
use effv2_quantize::{OpKind, QModel, QOp, TensorId};
use effv2_runtime::manifest::Precision;
use effv2_runtime::{open, OpenOptions, Target};
use effv2_targets::calib::CalibSource;
use effv2_targets::cpu::{build_cpu_int8, CpuBuild, CpuInt8};
use effv2_targets::onnx::{write_int8_onnx, Int8Form, OnnxOptions};
use effv2_targets::source::{LoadedModel, ModelSource};


fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

/// Mean |a − b| over all logits, in output quantization steps.
fn mean_steps(a: &[f32], b: &[f32], step: f32) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / step).sum::<f32>() / a.len() as f32
}

fn max_steps(a: &[f32], b: &[f32], step: f32) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / step).fold(0f32, nan_max)
}

struct Agreement {
    /// Mean |Δ| in output steps: tract vs the int8 reference, onnxruntime vs it, tract vs
    /// onnxruntime, and the f32 engine vs the int8 reference (the quantization error itself).
    tract_ref: f32,
    ort_ref: f32,
    tract_ort: f32,
    f32_ref: f32,
    /// max |Δ| tract vs onnxruntime, in output steps.
    tract_ort_max: f32,
    /// Samples whose top-1 equals the f32 engine's: reference, tract, onnxruntime.
    top1: [usize; 3],
    n: usize,
}

fn check(options: ModelOptions, size: usize, n: usize, dir: &Path, form: Int8Form) -> Agreement {
    let source = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options, seed: 3 };
    let m = source.load_for_size(Some(size)).unwrap();
    let graph = m.graph(Some(size)).unwrap();
    // The synthetic calibration images themselves (seed 5): BN statistics and int8 ranges both
    // calibrated on the data they are tested on, as a trained, calibrated network would be.
    let mut rng = Rng::new(5);
    let images: Vec<f32> = (0..n).flat_map(|_| rng.normal_tensor(vec![3, size, size]).into_data()).collect();
    let x = Tensor::new(vec![n, 3, size, size], images).unwrap();
    let m = LoadedModel { weights: calibrate_batchnorm(&graph, &m.weights, &x).unwrap(), ..m };
    let mut q = CpuInt8::new(CalibSource::Synthetic);
    (q.calib_images, q.seed, q.form) = (n, 5, form);
    let out = build_cpu_int8(&m, &CpuBuild { image_size: Some(size), batch: n }, &q, dir).unwrap();
    assert_eq!((out.manifest.target, out.manifest.precision), (Target::Cpu, Precision::Int8));
    assert_eq!(out.manifest.input.dtype, "float32");
    assert!(out.manifest.quantization.as_ref().is_some_and(|q| q.synthetic_calibration && q.calibration_images == n));
    let mut rt = open(dir, &OpenOptions { expect_target: Some(Target::Cpu), ..Default::default() }).unwrap();
    let tract = rt.run(x.data()).unwrap();
    let ort = peers::onnxruntime(dir, &x);
    let reference = out.qmodel.run_f32(&x).unwrap().into_data();
    let f32_logits = CpuEngine::new(&graph, &m.weights).unwrap().run(&x).unwrap().into_data();
    let step = out.qmodel.output_tensor().params().unwrap().scale;
    let classes = reference.len() / n;
    let top1 = |a: &[f32]| (0..n).filter(|&i| argmax(&a[i * classes..(i + 1) * classes]) == argmax(&f32_logits[i * classes..(i + 1) * classes])).count();
    Agreement {
        tract_ref: mean_steps(&tract, &reference, step),
        ort_ref: mean_steps(&ort, &reference, step),
        tract_ort: mean_steps(&tract, &ort, step),
        f32_ref: mean_steps(&f32_logits, &reference, step),
        tract_ort_max: max_steps(&tract, &ort, step),
        top1: [top1(&reference), top1(&tract), top1(&ort)],
        n,
    }
}

/// Whole models. tract and onnxruntime run the same integer convolutions, but compute the
/// element-wise ops (Add, Mul, GlobalAveragePool) in f32 between DequantizeLinear/QuantizeLinear
/// where TFLite (our reference) uses integer kernels with their own rounding; each op is within one
/// step (next test) and the differences add up through the residual chain of an untrained network.
/// So: the two runtimes agree closely with each other (within a step on average); both are nearer the int8 reference than the
/// f32 network is; and top-1 stays with the f32 network's as often as the reference's does.
#[test]
fn int8_onnx_runs_in_tract_and_onnxruntime_like_the_int8_reference() {
    let dir = tempfile::tempdir().unwrap();
    let small = |fused: &str| ModelOptions { width: Some(0.5), depth: Some(0.25), num_classes: 10, fused_stages: fused.parse().unwrap(), ..Default::default() };
    let cases = [
        ("official", small("official"), 64),
        ("none", small("none"), 64),
        ("all", small("all"), 64),
        ("relu6-nose-symmetric", ModelOptions { activation: Activation::Relu6, se: false, padding: Padding::Symmetric, ..small("2") }, 66),
    ];
    for ((name, o, size), form) in cases.into_iter().flat_map(|c| [Int8Form::QLinear, Int8Form::Qdq].map(|f| (c.clone(), f))) {
        let a = check(o, size, 32, &dir.path().join(format!("{name}-{form}")), form);
        let name = format!("{name} {form}");
        println!(
            "{name}: mean |Δ| in output steps: tract-ref {:.2}, ort-ref {:.2}, tract-ort {:.2} (max {:.0}), f32-ref {:.2}; top-1 = f32 engine: ref {}/{n}, tract {}/{n}, ort {}/{n}",
            a.tract_ref, a.ort_ref, a.tract_ort, a.tract_ort_max, a.f32_ref, a.top1[0], a.top1[1], a.top1[2], n = a.n
        );
        // QDQ in tract accumulates convolutions in f32 (not i32): its own roundings, ~0.4-0.7 steps.
        assert!(a.tract_ort <= 1.0, "{name}: tract and onnxruntime differ by {:.2} steps on average", a.tract_ort);
        assert!(a.tract_ref < 0.8 * a.f32_ref && a.ort_ref < 0.8 * a.f32_ref, "{name}: int8 ONNX is not nearer the int8 reference than f32 is");
        for (who, k) in [("tract", a.top1[1]), ("onnxruntime", a.top1[2])] {
            assert!(k * 4 >= a.n * 3 && k + 3 >= a.top1[0], "{name}: {who} keeps the f32 top-1 on {k}/{} (reference {})", a.n, a.top1[0]);
        }
    }
}

/// Every single-input op of `q` as its own model (a PAD with the conv that reads it), fed the
/// reference executor's integers for its input; per op type: (max |Δ| in output steps, fraction
/// of values differing) for tract and onnxruntime.
fn per_op(q: &QModel, x: &Tensor, dir: &Path, form: Int8Form) -> BTreeMap<&'static str, [(f32, f32); 2]> {
    let traced = q.execute_traced(&q.quantize_input(x).unwrap()[0]).unwrap();
    let ints = |t: TensorId| traced[t].as_ref().unwrap().to_i32();
    let mut cases = vec![];
    for (k, op) in q.ops.iter().enumerate() {
        if !matches!(op.kind, OpKind::Conv2d { .. } | OpKind::DepthwiseConv2d { .. } | OpKind::Logistic | OpKind::Mean { .. }) {
            continue;
        }
        let pad = k.checked_sub(1).map(|p| &q.ops[p]).filter(|p| p.kind == OpKind::Pad && p.outputs[0] == op.inputs[0]);
        let ops: Vec<QOp> = pad.into_iter().chain([op]).cloned().collect();
        let sub = QModel { tensors: q.tensors.clone(), input: ops[0].inputs[0], output: op.outputs[0], ops };
        let d = dir.join(format!("op{k}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.onnx"), write_int8_onnx(&sub, &OnnxOptions::default(), form).unwrap()).unwrap();
        // The input's real values, NCHW: QuantizeLinear gives back exactly these integers.
        let t = sub.input_tensor();
        let (h, w, c) = (t.shape[1], t.shape[2], t.shape[3]);
        let p = t.params().unwrap();
        let v = ints(sub.input);
        let xin = Tensor::new(vec![1, c, h, w], (0..c * h * w).map(|i| p.dequantize(v[(i % (h * w)) * c + i / (h * w)])).collect()).unwrap();
        npy::write_f32(&d.join("in.npy"), &xin).unwrap();
        cases.push((op.kind.name(), d, xin, sub));
    }
    let list: String = cases.iter().map(|(_, d, _, _)| format!("{} {} {}\n", d.join("model.onnx").display(), d.join("in.npy").display(), d.join("out.npy").display())).collect();
    std::fs::write(dir.join("list.txt"), list).unwrap();
    let o = Command::new(peers::python()).arg(peers::script("ort_run_many.py")).arg(dir.join("list.txt")).output().unwrap();
    assert!(o.status.success(), "onnxruntime failed: {}", String::from_utf8_lossy(&o.stderr));
    let mut stats: BTreeMap<&'static str, [(f32, f32); 2]> = BTreeMap::new();
    for (name, d, xin, sub) in &cases {
        let t = sub.output_tensor();
        let p = t.params().unwrap();
        let want = ints(sub.output);
        let (h, w, c) = (t.shape[1], t.shape[2], t.shape[3]);
        let runs = [tract(&d.join("model.onnx"), xin), npy::read_f32(&d.join("out.npy")).unwrap().into_data()];
        let e = stats.entry(name).or_insert([(0.0, 0.0); 2]);
        for (r, got) in runs.iter().enumerate() {
            let diff: Vec<f32> = (0..c * h * w).map(|i| (got[i] / p.scale - (want[(i % (h * w)) * c + i / (h * w)] - p.zero_point) as f32).abs()).collect();
            let max = diff.iter().fold(0f32, |m, &v| m.max(v));
            let frac = diff.iter().filter(|&&v| v > 0.5).count() as f32 / diff.len() as f32;
            e[r] = (e[r].0.max(max), e[r].1.max(frac));
        }
    }
    stats
}

/// Run an ONNX file in tract (input shape from the file).
fn tract(model: &Path, x: &Tensor) -> Vec<f32> {
    use tract_onnx::prelude::*;
    // As effv2-runtime does before tract first probes the CPU: no AMX int8 (tract 0.23.9's kernel
    // reads past its panels; see effv2_runtime::avoid_tract_amx_int8).
    effv2_runtime::avoid_tract_amx_int8();
    // Through effv2-runtime's optimisation, as an artifact runs (its QDQ tables and kernels).
    let m = effv2_runtime::tract_optimize(tract_onnx::onnx().model_for_path(model).unwrap().into_typed().unwrap()).unwrap().into_runnable().unwrap();
    let t = tract_onnx::prelude::Tensor::from_shape(x.shape(), x.data()).unwrap();
    let out = m.run(tvec!(t.into())).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

/// Each convolution, sigmoid and mean on its own, fed TFLite's integers: within one step of the
/// int8 reference (which equals LiteRT bit for bit), in tract and in onnxruntime.
#[test]
fn every_op_matches_tflite_integer_arithmetic_within_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let small = ModelOptions { width: Some(0.5), depth: Some(0.5), num_classes: 10, ..Default::default() };
    let lite = ModelOptions { activation: Activation::Relu6, se: false, padding: Padding::Symmetric, ..small.clone() };
    for (name, o, size) in [("silu-se", small, 64), ("relu6-symmetric", lite, 66)] {
        let m = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options: o, seed: 3 }.load_for_size(Some(size)).unwrap();
        let mut q = CpuInt8::new(CalibSource::Synthetic);
        q.calib_images = 4;
        let out = build_cpu_int8(&m, &CpuBuild { image_size: Some(size), batch: 1 }, &q, &dir.path().join(name)).unwrap();
        let x = Rng::new(5).normal_tensor(vec![1, 3, size, size]);
        for form in [Int8Form::QLinear, Int8Form::Qdq] {
        let stats = per_op(&out.qmodel, &x, &dir.path().join(format!("{name}-{form}-ops")), form);
        let name = format!("{name} {form}");
        assert!(stats.contains_key("CONV_2D") && stats.contains_key("DEPTHWISE_CONV_2D") && stats.contains_key("MEAN"), "{name}: {:?}", stats.keys());
        for (op, [t, o]) in stats {
            println!("{name} {op}: tract max {:.2} steps, {:.2}% differ; onnxruntime max {:.2}, {:.2}% differ", t.0, t.1 * 100.0, o.0, o.1 * 100.0);
            for (who, (max, frac)) in [("tract", t), ("onnxruntime", o)] {
                assert!(max < 1.01, "{name} {op}: {who} is {max} steps from TFLite's integer result");
                // A MEAN has few outputs (one per channel), so its fraction is coarse.
                let limit = if op == "MEAN" { 0.25 } else { 0.01 };
                assert!(frac <= limit, "{name} {op}: {who} differs on {:.2}% of values", frac * 100.0);
            }
        }
        }
    }
}

/// effv2-runtime's QDQ rewrites (dequantized weights folded, quantize / dequantize / sigmoid-table
/// chains made one table op) change how tract computes an int8 QDQ graph, not what: on a whole
/// network the outputs equal tract's own graph's to the bit, and no quantize, dequantize or
/// lookup-table node is left.
#[test]
fn qdq_rewrites_give_tracts_own_outputs_to_the_bit() {
    use tract_onnx::prelude::*;
    effv2_runtime::avoid_tract_amx_int8();
    let dir = tempfile::tempdir().unwrap();
    // Full width and 1000 classes: a classifier whose f32 weights (5 MB) are more than tract's
    // own constant folding takes on.
    let small = ModelOptions { depth: Some(0.25), num_classes: 1000, ..Default::default() };
    let relu6 = ModelOptions { activation: Activation::Relu6, se: false, ..small.clone() };
    for (name, o, size) in [("silu-se", small, 48), ("relu6-no-se", relu6, 40)] {
        let m = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options: o, seed: 3 }.load_for_size(Some(size)).unwrap();
        let mut q = CpuInt8::new(CalibSource::Synthetic);
        (q.calib_images, q.form) = (4, Int8Form::Qdq);
        let d = dir.path().join(name);
        build_cpu_int8(&m, &CpuBuild { image_size: Some(size), batch: 2 }, &q, &d).unwrap();
        let plain = tract_onnx::onnx().model_for_path(d.join("model.onnx")).unwrap().into_typed().unwrap().into_decluttered().unwrap();
        let mut ours = plain.clone();
        let (folded, tables) = effv2_runtime::tract_qdq_rewrite(&mut ours).unwrap();
        let left: Vec<String> = ours.nodes().iter().map(|n| n.op().name().to_string()).filter(|n| n.contains("Quantize") || n.contains("LookupTable")).collect();
        println!("{name}: {folded} constants folded, {tables} tables; left: {left:?}");
        assert!(folded >= 1 && tables >= 20, "{name}: {folded} folded, {tables} tables");
        assert!(left.is_empty(), "{name}: {left:?} left in the graph");
        let x = Rng::new(9).normal_tensor(vec![2, 3, size, size]);
        let run = |m: &TypedModel| {
            let t = tract_onnx::prelude::Tensor::from_shape(x.shape(), x.data()).unwrap();
            let out = m.clone().into_runnable().unwrap().run(tvec!(t.into())).unwrap();
            out[0].to_plain_array_view::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(run(&ours), run(&plain), "{name}: the rewritten graph's logits differ from tract's own");
    }
}

/// With AVX-512 VNNI, effv2-runtime runs an int8 graph's dense and 1x1 convs (and long matrix-vector
/// products: the classifier, SE reductions) as u8 × i8 products
/// summed in i32 (exact, as onnxruntime's integer kernels) where tract sums f32 products: every
/// such conv must go integer, and the logits must stay as near onnxruntime's as tract's own
/// graph's are (within rounding: a conv's result differs only where a float sum rounds across a
/// quantization boundary).
#[test]
fn integer_convs_take_every_dense_and_1x1_conv_and_agree_with_onnxruntime() {
    use tract_onnx::prelude::*;
    effv2_runtime::avoid_tract_amx_int8();
    let dir = tempfile::tempdir().unwrap();
    let small = ModelOptions { width: Some(0.5), depth: Some(0.5), num_classes: 10, ..Default::default() };
    let relu6 = ModelOptions { activation: Activation::Relu6, se: false, padding: Padding::Symmetric, ..small.clone() };
    let cases = [("silu-se", small.clone(), 64), ("all-fused", ModelOptions { fused_stages: "all".parse().unwrap(), ..small }, 64), ("relu6-no-se", relu6, 66)];
    for (name, o, size) in cases {
        let m = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options: o, seed: 3 }.load_for_size(Some(size)).unwrap();
        let n = 8;
        let x = Rng::new(5).normal_tensor(vec![n, 3, size, size]);
        let mut q = CpuInt8::new(CalibSource::Synthetic);
        (q.calib_images, q.seed, q.form) = (n, 5, Int8Form::Qdq);
        let d = dir.path().join(name);
        let out = build_cpu_int8(&m, &CpuBuild { image_size: Some(size), batch: n }, &q, &d).unwrap();
        let step = out.qmodel.output_tensor().params().unwrap().scale;
        let typed = tract_onnx::onnx().model_for_path(d.join("model.onnx")).unwrap().into_typed().unwrap();
        let ours = effv2_runtime::tract_optimize(typed.clone()).unwrap();
        let count = |op: &str| ours.nodes().iter().filter(|n| n.op().name() == op).count();
        let (int8, float) = (count("Effv2Int8Pointwise") + count("Effv2Int8DirectConv"), count("Effv2Pointwise") + count("Effv2DirectConv"));
        // Matrix-vector products are those of a batch of one.
        let d1 = dir.path().join(format!("{name}-batch1"));
        build_cpu_int8(&m, &CpuBuild { image_size: Some(size), batch: 1 }, &q, &d1).unwrap();
        let one = effv2_runtime::tract_optimize(tract_onnx::onnx().model_for_path(d1.join("model.onnx")).unwrap().into_typed().unwrap()).unwrap();
        let matvecs = one.nodes().iter().filter(|n| n.op().name() == "Effv2Int8MatVec").count();
        println!("{name}: kernels {}; integer convs {int8}, float convs {float}, integer matrix-vector products {matvecs}", effv2_runtime::tract_kernels());
        if effv2_runtime::tract_kernels().contains("VNNI") {
            // (The integer kernel also takes output rows under 12 pixels, which the f32 one leaves
            // to tract: all-fused's late stages.)
            assert!(int8 >= 20 && float == 0, "{name}: {int8} integer convs, {float} float convs left");
            // The classifier at least (1280 inputs; the SE reduce products with over 128 too).
            assert!(matvecs >= 1, "{name}: no integer matrix-vector product");
            // The SE gate products went into the project convs' input codes: no gate Mul left
            // (counted in the batch-1 build, whose names these are).
            let gates = one.nodes().iter().filter(|n| ["Effv2ChannelScale", "OptMulUnicast"].contains(&&*n.op().name())).count();
            assert_eq!(gates, 0, "{name}: {gates} SE gate products left");
        }
        let run = |m: TypedModel| -> Vec<f32> {
            let t = tract_onnx::prelude::Tensor::from_shape(x.shape(), x.data()).unwrap();
            let out = m.into_runnable().unwrap().run(tvec!(t.into())).unwrap();
            out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
        };
        let (got, plain, ort) = (run(ours), run(typed.into_optimized().unwrap()), peers::onnxruntime(&d, &x));
        let (mean, plain_mean) = (mean_steps(&got, &ort, step), mean_steps(&plain, &ort, step));
        let (max, plain_max) = (max_steps(&got, &ort, step), max_steps(&plain, &ort, step));
        println!("{name}: vs onnxruntime, mean |Δ| {mean:.3} output steps, max {max:.0} (tract's own graph {plain_mean:.3}, max {plain_max:.0})");
        // (An untrained network carries one step's difference in a conv far: the whole-model
        // test above finds the two runtimes up to 16 steps apart.)
        assert!(mean < 1.0 && max <= plain_max + 4.0, "{name}: {mean} steps from onnxruntime on average, {max} at most (tract's own {plain_mean}, {plain_max})");
    }
}
