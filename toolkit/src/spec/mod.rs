//! The network as typed data: stage tables, scaling, the variant registry, model options.

mod model;
mod options;
mod preprocess;
mod registry;
mod scaling;
mod stage;
pub mod tables;

pub use model::{BlockSpec, ModelSpec, DEFAULT_SE_RATIO};
pub use options::{Activation, FusedStages, ModelOptions, Padding};
pub use preprocess::{CropMode, Interpolation, Preprocess};
pub use registry::{variant, variant_names, variants, Variant};
pub use scaling::{round_filters, round_repeats, DEPTH_DIVISOR};
pub use stage::{BlockKind, StageRow};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown variant {0:?}; known: {known}", known = variant_names().join(", "))]
    UnknownVariant(String),
    #[error("{0}")]
    Option(String),
}
