/* kernels/cuda/cuda_rope.cu: in-place rotary embedding of x[S, H, Dh] (bf16), NeoX half split,
 * plain (pos I32 [S]) or M-RoPE (pos I32 [3, S], sections over the frequencies).
 * As HF does for bf16 models: freq = fp32(pos) * inv_freq[j] in fp32; cos/sin of it in fp32
 * (computed in double and rounded: --use_fast_math would otherwise turn cosf into the
 * inaccurate __cosf for large arguments), times attn_factor, rounded to bf16; then
 * x' = bf16( bf16(x*cos) + bf16(rotate_half(x)*sin) ). One thread per (s, h, j), j < Dh/2.
 * The osc_rope table travels by value as a kernel parameter (~1 KB). */
#include "kernels/cuda/cuda_common.cuh"

namespace {

__global__ void k_rope(bf16 *x, const int32_t *__restrict__ pos, const osc_rope rope, int64_t S, int64_t H,
                       int mrope) {
    const int half = rope.head_dim / 2;
    int64_t n = S * H * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        int64_t sh = i / half;
        int64_t s = sh / H;
        int axis = 0;
        if (mrope) {
            if (j >= rope.mrope_section[0] + rope.mrope_section[1]) axis = 2;
            else if (j >= rope.mrope_section[0]) axis = 1;
        }
        float p = (float)pos[axis * S + s];
        float f = p * rope.inv_freq[j];
        double sd, cd;
        sincos((double)f, &sd, &cd);
        float c = round_bf((float)cd * rope.attn_factor);
        float sn = round_bf((float)sd * rope.attn_factor);
        bf16 *row = x + sh * rope.head_dim;
        float x1 = bf2f(row[j]), x2 = bf2f(row[j + half]);
        float o1 = round_bf(x1 * c) + round_bf(-x2 * sn);
        float o2 = round_bf(x2 * c) + round_bf(x1 * sn);
        row[j] = f2bf(o1);
        row[j + half] = f2bf(o2);
    }
}

} // namespace

extern "C" osc_status osc_cuda_rope(osc_tensor *x, const osc_tensor *pos, const osc_rope *rope) {
    int64_t S = x->ne[0];
    int half = rope->head_dim / 2;
    if (S == 0 || half == 0) return OSC_OK;
    int64_t H = osc_tensor_nelem(x) / (S * rope->head_dim); /* x is [S, H, Dh] */
    if (H == 0) return OSC_OK;
    if (rope->head_dim % 2 || half > OSC_ROPE_MAX_HALF)
        return osc_error(OSC_ERR_INVALID_ARG, "rope: bad head_dim %d", rope->head_dim);
    int mrope = rope->mrope_section[0] > 0;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    int th = 256;
    k_rope<<<osc_cu_blocks(S * H * half, th), th, 0, st>>>((bf16 *)x->data, (const int32_t *)pos->data, *rope, S,
                                                            H, mrope);
    OSC_CU_LAUNCH("k_rope");
    return OSC_OK;
}
