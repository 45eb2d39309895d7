//! The official stage tables (google/automl `effnetv2_configs.py`, one row per block string).
//!
//! Columns: kind, repeats, kernel, stride, expand, in, out, SE ratio (0 = none).

use super::stage::{row, StageRow, F, M};

/// B0–B3 share this table and scale it with (width, depth).
pub const BASE: &[StageRow] = &[
    row(F, 1, 3, 1, 1, 32, 16, 0.0),
    row(F, 2, 3, 2, 4, 16, 32, 0.0),
    row(F, 2, 3, 2, 4, 32, 48, 0.0),
    row(M, 3, 3, 2, 4, 48, 96, 0.25),
    row(M, 5, 3, 1, 6, 96, 112, 0.25),
    row(M, 8, 3, 2, 6, 112, 192, 0.25),
];

pub const S: &[StageRow] = &[
    row(F, 2, 3, 1, 1, 24, 24, 0.0),
    row(F, 4, 3, 2, 4, 24, 48, 0.0),
    row(F, 4, 3, 2, 4, 48, 64, 0.0),
    row(M, 6, 3, 2, 4, 64, 128, 0.25),
    row(M, 9, 3, 1, 6, 128, 160, 0.25),
    row(M, 15, 3, 2, 6, 160, 256, 0.25),
];

pub const M_: &[StageRow] = &[
    row(F, 3, 3, 1, 1, 24, 24, 0.0),
    row(F, 5, 3, 2, 4, 24, 48, 0.0),
    row(F, 5, 3, 2, 4, 48, 80, 0.0),
    row(M, 7, 3, 2, 4, 80, 160, 0.25),
    row(M, 14, 3, 1, 6, 160, 176, 0.25),
    row(M, 18, 3, 2, 6, 176, 304, 0.25),
    row(M, 5, 3, 1, 6, 304, 512, 0.25),
];

pub const L: &[StageRow] = &[
    row(F, 4, 3, 1, 1, 32, 32, 0.0),
    row(F, 7, 3, 2, 4, 32, 64, 0.0),
    row(F, 7, 3, 2, 4, 64, 96, 0.0),
    row(M, 10, 3, 2, 4, 96, 192, 0.25),
    row(M, 19, 3, 1, 6, 192, 224, 0.25),
    row(M, 25, 3, 2, 6, 224, 384, 0.25),
    row(M, 7, 3, 1, 6, 384, 640, 0.25),
];

pub const XL: &[StageRow] = &[
    row(F, 4, 3, 1, 1, 32, 32, 0.0),
    row(F, 8, 3, 2, 4, 32, 64, 0.0),
    row(F, 8, 3, 2, 4, 64, 96, 0.0),
    row(M, 16, 3, 2, 4, 96, 192, 0.25),
    row(M, 24, 3, 1, 6, 192, 256, 0.25),
    row(M, 32, 3, 2, 6, 256, 512, 0.25),
    row(M, 8, 3, 1, 6, 512, 640, 0.25),
];

/// The head conv width before width scaling (`feature_size`).
pub const HEAD_CH: usize = 1280;

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stage's input is the previous stage's output (the official strings repeat it).
    #[test]
    fn stage_inputs_chain() {
        for table in [BASE, S, M_, L, XL] {
            for w in table.windows(2) {
                assert_eq!(w[0].out_ch, w[1].in_ch);
            }
        }
    }

    #[test]
    fn block_totals_match_official() {
        let total = |t: &[StageRow]| t.iter().map(|r| r.repeats).sum::<usize>();
        assert_eq!(total(S), 40);
        assert_eq!(total(M_), 57);
        assert_eq!(total(L), 79);
        assert_eq!(total(XL), 100);
    }
}
