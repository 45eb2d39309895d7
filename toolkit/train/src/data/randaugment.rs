//! RandAugment on 8-bit images: `layers` ops drawn uniformly from the official list of 16, each at
//! the fixed magnitude (level = M/10; M above 10 goes past the nominal range, as in the official
//! code). Fill value 128 for geometric ops.
//!
//! Deviations from `autoaugment.py`, chosen so strength grows with M (timm's "increasing" ops):
//! posterize keeps `8 − ⌊4·level⌋` bits and solarize's threshold is `256·(1 − level)` (the official
//! mappings make low M the strongest); enhancement factors are `1 ± 0.9·level` (official
//! `0.1 + 1.8·level`, which is the identity at M = 5). Translate and cutout scale with the image
//! (100/224 and 40/224 of the side, the official constants at 224 px). On gray images `Color` is
//! the identity, so it is left out of the draw.

use super::Img;
use effv2_edge::rng::Rng;

pub const RANDAUGMENT_OPS: [&str; 16] = [
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
    "TranslateX", "TranslateY", "Cutout", "SolarizeAdd",
];

const FILL: u8 = 128;

pub fn rand_augment(img: &Img, layers: usize, magnitude: f64, rng: &mut Rng) -> Img {
    let ops: Vec<&str> = RANDAUGMENT_OPS.iter().copied().filter(|&o| img.c == 3 || o != "Color").collect();
    let mut out = img.clone();
    for _ in 0..layers {
        out = apply(ops[rng.below(ops.len())], &out, magnitude / 10.0, rng);
    }
    out
}

fn signed(v: f64, rng: &mut Rng) -> f64 {
    if rng.uniform() < 0.5 {
        -v
    } else {
        v
    }
}

/// One op at `level` (1.0 = magnitude 10).
pub fn apply(op: &str, img: &Img, level: f64, rng: &mut Rng) -> Img {
    let side = img.w.max(img.h) as f64;
    match op {
        "AutoContrast" => per_channel_lut(img, |vals| {
            let (lo, hi) = (*vals.iter().min().unwrap_or(&0) as f64, *vals.iter().max().unwrap_or(&255) as f64);
            lut(|v| if hi > lo { (v as f64 - lo) * 255.0 / (hi - lo) } else { v as f64 })
        }),
        "Equalize" => per_channel_lut(img, equalize_lut),
        "Invert" => map(img, |v| 255 - v),
        "Posterize" => {
            let bits = (8 - (4.0 * level).floor() as i64).clamp(1, 8) as u32;
            let mask = (0xFFu32 << (8 - bits)) as u8;
            map(img, |v| v & mask)
        }
        "Solarize" => {
            let t = (256.0 * (1.0 - level)).clamp(0.0, 256.0) as u32;
            map(img, |v| if v as u32 >= t { 255 - v } else { v })
        }
        "SolarizeAdd" => {
            let add = (110.0 * level) as i32;
            map(img, |v| if v < 128 { (v as i32 + add).clamp(0, 255) as u8 } else { v })
        }
        "Color" | "Contrast" | "Brightness" | "Sharpness" => {
            let f = 1.0 + signed(0.9 * level, rng);
            let blend = |a: u8, b: u8| round(b as f64 + f * (a as f64 - b as f64)).clamp(0, 255) as u8;
            match degenerate(op, img) {
                // One level to blend towards: a table over the 256 input levels.
                Degenerate::Level(b) => {
                    let t: [u8; 256] = std::array::from_fn(|a| blend(a as u8, b));
                    map(img, |a| t[a as usize])
                }
                Degenerate::Image(base) => Img { data: img.data.iter().zip(&base).map(|(&a, &b)| blend(a, b)).collect(), ..img.clone() },
            }
        }
        "Rotate" => {
            let a = signed(30.0 * level, rng).to_radians();
            // Inverse map about the centre: where each output pixel comes from.
            affine(img, [a.cos(), a.sin(), -a.sin(), a.cos()], 0.0, 0.0, true)
        }
        "ShearX" => affine(img, [1.0, signed(0.3 * level, rng), 0.0, 1.0], 0.0, 0.0, false),
        "ShearY" => affine(img, [1.0, 0.0, signed(0.3 * level, rng), 1.0], 0.0, 0.0, false),
        "TranslateX" => affine(img, [1.0, 0.0, 0.0, 1.0], signed(level * side * 100.0 / 224.0, rng), 0.0, false),
        "TranslateY" => affine(img, [1.0, 0.0, 0.0, 1.0], 0.0, signed(level * side * 100.0 / 224.0, rng), false),
        "Cutout" => {
            let pad = (level * side * 40.0 / 224.0) as usize;
            let (cx, cy) = (rng.below(img.w), rng.below(img.h));
            let mut out = img.clone();
            for y in cy.saturating_sub(pad)..(cy + pad).min(img.h) {
                for x in cx.saturating_sub(pad)..(cx + pad).min(img.w) {
                    out.data[(y * img.w + x) * img.c..][..img.c].fill(FILL);
                }
            }
            out
        }
        _ => img.clone(),
    }
}

