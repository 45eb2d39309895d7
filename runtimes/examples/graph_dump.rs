use tract_onnx::prelude::*;
fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    eprintln!("{}", effv2_runtime::tract_depthwise_kernel());
    let m = tract_onnx::onnx().model_for_path(&args[1])?.with_input_fact(0, f32::fact([2usize,3,224,224]).into())?.into_typed()?.into_decluttered()?;
    for id in m.eval_order()? {
        let n = m.node(id);
        if !n.name.starts_with(&args[2]) { continue }
        let ins: Vec<String> = n.inputs.iter().map(|i| format!("{}{:?}{}", m.node(i.node).name, m.outlet_fact(*i).unwrap().shape, if m.outlet_fact(*i).unwrap().konst.is_some() {"K"} else {""})).collect();
        println!("{} [{}] {:?} in={:?}", n.name, n.op().name(), n.op().info()?, ins);
    }
    Ok(())
}
