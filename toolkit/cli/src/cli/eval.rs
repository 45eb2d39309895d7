//! `effv2-edge eval`: top-1/top-5 on a dataset's test split, of a checkpoint (run on the f32
//! inference engine; a training run's checkpoints hold EMA weights) or of a built artifact (run
//! through effv2-runtime exactly as deployed: fp32 or int8 ONNX in tract, a coral `.tflite` in
//! TFLite). Both use the model's own preprocessing (resize, centre crop, interpolation, mean/std).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use super::scored::Scored;
use effv2_edge::Tensor;
use effv2_train::data::{self, AugmentConfig, EpochPlan, Loader, MixConfig};
use effv2_train::loss::topk_correct;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Checkpoint file, or a directory holding model.safetensors (e.g. RUN_DIR/best)...
    #[arg(long, conflicts_with = "artifact", required_unless_present = "artifact")]
    pub checkpoint: Option<PathBuf>,
    /// ...or an artifact directory from `effv2-edge build` (cpu fp32/int8, coral, jetson on a CUDA GPU)
    #[arg(long)]
    pub artifact: Option<PathBuf>,
    /// fashion-mnist, or a directory with train/ and test/ (or val/) class folders
    #[arg(long, default_value = "fashion-mnist")]
    pub data: String,
    /// Images per engine call (checkpoints; artifacts run at their own static batch)
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
    let mut model = Scored::open(a.checkpoint.as_ref(), a.artifact.as_ref())?;
    let what = a.checkpoint.as_ref().or(a.artifact.as_ref()).map(|p| p.display().to_string()).unwrap_or_default();
    let (classes, channels, pre) = (model.classes, model.channels, model.preprocess.clone());
    let (_, mut test) = data::open(&a.data)?;
    if let Some(n) = a.limit {
        test = test.take(n);
    }
    if test.classes.len() != classes {
        bail!("{} has {} classes but the model has {classes}", a.data, test.classes.len());
    }
    let size = pre.size;
    let augment = AugmentConfig { min_area: 1.0, flip: false, randaug_layers: 0, mean: pre.mean.clone(), std: pre.std.clone() };
    let plan = EpochPlan {
        order: (0..test.len()).collect(),
        batch: a.batch_size,
        size,
        channels,
        classes,
        train: false,
        augment,
        magnitude: 0.0,
        mix: MixConfig::default(),
        seed: 0,
        drop_last: false,
        // Resize, crop and interpolation as the model says: an imported timm / torchvision model
        // is scored with its own centre crop, as `predict` runs it.
        eval_preprocess: Some(pre),
    };
    let (mut c1, mut c5, mut n) = (0, 0, 0);
    for b in Loader::spawn(Arc::new(test), plan, 0, 2, 4) {
        let b = b?;
        let logits = model.logits(Tensor::new(vec![b.n, channels, size, size], b.x)?)?;
        c1 += topk_correct(&logits, &b.labels, classes, 1);
        c5 += topk_correct(&logits, &b.labels, classes, 5.min(classes));
        n += b.n;
    }
    let (top1, top5) = (c1 as f64 / n.max(1) as f64, c5 as f64 / n.max(1) as f64);
    if a.json {
        println!("{}", json!({"top1": top1, "top5": top5, "images": n}));
    } else {
        println!("{}: top-1 {:.2}%  top-5 {:.2}%  ({n} images at {size}px)", what, top1 * 100.0, top5 * 100.0);
    }
    Ok(())
}
