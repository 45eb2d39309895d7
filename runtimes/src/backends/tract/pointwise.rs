//! The 1x1 convs of the MBConv stages (expand, project, and the head) as a register-tiled
//! product of our own, channel-last, put into tract's graph in place of its `EinSum` and the bias
//! `Add`, SiLU and residual `Add` after it (and, in an int8 QDQ graph, the quantize-dequantize
//! table after those: `qdq`).
//!
//! tract runs these products at 60–85 GFLOP/s on one AVX-512 core: its 16x12 and 32x5 tiles keep
//! 10–12 accumulators and load as often as they multiply, and its decluttered graph keeps every
//! block boundary channel-first, so each project conv writes `[c, h, w]` and each expand reads it
//! back through a packing pass. Here block boundaries are moved channel-last first (tract's own
//! axis-change propagation, started at each project conv's output; the einsums on either side
//! absorb it), so every 1x1 conv writes `[h, w, c]`: a tile of 12 pixels × 32 output channels
//! sits in 24 zmm registers, each step loads two weight vectors and broadcasts 12 inputs, and the
//! bias, SiLU and residual are applied before the one store. The input dimension is cut into
//! blocks of [`KC`] so a block of weights stays in L1 while every pixel tile passes over it.
//! Only on AVX-512 CPUs, for f32 and constant weights; everything else stays tract's.

use std::arch::x86_64::*;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::change_axes::{AxisChange, AxisOp};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::optim::change_axes::change_axes;

use super::avx512::{first_lanes, pool_threads, silu512, spread, switched_on};
use super::int8_pointwise::{self, Weights};
use super::qdq::{absorb_table, lookup512, InputCodes, QuantTable, TableRef};
use super::{plain, single_add, single_reader};

/// Output channels per panel: two zmm registers.
pub(super) const NR: usize = 32;
/// Pixels per register tile (12 × 2 accumulators + 2 weight vectors of the 32 registers).
pub(super) const MR: usize = 12;
/// Input channels per block: a 256 × 32 block of weights is 32 KB, inside a 48 KB L1.
const KC: usize = 256;
pub(super) const LANES: usize = 16;

/// One 1x1 conv on one image of `pixels` pixels. The input is `[cin, pixels]` or, with
/// `in_last`, `[pixels, cin]`; the output is `[pixels, cout]`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Geo {
    pub cin: usize,
    pub cout: usize,
    pub pixels: usize,
    pub in_last: bool,
}

impl Geo {
    pub(super) fn panels(&self) -> usize {
        self.cout.div_ceil(NR)
    }

    /// Width of panel `j` in floats: 32, or the last one's channels rounded up to a vector.
    pub(super) fn panel_width(&self, j: usize) -> usize {
        (self.cout - j * NR).min(NR).div_ceil(LANES) * LANES
    }

    /// Distance between one pixel's inputs and the next's, and between one input channel's and
    /// the next's.
    fn x_strides(&self) -> (usize, usize) {
        if self.in_last {
            (self.cin, 1)
        } else {
            (1, self.pixels)
        }
    }
}

/// `[cout, cin]` weights as the kernel reads them: panel `j` (at `j·32·cin`) holds, for each input
/// channel, its `panel_width(j)` output channels side by side (zeros past `cout`).
pub fn pack_weights(w: &[f32], g: &Geo) -> Vec<f32> {
    let mut out = vec![0.0; g.panels() * NR * g.cin];
    for o in 0..g.cout {
        let (j, c) = (o / NR, o % NR);
        let width = g.panel_width(j);
        for i in 0..g.cin {
            out[j * NR * g.cin + i * width + c] = w[o * g.cin + i];
        }
    }
    out
}

/// The bias padded to whole panels, so the epilogue loads it without masks.
fn pad_bias(b: &[f32], g: &Geo) -> Vec<f32> {
    let mut out = vec![0.0; g.panels() * NR];
    out[..g.cout].copy_from_slice(&b[..g.cout]);
    out
}

