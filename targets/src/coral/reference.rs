//! Networks Coral published Edge TPU latencies for (edge-targets.md §2), written as our stage
//! tables so they go through the same graph → int8 → report path as our own models, and the cost
//! model can be fitted to, and checked against, real numbers.
//!
//! MobileNet V2 and EfficientNet-EdgeTPU are MBConv / Fused-MBConv stacks with ReLU and no SE.
//! MobileNet V1 is a stack of MBConv blocks with expansion 1 (depthwise 3×3 → pointwise), minus
//! the residual adds and the head conv our builder would add (see [`reference_graph`]).

use effv2_edge::graph::{build, Graph, GraphError, Op};
use effv2_edge::rng::Rng;
use effv2_edge::spec::{Activation, BlockKind, ModelOptions, ModelSpec, Padding, StageRow};
use effv2_edge::weights::{calibrate_batchnorm, init_weights};
use effv2_quantize::{quantize, IoType, QModel, QuantizeOptions, RangeMethod};

use super::analysis::{analyze, OpStat};
use super::cost::{fit, CostModel, Sample};
use super::CoralError;

/// One published network and its latency.
#[derive(Clone, Copy, Debug)]
pub struct ReferenceNet {
    pub name: &'static str,
    pub size: usize,
    /// Published milliseconds per inference.
    pub published_ms: f64,
    /// Where the number comes from.
    pub source: &'static str,
    /// Used to fit the cost model's constants (`false`: held out, only predicted).
    pub fit: bool,
}

const BENCH: &str = "coral.ai/docs/edgetpu/benchmarks Table 1, desktop CPU + USB Accelerator (USB 3.0)";
const MODELS: &str = "coral.ai/models, image classification \"Latency\" column (USB Accelerator assumed)";

/// Every reference network, smallest first.
pub const REFERENCE_NETS: &[ReferenceNet] = &[
    ReferenceNet { name: "mobilenet-v1-0.25", size: 128, published_ms: 0.9, source: MODELS, fit: true },
    ReferenceNet { name: "mobilenet-v1", size: 224, published_ms: 2.4, source: BENCH, fit: true },
    ReferenceNet { name: "mobilenet-v2", size: 224, published_ms: 2.6, source: BENCH, fit: false },
    ReferenceNet { name: "efficientnet-edgetpu-s", size: 224, published_ms: 5.1, source: BENCH, fit: true },
    ReferenceNet { name: "efficientnet-edgetpu-m", size: 240, published_ms: 8.7, source: BENCH, fit: false },
    ReferenceNet { name: "efficientnet-edgetpu-l", size: 300, published_ms: 21.3, source: MODELS, fit: true },
];

pub fn reference_net(name: &str) -> Option<&'static ReferenceNet> {
    REFERENCE_NETS.iter().find(|n| n.name == name)
}

const M: BlockKind = BlockKind::MbConv;
const F: BlockKind = BlockKind::FusedMbConv;

const fn row(kind: BlockKind, repeats: usize, kernel: usize, stride: usize, expand: usize, in_ch: usize, out_ch: usize) -> StageRow {
    StageRow { kind, repeats, kernel, stride, expand, in_ch, out_ch, se_ratio: None }
}

/// MobileNet V2 1.0 (Sandler et al. 2018, Table 2): t, c, n, s rows.
const MOBILENET_V2: &[StageRow] = &[
    row(M, 1, 3, 1, 1, 32, 16),
    row(M, 2, 3, 2, 6, 16, 24),
    row(M, 3, 3, 2, 6, 24, 32),
    row(M, 4, 3, 2, 6, 32, 64),
    row(M, 3, 3, 1, 6, 64, 96),
    row(M, 3, 3, 2, 6, 96, 160),
    row(M, 1, 3, 1, 6, 160, 320),
];

