//! effv2-edge: EfficientNetV2 as data, one graph IR, a CPU reference engine and peer-exact weights.

pub mod graph;
pub mod spec;
pub mod tensor;

pub use tensor::Tensor;
pub mod weights;
