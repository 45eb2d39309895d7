//! The CPU engine against the naive f64 reference: every fast conv path on a table of geometries,
//! whole networks in several configurations, and the error paths.

use effv2_edge::engine::naive;
use effv2_edge::rng::Rng;
use effv2_edge::engine::{CpuEngine, EngineError};
use effv2_edge::graph::*;
use effv2_edge::spec::{Activation, FusedStages, ModelOptions, ModelSpec, Padding};
use effv2_edge::Tensor;

/// f32 engine vs f64 reference: max |diff| over max |ref|.
const REL_TOL: f32 = 1e-5;

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let err = got.max_abs_diff(want).unwrap() / want.max_abs().max(f32::MIN_POSITIVE);
    assert!(err < REL_TOL, "{what}: relative error {err:e} (max |ref| {})", want.max_abs());
}

fn check_against_naive(g: &Graph, batch: usize, seed: u64, what: &str) -> CpuEngine {
    let w = naive::random_weights(g, seed);
    let s = g.input_shape();
    let x = Rng::new(seed + 1).uniform_tensor(vec![batch, s.c, s.h, s.w], -1.0, 1.0);
    let engine = CpuEngine::new(g, &w).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = naive::run(g, &w, &x).unwrap();
    // One thread and several take different blockings (row blocks vs one gemm-threaded block).
    for threads in [1, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let got = pool.install(|| engine.run(&x)).unwrap();
        assert_close(&got, &want, &format!("{what}, {threads} threads"));
        // A second run reuses pooled buffers and must give the same answer.
        assert_eq!(pool.install(|| engine.run(&x)).unwrap(), got, "{what}: second run");
    }
    engine
}

/// One conv case: input → conv (with bias) → optional activation.
struct Case {
    c: usize,
    h: usize,
    w: usize,
    out: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
    padding: Padding,
    act: Option<ActKind>,
    kernel: &'static str,
}

fn conv_graph(t: &Case) -> Graph {
    let (top, bottom, oh) = conv_geometry(t.padding, t.h, t.k, t.stride);
    let (left, right, ow) = conv_geometry(t.padding, t.w, t.k, t.stride);
    let groups = if t.depthwise { t.c } else { 1 };
    let param = |name: &str, shape, role| Param { name: name.into(), shape, role };
    let params = vec![param("conv.weight", vec![t.out, t.c / groups, t.k, t.k], Role::ConvWeight), param("conv.bias", vec![t.out], Role::Bias)];
    let conv = Conv { in_ch: t.c, out_ch: t.out, kernel: t.k, stride: t.stride, groups, pads: Pads { top, left, bottom, right }, weight: 0, bias: Some(1) };
    let node = |name: &str, op, inputs, shape| Node { name: String::from(name), op, inputs, shape, scope: Scope::Stem };
    let out_shape = Shape::new(t.out, oh, ow);
    let mut nodes = vec![node("input", Op::Input, vec![], Shape::new(t.c, t.h, t.w)), node("conv", Op::Conv(conv), vec![0], out_shape)];
    if let Some(a) = t.act {
        nodes.push(node("act", Op::Act(a), vec![1], out_shape));
    }
    Graph { output: nodes.len() - 1, nodes, params }
}

