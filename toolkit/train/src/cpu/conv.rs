//! Regular (groups = 1) convolution on NHWC, forward and backward: im2col over blocks of samples,
//! then GEMM against the OIHW weights viewed as `[Cout, Cin·k·k]` (patch columns are ordered
//! (ci, ky, kx) to match, so weights and their gradients need no repacking). 1×1 stride-1 convs
//! use the activations directly. Blocks run in parallel; per-block weight gradients are summed in
//! block order, so results do not depend on the thread count.

use rayon::prelude::*;

use super::gemm::{gemm, Mat};
use effv2_edge::graph::Pads;

/// Values one block's patch matrix may hold before it is split over fewer samples.
const BLOCK_VALUES: usize = 1 << 17;
const MAX_SAMPLES_PER_BLOCK: usize = 64;

/// Geometry of one conv on one sample: input `h×w×cin`, output `oh×ow×cout`.
#[derive(Clone, Copy, Debug)]
pub struct Geo {
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: usize,
    pub stride: usize,
    pub pads: Pads,
}

impl Geo {
    pub fn in_len(&self) -> usize {
        self.h * self.w * self.cin
    }
    pub fn out_len(&self) -> usize {
        self.oh * self.ow * self.cout
    }
    /// Patch width: `Cin·k·k`.
    pub fn kk(&self) -> usize {
        self.cin * self.k * self.k
    }
    fn direct(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pads == Pads::default()
    }
    /// Depends on the geometry only (never on the thread count): keeps sums reproducible.
    fn samples_per_block(&self) -> usize {
        let per_sample = self.oh * self.ow * self.kk().max(self.cout);
        (BLOCK_VALUES / per_sample.max(1)).clamp(1, MAX_SAMPLES_PER_BLOCK)
    }
    /// Input position read by output `o` at kernel offset `kd` along an axis with `pad` and `len`.
    #[inline]
    fn src(&self, o: usize, kd: usize, pad: usize, len: usize) -> Option<usize> {
        (o * self.stride + kd).checked_sub(pad).filter(|&i| i < len)
    }
}

/// Patches of `nb` samples: `[nb·oh·ow, Cin·k·k]`, columns (ci, ky, kx); padding reads as 0.
fn im2col(g: &Geo, x: &[f32], nb: usize, patch: &mut Vec<f32>) {
    let (kk, k2) = (g.kk(), g.k * g.k);
    patch.clear();
    patch.resize(nb * g.oh * g.ow * kk, 0.0);
    for (r, row) in patch.chunks_exact_mut(kk).enumerate() {
        let (n, oy, ox) = (r / (g.oh * g.ow), r / g.ow % g.oh, r % g.ow);
        for ky in 0..g.k {
            let Some(iy) = g.src(oy, ky, g.pads.top, g.h) else { continue };
            for kx in 0..g.k {
                let Some(ix) = g.src(ox, kx, g.pads.left, g.w) else { continue };
                let px = &x[((n * g.h + iy) * g.w + ix) * g.cin..][..g.cin];
                let t = ky * g.k + kx;
                for (ci, v) in px.iter().enumerate() {
                    row[ci * k2 + t] = *v;
                }
            }
        }
    }
}

/// Scatter-add patch gradients back onto the (zeroed) input gradient of the same `nb` samples.
fn col2im(g: &Geo, dpatch: &[f32], dx: &mut [f32]) {
    let (kk, k2) = (g.kk(), g.k * g.k);
    dx.fill(0.0);
    for (r, row) in dpatch.chunks_exact(kk).enumerate() {
        let (n, oy, ox) = (r / (g.oh * g.ow), r / g.ow % g.oh, r % g.ow);
        for ky in 0..g.k {
            let Some(iy) = g.src(oy, ky, g.pads.top, g.h) else { continue };
            for kx in 0..g.k {
                let Some(ix) = g.src(ox, kx, g.pads.left, g.w) else { continue };
                let px = &mut dx[((n * g.h + iy) * g.w + ix) * g.cin..][..g.cin];
                let t = ky * g.k + kx;
                for (ci, v) in px.iter_mut().enumerate() {
                    *v += row[ci * k2 + t];
                }
            }
        }
    }
}

/// `y = conv(x, w) + bias`; `x` `[batch, h, w, cin]`, `w` OIHW, `y` `[batch, oh, ow, cout]`.
pub fn forward(g: &Geo, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let spb = g.samples_per_block();
    let wt = Mat::new(w, g.cout, g.kk()).t();
    y.par_chunks_mut(spb * g.out_len()).zip(x.par_chunks(spb * g.in_len())).for_each(|(yb, xb)| {
        let rows = yb.len() / g.cout;
        if g.direct() {
            gemm(yb, Mat::new(xb, rows, g.cin), wt, false);
        } else {
            let mut patch = Vec::new();
            im2col(g, xb, rows / (g.oh * g.ow), &mut patch);
            gemm(yb, Mat::new(&patch, rows, g.kk()), wt, false);
        }
        if let Some(b) = bias {
            yb.chunks_exact_mut(g.cout).for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b));
        }
    });
}

/// Gradients of [`forward`]: `dw` (OIHW) and `dbias` are overwritten; `dx` (when wanted) too.
pub fn backward(g: &Geo, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: &mut [f32], dbias: Option<&mut [f32]>) {
    let spb = g.samples_per_block();
    let (kk, cout) = (g.kk(), g.cout);
    let block = |xb: &[f32], dyb: &[f32], dxb: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let rows = dyb.len() / cout;
        let mut patch = Vec::new();
        let p = if g.direct() {
            xb
        } else {
            im2col(g, xb, rows / (g.oh * g.ow), &mut patch);
            &patch
        };
        let mut pdw = vec![0.0; cout * kk];
        gemm(&mut pdw, Mat::new(dyb, rows, cout).t(), Mat::new(p, rows, kk), false);
        let mut pdb = vec![0.0; cout];
        dyb.chunks_exact(cout).for_each(|r| pdb.iter_mut().zip(r).for_each(|(s, v)| *s += v));
        if let Some(dxb) = dxb {
            if g.direct() {
                gemm(dxb, Mat::new(dyb, rows, cout), Mat::new(w, cout, kk), false);
            } else {
                let mut dpatch = vec![0.0; rows * kk];
                gemm(&mut dpatch, Mat::new(dyb, rows, cout), Mat::new(w, cout, kk), false);
                col2im(g, &dpatch, dxb);
            }
        }
        (pdw, pdb)
    };
    let xs = x.par_chunks(spb * g.in_len());
    let dys = dy.par_chunks(spb * g.out_len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = match dx {
        Some(dx) => xs.zip(dys).zip(dx.par_chunks_mut(spb * g.in_len())).map(|((xb, dyb), dxb)| block(xb, dyb, Some(dxb))).collect(),
        None => xs.zip(dys).map(|(xb, dyb)| block(xb, dyb, None)).collect(),
    };
    dw.fill(0.0);
    let mut db = vec![0.0; cout];
    for (pw, pb) in &partials {
        dw.iter_mut().zip(pw).for_each(|(s, v)| *s += v);
        db.iter_mut().zip(pb).for_each(|(s, v)| *s += v);
    }
    if let Some(dbias) = dbias {
        dbias.copy_from_slice(&db);
    }
}
