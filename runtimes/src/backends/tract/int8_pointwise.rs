//! The 1x1 convs of an int8 graph as integer products: u8 codes × i8 weights summed in i32 by
//! AVX-512 VNNI (`vpdpbusd`, four products and their sum per lane and instruction).
//!
//! After the QDQ rewrites (`qdq`) an int8 graph's convs are float convs whose input lies on a u8
//! grid (a table op, or a kernel's table epilogue, wrote it) and whose weights are per-channel
//! i8 grids (folded dequantized constants): `Σ x·w = s_x·s_w[o]·Σ (u − zp)·q`, computed exactly in
//! i32 instead of rounded along the way in f32. Each `vpdpbusd` does 64 multiply-adds where an
//! FMA does 16, and the weights are a quarter of the bytes. The f32 kernel's tiles (`pointwise`):
//! 12 pixels × 32 output channels in 24 zmm accumulators, each step two weight vectors (16
//! channels × 4 inputs each) and 12 broadcast dwords (one pixel's 4 input codes). The input is
//! first taken to codes, channel-last in groups of 4; the sums start at `−zp·Σq` so the zero
//! point costs nothing per step; bias, SiLU, residual and table are applied as in the f32 kernel.
//! Only where the CPU has AVX-512 VNNI and both grids were found; `EFFV2_TRACT_VNNI=0` keeps the
//! f32 kernel (A/B timing).

use std::arch::x86_64::*;
use std::cell::RefCell;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::avx512::{first_lanes, pool_threads, spread, Shared};
use super::pointwise::{by_rows, even_tiles, finish, spread_panels, Fused, Geo, LANES, MR, NR};
use super::qdq::{Grid, InputCodes, TableRef};

/// Groups of 4 input channels per K block: 256 × 4 × 32 bytes of weights = 32 KB of L1.
const KC4: usize = 256;

/// Whether the CPU has VNNI and it is not turned off with `EFFV2_TRACT_VNNI=0`.
pub fn enabled() -> bool {
    super::avx512::switched_on("EFFV2_TRACT_VNNI") && is_x86_feature_detected!("avx512vnni")
}

/// `[cout, cin]` f32 weights that are per-row i8 grids: each row's scale and codes in [−127, 127],
/// `code · scale` equal to the weight to the bit. None if any row is not (then the f32 kernel).
pub fn int8_rows(w: &[f32], cout: usize, cin: usize) -> Option<(Vec<f32>, Vec<i8>)> {
    let mut scales = Vec::with_capacity(cout);
    let mut codes = Vec::with_capacity(cout * cin);
    for row in w.chunks(cin).take(cout) {
        let (s, q) = row_grid(row)?;
        scales.push(s);
        codes.extend(q);
    }
    Some((scales, codes))
}

/// One row's grid. A symmetric quantizer's largest code is ±127 (ours) or less: the scale is
/// tried as max|w|/k for k = 127 down to 1, and one ulp either side of each.
fn row_grid(row: &[f32]) -> Option<(f32, Vec<i8>)> {
    let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !m.is_finite() {
        return None;
    }
    if m == 0.0 {
        return Some((0.0, vec![0; row.len()]));
    }
    let codes = |s: f32| -> Option<Vec<i8>> {
        row.iter()
            .map(|&v| {
                let q = (v / s).round_ties_even();
                (q.abs() <= 127.0 && (q * s).to_bits() == v.to_bits()).then_some(q as i8)
            })
            .collect()
    };
    (1..=127).rev().flat_map(|k| {
        let s = m / k as f32;
        [s, s.next_up(), s.next_down()]
    })
    .find_map(|s| Some((s, codes(s)?)))
}

/// Input channels in groups of 4.
fn groups(g: &Geo) -> usize {
    g.cin.div_ceil(4)
}

/// The codes as the kernel reads them: panel `j` (at `j·32·4·groups`) holds, for each group of
/// 4 input channels, its `panel_width(j)` output channels' 4 codes side by side (zeros past `cout`
/// and `cin`).
pub fn pack_codes(q: &[i8], g: &Geo) -> Vec<i8> {
    let k4 = groups(g);
    let mut out = vec![0i8; g.panels() * NR * 4 * k4];
    for o in 0..g.cout {
        let (j, c) = (o / NR, o % NR);
        let width = g.panel_width(j);
        for i in 0..g.cin {
            out[j * NR * 4 * k4 + (i / 4) * width * 4 + c * 4 + i % 4] = q[o * g.cin + i];
        }
    }
    out
}

