//! The model `eval` and `predict` score: a checkpoint on the f32 reference engine, or a built
//! artifact through effv2-runtime exactly as deployed (tract, TFLite / Edge TPU, CUDA) — with what
//! both need to feed it: classes, input channels, preprocessing and labels.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use effv2_edge::engine::CpuEngine;
use effv2_edge::spec::Preprocess;
use effv2_edge::weights::Checkpoint;
use effv2_edge::Tensor;
use effv2_runtime::{open, OpenOptions, Runtime};

enum Engine {
    Cpu(CpuEngine),
    Artifact(Box<dyn Runtime>),
}

pub struct Scored {
    engine: Engine,
    pub classes: usize,
    pub channels: usize,
    pub preprocess: Preprocess,
    pub labels: Option<Vec<String>>,
}

impl Scored {
    /// `--checkpoint PATH` or `--artifact DIR`, exactly one of them.
    pub fn open(checkpoint: Option<&PathBuf>, artifact: Option<&PathBuf>) -> Result<Scored> {
        match (checkpoint, artifact) {
            (Some(path), None) => Self::checkpoint(path),
            (None, Some(dir)) => Self::artifact(dir),
            (Some(_), Some(_)) => bail!("give --checkpoint or --artifact, not both"),
            (None, None) => bail!("give --checkpoint CKPT or --artifact DIR"),
        }
    }

    fn checkpoint(path: &Path) -> Result<Scored> {
        let ckpt = Checkpoint::load(path)?;
        let pre = ckpt.config.preprocess.clone();
        let engine = CpuEngine::new(&ckpt.graph(pre.size, pre.size)?, &ckpt.weights)?;
        let o = &ckpt.config.options;
        Ok(Scored { engine: Engine::Cpu(engine), classes: o.num_classes, channels: o.in_channels, preprocess: pre, labels: ckpt.config.labels.clone() })
    }

    fn artifact(dir: &Path) -> Result<Scored> {
        let rt = open(dir, &OpenOptions::default()).with_context(|| format!("opening artifact {}", dir.display()))?;
        let m = rt.manifest().clone();
        let [_, c, h, w] = rt.input_shape();
        if h != w || h != m.preprocess.size {
            bail!("artifact input {h}x{w} does not match its preprocessing size {}", m.preprocess.size);
        }
        eprintln!("{}: {} {} on {}", dir.display(), m.target, m.precision, rt.device());
        Ok(Scored { engine: Engine::Artifact(rt), classes: m.num_classes, channels: c, preprocess: m.preprocess, labels: m.labels })
    }

    /// The label of class `i` ("class i" when the model has none).
    pub fn label(&self, i: usize) -> String {
        self.labels.as_ref().and_then(|l| l.get(i).cloned()).unwrap_or_else(|| format!("class {i}"))
    }

    /// Logits `[n, classes]` of a `[n, C, H, W]` batch of preprocessed images.
    pub fn logits(&mut self, x: Tensor) -> Result<Vec<f32>> {
        let classes = self.classes;
        match &mut self.engine {
            Engine::Cpu(e) => Ok(e.run(&x)?.into_data()),
            Engine::Artifact(rt) => {
                // The artifact's batch is static: run it in chunks, the last one padded with zeros.
                let [b, c, h, w] = rt.input_shape();
                let per = c * h * w;
                let mut out = Vec::with_capacity(x.shape()[0] * classes);
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
