//! Structural checks of a (folded) graph before planning, so kernels can index without panicking:
//! arities, shape agreement between ops and their inputs, parameter ids and shapes.

use super::EngineError;
use crate::graph::{Graph, Node, Op, ParamId, Shape};

pub(super) fn check_graph(g: &Graph) -> Result<(), EngineError> {
    let bad = |node: &str, reason: String| Err(EngineError::Graph { node: node.to_string(), reason });
    match g.nodes.first() {
        Some(n) if matches!(n.op, Op::Input) && n.inputs.is_empty() && n.shape.numel() > 0 => {}
        Some(n) => return bad(&n.name, "node 0 must be a non-empty input with no inputs".into()),
        None => return bad("<graph>", "the graph has no nodes".into()),
    }
    if g.output >= g.nodes.len() {
        return bad("<graph>", format!("output #{} does not exist", g.output));
    }
    for (i, node) in g.nodes.iter().enumerate().skip(1) {
        if let Some(&v) = node.inputs.iter().find(|&&v| v >= i) {
            return bad(&node.name, format!("reads value {v}, which is not computed before it"));
        }
        if node.shape.numel() == 0 {
            return bad(&node.name, "has an empty output shape".into());
        }
        check_node(g, node).map_err(|reason| match reason {
            Fail::Bad(reason) => EngineError::Graph { node: node.name.clone(), reason },
            Fail::Unsupported(op) => EngineError::Unsupported { node: node.name.clone(), op },
        })?;
    }
    Ok(())
}

enum Fail {
    Bad(String),
    Unsupported(String),
}

fn check_node(g: &Graph, node: &Node) -> Result<(), Fail> {
    let bad = |s: String| Err(Fail::Bad(s));
    let arity = |n: usize| {
        if node.inputs.len() == n {
            Ok(())
        } else {
            Err(Fail::Bad(format!("{} takes {n} input(s), got {}", node.op.kind_name(), node.inputs.len())))
        }
    };
    let shape_of = |k: usize| g.nodes[node.inputs[k]].shape;
    let param = |id: ParamId, want: Vec<usize>| match g.params.get(id) {
        Some(p) if p.shape == want => Ok(()),
        Some(p) => Err(Fail::Bad(format!("parameter {:?} has shape {:?}, the op needs {want:?}", p.name, p.shape))),
        None => Err(Fail::Bad(format!("names parameter #{id}, but the graph has {}", g.params.len()))),
    };
    let same = |s: Shape| if s == node.shape { Ok(()) } else { bad(format!("input shape {s:?} differs from output {:?}", node.shape)) };
    match &node.op {
        Op::Input => bad("only node 0 may be the input".into()),
        Op::BatchNorm(_) => Err(Fail::Unsupported("batch_norm (fold it into the conv before it first)".into())),
        Op::Act(_) | Op::DropPath { .. } | Op::Dropout { .. } => {
            arity(1)?;
            same(shape_of(0))
        }
        Op::Add => {
            arity(2)?;
            same(shape_of(0))?;
            same(shape_of(1))
        }
        Op::Mul => {
            arity(2)?;
            same(shape_of(0))?;
            let gate = shape_of(1);
            if gate != Shape::new(node.shape.c, 1, 1) {
                return bad(format!("gate shape {gate:?} is not [{}, 1, 1]", node.shape.c));
            }
            Ok(())
        }
        Op::GlobalAvgPool => {
            arity(1)?;
            if node.shape != Shape::new(shape_of(0).c, 1, 1) {
                return bad(format!("output shape {:?} is not [{}, 1, 1]", node.shape, shape_of(0).c));
            }
            Ok(())
        }
        Op::Linear(l) => {
            arity(1)?;
            if shape_of(0) != Shape::new(l.in_features, 1, 1) || node.shape != Shape::new(l.out_features, 1, 1) {
                return bad(format!("shapes {:?} -> {:?} do not match {} -> {} features", shape_of(0), node.shape, l.in_features, l.out_features));
            }
            param(l.weight, vec![l.out_features, l.in_features])?;
            param(l.bias, vec![l.out_features])
        }
        Op::Conv(c) => {
            arity(1)?;
            let s = shape_of(0);
            if c.groups != 1 && !c.is_depthwise() {
                return Err(Fail::Unsupported(format!("conv with groups = {} (only 1 or depthwise)", c.groups)));
            }
            if c.kernel == 0 || c.stride == 0 || c.in_ch != s.c || c.out_ch == 0 {
                return bad(format!("kernel {}, stride {}, {} in-channels on a {}-channel input", c.kernel, c.stride, c.in_ch, s.c));
            }
            let p = c.pads;
            let (ph, pw) = (s.h + p.top + p.bottom, s.w + p.left + p.right);
            if ph < c.kernel || pw < c.kernel {
                return bad(format!("kernel {} is larger than the padded input {ph}x{pw}", c.kernel));
            }
            let want = Shape::new(c.out_ch, (ph - c.kernel) / c.stride + 1, (pw - c.kernel) / c.stride + 1);
            if node.shape != want {
                return bad(format!("output shape {:?}, the conv geometry gives {want:?}", node.shape));
            }
            param(c.weight, vec![c.out_ch, c.in_ch / c.groups, c.kernel, c.kernel])?;
            c.bias.map_or(Ok(()), |b| param(b, vec![c.out_ch]))
        }
    }
}
