//! An MBConv block's depthwise conv, its SiLU and the squeeze-excite pooling sum as one
//! channel-last pass of our own (`Effv2Depthwise`), in place of tract's `Conv`, `Silu` and
//! `Reduce<Sum>`.
//!
//! tract runs the three as separate passes over the `[h, w, c]` image (b0@224, 1 thread: 0.8 ms
//! depthwise with our registry kernel, 0.35 ms SiLU, 0.23 ms pooling sums), and on two threads
//! its depthwise got slower, not faster (0.8 → 1.0 ms). Here a task is one output row of a range
//! of 32-channel chunks: the chunk's k×k weights sit in registers for the whole row, taps outside
//! the image read a zero vector instead of branching, SiLU is applied before the one store and
//! the stored values are summed per row; the row sums are added up in row order afterwards, so
//! the pooled result does not depend on the thread count.
//! Only on AVX-512 CPUs, for f32, 3x3 and 5x5 kernels, stride 1 or 2. A depthwise conv that no
//! SiLU reads (an int8 QDQ graph's, whose SiLU is a table after it) runs the same pass without it.

use std::arch::x86_64::*;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::nn::{DataFormat, Reduce, Reducer};

use super::avx512::{first_lanes, pool_threads, silu512, spread, switched_on};
use super::qdq::{absorb_table, lookup512, QuantTable, TableRef};
use super::single_reader;

const LANES: usize = 16;
/// Channels per chunk: two vectors, so a 3x3 chunk's weights take 18 of the 32 registers.
const CHUNK: usize = 2 * LANES;
/// Zeros read by taps outside the image (a chunk's worth).
static ZEROS: [f32; CHUNK] = [0.0; CHUNK];

/// One depthwise conv on one `[h, w, c]` image; output `[oh, ow, c]`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Geo {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    /// SiLU on the output (the fp32 MBConv block); off where a quantized SiLU follows as a
    /// table (int8 QDQ graphs, `qdq`) or another activation does.
    pub silu: bool,
}

impl Geo {
    fn chunks(&self) -> usize {
        self.c.div_ceil(CHUNK)
    }
}

/// `[c, 1, k, k]` weights as the kernel reads them: tap-major, the channels of each tap side by
/// side, padded with zeros to whole chunks.
pub fn pack_weights(w: &[f32], g: &Geo) -> Vec<f32> {
    let (kk, cp) = (g.k * g.k, g.chunks() * CHUNK);
    let mut out = vec![0.0; kk * cp];
    for c in 0..g.c {
        for t in 0..kk {
            out[t * cp + c] = w[c * kk + t];
        }
    }
    out
}

/// The bias padded to whole chunks.
fn pad_bias(b: &[f32], g: &Geo) -> Vec<f32> {
    let mut out = vec![0.0; g.chunks() * CHUNK];
    out[..g.c].copy_from_slice(&b[..g.c]);
    out
}

/// The same in plain loops: SiLU(conv + bias) (or conv + bias) and its sum over all pixels.
#[cfg(test)]
pub fn reference(g: &Geo, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; g.oh * g.ow * g.c];
    let mut sums = vec![0.0f64; g.c];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for c in 0..g.c {
                let mut s = b[c] as f64;
                for kh in 0..g.k {
                    for kw in 0..g.k {
                        let (iy, ix) = ((oy * g.stride + kh) as isize - g.pad_top as isize, (ox * g.stride + kw) as isize - g.pad_left as isize);
                        if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                            s += x[(iy as usize * g.w + ix as usize) * g.c + c] as f64 * w[c * g.k * g.k + kh * g.k + kw] as f64;
                        }
                    }
                }
                let v = if g.silu { (s / (1.0 + (-s).exp())) as f32 } else { s as f32 };
                y[(oy * g.ow + ox) * g.c + c] = v;
                sums[c] += v as f64;
            }
        }
    }
    (y, sums.into_iter().map(|s| s as f32).collect())
}

/// Pointers of one eval: input, packed weights, padded bias, output, per-row sums `[oh, chunks·32]`.
#[derive(Clone, Copy)]
struct Ptrs {
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    rows: *mut f32,
    table: Option<TableRef>,
}

