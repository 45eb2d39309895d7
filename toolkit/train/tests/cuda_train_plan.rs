//! The CUDA training engine's launch lists (`effv2_train::cuda::plan`) replayed on the host — its
//! kernels and the inference kernels compiled as C++, plain loops for cuDNN and cuBLAS — equal the
//! CPU training engine: the training-mode forward (logits, the BN running statistics it updates,
//! dropout and drop-path masks drawn for the same seed) and the backward (every parameter's
//! gradient).

use effv2_edge::tensor::nan_max;
use std::path::Path;

use effv2_edge::engine::naive::random_weights;
use effv2_edge::graph::{build, Graph, Op};
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec, Padding};
use effv2_runtime::plan::host::HostKernels;
use effv2_runtime::plan::launch::{DType, ROW_TILE_MIN_THREADS};
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::optim::Optimizer;
use effv2_train::cuda::plan::{Buffers, Kernel, Lowering, Summed, TrainLaunch, TrainLayout};
use effv2_train::parallel::Shard;
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
                TrainLaunch::ConvBackwardData { shape, dy, w, dx, accumulate } => host.conv_backward_data(*shape, *dy, *w, *dx, *accumulate),
                TrainLaunch::ConvBackwardFilter { shape, x, dy, dw } => host.conv_backward_filter(*shape, *x, *dy, *dw),
                TrainLaunch::AllReduce { .. } => panic!("a sum over replicas outside a group replay"),
            }
        }
    }
}

/// Data-parallel replicas' launch lists replayed in lock-step: each replica up to its next
/// all-reduce, then the sum over the group written back to every replica (what NCCL does).
fn replay_group(host: &HostKernels, lists: &[Vec<TrainLaunch>]) -> usize {
    let mut at = vec![0usize; lists.len()];
    let mut sums = 0;
    loop {
        let mut reduces = vec![];
        for (r, list) in lists.iter().enumerate() {
            let end = list[at[r]..].iter().position(|l| matches!(l, TrainLaunch::AllReduce { .. })).map_or(list.len(), |k| at[r] + k);
            replay(host, &list[at[r]..end]);
            reduces.push(list.get(end).cloned());
            at[r] = end + 1;
        }
        let Some(TrainLaunch::AllReduce { count, dtype, .. }) = reduces[0] else {
            assert!(reduces.iter().all(Option::is_none), "replicas disagree on their collectives");
            return sums;
        };
        let ptrs: Vec<u64> = reduces
            .iter()
            .map(|l| match l {
                Some(TrainLaunch::AllReduce { ptr, count: c, dtype: d }) if *c == count && *d == dtype => *ptr,
                other => panic!("replicas disagree on their collectives: {other:?}"),
            })
            .collect();
        unsafe {
            match dtype {
                Summed::F64 => {
                    let total: Vec<f64> = (0..count).map(|i| ptrs.iter().map(|&p| *(p as *const f64).add(i)).sum()).collect();
                    ptrs.iter().for_each(|&p| std::ptr::copy_nonoverlapping(total.as_ptr(), p as *mut f64, count));
                }
                Summed::F32 => {
                    let total: Vec<f32> = (0..count).map(|i| ptrs.iter().map(|&p| *(p as *const f32).add(i)).sum()).collect();
                    ptrs.iter().for_each(|&p| std::ptr::copy_nonoverlapping(total.as_ptr(), p as *mut f32, count));
                }
            }
        }
        sums += 1;
    }
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let max_b = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, nan_max) / max_b
}

