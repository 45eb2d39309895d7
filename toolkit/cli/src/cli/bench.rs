//! `effv2-edge bench run|sweep`: the same code and flags as the `effv2-bench` binary.

use anyhow::Result;
use clap::Args;

use effv2_bench::cli::{execute, BenchCommand};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

pub fn run(a: &BenchArgs) -> Result<()> {
    Ok(execute(&a.command)?)
}