/// Per weight row of `per_row` codes (`w_scales.len()` rows), padded with zeros to `padded` rows:
/// the sums' start `−zp·Σq`, the scale `s_x·s_w` that takes a sum to the product's value, and
/// the bias (as many values as given). What every integer kernel's epilogue reads.
pub fn row_constants(q: &[i8], w_scales: &[f32], bias: &[f32], per_row: usize, padded: usize, input: Grid) -> (Vec<i32>, Vec<f32>, Vec<f32>) {
    let (mut start, mut scale, mut b) = (vec![0i32; padded], vec![0f32; padded], vec![0f32; padded]);
    for (o, &s) in w_scales.iter().enumerate() {
        start[o] = -(input.zero_point as i32) * q[o * per_row..][..per_row].iter().map(|&v| v as i32).sum::<i32>();
        scale[o] = input.scale() * s;
    }
    b[..bias.len()].copy_from_slice(bias);
    (start, scale, b)
}

/// [`row_constants`] of a 1x1 conv, padded to whole panels.
pub fn epilogue_constants(q: &[i8], w_scales: &[f32], bias: &[f32], g: &Geo, input: Grid) -> (Vec<i32>, Vec<f32>, Vec<f32>) {
    row_constants(q, w_scales, bias, g.cin, g.panels() * NR, input)
}

/// One image's f32 input (`[cin, pixels]`, or `[pixels, cin]` with `in_last`) as codes,
/// `[pixels][4·groups]` (the padding channels 0).
fn codes_of_input(x: &[f32], g: &Geo, c: &InputCodes, gate: Option<&[f32]>, out: &mut Vec<u8>) {
    let row = 4 * groups(g);
    out.clear();
    out.resize(g.pixels * row, 0);
    // Once per image: the slice routine runs once per pixel row.
    let map = gather_map(c);
    let map = map.as_ref();
    if g.in_last {
        // Pixel ranges over the pool (a pass over the image: one thread does not reach the
        // bandwidth of two).
        let tasks = pool_threads().min(g.pixels.div_ceil(256));
        let dst = Shared(out.as_mut_ptr());
        spread(tasks, |t| {
            for p in t * g.pixels / tasks..(t + 1) * g.pixels / tasks {
                // Each task writes its own pixels' rows.
                let dst = unsafe { std::slice::from_raw_parts_mut(dst.at(p * row), g.cin) };
                unsafe { codes512(&x[p * g.cin..][..g.cin], gate, dst, c, map) };
            }
        });
    } else {
        let (mut line, mut gated) = (vec![0u8; g.pixels], Vec::new());
        for (i, src) in x.chunks(g.pixels).take(g.cin).enumerate() {
            // A gate is one factor per channel here: the channel's row times it, in one buffer.
            let src = match gate {
                Some(s) => {
                    gated.clear();
                    gated.extend(src.iter().map(|v| v * s[i]));
                    &gated[..]
                }
                None => src,
            };
            unsafe { codes512(src, None, &mut line, c, map) };
            for (p, &c) in line.iter().enumerate() {
                out[p * row + i] = c;
            }
        }
    }
}

/// [`InputCodes::code`] of 16 values: NaN as 0, rounded half to even, the zero point added and the
/// clamp done in f32 (as the table op does), then the map (`None`: the identity).
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn codes16(x: __m512, c: &InputCodes, map: Option<&[i32; 256]>) -> __m512i {
    let v = _mm512_mul_ps(x, _mm512_set1_ps(f32::from_bits(c.inv_scale)));
    let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
    let q = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, _mm512_set1_ps(c.zero_point as f32)), _mm512_setzero_ps()), _mm512_set1_ps(255.0)));
    match map {
        Some(m) => unsafe { _mm512_i32gather_epi32::<4>(q, m.as_ptr()) },
        None => q,
    }
}

