//! Finite-difference checks of every op's backward on the CPU training engine, and of a whole
//! small EfficientNetV2 (both padding conventions, SE, fused and MBConv blocks, drop-path, dropout).

mod common;

use common::{gradcheck, B};
use effv2_edge::graph::{build, ActKind, Op};
use effv2_edge::spec::{ModelOptions, ModelSpec, Padding};

const NONE: fn(f32) -> bool = |_| false;

#[test]
fn regular_convs_all_geometries() {
    for (k, stride, pad, bias) in [(3, 1, Padding::TfSame, false), (3, 2, Padding::TfSame, true), (3, 2, Padding::Symmetric, false), (5, 2, Padding::TfSame, false), (1, 1, Padding::TfSame, true), (1, 2, Padding::Symmetric, false)] {
        for side in [7, 8] {
            let mut b = B::new(3, side, side);
            b.conv(0, 4, k, stride, false, pad, bias);
            gradcheck(&b.g, 2, 1, 12, NONE);
        }
    }
}

#[test]
fn depthwise_convs_all_geometries() {
    for (k, stride, pad) in [(3, 1, Padding::TfSame), (3, 2, Padding::TfSame), (3, 2, Padding::Symmetric), (5, 1, Padding::Symmetric), (5, 2, Padding::TfSame)] {
        for side in [6, 9] {
            let mut b = B::new(5, side, side);
            b.conv(0, 5, k, stride, true, pad, false);
            gradcheck(&b.g, 2, 2, 12, NONE);
        }
    }
}

#[test]
fn batch_norm_training_mode() {
    let mut b = B::new(4, 5, 5);
    b.bn(0);
    gradcheck(&b.g, 3, 3, 16, NONE);
    // BN on pooled features (one value per sample and channel), as after SE-like shapes.
    let mut b = B::new(6, 1, 1);
    b.bn(0);
    gradcheck(&b.g, 4, 4, 16, NONE);
}

#[test]
fn activations() {
    for (kind, skip) in [(ActKind::Silu, NONE), (ActKind::Sigmoid, NONE), (ActKind::Relu6, (|v: f32| v.abs() < 0.05 || (v - 6.0).abs() < 0.05) as fn(f32) -> bool)] {
        let mut b = B::new(3, 4, 4);
        b.op(Op::Act(kind), vec![0]);
        gradcheck(&b.g, 2, 5, 20, skip);
    }
}

#[test]
fn squeeze_excite_with_pool_bias_convs_and_gate() {
    let mut b = B::new(6, 5, 5);
    let p = b.op(Op::GlobalAvgPool, vec![0]);
    let r = b.conv(p, 2, 1, 1, false, Padding::TfSame, true);
    let r = b.op(Op::Act(ActKind::Silu), vec![r]);
    let e = b.conv(r, 6, 1, 1, false, Padding::TfSame, true);
    let gate = b.op(Op::Act(ActKind::Sigmoid), vec![e]);
    b.op(Op::Mul, vec![0, gate]);
    gradcheck(&b.g, 3, 6, 16, NONE);
}

#[test]
fn residual_add_drop_path_and_dropout() {
    let mut b = B::new(3, 4, 4);
    let c = b.conv(0, 3, 3, 1, false, Padding::TfSame, false);
    let d = b.op(Op::DropPath { survival: 0.6 }, vec![c]);
    b.op(Op::Add, vec![d, 0]);
    gradcheck(&b.g, 6, 7, 16, NONE);
    let mut b = B::new(8, 1, 1);
    let d = b.op(Op::Dropout { rate: 0.4 }, vec![0]);
    b.linear(d, 3);
    gradcheck(&b.g, 4, 8, 16, NONE);
}

#[test]
fn global_pool_and_linear() {
    let mut b = B::new(5, 3, 3);
    let p = b.op(Op::GlobalAvgPool, vec![0]);
    b.linear(p, 4);
    gradcheck(&b.g, 3, 9, 16, NONE);
}

#[test]
fn whole_small_network_both_paddings() {
    for (padding, h) in [(Padding::TfSame, 64), (Padding::Symmetric, 65)] {
        let o = ModelOptions {
            width: Some(0.25),
            depth: Some(0.25),
            num_classes: 5,
            in_channels: 1,
            padding,
            drop_path: 0.3,
            dropout: Some(0.2),
            ..Default::default()
        };
        let g = build(&ModelSpec::from_name("b0", o).unwrap(), h, h).unwrap();
        // Batch 8 at 64 px keeps every BN over at least 32 values: well-conditioned enough that a
        // finite difference in f32 means something.
        common::gradcheck_directional(&g, 8, 10, 3e-3, 2e-2);
    }
}
