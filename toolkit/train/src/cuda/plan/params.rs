//! The parameter buffer: weights packed in device layout and back, the 16-bit copy the convs read,
//! and the launches that update it (optimizer step, EMA).

use effv2_edge::graph::{Graph, Op};
use effv2_edge::weights::Weights;
use effv2_runtime::plan::launch::{Arg, DType};
use effv2_runtime::plan::layout::{depthwise_to_hwc, oihw_to_ohwi};

use super::{infer, narrow_args, train, Buffers, TrainLaunch, TrainLayout};
use crate::optim::Optimizer;
use crate::TrainError;

impl TrainLayout {
    /// The parameter buffer's bytes for `weights` (checked against the graph first).
    pub fn pack_weights(&self, graph: &Graph, weights: &Weights) -> Result<Vec<u8>, TrainError> {
        weights.check(graph)?;
        self.pack(graph, |id| Ok(weights.get(&graph.params[id].name)?.data().to_vec()))
    }

    /// A parameter-shaped tensor (weight, optimizer slot, EMA shadow) in the device's layout:
    /// OHWI for convs, `[k·k, C]` for depthwise, the rest as the graph has it.
    pub fn to_device_layout(graph: &Graph, id: usize, data: &[f32]) -> Vec<f32> {
        match conv_of(graph, id) {
            Some(c) if c.is_depthwise() => depthwise_to_hwc(data, c.out_ch, c.kernel),
            Some(c) => oihw_to_ohwi(data, c.out_ch, c.in_ch / c.groups, c.kernel),
            None => data.to_vec(),
        }
    }

    /// Every parameter-shaped tensor, `get(id)` in the graph's layout, as one buffer laid out like
    /// the parameters ([`TrainLayout::param_at`]).
    pub fn pack(&self, graph: &Graph, mut get: impl FnMut(usize) -> Result<Vec<f32>, TrainError>) -> Result<Vec<u8>, TrainError> {
        let mut buf = vec![0u8; self.params_bytes];
        for (id, p) in graph.params.iter().enumerate() {
            let data = get(id)?;
            if data.len() != p.numel() {
                return Err(TrainError::Size { what: "parameter-shaped tensor", want: p.numel(), got: data.len() });
            }
            let dev = Self::to_device_layout(graph, id, &data);
            buf[self.param_at[id]..][..4 * dev.len()].copy_from_slice(&dev.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        }
        Ok(buf)
    }

    /// Parameter `id` out of a buffer laid out like the parameters, in the graph's layout.
    pub fn unpack(&self, graph: &Graph, buf: &[u8], id: usize) -> Vec<f32> {
        let n = graph.params[id].numel();
        let dev: Vec<f32> = buf[self.param_at[id]..][..4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Self::to_graph_layout(graph, id, &dev)
    }

    /// A parameter from device layout back to the graph's (OIHW convs; the rest is unchanged).
    pub fn to_graph_layout(graph: &Graph, id: usize, dev: &[f32]) -> Vec<f32> {
        let Some(c) = conv_of(graph, id) else { return dev.to_vec() };
        let (o, i, k) = (c.out_ch, c.in_ch / c.groups, c.kernel);
        let mut w = vec![0.0; dev.len()];
        for oc in 0..o {
            for ic in 0..i {
                for t in 0..k * k {
                    // OHWI (groups 1) or [k·k, C] (depthwise: i = 1, the channel is oc).
                    w[(oc * i + ic) * k * k + t] = if c.is_depthwise() { dev[t * o + oc] } else { dev[(oc * k * k + t) * i + ic] };
                }
            }
        }
        w
    }

    /// Where the convs and the classifier read weight `id`: the f32 parameter, or its bf16 copy.
    pub(super) fn weight(&self, b: &Buffers, id: usize) -> u64 {
        match self.dtype {
            DType::F32 => b.params + self.param_at[id] as u64,
            _ => b.weights16 + (self.param_at[id] / 2) as u64,
        }
    }

    /// Mixed precision: the bf16 copy of the whole parameter buffer (`weights16`, element for
    /// element) from the f32 one, after every change of the weights; `None` in f32.
    pub fn refresh_weights16(&self, params: u64, weights16: u64) -> Option<TrainLaunch> {
        let n = self.params_bytes / 4;
        (self.dtype != DType::F32).then(|| infer("nchw_to_nhwc", n, narrow_args(params, weights16, n)))
    }

    /// One optimizer update of every trainable parameter from its gradient at `grads`, in two
    /// launches (with and without weight decay: each a contiguous range, alignment gaps zero). The
    /// optimizer's slots live in buffers laid out like the parameters (`slots[k]` for slot `k` of
    /// [`Optimizer::slot_names`]); weight decay as [`decays`](crate::optim::decays) says.
    #[allow(clippy::too_many_arguments)]
    pub fn optimizer_step(&self, opt: &Optimizer, params: u64, grads: u64, slots: &[u64], lr: f32, weight_decay: f32) -> Vec<TrainLaunch> {
        let mut out = vec![];
        for (from, to, wd) in [(0, self.decayed_bytes, weight_decay), (self.decayed_bytes, self.grads_bytes, 0.0)] {
            if to == from {
                continue;
            }
            let (at, n) = (from as u64, (to - from) / 4);
            let (w, g) = (Arg::Ptr(params + at), Arg::Ptr(grads + at));
            let slot = |k: usize| Arg::Ptr(slots[k] + at);
            out.push(match *opt {
                Optimizer::RmsProp { decay, momentum, eps } => {
                    train("rmsprop_step", n, vec![w, g, slot(0), slot(1), Arg::I64(n as i64), Arg::F32(lr), Arg::F32(decay), Arg::F32(momentum), Arg::F32(eps), Arg::F32(wd)])
                }
                Optimizer::Sgd { momentum, nesterov } => train("sgd_step", n, vec![w, g, slot(0), Arg::I64(n as i64), Arg::F32(lr), Arg::F32(momentum), Arg::I32(nesterov as i32), Arg::F32(wd)]),
            });
        }
        out
    }

    /// The optimizer's slots at their initial values, laid out like the parameters.
    pub fn initial_slots(&self, graph: &Graph, opt: &Optimizer) -> Vec<Vec<u8>> {
        (0..opt.slot_names().len())
            .map(|k| self.pack(graph, |id| Ok(opt.init_slots(graph.params[id].numel()).swap_remove(k))).expect("slots sized from the params"))
            .collect()
    }

    /// `shadow ← shadow − (1−decay)·(shadow − value)` over the whole parameter buffer (weights and
    /// BN statistics, as the CPU engine; alignment padding is zero on both sides).
    pub fn ema_update(&self, shadow: u64, params: u64, decay: f32) -> TrainLaunch {
        let n = self.params_bytes / 4;
        train("ema_update", n, vec![Arg::Ptr(shadow), Arg::Ptr(params), Arg::I64(n as i64), Arg::F32(decay)])
    }
}

/// The conv whose weight parameter `id` is.
fn conv_of(graph: &Graph, id: usize) -> Option<effv2_edge::graph::Conv> {
    graph.nodes.iter().find_map(|n| match &n.op {
        Op::Conv(c) if c.weight == id => Some(c.clone()),
        _ => None,
    })
}
