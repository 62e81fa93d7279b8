/* kernels/cuda/cuda_mma.cuh: tensor-core and async-copy primitives (sm_80+ PTX) shared by the
 * kernels that stage tiles through shared memory and multiply them with mma.sync.
 *
 * Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4), each register two 16-bit
 * values, the lower-index element in the low half:
 *   A (16 x 16, row major): r0 = (row g, cols 2t..2t+1), r1 = (row g+8, cols 2t..),
 *                           r2 = (row g, cols 2t+8..),   r3 = (row g+8, cols 2t+8..)
 *   B (16 x 8):             r0 = (rows 2t..2t+1, col g), r1 = (rows 2t+8.., col g)
 *   C (16 x 8, fp32):       c0, c1 = (row g, cols 2t, 2t+1), c2, c3 = (row g+8, same cols)
 * movmatrix.trans turns a C-shaped 8 x 8 half tile (row g, cols 2t..2t+1) into its transpose
 * in the same shape, which is a B register over the tile's rows. */
#ifndef OSC_KERNELS_CUDA_MMA_CUH
#define OSC_KERNELS_CUDA_MMA_CUH

#include <cuda_fp16.h>
#include <stdint.h>

/* 16 bytes global -> shared, asynchronous (cp.async.cg: bypasses L1) */
__device__ __forceinline__ void mma_cp16(void *smem, const void *g) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(g) : "memory");
}
__device__ __forceinline__ void mma_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* wait until at most N committed groups of this thread are still in flight */
template <int N> __device__ __forceinline__ void mma_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void mma_ldsm4(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a)
                 : "memory");
}
__device__ __forceinline__ void mma_ldsm4t(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, const void *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(a)
                 : "memory");
}

/* c += A (f16) * B (f16), fp32 accumulate */
__device__ __forceinline__ void mma_f16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* c += A (bf16) * B (bf16), fp32 accumulate */
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t mma_trans(uint32_t x) {
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

__device__ __forceinline__ uint32_t h2_pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}
__device__ __forceinline__ uint32_t h2_mul(uint32_t a, uint32_t b) {
    __half2 r = __hmul2(*reinterpret_cast<__half2 *>(&a), *reinterpret_cast<__half2 *>(&b));
    return *reinterpret_cast<uint32_t *>(&r);
}
__device__ __forceinline__ uint32_t h2_sub(uint32_t a, uint32_t b) {
    __half2 r = __hsub2(*reinterpret_cast<__half2 *>(&a), *reinterpret_cast<__half2 *>(&b));
    return *reinterpret_cast<uint32_t *>(&r);
}
/* two bf16 (one register) -> two f16 */
__device__ __forceinline__ uint32_t bf2_to_h2(uint32_t x) {
    float lo = __uint_as_float(x << 16), hi = __uint_as_float(x & 0xffff0000u);
    return h2_pack(lo, hi);
}

/* Online softmax over C fragments whose rows are keys and columns query heads (decode
 * attention with the keys as the MMA's M side): fold NM tiles of 16 keys of logits (log2
 * units; sc[4m + {0,1}] key row g, sc[4m + {2,3}] key row g+8, heads 2t, 2t+1) into the
 * running max mr / per-lane sum lr of heads 2t, 2t+1, turn them into probabilities and rescale
 * the output accumulators o (8 C tiles whose columns are the same heads). The max is reduced
 * over the 8 lanes of a column (xor 4, 8, 16); lr stays per lane (sum it over them at the end). */
template <int NM>
__device__ __forceinline__ void mma_softmax(float (&sc)[8], float (&mr)[2], float (&lr)[2], float (&o)[8][4]) {
    float alpha[2];
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float mx = fmaxf(sc[hh], sc[2 + hh]);
        if (NM == 2) mx = fmaxf(mx, fmaxf(sc[4 + hh], sc[6 + hh]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        const float mn = fmaxf(mr[hh], mx);
        alpha[hh] = exp2f(mr[hh] - mn);
        mr[hh] = mn;
        float s = 0.f;
#pragma unroll
        for (int m = 0; m < NM; m++) {
            sc[4 * m + hh] = exp2f(sc[4 * m + hh] - mn);
            sc[4 * m + 2 + hh] = exp2f(sc[4 * m + 2 + hh] - mn);
            s += sc[4 * m + hh] + sc[4 * m + 2 + hh];
        }
        lr[hh] = lr[hh] * alpha[hh] + s;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        o[i][0] *= alpha[0];
        o[i][1] *= alpha[1];
        o[i][2] *= alpha[0];
        o[i][3] *= alpha[1];
    }
}

#endif
