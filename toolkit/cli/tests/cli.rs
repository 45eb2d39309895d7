//! End-to-end tests of the `effv2-edge` binary: outputs, exit codes, and bad input.

use std::process::{Command, Output};

fn effv2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effv2-edge")).args(args).output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure: non-zero exit, a message, and no Rust panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {}", stdout(o));
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

#[test]
fn list_prints_every_variant() {
    let o = effv2(&["list", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 8);
    assert!(names.contains(&"efficientnetv2-xl"));
    let text = stdout(&effv2(&["list"]));
    assert!(text.contains("efficientnetv2-b0") && text.contains("7,139,704"), "{text}");
}

#[test]
fn inspect_json_has_integer_params_and_macs() {
    let o = effv2(&["inspect", "--model", "efficientnetv2-s", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["params"].as_u64(), Some(21_458_488));
    assert!(v["macs"].as_u64().unwrap() > 8_000_000_000);
    assert_eq!(v["image_size"], serde_json::json!([384, 384]));

    let o = effv2(&["inspect", "--model", "b0", "--fused-stages", "none", "--image-size", "224", "--num-classes", "10", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["stages"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert!(kinds.iter().all(|k| *k == "mbconv"), "{kinds:?}");
    assert_eq!(v["num_classes"], 10);

    let o = effv2(&["inspect", "--model", "b0", "--fused-stages", "0,1,3"]);
    let text = stdout(&o);
    assert!(text.contains("fused stages: 0,1,3"), "{text}");
}

#[test]
fn bad_model_arguments_fail_cleanly() {
    assert_clean_failure(&effv2(&["inspect", "--model", "efficientnetv2-q"]), "unknown variant \"efficientnetv2-q\"");
    assert_clean_failure(&effv2(&["inspect", "--model", "b0", "--fused-stages", "9"]), "names stage 9");
    assert_clean_failure(&effv2(&["inspect", "--model", "b0", "--fused-stages", "x"]), "bad --fused-stages");
    assert_clean_failure(&effv2(&["inspect", "--model", "b0", "--image-size", "0"]), "out of range");
    assert_clean_failure(&effv2(&["inspect", "--model", "b0", "--width=-1"]), "width multiplier");
}

#[test]
fn import_errors_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ckpt.safetensors");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let o = effv2(&["import", "--from", "timm-tf", "--model", "b0", "--weights", junk.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_clean_failure(&o, "not a valid safetensors file");
    assert!(!out.exists());
    let o = effv2(&["import", "--from", "keras", "--model", "b0", "--weights", "x", "-o", "y"]);
    assert_clean_failure(&o, "unknown layout");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the junk file remains");
}
