//! Data parallelism computes what one engine computes on the global batch: replicas of the CPU
//! engine over an in-process group against a single CPU engine, step by step — logits, BN running
//! statistics (synchronised BN), gradients (summed), drop-path/dropout masks (sliced from the
//! global draw), optimizer slots and EMA.

use effv2_edge::tensor::nan_max;
use std::sync::Arc;

use effv2_edge::engine::naive;
use effv2_edge::graph::{build, Graph};
use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, ModelSpec};
use effv2_edge::weights::Weights;
use effv2_train::cpu::{CpuTrainer, TrainerConfig};
use effv2_train::loss::{smoothed_onehot, softmax_cross_entropy};
use effv2_train::parallel::{Collective, DataParallel, HostGroup};
use effv2_train::{Mode, TrainEngine, TrainError};

const CLASSES: usize = 4;

/// A small b0 with dropout and stochastic depth on, so masks matter.
fn graph() -> Graph {
    let o = ModelOptions { width: Some(0.25), depth: Some(0.5), num_classes: CLASSES, in_channels: 1, dropout: Some(0.3), drop_path: 0.5, ..Default::default() };
    build(&ModelSpec::from_name("b0", o).unwrap(), 24, 24).unwrap()
}

fn group_of(g: &Graph, w: &Weights, n: usize) -> DataParallel<CpuTrainer> {
    let replicas = HostGroup::members(n).into_iter().map(|m| CpuTrainer::replica(g, w, TrainerConfig::default(), Arc::new(m) as Arc<dyn Collective>).unwrap()).collect();
    DataParallel::new(replicas, CLASSES).unwrap()
}

/// Three training steps; the logits of each. A small learning rate: a random net at a large one
/// is chaotic, and f32 rounding differences (the replicas sum in another order) grow ~10× a step.
fn three_steps(e: &mut dyn TrainEngine, batch: usize) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(11);
    (0..3u64)
        .map(|step| {
            let x = rng.normal_tensor(vec![batch, 1, 24, 24]);
            let labels: Vec<usize> = (0..batch).map(|_| rng.below(CLASSES)).collect();
            let logits = e.forward(x.data(), batch, Mode::Train, 100 + step).unwrap();
            let (_, dl) = softmax_cross_entropy(&logits, &smoothed_onehot(&labels, CLASSES, 0.1), CLASSES);
            e.backward(&dl).unwrap();
            e.step(0.005).unwrap();
            e.ema_update(0.9).unwrap();
            logits
        })
        .collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, nan_max) / scale
}

fn assert_same_weights(a: &Weights, b: &Weights, what: &str) {
    for (name, t) in a.iter() {
        let err = max_rel(t.data(), b.get(name).unwrap().data());
        assert!(err < 2e-4, "{what} {name}: {err}");
    }
}

#[test]
fn replicas_train_like_one_engine_on_the_global_batch() {
    let g = graph();
    let w = naive::random_weights(&g, 5);
    let mut one = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    let want = three_steps(&mut one, 7);
    // Even and uneven shards (7 rows over 3 replicas: 3 + 2 + 2).
    for n in [2, 3] {
        let mut dp = group_of(&g, &w, n);
        let got = three_steps(&mut dp, 7);
        for (s, (a, b)) in want.iter().zip(&got).enumerate() {
            let err = max_rel(a, b);
            assert!(err < 1e-4, "{n} replicas, step {s}: logits differ by {err}");
        }
        assert_same_weights(&one.weights().unwrap(), &dp.weights().unwrap(), "weights");
        assert_same_weights(&one.ema_weights().unwrap().unwrap(), &dp.ema_weights().unwrap().unwrap(), "ema");
        for ((na, ta), (nb, tb)) in one.optimizer_state().unwrap().iter().zip(&dp.optimizer_state().unwrap()) {
            assert_eq!(na, nb);
            // The RMS slot holds g², which doubles the relative rounding differences of g.
            assert!(max_rel(ta.data(), tb.data()) < 1e-3, "slot {na}");
        }
    }
}

#[test]
fn without_sync_the_shards_would_differ() {
    // The same replicas, each on its own (a group of one): BN sees only its shard and the
    // gradients are not summed, so the result must move away from the single engine's. This is
    // what makes the test above able to fail.
    let g = graph();
    let w = naive::random_weights(&g, 5);
    let mut one = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    let want = three_steps(&mut one, 8);
    let mut alone: Vec<CpuTrainer> = (0..2).map(|_| CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap()).collect();
    let mut rng = Rng::new(11);
    let x = rng.normal_tensor(vec![8, 1, 24, 24]);
    let half = x.data().len() / 2;
    let logits = alone[0].forward(&x.data()[..half], 4, Mode::Train, 100).unwrap();
    assert!(max_rel(&want[0][..4 * CLASSES], &logits) > 1e-3);
}

#[test]
fn eval_shards_any_batch_and_training_needs_a_row_per_replica() {
    let g = graph();
    let w = naive::random_weights(&g, 5);
    let mut one = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    let mut dp = group_of(&g, &w, 3);
    let x = Rng::new(2).normal_tensor(vec![2, 1, 24, 24]);
    let a = one.forward(x.data(), 2, Mode::Eval, 0).unwrap();
    let b = dp.forward(x.data(), 2, Mode::Eval, 0).unwrap();
    assert!(max_rel(&a, &b) < 1e-5);
    assert!(matches!(dp.forward(x.data(), 2, Mode::Train, 0), Err(TrainError::Config(_))));
    assert!(matches!(dp.backward(&[0.0; 3]), Err(TrainError::Size { .. })));
}

#[test]
fn first_step_gradients_are_the_global_batch_gradients() {
    let g = graph();
    let w = naive::random_weights(&g, 5);
    let mut one = CpuTrainer::new(&g, &w, TrainerConfig::default()).unwrap();
    let mut dp = group_of(&g, &w, 2);
    let mut rng = Rng::new(11);
    let x = rng.normal_tensor(vec![7, 1, 24, 24]);
    let labels: Vec<usize> = (0..7).map(|_| rng.below(CLASSES)).collect();
    for e in [&mut one as &mut dyn TrainEngine, &mut dp] {
        let logits = e.forward(x.data(), 7, Mode::Train, 100).unwrap();
        let (_, dl) = softmax_cross_entropy(&logits, &smoothed_onehot(&labels, CLASSES, 0.1), CLASSES);
        e.backward(&dl).unwrap();
    }
    let want = one.grads();
    for rank in 0..2 {
        let got = dp.replica(rank).grads();
        for (name, t) in want.iter() {
            // Gradients that are zero in exact arithmetic (a BN bias feeding only another BN) come
            // out as ~1e-7 noise on both sides; relative error means nothing there.
            if t.max_abs() > 1e-5 {
                let err = max_rel(t.data(), got.get(name).unwrap().data());
                assert!(err < 1e-4, "rank {rank} {name}: {err}");
            }
        }
    }
}
