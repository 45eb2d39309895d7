//! Run-directory checkpoints. Each save writes a fresh `ckpt-eNNNN/` holding `model.safetensors`
//! (our checkpoint format, EMA weights when kept, so `--checkpoint RUN_DIR/last` evaluates and
//! deploys them) and `state.safetensors` (raw weights, EMA, optimizer slots, and the run state in
//! its metadata), then atomically repoints the `last` (and `best`) symlink at it. A kill at any
//! moment leaves `last` naming a complete checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use effv2_edge::tensor::Tensor;
use effv2_edge::weights::{write_safetensors, Checkpoint, ModelConfig, TensorFile, Weights};

use super::TrainConfig;
use crate::TrainError;

pub const STATE_FILE: &str = "state.safetensors";
const META_STATE: &str = "effv2_train_state";

/// Where a run stands after a completed epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub step: u64,
    pub best_top1: f64,
    /// Training seconds of all sessions so far.
    pub train_seconds: f64,
    pub config: TrainConfig,
}

pub struct Saved {
    pub state: RunState,
    pub weights: Weights,
    pub ema: Option<Weights>,
    pub slots: Vec<(String, Tensor)>,
}

fn repoint(dir: &Path, link: &str, target: &str) -> Result<(), TrainError> {
    let tmp = dir.join(format!(".{link}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| TrainError::io(&tmp, e))?;
    std::fs::rename(&tmp, dir.join(link)).map_err(|e| TrainError::io(dir.join(link), e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn link_target(dir: &Path, link: &str) -> Option<String> {
    std::fs::read_link(dir.join(link)).ok().map(|p| p.to_string_lossy().into_owned())
}

/// Write one checkpoint and point `last` (and `best` when `is_best`) at it; older ones go.
pub fn save(dir: &Path, model: &ModelConfig, s: &Saved, is_best: bool) -> Result<PathBuf, TrainError> {
    let name = format!("ckpt-e{:04}", s.state.epochs_done);
    let ck = dir.join(&name);
    std::fs::create_dir_all(&ck).map_err(|e| TrainError::io(&ck, e))?;
    let eval_weights = s.ema.clone().unwrap_or_else(|| s.weights.clone());
    Checkpoint::new(model.clone(), eval_weights)?.save(&ck)?;
    let mut tensors: Vec<(String, &Tensor)> = s.weights.iter().map(|(n, t)| (format!("raw/{n}"), t)).collect();
    if let Some(e) = &s.ema {
        tensors.extend(e.iter().map(|(n, t)| (format!("ema/{n}"), t)));
    }
    tensors.extend(s.slots.iter().map(|(n, t)| (format!("opt/{n}"), t)));
    let meta = HashMap::from([(META_STATE.to_string(), serde_json::to_string(&s.state).expect("run state serializes"))]);
    let p = ck.join(STATE_FILE);
    write_safetensors(&p, tensors.iter().map(|(n, t)| (n.as_str(), *t)), meta).map_err(|e| TrainError::Data(e.to_string()))?;
    repoint(dir, "last", &name)?;
    if is_best {
        repoint(dir, "best", &name)?;
    }
    collect_garbage(dir);
    Ok(ck)
}

/// Remove checkpoint directories neither `last` nor `best` names (old ones, or a half-written one
/// from a killed run).
pub fn collect_garbage(dir: &Path) {
    let keep = [link_target(dir, "last"), link_target(dir, "best")];
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("ckpt-e") && !keep.iter().any(|k| k.as_deref() == Some(name.as_str())) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The state behind `RUN_DIR/last`.
pub fn load(dir: &Path) -> Result<Saved, TrainError> {
    let p = dir.join("last").join(STATE_FILE);
    if !p.exists() {
        return Err(TrainError::Config(format!("{}: no checkpoint to resume from (expected {})", dir.display(), p.display())));
    }
    let file = TensorFile::read(&p).map_err(|e| TrainError::Data(e.to_string()))?;
    let json = file.metadata.get(META_STATE).ok_or_else(|| TrainError::Data(format!("{}: no run state in metadata", p.display())))?;
    let state: RunState = serde_json::from_str(json).map_err(|e| TrainError::Data(format!("{}: bad run state: {e}", p.display())))?;
    let (mut weights, mut ema, mut slots) = (Weights::new(), Weights::new(), vec![]);
    for (name, st) in &file.tensors {
        let t = file.float_tensor(name, st, &p.display().to_string()).map_err(|e| TrainError::Data(e.to_string()))?;
        match name.split_once('/') {
            Some(("raw", n)) => weights.insert(n, t),
            Some(("ema", n)) => ema.insert(n, t),
            Some(("opt", n)) => slots.push((n.to_string(), t)),
            _ => return Err(TrainError::Data(format!("{}: unexpected tensor {name:?}", p.display()))),
        }
    }
    Ok(Saved { state, weights, ema: (!ema.is_empty()).then_some(ema), slots })
}
