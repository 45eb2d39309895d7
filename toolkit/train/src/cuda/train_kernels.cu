// Training kernels of the CUDA engine (everything but the convolutions, which are cuDNN's forward,
// backward-data and backward-filter): batch norm in training mode, activation / SE / mask
// backwards, the loss, and the optimizer and EMA updates. Compiled after the runtime's
// precision.cu: activations and their gradients are NHWC of type T (f32, or bf16 for mixed
// precision), read with ld() and written with st(); math, statistics, parameters, their gradients
// and the optimizer stay f32 (sums f64). A channel is the fastest index.
//
// No shared memory and no barriers: per-channel sums go through fixed chunks of rows into f64
// partials, then one thread per channel adds the partials in order. That is deterministic
// (independent of the launch shape), matches the CPU engine's chunked f64 sums, and lets the host
// tests run every kernel as plain C++ (see the cuda host shim).
// Every element-wise kernel is a grid-stride loop over `total` elements.

__device__ __forceinline__ float sigm(float x) { return __fdividef(1.0f, 1.0f + __expf(-x)); }

// ---- activation gradients (act_backward, and fused into the BN backward) ----

// Codes of effv2_edge::graph::ActKind as the engine numbers them: 1 SiLU, 2 ReLU6, 3 sigmoid.
// dx from the op's input x and output y.
__device__ __forceinline__ float act_grad(float d, float xi, float yi, int kind) {
    if (kind == 1) {
        float s = sigm(xi);
        return d * s * (1.0f + xi * (1.0f - s));
    }
    if (kind == 2) return (xi > 0.0f && xi < 6.0f) ? d : 0.0f;
    return d * yi * (1.0f - yi);
}

// The gradient reaching a BN's output y from its fused activation (kind ≠ 0; 0 = none: d itself),
// y recomputed from the BN input x exactly as bn_apply computes it (s = γ·invstd).
__device__ __forceinline__ float bn_act_grad(float d, float x, float mean, float s, float beta, int kind) {
    if (kind == 0) return d;
    float y = x * s + (beta - mean * s);
    return act_grad(d, y, kind == 3 ? act(y, 3) : 0.0f, kind);
}

// ---- per-channel sums over rows of an NHWC tensor viewed as [rows, c] ----

// Σ of p[k·stride] over k in [k0, k1), in order, in f64 (see ordered_sum_by).
__device__ __forceinline__ double ordered_sum(const double* p, long long k0, long long k1, long long stride) {
    return ordered_sum_by<double>(k1 - k0, [&](long long k) { return p[(k0 + k) * stride]; });
}

