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
    // An empty folder is said to be one, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(&python).arg(root.join("scripts/gpu/summarize.py")).arg(empty.path()).output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("no results in"));
}