/// The same conv in plain loops: what the kernel is tested against.
#[cfg(test)]
pub fn reference(g: &Geo, x: &[f32], w: &[f32], bias: &[f32], f: Fused) -> Vec<f32> {
    let (ps, ks) = g.x_strides();
    let mut y = vec![0.0; g.pixels * g.cout];
    for p in 0..g.pixels {
        for o in 0..g.cout {
            let mut s = bias[o] as f64;
            for i in 0..g.cin {
                let gate = f.gate.map_or(1.0, |s| s[i] as f64);
                s += x[p * ps + i * ks] as f64 * gate * w[o * g.cin + i] as f64;
            }
            let mut v = s as f32;
            if f.silu {
                v /= 1.0 + (-v).exp();
            }
            y[p * g.cout + o] = v + f.residual.map_or(0.0, |r| r[p * g.cout + o]);
        }
    }
    y
}

/// Pointers of one eval: input, packed weights, padded bias, output, residual and per-input-channel
/// gate (null if none).
#[derive(Clone, Copy)]
struct Ptrs {
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
    r: *const f32,
    gate: *const f32,
    table: Option<TableRef>,
}

// Each task writes its own panels of `y`; the rest is read-only.
unsafe impl Send for Ptrs {}
unsafe impl Sync for Ptrs {}

/// One K block of a panel: input channels `k0..k0 + kc`. The first starts from zero, later ones
/// from the partial sums already in `y`; the last applies bias, SiLU and residual before its
/// store. `w` is the block's weights (gated, if there is a gate); `ahead` the weight block a later
/// tile reads, fetched into L2 meanwhile.
#[derive(Clone, Copy)]
struct Block {
    w: *const f32,
    k0: usize,
    kc: usize,
    first: bool,
    last: bool,
    silu: bool,
    ahead: *const f32,
}

/// `M` pixels from `p0` × `V` vectors of panel `j`, over the input channels of `blk`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const M: usize, const V: usize>(g: &Geo, p: Ptrs, j: usize, p0: usize, blk: Block) {
    unsafe {
        let (ps, ks) = g.x_strides();
        let width = V * LANES;
        let o0 = j * NR;
        let masks: [__mmask16; V] = std::array::from_fn(|v| first_lanes(g.cout.saturating_sub(o0 + v * LANES)));
        let y = p.y.add(p0 * g.cout + o0);
        let mut acc = [[_mm512_setzero_ps(); V]; M];
        // Index loops over `acc`, short enough to unroll, so it lives in registers.
        #[allow(clippy::needless_range_loop)]
        if !blk.first {
            for m in 0..M {
                for v in 0..V {
                    acc[m][v] = _mm512_maskz_loadu_ps(masks[v], y.add(m * g.cout + v * LANES));
                }
            }
        }
        let mut x = p.x.add(p0 * ps + blk.k0 * ks);
        let mut w = blk.w;
        for k in 0..blk.kc {
            let wv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(w.add(v * LANES)));
            #[allow(clippy::needless_range_loop)]
            for m in 0..M {
                let xb = _mm512_set1_ps(*x.add(m * ps));
                for v in 0..V {
                    acc[m][v] = _mm512_fmadd_ps(xb, wv[v], acc[m][v]);
                }
            }
            // Two lines of the weights a later tile reads (the next panel's block) into L2.
            _mm_prefetch::<_MM_HINT_T1>(blk.ahead.add(k * NR) as *const i8);
            _mm_prefetch::<_MM_HINT_T1>(blk.ahead.add(k * NR + LANES) as *const i8);
            x = x.add(ks);
            w = w.add(width);
        }
        // Out of registers through a buffer before the epilogue: a loop that long is not
        // unrolled, and indexing `acc` at run time would keep it in memory in the loop above.
        let mut tile = [[0f32; NR]; MR];
        #[allow(clippy::needless_range_loop)]
        for m in 0..M {
            for v in 0..V {
                _mm512_storeu_ps(tile[m].as_mut_ptr().add(v * LANES), acc[m][v]);
            }
        }
        for (m, row) in tile.iter().enumerate().take(M) {
            for (v, &mask) in masks.iter().enumerate() {
                let mut val = _mm512_loadu_ps(row.as_ptr().add(v * LANES));
                if blk.last {
                    let r = if p.r.is_null() { p.r } else { p.r.add((p0 + m) * g.cout + o0 + v * LANES) };
                    val = finish(val, _mm512_loadu_ps(p.b.add(o0 + v * LANES)), blk.silu, r, mask, p.table);
                }
                _mm512_mask_storeu_ps(y.add(m * g.cout + v * LANES), mask, val);
            }
        }
    }
}

