//! ONNX writer: our graph as an opset-13 ONNX model.

pub mod proto;
mod write;

pub use write::{write_onnx, OnnxError, OnnxOptions, SiluForm, INPUT, OPSET, OUTPUT};
