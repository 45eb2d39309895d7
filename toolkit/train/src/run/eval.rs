//! Top-1/top-5 of an engine on a dataset at one size (EMA weights when the engine keeps them).

use std::sync::Arc;

use crate::data::{AugmentConfig, Dataset, EpochPlan, Loader, MixConfig};
use crate::loss::topk_correct;
use crate::{Mode, TrainEngine, TrainError};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    pub top1: f64,
    pub top5: f64,
    pub images: usize,
}

/// The engine must already hold a graph for `size`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(engine: &mut dyn TrainEngine, data: &Arc<Dataset>, size: usize, channels: usize, mean: &[f32], std: &[f32], batch: usize, workers: usize) -> Result<EvalResult, TrainError> {
    let classes = data.classes.len();
    let augment = AugmentConfig { min_area: 1.0, flip: false, randaug_layers: 0, mean: mean.to_vec(), std: std.to_vec() };
    let plan = EpochPlan { order: (0..data.len()).collect(), batch, size, channels, classes, train: false, augment, magnitude: 0.0, mix: MixConfig::default(), seed: 0, drop_last: false, eval_preprocess: None };
    let (mut c1, mut c5, mut n) = (0, 0, 0);
    for b in Loader::spawn(data.clone(), plan, 0, workers, 4) {
        let b = b?;
        let logits = engine.forward(&b.x, b.n, Mode::EvalEma, 0)?;
        let k = logits.len() / b.n;
        c1 += topk_correct(&logits, &b.labels, k, 1);
        c5 += topk_correct(&logits, &b.labels, k, 5.min(k));
        n += b.n;
    }
    let f = |c: usize| c as f64 / n.max(1) as f64;
    Ok(EvalResult { top1: f(c1), top5: f(c5), images: n })
}