/// A parameter gradient from the engine's device layout back to the graph's (OIHW convs).
fn to_oihw(g: &Graph, id: usize, dev: &[f32]) -> Vec<f32> {
    TrainLayout::to_graph_layout(g, id, dev)
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
    let rmsprop = Optimizer::tf_rmsprop();
    let sgd = Optimizer::Sgd { momentum: 0.9, nesterov: true };
    // The default lowering, and the plain one (no BN + activation fusion, 1x1 convs on cuDNN).
    let (full, plain) = (Lowering::default(), Lowering { fuse_bn_act: false, gemm_1x1: false, share_skip_grads: false, fuse_se_backward: false, fuse_bn_add: false, ..Lowering::default() });
    // Row tiles: the most rows a thread in every tiled launch (what large batches get), or the
    // engine's choice at this size (a row each).
    let cases = [
        ("official tf-same", small("official", Padding::TfSame), 40, rmsprop, full, 0),
        // Partials of 64 rows whatever a sum's size (the others take 8 at these sizes: few threads)
        // and depthwise filter-gradient partials of 8.
        ("none symmetric, 64-row partials", small("none", Padding::Symmetric), 33, sgd, Lowering { chan_min_threads: 0, dw_chunk_rows: 8, ..full }, 0),
        ("official tf-same, plain lowering", small("official", Padding::TfSame), 40, rmsprop, plain, ROW_TILE_MIN_THREADS),
    ];
    for (name, o, size, opt, lowering, tile_min_threads) in cases {
        let g = graph(o, size);
        let batch = 3;
        let w = random_weights(&g, 5);
        let s = g.input_shape();
        let mut rng = Rng::new(6);
        let x: Vec<f32> = (0..batch * s.numel()).map(|_| rng.normal() as f32).collect();
        let seed = 42;

        let config = TrainerConfig { optimizer: opt, weight_decay: 0.01, ema: true };
        let mut cpu = CpuTrainer::new(&g, &w, config).unwrap();
        let want = cpu.forward(&x, batch, Mode::Train, seed).unwrap();
        let want_w = cpu.weights().unwrap();
        let dlogits: Vec<f32> = (0..want.len()).map(|_| rng.normal() as f32).collect();
        cpu.backward(&dlogits).unwrap();
        let want_g = cpu.grads();

        // Chunk partials summed in groups of 2 (the engine: 64), so the regrouped path is replayed.
        let mut layout = TrainLayout::with_lowering(&g, batch, DType::F32, 2, lowering);
        layout.tile_min_threads = tile_min_threads;
        let initial = layout.pack_weights(&g, &w).unwrap();
        let mut arena = vec![0u64; layout.arena_bytes.div_ceil(8)];
        let mut params = vec![0u64; layout.params_bytes.div_ceil(8)];
        unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), params.as_mut_ptr() as *mut u8, layout.params_bytes) };
        let masks = layout.masks(&g, seed);
        let mut logits = vec![f32::NAN; want.len()];
        let mut bufs = Buffers { arena: arena.as_mut_ptr() as u64, params: params.as_mut_ptr() as u64, masks: masks.as_ptr() as u64, input: x.as_ptr() as u64, logits: logits.as_mut_ptr() as u64, ..Default::default() };
        let launches = layout.forward(&g, true, &bufs);
        replay(&lib, &launches);

        let e = rel_err(&logits, &want);
        println!("{name}: training-mode logits rel err {e:.2e} ({} launches)", launches.len());
        assert!(e < 1e-4, "{name}: logits {e}");
        // Running statistics, read back from the parameter buffer (BN params keep their layout).
        let bytes = unsafe { std::slice::from_raw_parts(params.as_ptr() as *const u8, layout.params_bytes) };
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
        bufs.grads = grads.as_mut_ptr() as u64;
        bufs.dlogits = dlogits.as_ptr() as u64;
        let back = layout.backward(&g, &bufs);
        replay(&lib, &back);
        // Every 1x1 conv, like the classifier, is a cuBLAS product and cuDNN gets the rest (in the
        // plain lowering cuDNN gets them all).
        let pointwise = g.nodes.iter().filter(|n| matches!(&n.op, Op::Conv(c) if c.kernel == 1 && c.groups == 1)).count();
        let on_blas = if lowering.gemm_1x1 { pointwise } else { 0 };
        assert_eq!(launches.iter().filter(|l| matches!(l, TrainLaunch::Gemm { .. })).count(), on_blas + 1, "{name}: forward products");
        let cudnn_1x1 = launches.iter().chain(&back).filter(|l| match l {
            TrainLaunch::Conv { shape, .. } | TrainLaunch::ConvBackwardData { shape, .. } | TrainLaunch::ConvBackwardFilter { shape, .. } => shape.kernel == 1,
            _ => false,
        });
        assert_eq!(cudnn_1x1.count() > 0, !lowering.gemm_1x1, "{name}: 1x1 convs on cuDNN");
        assert_eq!(layout.fused_act.iter().any(Option::is_some), lowering.fuse_bn_act, "{name}: BN + activation fusion");
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
            let e = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, nan_max) / absmax(want).max(floor);
            if e > worst.0 {
                worst = (e, p.name.clone());
            }
            compared += 1;
        }
        println!("{name}: {compared} parameter gradients, worst rel err {:.2e} ({}), {} backward launches", worst.0, worst.1, back.len());
        assert!(worst.0 < 1e-3, "{name}: {} gradient rel err {}", worst.1, worst.0);
        let dropped = masks.iter().filter(|&&m| m == 0.0).count();
        assert!(dropped > 0, "the masks drop something");

        // The optimizer step, then the EMA, then an eval-mode forward on the updated weights and
        // running statistics (BN on running stats, no masks), each against the CPU trainer.
        let (lr, decay) = (0.05, 0.7);
        // The shadows start as the weights the trainer was made with (before the forward moved
        // the running statistics).
        let mut shadow = vec![0u64; layout.params_bytes.div_ceil(8)];
        unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), shadow.as_mut_ptr() as *mut u8, layout.params_bytes) };
        let mut slots: Vec<Vec<u64>> = layout.initial_slots(&g, &opt).into_iter().map(|b| {
            let mut v = vec![0u64; b.len().div_ceil(8)];
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr() as *mut u8, b.len()) };
            v
        }).collect();
        let slot_ptrs: Vec<u64> = slots.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
        // The engine's gradient buffer starts zeroed, so the alignment gaps the optimizer's two
        // whole-range launches also step over stay zero: likewise here (the NaN fill above was
        // there to catch unwritten gradients).
        let mut step_grads = vec![0f32; grads.len()];
        for (id, p) in g.params.iter().enumerate() {
            if let Some(at) = layout.pgrad_at[id] {
                step_grads[at / 4..][..p.numel()].copy_from_slice(&grads[at / 4..][..p.numel()]);
            }
        }
        let step = layout.optimizer_step(&opt, params.as_mut_ptr() as u64, step_grads.as_ptr() as u64, &slot_ptrs, lr, 0.01);
        assert_eq!(step.len(), 2, "{name}: one optimizer launch with weight decay, one without");
        for _ in 0..2 {
            cpu.step(lr).unwrap();
            replay(&lib, &step);
        }
        let all = unsafe { std::slice::from_raw_parts(params.as_ptr() as *const f32, layout.params_bytes / 4) };
        assert!(all.iter().all(|v| v.is_finite()), "{name}: the optimizer left a non-finite value in the parameter buffer");
        cpu.ema_update(decay).unwrap();
        replay(&lib, &[layout.ema_update(shadow.as_mut_ptr() as u64, params.as_ptr() as u64, decay)]);
        let host_weights = |buf: &[u64]| {
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, layout.params_bytes) };
            g.params.iter().enumerate().map(|(id, p)| {
                let dev: Vec<f32> = bytes[layout.param_at[id]..][..4 * p.numel()].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                (p.name.clone(), TrainLayout::to_graph_layout(&g, id, &dev))
            }).collect::<Vec<_>>()
        };
        // Errors against each tensor's weight scale: an EMA that mixes a bias with its own
        // initial value can cancel to near zero.
        let cpu_w = cpu.weights().unwrap();
        for (what, got, want) in [("weights after 2 steps", host_weights(&params), cpu.weights().unwrap()), ("EMA", host_weights(&shadow), cpu.ema_weights().unwrap().unwrap())] {
            let err = |n: &str, v: &[f32]| {
                let w = want.get(n).unwrap().data();
                let diff = v.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0f32, nan_max);
                diff / absmax(w).max(absmax(cpu_w.get(n).unwrap().data()))
            };
            let (worst, which) = got.iter().map(|(n, v)| (err(n, v), n)).fold((0f32, ""), |a, (e, n)| if e > a.0 { (e, n.as_str()) } else { a });
            println!("{name}: {what} worst rel err {worst:.2e} ({which})");
            // RMSProp divides by √ms, so the gradients' 5e-5 differences show up in the update; a wrong
            // decay or ε placement moves weights by ≥ lr·wd·|w| = 5e-4 of their scale.
            assert!(worst < 1e-4, "{name}: {what} {worst}");
        }
        let want_eval = cpu.forward(&x, batch, Mode::Eval, seed).unwrap();
        let mut eval_logits = vec![f32::NAN; want.len()];
        bufs.logits = eval_logits.as_mut_ptr() as u64;
        let eval = layout.forward(&g, false, &bufs);
        replay(&lib, &eval);
        let e = rel_err(&eval_logits, &want_eval);
        println!("{name}: eval-mode logits rel err {e:.2e}");
        assert!(e < 1e-4, "{name}: eval logits {e}");
        assert!(rel_err(&eval_logits, &logits) > 1e-3, "eval differs from the training-mode forward");
    }
}

