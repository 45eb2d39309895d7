//! The CUDA training engine's own kernels (everything but the convolutions, which are cuDNN's):
//! CUDA C compiled by NVRTC at run time, like the inference engine's (`effv2_runtime::cuda`);
//! `plan` lowers a graph to launch lists over raw addresses and `engine` (feature `cuda`) runs
//! them on a GPU. The kernels and the launch lists are checked against this crate's CPU maths by
//! running them as host C++ (`tests/cuda_train_kernels.rs`, `tests/cuda_train_plan.rs`) and
//! compiled with the real NVRTC in CI.

#[cfg(feature = "cuda")]
pub mod engine;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod plan;

/// Source of the kernels, one `extern "C"` entry point per name in [`TRAIN_KERNEL_NAMES`]; compiled
/// after the runtime's `precision.cu` (see [`train_kernels_source`]).
pub const TRAIN_KERNELS: &str = include_str!("train_kernels.cu");

/// What NVRTC (or g++, for the host tests) compiles: the activation type's definitions, then the
/// kernels. The type itself comes from the defines of [`effv2_runtime::plan::launch::DType`].
pub fn train_kernels_source() -> String {
    format!("{}{TRAIN_KERNELS}", effv2_runtime::plan::launch::PRECISION_CU)
}

pub const TRAIN_KERNEL_NAMES: [&str; 23] = [
    "chan_partials",
    "chan_partials_masked",
    "chan_regroup",
    "chan_finish",
    "bn_finalize",
    "bn_eval_invstd",
    "bn_apply",
    "bn_apply_add",
    "bn_backward_dx",
    "bn_finish",
    "act_backward",
    "depthwise_backward_dx",
    "depthwise_backward_dw",
    "depthwise_dw_finish",
    "pool_backward",
    "gate_mul_backward_dgate",
    "apply_mask",
    "copy",
    "crop",
    "softmax_xent",
    "rmsprop_step",
    "sgd_step",
    "ema_update",
];

/// Rows per f64 partial sum of the per-channel reductions (`chan_partials`): short chains and
/// many threads (a thread adds its chunk's rows one after another); the partials are then
/// regrouped ([`CHAN_GROUP`]) and summed in order. Not the CPU engine's chunk: the two sum f64s
/// in different orders, which moves the f32 results by an ulp at most.
pub const CHAN_CHUNK_ROWS: usize = 64;
/// Threads a per-channel sum's launch keeps where it can by taking fewer rows a partial
/// ([`plan::Lowering::chan_rows`]): about what an H100/H200 holds resident at the sums' 128 registers.
pub const CHAN_MIN_THREADS: usize = 1 << 16;
/// Chunk partials per first-level sum (`chan_regroup`) where a reduction has more chunks.
pub const CHAN_GROUP: usize = 64;
/// Output rows per f64 partial sum of a depthwise filter gradient (`depthwise_backward_dw`): its
/// wide path has a thread per 8 channels, so shorter chunks keep enough threads for the small
/// late-stage images (S at 224: 7x7, 1536 channels).
pub const DW_CHUNK_ROWS: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_kernel_is_defined_once() {
        for name in TRAIN_KERNEL_NAMES {
            let def = format!("__global__ void {name}(");
            assert_eq!(TRAIN_KERNELS.matches(&def).count(), 1, "{name}");
        }
        assert_eq!(TRAIN_KERNELS.matches("__global__ void").count(), TRAIN_KERNEL_NAMES.len());
    }
}
