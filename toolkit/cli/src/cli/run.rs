//! `effv2-edge run`: logits for a float32 NCHW .npy batch.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use effv2_edge::engine::CpuEngine;
use effv2_edge::io::npy;
use effv2_edge::weights::Checkpoint;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// float32 NCHW, already normalised
    #[arg(long)]
    pub input: PathBuf,
    /// Logits, float32 [N, classes]
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(a: &RunArgs) -> Result<()> {
    let ckpt = Checkpoint::load(&a.checkpoint)?;
    let x = npy::read_f32(&a.input)?;
    let channels = ckpt.config.options.in_channels;
    let [n, c, h, w] = *x.shape() else {
        bail!("{}: input has shape {:?}; expected 4 dimensions [N, {channels}, H, W] (NCHW)", a.input.display(), x.shape());
    };
    if c != channels || n == 0 {
        bail!("{}: input has shape {:?}; expected [N>=1, {channels}, H, W] (NCHW)", a.input.display(), x.shape());
    }
    let graph = ckpt.graph(h, w).with_context(|| format!("{}: shape {:?}", a.input.display(), x.shape()))?;
    let engine = CpuEngine::new(&graph, &ckpt.weights)?;
    let y = engine.run(&x)?;
    npy::write_f32(&a.output, &y)?;
    Ok(())
}
