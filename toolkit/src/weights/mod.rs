//! Weights: the in-memory store, our checkpoint format, and importers for peer layouts.

mod store;

pub use store::{Weights, WeightsError};
