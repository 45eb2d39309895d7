//! `effv2-edge eval`: top-1/top-5 of a checkpoint on a dataset's test split, run on the inference
//! engine with the checkpoint's own preprocessing (a training run's checkpoints hold EMA weights).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use effv2_edge::engine::CpuEngine;
use effv2_edge::weights::Checkpoint;
use effv2_edge::Tensor;
use effv2_train::data::{self, AugmentConfig, EpochPlan, Loader, MixConfig};
use effv2_train::loss::topk_correct;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint file, or a directory holding model.safetensors (e.g. RUN_DIR/best)
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// fashion-mnist, or a directory with train/ and test/ (or val/) class folders
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Evaluate only the first N test images
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print {"top1": .., "top5": .., "images": ..} (fractions)
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let (_, mut test) = data::open(&a.data)?;
    if let Some(n) = a.limit {
        test = test.take(n);
    }
    let (classes, channels) = (ckpt.config.options.num_classes, ckpt.config.options.in_channels);
    if test.classes.len() != classes {
        bail!("{} has {} classes but the checkpoint has {classes}", a.data, test.classes.len());
    }
    let pre = &ckpt.config.preprocess;
    let graph = ckpt.graph(pre.size, pre.size)?;
    let engine = CpuEngine::new(&graph, &ckpt.weights)?;
    let augment = AugmentConfig { min_area: 1.0, flip: false, randaug_layers: 0, mean: pre.mean.clone(), std: pre.std.clone() };
    let plan = EpochPlan {
        order: (0..test.len()).collect(),
        batch: a.batch_size,
        size: pre.size,
        channels,
        classes,
        train: false,
        augment,
        magnitude: 0.0,
        mix: MixConfig::default(),
        seed: 0,
        drop_last: false,
    };
    let (mut c1, mut c5, mut n) = (0, 0, 0);
    for b in Loader::spawn(Arc::new(test), plan, 0, 2, 4) {
        let b = b?;
        let logits = engine.run(&Tensor::new(vec![b.n, channels, pre.size, pre.size], b.x)?)?;
        c1 += topk_correct(logits.data(), &b.labels, classes, 1);
        c5 += topk_correct(logits.data(), &b.labels, classes, 5.min(classes));
        n += b.n;
    }
    let (top1, top5) = (c1 as f64 / n.max(1) as f64, c5 as f64 / n.max(1) as f64);
    if a.json {
        println!("{}", json!({"top1": top1, "top5": top5, "images": n}));
    } else {
        println!("{}: top-1 {:.2}%  top-5 {:.2}%  ({n} images at {}px)", a.checkpoint.display(), top1 * 100.0, top5 * 100.0, pre.size);
    }
    Ok(())
}
