//! Import peer state dicts (timm `tf_efficientnetv2_*`, timm `efficientnetv2_*`, torchvision
//! `efficientnet_v2_*`) into our checkpoint, exactly: every key accounted for, every shape checked.

mod keys;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::checkpoint::{Checkpoint, CheckpointError, ModelConfig, Source, FORMAT_VERSION};
use super::file::{FileError, StoredTensor, TensorFile};
use super::store::Weights;
use crate::graph::build;
use crate::spec::{variants, CropMode, Interpolation, ModelOptions, ModelSpec, Padding, Preprocess, SpecError, Variant};
pub use keys::KeyMap;

/// ImageNet-1k class names in index order (from timm's `ImageNetInfo`).
pub const IMAGENET_LABELS: &str = include_str!("../../../data/imagenet1k_labels.txt");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// timm `tf_efficientnetv2_*`: Google's weights; TF SAME padding, BN eps 1e-3.
    TimmTf,
    /// timm `efficientnetv2_*`: symmetric padding, BN eps 1e-5.
    Timm,
    /// torchvision `efficientnet_v2_*`: symmetric padding, BN eps 1e-3.
    Torchvision,
}

impl FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "timm-tf" => Ok(Layout::TimmTf),
            "timm" => Ok(Layout::Timm),
            "torchvision" => Ok(Layout::Torchvision),
            _ => Err(format!("unknown layout {s:?} (expected timm-tf, timm or torchvision)")),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::TimmTf => "timm-tf",
            Layout::Timm => "timm",
            Layout::Torchvision => "torchvision",
        })
    }
}

impl Layout {
    /// The numerics the peer model uses; the rest of `base` is kept.
    pub fn options(self, base: ModelOptions) -> ModelOptions {
        let (padding, bn_eps) = match self {
            Layout::TimmTf => (Padding::TfSame, 1e-3),
            Layout::Timm => (Padding::Symmetric, 1e-5),
            Layout::Torchvision => (Padding::Symmetric, 1e-3),
        };
        ModelOptions { padding, bn_eps, ..base }
    }

