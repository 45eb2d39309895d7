//! Result layer: each C call as a Rust function returning `Result`, with `TfLiteStatus` codes and
//! NULL returns turned into a [`CallError`] naming the call. Handles are still raw here; who owns
//! and frees them is the safe layer's business.

use std::ffi::{c_char, CStr};
use std::fmt;
use std::ptr::NonNull;

use super::sys::*;

/// A `TfLiteStatus` other than `kTfLiteOk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status(pub TfLiteStatus);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "kTfLiteError",
            2 => "kTfLiteDelegateError",
            3 => "kTfLiteApplicationError",
            4 => "kTfLiteDelegateDataNotFound",
            5 => "kTfLiteDelegateDataWriteError",
            6 => "kTfLiteDelegateDataReadError",
            7 => "kTfLiteUnresolvedOps",
            8 => "kTfLiteCancelled",
            _ => return write!(f, "TfLiteStatus {}", self.0),
        };
        f.write_str(name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("{call} failed with {status} (TFLite prints its reason on stderr)")]
    Status { call: &'static str, status: Status },
    #[error("{call} returned NULL: {meaning}")]
    Null { call: &'static str, meaning: &'static str },
    #[error("{what} {index} does not exist: the model has {count}")]
    Index { what: &'static str, index: usize, count: usize },
}

fn check(call: &'static str, status: TfLiteStatus) -> Result<(), CallError> {
    if status == K_TFLITE_OK {
        Ok(())
    } else {
        Err(CallError::Status { call, status: Status(status) })
    }
}

fn non_null<T>(call: &'static str, meaning: &'static str, p: *mut T) -> Result<NonNull<T>, CallError> {
    NonNull::new(p).ok_or(CallError::Null { call, meaning })
}

/// A C string the library owns, copied; NULL reads as "".
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for this call.
pub unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated per the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

pub fn version(api: &TfLiteApi) -> String {
    // SAFETY: no arguments; returns a static string (or NULL, handled by `string`).
    unsafe { string((api.TfLiteVersion)()) }
}

/// # Safety
/// `data` must outlive the model and every interpreter created from it.
pub unsafe fn model_create(api: &TfLiteApi, data: &[u8]) -> Result<NonNull<TfLiteModel>, CallError> {
    // SAFETY: pointer and length describe `data`; TFLite verifies the flatbuffer before using it.
    let p = unsafe { (api.TfLiteModelCreate)(data.as_ptr().cast(), data.len()) };
    non_null("TfLiteModelCreate", "not a valid .tflite flatbuffer", p)
}

/// # Safety
/// `m` came from [`model_create`] and is deleted once.
pub unsafe fn model_delete(api: &TfLiteApi, m: NonNull<TfLiteModel>) {
    // SAFETY: per the caller.
    unsafe { (api.TfLiteModelDelete)(m.as_ptr()) }
}

pub fn options_create(api: &TfLiteApi) -> Result<NonNull<TfLiteInterpreterOptions>, CallError> {
    // SAFETY: no arguments.
    let p = unsafe { (api.TfLiteInterpreterOptionsCreate)() };
    non_null("TfLiteInterpreterOptionsCreate", "out of memory", p)
}

/// # Safety
/// `o` came from [`options_create`] and is deleted once.
pub unsafe fn options_delete(api: &TfLiteApi, o: NonNull<TfLiteInterpreterOptions>) {
    // SAFETY: per the caller.
    unsafe { (api.TfLiteInterpreterOptionsDelete)(o.as_ptr()) }
}

/// # Safety
/// `o` is a live options object.
pub unsafe fn options_set_num_threads(api: &TfLiteApi, o: NonNull<TfLiteInterpreterOptions>, n: i32) {
    // SAFETY: per the caller.
    unsafe { (api.TfLiteInterpreterOptionsSetNumThreads)(o.as_ptr(), n) }
}

/// # Safety
/// `o` is live; `d` must outlive every interpreter created with `o`.
pub unsafe fn options_add_delegate(api: &TfLiteApi, o: NonNull<TfLiteInterpreterOptions>, d: NonNull<TfLiteDelegate>) {
    // SAFETY: per the caller.
    unsafe { (api.TfLiteInterpreterOptionsAddDelegate)(o.as_ptr(), d.as_ptr()) }
}

/// # Safety
/// `m` and `o` are live.
pub unsafe fn interpreter_create(
    api: &TfLiteApi,
    m: NonNull<TfLiteModel>,
    o: NonNull<TfLiteInterpreterOptions>,
) -> Result<NonNull<TfLiteInterpreter>, CallError> {
    // SAFETY: per the caller.
    let p = unsafe { (api.TfLiteInterpreterCreate)(m.as_ptr(), o.as_ptr()) };
    non_null("TfLiteInterpreterCreate", "an op is unsupported by this TFLite build or a delegate failed to prepare", p)
}

/// # Safety
/// `i` came from [`interpreter_create`] and is deleted once.
pub unsafe fn interpreter_delete(api: &TfLiteApi, i: NonNull<TfLiteInterpreter>) {
    // SAFETY: per the caller.
    unsafe { (api.TfLiteInterpreterDelete)(i.as_ptr()) }
}

/// # Safety
/// `i` is live and not used concurrently.
pub unsafe fn allocate_tensors(api: &TfLiteApi, i: NonNull<TfLiteInterpreter>) -> Result<(), CallError> {
    // SAFETY: per the caller.
    check("TfLiteInterpreterAllocateTensors", unsafe { (api.TfLiteInterpreterAllocateTensors)(i.as_ptr()) })
}

/// # Safety
/// `i` is live, its tensors allocated, and not used concurrently.
pub unsafe fn invoke(api: &TfLiteApi, i: NonNull<TfLiteInterpreter>) -> Result<(), CallError> {
    // SAFETY: per the caller.
    check("TfLiteInterpreterInvoke", unsafe { (api.TfLiteInterpreterInvoke)(i.as_ptr()) })
}

/// (inputs, outputs) of a live interpreter `i`.
///
/// # Safety
/// `i` is live.
pub unsafe fn tensor_counts(api: &TfLiteApi, i: NonNull<TfLiteInterpreter>) -> (i32, i32) {
    // SAFETY: per the caller.
    unsafe { ((api.TfLiteInterpreterGetInputTensorCount)(i.as_ptr()), (api.TfLiteInterpreterGetOutputTensorCount)(i.as_ptr())) }
}

/// # Safety
/// `i` is live and `k` below its input count; the tensor lives as long as `i`.
pub unsafe fn input_tensor(api: &TfLiteApi, i: NonNull<TfLiteInterpreter>, k: i32) -> Result<NonNull<TfLiteTensor>, CallError> {
    // SAFETY: per the caller.
    let p = unsafe { (api.TfLiteInterpreterGetInputTensor)(i.as_ptr(), k) };
    non_null("TfLiteInterpreterGetInputTensor", "no such input", p)
}

/// # Safety
/// `i` is live and `k` below its output count; the tensor lives as long as `i`.
pub unsafe fn output_tensor(api: &TfLiteApi, i: NonNull<TfLiteInterpreter>, k: i32) -> Result<NonNull<TfLiteTensor>, CallError> {
    // SAFETY: per the caller; the output is only ever read through the pointer.
    let p = unsafe { (api.TfLiteInterpreterGetOutputTensor)(i.as_ptr(), k) }.cast_mut();
    non_null("TfLiteInterpreterGetOutputTensor", "no such output", p)
}

/// What a tensor is: type, dims, byte size, name and per-tensor quantization.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDesc {
    pub dtype: TfLiteType,
    pub dims: Vec<i32>,
    pub bytes: usize,
    pub name: String,
    pub quant: TfLiteQuantizationParams,
}

