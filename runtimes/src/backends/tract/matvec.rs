//! Matrix-vector products with a constant matrix — the squeeze-excite 1x1 convs on a 1x1 image
//! and the classifier — as one streaming pass of ours (`Effv2MatVec`) in place of tract's
//! `EinSum`.
//!
//! tract packs the vector and runs its 16x1 / 128x1 matrix kernels on them; with the weights
//! coming from L3 on every run (b0: 3.9 MB of SE weights, 5 MB of classifier) that ran at 4–9 GB/s:
//! 1.25 ms for b0's 32 SE products with their packing and 0.55 ms for the classifier on one
//! thread. Here the matrix is read once, in order: long rows as dot products four rows at a
//! time (16-lane partial sums, one horizontal sum per row), short rows (the SE expand, k ≤ 128)
//! as a sum of scaled matrix rows stored transposed; rows of a large matrix are split over
//! tract's pool. Only on AVX-512 CPUs and for f32.

use std::arch::x86_64::*;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::avx512::{first_lanes as mask, pool_threads, spread, switched_on, Shared};
use super::int8_pointwise::{self, codes512};
use super::plain;
use super::qdq::{Grid, InputCodes};

const LANES: usize = 16;
/// Rows up to this long are stored transposed and summed as scaled rows.
const SHORT_K: usize = 128;
/// Rows per task when a large matrix is split over threads.
const ROWS_PER_TASK: usize = 64;

/// `y[n] = Σ_k w[n, k] x[k]` for an `n`×`k` matrix.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Geo {
    pub n: usize,
    pub k: usize,
}

impl Geo {
    fn transposed(&self) -> bool {
        self.k <= SHORT_K
    }
}

/// The row-major `[n, k]` matrix as the kernel reads it: as is, or transposed to `[k, n]` for short rows.
pub fn pack(w: &[f32], g: &Geo) -> Vec<f32> {
    if !g.transposed() {
        return w[..g.n * g.k].to_vec();
    }
    let mut t = vec![0.0; g.n * g.k];
    for r in 0..g.n {
        for c in 0..g.k {
            t[c * g.n + r] = w[r * g.k + c];
        }
    }
    t
}

/// Rows `rows` of `y` as dot products, four rows at a time.
#[target_feature(enable = "avx512f")]
unsafe fn dots(g: &Geo, w: *const f32, x: &[f32], y: *mut f32, rows: std::ops::Range<usize>) {
    unsafe {
        let mut r = rows.start;
        while r < rows.end {
            let m = (rows.end - r).min(4);
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut c = 0;
            while c < g.k {
                let mk = mask(g.k - c);
                let xv = _mm512_maskz_loadu_ps(mk, x.as_ptr().add(c));
                for (i, a) in acc.iter_mut().enumerate().take(m) {
                    *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, w.add((r + i) * g.k + c)), xv, *a);
                }
                c += LANES;
            }
            for (i, a) in acc.iter().enumerate().take(m) {
                *y.add(r + i) = _mm512_reduce_add_ps(*a);
            }
            r += m;
        }
    }
}

/// Every row of `y` as the sum over `k` of `x[k]` times row `k` of the transposed matrix.
#[target_feature(enable = "avx512f")]
unsafe fn scaled_rows(g: &Geo, wt: *const f32, x: &[f32], y: *mut f32) {
    unsafe {
        let mut r = 0;
        // 8 vectors of outputs per pass, so the partial sums stay in registers.
        while r < g.n {
            let mut acc = [_mm512_setzero_ps(); 8];
            let vecs = (g.n - r).div_ceil(LANES).min(8);
            for (c, &xc) in x.iter().enumerate().take(g.k) {
                let s = _mm512_set1_ps(xc);
                let row = wt.add(c * g.n + r);
                for (v, a) in acc.iter_mut().enumerate().take(vecs) {
                    let mk = mask(g.n - r - v * LANES);
                    *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, row.add(v * LANES)), s, *a);
                }
            }
            for (v, a) in acc.iter().enumerate().take(vecs) {
                _mm512_mask_storeu_ps(y.add(r + v * LANES), mask(g.n - r - v * LANES), *a);
            }
            r += vecs * LANES;
        }
    }
}

