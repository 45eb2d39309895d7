//! Per-channel sums (BN statistics and gradients, bias gradients) as chunk partials in f64, then
//! regrouped and finished: deterministic, whatever the launch shape.

use effv2_runtime::plan::launch::{wide_threads, Arg};

use super::{train, TrainLaunch, TrainLayout};

impl TrainLayout {
    /// Where [`TrainLayout::chan_sums`] leaves its two sums over `c` channels (`sums64_at`).
    pub(super) fn sums64(&self, arena: u64, c: usize) -> (u64, u64) {
        let at = arena + self.sums64_at as u64;
        (at, at + 8 * c as u64)
    }

    /// The two per-channel sums `chan_partials` takes from `with` over `rows`, times `scale`, into
    /// `to[0..2c]` through chunk partials, which are then added as `2c` channels; where given,
    /// f32 copies of each half too (`f32_halves`, see chan_finish).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn chan_sums(&self, arena: u64, with: SumInputs, rows: usize, c: usize, scale: f64, to: u64, f32_halves: [u64; 2]) -> Vec<TrainLaunch> {
        let (mut out, last, n) = self.chan_partials(arena, with, rows, c);
        let [lo, hi] = f32_halves.map(Arg::Ptr);
        out.push(train("chan_finish", 2 * c, vec![Arg::Ptr(last), Arg::I64(n as i64), Arg::I32(2 * c as i32), Arg::F64(scale), Arg::Ptr(to), lo, hi]));
        out
    }

    /// [`TrainLayout::chan_sums`] up to the final sum: the launches, and where their `[n, 2c]`
    /// partials end up and `n`.
    pub(super) fn chan_partials(&self, arena: u64, with: SumInputs, rows: usize, c: usize) -> (Vec<TrainLaunch>, u64, usize) {
        let part = arena + self.partials_at as u64;
        let chunk = self.lowering.chan_rows(rows, c);
        let chunks = rows.div_ceil(chunk);
        let SumInputs { a, b, mean, invstd, gamma, beta, mask, per, mode, kind } = with;
        let mut args: Vec<Arg> = [a, b, mean, invstd, gamma, beta].map(Arg::Ptr).to_vec();
        let kernel = if mask == 0 {
            "chan_partials"
        } else {
            assert!(mode == 1 && kind == 0, "a masked BN gradient has no fused activation");
            args.extend([Arg::Ptr(mask), Arg::I64(per as i64)]);
            "chan_partials_masked"
        };
        args.extend([Arg::Ptr(part), Arg::I64(rows as i64), Arg::I32(c as i32), Arg::I32(chunk as i32)]);
        if mask == 0 {
            args.extend([Arg::I32(mode), Arg::I32(kind)]);
        }
        // A thread per chunk and VEC channels where c is a multiple of VEC.
        let mut out = vec![train(kernel, wide_threads(chunks * c, c), args)];
        let c = 2 * c;
        if chunks <= self.chan_group {
            return (out, part, chunks);
        }
        // Many chunks: sum them in groups first, so the final sum per channel is short.
        let part2 = arena + self.partials2_at as u64;
        let groups = chunks.div_ceil(self.chan_group);
        out.push(train("chan_regroup", groups * c, vec![Arg::Ptr(part), Arg::I64(chunks as i64), Arg::I32(c as i32), Arg::I32(self.chan_group as i32), Arg::Ptr(part2)]));
        (out, part2, groups)
    }

    /// `Σ dy` over rows per channel into a parameter gradient (a bias).
    pub(super) fn bias_grad(&self, arena: u64, dy: u64, rows: usize, c: usize, to: u64) -> Vec<TrainLaunch> {
        let (s64, _) = self.sums64(arena, c);
        self.chan_sums(arena, SumInputs { a: dy, ..Default::default() }, rows, c, 1.0, s64, [to, 0])
    }
}

/// What `chan_partials` reads (0 where unused): `a` (and in mode 1 the BN input `b`, its saved
/// statistics and parameters, the fused activation `kind`, and a drop-path `mask` scaling `a`,
/// one factor per `per` rows).
#[derive(Clone, Copy, Default)]
pub(super) struct SumInputs {
    pub(super) a: u64,
    pub(super) b: u64,
    pub(super) mean: u64,
    pub(super) invstd: u64,
    pub(super) gamma: u64,
    pub(super) beta: u64,
    pub(super) mask: u64,
    pub(super) per: usize,
    pub(super) mode: i32,
    pub(super) kind: i32,
}
