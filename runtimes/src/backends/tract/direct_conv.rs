//! A direct AVX-512 convolution for the dense k×k convs of the stem and the Fused-MBConv stages,
//! put into tract's graph in place of its `Conv` (and the SiLU after it, when there is one).
//!
//! tract lowers these convs to lazy im2col and a matrix product. With the few output channels
//! of EfficientNetV2's early stages (16–64) the product's m-tile is barely used and packing the
//! image costs more than the multiply: b0@224's stem ran at 13 GFLOP/s, `blocks.0.0` at 43, and an
//! explicit Pad before each (tract's own, 0.9 ms in all) came on top. Here each output row of
//! eight channels is computed in registers (8 channels × up to 48 pixels), reading each input
//! vector once for all eight channels; padding is masked loads, stride 2 an even-lane permute,
//! bias and SiLU applied before the store, rows spread over tract's worker pool when it has one.
//! Only where the CPU has AVX-512 and the conv fits (f32, group 1, square kernel ≤ 7, stride 1
//! or 2, no dilation, constant weights, output rows of 12 pixels or more unless an int8 graph's
//! conv goes integer, `int8_direct_conv`); everything else stays tract's.

use std::arch::x86_64::*;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::KernelFormat;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;

use super::avx512::{lanes, silu512, spread, switched_on};
use super::qdq::{absorb_table, lookup512, InputCodes, QuantTable, TableRef};
use super::int8_pointwise::Weights;
use super::{int8_direct_conv, int8_pointwise};
use super::{plain, single_add, single_reader};

/// Output channels per register block.
const OCB: usize = 8;
/// f32 lanes of a zmm register.
const LANES: usize = 16;
/// Largest kernel side handled (the mask tables are sized for it).
const MAX_K: usize = 7;
/// Narrowest output row taken.
const MIN_OW: usize = 12;

/// One conv on one image, NCHW.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Geo {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub oh: usize,
    pub ow: usize,
    pub k: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl Geo {
    fn blocks(&self) -> usize {
        self.cout.div_ceil(OCB)
    }
}

/// OIHW weights as the kernel reads them: per block of eight output channels, for every input
/// channel and tap, the eight channels' weights side by side (zeros past `cout`).
pub fn pack_weights(w: &[f32], g: &Geo) -> Vec<f32> {
    let kk = g.k * g.k;
    let mut out = vec![0.0; g.blocks() * g.cin * kk * OCB];
    for oc in 0..g.cout {
        let (blk, o) = (oc / OCB, oc % OCB);
        for ic in 0..g.cin {
            for t in 0..kk {
                out[((blk * g.cin + ic) * kk + t) * OCB + o] = w[(oc * g.cin + ic) * kk + t];
            }
        }
    }
    out
}

/// The same conv in plain loops: what the kernel is tested against.
#[cfg(test)]
pub fn reference(g: &Geo, x: &[f32], w: &[f32], bias: &[f32], silu: bool, residual: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0.0; g.cout * g.oh * g.ow];
    for oc in 0..g.cout {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let mut s = bias[oc] as f64;
                for ic in 0..g.cin {
                    for kh in 0..g.k {
                        for kw in 0..g.k {
                            let iy = (oy * g.stride + kh) as isize - g.pad_top as isize;
                            let ix = (ox * g.stride + kw) as isize - g.pad_left as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                s += (x[(ic * g.h + iy as usize) * g.w + ix as usize] * w[((oc * g.cin + ic) * g.k + kh) * g.k + kw]) as f64;
                            }
                        }
                    }
                }
                let v = s as f32;
                let at = (oc * g.oh + oy) * g.ow + ox;
                y[at] = if silu { v / (1.0 + (-v).exp()) } else { v } + residual.map_or(0.0, |r| r[at]);
            }
        }
    }
    y
}

/// Pointers of one eval: input image, packed weights, bias, output image, and a tensor shaped like
/// the output to add to it (a residual; null when there is none).
#[derive(Clone, Copy)]
struct Ptrs {
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    r: *const f32,
    table: Option<TableRef>,
}

// Each task writes its own rows of `y`; the rest is read-only.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

