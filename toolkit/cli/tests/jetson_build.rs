//! `effv2-edge build --target jetson`: plan.json + weights.bin for our CUDA engine, model.onnx and
//! a manifest with the trtexec commands; without a GPU, running it is a clear error naming what is
//! missing; unsupported precisions fail cleanly.

use std::process::{Command, Output};

fn effv2(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_effv2-edge")).args(args).output().expect("binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const SMALL: &[&str] = &["build", "--target", "jetson", "--model", "b0", "--width", "0.25", "--depth", "0.25", "--num-classes", "10", "--image-size", "64"];

#[test]
fn jetson_build_writes_onnx_and_trtexec_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("art");
    let o = out.to_str().unwrap();
    let mut args = SMALL.to_vec();
    args.extend(["--batch", "4", "-o", o]);
    let r = effv2(&args);
    let t = text(&r);
    assert!(r.status.success(), "{t}");
    assert!(t.contains("for jetson (fp16)") && t.contains("trtexec --onnx=model.onnx --fp16 --shapes=input:4x3x64x64"), "{t}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!((m["target"].as_str(), m["precision"].as_str()), (Some("jetson"), Some("fp16")));
    assert!(m["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().starts_with("trtexec --loadEngine=model_fp16.plan")));
    assert!(out.join("model.onnx").is_file());
    let roles: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["model", "cuda_plan", "cuda_weights"]);
    let plan = effv2_runtime::plan::NetPlan::from_json(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan.input, [3, 64, 64]);
    assert_eq!(std::fs::metadata(out.join("weights.bin")).unwrap().len() as usize, plan.weights_len * 4);

    // The same ONNX as the cpu target's (one writer).
    let cpu = tmp.path().join("cpu");
    let mut args = SMALL.to_vec();
    args[2] = "cpu";
    args.extend(["--batch", "4", "-o", cpu.to_str().unwrap()]);
    assert!(effv2(&args).status.success());
    assert_eq!(std::fs::read(cpu.join("model.onnx")).unwrap(), std::fs::read(out.join("model.onnx")).unwrap());

    // Runs on a CUDA GPU; elsewhere a clear error naming the missing piece, no panic.
    let r = effv2(&["eval", "--artifact", o, "--limit", "1"]);
    let t = text(&r);
    if effv2_runtime::cuda::probe_libraries().is_ok() {
        assert!(r.status.success(), "{t}");
    } else {
        assert!(!r.status.success() && !t.contains("panicked") && t.contains("backend \"cuda\" is not available: no CUDA driver found"), "{t}");
    }
}

#[test]
fn jetson_int8_is_explicit_qdq_onnx_for_tensorrt() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("int8");
    let mut args = SMALL.to_vec();
    args.extend(["--precision", "int8", "--calib", "synthetic", "--calib-images", "8", "-o", out.to_str().unwrap()]);
    let r = effv2(&args);
    let t = text(&r);
    assert!(r.status.success(), "{t}");
    assert!(t.contains("for jetson (int8)") && t.contains("trtexec --onnx=model.onnx --int8 --fp16") && t.contains("SYNTHETIC"), "{t}");
    assert!(out.join("model.onnx").is_file() && !out.join("plan.json").exists());
    // Our CUDA engine runs fp16/bf16/fp32 only: said plainly, with or without a GPU.
    let r = effv2(&["eval", "--artifact", out.to_str().unwrap(), "--limit", "1"]);
    let t = text(&r);
    assert!(!r.status.success() && !t.contains("panicked") && t.contains("runs fp32, fp16 and bf16 artifacts, not int8"), "{t}");
}

#[test]
fn jetson_bf16_build_names_its_precision_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bf16");
    let mut args = SMALL.to_vec();
    args.extend(["--precision", "bf16", "-o", out.to_str().unwrap()]);
    let r = effv2(&args);
    let t = text(&r);
    assert!(r.status.success() && t.contains("for jetson (bf16)") && t.contains("trtexec --onnx=model.onnx --bf16"), "{t}");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["precision"].as_str(), Some("bf16"));
    assert!(out.join("plan.json").is_file() && out.join("weights.bin").is_file());
}

#[test]
fn unsupported_jetson_options_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("art");
    for (extra, needle) in [(vec!["--precision", "int8"], "needs --calib SRC"), (vec!["--no-compile"], "for --target coral")] {
        let mut args = SMALL.to_vec();
        args.extend(extra);
        args.extend(["-o", out.to_str().unwrap()]);
        let r = effv2(&args);
        assert!(!r.status.success() && !text(&r).contains("panicked") && text(&r).contains(needle), "{args:?}: {}", text(&r));
        assert!(!out.exists());
    }
    for p in ["fp16", "bf16"] {
        let r = effv2(&["build", "--target", "cpu", "--precision", p, "--model", "b0", "-o", out.to_str().unwrap()]);
        assert!(!r.status.success() && text(&r).contains("fp32 or int8"), "{}", text(&r));
    }
}
