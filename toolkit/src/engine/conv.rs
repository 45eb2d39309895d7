//! Regular k×k convolution (groups = 1) on NHWC: im2col over blocks of output pixels, then GEMM
//! against weights packed `[k·k·Cin, Cout]`, then the fused epilogue while the block is in cache.

use rayon::prelude::*;

use super::elementwise::Epilogue;
use super::matmul::{matmul, matmul_epilogue, prefers_column_panels};
use crate::graph::Pads;

/// Values per im2col block (256 KiB): one block's patches stay in L2 while its GEMM reads them.
const PATCH_BLOCK: usize = 1 << 16;

/// Spatial geometry of one conv, shared by the im2col and depthwise kernels.
#[derive(Clone, Debug)]
pub(super) struct Geometry {
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub k: usize,
    pub stride: usize,
    pub pads: Pads,
}

impl Geometry {
    /// Input row read by output row `oy` at kernel row `ky`; `None` where it falls in the padding.
    #[inline]
    pub fn in_y(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky).checked_sub(self.pads.top).filter(|&y| y < self.in_h)
    }

    /// Output columns `lo..hi` whose input column at kernel column `kx` is inside the image.
    #[inline]
    pub fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let s = self.stride;
        let lo = self.pads.left.saturating_sub(kx).div_ceil(s);
        let hi = (self.in_w + self.pads.left).saturating_sub(kx).div_ceil(s).min(self.out_w);
        (lo, hi.max(lo))
    }

    /// Input column of output column `ox` at kernel column `kx` (only for `ox` in [`Self::valid_ox`]).
    #[inline]
    pub fn in_x(&self, ox: usize, kx: usize) -> usize {
        ox * self.stride + kx - self.pads.left
    }
}

pub(super) struct Im2col {
    pub geo: Geometry,
    pub cout: usize,
    /// `[k·k·Cin, Cout]`, rows ordered (ky, kx, ci) like a patch row.
    pub w: Vec<f32>,
}

impl Im2col {
    /// Pack OIHW `[Cout, Cin, k, k]` weights.
    pub fn pack(geo: Geometry, cout: usize, oihw: &[f32]) -> Self {
        let (k, cin) = (geo.k, geo.in_c);
        let mut w = vec![0.0; k * k * cin * cout];
        for o in 0..cout {
            for ci in 0..cin {
                for t in 0..k * k {
                    w[(t * cin + ci) * cout + o] = oihw[(o * cin + ci) * k * k + t];
                }
            }
        }
        Im2col { geo, cout, w }
    }

    /// `x`: `[batch, H, W, Cin]`; `out`: `[batch, OH, OW, Cout]`; `residual` shaped like `out`.
    pub fn run(&self, x: &[f32], batch: usize, out: &mut [f32], epi: &Epilogue, residual: Option<&[f32]>) {
        let g = &self.geo;
        let (cout, kk) = (self.cout, g.k * g.k * g.in_c);
        let rows = batch * g.out_h * g.out_w;
        // Patches for a block of output rows at a time, so the im2col buffer stays cache-sized;
        // blocks of at least 64 rows, so the weights are not re-read for a handful of rows each.
        let per = (PATCH_BLOCK / kk.max(1)).max(64);
        if per >= rows || prefers_column_panels(rows, kk, cout) {
            let mut patch = vec![0.0; rows * kk];
            self.fill_patches(x, 0, &mut patch);
            return matmul_epilogue(out, &patch, &self.w, rows, kk, epi, residual);
        }
        out.par_chunks_mut(per * cout).enumerate().for_each_init(Vec::new, |patch, (bi, o)| {
            let (r0, nr) = (bi * per, o.len() / cout);
            patch.resize(nr * kk, 0.0);
            self.fill_patches(x, r0, &mut patch[..nr * kk]);
            matmul(o, &patch[..nr * kk], &self.w, nr, kk, cout, 0);
            epi.apply(o, residual.map(|r| &r[r0 * cout..r0 * cout + o.len()]));
        });
    }

    /// One patch row per output pixel `r0..`, zeros where the kernel overhangs the padding.
    fn fill_patches(&self, x: &[f32], r0: usize, patch: &mut [f32]) {
        let g = &self.geo;
        let (c, k) = (g.in_c, g.k);
        for (i, row) in patch.chunks_exact_mut(k * k * c).enumerate() {
            let r = r0 + i;
            let (b, oy, ox) = (r / (g.out_h * g.out_w), r / g.out_w % g.out_h, r % g.out_w);
            for ky in 0..k {
                let seg = &mut row[ky * k * c..(ky + 1) * k * c];
                let Some(iy) = g.in_y(oy, ky) else {
                    seg.fill(0.0);
                    continue;
                };
                let in_row = &x[(b * g.in_h + iy) * g.in_w * c..][..g.in_w * c];
                for kx in 0..k {
                    let dst = &mut seg[kx * c..(kx + 1) * c];
                    let (lo, hi) = g.valid_ox(kx);
                    if (lo..hi).contains(&ox) {
                        dst.copy_from_slice(&in_row[g.in_x(ox, kx) * c..][..c]);
                    } else {
                        dst.fill(0.0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(in_w: usize, k: usize, stride: usize, left: usize, right: usize) -> Geometry {
        let out_w = (in_w + left + right - k) / stride + 1;
        let pads = Pads { top: left, left, bottom: right, right };
        Geometry { in_c: 1, in_h: in_w, in_w, out_h: out_w, out_w, k, stride, pads }
    }

    #[test]
    fn valid_columns_match_brute_force() {
        for (w, k, s, l, r) in [(7, 3, 1, 1, 1), (8, 3, 2, 0, 1), (9, 5, 2, 2, 2), (1, 3, 2, 1, 1), (5, 1, 1, 0, 0), (4, 5, 1, 2, 2)] {
            let g = geo(w, k, s, l, r);
            for kx in 0..k {
                let want: Vec<usize> = (0..g.out_w).filter(|&ox| (ox * s + kx).checked_sub(l).is_some_and(|ix| ix < w)).collect();
                let (lo, hi) = g.valid_ox(kx);
                assert_eq!((lo..hi).collect::<Vec<_>>(), want, "w{w} k{k} s{s} pads {l}/{r} kx{kx}");
            }
        }
    }
}
