//! TFLite writer: the int8 model from effv2-quantize as a full-integer `.tflite` (NHWC, per-channel
//! int8 weights, int8 or uint8 I/O), using only ops the Edge TPU maps; and the Edge TPU rule
//! table that checks it.

mod codes;
pub mod edgetpu;
mod schema;
mod write;

pub use codes::{builtin_name, op_code, OpCode};
pub use edgetpu::{check_edgetpu, OpCheck, OpRule, OP_RULES};
pub use write::{write_tflite, TfliteError};
