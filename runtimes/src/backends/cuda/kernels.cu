// Element-wise and depthwise kernels of the CUDA backend, compiled by NVRTC at load time after
// precision.cu (the activation type T, its ld / st conversions, the activation functions). Math
// is always f32.
// Every kernel is a grid-stride loop over its output elements; `total` counts them.

// float NCHW input [N, c, h, w] -> T NHWC, written into a [N, ph, pw, c] tensor at offset (top,
// left): the conv reading it pads asymmetrically (see pad_border), or ph = h, pw = w, no offset.
// 32-bit index divisions while they fit: the 64-bit ones were most of this kernel's instructions.
extern "C" __global__ void nchw_to_nhwc(const float* x, T* y, long long total, int c, int h, int w, int ph, int pw,
                                        int top, int left) {
    int hw = h * w;
    if (c == 1 && ph == h && pw == w) {
        // One channel, no padding: the same layout, a plain conversion (also how the training
        // engine narrows f32 arrays).
        GRID_STRIDE(i, total) { y[i] = st(x[i]); }
        return;
    }
    GRID_STRIDE(i, total) {
        long long p = div_of(i, c);  // n * hw + pixel
        int ch = (int)(i - p * c);
        long long n = div_of(p, hw);
        int pix = (int)(p - n * hw);
        // Unpadded, element i is where it goes; padded, its row and column are divided out.
        long long at = i;
        if (ph != h || pw != w) {
            int iy = pix / w, ix = pix - iy * w;
            at = ((n * ph + iy + top) * pw + ix + left) * c + ch;
        }
        y[at] = st(x[(n * c + ch) * hw + pix]);
    }
}

// T [N, C] -> float logits.
extern "C" __global__ void to_f32(const T* x, float* y, long long total) {
    GRID_STRIDE(i, total) { y[i] = ld(x[i]); }
}

// y = act(x + bias[c]) (+ skip with SKIP); row tiles of `rpt` rows where c is a multiple of VEC.
// Row r of the result goes to row out_row(r) of y (r itself, or its place in a padded copy).
template <bool SKIP, typename O>
__device__ __forceinline__ void bias_act_of(const T* x, const float* bias, const T* skip, T* y, long long total, int c,
                                            int kind_code, int rpt, O out_row) {
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        if (c % VEC == 0) {
            for_each_row_tile(total, c, rpt, [&](RowTile t) {
                float b[VEC];
                for (int j = 0; j < VEC; ++j) b[j] = bias[t.ch + j];
                long long at = t.r0 * c + t.ch;
                auto out = [&](int r) { return out_row(t.r0 + r) * c + t.ch; };
                if (SKIP)
                    tile_map2(x, skip, y, at, c, t.n, [&](float v, float s, int j, int) { return act(v + b[j], kind) + s; }, out);
                else
                    tile_map(x, y, at, c, t.n, [&](float v, int j) { return act(v + b[j], kind); }, out);
            });
            return;
        }
        GRID_STRIDE(i, total) {
            long long r = div_of(i, c);
            int ch = (int)(i - r * c);
            float v = act(ld(x[i]) + bias[ch], kind);
            y[out_row(r) * c + ch] = st(SKIP ? v + ld(skip[i]) : v);
        }
    });
}

__device__ __forceinline__ long long same_row(long long r) { return r; }

// In place: y = act(y + bias[c]), a conv's bias and activation.
extern "C" __global__ void bias_act(T* y, const float* bias, long long total, int c, int kind_code, int rpt) {
    bias_act_of<false>(y, bias, nullptr, y, total, c, kind_code, rpt, same_row);
}

// y = act(x + bias[c]) + skip: a conv's bias and activation and the residual add after it, the
// conv's output written straight into the add's (its own kernel: the second input's tile takes
// registers the in-place form does without).
extern "C" __global__ void bias_act_add(const T* x, const float* bias, const T* skip, T* y, long long total, int c,
                                        int kind_code, int rpt) {
    bias_act_of<true>(x, bias, skip, y, total, c, kind_code, rpt, same_row);
}

// Row r of an NHWC tensor [N, h, w, ·] in the [N, ph, pw, ·] tensor holding it at offset (top, left).
__device__ __forceinline__ long long padded_row(long long r, int h, int w, int ph, int pw, int top, int left) {
    long long nh = div_of(r, w);  // n·h + y
    int ix = (int)(r - nh * w);
    long long n = div_of(nh, h);
    int iy = (int)(nh - n * h);
    return (n * ph + iy + top) * pw + ix + left;
}

