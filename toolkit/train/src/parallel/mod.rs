//! Data-parallel training: one replica of an engine per device, each fed a shard of the global
//! batch, computing what a single engine computes on the whole batch.
//!
//! Three things make the replicas agree with one engine, not just approximate it:
//! - **synchronised batch norm**: each replica's BN layers sum their per-channel statistics
//!   (and, backward, Σdy and Σdy·x̂) over the group before normalising, so every BN sees the
//!   global batch's mean and variance and the running averages move identically everywhere;
//! - **gradients summed** over the group after backward (the loss is already averaged over the
//!   global batch), so every replica takes the same optimizer step from the same weights;
//! - **masks sliced from the global draw**: a replica draws the drop-path and dropout masks of the
//!   whole global batch from the step's seed and keeps its shard's rows.
//!
//! The engine below runs each replica on a thread of its own, which is the form CUDA wants too
//! (one context and stream per device, NCCL collectives enqueued on them).

mod group;

pub use group::{Collective, HostGroup, HostMember};

use effv2_edge::graph::Graph;
use effv2_edge::weights::Weights;
use effv2_edge::Tensor;

use crate::{Mode, TrainEngine, TrainError};

/// Which rows of the global batch a replica's next forward holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Shard {
    pub offset: usize,
    /// The global batch; 0 when the engine is not a replica (its batch is everything).
    pub global: usize,
}

impl Shard {
    /// `mask` drawn for the global batch in `per`-sized rows → this shard's rows of it.
    pub fn slice_rows<'a>(&self, mask: &'a [f32], per: usize, batch: usize) -> &'a [f32] {
        if self.global == 0 {
            return mask;
        }
        &mask[self.offset * per..(self.offset + batch) * per]
    }

    /// The batch statistics and masks are taken over: the global one, or `batch` when unsharded.
    pub fn global_batch(&self, batch: usize) -> usize {
        if self.global == 0 { batch } else { self.global }
    }
}

/// An engine that can be one replica of a data-parallel group: it was built around a
/// [`Collective`] and takes the shard of each forward.
pub trait Replica: TrainEngine + Send {
    fn set_shard(&mut self, shard: Shard);
    /// Abort the group's collectives (a replica failed; the others must not wait for it).
    fn abort_group(&self);
}

/// `batch` rows over `n` replicas as evenly as possible, the first ones one larger: (offset, rows).
pub fn split(batch: usize, n: usize) -> Vec<(usize, usize)> {
    let (q, r) = (batch / n, batch % n);
    let mut off = 0;
    (0..n)
        .map(|i| {
            let rows = q + usize::from(i < r);
            let s = (off, rows);
            off += rows;
            s
        })
        .collect()
}

/// Several replicas behind one [`TrainEngine`]: the training loop drives it exactly as one engine.
/// One replica is run directly, on the caller's thread.
pub struct DataParallel<E: Replica> {
    replicas: Vec<E>,
    /// Rows each replica got in the last training forward (backward splits dLoss/dLogits alike).
    last: Vec<(usize, usize)>,
    classes: usize,
}

impl<E: Replica> DataParallel<E> {
    /// Replicas in rank order, built around the same group, from the same weights.
    pub fn new(replicas: Vec<E>, classes: usize) -> Result<Self, TrainError> {
        if replicas.is_empty() {
            return Err(TrainError::Config("data parallelism needs at least one replica".into()));
        }
        Ok(DataParallel { replicas, last: vec![], classes })
    }

    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    pub fn replica(&self, rank: usize) -> &E {
        &self.replicas[rank]
    }

