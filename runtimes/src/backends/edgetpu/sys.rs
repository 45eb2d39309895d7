//! Raw layer: the part of TFLite's C API (`tensorflow/lite/core/c/c_api.h`) and of libedgetpu's
//! (`tflite/public/edgetpu_c.h`) that the backend calls, declared by hand — about twenty stable
//! functions and four small types, so no bindgen, libclang or headers at build time. Both
//! libraries are opened with dlopen and every symbol is looked up when the table is loaded, so a
//! library lacking one fails at `open`, never mid-run.

// Table fields carry the C symbols' own names.
#![allow(non_snake_case)]

use std::ffi::{c_char, c_int, c_void};

use libloading::Library;

/// Opaque handles of the C API.
#[repr(C)]
pub struct TfLiteModel {
    _private: [u8; 0],
}
#[repr(C)]
pub struct TfLiteInterpreterOptions {
    _private: [u8; 0],
}
#[repr(C)]
pub struct TfLiteInterpreter {
    _private: [u8; 0],
}
#[repr(C)]
pub struct TfLiteTensor {
    _private: [u8; 0],
}
#[repr(C)]
pub struct TfLiteDelegate {
    _private: [u8; 0],
}

/// `TfLiteStatus` (a C enum: int-sized on every platform TFLite supports).
pub type TfLiteStatus = c_int;
pub const K_TFLITE_OK: TfLiteStatus = 0;

/// `TfLiteType`.
pub type TfLiteType = c_int;
pub const K_TFLITE_UINT8: TfLiteType = 3;
pub const K_TFLITE_INT8: TfLiteType = 9;

/// Per-tensor affine parameters (`real = scale · (q − zero_point)`); scale 0 = not quantized.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TfLiteQuantizationParams {
    pub scale: f32,
    pub zero_point: i32,
}

/// `enum edgetpu_device_type`.
pub type EdgeTpuDeviceType = c_int;
pub const EDGETPU_APEX_PCI: EdgeTpuDeviceType = 0;
pub const EDGETPU_APEX_USB: EdgeTpuDeviceType = 1;

/// `struct edgetpu_device`.
#[repr(C)]
pub struct EdgeTpuDevice {
    pub kind: EdgeTpuDeviceType,
    pub path: *const c_char,
}

/// `struct edgetpu_option`.
#[repr(C)]
pub struct EdgeTpuOption {
    pub name: *const c_char,
    pub value: *const c_char,
}

/// A table of C function pointers read from a library, which it keeps loaded.
macro_rules! c_api {
    ($(#[$doc:meta])* $table:ident { $($f:ident: fn($($a:ty),*) $(-> $r:ty)?;)* }) => {
        $(#[$doc])*
        pub struct $table {
            $(pub $f: unsafe extern "C" fn($($a),*) $(-> $r)?,)*
            // Last: the pointers above are only valid while it is loaded.
            _lib: Library,
        }

        impl $table {
            /// Look up every symbol; the first missing one is the error.
            ///
            /// # Safety
            /// `lib` must export these symbols with exactly the C signatures declared here.
            pub unsafe fn load(lib: Library) -> Result<Self, String> {
                $(
                    // SAFETY: the caller vouches for the signature; the pointer is copied out of
                    // the `Symbol` and stays valid because `lib` moves into the table with it.
                    let $f = unsafe {
                        *lib.get::<unsafe extern "C" fn($($a),*) $(-> $r)?>(concat!(stringify!($f), "\0").as_bytes())
                            .map_err(|e| format!("symbol {} not found ({e})", stringify!($f)))?
                    };
                )*
                Ok($table { $($f,)* _lib: lib })
            }
        }
    };
}

c_api! {
    /// libtensorflowlite_c.
    TfLiteApi {
        TfLiteVersion: fn() -> *const c_char;
        TfLiteModelCreate: fn(*const c_void, usize) -> *mut TfLiteModel;
        TfLiteModelDelete: fn(*mut TfLiteModel);
        TfLiteInterpreterOptionsCreate: fn() -> *mut TfLiteInterpreterOptions;
        TfLiteInterpreterOptionsDelete: fn(*mut TfLiteInterpreterOptions);
        TfLiteInterpreterOptionsSetNumThreads: fn(*mut TfLiteInterpreterOptions, i32);
        TfLiteInterpreterOptionsAddDelegate: fn(*mut TfLiteInterpreterOptions, *mut TfLiteDelegate);
        TfLiteInterpreterCreate: fn(*const TfLiteModel, *const TfLiteInterpreterOptions) -> *mut TfLiteInterpreter;
        TfLiteInterpreterDelete: fn(*mut TfLiteInterpreter);
        TfLiteInterpreterAllocateTensors: fn(*mut TfLiteInterpreter) -> TfLiteStatus;
        TfLiteInterpreterInvoke: fn(*mut TfLiteInterpreter) -> TfLiteStatus;
        TfLiteInterpreterGetInputTensorCount: fn(*const TfLiteInterpreter) -> i32;
        TfLiteInterpreterGetOutputTensorCount: fn(*const TfLiteInterpreter) -> i32;
        TfLiteInterpreterGetInputTensor: fn(*const TfLiteInterpreter, i32) -> *mut TfLiteTensor;
        TfLiteInterpreterGetOutputTensor: fn(*const TfLiteInterpreter, i32) -> *const TfLiteTensor;
        TfLiteTensorType: fn(*const TfLiteTensor) -> TfLiteType;
        TfLiteTensorNumDims: fn(*const TfLiteTensor) -> i32;
        TfLiteTensorDim: fn(*const TfLiteTensor, i32) -> i32;
        TfLiteTensorByteSize: fn(*const TfLiteTensor) -> usize;
        TfLiteTensorName: fn(*const TfLiteTensor) -> *const c_char;
        TfLiteTensorQuantizationParams: fn(*const TfLiteTensor) -> TfLiteQuantizationParams;
        TfLiteTensorCopyFromBuffer: fn(*mut TfLiteTensor, *const c_void, usize) -> TfLiteStatus;
        TfLiteTensorCopyToBuffer: fn(*const TfLiteTensor, *mut c_void, usize) -> TfLiteStatus;
    }
}

c_api! {
    /// libedgetpu (the Edge TPU runtime and TFLite delegate).
    EdgeTpuApi {
        edgetpu_version: fn() -> *const c_char;
        edgetpu_list_devices: fn(*mut usize) -> *mut EdgeTpuDevice;
        edgetpu_free_devices: fn(*mut EdgeTpuDevice);
        edgetpu_create_delegate: fn(EdgeTpuDeviceType, *const c_char, *const EdgeTpuOption, usize) -> *mut TfLiteDelegate;
        edgetpu_free_delegate: fn(*mut TfLiteDelegate);
    }
}
