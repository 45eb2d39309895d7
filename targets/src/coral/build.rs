//! `effv2-edge build --target coral`: calibrate, quantize, write the int8 `.tflite`, analyse it
//! for the Edge TPU, compile it when `edgetpu_compiler` is on PATH, and write the artifact
//! directory (atomically, like every target).

use std::path::{Path, PathBuf};
use std::time::Duration;

use effv2_edge::spec::{BlockKind, ModelSpec};
use effv2_quantize::{quantize, IoType, QModel, QuantizeOptions, RangeMethod};
use effv2_runtime::manifest::{Manifest, Precision, QuantParams, Target, TensorSpec};

use super::analysis::{analyze, OpClass, OpStat};
use crate::calib::{load_calibration, quantization_record, CalibSource};
pub use crate::calib::method_name;
use super::compiler::{parse_compiler_log, run_compiler, CompilerChoice, CompilerRun, CompilerStatus};
use super::cost::{CostModel, FITTED};
use super::report::*;
use super::report_md::markdown;
use super::CoralError;
use crate::artifact::{manifest_for, write_artifact, ArtifactFile, ManifestInput};
use crate::source::LoadedModel;
use crate::tflite::write_tflite;

pub const MODEL_FILE: &str = "model_int8.tflite";
pub const EDGETPU_MODEL_FILE: &str = "model_int8_edgetpu.tflite";
pub const EDGETPU_LOG_FILE: &str = "model_int8_edgetpu.log";
pub const COMPILER_OUTPUT_FILE: &str = "edgetpu_compiler_output.txt";
pub const REPORT_JSON: &str = "edgetpu_report.json";
pub const REPORT_MD: &str = "edgetpu_report.md";

pub const MEASURED_NO_DEVICE: &str = "no device: a build measures nothing; the latency above is predicted. Measure it \
    with `effv2-bench run --artifact DIR` on a machine with an Edge TPU (effv2-runtime's edgetpu backend)";
pub const ACCURACY: &str = "The cost model's constants are fitted to Coral's published USB Accelerator latencies \
    (MobileNet V1 0.25@128 and 1.0@224, EfficientNet-EdgeTPU-S and -L) and predict the held-out MobileNet V2 and \
    EfficientNet-EdgeTPU-M within 10%; every published network is within 25% (docs/coral/cost_model.md). No published \
    network uses SiLU or SE, so their LOGISTIC/MUL costs are extrapolated from the same element rate.";

#[derive(Clone, Debug)]
pub struct CoralBuild {
    /// Input size (default: the model's preprocessing size).
    pub image_size: Option<usize>,
    pub calib: CalibSource,
    pub calib_images: usize,
    pub method: RangeMethod,
    pub io: IoType,
    pub compiler: CompilerChoice,
    pub compiler_timeout: Duration,
    /// Seed of synthetic calibration images.
    pub seed: u64,
    pub cost_model: CostModel,
}

impl CoralBuild {
    pub fn new(calib: CalibSource) -> Self {
        CoralBuild {
            image_size: None,
            calib,
            calib_images: 100,
            method: RangeMethod::Percentile(99.99),
            io: IoType::Int8,
            compiler: CompilerChoice::Auto,
            compiler_timeout: Duration::from_secs(300),
            seed: 0,
            cost_model: FITTED,
        }
    }
}

pub struct CoralOutcome {
    pub manifest: Manifest,
    pub report: EdgeTpuReport,
    pub qmodel: QModel,
}


/// Stage kinds: `FFFMMM`.
pub fn stage_mask(spec: &ModelSpec) -> String {
    spec.stages.iter().map(|s| if s.kind == BlockKind::FusedMbConv { 'F' } else { 'M' }).collect()
}

