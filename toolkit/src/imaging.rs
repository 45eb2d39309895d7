//! Images to network input: decode PNG/JPEG, resize + crop as the checkpoint says, normalise.

use std::path::Path;

use image::imageops::FilterType;
use image::DynamicImage;

use crate::spec::{CropMode, Interpolation, Preprocess};
use crate::tensor::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a readable PNG/JPEG image ({why})")]
    Decode { path: String, why: String },
    #[error("preprocessing has {got} mean/std values for a {channels}-channel model")]
    Channels { got: usize, channels: usize },
}

pub fn load(path: &Path) -> Result<DynamicImage, ImageError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io { path: p.clone(), source })?;
    image::load_from_memory(&bytes).map_err(|e| ImageError::Decode { path: p, why: e.to_string() })
}

fn filter(i: Interpolation) -> FilterType {
    match i {
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    }
}

/// Resize/crop/normalise one image into `[channels, size, size]` (channels 1 = luma, 3 = RGB).
pub fn preprocess(img: &DynamicImage, pre: &Preprocess, channels: usize) -> Result<Tensor, ImageError> {
    if pre.mean.len() != channels || pre.std.len() != channels {
        return Err(ImageError::Channels { got: pre.mean.len().min(pre.std.len()), channels });
    }
    let size = pre.size as u32;
    // timm: scale = floor(size / crop_pct); Center keeps the aspect ratio (shorter side = scale).
    let scale = ((pre.size as f64 / pre.crop_pct.clamp(0.05, 1.0) as f64).floor() as u32).max(size);
    let (w, h) = (img.width().max(1), img.height().max(1));
    let (rw, rh) = match pre.crop {
        CropMode::Squash => (scale, scale),
        CropMode::Center if w <= h => (scale, ((scale as u64 * h as u64) / w as u64).max(1) as u32),
        CropMode::Center => (((scale as u64 * w as u64) / h as u64).max(1) as u32, scale),
    };
    let resized = img.resize_exact(rw, rh, filter(pre.interpolation));
    let left = ((rw - size) as f64 / 2.0).round() as u32;
    let top = ((rh - size) as f64 / 2.0).round() as u32;
    let cropped = resized.crop_imm(left, top, size, size);
    let n = pre.size * pre.size;
    let mut data = vec![0f32; channels * n];
    let pixels: Vec<u8> = if channels == 1 { cropped.to_luma8().into_raw() } else { cropped.to_rgb8().into_raw() };
    for (i, px) in pixels.chunks_exact(channels).enumerate() {
        for c in 0..channels {
            data[c * n + i] = (px[c] as f32 / 255.0 - pre.mean[c]) / pre.std[c];
        }
    }
    Ok(Tensor::new(vec![channels, pre.size, pre.size], data).expect("sized above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(size: usize, crop_pct: f32, crop: CropMode) -> Preprocess {
        Preprocess { mean: vec![0.5; 3], std: vec![0.5; 3], interpolation: Interpolation::Bicubic, size, crop_pct, crop }
    }

    #[test]
    fn uniform_image_normalises_exactly() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_pixel(50, 30, image::Rgb([255, 0, 51])));
        for crop in [CropMode::Center, CropMode::Squash] {
            let t = preprocess(&img, &pre(16, 0.875, crop), 3).unwrap();
            assert_eq!(t.shape(), &[3, 16, 16]);
            let d = t.data();
            assert!(d[..256].iter().all(|v| (v - 1.0).abs() < 1e-6));
            assert!(d[256..512].iter().all(|v| (v + 1.0).abs() < 1e-6));
            assert!(d[512..].iter().all(|v| (v - (0.2 / 0.5 - 1.0)).abs() < 1e-5));
        }
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        // Left half black, right half white, 40x20: a 20-crop from the centre straddles the edge.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(40, 20, |x, _| image::Rgb([if x < 20 { 0 } else { 255 }; 3])));
        let t = preprocess(&img, &pre(20, 1.0, CropMode::Center), 3).unwrap();
        let row: Vec<f32> = t.data()[..20].to_vec();
        assert!(row[0] < -0.9 && row[19] > 0.9, "{row:?}");
    }

    #[test]
    fn grayscale_and_channel_mismatch() {
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(28, 28, image::Luma([255])));
        let mut p = pre(32, 1.0, CropMode::Center);
        assert!(preprocess(&img, &p, 1).is_err());
        p.mean = vec![0.0];
        p.std = vec![1.0];
        let t = preprocess(&img, &p, 1).unwrap();
        assert!(t.data().iter().all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn not_an_image() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.png");
        std::fs::write(&f, b"definitely not a png").unwrap();
        assert!(matches!(load(&f), Err(ImageError::Decode { .. })));
    }
}
