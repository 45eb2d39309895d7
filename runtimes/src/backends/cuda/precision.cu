// The activation storage type T of the CUDA kernels and its conversions (and, at the end, the
// activation functions), prepended to every kernel source the engines compile: float, or 16-bit
// words holding IEEE half (EFFV2_HALF) or bfloat16 (EFFV2_BF16), so the sources need no CUDA
// headers. ld widens to f32, st rounds to nearest even.
// EFFV2_HOST: compiled as C++ for the host replay, with host_shim.h's conversions.

#if defined(EFFV2_HALF) || defined(EFFV2_BF16)
typedef unsigned short T;
#else
typedef float T;
#endif

#if defined(EFFV2_HOST) && (defined(EFFV2_HALF) || defined(EFFV2_BF16))
inline float ld(T v) { return effv2_host_ld16(v); }
inline T st(float f) { return effv2_host_st16(f); }
#elif defined(EFFV2_HALF)
__device__ __forceinline__ float ld(T v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v)); return f; }
__device__ __forceinline__ T st(float f) { T v; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v) : "f"(f)); return v; }
#elif defined(EFFV2_BF16)
// bf16 is the top half of an f32: widening is a shift; narrowing rounds to nearest even (NaN kept
// quiet): one conversion instruction from sm_80 on (Ampere, Orin, Hopper), else spelled in integer
// ops — the same bits for every non-NaN value, which the host replay computes the integer way.
__device__ __forceinline__ float ld(T v) { return __uint_as_float((unsigned)v << 16); }
__device__ __forceinline__ T st(float f) {
#if __CUDA_ARCH__ >= 800
    T v;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(v) : "f"(f));
    return v;
#else
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (T)((u >> 16) | 0x40);
    return (T)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}
#else
__device__ __forceinline__ float ld(T v) { return v; }
__device__ __forceinline__ T st(float f) { return f; }
#endif

// Vector path: where the channel count (or, for kernels without channels, the element count) is
// a multiple of VEC, a thread handles VEC neighbouring elements with one wide load or store per
// operand, and the launch has total / VEC threads (the plans pick the same way:
// effv2_runtime::plan::launch::kernel_threads and the training plan's train_threads). Tensors
// start at least 128-byte aligned (the arenas' alignment), so the wide accesses are aligned; the
// GPU faults on a misaligned one, and the host replay checks every one.
#if defined(EFFV2_HOST)
#define EFFV2_CHECK_ALIGNED(p) effv2_host_check_aligned((const void*)(p))
#else
#define EFFV2_CHECK_ALIGNED(p)
#endif
#define VEC 8
struct __align__(16) Vec { T v[VEC]; };
__device__ __forceinline__ Vec vload(const T* p) { EFFV2_CHECK_ALIGNED(p); return *(const Vec*)p; }
__device__ __forceinline__ void vstore(T* p, const Vec& v) { EFFV2_CHECK_ALIGNED(p); *(Vec*)p = v; }

// L neighbouring values from p for kernels compiled for L = VEC (a wide load) and L = 1 (lane 0
// alone, for channel counts off the vector path).
template <int L>
__device__ __forceinline__ Vec load_lanes(const T* p) {
    Vec v;
    if (L == VEC) v = vload(p);
    else v.v[0] = *p;
    return v;
}

// Every kernel is a grid-stride loop: work item i over [0, total), any launch shape.
#define GRID_STRIDE(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long long)blockDim.x * gridDim.x)

// i / d and i % d for element indices, in 32-bit arithmetic while i fits: 64-bit division is a
// long software sequence, and index maths dominated the element-wise kernels.
__device__ __forceinline__ long long div_of(long long i, long long d) {
    return (i < 4294967296LL && d < 4294967296LL) ? (long long)((unsigned)i / (unsigned)d) : i / d;
}
__device__ __forceinline__ int mod_of(long long i, int d) {
    return i < 4294967296LL ? (int)((unsigned)i % (unsigned)d) : (int)(i % d);
}

// Coordinates of element i of an NHWC tensor [N, h, w, c] (32-bit divisions while they fit).
struct Nhwc { long long n; int y, x, ch; };
__device__ __forceinline__ Nhwc nhwc_at(long long i, int h, int w, int c) {
    Nhwc p;
    p.ch = mod_of(i, c);
    long long r = div_of(i, c);
    p.x = mod_of(r, w);
    r = div_of(r, w);
    p.y = mod_of(r, h);
    p.n = div_of(r, h);
    return p;
}

// Row tiles: a kernel applying per-channel values to an NHWC tensor seen as [rows, c] (c a
// multiple of VEC) gives a thread VEC channels of up to `rpt` (at most ROW_TILE) neighbouring rows:
// the channels' values are read once per tile instead of once per row (eight scalar loads per
// row, each touching eight cache lines across a warp, made such kernels L1-bound), and the tile's
// loads are all issued before the first is used. Work item g: channels (g mod c/VEC)·VEC..,
// rows from (g div c/VEC)·rpt; the launch has row_tiles() threads
// (effv2_runtime::plan::launch::row_tile picks rpt).
#define ROW_TILE 4
struct RowTile { long long r0; int ch, n; };
__device__ __forceinline__ int clamp_rpt(int rpt) { return rpt < 1 ? 1 : (rpt > ROW_TILE ? ROW_TILE : rpt); }
__device__ __forceinline__ long long row_tiles(long long rows, int c, int rpt) { return (rows + rpt - 1) / rpt * (c / VEC); }
__device__ __forceinline__ RowTile row_tile_at(long long g, int c, long long rows, int rpt) {
    RowTile t;
    t.ch = mod_of(g, c / VEC) * VEC;
    t.r0 = div_of(g, c / VEC) * rpt;
    long long left = rows - t.r0;
    t.n = left < rpt ? (int)left : rpt;
    return t;
}

