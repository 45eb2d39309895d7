//! End to end through the `effv2-bench` binary: a tiny sweep (b0 shape at width/depth 0.25,
//! 64×64, 10 classes), `run --json` on one of its artifacts, and bad inputs failing cleanly.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_effv2-bench");

fn bench(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("effv2-bench starts")
}

fn tiny_sweep(out: &Path, placements: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "sweep", "--target", "cpu", "--model", "efficientnetv2-b0", "--fused-stages", placements, "--image-size", "64",
        "--width", "0.25", "--depth", "0.25", "--num-classes", "10", "--iters", "3", "--warmup", "1", "-o",
    ];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    bench(&args)
}

/// Non-zero exit, an error line naming `want`, and no panic.
fn assert_clean_failure(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    assert!(err.contains(want), "stderr lacks {want:?}: {err}");
}

#[test]
fn sweep_writes_consistent_reports_and_removes_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_sweep(dir.path(), "0..=1", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!dir.path().join("artifacts").exists(), "artifacts kept without --keep-artifacts");

    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    // k = 0 and 1, plus the official placement (first 3 fused) as the baseline.
    let labels: Vec<&str> = rows.iter().map(|r| r["fused_stages"].as_str().unwrap()).collect();
    assert_eq!(labels, ["0", "1", "official"]);
    assert_eq!(rows[2]["baseline_only"], true);
    assert_eq!(rows[2]["official"], true);
    assert_eq!(rows[2]["p50_vs_official"].as_f64(), Some(1.0));
    assert_eq!(rows[0]["stages"], "MMMMMM");
    assert_eq!(json["settings"]["image_size"], 64);
    assert_eq!(json["settings"]["options"]["num_classes"], 10);
    assert_eq!(json["settings"]["options"]["width"], 0.25);
    assert_eq!(json["backend"], "tract");
    assert!(json["machine"]["logical_cores"].as_u64().unwrap() >= 1);

    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
    effv2_bench::svg::check_well_formed(&svg).unwrap();
    assert!(svg.contains("latency (ms)") && svg.contains("parameters (millions)"));
    for r in rows {
        let (p50, params) = (r["latency_ms"]["p50"].as_f64().unwrap(), r["params"].as_u64().unwrap());
        let (p90, macs) = (r["latency_ms"]["p90"].as_f64().unwrap(), r["macs"].as_u64().unwrap());
        assert!(p50 > 0.0 && p90 >= p50 && params > 0 && macs > 0, "{r}");
        let ratio = r["p50_vs_official"].as_f64().unwrap();
        assert!((ratio - p50 / rows[2]["latency_ms"]["p50"].as_f64().unwrap()).abs() < 1e-12);
        let label = r["fused_stages"].as_str().unwrap();
        assert!(md.contains(&format!("{p50:.2}")), "md lacks p50 {p50:.2} of {label}");
        assert!(md.contains(&effv2_bench::report::thousands(params)));
        assert!(svg.contains(&format!(">{label}<")), "svg lacks x label {label}");
    }
    assert_eq!(md.lines().filter(|l| l.starts_with("| ")).count(), 1 + rows.len(), "{md}");
}

/// `--rounds 2`: every placement timed in two interleaved rounds, the samples pooled (2 × 3 per row).
#[test]
fn sweep_rounds_pool_interleaved_samples() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_sweep(dir.path(), "0;2", &["--rounds", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["settings"]["rounds"], 2);
    for r in json["rows"].as_array().unwrap() {
        assert_eq!(r["latency_ms"]["n"].as_u64(), Some(6), "{r}");
    }
    // Round 2 runs the placements in reverse: the official baseline first.
    let order: Vec<&str> = err.lines().filter(|l| l.contains("(round 2)")).map(|l| l.split_whitespace().nth(2).unwrap()).collect();
    assert_eq!(order, ["official", "2", "0"], "{err}");
    assert!(std::fs::read_to_string(dir.path().join("report.md")).unwrap().contains("2 interleaved rounds"));
    assert_clean_failure(&tiny_sweep(dir.path(), "0", &["--rounds", "0"]), "--rounds must be at least 1");
}

