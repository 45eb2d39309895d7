//! Depthwise k×k convolution on NHWC, channels innermost so every inner loop is a contiguous
//! multiply-add over C (auto-vectorised); parallel over output rows.

use rayon::prelude::*;

use super::conv::Geometry;
use super::elementwise::Epilogue;

pub(super) struct Depthwise {
    pub geo: Geometry,
    /// `[k, k, C]`.
    pub w: Vec<f32>,
}

impl Depthwise {
    /// Pack OIHW `[C, 1, k, k]` weights.
    pub fn pack(geo: Geometry, oihw: &[f32]) -> Self {
        let (c, kk) = (geo.in_c, geo.k * geo.k);
        let mut w = vec![0.0; kk * c];
        for ch in 0..c {
            for t in 0..kk {
                w[t * c + ch] = oihw[ch * kk + t];
            }
        }
        Depthwise { geo, w }
    }

    /// `x`: `[batch, H, W, C]`; `out`: `[batch, OH, OW, C]`; `residual` shaped like `out`.
    pub fn run(&self, x: &[f32], out: &mut [f32], epi: &Epilogue, residual: Option<&[f32]>) {
        let g = &self.geo;
        let row_len = g.out_w * g.in_c;
        out.par_chunks_mut(row_len).enumerate().for_each(|(row, o)| {
            self.row(x, row / g.out_h, row % g.out_h, o);
            epi.apply(o, residual.map(|r| &r[row * row_len..][..row_len]));
        });
    }

    /// One output row: for each kernel tap, one pass of `out[ox] += in[ix] · w[tap]` over the row.
    fn row(&self, x: &[f32], b: usize, oy: usize, out: &mut [f32]) {
        let g = &self.geo;
        let (c, k) = (g.in_c, g.k);
        out.fill(0.0);
        for ky in 0..k {
            let Some(iy) = g.in_y(oy, ky) else { continue };
            let in_row = &x[(b * g.in_h + iy) * g.in_w * c..][..g.in_w * c];
            for kx in 0..k {
                let w = &self.w[(ky * k + kx) * c..][..c];
                let (lo, hi) = g.valid_ox(kx);
                for ox in lo..hi {
                    let src = &in_row[g.in_x(ox, kx) * c..][..c];
                    let dst = &mut out[ox * c..][..c];
                    for ((d, s), w) in dst.iter_mut().zip(src).zip(w) {
                        *d += s * w;
                    }
                }
            }
        }
    }
}