/// `task(rows)` over the rows of `y`, in blocks of [`ROWS_PER_TASK`]: over the rayon pool the
/// caller runs in when there are enough blocks, else one after another (a matrix of few row
/// blocks is not worth waking the other threads for).
fn split_rows(g: &Geo, y: &mut [f32], task: impl Fn(*mut f32, std::ops::Range<usize>) + Send + Sync) {
    let tasks = g.n.div_ceil(ROWS_PER_TASK);
    // Each task writes its own rows.
    let out = Shared(y.as_mut_ptr());
    let block = |t: usize| task(out.at(0), t * ROWS_PER_TASK..((t + 1) * ROWS_PER_TASK).min(g.n));
    if tasks >= 2 * pool_threads() {
        spread(tasks, block);
    } else {
        (0..tasks).for_each(block);
    }
}

/// `y = w x` with `w` packed by [`pack`]. Rows of a large matrix go to the rayon pool the caller
/// runs in, if it is one of several threads.
///
/// # Safety
/// The CPU has AVX-512F ([`supported`](super::avx512::supported)).
pub unsafe fn run(g: &Geo, w: &[f32], x: &[f32], y: &mut [f32]) {
    assert!(w.len() >= g.n * g.k && x.len() >= g.k && y.len() >= g.n);
    if g.transposed() {
        return unsafe { scaled_rows(g, w.as_ptr(), x, y.as_mut_ptr()) };
    }
    split_rows(g, y, |y, rows| unsafe { dots(g, w.as_ptr(), x, y, rows) });
}

/// The op in tract's graph: inputs the vector (`k` values in any shape) and the packed matrix
/// (a constant); output `n` values shaped `out_shape`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct MatVec {
    geo: Geo,
    out_shape: TVec<usize>,
    /// Integer dot products ([`run_int8`]) of a vector on this grid; the inputs are then the
    /// vector, the codes packed by [`pack_int8`] (i8), the rows' starts (i32) and scales (f32).
    int8: Option<Grid>,
}