/// MobileNet V1 at width `a` (Howard et al. 2017, Table 1): depthwise-separable blocks.
fn mobilenet_v1(a: f64) -> Vec<StageRow> {
    let c = |n: usize| ((n as f64 * a) as usize).max(8);
    let plan = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)];
    let mut rows: Vec<StageRow> = plan.iter().map(|&(i, o, s)| row(M, 1, 3, s, 1, c(i), c(o))).collect();
    rows.push(row(M, 5, 3, 1, 1, c(512), c(512)));
    rows.push(row(M, 1, 3, 2, 1, c(512), c(1024)));
    rows.push(row(M, 1, 3, 1, 1, c(1024), c(1024)));
    rows
}

/// EfficientNet-EdgeTPU (tensorflow/tpu `efficientnet_edgetpu_builder.py`):
/// `r1_k3_s11_e4_i24_o24_c1_noskip, r2_k3_s22_e8_i24_o32_c1, r4_k3_s22_e8_i32_o48_c1,
/// r5_k5_s22_e8_i48_o96, r4_k5_s11_e8_i96_o144, r2_k5_s22_e8_i144_o192` (c1 = fused), stem 32,
/// head 1280, ReLU, scaled by (width, depth) with V1 rounding (equal to ours at 1.0 and 1.2).
/// The first block expands 24·4 = 96 channels while reading the 32-channel stem; our blocks
/// expand their real input, so it is written as expansion 3 of 32 (exact for S and M; for L,
/// 40·3 = 120 channels instead of 128, under 1% of its MACs).
fn edgetpu(width: f64, depth: f64) -> (usize, Vec<StageRow>, usize) {
    let f = |n: usize| effv2_edge::spec::round_filters(n, width);
    let r = |n: usize| effv2_edge::spec::round_repeats(n, depth);
    let stem = f(32);
    let rows = vec![
        row(F, r(1), 3, 1, 3, stem, f(24)),
        row(F, r(2), 3, 2, 8, f(24), f(32)),
        row(F, r(4), 3, 2, 8, f(32), f(48)),
        row(M, r(5), 5, 2, 8, f(48), f(96)),
        row(M, r(4), 5, 1, 8, f(96), f(144)),
        row(M, r(2), 5, 2, 8, f(144), f(192)),
    ];
    (stem, rows, f(1280))
}

/// The resolved spec of a reference network (ReLU6 for ReLU: same int8 ops, same cost).
pub fn reference_spec(net: &ReferenceNet) -> Option<ModelSpec> {
    let (stem, stages, head, width, depth) = match net.name {
        "mobilenet-v1" => (32, mobilenet_v1(1.0), 1024, 1.0, 1.0),
        "mobilenet-v1-0.25" => (8, mobilenet_v1(0.25), 256, 0.25, 1.0),
        "mobilenet-v2" => (32, MOBILENET_V2.to_vec(), 1280, 1.0, 1.0),
        "efficientnet-edgetpu-s" => with_wd(edgetpu(1.0, 1.0), 1.0, 1.0),
        "efficientnet-edgetpu-m" => with_wd(edgetpu(1.0, 1.1), 1.0, 1.1),
        "efficientnet-edgetpu-l" => with_wd(edgetpu(1.2, 1.4), 1.2, 1.4),
        _ => return None,
    };
    let options = ModelOptions {
        num_classes: 1001,
        dropout: Some(0.0),
        drop_path: 0.0,
        padding: Padding::TfSame,
        activation: Activation::Relu6,
        se: false,
        ..ModelOptions::default()
    };
    Some(ModelSpec {
        variant: net.name.to_string(),
        options,
        width,
        depth,
        stem_ch: stem,
        stages,
        head_ch: head,
        dropout: 0.0,
        train_size: net.size,
        eval_size: net.size,
    })
}

fn with_wd((stem, rows, head): (usize, Vec<StageRow>, usize), w: f64, d: f64) -> (usize, Vec<StageRow>, usize, f64, f64) {
    (stem, rows, head, w, d)
}

/// The graph of a reference network at its published size. MobileNet V1 has no residual adds
/// and no 1×1 head conv (its last pointwise conv is the feature layer): those nodes become
/// identities, which every consumer (engine, BN calibration, int8 lowering) passes through.
pub fn reference_graph(net: &ReferenceNet) -> Option<Result<Graph, GraphError>> {
    let spec = reference_spec(net)?;
    Some(build(&spec, net.size, net.size).map(|mut g| {
        if net.name.starts_with("mobilenet-v1") {
            for n in &mut g.nodes {
                let head = n.name.starts_with("head.") && n.name != "head.pool" && n.name != "head.dropout";
                if matches!(n.op, Op::Add) || head {
                    n.op = Op::Dropout { rate: 0.0 };
                    n.inputs.truncate(1);
                }
            }
        }
        g
    }))
}

