//! A hand-written SVG plot of a sweep: placements on the x axis, p50 (and p90) latency as lines
//! on the left axis, parameters as bars on the right axis. Plain SVG 1.1, no scripts or fonts,
//! so it renders the same in a browser, on GitHub and through rsvg.

use std::fmt::Write as _;

use crate::sweep::SweepReport;

/// What to draw; one entry per placement in every vector.
#[derive(Clone, Debug, Default)]
pub struct Plot {
    pub title: String,
    pub subtitle: String,
    pub x_label: String,
    pub labels: Vec<String>,
    pub p50_ms: Vec<f64>,
    pub p90_ms: Vec<f64>,
    pub params_m: Vec<f64>,
    /// Placements that build the official network (drawn emphasised).
    pub official: Vec<bool>,
    /// Legend and right-axis texts; empty = the CPU sweep's ("p50 latency", "p90 latency",
    /// "parameters", "parameters (millions)").
    pub line_label: String,
    pub dashed_label: String,
    pub bar_label: String,
    pub right_axis: String,
    /// A dashed horizontal reference on the right axis (value, label): the Edge TPU's cache.
    pub bar_limit: Option<(f64, String)>,
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() { default } else { s }
}

const W: f64 = 860.0;
const H: f64 = 520.0;
const X0: f64 = 84.0;
const X1: f64 = W - 84.0;
const Y0: f64 = 112.0;
const Y1: f64 = H - 92.0;
const FONT: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
const BLUE: &str = "#1d4ed8";
const LIGHT_BLUE: &str = "#60a5fa";
const BAR: &str = "#d7dee8";
const BAR_OFFICIAL: &str = "#aab8cc";
const INK: &str = "#1f2937";
const MUTED: &str = "#64748b";
const GRID: &str = "#e8ecf1";
/// A white outline under point labels so lines crossing them stay readable.
const HALO: &str = r#" stroke="white" stroke-width="3" stroke-linejoin="round" paint-order="stroke""#;

/// The plot of a sweep report.
pub fn sweep_plot(r: &SweepReport) -> String {
    let s = &r.settings;
    let threads = if s.threads == 1 { "1 thread".to_string() } else { format!("{} threads", s.threads) };
    let cpu = r.machine.cpu.as_deref().or(r.machine.board.as_deref()).unwrap_or("unknown CPU");
    render(&Plot {
        title: format!("{} @{}: latency and size vs Fused-MBConv placement", s.model, s.image_size),
        subtitle: format!("{} on {} ({threads}, batch {}, {}) · {} · {}", r.backend, s.target, s.batch, s.precision, cpu, r.date_utc),
        x_label: "Fused-MBConv stages (k = first k stages fused)".into(),
        labels: r.rows.iter().map(|row| row.label()).collect(),
        p50_ms: r.rows.iter().map(|row| row.latency_ms.p50).collect(),
        p90_ms: r.rows.iter().map(|row| row.latency_ms.p90).collect(),
        params_m: r.rows.iter().map(|row| row.params as f64 / 1e6).collect(),
        official: r.rows.iter().map(|row| row.official).collect(),
        ..Plot::default()
    })
}

