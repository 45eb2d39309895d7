//! Weight layouts the GPU kernels read, repacked from the plan's OIHW at load time.

/// OIHW -> OHWI (cuDNN's NHWC filter layout, "KRSC").
pub fn oihw_to_ohwi(w: &[f32], o: usize, i: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for oc in 0..o {
        for ic in 0..i {
            for y in 0..k {
                for x in 0..k {
                    out[((oc * k + y) * k + x) * i + ic] = w[((oc * i + ic) * k + y) * k + x];
                }
            }
        }
    }
    out
}

/// Depthwise `[C, 1, k, k]` -> `[k][k][C]` (the depthwise kernel's layout: a thread per channel
/// reads neighbouring addresses).
pub fn depthwise_to_hwc(w: &[f32], c: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for ch in 0..c {
        for t in 0..k * k {
            out[t * c + ch] = w[ch * k * k + t];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repacks_put_each_weight_where_the_kernels_read_it() {
        let (o, i, k) = (2, 3, 2);
        let w: Vec<f32> = (0..o * i * k * k).map(|v| v as f32).collect();
        let r = oihw_to_ohwi(&w, o, i, k);
        // weight [1, 2, 0, 1] (o, i, y, x) sits at ((1*k+0)*k+1)*i+2.
        assert_eq!(r[(k * k + 1) * i + 2], w[(i + 2) * k * k + 1]);
        let mut sorted = r.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, w);
        let d = depthwise_to_hwc(&w[..3 * 4], 3, 2);
        assert_eq!(d[3 * 3 + 1], w[4 + 3]);
    }
}
