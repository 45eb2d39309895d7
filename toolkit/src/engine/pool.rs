//! Global average pooling over NHWC.

use rayon::prelude::*;

/// `[batch, pixels, C] -> [batch, C]`: the mean of each channel, summed in f64 so large maps
/// (SE on early stages) lose no precision.
pub(super) fn global_avg_pool(x: &[f32], batch: usize, ch: usize, out: &mut [f32]) {
    let per_sample = x.len() / batch.max(1);
    let pixels = (per_sample / ch.max(1)).max(1);
    out.par_chunks_mut(ch).zip(x.par_chunks(per_sample.max(1))).for_each(|(o, xs)| {
        let mut acc = vec![0.0f64; ch];
        for px in xs.chunks_exact(ch) {
            acc.iter_mut().zip(px).for_each(|(a, v)| *a += *v as f64);
        }
        o.iter_mut().zip(&acc).for_each(|(o, a)| *o = (*a / pixels as f64) as f32);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_per_sample_and_channel() {
        // batch 2, 2 pixels, 3 channels
        let x = [1.0, 2.0, 3.0, 3.0, 4.0, 5.0, 0.0, 0.0, 0.0, 10.0, 20.0, 30.0];
        let mut out = [0.0; 6];
        super::global_avg_pool(&x, 2, 3, &mut out);
        assert_eq!(out, [2.0, 3.0, 4.0, 5.0, 10.0, 15.0]);
    }
}