/// Output row `oy` of output-channel block `blk`, in chunks of three vectors, ending 2 + 2 rather
/// than 3 + 1 (a one-vector chunk loads eight weights for eight products).
#[target_feature(enable = "avx512f")]
unsafe fn row(g: &Geo, p: Ptrs, blk: usize, oy: usize, silu: bool) {
    let n_vec = g.ow.div_ceil(LANES);
    let mut v0 = 0;
    while v0 < n_vec {
        let nv = match n_vec - v0 {
            4 => 2,
            left => left.min(3),
        };
        unsafe {
            match (nv, g.stride) {
                (3, 1) => chunk::<3, 1>(g, p, blk, oy, v0, silu),
                (2, 1) => chunk::<2, 1>(g, p, blk, oy, v0, silu),
                (1, 1) => chunk::<1, 1>(g, p, blk, oy, v0, silu),
                (3, _) => chunk::<3, 2>(g, p, blk, oy, v0, silu),
                (2, _) => chunk::<2, 2>(g, p, blk, oy, v0, silu),
                _ => chunk::<1, 2>(g, p, blk, oy, v0, silu),
            }
        }
        v0 += nv;
    }
}

/// `WV` vectors of output pixels starting at vector `v0` of row `oy`, for the eight channels of
/// block `blk`. Stride `S` is 1 or 2.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn chunk<const WV: usize, const S: usize>(g: &Geo, p: Ptrs, blk: usize, oy: usize, v0: usize, silu: bool) {
    unsafe {
        let k = g.k;
        // Per tap column and vector: where its input lanes start in the row, and which lanes
        // lie inside it (padding reads as zero). Stride 2 reads 32 lanes and keeps the even ones.
        let mut start = [[0isize; 3]; MAX_K];
        let mut m_lo = [[0 as __mmask16; 3]; MAX_K];
        let mut m_hi = [[0 as __mmask16; 3]; MAX_K];
        for kw in 0..k {
            for v in 0..WV {
                let s0 = (S * (v0 + v) * LANES + kw) as isize - g.pad_left as isize;
                start[kw][v] = s0;
                let w = g.w as isize;
                m_lo[kw][v] = lanes(-s0, w - s0);
                m_hi[kw][v] = lanes(-s0 - 16, w - s0 - 16);
            }
        }
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let mut acc = [[_mm512_setzero_ps(); WV]; OCB];
        for (o, a) in acc.iter_mut().enumerate() {
            let b = if blk * OCB + o < g.cout { *p.b.add(blk * OCB + o) } else { 0.0 };
            *a = [_mm512_set1_ps(b); WV];
        }
        let wblk = p.w.add(blk * g.cin * k * k * OCB);
        for ic in 0..g.cin {
            for kh in 0..k {
                let iy = (oy * S + kh) as isize - g.pad_top as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let rowp = p.x.add((ic * g.h + iy as usize) * g.w);
                let wrow = wblk.add((ic * k + kh) * k * OCB);
                for kw in 0..k {
                    let mut xv = [_mm512_setzero_ps(); WV];
                    for (v, xv) in xv.iter_mut().enumerate() {
                        let at = rowp.wrapping_offset(start[kw][v]);
                        *xv = if S == 1 {
                            _mm512_maskz_loadu_ps(m_lo[kw][v], at)
                        } else {
                            let lo = _mm512_maskz_loadu_ps(m_lo[kw][v], at);
                            let hi = _mm512_maskz_loadu_ps(m_hi[kw][v], at.wrapping_add(16));
                            _mm512_permutex2var_ps(lo, even, hi)
                        };
                    }
                    let wt = wrow.add(kw * OCB);
                    for (o, a) in acc.iter_mut().enumerate() {
                        let wb = _mm512_set1_ps(*wt.add(o));
                        for v in 0..WV {
                            a[v] = _mm512_fmadd_ps(xv[v], wb, a[v]);
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
            for (v, &val) in a.iter().enumerate() {
                let x0 = (v0 + v) * LANES;
                let m = lanes(0, g.ow as isize - x0 as isize);
                let mut val = if silu { silu512(val) } else { val };
                if !p.r.is_null() {
                    val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(m, p.r.add(at + x0)));
                }
                if let Some(t) = p.table {
                    val = lookup512(val, t);
                }
                _mm512_mask_storeu_ps(p.y.add(at + x0), m, val);
            }
        }
    }
}

/// What [`run`] applies to conv + bias before its store, in this order.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub silu: bool,
    pub residual: Option<&'a [f32]>,
    pub table: Option<TableRef>,
}

/// The conv of one image: `x` `[cin, h, w]`, `w` packed by [`pack_weights`], `y` `[cout, oh, ow]`
/// = SiLU (if `silu`) of conv + bias, plus `residual` (shaped like `y`) if given, through an int8
/// graph's quantize-dequantize `table` if given.
/// Rows go to the rayon pool the caller runs in, if it is one of several threads.
///
/// # Safety
/// The CPU has AVX-512F ([`supported`](super::avx512::supported)).
pub unsafe fn run(g: &Geo, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], e: Epilogue) {
    let Epilogue { silu, residual, table } = e;
    let out = g.cout * g.oh * g.ow;
    assert!(x.len() >= g.cin * g.h * g.w && w.len() >= g.blocks() * g.cin * g.k * g.k * OCB && bias.len() >= g.cout && y.len() >= out);
    assert!(g.k <= MAX_K && (g.stride == 1 || g.stride == 2) && residual.is_none_or(|r| r.len() >= out));
    let p = Ptrs { x: x.as_ptr(), w: w.as_ptr(), b: bias.as_ptr(), y: y.as_mut_ptr(), r: residual.map_or(std::ptr::null(), |r| r.as_ptr()), table };
    // A task is one output row for every channel block: the input rows it reads stay in L1/L2
    // for all the blocks (a 1x1 projection otherwise streams its whole input once per block).
    let task = |oy: usize| {
        for blk in 0..g.blocks() {
            unsafe { row(g, p, blk, oy, silu) }
        }
    };
    spread(g.oh, task);
}

