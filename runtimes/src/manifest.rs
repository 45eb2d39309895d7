//! `manifest.json`: what an artifact directory holds and how to feed it. Written by
//! `effv2-edge build`, verified (checksums, target, shapes) before any backend loads a file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::preprocess::Preprocess;
use crate::RuntimeError;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT: &str = "effv2-edge-artifact";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Cpu,
    Coral,
    Jetson,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Cpu => "cpu",
            Target::Coral => "coral",
            Target::Jetson => "jetson",
        })
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Target::Cpu),
            "coral" => Ok(Target::Coral),
            "jetson" => Ok(Target::Jetson),
            _ => Err(format!("unknown target {s:?} (expected cpu, coral or jetson)")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Fp16,
    Bf16,
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

/// A named tensor at the artifact boundary: the model file's own input or output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// "NCHW" (float ONNX) or "NHWC" (int8 TFLite) for images, "NC" for logits.
    pub layout: String,
    /// "float32", "int8" or "uint8".
    pub dtype: String,
}

/// Affine parameters of an integer tensor: real = scale · (q − zero_point).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantParams {
    /// "int8" or "uint8".
    pub dtype: String,
    pub scale: f32,
    pub zero_point: i32,
}

/// How a quantized artifact's integers relate to real values, and how its ranges were chosen.
/// To feed it: preprocess as [`Manifest::preprocess`] says (normalised float), then
/// q = clamp(round(x / scale) + zero_point) in the input dtype's range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    pub input: QuantParams,
    pub output: QuantParams,
    /// Activation range method, e.g. "percentile 99.99".
    pub method: String,
    /// Calibration data as the build was told ("synthetic", a folder, "fashion-mnist").
    pub calibration: String,
    pub calibration_images: usize,
    /// True when calibration used random images, not real data: accuracy is not representative.
    pub synthetic_calibration: bool,
}

/// What the model is (informational; backends read only the files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub variant: String,
    pub fused_stages: String,
    pub params: u64,
    pub macs: u64,
    /// The full model options as the toolkit wrote them.
    pub options: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the artifact directory.
    pub path: String,
    /// What the file is for: "model", "report", "log", …
    pub role: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub toolkit_version: String,
    pub target: Target,
    pub precision: Precision,
    pub model: ModelInfo,
    pub input: TensorSpec,
    pub output: TensorSpec,
    pub preprocess: Preprocess,
    pub num_classes: usize,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    pub files: Vec<FileEntry>,
    /// Free-form notes for people (e.g. the trtexec command for a Jetson artifact).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Integer I/O parameters and calibration of quantized artifacts (absent for float ones and
    /// in manifests written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

impl Manifest {
    /// The entry for a file role, e.g. the "model".
    pub fn file(&self, role: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == role)
    }

    /// Read `dir/manifest.json` and check it describes a usable artifact, with every listed file
    /// present and unaltered.
    pub fn load_verified(dir: &Path) -> Result<Manifest, RuntimeError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RuntimeError::Artifact {
            path: path.clone(),
            why: format!("cannot read the manifest ({e}); is this an artifact directory made by `effv2-edge build`?"),
        })?;
        let bad = |why: String| RuntimeError::Artifact { path: path.clone(), why };
        let m: Manifest = serde_json::from_str(&text).map_err(|e| bad(format!("invalid manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(bad(format!("format is {:?}, expected {FORMAT:?}", m.format)));
        }
        if m.format_version > FORMAT_VERSION {
            return Err(bad(format!("format version {} is newer than this runtime reads ({FORMAT_VERSION})", m.format_version)));
        }
        let n = match m.input.shape.as_slice() {
            s @ &[n, _, _, _] if s.iter().all(|&d| d > 0) => n,
            s => return Err(bad(format!("input shape {s:?} is not a non-empty [N, C, H, W]"))),
        };
        if m.output.shape != [n, m.num_classes] || m.num_classes == 0 {
            return Err(bad(format!("output shape {:?} does not match batch {n} and {} classes", m.output.shape, m.num_classes)));
        }
        if let Some(l) = &m.labels {
            if l.len() != m.num_classes {
                return Err(bad(format!("{} labels for {} classes", l.len(), m.num_classes)));
            }
        }
        if m.file("model").is_none() {
            return Err(bad("no file with role \"model\"".into()));
        }
        for f in &m.files {
            verify_file(dir, f)?;
        }
        Ok(m)
    }

    /// Absolute path of a listed file (already verified by [`Manifest::load_verified`]).
    pub fn path_of(dir: &Path, f: &FileEntry) -> PathBuf {
        dir.join(&f.path)
    }
}

fn verify_file(dir: &Path, f: &FileEntry) -> Result<(), RuntimeError> {
    let rel = Path::new(&f.path);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(RuntimeError::Artifact { path: dir.join(MANIFEST_FILE), why: format!("file path {:?} leaves the artifact directory", f.path) });
    }
    let path = dir.join(rel);
    let bytes = std::fs::read(&path)
        .map_err(|e| RuntimeError::Artifact { path: path.clone(), why: format!("listed in the manifest but cannot be read: {e}") })?;
    if bytes.len() as u64 != f.bytes || sha256_hex(&bytes) != f.sha256 {
        return Err(RuntimeError::Artifact {
            path,
            why: format!(
                "checksum mismatch: the file was altered or truncated (manifest: {} bytes, sha256 {}; found {} bytes)",
                f.bytes,
                &f.sha256[..f.sha256.len().min(16)],
                bytes.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_json(quantization: Option<&str>) -> String {
        let q = quantization.map(|q| format!(",\n\"quantization\": {q}")).unwrap_or_default();
        format!(
            r#"{{"format": "{FORMAT}", "format_version": 1, "toolkit_version": "0.1.0", "target": "coral", "precision": "int8",
               "model": {{"variant": "efficientnetv2-b0", "fused_stages": "official", "params": 1, "macs": 1, "options": {{}}}},
               "input": {{"name": "input", "shape": [1, 224, 224, 3], "layout": "NHWC", "dtype": "int8"}},
               "output": {{"name": "logits", "shape": [1, 10], "layout": "NC", "dtype": "int8"}},
               "preprocess": {{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "size": 224,
                               "crop_pct": 1.0, "crop": "center"}},
               "num_classes": 10, "files": []{q}}}"#
        )
    }

    /// Manifests written before `quantization` existed still load; new ones round-trip it.
    #[test]
    fn quantization_is_optional_and_round_trips() {
        let old: Manifest = serde_json::from_str(&manifest_json(None)).unwrap();
        assert_eq!(old.quantization, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("quantization"));
        let q = r#"{"input": {"dtype": "int8", "scale": 0.0186, "zero_point": -14},
                    "output": {"dtype": "int8", "scale": 0.1, "zero_point": 3},
                    "method": "percentile 99.99", "calibration": "synthetic", "calibration_images": 8,
                    "synthetic_calibration": true}"#;
        let new: Manifest = serde_json::from_str(&manifest_json(Some(q))).unwrap();
        let got = new.quantization.clone().unwrap();
        assert_eq!((got.input.zero_point, got.output.dtype.as_str(), got.synthetic_calibration), (-14, "int8", true));
        let again: Manifest = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(again, new);
    }
}
