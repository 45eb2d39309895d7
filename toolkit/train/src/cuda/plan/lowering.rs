//! The choices in lowering a training graph that a GPU run times against each other.

use effv2_runtime::plan::launch::wide_threads;

use super::super::{CHAN_CHUNK_ROWS, CHAN_MIN_THREADS, DW_CHUNK_ROWS};

/// Choices in lowering a training graph, all on by default; the engine reads the first two from
/// the environment (`EFFV2_CUDA_FUSE_BN_ACT=0`, `EFFV2_CUDA_GEMM_1X1=0`) so a GPU run can time
/// each against the plain lowering, and the host tests replay both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lowering {
    /// A BN's activation fused into it where it alone reads the BN's output ([`TrainLayout::fused_act`](super::TrainLayout::fused_act)).
    pub fuse_bn_act: bool,
    /// 1x1 convs (stride 1, no padding) as cuBLAS products instead of cuDNN convolutions.
    pub gemm_1x1: bool,
    /// A residual Add's gradient kept in the slot of the input it hands it to unchanged
    /// ([`TrainLayout::grad_of_add`](super::TrainLayout::grad_of_add)) instead of copied there (off: the tests' reference for the
    /// shared slots' lifetimes).
    pub share_skip_grads: bool,
    /// An SE block's input gradient from its two readers (the gate multiply and the pool) in one
    /// pass at the pool's backward ([`TrainLayout::se_mul_of_pool`](super::TrainLayout::se_mul_of_pool)) instead of two.
    pub fuse_se_backward: bool,
    /// A BN that only a residual Add reads applied by one pass that writes the Add's output
    /// ([`TrainLayout::bn_into_add`](super::TrainLayout::bn_into_add)), its own output never stored.
    pub fuse_bn_add: bool,
    /// Rows per partial of the per-channel sums ([`CHAN_CHUNK_ROWS`], at most: see
    /// `chan_min_threads`) and of the depthwise filter gradients ([`DW_CHUNK_ROWS`]): fewer rows,
    /// more threads and more partials to add (the engine reads `EFFV2_CUDA_CHAN_ROWS` /
    /// `EFFV2_CUDA_DW_ROWS` so a GPU run can time the trade).
    pub chan_chunk_rows: usize,
    pub dw_chunk_rows: usize,
    /// A per-channel sum over fewer rows than this many threads would take at `chan_chunk_rows`
    /// rows a partial halves its rows (down to [`CHAN_MIN_CHUNK_ROWS`]) until it has them
    /// ([`Lowering::chan_rows`]); 0 keeps `chan_chunk_rows` everywhere (`EFFV2_CUDA_CHAN_THREADS`).
    pub chan_min_threads: usize,
}

/// Fewest rows a partial of a per-channel sum takes however few threads its launch has.
pub const CHAN_MIN_CHUNK_ROWS: usize = 8;

impl Lowering {
    /// Rows per partial of a per-channel sum over `rows` rows of `c` channels: `chan_chunk_rows`,
    /// halved while the launch (a thread per partial and 8 channels) would have fewer than
    /// `chan_min_threads` threads. A thread adds its rows one tile after another, so the few
    /// threads of a small sum each wait for memory once per tile of a long chunk: S@224 b128's
    /// sums at 7x7 and 14x14 launch 19k-47k threads at 64 rows.
    pub fn chan_rows(&self, rows: usize, c: usize) -> usize {
        let mut r = self.chan_chunk_rows.max(1);
        while r > CHAN_MIN_CHUNK_ROWS && wide_threads(rows.div_ceil(r) * c, c) < self.chan_min_threads {
            r /= 2;
        }
        r
    }
}

impl Default for Lowering {
    fn default() -> Self {
        Lowering { fuse_bn_act: true, gemm_1x1: true, share_skip_grads: true, fuse_se_backward: true, fuse_bn_add: true, chan_chunk_rows: CHAN_CHUNK_ROWS, dw_chunk_rows: DW_CHUNK_ROWS, chan_min_threads: CHAN_MIN_THREADS }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sums_take_shorter_partials_until_they_have_threads() {
        let l = Lowering::default();
        // S@224 b128: 14x14 and 7x7 sums shorten, the 112x112 stem's keeps 64 rows (75k threads).
        assert_eq!(l.chan_rows(128 * 7 * 7, 1536), 16);
        assert_eq!(l.chan_rows(128 * 14 * 14, 960), 32);
        assert_eq!(l.chan_rows(128 * 112 * 112, 24), 64);
        // Bias gradients over the batch alone, and channels off the vector path: the floor.
        assert_eq!(l.chan_rows(128, 1280), CHAN_MIN_CHUNK_ROWS);
        assert_eq!(l.chan_rows(6272, 19), CHAN_MIN_CHUNK_ROWS);
        // Switched off: the chunk rows everywhere.
        assert_eq!(Lowering { chan_min_threads: 0, ..l }.chan_rows(6272, 1536), CHAN_CHUNK_ROWS);
        assert_eq!(Lowering { chan_chunk_rows: 4, ..l }.chan_rows(6272, 1536), 4);
    }
}