#[test]
fn every_conv_path_matches_the_naive_conv() {
    use ActKind::*;
    use Padding::{Symmetric as Sym, TfSame as Tf};
    #[rustfmt::skip]
    let cases = [
        // c, h, w, out, k, s, dw, padding, act, expected kernel
        Case { c: 5, h: 7, w: 5, out: 11, k: 3, stride: 1, depthwise: false, padding: Sym, act: Some(Silu), kernel: "im2col" },
        Case { c: 5, h: 7, w: 5, out: 11, k: 3, stride: 1, depthwise: false, padding: Tf, act: None, kernel: "im2col" },
        Case { c: 3, h: 16, w: 16, out: 12, k: 3, stride: 2, depthwise: false, padding: Tf, act: Some(Silu), kernel: "im2col" },
        Case { c: 3, h: 17, w: 16, out: 12, k: 3, stride: 2, depthwise: false, padding: Sym, act: Some(Relu6), kernel: "im2col" },
        Case { c: 6, h: 7, w: 5, out: 9, k: 3, stride: 2, depthwise: false, padding: Tf, act: None, kernel: "im2col" },
        Case { c: 7, h: 1, w: 1, out: 5, k: 3, stride: 1, depthwise: false, padding: Tf, act: None, kernel: "im2col" },
        Case { c: 4, h: 9, w: 6, out: 10, k: 5, stride: 2, depthwise: false, padding: Tf, act: None, kernel: "im2col" },
        Case { c: 13, h: 7, w: 5, out: 7, k: 1, stride: 2, depthwise: false, padding: Tf, act: None, kernel: "im2col" },
        Case { c: 13, h: 7, w: 5, out: 7, k: 1, stride: 1, depthwise: false, padding: Tf, act: Some(Silu), kernel: "pointwise" },
        Case { c: 200, h: 10, w: 9, out: 37, k: 1, stride: 1, depthwise: false, padding: Sym, act: Some(Sigmoid), kernel: "pointwise" },
        Case { c: 9, h: 1, w: 1, out: 3, k: 1, stride: 1, depthwise: false, padding: Tf, act: None, kernel: "pointwise" },
        Case { c: 13, h: 7, w: 5, out: 13, k: 3, stride: 1, depthwise: true, padding: Tf, act: Some(Silu), kernel: "depthwise" },
        Case { c: 13, h: 7, w: 5, out: 13, k: 3, stride: 2, depthwise: true, padding: Tf, act: None, kernel: "depthwise" },
        Case { c: 24, h: 8, w: 8, out: 24, k: 3, stride: 2, depthwise: true, padding: Tf, act: Some(Relu6), kernel: "depthwise" },
        Case { c: 24, h: 8, w: 8, out: 24, k: 3, stride: 2, depthwise: true, padding: Sym, act: None, kernel: "depthwise" },
        Case { c: 10, h: 7, w: 5, out: 10, k: 5, stride: 1, depthwise: true, padding: Sym, act: None, kernel: "depthwise" },
        Case { c: 10, h: 11, w: 6, out: 10, k: 5, stride: 2, depthwise: true, padding: Tf, act: Some(Silu), kernel: "depthwise" },
        Case { c: 10, h: 10, w: 10, out: 10, k: 5, stride: 2, depthwise: true, padding: Tf, act: None, kernel: "depthwise" },
        Case { c: 3, h: 1, w: 1, out: 3, k: 3, stride: 2, depthwise: true, padding: Tf, act: None, kernel: "depthwise" },
        Case { c: 5, h: 2, w: 3, out: 5, k: 5, stride: 1, depthwise: true, padding: Sym, act: None, kernel: "depthwise" },
        // Large enough to be split into many row blocks over the pool.
        Case { c: 40, h: 56, w: 40, out: 24, k: 1, stride: 1, depthwise: false, padding: Tf, act: Some(Silu), kernel: "pointwise" },
        Case { c: 16, h: 45, w: 37, out: 24, k: 3, stride: 1, depthwise: false, padding: Tf, act: Some(Silu), kernel: "im2col" },
        Case { c: 16, h: 45, w: 37, out: 40, k: 3, stride: 2, depthwise: false, padding: Sym, act: None, kernel: "im2col" },
        // Few rows but much work: one block, threaded inside gemm.
        Case { c: 192, h: 7, w: 7, out: 1152, k: 1, stride: 1, depthwise: false, padding: Tf, act: Some(Silu), kernel: "pointwise" },
        Case { c: 128, h: 7, w: 6, out: 96, k: 3, stride: 1, depthwise: false, padding: Tf, act: Some(Silu), kernel: "im2col" },
    ];
    for (i, case) in cases.iter().enumerate() {
        let g = conv_graph(case);
        for batch in [1, 3] {
            let what = format!("case {i} ({} k{} s{} {:?}) batch {batch}", case.kernel, case.k, case.stride, case.padding);
            let engine = check_against_naive(&g, batch, 100 + i as u64, &what);
            assert_eq!(engine.kernels(), [("conv", case.kernel)], "{what}: kernel choice");
        }
    }
}

#[test]
fn residual_add_fuses_into_every_conv_path() {
    use Padding::TfSame as Tf;
    #[rustfmt::skip]
    let cases = [
        Case { c: 32, h: 50, w: 40, out: 32, k: 1, stride: 1, depthwise: false, padding: Tf, act: None, kernel: "pointwise" },
        Case { c: 12, h: 9, w: 7, out: 12, k: 1, stride: 1, depthwise: false, padding: Tf, act: None, kernel: "pointwise" },
        Case { c: 16, h: 40, w: 33, out: 16, k: 3, stride: 1, depthwise: false, padding: Tf, act: Some(ActKind::Silu), kernel: "im2col" },
        Case { c: 24, h: 9, w: 7, out: 24, k: 5, stride: 1, depthwise: true, padding: Tf, act: Some(ActKind::Relu6), kernel: "depthwise" },
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut g = conv_graph(case);
        let (last, shape) = (g.output, g.nodes[g.output].shape);
        let drop = Node { name: "drop".into(), op: Op::DropPath { survival: 0.8 }, inputs: vec![last], shape, scope: Scope::Stem };
        g.nodes.push(drop);
        g.nodes.push(Node { name: "add".into(), op: Op::Add, inputs: vec![last + 1, 0], shape, scope: Scope::Stem });
        g.output = g.nodes.len() - 1;
        for batch in [1, 2] {
            let engine = check_against_naive(&g, batch, 300 + i as u64, &format!("residual case {i} batch {batch}"));
            assert_eq!(engine.kernels(), [("conv", case.kernel)], "case {i}: add and activation fused");
        }
    }
}