// body(tile) for every row tile of a launch over `total` elements of c channels (c a multiple of
// VEC), grid-stride.
template <typename F>
__device__ __forceinline__ void for_each_row_tile(long long total, int c, int rpt, F body) {
    rpt = clamp_rpt(rpt);
    long long rows = div_of(total, c);
    GRID_STRIDE(g, row_tiles(rows, c, rpt)) body(row_tile_at(g, c, rows, rpt));
}

// A row tile's elements mapped through f(value, lane) (lane j: channel ch + j): the tile's `n`
// rows at x + at, x + at + c, ... are all loaded before the first result is written, row r to
// y + out(r) (by default y + at + r·c, the same place; a padded copy elsewhere).
template <typename F, typename O>
__device__ __forceinline__ void tile_map(const T* x, T* y, long long at, int c, int n, F f, O out) {
    Vec v[ROW_TILE];
#pragma unroll
    for (int r = 0; r < ROW_TILE; ++r)
        if (r < n) v[r] = vload(x + at + (long long)r * c);
#pragma unroll
    for (int r = 0; r < ROW_TILE; ++r) {
        if (r >= n) break;
        for (int j = 0; j < VEC; ++j) v[r].v[j] = st(f(ld(v[r].v[j]), j));
        vstore(y + out(r), v[r]);
    }
}
template <typename F>
__device__ __forceinline__ void tile_map(const T* x, T* y, long long at, int c, int n, F f) {
    tile_map(x, y, at, c, n, f, [&](int r) { return at + (long long)r * c; });
}

// tile_map with a second input: f(x value, z value, lane, row of the tile), both tiles loaded
// before the first result is written.
template <typename F, typename O>
__device__ __forceinline__ void tile_map2(const T* x, const T* z, T* y, long long at, int c, int n, F f, O out) {
    Vec v[ROW_TILE], w[ROW_TILE];
#pragma unroll
    for (int r = 0; r < ROW_TILE; ++r) {
        if (r >= n) break;
        v[r] = vload(x + at + (long long)r * c);
        w[r] = vload(z + at + (long long)r * c);
    }
#pragma unroll
    for (int r = 0; r < ROW_TILE; ++r) {
        if (r >= n) break;
        Vec o;
        for (int j = 0; j < VEC; ++j) o.v[j] = st(f(ld(v[r].v[j]), ld(w[r].v[j]), j, r));
        vstore(y + out(r), o);
    }
}
template <typename F>
__device__ __forceinline__ void tile_map2(const T* x, const T* z, T* y, long long at, int c, int n, F f) {
    tile_map2(x, z, y, at, c, n, f, [&](int r) { return at + (long long)r * c; });
}

// Σ of load(k) over k in [0, n), added in order in A (float or double): SUM_LOADS loads issued
// before they are added, so a thread that adds many values one after another (per-channel
// finishes and pools have few threads) waits for memory once per SUM_LOADS of them, not once
// each. The same sum, to the bit, as a plain loop.
#define SUM_LOADS 8
template <typename A, typename Load>
__device__ __forceinline__ A ordered_sum_by(long long n, Load load) {
    A s = 0;
    for (long long k = 0; k < n; k += SUM_LOADS) {
        int m = n - k < SUM_LOADS ? (int)(n - k) : SUM_LOADS;
        A v[SUM_LOADS];
#pragma unroll
        for (int u = 0; u < SUM_LOADS; ++u)
            if (u < m) v[u] = load(k + u);
#pragma unroll
        for (int u = 0; u < SUM_LOADS; ++u)
            if (u < m) s += v[u];
    }
    return s;
}

// The activations, by the codes of effv2_runtime::plan::Act (0 = none): applied by the inference
// kernels and by the training engine's batch norm when an activation is fused into it. Fast
// exponential and division (a few ulp): in 16-bit storage these kernels are as much bound by
// instructions as by memory, and IEEE division costs a check and a slow path per element.
__device__ __forceinline__ float act(float x, int kind) {
    switch (kind) {
        case 1: return __fdividef(x, 1.0f + __expf(-x));
        case 2: return fminf(fmaxf(x, 0.0f), 6.0f);
        case 3: return __fdividef(1.0f, 1.0f + __expf(-x));
        default: return x;
    }
}

// A kernel body compiled once per activation: with_act(kind_code, [&](auto code) { constexpr int
// kind = decltype(code)::value; ... }) runs the body with `kind` a constant, so act() and the
// gradients fold to straight-line code per element (no switch between elements for the scheduler
// to stop at). NVRTC compiles our sources with -default-device, which makes such lambdas device code.
template <int K> struct ActCode { static constexpr int value = K; };
template <typename F>
__device__ __forceinline__ void with_act(int code, F&& body) {
    switch (code) {
        case 1: body(ActCode<1>()); break;
        case 2: body(ActCode<2>()); break;
        case 3: body(ActCode<3>()); break;
        default: body(ActCode<0>()); break;
    }
}
