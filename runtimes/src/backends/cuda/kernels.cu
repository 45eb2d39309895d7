// Element-wise and depthwise kernels of the CUDA backend, compiled by NVRTC at load time after
// precision.cu (the activation type T, its ld / st conversions, the activation functions). Math
// is always f32.
// Every kernel is a grid-stride loop over its output elements; `total` counts them.

#define GRID_STRIDE(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long long)blockDim.x * gridDim.x)

// float NCHW input -> T NHWC.
extern "C" __global__ void nchw_to_nhwc(const float* x, T* y, long long total, int c, int hw) {
    GRID_STRIDE(i, total) {
        long long p = i / c;  // n * hw + pixel
        int ch = (int)(i - p * c);
        long long n = p / hw;
        long long pix = p - n * hw;
        y[i] = st(x[(n * c + ch) * hw + pix]);
    }
}

// T [N, C] -> float logits.
extern "C" __global__ void to_f32(const T* x, float* y, long long total) {
    GRID_STRIDE(i, total) { y[i] = ld(x[i]); }
}

// In place: y = act(y + bias[c]).
extern "C" __global__ void bias_act(T* y, const float* bias, long long total, int c, int kind) {
    if (c % VEC == 0) {
        GRID_STRIDE(g, total / VEC) {
            int ch = mod_of(g, c / VEC) * VEC;
            Vec v = vload(y + g * VEC);
            for (int j = 0; j < VEC; ++j) v.v[j] = st(act(ld(v.v[j]) + bias[ch + j], kind));
            vstore(y + g * VEC, v);
        }
        return;
    }
    GRID_STRIDE(i, total) { y[i] = st(act(ld(y[i]) + bias[mod_of(i, c)], kind)); }
}

// y = act(x), for activations that do not follow a conv alone.
extern "C" __global__ void act_only(const T* x, T* y, long long total, int kind) {
    if (total % VEC == 0) {
        GRID_STRIDE(g, total / VEC) {
            Vec v = vload(x + g * VEC);
            for (int j = 0; j < VEC; ++j) v.v[j] = st(act(ld(v.v[j]), kind));
            vstore(y + g * VEC, v);
        }
        return;
    }
    GRID_STRIDE(i, total) { y[i] = st(act(ld(x[i]), kind)); }
}

// Depthwise k x k conv with bias and activation. Weight [kh][kw][c]; pads top/left given, the
// bottom/right ones follow from the output size (reads outside the input are zeros).
extern "C" __global__ void depthwise(const T* x, const T* w, const float* bias, T* y, long long total,
                                     int h, int wd, int c, int oh, int ow, int k, int stride, int pad_t,
                                     int pad_l, int kind) {
    if (c % VEC == 0) {
        // VEC channels of one output pixel per thread: wide loads of input and weight rows.
        GRID_STRIDE(g, total / VEC) {
            Nhwc o = nhwc_at(g, oh, ow, c / VEC);
            int ch = o.ch * VEC;
            float acc[VEC];
            for (int j = 0; j < VEC; ++j) acc[j] = bias[ch + j];
            int y0 = o.y * stride - pad_t, x0 = o.x * stride - pad_l;
            for (int ky = 0; ky < k; ++ky) {
                int iy = y0 + ky;
                if (iy < 0 || iy >= h) continue;
                const T* row = x + ((o.n * h + iy) * wd) * c + ch;
                for (int kx = 0; kx < k; ++kx) {
                    int ix = x0 + kx;
                    if (ix < 0 || ix >= wd) continue;
                    Vec xv = vload(row + (long long)ix * c);
                    Vec wv = vload(w + (ky * k + kx) * c + ch);
                    for (int j = 0; j < VEC; ++j) acc[j] += ld(xv.v[j]) * ld(wv.v[j]);
                }
            }
            Vec out;
            for (int j = 0; j < VEC; ++j) out.v[j] = st(act(acc[j], kind));
            vstore(y + g * VEC, out);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        Nhwc o = nhwc_at(i, oh, ow, c);
        int ch = o.ch, oy = o.y, ox = o.x;
        long long n = o.n;
        float acc = bias[ch];
        int y0 = oy * stride - pad_t, x0 = ox * stride - pad_l;
        for (int ky = 0; ky < k; ++ky) {
            int iy = y0 + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; ++kx) {
                int ix = x0 + kx;
                if (ix < 0 || ix >= wd) continue;
                acc += ld(x[((n * h + iy) * wd + ix) * c + ch]) * ld(w[(ky * k + kx) * c + ch]);
            }
        }
        y[i] = st(act(acc, kind));
    }
}

// Mean over H and W: one thread per (n, c); neighbouring threads read neighbouring channels.
extern "C" __global__ void pool(const T* x, T* y, long long total, int hw, int c) {
    GRID_STRIDE(i, total) {
        long long n = i / c;
        int ch = (int)(i - n * c);
        const T* p = x + n * hw * c + ch;
        float s = 0.0f;
        for (int j = 0; j < hw; ++j) s += ld(p[(long long)j * c]);
        y[i] = st(s / (float)hw);
    }
}

// y = x * gate[n, c] (the SE excitation).
extern "C" __global__ void gate_mul(const T* x, const T* gate, T* y, long long total, int hw, int c) {
    if (c % VEC == 0) {
        long long per_sample = (long long)hw * (c / VEC);
        GRID_STRIDE(g, total / VEC) {
            long long n = div_of(g, per_sample);
            int ch = mod_of(g, c / VEC) * VEC;
            Vec v = vload(x + g * VEC), s = vload(gate + n * c + ch);
            for (int j = 0; j < VEC; ++j) v.v[j] = st(ld(v.v[j]) * ld(s.v[j]));
            vstore(y + g * VEC, v);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        long long n = div_of(i, (long long)hw * c);
        y[i] = st(ld(x[i]) * ld(gate[n * c + mod_of(i, c)]));
    }
}

extern "C" __global__ void add(const T* a, const T* b, T* y, long long total) {
    if (total % VEC == 0) {
        GRID_STRIDE(g, total / VEC) {
            Vec u = vload(a + g * VEC), v = vload(b + g * VEC);
            for (int j = 0; j < VEC; ++j) u.v[j] = st(ld(u.v[j]) + ld(v.v[j]));
            vstore(y + g * VEC, u);
        }
        return;
    }
    GRID_STRIDE(i, total) { y[i] = st(ld(a[i]) + ld(b[i])); }
}

// Zero-pad NHWC x [N,h,w,c] into y [N,ph,pw,c] at offset (top, left), for convs whose padding
// cuDNN cannot express (asymmetric "same" padding).
extern "C" __global__ void pad(const T* x, T* y, long long total, int h, int wd, int c, int ph, int pw, int top,
                               int left) {
    GRID_STRIDE(i, total) {
        Nhwc p = nhwc_at(i, ph, pw, c);
        int iy = p.y - top, ix = p.x - left;
        y[i] = (iy >= 0 && iy < h && ix >= 0 && ix < wd) ? x[((p.n * h + iy) * wd + ix) * c + p.ch] : st(0.0f);
    }
}
