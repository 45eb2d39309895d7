//! Coral backend: a `coral` artifact through TFLite's C library, with libedgetpu's delegate when
//! an Edge TPU is attached. Both libraries are dlopened at run time (so this compiles, and the
//! rest of the runtime works, without them), wrapped in three layers the cudarc way: [`sys`]
//! (raw function tables), [`result`] (calls → `Result`), [`safe`] (owned objects with `Drop`).
//!
//! Where it runs: with libedgetpu loaded, an Edge TPU listed and the artifact holding
//! `model_int8_edgetpu.tflite`, on the Edge TPU; otherwise `model_int8.tflite` on TFLite's CPU
//! kernels — `device()` says which, and why not the Edge TPU.

mod io;
mod library;
mod result;
mod safe;
mod sys;

use std::path::Path;

use crate::manifest::{Manifest, QuantParams};
use crate::{check_input, OpenOptions, Runtime, RuntimeError};
use io::IntIo;
use result::{CallError, DeviceEntry, TensorDesc};
use safe::{Delegate, Interpreter, Model};

pub use library::{EDGETPU_ENV, TFLITE_ENV};

/// Manifest roles of the two model files a coral build writes.
const CPU_MODEL_ROLE: &str = "model";
const EDGETPU_MODEL_ROLE: &str = "edgetpu-model";
const BACKEND: &str = "edgetpu";

pub struct EdgeTpuRuntime {
    manifest: Manifest,
    interp: Interpreter,
    /// [N, C, H, W] of the float input; the model itself takes one [1, H, W, C] image.
    shape: [usize; 4],
    input: IntIo,
    output: IntIo,
    classes: usize,
    device: String,
    on_edgetpu: bool,
}

fn backend_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend { backend: BACKEND.into(), why: e.to_string() }
}

fn artifact_err(dir: &Path, why: String) -> RuntimeError {
    RuntimeError::Artifact { path: dir.join(crate::manifest::MANIFEST_FILE), why }
}

/// Where the model will run and the file it needs.
struct Placement {
    role: &'static str,
    delegate: Option<Delegate>,
    device: String,
}

impl EdgeTpuRuntime {
    pub fn open(dir: &Path, manifest: Manifest, opts: &OpenOptions) -> Result<Self, RuntimeError> {
        let (h, w, c) = match manifest.input.shape.as_slice() {
            &[1, h, w, c] if manifest.input.layout == "NHWC" => (h, w, c),
            s => return Err(artifact_err(dir, format!("coral input must be [1, H, W, C] NHWC, found {s:?} {}", manifest.input.layout))),
        };
        let q = manifest
            .quantization
            .as_ref()
            .ok_or_else(|| artifact_err(dir, "a coral artifact needs the `quantization` section (input/output scale and zero point)".into()))?;
        let input = int_io(dir, "input", &q.input, &manifest.input.dtype)?;
        let output = int_io(dir, "output", &q.output, &manifest.output.dtype)?;
        let classes = manifest.num_classes;

        let api = library::tflite().map_err(|why| RuntimeError::Unavailable { backend: BACKEND.into(), why })?;
        let threads = opts.threads.unwrap_or(1).max(1);
        let place = placement(&manifest, threads);
        let file = manifest.file(place.role).ok_or_else(|| artifact_err(dir, format!("no file with role {:?}", place.role)))?;
        let path = Manifest::path_of(dir, file);
        let bytes = std::fs::read(&path).map_err(|e| RuntimeError::Artifact { path: path.clone(), why: format!("cannot read: {e}") })?;
        let model = Model::new(api, bytes).map_err(|e| RuntimeError::Artifact { path: path.clone(), why: e.to_string() })?;
        let interp = Interpreter::new(api, model, threads, place.delegate).map_err(backend_err)?;

        if interp.counts() != (1, 1) {
            return Err(RuntimeError::Artifact { path: path.clone(), why: format!("expected 1 input and 1 output, the model has {:?}", interp.counts()) });
        }
        // The file must be what the manifest says: one [1,H,W,C] input and one output of
        // `classes` values, with the manifest's integer types and parameters.
        let check = |what: &str, d: Result<TensorDesc, CallError>, want_dims: &[usize], io: &IntIo| -> Result<(), RuntimeError> {
            let d = d.map_err(backend_err)?;
            let dims: Vec<usize> = d.dims.iter().map(|&v| v.max(0) as usize).collect();
            let want_type = if io.unsigned { sys::K_TFLITE_UINT8 } else { sys::K_TFLITE_INT8 };
            let numel: usize = want_dims.iter().product();
            let params_ok = d.quant.scale == 0.0 || (d.quant.scale == io.scale && d.quant.zero_point == io.zero_point);
            if dims.iter().product::<usize>() != numel || (what == "input" && dims != want_dims) || d.dtype != want_type || d.bytes != numel || !params_ok {
                return Err(RuntimeError::Artifact {
                    path: path.clone(),
                    why: format!(
                        "{what} tensor {:?} is {:?} of TfLiteType {} (scale {}, zero point {}), but the manifest says {want_dims:?} {} (scale {}, zero point {})",
                        d.name, d.dims, d.dtype, d.quant.scale, d.quant.zero_point, if io.unsigned { "uint8" } else { "int8" }, io.scale, io.zero_point
                    ),
                });
            }
            Ok(())
        };
        check("input", interp.input(0), &[1, h, w, c], &input)?;
        check("output", interp.output(0), &[1, classes], &output)?;

        let n = opts.batch.unwrap_or(1).max(1);
        let version = result::version(api);
        let device = format!("{} (TFLite {version})", place.device);
        let on_edgetpu = place.role == EDGETPU_MODEL_ROLE;
        Ok(EdgeTpuRuntime { manifest, interp, shape: [n, c, h, w], input, output, classes, device, on_edgetpu })
    }
}