fn model(options: ModelOptions) -> ModelSpec {
    let small = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..options };
    ModelSpec::from_name("efficientnetv2-b0", small).unwrap()
}

#[test]
fn small_networks_match_the_naive_interpreter() {
    let configs = [
        ("official", ModelOptions::default()),
        ("symmetric+relu6", ModelOptions { padding: Padding::Symmetric, activation: Activation::Relu6, ..Default::default() }),
        ("fused none", ModelOptions { fused_stages: FusedStages::Only(Default::default()), ..Default::default() }),
        ("fused all + se", ModelOptions { fused_stages: FusedStages::All, se_on_fused: true, ..Default::default() }),
        ("no se", ModelOptions { se: false, ..Default::default() }),
    ];
    for (ci, (name, options)) in configs.into_iter().enumerate() {
        let spec = model(options);
        for (h, w, batch) in [(32, 32, 1), (33, 47, 1), (32, 32, 2)] {
            let g = build(&spec, h, w).unwrap();
            let what = format!("{name} at {h}x{w} batch {batch}");
            let engine = check_against_naive(&g, batch, 7 * ci as u64 + h as u64, &what);
            assert!(engine.graph().nodes.iter().all(|n| !matches!(n.op, Op::BatchNorm(_))));
        }
    }
}

#[test]
fn residual_add_and_activation_fuse_into_the_conv() {
    let spec = model(ModelOptions::default());
    let g = build(&spec, 32, 32).unwrap();
    let engine = CpuEngine::new(&g, &naive::random_weights(&g, 3)).unwrap();
    let kernels = engine.kernels();
    assert!(kernels.iter().all(|(_, k)| *k != "add"), "every residual add is fused: {kernels:?}");
    let acts = kernels.iter().filter(|(_, k)| *k == "act").count();
    assert_eq!(acts, 0, "activations all fused into convs: {kernels:?}");
}

#[test]
fn full_b0_runs_at_224() {
    let spec = ModelSpec::from_name("efficientnetv2-b0", ModelOptions::default()).unwrap();
    let g = build(&spec, 224, 224).unwrap();
    let engine = CpuEngine::new(&g, &naive::random_weights(&g, 1)).unwrap();
    let x = Rng::new(2).uniform_tensor(vec![1, 3, 224, 224], -2.0, 2.0);
    let y = engine.run(&x).unwrap();
    assert_eq!(y.shape(), [1, 1000]);
    assert!(y.data().iter().all(|v| v.is_finite()));
}

#[test]
fn bad_inputs_and_weights_are_errors() {
    let g = build(&model(ModelOptions::default()), 32, 32).unwrap();
    let mut w = naive::random_weights(&g, 5);
    let engine = CpuEngine::new(&g, &w).unwrap();
    for shape in [vec![0, 3, 32, 32], vec![3, 32, 32], vec![1, 1, 32, 32], vec![1, 3, 32, 31], vec![1, 3, 32, 32, 1]] {
        let x = Tensor::zeros(shape.clone());
        assert!(matches!(engine.run(&x), Err(EngineError::InputShape { .. })), "{shape:?}");
    }
    let key = "blocks.1.0.fused.conv.weight";
    w.insert(key, Tensor::zeros(vec![1]));
    let err = CpuEngine::new(&g, &w).err().unwrap().to_string();
    assert!(err.contains(key), "{err}");
    w.remove(key);
    let err = CpuEngine::new(&g, &w).err().unwrap().to_string();
    assert!(err.contains(key) && err.contains("missing"), "{err}");
}

#[test]
fn grouped_conv_is_unsupported() {
    let mut g = conv_graph(&Case { c: 4, h: 5, w: 5, out: 4, k: 3, stride: 1, depthwise: false, padding: Padding::TfSame, act: None, kernel: "" });
    if let Op::Conv(c) = &mut g.nodes[1].op {
        c.groups = 2;
    }
    g.params[0].shape = vec![4, 2, 3, 3];
    let w = naive::random_weights(&g, 1);
    match CpuEngine::new(&g, &w) {
        Err(EngineError::Unsupported { node, op }) => assert!(node == "conv" && op.contains("groups = 2"), "{node} {op}"),
        other => panic!("expected Unsupported, got {:?}", other.err()),
    }
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CpuEngine>();
}
