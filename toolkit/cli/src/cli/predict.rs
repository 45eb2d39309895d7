//! `effv2-edge predict`: decode images, preprocess as the checkpoint says, print the top classes.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use effv2_edge::engine::CpuEngine;
use effv2_edge::imaging;
use effv2_edge::weights::Checkpoint;
use effv2_edge::Tensor;

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// PNG or JPEG files
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &PredictArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let pre = &ckpt.config.preprocess;
    let channels = ckpt.config.options.in_channels;
    // Decode everything first so a bad file fails before any work.
    let mut batch = Vec::with_capacity(a.images.len() * channels * pre.size * pre.size);
    for p in &a.images {
        let img = imaging::load(p)?;
        batch.extend_from_slice(imaging::preprocess(&img, pre, channels)?.data());
    }
    let x = Tensor::new(vec![a.images.len(), channels, pre.size, pre.size], batch)?;
    let graph = ckpt.graph(pre.size, pre.size)?;
    let logits = CpuEngine::new(&graph, &ckpt.weights)?.run(&x)?;
    let classes = ckpt.config.options.num_classes;
    let mut results = vec![];
    for (path, row) in a.images.iter().zip(logits.data().chunks_exact(classes)) {
        let probs = softmax(row);
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let top: Vec<_> = order
            .iter()
            .take(a.top)
            .map(|&i| {
                let label = ckpt.config.labels.as_ref().map(|l| l[i].clone()).unwrap_or_else(|| format!("class {i}"));
                (i, label, probs[i])
            })
            .collect();
        if a.json {
            let t: Vec<_> = top.iter().map(|(i, l, p)| json!({"class": i, "label": l, "prob": p})).collect();
            results.push(json!({"image": path.display().to_string(), "top": t}));
        } else {
            println!("{}", path.display());
            for (i, label, p) in top {
                println!("  {:>6.2}%  {:>5}  {}", p * 100.0, i, label);
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}
