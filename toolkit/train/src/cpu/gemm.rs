//! The one call into `gemm` (the only unsafe in the training engine). Operands are strided views,
//! so `Aᵀ·B` and `A·Bᵀ` (every backward product) cost no copies: gemm packs its panels anyway.

/// A read-only `rows × cols` matrix view: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, `dst` row-major and contiguous; single-threaded (callers split
/// the work over samples, which keeps sums in a fixed order and so results reproducible).
pub fn gemm(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // These keep the raw-pointer call below inside the slices whatever the caller passes.
    assert!(b.rows == k && dst.len() == m * n && a.in_bounds() && b.in_bounds(), "gemm operand sizes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: dst is an exclusive m×n slice (row stride n, column stride 1); a and b are checked
    // above to contain every element (i·rs + j·cs) gemm reads. With read_dst = false the old
    // contents of dst are ignored; with true, dst = 1·dst + 1·a·b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_views_and_accumulation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 3) as f32 * 0.5).collect();
        let want: Vec<f32> = (0..m * n).map(|i| (0..k).map(|t| a[i / n * k + t] * b[t * n + i % n]).sum()).collect();
        let mut d = vec![1.0; m * n];
        gemm(&mut d, Mat::new(&a, m, k), Mat::new(&b, k, n), false);
        assert_eq!(d, want);
        // aᵀ stored as [k, m]; bᵀ stored as [n, k].
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut d2 = vec![1.0; m * n];
        gemm(&mut d2, Mat::new(&at, k, m).t(), Mat::new(&bt, n, k).t(), true);
        assert!(d2.iter().zip(&want).all(|(x, w)| (x - w - 1.0).abs() < 1e-5));
    }
}