fn lut(f: impl Fn(u8) -> f64) -> [u8; 256] {
    std::array::from_fn(|v| f(v as u8).round().clamp(0.0, 255.0) as u8)
}

fn map(img: &Img, f: impl Fn(u8) -> u8) -> Img {
    Img { data: img.data.iter().map(|&v| f(v)).collect(), ..img.clone() }
}

fn per_channel_lut(img: &Img, make: impl Fn(&[u8]) -> [u8; 256]) -> Img {
    let mut out = img.clone();
    for ch in 0..img.c {
        let vals: Vec<u8> = img.data.iter().skip(ch).step_by(img.c).copied().collect();
        let t = make(&vals);
        out.data.iter_mut().skip(ch).step_by(img.c).for_each(|v| *v = t[*v as usize]);
    }
    out
}

/// PIL's `ImageOps.equalize` for one channel.
fn equalize_lut(vals: &[u8]) -> [u8; 256] {
    let mut hist = [0usize; 256];
    vals.iter().for_each(|&v| hist[v as usize] += 1);
    let last = hist.iter().rposition(|&h| h > 0).map(|i| hist[i]).unwrap_or(0);
    let step = (vals.len() - last) / 255;
    if step == 0 {
        return std::array::from_fn(|v| v as u8);
    }
    let mut acc = step / 2;
    std::array::from_fn(|v| {
        let out = (acc / step).min(255) as u8;
        acc += hist[v];
        out
    })
}

/// What an enhancement op blends away from: black, the mean gray, the luma image, a blur.
enum Degenerate {
    Level(u8),
    Image(Vec<u8>),
}

fn degenerate(op: &str, img: &Img) -> Degenerate {
    match op {
        "Brightness" => Degenerate::Level(0),
        "Contrast" => {
            let luma = img.luma();
            Degenerate::Level((luma.iter().map(|&v| v as f64).sum::<f64>() / luma.len().max(1) as f64).round() as u8)
        }
        "Color" => Degenerate::Image(img.luma().iter().flat_map(|&l| std::iter::repeat_n(l, img.c)).collect()),
        _ => {
            // PIL's SMOOTH kernel [[1,1,1],[1,5,1],[1,1,1]]/13, borders kept; a row at a time so
            // the nine integer taps run over contiguous values.
            let (c, stride) = (img.c, img.w * img.c);
            let mut out = img.data.clone();
            if img.w >= 3 {
                for y in 1..img.h.saturating_sub(1) {
                    let (up, mid, down) = (&img.data[(y - 1) * stride..][..stride], &img.data[y * stride..][..stride], &img.data[(y + 1) * stride..][..stride]);
                    for (i, o) in out[y * stride..][..stride].iter_mut().enumerate().take(stride - c).skip(c) {
                        let side = |r: &[u8]| r[i - c] as u32 + r[i + c] as u32;
                        let s = side(up) + up[i] as u32 + side(mid) + 5 * mid[i] as u32 + side(down) + down[i] as u32;
                        *o = ((s + 6) / 13) as u8;
                    }
                }
            }
            Degenerate::Image(out)
        }
    }
}