/// A 1x1 conv's epilogue on 16 output channels of one pixel: + bias, then SiLU, the residual
/// `r` (null if none; the lanes of `mask`) and the int8 table, as asked.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn finish(val: __m512, bias: __m512, silu: bool, r: *const f32, mask: __mmask16, table: Option<TableRef>) -> __m512 {
    let mut val = _mm512_add_ps(val, bias);
    if silu {
        val = silu512(val);
    }
    if !r.is_null() {
        val = _mm512_add_ps(val, unsafe { _mm512_maskz_loadu_ps(mask, r) });
    }
    if let Some(t) = table {
        val = unsafe { lookup512(val, t) };
    }
    val
}

/// The register tiles of pixel range `px`: (first pixel, pixels), as even as they can be, at most
/// [`MR`] pixels each.
pub(super) fn even_tiles(px: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    let tiles = px.len().div_ceil(MR);
    (0..tiles).map(move |t| {
        let p0 = px.start + t * px.len() / tiles;
        (p0, px.start + (t + 1) * px.len() / tiles - p0)
    })
}

/// `$tile::<M, V>$args` for a tile of `m` pixels (1..=12, constant in the kernel) and two
/// vectors of output channels if `wide`, else one.
macro_rules! by_rows {
    ($tile:ident, $m:expr, $wide:expr, $args:tt) => {
        by_rows!(@ $tile, $m, $wide, $args, 1 2 3 4 5 6 7 8 9 10 11 12)
    };
    (@ $tile:ident, $m:expr, $wide:expr, $args:tt, $($n:literal)*) => {
        match ($m, $wide) {
            $(($n, true) => $tile::<$n, 2> $args, ($n, false) => $tile::<$n, 1> $args,)*
            _ => unreachable!("tiles are 1..=12 pixels"),
        }
    };
}
pub(super) use by_rows;

/// Pixels `px` of panel `j`, K block by K block (the block's weights stay in L1 across tiles).
/// Tiles are as even as they can be: 49 pixels as 10+10+10+10+9, not 4×12 + 1, whose last tile
/// would load two weight vectors per two products.
#[target_feature(enable = "avx512f")]
unsafe fn panel(g: &Geo, p: Ptrs, j: usize, px: std::ops::Range<usize>, silu: bool) {
    let width = g.panel_width(j);
    let wide = width > LANES;
    let mut gated = std::mem::MaybeUninit::<[f32; KC * NR]>::uninit();
    let mut k0 = 0;
    while k0 < g.cin {
        let kc = KC.min(g.cin - k0);
        let mut w = p.w.add(j * NR * g.cin + k0 * width);
        // A squeeze-excite gate scales input channel i: scale weight row i of the block instead
        // (kc × 32 products once, where gating the input would be a pass over the whole image).
        if !p.gate.is_null() {
            let out = gated.as_mut_ptr() as *mut f32;
            for k in 0..kc {
                let s = _mm512_set1_ps(*p.gate.add(k0 + k));
                for v in (0..width).step_by(LANES) {
                    _mm512_storeu_ps(out.add(k * width + v), _mm512_mul_ps(s, _mm512_loadu_ps(w.add(k * width + v))));
                }
            }
            w = out;
        }
        // The stage-5 weights (14 MB for b0) come from L3 on every run: while this block is
        // worked on, the same block of the next panel is fetched (the last panel refetches its own).
        let next = if j + 1 < g.panels() { j + 1 } else { j };
        let ahead = p.w.wrapping_add(next * NR * g.cin + k0 * g.panel_width(next));
        let blk = Block { w, k0, kc, first: k0 == 0, last: k0 + kc == g.cin, silu, ahead };
        for (p0, m) in even_tiles(px.clone()) {
            unsafe { by_rows!(tile, m, wide, (g, p, j, p0, blk)) }
        }
        k0 += kc;
    }
}

