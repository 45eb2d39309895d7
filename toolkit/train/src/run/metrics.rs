//! Per-epoch metrics: one JSON object per line in `RUN_DIR/metrics.jsonl` and an SVG plot of the
//! curves (`RUN_DIR/curves.svg`), both rewritten from the kept records, so a resumed run drops
//! the lines of the epoch it redoes.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use effv2_edge::io::atomic::write_atomic;

use crate::TrainError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub stage: usize,
    pub size: usize,
    pub randaug: f64,
    pub mixup: f64,
    pub dropout: f64,
    pub lr: f64,
    pub train_loss: f64,
    pub train_top1: f64,
    pub test_top1: f64,
    pub test_top5: f64,
    pub images_per_sec: f64,
    pub epoch_seconds: f64,
    /// Training time of the whole run so far, across resumes.
    pub train_seconds: f64,
}

/// Records of the epochs up to `upto` from an existing file (missing file: none).
pub fn read(path: &Path, upto: usize) -> Vec<EpochMetrics> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<EpochMetrics>(l).ok()).filter(|m| m.epoch <= upto).collect()
}

pub fn write(dir: &Path, records: &[EpochMetrics]) -> Result<(), TrainError> {
    let mut s = String::new();
    for r in records {
        s.push_str(&serde_json::to_string(r).expect("metrics serialize"));
        s.push('\n');
    }
    let p = dir.join("metrics.jsonl");
    write_atomic(&p, s.as_bytes()).map_err(|e| TrainError::io(&p, e))?;
    let p = dir.join("curves.svg");
    write_atomic(&p, svg(records).as_bytes()).map_err(|e| TrainError::io(&p, e))
}

/// Two panels: training loss, and train/test top-1 accuracy, against the epoch.
pub fn svg(records: &[EpochMetrics]) -> String {
    let (w, h, pad) = (360.0, 240.0, 40.0);
    let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#, 2.0 * w, h);
    s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    let n = records.len().max(2) as f64;
    type Series<'a> = Vec<(&'a str, &'a str, Vec<f64>)>;
    let panels: [(&str, Series); 2] = [
        ("training loss", vec![("loss", "#d62728", records.iter().map(|r| r.train_loss).collect())]),
        (
            "top-1 accuracy",
            vec![("train", "#1f77b4", records.iter().map(|r| r.train_top1).collect()), ("test", "#2ca02c", records.iter().map(|r| r.test_top1).collect())],
        ),
    ];
    for (p, (title, series)) in panels.iter().enumerate() {
        let x0 = p as f64 * w;
        let all: Vec<f64> = series.iter().flat_map(|s| s.2.iter().copied()).filter(|v| v.is_finite()).collect();
        let (lo, hi) = (all.iter().copied().fold(f64::INFINITY, f64::min), all.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
        let _ = write!(s, r#"<text x="{}" y="16">{title}</text>"#, x0 + pad);
        let _ = write!(s, r#"<rect x="{}" y="{pad}" width="{}" height="{}" fill="none" stroke="gray"/>"#, x0 + pad, w - 1.5 * pad, h - 2.0 * pad);
        let _ = write!(s, r#"<text x="{}" y="{}">{hi:.3}</text><text x="{}" y="{}">{lo:.3}</text>"#, x0 + 2.0, pad + 4.0, x0 + 2.0, h - pad);
        let _ = write!(s, r#"<text x="{}" y="{}">epoch 1..{}</text>"#, x0 + pad, h - pad + 14.0, records.len());
        for (k, (name, colour, vals)) in series.iter().enumerate() {
            let pts: Vec<String> = vals
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, v)| format!("{:.1},{:.1}", x0 + pad + (w - 1.5 * pad) * i as f64 / (n - 1.0), h - pad - (h - 2.0 * pad) * (v - lo) / (hi - lo)))
                .collect();
            let _ = write!(s, r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##, pts.join(" "));
            let _ = write!(s, r##"<text x="{}" y="{}" fill="{colour}">{name}</text>"##, x0 + w - 0.5 * pad - 40.0, pad + 14.0 + 12.0 * k as f64);
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, loss: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            stage: 0,
            size: 32,
            randaug: 0.0,
            mixup: 0.0,
            dropout: 0.2,
            lr: 0.01,
            train_loss: loss,
            train_top1: 0.5,
            test_top1: 0.6,
            test_top5: 0.9,
            images_per_sec: 100.0,
            epoch_seconds: 1.0,
            train_seconds: epoch as f64,
        }
    }

    #[test]
    fn resumed_runs_drop_redone_epochs_and_plot_every_series() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &[rec(1, 2.0), rec(2, 1.5), rec(3, f64::NAN)]).unwrap();
        let kept = read(&d.path().join("metrics.jsonl"), 2);
        assert_eq!(kept.iter().map(|r| r.epoch).collect::<Vec<_>>(), vec![1, 2]);
        let svg = std::fs::read_to_string(d.path().join("curves.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 3 && svg.trim_end().ends_with("</svg>"));
        assert!(read(&d.path().join("missing.jsonl"), 5).is_empty());
    }
}
