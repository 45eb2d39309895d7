//! The Python peers the targets tests run against (onnxruntime, LiteRT), from the `.venv-ci` that
//! scripts/setup-python.sh makes (or `EFFV2_PYTHON`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use effv2_edge::io::npy;
use effv2_edge::Tensor;

/// The Python with onnxruntime and ai-edge-litert.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("EFFV2_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ci/bin/python");
    assert!(venv.exists(), "Python peers missing: run ./scripts/setup-python.sh (./scripts/test.sh does)");
    venv
}

/// A script under `scripts/py/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/py").join(name)
}

/// Logits from onnxruntime (1 thread) for `model.onnx` in `dir` on `x`.
pub fn onnxruntime(dir: &Path, x: &Tensor) -> Vec<f32> {
    let (xi, yo) = (dir.join("ort_in.npy"), dir.join("ort_out.npy"));
    npy::write_f32(&xi, x).unwrap();
    let out = Command::new(python()).arg(script("ort_run.py")).arg(dir.join("model.onnx")).arg(&xi).arg(&yo).output().unwrap();
    assert!(out.status.success(), "onnxruntime failed: {}", String::from_utf8_lossy(&out.stderr));
    npy::read_f32(&yo).unwrap().into_data()
}
