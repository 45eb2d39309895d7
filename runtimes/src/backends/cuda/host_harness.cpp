// For tests: the CUDA engine's kernels (kernels.cu, path in KERNELS_CU; f32, or EFFV2_HALF / EFFV2_BF16) compiled as C++
// for the host (see host_shim.h): each kernel runs over its whole grid, one thread at a time. Entry
// points host_<kernel> take CUDA's kernel parameter array (pointers to each argument), exactly what
// the engine hands cuLaunchKernel. Plus plain loops standing in for the cuDNN conv and the cuBLAS
// gemm the engine calls, so a launch list replays entirely on the host.
#include "host_shim.h"
#include KERNELS_CU

#define I(i) P(i, int)
#define L(i) P(i, long long)
#define CT(i) P(i, const T*)
#define MT(i) P(i, T*)

#include <algorithm>
#include <vector>

// Every (output element, filter element, input element) triple a conv multiplies, as flat NHWC /
// OHWI indices: f(y_index, w_index, x_index). Out-of-image taps (padding) are skipped.
template <class F>
static void conv_walk(int n, int c, int h, int w, int out_ch, int oh, int ow, int k, int stride, int pad_t, int pad_l,
                      int groups, F f) {
    int cin = c / groups, per_group = out_ch / groups;
    for (int b = 0; b < n; ++b)
        for (int oy = 0; oy < oh; ++oy)
            for (int ox = 0; ox < ow; ++ox)
                for (int o = 0; o < out_ch; ++o) {
                    long long yi = ((long long)(b * oh + oy) * ow + ox) * out_ch + o;
                    int g0 = o / per_group * cin;
                    for (int ky = 0; ky < k; ++ky) {
                        int iy = oy * stride + ky - pad_t;
                        if (iy < 0 || iy >= h) continue;
                        for (int kx = 0; kx < k; ++kx) {
                            int ix = ox * stride + kx - pad_l;
                            if (ix < 0 || ix >= w) continue;
                            long long xi = ((long long)(b * h + iy) * w + ix) * c + g0;
                            long long wi = ((long long)(o * k + ky) * k + kx) * cin;
                            for (int i = 0; i < cin; ++i) f(yi, wi + i, xi + i);
                        }
                    }
                }
}

