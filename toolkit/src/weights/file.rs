//! Reading and writing safetensors files, with errors that name the file and the tensor.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::io::atomic::write_atomic;
use crate::tensor::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a valid safetensors file ({why}); is it truncated or corrupt?")]
    Corrupt { path: String, why: String },
    #[error("{path}: tensor {name:?} has dtype {dtype}, expected a float type")]
    Dtype { path: String, name: String, dtype: String },
    #[error("{path}: cannot write safetensors: {why}")]
    Write { path: String, why: String },
}

/// One tensor as stored: floats converted to f32; integer tensors (e.g. `num_batches_tracked`) kept
/// only as their shape and dtype, since no model parameter is an integer.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    pub dtype: String,
    pub values: Option<Vec<f32>>,
}

/// A whole safetensors file, in name order.
#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    pub tensors: Vec<(String, StoredTensor)>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| FileError::Io { path: p.clone(), source })?;
        Self::parse(&bytes, &p)
    }

    pub fn parse(bytes: &[u8], path: &str) -> Result<Self, FileError> {
        let corrupt = |e: safetensors::SafeTensorError| FileError::Corrupt { path: path.to_string(), why: e.to_string() };
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let st = SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let mut tensors: Vec<(String, StoredTensor)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let dtype = format!("{:?}", view.dtype());
                let values = to_f32(view.dtype(), view.data());
                (name, StoredTensor { shape: view.shape().to_vec(), dtype, values })
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(TensorFile { tensors, metadata: meta.metadata().clone().unwrap_or_default() })
    }

    /// The float tensors as [`Tensor`]s; any non-float tensor is an error naming it.
    pub fn float_tensor(&self, name: &str, st: &StoredTensor, path: &str) -> Result<Tensor, FileError> {
        match &st.values {
            Some(v) => Ok(Tensor::new(st.shape.clone(), v.clone()).expect("safetensors validated the size")),
            None => Err(FileError::Dtype { path: path.to_string(), name: name.to_string(), dtype: st.dtype.clone() }),
        }
    }
}

fn to_f32(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => return None,
    })
}

/// Write f32 tensors plus string metadata atomically.
pub fn write_f32<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    metadata: HashMap<String, String>,
) -> Result<(), FileError> {
    let p = path.display().to_string();
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.shape().to_vec(), t.data().iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let views = owned
        .iter()
        .map(|(n, s, b)| safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.as_str(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FileError::Write { path: p.clone(), why: e.to_string() })?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| FileError::Write { path: p.clone(), why: e.to_string() })?;
    write_atomic(path, &bytes).map_err(|source| FileError::Io { path: p, source })
}
