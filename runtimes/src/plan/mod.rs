//! The network as the CUDA backend runs it: `plan.json`, a flat list of steps written from the
//! toolkit's BN-folded graph (no second copy of the architecture), and `weights.bin`, float32
//! little-endian parameters the steps point into. Kept free of GPU code so builders and tests on
//! machines without CUDA read and check the same format.

use serde::{Deserialize, Serialize};

pub mod arena;
pub mod launch;
pub mod layout;
#[cfg(feature = "host-replay")]
pub mod host;
#[cfg(feature = "host-replay")]
pub mod ptxas;

/// Bumped on any change a reader of an older plan would misread.
pub const PLAN_FORMAT: u32 = 1;
pub const PLAN_FILE: &str = "plan.json";
pub const WEIGHTS_FILE: &str = "weights.bin";
/// Manifest roles of the two files.
pub const PLAN_ROLE: &str = "cuda_plan";
pub const WEIGHTS_ROLE: &str = "cuda_weights";

/// Activation applied to a step's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    None,
    Silu,
    Relu6,
    Sigmoid,
}

impl Act {
    /// The code the element-wise kernels switch on.
    pub fn code(self) -> i32 {
        match self {
            Act::None => 0,
            Act::Silu => 1,
            Act::Relu6 => 2,
            Act::Sigmoid => 3,
        }
    }
}

/// One step; step `i` produces value `i + 1` (value 0 is the input). Shapes are per sample,
/// `[C, H, W]`; offsets count f32 elements of `weights.bin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Convolution (OIHW weight, bias, then `act`); the classifier is a 1x1 conv on `[C, 1, 1]`.
    /// `pads` = top, left, bottom, right.
    Conv { x: usize, out_ch: usize, kernel: usize, stride: usize, groups: usize, pads: [usize; 4], weight: usize, bias: usize, act: Act },
    Act { x: usize, act: Act },
    /// Mean over H and W.
    Pool { x: usize },
    /// `x * gate`, gate `[C, 1, 1]` broadcast over H and W.
    Mul { x: usize, gate: usize },
    Add { a: usize, b: usize },
}