    /// Run `f` on every replica with its part, each on a thread of its own; a failing replica
    /// aborts the group so none is left waiting in a collective, and its error (not the aborts it
    /// caused) is the one returned.
    fn each<T: Send, P: Send>(&mut self, parts: Vec<P>, f: impl Fn(&mut E, P) -> Result<T, TrainError> + Sync) -> Result<Vec<T>, TrainError> {
        if let [one] = self.replicas.as_mut_slice() {
            return parts.into_iter().map(|p| f(one, p)).collect();
        }
        let f = &f;
        let results: Vec<Result<T, TrainError>> = std::thread::scope(|s| {
            let hs: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(parts)
                .map(|(r, p)| {
                    s.spawn(move || {
                        let out = f(r, p);
                        if out.is_err() {
                            r.abort_group();
                        }
                        out
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(TrainError::Misuse("a data-parallel replica panicked".into())))).collect()
        });
        // Report the replica that failed first, not one that was aborted because of it.
        let mut errs: Vec<TrainError> = vec![];
        let mut outs = vec![];
        for r in results {
            match r {
                Ok(v) => outs.push(v),
                Err(e) => errs.push(e),
            }
        }
        match errs.into_iter().min_by_key(|e| matches!(e, TrainError::GroupAborted)) {
            Some(e) => Err(e),
            None => Ok(outs),
        }
    }
}

impl<E: Replica> TrainEngine for DataParallel<E> {
    fn name(&self) -> &'static str {
        self.replicas[0].name()
    }

    fn set_graph(&mut self, graph: &Graph) -> Result<(), TrainError> {
        let n = self.replicas.len();
        self.each(vec![(); n], |r, ()| r.set_graph(graph)).map(drop)
    }

    fn forward(&mut self, input: &[f32], batch: usize, mode: Mode, seed: u64) -> Result<Vec<f32>, TrainError> {
        let n = self.replicas.len();
        if batch == 0 || !input.len().is_multiple_of(batch) {
            return Err(TrainError::Size { what: "input batch (NCHW)", want: batch.max(1), got: input.len() });
        }
        let per = input.len() / batch;
        if mode == Mode::Train && batch < n {
            return Err(TrainError::Config(format!("a training batch of {batch} cannot feed {n} data-parallel replicas")));
        }
        let shards = split(batch, n);
        let parts: Vec<_> = shards.iter().map(|&(off, rows)| (off, rows, &input[off * per..(off + rows) * per])).collect();
        let outs = self.each(parts, |r, (offset, rows, x)| {
            if rows == 0 {
                return Ok(vec![]);
            }
            // A group of one is the engine itself: nothing to sum, no collectives to issue.
            r.set_shard(if n == 1 { Shard::default() } else { Shard { offset, global: batch } });
            r.forward(x, rows, mode, seed)
        })?;
        if mode == Mode::Train {
            self.last = shards;
        }
        Ok(outs.concat())
    }

    fn backward(&mut self, dlogits: &[f32]) -> Result<(), TrainError> {
        let total: usize = self.last.iter().map(|s| s.1).sum();
        if self.last.is_empty() || dlogits.len() != total * self.classes {
            return Err(TrainError::Size { what: "dLoss/dLogits", want: total * self.classes, got: dlogits.len() });
        }
        let c = self.classes;
        let parts: Vec<&[f32]> = self.last.iter().map(|&(off, rows)| &dlogits[off * c..(off + rows) * c]).collect();
        self.each(parts, |r, d| r.backward(d)).map(drop)
    }

    fn step(&mut self, lr: f32) -> Result<(), TrainError> {
        let n = self.replicas.len();
        self.each(vec![(); n], |r, ()| r.step(lr)).map(drop)
    }

    fn ema_update(&mut self, decay: f32) -> Result<(), TrainError> {
        let n = self.replicas.len();
        self.each(vec![(); n], |r, ()| r.ema_update(decay)).map(drop)
    }

    // Every replica holds the same weights, statistics and slots: rank 0 speaks for the group.
    fn weights(&self) -> Result<Weights, TrainError> {
        self.replicas[0].weights()
    }

    fn ema_weights(&self) -> Result<Option<Weights>, TrainError> {
        self.replicas[0].ema_weights()
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        self.replicas[0].optimizer_state()
    }

    fn load_state(&mut self, weights: &Weights, ema: Option<&Weights>, slots: &[(String, Tensor)]) -> Result<(), TrainError> {
        let n = self.replicas.len();
        self.each(vec![(); n], |r, ()| r.load_state(weights, ema, slots)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_covers_the_batch_in_order() {
        assert_eq!(split(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(split(2, 4), vec![(0, 1), (1, 1), (2, 0), (2, 0)]);
        assert_eq!(split(8, 1), vec![(0, 8)]);
    }
}