/// Residual blocks in a chain (three blocks a stage: one Add's output is the next one's skip
/// input) keep the gradient an Add hands its skip input in one slot along the chain, alive until
/// the chain's first input is back-propagated. Every gradient equals the launch list that copies
/// instead, to the bit (copies are exact): a slot handed to another tensor too early would not.
/// (The copying list is checked against the CPU trainer above, as the "plain lowering".)
#[test]
fn shared_skip_gradients_equal_copies_along_a_chain_of_residual_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = host_library(tmp.path());
    let o = ModelOptions { width: Some(0.25), depth: Some(0.75), num_classes: 7, fused_stages: "none".parse().unwrap(), drop_path: 0.3, ..Default::default() };
    let g = graph(o, 33);
    let w = random_weights(&g, 5);
    let batch = 3;
    let mut rng = Rng::new(6);
    let x: Vec<f32> = (0..batch * g.input_shape().numel()).map(|_| rng.normal() as f32).collect();
    let dlogits: Vec<f32> = (0..batch * 7).map(|_| rng.normal() as f32).collect();
    let run = |share_skip_grads: bool| {
        let layout = TrainLayout::with_lowering(&g, batch, DType::F32, 2, Lowering { share_skip_grads, ..Lowering::default() });
        let initial = layout.pack_weights(&g, &w).unwrap();
        let mut arena = vec![0u64; layout.arena_bytes.div_ceil(8)];
        let mut params = vec![0u64; layout.params_bytes.div_ceil(8)];
        unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), params.as_mut_ptr() as *mut u8, layout.params_bytes) };
        let masks = layout.masks(&g, 42);
        let (mut logits, mut grads) = (vec![f32::NAN; batch * 7], vec![f32::NAN; layout.grads_bytes / 4]);
        let bufs = Buffers { arena: arena.as_mut_ptr() as u64, params: params.as_mut_ptr() as u64, masks: masks.as_ptr() as u64, input: x.as_ptr() as u64, logits: logits.as_mut_ptr() as u64, grads: grads.as_mut_ptr() as u64, dlogits: dlogits.as_ptr() as u64, ..Default::default() };
        replay(&lib, &layout.forward(&g, true, &bufs));
        let back = layout.backward(&g, &bufs);
        replay(&lib, &back);
        let chained = (0..g.nodes.len()).filter(|&j| layout.grad_of_add[j].is_some_and(|c| layout.grad_of_add[c].is_some())).count();
        let written = g.params.iter().enumerate().all(|(id, p)| layout.pgrad_at[id].is_none_or(|at| grads[at / 4..][..p.numel()].iter().all(|v| v.is_finite())));
        assert!(written, "every parameter gradient written");
        (logits, grads, back.len(), chained)
    };
    let (shared, copied) = (run(true), run(false));
    println!("shared skip gradients: {} backward launches ({} chained), copied: {}", shared.2, shared.3, copied.2);
    assert!(shared.3 >= 3, "{} skip inputs whose Add hands its gradient on again", shared.3);
    assert!(shared.2 < copied.2, "the copies are gone");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&shared.0), bits(&copied.0), "training-mode logits");
    assert_eq!(bits(&shared.1), bits(&copied.1), "parameter gradients");
}

