//! The `effv2-edge` command line: flags parsed by clap, validated, then handed to the library.

mod bench;
mod build;
mod eval;
mod import;
mod inspect;
mod list;
mod predict;
mod run;
mod scored;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "effv2-edge", version, about = "EfficientNetV2 from training to edge deployment")]
pub struct Cli {
    /// Worker threads for the CPU engines (default: all cores)
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every variant with params, MACs and train/eval sizes
    List {
        #[arg(long)]
        json: bool,
    },
    /// The stage table, params and MACs of a model
    Inspect(inspect::InspectArgs),
    /// Convert a timm / torchvision state dict into an effv2-edge checkpoint
    Import(import::ImportArgs),
    /// Build a deployable artifact for a target: cpu (ONNX), coral (int8 TFLite for the Edge TPU) or jetson (CUDA plan + ONNX for TensorRT)
    Build(build::BuildArgs),
    /// Run a checkpoint on a float32 NCHW .npy batch, write the logits as .npy
    Run(run::RunArgs),
    /// Classify PNG/JPEG images with a checkpoint or a built artifact
    Predict(predict::PredictArgs),
    /// Latency of an artifact on this machine, or the Fused-MBConv placement sweep (same as effv2-bench)
    Bench(bench::BenchArgs),
    /// Train a model (CPU engine, or the CUDA engine with --device cuda) on fashion-mnist or an ImageFolder directory, with progressive learning
    Train(Box<train::TrainArgs>),
    /// Top-1/top-5 accuracy of a checkpoint or a built artifact on a dataset's test split
    Eval(eval::EvalArgs),
}

pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    match &cli.command {
        Command::List { json } => list::run(*json),
        Command::Inspect(a) => inspect::run(a),
        Command::Import(a) => import::run(a),
        Command::Build(a) => build::run(a),
        Command::Run(a) => run::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
    }
}

/// 7139704 -> "7,139,704".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
