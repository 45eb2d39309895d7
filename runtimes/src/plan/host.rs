//! Replaying launch lists on the host, for tests on machines without a GPU: the CUDA sources
//! compiled as C++ by g++ with `host_harness.cpp` (every kernel behind a `host_<name>` entry that
//! takes CUDA's kernel parameter array; plain loops for the cuDNN conv and the cuBLAS gemm), loaded
//! with dlopen. Behind the `host-replay` feature: only tests want it.

use std::path::{Path, PathBuf};

use std::ffi::c_void;

use libloading::{Library, Symbol};

use super::launch::{grid, Arg, BlasGemm, ConvShape, DType, BLOCK};

type HostKernel = unsafe extern "C" fn(u32, u32, *mut *mut std::ffi::c_void);
// Operands are of the build's element type (f32, or 16-bit words in a half / bf16 build).
type HostConv = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, *const c_void, *const c_void, *mut c_void);
type HostGemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, *const c_void, *const c_void, *mut c_void);

/// The inference kernels' harness (this crate's `host_harness.cpp`).
pub fn inference_harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backends/cuda/host_harness.cpp")
}

pub struct HostKernels {
    lib: Library,
}

impl HostKernels {
    /// Compiles `main` (a harness .cpp) into `dir` with each `(macro, source)` written to a file
    /// whose quoted path the macro names; the inference kernels' source is always `KERNELS_CU`.
    /// An f32 build (the training harness's); [`HostKernels::compile_for`] picks the element type.
    pub fn compile(main: &Path, sources: &[(&str, &str)], dir: &Path) -> Result<HostKernels, String> {
        Self::compile_for(main, sources, DType::F32, dir)
    }

    /// As [`HostKernels::compile`], with activations (and the conv / gemm stand-ins' operands)
    /// of `dtype`, as the engine's kernels are compiled for it.
    pub fn compile_for(main: &Path, sources: &[(&str, &str)], dtype: DType, dir: &Path) -> Result<HostKernels, String> {
        let mut cmd = std::process::Command::new("g++");
        cmd.args(["-O2", "-shared", "-fPIC", "-std=c++17"]);
        cmd.args(dtype.kernel_defines());
        let infer = [("KERNELS_CU", concat!(include_str!("../backends/cuda/precision.cu"), include_str!("../backends/cuda/kernels.cu")))];
        for (i, (name, src)) in infer.iter().chain(sources).enumerate() {
            let file = dir.join(format!("source{i}.cu"));
            std::fs::write(&file, src).map_err(|e| format!("{}: {e}", file.display()))?;
            cmd.arg(format!("-D{name}=\"{}\"", file.display()));
        }
        cmd.arg(format!("-DINFER_HARNESS=\"{}\"", inference_harness().display()));
        let so = dir.join("libeffv2_host_kernels.so");
        let out = cmd.arg(main).arg("-o").arg(&so).output().map_err(|e| format!("g++ (Debian's g++ is on every machine of this project): {e}"))?;
        if !out.status.success() {
            return Err(format!("g++: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(HostKernels { lib: unsafe { Library::new(&so) }.map_err(|e| e.to_string())? })
    }

    fn sym<T>(&self, name: &str) -> Symbol<'_, T> {
        unsafe { self.lib.get(name.as_bytes()) }.unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Kernel `name` over `total` elements with the launch's arguments, each in an 8-byte slot.
    ///
    /// # Safety
    /// The arguments' addresses are host buffers of the sizes the kernel reads and writes.
    pub unsafe fn kernel(&self, name: &str, total: usize, args: &[Arg]) {
        let f: Symbol<HostKernel> = self.sym(&format!("host_{name}"));
        let mut slots: Vec<u64> = args.iter().map(|a| a.slot()).collect();
        let mut ptrs: Vec<*mut std::ffi::c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut _).collect();
        unsafe { f(grid(total), BLOCK, ptrs.as_mut_ptr()) };
    }

    /// cuDNN's conv as the engine sets it up: `c = conv(a, b)` (x, w → y).
    ///
    /// # Safety
    /// Host buffers of the shape's sizes.
    pub unsafe fn conv(&self, s: ConvShape, x: u64, w: u64, y: u64) {
        unsafe { self.conv_like("host_conv_nhwc", s, x, w, y) }
    }

    /// cuDNN's backward data (dy, w → dx) for the same setup; added to `dx` (β = 1) where
    /// `accumulate`.
    ///
    /// # Safety
    /// As [`HostKernels::conv`].
    pub unsafe fn conv_backward_data(&self, s: ConvShape, dy: u64, w: u64, dx: u64, accumulate: bool) {
        let name = if accumulate { "host_conv_bwd_data_add_nhwc" } else { "host_conv_bwd_data_nhwc" };
        unsafe { self.conv_like(name, s, dy, w, dx) }
    }

    /// cuDNN's backward filter (x, dy → dw) for the same setup.
    ///
    /// # Safety
    /// As [`HostKernels::conv`].
    pub unsafe fn conv_backward_filter(&self, s: ConvShape, x: u64, dy: u64, dw: u64) {
        unsafe { self.conv_like("host_conv_bwd_filter_nhwc", s, x, dy, dw) }
    }

    unsafe fn conv_like(&self, name: &str, s: ConvShape, a: u64, b: u64, c: u64) {
        let f: Symbol<HostConv> = self.sym(name);
        let d = [s.n, s.c, s.h, s.w, s.out_ch, s.oh, s.ow, s.kernel, s.stride, s.pad[0], s.pad[1], s.groups].map(|v| v as i32);
        unsafe { f(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], a as *const c_void, b as *const c_void, c as *mut c_void) };
    }

    /// cuBLAS's gemm with the engine's parameters.
    ///
    /// # Safety
    /// Host buffers of the sizes the parameters address.
    pub unsafe fn gemm(&self, g: BlasGemm, a: u64, b: u64, c: u64) {
        let f: Symbol<HostGemm> = self.sym("host_blas_gemm");
        let d = [g.trans_a as usize, g.trans_b as usize, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.c_f32 as usize, g.accumulate as usize].map(|v| v as i32);
        unsafe { f(d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], a as *const c_void, b as *const c_void, c as *mut c_void) };
    }
}