// Two sums per (chunk k, channel ch) over rows [k·chunk, (k+1)·chunk), in order, in f64, in one
// read of the tensors: part[k·2c + ch] = Σ v, and part[k·2c + c + ch] =
//   mode 0: Σ v²        with v = a     (batch statistics: mean and mean square; a bias gradient
//                                       uses only Σ v)
//   mode 1: Σ v · x̂     with v = the BN output's gradient from a = the gradient reaching the BN
//                       (or its fused activation `kind`), x̂ = (b − mean) · invstd, b = the BN
//                       input: Σdy and Σdy·x̂ of the BN backward, from its saved f32 mean / invstd
// b, mean, invstd are read in mode 1 only, gamma and beta only with an activation (null
// otherwise). The partials are [chunks, 2c]: chan_regroup and chan_finish add them as 2c
// channels. A thread takes L channels (L = VEC where c is a multiple of it: wide loads) of one
// chunk, and issues ROW_TILE rows' loads before adding them (in row order, so the sums are the
// same for either L); total = chunks · c / L threads. MASKED (mode 1 without an activation): `a`
// is the gradient of the residual add a BN's output reaches through a drop-path, times the
// sample's mask[row / per] — the BN's own gradient, never written.
template <int L, int mode, int kind, bool MASKED>
__device__ __forceinline__ void chan_partials_of(const T* a, const T* b, const float* mean, const float* invstd,
                                                 const float* gamma, const float* beta, const float* mask,
                                                 long long per, double* part, long long rows, int c, int chunk) {
    long long chunks = (rows + chunk - 1) / chunk;
    int groups = c / L;
    GRID_STRIDE(i, chunks * groups) {
        int ch = mod_of(i, groups) * L;
        long long k = div_of(i, groups);
        long long r1 = (k + 1) * chunk < rows ? (k + 1) * chunk : rows;
        float m[L], is[L], sc[L], be[L];
        for (int j = 0; j < L; ++j) {
            m[j] = is[j] = sc[j] = be[j] = 0.0f;
            if (mode == 1) {
                m[j] = mean[ch + j];
                is[j] = invstd[ch + j];
                if (kind != 0) {
                    sc[j] = is[j] * gamma[ch + j];
                    be[j] = beta[ch + j];
                }
            }
        }
        double s[L], s2[L];
        for (int j = 0; j < L; ++j) s[j] = s2[j] = 0.0;
        // MASKED: the sample of the current row, and the row the next one starts at (one division
        // a chunk, not one a row).
        long long smp = 0, next = 0;
        if (MASKED) {
            smp = div_of(k * chunk, per);
            next = (smp + 1) * per;
        }
        for (long long r0 = k * chunk; r0 < r1; r0 += ROW_TILE) {
            int n = r1 - r0 < ROW_TILE ? (int)(r1 - r0) : ROW_TILE;
            Vec av[ROW_TILE], bv[ROW_TILE];
#pragma unroll
            for (int q = 0; q < ROW_TILE; ++q) {
                if (q >= n) break;
                long long at = (r0 + q) * c + ch;
                av[q] = load_lanes<L>(a + at);
                if (mode == 1) bv[q] = load_lanes<L>(b + at);
            }
#pragma unroll
            for (int q = 0; q < ROW_TILE; ++q) {
                if (q >= n) break;
                float mk = 1.0f;
                if (MASKED) {
                    if (r0 + q >= next) {
                        ++smp;
                        next += per;
                    }
                    mk = mask[smp];
                }
                for (int j = 0; j < L; ++j) {
                    float x = ld(av[q].v[j]);
                    if (MASKED) x *= mk;
                    if (mode == 1) {
                        float xv = ld(bv[q].v[j]);
                        double v = bn_act_grad(x, xv, m[j], sc[j], be[j], kind);
                        s[j] += v;
                        s2[j] += v * (double)((xv - m[j]) * is[j]);
                    } else {
                        s[j] += x;
                        s2[j] += (double)x * x;
                    }
                }
            }
        }
        for (int j = 0; j < L; ++j) {
            part[k * 2 * c + ch + j] = s[j];
            part[k * 2 * c + c + ch + j] = s2[j];
        }
    }
}

extern "C" __global__ void chan_partials(const T* a, const T* b, const float* mean, const float* invstd,
                                         const float* gamma, const float* beta, double* part, long long rows,
                                         int c, int chunk, int mode, int kind_code) {
    bool wide = c % VEC == 0;
    const float* none = nullptr;
    if (mode == 0) {
        if (wide) chan_partials_of<VEC, 0, 0, false>(a, b, mean, invstd, gamma, beta, none, 0, part, rows, c, chunk);
        else chan_partials_of<1, 0, 0, false>(a, b, mean, invstd, gamma, beta, none, 0, part, rows, c, chunk);
        return;
    }
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        if (wide) chan_partials_of<VEC, 1, kind, false>(a, b, mean, invstd, gamma, beta, none, 0, part, rows, c, chunk);
        else chan_partials_of<1, 1, kind, false>(a, b, mean, invstd, gamma, beta, none, 0, part, rows, c, chunk);
    });
}

// Mode 1 without an activation, `a` times the drop-path mask (MASKED): an entry of its own, so
// the mask's registers do not count against every other BN sum's occupancy.
extern "C" __global__ void chan_partials_masked(const T* a, const T* b, const float* mean, const float* invstd,
                                                const float* gamma, const float* beta, const float* mask,
                                                long long per, double* part, long long rows, int c, int chunk) {
    if (c % VEC == 0) chan_partials_of<VEC, 1, 0, true>(a, b, mean, invstd, gamma, beta, mask, per, part, rows, c, chunk);
    else chan_partials_of<1, 1, 0, true>(a, b, mean, invstd, gamma, beta, mask, per, part, rows, c, chunk);
}

// part2[q·c + ch] = Σ of part[k·c + ch] over the q-th group of `group` chunks, in chunk order: a
// first level of the final sum, so chan_finish adds a few partials per channel instead of every
// chunk's (a thread per channel adding thousands of them one after another was the slow part).
extern "C" __global__ void chan_regroup(const double* part, long long chunks, int c, int group, double* part2) {
    long long groups = (chunks + group - 1) / group;
    GRID_STRIDE(i, groups * c) {
        int ch = mod_of(i, c);
        long long k0 = div_of(i, c) * group;
        part2[i] = ordered_sum(part + ch, k0, k0 + group < chunks ? k0 + group : chunks, c);
    }
}