// A conv's bias and activation (and, where skip is given, the residual add after it) written
// into the zero-padded copy [N, ph, pw, c] the next conv reads (cuDNN pads symmetrically only):
// y at offset (top, left) = act(x + bias) (+ skip). The border is pad_border's. No separate pad
// pass reading the conv's output back. total = N·h·w·c.
extern "C" __global__ void bias_act_pad(const T* x, const float* bias, const T* skip, T* y, long long total, int c,
                                        int kind_code, int rpt, int h, int w, int ph, int pw, int top, int left) {
    auto out_row = [&](long long r) { return padded_row(r, h, w, ph, pw, top, left); };
    if (skip) bias_act_of<true>(x, bias, skip, y, total, c, kind_code, rpt, out_row);
    else bias_act_of<false>(x, bias, skip, y, total, c, kind_code, rpt, out_row);
}

// Zeros on the border of a [N, ph, pw, c] tensor around its h x w interior at (top, left): the
// padding of a copy its producer (nchw_to_nhwc, bias_act_pad) writes the interior of. total =
// N·(ph·pw − h·w)·c; VEC channels a thread where c is a multiple of VEC. Border pixel k of a sample:
// the top rows, then each interior row's left and right columns, then the bottom rows.
extern "C" __global__ void pad_border(T* y, long long total, int h, int w, int c, int ph, int pw, int top, int left) {
    int lanes = c % VEC == 0 ? VEC : 1;
    int groups = c / lanes, sides = pw - w, per = ph * pw - h * w;
    GRID_STRIDE(g, total / lanes) {
        int cg = mod_of(g, groups);
        long long px = div_of(g, groups);
        long long n = div_of(px, per);
        int k = (int)(px - n * per), py, pxx;
        if (k < top * pw) {
            py = k / pw;
            pxx = k - py * pw;
        } else if ((k -= top * pw) < h * sides) {
            py = top + k / sides;
            int j = k - (py - top) * sides;
            pxx = j < left ? j : w + j;
        } else {
            k -= h * sides;
            py = top + h + k / pw;
            pxx = k - (py - top - h) * pw;
        }
        T* at = y + ((n * ph + py) * pw + pxx) * c + cg * lanes;
        if (lanes == VEC) {
            Vec z;
            for (int j = 0; j < VEC; ++j) z.v[j] = st(0.0f);
            vstore(at, z);
        } else {
            *at = st(0.0f);
        }
    }
}

// y = act(x), for activations that do not follow a conv alone.
extern "C" __global__ void act_only(const T* x, T* y, long long total, int kind_code) {
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        if (total % VEC == 0) {
            GRID_STRIDE(g, total / VEC) {
                Vec v = vload(x + g * VEC);
                for (int j = 0; j < VEC; ++j) v.v[j] = st(act(ld(v.v[j]), kind));
                vstore(y + g * VEC, v);
            }
            return;
        }
        GRID_STRIDE(i, total) { y[i] = st(act(ld(x[i]), kind)); }
    });
}

// VEC channels (from ch) of output pixel (n, oy, ox) of a depthwise k x k conv with bias and
// activation: wide loads of input and weight rows. Weight [kh][kw][c]; pads top/left given, the
// bottom/right ones follow from the output size (reads outside the input are zeros). K > 0: k known
// when compiled (3, every EfficientNetV2's), the tap loops unrolled so every tap's loads are issued
// before the first product instead of one round trip to memory per tap; K = 0: k at run time (every
// k where EFFV2_DW_RUNTIME_K is defined: EFFV2_CUDA_DW_UNROLL=0, for timing the two).
template <int K>
__device__ __forceinline__ Vec depthwise_vec_k(const T* x, const T* w, const float* bias, long long n, int oy, int ox,
                                               int ch, int h, int wd, int c, int k, int stride, int pad_t, int pad_l,
                                               int kind) {
    if (K > 0) k = K;
    float acc[VEC];
    for (int j = 0; j < VEC; ++j) acc[j] = bias[ch + j];
    int y0 = oy * stride - pad_t, x0 = ox * stride - pad_l;
#pragma unroll
    for (int ky = 0; ky < (K > 0 ? K : k); ++ky) {
        int iy = y0 + ky;
        if (iy < 0 || iy >= h) continue;
        const T* row = x + ((n * h + iy) * wd) * c + ch;
#pragma unroll
        for (int kx = 0; kx < (K > 0 ? K : k); ++kx) {
            int ix = x0 + kx;
            if (ix < 0 || ix >= wd) continue;
            Vec xv = vload(row + (long long)ix * c);
            Vec wv = vload(w + (ky * k + kx) * c + ch);
            for (int j = 0; j < VEC; ++j) acc[j] += ld(xv.v[j]) * ld(wv.v[j]);
        }
    }
    Vec out;
    for (int j = 0; j < VEC; ++j) out.v[j] = st(act(acc[j], kind));
    return out;
}

__device__ __forceinline__ Vec depthwise_vec(const T* x, const T* w, const float* bias, long long n, int oy, int ox,
                                             int ch, int h, int wd, int c, int k, int stride, int pad_t, int pad_l,
                                             int kind) {
#ifndef EFFV2_DW_RUNTIME_K
    if (k == 3) return depthwise_vec_k<3>(x, w, bias, n, oy, ox, ch, h, wd, c, k, stride, pad_t, pad_l, kind);
#endif
    return depthwise_vec_k<0>(x, w, bias, n, oy, ox, ch, h, wd, c, k, stride, pad_t, pad_l, kind);
}

