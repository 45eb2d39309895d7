//! The slice of TFLite's flatbuffer schema (`schema.fbs`, file identifier `TFL3`) this writer uses,
//! declared by hand: vtable slots (`4 + 2·field index`, where a union field takes two indices:
//! its type, then its value), enum values, and table builders over `flatbuffers`' builder. All
//! knowledge of the file layout lives here; nothing is generated or copied.

use flatbuffers::{FlatBufferBuilder, Push, UnionWIPOffset, WIPOffset};

pub const FILE_IDENTIFIER: &str = "TFL3";
pub const SCHEMA_VERSION: u32 = 3;

/// vtable offset of field `i` of a table.
const fn slot(i: u16) -> u16 {
    4 + 2 * i
}

/// `TensorType`.
pub mod tensor_type {
    pub const INT32: i8 = 2;
    pub const UINT8: i8 = 3;
    pub const INT8: i8 = 9;
}

/// `BuiltinOperator` codes.
pub mod builtin {
    pub const ADD: i32 = 0;
    pub const CONV_2D: i32 = 3;
    pub const DEPTHWISE_CONV_2D: i32 = 4;
    pub const FULLY_CONNECTED: i32 = 9;
    pub const LOGISTIC: i32 = 14;
    pub const MUL: i32 = 18;
    pub const RESHAPE: i32 = 22;
    pub const PAD: i32 = 34;
    pub const MEAN: i32 = 40;
    pub const QUANTIZE: i32 = 114;
}

/// `BuiltinOptions` union member indices (0 = NONE).
pub mod options {
    pub const NONE: u8 = 0;
    pub const CONV_2D: u8 = 1;
    pub const DEPTHWISE_CONV_2D: u8 = 2;
    pub const ADD: u8 = 11;
    pub const RESHAPE: u8 = 17;
    pub const MUL: u8 = 21;
    pub const PAD: u8 = 22;
    pub const REDUCER: u8 = 27;
    pub const QUANTIZE: u8 = 89;
}

/// `Padding`.
pub const PADDING_SAME: i8 = 0;
pub const PADDING_VALID: i8 = 1;
/// `ActivationFunctionType`.
pub const ACT_NONE: i8 = 0;
pub const ACT_RELU6: i8 = 3;

pub type Fbb<'a> = FlatBufferBuilder<'a>;
type Off<T> = WIPOffset<T>;
pub type Table = flatbuffers::TableFinishedWIPOffset;
pub type Vector<'a, T> = WIPOffset<flatbuffers::Vector<'a, T>>;

/// A zero-sized value with 16-byte alignment: pushing it makes the builder align the whole
/// buffer to 16, so offsets aligned from its end are aligned from its start too.
#[repr(C, align(16))]
pub struct Align16;
struct Align16Push;
impl Push for Align16Push {
    type Output = Align16;
    unsafe fn push(&self, _dst: &mut [u8], _written_len: usize) {}
}

/// A byte vector whose data starts 16-byte aligned (`Buffer.data` is `force_align: 16`).
pub fn aligned_bytes<'a>(b: &mut Fbb<'a>, data: &[u8]) -> Vector<'a, u8> {
    b.push(Align16Push);
    let used = b.unfinished_data().len();
    for _ in 0..(16 - (used + data.len()) % 16) % 16 {
        b.push(0u8);
    }
    b.create_vector(data)
}

pub fn buffer(b: &mut Fbb<'_>, data: Option<Vector<'_, u8>>) -> Off<Table> {
    let t = b.start_table();
    if let Some(d) = data {
        b.push_slot_always(slot(0), d);
    }
    b.end_table(t)
}

/// `QuantizationParameters{scale, zero_point, quantized_dimension}` (slots 4–5 are the
/// `details` union).
pub fn quantization(b: &mut Fbb<'_>, scales: &[f32], zero_points: &[i64], axis: i32) -> Off<Table> {
    let s = b.create_vector(scales);
    let z = b.create_vector(zero_points);
    let t = b.start_table();
    b.push_slot_always(slot(2), s);
    b.push_slot_always(slot(3), z);
    b.push_slot(slot(6), axis, 0);
    b.end_table(t)
}

pub struct TensorFields<'a> {
    pub shape: Vector<'a, i32>,
    pub dtype: i8,
    pub buffer: u32,
    pub name: Off<&'a str>,
    pub quantization: Option<Off<Table>>,
}

pub fn tensor<'a>(b: &mut Fbb<'a>, f: TensorFields<'a>) -> Off<Table> {
    let t = b.start_table();
    b.push_slot_always(slot(0), f.shape);
    b.push_slot(slot(1), f.dtype, 0);
    b.push_slot(slot(2), f.buffer, 0);
    b.push_slot_always(slot(3), f.name);
    if let Some(q) = f.quantization {
        b.push_slot_always(slot(4), q);
    }
    // has_rank (slot 8): a static, fully known shape.
    b.push_slot(slot(8), true, false);
    b.end_table(t)
}

/// `OperatorCode`, with both the legacy byte code (read by older tools such as the Edge TPU
/// compiler) and the int32 code.
pub fn operator_code(b: &mut Fbb<'_>, code: i32, version: i32) -> Off<Table> {
    let t = b.start_table();
    b.push_slot(slot(0), code.min(127) as i8, 0);
    b.push_slot(slot(2), version, 1);
    b.push_slot(slot(3), code, 0);
    b.end_table(t)
}

