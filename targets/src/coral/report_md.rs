//! `edgetpu_report.md`: the report for people — summary first, then op types, parameters,
//! activations, the latency breakdown, the compiler's verdict, and every op.

use std::fmt::Write as _;

use super::report::EdgeTpuReport;

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64)
}

fn kib(b: u64) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

pub fn markdown(r: &EdgeTpuReport) -> String {
    let mut o = String::new();
    let m = &r.model;
    let _ = writeln!(o, "# Edge TPU report: {} @{} (fused stages {}: `{}`)\n", m.variant, m.image_size, m.fused_stages, m.stages);
    let p = &r.partition;
    let pr = &r.parameters;
    let l = &r.latency.predicted;
    let _ = writeln!(o, "- **op mapping**: {} of {} ops on the Edge TPU, {} on the CPU", p.on_edgetpu, p.ops, p.on_cpu);
    if let Some(f) = &p.first_cpu_op {
        let _ = writeln!(o, "  - first CPU op: #{} {} (`{}`): {}", f.index, f.op, f.node, f.why.join("; "));
    }
    let _ = writeln!(
        o,
        "- **parameters**: {} (int8 weights {} + int32 biases {}) vs {} on-chip cache: {}",
        mib(pr.total_bytes),
        mib(pr.weight_bytes),
        kib(pr.bias_bytes),
        mib(pr.cache_bytes),
        if pr.fits_on_chip { "fits".to_string() } else { format!("{} streamed from the host every inference", mib(pr.streamed_bytes)) }
    );
    let _ = writeln!(
        o,
        "- **predicted latency** (USB Accelerator, cost model): **{:.2} ms**{}",
        l.total_ms,
        if l.cpu_ops > 0 { format!(" for the Edge TPU part, plus host CPU time for {} ops", l.cpu_ops) } else { String::new() }
    );
    let _ = writeln!(o, "- **measured latency**: {}", r.latency.measured);
    let _ = writeln!(o, "- **edgetpu_compiler**: {}", r.compiler.summary);
    let c = &r.calibration;
    let _ = writeln!(o, "- **calibration**: {} ({} images, {}){}", c.info.source, c.info.images, c.method, if c.info.synthetic { " — **SYNTHETIC**" } else { "" });
    let t = &r.tflite;
    let _ = writeln!(
        o,
        "- **model file**: `{}` ({}), input {} {:?} (scale {}, zero point {}), output {} {:?} (scale {}, zero point {})\n",
        t.file,
        kib(t.bytes),
        t.input.dtype,
        t.input.shape,
        t.input.scale,
        t.input.zero_point,
        t.output.dtype,
        t.output.shape,
        t.output.scale,
        t.output.zero_point
    );
    if c.info.synthetic {
        let _ = writeln!(o, "> {}\n", c.info.note);
    }

    o.push_str("## Ops by type\n\n| op | count | on Edge TPU | GMACs | M elements | params | predicted ms |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for t in &r.op_types {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.3} | {:.2} | {} | {:.3} |",
            t.op,
            t.count,
            t.on_edgetpu,
            t.macs as f64 / 1e9,
            t.elements as f64 / 1e6,
            kib(t.param_bytes),
            t.predicted_ms
        );
    }
    let _ = writeln!(o, "\nPartition rule: {}.\n", p.rule);

    let _ = writeln!(o, "## Parameters and activations\n");
    let _ = writeln!(o, "- {}", pr.note);
    let _ = writeln!(o, "- on Edge TPU ops: {}; cached {}, streamed {}", mib(pr.edgetpu_bytes), mib(pr.cached_bytes), mib(pr.streamed_bytes));
    let a = &r.activations;
    let _ = writeln!(o, "- input {} per inference, output {} (both cross USB)", kib(a.input_bytes), kib(a.output_bytes));
    if let Some(big) = &a.largest {
        let _ = writeln!(o, "- largest activation: {} = {} (output of #{} {} `{}`)", kib(big.bytes), format_shape(&big.shape), big.index, big.op, big.node);
    }
    let _ = writeln!(o, "- all op outputs together: {}", mib(a.total_bytes));
    let _ = writeln!(o, "- MACs: {:.3} G total = {:.3} G in CONV_2D + {:.3} G in DEPTHWISE_CONV_2D\n", r.macs.total as f64 / 1e9, r.macs.conv as f64 / 1e9, r.macs.depthwise as f64 / 1e9);

    let _ = writeln!(o, "## Predicted latency\n");
    let cm = &r.latency.model;
    let _ = writeln!(o, "```text\n{}\n```\n", r.latency.formula);
    let _ = writeln!(
        o,
        "Constants: c_mac = {} ps/MAC ({:.0}% of the 4 TOPS peak), c_el = {} ps/element, t_op = {} µs, B_usb = {} MB/s, cache = {}.\n",
        cm.mac_ps,
        cm.mac_efficiency() * 100.0,
        cm.element_ps,
        cm.op_overhead_us,
        cm.usb_mb_per_s,
        mib(cm.cache_bytes)
    );
    o.push_str("| term | ms |\n|---|---:|\n");
    for (k, v) in [
        ("convs (matrix-bound)", l.mac_bound_ms),
        ("depthwise + element-wise (activation-path-bound)", l.element_bound_ms),
        ("parameter streaming (overlaps compute)", l.stream_ms),
        ("per-op overhead", l.overhead_ms),
        ("input/output over USB", l.io_ms),
    ] {
        let _ = writeln!(o, "| {k} | {v:.3} |");
    }
    let _ = writeln!(o, "| **total** ({}) | **{:.3}** |\n", if l.stream_bound { "streaming-bound" } else { "compute-bound" }, l.total_ms);
    let _ = writeln!(o, "{}\n", r.latency.accuracy);

    let _ = writeln!(o, "## edgetpu_compiler\n\n{}\n", r.compiler.summary);
    if let Some(log) = &r.compiler.log {
        let opt = |v: Option<u64>| v.map(mib).unwrap_or_else(|| "?".into());
        let _ = writeln!(
            o,
            "- version {}; on-chip cache used {}, remaining {}; streamed {}; {} Edge TPU subgraph(s)",
            log.version.as_deref().unwrap_or("?"),
            opt(log.on_chip_cache_used_bytes),
            opt(log.on_chip_cache_remaining_bytes),
            opt(log.off_chip_streamed_bytes),
            log.edgetpu_subgraphs.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
        );
        for e in &log.errors {
            let _ = writeln!(o, "- compiler error: `{e}`");
        }
    }
    if let Some(cmp) = &r.compiler.comparison {
        let _ = writeln!(o, "- agreement with our mapping: {} of {} ops ({} in the compiler's table)", cmp.agreeing, cmp.ops_ours, cmp.ops_compiler);
        for d in &cmp.disagreements {
            let _ = writeln!(o, "- disagreement: {d}");
        }
        o.push('\n');
    }

    o.push_str("## Every op\n\n| # | op | node | Edge TPU | MACs | params | output | ms |\n|---:|---|---|---|---:|---:|---|---:|\n");
    for row in &r.ops {
        let s = &row.stat;
        let where_ = if s.on_edgetpu { "yes".to_string() } else { format!("no: {}", s.why_not.join("; ")) };
        let _ = writeln!(
            o,
            "| {} | {} | `{}` | {} | {} | {} | {} | {:.4} |",
            s.index,
            s.op,
            s.node,
            where_,
            s.macs,
            s.param_bytes,
            format_shape(&s.output_shape),
            row.predicted_ms
        );
    }
    o
}

fn format_shape(s: &[usize]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
}
