//! Per-image transforms: training (random resized crop, horizontal flip, RandAugment) and eval
//! (resize the whole image, as a checkpoint's `squash` preprocessing does), both ending in
//! normalised CHW floats. Resizing is the `image` crate's triangle filter to the bit (`resize`),
//! the one `effv2-edge predict` uses for bilinear checkpoints, so eval here and predict agree.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::randaugment::rand_augment;
use super::resize::crop_resize;
use super::Img;
use effv2_edge::rng::Rng;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Smallest crop area as a fraction of the image (official V2: 0.05; V1/torchvision: 0.08).
    pub min_area: f64,
    pub flip: bool,
    /// RandAugment ops per image (official: 2).
    pub randaug_layers: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// The image with `channels` channels (gray → RGB replicates, RGB → gray takes luma); borrowed
/// when it has them already.
pub fn to_channels(img: &Img, channels: usize) -> Cow<'_, Img> {
    match (img.c, channels) {
        (a, b) if a == b => Cow::Borrowed(img),
        (_, 1) => Cow::Owned(Img::from_dynamic(&image::DynamicImage::ImageLuma8(img.to_dynamic().to_luma8()))),
        _ => Cow::Owned(Img::new(img.w, img.h, 3, img.to_dynamic().to_rgb8().into_raw())),
    }
}

/// CHW floats `(v / 255 − mean) / std` into `out`, through a 256-entry table per channel (the
/// same f32 operations per value, done once per level instead of once per pixel).
fn normalise(img: &Img, mean: &[f32], std: &[f32], out: &mut [f32]) {
    let (c, n) = (img.c, img.w * img.h);
    assert_eq!(out.len(), c * n, "output slice for a {c}x{}x{} image", img.h, img.w);
    for (ch, plane) in out.chunks_exact_mut(n).enumerate() {
        let table: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - mean[ch]) / std[ch]);
        for (o, px) in plane.iter_mut().zip(img.data.chunks_exact(c)) {
            *o = table[px[ch] as usize];
        }
    }
}

/// Mirror each row in place.
fn flip(img: &mut Img) {
    let c = img.c;
    for row in img.data.chunks_exact_mut(img.w * c) {
        let (mut a, mut b) = (0, img.w - 1);
        while a < b {
            for ch in 0..c {
                row.swap(a * c + ch, b * c + ch);
            }
            a += 1;
            b -= 1;
        }
    }
}

/// A crop box of area in `[min_area, 1]` of the image and aspect ratio in [3/4, 4/3] (log-uniform),
/// ten tries, then the whole image — torchvision's `RandomResizedCrop`.
fn crop_box(w: usize, h: usize, min_area: f64, rng: &mut Rng) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    for _ in 0..10 {
        let target = area * rng.range(min_area.clamp(0.0, 1.0), 1.0);
        let ratio = rng.range((3f64 / 4.0).ln(), (4f64 / 3.0).ln()).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if cw >= 1 && ch >= 1 && cw <= w && ch <= h {
            return (rng.below(w - cw + 1), rng.below(h - ch + 1), cw, ch);
        }
    }
    (0, 0, w, h)
}

/// Training transform of one image; `magnitude` 0 turns RandAugment off.
pub fn train_transform(img: &Img, size: usize, channels: usize, cfg: &AugmentConfig, magnitude: f64, rng: &mut Rng) -> Vec<f32> {
    let mut out = vec![0.0; channels * size * size];
    train_transform_into(img, size, channels, cfg, magnitude, rng, &mut out);
    out
}

/// [`train_transform`] into `out` (`channels`·`size`², e.g. the image's slot of a batch).
pub fn train_transform_into(img: &Img, size: usize, channels: usize, cfg: &AugmentConfig, magnitude: f64, rng: &mut Rng, out: &mut [f32]) {
    let img = to_channels(img, channels);
    let (x, y, w, h) = crop_box(img.w, img.h, cfg.min_area, rng);
    let mut img = crop_resize(&img, x, y, w, h, size);
    if cfg.flip && rng.uniform() < 0.5 {
        flip(&mut img);
    }
    if magnitude > 0.0 && cfg.randaug_layers > 0 {
        img = rand_augment(&img, cfg.randaug_layers, magnitude, rng);
    }
    normalise(&img, &cfg.mean, &cfg.std, out)
}

/// Eval transform: the whole image resized to `size`×`size`, normalised.
pub fn eval_transform(img: &Img, size: usize, channels: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; channels * size * size];
    eval_transform_into(img, size, channels, mean, std, &mut out);
    out
}

/// [`eval_transform`] into `out` (`channels`·`size`²).
pub fn eval_transform_into(img: &Img, size: usize, channels: usize, mean: &[f32], std: &[f32], out: &mut [f32]) {
    let img = to_channels(img, channels);
    normalise(&crop_resize(&img, 0, 0, img.w, img.h, size), mean, std, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AugmentConfig {
        AugmentConfig { min_area: 0.25, flip: true, randaug_layers: 2, mean: vec![0.5], std: vec![0.5] }
    }

    #[test]
    fn crop_boxes_stay_inside_and_respect_area() {
        let mut rng = Rng::new(1);
        for _ in 0..500 {
            let (x, y, w, h) = crop_box(28, 20, 0.3, &mut rng);
            assert!(x + w <= 28 && y + h <= 20 && w * h >= 1);
            assert!((w * h) as f64 >= 0.3 * 560.0 * 0.8, "{w}x{h}");
        }
    }

    #[test]
    fn transforms_give_normalised_chw_of_the_right_size() {
        let img = Img::new(28, 28, 1, (0..784).map(|i| (i % 256) as u8).collect());
        let mut rng = Rng::new(2);
        let t = train_transform(&img, 32, 1, &cfg(), 9.0, &mut rng);
        assert_eq!(t.len(), 32 * 32);
        assert!(t.iter().all(|v| (-1.0..=1.0).contains(v)));
        let e = eval_transform(&Img::new(5, 5, 1, vec![255; 25]), 8, 3, &[0.5; 3], &[0.5; 3]);
        assert_eq!(e.len(), 3 * 64);
        assert!(e.iter().all(|v| (v - 1.0).abs() < 1e-6));
        // Same seed, same augmentation.
        assert_eq!(train_transform(&img, 32, 1, &cfg(), 9.0, &mut Rng::new(3)), train_transform(&img, 32, 1, &cfg(), 9.0, &mut Rng::new(3)));
    }
}