impl Step {
    pub fn inputs(&self) -> Vec<usize> {
        match *self {
            Step::Conv { x, .. } | Step::Act { x, .. } | Step::Pool { x } => vec![x],
            Step::Mul { x, gate } => vec![x, gate],
            Step::Add { a, b } => vec![a, b],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetPlan {
    pub format: u32,
    /// `[C, H, W]` of the input.
    pub input: [usize; 3],
    pub steps: Vec<Step>,
    /// The value holding the logits, `[classes, 1, 1]`.
    pub output: usize,
    /// f32 count of `weights.bin`.
    pub weights_len: usize,
}

/// Per-conv facts derived from the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_shape: [usize; 3],
    pub out_shape: [usize; 3],
    /// Elements of the OIHW weight.
    pub weight_len: usize,
}

impl NetPlan {
    pub fn from_json(text: &str) -> Result<NetPlan, String> {
        let plan: NetPlan = serde_json::from_str(text).map_err(|e| format!("not a plan: {e}"))?;
        plan.shapes()?;
        Ok(plan)
    }

    /// The shape of every value, checking each step against its inputs and the weight file; the
    /// first inconsistency is an error naming the step.
    pub fn shapes(&self) -> Result<Vec<[usize; 3]>, String> {
        if self.format != PLAN_FORMAT {
            return Err(format!("plan format {} is not the supported {PLAN_FORMAT}", self.format));
        }
        if self.input.contains(&0) {
            return Err(format!("input shape {:?} has a zero dimension", self.input));
        }
        let mut shapes = vec![self.input];
        for (i, step) in self.steps.iter().enumerate() {
            let bad = |why: String| format!("step {i} ({step:?}): {why}");
            if let Some(v) = step.inputs().into_iter().find(|&v| v >= shapes.len()) {
                return Err(bad(format!("reads value {v}, which is not computed before it")));
            }
            let shape = match *step {
                Step::Conv { x, .. } => self.conv_geom(step, shapes[x]).map_err(bad)?.out_shape,
                Step::Act { x, .. } => shapes[x],
                Step::Pool { x } => [shapes[x][0], 1, 1],
                Step::Mul { x, gate } => {
                    if shapes[gate] != [shapes[x][0], 1, 1] {
                        return Err(bad(format!("gate {:?} does not match {:?}", shapes[gate], shapes[x])));
                    }
                    shapes[x]
                }
                Step::Add { a, b } => {
                    if shapes[a] != shapes[b] {
                        return Err(bad(format!("adds {:?} to {:?}", shapes[a], shapes[b])));
                    }
                    shapes[a]
                }
            };
            shapes.push(shape);
        }
        match shapes.get(self.output) {
            Some(&[_, 1, 1]) => Ok(shapes),
            Some(s) => Err(format!("output value {} has shape {s:?}, not [classes, 1, 1]", self.output)),
            None => Err(format!("output value {} does not exist", self.output)),
        }
    }

    /// Geometry of a conv step reading a value of shape `input`, checked against `weights_len`.
    pub fn conv_geom(&self, step: &Step, input: [usize; 3]) -> Result<ConvGeom, String> {
        let Step::Conv { out_ch, kernel, stride, groups, pads: [t, l, b, r], weight, bias, .. } = *step else {
            return Err("not a conv".into());
        };
        let [c, h, w] = input;
        if groups == 0 || c % groups != 0 || out_ch % groups != 0 || out_ch == 0 || kernel == 0 || stride == 0 {
            return Err(format!("{c} -> {out_ch} channels in {groups} groups, kernel {kernel}, stride {stride}"));
        }
        let (ph, pw) = (h + t + b, w + l + r);
        if ph < kernel || pw < kernel {
            return Err(format!("kernel {kernel} is larger than the padded input {ph}x{pw}"));
        }
        let out_shape = [out_ch, (ph - kernel) / stride + 1, (pw - kernel) / stride + 1];
        let weight_len = out_ch * (c / groups) * kernel * kernel;
        for (what, at, len) in [("weight", weight, weight_len), ("bias", bias, out_ch)] {
            if at.checked_add(len).is_none_or(|end| end > self.weights_len) {
                return Err(format!("{what} [{at}, +{len}) lies outside weights.bin ({} floats)", self.weights_len));
            }
        }
        Ok(ConvGeom { in_shape: input, out_shape, weight_len })
    }

    /// Per-sample floats of every value, for sizing buffers.
    pub fn value_sizes(&self) -> Result<Vec<usize>, String> {
        Ok(self.shapes()?.iter().map(|s| s.iter().product()).collect())
    }
}

/// Parse `weights.bin` (f32 little-endian), checking its length against the plan.
pub fn read_weights(bytes: &[u8], plan: &NetPlan) -> Result<Vec<f32>, String> {
    if bytes.len() != plan.weights_len * 4 {
        return Err(format!("{} bytes; the plan expects {} floats ({} bytes)", bytes.len(), plan.weights_len, plan.weights_len * 4));
    }
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> NetPlan {
        // input [3,8,8] -> conv 3x3 s2 (8 ch, silu) -> pool -> conv 1x1 to 8 (sigmoid) -> mul -> add -> pool -> fc 4
        let conv = |x, out_ch, kernel, stride, pads, weight, bias, act| Step::Conv { x, out_ch, kernel, stride, groups: 1, pads, weight, bias, act };
        NetPlan {
            format: PLAN_FORMAT,
            input: [3, 8, 8],
            steps: vec![
                conv(0, 8, 3, 2, [0, 0, 1, 1], 0, 216, Act::Silu),
                Step::Pool { x: 1 },
                conv(2, 8, 1, 1, [0; 4], 224, 288, Act::Sigmoid),
                Step::Mul { x: 1, gate: 3 },
                Step::Add { a: 4, b: 1 },
                Step::Pool { x: 5 },
                conv(6, 4, 1, 1, [0; 4], 296, 328, Act::None),
            ],
            output: 7,
            weights_len: 332,
        }
    }

    #[test]
    fn shapes_follow_the_steps() {
        let s = tiny().shapes().unwrap();
        assert_eq!(s[1], [8, 4, 4]);
        assert_eq!(s[2], [8, 1, 1]);
        assert_eq!(s[7], [4, 1, 1]);
        let p = NetPlan::from_json(&serde_json::to_string(&tiny()).unwrap()).unwrap();
        assert_eq!(p, tiny());
    }

    #[test]
    fn inconsistent_plans_are_errors_naming_the_step() {
        let mut p = tiny();
        p.weights_len = 331;
        assert!(p.shapes().unwrap_err().contains("step 6"), "{}", p.shapes().unwrap_err());
        let mut p = tiny();
        p.steps[4] = Step::Add { a: 4, b: 2 };
        assert!(p.shapes().unwrap_err().contains("step 4"));
        let mut p = tiny();
        p.steps[0] = Step::Pool { x: 3 };
        assert!(p.shapes().unwrap_err().contains("not computed before"));
        let mut p = tiny();
        p.output = 5;
        assert!(p.shapes().unwrap_err().contains("not [classes, 1, 1]"));
        p.format = 9;
        assert!(p.shapes().unwrap_err().contains("format 9"));
        assert!(NetPlan::from_json("{\"format\": 1}").unwrap_err().starts_with("not a plan"));
        assert!(read_weights(&[0; 12], &tiny()).unwrap_err().contains("332 floats"));
    }
}
