//! The CUDA engine's kernels compile with the real NVRTC (no GPU or driver needed) for the data
//! types and GPU generations we ship to: H100/H200 (sm_90) and Jetson Orin (sm_87).
//! scripts/test.sh installs NVRTC from PyPI and sets EFFV2_REQUIRE_NVRTC=1, so CI cannot skip this.
#![cfg(feature = "cuda")]

use effv2_runtime::cuda::{compile_kernels, nvrtc_for_tests, DType};
use effv2_runtime::plan::launch::KERNEL_NAMES;
#[cfg(feature = "host-replay")]
use effv2_runtime::plan::ptxas::{ptxas_for_tests, without_local_memory};

#[test]
fn kernels_compile_for_f32_f16_and_bf16_on_hopper_and_orin() {
    if !nvrtc_for_tests() {
        return;
    }
    for dtype in [DType::F32, DType::F16, DType::Bf16] {
        for arch in ["compute_90", "compute_87"] {
            let ptx = compile_kernels(dtype, Some(arch.into())).unwrap_or_else(|e| panic!("{dtype:?} {arch}: {e}")).to_src();
            for k in KERNEL_NAMES {
                assert!(ptx.contains(&format!(".entry {k}(")), "{dtype:?} {arch}: no entry {k}");
            }
            // Half builds convert through f16 registers; bf16 builds widen with a 16-bit shift
            // (and a 16-bit load); f32 builds do neither.
            assert_eq!(ptx.contains("cvt.f32.f16"), dtype == DType::F16, "{dtype:?} {arch}");
            assert_eq!(ptx.contains("ld.global.u16") || ptx.contains("ld.global.nc.u16"), dtype != DType::F32, "{dtype:?} {arch}");
        }
    }
}

/// The depthwise kernels built with k at run time for every size (`EFFV2_CUDA_DW_UNROLL=0`, the
/// A/B timing's other arm) compile too, and differ from the default build.
#[test]
fn the_depthwise_kernels_compile_with_k_at_run_time_too() {
    if !nvrtc_for_tests() {
        return;
    }
    let src = |extra: &[&str]| {
        let mut options = DType::Bf16.kernel_defines();
        options.extend(extra.iter().map(|s| s.to_string()));
        effv2_runtime::cuda::compile_source(effv2_runtime::cuda::KERNELS, "k.cu", options, Some("compute_90".into())).unwrap().to_src()
    };
    let (unrolled, runtime_k) = (src(&[]), src(&["-DEFFV2_DW_RUNTIME_K"]));
    let loads = |ptx: &str| ptx.matches("ld.global.nc.v4").count() + ptx.matches("ld.global.v4").count();
    assert!(loads(&runtime_k) < loads(&unrolled), "{} vs {}", loads(&runtime_k), loads(&unrolled));
}

/// Every kernel keeps its values in registers (no stack frame, no spills) for each data type on
/// both GPU generations, as NVIDIA's assembler builds them: local memory would make a kernel
/// several times slower with the same outputs, which no replay can see.
#[cfg(feature = "host-replay")]
#[test]
fn no_kernel_uses_local_memory() {
    let Some(ptxas) = ptxas_for_tests() else { return };
    if !nvrtc_for_tests() {
        return;
    }
    for dtype in [DType::F32, DType::F16, DType::Bf16] {
        for (arch, sm) in [("compute_90", "sm_90"), ("compute_87", "sm_87")] {
            let ptx = compile_kernels(dtype, Some(arch.into())).unwrap().to_src();
            let kernels = without_local_memory(&ptxas, &ptx, sm).unwrap_or_else(|e| panic!("{dtype:?} {e}"));
            assert_eq!(kernels.len(), effv2_runtime::plan::launch::KERNEL_NAMES.len(), "{dtype:?} {sm}");
            for k in &kernels {
                println!("{dtype:?} {sm} {:<16} {:>3} registers", k.name, k.registers);
            }
        }
    }
}
