//! [`TrainEngine`] for the CPU trainer: optimizer step, EMA, graph switches and host copies.

use rayon::prelude::*;

use effv2_edge::graph::Graph;
use effv2_edge::tensor::Tensor;
use effv2_edge::weights::Weights;

use super::{check_supported, CpuTrainer};
use crate::optim::{decays, update};
use crate::{ema, Mode, TrainEngine, TrainError};

impl CpuTrainer {
    fn to_weights(&self, bufs: &[Vec<f32>]) -> Weights {
        let mut w = Weights::new();
        for (p, b) in self.graph.params.iter().zip(bufs) {
            w.insert(p.name.clone(), Tensor::new(p.shape.clone(), b.clone()).expect("buffers keep their param's size"));
        }
        w
    }

    fn buffers_of(&self, w: &Weights) -> Result<Vec<Vec<f32>>, TrainError> {
        w.check(&self.graph)?;
        self.graph.params.iter().map(|p| Ok(w.get(&p.name)?.data().to_vec())).collect()
    }
}

impl TrainEngine for CpuTrainer {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn set_graph(&mut self, graph: &Graph) -> Result<(), TrainError> {
        check_supported(graph)?;
        if graph.params.len() != self.graph.params.len() {
            return Err(TrainError::ParamsChanged(format!("{} params instead of {}", graph.params.len(), self.graph.params.len())));
        }
        if let Some((p, _)) = graph.params.iter().zip(&self.graph.params).find(|(a, b)| a != b) {
            return Err(TrainError::ParamsChanged(p.name.clone()));
        }
        self.graph = graph.clone();
        self.vals.clear();
        self.aux.clear();
        Ok(())
    }

    fn forward(&mut self, input: &[f32], batch: usize, mode: Mode, seed: u64) -> Result<Vec<f32>, TrainError> {
        match (mode, self.ema.take()) {
            (Mode::EvalEma, Some(mut shadow)) => {
                std::mem::swap(&mut self.params, &mut shadow);
                let out = self.run_forward(input, batch, false, seed);
                std::mem::swap(&mut self.params, &mut shadow);
                self.ema = Some(shadow);
                out
            }
            (mode, shadow) => {
                self.ema = shadow;
                self.run_forward(input, batch, mode == Mode::Train, seed)
            }
        }
    }

    fn backward(&mut self, dlogits: &[f32]) -> Result<(), TrainError> {
        self.run_backward(dlogits)
    }

    fn step(&mut self, lr: f32) -> Result<(), TrainError> {
        let (opt, wd) = (self.config.optimizer, self.config.weight_decay);
        let roles: Vec<_> = self.graph.params.iter().map(|p| p.role).collect();
        self.params.par_iter_mut().zip(&self.grads).zip(&mut self.slots).zip(&roles).for_each(|(((w, g), s), role)| {
            if role.is_trainable() {
                update(&opt, w, g, s, lr, if decays(*role) { wd } else { 0.0 });
            }
        });
        Ok(())
    }

    fn ema_update(&mut self, decay: f32) -> Result<(), TrainError> {
        if let Some(shadow) = &mut self.ema {
            shadow.par_iter_mut().zip(&self.params).for_each(|(s, w)| ema::update(s, w, decay));
        }
        Ok(())
    }

    fn weights(&self) -> Result<Weights, TrainError> {
        Ok(self.to_weights(&self.params))
    }

    fn ema_weights(&self) -> Result<Option<Weights>, TrainError> {
        Ok(self.ema.as_ref().map(|e| self.to_weights(e)))
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        let names = self.config.optimizer.slot_names();
        let mut out = vec![];
        for (p, slots) in self.graph.params.iter().zip(&self.slots) {
            for (name, s) in names.iter().zip(slots) {
                out.push((format!("{}/{name}", p.name), Tensor::new(p.shape.clone(), s.clone()).expect("slot sized from the param")));
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, weights: &Weights, ema: Option<&Weights>, slots: &[(String, Tensor)]) -> Result<(), TrainError> {
        let params = self.buffers_of(weights)?;
        let shadow = match (ema, self.config.ema) {
            (Some(e), true) => Some(self.buffers_of(e)?),
            (None, true) => Some(params.clone()),
            (_, false) => None,
        };
        let names = self.config.optimizer.slot_names();
        let mut fresh = self.slots.clone();
        let lookup: std::collections::HashMap<&str, &Tensor> = slots.iter().map(|(n, t)| (n.as_str(), t)).collect();
        for (p, ps) in self.graph.params.iter().zip(&mut fresh) {
            for (name, s) in names.iter().zip(ps.iter_mut()) {
                let key = format!("{}/{name}", p.name);
                let t = lookup.get(key.as_str()).ok_or_else(|| TrainError::Misuse(format!("optimizer state has no slot {key:?}")))?;
                if t.numel() != s.len() {
                    return Err(TrainError::Size { what: "optimizer slot", want: s.len(), got: t.numel() });
                }
                s.copy_from_slice(t.data());
            }
        }
        self.params = params;
        self.ema = shadow;
        self.slots = fresh;
        Ok(())
    }
}
