//! Optimizer maths on flat slices (the CPU engine calls these; a GPU engine mirrors them in
//! kernels, tested against the same hand-computed values).
//!
//! RMSProp follows TF1's `tf.compat.v1.train.RMSPropOptimizer` (the official trainer's choice):
//! `ms ← decay·ms + (1−decay)·g²`, `mom ← momentum·mom + lr·g/√(ms + ε)`, `w ← w − mom`, with ε
//! inside the square root and the `ms` slot initialised to **ones** (TF's `_create_slots` uses a
//! ones initializer for "rms"; momentum starts at zero). Keras' and PyTorch's RMSprop differ on
//! both points.

use serde::{Deserialize, Serialize};

use effv2_edge::graph::Role;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    RmsProp { decay: f32, momentum: f32, eps: f32 },
    /// Heavy-ball momentum (TF `MomentumOptimizer` = PyTorch SGD): `buf ← m·buf + g`, `w ← w − lr·buf`.
    Sgd { momentum: f32, nesterov: bool },
}

impl Optimizer {
    /// The official setting: decay 0.9, momentum 0.9, ε 1e-3.
    pub fn tf_rmsprop() -> Self {
        Optimizer::RmsProp { decay: 0.9, momentum: 0.9, eps: 1e-3 }
    }

    /// Slot names, in the order [`update`] takes them.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::RmsProp { .. } => &["rms", "momentum"],
            Optimizer::Sgd { .. } => &["momentum"],
        }
    }

    /// Fresh slots for a parameter of `len` values.
    pub fn init_slots(&self, len: usize) -> Vec<Vec<f32>> {
        match self {
            Optimizer::RmsProp { .. } => vec![vec![1.0; len], vec![0.0; len]],
            Optimizer::Sgd { .. } => vec![vec![0.0; len]],
        }
    }
}

/// Weight decay applies to conv and dense kernels only: the official regex skips
/// `bias|gamma|beta` (so depthwise kernels *are* decayed); BN statistics are not trained at all.
pub fn decays(role: Role) -> bool {
    matches!(role, Role::ConvWeight | Role::LinearWeight)
}

/// One update of `w` from gradient `g`. `wd` adds `wd·w` to the gradient: the derivative of the
/// official `wd · Σ ½‖w‖²` loss term (`tf.nn.l2_loss`).
pub fn update(opt: &Optimizer, w: &mut [f32], g: &[f32], slots: &mut [Vec<f32>], lr: f32, wd: f32) {
    match *opt {
        Optimizer::RmsProp { decay, momentum, eps } => {
            let [ms, mom] = slots else { panic!("rmsprop takes 2 slots") };
            for i in 0..w.len() {
                let gi = g[i] + wd * w[i];
                ms[i] = decay * ms[i] + (1.0 - decay) * gi * gi;
                mom[i] = momentum * mom[i] + lr * gi / (ms[i] + eps).sqrt();
                w[i] -= mom[i];
            }
        }
        Optimizer::Sgd { momentum, nesterov } => {
            let [buf] = slots else { panic!("sgd takes 1 slot") };
            for i in 0..w.len() {
                let gi = g[i] + wd * w[i];
                buf[i] = momentum * buf[i] + gi;
                w[i] -= lr * if nesterov { gi + momentum * buf[i] } else { buf[i] };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsprop_matches_tf1_by_hand() {
        let opt = Optimizer::tf_rmsprop();
        let (mut w, g) = (vec![1.0f32], vec![0.5f32]);
        let mut s = opt.init_slots(1);
        update(&opt, &mut w, &g, &mut s, 0.1, 0.0);
        // ms = 0.9·1 + 0.1·0.25 = 0.925; mom = 0.1·0.5/√0.926 = 0.0519594; w = 0.9480406
        assert!((s[0][0] - 0.925).abs() < 1e-7);
        assert!((s[1][0] - 0.051_959_4).abs() < 1e-6, "{}", s[1][0]);
        assert!((w[0] - 0.948_040_6).abs() < 1e-6);
        update(&opt, &mut w, &g, &mut s, 0.1, 0.0);
        // ms = 0.8575; mom = 0.9·0.0519594 + 0.05/√0.8585 = 0.0467635 + 0.0539634 = 0.1007269
        assert!((s[0][0] - 0.8575).abs() < 1e-6);
        assert!((s[1][0] - 0.100_726_9).abs() < 2e-6, "{}", s[1][0]);
        assert!((w[0] - (0.948_040_6 - 0.100_726_9)).abs() < 2e-6);
    }

    #[test]
    fn sgd_momentum_and_weight_decay_by_hand() {
        let opt = Optimizer::Sgd { momentum: 0.9, nesterov: false };
        let (mut w, g) = (vec![2.0f32], vec![1.0f32]);
        let mut s = opt.init_slots(1);
        update(&opt, &mut w, &g, &mut s, 0.1, 0.5); // g' = 1 + 0.5·2 = 2; buf = 2; w = 1.8
        assert!((w[0] - 1.8).abs() < 1e-6 && (s[0][0] - 2.0).abs() < 1e-6);
        update(&opt, &mut w, &g, &mut s, 0.1, 0.5); // g' = 1.9; buf = 3.7; w = 1.43
        assert!((w[0] - 1.43).abs() < 1e-6 && (s[0][0] - 3.7).abs() < 1e-6);
        let nes = Optimizer::Sgd { momentum: 0.9, nesterov: true };
        let (mut w, mut s) = (vec![2.0f32], nes.init_slots(1));
        update(&nes, &mut w, &g, &mut s, 0.1, 0.0); // buf = 1; step = 1 + 0.9 = 1.9
        assert!((w[0] - 1.81).abs() < 1e-6);
    }

    #[test]
    fn decay_skips_bn_and_biases() {
        assert!(decays(Role::ConvWeight) && decays(Role::LinearWeight));
        for r in [Role::Bias, Role::BnWeight, Role::BnBias, Role::BnMean, Role::BnVar] {
            assert!(!decays(r));
        }
    }
}