impl Op for MatVec {
    fn name(&self) -> StaticName {
        if self.int8.is_some() { "Effv2Int8MatVec" } else { "Effv2MatVec" }.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let form = if self.geo.transposed() { "scaled rows" } else { "dot products" };
        let kind = if self.int8.is_some() { "i8 matrix · u8 vector" } else { "matrix · vector" };
        Ok(vec![format!("{}x{} {kind}, {form}", self.geo.n, self.geo.k)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for MatVec {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geo;
        let wanted = if self.int8.is_some() { 4 } else { 2 };
        ensure!(inputs.len() == wanted, "Effv2MatVec takes {wanted} inputs, got {}", inputs.len());
        let x = plain::<f32>(&inputs[0])?;
        let y = match self.int8 {
            Some(grid) => {
                let (w, start, scale) = (plain::<i8>(&inputs[1])?, plain::<i32>(&inputs[2])?, plain::<f32>(&inputs[3])?);
                ensure!(x.len() == g.k && w.len() == g.n * padded_k(g.k) && start.len() == g.n && scale.len() == g.n, "Effv2MatVec: {} values for a {}x{} int8 matrix", x.len(), g.n, g.k);
                super::filled_f32(&self.out_shape, |y| unsafe { run_int8(g, grid, w, start, scale, x, y) })?
            }
            None => {
                let w = plain::<f32>(&inputs[1])?;
                ensure!(x.len() == g.k && w.len() == g.n * g.k, "Effv2MatVec: {} values for a {}x{} matrix", x.len(), g.n, g.k);
                super::filled_f32(&self.out_shape, |y| unsafe { run(g, w, x, y) })?
            }
        };
        Ok(tvec!(y))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for MatVec {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let dt = if self.int8.is_some() { i8::datum_type() } else { f32::datum_type() };
        Ok(tvec!((Cost::FMA(dt), (self.geo.n * self.geo.k).into())))
    }
}

/// An int8 graph's matrix-vector product with long rows (the classifier, the SE reduce): u8 codes
/// of the vector times i8 rows summed in i32 by VNNI, a quarter of the f32 matrix's bytes to
/// stream (b0's classifier: 1.3 MB instead of 5.1). Rows are padded to whole 64-byte vectors.
fn padded_k(k: usize) -> usize {
    k.div_ceil(64) * 64
}

/// `[n, k]` codes as the kernel reads them: rows padded with zeros to [`padded_k`].
pub fn pack_int8(q: &[i8], g: &Geo) -> Vec<i8> {
    let kp = padded_k(g.k);
    let mut out = vec![0i8; g.n * kp];
    for (dst, src) in out.chunks_mut(kp).zip(q.chunks(g.k)) {
        dst[..g.k].copy_from_slice(src);
    }
    out
}

/// Rows `rows` of `y`, four at a time: `(Σ u·q + start) · scale` per row.
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dots_u8(g: &Geo, w: *const i8, x: &[u8], start: &[i32], scale: &[f32], y: *mut f32, rows: std::ops::Range<usize>) {
    unsafe {
        let kp = padded_k(g.k);
        let mut r = rows.start;
        while r < rows.end {
            let m = (rows.end - r).min(4);
            let mut acc = [_mm512_setzero_si512(); 4];
            for c in (0..kp).step_by(64) {
                let xv = _mm512_loadu_si512(x.as_ptr().add(c) as *const _);
                for (i, a) in acc.iter_mut().enumerate().take(m) {
                    *a = _mm512_dpbusd_epi32(*a, xv, _mm512_loadu_si512(w.add((r + i) * kp + c) as *const _));
                }
            }
            for (i, a) in acc.iter().enumerate().take(m) {
                *y.add(r + i) = (_mm512_reduce_add_epi32(*a) + start[r + i]) as f32 * scale[r + i];
            }
            r += m;
        }
    }
}

/// `y = w x` for `x` on `grid` and `w` packed by [`pack_int8`], with the per-row `start`
/// (`−zp·Σq`) and `scale` (`s_x·s_w`) of `int8_pointwise::row_constants`.
///
/// # Safety
/// The CPU has AVX-512F and VNNI (`int8_pointwise::enabled`).
pub unsafe fn run_int8(g: &Geo, grid: Grid, w: &[i8], start: &[i32], scale: &[f32], x: &[f32], y: &mut [f32]) {
    let kp = padded_k(g.k);
    assert!(w.len() >= g.n * kp && x.len() >= g.k && y.len() >= g.n && start.len() >= g.n && scale.len() >= g.n);
    let mut codes = vec![0u8; kp];
    unsafe { codes512(&x[..g.k], None, &mut codes, &InputCodes::of_grid(grid), None) }; // identity map
    split_rows(g, y, |y, rows| unsafe { dots_u8(g, w.as_ptr(), &codes, start, scale, y, rows) });
}

/// Whether the rewrite is on: AVX-512 here and not turned off with `EFFV2_TRACT_MATVEC=0`.
pub(super) fn enabled() -> bool {
    switched_on("EFFV2_TRACT_MATVEC")
}

/// `(n, k, matrix transposed)` if `einsum` multiplies a vector (its first input: every axis but
/// the summed one of size 1) by a constant 2-D matrix (its second) into a vector.
fn as_matvec(einsum: &EinSum, x: &[usize], w: &[usize], out: &[usize]) -> Option<(usize, usize, bool)> {
    let expr = einsum.axes.to_string();
    let (ins, o) = expr.split_once("->")?;
    let (a, b) = ins.split_once(',')?;
    let (a, b, o): (Vec<char>, Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect(), o.chars().collect());
    if a.len() != x.len() || b.len() != 2 || w.len() != 2 || o.len() != out.len() {
        return None;
    }
    // The summed axis is in the vector and the matrix, the kept one in the matrix and the output.
    let ks = b.iter().position(|l| a.contains(l) && !o.contains(l))?;
    let ns = 1 - ks;
    if a.contains(&b[ns]) || !o.contains(&b[ns]) {
        return None;
    }
    let (k, n) = (w[ks], w[ns]);
    let ones_but = |letters: &[char], dims: &[usize], keep: char| letters.iter().zip(dims).all(|(l, &d)| *l == keep || d == 1);
    if !ones_but(&a, x, b[ks]) || !ones_but(&o, out, b[ns]) || x.iter().product::<usize>() != k || out.iter().product::<usize>() != n {
        return None;
    }
    Some((n, k, ks == 0))
}

/// Replace every f32 matrix-vector einsum with a constant matrix by [`MatVec`]. Returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    if !enabled() {
        return Ok(0);
    }
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(einsum) = node.op_as::<EinSum>() else { continue };
        let [xi, wi] = node.inputs.as_slice() else { continue };
        let (xf, wf) = (model.outlet_fact(*xi)?, model.outlet_fact(*wi)?);
        let out_fact = model.outlet_fact(OutletId::new(id, 0))?;
        let (Some(x), Some(out), Some(w)) = (xf.shape.as_concrete(), out_fact.shape.as_concrete(), wf.konst.clone()) else { continue };
        if einsum.q_params.is_some() || xf.datum_type != f32::datum_type() || w.datum_type() != f32::datum_type() || xf.konst.is_some() {
            continue;
        }
        let Some((n, k, transposed)) = as_matvec(einsum, x, w.shape(), out) else { continue };
        let geo = Geo { n, k };
        let w = w.to_plain_array_view::<f32>()?;
        let w = w.as_slice().context("contiguous matrix")?;
        // As an `[n, k]` row-major matrix first.
        let rows: Vec<f32> = if transposed { (0..n * k).map(|i| w[(i % k) * n + i / k]).collect() } else { w.to_vec() };
        let name = node.name.clone();
        let out_shape: TVec<usize> = out.into();
        let mut patch = TypedModelPatch::new("effv2-matvec");
        let mut inputs = vec![patch.tap_model(model, *xi)?];
        // Long rows of an int8 graph (a vector on a u8 grid, i8-grid rows): integer dot products.
        let int8 = match super::grid_of(model, *xi) {
            Some(grid) if !geo.transposed() && int8_pointwise::enabled() => int8_pointwise::int8_rows(&rows, n, k).map(|r| (grid, r)),
            _ => None,
        };
        let y = if let Some((grid, (scales, codes))) = int8 {
            let (start, scale, _) = int8_pointwise::row_constants(&codes, &scales, &[], k, n, grid);
            inputs.extend(int8_pointwise::wire_constants(&mut patch, &name, &pack_int8(&codes, &geo), &start, &scale, None)?);
            patch.wire_node(format!("{name}.int8_matvec"), MatVec { geo, out_shape, int8: Some(grid) }, &inputs)?[0]
        } else {
            let packed = pack(&rows, &geo);
            inputs.push(patch.add_const(format!("{name}.packed"), Tensor::from_shape(&[packed.len()], &packed)?)?);
            patch.wire_node(format!("{name}.matvec"), MatVec { geo, out_shape, int8: None }, &inputs)?[0]
        };
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        done += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::tract::avx512::testing::*;

    #[test]
    fn the_kernel_equals_plain_loops() {
        if !supported() {
            eprintln!("skipped: no AVX-512 here");
            return;
        }
        let mut rnd = uniform(3);
        // SE reduce and expand shapes, the classifier, odd sizes on both sides of SHORT_K.
        for (n, k) in [(48, 1152), (1152, 48), (1000, 1280), (7, 3), (131, 129), (300, 128), (5, 17)] {
            let g = Geo { n, k };
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..k).map(|_| rnd()).collect();
            let want: Vec<f64> = (0..n).map(|r| (0..k).map(|c| w[r * k + c] as f64 * x[c] as f64).sum()).collect();
            let packed = pack(&w, &g);
            let runs = both_ways(2, || {
                let mut y = vec![f32::NAN; n];
                unsafe { run(&g, &packed, &x, &mut y) };
                y
            });
            for y in &runs {
                for (r, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{n}x{k} row {r}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn the_int8_kernel_equals_plain_loops_on_the_grid() {
        if !int8_pointwise::enabled() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rnd = uniform(13);
        let grid = crate::backends::tract::qdq::QuantTable::new(1.0, 0, &[0.0; 256]).on_grid(0.07, 131).grid().unwrap();
        for (n, k) in [(48, 1152), (1000, 1280), (131, 129), (5, 200), (70, 64)] {
            let g = Geo { n, k };
            let ws: Vec<f32> = (0..n).map(|r| 0.003 * (1 + r % 7) as f32).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (rnd() * 127.0).round() * ws[i / k]).collect();
            let x: Vec<f32> = (0..k).map(|_| grid.value(((rnd() + 1.0) * 127.9) as u8)).collect();
            let want: Vec<f64> = (0..n).map(|r| (0..k).map(|c| w[r * k + c] as f64 * x[c] as f64).sum()).collect();
            let (scales, q) = int8_pointwise::int8_rows(&w, n, k).expect("rows on grids");
            let (start, scale, _) = int8_pointwise::row_constants(&q, &scales, &[], k, n, grid);
            let packed = pack_int8(&q, &g);
            let runs = both_ways(2, || {
                let mut y = vec![f32::NAN; n];
                unsafe { run_int8(&g, grid, &packed, &start, &scale, &x, &mut y) };
                y
            });
            let top = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for y in &runs {
                for (r, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!((*a as f64 - b).abs() < 1e-5 * top, "{n}x{k} row {r}: {a} vs {b}");
                }
            }
        }
    }
}
