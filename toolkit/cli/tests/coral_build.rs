//! `effv2-edge build --target coral` from the command line: the artifact and what the terminal
//! says, and every bad calibration input failing cleanly with nothing written.

use std::path::Path;
use std::process::{Command, Output};

/// Run with an empty PATH so no edgetpu_compiler can be found (the binary is run by path).
fn effv2(args: &[&str], path_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effv2-edge")).args(args).env("PATH", path_dir).output().expect("binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const SMALL: &[&str] = &["build", "--target", "coral", "--model", "b0", "--width", "0.25", "--depth", "0.25", "--num-classes", "10", "--image-size", "64"];

#[test]
fn coral_build_writes_the_artifact_and_says_what_it_did() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("art");
    let mut args = SMALL.to_vec();
    args.extend(["--calib", "synthetic", "--calib-images", "4", "--calib-method", "minmax", "--io", "uint8", "-o", out.to_str().unwrap()]);
    let o = effv2(&args, tmp.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for want in ["for coral (int8, uint8 I/O)", "Edge TPU ops: ", "on-chip cache (fits)", "predicted latency", "measured: no device", "edgetpu_compiler not found on PATH", "warning: SYNTHETIC"] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
    for f in ["manifest.json", "model_int8.tflite", "edgetpu_report.json", "edgetpu_report.md"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((m["target"].as_str(), m["precision"].as_str(), m["input"]["dtype"].as_str()), (Some("coral"), Some("int8"), Some("uint8")));
    assert_eq!(m["quantization"]["method"], "minmax");
}

#[test]
fn bad_calibration_input_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let junk = tmp.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("x.jpg"), "not a jpeg").unwrap();
    let out = tmp.path().join("art");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--target coral needs --calib SRC"),
        (vec!["--calib", "imagenet"], "is not a directory of images, `fashion-mnist` or `synthetic`"),
        (vec!["--calib", empty.to_str().unwrap()], "no PNG/JPEG images under"),
        (vec!["--calib", junk.to_str().unwrap()], "not a readable PNG/JPEG image"),
        (vec!["--calib", "synthetic", "--calib-images", "0"], "--calib-images must be at least 1"),
        (vec!["--calib", "synthetic", "--batch", "2"], "batch 1"),
        (vec!["--calib", "synthetic", "--calib-method", "kl"], "invalid value 'kl'"),
    ];
    for (extra, needle) in cases {
        let mut args = SMALL.to_vec();
        args.extend(extra);
        args.extend(["-o", o]);
        let r = effv2(&args, tmp.path());
        let t = text(&r);
        assert!(!r.status.success() && !t.contains("panicked") && t.contains(needle), "{args:?}: wanted {needle:?} in:\n{t}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    // Calibration flags are refused for the fp32 cpu target.
    let r = effv2(&["build", "--target", "cpu", "--model", "b0", "--calib", "synthetic", "-o", o], tmp.path());
    assert!(!r.status.success() && text(&r).contains("add --precision int8"), "{}", text(&r));
    for (args, needle) in [
        (vec!["build", "--target", "cpu", "--precision", "int8", "--model", "b0", "-o", o], "--precision int8 needs --calib SRC"),
        (vec!["build", "--target", "coral", "--precision", "fp32", "--model", "b0", "--calib", "synthetic", "-o", o], "int8 only"),
    ] {
        let r = effv2(&args, tmp.path());
        assert!(!r.status.success() && !text(&r).contains("panicked") && text(&r).contains(needle), "{args:?}: {}", text(&r));
        assert!(!out.exists());
    }
}

/// `--target cpu --precision int8`: a QOperator ONNX with the calibration in its manifest.
#[test]
fn cpu_int8_build_writes_an_int8_onnx_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("art");
    let mut args = SMALL.to_vec();
    args[2] = "cpu";
    args.extend(["--precision", "int8", "--calib", "synthetic", "--calib-images", "4", "--batch", "2", "-o", out.to_str().unwrap()]);
    let o = effv2(&args, tmp.path());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("for cpu (int8)") && t.contains("calibration: synthetic (4 images"), "{t}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((m["target"].as_str(), m["precision"].as_str(), m["input"]["dtype"].as_str()), (Some("cpu"), Some("int8"), Some("float32")));
    assert_eq!(m["input"]["shape"][0], 2);
    let has = |path: &Path, op: &[u8]| std::fs::read(path.join("model.onnx")).unwrap().windows(op.len()).any(|w| w == op);
    // Default form: QDQ around float Conv.
    assert!(has(&out, b"DequantizeLinear") && !has(&out, b"QLinearConv"));
    args.extend(["--int8-onnx", "qlinear"]);
    let o = effv2(&args, tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(has(&out, b"QLinearConv"), "no QLinearConv in model.onnx");
    *args.last_mut().unwrap() = "qint4";
    let o = effv2(&args, tmp.path());
    assert!(!o.status.success() && text(&o).contains("unknown int8 ONNX form"), "{}", text(&o));
}