/// The op in tract's graph: inputs the image (`[n, cin, h, w]` or `[cin, h, w]`), the packed
/// weights and the bias (constants; with `int8`, the four constants of `int8_pointwise::
/// wire_constants`) and, with `residual`, a tensor shaped like the output to add to it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct DirectConv {
    /// The integer kernel (`int8_direct_conv`), taking its input to codes as this says, or the
    /// f32 one.
    int8: Option<InputCodes>,
    geo: Geo,
    /// Input `[n, c, h, w]` rather than `[c, h, w]`; likewise the output (tract drops a unit
    /// batch axis where it can, so the two may differ).
    in_has_n: bool,
    out_has_n: bool,
    silu: bool,
    residual: bool,
    /// The quantize-dequantize table that alone reads the output (int8 graphs).
    pub(super) table: Option<QuantTable>,
}

impl DirectConv {
    fn out_shape(&self, n: usize) -> TVec<usize> {
        let g = &self.geo;
        let mut shape: TVec<usize> = tvec![g.cout, g.oh, g.ow];
        if self.out_has_n {
            shape.insert(0, n);
        }
        shape
    }
}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        if self.int8.is_some() { "Effv2Int8DirectConv" } else { "Effv2DirectConv" }.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        let extra = match (self.silu, self.residual) {
            (true, _) => ", SiLU",
            (false, true) => ", + residual",
            _ => "",
        };
        let table = if self.table.is_some() { ", int8 table" } else { "" };
        let kind = if self.int8.is_some() { "u8×i8 " } else { "" };
        Ok(vec![format!("{}x{} s{} {kind}{}→{} ch, {}x{} → {}x{}{extra}{table}", g.k, g.k, g.stride, g.cin, g.cout, g.h, g.w, g.oh, g.ow)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for DirectConv {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let consts = if self.int8.is_some() { 4 } else { 2 };
        let wanted = 1 + consts + self.residual as usize;
        ensure!(inputs.len() == wanted, "Effv2DirectConv takes {wanted} inputs, got {}", inputs.len());
        let g = &self.geo;
        let shape = inputs[0].shape();
        let n = if self.in_has_n { shape[0] } else { 1 };
        let x = plain::<f32>(&inputs[0])?;
        let res = if self.residual { Some(plain::<f32>(&inputs[wanted - 1])?) } else { None };
        let (xs, ys) = (g.cin * g.h * g.w, g.cout * g.oh * g.ow);
        ensure!(x.len() == n * xs && res.is_none_or(|r| r.len() == n * ys), "Effv2DirectConv: input of {} values for {:?}", x.len(), shape);
        // The weights: f32 and bias, or the integer kernel's codes and constants.
        let weights = Weights::of(self.int8.as_ref(), &inputs[1..1 + consts])?;
        if let Weights::Int8(_, w) = &weights {
            int8_direct_conv::check(g, w)?;
        }
        // The kernel writes every element of the output.
        let y = super::filled_f32(&self.out_shape(n), |y| {
            for i in 0..n {
                // `rewrite` only builds this op where `supported()` (and, for int8, VNNI) holds.
                let table = self.table.as_ref().map(QuantTable::epilogue);
                let e = Epilogue { silu: self.silu, residual: res.map(|r| &r[i * ys..][..ys]), table };
                let (x, y) = (&x[i * xs..][..xs], &mut y[i * ys..][..ys]);
                match &weights {
                    Weights::F32(w, b) => unsafe { run(g, x, w, b, y, e) },
                    Weights::Int8(input, w) => unsafe { int8_direct_conv::run(g, input, x, w, y, e) },
                }
            }
        })?;
        Ok(tvec!(y))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for DirectConv {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = if self.in_has_n { inputs[0].shape[0].to_usize()? } else { 1 };
        Ok(tvec!(f32::fact(self.out_shape(n))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        let n = if self.in_has_n { inputs[0].shape[0].to_usize()? } else { 1 };
        let dt = if self.int8.is_some() { i8::datum_type() } else { f32::datum_type() };
        Ok(tvec!((Cost::FMA(dt), (n * g.cout * g.oh * g.ow * g.cin * g.k * g.k).into())))
    }
}

/// The direct-conv form of `conv` reading `x`, or `None` where it does not apply.
fn geometry(conv: &Conv, x: &TypedFact, w: &TypedFact) -> Option<(Geo, bool)> {
    let ps = &conv.pool_spec;
    let has_n = match ps.data_format {
        DataFormat::NCHW => true,
        DataFormat::CHW => false,
        _ => return None,
    };
    if conv.q_params.is_some() || conv.group != 1 || x.datum_type != f32::datum_type() || w.konst.is_none() || conv.kernel_fmt != KernelFormat::OIHW {
        return None;
    }
    let [kh, kw] = ps.kernel_shape.as_slice() else { return None };
    let strides = ps.strides();
    if kh != kw || *kh < 2 || *kh > MAX_K || strides[0] != strides[1] || !(1..=2).contains(&strides[0]) || ps.dilations().iter().any(|&d| d != 1) {
        return None;
    }
    let shape = x.shape.as_concrete()?;
    let hw = &shape[shape.len() - 2..];
    let pads = ps.computed_padding(hw);
    let geo = Geo {
        cin: ps.input_channels,
        h: hw[0],
        w: hw[1],
        cout: ps.output_channels,
        oh: pads[0].convoluted,
        ow: pads[1].convoluted,
        k: *kh,
        stride: strides[0],
        pad_top: pads[0].pad_before,
        pad_left: pads[1].pad_before,
    };
    Some((geo, has_n))
}

/// Whether the rewrite is on: AVX-512 here and not turned off with `EFFV2_TRACT_DIRECT_CONV=0`.
pub(super) fn enabled() -> bool {
    switched_on("EFFV2_TRACT_DIRECT_CONV")
}

/// Replace every conv of `model` the kernel takes (see the module doc) with [`DirectConv`],
/// absorbing a SiLU that is its only reader; then the 1x1 projections reading those (a Fused-MBConv
/// block's `project` conv, which tract sees as an `EinSum` plus a bias `Add`), absorbing the
/// residual `Add` after them. Returns how many were replaced; none on a CPU without AVX-512, or
/// when `EFFV2_TRACT_DIRECT_CONV=0` (for A/B measurements).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    if !enabled() {
        return Ok(0);
    }
    let convs = rewrite_convs(model)?;
    Ok(convs + rewrite_projections(model)?)
}

fn rewrite_convs(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else { continue };
        let [xi, wi, bi] = node.inputs.as_slice() else { continue };
        let (xf, wf, bf) = (model.outlet_fact(*xi)?, model.outlet_fact(*wi)?, model.outlet_fact(*bi)?);
        let Some((geo, has_n)) = geometry(conv, xf, wf) else { continue };
        let Some(bias) = bf.konst.clone().filter(|b| b.len() == geo.cout && b.datum_type() == f32::datum_type()) else { continue };
        let weights = wf.konst.clone().expect("checked by geometry");
        let int8 = int8_form(model, *xi, &weights, &geo)?;
        // Rows are vectorised along the output width: below 12 pixels most lanes idle, and tract's
        // im2col product wins in f32 (b0 with every stage fused: its 7x7 stage ran 3.6% slower
        // here). The integer kernel, four times as dense, still wins there.
        if geo.ow < MIN_OW && int8.is_none() {
            continue;
        }
        // A SiLU that is the conv's only reader is computed before the store.
        let silu = single_reader(model, id, "Silu")?.filter(|s| s.inputs.len() == 1).map(|s| s.id);
        let last = silu.unwrap_or(id);
        let (last, table) = absorb_table(model, last)?;
        let op = DirectConv { int8: None, geo, in_has_n: has_n, out_has_n: has_n, silu: silu.is_some(), residual: false, table };
        swap_in(model, id, last, op, *xi, int8, &weights, &bias, None)?;
        done += 1;
    }
    Ok(done)
}

/// What the integer kernel needs of an int8 graph's conv: the outlet it reads and how it gets the
/// codes (`input_codes`), the weight rows' scales and codes.
type Int8Form = ((OutletId, InputCodes), (Vec<f32>, Vec<i8>));

/// The [`Int8Form`] of a conv of an input on a u8 grid with i8-grid weights, if it is one.
fn int8_form(model: &TypedModel, x: OutletId, weights: &Tensor, g: &Geo) -> TractResult<Option<Int8Form>> {
    if !int8_pointwise::enabled() {
        return Ok(None);
    }
    let Some(input) = super::input_codes(model, x)? else { return Ok(None) };
    let w = weights.cast_to::<f32>()?;
    let w = w.to_plain_array_view::<f32>()?;
    Ok(int8_pointwise::int8_rows(w.as_slice().context("contiguous weights")?, g.cout, g.cin * g.k * g.k).map(|rows| (input, rows)))
}

/// Put `op` in place of the nodes from `first` (whose name it takes) to `last`: it reads `x`,
/// the OIHW `weights` packed for the kernel (the integer one with `int8`), the per-channel `bias`
/// and maybe a `residual`.
#[allow(clippy::too_many_arguments)]
fn swap_in(model: &mut TypedModel, first: usize, last: usize, op: DirectConv, x: OutletId, int8: Option<Int8Form>, weights: &Tensor, bias: &Tensor, residual: Option<OutletId>) -> TractResult<()> {
    let name = model.node(first).name.clone();
    let g = op.geo;
    let mut patch = TypedModelPatch::new("effv2-direct-conv");
    let y = if let Some(((read, input), (scales, codes))) = int8 {
        let mut inputs = vec![patch.tap_model(model, read)?];
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.to_plain_array_view::<f32>()?;
        let (start, scale, bias) = int8_direct_conv::epilogue_constants(&codes, &scales, bias.as_slice().context("contiguous bias")?, &g, input.grid);
        inputs.extend(int8_pointwise::wire_constants(&mut patch, &name, &int8_direct_conv::pack_codes(&codes, &g), &start, &scale, Some(&bias))?);
        if let Some(r) = residual {
            inputs.push(patch.tap_model(model, r)?);
        }
        patch.wire_node(format!("{name}.int8_direct"), DirectConv { int8: Some(input), ..op }, &inputs)?[0]
    } else {
        let mut inputs = vec![patch.tap_model(model, x)?];
        let w = weights.cast_to::<f32>()?;
        let packed = pack_weights(w.to_plain_array_view::<f32>()?.as_slice().context("contiguous weights")?, &g);
        inputs.push(patch.add_const(format!("{name}.packed"), Tensor::from_shape(&[packed.len()], &packed)?)?);
        inputs.push(patch.add_const(format!("{name}.bias_f32"), bias.clone().into_shape(&[g.cout])?)?);
        if let Some(r) = residual {
            inputs.push(patch.tap_model(model, r)?);
        }
        patch.wire_node(format!("{name}.direct"), op, &inputs)?[0]
    };
    patch.shunt_outside(model, OutletId::new(last, 0), y)?;
    patch.apply(model)
}

fn rewrite_projections(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(einsum) = node.op_as::<EinSum>() else { continue };
        let expr = einsum.axes.to_string();
        let in_has_n = match expr.as_str() {
            "NIHW,OI->OHW" | "NIHW,OI->NOHW" => true,
            "IHW,OI->OHW" => false,
            _ => continue,
        };
        let [xi, wi] = node.inputs.as_slice() else { continue };
        // Only inside the stretch our convs run NCHW: a 1x1 conv elsewhere is tract's to lay out.
        if einsum.q_params.is_some() || model.node(xi.node).op_as::<DirectConv>().is_none() {
            continue;
        }
        let (xf, wf) = (model.outlet_fact(*xi)?, model.outlet_fact(*wi)?);
        let (Some(x_shape), Some(w)) = (xf.shape.as_concrete(), wf.konst.clone()) else { continue };
        let [cout, cin] = *w.shape() else { continue };
        let hw = &x_shape[x_shape.len() - 2..];
        // The bias add, then maybe the block's residual add.
        let Some((bias_add, b)) = single_add(model, id)? else { continue };
        // A per-channel bias: `cout` values along the output's channel axis (OHW: third from last).
        let per_channel = |t: &Tensor| t.len() == cout && t.datum_type() == f32::datum_type() && t.rank() >= 3 && t.shape()[t.rank() - 3] == cout;
        let Some(bias) = model.outlet_fact(b)?.konst.clone().filter(|t| per_channel(t)) else { continue };
        let out_fact = model.outlet_fact(OutletId::new(bias_add, 0))?.clone();
        let residual = single_add(model, bias_add)?.filter(|(_, r)| model.outlet_fact(*r).is_ok_and(|f| f.shape == out_fact.shape && f.datum_type == f32::datum_type()));
        let geo = Geo { cin, h: hw[0], w: hw[1], cout, oh: hw[0], ow: hw[1], k: 1, stride: 1, pad_top: 0, pad_left: 0 };
        let last = residual.map_or(bias_add, |(add, _)| add);
        let (last, table) = absorb_table(model, last)?;
        let op = DirectConv { int8: None, geo, in_has_n, out_has_n: out_fact.rank() == 4, silu: false, residual: residual.is_some(), table };
        let int8 = int8_form(model, *xi, &w, &geo)?;
        swap_in(model, id, last, op, *xi, int8, &w, &bias, residual.map(|(_, r)| r))?;
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
        let mut rnd = uniform(7);
        // (cin, h, w, cout, k, stride, pad_top, pad_left, pad_bottom, pad_right)
        let cases = [
            (3, 37, 37, 32, 3, 2, 0, 0, 1, 1), // TF-same stem on an odd size
            (3, 224, 224, 32, 3, 2, 1, 1, 1, 1),
            (16, 28, 28, 24, 3, 1, 1, 1, 1, 1), // a channel tail
            (5, 13, 50, 13, 5, 1, 2, 2, 2, 2),  // 5x5, widths not a multiple of 16
            (8, 20, 71, 16, 3, 2, 1, 1, 1, 1),  // stride 2, odd width
            (4, 9, 9, 8, 7, 1, 3, 3, 3, 3),
            (64, 28, 28, 48, 1, 1, 0, 0, 0, 0), // a 1x1 projection
            (13, 7, 19, 5, 1, 1, 0, 0, 0, 0),
        ];
        for (cin, h, w, cout, k, stride, pt, pl, pb, pr) in cases {
            let oh = (h + pt + pb - k) / stride + 1;
            let ow = (w + pl + pr - k) / stride + 1;
            let g = Geo { cin, h, w, cout, oh, ow, k, stride, pad_top: pt, pad_left: pl };
            let x: Vec<f32> = (0..cin * h * w).map(|_| rnd()).collect();
            let wt: Vec<f32> = (0..cout * cin * k * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..cout).map(|_| rnd()).collect();
            for silu in [false, true] {
                let want = reference(&g, &x, &wt, &b, silu, None);
                let mut got = vec![f32::NAN; want.len()];
                unsafe { run(&g, &x, &pack_weights(&wt, &g), &b, &mut got, Epilogue { silu, ..Default::default() }) };
                let e = rel(&got, &want);
                assert!(e < 1e-5, "{g:?} silu {silu}: {e}");
            }
            let r: Vec<f32> = (0..cout * oh * ow).map(|_| rnd()).collect();
            let want = reference(&g, &x, &wt, &b, false, Some(&r));
            let mut got = vec![f32::NAN; want.len()];
            let e = Epilogue { residual: Some(&r), ..Default::default() };
            unsafe { run(&g, &x, &pack_weights(&wt, &g), &b, &mut got, e) };
            assert!(rel(&got, &want) < 1e-5, "{g:?} + residual");
            // An int8 table in the epilogue: the table applied to the same conv's output, to the bit.
            let table = QuantTable::new(15.0, 131, &std::array::from_fn(|i| (i as f32 - 131.0) / 15.0 + 0.003 * (i % 11) as f32));
            let mut with = vec![f32::NAN; want.len()];
            unsafe { run(&g, &x, &pack_weights(&wt, &g), &b, &mut with, Epilogue { table: Some(table.epilogue()), ..e }) };
            let mut want_q = vec![0.0; want.len()];
            table.apply(&got, &mut want_q);
            assert!(with.iter().zip(&want_q).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?} with a table");
        }
    }
}
