//! 1×1 stride-1 convolution on NHWC: one GEMM `[N·H·W, Cin]·[Cin, Cout]` with its epilogue.
//! Linear layers reuse it on `[N, in]`.

use super::elementwise::Epilogue;
use super::matmul::matmul_epilogue;

pub(super) struct Pointwise {
    pub cin: usize,
    /// `[Cin, Cout]`.
    pub w: Vec<f32>,
}

impl Pointwise {
    /// Pack `[Cout, Cin]` weights (OIHW with k = 1, or a linear layer's `[out, in]`).
    pub fn pack(cin: usize, cout: usize, out_in: &[f32]) -> Self {
        let mut w = vec![0.0; cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                w[i * cout + o] = out_in[o * cin + i];
            }
        }
        Pointwise { cin, w }
    }

    /// `x`: `[rows, Cin]`; `out`: `[rows, Cout]`; `residual` shaped like `out`.
    pub fn run(&self, x: &[f32], rows: usize, out: &mut [f32], epi: &Epilogue, residual: Option<&[f32]>) {
        matmul_epilogue(out, x, &self.w, rows, self.cin, epi, residual);
    }
}
