//! A training graph lowered to the CUDA training engine's forward launches over raw addresses, with
//! no GPU code (as `effv2_runtime::plan::launch` does for inference): every value of the graph
//! kept in one f32 NHWC arena (the backward reads them), parameters in device layout (OHWI convs,
//! `[k·k, C]` depthwise), BN statistics in scratch, masks from the host. The same launches run on
//! the device or, in tests, on the host with the kernels compiled as C++.
//!
//! The forward (training or eval mode) and the backward; `super::engine` runs them on a GPU.
//!
//! `layout` places everything (arena, parameters, masks), `fusion` finds what the lists fuse,
//! `forward` / `backward` / `sums` write the launches, `params` packs weights and updates them.

mod backward;
mod forward;
mod fusion;
mod layout;
mod lowering;
mod params;
mod row_product;
mod sums;

use effv2_edge::graph::Shape;
use effv2_runtime::plan::launch::{kernel_threads, to_nhwc_args, wide_threads, Arg, BlasGemm, ConvShape, DType, PaddedInto};

pub use lowering::{Lowering, CHAN_MIN_CHUNK_ROWS};
use super::CHAN_GROUP;
use crate::parallel::Shard;

/// Which kernel source a launch's function comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `effv2_runtime::cuda::KERNELS` (f32 build): shared with inference.
    Infer(&'static str),
    /// [`super::TRAIN_KERNELS`].
    Train(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub enum TrainLaunch {
    /// A kernel over `total` elements (grid-stride; any launch shape).
    Kernel { kernel: Kernel, total: usize, args: Vec<Arg> },
    /// cuDNN forward conv, NHWC, OHWI filter, symmetric padding.
    Conv { shape: ConvShape, x: u64, w: u64, y: u64 },
    /// cuDNN backward data of that conv: `dx` from `dy` and the filter, or added to `dx`
    /// (β = 1) where `accumulate`.
    ConvBackwardData { shape: ConvShape, dy: u64, w: u64, dx: u64, accumulate: bool },
    /// cuDNN backward filter: `dw` from the input and `dy`.
    ConvBackwardFilter { shape: ConvShape, x: u64, dy: u64, dw: u64 },
    /// cuBLAS: `c = op(a) · op(b)`.
    Gemm { g: BlasGemm, a: u64, b: u64, c: u64 },
    /// Data parallelism: sum `count` elements at `ptr` over the replicas' group, in place (NCCL).
    AllReduce { ptr: u64, count: usize, dtype: Summed },
}

/// Element type of an [`TrainLaunch::AllReduce`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Summed {
    F32,
    F64,
}

/// Addresses of the buffers a launch list works on (device memory, or host memory in tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    /// Activations, their gradients and scratch ([`TrainLayout::arena_bytes`]).
    pub arena: u64,
    /// f32 parameters (master weights, BN statistics) in device layout.
    pub params: u64,
    /// Mixed precision: the 16-bit copy of `params` the convolutions and the classifier read
    /// (element `i` of `params` at element `i`; see [`TrainLayout::refresh_weights16`]). Unused in f32.
    pub weights16: u64,
    /// f32 parameter gradients ([`TrainLayout::pgrad_at`]).
    pub grads: u64,
    /// f32 dropout / drop-path masks.
    pub masks: u64,
    /// f32 NCHW input, f32 logits, f32 dLoss/dLogits.
    pub input: u64,
    pub logits: u64,
    pub dlogits: u64,
}

