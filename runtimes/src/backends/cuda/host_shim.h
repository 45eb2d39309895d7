// CUDA kernels compiled as host C++, for tests on machines without a GPU. Our kernels use no
// shared memory and no barriers, so running a launch's threads one after another computes what
// the GPU does. Either loop a kernel over a whole launch with LOOP (called with the kernel
// parameter array cuLaunchKernel gets), or call it directly after effv2_host_thread() set the
// one thread it should play.
#include <cmath>
#include <cstring>

#define EFFV2_HOST 1

// 16-bit storage conversions for the half and bfloat16 builds, rounding to nearest even as the
// device does (cvt.rn.f16.f32; kernels.cu's bf16 narrowing).
#if defined(EFFV2_HALF)
inline float effv2_host_ld16(unsigned short v) { _Float16 h; std::memcpy(&h, &v, 2); return (float)h; }
inline unsigned short effv2_host_st16(float f) { _Float16 h = (_Float16)f; unsigned short v; std::memcpy(&v, &h, 2); return v; }
#elif defined(EFFV2_BF16)
inline float effv2_host_ld16(unsigned short v) { unsigned u = (unsigned)v << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned short effv2_host_st16(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
#endif

struct Dim { unsigned x, y, z; };
static Dim blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __expf expf
#define __fdividef(a, b) ((a) / (b))
#define __align__(n) alignas(n)
#include <cstdint>
#include <cstdio>
#include <cstdlib>
// A misaligned wide access faults on the GPU: make it fail the host replay loudly too.
inline void effv2_host_check_aligned(const void* p) {
    if ((uintptr_t)p % 16) {
        std::fprintf(stderr, "misaligned 16-byte access at %p\n", p);
        std::abort();
    }
}

extern "C" void effv2_host_thread(unsigned block, unsigned thread, unsigned block_dim, unsigned grid_dim) {
    blockIdx.x = block;
    threadIdx.x = thread;
    blockDim.x = block_dim;
    gridDim.x = grid_dim;
}

// Argument i of a kernel parameter array, as type ty.
#define P(i, ty) (*(ty*)p[i])
// `call` for every thread of a g-block, b-thread launch.
#define LOOP(call)                                              \
    for (unsigned bi = 0; bi < g; ++bi)                         \
        for (unsigned ti = 0; ti < b; ++ti) {                   \
            effv2_host_thread(bi, ti, b, g);                    \
            call;                                               \
        }
