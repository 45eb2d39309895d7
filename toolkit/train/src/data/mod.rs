//! Data: datasets held as 8-bit images (Fashion-MNIST from Debian's package, ImageFolder
//! directories of PNG/JPEG), augmentation (random resized crop, flip, RandAugment, mixup/cutmix)
//! and a loader that prepares batches on worker threads.

mod augment;
mod fashion;
mod folder;
mod image;
mod loader;
mod mix;
mod randaugment;
mod resize;

pub use augment::{eval_transform, eval_transform_into, train_transform, train_transform_into, AugmentConfig};
pub use fashion::{fashion_mnist, FASHION_DIR, FASHION_INSTALL, FASHION_LABELS};
pub use folder::image_folder;
pub use image::Img;
pub use loader::{Batch, EpochPlan, Loader};
pub use mix::{beta, mix_batch, MixConfig};
pub use randaugment::{rand_augment, RANDAUGMENT_OPS};

use std::path::PathBuf;

use crate::TrainError;

/// Loader threads for a GPU-trained run when none are asked for: every core but one (2 to 16), so
/// decoding and augmentation keep up with the GPU (`train --device cuda`, `effv2-bench data`).
pub fn gpu_loader_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().saturating_sub(1)).clamp(2, 16)
}

/// Where a sample's pixels live.
#[derive(Clone, Debug)]
pub enum Samples {
    /// Decoded images in memory.
    Memory(Vec<Img>),
    /// Files decoded on demand (by the loader's workers).
    Files(Vec<PathBuf>),
}

/// A labelled image collection.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub samples: Samples,
    pub labels: Vec<usize>,
    pub classes: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The first `n` samples.
    pub fn take(mut self, n: usize) -> Self {
        match &mut self.samples {
            Samples::Memory(v) => v.truncate(n),
            Samples::Files(v) => v.truncate(n),
        }
        self.labels.truncate(n);
        self
    }

    /// Sample `i` as an 8-bit image.
    pub fn image(&self, i: usize) -> Result<Img, TrainError> {
        match &self.samples {
            Samples::Memory(v) => v.get(i).cloned().ok_or_else(|| TrainError::Data(format!("sample {i} out of range"))),
            Samples::Files(v) => {
                let p = v.get(i).ok_or_else(|| TrainError::Data(format!("sample {i} out of range")))?;
                let img = effv2_edge::imaging::load(p).map_err(|e| TrainError::Data(e.to_string()))?;
                Ok(Img::from_decoded(img))
            }
        }
    }
}

/// `fashion-mnist` (the embedded default) or an ImageFolder directory: the train and test splits.
pub fn open(spec: &str) -> Result<(Dataset, Dataset), TrainError> {
    if spec == "fashion-mnist" {
        return Ok((fashion_mnist(true)?, fashion_mnist(false)?));
    }
    folder::open_split(std::path::Path::new(spec))
}
