//! Named parameter tensors, checked against the graph that reads them.

use std::collections::BTreeMap;

use crate::graph::Graph;
use crate::tensor::Tensor;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightsError {
    #[error("missing weight {0:?}")]
    Missing(String),
    #[error("unexpected weight {0:?} (the model has no such parameter)")]
    Unexpected(String),
    #[error("weight {name:?} has shape {got:?}, the model expects {want:?}")]
    Shape { name: String, want: Vec<usize>, got: Vec<usize> },
    #[error("weight {0:?} holds a NaN or infinite value")]
    NonFinite(String),
}

/// Parameter name → tensor, in the graph's naming (`blocks.3.0.dw.conv.weight`, …).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    map: BTreeMap<String, Tensor>,
}

impl Weights {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, t: Tensor) {
        self.map.insert(name.into(), t);
    }

    pub fn get(&self, name: &str) -> Result<&Tensor, WeightsError> {
        self.map.get(name).ok_or_else(|| WeightsError::Missing(name.to_string()))
    }

    pub fn remove(&mut self, name: &str) -> Option<Tensor> {
        self.map.remove(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every graph parameter present with its shape and finite values, and nothing else.
    pub fn check(&self, graph: &Graph) -> Result<(), WeightsError> {
        for p in &graph.params {
            let t = self.get(&p.name)?;
            if t.shape() != p.shape.as_slice() {
                return Err(WeightsError::Shape { name: p.name.clone(), want: p.shape.clone(), got: t.shape().to_vec() });
            }
            if t.data().iter().any(|v| !v.is_finite()) {
                return Err(WeightsError::NonFinite(p.name.clone()));
            }
        }
        if let Some(extra) = self.map.keys().find(|k| graph.param(k).is_none()) {
            return Err(WeightsError::Unexpected(extra.clone()));
        }
        Ok(())
    }
}
