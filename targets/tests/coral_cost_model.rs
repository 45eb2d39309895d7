//! The Edge TPU cost model against Coral's published latencies: the committed constants are the
//! fit's result, every published network is predicted within 25% (the held-out ones included),
//! and docs/coral/cost_model.md shows exactly this table (`EFFV2_UPDATE_DOCS=1` rewrites it).

use std::sync::OnceLock;

use effv2_targets::coral::cost::FITTED;
use effv2_targets::coral::reference::{fit_to_references, reference_models, ReferenceModel};
use effv2_targets::coral::validate::{validate, validation_markdown};

fn models() -> &'static [ReferenceModel] {
    static M: OnceLock<Vec<ReferenceModel>> = OnceLock::new();
    M.get_or_init(|| reference_models().unwrap())
}

#[test]
fn committed_constants_are_the_fit() {
    let fitted = fit_to_references(models(), FITTED);
    assert_eq!(fitted, FITTED, "re-fit gives {fitted:?}; update FITTED in targets/src/coral/cost.rs and the docs");
}

#[test]
fn published_latencies_are_predicted_within_25_percent() {
    let rows = validate(models(), &FITTED);
    eprintln!("{}", validation_markdown(&rows, &FITTED));
    assert!(rows.iter().any(|r| !r.fit) && rows.iter().filter(|r| r.fit).count() >= 3);
    for r in &rows {
        assert!(r.error.abs() < 0.25, "{}: predicted {:.2} ms, published {} ms", r.name, r.predicted_ms, r.published_ms);
    }
}

#[test]
fn committed_doc_shows_this_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/coral/cost_model.md");
    let table = validation_markdown(&validate(models(), &FITTED), &FITTED);
    let (begin, end) = ("<!-- generated: cost model validation -->\n", "<!-- end generated -->");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (Some(a), Some(b)) = (doc.find(begin), doc.find(end)) else { panic!("{} lacks the generated-table markers", path.display()) };
    let committed = &doc[a + begin.len()..b];
    if committed != table {
        if std::env::var_os("EFFV2_UPDATE_DOCS").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &doc[..a + begin.len()], &doc[b..])).unwrap();
        } else {
            panic!("docs/coral/cost_model.md is stale; rerun with EFFV2_UPDATE_DOCS=1. Now:\n{table}");
        }
    }
}
