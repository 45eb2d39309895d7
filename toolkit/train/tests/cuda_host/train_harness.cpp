// For tests: the inference engine's host harness (its kernels, and stand-ins for cuDNN and cuBLAS;
// path in INFER_HARNESS) plus the training kernels (path in TRAIN_KERNELS_CU), each training
// kernel also behind a host_<kernel> entry that takes CUDA's kernel parameter array, so a training
// launch list replays on the host exactly as the engine hands it to cuLaunchKernel. Activation
// arguments are of the build's type T (f32, or bf16 with EFFV2_BF16).
#include INFER_HARNESS
#include TRAIN_KERNELS_CU

#define CF(i) P(i, const float*)
#define MF(i) P(i, float*)
#define CD(i) P(i, const double*)
#define MD(i) P(i, double*)

extern "C" {
void host_chan_partials(unsigned g, unsigned b, void** p) { LOOP(chan_partials(CT(0), CT(1), CF(2), CF(3), CF(4), CF(5), MD(6), L(7), I(8), I(9), I(10), I(11))) }
void host_chan_partials_masked(unsigned g, unsigned b, void** p) {
    LOOP(chan_partials_masked(CT(0), CT(1), CF(2), CF(3), CF(4), CF(5), CF(6), L(7), MD(8), L(9), I(10), I(11)))
}
void host_chan_regroup(unsigned g, unsigned b, void** p) { LOOP(chan_regroup(CD(0), L(1), I(2), I(3), MD(4))) }
void host_chan_finish(unsigned g, unsigned b, void** p) { LOOP(chan_finish(CD(0), L(1), I(2), P(3, double), MD(4), MF(5), MF(6))) }
void host_bn_finalize(unsigned g, unsigned b, void** p) {
    LOOP(bn_finalize(CD(0), CD(1), MF(2), MF(3), MF(4), MF(5), I(6), L(7), P(8, float), P(9, float)))
}
void host_bn_finish(unsigned g, unsigned b, void** p) {
    LOOP(bn_finish(CD(0), L(1), I(2), P(3, double), MF(4), MF(5), MF(6), MF(7), L(8), P(9, float), P(10, float)))
}
void host_bn_eval_invstd(unsigned g, unsigned b, void** p) { LOOP(bn_eval_invstd(CF(0), MF(1), I(2), P(3, float))) }
void host_bn_apply(unsigned g, unsigned b, void** p) { LOOP(bn_apply(CT(0), MT(1), CF(2), CF(3), CF(4), CF(5), L(6), I(7), I(8), I(9))) }
void host_bn_apply_add(unsigned g, unsigned b, void** p) {
    LOOP(bn_apply_add(CT(0), CT(1), CF(2), L(3), MT(4), CF(5), CF(6), CF(7), CF(8), L(9), I(10), I(11)))
}
void host_apply_mask(unsigned g, unsigned b, void** p) { LOOP(apply_mask(CT(0), CF(1), CT(2), MT(3), L(4), L(5))) }
void host_bn_backward_dx(unsigned g, unsigned b, void** p) {
    LOOP(bn_backward_dx(CT(0), CT(1), CF(2), L(3), CF(4), CF(5), CF(6), CF(7), CD(8), CD(9), MT(10), L(11), I(12), L(13), I(14), I(15)))
}
void host_act_backward(unsigned g, unsigned b, void** p) { LOOP(act_backward(CT(0), CT(1), CT(2), MT(3), L(4), I(5))) }
void host_depthwise_backward_dx(unsigned g, unsigned b, void** p) {
    LOOP(depthwise_backward_dx(CT(0), CT(1), MT(2), L(3), I(4), I(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12)))
}
void host_depthwise_backward_dw(unsigned g, unsigned b, void** p) {
    LOOP(depthwise_backward_dw(CT(0), CT(1), MD(2), L(3), I(4), I(5), I(6), I(7), I(8), I(9), I(10), I(11), I(12), I(13)))
}
void host_depthwise_dw_finish(unsigned g, unsigned b, void** p) { LOOP(depthwise_dw_finish(CD(0), L(1), I(2), MF(3))) }
void host_pool_backward(unsigned g, unsigned b, void** p) { LOOP(pool_backward(CT(0), CT(1), CT(2), MT(3), L(4), I(5), I(6))) }
void host_gate_mul_backward_dgate(unsigned g, unsigned b, void** p) {
    LOOP(gate_mul_backward_dgate(CT(0), CT(1), MT(2), L(3), I(4), I(5)))
}
void host_copy(unsigned g, unsigned b, void** p) { LOOP(copy(CT(0), MT(1), L(2))) }
void host_crop(unsigned g, unsigned b, void** p) { LOOP(crop(CT(0), MT(1), L(2), I(3), I(4), I(5), I(6), I(7), I(8), I(9))) }
void host_rmsprop_step(unsigned g, unsigned b, void** p) {
    LOOP(rmsprop_step(MF(0), CF(1), MF(2), MF(3), L(4), P(5, float), P(6, float), P(7, float), P(8, float), P(9, float)))
}
void host_sgd_step(unsigned g, unsigned b, void** p) { LOOP(sgd_step(MF(0), CF(1), MF(2), L(3), P(4, float), P(5, float), I(6), P(7, float))) }
void host_ema_update(unsigned g, unsigned b, void** p) { LOOP(ema_update(MF(0), CF(1), L(2), P(3, float))) }
}