// out[ch] = scale · Σ_k part[k·c + ch], partials added in chunk order. Where given, the first and
// the second half of the c sums also go to f32 arrays (lo, hi: parameter gradients such as a
// BN's dβ = Σdy and dγ = Σdy·x̂, or a bias's Σdy) — no launch of their own.
extern "C" __global__ void chan_finish(const double* part, long long chunks, int c, double scale, double* out,
                                       float* lo, float* hi) {
    int half = c / 2;
    GRID_STRIDE(ch, c) {
        double v = ordered_sum(part + ch, 0, chunks, c) * scale;
        out[ch] = v;
        float* to = ch < half ? lo : hi;
        if (to) to[ch < half ? ch : ch - half] = (float)v;
    }
}

// ---- batch norm, training mode ----

// From the batch mean and mean square (f64; the variance is their difference, clamped at zero):
// the saved mean / invstd for apply and backward, and the running statistics (unbiased variance,
// momentum 0.1 as PyTorch; TF's decay 0.9).
__device__ __forceinline__ void bn_stats(int ch, double m, double msq, float* mean, float* invstd,
                                         float* running_mean, float* running_var, long long rows, float eps,
                                         float momentum) {
    double v = msq - m * m;
    v = v > 0.0 ? v : 0.0;
    mean[ch] = (float)m;
    invstd[ch] = (float)(1.0 / sqrt(v + (double)eps));
    double unbias = rows > 1 ? (double)rows / (double)(rows - 1) : 1.0;
    running_mean[ch] += momentum * ((float)m - running_mean[ch]);
    running_var[ch] += momentum * ((float)(v * unbias) - running_var[ch]);
}

// bn_stats from sums chan_finish wrote (data parallelism: after they were summed over replicas).
extern "C" __global__ void bn_finalize(const double* mean64, const double* meansq64, float* mean, float* invstd,
                                       float* running_mean, float* running_var, int c, long long rows, float eps,
                                       float momentum) {
    GRID_STRIDE(ch, c) { bn_stats(ch, mean64[ch], meansq64[ch], mean, invstd, running_mean, running_var, rows, eps, momentum); }
}

// chan_finish and bn_finalize in one launch (one engine: nothing to sum between them): the two
// sums of channel ch from [chunks, 2c] partials, each scaled as chan_finish scales it.
extern "C" __global__ void bn_finish(const double* part, long long chunks, int c, double scale, float* mean,
                                     float* invstd, float* running_mean, float* running_var, long long rows,
                                     float eps, float momentum) {
    GRID_STRIDE(ch, c) {
        double m = ordered_sum(part + ch, 0, chunks, 2 * c) * scale;
        double msq = ordered_sum(part + c + ch, 0, chunks, 2 * c) * scale;
        bn_stats(ch, m, msq, mean, invstd, running_mean, running_var, rows, eps, momentum);
    }
}

// Eval mode: invstd from the running variance, in f32 as the CPU engine's eval forward.
extern "C" __global__ void bn_eval_invstd(const float* running_var, float* invstd, int c, float eps) {
    GRID_STRIDE(ch, c) { invstd[ch] = 1.0f / sqrtf(running_var[ch] + eps); }
}

// y = act(x·(γ·invstd) + (β − mean·γ·invstd), kind): the BN, with the activation that alone reads
// its output fused in (kind ≠ 0; see bn_act_grad for the backward); also the eval mode, given the
// running statistics' mean and invstd. Row tiles of `rpt` rows where c is a multiple of VEC.
extern "C" __global__ void bn_apply(const T* x, T* y, const float* mean, const float* invstd,
                                    const float* gamma, const float* beta, long long total, int c, int kind_code,
                                    int rpt) {
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        if (c % VEC == 0) {
            for_each_row_tile(total, c, rpt, [&](RowTile t) {
                float sc[VEC], sh[VEC];
                for (int j = 0; j < VEC; ++j) {
                    sc[j] = invstd[t.ch + j] * gamma[t.ch + j];
                    sh[j] = beta[t.ch + j] - mean[t.ch + j] * sc[j];
                }
                tile_map(x, y, t.r0 * c + t.ch, c, t.n, [&](float v, int j) { return act(v * sc[j] + sh[j], kind); });
            });
            return;
        }
        GRID_STRIDE(i, total) {
            int ch = mod_of(i, c);
            float s = invstd[ch] * gamma[ch];
            y[i] = st(act(ld(x[i]) * s + (beta[ch] - mean[ch] * s), kind));
        }
    });
}

