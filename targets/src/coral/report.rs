//! The Edge TPU report (`edgetpu_report.json`): op mapping and the partition, parameter bytes
//! against the on-chip cache, activation sizes, MACs per op type, the predicted latency and —
//! when the compiler ran — what it said and where it disagrees with us.

use std::collections::BTreeMap;

use effv2_quantize::{ConstData, OpKind, QModel, QTensor};
use serde::Serialize;

use super::analysis::OpStat;
use super::calib::CalibInfo;
use super::compiler::{CompilerLog, CompilerStatus};
use super::cost::{CostModel, Prediction};

pub const REPORT_FORMAT: &str = "effv2-edge-edgetpu-report";

#[derive(Clone, Debug, Serialize)]
pub struct EdgeTpuReport {
    pub format: String,
    pub format_version: u32,
    pub model: ModelSummary,
    pub tflite: TfliteSummary,
    pub calibration: CalibSummary,
    pub partition: Partition,
    pub op_types: Vec<OpTypeRow>,
    pub parameters: Parameters,
    pub activations: Activations,
    pub macs: Macs,
    pub latency: Latency,
    pub compiler: CompilerSection,
    pub ops: Vec<OpRow>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub variant: String,
    pub fused_stages: String,
    /// F = Fused-MBConv, M = MBConv, per stage.
    pub stages: String,
    pub image_size: usize,
    pub activation: String,
    pub se: bool,
    pub params: u64,
    pub macs: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct IoSummary {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    pub scale: f32,
    pub zero_point: i32,
}

#[derive(Clone, Debug, Serialize)]
pub struct TfliteSummary {
    pub file: String,
    pub bytes: u64,
    pub input: IoSummary,
    pub output: IoSummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct CalibSummary {
    #[serde(flatten)]
    pub info: CalibInfo,
    pub method: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct FirstCpuOp {
    pub index: usize,
    pub op: String,
    pub node: String,
    pub why: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    pub ops: usize,
    pub on_edgetpu: usize,
    pub on_cpu: usize,
    /// 1 when the model starts on the Edge TPU, 0 when its first op already falls back.
    pub edgetpu_subgraphs: usize,
    pub first_cpu_op: Option<FirstCpuOp>,
    pub rule: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpTypeRow {
    pub op: String,
    pub count: usize,
    pub on_edgetpu: usize,
    pub macs: u64,
    pub elements: u64,
    pub param_bytes: u64,
    pub predicted_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Parameters {
    /// int8 weights + int32 biases of every conv/depthwise op.
    pub total_bytes: u64,
    pub weight_bytes: u64,
    pub bias_bytes: u64,
    /// Of which on Edge TPU ops.
    pub edgetpu_bytes: u64,
    pub cache_bytes: u64,
    /// Edge TPU parameters that fit the cache, and those streamed from the host every inference.
    pub cached_bytes: u64,
    pub streamed_bytes: u64,
    pub fits_on_chip: bool,
    pub note: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct LargestActivation {
    pub index: usize,
    pub op: String,
    pub node: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Activations {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub largest: Option<LargestActivation>,
    /// Σ of every op's output (what a run writes once).
    pub total_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Macs {
    pub total: u64,
    pub conv: u64,
    pub depthwise: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub predicted: Prediction,
    pub model: CostModel,
    pub formula: String,
    /// How well the model reproduces Coral's published latencies (docs/coral/cost_model.md).
    pub accuracy: String,
    /// Measured on a device: never here (no Edge TPU runtime backend or device).
    pub measured: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompilerSection {
    /// "not found on PATH", "compiled", "failed", …: a sentence for people.
    pub summary: String,
    pub exe: Option<String>,
    pub status: Option<CompilerStatus>,
    pub log: Option<CompilerLog>,
    pub comparison: Option<Comparison>,
}

/// Our op mapping against the compiler's table, per op type.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub ops_ours: u64,
    pub ops_compiler: u64,
    /// Ops both put on the same side (Σ over op types of min(ours, theirs) per side).
    pub agreeing: u64,
    pub per_op: Vec<ComparisonRow>,
    pub disagreements: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ComparisonRow {
    pub op: String,
    pub ours_mapped: u64,
    pub ours_cpu: u64,
    pub compiler_mapped: u64,
    pub compiler_cpu: u64,
    pub compiler_statuses: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpRow {
    #[serde(flatten)]
    pub stat: OpStat,
    pub predicted_ms: f64,
}

pub const PARTITION_RULE: &str = "Edge TPU compiler (default flags): ops are mapped from the input until the first op it \
    cannot map; that op and every op after it run on the CPU, even supported ones";

fn entry<'a>(rows: &'a mut BTreeMap<String, ComparisonRow>, op: &str) -> &'a mut ComparisonRow {
    rows.entry(op.to_string()).or_insert_with(|| ComparisonRow {
        op: op.to_string(),
        ours_mapped: 0,
        ours_cpu: 0,
        compiler_mapped: 0,
        compiler_cpu: 0,
        compiler_statuses: vec![],
    })
}

/// Compare our analysis with the compiler's table.
pub fn compare(ops: &[OpStat], log: &CompilerLog) -> Comparison {
    let mut rows: BTreeMap<String, ComparisonRow> = BTreeMap::new();
    for s in ops {
        let r = entry(&mut rows, s.op);
        if s.on_edgetpu {
            r.ours_mapped += 1;
        } else {
            r.ours_cpu += 1;
        }
    }
    for t in &log.table {
        let r = entry(&mut rows, &t.op);
        if t.mapped {
            r.compiler_mapped += t.count;
        } else {
            r.compiler_cpu += t.count;
        }
        if !r.compiler_statuses.contains(&t.status) {
            r.compiler_statuses.push(t.status.clone());
        }
    }
    let per_op: Vec<ComparisonRow> = rows.into_values().collect();
    let agreeing = per_op.iter().map(|r| r.ours_mapped.min(r.compiler_mapped) + r.ours_cpu.min(r.compiler_cpu)).sum();
    let disagreements = per_op
        .iter()
        .filter(|r| (r.ours_mapped, r.ours_cpu) != (r.compiler_mapped, r.compiler_cpu))
        .map(|r| {
            format!(
                "{}: we map {} and leave {} on the CPU; the compiler maps {} and leaves {} ({})",
                r.op,
                r.ours_mapped,
                r.ours_cpu,
                r.compiler_mapped,
                r.compiler_cpu,
                if r.compiler_statuses.is_empty() { "not in its table".to_string() } else { r.compiler_statuses.join("; ") }
            )
        })
        .collect();
    Comparison {
        ops_ours: ops.len() as u64,
        ops_compiler: log.table.iter().map(|r| r.count).sum(),
        agreeing,
        per_op,
        disagreements,
    }
}

/// Op-type rows in first-use order.
pub fn op_types(ops: &[OpStat], model: &CostModel) -> Vec<OpTypeRow> {
    let mut rows: Vec<OpTypeRow> = vec![];
    for s in ops {
        let i = match rows.iter().position(|r| r.op == s.op) {
            Some(i) => i,
            None => {
                rows.push(OpTypeRow { op: s.op.into(), count: 0, on_edgetpu: 0, macs: 0, elements: 0, param_bytes: 0, predicted_ms: 0.0 });
                rows.len() - 1
            }
        };
        let r = &mut rows[i];
        r.count += 1;
        r.on_edgetpu += usize::from(s.on_edgetpu);
        r.macs += s.macs;
        r.elements += s.elements;
        r.param_bytes += s.param_bytes;
        r.predicted_ms += model.op_ms(s);
    }
    rows
}

/// int8 weight bytes and int32 bias bytes of the conv ops.
pub fn weight_and_bias_bytes(q: &QModel) -> (u64, u64) {
    let (mut w, mut b) = (0, 0);
    for op in q.ops.iter().filter(|o| matches!(o.kind, OpKind::Conv2d { .. } | OpKind::DepthwiseConv2d { .. })) {
        for t in op.inputs.iter().skip(1).filter_map(|&t| q.tensors.get(t)) {
            match &t.data {
                Some(ConstData::I8(v)) => w += v.len() as u64,
                Some(ConstData::I32(v)) => b += 4 * v.len() as u64,
                None => {}
            }
        }
    }
    (w, b)
}

pub fn io_summary(t: &QTensor) -> IoSummary {
    let p = t.params();
    IoSummary {
        name: t.name.clone(),
        shape: t.shape.clone(),
        dtype: match t.dtype {
            effv2_quantize::DType::UInt8 => "uint8",
            effv2_quantize::DType::Int32 => "int32",
            effv2_quantize::DType::Int8 => "int8",
        }
        .into(),
        scale: p.map(|p| p.scale).unwrap_or(0.0),
        zero_point: p.map(|p| p.zero_point).unwrap_or(0),
    }
}
