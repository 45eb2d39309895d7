//! The cost model against Coral's published latencies: predictions for every reference network
//! with the committed constants, which networks were fitted and which held out, and a
//! leave-one-out check of the fit. Written into docs/coral/cost_model.md (a test keeps the
//! committed table equal to this output).

use std::fmt::Write as _;

use serde::Serialize;

use super::cost::CostModel;
use super::reference::{fit_to_references, ReferenceModel};

#[derive(Clone, Debug, Serialize)]
pub struct ValidationRow {
    pub name: String,
    pub size: usize,
    pub gmacs: f64,
    pub param_mib: f64,
    pub ops: usize,
    pub published_ms: f64,
    pub predicted_ms: f64,
    /// predicted / published − 1.
    pub error: f64,
    pub fit: bool,
    /// Predicted by constants fitted without this network (fit-set members only).
    pub leave_one_out_ms: Option<f64>,
    pub source: String,
}

pub fn validate(models: &[ReferenceModel], cm: &CostModel) -> Vec<ValidationRow> {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let predicted = cm.predict(&m.ops, m.io_bytes).total_ms;
            let loo = m.net.fit.then(|| {
                let others: Vec<ReferenceModel> = models
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, r)| ReferenceModel { net: r.net, ops: r.ops.clone(), io_bytes: r.io_bytes, macs: r.macs, param_bytes: r.param_bytes })
                    .collect();
                fit_to_references(&others, *cm).predict(&m.ops, m.io_bytes).total_ms
            });
            ValidationRow {
                name: m.net.name.into(),
                size: m.net.size,
                gmacs: m.macs as f64 / 1e9,
                param_mib: m.param_bytes as f64 / (1u64 << 20) as f64,
                ops: m.ops.len(),
                published_ms: m.net.published_ms,
                predicted_ms: predicted,
                error: predicted / m.net.published_ms - 1.0,
                fit: m.net.fit,
                leave_one_out_ms: loo,
                source: m.net.source.into(),
            }
        })
        .collect()
}

/// The generated part of docs/coral/cost_model.md.
pub fn validation_markdown(rows: &[ValidationRow], cm: &CostModel) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Constants: c_mac = {} ps/MAC ({:.0}% of the 4 TOPS peak), c_el = {} ps/element ({:.1} G elements/s), \
         t_op = {} µs, B_usb = {} MB/s, cache = {:.2} MiB.\n",
        cm.mac_ps,
        cm.mac_efficiency() * 100.0,
        cm.element_ps,
        1e3 / cm.element_ps,
        cm.op_overhead_us,
        cm.usb_mb_per_s,
        cm.cache_bytes as f64 / (1u64 << 20) as f64
    );
    o.push_str("| network | input | GMACs | int8 params MiB | ops | role | published ms | predicted ms | error | leave-one-out ms (error) |\n");
    o.push_str("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|\n");
    for r in rows {
        let loo = match r.leave_one_out_ms {
            Some(ms) => format!("{ms:.2} ({:+.0}%)", (ms / r.published_ms - 1.0) * 100.0),
            None => "—".into(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {:.3} | {:.2} | {} | {} | {:.1} | {:.2} | {:+.1}% | {} |",
            r.name,
            r.size,
            r.gmacs,
            r.param_mib,
            r.ops,
            if r.fit { "fit" } else { "**held out**" },
            r.published_ms,
            r.predicted_ms,
            r.error * 100.0,
            loo
        );
    }
    let worst = rows.iter().map(|r| r.error.abs()).fold(0.0, f64::max);
    let worst_held = rows.iter().filter(|r| !r.fit).map(|r| r.error.abs()).fold(0.0, f64::max);
    let _ = writeln!(o, "\nLargest error: {:.1}% over all networks, {:.1}% over the held-out ones.", worst * 100.0, worst_held * 100.0);
    o
}
