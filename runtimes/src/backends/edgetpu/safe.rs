//! Safe layer: owned TFLite objects whose `Drop` frees them in the order the C API requires
//! (interpreter, then its delegate and model), and bounds-checked tensor access.

use std::ffi::CString;
use std::ptr::NonNull;

use super::result::{self, CallError, DeviceEntry, TensorDesc};
use super::sys::*;

/// A `.tflite` flatbuffer and the TFLite model over it (the bytes must outlive the model).
pub struct Model {
    api: &'static TfLiteApi,
    ptr: NonNull<TfLiteModel>,
    _data: Box<[u8]>,
}

impl Model {
    pub fn new(api: &'static TfLiteApi, data: Vec<u8>) -> Result<Model, CallError> {
        let data = data.into_boxed_slice();
        // SAFETY: the boxed bytes never move and are dropped after the model (field order and
        // `Interpreter` owning the model).
        let ptr = unsafe { result::model_create(api, &data)? };
        Ok(Model { api, ptr, _data: data })
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: created in `new`, deleted once; interpreters own their model, so none is alive.
        unsafe { result::model_delete(self.api, self.ptr) }
    }
}

/// An Edge TPU delegate (libedgetpu), freed after the interpreter that uses it.
pub struct Delegate {
    api: &'static EdgeTpuApi,
    ptr: NonNull<TfLiteDelegate>,
}

impl Delegate {
    pub fn edgetpu(api: &'static EdgeTpuApi, device: &DeviceEntry) -> Result<Delegate, CallError> {
        // A path with a NUL cannot name a device; let libedgetpu pick the first of its type.
        let path = CString::new(device.path.as_str()).unwrap_or_default();
        let ptr = result::create_delegate(api, device.kind, &path)?;
        Ok(Delegate { api, ptr })
    }
}

impl Drop for Delegate {
    fn drop(&mut self) {
        // SAFETY: created in `edgetpu`, freed once; an interpreter owning it is already deleted.
        unsafe { result::free_delegate(self.api, self.ptr) }
    }
}

struct Options {
    api: &'static TfLiteApi,
    ptr: NonNull<TfLiteInterpreterOptions>,
}

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by options_create, deleted once (interpreters copy what they need).
        unsafe { result::options_delete(self.api, self.ptr) }
    }
}

/// An interpreter with tensors allocated. Owns its model and delegate.
pub struct Interpreter {
    api: &'static TfLiteApi,
    ptr: NonNull<TfLiteInterpreter>,
    inputs: usize,
    outputs: usize,
    // Dropped after `Drop::drop` deleted the interpreter: both must outlive it.
    _delegate: Option<Delegate>,
    _model: Model,
}

// SAFETY: a TFLite interpreter has no thread affinity; it must only never be used by two threads
// at once, and every mutating call here takes `&mut self` while `Interpreter` is not `Sync`.
unsafe impl Send for Interpreter {}

impl Interpreter {
    pub fn new(api: &'static TfLiteApi, model: Model, threads: usize, delegate: Option<Delegate>) -> Result<Interpreter, CallError> {
        let opts = Options { api, ptr: result::options_create(api)? };
        // SAFETY: `opts` is live; the delegate moves into the interpreter below and outlives it.
        unsafe {
            result::options_set_num_threads(api, opts.ptr, threads.clamp(1, i32::MAX as usize) as i32);
            if let Some(d) = &delegate {
                result::options_add_delegate(api, opts.ptr, d.ptr);
            }
        }
        // SAFETY: model and options are live.
        let ptr = unsafe { result::interpreter_create(api, model.ptr, opts.ptr)? };
        // SAFETY: `ptr` is live.
        let (inputs, outputs) = unsafe { result::tensor_counts(api, ptr) };
        let it = Interpreter { api, ptr, inputs: inputs.max(0) as usize, outputs: outputs.max(0) as usize, _delegate: delegate, _model: model };
        // SAFETY: `it` is live and exclusively ours.
        unsafe { result::allocate_tensors(api, it.ptr)? };
        Ok(it)
    }

    /// (inputs, outputs).
    pub fn counts(&self) -> (usize, usize) {
        (self.inputs, self.outputs)
    }

    fn input_ptr(&self, k: usize) -> Result<NonNull<TfLiteTensor>, CallError> {
        if k >= self.inputs {
            return Err(CallError::Index { what: "input", index: k, count: self.inputs });
        }
        // SAFETY: live interpreter, index checked against its count.
        unsafe { result::input_tensor(self.api, self.ptr, k as i32) }
    }

    fn output_ptr(&self, k: usize) -> Result<NonNull<TfLiteTensor>, CallError> {
        if k >= self.outputs {
            return Err(CallError::Index { what: "output", index: k, count: self.outputs });
        }
        // SAFETY: live interpreter, index checked against its count.
        unsafe { result::output_tensor(self.api, self.ptr, k as i32) }
    }

    pub fn input(&self, k: usize) -> Result<TensorDesc, CallError> {
        // SAFETY: a live tensor of this live interpreter.
        Ok(unsafe { result::describe(self.api, self.input_ptr(k)?) })
    }

    pub fn output(&self, k: usize) -> Result<TensorDesc, CallError> {
        // SAFETY: a live tensor of this live interpreter.
        Ok(unsafe { result::describe(self.api, self.output_ptr(k)?) })
    }

    pub fn set_input(&mut self, k: usize, data: &[u8]) -> Result<(), CallError> {
        let t = self.input_ptr(k)?;
        // SAFETY: live input tensor; `&mut self` excludes concurrent use.
        unsafe { result::copy_from(self.api, t, data) }
    }

    pub fn invoke(&mut self) -> Result<(), CallError> {
        // SAFETY: tensors were allocated in `new`; `&mut self` excludes concurrent use.
        unsafe { result::invoke(self.api, self.ptr) }
    }

    pub fn read_output(&mut self, k: usize, out: &mut [u8]) -> Result<(), CallError> {
        let t = self.output_ptr(k)?;
        // SAFETY: live output tensor; `&mut self` excludes concurrent use.
        unsafe { result::copy_to(self.api, t, out) }
    }
}

impl Drop for Interpreter {
    fn drop(&mut self) {
        // SAFETY: created in `new`, deleted once, before its delegate and model (field drops).
        unsafe { result::interpreter_delete(self.api, self.ptr) }
    }
}
