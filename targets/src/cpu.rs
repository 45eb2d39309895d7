//! `--target cpu`: an fp32 ONNX model (BN folded, static shape) for tract or onnxruntime, or with
//! `--precision int8` a QOperator int8 ONNX calibrated like the coral target (same quantizer, same
//! parameters), still with float input and logits.

use std::path::Path;

use effv2_edge::graph::Graph;
use effv2_edge::spec::Preprocess;
use effv2_edge::weights::Weights;
use effv2_quantize::{quantize, IoType, QModel, QuantizeError, QuantizeOptions, RangeMethod};
use effv2_runtime::manifest::{Manifest, Precision, QuantParams, Target};

use crate::artifact::{manifest_for, write_artifact, ArtifactError, ArtifactFile, ManifestInput};
use crate::calib::{load_calibration, quantization_record, CalibError, CalibSource};
use crate::onnx::{write_int8_onnx, write_onnx, Int8Form, OnnxError, OnnxOptions, INPUT, OUTPUT};
use crate::source::{LoadedModel, SourceError};

pub const MODEL_FILE: &str = "model.onnx";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Graph(#[from] effv2_edge::graph::GraphError),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Calib(#[from] CalibError),
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error(transparent)]
    Plan(#[from] crate::cuda_plan::PlanError),
    #[error("{0}")]
    Unsupported(String),
}

#[derive(Clone, Debug, Default)]
pub struct CpuBuild {
    pub image_size: Option<usize>,
    pub batch: usize,
}

/// Calibration of an int8 cpu build (the coral target's sources and methods).
#[derive(Clone, Debug)]
pub struct CpuInt8 {
    pub calib: CalibSource,
    pub calib_images: usize,
    pub method: RangeMethod,
    /// Seed of synthetic calibration images.
    pub seed: u64,
    /// How convolutions are written (QLinearConv, or QDQ around a float Conv).
    pub form: Int8Form,
}

impl CpuInt8 {
    pub fn new(calib: CalibSource) -> Self {
        CpuInt8 { calib, calib_images: 100, method: RangeMethod::Percentile(99.99), seed: 0, form: Int8Form::default() }
    }
}

fn onnx_options(model: &LoadedModel, batch: usize) -> OnnxOptions {
    OnnxOptions {
        batch,
        metadata: vec![
            ("effv2.variant".into(), model.spec.variant.clone()),
            ("effv2.fused_stages".into(), model.spec.options.fused_stages.to_string()),
        ],
        ..OnnxOptions::default()
    }
}

/// The graph at the build size, the artifact's static batch, and preprocessing at that size.
pub(crate) fn build_inputs(model: &LoadedModel, opts: &CpuBuild) -> Result<(Graph, usize, Preprocess), BuildError> {
    let graph = model.graph(opts.image_size)?;
    let mut preprocess = model.preprocess.clone();
    preprocess.size = graph.input_shape().h;
    Ok((graph, opts.batch.max(1), preprocess))
}

/// The manifest of an ONNX artifact (input `input`, output `logits`) built from `graph`.
pub(crate) fn onnx_manifest(
    model: &LoadedModel,
    (graph, batch, preprocess): (&Graph, usize, Preprocess),
    target: Target,
    precision: Precision,
    notes: Vec<String>,
    files: &[ArtifactFile],
) -> Manifest {
    let input = ManifestInput {
        spec: &model.spec,
        graph,
        batch,
        target,
        precision,
        preprocess,
        labels: model.labels.clone(),
        input_name: INPUT,
        output_name: OUTPUT,
        notes,
    };
    manifest_for(input, files)
}

/// fp32 artifact.
pub fn build_cpu(model: &LoadedModel, opts: &CpuBuild, out: &Path) -> Result<Manifest, BuildError> {
    let notes = vec!["Runs with effv2-runtime (tract) or any ONNX runtime; input is preprocessed float32 NCHW.".into()];
    build_fp32_onnx(model, opts, Target::Cpu, Precision::Fp32, |_| notes, |_, _| Ok(vec![]), out)
}

