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
/* two bf16 (one register) -> two f16 */
__device__ __forceinline__ uint32_t bf2_to_h2(uint32_t x) {
    float lo = __uint_as_float(x << 16), hi = __uint_as_float(x & 0xffff0000u);
    return h2_pack(lo, hi);
}

/* Online softmax over C fragments whose rows are keys and columns query heads (decode
 * attention with the keys as the MMA's M side): fold NM tiles of 16 keys of logits (log2
 * units; sc[4m + {0,1}] key row g, sc[4m + {2,3}] key row g+8, heads 2t, 2t+1) into the
 * running max mr / per-lane sum lr of heads 2t, 2t+1, turn them into probabilities and rescale
 * the output accumulators o (8 C tiles whose columns are the same heads; zx, if given, two more
 * fp32 values of columns 2t, 2t+1). The max is reduced over the 8 lanes of a column (xor 4, 8,
 * 16); lr stays per lane (sum it over them at the end). */
template <int NM>
__device__ __forceinline__ void mma_softmax(float (&sc)[8], float (&mr)[2], float (&lr)[2], float (&o)[8][4],
                                            float *zx = nullptr) {
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
        if (zx) zx[0] *= alpha[0], zx[1] *= alpha[1];
    }
}

/* Decode kernels whose warps each end with O^T in 8 C tiles (rows = channels 16i + g and
 * 16i + g + 8 of a 128-dim head, columns = query heads 2t, 2t+1) and the running max / per-lane
 * sum of mma_softmax: the block's NW warps merge into one split partial of G heads,
 * part_acc[(pi0 + h) * 128 + c], part_ml[(pi0 + h) * 2 + {0, 1}] = (max, sum), by log-sum-exp.
 * Three short steps instead of a loop of dependent shared loads and exp2 per output (the old
 * merge took 1.4 us median per block at the end of k_kvq_mma's (1,128K) launch, H100 block
 * timings, session 13): every warp publishes its (max, sum) per head; rescales its own
 * registers to the block's max while writing them to its ring area (base + warp * warp_bytes,
 * head rows of MMA_OB_LD floats so the 4 t-lanes of a g hit different banks); then thread
 * (h, 4 channels) adds the NW warps' float4 in warp order and stores it. The ring must be
 * drained. Every thread of the block calls it (two block barriers). */
const int MMA_OB_LD = 132;
template <int NW>
__device__ __forceinline__ void mma_block_partial(unsigned char *base, int warp_bytes, const float (&o)[8][4],
                                                  const float (&mr)[2], float (&lr)[2], int G, float *part_acc,
                                                  float *part_ml, size_t pi0) {
    __shared__ float wml[NW][8][2]; /* warp, head: (max, sum) */
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        lr[hh] += __shfl_xor_sync(0xffffffffu, lr[hh], 4);
        lr[hh] += __shfl_xor_sync(0xffffffffu, lr[hh], 8);
        lr[hh] += __shfl_xor_sync(0xffffffffu, lr[hh], 16);
        if (g == 0) wml[warp][2 * t + hh][0] = mr[hh], wml[warp][2 * t + hh][1] = lr[hh];
    }
    __syncthreads();
    float f[2];
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NW; w++) M = fmaxf(M, wml[w][2 * t + hh][0]);
        f[hh] = mr[hh] == -INFINITY ? 0.f : exp2f(mr[hh] - M);
    }
    float *ob = reinterpret_cast<float *>(base + (size_t)warp * warp_bytes);
    if (2 * t < G) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            ob[(2 * t) * MMA_OB_LD + 16 * i + g] = o[i][0] * f[0];
            ob[(2 * t + 1) * MMA_OB_LD + 16 * i + g] = o[i][1] * f[1];
            ob[(2 * t) * MMA_OB_LD + 16 * i + g + 8] = o[i][2] * f[0];
            ob[(2 * t + 1) * MMA_OB_LD + 16 * i + g + 8] = o[i][3] * f[1];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * 32; idx += NW * 32) {
        const int h = idx >> 5, c4 = (idx & 31) * 4;
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int w = 0; w < NW; w++) {
            const float4 x = *reinterpret_cast<const float4 *>(base + (size_t)w * warp_bytes +
                                                               (size_t)(h * MMA_OB_LD + c4) * 4);
            a.x += x.x, a.y += x.y, a.z += x.z, a.w += x.w;
        }
        *reinterpret_cast<float4 *>(part_acc + (pi0 + h) * 128 + c4) = a;
        if (c4 == 0) {
            float M = -INFINITY, L = 0.f;
#pragma unroll
            for (int w = 0; w < NW; w++) M = fmaxf(M, wml[w][h][0]);
            if (M != -INFINITY)
#pragma unroll
                for (int w = 0; w < NW; w++)
                    if (wml[w][h][0] != -INFINITY) L = fmaf(wml[w][h][1], exp2f(wml[w][h][0] - M), L);
            part_ml[(pi0 + h) * 2] = M;
            part_ml[(pi0 + h) * 2 + 1] = L;
        }
    }
}

#endif
