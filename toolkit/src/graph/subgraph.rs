//! Cutting a piece out of the graph: the nodes between one value and another, as a graph of its
//! own (with only the parameters it reads). Used to calibrate BN statistics segment by segment.

use std::collections::HashMap;

use super::ir::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot cut the graph from {from:?} to {to:?}: {why}")]
pub struct CutError {
    pub from: String,
    pub to: String,
    pub why: String,
}

impl Graph {
    /// The graph computing value `to` from value `from` alone. Every node on the way must read
    /// only `from` or nodes after it; the result's node 0 is an input of `from`'s shape.
    pub fn cut(&self, from: ValueId, to: ValueId) -> Result<Graph, CutError> {
        let err = |why: String| CutError {
            from: self.nodes.get(from).map(|n| n.name.clone()).unwrap_or_default(),
            to: self.nodes.get(to).map(|n| n.name.clone()).unwrap_or_default(),
            why,
        };
        if from >= to || to >= self.nodes.len() {
            return Err(err("`to` must come after `from`".into()));
        }
        // Ancestors of `to` down to `from`.
        let mut needed = vec![false; self.nodes.len()];
        needed[to] = true;
        for i in (from + 1..=to).rev() {
            if !needed[i] {
                continue;
            }
            for &v in &self.nodes[i].inputs {
                if v < from {
                    return Err(err(format!("node {:?} reads {:?}, which comes before the cut", self.nodes[i].name, self.nodes[v].name)));
                }
                needed[v] = true;
            }
        }
        let mut remap = HashMap::from([(from, 0usize)]);
        let first = &self.nodes[from];
        let mut nodes = vec![Node { name: format!("{}.input", first.name), op: Op::Input, inputs: vec![], shape: first.shape, scope: first.scope }];
        let mut params = vec![];
        let mut param_map: HashMap<ParamId, ParamId> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate().take(to + 1).skip(from + 1) {
            if !needed[i] {
                continue;
            }
            let mut op = n.op.clone();
            for p in op.params_mut() {
                *p = *param_map.entry(*p).or_insert_with(|| {
                    params.push(self.params[*p].clone());
                    params.len() - 1
                });
            }
            let inputs = n.inputs.iter().map(|v| remap[v]).collect();
            nodes.push(Node { name: n.name.clone(), op, inputs, shape: n.shape, scope: n.scope });
            remap.insert(i, nodes.len() - 1);
        }
        Ok(Graph { output: nodes.len() - 1, nodes, params })
    }
}
