//! One stage row of an EfficientNetV2 table, as the paper and `effnetv2_configs.py` write it.

use serde::{Deserialize, Serialize};

/// Which block a stage repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockKind {
    /// 1×1 expand → depthwise k×k → SE → 1×1 project.
    #[serde(rename = "mbconv")]
    MbConv,
    /// k×k regular conv (replaces expand + depthwise) → SE (off by default) → 1×1 project.
    #[serde(rename = "fused-mbconv")]
    FusedMbConv,
}

impl BlockKind {
    pub fn short(self) -> &'static str {
        match self {
            BlockKind::MbConv => "MBConv",
            BlockKind::FusedMbConv => "Fused-MBConv",
        }
    }
}

/// A stage: `repeats` blocks of one kind; the first one carries the stride and the input width.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageRow {
    pub kind: BlockKind,
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub in_ch: usize,
    pub out_ch: usize,
    /// Squeeze-excite ratio relative to the block's *input* channels; `None` = no SE.
    pub se_ratio: Option<f32>,
}

/// Shorthands so the tables below read like the official block strings.
pub(crate) const F: BlockKind = BlockKind::FusedMbConv;
pub(crate) const M: BlockKind = BlockKind::MbConv;

/// `r{repeats}_k{kernel}_s{stride}_e{expand}_i{in}_o{out}[_se{ratio}]`.
#[allow(clippy::too_many_arguments)] // one argument per field of the official block string, in its order
pub(crate) const fn row(
    kind: BlockKind,
    repeats: usize,
    kernel: usize,
    stride: usize,
    expand: usize,
    in_ch: usize,
    out_ch: usize,
    se: f32,
) -> StageRow {
    StageRow {
        kind,
        repeats,
        kernel,
        stride,
        expand,
        in_ch,
        out_ch,
        se_ratio: if se > 0.0 { Some(se) } else { None },
    }
}
