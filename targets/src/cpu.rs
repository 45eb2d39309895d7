//! `--target cpu`: an fp32 ONNX model (BN folded, static shape) for tract or onnxruntime.

use std::path::Path;

use effv2_runtime::manifest::{Manifest, Precision, Target};

use crate::artifact::{manifest_for, write_artifact, ArtifactError, ArtifactFile, ManifestInput};
use crate::onnx::{write_onnx, OnnxError, OnnxOptions, INPUT, OUTPUT};
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
}

#[derive(Clone, Debug, Default)]
pub struct CpuBuild {
    pub image_size: Option<usize>,
    pub batch: usize,
}

pub fn build_cpu(model: &LoadedModel, opts: &CpuBuild, out: &Path) -> Result<Manifest, BuildError> {
    let graph = model.graph(opts.image_size)?;
    let batch = opts.batch.max(1);
    let onnx_opts = OnnxOptions {
        batch,
        metadata: vec![
            ("effv2.variant".into(), model.spec.variant.clone()),
            ("effv2.fused_stages".into(), model.spec.options.fused_stages.to_string()),
        ],
        ..OnnxOptions::default()
    };
    let bytes = write_onnx(&graph, &model.weights, &onnx_opts)?;
    let files = vec![ArtifactFile { path: MODEL_FILE.into(), role: "model".into(), bytes }];
    let mut preprocess = model.preprocess.clone();
    preprocess.size = graph.input_shape().h;
    let manifest = manifest_for(
        ManifestInput {
            spec: &model.spec,
            graph: &graph,
            batch,
            target: Target::Cpu,
            precision: Precision::Fp32,
            preprocess,
            labels: model.labels.clone(),
            input_name: INPUT,
            output_name: OUTPUT,
            notes: vec!["Runs with effv2-runtime (tract) or any ONNX runtime; input is preprocessed float32 NCHW.".into()],
        },
        &files,
    );
    write_artifact(out, &files, &manifest)?;
    Ok(manifest)
}