/// `c.map` for [`codes16`]: None for the identity.
pub(super) fn gather_map(c: &InputCodes) -> Option<[i32; 256]> {
    let identity = c.map.iter().enumerate().all(|(i, &m)| m as usize == i);
    (!identity).then(|| std::array::from_fn(|i| c.map[i] as i32))
}

/// [`InputCodes::code`] on a slice, 16 values at a time; of `x[i] · gate[i]` with a gate (an SE
/// gate product taken in: the same f32 product as the Mul it replaces). `map` is
/// [`gather_map`]`(c)`, made once by the caller.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn codes512(x: &[f32], gate: Option<&[f32]>, y: &mut [u8], c: &InputCodes, map: Option<&[i32; 256]>) {
    let n = x.len().min(y.len());
    let mut i = 0;
    while i < n {
        let mask = first_lanes(n - i);
        let mut v = unsafe { _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i)) };
        if let Some(s) = gate {
            v = _mm512_mul_ps(v, unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr().add(i)) });
        }
        let q = unsafe { codes16(v, c, map) };
        unsafe { _mm512_mask_cvtepi32_storeu_epi8(y.as_mut_ptr().add(i) as *mut i8, mask, q) };
        i += LANES;
    }
}

/// Pointers of one eval of an integer conv: input codes, packed codes, per-channel starts,
/// scales and bias, output, and the epilogue's residual (null if none), SiLU and table.
#[derive(Clone, Copy)]
pub(super) struct Ptrs {
    pub x: *const u8,
    pub w: *const i8,
    pub start: *const i32,
    pub scale: *const f32,
    pub b: *const f32,
    pub y: *mut f32,
    pub r: *const f32,
    pub silu: bool,
    pub table: Option<TableRef>,
}

impl Ptrs {
    pub fn new(x: *const u8, w: &Packed, y: &mut [f32], residual: Option<&[f32]>, silu: bool, table: Option<TableRef>) -> Ptrs {
        let r = residual.map_or(std::ptr::null(), |r| r.as_ptr());
        Ptrs { x, w: w.codes.as_ptr(), start: w.start.as_ptr(), scale: w.scale.as_ptr(), b: w.bias.as_ptr(), y: y.as_mut_ptr(), r, silu, table }
    }
}

// Each task writes its own part of `y`; the rest is read-only.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

/// Groups `k0..k0 + kc` of a panel; between blocks the i32 sums wait in `y`.
#[derive(Clone, Copy)]
struct Block {
    k0: usize,
    kc: usize,
    first: bool,
    last: bool,
}

/// `M` pixels from `p0` × `V` vectors of panel `j`, over the groups of `blk`.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn tile<const M: usize, const V: usize>(g: &Geo, p: Ptrs, j: usize, p0: usize, blk: Block) {
    unsafe {
        let row = 4 * groups(g);
        let width = V * LANES;
        let o0 = j * NR;
        let masks: [__mmask16; V] = std::array::from_fn(|v| first_lanes(g.cout.saturating_sub(o0 + v * LANES)));
        let y = p.y.add(p0 * g.cout + o0);
        let mut acc = [[_mm512_setzero_si512(); V]; M];
        #[allow(clippy::needless_range_loop)]
        for m in 0..M {
            for v in 0..V {
                acc[m][v] = if blk.first {
                    _mm512_loadu_si512(p.start.add(o0 + v * LANES) as *const _)
                } else {
                    _mm512_maskz_loadu_epi32(masks[v], y.add(m * g.cout + v * LANES) as *const i32)
                };
            }
        }
        let mut x = p.x.add(p0 * row + blk.k0 * 4);
        let mut w = p.w.add(j * NR * row + blk.k0 * width * 4);
        for _ in 0..blk.kc {
            let wv: [__m512i; V] = std::array::from_fn(|v| _mm512_loadu_si512(w.add(v * LANES * 4) as *const _));
            #[allow(clippy::needless_range_loop)]
            for m in 0..M {
                let xb = _mm512_set1_epi32(std::ptr::read_unaligned(x.add(m * row) as *const i32));
                for v in 0..V {
                    acc[m][v] = _mm512_dpbusd_epi32(acc[m][v], xb, wv[v]);
                }
            }
            x = x.add(4);
            w = w.add(width * 4);
        }
        let mut tile = [[0i32; NR]; MR];
        #[allow(clippy::needless_range_loop)]
        for m in 0..M {
            for v in 0..V {
                _mm512_storeu_si512(tile[m].as_mut_ptr().add(v * LANES) as *mut _, acc[m][v]);
            }
        }
        for (m, sums) in tile.iter().enumerate().take(M) {
            for (v, &mask) in masks.iter().enumerate() {
                let sum = _mm512_loadu_si512(sums.as_ptr().add(v * LANES) as *const _);
                let out = y.add(m * g.cout + v * LANES);
                if !blk.last {
                    _mm512_mask_storeu_epi32(out as *mut i32, mask, sum);
                    continue;
                }
                let at = o0 + v * LANES;
                let val = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), _mm512_loadu_ps(p.scale.add(at)));
                let r = if p.r.is_null() { p.r } else { p.r.add((p0 + m) * g.cout + at) };
                let val = finish(val, _mm512_loadu_ps(p.b.add(at)), p.silu, r, mask, p.table);
                _mm512_mask_storeu_ps(out, mask, val);
            }
        }
    }
}

