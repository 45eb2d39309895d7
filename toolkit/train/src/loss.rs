//! Softmax cross-entropy against soft targets (label smoothing, mixup and cutmix all end up as
//! a target distribution), its gradient w.r.t. the logits, and top-k accuracy.

/// One-hot targets with TF's label smoothing: `(1−ε)·onehot + ε/K`.
pub fn smoothed_onehot(labels: &[usize], classes: usize, smoothing: f32) -> Vec<f32> {
    let mut t = vec![smoothing / classes as f32; labels.len() * classes];
    for (row, &l) in t.chunks_exact_mut(classes).zip(labels) {
        row[l.min(classes - 1)] += 1.0 - smoothing;
    }
    t
}

/// Mean over the batch of `−Σ t·log softmax(z)`, and `dL/dz = (softmax(z) − t)/N`. Computed in
/// f64 with the max subtracted, so large logits cannot overflow.
pub fn softmax_cross_entropy(logits: &[f32], targets: &[f32], classes: usize) -> (f32, Vec<f32>) {
    let n = logits.len() / classes;
    let mut grad = vec![0.0; logits.len()];
    let mut total = 0f64;
    for ((z, t), g) in logits.chunks_exact(classes).zip(targets.chunks_exact(classes)).zip(grad.chunks_exact_mut(classes)) {
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        for j in 0..classes {
            let logp = z[j] as f64 - lse;
            total -= t[j] as f64 * logp;
            g[j] = ((logp.exp() - t[j] as f64) / n as f64) as f32;
        }
    }
    ((total / n.max(1) as f64) as f32, grad)
}

/// How many rows have their label among the `k` largest logits (ties count against).
pub fn topk_correct(logits: &[f32], labels: &[usize], classes: usize, k: usize) -> usize {
    logits
        .chunks_exact(classes)
        .zip(labels)
        .filter(|(z, &l)| l < classes && z.iter().filter(|&&v| v > z[l] || v.is_nan()).count() < k)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_gradient_by_hand() {
        // z = [0, ln 3]: softmax = [1/4, 3/4]; target class 1 smoothed by 0.2 → t = [0.1, 0.9].
        let t = smoothed_onehot(&[1], 2, 0.2);
        assert!((t[0] - 0.1).abs() < 1e-7 && (t[1] - 0.9).abs() < 1e-6);
        let (l, g) = softmax_cross_entropy(&[0.0, 3f32.ln()], &t, 2);
        let want = -(0.1 * 0.25f64.ln() + 0.9 * 0.75f64.ln());
        assert!((l as f64 - want).abs() < 1e-6);
        assert!((g[0] - 0.15).abs() < 1e-6 && (g[1] + 0.15).abs() < 1e-6);
        // Huge logits stay finite; the batch mean divides the gradient.
        let (l, g) = softmax_cross_entropy(&[1000.0, 0.0, 0.0, 1000.0], &[1.0, 0.0, 0.0, 1.0], 2);
        assert!(l.abs() < 1e-6 && g.iter().all(|v| v.abs() < 1e-6));
    }

    #[test]
    fn finite_difference_of_the_loss() {
        let z = [0.3f32, -1.2, 2.0, 0.1, 0.5, -0.7];
        let t = [0.2f32, 0.5, 0.3, 0.0, 0.0, 1.0];
        let (_, g) = softmax_cross_entropy(&z, &t, 3);
        for i in 0..z.len() {
            let (mut a, mut b) = (z, z);
            a[i] += 1e-3;
            b[i] -= 1e-3;
            let fd = (softmax_cross_entropy(&a, &t, 3).0 - softmax_cross_entropy(&b, &t, 3).0) / 2e-3;
            assert!((fd - g[i]).abs() < 2e-3, "{i}: {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn topk() {
        let z = [0.1, 0.5, 0.4, 0.9, 0.0, 0.2];
        assert_eq!(topk_correct(&z, &[1, 2], 3, 1), 1);
        assert_eq!(topk_correct(&z, &[2, 2], 3, 2), 2);
    }
}
