//! A plain 8-bit image (`h×w×c`, interleaved), the unit augmentation works on.

use image::{DynamicImage, GrayImage, RgbImage};

#[derive(Clone, Debug, PartialEq)]
pub struct Img {
    pub w: usize,
    pub h: usize,
    /// 1 (gray) or 3 (RGB).
    pub c: usize,
    pub data: Vec<u8>,
}

impl Img {
    pub fn new(w: usize, h: usize, c: usize, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), w * h * c);
        Img { w, h, c, data }
    }

    /// Gray images stay gray; everything else becomes RGB.
    pub fn from_dynamic(img: &DynamicImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        match img {
            DynamicImage::ImageLuma8(g) => Img::new(w, h, 1, g.as_raw().clone()),
            _ => Img::new(w, h, 3, img.to_rgb8().into_raw()),
        }
    }

    /// [`Img::from_dynamic`] taking the decoder's buffer where it already is 8-bit gray or RGB
    /// (the loader's case: a decoded photo is not copied again).
    pub fn from_decoded(img: DynamicImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        match img {
            DynamicImage::ImageLuma8(g) => Img::new(w, h, 1, g.into_raw()),
            DynamicImage::ImageRgb8(g) => Img::new(w, h, 3, g.into_raw()),
            other => Img::from_dynamic(&other),
        }
    }

    pub fn to_dynamic(&self) -> DynamicImage {
        let (w, h) = (self.w as u32, self.h as u32);
        match self.c {
            1 => DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, self.data.clone()).expect("sized")),
            _ => DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, self.data.clone()).expect("sized")),
        }
    }

    #[inline]
    pub fn px(&self, x: usize, y: usize) -> &[u8] {
        &self.data[(y * self.w + x) * self.c..][..self.c]
    }

    /// ITU-R 601 luma per pixel (PIL's grayscale, which RandAugment's colour ops use).
    pub fn luma(&self) -> Vec<u8> {
        match self.c {
            1 => self.data.clone(),
            _ => self.data.chunks_exact(3).map(|p| ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000) as u8).collect(),
        }
    }
}