extern "C" {
void host_nchw_to_nhwc(unsigned g, unsigned b, void** p) {
    LOOP(nchw_to_nhwc(P(0, const float*), MT(1), L(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9)))
}
void host_to_f32(unsigned g, unsigned b, void** p) { LOOP(to_f32(CT(0), P(1, float*), L(2))) }
void host_bias_act(unsigned g, unsigned b, void** p) { LOOP(bias_act(MT(0), P(1, const float*), L(2), I(3), I(4), I(5))) }
void host_bias_act_add(unsigned g, unsigned b, void** p) {
    LOOP(bias_act_add(CT(0), P(1, const float*), CT(2), MT(3), L(4), I(5), I(6), I(7)))
}
void host_bias_act_pad(unsigned g, unsigned b, void** p) {
    LOOP(bias_act_pad(CT(0), P(1, const float*), CT(2), MT(3), L(4), I(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12), I(13)))
}
void host_pad_border(unsigned g, unsigned b, void** p) { LOOP(pad_border(MT(0), L(1), I(2), I(3), I(4), I(5), I(6), I(7), I(8))) }
void host_act_only(unsigned g, unsigned b, void** p) { LOOP(act_only(CT(0), MT(1), L(2), I(3))) }
void host_depthwise(unsigned g, unsigned b, void** p) {
    LOOP(depthwise(CT(0), CT(1), P(2, const float*), MT(3), L(4), I(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12), I(13), I(14)))
}
void host_depthwise_pool(unsigned g, unsigned b, void** p) {
    LOOP(depthwise_pool(CT(0), CT(1), P(2, const float*), MT(3), P(4, float*), L(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12), I(13), I(14), I(15), I(16)))
}
void host_pool(unsigned g, unsigned b, void** p) { LOOP(pool(CT(0), MT(1), L(2), I(3), I(4))) }
void host_pool_rows(unsigned g, unsigned b, void** p) { LOOP(pool_rows(P(0, const float*), MT(1), L(2), I(3), I(4), I(5))) }
void host_gate_mul(unsigned g, unsigned b, void** p) { LOOP(gate_mul(CT(0), CT(1), MT(2), L(3), I(4), I(5))) }
void host_add(unsigned g, unsigned b, void** p) { LOOP(add(CT(0), CT(1), MT(2), L(3))) }
void host_pad(unsigned g, unsigned b, void** p) { LOOP(pad(CT(0), MT(1), L(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9))) }

// cuDNN's forward conv as the engine sets it up — NHWC x [n, h, w, c], OHWI filter, symmetric
// padding (pad_t, pad_l), groups, no bias, y [n, oh, ow, out_ch] — and its backward data / filter.
#define CONV_ARGS int n, int c, int h, int w, int out_ch, int oh, int ow, int k, int stride, int pad_t, int pad_l, int groups
#define CONV_PASS n, c, h, w, out_ch, oh, ow, k, stride, pad_t, pad_l, groups
// Operands of the build's T, products summed in f32 (as cuDNN's and cuBLAS's f32 accumulation),
// the result rounded to T once.
void host_conv_nhwc(CONV_ARGS, const T* x, const T* wt, T* y) {
    std::vector<float> acc((long long)n * oh * ow * out_ch, 0.0f);
    conv_walk(CONV_PASS, [&](long long yi, long long wi, long long xi) { acc[yi] += ld(x[xi]) * ld(wt[wi]); });
    for (size_t i = 0; i < acc.size(); ++i) y[i] = st(acc[i]);
}

static void conv_bwd_data(CONV_ARGS, const T* dy, const T* wt, T* dx, bool add) {
    std::vector<float> acc((long long)n * h * w * c, 0.0f);
    conv_walk(CONV_PASS, [&](long long yi, long long wi, long long xi) { acc[xi] += ld(dy[yi]) * ld(wt[wi]); });
    for (size_t i = 0; i < acc.size(); ++i) dx[i] = st(add ? ld(dx[i]) + acc[i] : acc[i]);
}

void host_conv_bwd_data_nhwc(CONV_ARGS, const T* dy, const T* wt, T* dx) { conv_bwd_data(CONV_PASS, dy, wt, dx, false); }

// β = 1: dx += the input gradient.
void host_conv_bwd_data_add_nhwc(CONV_ARGS, const T* dy, const T* wt, T* dx) { conv_bwd_data(CONV_PASS, dy, wt, dx, true); }

void host_conv_bwd_filter_nhwc(CONV_ARGS, const T* x, const T* dy, T* dw) {
    std::vector<float> acc((long long)out_ch * k * k * (c / groups), 0.0f);
    conv_walk(CONV_PASS, [&](long long yi, long long wi, long long xi) { acc[wi] += ld(dy[yi]) * ld(x[xi]); });
    for (size_t i = 0; i < acc.size(); ++i) dw[i] = st(acc[i]);
}

// cuBLAS's gemm as BLAS defines it: column-major C = op(A) op(B), leading dimensions as given;
// C of type T, or f32 where c_f32 is set (cuBLAS's mixed-type gemm); C += op(A) op(B) (β = 1)
// where accumulate is.
void host_blas_gemm(int trans_a, int trans_b, int m, int n, int k, int lda, int ldb, int ldc, int c_f32,
                    int accumulate, const T* a, const T* b, void* c) {
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (int p = 0; p < k; ++p) {
                float av = ld(trans_a ? a[p + (long long)i * lda] : a[i + (long long)p * lda]);
                float bv = ld(trans_b ? b[j + (long long)p * ldb] : b[p + (long long)j * ldb]);
                acc += av * bv;
            }
            long long at = i + (long long)j * ldc;
            if (c_f32)
                ((float*)c)[at] = accumulate ? ((float*)c)[at] + acc : acc;
            else
                ((T*)c)[at] = st(accumulate ? ld(((T*)c)[at]) + acc : acc);
        }
}
}
