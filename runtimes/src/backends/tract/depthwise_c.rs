//! x86_64 kernels for tract's channel-inner depthwise slot (`Func::DepthwiseC`).
//!
//! tract 0.23 ships this kernel for aarch64 and wasm only. Without one, tract keeps depthwise
//! convs NCHW and runs them W-inner, which vectorises badly on EfficientNet's 14x14 and 7x7
//! planes (b0@224: 5.4 ms of a 30 ms run, 2-6 GFLOP/s). With one registered, tract's own
//! `ChangeAxes` pass moves the depthwise stages channel-last and calls it (1.1 ms). The kernels
//! are filed in tract-linalg's routine registry through `inventory`, the way tract's own
//! architecture trees file theirs; tract picks the best one the CPU runs.

use tract_linalg::isa::{Arch, Isa, IsaReq};
use tract_linalg::routines::{Func, Routine, RoutineFactory};

/// The channel-inner depthwise kernel tract runs on this machine, if any (ours or its own).
pub fn active_kernel() -> Option<&'static str> {
    let run = tract_linalg::routines::depthwise_c_f32()?;
    tract_linalg::routines::declared().find_map(|r| match r.factory {
        RoutineFactory::DepthwiseCF32 { name, run: f } if f as usize == run as usize => Some(name),
        _ => None,
    })
}

// Both kernels compute, for every output position `i` and channel `c`, `bias[c]` plus every
// `kernel[tap_indices[t] * k_stride + c] * input[i * in_stride + offsets[t] + c]` (tract's
// `DepthwiseCF32` contract, see `tract_linalg::routines`). Safety: as that contract, on a CPU with
// the kernel's features, which the registry guarantees by offering each only to such CPUs.

/// 64 channels per pass in four independent accumulators (FMA latency hidden), then 16-lane
/// masked passes for the rest: no scalar tail, masked lanes are never read or written.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_avx512(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    use std::arch::x86_64::*;
    unsafe {
        for i in 0..len {
            let x = input.offset(i as isize * in_stride);
            let y = output.offset(i as isize * out_stride);
            let mut c = 0usize;
            while c + 64 <= channels {
                let mut a = [
                    _mm512_loadu_ps(bias.add(c)),
                    _mm512_loadu_ps(bias.add(c + 16)),
                    _mm512_loadu_ps(bias.add(c + 32)),
                    _mm512_loadu_ps(bias.add(c + 48)),
                ];
                for (&k, &off) in tap_indices.iter().zip(offsets) {
                    let kt = kernel.add(k * k_stride + c);
                    let xt = x.offset(off).add(c);
                    for (j, acc) in a.iter_mut().enumerate() {
                        *acc = _mm512_fmadd_ps(_mm512_loadu_ps(xt.add(16 * j)), _mm512_loadu_ps(kt.add(16 * j)), *acc);
                    }
                }
                for (j, acc) in a.iter().enumerate() {
                    _mm512_storeu_ps(y.add(c + 16 * j), *acc);
                }
                c += 64;
            }
            while c < channels {
                let m: __mmask16 = if channels - c >= 16 { u16::MAX } else { ((1u32 << (channels - c)) - 1) as u16 };
                let mut acc = _mm512_maskz_loadu_ps(m, bias.add(c));
                for (&k, &off) in tap_indices.iter().zip(offsets) {
                    let xv = _mm512_maskz_loadu_ps(m, x.offset(off).add(c));
                    let kv = _mm512_maskz_loadu_ps(m, kernel.add(k * k_stride + c));
                    acc = _mm512_fmadd_ps(xv, kv, acc);
                }
                _mm512_mask_storeu_ps(y.add(c), m, acc);
                c += 16;
            }
        }
    }
}

/// 32 channels per pass in four 8-lane accumulators, 8 at a time after that, a scalar tail.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32_fma(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    use std::arch::x86_64::*;
    unsafe {
        for i in 0..len {
            let x = input.offset(i as isize * in_stride);
            let y = output.offset(i as isize * out_stride);
            let mut c = 0usize;
            while c + 32 <= channels {
                let mut a = [
                    _mm256_loadu_ps(bias.add(c)),
                    _mm256_loadu_ps(bias.add(c + 8)),
                    _mm256_loadu_ps(bias.add(c + 16)),
                    _mm256_loadu_ps(bias.add(c + 24)),
                ];
                for (&k, &off) in tap_indices.iter().zip(offsets) {
                    let kt = kernel.add(k * k_stride + c);
                    let xt = x.offset(off).add(c);
                    for (j, acc) in a.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(xt.add(8 * j)), _mm256_loadu_ps(kt.add(8 * j)), *acc);
                    }
                }
                for (j, acc) in a.iter().enumerate() {
                    _mm256_storeu_ps(y.add(c + 8 * j), *acc);
                }
                c += 32;
            }
            while c + 8 <= channels {
                let mut acc = _mm256_loadu_ps(bias.add(c));
                for (&k, &off) in tap_indices.iter().zip(offsets) {
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(x.offset(off).add(c)), _mm256_loadu_ps(kernel.add(k * k_stride + c)), acc);
                }
                _mm256_storeu_ps(y.add(c), acc);
                c += 8;
            }
            while c < channels {
                let mut sum = *bias.add(c);
                for (&k, &off) in tap_indices.iter().zip(offsets) {
                    sum = (*x.offset(off).add(c)).mul_add(*kernel.add(k * k_stride + c), sum);
                }
                *y.add(c) = sum;
                c += 1;
            }
        }
    }
}

