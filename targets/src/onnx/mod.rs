//! ONNX writers: our graph as an opset-13 fp32 ONNX model (`write`), and the int8 model as
//! QOperator ONNX (`int8`).

mod int8;
pub mod proto;
mod write;

pub use int8::{write_int8_onnx, Int8Form};
pub use write::{write_onnx, OnnxError, OnnxOptions, SiluForm, INPUT, OPSET, OUTPUT};