// Each task writes its own row × chunk range of `y` and `rows`; the rest is read-only.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

/// Output row `oy`, chunks `chunks`, for a `K`×`K` kernel. Plain index loops throughout: the
/// closures of `array::from_fn` / `map` were not inlined here and left the weights in memory.
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn row<const K: usize, const SILU: bool>(g: &Geo, p: Ptrs, oy: usize, chunks: std::ops::Range<usize>) {
    unsafe {
        let cp = g.chunks() * CHUNK;
        // Input rows of the taps, null above or below the image.
        let mut rows = [std::ptr::null::<f32>(); K];
        for kh in 0..K {
            let iy = (oy * g.stride + kh) as isize - g.pad_top as isize;
            if iy >= 0 && (iy as usize) < g.h {
                rows[kh] = p.x.add(iy as usize * g.w * g.c);
            }
        }
        for ch in chunks {
            let c0 = ch * CHUNK;
            let mut masks = [0 as __mmask16; 2];
            let mut bias = [_mm512_setzero_ps(); 2];
            let mut wt = [[[_mm512_setzero_ps(); 2]; K]; K];
            for v in 0..2 {
                masks[v] = first_lanes(g.c.saturating_sub(c0 + v * LANES));
                bias[v] = _mm512_loadu_ps(p.b.add(c0 + v * LANES));
                for kh in 0..K {
                    for kw in 0..K {
                        wt[kh][kw][v] = _mm512_loadu_ps(p.w.add((kh * K + kw) * cp + c0 + v * LANES));
                    }
                }
            }
            let mut sum = [_mm512_setzero_ps(); 2];
            for ox in 0..g.ow {
                let mut acc = bias;
                for kw in 0..K {
                    let ix = (ox * g.stride + kw) as isize - g.pad_left as isize;
                    let inside = ix >= 0 && (ix as usize) < g.w;
                    for kh in 0..K {
                        // Outside the image the tap reads zeros (masked loads keep the channel
                        // tail inside the image's buffer).
                        let at = if inside && !rows[kh].is_null() { rows[kh].add(ix as usize * g.c + c0) } else { ZEROS.as_ptr() };
                        for v in 0..2 {
                            let xv = _mm512_maskz_loadu_ps(masks[v], at.add(v * LANES));
                            acc[v] = _mm512_fmadd_ps(xv, wt[kh][kw][v], acc[v]);
                        }
                    }
                }
                let y = p.y.add((oy * g.ow + ox) * g.c + c0);
                for v in 0..2 {
                    let val = if SILU { silu512(acc[v]) } else { acc[v] };
                    let val = if let Some(t) = p.table { lookup512(val, t) } else { val };
                    _mm512_mask_storeu_ps(y.add(v * LANES), masks[v], val);
                    sum[v] = _mm512_add_ps(sum[v], _mm512_maskz_mov_ps(masks[v], val));
                }
            }
            for v in 0..2 {
                _mm512_storeu_ps(p.rows.add(oy * cp + c0 + v * LANES), sum[v]);
            }
        }
    }
}

