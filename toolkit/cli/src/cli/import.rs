//! `effv2-edge import`: a peer state dict (safetensors) → our checkpoint.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use effv2_edge::spec::{variant, Interpolation, ModelOptions, ModelSpec};
use effv2_edge::weights::import::{import, Layout, IMAGENET_LABELS};

use effv2_edge::cli_args::ModelArgs;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Layout of the state dict: timm-tf (tf_efficientnetv2_*), timm (efficientnetv2_*), torchvision
    #[arg(long = "from")]
    pub layout: Layout,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The peer's state dict saved as safetensors
    #[arg(long)]
    pub weights: PathBuf,
    /// Output checkpoint file (.safetensors)
    #[arg(short, long)]
    pub output: PathBuf,
    /// Class names, one per line (default: ImageNet-1k names when there are 1000 classes)
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Override the preprocessing mean, e.g. 0.5,0.5,0.5
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// bilinear or bicubic
    #[arg(long, value_parser = parse_interp)]
    pub interpolation: Option<Interpolation>,
    #[arg(long)]
    pub crop_pct: Option<f32>,
    /// Eval image size
    #[arg(long)]
    pub size: Option<usize>,
}

fn parse_interp(s: &str) -> Result<Interpolation, String> {
    match s {
        "bilinear" => Ok(Interpolation::Bilinear),
        "bicubic" => Ok(Interpolation::Bicubic),
        _ => Err(format!("unknown interpolation {s:?} (bilinear or bicubic)")),
    }
}

pub fn run(a: &ImportArgs) -> Result<()> {
    let v = variant(&a.model.model)?;
    let options = a.model.options(a.layout.options(ModelOptions::default()));
    let spec = ModelSpec::new(&v, options)?;
    let mut pre = a.layout.preprocess(&v);
    if let Some(m) = &a.mean {
        pre.mean = m.clone();
    }
    if let Some(s) = &a.std {
        pre.std = s.clone();
    }
    if let Some(i) = a.interpolation {
        pre.interpolation = i;
    }
    if let Some(c) = a.crop_pct {
        if !(c > 0.0 && c <= 1.0) {
            bail!("--crop-pct must be in (0, 1], got {c}");
        }
        pre.crop_pct = c;
    }
    if let Some(s) = a.size {
        pre.size = s;
    }
    let channels = spec.options.in_channels;
    if channels != 3 && a.mean.is_none() {
        pre.mean.truncate(channels.min(3));
        pre.std.truncate(channels.min(3));
    }
    if pre.mean.len() != channels || pre.std.len() != channels || pre.std.contains(&0.0) {
        bail!("preprocessing needs {channels} mean and {channels} non-zero std values, got {:?} / {:?}", pre.mean, pre.std);
    }
    let labels = match &a.labels {
        Some(p) => Some(read_labels(p)?),
        None if spec.options.num_classes == 1000 => Some(IMAGENET_LABELS.lines().map(String::from).collect()),
        None => None,
    };
    let ckpt = import(a.layout, &spec, &a.weights, pre, labels)?;
    ckpt.save(&a.output).with_context(|| format!("writing {}", a.output.display()))?;
    let cost = ckpt.graph(32, 32)?.cost();
    eprintln!(
        "imported {} ({} layout, {} params) -> {}",
        spec.variant,
        a.layout,
        super::thousands(cost.params),
        a.output.display()
    );
    Ok(())
}

pub fn read_labels(p: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading labels {}", p.display()))?;
    Ok(text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}
