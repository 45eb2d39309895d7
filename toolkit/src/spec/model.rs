//! A variant + options resolved into concrete stages and blocks: the input of the graph builder.

use serde::Serialize;

use super::options::ModelOptions;
use super::registry::{variant, Variant};
use super::scaling::{round_filters, round_repeats};
use super::stage::{BlockKind, StageRow};
use super::tables::HEAD_CH;
use super::SpecError;

/// SE ratio an MBConv block gets when its row had none (a stage switched from Fused-MBConv).
pub const DEFAULT_SE_RATIO: f32 = 0.25;

/// A fully resolved model: channels rounded, repeats scaled, block kinds placed.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSpec {
    pub variant: String,
    pub options: ModelOptions,
    pub width: f64,
    pub depth: f64,
    pub stem_ch: usize,
    /// Resolved rows: scaled channels/repeats, the kind after Fused-MBConv placement, the SE rule applied.
    pub stages: Vec<StageRow>,
    pub head_ch: usize,
    pub dropout: f64,
    pub train_size: usize,
    pub eval_size: usize,
}

/// One block of a resolved model.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockSpec {
    pub stage: usize,
    /// Index inside its stage.
    pub index: usize,
    /// Index over the whole network (drives the stochastic-depth ramp).
    pub global: usize,
    pub kind: BlockKind,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    /// Width after expansion (= in_ch × expand).
    pub mid_ch: usize,
    /// SE squeeze width, `max(1, int(in_ch × ratio))`.
    pub se_ch: Option<usize>,
    pub residual: bool,
    /// Probability of keeping the residual branch in training (1 - drop_path × global / N).
    pub survival: f32,
}

impl ModelSpec {
    pub fn from_name(name: &str, options: ModelOptions) -> Result<Self, SpecError> {
        Self::new(&variant(name)?, options)
    }

    pub fn new(v: &Variant, options: ModelOptions) -> Result<Self, SpecError> {
        validate(&options)?;
        options.fused_stages.validate(v.table.len())?;
        let width = options.width.unwrap_or(v.width);
        let depth = options.depth.unwrap_or(v.depth);
        let stages = v
            .table
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let kind = if options.fused_stages.is_fused(i, row.kind == BlockKind::FusedMbConv) {
                    BlockKind::FusedMbConv
                } else {
                    BlockKind::MbConv
                };
                let se_ratio = match kind {
                    _ if !options.se => None,
                    BlockKind::MbConv => row.se_ratio.or(Some(DEFAULT_SE_RATIO)),
                    BlockKind::FusedMbConv if options.se_on_fused => row.se_ratio.or(Some(DEFAULT_SE_RATIO)),
                    BlockKind::FusedMbConv => None,
                };
                StageRow {
                    kind,
                    repeats: round_repeats(row.repeats, depth),
                    in_ch: round_filters(row.in_ch, width),
                    out_ch: round_filters(row.out_ch, width),
                    se_ratio,
                    ..*row
                }
            })
            .collect();
        Ok(ModelSpec {
            variant: v.name.to_string(),
            width,
            depth,
            stem_ch: round_filters(v.table[0].in_ch, width),
            stages,
            head_ch: round_filters(HEAD_CH, width),
            dropout: options.dropout.unwrap_or(v.dropout),
            train_size: v.train_size,
            eval_size: v.eval_size,
            options,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.stages.iter().map(|s| s.repeats).sum()
    }

    /// The blocks in execution order.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let total = self.num_blocks();
        let mut out = Vec::with_capacity(total);
        for (si, st) in self.stages.iter().enumerate() {
            for bi in 0..st.repeats {
                let global = out.len();
                let (in_ch, stride) = if bi == 0 { (st.in_ch, st.stride) } else { (st.out_ch, 1) };
                out.push(BlockSpec {
                    stage: si,
                    index: bi,
                    global,
                    kind: st.kind,
                    kernel: st.kernel,
                    stride,
                    expand: st.expand,
                    in_ch,
                    out_ch: st.out_ch,
                    mid_ch: in_ch * st.expand,
                    se_ch: st.se_ratio.map(|r| ((in_ch as f32 * r) as usize).max(1)),
                    residual: stride == 1 && in_ch == st.out_ch,
                    survival: (1.0 - self.options.drop_path * global as f64 / total as f64) as f32,
                })
            }
        }
        out
    }
}

