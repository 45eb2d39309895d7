//! Coral artifacts through the `effv2-bench` binary and effv2-runtime's edgetpu backend, on the
//! stand-in TFLite/libedgetpu libraries of runtimes/tests/stub (environment of the child process
//! only): `run` on TFLite's CPU kernels and on a (stub) Edge TPU, the coral sweep counting only
//! Edge TPU runs as measured, and a missing library failing cleanly.

#[path = "../../runtimes/tests/stub/mod.rs"]
mod stub;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_effv2-bench");

/// `effv2-bench` with the stub libraries and `devices` stub Edge TPUs; `path` prepended to PATH.
fn bench(args: &[&str], devices: usize, path: Option<&Path>) -> Output {
    let stubs = stub::stubs(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let mut c = Command::new(BIN);
    c.args(args)
        .env("EFFV2_TFLITE_C", &stubs.tflite)
        .env("EFFV2_EDGETPU_LIB", &stubs.edgetpu)
        .env("EFFV2_STUB_EDGETPU_DEVICES", devices.to_string());
    if let Some(p) = path {
        let old = std::env::var_os("PATH").unwrap_or_default();
        c.env("PATH", std::env::join_paths(std::iter::once(p.to_path_buf()).chain(std::env::split_paths(&old))).unwrap());
    }
    c.output().expect("effv2-bench starts")
}

fn ok_json(o: Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A stand-in edgetpu_compiler: copies MODEL to OUTDIR/<name>_edgetpu.tflite (args: -s -o OUTDIR MODEL).
fn fake_compiler(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = "#!/bin/sh\nout=\"$3\"; model=\"$4\"; base=$(basename \"${model%.tflite}\")\ncp \"$model\" \"$out/${base}_edgetpu.tflite\"\necho 'Edge TPU Compiler version 16.0.384591198'\n";
    let exe = dir.join("edgetpu_compiler");
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.to_path_buf()
}

fn tiny_coral_sweep(out: &Path, devices: usize, path: Option<&Path>) -> Value {
    let args = [
        "sweep", "--target", "coral", "--model", "efficientnetv2-b0", "--fused-stages", "3", "--image-size", "32", "--width",
        "0.25", "--depth", "0.25", "--num-classes", "10", "--calib-images", "2", "--iters", "3", "--warmup", "1",
        "--keep-artifacts", "-o", out.to_str().unwrap(),
    ];
    let o = bench(&args, devices, path);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn run_and_sweep_coral_artifacts_through_the_edgetpu_backend() {
    let tmp = tempfile::tempdir().unwrap();
    // No Edge TPU: the sweep builds and runs the artifact on TFLite's CPU kernels, which it does not
    // count as a measurement of the Edge TPU.
    let r = tiny_coral_sweep(&tmp.path().join("cpu"), 0, None);
    let status = r["rows"][0]["measured"]["status"].as_str().unwrap();
    assert!(status.starts_with("no device (edgetpu ran it on cpu") && status.contains("lists no Edge TPU"), "{status}");
    assert!(r["rows"][0]["measured"]["latency_ms"].is_null() && r["device"] == "no device");

    let art = tmp.path().join("cpu/artifacts/00-3");
    let v = ok_json(bench(&["run", "--artifact", art.to_str().unwrap(), "--iters", "3", "--warmup", "1", "--threads", "2", "--json"], 0, None));
    assert_eq!((v["backend"].as_str(), v["on_accelerator"].as_bool()), (Some("edgetpu"), Some(false)));
    assert!(v["device"].as_str().unwrap().contains("TFLite CPU kernels, 2 threads"), "{v}");
    assert_eq!(v["input_shape"], serde_json::json!([1, 3, 32, 32]));
    assert_eq!(v["artifact"]["precision"], "int8");
    assert!(v["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // A (stub) Edge TPU and an edgetpu_compiler on PATH: compiled model, delegate, measured.
    let bin = fake_compiler(&tmp.path().join("bin"));
    let r = tiny_coral_sweep(&tmp.path().join("tpu"), 1, Some(&bin));
    let row = &r["rows"][0];
    assert!(row["measured"]["status"].as_str().unwrap().starts_with("edgetpu on Edge TPU usb"), "{row}");
    assert!(row["measured"]["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(r["device"].as_str().unwrap().contains("Edge TPU"), "{r}");
    let art = tmp.path().join("tpu/artifacts/00-3");
    assert!(art.join("model_int8_edgetpu.tflite").is_file());
    let v = ok_json(bench(&["run", "--artifact", art.to_str().unwrap(), "--iters", "2", "--json"], 1, None));
    assert_eq!(v["on_accelerator"], true);
}

#[test]
fn a_missing_tflite_library_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_coral_sweep(&tmp.path().join("s"), 0, None);
    let art = tmp.path().join("s/artifacts/00-3");
    let o = Command::new(BIN)
        .args(["run", "--artifact", art.to_str().unwrap(), "--iters", "1"])
        .env("EFFV2_TFLITE_C", tmp.path().join("missing.so"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    assert!(err.contains("libtensorflowlite_c not found") && err.contains("EFFV2_TFLITE_C"), "{err}");
}
