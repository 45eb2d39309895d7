//! Where a build gets its model: a checkpoint, or a named variant with fresh weights.

use std::path::PathBuf;

use effv2_edge::graph::{build, Graph, GraphError};
use effv2_edge::spec::{variant, ModelOptions, ModelSpec, Preprocess, SpecError};
use effv2_edge::engine::EngineError;
use effv2_edge::rng::Rng;
use effv2_edge::weights::{calibrate_batchnorm, init_weights, Checkpoint, CheckpointError, Weights};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("calibrating fresh BN statistics: {0}")]
    Calibrate(#[from] EngineError),
}

pub enum ModelSource {
    Checkpoint(PathBuf),
    /// A variant with options and freshly initialised weights (architecture benchmarking). BN
    /// statistics are calibrated on random images so activations stay O(1) like a trained net's.
    Fresh { model: String, options: ModelOptions, seed: u64 },
}

/// A model ready to be written for a target.
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub weights: Weights,
    pub preprocess: Preprocess,
    pub labels: Option<Vec<String>>,
}

impl ModelSource {
    /// Load; fresh weights get BN statistics calibrated at the eval size.
    pub fn load(&self) -> Result<LoadedModel, SourceError> {
        self.load_for_size(None)
    }

    /// Load; fresh weights get BN statistics calibrated at `size` (default: the eval size), the
    /// size the artifact will run at.
    pub fn load_for_size(&self, size: Option<usize>) -> Result<LoadedModel, SourceError> {
        match self {
            ModelSource::Checkpoint(p) => {
                let ck = Checkpoint::load(p)?;
                let spec = ck.spec();
                Ok(LoadedModel { spec, weights: ck.weights, preprocess: ck.config.preprocess, labels: ck.config.labels })
            }
            ModelSource::Fresh { model, options, seed } => {
                let v = variant(model)?;
                let spec = ModelSpec::new(&v, options.clone())?;
                let s = size.unwrap_or(v.eval_size);
                let graph = build(&spec, s, s)?;
                let fresh = init_weights(&graph, *seed);
                let images = Rng::new(seed.wrapping_add(1)).normal_tensor(vec![2, spec.options.in_channels, s, s]);
                let weights = calibrate_batchnorm(&graph, &fresh, &images)?;
                let mut preprocess = v.preprocess.clone();
                preprocess.mean.resize(spec.options.in_channels, 0.5);
                preprocess.std.resize(spec.options.in_channels, 0.5);
                Ok(LoadedModel { spec, weights, preprocess, labels: None })
            }
        }
    }
}

impl LoadedModel {
    /// The graph at `size` (default: the preprocessing size).
    pub fn graph(&self, size: Option<usize>) -> Result<Graph, GraphError> {
        let s = size.unwrap_or(self.preprocess.size);
        build(&self.spec, s, s)
    }
}
