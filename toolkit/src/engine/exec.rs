//! Runs a plan on one NHWC batch: values live in pooled buffers, freed after their last reader;
//! elementwise steps work in place when they are their input's last reader.

use std::time::Instant;

use super::elementwise::{act_par, add_into, scale_by_gate};
use super::plan::{Kernel, Plan, StepKind};
use super::pool::global_avg_pool;
use super::EngineError;
use crate::graph::ValueId;

/// Spare activation buffers, reused across steps and runs (saves page faults on large maps).
#[derive(Default)]
pub(super) struct BufPool {
    pub free: Vec<Vec<f32>>,
}

impl BufPool {
    /// A buffer of `len` values (contents unspecified: every kernel overwrites its output).
    pub fn take(&mut self, len: usize) -> Vec<f32> {
        let best = self.free.iter().enumerate().filter(|(_, b)| b.capacity() >= len).min_by_key(|(_, b)| b.capacity());
        match best.map(|(i, _)| i) {
            Some(i) => {
                let mut b = self.free.swap_remove(i);
                b.resize(len, 0.0);
                b
            }
            None => vec![0.0; len],
        }
    }

    pub fn give(&mut self, b: Vec<f32>) {
        self.free.push(b);
    }
}

/// Called with each value a step writes (and the input), as `(value, NHWC batch buffer)`.
pub(super) type Observer<'a> = &'a mut dyn FnMut(ValueId, &[f32]);

/// Runs every step; returns the output value's NHWC buffer. `times` gets each step's seconds;
/// `observe` sees every value as soon as it is written, before any later step can reuse it.
pub(super) fn execute(
    plan: &Plan,
    input: Vec<f32>,
    batch: usize,
    pool: &mut BufPool,
    mut times: Option<&mut Vec<f64>>,
    mut observe: Option<Observer<'_>>,
) -> Result<Vec<f32>, EngineError> {
    let mut vals: Vec<Option<Vec<f32>>> = vec![None; plan.shapes.len()];
    let mut left = plan.uses.clone();
    if let Some(f) = observe.as_deref_mut() {
        f(0, &input);
    }
    vals[0] = Some(input);
    for step in &plan.steps {
        let t0 = Instant::now();
        let numel = batch * plan.shapes[step.out].numel();
        let out = match &step.kind {
            StepKind::Conv { x, kernel, epi, residual } => {
                let mut out = pool.take(numel);
                let xin = get(&vals, *x)?;
                let res = residual.map(|r| get(&vals, r)).transpose()?;
                match kernel {
                    Kernel::Pointwise(k) => k.run(xin, xin.len() / k.cin, &mut out, epi, res),
                    Kernel::Im2col(k) => k.run(xin, batch, &mut out, epi, res),
                    Kernel::Depthwise(k) => k.run(xin, &mut out, epi, res),
                }
                out
            }
            StepKind::Act { x, kind } => {
                let mut buf = own(&mut vals, &left, *x, pool)?;
                act_par(*kind, &mut buf);
                buf
            }
            StepKind::Pool { x } => {
                let mut out = pool.take(numel);
                global_avg_pool(get(&vals, *x)?, batch, plan.shapes[step.out].c, &mut out);
                out
            }
            StepKind::Mul { x, gate } => {
                let mut buf = own(&mut vals, &left, *x, pool)?;
                scale_by_gate(&mut buf, get(&vals, *gate)?, plan.shapes[step.out].c);
                buf
            }
            StepKind::Add { a, b } => {
                // Accumulate into whichever operand is at its last use.
                let (a, b) = if left[*a] != 1 && left[*b] == 1 { (*b, *a) } else { (*a, *b) };
                let mut buf = own(&mut vals, &left, a, pool)?;
                add_into(&mut buf, get(&vals, b)?);
                buf
            }
        };
        if out.len() != numel {
            return Err(EngineError::Internal(format!("step {:?} wrote {} values, expected {numel}", step.name, out.len())));
        }
        if let Some(f) = observe.as_deref_mut() {
            f(step.out, &out);
        }
        vals[step.out] = Some(out);
        for v in step.inputs().into_iter().chain((plan.uses[step.out] == 0).then_some(step.out)) {
            left[v] = left[v].saturating_sub(1);
            if left[v] == 0 {
                if let Some(b) = vals[v].take() {
                    pool.give(b);
                }
            }
        }
        if let Some(t) = times.as_deref_mut() {
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    vals[plan.output].take().ok_or_else(|| EngineError::Internal("the output value was never computed".into()))
}

fn get(vals: &[Option<Vec<f32>>], v: ValueId) -> Result<&[f32], EngineError> {
    vals[v].as_deref().ok_or_else(|| EngineError::Internal(format!("value {v} read before it was computed or after it was freed")))
}

/// `v`'s buffer to overwrite: taken when this is its last reader, else a copy.
fn own(vals: &mut [Option<Vec<f32>>], left: &[usize], v: ValueId, pool: &mut BufPool) -> Result<Vec<f32>, EngineError> {
    if left[v] == 1 {
        if let Some(b) = vals[v].take() {
            return Ok(b);
        }
    }
    let src = get(vals, v)?;
    let mut b = pool.take(src.len());
    b.copy_from_slice(src);
    Ok(b)
}
