//! Progressive learning with adaptive regularization: training split into K stages whose image
//! size grows from a minimum to a maximum, with RandAugment magnitude, mixup/cutmix α and dropout
//! growing with it (small images want weak regularization, large ones strong).
//!
//! Two interpolation styles, because the paper and the official code differ:
//! - `Paper`: stage i of K takes `min + (max − min)·i/(K−1)` for every quantity (the paper's
//!   linear interpolation; the first stage trains at the minimum size).
//! - `Official` (`main.py`): size `int(min + (max − min)·(i+1)/K)` — the first stage is *not* at
//!   the minimum — regularization `linspace(min, max, K)[i]`, and dropout **not** scheduled (the
//!   code computes and then discards it), so it stays at its maximum.
//!
//! Stage boundaries follow `main_tf2.py`: stage i starts at epoch `int(i/K · epochs)`. One stage is
//! the fixed-size baseline: everything at its maximum.

use serde::{Deserialize, Serialize};

use crate::TrainError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    Paper,
    Official,
}

/// `(min, max)` pairs; the CLI and presets fill them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progressive {
    pub stages: usize,
    pub style: Style,
    pub size: (usize, usize),
    pub randaug: (f64, f64),
    pub mixup: (f64, f64),
    pub cutmix: (f64, f64),
    pub dropout: (f64, f64),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub index: usize,
    pub first_epoch: usize,
    /// One past the last epoch of the stage.
    pub end_epoch: usize,
    pub size: usize,
    pub randaug: f64,
    pub mixup: f64,
    pub cutmix: f64,
    pub dropout: f64,
}

impl Progressive {
    /// Table 6 of the paper (min → max) for S, M, L at `stages` stages; sizes as the paper gives.
    pub fn paper(model: &str, stages: usize) -> Option<Self> {
        let (size, ra, mix, dp) = match model {
            "s" => (300, 15.0, 0.0, 0.3),
            "m" => (380, 20.0, 0.2, 0.4),
            "l" => (380, 25.0, 0.4, 0.5),
            _ => return None,
        };
        Some(Progressive { stages, style: Style::Paper, size: (128, size), randaug: (5.0, ra), mixup: (0.0, mix), cutmix: (0.0, 0.0), dropout: (0.1, dp) })
    }

    /// The official code's schedule (`hparams`/`effnetv2_configs.py`): base size 128, RandAugment
    /// from 5, mixup = cutmix from 0, dropout fixed at the model's rate.
    pub fn official(model: &str, stages: usize) -> Option<Self> {
        let (size, ra, mix, dp) = match model {
            "s" => (300, 10.0, 0.0, 0.2),
            "m" => (384, 15.0, 0.2, 0.3),
            "l" | "xl" => (384, 20.0, 0.5, 0.4),
            _ => return None,
        };
        Some(Progressive { stages, style: Style::Official, size: (128, size), randaug: (5.0, ra), mixup: (0.0, mix), cutmix: (0.0, mix), dropout: (dp, dp) })
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.stages == 0 {
            return bad("--stages must be at least 1".into());
        }
        if self.size.0 == 0 || self.size.0 > self.size.1 {
            return bad(format!("image sizes must satisfy 0 < min <= max, got {} -> {}", self.size.0, self.size.1));
        }
        if !(0.0..1.0).contains(&self.dropout.0) || !(0.0..1.0).contains(&self.dropout.1) {
            return bad("dropout must be in [0, 1)".into());
        }
        if [self.randaug, self.mixup, self.cutmix].iter().any(|r| r.0 < 0.0 || r.1 < 0.0 || !r.0.is_finite() || !r.1.is_finite()) {
            return bad("RandAugment magnitude and mixup/cutmix alpha must be >= 0".into());
        }
        Ok(())
    }

    /// The stages for a run of `epochs` epochs (stages without an epoch are dropped).
    pub fn plan(&self, epochs: usize) -> Vec<Stage> {
        let k = self.stages.max(1);
        let lin = |r: (f64, f64), i: usize| if k == 1 { r.1 } else { r.0 + (r.1 - r.0) * i as f64 / (k - 1) as f64 };
        (0..k)
            .map(|i| {
                let size = match (k, self.style) {
                    (1, _) => self.size.1,
                    (_, Style::Paper) => lin((self.size.0 as f64, self.size.1 as f64), i).round() as usize,
                    (_, Style::Official) => (self.size.0 as f64 + (self.size.1 - self.size.0) as f64 * (i + 1) as f64 / k as f64) as usize,
                };
                let dropout = if self.style == Style::Official { self.dropout.1 } else { lin(self.dropout, i) };
                Stage {
                    index: i,
                    first_epoch: i * epochs / k,
                    end_epoch: (i + 1) * epochs / k,
                    size,
                    randaug: lin(self.randaug, i),
                    mixup: lin(self.mixup, i),
                    cutmix: lin(self.cutmix, i),
                    dropout,
                }
            })
            .filter(|s| s.end_epoch > s.first_epoch)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_schedule_matches_the_reference_tables() {
        // efficientnetv2-official.md §2.2: S sizes 171/214/257/300, RandAug 5/6.67/8.33/10.
        let s = Progressive::official("s", 4).unwrap().plan(350);
        assert_eq!(s.iter().map(|t| t.size).collect::<Vec<_>>(), vec![171, 214, 257, 300]);
        assert!((s[1].randaug - 6.666_666).abs() < 1e-5 && s[3].randaug == 10.0);
        assert_eq!(s.iter().map(|t| t.first_epoch).collect::<Vec<_>>(), vec![0, 87, 175, 262]);
        assert!(s.iter().all(|t| t.dropout == 0.2 && t.mixup == 0.0));
        let l = Progressive::official("l", 4).unwrap().plan(350);
        assert_eq!(l.iter().map(|t| t.size).collect::<Vec<_>>(), vec![192, 256, 320, 384]);
        assert!((l[2].mixup - 1.0 / 3.0).abs() < 1e-9 && l[2].cutmix == l[2].mixup);
    }

    #[test]
    fn paper_schedule_interpolates_from_the_minimum_and_one_stage_is_the_baseline() {
        let p = Progressive::paper("m", 4).unwrap();
        let st = p.plan(8);
        assert_eq!(st.iter().map(|t| t.size).collect::<Vec<_>>(), vec![128, 212, 296, 380]);
        assert!((st[0].dropout - 0.1).abs() < 1e-12 && (st[3].dropout - 0.4).abs() < 1e-12);
        let one = Progressive { stages: 1, ..p }.plan(5);
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].size, one[0].randaug, one[0].mixup, one[0].end_epoch), (380, 20.0, 0.2, 5));
        // More stages than epochs: empty stages vanish, every epoch still has one.
        let few = Progressive::paper("s", 4).unwrap().plan(2);
        assert_eq!(few.len(), 2);
        assert_eq!((few[0].first_epoch, few[1].end_epoch), (0, 2));
        assert!(Progressive { size: (64, 32), ..Progressive::paper("s", 2).unwrap() }.validate().is_err());
    }
}
