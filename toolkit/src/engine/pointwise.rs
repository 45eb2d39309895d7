//! 1×1 stride-1 convolution on NHWC: one GEMM `[N·H·W, Cin]·[Cin, Cout]` in row blocks, each block's
//! epilogue applied while it is in cache. Linear layers reuse it on `[N, in]`.

use gemm::Parallelism;
use rayon::prelude::*;

use super::elementwise::Epilogue;
use super::matmul::{matmul, split_rows};

pub(super) struct Pointwise {
    pub cin: usize,
    pub cout: usize,
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
        Pointwise { cin, cout, w }
    }

    /// `x`: `[rows, Cin]`; `out`: `[rows, Cout]`; `residual` shaped like `out`.
    pub fn run(&self, x: &[f32], rows: usize, out: &mut [f32], epi: &Epilogue, residual: Option<&[f32]>) {
        let (cin, cout) = (self.cin, self.cout);
        let (per, par) = split_rows(rows, cin, cout);
        if let Parallelism::Rayon(_) = par {
            // One block threaded inside gemm: spread the epilogue over the pool as well.
            matmul(out, x, &self.w, rows, cin, cout, par);
            return epi.apply_par(out, residual);
        }
        out.par_chunks_mut(per * cout).zip(x.par_chunks(per * cin)).enumerate().for_each(|(bi, (o, xi))| {
            let nr = o.len() / cout;
            matmul(o, xi, &self.w, nr, cin, cout, par);
            let r0 = bi * per * cout;
            epi.apply(o, residual.map(|r| &r[r0..r0 + o.len()]));
        });
    }
}
