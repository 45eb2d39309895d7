//! `effv2-bench`: the on-device bench binary; all logic lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = effv2_bench::cli::Cli::parse();
    match effv2_bench::cli::execute(&cli.command).map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", effv2_edge::cli_args::error_line(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
