//! `--target jetson`: a Jetson (or any CUDA GPU) artifact in two forms from the same BN-folded graph:
//! `plan.json` + `weights.bin` for effv2-runtime's CUDA engine (feature `cuda`), which runs it at
//! the manifest's precision (fp16 or fp32), and `model.onnx` (fp32, static shape) for TensorRT,
//! whose engine must be built on the device (plans are tied to the GPU and TensorRT version); the
//! manifest's notes carry the exact `trtexec` commands.

use std::path::Path;

use effv2_runtime::manifest::{Manifest, Precision, Target};

use effv2_runtime::plan::{PLAN_FILE, PLAN_ROLE, WEIGHTS_FILE, WEIGHTS_ROLE};

use effv2_quantize::Calibration;

use crate::artifact::{write_artifact, ArtifactFile};
use crate::calib::load_calibration;
use crate::cpu::{build_fp32_onnx, build_inputs, onnx_manifest, BuildError, CpuBuild, CpuInt8, MODEL_FILE};
use crate::cuda_plan::{cuda_plan, weights_bytes};
use crate::onnx::{write_onnx, OnnxOptions, INPUT};
use crate::source::LoadedModel;

/// The engine file the notes' trtexec command writes next to the artifact.
pub fn engine_file(precision: Precision) -> String {
    format!("model_{precision}.plan")
}

/// `trtexec` lines: build the engine for `precision`, then time it. int8 is explicit (the QDQ nodes
/// in the ONNX carry the scales); `--fp16` lets the layers left in float run in half precision.
pub fn trtexec_commands(precision: Precision, batch: usize, c: usize, size: usize) -> Vec<String> {
    let flag = match precision {
        Precision::Fp16 => " --fp16",
        Precision::Bf16 => " --bf16",
        Precision::Int8 => " --int8 --fp16",
        Precision::Fp32 => "",
    };
    let shape = format!("{INPUT}:{batch}x{c}x{size}x{size}");
    let plan = engine_file(precision);
    vec![
        format!("trtexec --onnx={MODEL_FILE}{flag} --shapes={shape} --saveEngine={plan}"),
        format!("trtexec --loadEngine={plan} --shapes={shape} --useCudaGraph --noDataTransfers --iterations=200"),
    ]
}

/// Jetson artifact at `precision` (fp16 or fp32: the precision the TensorRT engine is built at).
pub fn build_jetson(model: &LoadedModel, opts: &CpuBuild, precision: Precision, out: &Path) -> Result<Manifest, BuildError> {
    if !matches!(precision, Precision::Fp16 | Precision::Bf16 | Precision::Fp32) {
        return Err(BuildError::Unsupported(format!("build_jetson builds fp16, bf16 or fp32, not {precision}; int8 is build_jetson_int8")));
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

/// int8 jetson artifact for TensorRT: `model.onnx` with explicit quantization — every conv reads
/// `DequantizeLinear(QuantizeLinear(x))` with a symmetric per-tensor scale (zero point 0, what
/// TensorRT requires) calibrated on `q.calib`, and per-channel symmetric int8 weights. Our CUDA
/// engine runs fp16/fp32 only, so there is no plan here.
pub fn build_jetson_int8(model: &LoadedModel, opts: &CpuBuild, q: &CpuInt8, out: &Path) -> Result<Manifest, BuildError> {
    let (graph, batch, preprocess) = build_inputs(model, opts)?;
    let shape = graph.input_shape();
    let calib = load_calibration(&q.calib, q.calib_images, &preprocess, shape.c, q.seed)?;
    let ranges = Calibration::run(&graph, &model.weights, &calib.batches, q.method.needs_histogram())?.ranges(q.method)?;
    let mut onnx_opts = OnnxOptions { batch, qdq_ranges: Some(ranges), ..OnnxOptions::default() };
    onnx_opts.metadata.push(("effv2.precision".into(), "int8 (explicit QDQ, symmetric)".into()));
    let bytes = write_onnx(&graph, &model.weights, &onnx_opts)?;
    let files = vec![ArtifactFile { path: MODEL_FILE.into(), role: "model".into(), bytes }];
    let mut notes = vec![format!(
        "model.onnx is TensorRT explicit int8: QuantizeLinear -> DequantizeLinear (symmetric, zero point 0, {method} ranges over \
         {n} {kind} images) before every convolution, per-channel int8 weights; the rest is float. Build the engine on the \
         Jetson, then time it:",
        method = crate::calib::method_name(q.method),
        n = calib.info.images,
        kind = calib.info.kind,
    )];
    notes.extend(trtexec_commands(Precision::Int8, batch, shape.c, shape.h));
    notes.push("effv2-runtime's CUDA engine runs fp16/fp32 jetson artifacts; this one is for TensorRT (or onnxruntime).".into());
    if calib.info.synthetic {
        notes.push(calib.info.note.clone());
    }
    let manifest = onnx_manifest(model, (&graph, batch, preprocess), Target::Jetson, Precision::Int8, notes, &files);
    write_artifact(out, &files, &manifest)?;
    Ok(manifest)
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