/// Pixels `px` of panel `j`, K block by K block.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn panel(g: &Geo, p: Ptrs, j: usize, px: std::ops::Range<usize>) {
    let wide = g.panel_width(j) > LANES;
    let k4 = groups(g);
    let mut k0 = 0;
    while k0 < k4 {
        let kc = KC4.min(k4 - k0);
        let blk = Block { k0, kc, first: k0 == 0, last: k0 + kc == k4 };
        for (p0, m) in even_tiles(px.clone()) {
            unsafe { by_rows!(tile, m, wide, (g, p, j, p0, blk)) }
        }
        k0 += kc;
    }
}

/// The packed codes and per-channel constants of an integer op as constants of `patch`, in the
/// order the ops take them (after the image): codes, starts, scales, and the bias if the op has
/// one (the matrix-vector product has none).
pub fn wire_constants(patch: &mut TypedModelPatch, name: &str, codes: &[i8], start: &[i32], scale: &[f32], bias: Option<&[f32]>) -> TractResult<Vec<OutletId>> {
    let mut wires = vec![
        patch.add_const(format!("{name}.codes"), Tensor::from_shape(&[codes.len()], codes)?)?,
        patch.add_const(format!("{name}.start"), Tensor::from_shape(&[start.len()], start)?)?,
        patch.add_const(format!("{name}.scale"), Tensor::from_shape(&[scale.len()], scale)?)?,
    ];
    if let Some(b) = bias {
        wires.push(patch.add_const(format!("{name}.bias_padded"), Tensor::from_shape(&[b.len()], b)?)?);
    }
    Ok(wires)
}

/// The packed weights and per-channel constants of one conv (see [`pack_codes`],
/// [`epilogue_constants`]).
pub struct Packed<'a> {
    pub codes: &'a [i8],
    pub start: &'a [i32],
    pub scale: &'a [f32],
    pub bias: &'a [f32],
}

/// What the eval of a conv op that has an integer mode (`Pointwise`, `DirectConv`) multiplies by:
/// f32 weights and bias, or the integer kernel's input codes and packed constants.
pub(super) enum Weights<'a> {
    F32(&'a [f32], &'a [f32]),
    Int8(&'a InputCodes, Packed<'a>),
}

impl<'a> Weights<'a> {
    /// From the op's constant inputs (those after the image): with `int8`, the four of
    /// [`wire_constants`]; else the packed f32 weights and the bias.
    pub fn of(int8: Option<&'a InputCodes>, consts: &'a [TValue]) -> TractResult<Weights<'a>> {
        use super::plain;
        Ok(match int8 {
            Some(input) => Weights::Int8(input, Packed { codes: plain(&consts[0])?, start: plain(&consts[1])?, scale: plain(&consts[2])?, bias: plain(&consts[3])? }),
            None => Weights::F32(plain(&consts[0])?, plain(&consts[1])?),
        })
    }
}