/// # Safety
/// `t` is a live tensor of a live interpreter.
pub unsafe fn describe(api: &TfLiteApi, t: NonNull<TfLiteTensor>) -> TensorDesc {
    let t = t.as_ptr().cast_const();
    // SAFETY: `t` is live per the caller; dims are read below the count TFLite reports.
    unsafe {
        let n = (api.TfLiteTensorNumDims)(t).max(0);
        TensorDesc {
            dtype: (api.TfLiteTensorType)(t),
            dims: (0..n).map(|d| (api.TfLiteTensorDim)(t, d)).collect(),
            bytes: (api.TfLiteTensorByteSize)(t),
            name: string((api.TfLiteTensorName)(t)),
            quant: (api.TfLiteTensorQuantizationParams)(t),
        }
    }
}

/// Copy `data` into tensor `t`; TFLite checks the size equals the tensor's byte size.
///
/// # Safety
/// `t` is a live input tensor of an interpreter not used concurrently.
pub unsafe fn copy_from(api: &TfLiteApi, t: NonNull<TfLiteTensor>, data: &[u8]) -> Result<(), CallError> {
    // SAFETY: per the caller; pointer and length describe `data`.
    check("TfLiteTensorCopyFromBuffer", unsafe { (api.TfLiteTensorCopyFromBuffer)(t.as_ptr(), data.as_ptr().cast(), data.len()) })
}

