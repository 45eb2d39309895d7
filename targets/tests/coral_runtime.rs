//! Coral artifacts through effv2-runtime's edgetpu backend, on stand-in libraries compiled from
//! runtimes/tests/stub/*.c (their "model" copies input bytes to the output cyclically, shifted by
//! one when a delegate is attached). Checks the float → NHWC int8/uint8 quantization, the
//! dequantized logits, where it runs and why (Edge TPU, or TFLite's CPU kernels with the reason),
//! and that each failure is a typed error.

#[path = "../../runtimes/tests/stub/mod.rs"]
mod stub;

use std::path::Path;
use std::sync::Mutex;

use effv2_edge::rng::Rng;
use effv2_edge::spec::ModelOptions;
use effv2_quantize::{Buf, IoType, QModel};
use effv2_runtime::manifest::{sha256_hex, FileEntry, Manifest};
use effv2_runtime::{open, OpenOptions, RuntimeError, EDGETPU_ENV, TFLITE_ENV};
use effv2_targets::coral::calib::CalibSource;
use effv2_targets::coral::compiler::CompilerChoice;
use effv2_targets::coral::{build_coral, CoralBuild};
use effv2_targets::source::ModelSource;

const SIZE: usize = 32;
/// The stub libraries read these on every call; tests setting them take turns.
static ENV: Mutex<()> = Mutex::new(());

fn build(dir: &Path, io: IoType) -> QModel {
    let options = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() };
    let model = ModelSource::Fresh { model: "efficientnetv2-b0".into(), options, seed: 3 }.load_for_size(Some(SIZE)).unwrap();
    let mut o = CoralBuild::new(CalibSource::Synthetic);
    o.image_size = Some(SIZE);
    o.calib_images = 2;
    o.compiler = CompilerChoice::Off;
    o.io = io;
    build_coral(&model, &o, dir).unwrap().qmodel
}

/// Add a "compiled" model (a copy: the stub cannot tell) as edgetpu_compiler would have.
fn add_edgetpu_model(dir: &Path) {
    let bytes = std::fs::read(dir.join("model_int8.tflite")).unwrap();
    std::fs::write(dir.join("model_int8_edgetpu.tflite"), &bytes).unwrap();
    let mut m = Manifest::load_verified(dir).unwrap();
    let entry = FileEntry { path: "model_int8_edgetpu.tflite".into(), role: "edgetpu-model".into(), bytes: bytes.len() as u64, sha256: sha256_hex(&bytes) };
    m.files.push(entry);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// What the stub returns for `x`: the model's own input integers (our reference quantizer),
/// copied cyclically from offset `shift`, read as the output's integers and dequantized.
fn expected(q: &QModel, x: &effv2_edge::Tensor, shift: usize) -> Vec<f32> {
    let out = q.output_tensor();
    let mut logits = vec![];
    for input in q.quantize_input(x).unwrap() {
        let bytes: Vec<u8> = match &input {
            Buf::I8(v) => v.iter().map(|&b| b as u8).collect(),
            Buf::U8(v) => v.clone(),
        };
        let copied: Vec<u8> = (0..out.numel()).map(|k| bytes[(k + shift) % bytes.len()]).collect();
        let as_out = match input {
            Buf::I8(_) => Buf::I8(copied.iter().map(|&b| b as i8).collect()),
            Buf::U8(_) => Buf::U8(copied),
        };
        logits.extend(q.dequantize_output(&as_out).unwrap());
    }
    logits
}

fn with_env<T>(vars: &[(&str, &std::ffi::OsStr)], f: impl FnOnce() -> T) -> T {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let stubs = stub::stubs(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let base = [
        (TFLITE_ENV, stubs.tflite.as_os_str()),
        (EDGETPU_ENV, stubs.edgetpu.as_os_str()),
        ("EFFV2_STUB_EDGETPU_DEVICES", "0".as_ref()),
        ("EFFV2_STUB_EDGETPU_BUSY", "0".as_ref()),
        ("EFFV2_STUB_INVOKE_FAIL", "0".as_ref()),
    ];
    for (k, v) in base.iter().chain(vars) {
        std::env::set_var(k, v);
    }
    f()
}

#[test]
fn runs_on_tflite_cpu_kernels_without_an_edge_tpu() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, io) in [("int8", IoType::Int8), ("uint8", IoType::UInt8)] {
        let dir = tmp.path().join(name);
        let q = build(&dir, io);
        let x = Rng::new(7).normal_tensor(vec![2, 3, SIZE, SIZE]);
        let (device, on_tpu, logits) = with_env(&[], || {
            let mut rt = open(&dir, &OpenOptions { batch: Some(2), threads: Some(2), ..Default::default() }).unwrap();
            assert_eq!((rt.backend(), rt.input_shape()), ("edgetpu", [2, 3, SIZE, SIZE]));
            (rt.device(), rt.on_accelerator(), rt.run(x.data()).unwrap())
        });
        assert!(!on_tpu);
        for want in ["TFLite CPU kernels, 2 threads", "lists no Edge TPU", "TFLite stub-2.0"] {
            assert!(device.contains(want), "{want:?} not in {device:?}");
        }
        assert_eq!(logits, expected(&q, &x, 0), "{name}");
    }
}