// y = BN(x) · mask[sample] + skip: a BN that only a residual add reads, through a drop-path or
// directly (mask null: the identity; eval mode too), written straight into the add's output, so
// the BN's output is never stored. A sample is `per` rows. Row tiles as bn_apply.
extern "C" __global__ void bn_apply_add(const T* x, const T* skip, const float* mask, long long per, T* y,
                                        const float* mean, const float* invstd, const float* gamma,
                                        const float* beta, long long total, int c, int rpt) {
    if (c % VEC == 0) {
        for_each_row_tile(total, c, rpt, [&](RowTile t) {
            float sc[VEC], sh[VEC], m[ROW_TILE];
            for (int j = 0; j < VEC; ++j) {
                sc[j] = invstd[t.ch + j] * gamma[t.ch + j];
                sh[j] = beta[t.ch + j] - mean[t.ch + j] * sc[j];
            }
            for (int r = 0; r < ROW_TILE; ++r) m[r] = mask && r < t.n ? mask[div_of(t.r0 + r, per)] : 1.0f;
            tile_map2(x, skip, y, t.r0 * c + t.ch, c, t.n, [&](float v, float s, int j, int r) { return (v * sc[j] + sh[j]) * m[r] + s; });
        });
        return;
    }
    GRID_STRIDE(i, total) {
        int ch = mod_of(i, c);
        float s = invstd[ch] * gamma[ch];
        float m = mask ? mask[div_of(i, per * c)] : 1.0f;
        y[i] = st((ld(x[i]) * s + (beta[ch] - mean[ch] * s)) * m + ld(skip[i]));
    }
}

// dx = γ·invstd/N · (N·dy − Σdy − x̂·Σ(dy·x̂)), given sdy = Σdy and sdyx = Σdy·x̂ per channel
// (which are also dβ and dγ); dy from `d`, the gradient of the BN's output or of its fused
// activation `kind` (bn_act_grad). N = `rows`, the BN's rows over every replica. Row tiles of
// `rpt` rows where c is a multiple of VEC.
struct BnBackwardCh { float m, is, sc, be, k, sdy, sdyx; };
__device__ __forceinline__ BnBackwardCh bn_backward_ch(const float* mean, const float* invstd, const float* gamma,
                                                       const float* beta, const double* sdy, const double* sdyx,
                                                       int ch, float n, int kind) {
    BnBackwardCh p;
    p.m = mean[ch];
    p.is = invstd[ch];
    p.sc = p.is * gamma[ch];
    p.be = kind ? beta[ch] : 0.0f;
    p.k = gamma[ch] * p.is / n;
    p.sdy = (float)sdy[ch];
    p.sdyx = (float)sdyx[ch];
    return p;
}
__device__ __forceinline__ float bn_backward_at(const BnBackwardCh& p, float x, float d, float n, int kind) {
    float dy = bn_act_grad(d, x, p.m, p.sc, p.be, kind);
    return p.k * (n * dy - p.sdy - (x - p.m) * p.is * p.sdyx);
}

// MASKED (no activation): d is a residual add's gradient times mask[row / per], as chan_partials.
template <int kind, bool MASKED>
__device__ __forceinline__ void bn_backward_dx_of(const T* x, const T* d, const float* mask, long long per,
                                                  const float* mean, const float* invstd, const float* gamma,
                                                  const float* beta, const double* sdy, const double* sdyx, T* dx,
                                                  long long total, int c, long long rows, int rpt) {
    float n = (float)rows;
    if (c % VEC == 0) {
        for_each_row_tile(total, c, rpt, [&](RowTile t) {
            long long at = t.r0 * c + t.ch;
            BnBackwardCh p[VEC];
            for (int j = 0; j < VEC; ++j) p[j] = bn_backward_ch(mean, invstd, gamma, beta, sdy, sdyx, t.ch + j, n, kind);
            float mk[ROW_TILE];
            for (int r = 0; r < ROW_TILE; ++r) mk[r] = MASKED && r < t.n ? mask[div_of(t.r0 + r, per)] : 1.0f;
            tile_map2(x, d, dx, at, c, t.n, [&](float xv, float dv, int j, int r) { return bn_backward_at(p[j], xv, MASKED ? dv * mk[r] : dv, n, kind); });
        });
        return;
    }
    GRID_STRIDE(i, total) {
        BnBackwardCh p = bn_backward_ch(mean, invstd, gamma, beta, sdy, sdyx, mod_of(i, c), n, kind);
        float dv = ld(d[i]);
        if (MASKED) dv *= mask[div_of(i, per * c)];
        dx[i] = st(bn_backward_at(p, ld(x[i]), dv, n, kind));
    }
}

