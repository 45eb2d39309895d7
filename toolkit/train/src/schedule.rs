//! Learning-rate schedules as the official trainer computes them from the global step: linear
//! warmup from 0 over `warmup_epochs`, then exponential decay (×0.97 every 2.4 epochs, staircase,
//! counted from step 0 so the warmup's decays are already applied when it ends), cosine to 0, or
//! constant.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decay {
    Exponential { rate: f64, every_epochs: f64, staircase: bool },
    Cosine,
    Constant,
}

impl Decay {
    /// The official ImageNet schedule: ×0.97 every 2.4 epochs, staircase.
    pub fn official() -> Self {
        Decay::Exponential { rate: 0.97, every_epochs: 2.4, staircase: true }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub warmup_epochs: f64,
    pub decay: Decay,
    pub epochs: usize,
    pub steps_per_epoch: usize,
}

impl LrSchedule {
    /// The rate used for the update at 0-based `step`.
    pub fn lr(&self, step: u64) -> f64 {
        let spe = self.steps_per_epoch.max(1) as f64;
        let s = step as f64;
        let decayed = match self.decay {
            Decay::Exponential { rate, every_epochs, staircase } => {
                let p = s / (every_epochs * spe).max(1.0);
                self.base_lr * rate.powf(if staircase { p.floor() } else { p })
            }
            Decay::Cosine => {
                let total = (self.epochs as f64 * spe).max(1.0);
                0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * (s / total).min(1.0)).cos())
            }
            Decay::Constant => self.base_lr,
        };
        let warmup = (self.warmup_epochs * spe) as u64;
        if step < warmup {
            self.base_lr * s / warmup as f64
        } else {
            decayed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_imagenet_numbers() {
        // 350 epochs of 1,256,144 images at batch 4096 (306 steps/epoch), lr 0.256, 5 warmup epochs.
        let s = LrSchedule { base_lr: 0.256, warmup_epochs: 5.0, decay: Decay::official(), epochs: 350, steps_per_epoch: 306 };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(765) - 0.128).abs() < 1e-12); // half-way through warmup (1530 steps)
        // After warmup: floor(1530 / 734.4) = 2 decays -> 0.256·0.97² ≈ 0.2409, as the reference notes.
        assert!((s.lr(1530) - 0.256 * 0.97f64.powi(2)).abs() < 1e-12);
        let last = s.lr(350 * 306 - 1);
        assert!((last - 0.256 * 0.97f64.powi(145)).abs() < 1e-9, "{last}"); // ≈ 0.0031
    }

    #[test]
    fn cosine_and_staircase_edges() {
        let c = LrSchedule { base_lr: 1.0, warmup_epochs: 0.0, decay: Decay::Cosine, epochs: 10, steps_per_epoch: 10 };
        assert_eq!(c.lr(0), 1.0);
        assert!((c.lr(50) - 0.5).abs() < 1e-12);
        assert!(c.lr(100).abs() < 1e-12);
        let e = LrSchedule { base_lr: 1.0, warmup_epochs: 0.0, decay: Decay::official(), epochs: 10, steps_per_epoch: 10 };
        assert_eq!(e.lr(23), 1.0);
        assert_eq!(e.lr(24), 0.97);
    }
}