#[test]
fn runs_on_the_edge_tpu_when_one_is_listed_and_the_artifact_is_compiled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("art");
    let q = build(&dir, IoType::Int8);
    let x = Rng::new(8).normal_tensor(vec![1, 3, SIZE, SIZE]);
    let one = [("EFFV2_STUB_EDGETPU_DEVICES", "1".as_ref())];
    // Attached, but the artifact was built without edgetpu_compiler: CPU, saying why.
    let device = with_env(&one, || open(&dir, &OpenOptions::default()).unwrap().device());
    assert!(device.contains("no model_int8_edgetpu.tflite") && device.contains("usb /sys/bus/usb/devices/stub-1"), "{device}");

    add_edgetpu_model(&dir);
    let (device, on_tpu, logits) = with_env(&one, || {
        let mut rt = open(&dir, &OpenOptions::default()).unwrap();
        (rt.device(), rt.on_accelerator(), rt.run(x.data()).unwrap())
    });
    assert!(on_tpu && device.starts_with("Edge TPU usb") && device.contains("libedgetpu stub-edgetpu 1"), "{device}");
    assert_eq!(logits, expected(&q, &x, 1), "the delegate reached the interpreter");

    // The device is busy: the CPU again, with libedgetpu's failure as the reason.
    let busy = [one[0], ("EFFV2_STUB_EDGETPU_BUSY", "1".as_ref())];
    let (device, logits) = with_env(&busy, || {
        let mut rt = open(&dir, &OpenOptions::default()).unwrap();
        (rt.device(), rt.run(x.data()).unwrap())
    });
    assert!(device.contains("TFLite CPU kernels") && device.contains("edgetpu_create_delegate returned NULL"), "{device}");
    assert_eq!(logits, expected(&q, &x, 0));

    // No libedgetpu at all: the CPU, with the install hint.
    let missing = tmp.path().join("nowhere/libedgetpu.so.1");
    let device = with_env(&[one[0], (EDGETPU_ENV, missing.as_os_str())], || open(&dir, &OpenOptions::default()).unwrap().device());
    assert!(device.contains("libedgetpu not found") && device.contains("libedgetpu1-std"), "{device}");
}

#[test]
fn bad_input_and_failing_calls_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("art");
    build(&dir, IoType::Int8);
    with_env(&[], || {
        let mut rt = open(&dir, &OpenOptions::default()).unwrap();
        assert!(matches!(rt.run(&[0.0; 5]), Err(RuntimeError::InputSize { got: 5, .. })));
        std::env::set_var("EFFV2_STUB_INVOKE_FAIL", "1");
        let e = rt.run(&vec![0.0; 3 * SIZE * SIZE]).unwrap_err();
        assert!(matches!(&e, RuntimeError::Backend { .. }) && e.to_string().contains("TfLiteInterpreterInvoke failed with kTfLiteError"), "{e}");
    });

    // A manifest whose quantization disagrees with the file's own tensors.
    let mut m = Manifest::load_verified(&dir).unwrap();
    m.quantization.as_mut().unwrap().input.scale *= 2.0;
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let e = with_env(&[], || open(&dir, &OpenOptions::default()).err().unwrap());
    assert!(matches!(&e, RuntimeError::Artifact { .. }) && e.to_string().contains("but the manifest says"), "{e}");
}
