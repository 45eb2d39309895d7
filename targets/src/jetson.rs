//! `--target jetson`: a Jetson (or any CUDA GPU) artifact in two forms from the same BN-folded graph:
//! `plan.json` + `weights.bin` for effv2-runtime's CUDA engine (feature `cuda`), which runs it at
//! the manifest's precision (fp16 or fp32), and `model.onnx` (fp32, static shape) for TensorRT,
//! whose engine must be built on the device (plans are tied to the GPU and TensorRT version); the
//! manifest's notes carry the exact `trtexec` commands.

use std::path::Path;

use effv2_runtime::manifest::{Manifest, Precision, Target};

use effv2_runtime::plan::{PLAN_FILE, PLAN_ROLE, WEIGHTS_FILE, WEIGHTS_ROLE};

use crate::artifact::ArtifactFile;
use crate::cpu::{build_fp32_onnx, BuildError, CpuBuild, MODEL_FILE};
use crate::cuda_plan::{cuda_plan, weights_bytes};
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
        n.push(format!(
            "{PLAN_FILE} + {WEIGHTS_FILE} run on effv2-runtime's CUDA engine (feature `cuda`) at {precision}, e.g. \
             `effv2-bench run --artifact DIR`; model.onnx also runs on any ONNX runtime."
        ));
        n
    };
    let plan_files = |graph: &effv2_edge::graph::Graph, weights: &effv2_edge::weights::Weights| {
        let (plan, data) = cuda_plan(graph, weights)?;
        let json = serde_json::to_vec_pretty(&plan).map_err(|e| BuildError::Unsupported(format!("serialising plan.json: {e}")))?;
        Ok(vec![
            ArtifactFile { path: PLAN_FILE.into(), role: PLAN_ROLE.into(), bytes: json },
            ArtifactFile { path: WEIGHTS_FILE.into(), role: WEIGHTS_ROLE.into(), bytes: weights_bytes(&data) },
        ])
    };
    build_fp32_onnx(model, opts, Target::Jetson, precision, notes, plan_files, out)
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
