//! Fashion-MNIST as Debian's `dataset-fashion-mnist` ships it: gzip'd IDX files (big-endian
//! magic 0x803 for images: count, rows, cols, then u8 pixels; 0x801 for labels).

use std::io::Read;
use std::path::Path;

use super::{Dataset, Img, Samples};
use crate::TrainError;

pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const FASHION_INSTALL: &str = "apt-get install -y dataset-fashion-mnist";
pub const FASHION_LABELS: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The train (60,000) or test (10,000) split from [`FASHION_DIR`] (or `$EFFV2_FASHION_MNIST`).
pub fn fashion_mnist(train: bool) -> Result<Dataset, TrainError> {
    let dir = std::env::var("EFFV2_FASHION_MNIST").unwrap_or_else(|_| FASHION_DIR.to_string());
    let prefix = if train { "train" } else { "t10k" };
    let images = Path::new(&dir).join(format!("{prefix}-images-idx3-ubyte.gz"));
    let labels = Path::new(&dir).join(format!("{prefix}-labels-idx1-ubyte.gz"));
    if !images.exists() || !labels.exists() {
        return Err(TrainError::Data(format!(
            "Fashion-MNIST not found in {dir}; install it with `{FASHION_INSTALL}` (or ./scripts/setup-data.sh)"
        )));
    }
    let (imgs, labs) = (read_gz(&images)?, read_gz(&labels)?);
    let (n, h, w, pixels) = parse_images(&imgs).map_err(|why| TrainError::Data(format!("{}: {why}", images.display())))?;
    let labels = parse_labels(&labs).map_err(|why| TrainError::Data(format!("{}: {why}", labels.display())))?;
    if labels.len() != n {
        return Err(TrainError::Data(format!("{dir}: {n} images but {} labels", labels.len())));
    }
    let samples = pixels.chunks_exact(h * w).map(|p| Img::new(w, h, 1, p.to_vec())).collect();
    Ok(Dataset { samples: Samples::Memory(samples), labels, classes: FASHION_LABELS.iter().map(|s| s.to_string()).collect() })
}

fn read_gz(p: &Path) -> Result<Vec<u8>, TrainError> {
    let f = std::fs::File::open(p).map_err(|e| TrainError::io(p, e))?;
    let mut out = vec![];
    flate2::read::GzDecoder::new(f).read_to_end(&mut out).map_err(|e| TrainError::io(p, e))?;
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize).ok_or_else(|| "truncated IDX header".to_string())
}

/// `(count, rows, cols, pixels)`.
pub fn parse_images(b: &[u8]) -> Result<(usize, usize, usize, &[u8]), String> {
    if be32(b, 0)? != 0x803 {
        return Err("not an IDX image file (magic 0x00000803)".into());
    }
    let (n, h, w) = (be32(b, 4)?, be32(b, 8)?, be32(b, 12)?);
    let len = n.checked_mul(h).and_then(|v| v.checked_mul(w)).ok_or("IDX size overflows")?;
    let px = b.get(16..).filter(|p| p.len() == len).ok_or_else(|| format!("IDX holds {} pixel bytes, header says {len}", b.len().saturating_sub(16)))?;
    Ok((n, h, w, px))
}

pub fn parse_labels(b: &[u8]) -> Result<Vec<usize>, String> {
    if be32(b, 0)? != 0x801 {
        return Err("not an IDX label file (magic 0x00000801)".into());
    }
    let n = be32(b, 4)?;
    let l = b.get(8..).filter(|p| p.len() == n).ok_or("IDX label count does not match the file")?;
    Ok(l.iter().map(|&v| v as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idx_parsing_and_bad_files() {
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        img.extend([1, 2, 3, 4]);
        assert_eq!(parse_images(&img).unwrap(), (2, 1, 2, &[1u8, 2, 3, 4][..]));
        assert!(parse_images(&img[..18]).is_err());
        assert!(parse_images(&[0, 0, 8, 1]).is_err());
        assert!(parse_images(&[]).is_err());
        assert_eq!(parse_labels(&[0, 0, 8, 1, 0, 0, 0, 2, 7, 9]).unwrap(), vec![7, 9]);
        assert!(parse_labels(&[0, 0, 8, 1, 0, 0, 0, 3, 7, 9]).is_err());
    }

    #[test]
    fn missing_dataset_names_the_install_command() {
        std::env::set_var("EFFV2_FASHION_MNIST", "/nonexistent/fmnist");
        let e = fashion_mnist(false).unwrap_err().to_string();
        std::env::remove_var("EFFV2_FASHION_MNIST");
        assert!(e.contains(FASHION_INSTALL), "{e}");
    }
}