// `mask` (null: none) only without an activation.
extern "C" __global__ void bn_backward_dx(const T* x, const T* d, const float* mask, long long per, const float* mean,
                                          const float* invstd, const float* gamma, const float* beta,
                                          const double* sdy, const double* sdyx, T* dx, long long total, int c,
                                          long long rows, int kind_code, int rpt) {
    if (mask) {
        bn_backward_dx_of<0, true>(x, d, mask, per, mean, invstd, gamma, beta, sdy, sdyx, dx, total, c, rows, rpt);
        return;
    }
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        bn_backward_dx_of<kind, false>(x, d, mask, per, mean, invstd, gamma, beta, sdy, sdyx, dx, total, c, rows, rpt);
    });
}

// ---- activations ----

extern "C" __global__ void act_backward(const T* x, const T* y, const T* dy, T* dx, long long total, int kind_code) {
    with_act(kind_code, [&](auto code) {
        constexpr int kind = decltype(code)::value;
        if (total % VEC == 0) {
            GRID_STRIDE(g, total / VEC) {
                Vec xv = vload(x + g * VEC), dv = vload(dy + g * VEC), yv = xv;
                if (kind != 1 && kind != 2) yv = vload(y + g * VEC);  // only the sigmoid's gradient reads its output
                for (int j = 0; j < VEC; ++j) dv.v[j] = st(act_grad(ld(dv.v[j]), ld(xv.v[j]), ld(yv.v[j]), kind));
                vstore(dx + g * VEC, dv);
            }
            return;
        }
        GRID_STRIDE(i, total) {
            float d = ld(dy[i]), xi = ld(x[i]);
            dx[i] = st(act_grad(d, xi, (kind != 1 && kind != 2) ? ld(y[i]) : 0.0f, kind));
        }
    });
}

// ---- depthwise convolution backward (the forward is the inference engine's `depthwise`) ----
// NHWC [n, h, w, c] input, [n, oh, ow, c] output, weights [k·k, c]; "same" padding by its top / left.

// The output coordinate o whose tap reads input coordinate t (o·stride = t), or -1 where none
// does: strides 1 and 2 (every stride EfficientNetV2 has) without an integer division, which cost
// more than the taps' arithmetic.
__device__ __forceinline__ int tap_source(int t, int stride) {
    if (t < 0) return -1;
    if (stride == 1) return t;
    if (stride == 2) return (t & 1) ? -1 : t >> 1;
    return t % stride ? -1 : t / stride;
}

// dx[n, iy, ix, ch] = Σ over the taps that read it of dy[n, oy, ox, ch] · w[tap, ch] (a gather: no
// atomics, so deterministic), for `lanes` (VEC or 1) channels from ch. K > 0: k known when
// compiled (3, every EfficientNetV2's), the tap loops unrolled so every tap's loads are issued
// before the first product instead of one round trip to memory per tap; K = 0: k at run time (every
// k with EFFV2_DW_RUNTIME_K, see kernels.cu's depthwise_vec).
template <int K>
__device__ __forceinline__ void depthwise_dx_at(const T* dy, const T* w, float* s, Nhwc p, int ch, int lanes, int c,
                                                int oh, int ow, int k, int stride, int pad_t, int pad_l) {
    if (K > 0) k = K;
#pragma unroll
    for (int ky = 0; ky < (K > 0 ? K : k); ++ky) {
        int oy = tap_source(p.y + pad_t - ky, stride);
        if (oy < 0 || oy >= oh) continue;
        const T* row = dy + ((p.n * oh + oy) * ow) * c + ch;
#pragma unroll
        for (int kx = 0; kx < (K > 0 ? K : k); ++kx) {
            int ox = tap_source(p.x + pad_l - kx, stride);
            if (ox < 0 || ox >= ow) continue;
            const T* d = row + (long long)ox * c;
            const T* wt = w + (ky * k + kx) * c + ch;
            if (lanes == VEC) {
                Vec dv = vload(d), wv = vload(wt);
                for (int j = 0; j < VEC; ++j) s[j] += ld(dv.v[j]) * ld(wv.v[j]);
            } else {
                s[0] += ld(*d) * ld(*wt);
            }
        }
    }
}