fn int_io(dir: &Path, what: &str, p: &QuantParams, dtype: &str) -> Result<IntIo, RuntimeError> {
    let unsigned = match (p.dtype.as_str(), dtype) {
        ("int8", "int8") => false,
        ("uint8", "uint8") => true,
        _ => return Err(artifact_err(dir, format!("{what}: quantization dtype {:?} vs tensor dtype {dtype:?} (expected both int8 or both uint8)", p.dtype))),
    };
    if !(p.scale.is_finite() && p.scale > 0.0) {
        return Err(artifact_err(dir, format!("{what}: quantization scale {} is not a positive number", p.scale)));
    }
    Ok(IntIo { unsigned, scale: p.scale, zero_point: p.zero_point })
}

/// The Edge TPU when libedgetpu sees one and the artifact has the compiled model; else the CPU,
/// with the reason in the device string.
fn placement(manifest: &Manifest, threads: usize) -> Placement {
    let cpu = |why: String| Placement {
        role: CPU_MODEL_ROLE,
        delegate: None,
        device: format!(
            "cpu {} (TFLite CPU kernels, {threads} thread{}; not on an Edge TPU: {why})",
            std::env::consts::ARCH,
            if threads == 1 { "" } else { "s" }
        ),
    };
    let api = match library::edgetpu() {
        Ok(api) => api,
        Err(why) => return cpu(why),
    };
    let devices = result::list_devices(api);
    let Some(dev) = devices.first() else {
        return cpu(format!("libedgetpu {} lists no Edge TPU", result::edgetpu_version(api)));
    };
    if manifest.file(EDGETPU_MODEL_ROLE).is_none() {
        return cpu(format!(
            "an Edge TPU is attached ({}) but the artifact has no model_int8_edgetpu.tflite; rebuild it where edgetpu_compiler is on PATH",
            describe_device(dev)
        ));
    }
    match Delegate::edgetpu(api, dev) {
        Ok(d) => Placement {
            role: EDGETPU_MODEL_ROLE,
            delegate: Some(d),
            device: format!("Edge TPU {} (libedgetpu {})", describe_device(dev), result::edgetpu_version(api)),
        },
        Err(e) => cpu(format!("{} — {e}", describe_device(dev))),
    }
}

/// Whether coral artifacts run here, and where: TFLite's C library must load; with libedgetpu
/// and at least one Edge TPU listed they run on it, else on TFLite's CPU kernels. Lists the
/// devices without opening one (another process may be using it).
pub(crate) fn probe() -> super::Found {
    use super::{Found, Readiness};
    let tflite = match library::tflite() {
        Ok(api) => format!("TFLite {}", result::version(api)),
        Err(why) => return Found::unavailable(why),
    };
    let fallback = |why: String| Found { readiness: Readiness::CpuFallback, devices: vec![], detail: format!("{tflite}; CPU kernels only: {why}") };
    let api = match library::edgetpu() {
        Ok(api) => api,
        Err(why) => return fallback(why),
    };
    let version = result::edgetpu_version(api);
    let devices: Vec<String> = result::list_devices(api).iter().map(describe_device).collect();
    if devices.is_empty() {
        return fallback(format!(
            "libedgetpu {version} lists no Edge TPU (USB accelerator unplugged, or no permission: Coral's udev rule; PCIe: the gasket/apex driver)"
        ));
    }
    Found { readiness: Readiness::Ready, devices, detail: format!("{tflite}, libedgetpu {version}") }
}

fn describe_device(d: &DeviceEntry) -> String {
    let kind = match d.kind {
        sys::EDGETPU_APEX_USB => "usb",
        sys::EDGETPU_APEX_PCI => "pci",
        _ => "unknown type",
    };
    format!("{kind} {}", d.path)
}

impl Runtime for EdgeTpuRuntime {
    fn backend(&self) -> &str {
        BACKEND
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn on_accelerator(&self) -> bool {
        self.on_edgetpu
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn input_shape(&self) -> [usize; 4] {
        self.shape
    }

    /// Each image of the batch is one invoke: Edge TPU models are batch 1.
    fn run(&mut self, input: &[f32]) -> Result<Vec<f32>, RuntimeError> {
        check_input(input, self.shape)?;
        let [n, c, h, w] = self.shape;
        let mut logits = Vec::with_capacity(n * self.classes);
        let mut out = vec![0u8; self.classes];
        for image in input.chunks_exact(c * h * w) {
            self.interp.set_input(0, &self.input.quantize_nchw(image, c, h, w)).map_err(backend_err)?;
            self.interp.invoke().map_err(backend_err)?;
            self.interp.read_output(0, &mut out).map_err(backend_err)?;
            logits.extend(self.output.dequantize(&out));
        }
        Ok(logits)
    }
}
