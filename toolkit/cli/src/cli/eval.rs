//! `effv2-edge eval`: top-1/top-5 on a dataset's test split, of a checkpoint (run on the f32
//! inference engine; a training run's checkpoints hold EMA weights) or of a built artifact (run
//! through effv2-runtime exactly as deployed: fp32 or int8 ONNX in tract, a coral `.tflite` in
//! TFLite). Both use the model's own preprocessing (resize, centre crop, interpolation, mean/std).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use effv2_edge::engine::CpuEngine;
use effv2_edge::weights::Checkpoint;
use effv2_edge::Tensor;
use effv2_runtime::{open, OpenOptions, Runtime};
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

/// What is evaluated: logits for a `[n, C, H, W]` batch of preprocessed images.
enum Model {
    Engine(CpuEngine),
    Artifact(Box<dyn Runtime>),
}

impl Model {
    fn logits(&mut self, x: Tensor, classes: usize) -> Result<Vec<f32>> {
        match self {
            Model::Engine(e) => Ok(e.run(&x)?.into_data()),
            Model::Artifact(rt) => {
                // The artifact's batch is static: run it in chunks, the last one padded with zeros.
                let [b, c, h, w] = rt.input_shape();
                let per = c * h * w;
                let n = x.shape()[0];
                let mut out = Vec::with_capacity(n * classes);
                for chunk in x.data().chunks(b * per) {
                    let mut input = chunk.to_vec();
                    input.resize(b * per, 0.0);
                    let y = rt.run(&input)?;
                    if y.len() != b * classes {
                        bail!("the artifact returned {} values for {b} images of {classes} classes", y.len());
                    }
                    out.extend_from_slice(&y[..chunk.len() / per * classes]);
                }
                Ok(out)
            }
        }
    }
}

pub fn run(a: &EvalArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    // (what, model, classes, channels, the model's preprocessing)
    let (what, mut model, classes, channels, pre) = match (&a.checkpoint, &a.artifact) {
        (Some(path), _) => {
            let ckpt = Checkpoint::load(path)?;
            let pre = &ckpt.config.preprocess;
            let graph = ckpt.graph(pre.size, pre.size)?;
            let engine = CpuEngine::new(&graph, &ckpt.weights)?;
            let o = &ckpt.config.options;
            (path.clone(), Model::Engine(engine), o.num_classes, o.in_channels, pre.clone())
        }
        (None, Some(dir)) => {
            let rt = open(dir, &OpenOptions::default()).with_context(|| format!("opening artifact {}", dir.display()))?;
            let m = rt.manifest().clone();
            let [_, c, h, w] = rt.input_shape();
            if h != w || h != m.preprocess.size {
                bail!("artifact input {h}x{w} does not match its preprocessing size {}", m.preprocess.size);
            }
            eprintln!("{}: {} {} on {}", dir.display(), m.target, m.precision, rt.backend());
            (dir.clone(), Model::Artifact(rt), m.num_classes, c, m.preprocess)
        }
        (None, None) => bail!("give --checkpoint CKPT or --artifact DIR"),
    };
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
        let logits = model.logits(Tensor::new(vec![b.n, channels, size, size], b.x)?, classes)?;
        c1 += topk_correct(&logits, &b.labels, classes, 1);
        c5 += topk_correct(&logits, &b.labels, classes, 5.min(classes));
        n += b.n;
    }
    let (top1, top5) = (c1 as f64 / n.max(1) as f64, c5 as f64 / n.max(1) as f64);
    if a.json {
        println!("{}", json!({"top1": top1, "top5": top5, "images": n}));
    } else {
        println!("{}: top-1 {:.2}%  top-5 {:.2}%  ({n} images at {size}px)", what.display(), top1 * 100.0, top5 * 100.0);
    }
    Ok(())
}
