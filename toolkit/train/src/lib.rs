//! effv2-train: training EfficientNetV2 graphs the paper's way.
//!
//! The loop ([`run`]) talks only to the [`TrainEngine`] trait; [`cpu::CpuTrainer`] implements it
//! (forward in train/eval mode, backward for every op of the graph IR, RMSProp/SGD, EMA), and so
//! does the CUDA engine ([`cuda`], feature `cuda`); [`parallel::DataParallel`] runs replicas of
//! either over a group (NCCL between GPUs) as one engine. Around it: the loss ([`loss`]), optimizer maths ([`optim`]),
//! LR schedules ([`schedule`]), EMA ([`ema`]), data and augmentation ([`data`]) and progressive
//! learning with adaptive regularization ([`progressive`]).

pub mod cpu;
pub mod cuda;
pub mod data;
pub mod ema;
mod engine;
mod error;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod progressive;
pub mod run;
pub mod schedule;

pub use engine::{Mode, TrainEngine};
pub use error::TrainError;