pub fn operator<'a>(b: &mut Fbb<'a>, opcode: u32, inputs: Vector<'a, i32>, outputs: Vector<'a, i32>, opts: Option<(u8, Off<UnionWIPOffset>)>) -> Off<Table> {
    let t = b.start_table();
    b.push_slot(slot(0), opcode, 0);
    b.push_slot_always(slot(1), inputs);
    b.push_slot_always(slot(2), outputs);
    if let Some((kind, o)) = opts {
        b.push_slot(slot(3), kind, options::NONE);
        b.push_slot_always(slot(4), o);
    }
    b.end_table(t)
}

/// `Conv2DOptions` (dilations left at their default 1).
pub fn conv2d_options(b: &mut Fbb<'_>, padding: i8, stride: i32, act: i8) -> Off<UnionWIPOffset> {
    let t = b.start_table();
    b.push_slot(slot(0), padding, PADDING_SAME);
    b.push_slot(slot(1), stride, 0);
    b.push_slot(slot(2), stride, 0);
    b.push_slot(slot(3), act, ACT_NONE);
    b.end_table(t).as_union_value()
}

/// `DepthwiseConv2DOptions` (depth multiplier 1, dilations 1).
pub fn depthwise_options(b: &mut Fbb<'_>, padding: i8, stride: i32, act: i8) -> Off<UnionWIPOffset> {
    let t = b.start_table();
    b.push_slot(slot(0), padding, PADDING_SAME);
    b.push_slot(slot(1), stride, 0);
    b.push_slot(slot(2), stride, 0);
    b.push_slot(slot(3), 1i32, 0);
    b.push_slot(slot(4), act, ACT_NONE);
    b.end_table(t).as_union_value()
}

/// Options tables whose only field is the fused activation (`AddOptions`, `MulOptions`).
pub fn activation_options(b: &mut Fbb<'_>, act: i8) -> Off<UnionWIPOffset> {
    let t = b.start_table();
    b.push_slot(slot(0), act, ACT_NONE);
    b.end_table(t).as_union_value()
}

/// `ReducerOptions{keep_dims}`.
pub fn reducer_options(b: &mut Fbb<'_>, keep_dims: bool) -> Off<UnionWIPOffset> {
    let t = b.start_table();
    b.push_slot(slot(0), keep_dims, false);
    b.end_table(t).as_union_value()
}

/// `ReshapeOptions{new_shape}`.
pub fn reshape_options<'a>(b: &mut Fbb<'a>, new_shape: Vector<'a, i32>) -> Off<UnionWIPOffset> {
    let t = b.start_table();
    b.push_slot_always(slot(0), new_shape);
    b.end_table(t).as_union_value()
}

/// An options table without fields (`PadOptions`, `QuantizeOptions`).
pub fn empty_options(b: &mut Fbb<'_>) -> Off<UnionWIPOffset> {
    let t = b.start_table();
    b.end_table(t).as_union_value()
}

pub struct SubGraphFields<'a> {
    pub tensors: Vector<'a, flatbuffers::ForwardsUOffset<Table>>,
    pub inputs: Vector<'a, i32>,
    pub outputs: Vector<'a, i32>,
    pub operators: Vector<'a, flatbuffers::ForwardsUOffset<Table>>,
    pub name: Off<&'a str>,
}

pub fn subgraph<'a>(b: &mut Fbb<'a>, f: SubGraphFields<'a>) -> Off<Table> {
    let t = b.start_table();
    b.push_slot_always(slot(0), f.tensors);
    b.push_slot_always(slot(1), f.inputs);
    b.push_slot_always(slot(2), f.outputs);
    b.push_slot_always(slot(3), f.operators);
    b.push_slot_always(slot(4), f.name);
    b.end_table(t)
}

/// `Metadata{name, buffer}`.
pub fn metadata<'a>(b: &mut Fbb<'a>, name: Off<&'a str>, buffer: u32) -> Off<Table> {
    let t = b.start_table();
    b.push_slot_always(slot(0), name);
    b.push_slot(slot(1), buffer, 0);
    b.end_table(t)
}

pub struct ModelFields<'a> {
    pub operator_codes: Vector<'a, flatbuffers::ForwardsUOffset<Table>>,
    pub subgraphs: Vector<'a, flatbuffers::ForwardsUOffset<Table>>,
    pub description: Off<&'a str>,
    pub buffers: Vector<'a, flatbuffers::ForwardsUOffset<Table>>,
    pub metadata: Vector<'a, flatbuffers::ForwardsUOffset<Table>>,
}

pub fn model<'a>(b: &mut Fbb<'a>, f: ModelFields<'a>) -> Off<Table> {
    let t = b.start_table();
    b.push_slot(slot(0), SCHEMA_VERSION, 0);
    b.push_slot_always(slot(1), f.operator_codes);
    b.push_slot_always(slot(2), f.subgraphs);
    b.push_slot_always(slot(3), f.description);
    b.push_slot_always(slot(4), f.buffers);
    b.push_slot_always(slot(6), f.metadata);
    b.end_table(t)
}