/// An artifact around the fp32 ONNX model (`model.onnx`) for `target`; `notes` gets the input
/// shape `[N, C, H, W]`, `extra_files` the graph and weights the ONNX was written from.
pub(crate) fn build_fp32_onnx(
    model: &LoadedModel,
    opts: &CpuBuild,
    target: Target,
    precision: Precision,
    notes: impl FnOnce([usize; 4]) -> Vec<String>,
    extra_files: impl FnOnce(&Graph, &Weights) -> Result<Vec<ArtifactFile>, BuildError>,
    out: &Path,
) -> Result<Manifest, BuildError> {
    let (graph, batch, preprocess) = build_inputs(model, opts)?;
    let bytes = write_onnx(&graph, &model.weights, &onnx_options(model, batch))?;
    let mut files = vec![ArtifactFile { path: MODEL_FILE.into(), role: "model".into(), bytes }];
    files.extend(extra_files(&graph, &model.weights)?);
    let shape = graph.input_shape();
    let notes = notes([batch, shape.c, shape.h, shape.w]);
    let manifest = onnx_manifest(model, (&graph, batch, preprocess), target, precision, notes, &files);
    write_artifact(out, &files, &manifest)?;
    Ok(manifest)
}

/// An int8 cpu build: the manifest and the int8 model the ONNX was written from (for checks
/// against the int8 reference executor).
pub struct CpuInt8Outcome {
    pub manifest: Manifest,
    pub qmodel: QModel,
}

/// int8 artifact: calibrate on `q.calib`, quantize (TFLite's int8 scheme), write QOperator ONNX.
pub fn build_cpu_int8(model: &LoadedModel, opts: &CpuBuild, q: &CpuInt8, out: &Path) -> Result<CpuInt8Outcome, BuildError> {
    let (graph, batch, preprocess) = build_inputs(model, opts)?;
    let calib = load_calibration(&q.calib, q.calib_images, &preprocess, graph.input_shape().c, q.seed)?;
    let qmodel = quantize(&graph, &model.weights, &calib.batches, &QuantizeOptions { method: q.method, io: IoType::Int8 })?;
    let mut onnx_opts = onnx_options(model, batch);
    onnx_opts.metadata.push(("effv2.precision".into(), "int8".into()));
    onnx_opts.metadata.push(("effv2.int8_form".into(), q.form.to_string()));
    let bytes = write_int8_onnx(&qmodel, &onnx_opts, q.form)?;
    let files = vec![ArtifactFile { path: MODEL_FILE.into(), role: "model".into(), bytes }];
    let convs = match q.form {
        Int8Form::QLinear => "QLinearConv for every convolution",
        Int8Form::Qdq => "DequantizeLinear -> Conv -> QuantizeLinear for every convolution (onnxruntime fuses it into QLinearConv)",
    };
    let mut notes = vec![format!(
        "int8 ONNX ({form}): {convs}, per-channel int8 weights, int32 bias, uint8 activations (TFLite's int8 values + 128); \
         DequantizeLinear -> Add/Mul/Sigmoid/GlobalAveragePool -> QuantizeLinear around the rest; input is preprocessed \
         float32 NCHW (quantized inside the model), output float logits. Runs with effv2-runtime (tract) or onnxruntime.",
        form = q.form
    )];
    if calib.info.synthetic {
        notes.push(calib.info.note.clone());
    }
    let mut manifest = onnx_manifest(model, (&graph, batch, preprocess), Target::Cpu, Precision::Int8, notes, &files);
    let qp = |t: &effv2_quantize::QTensor| {
        let p = t.params().ok_or_else(|| QuantizeError::Internal(format!("I/O tensor {:?} has no per-tensor parameters", t.name)))?;
        Ok::<_, BuildError>(QuantParams { dtype: "int8".into(), scale: p.scale, zero_point: p.zero_point })
    };
    manifest.quantization = Some(quantization_record(qp(qmodel.input_tensor())?, qp(qmodel.output_tensor())?, q.method, &q.calib, &calib.info));
    write_artifact(out, &files, &manifest)?;
    Ok(CpuInt8Outcome { manifest, qmodel })
}
