/* kernels/cuda/cuda_rope.cu: in-place rotary embedding of x[S, H, Dh] (bf16), NeoX half split,
 * plain (pos I32 [S]) or M-RoPE (pos I32 [3, S], sections over the frequencies).
 * As HF does for bf16 models: freq = fp32(pos) * inv_freq[j] in fp32; cos/sin of it in fp32
 * (computed in double and rounded: --use_fast_math would otherwise turn cosf into the
 * inaccurate __cosf for large arguments), times attn_factor, rounded to bf16; then
 * x' = bf16( bf16(x*cos) + bf16(rotate_half(x)*sin) ). One thread per (s, h, j), j < Dh/2.
 * The osc_rope table travels by value as a kernel parameter (~1 KB). */
#include "kernels/cuda/cuda_common.cuh"

namespace {

/* cos/sin of pair j at position p, as HF computes them for bf16 models */
__device__ __forceinline__ void rope_cs(const osc_rope &rope, float p, int j, float &c, float &sn) {
    float f = p * rope.inv_freq[j];
    double sd, cd;
    sincos((double)f, &sd, &cd);
    c = round_bf((float)cd * rope.attn_factor);
    sn = round_bf((float)sd * rope.attn_factor);
}
/* the rotated pair (x1, x2) */
__device__ __forceinline__ void rope_rot(float c, float sn, float x1, float x2, float &o1, float &o2) {
    o1 = round_bf(x1 * c) + round_bf(-x2 * sn);
    o2 = round_bf(x2 * c) + round_bf(x1 * sn);
}

__device__ __forceinline__ int rope_axis(const osc_rope &rope, int mrope, int j) {
    if (!mrope) return 0;
    if (j >= rope.mrope_section[0] + rope.mrope_section[1]) return 2;
    return j >= rope.mrope_section[0] ? 1 : 0;
}

__global__ void k_rope(bf16 *x, const int32_t *__restrict__ pos, const osc_rope rope, int64_t S, int64_t H,
                       int mrope) {
    pdl_enter();
    const int half = rope.head_dim / 2;
    int64_t n = S * H * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        int64_t sh = i / half;
        int64_t s = sh / H;
        bf16 *row = x + sh * rope.head_dim;
        float c, sn, o1, o2;
        rope_cs(rope, (float)pos[rope_axis(rope, mrope, j) * S + s], j, c, sn);
        rope_rot(c, sn, bf2f(row[j]), bf2f(row[j + half]), o1, o2);
        row[j] = f2bf(o1);
        row[j + half] = f2bf(o2);
    }
}

/* the decode step's RoPE and cache append in one launch, one thread per item: threads
 * [0, B*(Hq+Hkv)*half) rotate pair j of a q or k head of row b in place (k heads also go to row
 * lens1[b]-1 of tab[b]); the threads after them copy v row b to row lens1[b]-1 of
 * tab[tab_stride + b], 8 values each. The positions are decode-step state written at least two
 * launches back (or copied before the launch), so cos/sin are computed before waiting for the
 * previous launch (PDL). */
__global__ void k_rope_append(bf16 *q, bf16 *k, const bf16 *__restrict__ v, int64_t qs, int64_t ks, int64_t vs,
                              const int32_t *__restrict__ pos, int pos_stride, const osc_rope rope, int mrope, int Hq,
                              int Hkv, bf16 *const *__restrict__ tab, int tab_stride, const int32_t *__restrict__ lens1,
                              int B) {
    const int D = rope.head_dim, half = D / 2, H = Hq + Hkv;
    const int64_t nr = (int64_t)B * H * half, nv = (int64_t)B * Hkv * D / 8;
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i < nr) {
        const int j = (int)(i % half), h = (int)((i / half) % H), b = (int)(i / ((int64_t)half * H));
        float c, sn;
        rope_cs(rope, (float)pos[rope_axis(rope, mrope, j) * pos_stride + b], j, c, sn);
        pdl_enter();
        bf16 *row = h < Hq ? q + b * qs + (int64_t)h * D : k + b * ks + (int64_t)(h - Hq) * D;
        float o1, o2;
        rope_rot(c, sn, bf2f(row[j]), bf2f(row[j + half]), o1, o2);
        const bf16 b1 = f2bf(o1), b2 = f2bf(o2);
        row[j] = b1;
        row[j + half] = b2;
        if (h >= Hq) {
            bf16 *dst = tab[b] + (int64_t)(lens1[b] - 1) * Hkv * D + (int64_t)(h - Hq) * D;
            dst[j] = b1;
            dst[j + half] = b2;
        }
    } else if (i < nr + nv) {
        pdl_enter();
        const int64_t e = (i - nr) * 8, b = e / ((int64_t)Hkv * D), c = e % ((int64_t)Hkv * D);
        bf16 *dst = tab[tab_stride + b] + (int64_t)(lens1[b] - 1) * Hkv * D + c;
        *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(v + b * vs + c);
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
    OSC_CU_CHECK(osc_launch(k_rope, dim3(osc_cu_blocks(S * H * half, th)), dim3(th), 0, st, (bf16 *)x->data,
                            (const int32_t *)pos->data, *rope, S, H, mrope));
    OSC_CU_LAUNCH("k_rope");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_rope_kv_append(void *q, void *k, const void *v, int64_t q_stride, int64_t k_stride,
                                              int64_t v_stride, const int32_t *pos, int pos_stride,
                                              const osc_rope *rope, int Hq, int Hkv, void *const *tab, int tab_stride,
                                              const int32_t *lens1, int B) {
    const int D = rope->head_dim;
    if (B <= 0) return OSC_OK;
    if (D % 8 || D / 2 > OSC_ROPE_MAX_HALF || ((v_stride | q_stride | k_stride) & 7) || ((uintptr_t)v & 15u))
        return osc_error(OSC_ERR_INVALID_ARG, "rope + kv append: head_dim %d, unaligned v rows", D);
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int64_t n = (int64_t)B * (Hq + Hkv) * (D / 2) + (int64_t)B * Hkv * D / 8;
    const int th = 256;
    if ((n + th - 1) / th > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "rope + kv append: batch too large");
    OSC_CU_CHECK(osc_launch(k_rope_append, dim3((unsigned)((n + th - 1) / th)), dim3(th), 0, st, (bf16 *)q, (bf16 *)k,
                            (const bf16 *)v, q_stride, k_stride, v_stride, pos, pos_stride, *rope,
                            rope->mrope_section[0] > 0, Hq, Hkv, (bf16 *const *)tab, tab_stride, lens1, B));
    OSC_CU_LAUNCH("k_rope_append");
    return OSC_OK;
}
