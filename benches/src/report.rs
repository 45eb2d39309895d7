//! Sweep reports: `report.json` (the whole [`SweepReport`]), `report.md` (a header and one table
//! row per placement) and `report.svg` (see [`crate::svg`]), each written atomically.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use effv2_edge::io::atomic::write_atomic;

use crate::sweep::SweepReport;
use crate::{io_err, BenchError};

pub const JSON_FILE: &str = "report.json";
pub const MD_FILE: &str = "report.md";
pub const SVG_FILE: &str = "report.svg";

/// Write the three report files into `dir` (created if needed).
pub fn write_all(r: &SweepReport, dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut json = serde_json::to_string_pretty(r).expect("reports serialize");
    json.push('\n');
    for (name, text) in [(JSON_FILE, json), (MD_FILE, markdown(r)), (SVG_FILE, crate::svg::sweep_plot(r))] {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes()).map_err(io_err(&path))?;
    }
    Ok(())
}

/// A sweep row's first table cell ("3", "official (baseline)") and the Markdown emphasis of
/// the official network's row ("**", else "").
pub(crate) fn table_label(fused_stages: &str, baseline_only: bool, official: bool) -> (String, &'static str) {
    let label = if baseline_only { format!("{fused_stages} (baseline)") } else { fused_stages.to_string() };
    (label, if official { "**" } else { "" })
}

/// The Markdown report: what was measured where, then the table.
pub fn markdown(r: &SweepReport) -> String {
    let s = &r.settings;
    let m = &r.machine;
    let mut out = String::new();
    let _ = writeln!(out, "# Fused-MBConv placement sweep: {} @{} on {} ({})\n", s.model, s.image_size, s.target, r.backend);
    let mut machine = m.describe();
    if let Some(k) = &m.kernel {
        let _ = write!(machine, ", kernel {k}");
    }
    if let Some(g) = &m.governor {
        let _ = write!(machine, ", governor {g}");
    }
    if let Some(l) = m.load_avg_1m {
        let _ = write!(machine, ", load average {l:.2} at the end");
    }
    let _ = writeln!(out, "- machine: {machine}");
    let _ = writeln!(
        out,
        "- runtime: {} on {}; batch {}, {}, {} warm-up + {} timed iterations{}, {} percentiles",
        r.backend,
        r.device,
        s.batch,
        s.precision,
        s.warmup,
        s.iters,
        if s.rounds > 1 { format!(" in each of {} interleaved rounds (samples pooled)", s.rounds) } else { String::new() },
        s.percentile_method
    );
    let o = &s.options;
    let mut shape = String::new();
    if let Some(w) = o.width {
        let _ = write!(shape, ", width {w}");
    }
    if let Some(d) = o.depth {
        let _ = write!(shape, ", depth {d}");
    }
    let _ = write!(shape, ", {} activation, SE {}, {} padding", o.activation, if o.se { "on" } else { "off" }, o.padding);
    let _ = writeln!(
        out,
        "- model: {} @{}×{}, {} classes{shape}, fresh weights (seed {}); official placement {}",
        s.model, s.image_size, s.image_size, o.num_classes, s.weight_seed, r.official_stages
    );
    let _ = writeln!(out, "- date: {}; effv2-bench {}; sweep took {:.0} s", r.date_utc, r.bench_version, r.wall_s);
    let _ = writeln!(
        out,
        "- `k` = the first k stages use Fused-MBConv; stages column: F = Fused-MBConv, M = MBConv; **bold** = the official network\n"
    );
    out.push_str("| fused stages | stages | params | GMACs | p50 ms | p90 ms | images/s | ms / GMAC | p50 vs official |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for row in &r.rows {
        let (label, b) = table_label(&row.label(), row.baseline_only, row.official);
        let _ = writeln!(
            out,
            "| {b}{label}{b} | `{}` | {} | {:.3} | {b}{:.2}{b} | {:.2} | {:.1} | {:.2} | {:.2}× |",
            row.stages,
            thousands(row.params),
            row.macs as f64 / 1e9,
            row.latency_ms.p50,
            row.latency_ms.p90,
            row.throughput_ips,
            row.ms_per_gmac,
            row.p50_vs_official,
        );
    }
    out.push_str("\n![p50 latency and parameters vs Fused-MBConv placement](report.svg)\n");
    out
}

