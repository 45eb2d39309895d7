//! What our AVX-512 kernels share: the CPU check, lane masks, SiLU, and how many threads the
//! caller's rayon pool offers.

use std::arch::x86_64::*;

/// Whether this CPU runs our AVX-512 kernels.
pub fn supported() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Lanes `[lo, hi)` of a 16-lane mask.
pub fn lanes(lo: isize, hi: isize) -> __mmask16 {
    let (lo, hi) = (lo.clamp(0, 16), hi.clamp(0, 16));
    if hi <= lo {
        0
    } else {
        (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
    }
}

/// `e^x`, |rel err| ≈ 1e-7 over the range SiLU needs (inputs clamped to where f32 `e^x` is finite).
#[target_feature(enable = "avx512f")]
unsafe fn exp512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0)), _mm512_set1_ps(-87.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    // r = x − n·ln2 in two steps (ln2 split so n·ln2_hi is exact).
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// `x·σ(x)` = `x / (1 + e^−x)`, the division as a 14-bit reciprocal and one Newton step (a
/// full-width divide costs more than the rest of the epilogue).
#[target_feature(enable = "avx512f")]
pub unsafe fn silu512(x: __m512) -> __m512 {
    let d = _mm512_add_ps(_mm512_set1_ps(1.0), unsafe { exp512(_mm512_sub_ps(_mm512_setzero_ps(), x)) });
    let r = _mm512_rcp14_ps(d);
    let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0)));
    _mm512_mul_ps(x, r)
}

/// The first `n` lanes of a 16-lane mask (all of them for `n` ≥ 16).
pub fn first_lanes(n: usize) -> __mmask16 {
    lanes(0, n.min(16) as isize)
}

/// Whether one of our rewrites is on: AVX-512 here and not turned off with `var=0` (each
/// rewrite has its variable, for A/B measurements).
pub fn switched_on(var: &str) -> bool {
    supported() && std::env::var(var).map_or(true, |v| v != "0")
}

/// Threads of the rayon pool the caller runs in (1 outside a pool): a kernel splits its work
/// over them.
pub fn pool_threads() -> usize {
    if rayon::current_thread_index().is_some() { rayon::current_num_threads() } else { 1 }
}

/// Tasks `0..tasks` over the rayon pool the caller runs in, or one after another on the calling
/// thread outside a pool of several.
pub fn spread(tasks: usize, task: impl Fn(usize) + Send + Sync) {
    if pool_threads() > 1 {
        use rayon::prelude::*;
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// A buffer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
pub struct Shared<T>(pub *mut T);
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// (A method, so closures capture the wrapper rather than its raw pointer.)
    pub fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// Test helpers of the kernels' tests.
#[cfg(test)]
pub mod testing {
    pub use super::supported;

    /// max |a − b| / max |b|; NaN where any difference is.
    pub fn rel(a: &[f32], b: &[f32]) -> f32 {
        let m = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, |m: f32, d| if d > m || d.is_nan() { d } else { m }) / m
    }

    /// Uniform values in [-1, 1) from a 64-bit LCG.
    pub fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// `f` on the calling thread, then inside a pool of `threads`: the two paths a kernel splits on.
    pub fn both_ways<T: Send>(threads: usize, f: impl Fn() -> T + Sync) -> [T; 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a test pool");
        [f(), pool.install(&f)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_over_the_silu_range() {
        if !supported() {
            return;
        }
        let xs: Vec<f32> = (0..16 * 64).map(|i| -80.0 + i as f32 * 0.157).collect();
        for c in xs.chunks(16) {
            let mut out = [0f32; 16];
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp512(_mm512_loadu_ps(c.as_ptr()))) };
            for (x, e) in c.iter().zip(out) {
                let want = (*x as f64).exp();
                assert!(((e as f64 - want) / want).abs() < 3e-7, "exp({x}) = {e}, want {want}");
            }
        }
    }
}
