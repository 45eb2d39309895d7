//! The one call into `gemm` (the only unsafe in the engine), and how GEMM work is split over rayon.

use gemm::Parallelism;

/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 20;
/// Smallest row block worth one task (tiny blocks pay gemm's packing and dispatch per call).
const MIN_BLOCK_ROWS: usize = 48;

/// `dst[m×n] = a[m×k] · b[k×n]`, all row-major and contiguous.
pub(super) fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, par: Parallelism) {
    // These make the raw-pointer call below in bounds whatever the caller passes.
    assert!(dst.len() == m * n && a.len() == m * k && b.len() == k * n, "matmul operand sizes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    // SAFETY: dst, a and b are live, non-overlapping slices (dst is &mut) holding exactly m×n, m×k
    // and k×n f32s; with column stride 1 and row strides n, k, n every element gemm touches lies
    // inside them. read_dst = false, so dst's old contents (and alpha) are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// How to run an `[rows, k]·[k, n]` product: rows per task, and gemm's own parallelism inside a task.
/// Many rows: independent row blocks spread over the rayon pool, each gemm single-threaded, so each
/// block's epilogue runs while its output is still in cache. Few rows: one block, gemm threads it.
pub(super) fn split_rows(rows: usize, k: usize, n: usize) -> (usize, Parallelism) {
    let threads = rayon::current_num_threads();
    let work = rows.saturating_mul(k).saturating_mul(n);
    if threads == 1 || work < PAR_MIN_WORK {
        return (rows.clamp(1, block_rows_for_cache(k, n)), Parallelism::None);
    }
    if rows < 2 * threads * MIN_BLOCK_ROWS {
        return (rows.max(1), Parallelism::Rayon(0));
    }
    // About four blocks per thread for load balance, bounded so a block stays cache-sized.
    let per = rows.div_ceil(4 * threads).max(MIN_BLOCK_ROWS);
    (per.min(block_rows_for_cache(k, n)).max(MIN_BLOCK_ROWS), Parallelism::None)
}

/// Rows whose input and output together fit about 256 KiB (L2-resident on any current core).
fn block_rows_for_cache(k: usize, n: usize) -> usize {
    ((256 << 10) / (4 * (k + n).max(1))).clamp(MIN_BLOCK_ROWS, 1024) / 16 * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_loops() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 48, 96)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
            let mut got = vec![f32::NAN; m * n];
            matmul(&mut got, &a, &b, m, k, n, Parallelism::None);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| a[i * k + t] as f64 * b[t * n + j] as f64).sum();
                    assert!((got[i * n + j] as f64 - want).abs() < 1e-5, "{m}x{k}x{n} at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn split_covers_rows() {
        for rows in [1, 7, 49, 196, 3136, 12544] {
            let (per, _) = split_rows(rows, 144, 64);
            assert!(per >= 1 && (per >= MIN_BLOCK_ROWS || per >= rows.min(MIN_BLOCK_ROWS)));
        }
    }
}
