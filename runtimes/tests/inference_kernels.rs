//! Inference kernels against plain loops or the kernels they replace, run on the host (kernels.cu
//! compiled as C++).
//!
//! The kernels that write a tensor straight into the zero-padded copy an asymmetric-padding conv
//! reads (`nchw_to_nhwc` at an offset, `bias_act_pad`, `pad_border`) equal, to the bit, the unpadded
//! kernels followed by the `pad` pass they replace — for paddings on every side (EfficientNetV2's
//! own are all bottom / right, so its replays never move the interior), row tiles of 1 to 4 rows,
//! channel counts on and off the vector path, with and without the residual input, in f32 and bf16.
//! The depthwise conv equals a plain loop for 3x3 (compiled with k known) and 5x5 (k at run time).
#![cfg(feature = "host-replay")]

use effv2_runtime::plan::host::{inference_harness, HostKernels};
use effv2_runtime::plan::launch::{row_tile_threads, to_nhwc_args, wide_threads, Arg, ConvShape, DType, PaddedInto, POOL_SEGMENT, VEC};

/// Host buffers 16-byte aligned, as the kernels' wide loads need (the harness checks each).
type Buf = Vec<u128>;

fn aligned(bytes: &[u8]) -> Buf {
    let mut b = vec![0u128; bytes.len().div_ceil(16)];
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), b.as_mut_ptr() as *mut u8, bytes.len()) };
    b
}

/// Values in [-2, 2) as `dtype`'s bits (16-bit words for bf16), from a small LCG.
fn data(n: usize, seed: u64, dtype: DType) -> Buf {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let vals = (0..n).map(|_| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    });
    let bytes: Vec<u8> = match dtype {
        DType::Bf16 => vals.flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect(),
        _ => vals.flat_map(|v| v.to_le_bytes()).collect(),
    };
    aligned(&bytes)
}

fn f32s(n: usize, seed: u64) -> Buf {
    data(n, seed, DType::F32)
}

/// A buffer of `bytes` with every bit set (NaN in each element type): what no launch wrote shows.
fn garbage(bytes: usize) -> Buf {
    vec![u128::MAX; bytes.div_ceil(16)]
}

fn ptr(v: &[u128]) -> u64 {
    v.as_ptr() as u64
}

struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    pads: [usize; 4],
}

impl Case {
    fn pad_args(&self, x: u64, y: u64) -> (usize, Vec<Arg>) {
        let mut shape = ConvShape { n: self.n, c: self.c, h: self.h, w: self.w, out_ch: 1, oh: 1, ow: 1, kernel: 3, stride: 1, pad: [0, 0], groups: 1 };
        let mut from = x;
        shape.pad_into(self.pads, &mut from, y).expect("asymmetric padding")
    }

    fn into(&self) -> PaddedInto {
        PaddedInto::new(self.h, self.w, self.pads)
    }

    fn padded_len(&self) -> usize {
        let p = self.into();
        self.n * p.ph * p.pw * self.c
    }
}

fn run(host: &HostKernels, name: &str, threads: usize, args: &[Arg]) {
    unsafe { host.kernel(name, threads, args) };
}

fn cases() -> Vec<Case> {
    let mut out = vec![];
    for c in [16, 3, 24] {
        for pads in [[0, 0, 1, 1], [2, 1, 0, 3], [1, 2, 3, 0]] {
            out.push(Case { n: 2, c, h: 5, w: 7, pads });
        }
    }
    out
}

