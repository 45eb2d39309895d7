//! cuDNN convolutions on raw device pointers: the engine owns one activation arena, so operands
//! are addresses inside it rather than typed slices. Descriptors are made once per conv at load.

use cudarc::cudnn::result::{self as cr, CudnnError};
use cudarc::cudnn::sys;
use cudarc::driver::CudaStream;

use std::ffi::c_void;

pub use crate::plan::launch::{ConvShape, DType};
use std::sync::Arc;

pub struct Handle(pub sys::cudnnHandle_t);

impl Handle {
    pub fn new(stream: &Arc<CudaStream>) -> Result<Handle, CudnnError> {
        let h = Handle(cr::create_handle()?);
        unsafe { cr::set_stream(h.0, stream.cu_stream() as *mut _) }?;
        Ok(h)
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = unsafe { cr::destroy_handle(self.0) };
    }
}

fn cudnn_type(d: DType) -> sys::cudnnDataType_t {
    match d {
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        DType::Bf16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
    }
}

pub struct Conv {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    pub shape: ConvShape,
    pub algo: sys::cudnnConvolutionFwdAlgo_t,
    pub workspace: usize,
}

fn dim(v: usize) -> i32 {
    v as i32
}

impl Conv {
    /// Descriptors and the heuristically best algorithm that needs at most `max_workspace` bytes.
    /// `tf32`: an f32 conv may run on TF32 tensor cores (PyTorch's `allow_tf32`, on by default
    /// there for convs); otherwise f32 stays f32.
    pub fn new(h: &Handle, s: ConvShape, dtype: DType, max_workspace: usize, tf32: bool) -> Result<Conv, CudnnError> {
        let nhwc = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
        let mut conv = Conv {
            x: cr::create_tensor_descriptor()?,
            y: cr::create_tensor_descriptor()?,
            w: cr::create_filter_descriptor()?,
            conv: cr::create_convolution_descriptor()?,
            shape: s,
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            workspace: 0,
        };
        unsafe {
            cr::set_tensor4d_descriptor(conv.x, nhwc, cudnn_type(dtype), [s.n, s.c, s.h, s.w].map(dim))?;
            cr::set_tensor4d_descriptor(conv.y, nhwc, cudnn_type(dtype), [s.n, s.out_ch, s.oh, s.ow].map(dim))?;
            cr::set_filter4d_descriptor(conv.w, cudnn_type(dtype), nhwc, [s.out_ch, s.c / s.groups, s.kernel, s.kernel].map(dim))?;
            let st = dim(s.stride);
            // Compute in f32 for every data type ("pseudo-half" for f16 and bf16).
            cr::set_convolution2d_descriptor(
                conv.conv,
                dim(s.pad[0]),
                dim(s.pad[1]),
                st,
                st,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            )?;
            cr::set_convolution_group_count(conv.conv, dim(s.groups))?;
            // f32 stays f32 (FMA: no TF32 rounding) unless TF32 is asked for (the default math
            // then allows TF32 tensor cores); f16 and bf16 may use tensor cores.
            let math = match dtype {
                DType::F32 if tf32 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
                DType::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
                DType::F16 | DType::Bf16 => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
            };
            cr::set_convolution_math_type(conv.conv, math)?;
            const N: usize = 8;
            let mut count = 0;
            let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); N];
            cr::get_convolution_forward_algorithm(h.0, conv.x, conv.w, conv.conv, conv.y, N as i32, &mut count, perf.as_mut_ptr())?;
            let pick = perf[..count.max(0) as usize]
                .iter()
                .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.memory <= max_workspace)
                .ok_or(CudnnError(sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED))?;
            conv.algo = pick.algo;
            conv.workspace = cr::get_convolution_forward_workspace_size(h.0, conv.x, conv.w, conv.conv, conv.y, conv.algo)?;
        }
        Ok(conv)
    }

    /// Time every algorithm on these buffers (cudnnFind…Ex, like PyTorch's cudnn.benchmark) and keep
    /// the fastest that fits `workspace_len`; on any failure the heuristic choice stays.
    ///
    /// # Safety
    /// As for [`Conv::launch`]; `y` is overwritten.
    pub unsafe fn tune(&mut self, h: &Handle, x: u64, w: u64, y: u64, workspace: u64, workspace_len: usize) {
        const N: usize = 8;
        let mut count = 0;
        let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); N];
        let status = sys::cudnnFindConvolutionForwardAlgorithmEx(
            h.0,
            self.x,
            x as *const c_void,
            self.w,
            w as *const c_void,
            self.conv,
            self.y,
            y as *mut c_void,
            N as i32,
            &mut count,
            perf.as_mut_ptr(),
            workspace as *mut c_void,
            workspace_len,
        );
        if status != sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
            return;
        }
        // Results come fastest first.
        let best = perf[..count.max(0) as usize].iter().find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.memory <= workspace_len);
        if let Some(p) = best {
            if let Ok(ws) = cr::get_convolution_forward_workspace_size(h.0, self.x, self.w, self.conv, self.y, p.algo) {
                (self.algo, self.workspace) = (p.algo, ws);
            }
        }
    }

    /// y = conv(x, w), into `y` (β = 0).
    ///
    /// # Safety
    /// The pointers must address device buffers of this conv's shapes and data type, and
    /// `workspace` at least `self.workspace` bytes.
    pub unsafe fn launch(&self, h: &Handle, x: u64, w: u64, y: u64, workspace: u64, workspace_len: usize) -> Result<(), CudnnError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        cr::convolution_forward(
            h.0,
            &alpha as *const f32 as *const c_void,
            self.x,
            x as *const c_void,
            self.w,
            w as *const c_void,
            self.conv,
            self.algo,
            workspace as *mut c_void,
            workspace_len,
            &beta as *const f32 as *const c_void,
            self.y,
            y as *mut c_void,
        )
    }
}

