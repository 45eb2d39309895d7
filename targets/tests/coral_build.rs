//! `--target coral` end to end on small models: the artifact directory (manifest verified by
//! effv2-runtime, files and roles), the Edge TPU report against the int8 model it describes,
//! the `.tflite` in LiteRT, the edgetpu_compiler plumbing with stand-in compilers, and bad input
//! failing cleanly without touching the output directory.

mod tflite_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use effv2_edge::rng::Rng;
use effv2_edge::spec::{ModelOptions, Preprocess};
use effv2_quantize::{Buf, ConstData, IoType, OpKind, QModel};
use effv2_runtime::manifest::{Manifest, Precision, Target};
use effv2_targets::coral::calib::{CalibError, CalibSource};
use effv2_targets::coral::compiler::{CompilerChoice, CompilerStatus};
use effv2_targets::coral::report::EdgeTpuReport;
use effv2_targets::coral::{build_coral, CoralBuild, CoralError, CoralOutcome, RangeMethod};
use effv2_targets::source::{LoadedModel, ModelSource};
use serde_json::Value;
use tflite_support::litert;

const SIZE: usize = 64;

fn small_model(channels: usize) -> LoadedModel {
    let options = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, in_channels: channels, ..Default::default() };
    ModelSource::Fresh { model: "efficientnetv2-b0".into(), options, seed: 3 }.load_for_size(Some(SIZE)).unwrap()
}

fn opts(calib: CalibSource) -> CoralBuild {
    let mut o = CoralBuild::new(calib);
    o.image_size = Some(SIZE);
    o.calib_images = 6;
    o.compiler = CompilerChoice::Off;
    o
}

/// A folder tree of PNG/JPEG images (two class folders) plus a stray text file.
fn image_folder(root: &Path) -> PathBuf {
    let dir = root.join("calib");
    let mut rng = Rng::new(11);
    for (class, n) in [("cats", 4), ("dogs", 3)] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..n {
            let img = image::RgbImage::from_fn(40 + i, 30, |_, _| image::Rgb([(rng.uniform() * 255.0) as u8, 90, 200]));
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(class).join(format!("{i}.{ext}"))).unwrap();
        }
    }
    std::fs::write(dir.join("LABELS.txt"), "cats\ndogs\n").unwrap();
    dir
}

fn report_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("edgetpu_report.json")).unwrap()).unwrap()
}

/// Filter + bias bytes, straight from the int8 model.
fn param_bytes(q: &QModel) -> u64 {
    q.ops
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Conv2d { .. } | OpKind::DepthwiseConv2d { .. }))
        .flat_map(|o| o.inputs[1..].iter())
        .map(|&t| match &q.tensors[t].data {
            Some(ConstData::I8(v)) => v.len() as u64,
            Some(ConstData::I32(v)) => 4 * v.len() as u64,
            None => 0,
        })
        .sum()
}