#[test]
fn bias_act_written_padded_equals_bias_act_then_pad() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in [DType::F32, DType::Bf16] {
        let dir = tmp.path().join(format!("{dtype:?}"));
        std::fs::create_dir_all(&dir).unwrap();
        let host = HostKernels::compile_for(&inference_harness(), &[], dtype, &dir).unwrap();
        let eb = dtype.bytes();
        for (k, case) in cases().iter().enumerate() {
            let total = case.n * case.h * case.w * case.c;
            let x = data(total, 1 + k as u64, dtype);
            let skip = data(total, 100 + k as u64, dtype);
            let bias = f32s(case.c, 200 + k as u64);
            for with_skip in [false, true] {
                for rpt in [1, 3, 4] {
                    let tail = |rpt: usize| vec![Arg::I64(total as i64), Arg::I32(case.c as i32), Arg::I32(1), Arg::I32(rpt as i32)];
                    let threads = row_tile_threads(total, case.c, rpt);
                    // The launches replaced: bias_act in place (or bias_act_add into its own output), then pad.
                    let unpadded = if with_skip { garbage(total * eb) } else { x.clone() };
                    let io = if with_skip { vec![Arg::Ptr(ptr(&x)), Arg::Ptr(ptr(&bias)), Arg::Ptr(ptr(&skip)), Arg::Ptr(ptr(&unpadded))] } else { vec![Arg::Ptr(ptr(&unpadded)), Arg::Ptr(ptr(&bias))] };
                    run(&host, if with_skip { "bias_act_add" } else { "bias_act" }, threads, &[io, tail(rpt)].concat());
                    let want = garbage(case.padded_len() * eb);
                    let (pt, pargs) = case.pad_args(ptr(&unpadded), ptr(&want));
                    run(&host, "pad", pt, &pargs);

                    let got = garbage(case.padded_len() * eb);
                    let p = case.into();
                    let s = if with_skip { ptr(&skip) } else { 0 };
                    let args = [vec![Arg::Ptr(ptr(&x)), Arg::Ptr(ptr(&bias)), Arg::Ptr(s), Arg::Ptr(ptr(&got))], tail(rpt), [case.h, case.w, p.ph, p.pw, p.top, p.left].map(|v| Arg::I32(v as i32)).to_vec()].concat();
                    run(&host, "bias_act_pad", threads, &args);
                    let (bt, bargs) = p.border(ptr(&got), case.n, case.c, case.h, case.w);
                    run(&host, "pad_border", bt, &bargs);
                    assert!(got == want, "{dtype:?} c {} pads {:?} rpt {rpt} skip {with_skip}", case.c, case.pads);
                }
            }
        }
    }
}

#[test]
fn the_input_converted_padded_equals_converted_then_padded() {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostKernels::compile_for(&inference_harness(), &[], DType::Bf16, tmp.path()).unwrap();
    let eb = DType::Bf16.bytes();
    for (k, case) in cases().iter().enumerate() {
        let total = case.n * case.h * case.w * case.c;
        let x = f32s(total, 7 + k as u64);
        let chw = [case.c, case.h, case.w];
        let nhwc = garbage(total * eb);
        run(&host, "nchw_to_nhwc", total, &to_nhwc_args(ptr(&x), ptr(&nhwc), case.n, chw, PaddedInto::none(case.h, case.w)));
        let want = garbage(case.padded_len() * eb);
        let (pt, pargs) = case.pad_args(ptr(&nhwc), ptr(&want));
        run(&host, "pad", pt, &pargs);

        let got = garbage(case.padded_len() * eb);
        run(&host, "nchw_to_nhwc", total, &to_nhwc_args(ptr(&x), ptr(&got), case.n, chw, case.into()));
        let (bt, bargs) = case.into().border(ptr(&got), case.n, case.c, case.h, case.w);
        run(&host, "pad_border", bt, &bargs);
        assert!(got == want, "c {} pads {:?}", case.c, case.pads);
    }
    // One channel, no padding: a plain narrowing of a flat array (the training engine's use).
    let x = f32s(1000, 3);
    let got = garbage(1000 * eb);
    run(&host, "nchw_to_nhwc", 1000, &to_nhwc_args(ptr(&x), ptr(&got), 1000, [1, 1, 1], PaddedInto::none(1, 1)));
    let x: Vec<f32> = (0..1000).map(|i| unsafe { *(x.as_ptr() as *const f32).add(i) }).collect();
    let mut want: Vec<u8> = x.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
    want.resize(got.len() * 16, 0xff);
    assert!(got == aligned(&want));
}

