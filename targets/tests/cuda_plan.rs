//! `--target jetson`'s plan for the CUDA engine. Everywhere: the engine's own launch list (arena
//! offsets, repacked weights, argument lists) replayed on the host — kernels.cu compiled as C++ by
//! g++, convs by a plain NHWC loop in place of cuDNN — equals the reference engine. On a machine with a CUDA GPU: effv2-runtime's CUDA backend equals
//! the reference engine (fp32 rel err < 1e-4, fp16 < 1e-2) for b0 and s; without one, opening the
//! artifact is a clear error naming the missing driver.

use std::path::Path;

use effv2_edge::engine::CpuEngine;
use effv2_edge::rng::Rng;
use effv2_edge::spec::{Activation, ModelOptions, Padding};
use effv2_edge::tensor::Tensor;
use effv2_edge::weights::calibrate_batchnorm;
use effv2_runtime::plan::launch::{grid, Arg, BlasGemm, ConvShape, DType, LaunchSpec, Layout, BLOCK, KERNEL_NAMES};
use effv2_runtime::plan::NetPlan;
use effv2_runtime::{open, OpenOptions, Precision, RuntimeError, Target};
use effv2_targets::cpu::CpuBuild;
use effv2_targets::cuda_plan::cuda_plan;
use effv2_targets::jetson::build_jetson;
use effv2_targets::source::{LoadedModel, ModelSource};

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let max_b = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / max_b
}

/// A fresh model whose BN statistics are calibrated on `x` (random deep nets otherwise amplify
/// rounding; see cpu_artifact.rs), with the reference engine's logits for `x`.
fn model_and_reference(model: &str, options: ModelOptions, size: usize, x: &Tensor) -> (LoadedModel, Vec<f32>) {
    let m = ModelSource::Fresh { model: model.into(), options, seed: 3 }.load_for_size(Some(size)).unwrap();
    let graph = m.graph(Some(size)).unwrap();
    let m = LoadedModel { weights: calibrate_batchnorm(&graph, &m.weights, x).unwrap(), ..m };
    let want = CpuEngine::new(&graph, &m.weights).unwrap().run(x).unwrap().into_data();
    (m, want)
}

