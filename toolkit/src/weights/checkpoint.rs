//! Our checkpoint: one safetensors file holding the weights (graph names, f32) and, in its header
//! metadata, the model config — variant, options, preprocessing, labels — so the file alone runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file::{write_f32, FileError, TensorFile};
use super::store::{Weights, WeightsError};
use crate::graph::{build, Graph, GraphError};
use crate::spec::{ModelOptions, ModelSpec, Preprocess, SpecError};

pub const FORMAT: &str = "effv2-edge-checkpoint";
pub const FORMAT_VERSION: u32 = 1;
/// File name looked for when `--checkpoint` points at a directory.
pub const FILE_IN_DIR: &str = "model.safetensors";

const META_FORMAT: &str = "format";
const META_CONFIG: &str = "config";

/// Where imported weights came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub layout: String,
    pub file: String,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub format_version: u32,
    pub variant: String,
    pub options: ModelOptions,
    pub preprocess: Preprocess,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub source: Option<Source>,
}

impl ModelConfig {
    pub fn spec(&self) -> Result<ModelSpec, SpecError> {
        ModelSpec::from_name(&self.variant, self.options.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: not an effv2-edge checkpoint (no {FORMAT:?} metadata); peer state dicts go through `effv2-edge import`")]
    NotOurs { path: String },
    #[error("{path}: checkpoint format version {found} is newer than this toolkit reads ({FORMAT_VERSION})")]
    Version { path: String, found: u32 },
    #[error("{path}: bad model config in checkpoint: {why}")]
    Config { path: String, why: String },
    #[error("{path}: {source}")]
    Spec { path: String, source: SpecError },
    #[error("{path}: {source}")]
    Weights { path: String, source: WeightsError },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("checkpoint labels: {0}")]
    Labels(String),
}

#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub config: ModelConfig,
    pub weights: Weights,
}

impl Checkpoint {
    /// Validates the weights against the model before anything is written.
    pub fn new(config: ModelConfig, weights: Weights) -> Result<Self, CheckpointError> {
        let path = "<checkpoint>".to_string();
        let spec = config.spec().map_err(|source| CheckpointError::Spec { path: path.clone(), source })?;
        if let Some(l) = &config.labels {
            if l.len() != spec.options.num_classes {
                return Err(CheckpointError::Labels(format!("{} labels for {} classes", l.len(), spec.options.num_classes)));
            }
        }
        let graph = build(&spec, 32, 32)?;
        weights.check(&graph).map_err(|source| CheckpointError::Weights { path, source })?;
        Ok(Checkpoint { config, weights })
    }

    pub fn spec(&self) -> ModelSpec {
        self.config.spec().expect("validated when the checkpoint was made")
    }

    /// The graph at `size` (default: the preprocessing size).
    pub fn graph(&self, h: usize, w: usize) -> Result<Graph, GraphError> {
        build(&self.spec(), h, w)
    }

    /// A checkpoint path may name the file or a directory holding [`FILE_IN_DIR`].
    pub fn resolve(path: &Path) -> PathBuf {
        if path.is_dir() {
            path.join(FILE_IN_DIR)
        } else {
            path.to_path_buf()
        }
    }

    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let path = Self::resolve(path);
        let p = path.display().to_string();
        let file = TensorFile::read(&path)?;
        if file.metadata.get(META_FORMAT).map(String::as_str) != Some(FORMAT) {
            return Err(CheckpointError::NotOurs { path: p });
        }
        let json = file.metadata.get(META_CONFIG).ok_or_else(|| CheckpointError::Config { path: p.clone(), why: "no config".into() })?;
        let version: serde_json::Value =
            serde_json::from_str(json).map_err(|e| CheckpointError::Config { path: p.clone(), why: e.to_string() })?;
        let found = version.get("format_version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if found > FORMAT_VERSION {
            return Err(CheckpointError::Version { path: p, found });
        }
        let config: ModelConfig =
            serde_json::from_str(json).map_err(|e| CheckpointError::Config { path: p.clone(), why: e.to_string() })?;
        let mut weights = Weights::new();
        for (name, st) in &file.tensors {
            weights.insert(name.clone(), file.float_tensor(name, st, &p)?);
        }
        Checkpoint::new(config, weights).map_err(|e| match e {
            CheckpointError::Spec { source, .. } => CheckpointError::Spec { path: p.clone(), source },
            CheckpointError::Weights { source, .. } => CheckpointError::Weights { path: p.clone(), source },
            e => e,
        })
    }

    /// Atomic: the previous file at `path` survives any failure.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let path = Self::resolve(path);
        let config = serde_json::to_string(&self.config).expect("config serializes");
        let meta = HashMap::from([(META_FORMAT.to_string(), FORMAT.to_string()), (META_CONFIG.to_string(), config)]);
        write_f32(&path, self.weights.iter().map(|(n, t)| (n.as_str(), t)), meta)?;
        Ok(())
    }
}
