//! Deployment targets: model sources, writers (ONNX, TFLite) and one artifact builder per
//! target (cpu, coral, jetson), sharing int8 calibration sources (`calib`). Every artifact is a directory with `manifest.json` that effv2-runtime verifies.

pub mod artifact;
pub mod calib;
pub mod coral;
pub mod cpu;
pub mod cuda_plan;
pub mod jetson;
pub mod onnx;
pub mod source;
pub mod tflite;
