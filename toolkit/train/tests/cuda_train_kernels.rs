//! The CUDA training kernels (`effv2_train::cuda`): they compile with the real NVRTC for Hopper and
//! Orin, and — run as host C++ (g++, one launch thread after another, see
//! runtimes/src/backends/cuda/host_shim.h) over odd launch shapes — they compute what this crate's
//! CPU engine and maths compute: batch norm forward/backward in training mode, activation, SE and
//! mask backwards, the loss and its gradient, RMSProp, SGD and EMA.

use std::path::Path;

use effv2_edge::graph::ActKind;
use effv2_edge::rng::Rng;
use effv2_edge::graph::Pads;
use effv2_train::cpu::conv::Geo;
use effv2_train::cpu::{bn, depthwise, ops};
use effv2_train::cuda::{train_kernels_source, CHAN_CHUNK_ROWS, TRAIN_KERNEL_NAMES};
use effv2_train::optim::{self, Optimizer};
use effv2_train::{ema, loss};
use libloading::{Library, Symbol};

#[test]
fn train_kernels_compile_with_nvrtc_for_hopper_and_orin() {
    use effv2_runtime::cuda::{compile_source, nvrtc_for_tests};
    if !nvrtc_for_tests() {
        return;
    }
    for arch in ["compute_90", "compute_87"] {
        let ptx = compile_source(&train_kernels_source(), "effv2_train_kernels.cu", vec![], Some(arch.into())).unwrap_or_else(|e| panic!("{arch}: {e}")).to_src();
        for k in TRAIN_KERNEL_NAMES {
            assert!(ptx.contains(&format!(".entry {k}(")), "{arch}: no entry {k}");
        }
    }
    // The depthwise gradient with k at run time for every size (EFFV2_CUDA_DW_UNROLL=0's build).
    let runtime_k = compile_source(&train_kernels_source(), "effv2_train_kernels.cu", vec!["-DEFFV2_DW_RUNTIME_K".into()], Some("compute_90".into()));
    assert!(runtime_k.unwrap().to_src().contains(".entry depthwise_backward_dx("));
}

/// Every training kernel keeps its values in registers (no stack frame, no spills) in the two
/// storage types the engine trains in, on both GPU generations, as NVIDIA's assembler builds them
/// (local memory would make a kernel several times slower with the same outputs).
#[test]
fn no_train_kernel_uses_local_memory() {
    use effv2_runtime::cuda::{compile_source, nvrtc_for_tests, DType};
    use effv2_runtime::plan::ptxas::{ptxas_for_tests, without_local_memory};
    let Some(ptxas) = ptxas_for_tests() else { return };
    if !nvrtc_for_tests() {
        return;
    }
    for dtype in [DType::F32, DType::Bf16] {
        for (arch, sm) in [("compute_90", "sm_90"), ("compute_87", "sm_87")] {
            let ptx = compile_source(&train_kernels_source(), "effv2_train_kernels.cu", dtype.kernel_defines(), Some(arch.into())).unwrap().to_src();
            let kernels = without_local_memory(&ptxas, &ptx, sm).unwrap_or_else(|e| panic!("{dtype:?} {e}"));
            assert_eq!(kernels.len(), TRAIN_KERNEL_NAMES.len(), "{dtype:?} {sm}");
            for k in &kernels {
                println!("{dtype:?} {sm} {:<24} {:>3} registers", k.name, k.registers);
            }
        }
    }
}

/// The kernels as a host library, and a launcher that plays every thread of a launch.
struct Host {
    lib: Library,
    _dir: tempfile::TempDir,
}

/// Odd launch shapes on purpose: every grid-stride loop must cover its range whatever the shape.
const LAUNCH: (u32, u32) = (3, 7);

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let cu = dir.path().join("train_kernels.cu");
        std::fs::write(&cu, train_kernels_source()).unwrap();
        let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtimes/src/backends/cuda/host_shim.h");
        let so = dir.path().join("libeffv2_train_kernels_host.so");
        let out = std::process::Command::new("g++")
            .args(["-O2", "-shared", "-fPIC", "-std=c++17", "-include"])
            .arg(&shim)
            .args(["-x", "c++"])
            .arg(&cu)
            .arg("-o")
            .arg(&so)
            .output()
            .expect("g++ runs (Debian's g++ is on every machine of this project)");
        assert!(out.status.success(), "g++: {}", String::from_utf8_lossy(&out.stderr));
        Host { lib: unsafe { Library::new(&so) }.unwrap(), _dir: dir }
    }

    fn sym<T>(&self, name: &str) -> Symbol<'_, T> {
        unsafe { self.lib.get(name.as_bytes()) }.unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Runs `call` once per thread of the launch, after telling the shim which thread it is.
    fn launch(&self, call: impl Fn()) {
        let set: Symbol<unsafe extern "C" fn(u32, u32, u32, u32)> = self.sym("effv2_host_thread");
        let (g, b) = LAUNCH;
        for bi in 0..g {
            for ti in 0..b {
                unsafe { set(bi, ti, b, g) };
                call();
            }
        }
    }
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
    }
}

fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal() as f32 * scale).collect()
}

type Partials = unsafe extern "C" fn(*const f32, *const f32, *const f32, *const f32, *const f32, *const f32, *mut f64, i64, i32, i32, i32, i32);
type MaskedPartials = unsafe extern "C" fn(*const f32, *const f32, *const f32, *const f32, *const f32, *const f32, *const f32, i64, *mut f64, i64, i32, i32);
type Finish = unsafe extern "C" fn(*const f64, i64, i32, f64, *mut f64, *mut f32, *mut f32);
type Regroup = unsafe extern "C" fn(*const f64, i64, i32, i32, *mut f64);

/// What `chan_partials` reads besides `a`: the BN input, its saved statistics and parameters
/// (empty where the mode does not read them), the fused activation's code, and a drop-path mask
/// `a` is scaled by (one factor per `per` rows; empty: none).
#[derive(Default)]
struct SumsOf<'a> {
    b: &'a [f32],
    mean: &'a [f32],
    invstd: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    kind: i32,
    mask: &'a [f32],
    per: usize,
}

/// The per-channel partials of `chan_partials` mode `mode` as the engine runs them: chunk
/// partials, regrouped; `[groups, 2c]` out, and `groups`.
fn chan_partials(h: &Host, a: &[f32], with: &SumsOf, c: usize, mode: i32) -> (Vec<f64>, usize) {
    let rows = a.len() / c;
    let chunks = rows.div_ceil(CHAN_CHUNK_ROWS);
    let mut part = vec![f64::NAN; chunks * 2 * c];
    let p: Symbol<Partials> = h.sym("chan_partials");
    let ptr = |v: &[f32]| if v.is_empty() { std::ptr::null() } else { v.as_ptr() };
    let pp = part.as_mut_ptr();
    let w = with;
    if w.mask.is_empty() {
        h.launch(|| unsafe { p(a.as_ptr(), ptr(w.b), ptr(w.mean), ptr(w.invstd), ptr(w.gamma), ptr(w.beta), pp, rows as i64, c as i32, CHAN_CHUNK_ROWS as i32, mode, w.kind) });
    } else {
        assert!(mode == 1 && w.kind == 0);
        let masked: Symbol<MaskedPartials> = h.sym("chan_partials_masked");
        h.launch(|| unsafe { masked(a.as_ptr(), ptr(w.b), ptr(w.mean), ptr(w.invstd), ptr(w.gamma), ptr(w.beta), w.mask.as_ptr(), w.per as i64, pp, rows as i64, c as i32, CHAN_CHUNK_ROWS as i32) });
    }
    // The partials are added as 2c channels.
    let c = 2 * c;
    // The engine regroups many chunks before the final sum; groups of 2 here, so 3 chunks take
    // that path (a full group and a short one).
    let group = 2usize;
    let groups = chunks.div_ceil(group);
    let mut part2 = vec![f64::NAN; groups * c];
    let regroup: Symbol<Regroup> = h.sym("chan_regroup");
    let p2 = part2.as_mut_ptr();
    h.launch(|| unsafe { regroup(part.as_ptr(), chunks as i64, c as i32, group as i32, p2) });
    (part2, groups)
}

/// The two per-channel sums of `chan_partials` mode `mode`, finished by `chan_finish`: `[2c]` out
/// (Σ, then the mode's second sum) in f64, and the f32 copies it writes of both halves.
fn chan_sums(h: &Host, a: &[f32], with: &SumsOf, c: usize, mode: i32, scale: f64) -> (Vec<f64>, Vec<f32>) {
    let (part, groups) = chan_partials(h, a, with, c, mode);
    let f: Symbol<Finish> = h.sym("chan_finish");
    let (mut out, mut out32) = (vec![f64::NAN; 2 * c], vec![f32::NAN; 2 * c]);
    let (op, lo) = (out.as_mut_ptr(), out32.as_mut_ptr());
    let hi = unsafe { lo.add(c) };
    h.launch(|| unsafe { f(part.as_ptr(), groups as i64, 2 * c as i32, scale, op, lo, hi) });
    (out, out32)
}

