//! Batches prepared on worker threads behind a bounded queue, so the engine rarely waits. Every
//! batch draws its augmentation from its own RNG stream (epoch seed, batch index), so the batches
//! are identical whatever the number of workers — and a resumed epoch replays exactly.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::augment::{eval_transform_into, train_transform_into, AugmentConfig};
use super::mix::{mix_batch, MixConfig};
use super::Dataset;
use crate::TrainError;
use effv2_edge::imaging;
use effv2_edge::rng::Rng;
use effv2_edge::spec::Preprocess;

/// One epoch's worth of work for the loader.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    /// Sample indices in visiting order.
    pub order: Vec<usize>,
    pub batch: usize,
    pub size: usize,
    pub channels: usize,
    pub classes: usize,
    /// Augment (training) or only resize (eval).
    pub train: bool,
    pub augment: AugmentConfig,
    pub magnitude: f64,
    pub mix: MixConfig,
    pub seed: u64,
    /// Drop a last partial batch (training keeps batch statistics comparable).
    pub drop_last: bool,
    /// Eval batches: the model's own preprocessing (resize, centre crop, interpolation, mean/std,
    /// as `predict` applies it; its size must be `size`); None: the whole image resized with
    /// `augment`'s mean/std, the eval a training run records in its checkpoints.
    pub eval_preprocess: Option<Preprocess>,
}

impl EpochPlan {
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.order.len() / self.batch.max(1)
        } else {
            self.order.len().div_ceil(self.batch.max(1))
        }
    }
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub index: usize,
    pub n: usize,
    /// `[n, C, size, size]`, normalised.
    pub x: Vec<f32>,
    /// `[n, classes]`: one-hot, or mixed by mixup/cutmix (label smoothing is the loss's job).
    pub targets: Vec<f32>,
    pub labels: Vec<usize>,
}

