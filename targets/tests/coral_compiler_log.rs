//! The edgetpu_compiler output parser on committed sample logs (written in the documented
//! format; see tests/coral_data/README.md), and the comparison of its table with our mapping.

use effv2_targets::coral::analysis::{OpClass, OpStat};
use effv2_targets::coral::compiler::parse_compiler_log;
use effv2_targets::coral::report::compare;

fn sample(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/coral_data").join(name)).unwrap()
}

#[test]
fn console_output_with_a_cpu_tail() {
    let log = parse_compiler_log(&sample("compiler16_stdout_partial.txt"));
    assert_eq!(log.version.as_deref(), Some("16.0.384591198"));
    assert_eq!(log.on_chip_cache_used_bytes, Some((6.52 * 1048576.0f64).round() as u64));
    assert_eq!(log.on_chip_cache_remaining_bytes, Some(7936));
    assert_eq!(log.off_chip_streamed_bytes, Some((1.05 * 1048576.0f64).round() as u64));
    assert_eq!((log.edgetpu_subgraphs, log.total_ops, log.ops_on_edgetpu, log.ops_on_cpu), (Some(1), Some(267), Some(250), Some(17)));
    assert_eq!(log.table.len(), 12);
    // The table and the summary agree, as in real logs.
    assert_eq!(log.table_counts(), (250, 17));
    let logistic: Vec<_> = log.table.iter().filter(|r| r.op == "LOGISTIC").collect();
    assert_eq!(logistic.len(), 3);
    assert!(logistic[1].status.contains("unspecified limitation") && !logistic[1].mapped);
    assert!(log.errors.is_empty());
}

#[test]
fn log_file_has_only_the_table() {
    let log = parse_compiler_log(&sample("compiler16_log_file.txt"));
    assert_eq!(log.version.as_deref(), Some("16.0.384591198"));
    assert_eq!(log.total_ops, None);
    assert_eq!(log.table_counts(), (65, 0));
    assert_eq!(log.table.iter().map(|r| r.op.as_str()).collect::<Vec<_>>(), ["CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "RESHAPE"]);
}

#[test]
fn failed_compilation_is_read_as_errors() {
    let log = parse_compiler_log(&sample("compiler16_failed.txt"));
    assert!(log.table.is_empty());
    assert_eq!(log.errors.len(), 3, "{:?}", log.errors);
    assert!(log.errors[1].contains("large activation tensors"));
}

#[test]
fn garbage_and_truncated_logs_do_not_panic() {
    for text in ["", "Operator Count Status\n", "Operator Count Status\nCONV_2D\nCONV_2D x Mapped\n", "On-chip memory used for caching model parameters: \n", "\u{0}\u{ff}garbage"] {
        let log = parse_compiler_log(text);
        assert!(log.table.is_empty(), "{text:?}");
        assert_eq!(log.on_chip_cache_used_bytes, None);
    }
    // Windows line endings and extra spacing are fine.
    let log = parse_compiler_log("Operator   Count   Status\r\n\r\nADD   3   Mapped to Edge TPU\r\n");
    assert_eq!(log.table_counts(), (3, 0));
}

fn op(index: usize, name: &'static str, on: bool) -> OpStat {
    OpStat {
        index,
        op: name,
        version: 1,
        node: format!("n{index}"),
        class: OpClass::Elementwise,
        on_edgetpu: on,
        why_not: vec![],
        macs: 0,
        elements: 0,
        param_bytes: 0,
        input_bytes: 0,
        output_bytes: 0,
        output_shape: vec![],
    }
}

#[test]
fn comparison_counts_agreement_and_lists_disagreements() {
    let log = parse_compiler_log(&sample("compiler16_log_file.txt"));
    // Ours: the same 65 ops, but we put the last two (MEAN, RESHAPE) on the CPU.
    let mut ops = vec![];
    for (name, n) in [("CONV_2D", 36), ("DEPTHWISE_CONV_2D", 17), ("ADD", 10)] {
        for _ in 0..n {
            ops.push(op(ops.len(), name, true));
        }
    }
    ops.push(op(63, "MEAN", false));
    ops.push(op(64, "RESHAPE", false));
    let c = compare(&ops, &log);
    assert_eq!((c.ops_ours, c.ops_compiler, c.agreeing), (65, 65, 63));
    assert_eq!(c.disagreements.len(), 2, "{:?}", c.disagreements);
    assert!(c.disagreements[0].starts_with("MEAN: we map 0 and leave 1 on the CPU; the compiler maps 1 and leaves 0"), "{:?}", c.disagreements);
}
