//! Data: datasets and augmentation.
