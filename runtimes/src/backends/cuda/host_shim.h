// CUDA kernels compiled as host C++, for tests on machines without a GPU. Our kernels use no
// shared memory and no barriers, so running a launch's threads one after another computes what
// the GPU does. Either loop a kernel over a whole launch with LOOP (called with the kernel
// parameter array cuLaunchKernel gets), or call it directly after effv2_host_thread() set the
// one thread it should play.
#include <cmath>

struct Dim { unsigned x, y, z; };
static Dim blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __expf expf

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
