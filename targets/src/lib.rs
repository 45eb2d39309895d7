//! Deployment targets: model sources, writers (ONNX; TFLite next) and one artifact builder per
//! target. Every artifact is a directory with `manifest.json` that effv2-runtime verifies.

pub mod artifact;
pub mod cpu;
pub mod onnx;
pub mod source;
pub mod tflite;