/// Batch norm in training mode, alone (5 channels: a thread per element; 16: 8 per thread) and
/// with a SiLU or a sigmoid fused in, against the CPU engine's BN and activation.
#[test]
fn batch_norm_training_forward_and_backward_equal_the_cpu_engine() {
    let h = Host::new();
    for (c, act) in [(5usize, None), (16, None), (16, Some((ActKind::Silu, 1))), (5, Some((ActKind::Sigmoid, 3)))] {
        let what = |s: &str| format!("{s} (c{c}, {act:?})");
        // 601 rows = nine full chunks and a partial one (whose last load group of ROW_TILE rows is
        // short too); channels with an offset so the mean matters.
        let rows = 601usize;
        let x: Vec<f32> = randn(rows * c, 1, 2.0).iter().enumerate().map(|(i, v)| v + (i % c) as f32).collect();
        let dz = randn(rows * c, 2, 1.0);
        let gamma = randn(c, 3, 1.0);
        let beta = randn(c, 4, 1.0);
        let p = bn::Params { gamma: &gamma, beta: &beta, eps: 1e-3 };
        let (mut rm_cpu, mut rv_cpu) = (vec![0.5f32; c], vec![2.0f32; c]);
        let mut y_cpu = vec![0.0; rows * c];
        let saved = bn::forward_train(&p, &x, &mut y_cpu, &mut rm_cpu, &mut rv_cpu, None).unwrap();
        // The activation after the BN: its output, and the gradient it hands the BN.
        let (mut z_cpu, mut dy) = (y_cpu.clone(), dz.clone());
        let kind = act.map_or(0, |(k, code)| {
            ops::act_forward(k, &y_cpu, &mut z_cpu);
            ops::act_backward(k, &y_cpu, &z_cpu, &dz, &mut dy);
            code
        });

        // Mean and mean square in one pass.
        let (moments, moments32) = chan_sums(&h, &x, &SumsOf::default(), c, 0, 1.0 / rows as f64);
        assert!(moments.iter().zip(&moments32).all(|(&m, &m32)| m as f32 == m32), "{}", what("f32 copies of the sums"));
        let (mean64, meansq64) = moments.split_at(c);
        let (mut mean, mut invstd) = (vec![0f32; c], vec![0f32; c]);
        let (mut rm, mut rv) = (vec![0.5f32; c], vec![2.0f32; c]);
        let fin: Symbol<unsafe extern "C" fn(*const f64, *const f64, *mut f32, *mut f32, *mut f32, *mut f32, i32, i64, f32, f32)> = h.sym("bn_finalize");
        // One thread per channel updates its running statistics once: a single-thread launch.
        let set: Symbol<unsafe extern "C" fn(u32, u32, u32, u32)> = h.sym("effv2_host_thread");
        unsafe {
            set(0, 0, 1, 1);
            fin(mean64.as_ptr(), meansq64.as_ptr(), mean.as_mut_ptr(), invstd.as_mut_ptr(), rm.as_mut_ptr(), rv.as_mut_ptr(), c as i32, rows as i64, 1e-3, bn::RUNNING_MOMENTUM);
        }
        close(&mean, &saved.mean, 1e-6, &what("mean"));
        close(&invstd, &saved.invstd, 1e-6, &what("invstd"));
        close(&rm, &rm_cpu, 1e-6, &what("running mean"));
        close(&rv, &rv_cpu, 1e-6, &what("running var"));
        // One engine: the final sums and the statistics from the partials in one launch, the same
        // to the bit.
        let (part, groups) = chan_partials(&h, &x, &SumsOf::default(), c, 0);
        let (mut mean1, mut invstd1) = (vec![f32::NAN; c], vec![f32::NAN; c]);
        let (mut rm1, mut rv1) = (vec![0.5f32; c], vec![2.0f32; c]);
        let bn_finish: Symbol<unsafe extern "C" fn(*const f64, i64, i32, f64, *mut f32, *mut f32, *mut f32, *mut f32, i64, f32, f32)> = h.sym("bn_finish");
        let ptrs = [mean1.as_mut_ptr(), invstd1.as_mut_ptr(), rm1.as_mut_ptr(), rv1.as_mut_ptr()];
        h.launch(|| unsafe { bn_finish(part.as_ptr(), groups as i64, c as i32, 1.0 / rows as f64, ptrs[0], ptrs[1], ptrs[2], ptrs[3], rows as i64, 1e-3, bn::RUNNING_MOMENTUM) });
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (got, want, name) in [(&mean1, &mean, "mean"), (&invstd1, &invstd, "invstd"), (&rm1, &rm, "running mean"), (&rv1, &rv, "running var")] {
            assert_eq!(bits(got), bits(want), "{}", what(&format!("bn_finish {name}")));
        }
        // Row tiles of 1, 3 (the last one short) and 4 rows (7 asks for more than ROW_TILE): the
        // same outputs to the bit, as tiles only change which thread computes what.
        const RPTS: [i32; 4] = [1, 3, 4, 7];
        let apply: Symbol<unsafe extern "C" fn(*const f32, *mut f32, *const f32, *const f32, *const f32, *const f32, i64, i32, i32, i32)> = h.sym("bn_apply");
        let mut zs = vec![];
        for rpt in RPTS {
            let mut z = vec![f32::NAN; rows * c];
            let zp = z.as_mut_ptr();
            h.launch(|| unsafe { apply(x.as_ptr(), zp, mean.as_ptr(), invstd.as_ptr(), gamma.as_ptr(), beta.as_ptr(), (rows * c) as i64, c as i32, kind, rpt) });
            close(&z, &z_cpu, 1e-5, &what(&format!("BN (+ activation) output, {rpt} rows a thread")));
            zs.push(z);
        }
        assert!(zs.iter().all(|z| z.iter().zip(&zs[0]).all(|(a, b)| a.to_bits() == b.to_bits())), "{}", what("BN output differs between row tiles"));
        // A BN that only a residual add reads (through a drop-path): BN(x) · mask[sample] + skip
        // into the add's output, samples of 50 rows (the last one short), every row tile.
        type ApplyAdd = unsafe extern "C" fn(*const f32, *const f32, *const f32, i64, *mut f32, *const f32, *const f32, *const f32, *const f32, i64, i32, i32);
        let apply_add: Symbol<ApplyAdd> = h.sym("bn_apply_add");
        let per = 50usize;
        let mask: Vec<f32> = (0..rows.div_ceil(per)).map(|k| if k % 3 == 1 { 0.0 } else { 1.25 }).collect();
        let skip = randn(rows * c, 5, 1.0);
        let want: Vec<f32> = (0..rows * c).map(|i| y_cpu[i] * mask[i / c / per] + skip[i]).collect();
        for rpt in RPTS {
            let mut z = vec![f32::NAN; rows * c];
            let zp = z.as_mut_ptr();
            h.launch(|| unsafe { apply_add(x.as_ptr(), skip.as_ptr(), mask.as_ptr(), per as i64, zp, mean.as_ptr(), invstd.as_ptr(), gamma.as_ptr(), beta.as_ptr(), (rows * c) as i64, c as i32, rpt) });
            close(&z, &want, 1e-5, &what(&format!("BN · mask + skip, {rpt} rows a thread")));
        }

        let (mut dx_cpu, mut dg_cpu, mut db_cpu) = (vec![0.0; rows * c], vec![0.0; c], vec![0.0; c]);
        bn::backward(&p, &saved, &x, &dy, &mut dx_cpu, &mut dg_cpu, &mut db_cpu, None).unwrap();
        // Σdy and Σdy·x̂ in one pass, from the activation's gradient where one is fused.
        let with = SumsOf { b: &x, mean: &mean, invstd: &invstd, gamma: &gamma, beta: &beta, kind, ..Default::default() };
        let (sums, sums32) = chan_sums(&h, &dz, &with, c, 1, 1.0);
        let (sdy, sdyx) = sums.split_at(c);
        type Bwd = unsafe extern "C" fn(*const f32, *const f32, *const f32, i64, *const f32, *const f32, *const f32, *const f32, *const f64, *const f64, *mut f32, i64, i32, i64, i32, i32);
        let bwd: Symbol<Bwd> = h.sym("bn_backward_dx");
        let mut dxs = vec![];
        for rpt in RPTS {
            let mut dx = vec![f32::NAN; rows * c];
            let dxp = dx.as_mut_ptr();
            h.launch(|| unsafe { bwd(x.as_ptr(), dz.as_ptr(), std::ptr::null(), 0, mean.as_ptr(), invstd.as_ptr(), gamma.as_ptr(), beta.as_ptr(), sdy.as_ptr(), sdyx.as_ptr(), dxp, (rows * c) as i64, c as i32, rows as i64, kind, rpt) });
            close(&dx, &dx_cpu, 1e-4, &what(&format!("dx, {rpt} rows a thread")));
            dxs.push(dx);
        }
        assert!(dxs.iter().all(|d| d.iter().zip(&dxs[0]).all(|(a, b)| a.to_bits() == b.to_bits())), "{}", what("dx differs between row tiles"));
        // dβ = Σdy and dγ = Σdy·x̂: the f32 copies chan_finish writes.
        let (db, dg) = sums32.split_at(c);
        close(dg, &dg_cpu, 1e-5, &what("dgamma"));
        close(db, &db_cpu, 1e-5, &what("dbeta"));
        // A BN whose output reaches a residual add through a drop-path: its gradient is the add's
        // times the sample's mask, read as such by the sums and dx — the same, to the bit, as from
        // the masked gradient written out.
        if kind == 0 {
            let dz_masked: Vec<f32> = dz.iter().enumerate().map(|(i, v)| v * mask[i / c / per]).collect();
            let masked = SumsOf { b: &x, mean: &mean, invstd: &invstd, gamma: &gamma, beta: &beta, kind, mask: &mask, per };
            let (got, _) = chan_sums(&h, &dz, &masked, c, 1, 1.0);
            let (want, _) = chan_sums(&h, &dz_masked, &with, c, 1, 1.0);
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{}", what("masked sums"));
            let (sdy, sdyx) = want.split_at(c);
            for rpt in RPTS {
                let (mut got, mut want) = (vec![f32::NAN; rows * c], vec![f32::NAN; rows * c]);
                let (gp, wp) = (got.as_mut_ptr(), want.as_mut_ptr());
                h.launch(|| unsafe { bwd(x.as_ptr(), dz.as_ptr(), mask.as_ptr(), per as i64, mean.as_ptr(), invstd.as_ptr(), gamma.as_ptr(), beta.as_ptr(), sdy.as_ptr(), sdyx.as_ptr(), gp, (rows * c) as i64, c as i32, rows as i64, kind, rpt) });
                h.launch(|| unsafe { bwd(x.as_ptr(), dz_masked.as_ptr(), std::ptr::null(), 0, mean.as_ptr(), invstd.as_ptr(), gamma.as_ptr(), beta.as_ptr(), sdy.as_ptr(), sdyx.as_ptr(), wp, (rows * c) as i64, c as i32, rows as i64, kind, rpt) });
                assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{}", what(&format!("masked dx, {rpt} rows a thread")));
            }
        }
    }
}

