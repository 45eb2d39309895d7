//! The dense convs of an int8 graph (stem, Fused-MBConv k×k and their 1x1 projections) as
//! integer products on AVX-512 VNNI: `direct_conv`'s row-at-a-time kernel over u8 codes and i8
//! weights, as `int8_pointwise` does for the MBConv 1x1 convs (see there for the arithmetic).
//!
//! `vpdpbusd` sums four products per lane, so a lane holds one output pixel's four input channels:
//! the image is first taken to codes laid out `[cin/4][rows][cols][4]`, with its padding border
//! written as the zero point's code (a padded tap then adds `(zp − zp)·q = 0`, as a zero does in
//! the float conv) and wide enough that every tap's vector load stays inside it: no masks in the
//! loop. Eight output channels × up to 48 pixels of a row sit in 24 accumulators; each step over
//! a tap and four input channels loads the row's vectors once for all eight channels.

use std::arch::x86_64::*;
use std::cell::RefCell;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::avx512::{lanes, spread, Shared};
use super::direct_conv::{Epilogue, Geo};
pub use super::int8_pointwise::Packed;
use super::int8_pointwise::{codes16, gather_map, row_constants, Ptrs};
use super::pointwise::finish;
use super::qdq::{Grid, InputCodes};

/// Output channels per register block.
const OCB: usize = 8;
const LANES: usize = 16;

fn groups(g: &Geo) -> usize {
    g.cin.div_ceil(4)
}

fn blocks(g: &Geo) -> usize {
    g.cout.div_ceil(OCB)
}

/// The padded image of codes: (rows, columns), each position a dword of 4 channels' codes.
fn padded(g: &Geo) -> (usize, usize) {
    let vectors = g.ow.div_ceil(LANES);
    let rows = (g.pad_top + g.h).max((g.oh - 1) * g.stride + g.k);
    // Stride 2 loads 32 positions per vector of output and keeps the even ones.
    let cols = (g.pad_left + g.w).max(g.stride * LANES * vectors + g.k);
    (rows, cols)
}

/// OIHW codes as the kernel reads them: per block of eight output channels, group of four input
/// channels and tap, the eight channels' four codes side by side (zeros past `cout` and `cin`).
pub fn pack_codes(q: &[i8], g: &Geo) -> Vec<i8> {
    let (kk, k4) = (g.k * g.k, groups(g));
    let mut out = vec![0i8; blocks(g) * k4 * kk * OCB * 4];
    for oc in 0..g.cout {
        for ic in 0..g.cin {
            for t in 0..kk {
                out[(((oc / OCB * k4 + ic / 4) * kk + t) * OCB + oc % OCB) * 4 + ic % 4] = q[(oc * g.cin + ic) * kk + t];
            }
        }
    }
    out
}

/// `int8_pointwise::row_constants` of a dense conv, padded to whole blocks.
pub fn epilogue_constants(q: &[i8], w_scales: &[f32], bias: &[f32], g: &Geo, input: Grid) -> (Vec<i32>, Vec<f32>, Vec<f32>) {
    row_constants(q, w_scales, bias, g.cin * g.k * g.k, blocks(g) * OCB, input)
}

/// One image `[cin, h, w]` as the padded image of codes (dwords, see [`padded`]).
fn codes_of_input(x: &[f32], g: &Geo, c: &InputCodes, out: &mut Vec<u32>) {
    let (rows, cols) = padded(g);
    let zp = c.grid.zero_point as u32 * 0x0101_0101;
    out.clear();
    out.resize(groups(g) * rows * cols, zp);
    let map = gather_map(c);
    // Rows of each group over the pool (a pass over the image).
    let dst = Shared(out.as_mut_ptr());
    spread(groups(g) * g.h, |t| {
        let (gi, y) = (t / g.h, t % g.h);
        let src: Vec<&[f32]> = (gi * 4..(gi * 4 + 4).min(g.cin)).map(|c| &x[(c * g.h + y) * g.w..][..g.w]).collect();
        // Each task writes its own row.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.at((gi * rows + y + g.pad_top) * cols + g.pad_left), g.w) };
        unsafe { interleave512(&src, dst, c, map.as_ref()) };
    });
}

/// Up to four channels' rows as codes, four to a dword (channel `c` in byte `c`; missing ones 0).
#[target_feature(enable = "avx512f")]
unsafe fn interleave512(src: &[&[f32]], dst: &mut [u32], c: &InputCodes, map: Option<&[i32; 256]>) {
    let mut i = 0;
    while i < dst.len() {
        let mask = lanes(0, (dst.len() - i) as isize);
        let mut dword = _mm512_setzero_si512();
        for (ch, row) in src.iter().enumerate() {
            let code = unsafe { codes16(_mm512_maskz_loadu_ps(mask, row.as_ptr().add(i)), c, map) };
            dword = _mm512_or_si512(dword, _mm512_sllv_epi32(code, _mm512_set1_epi32(8 * ch as i32)));
        }
        unsafe { _mm512_mask_storeu_epi32(dst.as_mut_ptr().add(i) as *mut i32, mask, dword) };
        i += LANES;
    }
}

