//! Parameter and MAC counts against the peers' published numbers (timm/torchvision, 1000 classes).

use effv2_edge::graph::build;
use effv2_edge::spec::{variants, FusedStages, ModelOptions, ModelSpec};

#[test]
fn params_equal_peers_and_macs_within_1_5_percent() {
    for v in variants() {
        let spec = ModelSpec::new(&v, ModelOptions::default()).unwrap();
        let cost = build(&spec, v.eval_size, v.eval_size).unwrap().cost();
        assert_eq!(cost.params, v.expected_params, "{} params", v.name);
        let gmacs = cost.macs as f64 / 1e9;
        let rel = (gmacs - v.peer_gmacs).abs() / v.peer_gmacs;
        assert!(rel < 0.015, "{} macs {gmacs:.4} G vs peer {} G ({:.2}%)", v.name, v.peer_gmacs, rel * 100.0);
    }
}

/// gpu-machine.md: timm models with the first k stages fused, the rest MBConv+SE, at 224
/// (params in millions, MACs in giga, both rounded as published).
#[test]
fn fused_placement_sweep_matches_timm_sweep() {
    let b0 = [(7.00, 0.485), (7.01, 0.533), (7.04, 0.646), (7.14, 0.718), (7.75, 0.841), (10.38, 1.394), (22.45, 2.015)];
    let s = [(20.81, 1.691), (20.82, 1.802), (21.03, 2.512), (21.46, 2.850), (24.01, 3.375), (33.86, 5.440), (76.03, 7.623)];
    for (name, table) in [("efficientnetv2-b0", b0), ("efficientnetv2-s", s)] {
        for (k, (mparams, gmacs)) in table.iter().enumerate() {
            let o = ModelOptions { fused_stages: FusedStages::First(k), ..Default::default() };
            let cost = build(&ModelSpec::from_name(name, o).unwrap(), 224, 224).unwrap().cost();
            let (p, m) = (cost.params as f64 / 1e6, cost.macs as f64 / 1e9);
            println!("{name} k={k}: {p:.3}M {m:.4}G (timm {mparams}M {gmacs}G)");
            assert!((p - mparams).abs() < 0.0051, "{name} k={k} params {p}");
            assert!((m - gmacs).abs() / gmacs < 0.015, "{name} k={k} macs {m}");
        }
    }
}