inventory::submit! {
    Routine {
        func: Func::DepthwiseC,
        arch: Some(Arch::X86_64),
        isa: IsaReq::ANY.needing(&[Isa::X86_64Avx512f]),
        boost: 0,
        round_trip: false,
        factory: RoutineFactory::DepthwiseCF32 { name: "effv2_x86_64_avx512_depthwise_c_f32", run: depthwise_c_f32_avx512 },
    }
}

inventory::submit! {
    Routine {
        func: Func::DepthwiseC,
        arch: Some(Arch::X86_64),
        isa: IsaReq::ANY.needing(&[Isa::X86_64Avx2, Isa::X86_64Fma]),
        boost: 0,
        round_trip: false,
        factory: RoutineFactory::DepthwiseCF32 { name: "effv2_x86_64_fma_depthwise_c_f32", run: depthwise_c_f32_fma },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Kernel = unsafe fn(*const f32, *mut f32, *const f32, &[usize], &[isize], *const f32, usize, usize, usize, isize, isize);

    /// The contract, written out: a scalar walk in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(x: &[f32], k: &[f32], b: &[f32], taps: &[usize], offs: &[isize], ch: usize, ks: usize, len: usize, is: isize, os: isize, out: &mut [f32]) {
        for i in 0..len {
            for c in 0..ch {
                let mut s = b[c] as f64;
                for (&t, &o) in taps.iter().zip(offs) {
                    s += k[t * ks + c] as f64 * x[(i as isize * is + o) as usize + c] as f64;
                }
                out[(i as isize * os) as usize + c] = s as f32;
            }
        }
    }

    fn check(kernel: Kernel, ch: usize) {
        // A 3x3 tap set over a (len + 2) x (len + 2) channel-last image, as tract calls it for
        // one output row: in_stride = one pixel, offsets = tap positions in elements.
        let (len, ks) = (5usize, ch + 3);
        let row = (len + 2) * ch;
        let taps: Vec<usize> = (0..9).collect();
        let offs: Vec<isize> = (0..9).map(|t| ((t / 3) * row + (t % 3) * ch) as isize).collect();
        let x: Vec<f32> = (0..3 * row + 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let k: Vec<f32> = (0..9 * ks).map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0).collect();
        let b: Vec<f32> = (0..ch).map(|i| i as f32 * 0.25 - 1.0).collect();
        let sentinel = 1234.5f32;
        let (mut got, mut want) = (vec![sentinel; len * (ch + 1)], vec![sentinel; len * (ch + 1)]);
        let os = (ch + 1) as isize; // one spare value per position: must stay untouched
        reference(&x, &k, &b, &taps, &offs, ch, ks, len, ch as isize, os, &mut want);
        unsafe { kernel(x.as_ptr(), got.as_mut_ptr(), k.as_ptr(), &taps, &offs, b.as_ptr(), ch, ks, len, ch as isize, os) };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-4 * w.abs().max(1.0), "channels {ch}, element {i}: {g} vs {w}");
        }
    }

    const CHANNELS: [usize; 9] = [1, 7, 8, 15, 16, 33, 64, 100, 1152];

    #[test]
    fn avx512_kernel_matches_the_contract_for_every_channel_tail() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512F on this CPU");
            return;
        }
        for ch in CHANNELS {
            check(depthwise_c_f32_avx512, ch);
        }
    }

    #[test]
    fn fma_kernel_matches_the_contract_for_every_channel_tail() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            eprintln!("skipped: no AVX2+FMA on this CPU");
            return;
        }
        for ch in CHANNELS {
            check(depthwise_c_f32_fma, ch);
        }
    }

    #[test]
    fn tract_runs_one_of_ours_where_the_cpu_allows() {
        let want = if std::arch::is_x86_feature_detected!("avx512f") {
            Some("effv2_x86_64_avx512_depthwise_c_f32")
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            Some("effv2_x86_64_fma_depthwise_c_f32")
        } else {
            None
        };
        assert_eq!(active_kernel(), want);
    }
}
