//! Fresh weights with the official EfficientNetV2 initialisers, so `--model NAME` without a
//! checkpoint builds a real network (for benchmarking architectures and for training).

use super::store::Weights;
use crate::graph::{Graph, Op, Role};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Convs: normal(0, sqrt(2 / fan_out)) with fan_out = k·k·out/groups (depthwise: k·k);
/// linear: uniform(±1/sqrt(out)); biases 0; BN weight 1, bias 0, mean 0, var 1.
pub fn init_weights(graph: &Graph, seed: u64) -> Weights {
    let mut rng = Rng::new(seed);
    // Fan-out per conv weight, read from the op that owns it.
    let mut fan_out = vec![0usize; graph.params.len()];
    for n in &graph.nodes {
        if let Op::Conv(c) = &n.op {
            fan_out[c.weight] = c.kernel * c.kernel * c.out_ch / c.groups;
        }
    }
    let mut w = Weights::new();
    for (id, p) in graph.params.iter().enumerate() {
        let n = p.numel();
        let data: Vec<f32> = match p.role {
            Role::ConvWeight => {
                let std = (2.0 / fan_out[id].max(1) as f64).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            }
            Role::LinearWeight => {
                let r = 1.0 / (p.shape[0] as f64).sqrt();
                (0..n).map(|_| rng.range(-r, r) as f32).collect()
            }
            Role::BnWeight | Role::BnVar => vec![1.0; n],
            Role::Bias | Role::BnBias | Role::BnMean => vec![0.0; n],
        };
        w.insert(p.name.clone(), Tensor::new(p.shape.clone(), data).expect("sized from the param"));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::build;
    use crate::spec::{ModelOptions, ModelSpec};

    #[test]
    fn init_fits_the_graph_and_uses_fan_out() {
        let g = build(&ModelSpec::from_name("b0", ModelOptions::default()).unwrap(), 64, 64).unwrap();
        let w = init_weights(&g, 1);
        w.check(&g).unwrap();
        let dw = w.get("blocks.3.0.dw.conv.weight").unwrap();
        let std = (dw.data().iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / dw.numel() as f64).sqrt();
        assert!((std - (2.0f64 / 9.0).sqrt()).abs() < 0.03, "depthwise std {std}");
        assert_eq!(init_weights(&g, 1), w);
        assert_ne!(init_weights(&g, 2), w);
    }
}
