//! Crop + resize of 8-bit images with the triangle (bilinear, antialiased when shrinking) filter:
//! the `image` crate's `imageops::resize(.., FilterType::Triangle)` to the bit — the same weights,
//! the same f32 sums in the same order, the vertical pass first — but reading the crop in place
//! and summing over flat rows. The crate's generic per-pixel path (four-channel f32 tuples, a libm
//! `roundf` per value, after copying the image and then the crop) was a quarter of the training
//! loader's time at 224 px.

use super::Img;

/// One output coordinate's source span: the first source index and the normalised weights.
struct Taps {
    left: usize,
    weights: Vec<f32>,
}

/// The crate's `horizontal_sample` / `vertical_sample` weights for `src` → `dst` samples.
fn taps(src: usize, dst: usize) -> Vec<Taps> {
    let ratio = src as f32 / dst as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio; // the triangle's support 1.0, scaled when shrinking
    (0..dst)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, src as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, src as i64);
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| {
                    let x = ((i as f32 - centre) / sratio).abs();
                    if x < 1.0 {
                        1.0 - x
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum = weights.iter().fold(0.0f32, |s, &w| s + w);
            weights.iter_mut().for_each(|w| *w /= sum);
            Taps { left: left as usize, weights }
        })
        .collect()
}

/// The `w`×`h` crop of `img` at (`x`, `y`) resized to `size`×`size`.
pub fn crop_resize(img: &Img, x: usize, y: usize, w: usize, h: usize, size: usize) -> Img {
    let c = img.c;
    debug_assert!(x + w <= img.w && y + h <= img.h && w > 0 && h > 0);
    let src_row = |r: usize| &img.data[((y + r) * img.w + x) * c..][..w * c];
    if (w, h) == (size, size) {
        // The crate copies when nothing changes size.
        return Img::new(size, size, c, (0..h).flat_map(src_row).copied().collect());
    }
    MID.with_borrow_mut(|mid| {
        // Vertical: `size` rows of w·c sums, each over its taps' source rows in order.
        mid.clear();
        mid.resize(size * w * c, 0.0);
        for (out, t) in mid.chunks_exact_mut(w * c).zip(taps(h, size)) {
            for (k, &wt) in t.weights.iter().enumerate() {
                for (acc, &v) in out.iter_mut().zip(src_row(t.left + k)) {
                    *acc += v as f32 * wt;
                }
            }
        }
        horizontal_pass(mid, w, c, size)
    })
}

thread_local! {
    /// The vertical pass's sums (a megabyte at 224 px): kept per loader thread, since a fresh
    /// buffer per image is fresh pages from the OS, faulted in on every image.
    static MID: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Horizontal: each output pixel's channels over its taps' columns of `mid`, clamped and rounded.
fn horizontal_pass(mid: &[f32], w: usize, c: usize, size: usize) -> Img {
    let cols = taps(w, size);
    let mut data = vec![0u8; size * size * c];
    let mut sums = vec![0.0f32; size * c];
    for (out, row) in data.chunks_exact_mut(size * c).zip(mid.chunks_exact(w * c)) {
        match c {
            3 => horizontal::<3>(&mut sums, row, &cols),
            1 => horizontal::<1>(&mut sums, row, &cols),
            _ => {
                for (px, t) in sums.chunks_exact_mut(c).zip(&cols) {
                    for (ch, s) in px.iter_mut().enumerate() {
                        *s = 0.0;
                        for (k, &wt) in t.weights.iter().enumerate() {
                            *s += row[(t.left + k) * c + ch] * wt;
                        }
                    }
                }
            }
        }
        // Rounded as a separate pass over the row, which vectorises.
        for (o, &s) in out.iter_mut().zip(&sums) {
            *o = round_u8(s);
        }
    }
    Img::new(size, size, c, data)
}

/// One row's horizontal sums with C channels known: every channel's sum kept at once, each in the
/// same order as the general loop.
#[inline]
fn horizontal<const C: usize>(sums: &mut [f32], row: &[f32], cols: &[Taps]) {
    for (px, t) in sums.chunks_exact_mut(C).zip(cols) {
        let mut s = [0.0f32; C];
        for (src, &wt) in row[t.left * C..].chunks_exact(C).zip(&t.weights) {
            for ch in 0..C {
                s[ch] += src[ch] * wt;
            }
        }
        px.copy_from_slice(&s);
    }
}

/// `FloatNearest(clamp(v, 0, 255))` as the crate converts it (round half away from zero), without
/// the libm call: for v ≥ 0 the truncation plus one where the (exact) fraction is at least a half.
/// (Truncating v + 0.5 is not the same: 0.49999997 + 0.5 rounds up to 1.0.)
#[inline]
fn round_u8(v: f32) -> u8 {
    let v = v.clamp(0.0, 255.0);
    let t = v as u8;
    t + (v - t as f32 >= 0.5) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use effv2_edge::rng::Rng;
    use image::imageops::FilterType;

    fn reference(img: &Img, x: usize, y: usize, w: usize, h: usize, size: usize) -> Img {
        let crop = img.to_dynamic().crop_imm(x as u32, y as u32, w as u32, h as u32);
        Img::from_dynamic(&crop.resize_exact(size as u32, size as u32, FilterType::Triangle))
    }

    #[test]
    fn equals_the_image_crates_triangle_resize_to_the_bit() {
        let mut rng = Rng::new(5);
        for (iw, ih, c) in [(500, 375, 3), (97, 131, 3), (28, 28, 1), (40, 9, 1), (7, 300, 3)] {
            let data: Vec<u8> = (0..iw * ih * c).map(|i| ((i * 37 + (i / 7) * 11) % 256) as u8 ^ (rng.below(16) as u8)).collect();
            let img = Img::new(iw, ih, c, data);
            for size in [224, 32, 13, 1] {
                for _ in 0..4 {
                    let (w, h) = (1 + rng.below(iw), 1 + rng.below(ih));
                    let (x, y) = (rng.below(iw - w + 1), rng.below(ih - h + 1));
                    assert_eq!(crop_resize(&img, x, y, w, h, size), reference(&img, x, y, w, h, size), "{iw}x{ih}x{c} crop {w}x{h}+{x}+{y} -> {size}");
                }
                // The whole image, and a crop already at the size (the crate's copy).
                assert_eq!(crop_resize(&img, 0, 0, iw, ih, size), reference(&img, 0, 0, iw, ih, size));
            }
            let s = iw.min(ih);
            assert_eq!(crop_resize(&img, iw - s, ih - s, s, s, s), reference(&img, iw - s, ih - s, s, s, s));
        }
    }

    #[test]
    fn rounding_matches_round_half_away_from_zero() {
        for v in [0.0f32, 0.49999997, 0.5, 1.5, 2.5, 254.49998, 254.5, 255.0, 300.0, -3.0] {
            assert_eq!(round_u8(v), v.clamp(0.0, 255.0).round() as u8, "{v}");
        }
    }
}
