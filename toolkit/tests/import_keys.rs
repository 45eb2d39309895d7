//! Our key mapping reproduces the peers' full-size state dicts key for key and shape for shape
//! (fixtures dumped from timm 1.0.31 / torchvision 0.29.2 by scripts/peers/dump_keys.py), and
//! importing a file of the wrong variant, layout or integrity fails with an error naming the key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use effv2_edge::graph::build;
use effv2_edge::spec::{variant, ModelOptions, ModelSpec};
use effv2_edge::weights::import::{import, KeyMap, Layout};
use effv2_edge::weights::write_safetensors;
use effv2_edge::Tensor;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peer_keys")
}

/// Peer keys → shapes, without the integer `num_batches_tracked` buffers.
fn peer_keys(file: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(fixture_dir().join(file)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()))
        .filter(|(k, _): &(String, Vec<usize>)| !k.ends_with("num_batches_tracked"))
        .collect()
}

fn spec_for(layout: Layout, name: &str) -> ModelSpec {
    ModelSpec::new(&variant(name).unwrap(), layout.options(ModelOptions::default())).unwrap()
}

fn mapped_keys(layout: Layout, spec: &ModelSpec) -> BTreeMap<String, Vec<usize>> {
    let graph = build(spec, 64, 64).unwrap();
    let map = KeyMap::new(layout, spec);
    graph.params.iter().map(|p| (map.peer_key(&p.name).unwrap(), p.shape.clone())).collect()
}

#[test]
fn mapping_reproduces_every_peer_state_dict() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixture_dir()).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let (family, model) = file.trim_end_matches(".json").split_once('_').unwrap();
        let layouts: &[Layout] = if family == "torchvision" { &[Layout::Torchvision] } else { &[Layout::TimmTf, Layout::Timm] };
        let want = peer_keys(&file);
        for &layout in layouts {
            let got = mapped_keys(layout, &spec_for(layout, model));
            assert_eq!(got.len(), want.len(), "{file} {layout}: key count");
            for (k, shape) in &want {
                assert_eq!(got.get(k), Some(shape), "{file} {layout}: key {k}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * 2 + 3);
}

/// A state dict file with the peer's keys and shapes, filled with small values.
fn write_peer_file(dir: &Path, name: &str, keys: &BTreeMap<String, Vec<usize>>) -> PathBuf {
    let tensors: Vec<(String, Tensor)> = keys
        .iter()
        .map(|(k, s)| {
            let fill = if k.ends_with("running_var") { 1.0 } else { 0.01 };
            (k.clone(), Tensor::full(s.clone(), fill))
        })
        .collect();
    let path = dir.join(name);
    write_safetensors(&path, tensors.iter().map(|(k, t)| (k.as_str(), t)), HashMap::new()).unwrap();
    path
}

fn import_err(layout: Layout, model: &str, file: &Path) -> String {
    let spec = spec_for(layout, model);
    let pre = layout.preprocess(&variant(model).unwrap());
    import(layout, &spec, file, pre, None).unwrap_err().to_string()
}

#[test]
fn wrong_variant_layout_or_file_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let b0 = peer_keys("timm_efficientnetv2-b0.json");
    let file = write_peer_file(dir.path(), "b0.safetensors", &b0);

    // The right model imports.
    let spec = spec_for(Layout::TimmTf, "b0");
    let ckpt = import(Layout::TimmTf, &spec, &file, Layout::TimmTf.preprocess(&variant("b0").unwrap()), None).unwrap();
    assert_eq!(ckpt.weights.len(), build(&spec, 32, 32).unwrap().params.len());

    // Another variant: the first misfit key is named, and the fitting variant suggested.
    let err = import_err(Layout::TimmTf, "b1", &file);
    assert!(err.contains("missing key \"blocks.0.1.conv.weight\""), "{err}");
    assert!(err.contains("fit efficientnetv2-b0"), "{err}");
    let spec10 = ModelSpec::new(&variant("b0").unwrap(), ModelOptions { num_classes: 10, ..Layout::TimmTf.options(ModelOptions::default()) }).unwrap();
    let err = import(Layout::TimmTf, &spec10, &file, Layout::TimmTf.preprocess(&variant("b0").unwrap()), None).unwrap_err().to_string();
    assert!(err.contains("key \"classifier.weight\" has shape [1000, 1280], efficientnetv2-b0 expects [10, 1280]"), "{err}");
    assert!(err.contains("fit efficientnetv2-b0 with 1000 classes"), "{err}");

    // Another layout.
    let err = import_err(Layout::Torchvision, "b0", &file);
    assert!(err.contains("missing key \"features.0.0.weight\"") && err.contains("--from timm"), "{err}");

    // An extra key is named.
    let mut extra = b0.clone();
    extra.insert("blocks.9.0.conv_pw.weight".into(), vec![4, 4, 1, 1]);
    let file2 = write_peer_file(dir.path(), "extra.safetensors", &extra);
    let err = import_err(Layout::TimmTf, "b0", &file2);
    assert!(err.contains("unexpected key \"blocks.9.0.conv_pw.weight\""), "{err}");

    // Truncated or corrupt files: an error, never a panic.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.safetensors");
    for n in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..n]).unwrap();
        let err = import_err(Layout::TimmTf, "b0", &cut);
        assert!(err.contains("not a valid safetensors file"), "{n}: {err}");
    }
    // A garbled header, and a header length pointing past the end of the file.
    let mut garbled = bytes.clone();
    garbled[8..40].fill(b'#');
    std::fs::write(&cut, &garbled).unwrap();
    assert!(import_err(Layout::TimmTf, "b0", &cut).contains("not a valid safetensors file"));
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    std::fs::write(&cut, &long).unwrap();
    assert!(import_err(Layout::TimmTf, "b0", &cut).contains("not a valid safetensors file"));
}
