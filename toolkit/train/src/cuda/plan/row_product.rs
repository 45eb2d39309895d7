use effv2_edge::graph::Conv;
use effv2_runtime::plan::launch::BlasGemm;

/// `y[rows, out] = x[rows, inp] · w[out, inp]ᵀ` over row-major values: the classifier (a row per
/// sample), and a 1x1 conv with stride 1 and no padding on NHWC values (a row per pixel), which
/// is a plain matrix product: cuBLAS runs it and its two gradients (cuDNN's conv kernels, and its
/// deterministic backward-filter algorithms above all, were several times slower on these).
/// The products as column-major GEMMs, `w` being `a` or the output.
#[derive(Clone, Copy, Debug)]
pub(super) struct RowProduct {
    pub(super) rows: usize,
    pub(super) inp: usize,
    pub(super) out: usize,
}

impl RowProduct {
    pub(super) fn of_conv(c: &Conv, rows: usize) -> Option<RowProduct> {
        let p = c.pads;
        (c.is_pointwise() && [p.top, p.left, p.bottom, p.right] == [0; 4]).then_some(RowProduct { rows, inp: c.in_ch, out: c.out_ch })
    }

    /// y (a = w, b = x).
    pub(super) fn forward(self) -> BlasGemm {
        BlasGemm::for_linear(self.rows, self.out, self.inp)
    }

    /// dw[out, inp] = dyᵀ · x, column-major dwᵀ = xᵀ · dy (a = x, b = dy), in f32 whatever the
    /// values' type: straight into the parameter gradients.
    pub(super) fn weight_grad(self) -> BlasGemm {
        BlasGemm { trans_a: false, trans_b: true, m: self.inp, n: self.out, k: self.rows, lda: self.inp, ldb: self.out, ldc: self.inp, c_f32: true, accumulate: false }
    }

    /// dx[rows, inp] = dy · w, column-major dxᵀ = wᵀ · dyᵀ (a = w, b = dy); added to dx where
    /// `accumulate` (a second gradient contribution).
    pub(super) fn input_grad(self, accumulate: bool) -> BlasGemm {
        BlasGemm { trans_a: false, trans_b: false, m: self.inp, n: self.rows, k: self.out, lda: self.inp, ldb: self.out, ldc: self.inp, c_f32: false, accumulate }
    }
}