/// What a conv takes in with its product: a SiLU after the bias, a residual (shaped like the
/// output) added, an int8 graph's quantize-dequantize table (`qdq`) applied last, and a
/// squeeze-excite gate (`cin` values) scaling the input channels.
#[derive(Clone, Copy, Default)]
pub struct Fused<'a> {
    pub silu: bool,
    pub residual: Option<&'a [f32]>,
    pub gate: Option<&'a [f32]>,
    pub table: Option<TableRef>,
}

/// The conv of one image: `x` as [`Geo`] says, `w` packed by [`pack_weights`], `bias` padded to
/// whole panels, `y` `[pixels, cout]` = the product of the (gated) input + bias, then what `f`
/// adds. Panels go to the rayon pool the caller runs in, if it is one of several threads.
///
/// # Safety
/// The CPU has AVX-512F ([`supported`](super::avx512::supported)).
pub unsafe fn run(g: &Geo, x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], f: Fused) {
    let out = g.pixels * g.cout;
    assert!(x.len() >= g.cin * g.pixels && w.len() >= g.panels() * NR * g.cin && bias.len() >= g.panels() * NR && y.len() >= out);
    assert!(f.residual.is_none_or(|r| r.len() >= out) && f.gate.is_none_or(|s| s.len() >= g.cin));
    let null_or = |t: Option<&[f32]>| t.map_or(std::ptr::null(), |t| t.as_ptr());
    let p = Ptrs { x: x.as_ptr(), w: w.as_ptr(), b: bias.as_ptr(), y: y.as_mut_ptr(), r: null_or(f.residual), gate: null_or(f.gate), table: f.table };
    let silu = f.silu;
    spread_panels(g, |j, px| unsafe { panel(g, p, j, px, silu) });
}

/// `task(panel, pixels)` over the output: tasks are panels, each cut into even pixel ranges (at
/// most one per tile) when there are too few panels to keep every thread of the caller's pool
/// busy (a 96-channel project conv is three panels).
pub(super) fn spread_panels(g: &Geo, task: impl Fn(usize, std::ops::Range<usize>) + Send + Sync) {
    let threads = pool_threads();
    let per_panel = if threads == 1 { 1 } else { (4 * threads).div_ceil(g.panels()).min(g.pixels.div_ceil(MR)) };
    spread(g.panels() * per_panel, |t| {
        let (j, s) = (t / per_panel, t % per_panel);
        task(j, s * g.pixels / per_panel..(s + 1) * g.pixels / per_panel)
    });
}

/// The op in tract's graph: inputs the image (`[c, h, w]` or `[h, w, c]`), the packed weights and
/// padded bias (constants), then with `gate` the `[1, 1, cin]` squeeze-excite gate of the image,
/// with `residual` a `[h, w, cout]` tensor to add.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Pointwise {
    /// The integer kernel (`int8_pointwise`), taking its input (times the gate, if any) to codes
    /// as this says, or the f32 one. Its inputs are then the image, the four constants of
    /// `int8_pointwise::wire_constants`, the gate and the residual.
    pub(super) int8: Option<InputCodes>,
    geo: Geo,
    /// Images in the batch, each its own product (a gate is per image).
    images: usize,
    /// Output `[(n,) h, w, cout]`.
    out_shape: TVec<usize>,
    silu: bool,
    gate: bool,
    residual: bool,
    /// The quantize-dequantize table that reads the conv's output, applied before the store.
    pub(super) table: Option<QuantTable>,
}