/// Render `p` as a standalone SVG document.
pub fn render(p: &Plot) -> String {
    let n = p.labels.len();
    let finite_max = |v: &[f64]| v.iter().copied().filter(|x| x.is_finite()).fold(0.0, f64::max);
    let (lat_step, intervals) = nice_axis(finite_max(&p.p50_ms).max(finite_max(&p.p90_ms)));
    // The right axis reuses the left one's gridlines: same number of intervals, its own step.
    let limit = p.bar_limit.as_ref().map(|l| l.0).filter(|v| v.is_finite()).unwrap_or(0.0);
    let par_step = nice_ceil(finite_max(&p.params_m).max(limit) / intervals as f64);
    let lat_top = lat_step * intervals as f64;
    let par_top = par_step * intervals as f64;
    let slot = (X1 - X0) / n.max(1) as f64;
    let cx = |i: usize| X0 + (i as f64 + 0.5) * slot;
    let y_lat = |v: f64| Y1 - (v / lat_top).clamp(0.0, 1.0) * (Y1 - Y0);
    let y_par = |v: f64| Y1 - (v / par_top).clamp(0.0, 1.0) * (Y1 - Y0);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="{FONT}" font-size="13" fill="{INK}">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="34" text-anchor="middle" font-size="18" font-weight="bold">{}</text>"#, W / 2.0, esc(&p.title));
    let _ = writeln!(s, r#"<text x="{}" y="56" text-anchor="middle" font-size="12" fill="{MUTED}">{}</text>"#, W / 2.0, esc(&p.subtitle));
    legend(&mut s, p);

    // Gridlines and both axes' tick labels.
    let lat_dec = decimals(lat_step);
    let par_dec = decimals(par_step);
    s.push_str("<g>\n");
    for t in 0..=intervals {
        let y = Y1 - t as f64 / intervals as f64 * (Y1 - Y0);
        let _ = writeln!(s, r#"<line x1="{X0}" y1="{y:.1}" x2="{X1}" y2="{y:.1}" stroke="{GRID}"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end" fill="{BLUE}">{:.*}</text>"#,
            X0 - 8.0,
            y + 4.5,
            lat_dec,
            lat_step * t as f64
        );
        let _ = writeln!(s, r#"<text x="{}" y="{:.1}" fill="{MUTED}">{:.*}</text>"#, X1 + 8.0, y + 4.5, par_dec, par_step * t as f64);
    }
    s.push_str("</g>\n");

    // Parameter bars first, so the latency lines draw over them.
    let bar_w = (slot * 0.56).min(64.0);
    s.push_str("<g>\n");
    for (i, &v) in p.params_m.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        let y = y_par(v);
        let fill = if p.official.get(i) == Some(&true) { BAR_OFFICIAL } else { BAR };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{y:.1}" width="{bar_w:.1}" height="{:.1}" fill="{fill}" rx="2"><title>{}: {v:.2} M params</title></rect>"#,
            cx(i) - bar_w / 2.0,
            Y1 - y,
            esc(&p.labels[i])
        );
    }
    if let Some((v, label)) = p.bar_limit.as_ref().filter(|l| l.0.is_finite()) {
        let y = y_par(*v);
        let _ = writeln!(s, r#"<line x1="{X0}" y1="{y:.1}" x2="{X1}" y2="{y:.1}" stroke="{MUTED}" stroke-width="1.4" stroke-dasharray="3 3"/>"#);
        let _ = writeln!(s, r#"<text x="{}" y="{:.1}" text-anchor="end" font-size="11" fill="{MUTED}"{HALO}>{}</text>"#, X1 - 6.0, y - 5.0, esc(label));
    }
    s.push_str("</g>\n");

    // Axes on top of the bars.
    let _ = writeln!(
        s,
        r#"<path d="M{X0} {Y0}V{Y1}H{X1}V{Y0}" fill="none" stroke="{INK}" stroke-width="1.2"/>"#
    );
    polyline(&mut s, &p.p90_ms, &cx, &y_lat, LIGHT_BLUE, r#" stroke-dasharray="6 4" stroke-width="1.8""#);
    polyline(&mut s, &p.p50_ms, &cx, &y_lat, BLUE, r#" stroke-width="2.6""#);
    s.push_str("<g>\n");
    for (i, &v) in p.p50_ms.iter().enumerate().filter(|(_, v)| v.is_finite()) {
        let y = y_lat(v);
        let official = p.official.get(i) == Some(&true);
        let r = if official { 6.5 } else { 4.5 };
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{y:.1}" r="{r}" fill="{BLUE}" stroke="white" stroke-width="1.5"><title>{}: {} {v:.2} ms</title></circle>"#,
            cx(i),
            esc(&p.labels[i]),
            esc(or(&p.line_label, "p50"))
        );
        let weight = if official { r#" font-weight="bold""# } else { "" };
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{BLUE}"{HALO}{weight}>{}</text>"#,
            cx(i),
            y - r - 6.0,
            short(v)
        );
    }
    s.push_str("</g>\n");

    // X tick labels; the official placement gets a second line.
    s.push_str("<g>\n");
    for (i, label) in p.labels.iter().enumerate() {
        let official = p.official.get(i) == Some(&true);
        let weight = if official { r#" font-weight="bold""# } else { "" };
        let _ = writeln!(s, r#"<line x1="{0:.1}" y1="{Y1}" x2="{0:.1}" y2="{1}" stroke="{INK}"/>"#, cx(i), Y1 + 5.0);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle"{weight}>{}</text>"#, cx(i), Y1 + 21.0, esc(label));
        if official && !label.contains("official") {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="11" fill="{MUTED}">official</text>"#,
                cx(i),
                Y1 + 36.0
            );
        }
    }
    s.push_str("</g>\n");

    // Axis titles.
    let mid_y = (Y0 + Y1) / 2.0;
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#, (X0 + X1) / 2.0, H - 22.0, esc(&p.x_label));
    let _ = writeln!(
        s,
        r#"<text transform="translate(26 {mid_y}) rotate(-90)" text-anchor="middle" font-size="14" fill="{BLUE}">latency (ms)</text>"#
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({} {mid_y}) rotate(90)" text-anchor="middle" font-size="14" fill="{MUTED}">{}</text>"#,
        W - 24.0,
        esc(or(&p.right_axis, "parameters (millions)"))
    );
    s.push_str("</svg>\n");
    s
}

fn legend(s: &mut String, p: &Plot) {
    let y = 84.0;
    let mut items: Vec<(String, &str)> = vec![(format!("{} (left axis)", or(&p.line_label, "p50 latency")), "p50")];
    if p.p90_ms.iter().any(|v| v.is_finite()) || p.p50_ms.is_empty() {
        items.push((format!("{} (left axis)", or(&p.dashed_label, "p90 latency")), "p90"));
    }
    items.push((format!("{} (right axis)", or(&p.bar_label, "parameters")), "params"));
    let mut x = W / 2.0 - 105.0 * items.len() as f64;
    s.push_str("<g font-size=\"12\">\n");
    for (text, kind) in items {
        match kind {
            "p50" => {
                let _ = writeln!(s, r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{BLUE}" stroke-width="2.6"/>"#, x + 28.0);
                let _ = writeln!(s, r#"<circle cx="{}" cy="{y}" r="4.5" fill="{BLUE}" stroke="white" stroke-width="1.5"/>"#, x + 14.0);
            }
            "p90" => {
                let _ = writeln!(
                    s,
                    r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{LIGHT_BLUE}" stroke-width="1.8" stroke-dasharray="6 4"/>"#,
                    x + 28.0
                );
            }
            _ => {
                let _ = writeln!(s, r#"<rect x="{}" y="{}" width="16" height="12" fill="{BAR}" rx="2"/>"#, x + 6.0, y - 6.0);
            }
        }
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, x + 36.0, y + 4.0, esc(&text));
        x += 210.0;
    }
    s.push_str("</g>\n");
}

/// A line through the finite points of `v` (a gap where a value is missing).
fn polyline(s: &mut String, v: &[f64], cx: &dyn Fn(usize) -> f64, y: &dyn Fn(f64) -> f64, color: &str, extra: &str) {
    let mut d = String::new();
    let mut pen_down = false;
    for (i, &x) in v.iter().enumerate() {
        if !x.is_finite() {
            pen_down = false;
            continue;
        }
        let _ = write!(d, "{}{:.1} {:.1}", if pen_down { "L" } else { "M" }, cx(i), y(x));
        pen_down = true;
    }
    if !d.is_empty() {
        let _ = writeln!(s, r#"<path d="{d}" fill="none" stroke="{color}" stroke-linejoin="round"{extra}/>"#);
    }
}

/// Step and interval count of a 0-based axis that holds `max` with about 5 intervals.
fn nice_axis(max: f64) -> (f64, usize) {
    if !max.is_finite() || max <= 0.0 {
        return (1.0, 5);
    }
    let step = nice_ceil(max / 5.0);
    let intervals = ((max / step) - 1e-9).ceil().max(1.0) as usize;
    // Headroom for the value labels above the highest point.
    if max > step * intervals as f64 * 0.92 {
        (step, intervals + 1)
    } else {
        (step, intervals)
    }
}

/// Smallest 1, 2, 2.5 or 5 × 10ᵏ that is ≥ x.
fn nice_ceil(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    let norm = x / mag;
    let m = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|&m| m >= norm - 1e-12).unwrap_or(10.0);
    m * mag
}

/// Decimals needed to print multiples of `step` exactly (0.25 → 2, 2.5 → 1, 20 → 0).
fn decimals(step: f64) -> usize {
    (0..4).find(|&d| {
        let scaled = step * 10f64.powi(d as i32);
        (scaled - scaled.round()).abs() < 1e-6
    })
    .unwrap_or(3)
}

/// A point label with 3 significant digits or so: 1234 → "1234", 28.63 → "28.6", 3.456 → "3.46".
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// Escape text for XML character data and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal XML check for our own output (tests): every tag closes in order, entities are
/// known, no stray `<`, `>` or `&` in text.
pub fn check_well_formed(svg: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find(['<', '&']) {
        let text = &rest[..start];
        if text.contains('>') {
            return Err(format!("stray '>' in {text:?}"));
        }
        rest = &rest[start..];
        if rest.starts_with('&') {
            let end = rest.find(';').ok_or("unterminated entity")?;
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&rest[..=end]) {
                return Err(format!("unknown entity {}", &rest[..=end]));
            }
            rest = &rest[end + 1..];
            continue;
        }
        let end = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..end];
        if tag.contains('<') {
            return Err(format!("'<' inside tag {tag:?}"));
        }
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(open) if open == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
        rest = &rest[end + 1..];
    }
    if stack.is_empty() { Ok(()) } else { Err(format!("unclosed {stack:?}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plot {
        Plot {
            title: "b0 @224 <test> & more".into(),
            subtitle: "tract".into(),
            x_label: "Fused-MBConv stages".into(),
            labels: (0..=6).map(|k| k.to_string()).chain(["0,1,3".to_string()]).collect(),
            p50_ms: vec![28.6, 29.6, 29.0, 28.7, 34.0, 48.3, 65.1, f64::NAN],
            p90_ms: vec![30.0, 31.0, 30.5, 29.9, 35.2, 50.0, 66.0, f64::NAN],
            params_m: vec![7.1, 7.1, 7.2, 7.1, 8.6, 14.5, 33.0, 7.3],
            official: vec![false, false, false, true, false, false, false, false],
            ..Plot::default()
        }
    }

    #[test]
    fn plot_is_well_formed_and_labelled() {
        let svg = render(&sample());
        assert!(svg.starts_with("<svg "), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        check_well_formed(&svg).unwrap();
        for want in ["b0 @224 &lt;test&gt; &amp; more", "latency (ms)", "parameters (millions)", "Fused-MBConv stages", "official", ">0,1,3<", ">65.1<", "p50 latency"] {
            assert!(svg.contains(want), "missing {want:?}");
        }
        // 8 bars + 1 legend swatch + background; 7 finite p50 points + 1 legend point.
        assert_eq!(svg.matches("<rect").count(), 10);
        assert_eq!(svg.matches("<circle").count(), 8);
    }

    #[test]
    fn degenerate_plots_still_render() {
        for p in [Plot::default(), Plot { labels: vec!["0".into()], p50_ms: vec![0.0], p90_ms: vec![0.0], params_m: vec![0.0], ..Plot::default() }] {
            let svg = render(&p);
            check_well_formed(&svg).unwrap();
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn checker_catches_bad_xml() {
        assert!(check_well_formed("<svg><g></svg>").is_err());
        assert!(check_well_formed("<svg>a & b</svg>").is_err());
        assert!(check_well_formed("<svg><text>1 < 2</text></svg>").is_err());
        assert!(check_well_formed("<svg><g/></svg>").is_ok());
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(13.0), 20.0);
        assert_eq!(nice_ceil(2.2), 2.5);
        assert_eq!(nice_ceil(0.07), 0.1);
        assert_eq!(nice_axis(65.1), (20.0, 4));
        assert_eq!(nice_axis(0.0), (1.0, 5));
        assert_eq!(decimals(2.5), 1);
        assert_eq!(decimals(0.25), 2);
        assert_eq!(decimals(20.0), 0);
        assert_eq!(short(65.14), "65.1");
        assert_eq!(short(3.456), "3.46");
    }
}