// total = n·h·w·c; where c is a multiple of VEC, a thread takes VEC neighbouring channels of one
// input pixel (wide loads of dy and w, one index decomposition per VEC elements), adding the taps
// in the same order as the scalar path.
extern "C" __global__ void depthwise_backward_dx(const T* dy, const T* w, T* dx, long long total, int h,
                                                 int wd, int c, int oh, int ow, int k, int stride, int pad_t,
                                                 int pad_l) {
    bool wide = c % VEC == 0;
    int lanes = wide ? VEC : 1;
    GRID_STRIDE(g, total / lanes) {
        Nhwc p = nhwc_at(g, h, wd, c / lanes);
        int ch = p.ch * lanes;
        float s[VEC] = {};
#ifndef EFFV2_DW_RUNTIME_K
        if (k == 3) depthwise_dx_at<3>(dy, w, s, p, ch, lanes, c, oh, ow, k, stride, pad_t, pad_l);
        else
#endif
            depthwise_dx_at<0>(dy, w, s, p, ch, lanes, c, oh, ow, k, stride, pad_t, pad_l);
        if (wide) {
            Vec out;
            for (int j = 0; j < VEC; ++j) out.v[j] = st(s[j]);
            vstore(dx + g * VEC, out);
        } else {
            dx[g] = st(s[0]);
        }
    }
}

