//! The coral backend's failure modes on hand-made artifacts: not compiled in, a missing or wrong
//! TFLite library, a malformed model file, an incomplete manifest — each a typed error naming the
//! problem, never a panic. Runs on real artifacts are in targets/tests/coral_runtime.rs.

#![cfg_attr(not(feature = "edgetpu"), allow(dead_code, unused_imports))]

#[path = "stub/mod.rs"]
mod stub;

use std::path::Path;

use effv2_runtime::manifest::sha256_hex;
use effv2_runtime::{open, OpenOptions, RuntimeError};

/// A coral artifact directory with `model` as `model_int8.tflite` (and a `quantization` section
/// unless `quantized` is false).
fn artifact(dir: &Path, model: &[u8], quantized: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("model_int8.tflite"), model).unwrap();
    let q = r#", "quantization": {"input": {"dtype": "int8", "scale": 0.02, "zero_point": -3},
        "output": {"dtype": "int8", "scale": 0.1, "zero_point": 2}, "method": "minmax",
        "calibration": "synthetic", "calibration_images": 1, "synthetic_calibration": true}"#;
    let manifest = format!(
        r#"{{"format": "effv2-edge-artifact", "format_version": 1, "toolkit_version": "test", "target": "coral",
           "precision": "int8",
           "model": {{"variant": "efficientnetv2-b0", "fused_stages": "official", "params": 1, "macs": 1, "options": {{}}}},
           "input": {{"name": "input", "shape": [1, 8, 8, 3], "layout": "NHWC", "dtype": "int8"}},
           "output": {{"name": "logits", "shape": [1, 4], "layout": "NC", "dtype": "int8"}},
           "preprocess": {{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "size": 8,
                           "crop_pct": 1.0, "crop": "center"}},
           "num_classes": 4,
           "files": [{{"path": "model_int8.tflite", "role": "model", "bytes": {}, "sha256": "{}"}}]{}}}"#,
        model.len(),
        sha256_hex(model),
        if quantized { q } else { "" }
    );
    std::fs::write(dir.join("manifest.json"), manifest).unwrap();
}

fn open_err(dir: &Path) -> RuntimeError {
    match open(dir, &OpenOptions::default()) {
        Ok(rt) => panic!("opened on {}", rt.device()),
        Err(e) => e,
    }
}

#[cfg(not(feature = "edgetpu"))]
#[test]
fn coral_artifacts_need_the_edgetpu_feature() {
    let tmp = tempfile::tempdir().unwrap();
    artifact(tmp.path(), b"TFL3", true);
    let e = open_err(tmp.path());
    assert!(matches!(&e, RuntimeError::Unavailable { backend, .. } if backend == "edgetpu"), "{e}");
    assert!(e.to_string().contains("not compiled in") && e.to_string().contains("`edgetpu`"), "{e}");
}

#[cfg(feature = "edgetpu")]
mod with_backend {
    use super::*;
    use effv2_runtime::{EDGETPU_ENV, TFLITE_ENV};
    use stub::with_env;

    #[test]
    fn a_missing_tflite_library_is_unavailable_with_an_install_hint() {
        let tmp = tempfile::tempdir().unwrap();
        artifact(tmp.path(), b"not a model", true);
        let missing = tmp.path().join("no/libtensorflowlite_c.so");
        let e = with_env(&[(TFLITE_ENV, missing.as_os_str())], || open_err(tmp.path()));
        let RuntimeError::Unavailable { backend, why } = &e else { panic!("{e}") };
        assert_eq!(backend, "edgetpu");
        for want in ["libtensorflowlite_c not found", "EFFV2_TFLITE_C names a file", &missing.display().to_string(), "tensorflow/lite/c"] {
            assert!(why.contains(want), "{want:?} missing from: {why}");
        }
    }

    #[test]
    fn a_library_without_the_c_api_is_refused_by_symbol() {
        let tmp = tempfile::tempdir().unwrap();
        let stubs = stub::stubs(Path::new(env!("CARGO_TARGET_TMPDIR")));
        artifact(tmp.path(), b"not a model", true);
        // libedgetpu's stub exports no TfLite* symbol.
        let e = with_env(&[(TFLITE_ENV, stubs.edgetpu.as_os_str())], || open_err(tmp.path()));
        assert!(matches!(&e, RuntimeError::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains("symbol TfLiteVersion not found"), "{e}");
    }

    #[test]
    fn malformed_artifacts_are_typed_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let stubs = stub::stubs(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let env = [(TFLITE_ENV, stubs.tflite.as_os_str()), (EDGETPU_ENV, stubs.edgetpu.as_os_str())];
        // Not a flatbuffer: TfLiteModelCreate's NULL, reported against the file.
        let bad = tmp.path().join("bad");
        artifact(&bad, b"\0\0\0\0TFL3 truncated", true);
        let e = with_env(&env, || open_err(&bad));
        assert!(matches!(&e, RuntimeError::Artifact { path, .. } if path.ends_with("model_int8.tflite")), "{e}");
        assert!(e.to_string().contains("not a valid .tflite"), "{e}");
        // No quantization section: nothing says how to feed the integers.
        let unq = tmp.path().join("unquantized");
        artifact(&unq, b"whatever", false);
        let e = with_env(&env, || open_err(&unq));
        assert!(e.to_string().contains("`quantization` section"), "{e}");
    }
}
