//! Calibration images for int8 quantization (every int8 target: coral, cpu --precision int8): a folder of PNG/JPEG files (searched recursively),
//! Fashion-MNIST's training split, or random normal images — each preprocessed exactly as the
//! model's own preprocessing says, into `[N, C, H, W]` float batches.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use effv2_edge::imaging::{self, ImageError};
use effv2_edge::rng::Rng;
use effv2_edge::spec::Preprocess;
use effv2_edge::Tensor;
use effv2_quantize::RangeMethod;
use effv2_runtime::manifest::{QuantParams, Quantization};
use serde::Serialize;

/// Images per calibration batch.
const BATCH: usize = 8;
/// Calibration images are held in memory as f32: refuse sets above this.
const MAX_BYTES: usize = 2 << 30;

#[derive(Clone, Debug, PartialEq)]
pub enum CalibSource {
    /// PNG/JPEG files under this directory (recursively).
    Folder(PathBuf),
    /// Fashion-MNIST's 60,000 training images (Debian `dataset-fashion-mnist`, via effv2-train).
    FashionMnist,
    /// Random N(0, 1) images in the normalised input space: no real data.
    Synthetic,
}

impl FromStr for CalibSource {
    type Err = CalibError;
    /// `synthetic`, `fashion-mnist`, or a directory.
    fn from_str(s: &str) -> Result<Self, CalibError> {
        match s {
            "synthetic" => Ok(CalibSource::Synthetic),
            "fashion-mnist" => Ok(CalibSource::FashionMnist),
            _ if Path::new(s).is_dir() => Ok(CalibSource::Folder(PathBuf::from(s))),
            _ if Path::new(s).exists() => Err(CalibError::NotADirectory(PathBuf::from(s))),
            _ => Err(CalibError::UnknownSource(s.to_string())),
        }
    }
}

impl std::fmt::Display for CalibSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalibSource::Folder(p) => write!(f, "{}", p.display()),
            CalibSource::FashionMnist => f.write_str("fashion-mnist"),
            CalibSource::Synthetic => f.write_str("synthetic"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("--calib {0:?} is not a directory of images, `fashion-mnist` or `synthetic`")]
    UnknownSource(String),
    #[error("--calib {0} is a file; give a directory of PNG/JPEG images")]
    NotADirectory(PathBuf),
    #[error("--calib-images must be at least 1")]
    ZeroImages,
    #[error("no PNG/JPEG images under {dir} ({skipped} other files skipped)")]
    NoImages { dir: PathBuf, skipped: usize },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("calibration image {0}")]
    Image(#[from] ImageError),
    #[error("the model takes {0}-channel images; calibration images can feed 1 (gray) or 3 (RGB) channels")]
    Channels(usize),
    #[error("{images} calibration images at {size}x{size} need {gib:.1} GiB in memory; use --calib-images {max} or fewer")]
    TooMany { images: usize, size: usize, gib: f64, max: usize },
    #[error("Fashion-MNIST: {0}")]
    FashionMnist(String),
}

/// What calibration used, for the manifest and the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibInfo {
    /// `folder`, `fashion-mnist` or `synthetic`.
    pub kind: String,
    pub source: String,
    pub images: usize,
    /// True when no real images were used: ranges only approximate a real input distribution.
    pub synthetic: bool,
    pub note: String,
}

pub struct CalibSet {
    pub batches: Vec<Tensor>,
    pub info: CalibInfo,
}