/// One of cuDNN's candidate algorithms: (algo, status, ms, workspace bytes, determinism).
type Candidate<A> = (A, sys::cudnnStatus_t, f32, usize, sys::cudnnDeterminism_t);

/// The first `count` of a cuDNN perf-result array (forward, backward data and backward filter
/// have one struct each, with the same fields) as [`Candidate`]s.
macro_rules! candidates {
    ($perf:expr, $count:expr) => {
        $perf[..$count.max(0) as usize].iter().map(|p| (p.algo, p.status, p.time, p.memory, p.determinism)).collect::<Vec<Candidate<_>>>()
    };
}

/// From candidates ranked best first (by time when timed), one whose workspace fits: the first
/// deterministic one (a step then replays bit for bit) unless it is over 25% slower than the
/// best, then the best.
fn pick<A: Copy>(cands: &[Candidate<A>], max_workspace: usize, timed: bool) -> Option<A> {
    let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
    let mut fits = cands.iter().filter(|c| c.1 == ok && c.3 <= max_workspace);
    let best = fits.clone().next()?;
    let det = fits.find(|c| c.4 == sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC);
    Some(match det {
        Some(d) if !timed || d.2 <= 1.25 * best.2 => d.0,
        _ => best.0,
    })
}

/// The two backward passes of a [`Conv`] (training). Algorithms are timed by cuDNN once per
/// shape (`tune`, like PyTorch's cudnn.benchmark; cuDNN allocates its own buffers for that) or
/// picked by its heuristics; see [`pick`].
pub struct ConvGrad {
    pub conv: Conv,
    pub data_algo: sys::cudnnConvolutionBwdDataAlgo_t,
    pub filter_algo: sys::cudnnConvolutionBwdFilterAlgo_t,
    /// The larger of the two backward workspaces.
    pub workspace: usize,
}

