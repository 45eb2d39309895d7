//! `effv2-edge list`: every variant with its size and cost.

use anyhow::Result;
use serde_json::json;

use effv2_edge::graph::build;
use effv2_edge::spec::{variants, ModelOptions, ModelSpec};

pub fn run(as_json: bool) -> Result<()> {
    let mut rows = vec![];
    for v in variants() {
        let spec = ModelSpec::new(&v, ModelOptions::default())?;
        let cost = build(&spec, v.eval_size, v.eval_size)?.cost();
        rows.push((v, spec, cost));
    }
    if as_json {
        let items: Vec<_> = rows
            .iter()
            .map(|(v, s, c)| {
                json!({
                    "name": v.name, "params": c.params, "macs": c.macs, "train_size": v.train_size,
                    "eval_size": v.eval_size, "width": v.width, "depth": v.depth, "stages": s.stages.len(),
                    "blocks": s.num_blocks(), "dropout": v.dropout,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    println!("{:<20} {:>12} {:>9} {:>6} {:>6} {:>7} {:>7}", "variant", "params", "GMACs", "train", "eval", "blocks", "dropout");
    for (v, s, c) in rows {
        println!(
            "{:<20} {:>12} {:>9.3} {:>6} {:>6} {:>7} {:>7}",
            v.name,
            super::thousands(c.params),
            c.macs as f64 / 1e9,
            v.train_size,
            v.eval_size,
            s.num_blocks(),
            v.dropout
        );
    }
    println!("\nGMACs at the eval size, 1000 classes. Options: effv2-edge inspect --model NAME --help");
    Ok(())
}