/// kernels.cu (f32) as a host library; see cuda_host/harness.cpp.
fn host_kernels(dir: &Path) -> libloading::Library {
    let cu = dir.join("kernels.cu");
    std::fs::write(&cu, effv2_runtime::cuda::KERNELS).unwrap();
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_host/harness.cpp");
    let lib = dir.join("libeffv2_kernels_host.so");
    let out = std::process::Command::new("g++")
        .args(["-O2", "-shared", "-fPIC", "-std=c++17"])
        .arg(format!("-DKERNELS_CU=\"{}\"", cu.display()))
        .arg(format!("-DHOST_SHIM=\"{}\"", Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimes/src/backends/cuda/host_shim.h").display()))
        .arg(&harness)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("g++ runs (Debian's g++ is on every machine of this project)");
    assert!(out.status.success(), "g++: {}", String::from_utf8_lossy(&out.stderr));
    unsafe { libloading::Library::new(&lib) }.unwrap()
}

/// NHWC conv standing in for cuDNN: OHWI filter, symmetric padding, no bias.
unsafe fn host_conv(s: ConvShape, x: u64, w: u64, y: u64) {
    let cin = s.c / s.groups;
    let per_group = s.out_ch / s.groups;
    let x = std::slice::from_raw_parts(x as *const f32, s.n * s.h * s.w * s.c);
    let w = std::slice::from_raw_parts(w as *const f32, s.out_ch * s.kernel * s.kernel * cin);
    let y = std::slice::from_raw_parts_mut(y as *mut f32, s.n * s.oh * s.ow * s.out_ch);
    let k = s.kernel;
    for b in 0..s.n {
        for oy in 0..s.oh {
            for ox in 0..s.ow {
                for o in 0..s.out_ch {
                    let g0 = o / per_group * cin;
                    let mut acc = 0.0f32;
                    for ky in 0..k {
                        let iy = (oy * s.stride + ky) as isize - s.pad[0] as isize;
                        for kx in 0..k {
                            let ix = (ox * s.stride + kx) as isize - s.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                continue;
                            }
                            let px = ((b * s.h + iy as usize) * s.w + ix as usize) * s.c + g0;
                            let wk = ((o * k + ky) * k + kx) * cin;
                            acc += (0..cin).map(|i| x[px + i] * w[wk + i]).sum::<f32>();
                        }
                    }
                    y[((b * s.oh + oy) * s.ow + ox) * s.out_ch + o] = acc;
                }
            }
        }
    }
}

/// Column-major BLAS gemm standing in for cuBLAS (`C = op(A)·op(B)`, leading dimensions as BLAS
/// reads them), so the parameters the engine hands cuBLAS are what is checked.
unsafe fn host_blas_gemm(g: BlasGemm, a: u64, b: u64, c: u64) {
    let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
    for j in 0..g.n {
        for i in 0..g.m {
            let mut acc = 0.0f32;
            for p in 0..g.k {
                let av = if g.trans_a { *a.add(p + i * g.lda) } else { *a.add(i + p * g.lda) };
                let bv = if g.trans_b { *b.add(j + p * g.ldb) } else { *b.add(p + j * g.ldb) };
                acc += av * bv;
            }
            *c.add(i + j * g.ldc) = acc;
        }
    }
}

/// The engine's launches for `plan` at f32, replayed on host memory; logits [N, classes].
fn replay_on_host(lib: &libloading::Library, plan: &NetPlan, weights: &[f32], x: &Tensor) -> Vec<f32> {
    type HostKernel = unsafe extern "C" fn(u32, u32, *mut *mut std::ffi::c_void);
    let fns: Vec<libloading::Symbol<HostKernel>> = KERNEL_NAMES.iter().map(|n| unsafe { lib.get(format!("host_{n}").as_bytes()) }.unwrap()).collect();
    let layout = Layout::new(plan, weights, x.shape()[0], DType::F32).unwrap();
    // u64 backing keeps every block 8-byte aligned, like device allocations.
    let mut arena = vec![0u64; layout.arena_bytes.div_ceil(8)];
    let mut params = vec![0u64; layout.params.len().div_ceil(8)];
    unsafe { std::ptr::copy_nonoverlapping(layout.params.as_ptr(), params.as_mut_ptr() as *mut u8, layout.params.len()) };
    let input = x.data().to_vec();
    let mut output = vec![0f32; layout.output_len];
    let launches = layout.launches(plan, arena.as_mut_ptr() as u64, params.as_ptr() as u64, input.as_ptr() as u64, output.as_mut_ptr() as u64);
    for l in launches {
        match l {
            LaunchSpec::Kernel { f, total, args } => {
                // Every argument in an 8-byte slot: an i32 is read from the low half (little-endian).
                let mut slots: Vec<u64> = args.iter().map(|a| match *a {
                    Arg::Ptr(p) => p,
                    Arg::I32(v) => v as u32 as u64,
                    Arg::I64(v) => v as u64,
                }).collect();
                let mut ptrs: Vec<*mut std::ffi::c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut _).collect();
                unsafe { fns[f](grid(total), BLOCK, ptrs.as_mut_ptr()) };
            }
            LaunchSpec::Conv { shape, x, w, y } => unsafe { host_conv(shape, x, w, y) },
            LaunchSpec::Gemm { batch, out, k, x, w, y } => unsafe { host_blas_gemm(BlasGemm::for_linear(batch, out, k), w, x, y) },
        }
    }
    output
}

#[test]
fn the_engine_launches_replayed_on_the_host_equal_the_reference_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = host_kernels(tmp.path());
    let small = |fused: &str| ModelOptions { width: Some(0.5), depth: Some(0.5), num_classes: 10, fused_stages: fused.parse().unwrap(), ..Default::default() };
    let relu = ModelOptions { activation: Activation::Relu6, se: false, padding: Padding::Symmetric, ..small("2") };
    for (name, options, size) in [("official", small("official"), 64), ("none", small("none"), 48), ("all", small("all"), 40), ("relu6/no-se", relu, 67)] {
        let x = Rng::new(9).normal_tensor(vec![2, 3, size, size]);
        let (m, want) = model_and_reference("efficientnetv2-b0", options, size, &x);
        let (plan, weights) = cuda_plan(&m.graph(Some(size)).unwrap(), &m.weights).unwrap();
        let got = replay_on_host(&lib, &plan, &weights, &x);
        let e = rel_err(&got, &want);
        println!("host replay {name}: rel err {e:.2e}");
        assert!(e < 1e-4, "{name}: {e}");
    }
}

