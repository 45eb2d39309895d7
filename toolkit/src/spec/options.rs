//! Model options: what a user may change about a variant without changing its identity.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use super::SpecError;

/// Activation used in every block, the stem, the head and inside SE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// x·sigmoid(x) (`tf.nn.swish`), the official choice.
    Silu,
    /// min(max(x, 0), 6): EfficientNet-Lite's int8-friendly replacement.
    Relu6,
}

impl FromStr for Activation {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.to_ascii_lowercase().as_str() {
            "silu" | "swish" => Ok(Activation::Silu),
            "relu6" => Ok(Activation::Relu6),
            _ => Err(SpecError::Option(format!("unknown activation {s:?} (expected silu or relu6)"))),
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Activation::Silu => "silu",
            Activation::Relu6 => "relu6",
        })
    }
}

/// How convolutions pad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Padding {
    /// TensorFlow "SAME": output = ceil(in / stride); the odd pixel goes at the bottom/right.
    TfSame,
    /// PyTorch style: (k-1)/2 on every side.
    Symmetric,
}

impl FromStr for Padding {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.to_ascii_lowercase().as_str() {
            "tf-same" | "same" | "tf" => Ok(Padding::TfSame),
            "symmetric" | "torch" => Ok(Padding::Symmetric),
            _ => Err(SpecError::Option(format!("unknown padding {s:?} (expected tf-same or symmetric)"))),
        }
    }
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Padding::TfSame => "tf-same",
            Padding::Symmetric => "symmetric",
        })
    }
}

/// Which stages use Fused-MBConv. Serialized as its CLI text (`official`, `none`, `3`, `0,1,3`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum FusedStages {
    /// As the variant's table says.
    #[default]
    Official,
    /// Every stage.
    All,
    /// The first N stages (`--fused-stages N`).
    First(usize),
    /// Exactly these stage indices, 0-based (`--fused-stages 0,1,3`; `none` is the empty set).
    Only(BTreeSet<usize>),
}

impl FusedStages {
    /// Is stage `i` fused, given the table's own choice for it?
    pub fn is_fused(&self, stage: usize, official: bool) -> bool {
        match self {
            FusedStages::Official => official,
            FusedStages::All => true,
            FusedStages::First(n) => stage < *n,
            FusedStages::Only(set) => set.contains(&stage),
        }
    }

    /// Reject placements that name stages the variant does not have.
    pub fn validate(&self, num_stages: usize) -> Result<(), SpecError> {
        let bad = match self {
            FusedStages::Official | FusedStages::All => None,
            FusedStages::First(n) => (*n > num_stages).then_some(*n),
            FusedStages::Only(set) => set.iter().copied().find(|&s| s >= num_stages),
        };
        match bad {
            Some(b) => Err(SpecError::Option(format!(
                "--fused-stages names stage {b}, but this model has {num_stages} stages (0..{})",
                num_stages - 1
            ))),
            None => Ok(()),
        }
    }
}

impl Serialize for FusedStages {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for FusedStages {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for FusedStages {
    type Err = SpecError;
    /// `official`, `none`, `all`, `N` (first N stages) or a comma list `0,1,3` (a single index: `3,`).
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        let err = || SpecError::Option(format!(
            "bad --fused-stages {s:?}: expected official, none, all, N (first N stages) or a list like 0,1,3"
        ));
        match s.to_ascii_lowercase().as_str() {
            "official" | "default" => return Ok(FusedStages::Official),
            "none" => return Ok(FusedStages::Only(BTreeSet::new())),
            "all" => return Ok(FusedStages::All),
            _ => {}
        }
        if s.contains(',') {
            let set = s
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<usize>().map_err(|_| err()))
                .collect::<Result<BTreeSet<_>, _>>()?;
            Ok(FusedStages::Only(set))
        } else {
            s.parse::<usize>().map(FusedStages::First).map_err(|_| err())
        }
    }
}

impl fmt::Display for FusedStages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FusedStages::Official => f.write_str("official"),
            FusedStages::All => f.write_str("all"),
            FusedStages::First(n) => write!(f, "{n}"),
            FusedStages::Only(set) if set.is_empty() => f.write_str("none"),
            FusedStages::Only(set) => {
                let v: Vec<String> = set.iter().map(|s| s.to_string()).collect();
                if v.len() == 1 {
                    write!(f, "{},", v[0])
                } else {
                    f.write_str(&v.join(","))
                }
            }
        }
    }
}

/// Everything about a model besides its variant's table. `None` fields take the variant's default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOptions {
    pub num_classes: usize,
    /// Image channels (3 for RGB; 1 lets a grayscale model skip channel replication).
    pub in_channels: usize,
    /// Classifier dropout rate; `None` = the variant's.
    pub dropout: Option<f64>,
    /// Stochastic-depth rate for the last block (survival 1 - rate, ramped linearly over blocks).
    pub drop_path: f64,
    pub padding: Padding,
    pub bn_eps: f64,
    /// Width/depth coefficients replacing the variant's own (custom sizes).
    pub width: Option<f64>,
    pub depth: Option<f64>,
    pub activation: Activation,
    /// Squeeze-excite on/off (EfficientNet-Lite turns it off for int8 accelerators).
    pub se: bool,
    pub fused_stages: FusedStages,
    /// Put SE on Fused-MBConv blocks too (off in every official config).
    pub se_on_fused: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            num_classes: 1000,
            in_channels: 3,
            dropout: None,
            drop_path: 0.2,
            padding: Padding::TfSame,
            bn_eps: 1e-3,
            width: None,
            depth: None,
            activation: Activation::Silu,
            se: true,
            fused_stages: FusedStages::Official,
            se_on_fused: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_stages_parse_and_print() {
        let cases = [
            ("official", FusedStages::Official, "official"),
            ("3", FusedStages::First(3), "3"),
            ("none", FusedStages::Only(BTreeSet::new()), "none"),
            ("0,1,3", FusedStages::Only([0, 1, 3].into()), "0,1,3"),
            ("3,", FusedStages::Only([3].into()), "3,"),
            ("all", FusedStages::All, "all"),
        ];
        for (text, want, shown) in cases {
            let got: FusedStages = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), shown);
            assert_eq!(shown.parse::<FusedStages>().unwrap(), want);
        }
        for bad in ["x", "1,a", "-1", ""] {
            assert!(bad.parse::<FusedStages>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fused_stages_validate() {
        assert!(FusedStages::First(6).validate(6).is_ok());
        assert!(FusedStages::First(7).validate(6).is_err());
        assert!(FusedStages::Only([6].into()).validate(6).is_err());
        assert!(FusedStages::All.validate(6).is_ok());
    }
}
