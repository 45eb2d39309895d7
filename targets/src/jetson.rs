//! `--target jetson`: the model for a Jetson GPU as TensorRT takes it — `model.onnx` (fp32, BN
//! folded, static shape; TensorRT builds the fp16 engine from it on the device, where the engine
//! must be built because plans are tied to the GPU and TensorRT version) and a manifest whose notes
//! carry the exact `trtexec` commands. Our own CUDA runtime for these artifacts is issue #6's work;
//! until then effv2-runtime says so when asked to open one.

use std::path::Path;

use effv2_runtime::manifest::{Manifest, Precision, Target};

use crate::cpu::{build_fp32_onnx, BuildError, CpuBuild, MODEL_FILE};
use crate::onnx::INPUT;
use crate::source::LoadedModel;

/// The engine file the notes' trtexec command writes next to the artifact.
pub fn engine_file(precision: Precision) -> String {
    format!("model_{precision}.plan")
}

/// `trtexec` lines: build the engine for `precision` (fp16 or fp32), then time it.
pub fn trtexec_commands(precision: Precision, batch: usize, c: usize, size: usize) -> Vec<String> {
    let flag = if precision == Precision::Fp16 { " --fp16" } else { "" };
    let shape = format!("{INPUT}:{batch}x{c}x{size}x{size}");
    let plan = engine_file(precision);
    vec![
        format!("trtexec --onnx={MODEL_FILE}{flag} --shapes={shape} --saveEngine={plan}"),
        format!("trtexec --loadEngine={plan} --shapes={shape} --useCudaGraph --noDataTransfers --iterations=200"),
    ]
}

/// Jetson artifact at `precision` (fp16 or fp32: the precision the TensorRT engine is built at).
pub fn build_jetson(model: &LoadedModel, opts: &CpuBuild, precision: Precision, out: &Path) -> Result<Manifest, BuildError> {
    if !matches!(precision, Precision::Fp16 | Precision::Fp32) {
        return Err(BuildError::Unsupported(format!(
            "--target jetson --precision {precision} is not supported yet: TensorRT int8 needs symmetric activations (zero point 0); \
             use fp16 (default) or fp32"
        )));
    }
    let notes = |[batch, c, size, _]: [usize; 4]| {
        let mut n = vec![format!(
            "model.onnx is fp32 (BN folded, static shape); build the {precision} TensorRT engine on the Jetson itself (engines are tied \
             to the GPU and the TensorRT version), then time it:"
        )];
        n.extend(trtexec_commands(precision, batch, c, size));
        n.push("effv2-runtime has no CUDA backend for jetson artifacts yet (issue #6); model.onnx also runs on any ONNX runtime.".into());
        n
    };
    build_fp32_onnx(model, opts, Target::Jetson, precision, notes, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trtexec_builds_then_times_the_engine_at_the_artifact_shape() {
        let c = trtexec_commands(Precision::Fp16, 8, 3, 384);
        assert_eq!(c[0], "trtexec --onnx=model.onnx --fp16 --shapes=input:8x3x384x384 --saveEngine=model_fp16.plan");
        assert!(c[1].starts_with("trtexec --loadEngine=model_fp16.plan --shapes=input:8x3x384x384"));
        assert!(!trtexec_commands(Precision::Fp32, 1, 3, 224)[0].contains("--fp16"));
    }
}
