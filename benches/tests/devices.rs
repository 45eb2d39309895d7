//! `effv2-bench devices`: the backends' findings as text and JSON, and `--require` failing (exit
//! status 1, naming why) exactly when a required target is not ready — on the stand-in TFLite /
//! libedgetpu libraries of runtimes/tests/stub, in the child's environment only.

#[path = "../../runtimes/tests/stub/mod.rs"]
mod stub;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_effv2-bench");

/// `effv2-bench devices ARGS` with the stub libraries and `edge_tpus` stub Edge TPUs.
fn devices(args: &[&str], edge_tpus: usize) -> Output {
    let stubs = stub::stubs(Path::new(env!("CARGO_TARGET_TMPDIR")));
    Command::new(BIN)
        .arg("devices")
        .args(args)
        .env("EFFV2_TFLITE_C", &stubs.tflite)
        .env("EFFV2_EDGETPU_LIB", &stubs.edgetpu)
        .env("EFFV2_STUB_EDGETPU_DEVICES", edge_tpus.to_string())
        .output()
        .expect("effv2-bench starts")
}

fn backend<'a>(report: &'a Value, target: &str) -> &'a Value {
    report["backends"].as_array().unwrap().iter().find(|b| b["target"] == target).unwrap_or_else(|| panic!("no {target} in {report}"))
}

#[test]
fn devices_reports_each_backend_and_require_fails_only_when_one_is_not_ready() {
    // One Edge TPU: cpu and coral ready.
    let o = devices(&["--json", "--require", "cpu,coral"], 1);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["backends"].as_array().unwrap().len(), 3);
    assert!(r["machine"]["logical_cores"].as_u64().unwrap() >= 1);
    assert_eq!(backend(&r, "cpu")["readiness"], "ready");
    let coral = backend(&r, "coral");
    assert_eq!((&coral["name"], &coral["readiness"]), (&Value::from("edgetpu"), &Value::from("ready")), "{coral}");
    assert_eq!(coral["devices"], serde_json::json!(["usb /sys/bus/usb/devices/stub-1"]));
    // The CUDA backend is compiled into the bench binary; without a driver it says so.
    let cuda = backend(&r, "jetson");
    assert_eq!(cuda["compiled"], true);
    if cuda["readiness"] != "ready" {
        assert!(cuda["detail"].as_str().unwrap().starts_with("no "), "{cuda}");
    }
    assert!(r["nccl"].is_boolean(), "{r}");

    // No Edge TPU: coral falls back to the CPU, and --require coral fails naming why, after the findings.
    let o = devices(&["--require", "coral"], 0);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("coral artifacts (edgetpu): cpu fallback") && text.contains("cpu artifacts (tract): ready"), "{text}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not ready on this machine: coral (edgetpu, cpu fallback)") && err.contains("lists no Edge TPU"), "{err}");

    // jetson with no GPU here: the failure names the missing driver (a GPU machine passes).
    if cuda["readiness"] != "ready" {
        let o = devices(&["--require", "jetson"], 1);
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("jetson (cuda, unavailable): no "), "{err}");
    }

    // A target that does not exist is refused by the parser.
    let o = devices(&["--require", "tpu"], 1);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown target \"tpu\""));
}