#[test]
fn run_json_on_a_sweep_artifact_and_bad_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_sweep(dir.path(), "3", &["--keep-artifacts"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let art = dir.path().join("artifacts/00-3");
    assert!(art.join("manifest.json").is_file());

    let o = bench(&["run", "--artifact", art.to_str().unwrap(), "--iters", "4", "--warmup", "1", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    assert_eq!(stdout.trim().lines().count(), 1, "one JSON object on one line: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    for key in ["p50", "p90", "p99", "min", "mean"] {
        assert!(v["latency_ms"][key].as_f64().unwrap() > 0.0, "latency_ms.{key}");
    }
    assert!(v["throughput_ips"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(v["backend"], "tract");
    assert_eq!(v["latency_ms"]["n"], 4);
    assert_eq!(v["artifact"]["fused_stages"], "3");
    assert_eq!(v["input_shape"], serde_json::json!([1, 3, 64, 64]));

    // An altered model file is refused with the runtime's checksum error.
    let model = art.join("model.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&model, bytes).unwrap();
    assert_clean_failure(&bench(&["run", "--artifact", art.to_str().unwrap(), "--iters", "1"]), "checksum mismatch");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-artifact");
    assert_clean_failure(&bench(&["run", "--artifact", missing.to_str().unwrap()]), "cannot read the manifest");
    let out = dir.path().join("report");
    let out = out.to_str().unwrap();
    let sweep = |extra: &[&str]| {
        let mut a = vec!["sweep", "--model", "efficientnetv2-b0", "-o", out];
        a.extend_from_slice(extra);
        bench(&a)
    };
    assert_clean_failure(&sweep(&["--target", "coral", "--calib-images", "0"]), "--calib-images must be at least 1");
    assert_clean_failure(&sweep(&["--target", "coral", "--calib", "imagenet"]), "not a directory of images");
    assert_clean_failure(&sweep(&["--target", "coral", "--fused-stages", "0..=7"]), "6 stages");
    assert_clean_failure(&sweep(&["--target", "cpu", "--calib", "synthetic"]), "--calib is for --target coral");
    #[cfg(feature = "cuda")]
    if effv2_runtime::cuda::probe_libraries().is_err() {
        assert_clean_failure(&sweep(&["--target", "jetson"]), "no CUDA driver found");
    }
    assert_clean_failure(&sweep(&["--target", "jetson", "--precision", "int8"]), "not int8");
    assert_clean_failure(&sweep(&["--target", "cpu", "--precision", "fp64"]), "sweeps run fp32, fp16, bf16 or int8");
    assert_clean_failure(&sweep(&["--target", "cpu", "--precision", "fp16"]), "fp32 or int8 (cpu)");
    assert_clean_failure(&sweep(&["--target", "tpu"]), "unknown target");
    assert_clean_failure(&sweep(&["--target", "cpu", "--fused-stages", "0..=7"]), "6 stages");
    assert_clean_failure(&sweep(&["--target", "cpu", "--fused-stages", "2..1"]), "empty range");
    assert_clean_failure(&sweep(&["--target", "cpu", "--fused-stages", "none;x"]), "bad --fused-stages");
    assert_clean_failure(&sweep(&["--target", "cpu", "--iters", "0"]), "--iters must be at least 1");
    assert!(!Path::new(out).exists(), "a refused sweep must not create its report directory");
}

/// `train-step` on the CPU engine: a JSON report whose figures hang together (params from the
/// graph, throughput from the mean step, FLOPs from both); the CUDA engine without a driver names it.
#[test]
fn train_step_reports_cpu_throughput_and_names_a_missing_gpu() {
    let args = ["train-step", "--model", "b0", "--width", "0.25", "--depth", "0.25", "--num-classes", "10", "--image-size", "48", "--batch", "4", "--warmup", "1", "--iters", "2"];
    let o = bench(&[&args[..], &["--json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let spec = effv2_edge::spec::ModelSpec::from_name("b0", effv2_edge::spec::ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() }).unwrap();
    let cost = effv2_edge::graph::build(&spec, 48, 48).unwrap().cost();
    assert_eq!(v["params"].as_u64(), Some(cost.params));
    assert_eq!(v["device"], "cpu");
    assert_eq!(v["step_ms"]["n"].as_u64(), Some(2));
    let ips = v["throughput_ips"].as_f64().unwrap();
    assert!((ips - 4.0 / (v["step_ms"]["mean"].as_f64().unwrap() / 1e3)).abs() < 1e-6 * ips, "{v}");
    let tflops = v["achieved_tflops"].as_f64().unwrap();
    assert!((tflops - 6.0 * cost.macs as f64 * ips / 1e12).abs() <= 1e-9 * tflops.max(1e-12), "{v}");
    assert_eq!(v["gpus"].as_u64(), Some(1));
    assert_eq!(v["precision"], "fp32");
    assert_clean_failure(&bench(&[&args[..], &["--precision", "tf32"]].concat()), "--precision tf32 is for --device cuda");
    if effv2_runtime::cuda::probe_libraries().is_err() {
        assert_clean_failure(&bench(&[&args[..], &["--device", "cuda", "--precision", "tf32"]].concat()), "no CUDA driver found");
        assert_clean_failure(&bench(&[&args[..], &["--device", "cuda"]].concat()), "no CUDA driver found");
        assert_clean_failure(&bench(&[&args[..], &["--device", "cuda", "--gpus", "2"]].concat()), "no CUDA driver found");
    }
    assert_clean_failure(&bench(&[&args[..], &["--gpus", "2"]].concat()), "--gpus 2 is for --device cuda");
    assert_clean_failure(&bench(&["train-step", "--model", "b9"]), "b9");
}

/// `--precision int8` on the cpu: each placement calibrated and written as `build --target cpu
/// --precision int8` does (QDQ ONNX), then timed like fp32; `--calib` is refused for fp32.
#[test]
fn sweep_cpu_int8_builds_and_times_quantized_placements() {
    let dir = tempfile::tempdir().unwrap();
    let o = tiny_sweep(dir.path(), "0;6", &["--precision", "int8", "--calib", "synthetic", "--calib-images", "2", "--keep-artifacts"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["settings"]["precision"], "int8");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["stages"].as_str().unwrap()).collect::<Vec<_>>(), ["MMMMMM", "FFFFFF", "FFFMMM"]);
    assert!(rows.iter().all(|r| r["latency_ms"]["p50"].as_f64().unwrap() > 0.0));
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("artifacts/00-0/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["precision"], "int8");
    let onnx = std::fs::read(dir.path().join("artifacts/00-0/model.onnx")).unwrap();
    assert!(onnx.windows(14).any(|w| w == b"QuantizeLinear"), "no QuantizeLinear in the int8 ONNX");
    assert!(!onnx.windows(11).any(|w| w == b"QLinearConv"), "the sweep writes QDQ convolutions, not QLinearConv");
    let fp32 = dir.path().join("fp32");
    assert_clean_failure(&tiny_sweep(&fp32, "0", &["--calib", "synthetic"]), "--calib is for --target coral and --target cpu --precision int8");
}