#[test]
fn depthwise_backward_equals_the_cpu_engine_for_stride_1_and_2() {
    let h_ = Host::new();
    type Dx = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64, i32, i32, i32, i32, i32, i32, i32, i32, i32);
    type Dw = unsafe extern "C" fn(*const f32, *const f32, *mut f64, i64, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32);
    type DwFinish = unsafe extern "C" fn(*const f64, i64, i32, *mut f32);
    let (fdx, fdw): (Symbol<Dx>, Symbol<Dw>) = (h_.sym("depthwise_backward_dx"), h_.sym("depthwise_backward_dw"));
    let fdw_finish: Symbol<DwFinish> = h_.sym("depthwise_dw_finish");
    // TF "same" padding: stride 1 pads 1/1, stride 2 on an even size pads 0 top-left, 1 bottom-right;
    // 5x5 with stride 2 on an odd size pads 2/2.
    // 19 channels: one per thread; 24: the wide path (8 per thread).
    let cases = [(7usize, 3usize, 1usize, 1usize), (8, 3, 2, 0), (9, 5, 2, 2)];
    for ((h, k, stride, pt), c) in cases.into_iter().flat_map(|g| [(g, 19usize), (g, 24)]) {
        let n = 3usize;
        let oh = h.div_ceil(stride);
        let pb = ((oh - 1) * stride + k).saturating_sub(h + pt);
        let g = Geo { cin: c, cout: c, h, w: h, oh, ow: oh, k, stride, pads: Pads { top: pt, left: pt, bottom: pb, right: pb } };
        let x = randn(n * g.in_len(), 31, 1.0);
        let w = randn(c * k * k, 32, 1.0); // OIHW [c, 1, k, k]
        let dy = randn(n * g.out_len(), 33, 1.0);
        let (mut dx_want, mut dw_want) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        depthwise::backward(&g, &x, &w, &dy, Some(&mut dx_want), &mut dw_want);
        // The engine keeps depthwise weights as [k·k, c] (the inference layout).
        let mut w_hwc = vec![0.0; w.len()];
        for ch in 0..c {
            for t in 0..k * k {
                w_hwc[t * c + ch] = w[ch * k * k + t];
            }
        }
        let (mut dx, mut dw_hwc) = (vec![f32::NAN; x.len()], vec![f32::NAN; w.len()]);
        let geo = [h as i32, h as i32, c as i32, oh as i32, oh as i32, k as i32, stride as i32, pt as i32, pt as i32];
        let (dxp, dwp) = (dx.as_mut_ptr(), dw_hwc.as_mut_ptr());
        let [a, b, cc, d, e, f, gg, hh, ii] = geo;
        h_.launch(|| unsafe { fdx(dy.as_ptr(), w_hwc.as_ptr(), dxp, x.len() as i64, a, b, cc, d, e, f, gg, hh, ii) });
        // Filter gradient partials over chunks of 7 output rows (uneven last chunk), then their sum.
        let chunk = 7usize;
        let chunks = (n * oh * oh).div_ceil(chunk);
        let mut part = vec![f64::NAN; chunks * k * k * c];
        let pp = part.as_mut_ptr();
        h_.launch(|| unsafe { fdw(x.as_ptr(), dy.as_ptr(), pp, n as i64, a, b, cc, d, e, f, gg, hh, ii, chunk as i32) });
        h_.launch(|| unsafe { fdw_finish(part.as_ptr(), chunks as i64, (k * k * c) as i32, dwp) });
        let mut dw = vec![0.0; w.len()];
        for ch in 0..c {
            for t in 0..k * k {
                dw[ch * k * k + t] = dw_hwc[t * c + ch];
            }
        }
        close(&dx, &dx_want, 1e-5, &format!("depthwise dx k{k} s{stride} c{c}"));
        close(&dw, &dw_want, 1e-5, &format!("depthwise dw k{k} s{stride} c{c}"));
    }
}