fn as_f32(b: &Buf, n: usize) -> Vec<f32> {
    (0..n).map(|i| unsafe { *(b.as_ptr() as *const f32).add(i) }).collect()
}

#[test]
fn the_depthwise_conv_equals_a_plain_loop_for_3x3_and_5x5() {
    let tmp = tempfile::tempdir().unwrap();
    let host = HostKernels::compile_for(&inference_harness(), &[], DType::F32, tmp.path()).unwrap();
    let silu = |v: f32| v / (1.0 + (-v).exp());
    let (n, h, w) = (2usize, 9usize, 11usize);
    for (k, stride) in [(3usize, 1usize), (3, 2), (5, 1), (5, 2)] {
        for c in [16usize, 19] {
            let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
            // TF "same": the extra row / column of padding at the bottom / right.
            let pad = |i: usize, o: usize| ((o - 1) * stride + k).saturating_sub(i) / 2;
            let (pt, pl) = (pad(h, oh), pad(w, ow));
            let (xb, wb, bb) = (f32s(n * h * w * c, 1), f32s(k * k * c, 2), f32s(c, 3));
            let (x, wt, bias) = (as_f32(&xb, n * h * w * c), as_f32(&wb, k * k * c), as_f32(&bb, c));
            let mut want = vec![0f32; n * oh * ow * c];
            for s in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut acc = bias[ch];
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = ((oy * stride + ky) as isize - pt as isize, (ox * stride + kx) as isize - pl as isize);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        acc += x[((s * h + iy as usize) * w + ix as usize) * c + ch] * wt[(ky * k + kx) * c + ch];
                                    }
                                }
                            }
                            want[((s * oh + oy) * ow + ox) * c + ch] = silu(acc);
                        }
                    }
                }
            }
            let total = n * oh * ow * c;
            let geo: Vec<Arg> = [h, w, c, oh, ow, k, stride, pt, pl, 1].map(|v| Arg::I32(v as i32)).to_vec();
            let y = garbage(total * 4);
            let args = [vec![Arg::Ptr(ptr(&xb)), Arg::Ptr(ptr(&wb)), Arg::Ptr(ptr(&bb)), Arg::Ptr(ptr(&y)), Arg::I64(total as i64)], geo.clone()].concat();
            run(&host, "depthwise", wide_threads(total, c), &args);
            let got = as_f32(&y, total);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, |m, d| if d > m || d.is_nan() { d } else { m });
            assert!(err < 1e-5, "k{k} s{stride} c{c}: {err}");
            if c % VEC != 0 {
                continue;
            }
            // The SE-pooled form writes the same outputs to the bit and their per-sample means.
            let segs = ow.div_ceil(POOL_SEGMENT);
            let threads = n * oh * segs * c / VEC;
            let (yp, part, pooled) = (garbage(total * 4), garbage(n * oh * segs * c * 4), garbage(n * c * 4));
            let args = [vec![Arg::Ptr(ptr(&xb)), Arg::Ptr(ptr(&wb)), Arg::Ptr(ptr(&bb)), Arg::Ptr(ptr(&yp)), Arg::Ptr(ptr(&part)), Arg::I64(threads as i64)], geo, vec![Arg::I32(POOL_SEGMENT as i32)]].concat();
            run(&host, "depthwise_pool", threads, &args);
            assert!(as_f32(&yp, total) == got, "k{k} s{stride}: pooled conv outputs differ");
            let rows = [vec![Arg::Ptr(ptr(&part)), Arg::Ptr(ptr(&pooled)), Arg::I64((n * c) as i64)], [oh * segs, oh * ow, c].map(|v| Arg::I32(v as i32)).to_vec()].concat();
            run(&host, "pool_rows", n * c, &rows);
            for (i, p) in as_f32(&pooled, n * c).into_iter().enumerate() {
                let (s, ch) = (i / c, i % c);
                let mean = (0..oh * ow).map(|q| want[(s * oh * ow + q) * c + ch]).sum::<f32>() / (oh * ow) as f32;
                assert!((p - mean).abs() < 1e-5, "k{k} s{stride}: pool {p} vs {mean}");
            }
        }
    }
}
