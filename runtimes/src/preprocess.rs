//! How an image becomes the network's input; travels with every checkpoint and artifact.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// Resize the shorter side to size / crop_pct, then take the centre size × size.
    Center,
    /// Resize both sides to size / crop_pct (aspect ratio not kept), then centre-crop.
    Squash,
}

/// Eval-time preprocessing: resize + crop to `size`, scale pixels to [0, 1], then (x - mean) / std.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub interpolation: Interpolation,
    pub size: usize,
    pub crop_pct: f32,
    pub crop: CropMode,
}