/// The launches of one EfficientNetV2-S training step at 224, batch 128, bf16 (what the GPU
/// benchmark times; with CUDA graphs each still costs the GPU a launch gap): every fusion so far
/// has cut them (2,594 -> 1,875), so a change that adds some must say so here.
#[test]
fn an_s_at_224_training_step_keeps_its_launch_count() {
    let g = build(&ModelSpec::from_name("s", ModelOptions { drop_path: 0.2, ..Default::default() }).unwrap(), 224, 224).unwrap();
    let l = TrainLayout::with_dtype(&g, 128, DType::Bf16);
    let b = Buffers { arena: 1 << 40, params: 2 << 40, weights16: 3 << 40, grads: 4 << 40, masks: 5 << 40, input: 6 << 40, logits: 7 << 40, dlogits: 8 << 40 };
    let (forward, backward) = (l.forward(&g, true, &b), l.backward(&g, &b));
    let small = |ls: &[TrainLaunch]| ls.iter().filter(|x| matches!(x, TrainLaunch::Kernel { total, .. } if *total < 65536)).count();
    println!("S@224 b128 bf16: {} forward + {} backward launches ({} + {} kernels under 65,536 threads)", forward.len(), backward.len(), small(&forward), small(&backward));
    assert!(forward.len() <= 801 && backward.len() <= 1074, "{} + {} launches (was 801 + 1,074)", forward.len(), backward.len());
}

