//! `effv2-edge inspect`: the resolved stage table with per-stage params and MACs.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use effv2_edge::graph::{build, Scope};
use effv2_edge::spec::{BlockKind, ModelOptions, ModelSpec};

use effv2_edge::cli_args::{parse_size, ModelArgs};

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input size, N or HxW (default: the variant's eval size)
    #[arg(long, value_parser = parse_size)]
    pub image_size: Option<(usize, usize)>,
    /// Print one JSON object instead of the table
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &InspectArgs) -> Result<()> {
    let spec = ModelSpec::from_name(&a.model.model, a.model.options(ModelOptions::default()))?;
    let (h, w) = a.image_size.unwrap_or((spec.eval_size, spec.eval_size));
    let graph = build(&spec, h, w)?;
    let cost = graph.cost();
    // Per-stage sums, read off node scopes.
    let mut stage_params = vec![0u64; spec.stages.len()];
    let mut stage_macs = vec![0u64; spec.stages.len()];
    for (node, macs) in graph.nodes.iter().zip(graph.node_macs()) {
        if let Scope::Block { stage, .. } = node.scope {
            stage_macs[stage] += macs;
            stage_params[stage] +=
                node.op.params().iter().map(|&p| &graph.params[p]).filter(|p| p.role.is_trainable()).map(|p| p.numel() as u64).sum::<u64>();
        }
    }
    let out = graph.output_shape();
    if a.json {
        let stages: Vec<_> = spec
            .stages
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "index": i, "kind": r.kind, "repeats": r.repeats, "kernel": r.kernel, "stride": r.stride,
                    "expand": r.expand, "in_ch": r.in_ch, "out_ch": r.out_ch, "se_ratio": r.se_ratio,
                    "params": stage_params[i], "macs": stage_macs[i],
                })
            })
            .collect();
        let obj = json!({
            "model": spec.variant, "options": spec.options, "width": spec.width, "depth": spec.depth,
            "image_size": [h, w], "params": cost.params, "macs": cost.macs, "stem_ch": spec.stem_ch,
            "head_ch": spec.head_ch, "blocks": spec.num_blocks(), "dropout": spec.dropout,
            "num_classes": out.c, "stages": stages,
        });
        println!("{}", serde_json::to_string_pretty(&obj)?);
        return Ok(());
    }
    let o = &spec.options;
    println!(
        "{}  width {} depth {}  fused stages: {}  {}x{}x{} input  {} classes  act {}  SE {}  padding {}",
        spec.variant, spec.width, spec.depth, o.fused_stages, o.in_channels, h, w, o.num_classes, o.activation,
        if o.se { "on" } else { "off" }, o.padding
    );
    println!("stem   conv3x3 s2 -> {}", spec.stem_ch);
    println!(
        "{:<6} {:<13} {:>7} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>12} {:>10}",
        "stage", "block", "repeats", "kernel", "stride", "expand", "in", "out", "SE", "params", "MMACs"
    );
    for (i, r) in spec.stages.iter().enumerate() {
        let se = r.se_ratio.map(|s| format!("{s}")).unwrap_or_else(|| "-".into());
        let kind = match r.kind {
            BlockKind::MbConv => "MBConv",
            BlockKind::FusedMbConv => "Fused-MBConv",
        };
        println!(
            "{:<6} {:<13} {:>7} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>12} {:>10.1}",
            i, kind, r.repeats, r.kernel, r.stride, r.expand, r.in_ch, r.out_ch, se,
            super::thousands(stage_params[i]), stage_macs[i] as f64 / 1e6
        );
    }
    println!("head   conv1x1 -> {}, avg pool, dropout {}, linear -> {}", spec.head_ch, spec.dropout, o.num_classes);
    println!("params {}   MACs {:.3} G at {}x{}", super::thousands(cost.params), cost.macs as f64 / 1e9, h, w);
    Ok(())
}
