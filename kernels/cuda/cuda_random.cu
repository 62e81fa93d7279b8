// kernels/cuda/cuda_random.cu: deterministic uniform fill on the device, the same numbers as
// kernels/cpu/cpu_random.c (shared hash), rounded to bf16.
#include "../fill_hash.h"
#include "cuda_common.cuh"

// t [n] bf16: t[i] = bf16(lo + (hi - lo) * u(seed, i)).
__global__ void fill_uniform_bf16(__nv_bfloat16 *t, int64_t n, uint64_t seed, float lo, float hi) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        t[i] = __float2bfloat16_rn(lo + (hi - lo) * osc_hash_uniform(seed, (uint64_t)i));
}
__global__ void fill_uniform_f32(float *t, int64_t n, uint64_t seed, float lo, float hi) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        t[i] = lo + (hi - lo) * osc_hash_uniform(seed, (uint64_t)i);
}

extern "C" osc_status osc_cuda_fill_uniform(osc_tensor *t, uint64_t seed, float lo, float hi) {
    int64_t n = osc_tensor_nelem(t);
    if (n == 0) return OSC_OK;
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65536) blocks = 65536;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    if (t->dt == OSC_BF16)
        fill_uniform_bf16<<<(unsigned)blocks, 256, 0, st>>>((__nv_bfloat16 *)t->data, n, seed, lo, hi);
    else
        fill_uniform_f32<<<(unsigned)blocks, 256, 0, st>>>((float *)t->data, n, seed, lo, hi);
    OSC_CU_LAUNCH("fill_uniform");
    return OSC_OK;
}
