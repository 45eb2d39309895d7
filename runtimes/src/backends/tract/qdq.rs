//! int8 QDQ graphs on tract: weights dequantized once at load, and the element-wise work between
//! two convolutions as one table.
//!
//! tract leaves a per-channel DequantizeLinear of a constant (the classifier's 1000×1280 weights)
//! as a Cast and a Mul run on every inference, followed by a repack for its matrix product: its
//! constant folding refuses outputs larger than the int8 input. Folded here, the weights are f32
//! constants like a float graph's, and the float rewrites (`matvec`) take the product over.
//!
//! In a QDQ file every activation passes QuantizeLinear → DequantizeLinear, and an int8 SiLU is
//! Quantize → {Dequantize, sigmoid table → Dequantize} → Mul → Quantize → Dequantize: seven passes
//! over the image, and tract's QuantizeLinear alone took half of b0's int8 run (23.6 of 49 ms,
//! a branchy scalar round per value). Everything downstream of a QuantizeLinear that is
//! element-wise and reads nothing else is a function of the 256 values that quantize can give,
//! so it is replaced by one op, `table[quantize(x)]`, whose table tract's own ops compute on those
//! 256 values: the outputs are the same to the bit.
//!
//! With the chains gone, an int8 graph is a float graph with tables between its convs, so the
//! float rewrites take its convs too (their patterns stop at the table, as at any op they do not
//! fuse), and a conv of ours that is a table's only input applies the table before its store
//! (`lookup512` in the epilogues of `direct_conv`, `pointwise` and `depthwise_block`). b0@224,
//! 1 thread: 49 ms before, the fp32 graph's time after (README, "int8 CPU latency").

use std::collections::HashSet;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

/// `y = table[clamp(round_half_even(x · inv_scale) + zero_point, 0, 255)]`, f32 in and out.
/// Floats are kept as bits so the op compares and hashes exactly.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct QuantTable {
    inv_scale: u32,
    zero_point: u8,
    table: Vec<u32>,
    /// The u8 grid every table value lies on, when the region ends in a DequantizeLinear: what
    /// lets an int8 conv reading the op's output take its codes back (`int8_pointwise`).
    grid: Option<Grid>,
}

/// A u8 quantization grid: value = (code − zero point) · scale, as tract's DequantizeLinear
/// computes it (scale kept as bits).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Grid {
    scale: u32,
    pub zero_point: u8,
}

impl Grid {
    pub fn scale(&self) -> f32 {
        f32::from_bits(self.scale)
    }

    /// The code of a value on the grid, as the int8 kernels compute it (quantized as the table
    /// op quantizes, with 1/scale).
    pub fn code(&self, x: f32) -> u8 {
        index(x, 1.0 / self.scale(), self.zero_point as f32) as u8
    }

    /// The value of `code`, to the bit as tract's DequantizeLinear gives it.
    pub fn value(&self, code: u8) -> f32 {
        (code as i32 - self.zero_point as i32) as f32 * self.scale()
    }
}

/// How an int8 kernel takes an f32 input to the u8 codes of `grid`: `map[q(x)]`, q quantizing
/// with (1/scale, zero point) as [`QuantTable`] does, `map` the identity when the input already
/// lies on the grid, or a table op's values as codes when the kernel reads that op's input instead.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct InputCodes {
    pub inv_scale: u32,
    pub zero_point: u8,
    pub map: [u8; 256],
    /// What the codes mean.
    pub grid: Grid,
}

impl InputCodes {
    /// Codes of values on `grid`.
    pub fn of_grid(grid: Grid) -> InputCodes {
        InputCodes { inv_scale: (1.0 / grid.scale()).to_bits(), zero_point: grid.zero_point, map: std::array::from_fn(|i| i as u8), grid }
    }

    /// Codes of what `table` would give, from its input: None if its values lie on no grid.
    pub fn through(table: &QuantTable) -> Option<InputCodes> {
        let grid = table.grid?;
        let values = table.table();
        Some(InputCodes { inv_scale: table.inv_scale, zero_point: table.zero_point, map: std::array::from_fn(|i| grid.code(values[i])), grid })
    }

    /// One value's code, as the kernels compute it.
    #[cfg(test)]
    pub fn code(&self, x: f32) -> u8 {
        self.map[index(x, f32::from_bits(self.inv_scale), self.zero_point as f32)]
    }
}