#[test]
fn activation_se_and_mask_backwards_equal_the_cpu_ops() {
    let h = Host::new();
    // 6 channels: one element per thread; 16: the wide paths (8 per thread).
    for c in [6usize, 16] {
        let (n, hw) = (2usize, 9usize);
        let total = n * hw * c;
        let x = randn(total, 5, 3.0);
        let dy = randn(total, 6, 1.0);
        let act: Symbol<unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i32)> = h.sym("act_backward");
        for (kind, code) in [(ActKind::Silu, 1), (ActKind::Relu6, 2), (ActKind::Sigmoid, 3)] {
            let mut y = vec![0.0; total];
            ops::act_forward(kind, &x, &mut y);
            let mut want = vec![0.0; total];
            ops::act_backward(kind, &x, &y, &dy, &mut want);
            let mut got = vec![f32::NAN; total];
            let gp = got.as_mut_ptr();
            h.launch(|| unsafe { act(x.as_ptr(), y.as_ptr(), dy.as_ptr(), gp, total as i64, code) });
            close(&got, &want, 1e-6, &format!("{kind:?} backward c{c}"));
        }

        let dpool = randn(n * c, 7, 1.0);
        let mut want = vec![0.0; total];
        ops::pool_backward(&dpool, hw, c, &mut want);
        let mut got = vec![f32::NAN; total];
        let pool: Symbol<unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i32, i32)> = h.sym("pool_backward");
        let gp = got.as_mut_ptr();
        let null = std::ptr::null();
        h.launch(|| unsafe { pool(dpool.as_ptr(), null, null, gp, total as i64, hw as i32, c as i32) });
        close(&got, &want, 1e-7, &format!("pool backward c{c}"));

        // The gate multiply's gradients: dgate below; dx (dy · gate) is written with the SE pool's
        // (the pool and the gate both read x) in one pass.
        let gate = randn(n * c, 8, 1.0);
        let (mut dx_want, mut dg_want) = (vec![0.0; total], vec![0.0; n * c]);
        ops::mul_backward(&x, &gate, &dy, hw, c, &mut dx_want, &mut dg_want);
        let gp = got.as_mut_ptr();
        h.launch(|| unsafe { pool(dpool.as_ptr(), dy.as_ptr(), gate.as_ptr(), gp, total as i64, hw as i32, c as i32) });
        let both: Vec<f32> = dx_want.iter().zip(&want).map(|(a, b)| a + b).collect();
        close(&got, &both, 1e-6, &format!("pool + gate multiply backward c{c}"));
        let mut dg = vec![f32::NAN; n * c];
        let gdg: Symbol<unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64, i32, i32)> = h.sym("gate_mul_backward_dgate");
        let dgp = dg.as_mut_ptr();
        h.launch(|| unsafe { gdg(x.as_ptr(), dy.as_ptr(), dgp, n as i64, hw as i32, c as i32) });
        close(&dg, &dg_want, 1e-6, &format!("gate dgate c{c}"));

        // Drop-path (one factor per sample) and dropout (one per element), alone and with the
        // residual add that follows it.
        let am: Symbol<unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i64)> = h.sym("apply_mask");
        let mut rng = Rng::new(9);
        let drop_path = ops::drop_path_mask(n, 0.5, &mut rng);
        let dropout: Vec<f32> = (0..total).map(|_| if rng.uniform() < 0.3 { 0.0 } else { 1.0 / 0.7 }).collect();
        for (what, mask, per) in [("drop-path", &drop_path, hw * c), ("dropout", &dropout, 1)] {
            let mut want = vec![0.0; total];
            ops::apply_mask(&x, mask, per, &mut want);
            let mut got = vec![f32::NAN; total];
            let gp = got.as_mut_ptr();
            h.launch(|| unsafe { am(x.as_ptr(), mask.as_ptr(), std::ptr::null(), gp, total as i64, per as i64) });
            close(&got, &want, 0.0, &format!("{what} mask c{c}"));
            let want_sum: Vec<f32> = want.iter().zip(&dy).map(|(m, s)| m + s).collect();
            let gp = got.as_mut_ptr();
            h.launch(|| unsafe { am(x.as_ptr(), mask.as_ptr(), dy.as_ptr(), gp, total as i64, per as i64) });
            close(&got, &want_sum, 1e-6, &format!("{what} mask + residual c{c}"));
        }
    }
    // (Gradient sums run the inference `add` in place: covered by the launch-list replay in
    // cuda_train_plan.rs, whose residual inputs get two gradients.)
}

