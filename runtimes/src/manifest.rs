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
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        })
    }
}

/// A named tensor at the artifact boundary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// "NCHW" for images, "NC" for logits.
    pub layout: String,
    pub dtype: String,
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