impl QuantTable {
    pub fn new(inv_scale: f32, zero_point: u8, table: &[f32; 256]) -> QuantTable {
        QuantTable { inv_scale: inv_scale.to_bits(), zero_point, table: table.iter().map(|v| v.to_bits()).collect(), grid: None }
    }

    /// The same op, known to give only values of the grid (scale, zero point): kept if every
    /// table value's code gives back that value to the bit, so a reader may work on the codes.
    pub fn on_grid(mut self, scale: f32, zero_point: u8) -> QuantTable {
        let grid = Grid { scale: scale.to_bits(), zero_point };
        let exact = scale.is_finite() && scale > 0.0 && self.table().iter().all(|v| grid.value(grid.code(*v)).to_bits() == v.to_bits());
        self.grid = exact.then_some(grid);
        self
    }

    /// The grid of the op's values, if they lie on one.
    pub fn grid(&self) -> Option<Grid> {
        self.grid
    }

    fn table(&self) -> [f32; 256] {
        std::array::from_fn(|i| f32::from_bits(self.table[i]))
    }

    /// What a kernel of ours needs to apply this op in its epilogue (`lookup512`); valid while
    /// the op lives.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub fn epilogue(&self) -> TableRef {
        TableRef { inv_scale: f32::from_bits(self.inv_scale), zero_point: self.zero_point as f32, table: self.table.as_ptr() as *const f32 }
    }

    /// The op on a slice: AVX-512 where the CPU has it, else one value at a time.
    pub fn apply(&self, x: &[f32], y: &mut [f32]) {
        let (s, zp, table) = (f32::from_bits(self.inv_scale), self.zero_point as f32, self.table());
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if super::avx512::supported() {
            done = unsafe { apply512(x, y, self.epilogue()) };
        }
        for (y, x) in y[done..].iter_mut().zip(&x[done..]) {
            *y = table[index(*x, s, zp)];
        }
    }
}

/// tract's `quantize_linear_f32_u8` as a table index: NaN quantizes to the zero point, and the
/// clamp is done in f32 (the same for every finite input; tract's i32 add overflows on ±inf).
fn index(x: f32, inv_scale: f32, zero_point: f32) -> usize {
    let v = x * inv_scale;
    let v = if v.is_nan() { 0.0 } else { v };
    (v.round_ties_even() + zero_point).clamp(0.0, 255.0) as usize
}

/// A [`QuantTable`]'s parameters and table for a kernel's epilogue.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct TableRef {
    inv_scale: f32,
    zero_point: f32,
    table: *const f32,
}

// The table is read-only.
unsafe impl Send for TableRef {}
unsafe impl Sync for TableRef {}

/// The op on 16 values (every lane's index is clamped into the table, masked-off lanes too).
///
/// # Safety
/// AVX-512F, and `t` from a [`QuantTable`] that is still alive.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn lookup512(x: std::arch::x86_64::__m512, t: TableRef) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let v = _mm512_mul_ps(x, _mm512_set1_ps(t.inv_scale));
    let v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v);
    let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
    let q = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_add_ps(r, _mm512_set1_ps(t.zero_point)), _mm512_setzero_ps()), _mm512_set1_ps(255.0)));
    unsafe { _mm512_i32gather_ps::<4>(q, t.table) }
}

/// Whole 16-value blocks of `x`; returns how many values it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn apply512(x: &[f32], y: &mut [f32], t: TableRef) -> usize {
    use std::arch::x86_64::*;
    let n = x.len().min(y.len()) / 16 * 16;
    for i in (0..n).step_by(16) {
        unsafe { _mm512_storeu_ps(y.as_mut_ptr().add(i), lookup512(_mm512_loadu_ps(x.as_ptr().add(i)), t)) };
    }
    n
}

