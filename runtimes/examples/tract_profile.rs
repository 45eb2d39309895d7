//! Where tract spends its time on an artifact's ONNX: per-op-type totals over a few runs.
//!
//!     cargo run --release -p effv2-runtime --example tract_profile -- DIR/model.onnx 1,3,224,224 [iters [nodes]]
//!
//! Used to find which graph forms tract runs fastest (see README, "CPU target").

use std::collections::BTreeMap;
use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: tract_profile MODEL.onnx N,C,H,W [ITERS]");
        std::process::exit(2);
    }
    let shape: Vec<usize> = args[2].split(',').map(|d| d.parse()).collect::<Result<_, _>>().map_err(|e| TractError::msg(format!("shape {:?}: {e}", args[2])))?;
    let iters: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(20);
    // `nodes` as 4th argument: one row per node with tract's own description (matmul kernel, m/k/n).
    let per_node = args.get(4).is_some_and(|a| a == "nodes");
    // Also links effv2-runtime's x86_64 depthwise kernels into tract's registry.
    effv2_runtime::avoid_tract_amx_int8();
    println!("{}", effv2_runtime::tract_kernels());
    let model = effv2_runtime::tract_optimize(tract_onnx::onnx().model_for_path(&args[1])?.with_input_fact(0, f32::fact(&shape).into())?.into_typed()?)?;
    // EFFV2_THREADS=N: the multi-threaded executor, as `effv2-bench run --threads N` sets it.
    let threads: usize = std::env::var("EFFV2_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let pool = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(threads).build()?);
    if threads > 1 {
        tract_linalg::multithread::set_default_executor(tract_linalg::multithread::Executor::MultiThread(pool.clone()));
    }
    let plan = model.into_runnable()?;
    let x: Tensor = Tensor::zero::<f32>(&shape)?;
    pool.install(|| profile(&plan, &x, iters, per_node))
}

fn profile(plan: &Arc<TypedSimplePlan>, x: &Tensor, iters: usize, per_node: bool) -> TractResult<()> {
    let mut totals: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut state = plan.spawn()?;
    for i in 0..iters + 3 {
        let warm = i < 3;
        state.run_plan_with_eval(tvec!(x.clone().into()), |ctx, st, node, input| {
            let t = Instant::now();
            let r = tract_core::plan::eval(ctx, st, node, input);
            if !warm {
                let e = totals.entry(if per_node { format!("{} {} {:?}", node.op().name(), node.name, node.op().info().unwrap_or_default()) } else { node.op().name().to_string() }).or_default();
                e.0 += t.elapsed().as_secs_f64();
                e.1 += 1;
            }
            r
        })?;
    }
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let all: f64 = rows.iter().map(|r| r.1 .0).sum();
    println!("{:<28} {:>9} {:>7} {:>6}", "op", "ms/run", "share", "nodes");
    for (op, (s, n)) in rows {
        println!("{:<28} {:>9.3} {:>6.1}% {:>6}", op, s * 1e3 / iters as f64, 100.0 * s / all, n / iters);
    }
    println!("{:<28} {:>9.3}", "total", all * 1e3 / iters as f64);
    Ok(())
}