#[test]
fn loss_optimizers_and_ema_equal_the_cpu_maths() {
    let h = Host::new();
    let (batch, classes) = (5usize, 7usize);
    let logits: Vec<f32> = randn(batch * classes, 10, 4.0);
    let targets = loss::smoothed_onehot(&[0, 3, 6, 2, 2], classes, 0.1);
    let (l_want, g_want) = loss::softmax_cross_entropy(&logits, &targets, classes);
    let (mut g, mut rows) = (vec![f32::NAN; batch * classes], vec![f64::NAN; batch]);
    let xent: Symbol<unsafe extern "C" fn(*const f32, *const f32, *mut f32, *mut f64, i64, i32)> = h.sym("softmax_xent");
    let (gp, rp) = (g.as_mut_ptr(), rows.as_mut_ptr());
    h.launch(|| unsafe { xent(logits.as_ptr(), targets.as_ptr(), gp, rp, batch as i64, classes as i32) });
    let l = (rows.iter().sum::<f64>() / batch as f64) as f32;
    close(&[l], &[l_want], 1e-6, "loss");
    close(&g, &g_want, 1e-6, "dlogits");

    let len = 300usize;
    let w0 = randn(len, 11, 1.0);
    let grads = [randn(len, 12, 0.1), randn(len, 13, 0.1)];
    let (lr, wd) = (0.016f32, 1e-5f32);

    let opt = Optimizer::tf_rmsprop();
    let Optimizer::RmsProp { decay, momentum, eps } = opt else { unreachable!() };
    let (mut w_cpu, mut s_cpu) = (w0.clone(), opt.init_slots(len));
    let (mut w, mut s) = (w0.clone(), opt.init_slots(len));
    let step: Symbol<unsafe extern "C" fn(*mut f32, *const f32, *mut f32, *mut f32, i64, f32, f32, f32, f32, f32)> = h.sym("rmsprop_step");
    for g in &grads {
        optim::update(&opt, &mut w_cpu, g, &mut s_cpu, lr, wd);
        let (wp, msp, mop) = (w.as_mut_ptr(), s[0].as_mut_ptr(), s[1].as_mut_ptr());
        h.launch(|| unsafe { step(wp, g.as_ptr(), msp, mop, len as i64, lr, decay, momentum, eps, wd) });
    }
    close(&w, &w_cpu, 1e-6, "rmsprop w");
    close(&s[0], &s_cpu[0], 1e-6, "rmsprop ms");
    close(&s[1], &s_cpu[1], 1e-6, "rmsprop momentum");

    let sgd: Symbol<unsafe extern "C" fn(*mut f32, *const f32, *mut f32, i64, f32, f32, i32, f32)> = h.sym("sgd_step");
    for nesterov in [false, true] {
        let opt = Optimizer::Sgd { momentum: 0.9, nesterov };
        let (mut w_cpu, mut s_cpu) = (w0.clone(), opt.init_slots(len));
        let (mut w, mut buf) = (w0.clone(), vec![0f32; len]);
        for g in &grads {
            optim::update(&opt, &mut w_cpu, g, &mut s_cpu, lr, wd);
            let (wp, bp) = (w.as_mut_ptr(), buf.as_mut_ptr());
            h.launch(|| unsafe { sgd(wp, g.as_ptr(), bp, len as i64, lr, 0.9, nesterov as i32, wd) });
        }
        close(&w, &w_cpu, 1e-6, &format!("sgd nesterov={nesterov} w"));
        close(&buf, &s_cpu[0], 1e-6, "sgd buffer");
    }

    let mut shadow_cpu = w0.clone();
    let mut shadow = w0.clone();
    let upd: Symbol<unsafe extern "C" fn(*mut f32, *const f32, i64, f32)> = h.sym("ema_update");
    for (t, value) in grads.iter().enumerate() {
        let d = ema::tf_decay(0.9999, t as u64 + 1);
        ema::update(&mut shadow_cpu, value, d);
        let sp = shadow.as_mut_ptr();
        h.launch(|| unsafe { upd(sp, value.as_ptr(), len as i64, d) });
    }
    close(&shadow, &shadow_cpu, 1e-6, "ema");
}

