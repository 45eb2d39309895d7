//! The collective a data-parallel replica sums through: NCCL between GPUs, or [`HostGroup`]
//! between threads of one process (CPU replicas, and the tests that pin down what data
//! parallelism must compute).

use std::sync::{Arc, Condvar, Mutex};

use crate::TrainError;

/// One member of a group of `world` replicas that sum buffers element-wise. Every member calls
/// the same collectives in the same order with buffers of the same length; each call returns
/// when every member's result holds the sum.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<(), TrainError>;
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<(), TrainError>;
    /// Wake every member waiting in (or later entering) a collective with an error: a replica
    /// that failed will not arrive, and the others must not wait for it forever.
    fn abort(&self);
}

/// An in-process group: members are threads; sums run in rank order in f64, so every member gets
/// the same bits whatever the thread timing.
pub struct HostGroup {
    world: usize,
    state: Mutex<Round>,
    turn: Condvar,
}

struct Round {
    /// Each rank's contribution to the collective in progress.
    slots: Vec<Option<Vec<f64>>>,
    /// Members done reading the sum of the current round.
    read: usize,
    /// Bumped when every rank's contribution to a round is in.
    generation: u64,
    aborted: bool,
}

impl HostGroup {
    /// `world` members, rank 0 first.
    pub fn members(world: usize) -> Vec<HostMember> {
        let g = Arc::new(HostGroup { world, state: Mutex::new(Round { slots: vec![None; world], read: 0, generation: 0, aborted: false }), turn: Condvar::new() });
        (0..world).map(|rank| HostMember { group: g.clone(), rank }).collect()
    }
}

#[derive(Clone)]
pub struct HostMember {
    group: Arc<HostGroup>,
    rank: usize,
}


impl HostMember {
    fn sum(&self, buf: &[f64]) -> Result<Vec<f64>, TrainError> {
        let g = &self.group;
        let mut s = g.state.lock().map_err(|_| TrainError::GroupAborted)?;
        // Wait until the previous round has been read by everyone (its slots are cleared).
        while s.slots[self.rank].is_some() && !s.aborted {
            s = g.turn.wait(s).map_err(|_| TrainError::GroupAborted)?;
        }
        if s.aborted {
            return Err(TrainError::GroupAborted);
        }
        s.slots[self.rank] = Some(buf.to_vec());
        let gen = s.generation;
        if s.slots.iter().all(Option::is_some) {
            s.generation += 1;
            g.turn.notify_all();
        } else {
            while s.generation == gen && !s.aborted {
                s = g.turn.wait(s).map_err(|_| TrainError::GroupAborted)?;
            }
        }
        if s.aborted {
            return Err(TrainError::GroupAborted);
        }
        let slots: Vec<&Vec<f64>> = s.slots.iter().map(|v| v.as_ref().expect("every rank filled its slot")).collect();
        let result = if slots.iter().any(|v| v.len() != buf.len()) {
            Err(TrainError::Misuse(format!("data-parallel replicas disagree on a collective's length: {:?}", slots.iter().map(|v| v.len()).collect::<Vec<_>>())))
        } else {
            Ok((0..buf.len()).map(|i| slots.iter().map(|v| v[i]).sum()).collect())
        };
        s.read += 1;
        if s.read == g.world {
            s.read = 0;
            s.slots.iter_mut().for_each(|v| *v = None);
            g.turn.notify_all();
        }
        result
    }
}

impl Collective for HostMember {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.group.world
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<(), TrainError> {
        let sum = self.sum(buf)?;
        buf.copy_from_slice(&sum);
        Ok(())
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<(), TrainError> {
        let wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
        let sum = self.sum(&wide)?;
        buf.iter_mut().zip(sum).for_each(|(b, s)| *b = s as f32);
        Ok(())
    }

    fn abort(&self) {
        if let Ok(mut s) = self.group.state.lock() {
            s.aborted = true;
        }
        self.group.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_gets_the_sum_round_after_round() {
        let members = HostGroup::members(3);
        let out: Vec<Vec<f64>> = std::thread::scope(|s| {
            let hs: Vec<_> = members
                .iter()
                .map(|m| {
                    s.spawn(move || {
                        let mut last = vec![];
                        for round in 0..50 {
                            let mut b = vec![m.rank() as f64 + round as f64, 1.0];
                            m.all_reduce_f64(&mut b).unwrap();
                            assert_eq!(b, vec![3.0 + 3.0 * round as f64, 3.0], "round {round}");
                            last = b;
                        }
                        last
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(out.iter().all(|v| v == &out[0]));
    }

    #[test]
    fn mismatched_lengths_and_aborts_are_errors_not_hangs() {
        let members = HostGroup::members(2);
        let errs: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = members.iter().map(|m| s.spawn(move || m.all_reduce_f32(&mut vec![0.0; 1 + m.rank()]).is_err())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(errs, vec![true, true]);
        let members = HostGroup::members(2);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| members[0].all_reduce_f64(&mut [1.0]));
            std::thread::sleep(std::time::Duration::from_millis(20));
            members[1].abort();
            assert!(waiter.join().unwrap().is_err());
        });
        assert!(members[1].all_reduce_f64(&mut [1.0]).is_err(), "an aborted group stays aborted");
    }
}
