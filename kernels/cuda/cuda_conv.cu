/* kernels/cuda/cuda_conv.cu: im2col for 1-D convolutions over time and the pair-average pool,
 * bf16 storage with fp32 arithmetic (see kernels/ops.h; CPU twins in kernels/cpu/cpu_conv.c). */
#include "kernels/cuda/cuda_common.cuh"

namespace {

/* out[t, c*K + k] = x[t*stride + k - pad, c]; one thread per output element (coalesced writes). */
__global__ void k_im2col1d(bf16 *__restrict__ out, const bf16 *__restrict__ x, int64_t T_in, int64_t C,
                           int64_t T_out, int K, int stride, int pad) {
    const int64_t W = C * K, n = T_out * W;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i / W, j = i - t * W;
        int64_t c = j / K;
        int k = (int)(j - c * K);
        int64_t s = t * stride + k - pad;
        out[i] = (s >= 0 && s < T_in) ? x[s * C + c] : f2bf(0.f);
    }
}

__global__ void k_avgpool2(bf16 *__restrict__ out, const bf16 *__restrict__ x, int64_t R, int64_t D) {
    const int64_t n = R * D;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / D, d = i - r * D;
        const bf16 *a = x + 2 * r * D + d;
        out[i] = f2bf((bf2f(a[0]) + bf2f(a[D])) * 0.5f);
    }
}

} // namespace

extern "C" osc_status osc_cuda_im2col1d(osc_tensor *out, const osc_tensor *x, int kernel, int stride, int pad) {
    const int64_t T_in = x->ne[0], C = x->ne[x->nd - 1], T_out = out->ne[0];
    const int64_t n = osc_tensor_nelem(out);
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int th = 256;
    k_im2col1d<<<osc_cu_blocks(n, th), th, 0, st>>>((bf16 *)out->data, (const bf16 *)x->data, T_in, C, T_out, kernel,
                                                stride, pad);
    OSC_CU_LAUNCH("im2col1d");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_avgpool2_rows(osc_tensor *out, const osc_tensor *x) {
    const int64_t D = x->ne[x->nd - 1], R = out->ne[0];
    if (R * D == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int th = 256;
    k_avgpool2<<<osc_cu_blocks(R * D, th), th, 0, st>>>((bf16 *)out->data, (const bf16 *)x->data, R, D);
    OSC_CU_LAUNCH("avgpool2_rows");
    return OSC_OK;
}
