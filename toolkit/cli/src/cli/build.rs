//! `effv2-edge build --target cpu`: a deployable artifact directory.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use effv2_edge::spec::{FusedStages, ModelOptions};
use effv2_runtime::Target;
use effv2_targets::cpu::{build_cpu, CpuBuild};
use effv2_targets::source::ModelSource;

use effv2_edge::cli_args::ShapeArgs;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// cpu (ONNX for tract/onnxruntime); coral and jetson come next
    #[arg(long)]
    pub target: Target,
    /// Build from this checkpoint...
    #[arg(long, conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
    /// ...or from a variant with freshly initialised, BN-calibrated weights (architecture benchmarking)
    #[arg(long)]
    pub model: Option<String>,
    /// Fused-MBConv placement of --model: official, none, all, N (first N stages) or a list like 0,1,3
    #[arg(long, requires = "model")]
    pub fused_stages: Option<FusedStages>,
    #[command(flatten)]
    pub shape: ShapeArgs,
    /// Input size (default: the checkpoint's / variant's eval size)
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Static batch size written into the artifact
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Seed for fresh weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output artifact directory (replaced atomically if it holds a previous artifact)
    #[arg(short, long)]
    pub output: PathBuf,
}

pub fn run(a: &BuildArgs) -> Result<()> {
    let source = match (&a.checkpoint, &a.model) {
        (Some(c), _) => ModelSource::Checkpoint(c.clone()),
        (None, Some(m)) => ModelSource::Fresh {
            model: m.clone(),
            options: a.shape.apply_with_placement(ModelOptions::default(), a.fused_stages.as_ref()),
            seed: a.seed,
        },
        (None, None) => bail!("give --checkpoint CKPT or --model NAME"),
    };
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let model = source.load_for_size(a.image_size)?;
    let manifest = match a.target {
        Target::Cpu => build_cpu(&model, &CpuBuild { image_size: a.image_size, batch: a.batch }, &a.output)?,
        t => bail!("--target {t} is not implemented yet in this version (cpu is)"),
    };
    eprintln!(
        "built {} ({} fused stages, {}x{}) for {} -> {}",
        manifest.model.variant,
        manifest.model.fused_stages,
        manifest.input.shape[2],
        manifest.input.shape[3],
        manifest.target,
        a.output.display()
    );
    Ok(())
}