/// Copy tensor `t` into `out`; TFLite checks the size equals the tensor's byte size.
///
/// # Safety
/// `t` is a live tensor of an interpreter not used concurrently.
pub unsafe fn copy_to(api: &TfLiteApi, t: NonNull<TfLiteTensor>, out: &mut [u8]) -> Result<(), CallError> {
    // SAFETY: per the caller; pointer and length describe `out`, which TFLite writes at most `len` bytes of.
    check("TfLiteTensorCopyToBuffer", unsafe { (api.TfLiteTensorCopyToBuffer)(t.as_ptr(), out.as_mut_ptr().cast(), out.len()) })
}

pub fn edgetpu_version(api: &EdgeTpuApi) -> String {
    // SAFETY: no arguments; returns a static string.
    unsafe { string((api.edgetpu_version)()) }
}

/// An Edge TPU the runtime can see: its type and device path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    pub kind: EdgeTpuDeviceType,
    pub path: String,
}

/// Every Edge TPU libedgetpu sees (copied; the C list is freed here).
pub fn list_devices(api: &EdgeTpuApi) -> Vec<DeviceEntry> {
    let mut n = 0usize;
    // SAFETY: `n` is a valid out-pointer; the result is NULL or an array of `n` entries.
    let list = unsafe { (api.edgetpu_list_devices)(&mut n) };
    if list.is_null() {
        return vec![];
    }
    // SAFETY: `list` holds `n` entries with NUL-terminated paths, all live until freed below.
    let out = unsafe { std::slice::from_raw_parts(list, n) }
        .iter()
        // SAFETY: see above.
        .map(|d| DeviceEntry { kind: d.kind, path: unsafe { string(d.path) } })
        .collect();
    // SAFETY: `list` came from edgetpu_list_devices and is freed once.
    unsafe { (api.edgetpu_free_devices)(list) };
    out
}

/// A delegate for the Edge TPU at `path` of type `kind` (options: none, i.e. the defaults).
pub fn create_delegate(api: &EdgeTpuApi, kind: EdgeTpuDeviceType, path: &CStr) -> Result<NonNull<TfLiteDelegate>, CallError> {
    // SAFETY: `path` is NUL-terminated and outlives the call; zero options with a NULL array is allowed.
    let p = unsafe { (api.edgetpu_create_delegate)(kind, path.as_ptr(), std::ptr::null(), 0) };
    non_null("edgetpu_create_delegate", "the Edge TPU could not be opened (in use by another process, or no permission)", p)
}

/// # Safety
/// `d` came from [`create_delegate`], is freed once, and no interpreter using it is alive.
pub unsafe fn free_delegate(api: &EdgeTpuApi, d: NonNull<TfLiteDelegate>) {
    // SAFETY: per the caller.
    unsafe { (api.edgetpu_free_delegate)(d.as_ptr()) }
}