    /// The eval preprocessing the peer publishes with these weights.
    pub fn preprocess(self, v: &Variant) -> Preprocess {
        const IMAGENET: ([f32; 3], [f32; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
        let simple = |norm: ([f32; 3], [f32; 3]), interpolation| Preprocess {
            mean: norm.0.to_vec(),
            std: norm.1.to_vec(),
            interpolation,
            size: v.eval_size,
            crop_pct: 1.0,
            crop: CropMode::Center,
        };
        match self {
            Layout::TimmTf => v.preprocess.clone(),
            Layout::Timm => simple(IMAGENET, Interpolation::Bicubic),
            // torchvision's L is the ported TF model with its [-1, 1] scaling.
            Layout::Torchvision if v.name == "efficientnetv2-l" => simple(([0.5; 3], [0.5; 3]), Interpolation::Bicubic),
            Layout::Torchvision => simple(IMAGENET, Interpolation::Bilinear),
        }
    }

    /// When the file's keys belong to another layout family, say which.
    fn mismatch_hint(self, keys: &HashSet<&str>) -> Option<&'static str> {
        let torchvision = self == Layout::Torchvision;
        if keys.contains("features.0.0.weight") && !torchvision {
            Some("a torchvision state dict (use --from torchvision)")
        } else if keys.contains("conv_stem.weight") && torchvision {
            Some("a timm state dict (use --from timm-tf for tf_efficientnetv2_*, --from timm otherwise)")
        } else if keys.contains("stem.conv.weight") {
            Some("already an effv2-edge checkpoint (no import needed)")
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {problem}{hint}")]
    Keys { path: String, problem: String, hint: String },
}

/// Read a peer state dict and turn it into our checkpoint for `spec` (whose options should come
/// from [`Layout::options`]).
pub fn import(
    layout: Layout,
    spec: &ModelSpec,
    path: &Path,
    preprocess: Preprocess,
    labels: Option<Vec<String>>,
) -> Result<Checkpoint, ImportError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FileError::Io { path: p.clone(), source })?;
    let file = TensorFile::parse(&bytes, &p)?;
    let tensors: Stored = file.tensors.iter().map(|(n, t)| (strip_wrapper(n), t)).collect();
    let weights = map_weights(layout, spec, &tensors).map_err(|problem| {
        let keys: HashSet<&str> = tensors.keys().copied().collect();
        let hint = match layout.mismatch_hint(&keys) {
            Some(g) => format!("\n  hint: this file looks like {g}"),
            None => fit_hint(layout, spec, &tensors),
        };
        ImportError::Keys { path: p.clone(), problem, hint }
    })?;
    let config = ModelConfig {
        format_version: FORMAT_VERSION,
        variant: spec.variant.clone(),
        options: spec.options.clone(),
        preprocess,
        labels,
        source: Some(Source {
            layout: layout.to_string(),
            file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            sha256: format!("{:x}", Sha256::digest(&bytes)),
        }),
    };
    Ok(Checkpoint::new(config, weights)?)
}

/// `module.` (DDP) and `model.` wrappers are common; strip them.
fn strip_wrapper(k: &str) -> &str {
    k.strip_prefix("module.").or_else(|| k.strip_prefix("model.")).unwrap_or(k)
}

type Stored<'a> = HashMap<&'a str, &'a StoredTensor>;

/// Our weights from the peer tensors, or the first problem found, naming the key.
fn map_weights(layout: Layout, spec: &ModelSpec, tensors: &Stored) -> Result<Weights, String> {
    let graph = build(spec, 32, 32).map_err(|e| e.to_string())?;
    let keymap = KeyMap::new(layout, spec);
    let mut used = HashSet::new();
    let mut weights = Weights::new();
    for param in &graph.params {
        let key = keymap.peer_key(&param.name).ok_or_else(|| format!("no {layout} key is known for parameter {:?}", param.name))?;
        let st = tensors
            .get(key.as_str())
            .ok_or_else(|| format!("missing key {key:?} (our {:?}, shape {:?})", param.name, param.shape))?;
        if st.shape != param.shape {
            return Err(format!("key {key:?} has shape {:?}, {} expects {:?} (our {:?})", st.shape, spec.variant, param.shape, param.name));
        }
        let t = match &st.values {
            Some(v) => crate::Tensor::new(st.shape.clone(), v.clone()).expect("shape checked"),
            None => return Err(format!("key {key:?} has dtype {}, expected a float type", st.dtype)),
        };
        if t.data().iter().any(|v| !v.is_finite()) {
            return Err(format!("key {key:?} holds NaN or infinite values"));
        }
        used.insert(key);
        weights.insert(param.name.clone(), t);
    }
    let mut extra: Vec<&str> =
        tensors.keys().copied().filter(|k| !used.contains(*k) && !k.ends_with("num_batches_tracked")).collect();
    extra.sort();
    if let Some(first) = extra.first() {
        let more = if extra.len() > 1 { format!(" (and {} more)", extra.len() - 1) } else { String::new() };
        return Err(format!("unexpected key {first:?}{more}: the file has parameters {} does not", describe(spec)));
    }
    Ok(weights)
}

fn describe(spec: &ModelSpec) -> String {
    format!("{} (fused stages {}, {} classes)", spec.variant, spec.options.fused_stages, spec.options.num_classes)
}

/// When the keys do not fit, say which registered variant they would fit.
fn fit_hint(layout: Layout, spec: &ModelSpec, tensors: &Stored) -> String {
    let classes = tensors
        .get(if layout == Layout::Torchvision { "classifier.1.bias" } else { "classifier.bias" })
        .and_then(|t| t.shape.first().copied());
    for v in variants() {
        let o = ModelOptions { num_classes: classes.unwrap_or(spec.options.num_classes), width: None, depth: None, ..spec.options.clone() };
        if let Ok(s) = ModelSpec::new(&v, o) {
            if map_weights(layout, &s, tensors).is_ok() && (s.variant != spec.variant || s.options.num_classes != spec.options.num_classes) {
                return format!("\n  hint: these weights fit {} with {} classes", v.name, s.options.num_classes);
            }
        }
    }
    String::new()
}
