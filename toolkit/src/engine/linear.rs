//! Linear layers: `y = x·Wᵀ + b` is a 1×1 conv on a 1×1 map, so they run on the pointwise GEMM.

use super::elementwise::Epilogue;
use super::pointwise::Pointwise;
use crate::graph::Linear;

/// Kernel and epilogue for `l` given its `[out, in]` weight and `[out]` bias.
pub(super) fn pack(l: &Linear, weight: &[f32], bias: &[f32]) -> (Pointwise, Epilogue) {
    let kernel = Pointwise::pack(l.in_features, l.out_features, weight);
    (kernel, Epilogue { bias: bias.to_vec(), act: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_is_x_times_w_transposed_plus_b() {
        let l = Linear { in_features: 3, out_features: 2, weight: 0, bias: 1 };
        let (k, epi) = pack(&l, &[1.0, 2.0, 3.0, -1.0, 0.0, 1.0], &[0.5, -0.5]);
        let x = [1.0, 1.0, 1.0, 2.0, 0.0, 1.0]; // batch 2
        let mut y = [0.0; 4];
        k.run(&x, 2, &mut y, &epi, None);
        assert_eq!(y, [6.5, -0.5, 5.5, -1.5]);
    }
}