/// Load `n` calibration images from `src`, preprocessed with `pre` at `pre.size` for a model
/// of `channels` input channels. When a source has more than `n` images, an evenly spaced
/// subset is taken (so every class folder of a sorted tree is represented).
pub fn load_calibration(src: &CalibSource, n: usize, pre: &Preprocess, channels: usize, seed: u64) -> Result<CalibSet, CalibError> {
    if n == 0 {
        return Err(CalibError::ZeroImages);
    }
    if channels != 1 && channels != 3 && *src != CalibSource::Synthetic {
        return Err(CalibError::Channels(channels));
    }
    let per_image = channels * pre.size * pre.size * 4;
    if n.saturating_mul(per_image) > MAX_BYTES {
        let gib = n as f64 * per_image as f64 / (1u64 << 30) as f64;
        return Err(CalibError::TooMany { images: n, size: pre.size, gib, max: MAX_BYTES / per_image.max(1) });
    }
    let (images, info) = match src {
        CalibSource::Synthetic => {
            let mut rng = Rng::new(seed);
            let images = (0..n).map(|_| rng.normal_tensor(vec![channels, pre.size, pre.size])).collect();
            let note = "SYNTHETIC: random normal images, not real data; int8 ranges only approximate a real input \
                        distribution — recalibrate with --calib DIR before judging accuracy";
            (images, info("synthetic", "synthetic".into(), n, true, note))
        }
        CalibSource::Folder(dir) => {
            let (files, skipped) = image_files(dir)?;
            if files.is_empty() {
                return Err(CalibError::NoImages { dir: dir.clone(), skipped });
            }
            let picked = spread(files.len(), n);
            let load = |i: usize| Ok(imaging::preprocess(&imaging::load(&files[i])?, pre, channels)?);
            let images = picked.iter().map(|&i| load(i)).collect::<Result<Vec<_>, CalibError>>()?;
            let note = format!("{} of the {} PNG/JPEG files under the folder, evenly spaced in sorted order", picked.len(), files.len());
            (images, info("folder", dir.display().to_string(), picked.len(), false, &note))
        }
        CalibSource::FashionMnist => {
            let ds = effv2_train::data::fashion_mnist(true).map_err(|e| CalibError::FashionMnist(e.to_string()))?;
            let picked = spread(ds.len(), n);
            let images = picked
                .iter()
                .map(|&i| {
                    let img = ds.image(i).map_err(|e| CalibError::FashionMnist(e.to_string()))?;
                    Ok(imaging::preprocess(&img.to_dynamic(), pre, channels)?)
                })
                .collect::<Result<Vec<_>, CalibError>>()?;
            let note = format!("{} of the 60,000 training images, evenly spaced", picked.len());
            (images, info("fashion-mnist", "fashion-mnist (train split)".into(), picked.len(), false, &note))
        }
    };
    Ok(CalibSet { batches: batch(images, channels, pre.size), info })
}

/// The manifest's record of an int8 build: its I/O parameters and how they were calibrated.
pub fn quantization_record(input: QuantParams, output: QuantParams, method: RangeMethod, src: &CalibSource, info: &CalibInfo) -> Quantization {
    Quantization {
        input,
        output,
        method: method_name(method),
        calibration: src.to_string(),
        calibration_images: info.images,
        synthetic_calibration: info.synthetic,
    }
}

/// "percentile 99.99", "minmax", "mse": how manifests and reports name a range method.
pub fn method_name(m: RangeMethod) -> String {
    match m {
        RangeMethod::MinMax => "minmax".into(),
        RangeMethod::Percentile(p) => format!("percentile {p}"),
        RangeMethod::Mse => "mse".into(),
    }
}

fn info(kind: &str, source: String, images: usize, synthetic: bool, note: &str) -> CalibInfo {
    CalibInfo { kind: kind.into(), source, images, synthetic, note: note.into() }
}

/// `n` indices spread evenly over `0..len` (all of them when `n >= len`).
fn spread(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    (0..n).map(|k| k * len / n).collect()
}

/// Every `.png`/`.jpg`/`.jpeg` under `dir`, sorted, and how many other files were skipped.
fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, usize), CalibError> {
    let (mut files, mut skipped) = (vec![], 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let io = |source| CalibError::Io { path: d.clone(), source };
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            // Symlinked directories are not followed: no cycles.
            if entry.file_type().map_err(io)?.is_dir() {
                stack.push(path);
            } else if is_image(&path) {
                files.push(path);
            } else {
                skipped += 1;
            }
        }
    }
    files.sort();
    Ok((files, skipped))
}

fn is_image(p: &Path) -> bool {
    let ext = p.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// `[C, H, W]` images into `[≤BATCH, C, H, W]` batches (each image is freed once copied).
fn batch(images: Vec<Tensor>, c: usize, s: usize) -> Vec<Tensor> {
    let mut out = vec![];
    let mut it = images.into_iter().peekable();
    while it.peek().is_some() {
        let chunk: Vec<Tensor> = it.by_ref().take(BATCH).collect();
        let data: Vec<f32> = chunk.iter().flat_map(|t| t.data().iter().copied()).collect();
        out.push(Tensor::new(vec![chunk.len(), c, s, s], data).expect("images are [c, s, s]"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_and_bounded() {
        assert_eq!(spread(10, 3), vec![0, 3, 6]);
        assert_eq!(spread(3, 10), vec![0, 1, 2]);
        assert_eq!(spread(5, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn sources_parse() {
        assert_eq!("synthetic".parse::<CalibSource>().unwrap(), CalibSource::Synthetic);
        assert_eq!("fashion-mnist".parse::<CalibSource>().unwrap(), CalibSource::FashionMnist);
        assert!(matches!("/no/such/dir".parse::<CalibSource>(), Err(CalibError::UnknownSource(_))));
        let dir = std::env::temp_dir();
        assert_eq!(dir.to_str().unwrap().parse::<CalibSource>().unwrap(), CalibSource::Folder(dir));
    }
}