/// The pass over one image: `x` `[h, w, c]`, `w` packed by [`pack_weights`], `bias` padded to
/// whole chunks; writes `y` `[oh, ow, c]` = SiLU(conv + bias) (conv + bias if `g.silu` is off),
/// through `table` if given, and returns the per-channel sum of `y` over all pixels. Rows × chunk
/// ranges go to the rayon pool the caller runs in, if it is one of several threads.
///
/// # Safety
/// The CPU has AVX-512F ([`supported`](super::avx512::supported)).
pub unsafe fn run(g: &Geo, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], table: Option<TableRef>) -> Vec<f32> {
    let cp = g.chunks() * CHUNK;
    assert!(x.len() >= g.h * g.w * g.c && w.len() >= g.k * g.k * cp && bias.len() >= cp && y.len() >= g.oh * g.ow * g.c);
    assert!(g.k == 3 || g.k == 5, "3x3 and 5x5 only");
    let mut rows = vec![0f32; g.oh * cp];
    let p = Ptrs { x: x.as_ptr(), w: w.as_ptr(), b: bias.as_ptr(), y: y.as_mut_ptr(), rows: rows.as_mut_ptr(), table };
    let threads = pool_threads();
    // Rows, each cut into chunk ranges when there are too few rows for the threads (b0's last
    // stage has seven).
    let per_row = (4 * threads).div_ceil(g.oh).min(g.chunks());
    let task = |t: usize| {
        let (oy, s) = (t / per_row, t % per_row);
        let chunks = s * g.chunks() / per_row..(s + 1) * g.chunks() / per_row;
        unsafe {
            match (g.k, g.silu) {
                (3, true) => row::<3, true>(g, p, oy, chunks),
                (3, false) => row::<3, false>(g, p, oy, chunks),
                (_, true) => row::<5, true>(g, p, oy, chunks),
                (_, false) => row::<5, false>(g, p, oy, chunks),
            }
        }
    };
    spread(g.oh * per_row, task);
    let mut sums = vec![0f32; cp];
    for r in rows.chunks_exact(cp) {
        for (s, v) in sums.iter_mut().zip(r) {
            *s += v;
        }
    }
    sums.truncate(g.c);
    sums
}

/// The op in tract's graph: inputs the image `[h, w, c]`, the packed weights and padded bias
/// (constants); outputs SiLU(conv + bias) `[oh, ow, c]` and, with `pool`, its sum over the
/// pixels `[1, 1, c]`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Depthwise {
    geo: Geo,
    /// Images in the batch (`[n, h, w, c]`), or `None` for an image without a batch axis.
    images: Option<usize>,
    pool: bool,
    /// The quantize-dequantize table that reads the output (int8 graphs, no SiLU); the pooling
    /// sums are then of its values.
    pub(super) table: Option<QuantTable>,
}

impl Depthwise {
    fn n(&self) -> usize {
        self.images.unwrap_or(1)
    }

    /// `[(n,) rest…]`.
    fn shape(&self, rest: [usize; 3]) -> TVec<usize> {
        let mut shape: TVec<usize> = rest.into_iter().collect();
        if let Some(n) = self.images {
            shape.insert(0, n);
        }
        shape
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "Effv2Depthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        let pool = if self.pool { " + pixel sums" } else { "" };
        let silu = if g.silu { ", SiLU" } else if self.table.is_some() { ", int8 table" } else { "" };
        Ok(vec![format!("{}x{} s{} depthwise {} ch, {}x{} → {}x{}{silu}{pool}", g.k, g.k, g.stride, g.c, g.h, g.w, g.oh, g.ow)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for Depthwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [x, w, b] = &*inputs else { bail!("Effv2Depthwise takes 3 inputs") };
        let g = &self.geo;
        let (x, w, b) = (x.to_plain_array_view::<f32>()?, w.to_plain_array_view::<f32>()?, b.to_plain_array_view::<f32>()?);
        let (x, w, b) = (x.as_slice().context("contiguous input")?, w.as_slice().context("packed weights")?, b.as_slice().context("bias")?);
        let (cp, n, xs, ys) = (g.chunks() * CHUNK, self.n(), g.h * g.w * g.c, g.oh * g.ow * g.c);
        ensure!(x.len() == n * xs && w.len() == g.k * g.k * cp && b.len() == cp, "Effv2Depthwise: input of {} values for {n} x {g:?}", x.len());
        let mut sums = Vec::with_capacity(n * g.c);
        // The kernel writes every element of the output.
        let y = super::filled_f32(&self.shape([g.oh, g.ow, g.c]), |y| {
            for i in 0..n {
                let table = self.table.as_ref().map(QuantTable::epilogue);
                sums.extend(unsafe { run(g, &x[i * xs..][..xs], w, b, &mut y[i * ys..][..ys], table) });
            }
        })?;
        let mut out = tvec!(y);
        if self.pool {
            out.push(Tensor::from_shape(&self.shape([1, 1, g.c]), &sums)?.into_tvalue());
        }
        Ok(out)
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Depthwise {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let g = &self.geo;
        let mut facts = tvec!(f32::fact(&*self.shape([g.oh, g.ow, g.c])));
        if self.pool {
            facts.push(f32::fact(&*self.shape([1, 1, g.c])));
        }
        Ok(facts)
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.n() * g.oh * g.ow * g.c * g.k * g.k).into())))
    }
}

