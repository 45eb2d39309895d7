//! `effv2-edge predict`: decode images, preprocess as the model says, print the top classes — of
//! a checkpoint (f32 reference engine) or of a built artifact, run as deployed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::scored::Scored;
use effv2_edge::imaging;
use effv2_edge::Tensor;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Checkpoint file, or a directory holding model.safetensors (e.g. RUN_DIR/best)...
    #[arg(long, conflicts_with = "artifact", required_unless_present = "artifact")]
    pub checkpoint: Option<PathBuf>,
    /// ...or an artifact directory from `effv2-edge build`, run through effv2-runtime as deployed
    /// (cpu in tract, coral in TFLite / on an Edge TPU, jetson on a CUDA GPU)
    #[arg(long)]
    pub artifact: Option<PathBuf>,
    /// PNG or JPEG files
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Print a JSON list: per image its top classes with label and probability
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &PredictArgs) -> Result<()> {
    let mut model = Scored::open(a.checkpoint.as_ref(), a.artifact.as_ref())?;
    let (pre, channels, classes) = (model.preprocess.clone(), model.channels, model.classes);
    // Decode everything first so a bad file fails before any work.
    let mut batch = Vec::with_capacity(a.images.len() * channels * pre.size * pre.size);
    for p in &a.images {
        let img = imaging::load(p)?;
        batch.extend_from_slice(imaging::preprocess(&img, &pre, channels)?.data());
    }
    let logits = model.logits(Tensor::new(vec![a.images.len(), channels, pre.size, pre.size], batch)?)?;
    let mut results = vec![];
    for (path, row) in a.images.iter().zip(logits.chunks_exact(classes)) {
        let probs = softmax(row);
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&i, &j| probs[j].total_cmp(&probs[i]));
        let top: Vec<_> = order.iter().take(a.top).map(|&i| (i, model.label(i), probs[i])).collect();
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
