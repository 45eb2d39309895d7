//! `effv2-bench devices`: what this machine can run before anything is measured — each backend's
//! libraries, accelerators and readiness (effv2-runtime's probe), and NCCL for multi-GPU training.
//! The first command to try after copying the bench binary to a board.

use serde::Serialize;

use effv2_runtime::{BackendStatus, Readiness, Target};

use crate::machine::Machine;
use crate::BenchError;

#[derive(Clone, Debug, Serialize)]
pub struct DevicesReport {
    pub machine: Machine,
    pub backends: Vec<BackendStatus>,
    /// Whether libnccl loads (`train --device cuda --gpus N`, `train-step --gpus N`); absent from
    /// builds without the CUDA engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nccl: Option<bool>,
}

pub fn detect() -> DevicesReport {
    #[cfg(feature = "cuda")]
    let nccl = Some(effv2_train::cuda::nccl::nccl_present());
    #[cfg(not(feature = "cuda"))]
    let nccl = None;
    DevicesReport { machine: Machine::detect(), backends: effv2_runtime::probe(), nccl }
}

fn readiness(r: Readiness) -> &'static str {
    match r {
        Readiness::Ready => "ready",
        Readiness::CpuFallback => "cpu fallback",
        Readiness::Unavailable => "unavailable",
    }
}

/// One block per backend: "jetson artifacts (cuda): ready", then what it found, indented.
pub fn describe(r: &DevicesReport) -> String {
    let mut s = format!("machine: {}", r.machine.describe());
    if let Some(board) = &r.machine.board {
        s.push_str(&format!(" (board: {board})"));
    }
    for b in &r.backends {
        s.push_str(&format!("\n{} artifacts ({}): {}\n  {}", b.target, b.name, readiness(b.readiness), b.detail));
        for d in &b.devices {
            s.push_str(&format!("\n  {d}"));
        }
    }
    if let Some(nccl) = r.nccl {
        let how = if nccl { "found" } else { "not found (libnccl.so.2: multi-GPU training needs it; one GPU does not)" };
        s.push_str(&format!("\nNCCL for --gpus N: {how}"));
    }
    s
}

/// An error naming every target in `required` whose artifacts would not run on its accelerator here.
pub fn check_required(r: &DevicesReport, required: &[Target]) -> Result<(), BenchError> {
    let missing: Vec<String> = required
        .iter()
        .filter_map(|t| {
            let b = r.backends.iter().find(|b| b.target == *t)?;
            (b.readiness != Readiness::Ready).then(|| format!("{t} ({}, {}): {}", b.name, readiness(b.readiness), b.detail))
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(BenchError::Args(format!("not ready on this machine: {}", missing.join("; "))))
    }
}