fn check_artifact(dir: &Path, out: &CoralOutcome, model: &LoadedModel) {
    let m = Manifest::load_verified(dir).unwrap();
    assert_eq!((m.target, m.precision), (Target::Coral, Precision::Int8));
    assert_eq!(m.file("model").unwrap().path, "model_int8.tflite");
    assert_eq!(m.file("report").unwrap().path, "edgetpu_report.json");
    assert_eq!(m.file("report-md").unwrap().path, "edgetpu_report.md");
    let q = &out.qmodel;
    let (qi, qo) = (q.input_tensor(), q.output_tensor());
    assert_eq!((m.input.layout.as_str(), m.input.shape.clone()), ("NHWC", qi.shape.clone()));
    assert_eq!(m.output.shape, vec![1, 10]);
    let quant = m.quantization.as_ref().unwrap();
    assert_eq!((quant.input.scale, quant.input.zero_point), (qi.params().unwrap().scale, qi.params().unwrap().zero_point));
    assert_eq!((quant.output.scale, quant.output.zero_point), (qo.params().unwrap().scale, qo.params().unwrap().zero_point));
    assert_eq!(m.input.dtype, quant.input.dtype);

    // The report describes exactly the int8 model written.
    let r = report_json(dir);
    let graph = model.graph(Some(SIZE)).unwrap();
    assert_eq!(r["partition"]["ops"].as_u64().unwrap() as usize, q.ops.len());
    assert_eq!(r["ops"].as_array().unwrap().len(), q.ops.len());
    let by_type: u64 = r["op_types"].as_array().unwrap().iter().map(|t| t["count"].as_u64().unwrap()).sum();
    assert_eq!(by_type as usize, q.ops.len());
    assert_eq!(r["parameters"]["total_bytes"].as_u64().unwrap(), param_bytes(q));
    assert_eq!(r["parameters"]["weight_bytes"].as_u64().unwrap() + r["parameters"]["bias_bytes"].as_u64().unwrap(), param_bytes(q));
    // The classifier is a 1×1 CONV_2D, so the int8 model's MACs are the graph's.
    assert_eq!(r["macs"]["total"].as_u64().unwrap(), graph.cost().macs);
    assert_eq!(r["tflite"]["bytes"].as_u64().unwrap(), std::fs::metadata(dir.join("model_int8.tflite")).unwrap().len());
    assert_eq!(r["activations"]["input_bytes"].as_u64().unwrap() as usize, qi.numel());
    let largest = q.ops.iter().map(|o| q.tensors[o.outputs[0]].numel()).max().unwrap();
    assert_eq!(r["activations"]["largest"]["bytes"].as_u64().unwrap() as usize, largest);
    assert_eq!(r["partition"]["on_cpu"], 0, "every op of our models maps");
    let predicted = r["latency"]["predicted"]["total_ms"].as_f64().unwrap();
    let per_op: f64 = r["ops"].as_array().unwrap().iter().map(|o| o["predicted_ms"].as_f64().unwrap()).sum();
    let io = r["latency"]["predicted"]["io_ms"].as_f64().unwrap();
    assert!((predicted - per_op - io).abs() < 1e-9, "{predicted} vs {per_op} + {io}");
    assert!(r["latency"]["measured"].as_str().unwrap().starts_with("no device"));
    let md = std::fs::read_to_string(dir.join("edgetpu_report.md")).unwrap();
    assert!(md.contains("## Ops by type") && md.contains("## Every op") && md.contains("edgetpu_compiler"), "{md}");
}

#[test]
fn builds_a_verified_artifact_whose_tflite_runs_in_litert() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(3);
    let calib = image_folder(tmp.path());
    for (name, source, io) in [("folder", CalibSource::Folder(calib), IoType::Int8), ("synthetic-u8", CalibSource::Synthetic, IoType::UInt8)] {
        let dir = tmp.path().join(name);
        let mut o = opts(source);
        o.io = io;
        let out = build_coral(&model, &o, &dir).unwrap();
        check_artifact(&dir, &out, &model);
        let r = report_json(&dir);
        if name == "folder" {
            assert_eq!(r["calibration"]["images"], 6);
            assert_eq!(r["calibration"]["synthetic"], false);
            assert_eq!(out.manifest.quantization.as_ref().unwrap().calibration_images, 6);
        } else {
            assert_eq!(out.manifest.input.dtype, "uint8");
            assert!(out.manifest.quantization.as_ref().unwrap().synthetic_calibration);
            assert!(out.manifest.notes.iter().any(|n| n.contains("SYNTHETIC")));
            assert_eq!(r["op_types"][0]["op"], "QUANTIZE");
        }
        // The shipped file runs in LiteRT's reference kernels and equals our int8 executor.
        let q = &out.qmodel;
        let x = Rng::new(5).normal_tensor(vec![3, 3, SIZE, SIZE]);
        let inputs = q.quantize_input(&x).unwrap();
        let ours: Vec<Buf> = inputs.iter().map(|i| q.execute(i).unwrap()).collect();
        let theirs = litert(&dir.join("model_int8.tflite"), &inputs, &q.input_tensor().shape, q.output_tensor().numel(), "ref", None);
        assert_eq!(ours, theirs, "{name}");
    }
}