/// Where every value, parameter and statistic lives for one graph and batch size. Offsets are in
/// bytes from the start of their buffer (arena, params, masks).
pub struct TrainLayout {
    pub batch: usize,
    /// Storage of activations and their gradients: f32, or bf16 for mixed precision (then the
    /// convs and the classifier read a bf16 copy of the weights; everything else stays f32).
    pub dtype: DType,
    /// Each node's output value in the arena (NHWC, `dtype`).
    pub value_at: Vec<usize>,
    /// Padded-input scratch (asymmetric "same" padding for cuDNN), `dtype`.
    pub pad_at: usize,
    /// Mixed precision: a weight gradient as cuDNN writes it (bf16) before it is widened
    /// into `grads`, and dLoss/dLogits narrowed to bf16.
    pub wgrad16_at: usize,
    pub dlogits16_at: usize,
    /// f64 per-channel partial sums (two per channel, see `chan_partials`).
    pub partials_at: usize,
    /// Second-level f64 partials of the per-channel sums (`chan_regroup`), and how many chunk
    /// partials each of them adds ([`CHAN_GROUP`]; see [`TrainLayout::with_lowering`]).
    pub partials2_at: usize,
    pub chan_group: usize,
    /// The two f64 per-channel sums being computed, `[2, C]`: a BN's mean and mean square, or
    /// Σdy and Σdy·x̂ in its backward (a bias gradient uses the first).
    pub sums64_at: usize,
    /// Per BN node: saved f32 mean and invstd (what its backward reads).
    pub bn_saved_at: Vec<Option<(usize, usize)>>,
    /// Per BN node whose output only an activation reads: that node and its activation code. The
    /// BN writes the activation's output directly (`bn_apply` with the activation), and its
    /// backward starts from the activation's gradient (the BN output recomputed from its input):
    /// the BN's own value and gradient are never stored, two passes over the tensor fewer each way.
    pub fused_act: Vec<Option<(usize, i32)>>,
    /// Per drop-path / dropout node read only by a residual Add (one such mask per Add): that Add,
    /// which applies the mask both ways — forward `x · mask + skip` from the mask's input, so the
    /// masked value is never stored; backward its own gradient times the mask straight into the
    /// mask's input gradient, so the mask node has no gradient (a copy of the Add's) either.
    pub mask_into_add: Vec<Option<usize>>,
    /// Per node whose last reader is a residual Add that hands it its gradient unchanged (the
    /// Add's input that is not a [`TrainLayout::mask_into_add`] mask; one per Add): that Add, whose
    /// gradient slot is this node's too, so the Add's backward copies nothing.
    pub grad_of_add: Vec<Option<usize>>,
    /// Per global-average pool of an SE block (its input read by it and by the gate multiply
    /// alone): that multiply, whose input gradient (dy · gate) the pool's backward writes with its
    /// own in one pass, so the multiply's gradient and the gate's value live until then.
    pub se_mul_of_pool: Vec<Option<usize>>,
    /// Per BN (without a fused activation) whose output only a residual Add reads, directly or
    /// through a drop-path the Add applies ([`TrainLayout::mask_into_add`]): that Add, whose output
    /// `bn_apply_add` writes (BN(x) · mask + skip) — the BN's output is never stored (its backward
    /// reads its input), and the Add launches nothing.
    pub bn_into_add: Vec<Option<usize>>,
    /// Per such BN whose branch reaches its Add through a drop-path: that mask node. The BN's
    /// backward reads the Add's gradient times the mask itself, so the BN keeps no gradient.
    pub bn_add_mask: Vec<Option<usize>>,
    /// A zero f32 bias for depthwise convs without one.
    pub zeros_at: usize,
    pub arena_bytes: usize,
    /// Each parameter in device layout, f32, in a buffer of `params_bytes` (what
    /// [`TrainLayout::pack_weights`] fills; optimizer slots and EMA shadows are laid out alike).
    pub param_at: Vec<usize>,
    pub params_bytes: usize,
    /// What the launch lists fuse or hand to cuBLAS.
    pub lowering: Lowering,
    /// Threads the row-tiled kernels (bias_act, bn_apply, bn_backward_dx) keep at least
    /// (`effv2_runtime::plan::launch::row_tile`; tests set 0 to tile every launch).
    pub tile_min_threads: usize,
    /// Bytes of the parameters with weight decay, which lead the buffer (the other trainable ones
    /// follow, up to `grads_bytes`, then the BN statistics).
    pub decayed_bytes: usize,
    /// Each value's gradient in the arena (NHWC, `dtype`; none for the input), a scratch gradient for
    /// second contributions, and each trainable parameter's gradient in `grads` (device layout).
    pub grad_at: Vec<Option<usize>>,
    /// The step of the training pass through which each node's value and gradient keep their
    /// arena bytes (node i's forward is step i, its backward step 2n − 1 − i; see
    /// `plan_values_and_grads` in layout.rs).
    pub kept_until: Kept,
    pub tmp_at: usize,
    pub pgrad_at: Vec<Option<usize>>,
    pub grads_bytes: usize,
    /// Each dropout / drop-path node's mask in the mask buffer (f32), `mask_len` floats in all.
    pub mask_at: Vec<Option<usize>>,
    pub mask_len: usize,
    /// Data parallelism: which rows of the global batch this replica's `batch` are. When set
    /// (`global` > 0), BN statistics and the backward's per-channel sums are summed over the group
    /// by [`TrainLaunch::AllReduce`]s (synchronised BN), and so are the parameter gradients at the
    /// end of the backward; masks are the global batch's draws, this shard's rows.
    pub shard: Shard,
}

/// [`TrainLayout::kept_until`]: per node, steps (for a gradient with no slot of its own, its node's
/// backward: never read).
#[derive(Clone, Debug, Default)]
pub struct Kept {
    pub value: Vec<usize>,
    pub grad: Vec<usize>,
}

fn align(n: usize) -> usize {
    n.next_multiple_of(256)
}

fn geom(s: Shape) -> [usize; 3] {
    [s.c, s.h, s.w]
}

/// `nchw_to_nhwc`'s arguments narrowing `n` f32 values at `from` to the activation type at `to`.
fn narrow_args(from: u64, to: u64, n: usize) -> Vec<Arg> {
    to_nhwc_args(from, to, n, [1, 1, 1], PaddedInto::none(1, 1))
}

fn infer(name: &'static str, total: usize, args: Vec<Arg>) -> TrainLaunch {
    TrainLaunch::Kernel { kernel: Kernel::Infer(name), total, args }
}

/// An inference kernel over `total` elements of `c` channels, in as many threads as its vector
/// path takes ([`kernel_threads`]).
fn infer_wide(name: &'static str, total: usize, c: usize, args: Vec<Arg>) -> TrainLaunch {
    infer(name, kernel_threads(name, total, c), args)
}

/// A training kernel over `total` elements of `c` channels, in as many threads as its vector path
/// in train_kernels.cu takes ([`wide_threads`]: by `c` for the kernels whose wide path needs whole
/// VECs of channels (or of a drop-path mask's elements, for `apply_mask`), by elements else).
fn train_wide(name: &'static str, total: usize, c: usize, args: Vec<Arg>) -> TrainLaunch {
    let by_c = matches!(name, "depthwise_backward_dx" | "depthwise_backward_dw" | "pool_backward" | "apply_mask" | "crop");
    let unit = if by_c { c } else { total };
    train(name, wide_threads(total, unit), args)
}

fn train(name: &'static str, total: usize, args: Vec<Arg>) -> TrainLaunch {
    TrainLaunch::Kernel { kernel: Kernel::Train(name), total, args }
}

/// The kernels' activation codes (`effv2_runtime::plan::Act`).
fn act_code(k: effv2_edge::graph::ActKind) -> i32 {
    use effv2_edge::graph::ActKind::*;
    match k {
        Silu => 1,
        Relu6 => 2,
        Sigmoid => 3,
    }
}
