//! cuBLAS for the matrix products of the plan (the classifier and the SE projections: 1x1 convs
//! on a 1x1 image, where a cuDNN conv only adds overhead): `y = x · wᵀ`, row-major, f32
//! accumulation, on the engine's stream with a fixed workspace so CUDA-graph capture never sees
//! cuBLAS allocate.

use std::sync::Arc;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{result, CudaBlas};
use cudarc::driver::{CudaSlice, CudaStream};

use super::cudnn::DType;
use super::engine::{fail, ptr};
use crate::plan::launch::BlasGemm;

/// Workspace cuBLAS may use (its documented recommendation for Hopper is 32 MiB).
const WORKSPACE: usize = 32 << 20;

pub struct Blas {
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    /// f32 products on TF32 tensor cores (10-bit mantissa inputs, f32 sums), as PyTorch's
    /// `allow_tf32`; off, f32 stays f32.
    tf32: bool,
}

impl Blas {
    /// `tf32`: f32 products may round their inputs to TF32 (see [`Blas::gemm`]).
    pub fn new(stream: &Arc<CudaStream>, tf32: bool) -> Result<Blas, String> {
        let blas = CudaBlas::new(stream.clone()).map_err(|e| fail("creating the cuBLAS handle", e))?;
        let ws = stream.alloc_zeros::<u8>(WORKSPACE).map_err(|e| fail("allocating the cuBLAS workspace", e))?;
        let p = ptr(&ws, stream);
        unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), p as *mut _, WORKSPACE) }
            .result()
            .map_err(|e| fail("setting the cuBLAS workspace", e))?;
        Ok(Blas { blas, _workspace: ws, tf32 })
    }

    /// `c = op(a) · op(b)` as `g` says, on device addresses, elements of `dtype` (`c` f32 where
    /// `g.c_f32`: cuBLAS takes 16-bit inputs with an f32 output and f32 sums); for a plan's
    /// `y = x · wᵀ` that is [`BlasGemm::for_linear`] with a = w, b = x, c = y (the host replay
    /// checks those parameters).
    ///
    /// # Safety
    /// The addresses hold buffers of those shapes on the handle's device.
    pub unsafe fn gemm(&self, dtype: DType, g: BlasGemm, a: u64, b: u64, c: u64) -> Result<(), String> {
        let ty = match dtype {
            DType::F32 => cudaDataType::CUDA_R_32F,
            DType::F16 => cudaDataType::CUDA_R_16F,
            DType::Bf16 => cudaDataType::CUDA_R_16BF,
        };
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let (alpha, beta) = (1.0f32, if g.accumulate { 1.0f32 } else { 0.0 });
        unsafe {
            result::gemm_ex(
                *self.blas.handle(),
                op(g.trans_a),
                op(g.trans_b),
                g.m as i32,
                g.n as i32,
                g.k as i32,
                &alpha as *const f32 as *const _,
                a as *const _,
                ty,
                g.lda as i32,
                b as *const _,
                ty,
                g.ldb as i32,
                &beta as *const f32 as *const _,
                c as *mut _,
                if g.c_f32 { cudaDataType::CUDA_R_32F } else { ty },
                g.ldc as i32,
                // f32 accumulation; f32 products use TF32 only when asked (the fp32 plans stay
                // within 1e-4 of the reference).
                if self.tf32 && dtype == DType::F32 { cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32 } else { cublasComputeType_t::CUBLAS_COMPUTE_32F },
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| fail("cuBLAS gemm", e))
    }
}