/// Output pixel (x, y) reads input `m·(x, y) + (tx, ty)` (about the centre when `centred`),
/// nearest neighbour, [`FILL`] outside.
fn affine(img: &Img, m: [f64; 4], tx: f64, ty: f64, centred: bool) -> Img {
    let (cx, cy) = if centred { ((img.w as f64 - 1.0) / 2.0, (img.h as f64 - 1.0) / 2.0) } else { (0.0, 0.0) };
    let (c, w, h) = (img.c, img.w as i64, img.h as i64);
    let mut data = vec![FILL; img.data.len()];
    for y in 0..img.h {
        for x in 0..img.w {
            let (dx, dy) = (x as f64 - cx, y as f64 - cy);
            let sx = round(m[0] * dx + m[1] * dy + cx + tx);
            let sy = round(m[2] * dx + m[3] * dy + cy + ty);
            if (0..w).contains(&sx) && (0..h).contains(&sy) {
                let src = (sy as usize * img.w + sx as usize) * c;
                data[(y * img.w + x) * c..][..c].copy_from_slice(&img.data[src..src + c]);
            }
        }
    }
    Img { data, ..*img }
}

/// `v.round()` (half away from zero) as an integer, without the libm call the loops above made
/// per value: exact for |v| < 2^52, where the truncation and the fraction are exact.
#[inline]
fn round(v: f64) -> i64 {
    let t = v as i64;
    let f = v - t as f64;
    t + (f >= 0.5) as i64 - (f <= -0.5) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Img {
        Img::new(8, 8, 1, (0..64).map(|i| (i * 3 + 40) as u8).collect())
    }

    #[test]
    fn round_is_f64_round() {
        for v in [0.0, 0.5, -0.5, 1.49999999, 2.5, -2.5, -0.49999999999999994, 0.49999999999999994, 254.5, -1e9 - 0.5, 7.3e12 + 0.5] {
            assert_eq!(round(v), v.round() as i64, "{v}");
        }
    }

    #[test]
    fn point_ops_by_hand() {
        let mut rng = Rng::new(1);
        let img = ramp();
        assert_eq!(apply("Invert", &img, 1.0, &mut rng).data[0], 255 - 40);
        let ac = apply("AutoContrast", &img, 1.0, &mut rng);
        assert_eq!((ac.data[0], ac.data[63]), (0, 255));
        assert_eq!(apply("Posterize", &img, 1.0, &mut rng).data[1], 43 & 0xF0);
        // level 0.5 -> threshold 128: 130 becomes 125, 40 stays.
        let s = apply("Solarize", &Img::new(2, 1, 1, vec![40, 130]), 0.5, &mut rng);
        assert_eq!(s.data, vec![40, 125]);
        // 64 levels 16 times each: PIL's equalize spreads them over 0..=255.
        let flat = Img::new(32, 32, 1, (0..1024).map(|i| (100 + i / 16) as u8).collect());
        let eq = apply("Equalize", &flat, 1.0, &mut rng);
        assert_eq!((eq.data[0], eq.data[1023]), (0, 255));
        // Too few pixels per level: identity, as PIL.
        assert_eq!(apply("Equalize", &img, 1.0, &mut rng), img);
    }

    #[test]
    fn geometric_ops_fill_and_keep_size() {
        let mut rng = Rng::new(2);
        let img = ramp();
        let t = apply("TranslateX", &img, 1.0, &mut rng);
        assert_eq!(t.data.len(), 64);
        assert!(t.data.contains(&FILL));
        let r = apply("Rotate", &img, 0.0, &mut rng);
        assert_eq!(r, img);
        let c = apply("Cutout", &Img::new(28, 28, 1, vec![0; 784]), 1.0, &mut rng);
        assert!(c.data.iter().filter(|&&v| v == FILL).count() > 4);
    }

    #[test]
    fn every_op_runs_on_gray_and_rgb() {
        let mut rng = Rng::new(3);
        let rgb = Img::new(5, 4, 3, (0..60).map(|i| (i * 4) as u8).collect());
        for op in RANDAUGMENT_OPS {
            assert_eq!(apply(op, &ramp(), 1.5, &mut rng).data.len(), 64, "{op}");
            assert_eq!(apply(op, &rgb, 0.7, &mut rng).data.len(), 60, "{op}");
        }
        assert_eq!(rand_augment(&ramp(), 2, 10.0, &mut Rng::new(4)), rand_augment(&ramp(), 2, 10.0, &mut Rng::new(4)));
    }
}