fn make_batch(data: &Dataset, plan: &EpochPlan, b: usize) -> Result<Batch, TrainError> {
    let idx = &plan.order[b * plan.batch..((b + 1) * plan.batch).min(plan.order.len())];
    let mut rng = Rng::new(plan.seed ^ (b as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let (n, len) = (idx.len(), plan.channels * plan.size * plan.size);
    if let Some(pre) = plan.eval_preprocess.as_ref().filter(|p| !plan.train && p.size != plan.size) {
        return Err(TrainError::Data(format!("eval preprocessing is for {} px, the batches are {} px", pre.size, plan.size)));
    }
    // Each image is transformed straight into its slot of the batch.
    let mut x = vec![0.0; n * len];
    let mut targets = vec![0.0; n * plan.classes];
    let mut labels = Vec::with_capacity(n);
    for ((k, &i), slot) in idx.iter().enumerate().zip(x.chunks_exact_mut(len.max(1))) {
        let img = data.image(i)?;
        let a = &plan.augment;
        match (plan.train, &plan.eval_preprocess) {
            (true, _) => train_transform_into(&img, plan.size, plan.channels, a, plan.magnitude, &mut rng, slot),
            (false, None) => eval_transform_into(&img, plan.size, plan.channels, &a.mean, &a.std, slot),
            (false, Some(pre)) => {
                let t = imaging::preprocess(&img.to_dynamic(), pre, plan.channels).map_err(|e| TrainError::Data(e.to_string()))?;
                slot.copy_from_slice(t.data());
            }
        }
        let l = data.labels[i];
        if l >= plan.classes {
            return Err(TrainError::Data(format!("label {l} of sample {i} is outside the model's {} classes", plan.classes)));
        }
        targets[k * plan.classes + l] = 1.0;
        labels.push(l);
    }
    if plan.train {
        mix_batch(&mut x, &mut targets, n, (plan.channels, plan.size, plan.size), plan.mix, &mut rng);
    }
    Ok(Batch { index: b, n, x, targets, labels })
}

/// Iterates one epoch's batches in order.
pub struct Loader {
    rx: Option<Receiver<(usize, Result<Batch, TrainError>)>>,
    pending: BTreeMap<usize, Result<Batch, TrainError>>,
    next: usize,
    total: usize,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Start `workers` threads on batches `first..` of `plan`, at most `prefetch` ready ahead.
    pub fn spawn(data: Arc<Dataset>, plan: EpochPlan, first: usize, workers: usize, prefetch: usize) -> Self {
        let total = plan.num_batches();
        let (tx, rx) = sync_channel(prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let plan = Arc::new(plan);
        let workers = (0..workers.max(1))
            .map(|w| {
                let (tx, data, plan, stop) = (tx.clone(), data.clone(), plan.clone(), stop.clone());
                let count = workers.max(1);
                std::thread::spawn(move || {
                    for b in (first + w..total).step_by(count) {
                        if stop.load(Ordering::Relaxed) || tx.send((b, make_batch(&data, &plan, b))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Loader { rx: Some(rx), pending: BTreeMap::new(), next: first, total, stop, workers }
    }

    pub fn num_batches(&self) -> usize {
        self.total
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, TrainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        while !self.pending.contains_key(&self.next) {
            match self.rx.as_ref()?.recv() {
                Ok((b, r)) => {
                    self.pending.insert(b, r);
                }
                Err(_) => return Some(Err(TrainError::Data("data loader workers stopped early".into()))),
            }
        }
        let out = self.pending.remove(&self.next);
        self.next += 1;
        out
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks workers waiting to send.
        self.rx.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Img, Samples};
    use effv2_edge::spec::{CropMode, Interpolation};

    fn data(n: usize) -> Arc<Dataset> {
        let samples = (0..n).map(|i| Img::new(6, 6, 1, vec![(i * 10) as u8; 36])).collect();
        Arc::new(Dataset { samples: Samples::Memory(samples), labels: (0..n).map(|i| i % 3).collect(), classes: vec!["a".into(), "b".into(), "c".into()] })
    }

    fn plan(train: bool) -> EpochPlan {
        let augment = AugmentConfig { min_area: 0.5, flip: true, randaug_layers: 2, mean: vec![0.5], std: vec![0.5] };
        EpochPlan { order: (0..10).rev().collect(), batch: 4, size: 8, channels: 1, classes: 3, train, augment, magnitude: 5.0, mix: MixConfig { mixup: 0.2, cutmix: 0.2 }, seed: 7, drop_last: train, eval_preprocess: None }
    }

    #[test]
    fn batches_in_order_and_identical_for_any_worker_count() {
        let one: Vec<Batch> = Loader::spawn(data(10), plan(true), 0, 1, 2).map(|b| b.unwrap()).collect();
        let three: Vec<Batch> = Loader::spawn(data(10), plan(true), 0, 3, 1).map(|b| b.unwrap()).collect();
        assert_eq!(one.len(), 2);
        for (a, b) in one.iter().zip(&three) {
            assert_eq!((a.index, &a.x, &a.targets, &a.labels), (b.index, &b.x, &b.targets, &b.labels));
        }
        assert_eq!(one[0].labels, vec![0, 2, 1, 0]);
        // Resuming at batch 1 gives batch 1 as before.
        let resumed: Vec<Batch> = Loader::spawn(data(10), plan(true), 1, 2, 2).map(|b| b.unwrap()).collect();
        assert_eq!(resumed[0].x, one[1].x);
        let eval: Vec<Batch> = Loader::spawn(data(10), plan(false), 0, 2, 2).map(|b| b.unwrap()).collect();
        assert_eq!(eval.iter().map(|b| b.n).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert!((eval[2].x[0] - (10.0 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
        // Eval with a model's own preprocessing (an imported timm model's centre crop, bicubic):
        // each image exactly as `imaging::preprocess` (what `predict` runs) makes it.
        let pre = Preprocess { mean: vec![0.4], std: vec![0.2], interpolation: Interpolation::Bicubic, size: 8, crop_pct: 0.5, crop: CropMode::Center };
        let mut p = plan(false);
        p.augment.mean = pre.mean.clone();
        p.augment.std = pre.std.clone();
        let samples = (0..10).map(|i| Img::new(6, 10, 1, (0..60).map(|v| (v * 4 + i) as u8).collect())).collect();
        let d = Arc::new(Dataset { samples: Samples::Memory(samples), labels: (0..10).map(|i| i % 3).collect(), classes: vec!["a".into(), "b".into(), "c".into()] });
        let whole: Vec<Batch> = Loader::spawn(d.clone(), p.clone(), 0, 1, 2).map(|b| b.unwrap()).collect();
        p.eval_preprocess = Some(pre.clone());
        let got: Vec<Batch> = Loader::spawn(d.clone(), p.clone(), 0, 2, 2).map(|b| b.unwrap()).collect();
        for (k, &i) in p.order.iter().enumerate() {
            let want = imaging::preprocess(&d.image(i).unwrap().to_dynamic(), &pre, 1).unwrap();
            assert_eq!(&got[k / 4].x[(k % 4) * 64..][..64], want.data(), "image {i}");
        }
        assert_ne!(got[0].x, whole[0].x, "a centre crop is not the whole image");
        p.size = 16;
        let e = Loader::spawn(d, p, 0, 1, 1).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("eval preprocessing is for 8 px, the batches are 16 px"), "{e}");
        // Dropping a loader part-way stops its workers.
        let mut l = Loader::spawn(data(10), plan(false), 0, 2, 1);
        l.next();
        drop(l);
    }
}