// dw[tap, ch] = Σ over samples and output positions of dy · x at that tap, in f64, in two
// launches like the BN sums: partials over `chunk` output rows each, then depthwise_dw_finish adds
// them in chunk order. One thread per (chunk, tap, channel), or per (chunk, tap, VEC channels)
// where c is a multiple of VEC (wide loads; the same sums in the same order); neighbouring threads
// on neighbouring channels, so loads coalesce, and ROW_TILE rows' loads in flight before their
// products are added (in row order). Partials are [chunks, k·k, c]; total = chunks·k·k·c
// (divided by VEC on the wide path).
template <int L>
__device__ __forceinline__ void depthwise_dw_of(const T* x, const T* dy, double* part, long long batch, int h,
                                                int wd, int c, int oh, int ow, int k, int stride, int pad_t,
                                                int pad_l, int chunk) {
    int groups = c / L;
    long long rows = batch * oh * ow;
    long long chunks = (rows + chunk - 1) / chunk;
    GRID_STRIDE(i, chunks * k * k * groups) {
        int ch = mod_of(i, groups) * L;
        long long tq = div_of(i, groups);
        int t = mod_of(tq, k * k);
        long long q = div_of(tq, k * k);
        int ky = t / k, kx = t % k;
        long long r1 = (q + 1) * chunk < rows ? (q + 1) * chunk : rows;
        double s[L];
        for (int j = 0; j < L; ++j) s[j] = 0.0;
        // The row's (n, oy, ox), divided out once and then stepped along.
        long long r = q * chunk;
        int ox = mod_of(r, ow), oy = mod_of(div_of(r, ow), oh);
        long long n = div_of(r, (long long)ow * oh);
        while (r < r1) {
            int rows_now = r1 - r < ROW_TILE ? (int)(r1 - r) : ROW_TILE;
            Vec dv[ROW_TILE], xv[ROW_TILE];
            bool in[ROW_TILE];
#pragma unroll
            for (int u = 0; u < ROW_TILE; ++u) {
                in[u] = false;
                if (u >= rows_now) continue;
                int iy = oy * stride + ky - pad_t, ix = ox * stride + kx - pad_l;
                in[u] = iy >= 0 && iy < h && ix >= 0 && ix < wd;
                if (in[u]) {
                    dv[u] = load_lanes<L>(dy + (r + u) * c + ch);
                    xv[u] = load_lanes<L>(x + ((n * h + iy) * wd + ix) * c + ch);
                }
                if (++ox == ow) {
                    ox = 0;
                    if (++oy == oh) {
                        oy = 0;
                        ++n;
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < ROW_TILE; ++u)
                if (in[u])
                    for (int j = 0; j < L; ++j) s[j] += (double)ld(dv[u].v[j]) * ld(xv[u].v[j]);
            r += rows_now;
        }
        double* out = part + (q * k * k + t) * c + ch;
        for (int j = 0; j < L; ++j) out[j] = s[j];
    }
}

extern "C" __global__ void depthwise_backward_dw(const T* x, const T* dy, double* part, long long batch, int h,
                                                 int wd, int c, int oh, int ow, int k, int stride, int pad_t,
                                                 int pad_l, int chunk) {
    if (c % VEC == 0) {
        depthwise_dw_of<VEC>(x, dy, part, batch, h, wd, c, oh, ow, k, stride, pad_t, pad_l, chunk);
    } else {
        depthwise_dw_of<1>(x, dy, part, batch, h, wd, c, oh, ow, k, stride, pad_t, pad_l, chunk);
    }
}

// dw[j] = Σ_q part[q·n + j] over the chunks, in chunk order; n = k·k·c.
extern "C" __global__ void depthwise_dw_finish(const double* part, long long chunks, int n, float* dw) {
    GRID_STRIDE(j, n) { dw[j] = (float)ordered_sum(part + j, 0, chunks, n); }
}

// ---- squeeze-excitation ----

// Global average pool backward: dx[n, p, ch] = dy[n, ch] / hw — plus, where dprod is given,
// dprod[n, p, ch] · gate[n, ch]: an SE block's input also feeds the gate multiply, whose gradient
// (the product's gradient times the gate) is written here with the pool's in one pass. VEC
// channels a thread where c is a multiple of VEC.
extern "C" __global__ void pool_backward(const T* dy, const T* dprod, const T* gate, T* dx, long long total, int hw,
                                         int c) {
    if (c % VEC == 0) {
        long long per_sample = (long long)hw * (c / VEC);
        GRID_STRIDE(g, total / VEC) {
            long long at = div_of(g, per_sample) * c + mod_of(g, c / VEC) * VEC;
            Vec d = vload(dy + at);
            if (dprod) {
                Vec p = vload(dprod + g * VEC), s = vload(gate + at);
                for (int j = 0; j < VEC; ++j) d.v[j] = st(ld(p.v[j]) * ld(s.v[j]) + ld(d.v[j]) / (float)hw);
            } else {
                for (int j = 0; j < VEC; ++j) d.v[j] = st(ld(d.v[j]) / (float)hw);
            }
            vstore(dx + g * VEC, d);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        long long at = div_of(i, (long long)hw * c) * c + mod_of(i, c);
        float v = ld(dy[at]) / (float)hw;
        dx[i] = st(dprod ? ld(dprod[i]) * ld(gate[at]) + v : v);
    }
}

// y = x · gate[n, ch] backward: dx = dy · gate is the inference `gate_mul` itself (dy in x's place),
// or pool_backward's where the SE pool reads x too.
// dgate[n, ch] = Σ_p dy·x over the sample's positions; one thread per (n, ch).
extern "C" __global__ void gate_mul_backward_dgate(const T* x, const T* dy, T* dgate, long long batch, int hw,
                                                   int c) {
    GRID_STRIDE(i, batch * c) {
        long long n = div_of(i, c);
        int ch = mod_of(i, c);
        const T* xs = x + n * hw * c + ch;
        const T* ds = dy + n * hw * c + ch;
        dgate[i] = st(ordered_sum_by<float>(hw, [&](long long p) { return ld(ds[p * c]) * ld(xs[p * c]); }));
    }
}

// ---- masks, gradient sums ----

// y = x · mask[i / per] (+ skip[i] where skip is given: the residual add a drop-path alone feeds,
// so the masked value is never stored): dropout (per = 1) or drop-path (per = one sample); also
// its backward. Where per is a multiple of VEC (drop-path on channels in VECs), VEC elements a
// thread, which share their mask.
extern "C" __global__ void apply_mask(const T* x, const float* mask, const T* skip, T* y, long long total,
                                      long long per) {
    if (per % VEC == 0) {
        GRID_STRIDE(g, total / VEC) {
            Vec v = vload(x + g * VEC);
            float m = mask[div_of(g, per / VEC)];
            if (skip) {
                Vec s = vload(skip + g * VEC);
                for (int j = 0; j < VEC; ++j) v.v[j] = st(ld(v.v[j]) * m + ld(s.v[j]));
            } else {
                for (int j = 0; j < VEC; ++j) v.v[j] = st(ld(v.v[j]) * m);
            }
            vstore(y + g * VEC, v);
        }
        return;
    }
    GRID_STRIDE(i, total) {
        float v = ld(x[i]) * mask[div_of(i, per)];
        y[i] = st(skip ? v + ld(skip[i]) : v);
    }
}

// dst = src (a gradient passed on unchanged, e.g. to the first input of a residual add).
extern "C" __global__ void copy(const T* src, T* dst, long long total) {
    if (total % VEC == 0) {
        GRID_STRIDE(g, total / VEC) { vstore(dst + g * VEC, vload(src + g * VEC)); }
        return;
    }
    GRID_STRIDE(i, total) { dst[i] = src[i]; }
}

// The inverse of the inference `pad` kernel for gradients: dx[n, y, x, ch] = dpadded[n, y + top,
// x + left, ch] (what a conv on an explicitly padded copy hands back). total = n·h·w·c; VEC
// channels a thread where c is a multiple of VEC.
extern "C" __global__ void crop(const T* src, T* dst, long long total, int h, int w, int c, int ph, int pw,
                                int top, int left) {
    if (c % VEC == 0) {
        GRID_STRIDE(g, total / VEC) {
            Nhwc p = nhwc_at(g, h, w, c / VEC);
            vstore(dst + g * VEC, vload(src + ((p.n * ph + p.y + top) * pw + p.x + left) * c + p.ch * VEC));
        }
        return;
    }
    GRID_STRIDE(i, total) {
        Nhwc p = nhwc_at(i, h, w, c);
        dst[i] = src[((p.n * ph + p.y + top) * pw + p.x + left) * c + p.ch];
    }
}


// ---- loss ----

// Softmax cross-entropy against soft targets, one thread per row: row_loss[r] = −Σ t·log softmax(z),
// dlogits = (softmax(z) − t) / batch. f64 with the max subtracted, as the CPU loss.
extern "C" __global__ void softmax_xent(const float* logits, const float* targets, float* dlogits, double* row_loss,
                                        long long batch, int classes) {
    GRID_STRIDE(r, batch) {
        const float* z = logits + r * classes;
        const float* t = targets + r * classes;
        double m = z[0];
        for (int j = 1; j < classes; ++j) m = z[j] > m ? z[j] : m;
        double s = 0.0;
        for (int j = 0; j < classes; ++j) s += exp((double)z[j] - m);
        double lse = m + log(s), loss = 0.0;
        for (int j = 0; j < classes; ++j) {
            double logp = (double)z[j] - lse;
            loss -= (double)t[j] * logp;
            dlogits[r * classes + j] = (float)((exp(logp) - (double)t[j]) / (double)batch);
        }
        row_loss[r] = loss;
    }
}

// ---- optimizer and EMA (effv2_train::optim, ::ema) ----

// TF1 RMSProp: ms ← ρ·ms + (1−ρ)·g², mom ← μ·mom + lr·g/√(ms + ε), w ← w − mom; g includes wd·w.
extern "C" __global__ void rmsprop_step(float* w, const float* g, float* ms, float* mom, long long total, float lr,
                                        float decay, float momentum, float eps, float wd) {
    GRID_STRIDE(i, total) {
        float gi = g[i] + wd * w[i];
        float m = decay * ms[i] + (1.0f - decay) * gi * gi;
        float v = momentum * mom[i] + lr * gi / sqrtf(m + eps);
        ms[i] = m;
        mom[i] = v;
        w[i] -= v;
    }
}

// Heavy-ball momentum (PyTorch SGD): buf ← μ·buf + g, w ← w − lr·(buf or g + μ·buf).
extern "C" __global__ void sgd_step(float* w, const float* g, float* buf, long long total, float lr, float momentum,
                                    int nesterov, float wd) {
    GRID_STRIDE(i, total) {
        float gi = g[i] + wd * w[i];
        float b = momentum * buf[i] + gi;
        buf[i] = b;
        w[i] -= lr * (nesterov ? gi + momentum * b : b);
    }
}

// shadow ← shadow − (1−decay)·(shadow − value).
extern "C" __global__ void ema_update(float* shadow, const float* value, long long total, float decay) {
    GRID_STRIDE(i, total) { shadow[i] -= (1.0f - decay) * (shadow[i] - value[i]); }
}
