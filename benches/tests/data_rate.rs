//! `effv2-bench data`: the training data pipeline's images/s on synthetic JPEGs (kept for a peer
//! to read, and read back as an ImageFolder), and its refusals: a non-empty directory is never
//! written into, bad sizes and missing data are named.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_effv2-bench");

fn data(args: &[&str]) -> Output {
    Command::new(BIN).arg("data").args(args).output().expect("effv2-bench starts")
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn failure(o: &Output) -> String {
    assert!(!o.status.success(), "succeeded: {}", String::from_utf8_lossy(&o.stdout));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn jpegs(dir: &Path) -> usize {
    ["0", "1"].iter().map(|c| std::fs::read_dir(dir.join(c)).unwrap().count()).sum()
}

#[test]
fn synthetic_jpegs_through_the_training_pipeline_and_back_as_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let kept = tmp.path().join("jpegs");
    let small = ["--batches", "2", "--batch", "4", "--image-size", "32", "--workers", "2", "--json"];
    let r = json(&data(&[&small[..], &["--keep-synthetic", kept.to_str().unwrap(), "--mixup", "0.2"]].concat()));
    assert!(r["source"].as_str().unwrap().starts_with("synthetic: 64 JPEGs 500x375"), "{r}");
    assert_eq!((r["batch"].as_u64(), r["workers"].as_u64(), r["channels"].as_u64(), r["image_size"].as_u64()), (Some(4), Some(2), Some(3), Some(32)));
    assert_eq!(r["batch_ms"]["n"], 2);
    let ips = r["images_per_s"].as_f64().unwrap();
    assert!(ips > 0.0 && (r["images_per_s_per_worker"].as_f64().unwrap() - ips / 2.0).abs() < 1e-6 * ips, "{r}");
    assert_eq!(jpegs(&kept), 64);

    // The kept folder reads back as an ImageFolder.
    let r = json(&data(&[&small[..], &["--data", kept.to_str().unwrap()]].concat()));
    assert!(r["source"].as_str().unwrap().ends_with("(64 images, 2 classes)"), "{r}");

    // It is never written into again.
    let err = failure(&data(&[&small[..], &["--keep-synthetic", kept.to_str().unwrap()]].concat()));
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(jpegs(&kept), 64);
}

#[test]
fn bad_arguments_are_named() {
    let err = failure(&data(&["--batch", "0"]));
    assert!(err.contains("must be positive"), "{err}");
    let err = failure(&data(&["--data", "/nonexistent/images"]));
    assert!(err.contains("/nonexistent/images"), "{err}");
    // The cause is printed once, not once per layer of the error chain.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let err = failure(&data(&["--data", "fashion-mnist", "--keep-synthetic", "/tmp/x"]));
    assert!(err.contains("--keep-synthetic is for --data synthetic"), "{err}");
}
