//! effv2-edge: EfficientNetV2 as data, one graph IR, a CPU reference engine and peer-exact weights.
//!
//! Data flows one way: [`spec`] (variant tables, options) → [`graph`] (the one IR) → [`weights`]
//! (checkpoints, peer imports) → engines, quantizer and artifact writers.

#[cfg(feature = "cli")]
pub mod cli_args;
pub mod engine;
pub mod graph;
pub mod imaging;
pub mod io;
pub mod rng;
pub mod spec;
pub mod tensor;
pub mod weights;

pub use tensor::Tensor;