/// On a GPU: the NVRTC-compiled kernels launched for real (grid of 256-thread blocks) give what the
/// CPU maths give — BN batch statistics, the loss gradient and an RMSProp step. Without one the
/// probe names what is missing and the test stops there (the host replay above still ran).
#[test]
fn train_kernels_on_a_gpu_equal_the_cpu_maths_or_name_what_is_missing() {
    use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
    use effv2_runtime::cuda::{compile_source, probe_libraries};
    use effv2_runtime::plan::launch;
    if let Err(e) = probe_libraries() {
        assert!(e.to_string().contains("no CUDA driver found") || e.to_string().contains("NVRTC") || e.to_string().contains("cuDNN"), "{e}");
        eprintln!("skipped on this machine: {e}");
        return;
    }
    let ctx = CudaContext::new(0).unwrap();
    let stream = ctx.default_stream();
    let ptx = compile_source(&train_kernels_source(), "effv2_train_kernels.cu", vec![], None).unwrap();
    let module = ctx.load_module(ptx).unwrap();
    let f = |n: &str| module.load_function(n).unwrap();
    // The engine's launch shape (256-thread blocks): the channel-sum kernels use up to 128 registers a
    // thread, which 1024-thread blocks (`LaunchConfig::for_num_elems`) cannot get on any GPU.
    let cfg = |n: usize| LaunchConfig { grid_dim: (launch::grid(n), 1, 1), block_dim: (launch::BLOCK, 1, 1), shared_mem_bytes: 0 };

    // BN statistics of a [rows, c] tensor: chunk partials, ordered finish, f64 mean and mean square.
    let (rows, c) = (1000usize, 24usize);
    let x: Vec<f32> = randn(rows * c, 21, 2.0).iter().enumerate().map(|(i, v)| v + (i % c) as f32).collect();
    let chunks = rows.div_ceil(CHAN_CHUNK_ROWS);
    let xd = stream.clone_htod(&x).unwrap();
    // Two sums per channel (mean, mean square): partials [chunks, 2c], finished as 2c channels.
    let mut part = stream.alloc_zeros::<f64>(chunks * 2 * c).unwrap();
    let mut moments = stream.alloc_zeros::<f64>(2 * c).unwrap();
    let nul32 = stream.alloc_zeros::<f32>(1).unwrap();
    let (rows_i, c_i, c2_i, chunk_i, chunks_i, mode0, scale) = (rows as i64, c as i32, 2 * c as i32, CHAN_CHUNK_ROWS as i32, chunks as i64, 0i32, 1.0 / rows as f64);
    unsafe {
        let p = f("chan_partials");
        let mut b = stream.launch_builder(&p);
        b.arg(&xd).arg(&nul32).arg(&nul32).arg(&nul32).arg(&nul32).arg(&nul32).arg(&mut part).arg(&rows_i).arg(&c_i).arg(&chunk_i).arg(&mode0).arg(&mode0);
        b.launch(cfg(chunks * c)).unwrap();
        let fin = f("chan_finish");
        let mut b = stream.launch_builder(&fin);
        let no_f32 = 0u64;
        b.arg(&part).arg(&chunks_i).arg(&c2_i).arg(&scale).arg(&mut moments).arg(&no_f32).arg(&no_f32);
        b.launch(cfg(c)).unwrap();
    }
    let moments = stream.clone_dtoh(&moments).unwrap();
    let (mean, meansq) = moments.split_at(c);
    let gamma = vec![1.0f32; c];
    let beta = vec![0.0f32; c];
    let (mut rm, mut rv, mut y) = (vec![0.0; c], vec![1.0; c], vec![0.0; rows * c]);
    let saved = bn::forward_train(&bn::Params { gamma: &gamma, beta: &beta, eps: 1e-3 }, &x, &mut y, &mut rm, &mut rv, None).unwrap();
    close(&mean.iter().map(|&m| m as f32).collect::<Vec<_>>(), &saved.mean, 1e-6, "gpu batch mean");
    let invstd: Vec<f32> = mean.iter().zip(meansq).map(|(m, q)| (1.0 / (q - m * m + 1e-3).sqrt()) as f32).collect();
    close(&invstd, &saved.invstd, 1e-6, "gpu batch invstd");

    // Loss gradient.
    let (batch, classes) = (64usize, 10usize);
    let logits = randn(batch * classes, 22, 3.0);
    let targets = loss::smoothed_onehot(&(0..batch).map(|i| i % classes).collect::<Vec<_>>(), classes, 0.1);
    let (_, g_want) = loss::softmax_cross_entropy(&logits, &targets, classes);
    let (ld, td) = (stream.clone_htod(&logits).unwrap(), stream.clone_htod(&targets).unwrap());
    let mut gd = stream.alloc_zeros::<f32>(batch * classes).unwrap();
    let mut rowd = stream.alloc_zeros::<f64>(batch).unwrap();
    let (batch_i, classes_i) = (batch as i64, classes as i32);
    unsafe {
        let k = f("softmax_xent");
        let mut b = stream.launch_builder(&k);
        b.arg(&ld).arg(&td).arg(&mut gd).arg(&mut rowd).arg(&batch_i).arg(&classes_i);
        b.launch(cfg(batch)).unwrap();
    }
    close(&stream.clone_dtoh(&gd).unwrap(), &g_want, 1e-6, "gpu dlogits");

    // Two RMSProp steps over 100k values (many blocks, grid-stride).
    let len = 100_000usize;
    let w0 = randn(len, 23, 1.0);
    let grads = [randn(len, 24, 0.1), randn(len, 25, 0.1)];
    let opt = Optimizer::tf_rmsprop();
    let Optimizer::RmsProp { decay, momentum, eps } = opt else { unreachable!() };
    let (mut w_cpu, mut s_cpu) = (w0.clone(), opt.init_slots(len));
    let slots = opt.init_slots(len);
    let (mut wd_, mut ms, mut mom) = (stream.clone_htod(&w0).unwrap(), stream.clone_htod(&slots[0]).unwrap(), stream.clone_htod(&slots[1]).unwrap());
    let (lr, wdecay, len_i) = (0.016f32, 1e-5f32, len as i64);
    for g in &grads {
        optim::update(&opt, &mut w_cpu, g, &mut s_cpu, lr, wdecay);
        let gdev = stream.clone_htod(g).unwrap();
        unsafe {
            let k = f("rmsprop_step");
            let mut b = stream.launch_builder(&k);
            b.arg(&mut wd_).arg(&gdev).arg(&mut ms).arg(&mut mom).arg(&len_i).arg(&lr).arg(&decay).arg(&momentum).arg(&eps).arg(&wdecay);
            b.launch(LaunchConfig { grid_dim: (64, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }).unwrap();
        }
    }
    close(&stream.clone_dtoh(&wd_).unwrap(), &w_cpu, 1e-5, "gpu rmsprop w");
    println!("training kernels on the GPU equal the CPU maths (BN mean, dlogits, RMSProp)");
}