/// Whether packed constants fit `g`.
pub fn check(g: &Geo, w: &Packed) -> TractResult<()> {
    let padded = g.panels() * NR;
    ensure!(
        w.codes.len() == padded * 4 * groups(g) && [w.start.len(), w.scale.len(), w.bias.len()] == [padded; 3],
        "Effv2Int8Pointwise: packed constants do not fit {g:?}"
    );
    Ok(())
}

/// The conv of one image: `x` as [`Geo`] says (times `f.gate` per input channel, if given) taken
/// to codes as `input` says, `y` `[pixels, cout]`, then what `f` adds.
///
/// # Safety
/// The CPU has AVX-512F and VNNI ([`enabled`]).
pub unsafe fn run(g: &Geo, input: &InputCodes, x: &[f32], w: &Packed, y: &mut [f32], f: Fused) {
    let out = g.pixels * g.cout;
    let n = g.panels() * NR;
    assert!(x.len() >= g.cin * g.pixels && w.codes.len() >= n * 4 * groups(g) && y.len() >= out);
    assert!(w.start.len() >= n && w.scale.len() >= n && w.bias.len() >= n && f.gate.is_none_or(|s| s.len() >= g.cin) && f.residual.is_none_or(|r| r.len() >= out));
    thread_local!(static CODES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) });
    CODES.with_borrow_mut(|codes| {
        codes_of_input(x, g, input, f.gate, codes);
        let p = Ptrs::new(codes.as_ptr(), w, y, f.residual, f.silu, f.table);
        spread_panels(g, |j, px| unsafe { panel(g, p, j, px) });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tract::avx512::testing::*;
    use crate::backends::tract::qdq::QuantTable;

    /// Random per-row i8 weights as a quantizer writes them (largest code ±127) and their f32
    /// values.
    fn int8_weights(rnd: &mut impl FnMut() -> f32, cout: usize, cin: usize) -> (Vec<f32>, Vec<i8>, Vec<f32>) {
        let mut scales = vec![];
        let mut q = vec![];
        for o in 0..cout {
            let s = 0.01 * (1.0 + rnd().abs()) / (1 + o % 3) as f32;
            let mut row: Vec<i8> = (0..cin).map(|_| (rnd() * 127.0).round() as i8).collect();
            row[o % cin] = if o % 2 == 0 { 127 } else { -127 };
            scales.push(s);
            q.extend(row);
        }
        let w = q.iter().enumerate().map(|(i, &v)| v as f32 * scales[i / cin]).collect();
        (w, q, scales)
    }

    #[test]
    fn weight_rows_give_back_their_codes_or_nothing() {
        let mut rnd = uniform(5);
        let (w, q, s) = int8_weights(&mut rnd, 40, 24);
        let (scales, codes) = int8_rows(&w, 40, 24).expect("int8 rows");
        assert_eq!(codes, q);
        for (o, (a, b)) in scales.iter().zip(&s).enumerate() {
            // Another scale may do if it gives every weight back to the bit.
            assert!(q[o * 24..][..24].iter().zip(&w[o * 24..][..24]).all(|(&c, v)| (c as f32 * a).to_bits() == v.to_bits()), "row {o}: {a} vs {b}");
        }
        let mut off = w.clone();
        off[30] *= 1.0001;
        assert!(int8_rows(&off, 40, 24).is_none(), "a weight off the grid");
        assert!(int8_rows(&[0.0; 8], 2, 4).is_some_and(|(_, c)| c == [0; 8]));
        assert!(int8_rows(&[f32::NAN, 1.0], 1, 2).is_none());
    }

    /// The vector path of the input's codes equals the scalar one: ties, NaN, infinities and
    /// values far out of range, with the identity map and through a table's map.
    #[test]
    fn input_codes_take_every_value_as_the_scalar_path() {
        if !enabled() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut xs: Vec<f32> = (-800..800).map(|k| k as f32 * 0.025).collect();
        xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3e9, -3e9, -0.0, 0.0]);
        let grid = QuantTable::new(1.0, 0, &[0.0; 256]).on_grid(0.05, 113).grid().unwrap();
        let table: [f32; 256] = std::array::from_fn(|i| grid.value(((i * 7) % 256) as u8));
        let through = InputCodes::through(&QuantTable::new(9.0, 40, &table).on_grid(0.05, 113)).unwrap();
        for c in [InputCodes::of_grid(grid), through] {
            let mut got = vec![0u8; xs.len()];
            unsafe { codes512(&xs, None, &mut got, &c, gather_map(&c).as_ref()) };
            for (x, got) in xs.iter().zip(got) {
                assert_eq!(got, c.code(*x), "x {x}");
            }
        }
    }

    #[test]
    fn the_kernel_equals_plain_loops_on_the_grid() {
        if !enabled() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rnd = uniform(17);
        // (cin, cout, pixels): cin not a multiple of 4, a K block split (cin > 1024), channel
        // tails of 8 and 16, pixel tails of every tile size.
        let cases = [(96, 672, 196), (672, 112, 196), (1152, 192, 49), (40, 24, 13), (1100, 56, 25), (17, 8, 1), (3, 80, 23), (64, 40, 12)];
        for (cin, cout, pixels) in cases {
            for in_last in [false, true] {
                let g = Geo { cin, cout, pixels, in_last };
                let grid = QuantTable::new(1.0, 0, &[0.0; 256]).on_grid(0.05, 113).grid().unwrap();
                let codes: Vec<u8> = (0..cin * pixels).map(|_| ((rnd() + 1.0) * 127.9) as u8).collect();
                let x: Vec<f32> = codes.iter().map(|&c| grid.value(c)).collect();
                let (w, q, ws) = int8_weights(&mut rnd, cout, cin);
                let b: Vec<f32> = (0..cout).map(|_| rnd()).collect();
                let r: Vec<f32> = (0..cout * pixels).map(|_| rnd()).collect();
                let packed = pack_codes(&q, &g);
                let (start, scale, bias) = epilogue_constants(&q, &ws, &b, &g, grid);
                let pw = Packed { codes: &packed, start: &start, scale: &scale, bias: &bias };
                for (silu, residual) in [(false, None), (true, None), (false, Some(&r[..]))] {
                    let f = Fused { silu, residual, gate: None, table: None };
                    let want = super::super::pointwise::reference(&g, &x, &w, &b, f);
                    let runs = both_ways(3, || {
                        let mut got = vec![f32::NAN; want.len()];
                        unsafe { run(&g, &InputCodes::of_grid(grid), &x, &pw, &mut got, f) };
                        got
                    });
                    for (got, pooled) in runs.iter().zip([false, true]) {
                        let e = rel(got, &want);
                        assert!(e < 1e-5, "{g:?} silu {silu} residual {} pool {pooled}: {e}", residual.is_some());
                    }
                    let table = QuantTable::new(20.0, 128, &std::array::from_fn(|i| (i as f32 - 128.0) / 20.0 + 0.001 * (i % 7) as f32));
                    let mut got = vec![f32::NAN; want.len()];
                    unsafe { run(&g, &InputCodes::of_grid(grid), &x, &pw, &mut got, Fused { table: Some(table.epilogue()), ..f }) };
                    let mut want_q = vec![0.0; want.len()];
                    table.apply(&runs[0], &mut want_q);
                    assert!(got.iter().zip(&want_q).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?} silu {silu} with a table");
                    // An SE gate taken in: the conv of the gated input, to the bit.
                    let gate: Vec<f32> = (0..cin).map(|_| 0.6 + 0.5 * rnd()).collect();
                    let gated: Vec<f32> = (0..cin * pixels).map(|i| x[i] * gate[if in_last { i % cin } else { i / pixels }]).collect();
                    let (mut with, mut want) = (vec![f32::NAN; cout * pixels], vec![f32::NAN; cout * pixels]);
                    unsafe { run(&g, &InputCodes::of_grid(grid), &x, &pw, &mut with, Fused { gate: Some(&gate), ..f }) };
                    unsafe { run(&g, &InputCodes::of_grid(grid), &gated, &pw, &mut want, f) };
                    assert!(with.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?} silu {silu} with a gate");
                }
            }
        }
    }
}