pub fn build_coral(model: &LoadedModel, o: &CoralBuild, out: &Path) -> Result<CoralOutcome, CoralError> {
    let graph = model.graph(o.image_size)?;
    let shape = graph.input_shape();
    let mut preprocess = model.preprocess.clone();
    preprocess.size = shape.h;
    let calib = load_calibration(&o.calib, o.calib_images, &preprocess, shape.c, o.seed)?;
    let q = quantize(&graph, &model.weights, &calib.batches, &QuantizeOptions { method: o.method, io: o.io })?;
    let description = format!("effv2-edge {} {} fused {} int8", env!("CARGO_PKG_VERSION"), model.spec.variant, model.spec.options.fused_stages);
    let tflite = write_tflite(&q, &description)?;

    let ops = analyze(&q);
    let compiler = o.compiler.resolve().map(|exe| compile(&exe, &tflite, out, o.compiler_timeout));
    let cost = graph.cost();
    let summary = ModelSummary {
        variant: model.spec.variant.clone(),
        fused_stages: model.spec.options.fused_stages.to_string(),
        stages: stage_mask(&model.spec),
        image_size: shape.h,
        activation: model.spec.options.activation.to_string(),
        se: model.spec.options.se,
        params: cost.params,
        macs: cost.macs,
    };
    let report = make_report(ReportInput {
        model: summary,
        q: &q,
        ops,
        tflite_bytes: tflite.len() as u64,
        calib: CalibSummary { info: calib.info.clone(), method: method_name(o.method) },
        cost_model: o.cost_model,
        compiler: compiler.as_ref(),
        compiler_choice: &o.compiler,
    });
    let mut json = serde_json::to_string_pretty(&report).map_err(|e| CoralError::Internal(e.to_string()))?;
    json.push('\n');

    let mut files = vec![
        ArtifactFile { path: MODEL_FILE.into(), role: "model".into(), bytes: tflite },
        ArtifactFile { path: REPORT_JSON.into(), role: "report".into(), bytes: json.into_bytes() },
        ArtifactFile { path: REPORT_MD.into(), role: "report-md".into(), bytes: markdown(&report).into_bytes() },
    ];
    let mut notes = vec![
        format!("{MODEL_FILE}: full-integer TFLite, input {} NHWC; runs in any TFLite interpreter on the CPU, and on the Edge TPU once compiled with `edgetpu_compiler -s {MODEL_FILE}` (x86-64 Linux).", report.tflite.input.dtype),
        "To feed it: preprocess as `preprocess` says (normalised float, NCHW → NHWC), then q = round(x / scale) + zero_point with `quantization.input`; logits = scale · (q − zero_point) with `quantization.output`.".into(),
        format!("{REPORT_MD} / {REPORT_JSON}: Edge TPU op mapping, parameter cache use and predicted latency."),
    ];
    if calib.info.synthetic {
        notes.push(calib.info.note.clone());
    }
    if let Some(run) = compiler {
        if let Some(m) = run.edgetpu_model {
            files.push(ArtifactFile { path: EDGETPU_MODEL_FILE.into(), role: "edgetpu-model".into(), bytes: m });
            notes.push(format!("{EDGETPU_MODEL_FILE}: compiled by edgetpu_compiler; load with libedgetpu as the TFLite delegate."));
        }
        if let Some(log) = run.log_file {
            files.push(ArtifactFile { path: EDGETPU_LOG_FILE.into(), role: "compiler-log".into(), bytes: log.into_bytes() });
        }
        files.push(ArtifactFile { path: COMPILER_OUTPUT_FILE.into(), role: "compiler-output".into(), bytes: run.output.into_bytes() });
    }

    let mut manifest = manifest_for(
        ManifestInput {
            spec: &model.spec,
            graph: &graph,
            batch: 1,
            target: Target::Coral,
            precision: Precision::Int8,
            preprocess,
            labels: model.labels.clone(),
            input_name: &report.tflite.input.name,
            output_name: &report.tflite.output.name,
            notes,
        },
        &files,
    );
    let (i, out_t) = (&report.tflite.input, &report.tflite.output);
    manifest.input = TensorSpec { name: i.name.clone(), shape: i.shape.clone(), layout: "NHWC".into(), dtype: i.dtype.clone() };
    manifest.output = TensorSpec { name: out_t.name.clone(), shape: out_t.shape.clone(), layout: "NC".into(), dtype: out_t.dtype.clone() };
    let qp = |s: &IoSummary| QuantParams { dtype: s.dtype.clone(), scale: s.scale, zero_point: s.zero_point };
    manifest.quantization = Some(quantization_record(qp(i), qp(out_t), o.method, &o.calib, &calib.info));
    write_artifact(out, &files, &manifest)?;
    Ok(CoralOutcome { manifest, report, qmodel: q })
}