impl ConvGrad {
    pub fn new(h: &Handle, s: ConvShape, dtype: DType, max_workspace: usize, tune: bool, tf32: bool) -> Result<ConvGrad, CudnnError> {
        let mut conv = Conv::new(h, s, dtype, max_workspace, tf32)?;
        const N: usize = 8;
        let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        let unsupported = CudnnError(sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED);
        unsafe {
            if tune {
                let mut count = 0;
                let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); N];
                if sys::cudnnFindConvolutionForwardAlgorithm(h.0, conv.x, conv.w, conv.conv, conv.y, N as i32, &mut count, perf.as_mut_ptr()) == ok {
                    let c = candidates!(perf, count);
                    if let Some(a) = pick(&c, max_workspace, true) {
                        conv.algo = a;
                        conv.workspace = cr::get_convolution_forward_workspace_size(h.0, conv.x, conv.w, conv.conv, conv.y, a)?;
                    }
                }
            }
            let mut count = 0;
            let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); N];
            let timed = tune && sys::cudnnFindConvolutionBackwardDataAlgorithm(h.0, conv.w, conv.y, conv.conv, conv.x, N as i32, &mut count, perf.as_mut_ptr()) == ok;
            if !timed {
                cr::get_convolution_backward_data_algorithm(h.0, conv.w, conv.y, conv.conv, conv.x, N as i32, &mut count, perf.as_mut_ptr())?;
            }
            let c = candidates!(perf, count);
            let data = pick(&c, max_workspace, timed).ok_or(unsupported)?;
            let data_ws = cr::get_convolution_backward_data_workspace_size(h.0, conv.w, conv.y, conv.conv, conv.x, data)?;

            let mut count = 0;
            let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); N];
            let timed = tune && sys::cudnnFindConvolutionBackwardFilterAlgorithm(h.0, conv.x, conv.y, conv.conv, conv.w, N as i32, &mut count, perf.as_mut_ptr()) == ok;
            if !timed {
                cr::get_convolution_backward_filter_algorithm(h.0, conv.x, conv.y, conv.conv, conv.w, N as i32, &mut count, perf.as_mut_ptr())?;
            }
            let c = candidates!(perf, count);
            let filter = pick(&c, max_workspace, timed).ok_or(unsupported)?;
            let filter_ws = cr::get_convolution_backward_filter_workspace_size(h.0, conv.x, conv.y, conv.conv, conv.w, filter)?;
            let workspace = conv.workspace.max(data_ws).max(filter_ws);
            Ok(ConvGrad { conv, data_algo: data, filter_algo: filter, workspace })
        }
    }

    /// dx = conv's input gradient from dy and the filter (β = 0: `dx` is overwritten), or
    /// dx += it where `accumulate` (β = 1: a second gradient contribution added in place).
    ///
    /// # Safety
    /// As for [`Conv::launch`], with `workspace` at least `self.workspace` bytes.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn backward_data(&self, h: &Handle, dy: u64, w: u64, dx: u64, accumulate: bool, workspace: u64, workspace_len: usize) -> Result<(), CudnnError> {
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let c = &self.conv;
        cr::convolution_backward_data(
            h.0,
            &alpha as *const f32 as *const c_void,
            c.w,
            w as *const c_void,
            c.y,
            dy as *const c_void,
            c.conv,
            self.data_algo,
            workspace as *mut c_void,
            workspace_len,
            &beta as *const f32 as *const c_void,
            c.x,
            dx as *mut c_void,
        )
    }

    /// dw = the filter gradient from the conv's input and dy (β = 0: `dw` is overwritten).
    ///
    /// # Safety
    /// As for [`ConvGrad::backward_data`].
    pub unsafe fn backward_filter(&self, h: &Handle, x: u64, dy: u64, dw: u64, workspace: u64, workspace_len: usize) -> Result<(), CudnnError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let c = &self.conv;
        cr::convolution_backward_filter(
            h.0,
            &alpha as *const f32 as *const c_void,
            c.x,
            x as *const c_void,
            c.y,
            dy as *const c_void,
            c.conv,
            self.filter_algo,
            workspace as *mut c_void,
            workspace_len,
            &beta as *const f32 as *const c_void,
            c.w,
            dw as *mut c_void,
        )
    }
}

impl Drop for Conv {
    fn drop(&mut self) {
        unsafe {
            let _ = cr::destroy_tensor_descriptor(self.x);
            let _ = cr::destroy_tensor_descriptor(self.y);
            let _ = cr::destroy_filter_descriptor(self.w);
            let _ = cr::destroy_convolution_descriptor(self.conv);
        }
    }
}