/// The int8 model of a reference network: fresh weights, BN statistics and min/max ranges from
/// one random image. Only the op list, shapes and byte counts matter to the cost model, and
/// those do not depend on the weights.
pub fn reference_qmodel(net: &ReferenceNet) -> Result<QModel, CoralError> {
    let graph = reference_graph(net).ok_or_else(|| CoralError::Internal(format!("no reference network {:?}", net.name)))??;
    let image = Rng::new(5).normal_tensor(vec![1, 3, net.size, net.size]);
    let weights = calibrate_batchnorm(&graph, &init_weights(&graph, 3), &image)?;
    Ok(quantize(&graph, &weights, &[image], &QuantizeOptions { method: RangeMethod::MinMax, io: IoType::Int8 })?)
}

/// A reference network's analysed int8 model.
pub struct ReferenceModel {
    pub net: ReferenceNet,
    pub ops: Vec<OpStat>,
    /// Input + output bytes per inference.
    pub io_bytes: u64,
    pub macs: u64,
    pub param_bytes: u64,
}

/// Quantize and analyse every reference network (a few seconds: the largest is 10 GMACs).
pub fn reference_models() -> Result<Vec<ReferenceModel>, CoralError> {
    REFERENCE_NETS
        .iter()
        .map(|net| {
            let q = reference_qmodel(net)?;
            let ops = analyze(&q);
            Ok(ReferenceModel {
                net: *net,
                io_bytes: (q.input_tensor().numel() + q.output_tensor().numel()) as u64,
                macs: ops.iter().map(|o| o.macs).sum(),
                param_bytes: ops.iter().map(|o| o.param_bytes).sum(),
                ops,
            })
        })
        .collect()
}

/// Fit the cost model's constants to the reference networks marked `fit`.
pub fn fit_to_references(models: &[ReferenceModel], base: CostModel) -> CostModel {
    let samples: Vec<Sample> = models
        .iter()
        .filter(|m| m.net.fit)
        .map(|m| Sample { ops: &m.ops, io_bytes: m.io_bytes, published_ms: m.net.published_ms })
        .collect();
    fit(&samples, base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(name: &str) -> (u64, u64) {
        let g = reference_graph(reference_net(name).unwrap()).unwrap().unwrap();
        // Count only what the graph computes (bypassed nodes keep their now-unread parameters).
        let read: std::collections::BTreeSet<usize> = g.nodes.iter().flat_map(|n| n.op.params()).collect();
        let params = read.iter().map(|&p| &g.params[p]).filter(|p| p.role.is_trainable()).map(|p| p.numel() as u64).sum();
        (params, g.cost().macs)
    }

    /// Parameter and MAC counts equal the published architectures' (papers / Keras / timm).
    #[test]
    fn counts_match_the_published_networks() {
        // Keras' trainable counts (BN scale/shift included, running statistics not), 1000
        // classes; the 1001st class adds one weight row and a bias.
        let (p, m) = cost("mobilenet-v2");
        assert_eq!(p, 3_504_872 + 1281, "mobilenet-v2 params");
        assert!((m as f64 / 300.8e6 - 1.0).abs() < 0.01, "mobilenet-v2 MACs {m}");
        let (p, m) = cost("mobilenet-v1");
        assert_eq!(p, 4_231_976 + 1025, "mobilenet-v1 params");
        assert!((m as f64 / 569e6 - 1.0).abs() < 0.01, "mobilenet-v1 MACs {m}");
        // timm efficientnet_es (EdgeTPU-S), 1000 classes: 5.44 M params.
        let (p, _) = cost("efficientnet-edgetpu-s");
        assert!((p as f64 / 5.44e6 - 1.0).abs() < 0.01, "edgetpu-s params {p}");
    }
}