/// The geometry of a channel-last f32 depthwise `conv` reading `x` and its batch size (`None`:
/// no batch axis), if the kernel takes it.
fn geometry(conv: &Conv, x: &TypedFact, w: &TypedFact) -> Option<(Geo, Option<usize>)> {
    let ps = &conv.pool_spec;
    let c = ps.input_channels;
    if !matches!(ps.data_format, DataFormat::HWC | DataFormat::NHWC) || conv.q_params.is_some() || conv.group != c || ps.output_channels != c || conv.kernel_fmt != KernelFormat::OIHW {
        return None;
    }
    if x.datum_type != f32::datum_type() || w.konst.as_ref().is_none_or(|k| k.datum_type() != f32::datum_type()) {
        return None;
    }
    let [kh, kw] = ps.kernel_shape.as_slice() else { return None };
    let strides = ps.strides();
    if kh != kw || !(*kh == 3 || *kh == 5) || strides[0] != strides[1] || !(1..=2).contains(&strides[0]) || ps.dilations().iter().any(|&d| d != 1) {
        return None;
    }
    let (images, h, w) = match *x.shape.as_concrete()? {
        [h, w, _] => (None, h, w),
        [n, h, w, _] => (Some(n), h, w),
        _ => return None,
    };
    let pads = ps.computed_padding(&[h, w]);
    let geo = Geo { c, h, w, oh: pads[0].convoluted, ow: pads[1].convoluted, k: *kh, stride: strides[0], pad_top: pads[0].pad_before, pad_left: pads[1].pad_before, silu: true };
    Some((geo, images))
}

/// Whether the rewrite is on: AVX-512 here and not turned off with `EFFV2_TRACT_DEPTHWISE=0`
/// (for A/B measurements).
pub(super) fn enabled() -> bool {
    switched_on("EFFV2_TRACT_DEPTHWISE")
}

