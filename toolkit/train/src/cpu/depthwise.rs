//! Depthwise convolution on NHWC (one k×k filter per channel), forward and backward, vectorised
//! over channels. Weights are repacked `[k·k, C]` so the channel loop is contiguous.

use rayon::prelude::*;

use super::conv::Geo;

/// Samples per parallel block of the backward pass (fixed, so weight-gradient sums are reproducible).
const SAMPLES_PER_BLOCK: usize = 4;

fn pack(g: &Geo, w: &[f32]) -> Vec<f32> {
    let (c, k2) = (g.cin, g.k * g.k);
    let mut p = vec![0.0; k2 * c];
    for ch in 0..c {
        for t in 0..k2 {
            p[t * c + ch] = w[ch * k2 + t];
        }
    }
    p
}

/// Visit every (output pixel, tap, input pixel) triple inside the image of one sample.
#[inline]
fn for_taps(g: &Geo, mut f: impl FnMut(usize, usize, usize)) {
    for oy in 0..g.oh {
        for ky in 0..g.k {
            let Some(iy) = (oy * g.stride + ky).checked_sub(g.pads.top).filter(|&y| y < g.h) else { continue };
            for ox in 0..g.ow {
                for kx in 0..g.k {
                    let Some(ix) = (ox * g.stride + kx).checked_sub(g.pads.left).filter(|&x| x < g.w) else { continue };
                    f(oy * g.ow + ox, ky * g.k + kx, iy * g.w + ix);
                }
            }
        }
    }
}

pub fn forward(g: &Geo, x: &[f32], w: &[f32], y: &mut [f32]) {
    let c = g.cin;
    let wp = pack(g, w);
    y.par_chunks_mut(g.out_len()).zip(x.par_chunks(g.in_len())).for_each(|(ys, xs)| {
        ys.fill(0.0);
        for_taps(g, |o, t, i| {
            let (yo, xi, wt) = (&mut ys[o * c..][..c], &xs[i * c..][..c], &wp[t * c..][..c]);
            for ((yv, xv), wv) in yo.iter_mut().zip(xi).zip(wt) {
                *yv += xv * wv;
            }
        });
    });
}

/// `dw` (OIHW `[C,1,k,k]`) is overwritten, `dx` too when wanted.
pub fn backward(g: &Geo, x: &[f32], w: &[f32], dy: &[f32], dx: Option<&mut [f32]>, dw: &mut [f32]) {
    let (c, k2) = (g.cin, g.k * g.k);
    let wp = pack(g, w);
    let block = |xb: &[f32], dyb: &[f32], mut dxb: Option<&mut [f32]>| -> Vec<f32> {
        let mut pdw = vec![0.0; k2 * c];
        if let Some(d) = dxb.as_deref_mut() {
            d.fill(0.0);
        }
        for n in 0..dyb.len() / g.out_len() {
            let (xs, dys) = (&xb[n * g.in_len()..][..g.in_len()], &dyb[n * g.out_len()..][..g.out_len()]);
            let mut dxs = dxb.as_deref_mut().map(|d| &mut d[n * g.in_len()..][..g.in_len()]);
            for_taps(g, |o, t, i| {
                let (dyo, xi) = (&dys[o * c..][..c], &xs[i * c..][..c]);
                for ((s, d), xv) in pdw[t * c..][..c].iter_mut().zip(dyo).zip(xi) {
                    *s += d * xv;
                }
                if let Some(dxs) = dxs.as_deref_mut() {
                    for ((s, d), wv) in dxs[i * c..][..c].iter_mut().zip(dyo).zip(&wp[t * c..][..c]) {
                        *s += d * wv;
                    }
                }
            });
        }
        pdw
    };
    let (xs, dys) = (x.par_chunks(SAMPLES_PER_BLOCK * g.in_len()), dy.par_chunks(SAMPLES_PER_BLOCK * g.out_len()));
    let partials: Vec<Vec<f32>> = match dx {
        Some(dx) => xs.zip(dys).zip(dx.par_chunks_mut(SAMPLES_PER_BLOCK * g.in_len())).map(|((a, b), d)| block(a, b, Some(d))).collect(),
        None => xs.zip(dys).map(|(a, b)| block(a, b, None)).collect(),
    };
    let mut sum = vec![0.0; k2 * c];
    for p in &partials {
        sum.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    for ch in 0..c {
        for t in 0..k2 {
            dw[ch * k2 + t] = sum[t * c + ch];
        }
    }
}
