//! The graph IR, its builder, cost counter and rewrite passes.

mod build;
mod cost;
mod fold;
mod ir;
mod subgraph;

pub use build::{build, conv_geometry, GraphError, MAX_INPUT_SIDE};
pub use cost::Cost;
pub use fold::*;
pub use ir::*;
pub use subgraph::CutError;
