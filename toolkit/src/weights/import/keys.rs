//! Our parameter names → the peer's state-dict keys, one rule table per layout
//! (pytorch-peers.md §1.6, §2.4 and the checked mapping in §5).

use std::collections::HashMap;

use super::Layout;
use crate::spec::{BlockKind, BlockSpec, ModelSpec};

/// Our sub-modules of a block, in execution order (torchvision numbers `block.{j}` by this order).
fn sublayers(b: &BlockSpec) -> Vec<&'static str> {
    let mut v = Vec::with_capacity(4);
    match b.kind {
        BlockKind::MbConv => {
            if b.expand != 1 {
                v.push("expand");
            }
            v.push("dw");
            if b.se_ch.is_some() {
                v.push("se");
            }
            v.push("project");
        }
        BlockKind::FusedMbConv if b.expand != 1 => {
            v.push("fused");
            if b.se_ch.is_some() {
                v.push("se");
            }
            v.push("project");
        }
        BlockKind::FusedMbConv => {
            if b.se_ch.is_some() {
                v.push("se");
            }
            v.push("fused");
        }
    }
    v
}

/// timm module name for one of our block sub-layers: (conv name, bn name).
fn timm_module(b: &BlockSpec, module: &str) -> (&'static str, &'static str) {
    match (b.kind, b.expand != 1, module) {
        (BlockKind::MbConv, _, "expand") => ("conv_pw", "bn1"),
        (BlockKind::MbConv, _, "dw") => ("conv_dw", "bn2"),
        (BlockKind::MbConv, _, _) => ("conv_pwl", "bn3"),
        (BlockKind::FusedMbConv, true, "fused") => ("conv_exp", "bn1"),
        (BlockKind::FusedMbConv, true, _) => ("conv_pwl", "bn2"),
        (BlockKind::FusedMbConv, false, _) => ("conv", "bn1"),
    }
}

/// Maps our names for one model to peer keys.
pub struct KeyMap<'a> {
    layout: Layout,
    blocks: HashMap<(usize, usize), BlockSpec>,
    num_stages: usize,
    _spec: &'a ModelSpec,
}

impl<'a> KeyMap<'a> {
    pub fn new(layout: Layout, spec: &'a ModelSpec) -> Self {
        let blocks = spec.blocks().into_iter().map(|b| ((b.stage, b.index), b)).collect();
        KeyMap { layout, blocks, num_stages: spec.stages.len(), _spec: spec }
    }

    /// The peer key holding our parameter `name`; `None` for a name outside our scheme.
    pub fn peer_key(&self, name: &str) -> Option<String> {
        let parts: Vec<&str> = name.split('.').collect();
        let tv = self.layout == Layout::Torchvision;
        let head = self.num_stages + 1;
        Some(match parts.as_slice() {
            ["stem", "conv", leaf] if tv => format!("features.0.0.{leaf}"),
            ["stem", "conv", leaf] => format!("conv_stem.{leaf}"),
            ["stem", "bn", leaf] if tv => format!("features.0.1.{leaf}"),
            ["stem", "bn", leaf] => format!("bn1.{leaf}"),
            ["head", "conv", leaf] if tv => format!("features.{head}.0.{leaf}"),
            ["head", "conv", leaf] => format!("conv_head.{leaf}"),
            ["head", "bn", leaf] if tv => format!("features.{head}.1.{leaf}"),
            ["head", "bn", leaf] => format!("bn2.{leaf}"),
            ["classifier", leaf] if tv => format!("classifier.1.{leaf}"),
            ["classifier", leaf] => format!("classifier.{leaf}"),
            ["blocks", s, i, module, sub, leaf] => {
                let (s, i): (usize, usize) = (s.parse().ok()?, i.parse().ok()?);
                let b = self.blocks.get(&(s, i))?;
                if tv {
                    let j = sublayers(b).iter().position(|m| m == module)?;
                    let prefix = format!("features.{}.{i}.block.{j}", s + 1);
                    match (*module, *sub) {
                        ("se", "reduce") => format!("{prefix}.fc1.{leaf}"),
                        ("se", "expand") => format!("{prefix}.fc2.{leaf}"),
                        (_, "conv") => format!("{prefix}.0.{leaf}"),
                        (_, "bn") => format!("{prefix}.1.{leaf}"),
                        _ => return None,
                    }
                } else {
                    let prefix = format!("blocks.{s}.{i}");
                    let (conv, bn) = timm_module(b, module);
                    match (*module, *sub) {
                        ("se", "reduce") => format!("{prefix}.se.conv_reduce.{leaf}"),
                        ("se", "expand") => format!("{prefix}.se.conv_expand.{leaf}"),
                        (_, "conv") => format!("{prefix}.{conv}.{leaf}"),
                        (_, "bn") => format!("{prefix}.{bn}.{leaf}"),
                        _ => return None,
                    }
                }
            }
            _ => return None,
        })
    }
}
