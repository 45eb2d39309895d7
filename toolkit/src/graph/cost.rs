//! Parameter and multiply-accumulate counts, read off the graph.

use serde::Serialize;

use super::ir::{Graph, Op};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Trainable parameters (BN running statistics excluded, as PyTorch counts).
    pub params: u64,
    /// Multiply-accumulates of conv and linear layers for one sample.
    pub macs: u64,
}

impl Graph {
    pub fn cost(&self) -> Cost {
        let params = self.params.iter().filter(|p| p.role.is_trainable()).map(|p| p.numel() as u64).sum();
        let macs = self.nodes.iter().map(|n| node_macs(&n.op, n.shape.numel() as u64)).sum();
        Cost { params, macs }
    }

    /// MACs of each node, in node order (zero for ops that are not conv/linear).
    pub fn node_macs(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| node_macs(&n.op, n.shape.numel() as u64)).collect()
    }
}

fn node_macs(op: &Op, out_numel: u64) -> u64 {
    match op {
        Op::Conv(c) => out_numel * (c.kernel * c.kernel * c.in_ch / c.groups) as u64,
        Op::Linear(l) => (l.in_features * l.out_features) as u64,
        _ => 0,
    }
}