fn validate(o: &ModelOptions) -> Result<(), SpecError> {
    let bad = |msg: String| Err(SpecError::Option(msg));
    if o.num_classes == 0 {
        return bad("num_classes must be at least 1".into());
    }
    if o.in_channels == 0 {
        return bad("in_channels must be at least 1".into());
    }
    if let Some(d) = o.dropout {
        if !(0.0..1.0).contains(&d) {
            return bad(format!("dropout must be in [0, 1), got {d}"));
        }
    }
    if !(0.0..1.0).contains(&o.drop_path) {
        return bad(format!("drop_path (stochastic depth) must be in [0, 1), got {}", o.drop_path));
    }
    if !(o.bn_eps > 0.0 && o.bn_eps.is_finite()) {
        return bad(format!("bn_eps must be a positive number, got {}", o.bn_eps));
    }
    for (name, m) in [("width", o.width), ("depth", o.depth)] {
        if let Some(m) = m {
            if !(m > 0.0 && m <= 16.0) {
                return bad(format!("{name} multiplier must be in (0, 16], got {m}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FusedStages;

    fn spec(name: &str) -> ModelSpec {
        ModelSpec::from_name(name, ModelOptions::default()).unwrap()
    }

    fn summary(s: &ModelSpec) -> Vec<(BlockKind, usize, usize, usize, usize)> {
        s.stages.iter().map(|r| (r.kind, r.expand, r.in_ch, r.out_ch, r.repeats)).collect()
    }

    #[test]
    fn b0_to_b3_match_official_rounding() {
        use BlockKind::{FusedMbConv as F, MbConv as M};
        // Table from efficientnetv2-official.md §1.3.
        let b3 = spec("b3");
        assert_eq!((b3.stem_ch, b3.head_ch), (40, 1536));
        assert_eq!(
            summary(&b3),
            [(F, 1, 40, 16, 2), (F, 4, 16, 40, 3), (F, 4, 40, 56, 3), (M, 4, 56, 112, 5), (M, 6, 112, 136, 7), (M, 6, 136, 232, 12)]
        );
        let b2 = spec("b2");
        assert_eq!((b2.stem_ch, b2.head_ch, b2.num_blocks()), (32, 1408, 28));
        assert_eq!(spec("b1").num_blocks(), 27);
        assert_eq!(spec("b0").num_blocks(), 21);
    }

    #[test]
    fn se_width_is_relative_to_block_input() {
        let s = spec("s");
        let first_stage4 = s.blocks().into_iter().find(|b| b.stage == 3).unwrap();
        assert_eq!((first_stage4.in_ch, first_stage4.mid_ch, first_stage4.se_ch), (64, 256, Some(16)));
    }

    #[test]
    fn survival_ramp_matches_official() {
        let s = spec("s");
        let b = s.blocks();
        assert_eq!(b[0].survival, 1.0);
        assert!((b.last().unwrap().survival - 0.805).abs() < 1e-6);
    }

    #[test]
    fn fused_placement_keeps_geometry_and_applies_se_rule() {
        let official = spec("b0");
        for placement in ["none", "0,1,3", "6", "all"] {
            let fused: FusedStages = placement.parse().unwrap();
            let o = ModelOptions { fused_stages: fused.clone(), ..Default::default() };
            let s = ModelSpec::from_name("b0", o).unwrap();
            for (i, (a, b)) in official.stages.iter().zip(&s.stages).enumerate() {
                assert_eq!((a.repeats, a.kernel, a.stride, a.expand, a.in_ch, a.out_ch), (b.repeats, b.kernel, b.stride, b.expand, b.in_ch, b.out_ch));
                let is_fused = fused.is_fused(i, false);
                assert_eq!(b.kind == BlockKind::FusedMbConv, is_fused, "{placement} stage {i}");
                assert_eq!(b.se_ratio.is_some(), !is_fused, "{placement} stage {i}");
            }
        }
    }

    #[test]
    fn edge_switches() {
        let o = ModelOptions { se: false, se_on_fused: true, ..Default::default() };
        assert!(ModelSpec::from_name("s", o).unwrap().blocks().iter().all(|b| b.se_ch.is_none()));
        let o = ModelOptions { se_on_fused: true, ..Default::default() };
        assert!(ModelSpec::from_name("s", o).unwrap().blocks().iter().all(|b| b.se_ch.is_some()));
    }

    #[test]
    fn bad_options_are_errors() {
        for o in [
            ModelOptions { num_classes: 0, ..Default::default() },
            ModelOptions { drop_path: 1.0, ..Default::default() },
            ModelOptions { width: Some(0.0), ..Default::default() },
            ModelOptions { bn_eps: f64::NAN, ..Default::default() },
            ModelOptions { fused_stages: FusedStages::First(8), ..Default::default() },
        ] {
            assert!(ModelSpec::from_name("b0", o).is_err());
        }
    }
}
