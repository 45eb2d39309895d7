//! Preprocessing is part of the artifact contract, so its types live in the runtime crate
//! (which apps embed) and are re-exported here.

pub use effv2_runtime::preprocess::{CropMode, Interpolation, Preprocess};
