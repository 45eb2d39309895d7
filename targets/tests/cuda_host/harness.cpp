// The CUDA engine's kernels (kernels.cu, f32 build) compiled as C++ for the host (see
// runtimes/src/backends/cuda/host_shim.h): each kernel runs over its whole grid, one thread at a
// time. Entry points take CUDA's kernel parameter array (pointers to each argument), exactly what
// the engine hands cuLaunchKernel.
#include HOST_SHIM
#include KERNELS_CU

#define I(i) P(i, int)
#define L(i) P(i, long long)
#define CT(i) P(i, const T*)
#define MT(i) P(i, T*)

extern "C" {
void host_nchw_to_nhwc(unsigned g, unsigned b, void** p) { LOOP(nchw_to_nhwc(P(0, const float*), MT(1), L(2), I(3), I(4))) }
void host_to_f32(unsigned g, unsigned b, void** p) { LOOP(to_f32(CT(0), P(1, float*), L(2))) }
void host_bias_act(unsigned g, unsigned b, void** p) { LOOP(bias_act(MT(0), P(1, const float*), L(2), I(3), I(4))) }
void host_act_only(unsigned g, unsigned b, void** p) { LOOP(act_only(CT(0), MT(1), L(2), I(3))) }
void host_depthwise(unsigned g, unsigned b, void** p) {
    LOOP(depthwise(CT(0), CT(1), P(2, const float*), MT(3), L(4), I(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12), I(13), I(14)))
}
void host_pool(unsigned g, unsigned b, void** p) { LOOP(pool(CT(0), MT(1), L(2), I(3), I(4))) }
void host_gate_mul(unsigned g, unsigned b, void** p) { LOOP(gate_mul(CT(0), CT(1), MT(2), L(3), I(4), I(5))) }
void host_add(unsigned g, unsigned b, void** p) { LOOP(add(CT(0), CT(1), MT(2), L(3))) }
void host_pad(unsigned g, unsigned b, void** p) { LOOP(pad(CT(0), MT(1), L(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9))) }
}