/// Compile in a scratch sibling of `out` (removed afterwards).
fn compile(exe: &Path, tflite: &[u8], out: &Path, timeout: Duration) -> CompilerRun {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "artifact".into());
    let scratch = parent.join(format!(".{name}.edgetpu-{}", std::process::id()));
    let run = run_compiler(exe, tflite, MODEL_FILE, &scratch, timeout);
    let _ = std::fs::remove_dir_all(&scratch);
    run
}

pub struct ReportInput<'a> {
    pub model: ModelSummary,
    pub q: &'a QModel,
    pub ops: Vec<OpStat>,
    pub tflite_bytes: u64,
    pub calib: CalibSummary,
    pub cost_model: CostModel,
    pub compiler: Option<&'a CompilerRun>,
    pub compiler_choice: &'a CompilerChoice,
}

pub fn make_report(r: ReportInput) -> EdgeTpuReport {
    let ops = r.ops;
    let cm = r.cost_model;
    let on_tpu = ops.iter().filter(|s| s.on_edgetpu).count();
    let first_cpu = ops.iter().find(|s| !s.on_edgetpu);
    // What crosses USB: the input, and the output or the tensor at the CPU cut.
    let (input, output) = (r.q.input_tensor().numel() as u64, r.q.output_tensor().numel() as u64);
    let leaving = match first_cpu {
        Some(f) => ops.get(f.index.wrapping_sub(1)).filter(|p| p.on_edgetpu).map(|p| p.output_bytes).unwrap_or(0),
        None => output,
    };
    let predicted = cm.predict(&ops, if on_tpu > 0 { input + leaving } else { 0 });
    let total: u64 = ops.iter().map(|s| s.param_bytes).sum();
    let tpu_params: u64 = ops.iter().filter(|s| s.on_edgetpu).map(|s| s.param_bytes).sum();
    let (weight_bytes, bias_bytes) = weight_and_bias_bytes(r.q);
    let largest = ops.iter().max_by_key(|s| s.output_bytes).map(|s| LargestActivation {
        index: s.index,
        op: s.op.into(),
        node: s.node.clone(),
        shape: s.output_shape.clone(),
        bytes: s.output_bytes,
    });
    let macs_of = |c: OpClass| ops.iter().filter(|s| s.class == c).map(|s| s.macs).sum::<u64>();
    let compiler = compiler_section(&ops, r.compiler, r.compiler_choice);
    EdgeTpuReport {
        format: REPORT_FORMAT.into(),
        format_version: 1,
        model: r.model,
        tflite: TfliteSummary { file: MODEL_FILE.into(), bytes: r.tflite_bytes, input: io_summary(r.q.input_tensor()), output: io_summary(r.q.output_tensor()) },
        calibration: r.calib,
        partition: Partition {
            ops: ops.len(),
            on_edgetpu: on_tpu,
            on_cpu: ops.len() - on_tpu,
            edgetpu_subgraphs: usize::from(on_tpu > 0),
            first_cpu_op: first_cpu.map(|s| FirstCpuOp { index: s.index, op: s.op.into(), node: s.node.clone(), why: s.why_not.clone() }),
            rule: PARTITION_RULE.into(),
        },
        op_types: op_types(&ops, &cm),
        parameters: Parameters {
            total_bytes: total,
            weight_bytes,
            bias_bytes,
            edgetpu_bytes: tpu_params,
            cache_bytes: cm.cache_bytes,
            cached_bytes: tpu_params.min(cm.cache_bytes),
            streamed_bytes: tpu_params.saturating_sub(cm.cache_bytes),
            fits_on_chip: tpu_params <= cm.cache_bytes,
            note: "Our count: int8 weights + int32 biases as written. The compiler lays parameters out its own way: \
                   in published logs its on-chip + streamed total is within about ±20% of the .tflite size."
                .into(),
        },
        activations: Activations { input_bytes: input, output_bytes: output, largest, total_bytes: ops.iter().map(|s| s.output_bytes).sum() },
        macs: Macs { total: ops.iter().map(|s| s.macs).sum(), conv: macs_of(OpClass::Conv), depthwise: macs_of(OpClass::Depthwise) },
        latency: Latency {
            predicted,
            model: cm,
            formula: FORMULA.into(),
            accuracy: ACCURACY.into(),
            measured: MEASURED_NO_DEVICE.into(),
        },
        compiler,
        ops: ops.iter().map(|s| OpRow { stat: s.clone(), predicted_ms: cm.op_ms(s) }).collect(),
    }
}