impl Op for Pointwise {
    fn name(&self) -> StaticName {
        if self.int8.is_some() { "Effv2Int8Pointwise" } else { "Effv2Pointwise" }.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geo;
        let extra = match (self.silu, self.residual) {
            (true, _) => ", SiLU",
            (false, true) => ", + residual",
            _ => "",
        };
        let layout = if g.in_last { "hwc" } else { "chw" };
        let gate = if self.gate { " · SE gate" } else { "" };
        let batch = if self.images > 1 { format!("{} × ", self.images) } else { String::new() };
        let table = if self.table.is_some() { ", int8 table" } else { "" };
        let kind = if self.int8.is_some() { "u8×i8 " } else { "" };
        Ok(vec![format!("1x1 {kind}{}→{} ch, {batch}{} px, {layout}{gate} → hwc{extra}{table}", g.cin, g.cout, g.pixels)])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for Pointwise {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let consts = if self.int8.is_some() { 4 } else { 2 };
        let wanted = 1 + consts + self.gate as usize + self.residual as usize;
        ensure!(inputs.len() == wanted, "Effv2Pointwise takes {wanted} inputs, got {}", inputs.len());
        let g = &self.geo;
        let x = plain::<f32>(&inputs[0])?;
        let gate = if self.gate { Some(plain::<f32>(&inputs[1 + consts])?) } else { None };
        let residual = if self.residual { Some(plain::<f32>(&inputs[wanted - 1])?) } else { None };
        let (n, xs, ys) = (self.images, g.pixels * g.cin, g.pixels * g.cout);
        ensure!(x.len() == n * xs && residual.is_none_or(|r| r.len() == n * ys) && gate.is_none_or(|s| s.len() == n * g.cin), "Effv2Pointwise: input of {} values for {n} x {g:?}", x.len());
        let weights = Weights::of(self.int8.as_ref(), &inputs[1..1 + consts])?;
        match &weights {
            Weights::Int8(_, w) => int8_pointwise::check(g, w)?,
            Weights::F32(w, b) => ensure!(w.len() == g.panels() * NR * g.cin && b.len() == g.panels() * NR, "Effv2Pointwise: packed constants do not fit {g:?}"),
        }
        // The kernel writes every element of the output.
        let y = super::filled_f32(&self.out_shape, |y| {
            for i in 0..n {
                let f = Fused {
                    silu: self.silu,
                    residual: residual.map(|r| &r[i * ys..][..ys]),
                    gate: gate.map(|s| &s[i * g.cin..][..g.cin]),
                    table: self.table.as_ref().map(QuantTable::epilogue),
                };
                let (x, y) = (&x[i * xs..][..xs], &mut y[i * ys..][..ys]);
                match &weights {
                    Weights::F32(w, b) => unsafe { run(g, x, w, b, y, f) },
                    Weights::Int8(input, w) => unsafe { int8_pointwise::run(g, input, x, w, y, f) },
                }
            }
        })?;
        Ok(tvec!(y))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for Pointwise {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.out_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let g = &self.geo;
        Ok(tvec!((Cost::FMA(f32::datum_type()), (self.images * g.pixels * g.cout * g.cin).into())))
    }
}

/// Whether the rewrite is on: AVX-512 here and not turned off with `EFFV2_TRACT_POINTWISE=0`
/// (for A/B measurements).
pub(super) fn enabled() -> bool {
    switched_on("EFFV2_TRACT_POINTWISE")
}

/// How a 1x1-conv einsum lays out its image, as tract's declutter writes it: channels first or
/// last, and a batch axis in front of the input and of the output or not (tract drops a unit one
/// where it can, so the two may differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layouts {
    in_last: bool,
    out_last: bool,
    in_n: bool,
    out_n: bool,
}

fn layouts(einsum: &EinSum) -> Option<Layouts> {
    if einsum.q_params.is_some() {
        return None;
    }
    let expr = einsum.axes.to_string();
    let (ins, out) = expr.split_once("->")?;
    let (in_n, out_n) = (ins.starts_with('N'), out.starts_with('N'));
    let expr = format!("{}->{}", ins.trim_start_matches('N'), out.trim_start_matches('N'));
    let (in_last, out_last) = match expr.as_str() {
        "IHW,OI->OHW" => (false, false),
        "IHW,OI->HWO" => (false, true),
        "HWI,OI->OHW" => (true, false),
        "HWI,OI->HWO" => (true, true),
        _ => return None,
    };
    Some(Layouts { in_last, out_last, in_n, out_n })
}

/// Move the output of every channel-first 1x1 conv that reads a channel-last image (an MBConv
/// block's project conv) channel-last, with tract's own propagation: the residual adds and the
/// next block's expand conv follow, and the change stops at the einsums, which absorb it. Where
/// the propagation meets an op that cannot follow, nothing changes. Returns how many moves applied.
fn move_boundaries_channel_last(model: &mut TypedModel) -> TractResult<usize> {
    let mut tried = std::collections::HashSet::new();
    let mut moved = 0;
    loop {
        let candidate = model.eval_order()?.into_iter().find(|&id| {
            let node = model.node(id);
            !tried.contains(&node.name) && node.op_as::<EinSum>().and_then(layouts).is_some_and(|l| l.in_last && !l.out_last)
        });
        let Some(id) = candidate else { return Ok(moved) };
        tried.insert(model.node(id).name.clone());
        let batch = model.node(id).op_as::<EinSum>().and_then(layouts).is_some_and(|l| l.out_n) as usize;
        let mut interfaces = model.output_outlets()?.to_vec();
        interfaces.extend(model.input_outlets()?.iter());
        let change = AxisChange { outlet: OutletId::new(id, 0), op: AxisOp::Move(batch, batch + 2) };
        if let Some((patch, _)) = change_axes(model, &change, &interfaces, &[], &mut Default::default())? {
            patch.apply(model)?;
            moved += 1;
        }
    }
}

/// If `x` is `Mul(image [(n,) h, w, c], gate [(n,) 1, 1, c])` (f32, not constant) read only by
/// the conv, the image and the gate.
fn se_gate(model: &TypedModel, x: OutletId, gate_shape: &[usize]) -> TractResult<Option<(OutletId, OutletId)>> {
    let mul = model.node(x.node);
    if mul.op().name() != "Mul" || mul.inputs.len() != 2 || model.outlet_successors(x).len() != 1 || model.output_outlets()?.contains(&x) {
        return Ok(None);
    }
    let facts = [model.outlet_fact(mul.inputs[0])?, model.outlet_fact(mul.inputs[1])?];
    if facts.iter().any(|f| f.datum_type != f32::datum_type() || f.konst.is_some()) {
        return Ok(None);
    }
    let shapes = facts.map(|f| f.shape.as_concrete().map(|s| s.to_vec()));
    let out = model.outlet_fact(x)?.shape.as_concrete().map(|s| s.to_vec());
    let gate_shape = Some(gate_shape.to_vec());
    Ok(match () {
        _ if shapes[1] == gate_shape && shapes[0] == out => Some((mul.inputs[0], mul.inputs[1])),
        _ if shapes[0] == gate_shape && shapes[1] == out => Some((mul.inputs[1], mul.inputs[0])),
        _ => None,
    })
}

/// Replace the 1x1 convs writing channel-last (after [`move_boundaries_channel_last`]: every
/// expand and project conv of the MBConv stages) with [`Pointwise`], absorbing the bias add and
/// then a SiLU or a residual add. Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    if !enabled() {
        return Ok(0);
    }
    move_boundaries_channel_last(model)?;
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(Layouts { in_last, out_last: true, in_n, out_n }) = node.op_as::<EinSum>().and_then(layouts) else { continue };
        let [mut xi, wi] = *node.inputs.as_slice() else { continue };
        let (xf, wf) = (model.outlet_fact(xi)?, model.outlet_fact(wi)?);
        let (Some(x_shape), Some(w)) = (xf.shape.as_concrete(), wf.konst.clone()) else { continue };
        if xf.datum_type != f32::datum_type() || w.datum_type() != f32::datum_type() {
            continue;
        }
        let [cout, cin] = *w.shape() else { continue };
        // The image axes after the batch axis, if any.
        let (n, img) = if in_n { (x_shape[0], &x_shape[1..]) } else { (1, x_shape) };
        if img.len() != 3 || (n > 1 && !out_n) {
            continue;
        }
        let [h, wd] = if in_last { [img[0], img[1]] } else { [img[1], img[2]] };
        let out_shape: TVec<usize> = if out_n { tvec![n, h, wd, cout] } else { tvec![h, wd, cout] };
        // A per-channel bias: `cout` values along the last axis. An int8 graph's conv may have
        // none (its quantized bias was zero and left out): then zeros.
        let per_channel = |t: &Tensor| t.len() == cout && t.datum_type() == f32::datum_type() && t.shape().last() == Some(&cout);
        let bias_add = match single_add(model, id)? {
            Some((add, b)) => model.outlet_fact(b)?.konst.clone().filter(|t| per_channel(t)).map(|t| (add, t)),
            None => None,
        };
        let (tail, bias) = match bias_add {
            Some((add, t)) => (add, t),
            None => (id, Tensor::zero::<f32>(&[cout])?.into_arc_tensor()),
        };
        let silu = single_reader(model, tail, "Silu")?.filter(|s| s.inputs.len() == 1).map(|s| s.id);
        let shaped_like_out = |f: &TypedFact| f.shape.as_concrete() == Some(&out_shape[..]) && f.datum_type == f32::datum_type();
        let residual = if silu.is_none() { single_add(model, tail)?.filter(|(_, r)| model.outlet_fact(*r).is_ok_and(shaped_like_out)) } else { None };
        // A channel-last input that is a squeeze-excite gate product read by this conv alone:
        // the gate goes to the weights instead.
        let gate_shape: TVec<usize> = if in_n { tvec![n, 1, 1, cin] } else { tvec![1, 1, cin] };
        let gate = if in_last { se_gate(model, xi, &gate_shape)? } else { None };
        if let Some((x, _)) = gate {
            xi = x;
        }
        let last = silu.or(residual.map(|(add, _)| add)).unwrap_or(tail);
        // An int8 graph's table after all that, read by nothing else, goes in too.
        let (last, table) = absorb_table(model, last)?;
        let geo = Geo { cin, cout, pixels: h * wd, in_last };
        let name = node.name.clone();
        let w = w.to_plain_array_view::<f32>()?;
        let w = w.as_slice().context("contiguous weights")?;
        let bias = bias.to_plain_array_view::<f32>()?;
        let bias = bias.as_slice().context("contiguous bias")?;
        // An int8 graph's conv of an input on a u8 grid with i8-grid weights: integer products.
        let int8 = match gate {
            None if int8_pointwise::enabled() => super::input_codes(model, xi)?.and_then(|input| Some((input, int8_pointwise::int8_rows(w, cout, cin)?))),
            _ => None,
        };
        // An int8 graph's SE gate product, read only by the table this conv took in: the gate is
        // applied to the input as it becomes codes (the f32 kernel folds it into the weights).
        let int8_gate = match &int8 {
            Some(((read, _), _)) if in_last => se_gate(model, *read, &gate_shape)?,
            _ => None,
        };
        let mut patch = TypedModelPatch::new("effv2-pointwise");
        let y = if let Some(((read, input), (scales, codes))) = int8 {
            let (start, scale, bias) = int8_pointwise::epilogue_constants(&codes, &scales, bias, &geo, input.grid);
            let mut inputs = vec![patch.tap_model(model, int8_gate.map_or(read, |(image, _)| image))?];
            inputs.extend(int8_pointwise::wire_constants(&mut patch, &name, &int8_pointwise::pack_codes(&codes, &geo), &start, &scale, Some(&bias))?);
            if let Some((_, s)) = int8_gate {
                inputs.push(patch.tap_model(model, s)?);
            }
            if let Some((_, r)) = residual {
                inputs.push(patch.tap_model(model, r)?);
            }
            let op = Pointwise { int8: Some(input), geo, images: n, out_shape, silu: silu.is_some(), gate: int8_gate.is_some(), residual: residual.is_some(), table };
            patch.wire_node(format!("{name}.int8_pointwise"), op, &inputs)?[0]
        } else {
            let mut inputs = vec![patch.tap_model(model, xi)?];
            let op = Pointwise { int8: None, geo, images: n, out_shape, silu: silu.is_some(), gate: gate.is_some(), residual: residual.is_some(), table };
            let packed = pack_weights(w, &geo);
            let bias = pad_bias(bias, &geo);
            inputs.push(patch.add_const(format!("{name}.packed"), Tensor::from_shape(&[packed.len()], &packed)?)?);
            inputs.push(patch.add_const(format!("{name}.bias_padded"), Tensor::from_shape(&[bias.len()], &bias)?)?);
            if let Some((_, s)) = gate {
                inputs.push(patch.tap_model(model, s)?);
            }
            if let Some((_, r)) = residual {
                inputs.push(patch.tap_model(model, r)?);
            }
            patch.wire_node(format!("{name}.pointwise"), op, &inputs)?[0]
        };
        patch.shunt_outside(model, OutletId::new(last, 0), y)?;
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
        let mut rnd = uniform(11);
        // (cin, cout, pixels): channel tails of 8 and 16, pixel tails of every tile size, a K
        // block split (cin > 256) with a short last block.
        let cases = [(96, 672, 196), (672, 112, 196), (1152, 192, 49), (40, 24, 13), (300, 56, 25), (17, 8, 1), (513, 80, 23), (64, 40, 12)];
        for (cin, cout, pixels) in cases {
            for in_last in [false, true] {
                let g = Geo { cin, cout, pixels, in_last };
                let x: Vec<f32> = (0..cin * pixels).map(|_| rnd()).collect();
                let w: Vec<f32> = (0..cout * cin).map(|_| rnd()).collect();
                let b: Vec<f32> = (0..cout).map(|_| rnd()).collect();
                let r: Vec<f32> = (0..cout * pixels).map(|_| rnd()).collect();
                let (wp, bp) = (pack_weights(&w, &g), pad_bias(&b, &g));
                let s: Vec<f32> = (0..cin).map(|_| rnd()).collect();
                let cases = [(false, None, None), (true, None, None), (false, Some(&r[..]), None), (false, Some(&r[..]), Some(&s[..])), (true, None, Some(&s[..]))];
                for (silu, residual, gate) in cases {
                    let f = Fused { silu, residual, gate, table: None };
                    let want = reference(&g, &x, &w, &b, f);
                    // On the calling thread, then split over a pool of three.
                    let runs = both_ways(3, || {
                        let mut got = vec![f32::NAN; want.len()];
                        unsafe { run(&g, &x, &wp, &bp, &mut got, f) };
                        got
                    });
                    for (got, pooled) in runs.iter().zip([false, true]) {
                        let e = rel(got, &want);
                        assert!(e < 1e-5, "{g:?} silu {silu} residual {} gate {} pool {pooled}: {e}", residual.is_some(), gate.is_some());
                    }
                    // With an int8 table in the epilogue: the table applied to the same run's
                    // output, to the bit.
                    let table = QuantTable::new(20.0, 128, &std::array::from_fn(|i| (i as f32 - 128.0) / 20.0 + 0.001 * (i % 7) as f32));
                    let mut got = vec![f32::NAN; want.len()];
                    unsafe { run(&g, &x, &wp, &bp, &mut got, Fused { table: Some(table.epilogue()), ..f }) };
                    let mut want_q = vec![0.0; want.len()];
                    table.apply(&runs[0], &mut want_q);
                    assert!(got.iter().zip(&want_q).all(|(a, b)| a.to_bits() == b.to_bits()), "{g:?} silu {silu} with a table");
                }
            }
        }
    }
}