fn build(m: &LoadedModel, size: usize, batch: usize, precision: Precision, dir: &Path) {
    build_jetson(m, &CpuBuild { image_size: Some(size), batch }, precision, dir).unwrap();
}

#[test]
fn the_cuda_backend_equals_the_reference_engine_or_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    if let Err(e) = effv2_runtime::cuda::probe_libraries() {
        // No GPU here: the artifact still builds, and opening it says why it cannot run.
        let x = Rng::new(1).normal_tensor(vec![1, 3, 32, 32]);
        let o = ModelOptions { width: Some(0.25), depth: Some(0.25), num_classes: 10, ..Default::default() };
        let (m, _) = model_and_reference("efficientnetv2-b0", o, 32, &x);
        build(&m, 32, 1, Precision::Fp16, tmp.path());
        let err = open(tmp.path(), &OpenOptions { expect_target: Some(Target::Jetson), ..Default::default() }).err().expect("no GPU, no runtime");
        assert!(matches!(&err, RuntimeError::Unavailable { backend, .. } if backend == "cuda"), "{err}");
        assert_eq!(err.to_string(), e.to_string());
        assert!(err.to_string().contains("no CUDA driver found"), "{err}");
        return;
    }
    let cases = [
        ("efficientnetv2-b0", 224, "official"),
        ("efficientnetv2-b0", 224, "all"),
        ("efficientnetv2-s", 224, "official"),
        ("efficientnetv2-s", 384, "none"),
    ];
    for (model, size, fused) in cases {
        let x = Rng::new(5).normal_tensor(vec![2, 3, size, size]);
        let o = ModelOptions { fused_stages: fused.parse().unwrap(), ..Default::default() };
        let (m, want) = model_and_reference(model, o, size, &x);
        for (precision, tol) in [(Precision::Fp32, 1e-4), (Precision::Fp16, 1e-2)] {
            let dir = tmp.path().join(format!("{model}-{size}-{fused}-{precision}"));
            build(&m, size, 2, precision, &dir);
            let mut rt = open(&dir, &OpenOptions::default()).unwrap();
            let got = rt.run(x.data()).unwrap();
            let e = rel_err(&got, &want);
            println!("{model} @{size} fused {fused} {precision} on {}: rel err {e:.2e}", rt.device());
            assert!(e < tol, "{model} {size} {fused} {precision}: {e}");
        }
    }
}

#[test]
fn the_arena_reuses_memory_on_a_real_network() {
    // EfficientNetV2-S at 384, batch 128, fp16: the peer-comparison configuration.
    let g = effv2_edge::graph::build(&effv2_edge::spec::ModelSpec::from_name("s", ModelOptions::default()).unwrap(), 384, 384).unwrap();
    let w = effv2_edge::engine::naive::random_weights(&g, 1);
    let (plan, weights) = cuda_plan(&g, &w).unwrap();
    let layout = Layout::new(&plan, &weights, 128, DType::F16).unwrap();
    let all_values: usize = layout.shapes.iter().map(|s| 128 * 2 * s.iter().product::<usize>()).sum();
    let largest = layout.shapes.iter().map(|s| 128 * 2 * s.iter().product::<usize>()).max().unwrap();
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    println!("S@384 b128 fp16: arena {:.2} GiB (largest value {:.2} GiB, all values {:.1} GiB), params {:.0} MiB", gib(layout.arena_bytes), gib(largest), gib(all_values), layout.params.len() as f64 / (1 << 20) as f64);
    assert!(layout.arena_bytes < all_values / 10, "{} of {}", layout.arena_bytes, all_values);
    assert!(layout.arena_bytes >= 2 * largest);
}
