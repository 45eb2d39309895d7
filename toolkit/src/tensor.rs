//! A plain f32 tensor: a shape and row-major data. Enough for weights, inputs and logits.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
#[error("shape {shape:?} holds {expected} values but {got} were given")]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub got: usize,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ShapeMismatch> {
        let expected = shape.iter().product();
        if expected != data.len() {
            return Err(ShapeMismatch { shape, expected, got: data.len() });
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor { shape, data: vec![0.0; n] }
    }

    pub fn full(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        Tensor { shape, data: vec![value; n] }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Largest |a - b| over all elements; `None` when shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        (self.shape == other.shape)
            .then(|| self.data.iter().zip(&other.data).map(|(a, b)| (a - b).abs()).fold(0.0, nan_max))
    }

    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0, |m, v| m.max(v.abs()))
    }
}

/// The larger of `m` and `d`, NaN once either is: a fold of errors that a NaN must not slip past
/// (`f32::max` returns the other operand).
pub fn nan_max(m: f32, d: f32) -> f32 {
    if d > m || d.is_nan() {
        d
    } else {
        m
    }
}