/// Output row `oy` of block `blk`, in chunks of up to three vectors (2 + 2 rather than 3 + 1).
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn row(g: &Geo, p: Ptrs, blk: usize, oy: usize) {
    let n_vec = g.ow.div_ceil(LANES);
    let mut v0 = 0;
    while v0 < n_vec {
        let nv = if n_vec - v0 == 4 { 2 } else { (n_vec - v0).min(3) };
        unsafe {
            match (nv, g.stride) {
                (3, 1) => chunk::<3, 1>(g, p, blk, oy, v0),
                (2, 1) => chunk::<2, 1>(g, p, blk, oy, v0),
                (1, 1) => chunk::<1, 1>(g, p, blk, oy, v0),
                (3, _) => chunk::<3, 2>(g, p, blk, oy, v0),
                (2, _) => chunk::<2, 2>(g, p, blk, oy, v0),
                _ => chunk::<1, 2>(g, p, blk, oy, v0),
            }
        }
        v0 += nv;
    }
}

/// `WV` vectors of output pixels from vector `v0` of row `oy`, eight channels of block `blk`.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn chunk<const WV: usize, const S: usize>(g: &Geo, p: Ptrs, blk: usize, oy: usize, v0: usize) {
    unsafe {
        let (k, k4) = (g.k, groups(g));
        let (rows, cols) = padded(g);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let mut acc = [[_mm512_setzero_si512(); WV]; OCB];
        for (o, a) in acc.iter_mut().enumerate() {
            *a = [_mm512_set1_epi32(*p.start.add(blk * OCB + o)); WV];
        }
        let wblk = p.w.add(blk * k4 * k * k * OCB * 4);
        for gi in 0..k4 {
            for kh in 0..k {
                let rowp = (p.x as *const u32).add((gi * rows + oy * S + kh) * cols + S * v0 * LANES);
                let wrow = wblk.add(((gi * k + kh) * k) * OCB * 4);
                for kw in 0..k {
                    let xv: [__m512i; WV] = std::array::from_fn(|v| {
                        let at = rowp.add(S * v * LANES + kw) as *const __m512i;
                        if S == 1 {
                            _mm512_loadu_si512(at)
                        } else {
                            _mm512_permutex2var_epi32(_mm512_loadu_si512(at), even, _mm512_loadu_si512(at.add(1)))
                        }
                    });
                    let wt = wrow.add(kw * OCB * 4) as *const i32;
                    for (o, a) in acc.iter_mut().enumerate() {
                        let wb = _mm512_set1_epi32(std::ptr::read_unaligned(wt.add(o)));
                        for v in 0..WV {
                            a[v] = _mm512_dpbusd_epi32(a[v], xv[v], wb);
                        }
                    }
                }
            }
        }
        for (o, a) in acc.iter().enumerate() {
            let oc = blk * OCB + o;
            if oc >= g.cout {
                break;
            }
            let at = (oc * g.oh + oy) * g.ow;
            let (scale, bias) = (_mm512_set1_ps(*p.scale.add(oc)), _mm512_set1_ps(*p.b.add(oc)));
            for (v, &sum) in a.iter().enumerate() {
                let x0 = (v0 + v) * LANES;
                let m = lanes(0, g.ow as isize - x0 as isize);
                let r = if p.r.is_null() { p.r } else { p.r.add(at + x0) };
                let val = finish(_mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale), bias, p.silu, r, m, p.table);
                _mm512_mask_storeu_ps(p.y.add(at + x0), m, val);
            }
        }
    }
}

/// Whether packed constants fit `g`.
pub fn check(g: &Geo, w: &Packed) -> TractResult<()> {
    let padded = blocks(g) * OCB;
    ensure!(
        w.codes.len() == padded * groups(g) * g.k * g.k * 4 && [w.start.len(), w.scale.len(), w.bias.len()] == [padded; 3],
        "Effv2Int8DirectConv: packed constants do not fit {g:?}"
    );
    Ok(())
}

