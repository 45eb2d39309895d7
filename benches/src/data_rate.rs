//! `effv2-bench data`: how many training images per second the data pipeline delivers on this
//! machine — file read, PNG/JPEG decode, random resized crop, flip, RandAugment, normalise and
//! mixup/cutmix on the loader's worker threads, exactly as `effv2-edge train` runs it — to compare
//! with the engine's `train-step` images/s: a GPU that trains faster than this waits for data.
//!
//! `--data synthetic` writes ImageNet-like JPEGs (500×375, quality 90, smooth gradients plus
//! noise) to a temporary folder first, so real decoding is timed on any machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use effv2_edge::rng::Rng;
use effv2_train::data::{self, AugmentConfig, EpochPlan, Loader, MixConfig};
use serde::Serialize;

use crate::machine::Machine;
use crate::stats::Summary;
use crate::BenchError;

#[derive(Clone, Debug)]
pub struct DataOptions {
    /// `synthetic`, `fashion-mnist` or an ImageFolder directory (its `train/` split if it has one).
    pub data: String,
    pub image_size: usize,
    pub batch: usize,
    pub workers: usize,
    /// Batches timed after the first (which also pays for the workers' start).
    pub batches: usize,
    /// RandAugment magnitude (0 = none) with two ops per image, as `train` draws them.
    pub randaug: f64,
    pub mixup: f64,
    pub cutmix: f64,
    pub min_crop_area: f64,
    pub seed: u64,
    /// `synthetic`: write the JPEGs here and keep them (for a peer to read the same files)
    /// instead of a temporary folder.
    pub keep_synthetic: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DataReport {
    pub bench_version: &'static str,
    pub machine: Machine,
    /// What was read: the folder and its image count, or the synthetic set.
    pub source: String,
    pub channels: usize,
    pub image_size: usize,
    pub batch: usize,
    pub workers: usize,
    pub randaug: f64,
    pub mixup: f64,
    pub cutmix: f64,
    /// Wall time between consecutive batches as the training loop receives them.
    pub batch_ms: Summary,
    pub images_per_s: f64,
    pub images_per_s_per_worker: f64,
}

/// Synthetic set: this many JPEGs, cycled.
const SYNTHETIC_IMAGES: usize = 64;
const SYNTHETIC_SIZE: (u32, u32) = (500, 375);

pub fn measure_data(o: &DataOptions) -> Result<DataReport, BenchError> {
    if o.batch == 0 || o.batches == 0 || o.image_size == 0 {
        return Err(BenchError::Args("--batch, --batches and --image-size must be positive".into()));
    }
    // Held to the end: a temporary folder is removed when this drops.
    let synthetic = if o.data == "synthetic" { Some(SyntheticJpegs::write(o.keep_synthetic.clone(), o.seed)?) } else { None };
    let (ds, channels, source) = match (&synthetic, o.data.as_str()) {
        (Some(jpegs), _) => {
            let ds = data::image_folder(&jpegs.0, None)?;
            (ds, 3, format!("synthetic: {SYNTHETIC_IMAGES} JPEGs {}x{} (quality 90)", SYNTHETIC_SIZE.0, SYNTHETIC_SIZE.1))
        }
        (None, "fashion-mnist") => (data::fashion_mnist(true)?, 1, "fashion-mnist train (28x28 gray, in memory)".to_string()),
        (None, dir) => {
            let p = Path::new(dir);
            let split = if p.join("train").is_dir() { p.join("train") } else { p.to_path_buf() };
            let ds = data::image_folder(&split, None)?;
            let source = format!("{} ({} images, {} classes)", split.display(), ds.len(), ds.classes.len());
            (ds, 3, source)
        }
    };
    let total = (o.batches + 1) * o.batch;
    let plan = EpochPlan {
        order: (0..total).map(|i| i % ds.len()).collect(),
        batch: o.batch,
        size: o.image_size,
        channels,
        classes: ds.classes.len(),
        train: true,
        augment: AugmentConfig { min_area: o.min_crop_area, flip: true, randaug_layers: 2, mean: vec![0.5; channels], std: vec![0.5; channels] },
        magnitude: o.randaug,
        mix: MixConfig { mixup: o.mixup, cutmix: o.cutmix },
        seed: o.seed,
        drop_last: true,
        eval_preprocess: None,
    };
    // The training loop's own prefetch depth (run::fit).
    let loader = Loader::spawn(Arc::new(ds), plan, 0, o.workers.max(1), 4);
    let mut gaps = Vec::with_capacity(o.batches);
    let mut last = None;
    for b in loader {
        b?;
        let now = Instant::now();
        if let Some(t) = last {
            gaps.push(now.duration_since(t).as_secs_f64() * 1e3);
        }
        last = Some(now);
    }
    let batch_ms = Summary::from_samples(&gaps).ok_or_else(|| BenchError::Args("no batch was timed".into()))?;
    let images_per_s = o.batch as f64 * 1e3 / batch_ms.mean;
    let workers = o.workers.max(1);
    Ok(DataReport {
        bench_version: env!("CARGO_PKG_VERSION"),
        machine: Machine::detect(),
        source,
        channels,
        image_size: o.image_size,
        batch: o.batch,
        workers,
        randaug: o.randaug,
        mixup: o.mixup,
        cutmix: o.cutmix,
        batch_ms,
        images_per_s,
        images_per_s_per_worker: images_per_s / workers as f64,
    })
}

pub fn describe(r: &DataReport) -> String {
    format!(
        "{} -> {}x{}x{} batch {}, RandAugment {}, mixup {}, cutmix {}, {} workers on {}: {:.1} images/s ({:.1} per worker), a batch every {:.1} ms (p50 {:.1}, p90 {:.1})",
        r.source,
        r.channels,
        r.image_size,
        r.image_size,
        r.batch,
        r.randaug,
        r.mixup,
        r.cutmix,
        r.workers,
        r.machine.describe(),
        r.images_per_s,
        r.images_per_s_per_worker,
        r.batch_ms.mean,
        r.batch_ms.p50,
        r.batch_ms.p90
    )
}

/// An ImageFolder (`0/`, `1/`: two classes) of synthetic JPEGs: temporary (removed on drop), or
/// kept in a new or empty directory the caller names.
struct SyntheticJpegs(PathBuf, bool);

impl SyntheticJpegs {
    fn write(keep: Option<PathBuf>, seed: u64) -> Result<Self, BenchError> {
        let guard = match keep {
            Some(dir) => {
                if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                    return Err(BenchError::Args(format!("{}: not empty; the synthetic JPEGs go to a new or empty directory", dir.display())));
                }
                SyntheticJpegs(dir, true)
            }
            None => SyntheticJpegs(std::env::temp_dir().join(format!("effv2-bench-data-{}", std::process::id())), false),
        };
        let (w, h) = SYNTHETIC_SIZE;
        let mut rng = Rng::new(seed);
        for i in 0..SYNTHETIC_IMAGES {
            let class_dir = guard.0.join((i % 2).to_string());
            std::fs::create_dir_all(&class_dir).map_err(crate::io_err(&class_dir))?;
            // Smooth colour gradients with a random orientation plus pixel noise: a photo's mix
            // of flat areas and detail, so the JPEGs decode at a photo's cost.
            let (a, b, c) = (rng.uniform() as f32, rng.uniform() as f32, rng.uniform() as f32);
            let mut noise = Rng::new(seed ^ i as u64);
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
                let n = (noise.uniform() as f32 - 0.5) * 40.0;
                let px = |k: f32| ((k * u + (1.0 - k) * v) * 200.0 + 28.0 + n).clamp(0.0, 255.0) as u8;
                image::Rgb([px(a), px(b), px(c)])
            });
            let path = class_dir.join(format!("{i}.jpg"));
            let mut bytes = vec![];
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                .encode_image(&img)
                .map_err(|e| BenchError::Args(format!("encoding a synthetic JPEG: {e}")))?;
            std::fs::write(&path, bytes).map_err(crate::io_err(&path))?;
        }
        Ok(guard)
    }
}

impl Drop for SyntheticJpegs {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