/// The arena shares space by lifetime: gradients reuse the values of nodes already
/// back-propagated. For EfficientNetV2-S at 224, batch 128 (the training benchmark's shape) the
/// arena must come out well under values + gradients kept side by side, and every value and
/// gradient must lie inside it, 256-byte aligned (cuDNN operands).
#[test]
fn the_training_arena_reuses_gradient_space_for_s_at_224() {
    let g = build(&ModelSpec::from_name("s", ModelOptions { drop_path: 0.2, ..Default::default() }).unwrap(), 224, 224).unwrap();
    let batch = 128;
    let l = TrainLayout::new(&g, batch);
    let bytes = |i: usize| 4 * batch * g.nodes[i].shape.numel();
    let values: usize = (0..g.nodes.len()).map(bytes).sum();
    // A BN whose activation is fused in stores neither its output nor that output's gradient:
    // every BN followed by its SiLU (all but the project convs' BNs, whose output a residual add
    // or the next block reads).
    let fused: Vec<usize> = (0..g.nodes.len()).filter(|&i| l.fused_act[i].is_some()).collect();
    let silu_after_bn = g.nodes.iter().filter(|n| matches!(n.op, Op::Act(_)) && matches!(g.nodes[n.inputs[0]].op, Op::BatchNorm(_))).count();
    assert_eq!(fused.len(), silu_after_bn);
    assert!(fused.iter().all(|&i| l.grad_at[i].is_none()));
    let stored = values - fused.iter().map(|&i| bytes(i)).sum::<usize>();
    let side_by_side = stored + l.grad_at.iter().enumerate().filter(|(_, a)| a.is_some()).map(|(i, _)| bytes(i)).sum::<usize>();
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    println!(
        "S@224 b128: arena {:.1} GiB (values {:.1} GiB, {:.1} GiB stored with {} activations fused into their BN; stored values and gradients side by side {:.1} GiB)",
        gib(l.arena_bytes),
        gib(values),
        gib(stored),
        fused.len(),
        gib(side_by_side)
    );
    assert!((l.arena_bytes as f64) < 0.65 * side_by_side as f64, "{} vs {side_by_side}", l.arena_bytes);
    for (i, &at) in l.value_at.iter().enumerate() {
        assert!(at % 256 == 0 && at + bytes(i) <= l.arena_bytes);
        if let Some(g_at) = l.grad_at[i] {
            assert!(g_at % 256 == 0 && g_at + bytes(i) <= l.arena_bytes);
        }
    }
    // A residual Add's backward reads its own gradient and writes its inputs' — through a drop-path
    // it alone reads, straight into that mask's input's gradient (the mask has none): none of
    // those may share bytes, nor with the Add's value (all of them are live at that step) — but
    // the input it hands its gradient unchanged keeps it in the Add's own slot.
    let (mut through_masks, mut shared) = (0, 0);
    let range = |i: usize| {
        let at = l.grad_at[i].expect("a gradient slot");
        at..at + bytes(i)
    };
    let overlap = |a: std::ops::Range<usize>, b: std::ops::Range<usize>| a.start < b.end && b.start < a.end;
    for (c, node) in g.nodes.iter().enumerate() {
        if !matches!(node.op, Op::Add) {
            continue;
        }
        let mut written = vec![];
        for &j in &node.inputs {
            let mask_alone = matches!(g.nodes[j].op, Op::DropPath { .. }) && g.nodes.iter().filter(|n| n.inputs.contains(&j)).count() == 1;
            if mask_alone {
                assert!(l.grad_at[j].is_none(), "a drop-path read only by its Add has no gradient");
                through_masks += 1;
                if l.bn_add_mask[g.nodes[j].inputs[0]] == Some(j) {
                    // Its BN reads the Add's gradient times the mask itself: nothing written.
                    assert!(l.grad_at[g.nodes[j].inputs[0]].is_none());
                    continue;
                }
            }
            if l.grad_of_add[j] == Some(c) {
                assert_eq!(l.grad_at[j], l.grad_at[c], "Add {c}: the gradient it hands {j} is its own");
                shared += 1;
                continue;
            }
            written.push(if mask_alone { g.nodes[j].inputs[0] } else { j });
        }
        let read = range(c);
        let value = l.value_at[c]..l.value_at[c] + bytes(c);
        for (k, &w) in written.iter().enumerate() {
            assert!(!overlap(range(w), read.clone()), "Add {c}: the gradient of {w} overlaps its own");
            assert!(!overlap(range(w), value.clone()), "Add {c}: the gradient of {w} overlaps the Add's value");
            for &v in &written[k + 1..] {
                assert!(!overlap(range(w), range(v)), "Add {c}: the gradients of {w} and {v} overlap");
            }
        }
    }
    assert!(through_masks > 20, "{through_masks} drop-paths handed over by their Add");
    assert!(shared > 20, "{shared} skip inputs sharing their Add's gradient");
    // Tensors kept past their own node's backward must keep their bytes to themselves meanwhile:
    // `slot`, needed from node `hi`'s backward through node `lo`'s (hi > lo), may overlap no value
    // of a node up to `hi` (back-propagated later) and no gradient written by then and not yet done
    // with (of a node up to `hi`, first written by a node from `lo` on), but the ones it is.
    let n = g.nodes.len();
    let mut writer = vec![0usize; n]; // the last consumer's backward writes a gradient first
    for (i, node) in g.nodes.iter().enumerate() {
        for &k in &node.inputs {
            writer[k] = writer[k].max(l.mask_into_add[i].unwrap_or(i));
        }
    }
    let alone = |slot: std::ops::Range<usize>, hi: usize, lo: usize, what: &str| {
        let mut checked = 0;
        for (k, &written_at) in writer.iter().enumerate().take(hi + 1) {
            let value = l.value_at[k]..l.value_at[k] + bytes(k);
            let stored = l.fused_act[k].is_none() && l.mask_into_add[k].is_none() && l.bn_into_add[k].is_none();
            if stored && value != slot {
                assert!(!overlap(value, slot.clone()), "{what} overlaps the value of {k}");
            }
            if l.grad_at[k].is_some() && written_at >= lo && range(k) != slot {
                assert!(!overlap(range(k), slot.clone()), "{what} overlaps the gradient of {k}");
                checked += 1;
            }
        }
        checked
    };
    // The gradient an Add shares with its skip input: kept through the skip input's backward.
    let backward_at = |i: usize| 2 * n - 1 - i;
    let mut checked = 0;
    for j in 0..n {
        if let Some(c) = l.grad_of_add[j] {
            assert!(l.kept_until.grad[c] >= backward_at(j), "Add {c}'s gradient is kept until its skip input {j}'s backward");
            checked += alone(range(j), c, j, &format!("the gradient {j} shares with Add {c}"));
        }
    }
    assert!(checked > 100, "{checked} gradients live beside shared ones");
    // An SE gate multiply's gradient and the gate's value: through the SE pool's backward.
    let mut se = 0;
    for (p, m) in l.se_mul_of_pool.iter().enumerate() {
        let Some(m) = *m else { continue };
        let gate = g.nodes[m].inputs[1];
        assert!(l.kept_until.grad[m] >= backward_at(p) && l.kept_until.value[gate] >= backward_at(p), "SE multiply {m}: its gradient and gate kept until pool {p}'s backward");
        alone(range(m), m, p, &format!("the gradient of SE multiply {m}"));
        alone(l.value_at[gate]..l.value_at[gate] + bytes(gate), m, p, &format!("the value of SE gate {gate}"));
        se += 1;
    }
    assert!(se >= 30, "{se} SE blocks");
    // A BN that reads its residual Add's gradient through the drop-path itself: the Add's
    // gradient through that BN's backward.
    let mut masked = 0;
    for (i, m) in l.bn_add_mask.iter().enumerate() {
        let (Some(_), Some(add)) = (m, l.bn_into_add[i]) else { continue };
        assert!(l.grad_at[i].is_none() && l.kept_until.grad[add] >= backward_at(i), "BN {i}: Add {add}'s gradient kept until its backward");
        alone(range(add), add, i, &format!("the gradient of Add {add} BN {i} reads"));
        masked += 1;
    }
    assert!(masked >= 30, "{masked} BNs reading their Add's gradient through the mask");
    // The same without shared skip gradients (which keep the Add's slot longer anyway).
    let unshared = TrainLayout::with_lowering(&g, batch, DType::F32, effv2_train::cuda::CHAN_GROUP, Lowering { share_skip_grads: false, ..Lowering::default() });
    for (i, m) in unshared.bn_add_mask.iter().enumerate() {
        if let (Some(_), Some(add)) = (m, unshared.bn_into_add[i]) {
            assert!(unshared.kept_until.grad[add] >= backward_at(i), "unshared: BN {i}: Add {add}'s gradient kept until its backward");
        }
    }
}

