//! Artifact directories: files + `manifest.json` with a sha256 per file, written into a temp
//! sibling and swapped in whole, so a failed build never leaves half an artifact or destroys a
//! previous one.

use std::fs;
use std::path::{Path, PathBuf};

use effv2_edge::graph::Graph;
use effv2_edge::spec::{ModelSpec, Preprocess};
use effv2_runtime::manifest::{
    sha256_hex, FileEntry, Manifest, ModelInfo, Precision, Target, TensorSpec, FORMAT, FORMAT_VERSION, MANIFEST_FILE,
};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} exists and is not an effv2-edge artifact directory; refusing to replace it")]
    NotAnArtifact(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_path_buf(), source }
}

/// One file of an artifact.
pub struct ArtifactFile {
    pub path: String,
    pub role: String,
    pub bytes: Vec<u8>,
}

/// The model side of a manifest, filled from our graph.
pub struct ManifestInput<'a> {
    pub spec: &'a ModelSpec,
    pub graph: &'a Graph,
    pub batch: usize,
    pub target: Target,
    pub precision: Precision,
    pub preprocess: Preprocess,
    pub labels: Option<Vec<String>>,
    pub input_name: &'a str,
    pub output_name: &'a str,
    pub notes: Vec<String>,
}

pub fn manifest_for(m: ManifestInput, files: &[ArtifactFile]) -> Manifest {
    let cost = m.graph.cost();
    let i = m.graph.input_shape();
    let classes = m.graph.output_shape().c;
    Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        toolkit_version: env!("CARGO_PKG_VERSION").into(),
        target: m.target,
        precision: m.precision,
        model: ModelInfo {
            variant: m.spec.variant.clone(),
            fused_stages: m.spec.options.fused_stages.to_string(),
            params: cost.params,
            macs: cost.macs,
            options: serde_json::to_value(&m.spec.options).expect("options serialize"),
        },
        input: TensorSpec { name: m.input_name.into(), shape: vec![m.batch, i.c, i.h, i.w], layout: "NCHW".into(), dtype: "float32".into() },
        output: TensorSpec { name: m.output_name.into(), shape: vec![m.batch, classes], layout: "NC".into(), dtype: "float32".into() },
        preprocess: m.preprocess,
        num_classes: classes,
        labels: m.labels,
        files: files
            .iter()
            .map(|f| FileEntry { path: f.path.clone(), role: f.role.clone(), bytes: f.bytes.len() as u64, sha256: sha256_hex(&f.bytes) })
            .collect(),
        notes: m.notes,
        quantization: None,
    }
}

/// Write `files` and `manifest` as the directory `dir`, replacing a previous artifact there.
pub fn write_artifact(dir: &Path, files: &[ArtifactFile], manifest: &Manifest) -> Result<(), ArtifactError> {
    if dir.exists() && !dir.join(MANIFEST_FILE).is_file() {
        let empty = fs::read_dir(dir).map_err(io(dir))?.next().is_none();
        if !empty {
            return Err(ArtifactError::NotAnArtifact(dir.to_path_buf()));
        }
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let result = (|| {
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        for f in files {
            let p = tmp.join(&f.path);
            if let Some(d) = p.parent() {
                fs::create_dir_all(d).map_err(io(d))?;
            }
            write_synced(&p, &f.bytes)?;
        }
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        write_synced(&tmp.join(MANIFEST_FILE), &json)?;
        if dir.exists() {
            fs::rename(dir, &old).map_err(io(dir))?;
        }
        fs::rename(&tmp, dir).map_err(io(dir))?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            let _ = fs::remove_dir_all(&old);
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            if old.exists() && !dir.exists() {
                let _ = fs::rename(&old, dir);
            }
            Err(e)
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}
