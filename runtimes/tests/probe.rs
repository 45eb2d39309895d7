//! `effv2_runtime::probe`: what each backend reports about this machine — the CPU always, coral
//! on the stand-in TFLite / libedgetpu libraries of tests/stub (none, no Edge TPU, two), and the
//! CUDA backend's missing driver here (its GPUs where there is one).

#![cfg_attr(not(feature = "edgetpu"), allow(dead_code, unused_imports))]

#[path = "stub/mod.rs"]
mod stub;

use std::ffi::OsStr;
use std::path::Path;

use effv2_runtime::{probe, BackendStatus, Readiness, Target};
use stub::with_env;

fn status(target: Target) -> BackendStatus {
    let all = probe();
    assert_eq!(all.iter().map(|s| s.target).collect::<Vec<_>>(), [Target::Cpu, Target::Coral, Target::Jetson]);
    all.into_iter().find(|s| s.target == target).unwrap()
}

#[cfg(feature = "tract")]
#[test]
fn the_cpu_backend_is_ready_and_names_its_kernels() {
    let s = status(Target::Cpu);
    assert_eq!((s.name, s.compiled, s.readiness), ("tract", true, Readiness::Ready), "{s:?}");
    assert!(s.detail.contains(std::env::consts::ARCH) && s.detail.contains("logical cores") && s.detail.contains("depthwise"), "{}", s.detail);
    assert!(s.devices.is_empty());
}

#[cfg(not(feature = "edgetpu"))]
#[test]
fn coral_without_the_feature_says_how_to_get_it() {
    let s = status(Target::Coral);
    assert_eq!((s.compiled, s.readiness), (false, Readiness::Unavailable));
    assert!(s.detail.contains("`edgetpu` cargo feature"), "{}", s.detail);
}

#[cfg(feature = "edgetpu")]
#[test]
fn coral_reports_its_libraries_and_edge_tpus() {
    use effv2_runtime::{EDGETPU_ENV, TFLITE_ENV};
    let tmp = tempfile::tempdir().unwrap();
    let stubs = stub::stubs(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let coral = |tflite: &OsStr, edgetpu: &OsStr, devices: &str| {
        let env = [(TFLITE_ENV, tflite), (EDGETPU_ENV, edgetpu), ("EFFV2_STUB_EDGETPU_DEVICES", OsStr::new(devices))];
        with_env(&env, || status(Target::Coral))
    };
    let missing = tmp.path().join("libtensorflowlite_c.so");

    // No TFLite: coral artifacts cannot open at all.
    let s = coral(missing.as_os_str(), stubs.edgetpu.as_os_str(), "1");
    assert_eq!((s.compiled, s.readiness), (true, Readiness::Unavailable), "{s:?}");
    assert!(s.detail.contains("libtensorflowlite_c not found") && s.detail.contains(&missing.display().to_string()), "{}", s.detail);

    // TFLite but no libedgetpu: TFLite's CPU kernels, and why.
    let s = coral(stubs.tflite.as_os_str(), missing.as_os_str(), "1");
    assert_eq!(s.readiness, Readiness::CpuFallback, "{s:?}");
    assert!(s.detail.contains("TFLite stub-2.0") && s.detail.contains("libedgetpu not found"), "{}", s.detail);

    // Both, no Edge TPU plugged in.
    let s = coral(stubs.tflite.as_os_str(), stubs.edgetpu.as_os_str(), "0");
    assert_eq!(s.readiness, Readiness::CpuFallback, "{s:?}");
    assert!(s.detail.contains("lists no Edge TPU") && s.detail.contains("udev"), "{}", s.detail);

    // Two Edge TPUs: ready, each listed.
    let s = coral(stubs.tflite.as_os_str(), stubs.edgetpu.as_os_str(), "2");
    assert_eq!(s.readiness, Readiness::Ready, "{s:?}");
    assert_eq!(s.devices, ["usb /sys/bus/usb/devices/stub-1", "pci /dev/apex_stub"]);
    assert!(s.detail.contains("TFLite stub-2.0") && s.detail.contains("libedgetpu stub-edgetpu 1"), "{}", s.detail);
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_names_the_missing_driver_or_lists_the_gpus() {
    let s = status(Target::Jetson);
    assert_eq!((s.name, s.compiled), ("cuda", true));
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        // A GPU machine: the driver's GPUs with their libraries, or why none can be used.
        match s.readiness {
            Readiness::Ready => {
                assert!(!s.devices.is_empty() && s.devices.iter().all(|d| d.starts_with("GPU ") && d.contains("(sm_")), "{:?}", s.devices);
                assert!(s.detail.contains("cuDNN ") && s.detail.contains("cuBLAS "), "{}", s.detail);
            }
            r => assert!(r == Readiness::Unavailable && s.detail.starts_with("no "), "{s:?}"),
        }
    } else {
        assert_eq!(s.readiness, Readiness::Unavailable);
        assert!(s.detail.contains("no CUDA driver found"), "{}", s.detail);
        assert!(s.devices.is_empty());
    }
}
