//! Calibration: run the f32 engine, unfused, on the calibration batches and record the statistics
//! of every value of the BN-folded graph (conv outputs before their activation included).

use std::time::Instant;

use effv2_edge::engine::{CpuEngine, EngineOptions};
use effv2_edge::graph::{fold_batchnorm, Graph, Shape};
use effv2_edge::weights::Weights;
use effv2_edge::Tensor;

use crate::lower::lower;
use crate::model::{IoType, QModel};
use crate::observe::{RangeMethod, Stats};
use crate::QuantizeError;

/// The folded network and what calibration saw of each of its values.
pub struct Calibration {
    /// The BN-folded graph whose node ids index [`Self::stats`].
    pub graph: Graph,
    pub weights: Weights,
    pub stats: Vec<Stats>,
    /// Whether histograms were collected (needed by the percentile and MSE methods).
    pub histograms: bool,
    /// Images seen.
    pub images: usize,
    /// Wall time of the calibration passes.
    pub seconds: f64,
}

impl Calibration {
    /// Fold BN, then run every batch (`[N, C, H, W]` f32, the graph's input shape) through the
    /// engine: one pass for min/max, and a second for histograms when `histograms` is set.
    pub fn run(graph: &Graph, weights: &Weights, batches: &[Tensor], histograms: bool) -> Result<Self, QuantizeError> {
        if batches.iter().all(|b| b.shape().first().copied().unwrap_or(0) == 0) {
            return Err(QuantizeError::EmptyCalibration);
        }
        let want = graph.input_shape();
        for (index, b) in batches.iter().enumerate() {
            if !matches!(*b.shape(), [n, c, h, w] if n > 0 && Shape::new(c, h, w) == want) {
                return Err(QuantizeError::CalibrationShape { index, want, got: b.shape().to_vec() });
            }
        }
        let t0 = Instant::now();
        let (graph, weights) = fold_batchnorm(graph, weights)?;
        let engine = CpuEngine::with_options(&graph, &weights, EngineOptions { fuse: false })?;
        let mut stats = vec![Stats::default(); graph.nodes.len()];
        for b in batches {
            engine.run_observed(b, &mut |v, data| stats[v].observe_min_max(data))?;
        }
        if histograms {
            for b in batches {
                engine.run_observed(b, &mut |v, data| stats[v].observe_histogram(data))?;
            }
        }
        let images = batches.iter().map(|b| b.shape()[0]).sum();
        Ok(Calibration { graph, weights, stats, histograms, images, seconds: t0.elapsed().as_secs_f64() })
    }

    /// The chosen real range of every value (`None` for values never computed, e.g. identities).
    pub fn ranges(&self, method: RangeMethod) -> Result<Vec<Option<(f32, f32)>>, QuantizeError> {
        if method.needs_histogram() && !self.histograms {
            return Err(QuantizeError::NoHistograms { method });
        }
        Ok(self.stats.iter().map(|s| s.range(method)).collect())
    }

    /// The int8 model with activation ranges chosen by `method`.
    pub fn quantize(&self, method: RangeMethod, io: IoType) -> Result<QModel, QuantizeError> {
        lower(&self.graph, &self.weights, &self.ranges(method)?, io)
    }
}