impl Op for QuantTable {
    fn name(&self) -> StaticName {
        "Effv2QuantTable".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("1/scale {} zero point {}", f32::from_bits(self.inv_scale), self.zero_point)])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for QuantTable {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [x] = &*inputs else { bail!("Effv2QuantTable takes 1 input") };
        let xv = x.to_plain_array_view::<f32>()?;
        let xs = xv.as_slice().context("contiguous input")?;
        // In slices over the rayon pool the run is entered on, when it has several threads: a
        // memory-bound pass, but one thread does not reach the bandwidth of two.
        const SLICE: usize = 1 << 14;
        let parallel = rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1 && xs.len() > SLICE;
        Ok(tvec!(super::filled_f32(x.shape(), |y| {
            if parallel {
                use rayon::prelude::*;
                y.par_chunks_mut(SLICE).zip(xs.par_chunks(SLICE)).for_each(|(y, x)| self.apply(x, y));
            } else {
                self.apply(xs, y)
            }
        })?))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for QuantTable {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    fn axes_mapping(&self, inputs: &[&TypedFact], outputs: &[&TypedFact]) -> TractResult<AxesMapping> {
        AxesMapping::natural(inputs, outputs)
    }

    // Element-wise: any layout change passes through (the MBConv stages go channel-last).
    fn change_axes(&self, model: &TypedModel, node: &TypedNode, _io: InOut, change: &AxisOp) -> TractResult<Option<AxisChangeConsequence>> {
        Ok(Some(AxisChangeConsequence::new(model, node, None, change)))
    }
}

/// The table op that is the only reader of `last`'s output, if there is one, for a kernel of ours
/// to apply before its store: the kernel's new last node (the table's, or `last`) and the table.
#[cfg(target_arch = "x86_64")]
pub(super) fn absorb_table(model: &TypedModel, last: usize) -> TractResult<(usize, Option<QuantTable>)> {
    let reader = super::single_reader(model, last, "Effv2QuantTable")?;
    Ok(match reader.and_then(|t| Some((t.id, t.op_as::<QuantTable>()?.clone()))) {
        Some((t, q)) => (t, Some(q)),
        None => (last, None),
    })
}

/// `QuantizeLinear` to u8 as tract's ONNX loader writes it: (1/scale, zero point).
fn quantize_u8(node: &TypedNode) -> Option<(f32, u8)> {
    let q = node.op_as::<ElementWiseOp>()?.0.downcast_ref::<QuantizeLinearU8>()?;
    Some((q.scale, q.zero_point))
}

/// Whether `node` may join a region whose values have `shape`: an element-wise op reading region
/// values of that shape and single-value constants, writing that shape.
fn joins(model: &TypedModel, node: &TypedNode, region: &HashSet<usize>, shape: &ShapeFact) -> TractResult<bool> {
    let element_wise = node.op_is::<ElementWiseOp>() || node.op_is::<DequantizeLinearF32>() || node.op_is::<TypedBinOp>();
    if !element_wise || node.outputs.len() != 1 || model.outlet_fact(OutletId::new(node.id, 0))?.shape != *shape {
        return Ok(false);
    }
    let mut reads_region = false;
    for i in &node.inputs {
        let f = model.outlet_fact(*i)?;
        if region.contains(&i.node) && f.shape == *shape {
            reads_region = true;
        } else if f.konst.as_ref().is_none_or(|k| k.len() != 1) {
            return Ok(false);
        }
    }
    Ok(reads_region)
}

/// The table of a region: its nodes (after the quantize, in order) run by tract on the 256
/// quantized values, laid out along the last axis of a tensor of the region's rank.
fn table_of(model: &TypedModel, q: usize, nodes: &[usize], out: usize) -> TractResult<[f32; 256]> {
    let rank = model.outlet_fact(OutletId::new(q, 0))?.rank();
    let mut shape = vec![1usize; rank];
    shape[rank - 1] = 256;
    let mut adhoc = TypedModel::default();
    let mut wires = std::collections::HashMap::new();
    wires.insert(q, adhoc.add_source("q", u8::fact(&shape))?);
    for &id in nodes {
        let node = model.node(id);
        let mut inputs = tvec![];
        for i in &node.inputs {
            inputs.push(match wires.get(&i.node) {
                Some(w) => *w,
                None => {
                    let k = model.outlet_fact(*i)?.konst.clone().context("a region's other inputs are constants")?;
                    adhoc.add_const(format!("{}.{}", node.name, inputs.len()), k)?
                }
            });
        }
        wires.insert(id, adhoc.wire_node(&node.name, node.op.clone(), &inputs)?[0]);
    }
    adhoc.select_output_outlets(&[wires[&out]])?;
    let values = Tensor::from_shape(&shape, &(0..=255u8).collect::<Vec<_>>())?;
    let y = SimplePlan::new(adhoc)?.run(tvec!(values.into_tvalue()))?.remove(0);
    let y = y.to_plain_array_view::<f32>()?;
    let y = y.as_slice().context("a contiguous table")?;
    Ok(std::array::from_fn(|i| y[i]))
}

/// Both rewrites on a decluttered model: [`fold_weights`], then [`tables`]. Returns how many
/// nodes each replaced. `EFFV2_TRACT_QDQ=0` turns them off (for A/B timing).
pub fn rewrite(model: &mut TypedModel) -> TractResult<(usize, usize)> {
    if std::env::var("EFFV2_TRACT_QDQ").is_ok_and(|v| v == "0") {
        return Ok((0, 0));
    }
    Ok((fold_weights(model)?, tables(model)?))
}

/// Replace each element-wise node (a Cast, a DequantizeLinear, a binary op) whose inputs are
/// all constants by the constant it computes, whatever its size. Returns how many.
pub fn fold_weights(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    loop {
        let mut found = None;
        for id in model.eval_order()? {
            let node = model.node(id);
            let kind = node.op_is::<Cast>() || node.op_is::<DequantizeLinearF32>() || node.op_is::<TypedBinOp>() || node.op_is::<ElementWiseOp>();
            if !kind || node.inputs.is_empty() || node.outputs.len() != 1 {
                continue;
            }
            let consts: Option<TVec<TValue>> = node.inputs.iter().map(|i| model.outlet_fact(*i).ok()?.konst.clone().map(|k| k.into_tvalue())).collect();
            // An op that cannot evaluate here is left for tract to run (or report) as it would.
            if let Some(inputs) = consts {
                if let Ok(Some(mut out)) = node.op.eval_out_of_plan(inputs) {
                    found = Some((id, out.remove(0).into_tensor()));
                    break;
                }
            }
        }
        let Some((id, value)) = found else { return Ok(done) };
        let mut patch = TypedModelPatch::new("effv2-fold-dequantized");
        let k = patch.add_const(format!("{}.folded", model.node(id).name), value)?;
        patch.shunt_outside(model, OutletId::new(id, 0), k)?;
        patch.apply(model)?;
        done += 1;
    }
}

/// Replace each region that starts at a u8 QuantizeLinear, grows over element-wise ops reading
/// only it and constants, and is read outside through one f32 value, by a [`QuantTable`].
/// Returns how many.
pub fn tables(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    let mut tried = HashSet::new();
    loop {
        let order = model.eval_order()?;
        let Some((start, q, (inv_scale, zp))) = order.iter().enumerate().find_map(|(at, &id)| {
            let node = model.node(id);
            quantize_u8(node).filter(|_| !tried.contains(&node.name)).map(|p| (at, id, p))
        }) else {
            return Ok(done);
        };
        tried.insert(model.node(q).name.clone());
        let shape = model.outlet_fact(OutletId::new(q, 0))?.shape.clone();
        // (A scalar has no axis to lay the 256 values along; it costs nothing as it is.)
        if model.outlet_fact(model.node(q).inputs[0])?.datum_type != f32::datum_type() || shape.rank() == 0 {
            continue;
        }
        let at: std::collections::HashMap<usize, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        // How far in eval order the region's readers reach: the scan stops there.
        let reach = |id: usize| model.node(id).outputs.iter().flat_map(|o| o.successors.iter()).filter_map(|s| at.get(&s.node).copied()).max().unwrap_or(0);
        let mut region = HashSet::from([q]);
        let mut nodes = vec![];
        let mut horizon = reach(q);
        for (i, &id) in order.iter().enumerate().skip(start + 1) {
            if i > horizon {
                break;
            }
            if joins(model, model.node(id), &region, &shape)? {
                region.insert(id);
                nodes.push(id);
                horizon = horizon.max(reach(id));
            }
        }
        // The region's values read outside it (or model outputs): exactly one, an f32.
        let model_outputs = model.output_outlets()?.to_vec();
        let mut leaving = vec![];
        for &id in region.iter() {
            let o = OutletId::new(id, 0);
            if model_outputs.contains(&o) || model.outlet_successors(o).iter().any(|s| !region.contains(&s.node)) {
                leaving.push(id);
            }
        }
        let [out] = leaving[..] else { continue };
        if out == q || model.outlet_fact(OutletId::new(out, 0))?.datum_type != f32::datum_type() {
            continue;
        }
        // A region tract's ops cannot evaluate on the 256 values stays as it is.
        let Ok(table) = table_of(model, q, &nodes, out) else { continue };
        let name = model.node(q).name.clone();
        let mut patch = TypedModelPatch::new("effv2-quant-table");
        let x = patch.tap_model(model, model.node(q).inputs[0])?;
        let mut op = QuantTable::new(inv_scale, zp, &table);
        // A region that ends in a u8 DequantizeLinear (most do: the next conv's input).
        if let Some(dq) = model.node(out).op_as::<DequantizeLinearF32>().filter(|d| (0..=255).contains(&d.zero_point)) {
            op = op.on_grid(dq.scale, dq.zero_point as u8);
        }
        let y = patch.wire_node(format!("{name}.table"), op, &[x])?[0];
        patch.shunt_outside(model, OutletId::new(out, 0), y)?;
        patch.apply(model)?;
        done += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8;

    /// Inputs on the rounding ties, between them, far out of range, and the special values.
    fn inputs(inv_scale: f32) -> Vec<f32> {
        let mut xs: Vec<f32> = (-700..700).map(|k| k as f32 * 0.5 / inv_scale).collect();
        xs.extend((0..4000).map(|k| (k as f32 * 0.37).sin() * 300.0 / inv_scale));
        // (Not ±inf or beyond i32: tract's own add overflows there.)
        xs.extend([f32::NAN, 1e6, -1e6, 0.0, -0.0, f32::MIN_POSITIVE]);
        xs
    }

    /// A kernel that takes a table op in reads the op's input: the codes it computes must be
    /// those of the op's outputs.
    #[test]
    fn codes_through_a_table_are_the_codes_of_its_values() {
        let (scale, zp) = (0.05f32, 113u8);
        let grid = |k: usize| (k as i32 - zp as i32) as f32 * scale;
        // A SiLU-like table whose values are snapped to the output grid, as tract computes them.
        let table: [f32; 256] = std::array::from_fn(|i| {
            let x = (i as f32 - 128.0) / 10.0;
            grid(((x / (1.0 + (-x).exp()) / scale).round() as i32 + zp as i32).clamp(0, 255) as usize)
        });
        let op = QuantTable::new(10.0, 128, &table).on_grid(scale, zp);
        let (g, codes) = (op.grid().expect("on its grid"), InputCodes::through(&op).unwrap());
        let mut y = vec![0f32; 1];
        for x in inputs(10.0) {
            op.apply(&[x], &mut y);
            assert_eq!(codes.code(x), g.code(y[0]), "x {x}");
            assert_eq!(g.value(codes.code(x)).to_bits(), y[0].to_bits(), "x {x}");
        }
        // Values off the grid: no codes.
        assert!(QuantTable::new(10.0, 128, &std::array::from_fn(|i| i as f32 * 0.013)).on_grid(scale, zp).grid().is_none());
    }

    #[test]
    fn the_op_quantizes_like_tract_then_reads_its_table() {
        let table: [f32; 256] = std::array::from_fn(|i| (i as f32 - 7.0) * 0.25 + 1.0 / (1 + i) as f32);
        for (inv_scale, zp) in [(10.0f32, 128u8), (3.7, 0), (0.51, 255), (123.0, 17)] {
            let op = QuantTable::new(inv_scale, zp, &table);
            let xs = inputs(inv_scale);
            // Lengths off the 16-value blocks too: the tail takes the scalar path.
            for n in [xs.len(), xs.len() - 5, 7] {
                let mut y = vec![0f32; n];
                op.apply(&xs[..n], &mut y);
                for (x, y) in xs.iter().zip(&y) {
                    let want = table[quantize_linear_f32_u8(*x, inv_scale, zp as i32) as usize];
                    assert_eq!(y.to_bits(), want.to_bits(), "x {x}, 1/scale {inv_scale}, zero point {zp}");
                }
            }
        }
    }
}
