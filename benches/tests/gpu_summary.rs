//! scripts/gpu/summarize.py (run by scripts/gpu/check.sh on the GPU machine) on the committed
//! results of the 2026-11-28 H200 run: the ratios against the peers and the goals' verdicts come
//! out as recorded in the README, from the raw JSON.

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_summary_of_a_committed_run_gives_its_ratios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var("EFFV2_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python).arg(root.join("scripts/gpu/summarize.py")).arg(root.join("docs/gpu/h200-2026-11-28")).output();
    let Ok(out) = out else {
        eprintln!("skipped: no {python} here");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Training: ours 823.8 img/s, timm 1,268.5 (bf16); inference 5,960.9 on the GPU vs torch.compile 6,131.9.
    for want in [
        "| S@224 b128 bf16 training step | 155.1 ms, 824 img/s, 14.1 TFLOP/s, 11.1 GiB | 100.9 ms, 1269 img/s, 21.7 TFLOP/s, 9.7 GiB | 0.65x — goal 1.25x not met |",
        "timm eager 3949 img/s (1.51x), torch.compile 6132 img/s (0.97x — goal 1.00x not met)",
        "efficientnetv2-s @384 fused none bf16",
        "bf16 after 3 steps: weights worst rel err 1.41e-2",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // The data pipeline's line: our loader against the DataLoader peer and the training step's rate.
    let d = tempfile::tempdir().unwrap();
    let write = |name: &str, v: serde_json::Value| std::fs::write(d.path().join(name), v.to_string()).unwrap();
    write("ours_data_224.json", serde_json::json!({"source": "synthetic: 64 JPEGs 500x375 (quality 90)", "image_size": 224, "randaug": 10.0, "workers": 15, "images_per_s": 4500.0}));
    write("timm_data_224.json", serde_json::json!({"images_per_s": 3000.0}));
    let summary = |dir: &Path| {
        let out = Command::new(&python).arg(root.join("scripts/gpu/summarize.py")).arg(dir).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = summary(d.path());
    assert!(text.contains("15 workers): ours 4500 img/s, torchvision + timm DataLoader 3000 img/s (1.50x)"), "{text}");
    std::fs::copy(root.join("docs/gpu/h200-2026-11-28/ours_train_s224_bf16.json"), d.path().join("ours_train_s224_bf16.json")).unwrap();
    assert!(summary(d.path()).contains("the bf16 training step takes 824 img/s: keeps up (5.5x)"));
    write("ours_data_224.json", serde_json::json!({"source": "x", "image_size": 224, "randaug": 10.0, "workers": 1, "images_per_s": 300.0}));
    assert!(summary(d.path()).contains("does NOT keep up (0.36x)"));

    // An empty folder is said to be one, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(&python).arg(root.join("scripts/gpu/summarize.py")).arg(empty.path()).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("no results in"));
}
