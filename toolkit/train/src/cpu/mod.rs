//! The CPU training engine: the graph interpreted node by node on NHWC activations, every
//! activation of a training step kept for the backward pass, parameters and their optimizer
//! slots and EMA shadows held as flat f32 buffers indexed like the graph's params.

mod backward;
pub mod bn;
pub mod conv;
pub mod depthwise;
mod forward;

pub use forward::{node_mask, node_rng};
pub mod gemm;
pub mod ops;
mod state;

use effv2_edge::graph::{Graph, Op, Shape};
use effv2_edge::weights::Weights;

use std::sync::Arc;

use crate::optim::Optimizer;
use crate::parallel::{Collective, Replica, Shard};
use crate::TrainError;

pub use bn::RUNNING_MOMENTUM;

/// How the engine trains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainerConfig {
    pub optimizer: Optimizer,
    /// Coefficient of the official `wd·Σ½‖w‖²` term (conv and dense kernels only).
    pub weight_decay: f32,
    /// Keep EMA shadows (`ema_update` is a no-op without them).
    pub ema: bool,
}

impl TrainerConfig {
    /// What a [`crate::run::TrainConfig`] asks of any engine.
    pub fn for_run(cfg: &crate::run::TrainConfig) -> Self {
        TrainerConfig { optimizer: cfg.optimizer, weight_decay: cfg.weight_decay, ema: cfg.ema_decay.is_some() }
    }
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig { optimizer: Optimizer::tf_rmsprop(), weight_decay: 1e-5, ema: true }
    }
}

/// What a node's backward needs besides the values.
#[derive(Clone, Debug, Default)]
enum Aux {
    #[default]
    None,
    Bn(bn::Saved),
    Mask(Vec<f32>),
}

pub struct CpuTrainer {
    graph: Graph,
    config: TrainerConfig,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    slots: Vec<Vec<Vec<f32>>>,
    ema: Option<Vec<Vec<f32>>>,
    /// Values (NHWC) and aux of the last training forward; empty otherwise.
    vals: Vec<Vec<f32>>,
    aux: Vec<Aux>,
    batch: usize,
    /// Also compute dLoss/dInput in backward (gradient checks; training skips it).
    pub want_input_grad: bool,
    input_grad: Vec<f32>,
    /// The data-parallel group this engine is a replica of, and its shard of the next forward.
    group: Option<Arc<dyn Collective>>,
    shard: Shard,
}

impl CpuTrainer {
    pub fn new(graph: &Graph, weights: &Weights, config: TrainerConfig) -> Result<Self, TrainError> {
        weights.check(graph)?;
        check_supported(graph)?;
        let params: Vec<Vec<f32>> = graph.params.iter().map(|p| weights.get(&p.name).map(|t| t.data().to_vec())).collect::<Result<_, _>>()?;
        let grads = graph.params.iter().map(|p| if p.role.is_trainable() { vec![0.0; p.numel()] } else { vec![] }).collect();
        let slots = graph.params.iter().map(|p| if p.role.is_trainable() { config.optimizer.init_slots(p.numel()) } else { vec![] }).collect();
        let ema = config.ema.then(|| params.clone());
        Ok(CpuTrainer {
            graph: graph.clone(),
            config,
            params,
            grads,
            slots,
            ema,
            vals: vec![],
            aux: vec![],
            batch: 0,
            want_input_grad: false,
            input_grad: vec![],
            group: None,
            shard: Shard::default(),
        })
    }

    /// A replica of a data-parallel group (see [`crate::parallel`]), built from the same weights
    /// as every other member.
    pub fn replica(graph: &Graph, weights: &Weights, config: TrainerConfig, group: Arc<dyn Collective>) -> Result<Self, TrainError> {
        Ok(CpuTrainer { group: Some(group), ..Self::new(graph, weights, config)? })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// dLoss/dInput (NCHW) of the last backward, when [`Self::want_input_grad`] was set.
    pub fn input_grad(&self) -> &[f32] {
        &self.input_grad
    }

    /// Gradients of the last backward, by parameter name (trainable parameters only).
    pub fn grads(&self) -> Weights {
        let mut w = Weights::new();
        for (p, g) in self.graph.params.iter().zip(&self.grads) {
            if p.role.is_trainable() {
                w.insert(p.name.clone(), effv2_edge::Tensor::new(p.shape.clone(), g.clone()).expect("sized from the param"));
            }
        }
        w
    }
}

/// Reject what the kernels do not implement before any work (grouped non-depthwise convs).
pub(crate) fn check_supported(graph: &Graph) -> Result<(), TrainError> {
    for n in &graph.nodes {
        let bad = match &n.op {
            Op::Conv(c) => c.groups != 1 && !c.is_depthwise(),
            Op::Input => false,
            _ => false,
        };
        let arity_ok = match &n.op {
            Op::Input => n.inputs.is_empty(),
            Op::Mul | Op::Add => n.inputs.len() == 2,
            _ => n.inputs.len() == 1,
        };
        if bad || !arity_ok || n.inputs.iter().any(|&i| i >= graph.nodes.len()) {
            return Err(TrainError::Unsupported { node: n.name.clone(), op: n.op.kind_name().to_string() });
        }
    }
    Ok(())
}

/// NCHW ↔ NHWC for one batch of `s`-shaped samples.
fn to_nhwc(x: &[f32], s: Shape) -> Vec<f32> {
    let hw = s.h * s.w;
    let mut y = vec![0.0; x.len()];
    for (ys, xs) in y.chunks_exact_mut(s.numel()).zip(x.chunks_exact(s.numel())) {
        for c in 0..s.c {
            for p in 0..hw {
                ys[p * s.c + c] = xs[c * hw + p];
            }
        }
    }
    y
}

fn to_nchw(x: &[f32], s: Shape) -> Vec<f32> {
    let hw = s.h * s.w;
    let mut y = vec![0.0; x.len()];
    for (ys, xs) in y.chunks_exact_mut(s.numel()).zip(x.chunks_exact(s.numel())) {
        for c in 0..s.c {
            for p in 0..hw {
                ys[c * hw + p] = xs[p * s.c + c];
            }
        }
    }
    y
}

impl CpuTrainer {
    /// The engine a [`crate::run::TrainConfig`] asks for (the factory `train`/`resume` take).
    pub fn for_run(graph: &Graph, weights: &Weights, cfg: &crate::run::TrainConfig) -> Result<Self, TrainError> {
        if cfg.precision != crate::run::Precision::Fp32 {
            return Err(TrainError::Config(format!("the CPU engine trains fp32; {} is for --device cuda", cfg.precision.name())));
        }
        Self::new(graph, weights, TrainerConfig::for_run(cfg))
    }
}

impl Replica for CpuTrainer {
    fn set_shard(&mut self, shard: Shard) {
        self.shard = shard;
    }

    fn abort_group(&self) {
        if let Some(g) = &self.group {
            g.abort();
        }
    }
}
