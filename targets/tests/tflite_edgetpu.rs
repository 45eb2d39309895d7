//! Every op and tensor of the `.tflite` files we write is in the Edge TPU's supported set (the
//! rule table in `effv2_targets::tflite::edgetpu`), for b0..b3 and s at every first-N Fused-MBConv placement
//! and two interleaved lists; the file LiteRT loads says exactly what the rules checked; bad input fails with
//! typed errors.

mod tflite_support;

use effv2_edge::graph::Op;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{Activation, ModelOptions, Padding};
use effv2_edge::Tensor;
use effv2_quantize::{Buf, Calibration, ConstData, DType, IoType, OpKind, QModel, Quant, QuantizeError, RangeMethod};
use effv2_targets::tflite::{builtin_name, check_edgetpu, op_code, write_tflite, TfliteError, OP_RULES};
use serde_json::Value;
use tflite_support::*;

/// The loaded model's ops and tensors (from LiteRT) equal the QModel we serialized.
fn assert_file_matches(q: &QModel, details: &Value, name: &str) {
    let ops = details["ops"].as_array().unwrap();
    assert_eq!(ops.len(), q.ops.len(), "{name}");
    for (op, d) in q.ops.iter().zip(ops) {
        assert_eq!(d["op_name"], builtin_name(op_code(q, op).builtin), "{name} {}", op.node);
        let ids = |k: &str| d[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>();
        assert_eq!((ids("inputs"), ids("outputs")), (op.inputs.clone(), op.outputs.clone()), "{name} {}", op.node);
    }
    // The file's tensors come first; kernels' scratch tensors (MEAN's sums...) follow them.
    let tensors = details["tensors"].as_array().unwrap();
    assert!(tensors.len() >= q.tensors.len(), "{name}");
    for (t, d) in q.tensors.iter().zip(tensors) {
        let dtype = match t.dtype {
            DType::Int8 => "int8",
            DType::UInt8 => "uint8",
            DType::Int32 => "int32",
        };
        let shape: Vec<usize> = d["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!((d["name"].as_str().unwrap(), d["dtype"].as_str().unwrap(), shape), (t.name.as_str(), dtype, t.shape.clone()));
        let scales: Vec<f32> = d["scales"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let zps: Vec<i64> = d["zero_points"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let axis = d["quantized_dimension"].as_u64().unwrap() as usize;
        match &t.quant {
            Quant::None => assert!(scales.is_empty(), "{}", t.name),
            Quant::PerTensor(p) => assert_eq!((scales, zps), (vec![p.scale], vec![p.zero_point as i64]), "{}", t.name),
            Quant::PerChannel { scales: s, axis: a } => assert_eq!((scales, zps, axis), (s.clone(), vec![0; s.len()], *a), "{}", t.name),
        }
    }
}

#[test]
fn every_written_op_is_in_the_edge_tpu_supported_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for model in ["efficientnetv2-b0", "efficientnetv2-b1", "efficientnetv2-b2", "efficientnetv2-b3", "efficientnetv2-s"] {
        // Every first-N placement (0 = none … 3 = official … 6 = all) and two interleaved lists.
        for fused in ["0", "1", "2", "3", "4", "5", "6", "0,2", "1,3,5"] {
            for lite in [false, true] {
                let mut o = ModelOptions { num_classes: 10, fused_stages: fused.parse().unwrap(), ..Default::default() };
                if lite {
                    (o.activation, o.se, o.padding) = (Activation::Relu6, false, Padding::Symmetric);
                }
                let (graph, weights, batches) = fresh(model, o, 64, 1);
                let cal = Calibration::run(&graph, &weights, &batches, false).unwrap();
                let io = if lite { IoType::UInt8 } else { IoType::Int8 };
                let q = cal.quantize(RangeMethod::MinMax, io).unwrap();
                let name = format!("{model} fused {fused}{}", if lite { " relu6/no-se/symmetric uint8" } else { "" });
                let bad: Vec<_> = check_edgetpu(&q).into_iter().filter(|c| !c.supported()).collect();
                assert!(bad.is_empty(), "{name}: {bad:#?}");
                // The file says what the rules saw (for a subset: LiteRT start-up is the cost).
                if fused == "3" {
                    let path = dir.path().join(format!("{checked}.tflite"));
                    std::fs::write(&path, write_tflite(&q, &name).unwrap()).unwrap();
                    let x = q.quantize_input(&Rng::new(1).normal_tensor(vec![1, 3, 64, 64])).unwrap();
                    let json = dir.path().join(format!("{checked}.json"));
                    let out = litert(&path, &x, &q.input_tensor().shape, q.output_tensor().numel(), "ref", Some(&json));
                    assert_eq!(out, vec![q.execute(&x[0]).unwrap()], "{name}");
                    assert_file_matches(&q, &serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap(), &name);
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 90);
}

fn tiny() -> (effv2_edge::graph::Graph, effv2_edge::weights::Weights, Vec<Tensor>) {
    let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 4, ..Default::default() };
    fresh("efficientnetv2-b0", o, 32, 2)
}

#[test]
fn the_rule_table_flags_what_the_edge_tpu_cannot_map() {
    let (graph, weights, batches) = tiny();
    let q = Calibration::run(&graph, &weights, &batches, false).unwrap().quantize(RangeMethod::MinMax, IoType::Int8).unwrap();
    // Every builtin the writer emits has a rule.
    for op in &q.ops {
        assert!(OP_RULES.iter().any(|r| r.builtin == op_code(&q, op).builtin), "{}", op.kind.name());
    }
    let problems = |m: &QModel| check_edgetpu(m).into_iter().flat_map(|c| c.problems).collect::<Vec<_>>();
    assert!(problems(&q).is_empty());
    // Batch 2 on an activation.
    let mut m = q.clone();
    let t = m.ops[0].outputs[0];
    m.tensors[t].shape[0] = 2;
    assert!(problems(&m).iter().any(|p| p.contains("3 innermost")), "{:?}", problems(&m));
    // A float-free but int32 activation.
    let mut m = q.clone();
    m.tensors[t].dtype = DType::Int32;
    assert!(problems(&m).iter().any(|p| p.contains("Int32")));
    // MEAN over the batch.
    let mut m = q.clone();
    let mean = m.ops.iter().position(|o| matches!(o.kind, OpKind::Mean { .. })).unwrap();
    let axes = m.ops[mean].inputs[1];
    m.tensors[axes].data = Some(ConstData::I32(vec![0, 1]));
    assert!(problems(&m).iter().any(|p| p.contains("batch")));
}

#[test]
fn bad_input_gives_typed_errors_not_panics() {
    let (graph, weights, batches) = tiny();
    let err = Calibration::run(&graph, &weights, &[], true).err().unwrap();
    assert!(matches!(err, QuantizeError::EmptyCalibration), "{err}");
    assert!(err.to_string().contains("calibration set is empty"));
    let wrong = Tensor::zeros(vec![2, 3, 31, 32]);
    let err = Calibration::run(&graph, &weights, &[batches[0].clone(), wrong], true).err().unwrap();
    assert!(matches!(err, QuantizeError::CalibrationShape { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("[2, 3, 31, 32]"), "{err}");
    let err = Calibration::run(&graph, &weights, &[Tensor::zeros(vec![3, 32, 32])], true).err().unwrap();
    assert!(matches!(err, QuantizeError::CalibrationShape { index: 0, .. }), "{err}");

    let cal = Calibration::run(&graph, &weights, &batches, false).unwrap();
    assert!(matches!(cal.quantize(RangeMethod::Mse, IoType::Int8), Err(QuantizeError::NoHistograms { .. })));
    // A graph op the int8 TFLite form cannot express: a grouped (not depthwise) conv.
    let mut cal = cal;
    let i = cal.graph.nodes.iter().position(|n| matches!(&n.op, Op::Conv(c) if c.groups == 1 && c.in_ch % 2 == 0 && c.kernel == 1)).unwrap();
    let Op::Conv(c) = &mut cal.graph.nodes[i].op else { unreachable!() };
    c.groups = 2;
    let err = cal.quantize(RangeMethod::MinMax, IoType::Int8).err().unwrap();
    assert!(matches!(&err, QuantizeError::Unsupported { node, .. } if *node == cal.graph.nodes[i].name), "{err}");

    // The executor and the writer check what they are given.
    let q = Calibration::run(&graph, &weights, &batches, false).unwrap().quantize(RangeMethod::MinMax, IoType::Int8).unwrap();
    assert!(matches!(q.execute(&Buf::I8(vec![0; 5])), Err(QuantizeError::InputShape { .. })));
    assert!(matches!(q.execute(&Buf::U8(vec![0; q.input_tensor().numel()])), Err(QuantizeError::InputShape { .. })));
    assert!(matches!(q.quantize_input(&Tensor::zeros(vec![1, 3, 8, 8])), Err(QuantizeError::InputShape { .. })));
    let mut broken = q.clone();
    broken.ops[3].inputs[0] = 10_000;
    assert!(matches!(write_tflite(&broken, "x"), Err(TfliteError::Op { .. })));
    assert!(matches!(broken.execute(&q.quantize_input(&batches[0]).unwrap()[0]), Err(QuantizeError::Exec { .. })));
}
