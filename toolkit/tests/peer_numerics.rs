//! `run` gives the peer's own logits for the same weights: every committed fixture (timm-tf,
//! timm, torchvision; odd sizes; custom Fused-MBConv placements) imported and run on the CPU engine.
//! Fixtures come from scripts/peers/make_fixtures.py (PyTorch eval mode, random weights/BN stats).

use std::path::{Path, PathBuf};

use effv2_edge::engine::CpuEngine;
use effv2_edge::io::npy;
use effv2_edge::spec::{variant, ModelOptions, ModelSpec};
use effv2_edge::weights::import::{import, Layout};

/// max |ours - peer| / max |peer| must stay below this (the bound).
const REL_TOL: f32 = 1e-4;

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peers");
    let mut v: Vec<PathBuf> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("meta.json").exists()).collect();
    v.sort();
    v
}

#[test]
fn every_fixture_matches_its_peer() {
    let cases = cases();
    assert!(cases.len() >= 7, "fixtures missing: {cases:?}");
    for dir in cases {
        let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        let layout: Layout = meta["layout"].as_str().unwrap().parse().unwrap();
        let model = meta["model"].as_str().unwrap();
        let base = ModelOptions {
            num_classes: meta["num_classes"].as_u64().unwrap() as usize,
            width: meta["width"].as_f64(),
            depth: meta["depth"].as_f64(),
            fused_stages: meta["fused_stages"].as_str().unwrap().parse().unwrap(),
            ..ModelOptions::default()
        };
        let spec = ModelSpec::new(&variant(model).unwrap(), layout.options(base)).unwrap();
        assert_eq!(spec.options.bn_eps, meta["bn_eps"].as_f64().unwrap(), "{dir:?}");
        let ckpt = import(layout, &spec, &dir.join("weights.safetensors"), layout.preprocess(&variant(model).unwrap()), None)
            .unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        let x = npy::read_f32(&dir.join("input.npy")).unwrap();
        let want = npy::read_f32(&dir.join("logits.npy")).unwrap();
        let graph = ckpt.graph(x.shape()[2], x.shape()[3]).unwrap();
        let got = CpuEngine::new(&graph, &ckpt.weights).unwrap().run(&x).unwrap();
        let rel = got.max_abs_diff(&want).expect("same shape") / want.max_abs();
        println!("{:<34} {:?} rel err {rel:.2e}", dir.file_name().unwrap().to_string_lossy(), x.shape());
        assert!(rel < REL_TOL, "{dir:?}: rel err {rel}");
    }
}
