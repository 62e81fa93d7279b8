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
    bool grew = false;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float mx = fmaxf(sc[hh], sc[2 + hh]);
        if (NM == 2) mx = fmaxf(mx, fmaxf(sc[4 + hh], sc[6 + hh]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
        const float mn = fmaxf(mr[hh], mx);
        grew |= mn != mr[hh];
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
    /* once the running max settles, most tiles leave it unchanged: skip the 32 multiplies by 1 */
    if (__any_sync(0xffffffffu, grew)) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            o[i][0] *= alpha[0];
            o[i][1] *= alpha[1];
            o[i][2] *= alpha[0];
            o[i][3] *= alpha[1];
        }
    }
}

/* Decode kernels whose warps each end with O^T in 8 C tiles (rows = channels 16i + g and
 * 16i + g + 8 of a 128-dim head, columns = query heads 2t, 2t+1) and the running max / per-lane
 * sum of mma_softmax: write the warp's partial into ws as ob [8 heads][128] floats followed by
 * ml [8 heads][2] (max, sum). */
__device__ __forceinline__ void mma_warp_partial(float *ws, const float (&o)[8][4], const float (&mr)[2],
                                                 float (&lr)[2], int g, int t) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        lr[hh] += __shfl_xor_sync(0xffffffffu, lr[hh], 4);
        lr[hh] += __shfl_xor_sync(0xffffffffu, lr[hh], 8);
        lr[hh] += __shfl_xor_sync(0xffffffffu, lr[hh], 16);
    }
    float *ob = ws, *ml = ws + 8 * 128;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        ob[(2 * t) * 128 + 16 * i + g] = o[i][0];
        ob[(2 * t + 1) * 128 + 16 * i + g] = o[i][1];
        ob[(2 * t) * 128 + 16 * i + g + 8] = o[i][2];
        ob[(2 * t + 1) * 128 + 16 * i + g + 8] = o[i][3];
    }
    if (g == 0) {
        ml[4 * t] = mr[0];
        ml[4 * t + 1] = lr[0];
        ml[4 * t + 2] = mr[1];
        ml[4 * t + 3] = lr[1];
    }
}

/* After a block barrier: merge the NW warps' partials (warp w's at base + w * warp_bytes, as
 * mma_warp_partial wrote them) by log-sum-exp into one split partial of G heads:
 * part_acc[(pi0 + h) * 128 + c], part_ml[(pi0 + h) * 2 + {0, 1}] = (max, sum). */
__device__ __forceinline__ void mma_block_merge(const unsigned char *base, int warp_bytes, int NW, int G,
                                                float *part_acc, float *part_ml, size_t pi0) {
    for (int idx = threadIdx.x; idx < G * 128; idx += blockDim.x) {
        const int h = idx >> 7, c = idx & 127;
        float M = -INFINITY;
        for (int w = 0; w < NW; w++)
            M = fmaxf(M, reinterpret_cast<const float *>(base + (size_t)w * warp_bytes)[8 * 128 + 2 * h]);
        float a = 0.f, L = 0.f;
        if (M != -INFINITY) {
            for (int w = 0; w < NW; w++) {
                const float *wb = reinterpret_cast<const float *>(base + (size_t)w * warp_bytes);
                const float mw = wb[8 * 128 + 2 * h];
                const float wt = mw == -INFINITY ? 0.f : exp2f(mw - M);
                a += wt * wb[h * 128 + c];
                L += wt * wb[8 * 128 + 2 * h + 1];
            }
        }
        part_acc[(pi0 + h) * 128 + c] = a;
        if (c == 0) {
            part_ml[(pi0 + h) * 2] = M;
            part_ml[(pi0 + h) * 2 + 1] = L;
        }
    }
}

#endif
