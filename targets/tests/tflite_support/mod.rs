//! Shared by the TFLite tests: building small int8 models, and running `.tflite` files in LiteRT's
//! interpreter (scripts/py/tflite_run.py in the `.venv-ci` that scripts/setup-python.sh makes).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use effv2_edge::graph::Graph;
use effv2_edge::rng::Rng;
use effv2_edge::spec::ModelOptions;
use effv2_edge::weights::{calibrate_batchnorm, Weights};
use effv2_edge::Tensor;
use effv2_quantize::{Buf, Calibration};
use effv2_targets::source::ModelSource;

#[path = "../peers/mod.rs"]
mod peers;
pub use peers::python;

/// Minimal `.npy` (v1) of int8 or uint8 samples, shaped `[N, ...per]`.
pub fn encode_npy(samples: &[Buf], per: &[usize]) -> Vec<u8> {
    let descr = match samples.first() {
        Some(Buf::U8(_)) => "|u1",
        _ => "|i1",
    };
    let shape: Vec<String> = std::iter::once(samples.len()).chain(per.iter().copied()).map(|d| d.to_string()).collect();
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}", shape.join(", "));
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for s in samples {
        match s {
            Buf::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
            Buf::U8(v) => out.extend_from_slice(v),
        }
    }
    out
}

/// The samples of an int8/uint8 `.npy` written by NumPy, `per` values each.
pub fn decode_npy(bytes: &[u8], per: usize) -> Vec<Buf> {
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    let data = &bytes[10 + hlen..];
    let unsigned = header.contains("'|u1'");
    assert!(unsigned || header.contains("'|i1'"), "{header}");
    data.chunks(per)
        .map(|c| if unsigned { Buf::U8(c.to_vec()) } else { Buf::I8(c.iter().map(|&x| x as i8).collect()) })
        .collect()
}

/// Run `model` in LiteRT with `resolver` (`ref`, `default` or `builtin`) on `inputs`; the raw
/// output integers per sample. `details`: also write the loaded ops/tensors as JSON there.
pub fn litert(model: &Path, inputs: &[Buf], input_shape: &[usize], out_per: usize, resolver: &str, details: Option<&Path>) -> Vec<Buf> {
    let dir = model.parent().unwrap();
    let (xi, yo) = (dir.join(format!("in_{resolver}.npy")), dir.join(format!("out_{resolver}.npy")));
    std::fs::write(&xi, encode_npy(inputs, &input_shape[1..])).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/py/tflite_run.py");
    let mut cmd = Command::new(python());
    cmd.arg(script).arg(model).arg(&xi).arg(&yo).arg("--resolver").arg(resolver);
    if let Some(d) = details {
        cmd.arg("--details").arg(d);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "LiteRT failed on {}: {}", model.display(), String::from_utf8_lossy(&out.stderr));
    decode_npy(&std::fs::read(&yo).unwrap(), out_per)
}

/// A fresh variant at `size` with BN statistics calibrated on random images, and a calibration
/// set of `images` more (batches of 8).
pub fn fresh(model: &str, options: ModelOptions, size: usize, images: usize) -> (Graph, Weights, Vec<Tensor>) {
    let m = ModelSource::Fresh { model: model.into(), options, seed: 7 }.load_for_size(Some(size)).unwrap();
    let graph = m.graph(Some(size)).unwrap();
    let c = graph.input_shape().c;
    let mut rng = Rng::new(21);
    let weights = calibrate_batchnorm(&graph, &m.weights, &rng.normal_tensor(vec![4, c, size, size])).unwrap();
    let batches = (0..images.div_ceil(8)).map(|b| rng.normal_tensor(vec![8.min(images - 8 * b), c, size, size])).collect();
    (graph, weights, batches)
}

pub fn calibrate(graph: &Graph, weights: &Weights, batches: &[Tensor]) -> Calibration {
    Calibration::run(graph, weights, batches, true).unwrap()
}

/// How two runs' output integers differ.
#[derive(Debug, Default)]
pub struct Lsb {
    pub values: usize,
    pub equal: usize,
    pub off_by_one: usize,
    pub max: i32,
    pub mean: f64,
}

impl std::fmt::Display for Lsb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |k: usize| 100.0 * k as f64 / self.values.max(1) as f64;
        write!(f, "{:.1}% equal, {:.1}% off by 1 LSB, max {} LSB, mean {:.2} LSB", pct(self.equal), pct(self.off_by_one), self.max, self.mean)
    }
}

pub fn lsb_stats(a: &[Buf], b: &[Buf]) -> Lsb {
    let mut s = Lsb::default();
    let mut sum = 0i64;
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.to_i32().iter().zip(y.to_i32()) {
            let d = (p - q).abs();
            s.values += 1;
            s.equal += usize::from(d == 0);
            s.off_by_one += usize::from(d == 1);
            s.max = s.max.max(d);
            sum += d as i64;
        }
    }
    s.mean = sum as f64 / s.values.max(1) as f64;
    s
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) }).0
}