/// Mixed precision: activations and their gradients in 16 bits, the convs and the classifier on a
/// 16-bit copy of the weights (f32 sums), BN statistics, parameter gradients and the optimizer in
/// f32. Replayed on the host (kernels and the cuDNN / cuBLAS stand-ins compiled for the type), the
/// training forward and every parameter gradient follow the f32 CPU trainer as far as the storage
/// precision allows — and no further off: the same launch list with fp16 storage (2^-11 rounding
/// instead of bf16's 2^-8) must come out about 8x closer, which a wrong pointer, a missing cast or
/// a stale weight copy would not. The model is conditioned like a trained one (each block's last
/// BN scale 0.2, see targets/tests/cuda_plan.rs).
#[test]
fn the_16_bit_training_launches_replayed_on_the_host_follow_the_f32_cpu_trainer() {
    let tmp = tempfile::tempdir().unwrap();
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_host/train_harness.cpp");
    let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 7, drop_path: 0.3, dropout: Some(0.2), ..Default::default() };
    let g = graph(o, 64);
    let mut w = random_weights(&g, 5);
    let last_bn: Vec<_> = w.iter().filter(|(n, _)| n.ends_with("project.bn.weight")).map(|(n, t)| (n.clone(), t.clone())).collect();
    for (n, t) in last_bn {
        w.insert(n, effv2_edge::Tensor::new(t.shape().to_vec(), t.data().iter().map(|v| v * 0.2).collect()).unwrap());
    }
    let batch = 8;
    let mut rng = Rng::new(6);
    let x: Vec<f32> = (0..batch * g.input_shape().numel()).map(|_| rng.normal() as f32).collect();
    let mut cpu = CpuTrainer::new(&g, &w, TrainerConfig { ema: false, ..Default::default() }).unwrap();
    let want = cpu.forward(&x, batch, Mode::Train, 42).unwrap();
    let dlogits: Vec<f32> = (0..want.len()).map(|_| rng.normal() as f32).collect();
    cpu.backward(&dlogits).unwrap();
    let want_g = cpu.grads();
    let absmax = |v: &[f32]| v.iter().fold(0f32, |a, b| a.max(b.abs()));
    let floor = 1e-3 * want_g.iter().map(|(_, t)| absmax(t.data())).fold(0f32, f32::max);

    // (logits rel err, mean and worst parameter-gradient rel err) for one storage type.
    let run = |dtype: DType| -> (f32, f32, f32) {
        let dir = tmp.path().join(format!("{dtype:?}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lib = HostKernels::compile_for(&harness, &[("TRAIN_KERNELS_CU", TRAIN_KERNELS)], dtype, &dir).unwrap();
        let mut layout = TrainLayout::with_dtype(&g, batch, dtype);
        layout.tile_min_threads = 0; // 16-bit row tiles (8 channels x 4 rows a thread) replayed too
        let initial = layout.pack_weights(&g, &w).unwrap();
        let buf = |bytes: usize| vec![0u64; bytes.div_ceil(8)];
        let (mut arena, mut params, mut weights16, mut grads) = (buf(layout.arena_bytes), buf(layout.params_bytes), buf(layout.params_bytes / 2), vec![f32::NAN; layout.grads_bytes / 4]);
        unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), params.as_mut_ptr() as *mut u8, layout.params_bytes) };
        let masks = layout.masks(&g, 42);
        let mut logits = vec![f32::NAN; want.len()];
        let bufs = Buffers {
            arena: arena.as_mut_ptr() as u64,
            params: params.as_mut_ptr() as u64,
            weights16: weights16.as_mut_ptr() as u64,
            grads: grads.as_mut_ptr() as u64,
            masks: masks.as_ptr() as u64,
            input: x.as_ptr() as u64,
            logits: logits.as_mut_ptr() as u64,
            dlogits: dlogits.as_ptr() as u64,
        };
        replay(&lib, &[layout.refresh_weights16(bufs.params, bufs.weights16).expect("a 16-bit layout narrows its weights")]);
        replay(&lib, &layout.forward(&g, true, &bufs));
        replay(&lib, &layout.backward(&g, &bufs));
        let (mut worst, mut sum, mut count) = (0f32, 0f32, 0);
        for (id, p) in g.params.iter().enumerate() {
            let Some(at) = layout.pgrad_at[id] else { continue };
            let got = TrainLayout::to_graph_layout(&g, id, &grads[at / 4..][..p.numel()]);
            let want = want_g.get(&p.name).unwrap().data();
            let e = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, nan_max) / absmax(want).max(floor);
            sum += e;
            count += 1;
            worst = worst.max(e);
        }
        let r = (rel_err(&logits, &want), sum / count as f32, worst);
        println!("{dtype:?} storage: training-mode logits rel err {:.2e}; {count} parameter gradients, mean rel err {:.2e}, worst {:.2e}", r.0, r.1, r.2);
        r
    };
    let (half, bf16) = (run(DType::F16), run(DType::Bf16));
    assert!(half.0 < 1e-2 && half.1 < 2e-2, "fp16 storage: {half:?}");
    for (what, h, b) in [("logits", half.0, bf16.0), ("mean gradient", half.1, bf16.1)] {
        let ratio = b / h;
        assert!((3.0..30.0).contains(&ratio), "{what}: bf16 {b:.2e} vs fp16 {h:.2e} (x{ratio:.1}): not rounding-limited");
    }
}