#[test]
fn grayscale_models_calibrate_from_colour_images() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = small_model(1);
    model.preprocess = Preprocess { mean: vec![0.5], std: vec![0.5], ..model.preprocess };
    let dir = tmp.path().join("gray");
    let out = build_coral(&model, &opts(CalibSource::Folder(image_folder(tmp.path()))), &dir).unwrap();
    assert_eq!(out.manifest.input.shape, vec![1, SIZE, SIZE, 1]);
}

/// A stand-in `edgetpu_compiler`: a shell script that prints `stdout` and, when `compile` is
/// set, copies the model to `<name>_edgetpu.tflite` and writes `<name>_edgetpu.log`.
fn fake_compiler(dir: &Path, stdout: &str, compile: bool, exit: i32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("stdout.txt");
    std::fs::write(&out, stdout).unwrap();
    let copy = if compile {
        r#"base="${model%.tflite}"; cp "$model" "$outdir/$(basename "$base")_edgetpu.tflite"
printf 'Edge TPU Compiler version 16.0.384591198\nInput: x\n' > "$outdir/$(basename "$base")_edgetpu.log""#
    } else {
        ""
    };
    let script = format!(
        "#!/bin/sh\n# args: -s -o OUTDIR MODEL\n[ \"$1\" = -s ] && [ \"$2\" = -o ] || exit 9\noutdir=\"$3\"; model=\"$4\"\n{copy}\ncat '{}'\nexit {exit}\n",
        out.display()
    );
    let exe = dir.join("edgetpu_compiler");
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// The console output a compiler would print for `r`'s model, with one LOGISTIC left on the CPU.
fn stdout_for(r: &EdgeTpuReport) -> String {
    let mut s = String::from("Edge TPU Compiler version 16.0.384591198\nOn-chip memory used for caching model parameters: 1.25MiB\n\nOperator                       Count      Status\n\n");
    for t in &r.op_types {
        let mapped = if t.op == "LOGISTIC" { t.count - 1 } else { t.count };
        s.push_str(&format!("{:<30} {:<10} Mapped to Edge TPU\n", t.op, mapped));
    }
    s.push_str("LOGISTIC                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation\n");
    s
}

#[test]
fn runs_the_compiler_when_there_is_one_and_compares_its_table() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(3);
    let first = build_coral(&model, &opts(CalibSource::Synthetic), &tmp.path().join("plain")).unwrap();
    assert!(first.report.compiler.summary.contains("not run"));

    let exe = fake_compiler(&tmp.path().join("bin"), &stdout_for(&first.report), true, 0);
    let mut o = opts(CalibSource::Synthetic);
    o.compiler = CompilerChoice::Path(exe);
    let dir = tmp.path().join("compiled");
    let out = build_coral(&model, &o, &dir).unwrap();
    let m = Manifest::load_verified(&dir).unwrap();
    assert_eq!(m.file("edgetpu-model").unwrap().path, "model_int8_edgetpu.tflite");
    assert_eq!(m.file("compiler-log").unwrap().path, "model_int8_edgetpu.log");
    assert_eq!(m.file("compiler-output").unwrap().path, "edgetpu_compiler_output.txt");
    // The stand-in "compiles" by copying: the compiled file is our int8 model.
    assert_eq!(std::fs::read(dir.join("model_int8_edgetpu.tflite")).unwrap(), std::fs::read(dir.join("model_int8.tflite")).unwrap());
    let c = &out.report.compiler;
    assert_eq!(c.status, Some(CompilerStatus::Compiled));
    let cmp = c.comparison.as_ref().unwrap();
    let n = out.report.partition.ops as u64;
    assert_eq!((cmp.ops_ours, cmp.ops_compiler, cmp.agreeing), (n, n, n - 1));
    assert_eq!(cmp.disagreements.len(), 1);
    assert!(cmp.disagreements[0].starts_with("LOGISTIC:"), "{:?}", cmp.disagreements);
    assert!(c.summary.contains(&format!("agrees with our mapping on {} of {n} ops", n - 1)), "{}", c.summary);
    assert_eq!(c.log.as_ref().unwrap().on_chip_cache_used_bytes, Some(1_310_720));
    // No scratch directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_failing_or_hanging_compiler_still_leaves_the_int8_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(3);
    let failing = fake_compiler(&tmp.path().join("bin"), &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coral_data/compiler16_failed.txt")).unwrap(), false, 1);
    let mut o = opts(CalibSource::Synthetic);
    o.compiler = CompilerChoice::Path(failing);
    let dir = tmp.path().join("failed");
    let out = build_coral(&model, &o, &dir).unwrap();
    assert_eq!(out.report.compiler.status, Some(CompilerStatus::Failed { code: Some(1) }));
    assert!(out.report.compiler.summary.contains("failed"));
    assert_eq!(out.report.compiler.log.as_ref().unwrap().errors.len(), 3);
    let m = Manifest::load_verified(&dir).unwrap();
    assert!(m.file("edgetpu-model").is_none() && m.file("model").is_some() && m.file("compiler-output").is_some());

    let hang = tmp.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    o.compiler = CompilerChoice::Path(hang);
    o.compiler_timeout = Duration::from_millis(500);
    let out = build_coral(&model, &o, &tmp.path().join("hung")).unwrap();
    assert_eq!(out.report.compiler.status, Some(CompilerStatus::TimedOut { seconds: 0.5 }));

    o.compiler = CompilerChoice::Path(tmp.path().join("no-such-compiler"));
    let out = build_coral(&model, &o, &tmp.path().join("missing")).unwrap();
    assert!(matches!(out.report.compiler.status, Some(CompilerStatus::CouldNotStart { .. })));
}

/// Every bad calibration input is a typed error before anything is written; a previous
/// artifact in the output directory survives.
#[test]
fn bad_calibration_input_fails_cleanly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = small_model(3);
    let previous = tmp.path().join("previous");
    build_coral(&model, &opts(CalibSource::Synthetic), &previous).unwrap();
    let before = std::fs::read(previous.join("manifest.json")).unwrap();

    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let only_text = tmp.path().join("only-text");
    std::fs::create_dir_all(&only_text).unwrap();
    std::fs::write(only_text.join("notes.txt"), "not an image").unwrap();
    let fake_png = tmp.path().join("fake-png");
    std::fs::create_dir_all(&fake_png).unwrap();
    std::fs::write(fake_png.join("a.png"), "definitely not a png").unwrap();

    let cases: Vec<(CoralBuild, &str)> = vec![
        (opts(CalibSource::Folder(empty)), "no PNG/JPEG images under"),
        (opts(CalibSource::Folder(only_text)), "(1 other files skipped)"),
        (opts(CalibSource::Folder(fake_png)), "not a readable PNG/JPEG image"),
        (CoralBuild { calib_images: 0, ..opts(CalibSource::Synthetic) }, "--calib-images must be at least 1"),
        (CoralBuild { calib_images: 1_000_000, ..opts(CalibSource::Synthetic) }, "GiB in memory"),
    ];
    for (o, needle) in cases {
        for dir in [tmp.path().join("new"), previous.clone()] {
            let err = build_coral(&model, &o, &dir).err().expect("must fail");
            assert!(matches!(err, CoralError::Calib(_)), "{err:?}");
            assert!(err.to_string().contains(needle), "{err} (wanted {needle:?})");
        }
        assert!(!tmp.path().join("new").exists());
        assert_eq!(std::fs::read(previous.join("manifest.json")).unwrap(), before);
    }
    // Unknown sources fail when parsed.
    for (src, needle) in [("imagenet-maybe", "not a directory of images"), ("Cargo.toml", "is a file")] {
        let src = if src == "Cargo.toml" { format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR")) } else { src.to_string() };
        let err = src.parse::<CalibSource>().unwrap_err();
        assert!(matches!(err, CalibError::UnknownSource(_) | CalibError::NotADirectory(_)));
        assert!(err.to_string().contains(needle), "{err}");
    }
    // A model with 2 input channels cannot be fed images.
    let two = small_model(2);
    let err = build_coral(&two, &opts(CalibSource::Folder(image_folder(tmp.path()))), &tmp.path().join("two")).err().unwrap();
    assert!(err.to_string().contains("2-channel"), "{err}");
    assert!(!tmp.path().join("two").exists());
}

#[test]
fn fashion_mnist_calibration_when_installed() {
    let model = small_model(1);
    let mut model = model;
    model.preprocess = Preprocess { mean: vec![0.5], std: vec![0.5], ..model.preprocess };
    let tmp = tempfile::tempdir().unwrap();
    match build_coral(&model, &opts(CalibSource::FashionMnist), &tmp.path().join("fm")) {
        Ok(out) => {
            assert_eq!(out.report.calibration.info.kind, "fashion-mnist");
            assert!(!out.report.calibration.info.synthetic);
        }
        // Without Debian's dataset-fashion-mnist: a clear error naming the install command.
        Err(e) => assert!(e.to_string().contains("apt-get install"), "{e}"),
    }
    let _ = RangeMethod::MinMax;
}

/// An op the Edge TPU cannot run puts it and everything after it on the CPU (the compiler's
/// single-subgraph rule); the report and the prediction follow.
#[test]
fn an_unmappable_op_sends_the_rest_to_the_cpu() {
    use effv2_targets::coral::analysis::analyze;
    use effv2_targets::coral::compiler::CompilerChoice as C;
    use effv2_targets::coral::cost::FITTED;
    use effv2_targets::coral::report::CalibSummary;
    use effv2_targets::coral::{make_report, ReportInput};

    let tmp = tempfile::tempdir().unwrap();
    let out = build_coral(&small_model(3), &opts(CalibSource::Synthetic), &tmp.path().join("a")).unwrap();
    let mut q = out.qmodel.clone();
    let all = analyze(&q);
    let k = q.ops.iter().position(|o| o.kind == OpKind::Add).unwrap();
    // A non-8-bit activation: the compiler maps only int8/uint8 tensors.
    let t = q.ops[k].outputs[0];
    q.tensors[t].dtype = effv2_quantize::DType::Int32;
    let ops = analyze(&q);
    assert_eq!(ops.iter().position(|s| !s.on_edgetpu), Some(k));
    assert!(ops[k].why_not[0].contains("Int32"), "{:?}", ops[k].why_not);
    // The op reading that tensor is refused for the same reason; every later op for the partition.
    assert!(ops[k + 1..].iter().all(|s| !s.on_edgetpu && !s.why_not.is_empty()));
    assert!(ops[k + 1..].iter().any(|s| s.why_not[0].contains("More than one subgraph is not supported")));
    let r = make_report(ReportInput {
        model: out.report.model.clone(),
        q: &q,
        ops,
        tflite_bytes: 0,
        calib: CalibSummary { info: out.report.calibration.info.clone(), method: "minmax".into() },
        cost_model: FITTED,
        compiler: None,
        compiler_choice: &C::Off,
    });
    assert_eq!((r.partition.on_edgetpu, r.partition.on_cpu, r.partition.edgetpu_subgraphs), (k, all.len() - k, 1));
    assert_eq!(r.partition.first_cpu_op.as_ref().unwrap().index, k);
    assert_eq!(r.latency.predicted.cpu_ops, all.len() - k);
    assert!(r.latency.predicted.total_ms < out.report.latency.predicted.total_ms);
    let md = effv2_targets::coral::markdown(&r);
    assert!(md.contains(&format!("first CPU op: #{k} ADD")) && md.contains("plus host CPU time"), "{md}");
}
