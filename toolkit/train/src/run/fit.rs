//! `train` and `resume`: the epoch/step loop around a [`TrainEngine`].

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use effv2_edge::graph::{build, Graph};
use effv2_edge::rng::Rng;
use effv2_edge::spec::ModelSpec;
use effv2_edge::weights::{init_weights, Weights};

use super::checkpoint::{self, RunState, Saved};
use super::metrics::{self, EpochMetrics};
use super::{evaluate, TrainConfig};
use crate::data::{self, Dataset, EpochPlan, Loader, MixConfig};
use crate::loss::{softmax_cross_entropy, topk_correct};
use crate::progressive::Stage;
use crate::schedule::LrSchedule;
use crate::{ema, Mode, TrainEngine, TrainError};

/// Progress reports for a UI.
pub enum Event<'a> {
    Resumed { epochs_done: usize },
    EpochStart { epoch: usize, epochs: usize, steps: usize, stage: &'a Stage },
    Step { step_in_epoch: usize, steps: usize, loss: f32, top1: f64, images_per_sec: f64 },
    Epoch(&'a EpochMetrics),
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub epochs: usize,
    pub best_top1: f64,
    pub last: Option<EpochMetrics>,
    pub train_seconds: f64,
}

/// Start a run in `dir` (which must not hold one already).
pub fn train<E: TrainEngine>(
    cfg: TrainConfig,
    dir: &Path,
    make: impl FnOnce(&Graph, &Weights, &TrainConfig) -> Result<E, TrainError>,
    on: &mut dyn FnMut(Event),
) -> Result<Summary, TrainError> {
    cfg.validate()?;
    if dir.join("last").exists() {
        return Err(TrainError::Config(format!("{} already holds a run; continue it with --resume {}", dir.display(), dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let json = serde_json::to_string_pretty(&cfg).expect("config serializes");
    effv2_edge::io::atomic::write_atomic(&dir.join("config.json"), json.as_bytes()).map_err(|e| TrainError::io(dir, e))?;
    run(cfg, dir, None, make, on)
}

/// Continue the run in `dir` from its last checkpoint, with the config it was started with.
pub fn resume<E: TrainEngine>(dir: &Path, make: impl FnOnce(&Graph, &Weights, &TrainConfig) -> Result<E, TrainError>, on: &mut dyn FnMut(Event)) -> Result<Summary, TrainError> {
    let saved = checkpoint::load(dir)?;
    checkpoint::collect_garbage(dir);
    run(saved.state.config.clone(), dir, Some(saved), make, on)
}

fn open_data(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>), TrainError> {
    let (mut tr, mut te) = data::open(&cfg.data)?;
    if let Some(n) = cfg.train_limit {
        tr = tr.take(n);
    }
    if let Some(n) = cfg.test_limit {
        te = te.take(n);
    }
    if tr.classes.len() != cfg.options.num_classes {
        return Err(TrainError::Config(format!("{} has {} classes but the model has {}", cfg.data, tr.classes.len(), cfg.options.num_classes)));
    }
    Ok((Arc::new(tr), Arc::new(te)))
}

fn permutation(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ (epoch as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

fn run<E: TrainEngine>(
    cfg: TrainConfig,
    dir: &Path,
    saved: Option<Saved>,
    make: impl FnOnce(&Graph, &Weights, &TrainConfig) -> Result<E, TrainError>,
    on: &mut dyn FnMut(Event),
) -> Result<Summary, TrainError> {
    let (train_ds, test_ds) = open_data(&cfg)?;
    let stages = cfg.progressive.plan(cfg.epochs);
    let graph_for = |size: usize, dropout: f64| -> Result<Graph, TrainError> {
        let mut o = cfg.options.clone();
        o.dropout = Some(dropout);
        let spec = ModelSpec::from_name(&cfg.variant, o).map_err(|e| TrainError::Config(e.to_string()))?;
        Ok(build(&spec, size, size)?)
    };
    let g0 = graph_for(stages[0].size, stages[0].dropout)?;
    let mut engine = make(&g0, &init_weights(&g0, cfg.seed), &cfg)?;
    let mut st = RunState { epochs_done: 0, step: 0, best_top1: -1.0, train_seconds: 0.0, config: cfg.clone() };
    if let Some(s) = saved {
        engine.load_state(&s.weights, s.ema.as_ref(), &s.slots)?;
        st = s.state;
        on(Event::Resumed { epochs_done: st.epochs_done });
    }
    let mut records = metrics::read(&dir.join("metrics.jsonl"), st.epochs_done);
    let spe = train_ds.len() / cfg.batch;
    if spe == 0 {
        return Err(TrainError::Config(format!("{} training images make no full batch of {}", train_ds.len(), cfg.batch)));
    }
    let sched = LrSchedule { base_lr: cfg.lr, warmup_epochs: cfg.warmup_epochs, decay: cfg.decay, epochs: cfg.epochs, steps_per_epoch: spe };
    let (channels, classes) = (cfg.options.in_channels, cfg.options.num_classes);
    let model = cfg.model_config(train_ds.classes.clone());
    for epoch in st.epochs_done..cfg.epochs {
        let stage = stages.iter().find(|s| (s.first_epoch..s.end_epoch).contains(&epoch)).unwrap_or(&stages[stages.len() - 1]);
        engine.set_graph(&graph_for(stage.size, stage.dropout)?)?;
        on(Event::EpochStart { epoch: epoch + 1, epochs: cfg.epochs, steps: spe, stage });
        let plan = EpochPlan {
            order: permutation(train_ds.len(), cfg.seed, epoch),
            batch: cfg.batch,
            size: stage.size,
            channels,
            classes,
            train: true,
            augment: cfg.augment.clone(),
            magnitude: stage.randaug,
            mix: MixConfig { mixup: stage.mixup, cutmix: stage.cutmix },
            seed: cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            drop_last: true,
            eval_preprocess: None,
        };
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (k, b) in Loader::spawn(train_ds.clone(), plan, 0, cfg.workers, 4).enumerate() {
            let b = b?;
            let logits = engine.forward(&b.x, b.n, Mode::Train, cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ st.step)?;
            let ls = cfg.label_smoothing;
            let targets: Vec<f32> = b.targets.iter().map(|t| t * (1.0 - ls) + ls / classes as f32).collect();
            let (loss, dl) = softmax_cross_entropy(&logits, &targets, classes);
            if !loss.is_finite() {
                return Err(TrainError::NonFinite { value: loss, epoch: epoch + 1, step: st.step });
            }
            engine.backward(&dl)?;
            engine.step(sched.lr(st.step) as f32)?;
            st.step += 1;
            if let Some(d) = cfg.ema_decay {
                engine.ema_update(ema::tf_decay(d, st.step))?;
            }
            loss_sum += loss as f64 * b.n as f64;
            correct += topk_correct(&logits, &b.labels, classes, 1);
            seen += b.n;
            let ips = seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            on(Event::Step { step_in_epoch: k + 1, steps: spe, loss, top1: correct as f64 / seen as f64, images_per_sec: ips });
        }
        let secs = t0.elapsed().as_secs_f64();
        st.train_seconds += secs;
        engine.set_graph(&graph_for(cfg.eval_size, stage.dropout)?)?;
        let ev = evaluate(&mut engine, &test_ds, cfg.eval_size, channels, &cfg.augment.mean, &cfg.augment.std, cfg.batch, cfg.workers)?;
        let m = EpochMetrics {
            epoch: epoch + 1,
            stage: stage.index,
            size: stage.size,
            randaug: stage.randaug,
            mixup: stage.mixup,
            dropout: stage.dropout,
            lr: sched.lr(st.step.saturating_sub(1)),
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            test_top1: ev.top1,
            test_top5: ev.top5,
            images_per_sec: seen as f64 / secs.max(1e-9),
            epoch_seconds: secs,
            train_seconds: st.train_seconds,
        };
        let is_best = ev.top1 > st.best_top1;
        st.best_top1 = st.best_top1.max(ev.top1);
        st.epochs_done = epoch + 1;
        records.push(m.clone());
        let saved = Saved { state: st.clone(), weights: engine.weights()?, ema: engine.ema_weights()?, slots: engine.optimizer_state()? };
        checkpoint::save(dir, &model, &saved, is_best)?;
        metrics::write(dir, &records)?;
        on(Event::Epoch(&m));
    }
    Ok(Summary { epochs: st.epochs_done, best_top1: st.best_top1, last: records.last().cloned(), train_seconds: st.train_seconds })
}