/// Data parallelism on the CUDA engine's launch lists: two replicas holding 3 and 2 rows of a
/// global batch of 5, replayed in lock-step with their all-reduces summed on the host, compute
/// what the CPU trainer computes on the whole batch — training-mode logits (synchronised BN, masks
/// sliced from the global draw), BN running statistics and every parameter gradient, on each
/// replica. Without the sums (a replica alone on its rows) the logits move away.
#[test]
fn sharded_replicas_replayed_in_lock_step_equal_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = host_library(tmp.path());
    let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 7, drop_path: 0.3, dropout: Some(0.2), ..Default::default() };
    let g = graph(o, 40);
    let w = random_weights(&g, 5);
    let global = 5;
    let per = g.input_shape().numel();
    let classes = 7;
    let mut rng = Rng::new(6);
    let x: Vec<f32> = (0..global * per).map(|_| rng.normal() as f32).collect();
    let seed = 42;
    let mut cpu = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    let want = cpu.forward(&x, global, Mode::Train, seed).unwrap();
    let want_w = cpu.weights().unwrap();
    let dlogits: Vec<f32> = (0..want.len()).map(|_| rng.normal() as f32).collect();
    cpu.backward(&dlogits).unwrap();
    let want_g = cpu.grads();

    struct Replica {
        layout: TrainLayout,
        arena: Vec<u64>,
        params: Vec<u64>,
        grads: Vec<f32>,
        masks: Vec<f32>,
        logits: Vec<f32>,
    }
    let shards = [(0usize, 3usize), (3, 2)];
    let initial = TrainLayout::new(&g, 1).pack_weights(&g, &w).unwrap();
    let mut reps: Vec<Replica> = shards
        .iter()
        .map(|&(offset, rows)| {
            let mut layout = TrainLayout::new(&g, rows);
            layout.shard = Shard { offset, global };
            let mut params = vec![0u64; layout.params_bytes.div_ceil(8)];
            unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), params.as_mut_ptr() as *mut u8, layout.params_bytes) };
            Replica { arena: vec![0u64; layout.arena_bytes.div_ceil(8)], params, grads: vec![f32::NAN; layout.grads_bytes / 4], masks: layout.masks(&g, seed), logits: vec![f32::NAN; rows * classes], layout }
        })
        .collect();
    let bufs: Vec<Buffers> = reps
        .iter_mut()
        .zip(shards)
        .map(|(r, (offset, rows))| Buffers {
            arena: r.arena.as_mut_ptr() as u64,
            params: r.params.as_mut_ptr() as u64,
            grads: r.grads.as_mut_ptr() as u64,
            masks: r.masks.as_ptr() as u64,
            input: x[offset * per..].as_ptr() as u64,
            logits: r.logits.as_mut_ptr() as u64,
            dlogits: dlogits[offset * classes..][..rows * classes].as_ptr() as u64,
            weights16: 0,
        })
        .collect();
    let sums = replay_group(&lib, &reps.iter().zip(&bufs).map(|(r, b)| r.layout.forward(&g, true, b)).collect::<Vec<_>>());
    let got: Vec<f32> = reps.iter().flat_map(|r| r.logits.clone()).collect();
    let e = rel_err(&got, &want);
    println!("2 replicas (3 + 2 rows): training-mode logits rel err {e:.2e} after {sums} forward sums");
    assert!(e < 1e-4, "logits {e}");
    assert!(sums > 10, "{sums} sums: BN statistics are synchronised");
    for (k, r) in reps.iter().enumerate() {
        let bytes = unsafe { std::slice::from_raw_parts(r.params.as_ptr() as *const u8, r.layout.params_bytes) };
        for n in &g.nodes {
            let Op::BatchNorm(b) = &n.op else { continue };
            for id in [b.mean, b.var] {
                let got = r.layout.unpack(&g, bytes, id);
                let e = rel_err(&got, want_w.get(&g.params[id].name).unwrap().data());
                assert!(e < 1e-5, "replica {k}: {} {e}", g.params[id].name);
            }
        }
    }

    replay_group(&lib, &reps.iter().zip(&bufs).map(|(r, b)| r.layout.backward(&g, b)).collect::<Vec<_>>());
    let absmax = |v: &[f32]| v.iter().fold(0f32, |a, b| a.max(b.abs()));
    let floor = 1e-3 * want_g.iter().map(|(_, t)| absmax(t.data())).fold(0f32, f32::max);
    for (k, r) in reps.iter().enumerate() {
        let mut worst = (0f32, String::new());
        for (id, p) in g.params.iter().enumerate() {
            let Some(at) = r.layout.pgrad_at[id] else { continue };
            let got = TrainLayout::to_graph_layout(&g, id, &r.grads[at / 4..][..p.numel()]);
            let want = want_g.get(&p.name).unwrap().data();
            let e = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, nan_max) / absmax(want).max(floor);
            if e > worst.0 {
                worst = (e, p.name.clone());
            }
        }
        println!("replica {k}: worst parameter-gradient rel err {:.2e} ({})", worst.0, worst.1);
        assert!(worst.0 < 1e-3, "replica {k}: {} {}", worst.1, worst.0);
    }

    // The first replica's rows alone (an unsharded layout over them) give other logits: the sums matter.
    let alone = TrainLayout::new(&g, 3);
    let mut arena = vec![0u64; alone.arena_bytes.div_ceil(8)];
    let mut params = vec![0u64; alone.params_bytes.div_ceil(8)];
    unsafe { std::ptr::copy_nonoverlapping(initial.as_ptr(), params.as_mut_ptr() as *mut u8, alone.params_bytes) };
    let masks = reps[0].masks.clone();
    let mut logits = vec![f32::NAN; 3 * classes];
    let b = Buffers { arena: arena.as_mut_ptr() as u64, params: params.as_mut_ptr() as u64, masks: masks.as_ptr() as u64, input: x.as_ptr() as u64, logits: logits.as_mut_ptr() as u64, ..Default::default() };
    replay(&lib, &alone.forward(&g, true, &b));
    assert!(rel_err(&logits, &want[..3 * classes]) > 1e-3);
}