/// The conv of one image: `x` `[cin, h, w]` taken to codes as `input` says, `y` `[cout, oh, ow]`
/// = conv + bias, then what `e` asks for (as `direct_conv::run`).
///
/// # Safety
/// The CPU has AVX-512F and VNNI (`int8_pointwise::enabled`).
pub unsafe fn run(g: &Geo, input: &InputCodes, x: &[f32], w: &Packed, y: &mut [f32], e: Epilogue) {
    let Epilogue { silu, residual, table } = e;
    let out = g.cout * g.oh * g.ow;
    let n = blocks(g) * OCB;
    assert!(x.len() >= g.cin * g.h * g.w && w.codes.len() >= n * groups(g) * g.k * g.k * 4 && y.len() >= out);
    assert!(w.start.len() >= n && w.scale.len() >= n && w.bias.len() >= n && (g.stride == 1 || g.stride == 2) && residual.is_none_or(|r| r.len() >= out));
    thread_local!(static CODES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) });
    CODES.with_borrow_mut(|codes| {
        codes_of_input(x, g, input, codes);
        let p = Ptrs::new(codes.as_ptr() as *const u8, w, y, residual, silu, table);
        spread(g.oh, |oy| {
            for blk in 0..blocks(g) {
                unsafe { row(g, p, blk, oy) }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tract::avx512::testing::*;
    use crate::backends::tract::direct_conv::reference;
    use crate::backends::tract::int8_pointwise::{enabled, int8_rows};
    use crate::backends::tract::qdq::QuantTable;

    #[test]
    fn the_kernel_equals_plain_loops_on_the_grid() {
        if !enabled() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rnd = uniform(23);
        // (cin, h, w, cout, k, stride, pad_top, pad_left, pad_bottom, pad_right): a TF-same stem
        // (padding after only), symmetric, channel tails, 5x5 and 7x7, 1x1 projections.
        let cases = [
            (3, 37, 37, 32, 3, 2, 0, 0, 1, 1),
            (3, 64, 64, 24, 3, 2, 1, 1, 1, 1),
            (16, 28, 28, 24, 3, 1, 1, 1, 1, 1),
            (5, 13, 50, 13, 5, 1, 2, 2, 2, 2),
            (8, 20, 71, 16, 3, 2, 1, 1, 1, 1),
            (4, 9, 9, 8, 7, 1, 3, 3, 3, 3),
            (64, 28, 28, 48, 1, 1, 0, 0, 0, 0),
            (13, 7, 19, 5, 1, 1, 0, 0, 0, 0),
        ];
        for (cin, h, w, cout, k, stride, pt, pl, pb, pr) in cases {
            let oh = (h + pt + pb - k) / stride + 1;
            let ow = (w + pl + pr - k) / stride + 1;
            let g = Geo { cin, h, w, cout, oh, ow, k, stride, pad_top: pt, pad_left: pl };
            // A zero point well inside the range: padding must count as the value 0, not code 0.
            let grid = QuantTable::new(1.0, 0, &[0.0; 256]).on_grid(0.04, 97).grid().unwrap();
            let x: Vec<f32> = (0..cin * h * w).map(|_| grid.value(((rnd() + 1.0) * 127.9) as u8)).collect();
            let per = cin * k * k;
            let ws: Vec<f32> = (0..cout).map(|o| 0.01 * (1 + o % 5) as f32).collect();
            let wt: Vec<f32> = (0..cout * per).map(|i| (rnd() * 127.0).round() * ws[i / per]).collect();
            let (scales, q) = int8_rows(&wt, cout, per).expect("weights on grids");
            let b: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            let r: Vec<f32> = (0..cout * oh * ow).map(|_| rnd()).collect();
            let codes = pack_codes(&q, &g);
            let (start, scale, bias) = epilogue_constants(&q, &scales, &b, &g, grid);
            let pw = Packed { codes: &codes, start: &start, scale: &scale, bias: &bias };
            for (silu, residual) in [(false, None), (true, None), (false, Some(&r[..]))] {
                let want = reference(&g, &x, &wt, &b, silu, residual);
                let runs = both_ways(3, || {
                    let mut got = vec![f32::NAN; want.len()];
                    unsafe { run(&g, &InputCodes::of_grid(grid), &x, &pw, &mut got, Epilogue { silu, residual, table: None }) };
                    got
                });
                for (got, pooled) in runs.iter().zip([false, true]) {
                    let e = rel(got, &want);
                    assert!(e < 1e-5, "{g:?} silu {silu} residual {} pool {pooled}: {e}", residual.is_some());
                }
                let table = QuantTable::new(15.0, 131, &std::array::from_fn(|i| (i as f32 - 131.0) / 15.0 + 0.003 * (i % 11) as f32));
                let mut with = vec![f32::NAN; want.len()];
                unsafe { run(&g, &InputCodes::of_grid(grid), &x, &pw, &mut with, Epilogue { silu, residual, table: Some(table.epilogue()) }) };
                let mut want_q = vec![0.0; want.len()];
                table.apply(&runs[0], &mut want_q);
                assert!(with.iter().zip(&want_q).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?} silu {silu} with a table");
            }
        }
    }
}
