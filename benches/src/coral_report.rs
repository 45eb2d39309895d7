//! Coral sweep reports: `report.json`, `report.md` and `report.svg` (predicted latency line,
//! int8 parameter bars against the on-chip cache), each written atomically.

use std::fmt::Write as _;
use std::path::Path;

use effv2_edge::io::atomic::write_atomic;

use crate::coral::CoralSweepReport;
use crate::report::{table_label, thousands, JSON_FILE, MD_FILE, SVG_FILE};
use crate::svg::{render, Plot};
use crate::{io_err, BenchError};

pub fn write_all(r: &CoralSweepReport, dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut json = serde_json::to_string_pretty(r).expect("reports serialize");
    json.push('\n');
    for (name, text) in [(JSON_FILE, json), (MD_FILE, markdown(r)), (SVG_FILE, plot(r))] {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes()).map_err(io_err(&path))?;
    }
    Ok(())
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

pub fn markdown(r: &CoralSweepReport) -> String {
    let s = &r.settings;
    let o = &s.options;
    let c = &r.cost_model;
    let mut out = String::new();
    let _ = writeln!(out, "# Fused-MBConv placement sweep: {} @{} on coral (Edge TPU, int8)\n", s.model, s.image_size);
    let _ = writeln!(
        out,
        "- model: {} @{}×{}, {} classes, {} activation, SE {}, {} padding, fresh weights (seed {}); official placement {}",
        s.model,
        s.image_size,
        s.image_size,
        o.num_classes,
        o.activation,
        if o.se { "on" } else { "off" },
        o.padding,
        s.weight_seed,
        r.official_stages
    );
    let _ = writeln!(
        out,
        "- int8: {} calibration ({} images{}), {}; every op checked against the Edge TPU rules and the compiler's partition",
        s.calibration,
        s.calibration_images,
        if s.synthetic_calibration { ": random images — fine for mapping, bytes and the prediction, not for accuracy" } else { "" },
        s.method
    );
    let _ = writeln!(
        out,
        "- predicted latency: cost model fitted to Coral's published USB Accelerator latencies (docs/coral/cost_model.md): \
         c_mac {} ps/MAC, c_el {} ps/element, t_op {} µs, USB {} MB/s, cache {:.2} MiB",
        c.mac_ps,
        c.element_ps,
        c.op_overhead_us,
        c.usb_mb_per_s,
        mib(c.cache_bytes)
    );
    let _ = writeln!(out, "- measured latency: {}", r.device);
    if let Some(row) = r.rows.first() {
        let _ = writeln!(out, "- edgetpu_compiler: {}", row.compiler);
    }
    let _ = writeln!(out, "- date: {}; effv2-bench {}; sweep took {:.0} s", r.date_utc, r.bench_version, r.wall_s);
    let _ = writeln!(out, "- `k` = the first k stages use Fused-MBConv; F = Fused-MBConv, M = MBConv; **bold** = the official network\n");
    out.push_str(
        "| fused stages | stages | params | GMACs | Edge TPU ops | LOGISTIC+MUL | int8 params MiB | streamed MiB | predicted ms | \
         matrix / element / overhead / stream ms | vs official | measured |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|\n");
    for row in &r.rows {
        let (label, b) = table_label(&row.fused_stages, row.baseline_only, row.official);
        let p = &row.predicted;
        let measured = match &row.measured.latency_ms {
            Some(l) => format!("p50 {:.2} ms", l.p50),
            None => "no device".into(),
        };
        let _ = writeln!(
            out,
            "| {b}{label}{b} | `{}` | {} | {:.3} | {}/{} | {} | {:.2}{} | {:.2} | {b}{:.2}{b} | {:.2} / {:.2} / {:.2} / {:.2}{} | {:.2}× | {measured} |",
            row.stages,
            thousands(row.params),
            row.macs as f64 / 1e9,
            row.ops_on_edgetpu,
            row.ops,
            row.logistic_mul_ops,
            mib(row.param_bytes),
            if row.fits_on_chip { "" } else { " ⚠" },
            mib(row.streamed_bytes),
            p.total_ms,
            p.mac_bound_ms,
            p.element_bound_ms,
            p.overhead_ms,
            p.stream_ms,
            if p.stream_bound { " (stream-bound)" } else { "" },
            row.predicted_vs_official,
        );
    }
    for row in r.rows.iter().filter(|r| r.first_cpu_op.is_some()) {
        let _ = writeln!(out, "\n- {}: first CPU op {}", row.fused_stages, row.first_cpu_op.as_deref().unwrap_or(""));
    }
    out.push_str(
        "\n⚠ = parameters exceed the on-chip cache: the rest streams over USB every inference (overlapped with compute \
         in the model; stream-bound when it takes longer).\n",
    );
    out.push_str("\n![predicted latency and int8 parameters vs Fused-MBConv placement](report.svg)\n");
    out
}

fn plot(r: &CoralSweepReport) -> String {
    let s = &r.settings;
    let variant = format!("{}, SE {}", s.options.activation, if s.options.se { "on" } else { "off" });
    render(&Plot {
        title: format!("{} @{} ({variant}) on the Edge TPU", s.model, s.image_size),
        subtitle: format!("int8; latency predicted by the cost model fitted to Coral's published latencies · {} · {}", r.device, r.date_utc),
        x_label: "Fused-MBConv stages (k = first k stages fused)".into(),
        labels: r.rows.iter().map(|row| row.fused_stages.clone()).collect(),
        p50_ms: r.rows.iter().map(|row| row.predicted.total_ms).collect(),
        p90_ms: r.rows.iter().map(|row| row.measured.latency_ms.map(|l| l.p50).unwrap_or(f64::NAN)).collect(),
        params_m: r.rows.iter().map(|row| mib(row.param_bytes)).collect(),
        official: r.rows.iter().map(|row| row.official).collect(),
        line_label: "predicted latency".into(),
        dashed_label: "measured p50".into(),
        bar_label: "int8 parameters".into(),
        right_axis: "int8 parameters (MiB)".into(),
        bar_limit: r.rows.first().map(|row| (mib(row.cache_bytes), format!("on-chip cache {:.0} MiB", mib(row.cache_bytes)))),
    })
}
