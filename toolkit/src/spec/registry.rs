//! Named variants: the table they scale, their coefficients, and the official train/eval recipe values.

use super::preprocess::{CropMode, Interpolation, Preprocess};
use super::stage::StageRow;
use super::tables;
use super::SpecError;

#[derive(Clone, Debug)]
pub struct Variant {
    pub name: &'static str,
    pub table: &'static [StageRow],
    pub width: f64,
    pub depth: f64,
    pub train_size: usize,
    pub eval_size: usize,
    /// Classifier dropout of the official config.
    pub dropout: f64,
    /// Final RandAugment magnitude of the official config (0 = the legacy AutoAugment pipeline, B0–B3).
    pub randaug: f32,
    /// Final mixup = cutmix alpha of the official config.
    pub mixup: f32,
    /// Trainable parameters with 1000 classes (timm/torchvision count, checked by tests).
    pub expected_params: u64,
    /// Multiply-accumulates at `eval_size` published by peers (giga), for the tolerance check.
    pub peer_gmacs: f64,
    /// Eval preprocessing that goes with Google's released weights (timm `tf_` pretrained cfgs).
    pub preprocess: Preprocess,
}

const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
const INCEPTION: ([f32; 3], [f32; 3]) = ([0.5; 3], [0.5; 3]);

fn pre(norm: ([f32; 3], [f32; 3]), size: usize, crop_pct: f32, crop: CropMode) -> Preprocess {
    Preprocess {
        mean: norm.0.to_vec(),
        std: norm.1.to_vec(),
        interpolation: Interpolation::Bicubic,
        size,
        crop_pct,
        crop,
    }
}

/// Every official variant, in the order `list` prints them.
pub fn variants() -> Vec<Variant> {
    use CropMode::{Center, Squash};
    let v = |name, table, width, depth, train_size, eval_size, dropout, randaug, mixup, expected_params, peer_gmacs, preprocess| {
        Variant { name, table, width, depth, train_size, eval_size, dropout, randaug, mixup, expected_params, peer_gmacs, preprocess }
    };
    vec![
        //  name                  table          w    d    train eval drop ra  mix  params       GMACs
        v("efficientnetv2-b0", tables::BASE, 1.0, 1.0, 192, 224, 0.2, 0.0, 0.0, 7_139_704, 0.718, pre(IMAGENET, 224, 0.875, Center)),
        v("efficientnetv2-b1", tables::BASE, 1.0, 1.1, 192, 240, 0.2, 0.0, 0.0, 8_141_052, 1.197, pre(IMAGENET, 240, 0.882, Center)),
        v("efficientnetv2-b2", tables::BASE, 1.1, 1.2, 208, 260, 0.3, 0.0, 0.0, 10_096_086, 1.698, pre(IMAGENET, 260, 0.890, Center)),
        v("efficientnetv2-b3", tables::BASE, 1.2, 1.4, 240, 300, 0.3, 0.0, 0.0, 14_358_406, 3.011, pre(IMAGENET, 300, 0.904, Center)),
        v("efficientnetv2-s", tables::S, 1.0, 1.0, 300, 384, 0.2, 10.0, 0.0, 21_458_488, 8.366, pre(INCEPTION, 384, 1.0, Center)),
        v("efficientnetv2-m", tables::M_, 1.0, 1.0, 384, 480, 0.3, 15.0, 0.2, 54_139_356, 24.58, pre(INCEPTION, 480, 1.0, Squash)),
        v("efficientnetv2-l", tables::L, 1.0, 1.0, 384, 480, 0.4, 20.0, 0.5, 118_515_272, 56.08, pre(INCEPTION, 480, 1.0, Squash)),
        v("efficientnetv2-xl", tables::XL, 1.0, 1.0, 384, 512, 0.4, 20.0, 0.5, 208_119_808, 93.35, pre(INCEPTION, 512, 1.0, Squash)),
    ]
}

/// Look a variant up by its full name or its suffix (`b0`, `s`, …).
pub fn variant(name: &str) -> Result<Variant, SpecError> {
    let key = name.trim().to_ascii_lowercase();
    let key = key.strip_prefix("tf_").unwrap_or(&key).replace('_', "-");
    variants()
        .into_iter()
        .find(|v| v.name == key || v.name.strip_prefix("efficientnetv2-") == Some(key.as_str()))
        .ok_or_else(|| SpecError::UnknownVariant(name.to_string()))
}

pub fn variant_names() -> Vec<&'static str> {
    variants().iter().map(|v| v.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_full_name_and_suffix() {
        assert_eq!(variant("efficientnetv2-s").unwrap().name, "efficientnetv2-s");
        assert_eq!(variant("B3").unwrap().name, "efficientnetv2-b3");
        assert_eq!(variant("tf_efficientnetv2_m").unwrap().name, "efficientnetv2-m");
        let err = variant("efficientnetv2-q").unwrap_err().to_string();
        assert!(err.contains("efficientnetv2-q") && err.contains("efficientnetv2-b0"), "{err}");
    }
}