/// Replace every depthwise conv the kernel takes whose only reader is a SiLU with
/// [`Depthwise`], absorbing the SiLU and a `Reduce<Sum>` over the pixels of its output (the SE
/// pooling) where there is one. Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    if !enabled() {
        return Ok(0);
    }
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let [xi, wi, bi] = node.inputs.as_slice() else { continue };
        let (xf, wf, bf) = (model.outlet_fact(*xi)?, model.outlet_fact(*wi)?, model.outlet_fact(*bi)?);
        let Some((mut geo, images)) = geometry(conv, xf, wf) else { continue };
        // The pixel axes of the image, after the batch axis if there is one.
        let pixel_axes = if images.is_some() { [1, 2] } else { [0, 1] };
        let Some(bias) = bf.konst.clone().filter(|b| b.len() == geo.c && b.datum_type() == f32::datum_type()) else { continue };
        // The SiLU when one follows; the conv alone otherwise (an int8 graph's quantized SiLU
        // is a table after it). The SE pooling sum is taken with a SiLU only.
        let silu = single_reader(model, id, "Silu")?.filter(|s| s.inputs.len() == 1).map(|s| s.id);
        geo.silu = silu.is_some();
        // Without a SiLU, the table of an int8 graph that alone reads the conv goes in (its
        // quantized SiLU).
        let (end, table) = match silu {
            Some(s) => (s, None),
            None => absorb_table(model, id)?,
        };
        let out = OutletId::new(end, 0);
        // The SE pooling sum of the activation (SiLU or table), taken in the same pass.
        let activated = geo.silu || table.is_some();
        let pool = model.outlet_successors(out).iter().map(|s| s.node).filter(|_| activated).find(|&r| {
            model.node(r).op_as::<Reduce>().is_some_and(|red| red.reducer == Reducer::Sum && red.axes.as_slice() == pixel_axes)
        });
        let name = node.name.clone();
        let weights = wf.konst.clone().expect("checked by geometry");
        let packed = pack_weights(weights.to_plain_array_view::<f32>()?.as_slice().context("contiguous weights")?, &geo);
        let bias = pad_bias(bias.cast_to::<f32>()?.to_plain_array_view::<f32>()?.as_slice().context("contiguous bias")?, &geo);
        let mut patch = TypedModelPatch::new("effv2-depthwise");
        let inputs = [
            patch.tap_model(model, *xi)?,
            patch.add_const(format!("{name}.packed"), Tensor::from_shape(&[packed.len()], &packed)?)?,
            patch.add_const(format!("{name}.bias_padded"), Tensor::from_shape(&[bias.len()], &bias)?)?,
        ];
        let outs = patch.wire_node(format!("{name}.fused"), Depthwise { geo, images, pool: pool.is_some(), table }, &inputs)?;
        patch.shunt_outside(model, out, outs[0])?;
        if let Some(r) = pool {
            patch.shunt_outside(model, OutletId::new(r, 0), outs[1])?;
        }
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
    fn the_kernel_equals_plain_loops_on_odd_shapes() {
        if !supported() {
            eprintln!("skipped: no AVX-512 here");
            return;
        }
        let mut rnd = uniform(5);
        // (c, h, w, k, stride, pad_top, pad_left, pad_bottom, pad_right): b0's shapes, TF-same
        // stride 2 (no pad before), channel tails of 8 and 24, a 5x5, a single row.
        let cases = [
            (672, 14, 14, 3, 1, 1, 1, 1, 1),
            (672, 14, 14, 3, 2, 0, 0, 1, 1),
            (1152, 7, 7, 3, 1, 1, 1, 1, 1),
            (40, 9, 11, 3, 2, 1, 1, 1, 1),
            (24, 13, 6, 5, 1, 2, 2, 2, 2),
            (56, 1, 7, 3, 1, 1, 1, 1, 1),
            (8, 5, 5, 5, 2, 1, 1, 2, 2),
        ];
        for (i, (c, h, w, k, stride, pt, pl, pb, pr)) in cases.into_iter().enumerate() {
            let (oh, ow) = ((h + pt + pb - k) / stride + 1, (w + pl + pr - k) / stride + 1);
            // With SiLU (fp32 blocks) and without (int8 graphs), alternately.
            let g = Geo { c, h, w, oh, ow, k, stride, pad_top: pt, pad_left: pl, silu: i % 2 == 0 };
            let x: Vec<f32> = (0..h * w * c).map(|_| 3.0 * rnd()).collect();
            let wt: Vec<f32> = (0..c * k * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..c).map(|_| rnd()).collect();
            let (want, want_sums) = reference(&g, &x, &wt, &b);
            let (wp, bp) = (pack_weights(&wt, &g), pad_bias(&b, &g));
            let runs = both_ways(3, || {
                let mut got = vec![f32::NAN; want.len()];
                let sums = unsafe { run(&g, &x, &wp, &bp, &mut got, None) };
                (got, sums)
            });
            for (got, sums) in &runs {
                assert!(rel(got, &want) < 1e-5, "{g:?}: {}", rel(got, &want));
                assert!(rel(sums, &want_sums) < 1e-5, "{g:?} sums: {}", rel(sums, &want_sums));
            }
            // An int8 table in the epilogue: the table applied to the same pass's output, to the bit.
            let table = QuantTable::new(9.0, 120, &std::array::from_fn(|i| (i as f32 - 120.0) / 9.0 + 0.01 * (i % 5) as f32));
            let mut got = vec![f32::NAN; want.len()];
            let sums = unsafe { run(&g, &x, &wp, &bp, &mut got, Some(table.epilogue())) };
            let mut want_q = vec![0.0; want.len()];
            table.apply(&runs[0].0, &mut want_q);
            assert!(got.iter().zip(&want_q).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?} with a table");
            // The pooling sums are of the table's values.
            let want_sums: Vec<f32> = (0..c).map(|ch| want_q.iter().skip(ch).step_by(c).map(|&v| v as f64).sum::<f64>() as f32).collect();
            assert!(rel(&sums, &want_sums) < 1e-5, "{g:?} sums with a table: {}", rel(&sums, &want_sums));
        }
    }
}
