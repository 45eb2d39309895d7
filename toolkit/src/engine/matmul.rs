//! The one call into `gemm` (the only unsafe in the engine), and how a product `[rows, k]·[k, n]`
//! followed by its epilogue is spread over rayon's pool.

use rayon::prelude::*;

use super::elementwise::Epilogue;

/// Below this many multiply-adds a product runs as one task.
const PAR_MIN_WORK: usize = 1 << 20;
/// Smallest row block worth one task (tiny blocks pay gemm's packing and dispatch per call).
const MIN_BLOCK_ROWS: usize = 48;

/// `dst[m×w] = a[m×k] · b[k×n][.., j0..j0 + w]`: a column panel of a row-major `b`, so column
/// panels of one weight matrix can go to different threads without repacking.
pub(super) fn matmul(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, j0: usize) {
    let w = dst.len().checked_div(m).unwrap_or(0);
    // These make the raw-pointer call below in bounds whatever the caller passes.
    assert!(dst.len() == m * w && a.len() == m * k && b.len() == k * n && j0 + w <= n, "matmul operand sizes");
    if m == 0 || w == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    // SAFETY: dst and a are live slices of exactly m×w and m×k f32s (row strides w and k, column
    // stride 1), b one of k×n read at rows 0..k, columns j0..j0+w (row stride n): with the assert
    // above, every element gemm touches lies inside them. dst is &mut, so nothing else aliases
    // it. read_dst = false, so dst's old contents (and alpha) are ignored.
    unsafe {
        gemm::gemm(
            m,
            w,
            k,
            dst.as_mut_ptr(),
            1,
            w as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr().add(j0),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// `out = epi(a · b) [+ residual]` for `a` `[rows, k]`, `b` `[k, n]`, `out` `[rows, n]`, parallel.
/// Many rows: row blocks, each block's epilogue applied while it is in cache. Few rows (late
/// stages, the classifier): column panels of `b`, so each thread streams only part of the weights;
/// gemm's own threading gains nothing on these shapes.
pub(super) fn matmul_epilogue(out: &mut [f32], a: &[f32], b: &[f32], rows: usize, k: usize, epi: &Epilogue, residual: Option<&[f32]>) {
    let n = epi.bias.len();
    let threads = rayon::current_num_threads();
    let work = rows.saturating_mul(k).saturating_mul(n);
    if prefers_column_panels(rows, k, n) {
        return column_panels(out, a, b, rows, k, n, threads, epi, residual);
    }
    let per = if rows <= 4 * MIN_BLOCK_ROWS {
        // Splitting few rows would only re-read the weights (the larger operand here).
        rows.max(1)
    } else if threads == 1 || work < PAR_MIN_WORK {
        rows.div_ceil(rows.div_ceil(block_rows_for_cache(k, n)))
    } else {
        // About four blocks per thread for load balance, bounded so a block stays cache-sized.
        rows.div_ceil(4 * threads).clamp(MIN_BLOCK_ROWS, block_rows_for_cache(k, n))
    };
    out.par_chunks_mut(per * n).zip(a.par_chunks(per * k)).enumerate().for_each(|(i, (o, ai))| {
        matmul(o, ai, b, o.len() / n, k, n, 0);
        epi.apply(o, residual.map(|r| &r[i * per * n..][..o.len()]));
    });
}

/// Too few rows to give every thread a few row blocks, but enough work to share.
pub(super) fn prefers_column_panels(rows: usize, k: usize, n: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && rows.saturating_mul(k).saturating_mul(n) >= PAR_MIN_WORK && rows < 2 * threads * MIN_BLOCK_ROWS
}

#[allow(clippy::too_many_arguments)]
fn column_panels(out: &mut [f32], a: &[f32], b: &[f32], rows: usize, k: usize, n: usize, threads: usize, epi: &Epilogue, residual: Option<&[f32]>) {
    // About four panels per thread, 16-column multiples (gemm's register tiles).
    let width = n.div_ceil(4 * threads).next_multiple_of(16).clamp(16, n.max(16));
    // Panel p is a [rows, width_p] block at offset rows·width·p.
    let mut panels = vec![0.0; rows * n];
    panels.par_chunks_mut(rows * width).enumerate().for_each(|(p, dst)| matmul(dst, a, b, rows, k, n, p * width));
    let per = (8192 / n.max(1)).max(1);
    out.par_chunks_mut(per * n).enumerate().for_each(|(i, o)| {
        for (r, row) in o.chunks_exact_mut(n).enumerate() {
            let r = i * per + r;
            for (p, seg) in row.chunks_mut(width).enumerate() {
                let base = rows * width * p;
                seg.copy_from_slice(&panels[base + r * seg.len()..][..seg.len()]);
            }
        }
        epi.apply(o, residual.map(|res| &res[i * per * n..][..o.len()]));
    });
}

/// Rows whose input and output together fit about 256 KiB (L2-resident on any current core).
fn block_rows_for_cache(k: usize, n: usize) -> usize {
    ((256 << 10) / (4 * (k + n).max(1))).clamp(MIN_BLOCK_ROWS, 1024) / 16 * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operands(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0).collect();
        let b = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 5.0).collect();
        (a, b)
    }

    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        (0..m * n).map(|i| (0..k).map(|t| a[i / n * k + t] as f64 * b[t * n + i % n] as f64).sum()).collect()
    }

    #[test]
    fn matmul_and_its_column_panels_match_loops() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 48, 96)] {
            let (a, b) = operands(m, k, n);
            let want = reference(&a, &b, m, k, n);
            for (j0, w) in [(0, n), (n / 3, n - n / 3), (n - 1, 1)] {
                let mut got = vec![f32::NAN; m * w];
                matmul(&mut got, &a, &b, m, k, n, j0);
                for (i, g) in got.iter().enumerate() {
                    assert!((*g as f64 - want[i / w * n + j0 + i % w]).abs() < 1e-5, "{m}x{k}x{n} panel {j0}+{w} at {i}");
                }
            }
        }
    }

    #[test]
    fn every_split_gives_the_same_product() {
        // Row blocks (single- and multi-thread) and column panels, with an epilogue and residual.
        for (m, k, n) in [(49, 300, 100), (500, 64, 40), (1, 1100, 1000), (7, 3, 5)] {
            let (a, b) = operands(m, k, n);
            let want = reference(&a, &b, m, k, n);
            let epi = Epilogue { bias: (0..n).map(|j| j as f32 * 0.01).collect(), act: None };
            let res: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let mut got = vec![f32::NAN; m * n];
                pool.install(|| matmul_epilogue(&mut got, &a, &b, m, k, &epi, Some(&res)));
                for (i, g) in got.iter().enumerate() {
                    let w = want[i] + epi.bias[i % n] as f64 + res[i] as f64;
                    assert!((*g as f64 - w).abs() < 1e-4 * (1.0 + w.abs()), "{m}x{k}x{n}, {threads} threads, at {i}");
                }
            }
        }
    }
}