// Depthwise k x k conv with bias and activation (see depthwise_vec).
extern "C" __global__ void depthwise(const T* x, const T* w, const float* bias, T* y, long long total,
                                     int h, int wd, int c, int oh, int ow, int k, int stride, int pad_t,
                                     int pad_l, int kind_code) {
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        if (c % VEC == 0) {
            // VEC channels of one output pixel per thread.
            GRID_STRIDE(g, total / VEC) {
                Nhwc o = nhwc_at(g, oh, ow, c / VEC);
                vstore(y + g * VEC, depthwise_vec(x, w, bias, o.n, o.y, o.x, o.ch * VEC, h, wd, c, k, stride, pad_t, pad_l, kind));
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
    });
}

// The same conv when the SE pool reads its output (c a multiple of VEC): a thread takes VEC
// channels of `seg` neighbouring pixels of an output row (segment sg of row oy of sample n) and
// also adds them up per channel, as stored, into part[((n·oh + oy)·segs + sg)·c + ch] (f32), so the
// pool (pool_rows) reads oh·segs partials per channel instead of the whole tensor again.
// total = n·oh·segs·c / VEC threads, segs = ⌈ow / seg⌉.
extern "C" __global__ void depthwise_pool(const T* x, const T* w, const float* bias, T* y, float* part,
                                          long long total, int h, int wd, int c, int oh, int ow, int k, int stride,
                                          int pad_t, int pad_l, int kind_code, int seg) {
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        int segs = (ow + seg - 1) / seg;
        GRID_STRIDE(g, total) {
            int ch = mod_of(g, c / VEC) * VEC;
            long long piece = div_of(g, c / VEC);  // (n·oh + oy)·segs + sg
            int sg = mod_of(piece, segs);
            long long row = div_of(piece, segs);  // n·oh + oy
            int oy = mod_of(row, oh);
            long long n = div_of(row, oh);
            int x1 = (sg + 1) * seg < ow ? (sg + 1) * seg : ow;
            float sum[VEC] = {};
            for (int ox = sg * seg; ox < x1; ++ox) {
                Vec out = depthwise_vec(x, w, bias, n, oy, ox, ch, h, wd, c, k, stride, pad_t, pad_l, kind);
                vstore(y + (row * ow + ox) * c + ch, out);
                for (int j = 0; j < VEC; ++j) sum[j] += ld(out.v[j]);
            }
            for (int j = 0; j < VEC; ++j) part[piece * c + ch + j] = sum[j];
        }
    });
}

// The SE pool from depthwise_pool's partial sums: y[n, ch] = Σ_q part[(n·parts + q)·c + ch] / hw.
extern "C" __global__ void pool_rows(const float* part, T* y, long long total, int parts, int hw, int c) {
    GRID_STRIDE(i, total) {
        const float* p = part + div_of(i, c) * parts * c + mod_of(i, c);
        y[i] = st(ordered_sum_by<float>(parts, [&](long long q) { return p[q * c]; }) / (float)hw);
    }
}

// Mean over H and W: one thread per (n, c); neighbouring threads read neighbouring channels.
extern "C" __global__ void pool(const T* x, T* y, long long total, int hw, int c) {
    GRID_STRIDE(i, total) {
        long long n = div_of(i, c);
        int ch = (int)(i - n * c);
        const T* p = x + n * hw * c + ch;
        y[i] = st(ordered_sum_by<float>(hw, [&](long long j) { return ld(p[j * c]); }) / (float)hw);
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
// cuDNN cannot express (asymmetric "same" padding). total = N·ph·pw·c; VEC channels a thread where
// c is a multiple of VEC (one index decomposition and one wide copy per VEC elements).
extern "C" __global__ void pad(const T* x, T* y, long long total, int h, int wd, int c, int ph, int pw, int top,
                               int left) {
    if (c % VEC == 0) {
        GRID_STRIDE(g, total / VEC) {
            Nhwc p = nhwc_at(g, ph, pw, c / VEC);
            int iy = p.y - top, ix = p.x - left;
            Vec v;
            if (iy >= 0 && iy < h && ix >= 0 && ix < wd) {
                v = vload(x + ((p.n * h + iy) * wd + ix) * c + p.ch * VEC);
            } else {
                for (int j = 0; j < VEC; ++j) v.v[j] = st(0.0f);
            }
            vstore(y + g * VEC, v);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        Nhwc p = nhwc_at(i, ph, pw, c);
        int iy = p.y - top, ix = p.x - left;
        y[i] = (iy >= 0 && iy < h && ix >= 0 && ix < wd) ? x[((p.n * h + iy) * wd + ix) * c + p.ch] : st(0.0f);
    }
}
