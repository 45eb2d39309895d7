//! Weights: the in-memory store, our checkpoint format, and importers for peer layouts.

mod calibrate;
mod checkpoint;
mod file;
pub mod import;
mod init;
mod store;

pub use checkpoint::{Checkpoint, CheckpointError, ModelConfig, Source, FILE_IN_DIR, FORMAT, FORMAT_VERSION};
pub use file::{write_f32 as write_safetensors, FileError, StoredTensor, TensorFile};
pub use calibrate::calibrate_batchnorm;
pub use init::init_weights;
pub use store::{Weights, WeightsError};