/// 7139704 → "7,139,704".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// "2026-11-27 14:05 UTC" (no date crate for one line of a report).
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc_from_unix(secs)
}

fn utc_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hh, mm) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_from_unix(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_from_unix(1_795_788_300), "2026-11-27 14:05 UTC");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(7_139_704), "7,139,704");
    }
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use crate::machine::Machine;
    use crate::stats::Summary;
    use crate::sweep::{Settings, SweepRow};

    fn row(label: &str, stages: &str, p50: f64, official: bool, baseline_only: bool) -> SweepRow {
        let lat = Summary::from_samples(&[p50, p50 * 1.1]).unwrap();
        SweepRow {
            fused_stages: label.into(),
            stages: stages.into(),
            official,
            baseline_only,
            params: 7_139_704,
            macs: 718_000_000,
            load_s: 0.4,
            latency_ms: lat,
            throughput_ips: 1e3 / lat.mean,
            ms_per_gmac: p50 / 0.718,
            p50_vs_official: p50 / 28.0,
        }
    }

    fn report() -> SweepReport {
        SweepReport {
            bench_version: "0.1.0".into(),
            date_utc: "2026-11-27 14:05 UTC".into(),
            machine: Machine::detect(),
            backend: "tract".into(),
            device: "cpu x86_64, 1 thread".into(),
            settings: Settings {
                target: "cpu".into(),
                model: "efficientnetv2-b0".into(),
                placements: "0..=1".into(),
                image_size: 224,
                options: effv2_edge::spec::ModelOptions::default(),
                batch: 1,
                threads: 1,
                warmup: 5,
                iters: 30,
                rounds: 1,
                weight_seed: 0,
                input_seed: 0,
                precision: "fp32".into(),
                percentile_method: "nearest-rank".into(),
            },
            official_stages: "FFFMMM".into(),
            rows: vec![row("0", "MMMMMM", 30.0, false, false), row("1", "FMMMMM", 29.0, false, false), row("official", "FFFMMM", 28.0, true, true)],
            peak_rss_bytes: Some(1 << 20),
            wall_s: 12.0,
        }
    }

    #[test]
    fn writes_json_markdown_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/report");
        let r = report();
        write_all(&r, &out).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(JSON_FILE)).unwrap()).unwrap();
        assert_eq!(json["rows"].as_array().unwrap().len(), 3);
        assert_eq!(json["settings"]["threads"], 1);
        assert_eq!(json["rows"][0]["latency_ms"]["p50"], 30.0);

        let md = std::fs::read_to_string(out.join(MD_FILE)).unwrap();
        assert!(md.starts_with("# Fused-MBConv placement sweep: efficientnetv2-b0 @224 on cpu (tract)"), "{md}");
        assert!(md.contains("| 0 | `MMMMMM` | 7,139,704 | 0.718 | 30.00 |"), "{md}");
        assert!(md.contains("| **official (baseline)** | `FFFMMM` |"), "{md}");
        assert!(md.contains("| 1.07× |"), "{md}");
        assert!(md.contains("2026-11-27 14:05 UTC") && md.contains("report.svg"));

        let svg = std::fs::read_to_string(out.join(SVG_FILE)).unwrap();
        crate::svg::check_well_formed(&svg).unwrap();
        assert!(svg.contains("efficientnetv2-b0 @224"));
    }

    #[test]
    fn unwritable_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = write_all(&report(), &file.join("sub")).unwrap_err().to_string();
        assert!(err.contains("file"), "{err}");
    }
}
