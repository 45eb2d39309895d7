//! The squeeze-excite gate product `x[h, w, c] · g[1, 1, c]` as one pass over `x`.
//!
//! tract takes its fast per-row path for this broadcast only when `c` is a multiple of its vector
//! length in bytes (64 on AVX-512); EfficientNet-B0's 672-channel blocks fell to its generic
//! broadcasting Mul at ~150 µs each, ten times the others. Swapped in after declutter, on any CPU.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ChannelScale {
    shape: [usize; 3],
}

impl Op for ChannelScale {
    fn name(&self) -> StaticName {
        "Effv2ChannelScale".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?} · [1, 1, {}]", self.shape, self.shape[2])])
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for ChannelScale {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [x, g] = &*inputs else { bail!("Effv2ChannelScale takes 2 inputs") };
        let (x, g) = (x.to_plain_array_view::<f32>()?, g.to_plain_array_view::<f32>()?);
        let (x, g) = (x.as_slice().context("contiguous input")?, g.as_slice().context("contiguous gate")?);
        let c = self.shape[2];
        ensure!(g.len() == c && x.len() == self.shape.iter().product::<usize>(), "Effv2ChannelScale: {} values and {} gates", x.len(), g.len());
        let y = super::filled_f32(&self.shape, |y| {
            for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                for ((y, x), g) in yr.iter_mut().zip(xr).zip(g) {
                    *y = x * g;
                }
            }
        })?;
        Ok(tvec!(y))
    }

    tract_onnx::tract_core::op_out_of_plan!();
}

impl TypedOp for ChannelScale {
    tract_onnx::tract_core::as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.shape)))
    }
}

/// Replace each f32 `Mul` of a `[h, w, c]` tensor by a `[1, 1, c]` one whose `c` tract's fast path
/// turns down (not a multiple of 64). Returns how many.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut done = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op().name() != "Mul" || node.inputs.len() != 2 {
            continue;
        }
        let facts = [model.outlet_fact(node.inputs[0])?, model.outlet_fact(node.inputs[1])?];
        let shapes = facts.map(|f| f.shape.as_concrete().map(|s| s.to_vec()));
        let (x, g) = match (&shapes[0], &shapes[1]) {
            (Some(a), Some(b)) if a.len() == 3 && b == &[1, 1, a[2]] => (0, 1),
            (Some(a), Some(b)) if b.len() == 3 && a == &[1, 1, b[2]] => (1, 0),
            _ => continue,
        };
        let shape: [usize; 3] = shapes[x].as_deref().expect("matched").try_into().expect("rank 3");
        if facts.iter().any(|f| f.datum_type != f32::datum_type() || f.konst.is_some()) || shape[2].is_multiple_of(64) {
            continue;
        }
        let name = node.name.clone();
        let (xi, gi) = (node.inputs[x], node.inputs[g]);
        let mut patch = TypedModelPatch::new("effv2-channel-scale");
        let inputs = [patch.tap_model(model, xi)?, patch.tap_model(model, gi)?];
        let y = patch.wire_node(format!("{name}.channel_scale"), ChannelScale { shape }, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.apply(model)?;
        done += 1;
    }
    Ok(done)
}
