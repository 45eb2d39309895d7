//! The CPU training engine's forward against the naive f64 reference, BN running statistics,
//! graph switches, and that training actually learns.

mod common;

use effv2_edge::engine::naive;
use effv2_edge::graph::{build, Graph, Op};
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec, Padding};
use effv2_edge::Tensor;
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::loss::{smoothed_onehot, softmax_cross_entropy};
use effv2_train::{Mode, TrainEngine, TrainError};

fn tiny(h: usize, padding: Padding) -> Graph {
    let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 4, in_channels: 1, padding, ..Default::default() };
    build(&ModelSpec::from_name("b0", o).unwrap(), h, h).unwrap()
}

#[test]
fn eval_forward_matches_the_naive_reference() {
    for (pad, h) in [(Padding::TfSame, 32), (Padding::Symmetric, 37)] {
        let g = tiny(h, pad);
        let w = naive::random_weights(&g, 3);
        let x = Rng::new(4).normal_tensor(vec![3, 1, h, h]);
        let want = naive::run(&g, &w, &x).unwrap();
        let mut t = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
        let got = t.forward(x.data(), 3, Mode::Eval, 0).unwrap();
        let err = Tensor::new(want.shape().to_vec(), got).unwrap().max_abs_diff(&want).unwrap();
        assert!(err <= 1e-4 * want.max_abs().max(1.0), "{pad:?}: {err}");
        // EvalEma with fresh shadows is the same network.
        assert_eq!(t.forward(x.data(), 3, Mode::EvalEma, 0).unwrap(), t.forward(x.data(), 3, Mode::Eval, 0).unwrap());
    }
}

#[test]
fn bn_running_statistics_use_momentum_0_1_and_unbiased_variance() {
    let mut b = common::B::new(1, 1, 2);
    b.bn(0);
    let mut w = naive::random_weights(&b.g, 1);
    w.insert("p2", Tensor::new(vec![1], vec![0.0]).unwrap());
    w.insert("p3", Tensor::new(vec![1], vec![1.0]).unwrap());
    let mut t = CpuTrainer::new(&b.g, &w, TrainerConfig::default()).unwrap();
    // Values 1, 3, 5, 7: mean 4, biased var 5, unbiased 20/3.
    t.forward(&[1.0, 3.0, 5.0, 7.0], 2, Mode::Train, 0).unwrap();
    let w = t.weights().unwrap();
    assert!((w.get("p2").unwrap().data()[0] - 0.4).abs() < 1e-6);
    assert!((w.get("p3").unwrap().data()[0] - (0.9 + 0.1 * 20.0 / 3.0)).abs() < 1e-5);
}

#[test]
fn graph_switch_keeps_weights_and_rejects_another_model() {
    let g = tiny(32, Padding::TfSame);
    let w = naive::random_weights(&g, 3);
    let mut t = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    t.set_graph(&tiny(48, Padding::TfSame)).unwrap();
    let y = t.forward(&vec![0.5; 2 * 48 * 48], 2, Mode::Eval, 0).unwrap();
    assert_eq!(y.len(), 8);
    assert_eq!(t.weights().unwrap(), w);
    let other = build(&ModelSpec::from_name("b0", ModelOptions { num_classes: 3, in_channels: 1, width: Some(0.25), depth: Some(0.25), ..Default::default() }).unwrap(), 32, 32).unwrap();
    assert!(matches!(t.set_graph(&other), Err(TrainError::ParamsChanged(_))));
    assert!(matches!(t.backward(&[0.0; 8]), Err(TrainError::Misuse(_))));
    assert!(matches!(t.forward(&[0.0; 5], 2, Mode::Train, 0), Err(TrainError::Size { .. })));
}

#[test]
fn drop_path_drops_whole_samples() {
    let mut b = common::B::new(2, 2, 2);
    b.op(Op::DropPath { survival: 0.5 }, vec![0]);
    let w = naive::random_weights(&b.g, 1);
    let mut t = CpuTrainer::new(&b.g, &w, TrainerConfig::default()).unwrap();
    let y = t.forward(&vec![1.0; 64 * 8], 64, Mode::Train, 9).unwrap();
    let kept = y.chunks(8).filter(|s| s.iter().all(|v| *v == 2.0)).count();
    assert!(y.chunks(8).all(|s| s.iter().all(|v| *v == 0.0) || s.iter().all(|v| *v == 2.0)));
    assert!((20..44).contains(&kept), "{kept}");
    assert_eq!(t.forward(&[1.0; 8], 1, Mode::Eval, 9).unwrap(), vec![1.0; 8]);
}

/// Class = which quadrant of a 16×16 image holds a bright blob.
fn quadrant_batch(rng: &mut Rng, n: usize) -> (Vec<f32>, Vec<usize>) {
    let mut x = vec![0f32; n * 256];
    let labels: Vec<usize> = (0..n).map(|_| rng.below(4)).collect();
    for (s, &l) in x.chunks_exact_mut(256).zip(&labels) {
        let (oy, ox) = (l / 2 * 8 + rng.below(4), l % 2 * 8 + rng.below(4));
        for p in s.iter_mut() {
            *p = rng.normal() as f32 * 0.3;
        }
        for dy in 0..4 {
            for dx in 0..4 {
                s[(oy + dy) * 16 + ox + dx] += 2.0;
            }
        }
    }
    (x, labels)
}

#[test]
fn rmsprop_training_learns_a_toy_task_and_ema_follows() {
    let g = tiny(16, Padding::TfSame);
    let w = effv2_edge::weights::init_weights(&g, 1);
    let mut t = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    let mut rng = Rng::new(5);
    let mut losses = vec![];
    for step in 0..60u64 {
        let (x, labels) = quadrant_batch(&mut rng, 32);
        let logits = t.forward(&x, 32, Mode::Train, step).unwrap();
        let (loss, d) = softmax_cross_entropy(&logits, &smoothed_onehot(&labels, 4, 0.1), 4);
        losses.push(loss);
        t.backward(&d).unwrap();
        t.step(0.01).unwrap();
        t.ema_update(effv2_train::ema::tf_decay(0.99, step + 1)).unwrap();
    }
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[50..].iter().sum::<f32>() / 10.0;
    assert!(last < 0.6 * first, "loss {first} -> {last}");
    let (x, labels) = quadrant_batch(&mut rng, 64);
    let logits = t.forward(&x, 64, Mode::EvalEma, 0).unwrap();
    let acc = effv2_train::loss::topk_correct(&logits, &labels, 4, 1);
    assert!(acc >= 48, "EMA eval accuracy {acc}/64");
    assert_ne!(t.ema_weights().unwrap().unwrap(), t.weights().unwrap());
    // State round trip: a fresh engine with the saved state gives identical outputs.
    let mut u = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    u.load_state(&t.weights().unwrap(), t.ema_weights().unwrap().as_ref(), &t.optimizer_state().unwrap()).unwrap();
    assert_eq!(u.forward(&x, 64, Mode::EvalEma, 0).unwrap(), logits);
    assert_eq!(u.optimizer_state().unwrap(), t.optimizer_state().unwrap());
}