pub const FORMULA: &str = "per op on the Edge TPU:  t_i = max(MACs_i · c_mac, elements_i · c_el) + t_op
  (elements = output elements of a conv/depthwise, processed elements of ADD/MUL/LOGISTIC/MEAN/PAD/QUANTIZE)
latency = max(Σ compute_i, streamed bytes / B_usb) + N_ops · t_op + (input + output bytes) / B_usb
  streamed bytes = max(0, Edge TPU parameter bytes − cache)";

fn compiler_section(ops: &[OpStat], run: Option<&CompilerRun>, choice: &CompilerChoice) -> CompilerSection {
    let Some(run) = run else {
        let summary = match choice {
            CompilerChoice::Off => "not run (disabled)".to_string(),
            _ => "edgetpu_compiler not found on PATH: not compiled, and our mapping is not cross-checked. The int8 model is \
                  complete; compile it on an x86-64 Linux host (Coral apt repo) with `edgetpu_compiler -s model_int8.tflite` \
                  and compare its op table with this report."
                .to_string(),
        };
        return CompilerSection { summary, exe: None, status: None, log: None, comparison: None };
    };
    let mut log = parse_compiler_log(&run.output);
    if let Some(file) = &run.log_file {
        let from_file = parse_compiler_log(file);
        if log.table.is_empty() {
            log.table = from_file.table;
        }
        log.version = log.version.or(from_file.version);
    }
    let comparison = (!log.table.is_empty()).then(|| compare(ops, &log));
    let exe = run.exe.display().to_string();
    let mut summary = match &run.status {
        CompilerStatus::Compiled => format!("compiled by `{exe}` → {EDGETPU_MODEL_FILE}"),
        CompilerStatus::Failed { code } => format!("`{exe}` failed (exit code {code:?}); see {COMPILER_OUTPUT_FILE}"),
        CompilerStatus::TimedOut { seconds } => format!("`{exe}` timed out after {seconds} s and was stopped"),
        CompilerStatus::CouldNotStart { why } => format!("`{exe}` could not be run: {why}"),
    };
    if let Some(c) = &comparison {
        summary.push_str(&format!(
            "; its op table agrees with our mapping on {} of {} ops{}",
            c.agreeing,
            c.ops_ours,
            if c.disagreements.is_empty() { String::new() } else { format!(" ({} op types differ)", c.disagreements.len()) }
        ));
    }
    CompilerSection { summary, exe: Some(exe), status: Some(run.status.clone()), log: Some(log), comparison }
}
