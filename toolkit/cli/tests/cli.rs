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

fn fixture(case: &str, file: &str) -> String {
    format!("{}/../tests/fixtures/peers/{case}/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// import + run through the binary reproduce the peer's logits; bad inputs fail cleanly.
#[test]
fn import_then_run_matches_peer_and_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let ckpt = d("tv.safetensors");
    let o = effv2(&[
        "import", "--from", "torchvision", "--model", "efficientnetv2-s", "--width", "0.25", "--depth", "0.25",
        "--num-classes", "10", "--weights", &fixture("torchvision_s_w025", "weights.safetensors"), "-o", &ckpt,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = effv2(&["run", "--checkpoint", &ckpt, "--input", &fixture("torchvision_s_w025", "input.npy"), "--output", &d("y.npy")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = effv2_edge::io::npy::read_f32(std::path::Path::new(&d("y.npy"))).unwrap();
    let want = effv2_edge::io::npy::read_f32(std::path::Path::new(&fixture("torchvision_s_w025", "logits.npy"))).unwrap();
    assert!(got.max_abs_diff(&want).unwrap() / want.max_abs() < 1e-4);

    // A state dict imported as the wrong layout or variant names the key.
    let o = effv2(&["import", "--from", "timm", "--model", "s", "--width", "0.25", "--depth", "0.25", "--num-classes", "10",
        "--weights", &fixture("torchvision_s_w025", "weights.safetensors"), "-o", &d("bad.safetensors")]);
    assert_clean_failure(&o, "missing key \"conv_stem.weight\"");
    let o = effv2(&["import", "--from", "torchvision", "--model", "m", "--width", "0.25", "--depth", "0.25", "--num-classes", "10",
        "--weights", &fixture("torchvision_s_w025", "weights.safetensors"), "-o", &d("bad.safetensors")]);
    assert_clean_failure(&o, "key \"features.");
    assert!(!dir.path().join("bad.safetensors").exists());

    // Wrong dtype, wrong shape, not a checkpoint: clear errors, and the old output survives.
    let f64_npy = d("x64.npy");
    let mut bytes = std::fs::read(fixture("torchvision_s_w025", "input.npy")).unwrap();
    let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
    bytes[at..at + 3].copy_from_slice(b"<f8");
    std::fs::write(&f64_npy, &bytes).unwrap();
    let before = std::fs::read(d("y.npy")).unwrap();
    assert_clean_failure(&effv2(&["run", "--checkpoint", &ckpt, "--input", &f64_npy, "--output", &d("y.npy")]), "expected float32");
    let x3 = d("x3.npy");
    effv2_edge::io::npy::write_f32(std::path::Path::new(&x3), &effv2_edge::Tensor::zeros(vec![1, 1, 32, 32])).unwrap();
    assert_clean_failure(&effv2(&["run", "--checkpoint", &ckpt, "--input", &x3, "--output", &d("y.npy")]), "expected [N>=1, 3, H, W]");
    effv2_edge::io::npy::write_f32(std::path::Path::new(&x3), &effv2_edge::Tensor::zeros(vec![3, 32, 32])).unwrap();
    assert_clean_failure(&effv2(&["run", "--checkpoint", &ckpt, "--input", &x3, "--output", &d("y.npy")]), "expected 4 dimensions");
    let peer = fixture("torchvision_s_w025", "weights.safetensors");
    assert_clean_failure(&effv2(&["run", "--checkpoint", &peer, "--input", &x3, "--output", &d("y.npy")]), "not an effv2-edge checkpoint");
    assert_eq!(std::fs::read(d("y.npy")).unwrap(), before);

    // A truncated checkpoint.
    let ck = std::fs::read(&ckpt).unwrap();
    std::fs::write(d("cut.safetensors"), &ck[..ck.len() / 2]).unwrap();
    assert_clean_failure(&effv2(&["run", "--checkpoint", &d("cut.safetensors"), "--input", &x3, "--output", &d("z.npy")]), "not a valid safetensors");
    assert!(!dir.path().join("z.npy").exists());
}

#[test]
fn predict_prints_top_classes_and_rejects_non_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let labels = d("labels.txt");
    std::fs::write(&labels, (0..10).map(|i| format!("thing {i}\n")).collect::<String>()).unwrap();
    let ckpt = d("b0.safetensors");
    let o = effv2(&[
        "import", "--from", "timm-tf", "--model", "b0", "--width", "0.25", "--depth", "0.5", "--num-classes", "10",
        "--labels", &labels, "--size", "64", "--weights", &fixture("timm-tf_b0_w025", "weights.safetensors"), "-o", &ckpt,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let png = d("a.png");
    image::RgbImage::from_fn(90, 70, |x, y| image::Rgb([(x * 3) as u8, (y * 3) as u8, 128])).save(&png).unwrap();
    let jpg = d("b.jpg");
    image::RgbImage::from_fn(50, 80, |x, y| image::Rgb([(y * 3) as u8, 200, (x * 5) as u8])).save(&jpg).unwrap();
    let o = effv2(&["predict", "--checkpoint", &ckpt, &png, &jpg, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    let top = v[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    assert!(top[0]["label"].as_str().unwrap().starts_with("thing "));
    let total: f64 = top.iter().map(|t| t["prob"].as_f64().unwrap()).sum();
    assert!(total > 0.0 && total <= 1.0001);
    let text = stdout(&effv2(&["predict", "--checkpoint", &ckpt, &png]));
    assert!(text.contains("thing ") && text.contains('%'), "{text}");

    // The same model built for the CPU and run as deployed (tract): the same classes, labels from
    // the manifest, probabilities within f32 rounding of the reference engine's.
    let art = d("art");
    let o = effv2(&["build", "--target", "cpu", "--checkpoint", &ckpt, "-o", &art]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = effv2(&["predict", "--artifact", &art, &png, &jpg, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (a, b) in v.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
        for (x, y) in a["top"].as_array().unwrap().iter().zip(b["top"].as_array().unwrap()) {
            assert_eq!((&x["class"], &x["label"]), (&y["class"], &y["label"]));
            assert!((x["prob"].as_f64().unwrap() - y["prob"].as_f64().unwrap()).abs() < 1e-4, "{x} vs {y}");
        }
    }
    assert!(stderr(&o).contains("cpu fp32 on cpu"), "{}", stderr(&o));
    assert_clean_failure(&effv2(&["predict", "--checkpoint", &ckpt, "--artifact", &art, &png]), "cannot be used with");
    assert_clean_failure(&effv2(&["predict", "--artifact", &d("nowhere"), &png]), "nowhere");

    let txt = d("notes.png");
    std::fs::write(&txt, b"this is not an image").unwrap();
    assert_clean_failure(&effv2(&["predict", "--checkpoint", &ckpt, &png, &txt]), "not a readable PNG/JPEG image");
    assert_clean_failure(&effv2(&["predict", "--checkpoint", &ckpt, &d("missing.png")]), "missing.png");
}
