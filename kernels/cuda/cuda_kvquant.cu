/* kernels/cuda/cuda_kvquant.cu: the OScaR / KIVI 2- and 4-bit KV cache on the GPU (layout and
 * contracts in kvquant_launch.h; the CPU reference is kvcache/kv_quant.c).
 *
 * Pack (osc_cuda_kv_pack): one kernel, k_kv_pack, one block per group of 32 tokens and all
 *   KV heads: token norms (the fast Walsh-Hadamard transform in registers: in-lane butterflies,
 *   then shfl_xor across lanes, the same butterflies in the same order as osc_kvq_hadamard, so
 *   bit-identical; times 1/sqrt(hd); sum of squares over all heads in fp64 as the CPU), then
 *   per head the rotated, normalised rows in shared fp32 and one thread per (channel, code
 *   word) for min/max, range, codes; then V, one warp per (token, head) row.
 *   Divisions use __fdiv_rn (the library builds with --use_fast_math) so every rounding
 *   matches kv_quant.c. hd = 128 (every model we load) takes k_kv_pack128 instead: 16
 *   channels per lane, one rotation per key row, reciprocal-and-correct divisions (see there);
 *   2.8x faster, the same codes and params on the tests' data. At 2 bits it writes the codes
 *   in the fragment order of k_kvq_mma (kv_quant.h), reordered through shared memory.
 *
 * Decode attention (osc_cuda_kv_decode_attn): flash decoding, split-K. hd 128 at 2 bits runs
 *   k_kvq_mma (tensor cores, below); the other shapes (hd 256, 4 bits):
 *   k_kvq_decode<HD, BITS, GM>: grid (splits + residual, Hkv), 4 warps per block. A block
 *   takes a contiguous range of 32-token groups of one KV head for all G = Hq/Hkv query heads
 *   (GM = G rounded up to 1/2/4/8); its warps take every 4th group. Per group, each lane
 *   issues 16-byte loads of the packed K words, K params, V words, V params (coalesced,
 *   prefetched one group ahead into registers), parks them in the warp's shared tiles
 *   (rows padded against bank conflicts) and then:
 *     K (lane = token): dot_h = sum_c (q_h,c * S'_c) * f_c + sum_c q_h,c * Z'_c with
 *       f = 1 + code/2^bits built from the code bits by one funnel shift + one LOP3 (no int->float
 *       conversion), S' = 2^bits * scale, Z' = zero - S' (so code*scale+zero = f*S'+Z'); the
 *       q*S' row lives in shared (broadcast reads). logit (log2 units) = n_t * dot.
 *     online softmax per head over the 32 tokens (running max, per-lane sum), p -> shared.
 *     V (lane = hd/32 consecutive channels): v = f*S'+Z' once per token, acc_h += p_h,t * v.
 *   The residual window (bf16, full precision) takes up to 4 more splits (dq_nrs, dq_budget).
 *   Warps merge inside the block by log-sum-exp, one partial (m, l, acc[hd]) per block and
 *   query head goes to scratch, and k_kvq_combine merges the splits. */
#include "kernels/cuda/cuda_common.cuh"

#include <cuda_fp16.h>
#include <math.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_mma.cuh"

extern "C" {
#include "kernels/cuda/kvquant_launch.h"
#include "kvcache/kv_quant.h"
}

namespace {

const float kLog2e = 1.4426950408889634f;

/* ------------------------------------------------------------------------------------------ */
/* shared helpers                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* x[E] = channels lane*E .. lane*E+E-1 of one hd = 32*E vector: Sylvester-order butterflies,
 * half-width h = 1, 2, ... (in-lane while h < E, then across lanes), as osc_kvq_hadamard. */
template <int E> __device__ __forceinline__ void fwht_warp(float (&x)[E], int lane) {
#pragma unroll
    for (int h = 1; h < E; h <<= 1) {
#pragma unroll
        for (int j = 0; j < E; j++)
            if (!(j & h)) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    }
#pragma unroll
    for (int m = 1; m < 32; m <<= 1) {
        bool up = (lane & m) != 0;
#pragma unroll
        for (int j = 0; j < E; j++) {
            float p = __shfl_xor_sync(0xffffffffu, x[j], m);
            x[j] = up ? __fsub_rn(p, x[j]) : __fadd_rn(x[j], p);
        }
    }
}

/* E consecutive bf16 -> float (16-byte aligned for E % 8 == 0, 8-byte for E == 4) */
template <int E> __device__ __forceinline__ void load_bf16(const bf16 *p, float (&x)[E]) {
    if constexpr (E % 8 == 0) {
#pragma unroll
        for (int j = 0; j < E; j += 8) {
            uint4 u = *reinterpret_cast<const uint4 *>(p + j);
            const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __bfloat1622float2(b[i]);
                x[j + 2 * i] = f.x;
                x[j + 2 * i + 1] = f.y;
            }
        }
    } else if constexpr (E == 4) {
        uint2 u = *reinterpret_cast<const uint2 *>(p);
        const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&u);
        float2 f0 = __bfloat1622float2(b[0]), f1 = __bfloat1622float2(b[1]);
        x[0] = f0.x; x[1] = f0.y; x[2] = f1.x; x[3] = f1.y;
    } else {
#pragma unroll
        for (int j = 0; j < E; j++) x[j] = bf2f(p[j]);
    }
}

/* osc_kvq_range on the device (same rounding). Returns s (float of the fp16 scale), its
 * reciprocal rs = 1 / s, zint, and the fp16 bits of (scale, zero). */
__device__ __forceinline__ void kv_range(float lo, float hi, int bits, float *s_out, float *rs_out, int *zint_out,
                                         uint32_t *prm) {
    if (!(hi > lo)) {
        if (lo == 0.0f || isnan(lo)) {
            lo = -1.0f;
            hi = 1.0f;
        } else {
            float e = __fdiv_rn(fabsf(lo), 1024.0f);
            float c = lo;
            lo = __fsub_rn(c, e);
            hi = __fadd_rn(c, e);
        }
    }
    float v = __fmul_rn(__fsub_rn(hi, lo), bits == 2 ? 1.0f / 3.0f : 1.0f / 15.0f); /* fp32 1 / qmax */
    unsigned short s16;
    if (!(v < 65504.0f)) s16 = 0x7bffu;
    else {
        s16 = __half_as_ushort(__float2half_rn(v));
        if (__half2float(__ushort_as_half(s16)) < v) s16++;
    }
    float s = __half2float(__ushort_as_half(s16));
    const float rs = __frcp_rn(s);
    float zr = rintf(__fmul_rn(-lo, rs));
    zr = fminf(fmaxf(zr, -OSC_KVQ_ZINT_MAX), OSC_KVQ_ZINT_MAX); /* as osc_kvq_range */
    int zint = (int)zr;
    /* zint == 0 gives +0 (the CPU build folds -(float)zint to (float)-zint: +0, not -0) */
    float zf = zint == 0 ? 0.0f : __fmul_rn(-(float)zint, s);
    unsigned short z16 = __half_as_ushort(__float2half_rn(zf));
    *s_out = s;
    *rs_out = rs;
    *zint_out = zint;
    *prm = (uint32_t)s16 | ((uint32_t)z16 << 16);
}

/* kv_quant.c's code rule: rs = 1 / s (kv_range), mz = M + zint (kv_mz). The clamped value's fp32 bits
 * are those of M plus the code. */
__device__ __forceinline__ float kv_code_f(float x, float rs, float mz, int qmax) {
    return fminf(fmaxf(__fmaf_rn(x, rs, mz), OSC_KVQ_MAGIC), OSC_KVQ_MAGIC + (float)qmax);
}
__device__ __forceinline__ uint32_t kv_code(float x, float rs, float mz, int qmax) {
    return __float_as_uint(kv_code_f(x, rs, mz, qmax)) - __float_as_uint(OSC_KVQ_MAGIC);
}
__device__ __forceinline__ float kv_mz(int zint) { return __fadd_rn(OSC_KVQ_MAGIC, (float)zint); }

/* ------------------------------------------------------------------------------------------ */
/* pack                                                                                         */
/* ------------------------------------------------------------------------------------------ */
const int PK_THREADS = 256;

/* The output group of input group gi: gi itself, or with a block table its group in its page,
 * whose offset is added to the five output pointers. */
__device__ __forceinline__ int pk_group(int gi, const int *bt, int gpp, long long pgb, int g_first,
                                        uint32_t *__restrict__ &kq, uint16_t *__restrict__ &kp,
                                        uint32_t *__restrict__ &vq, uint16_t *__restrict__ &vp,
                                        float *__restrict__ &kn) {
    if (!bt) return gi;
    const int ga = g_first + gi, pi = ga / gpp;
    const size_t po = (size_t)__ldg(bt + pi) * (size_t)pgb;
    kq = reinterpret_cast<uint32_t *>(reinterpret_cast<char *>(kq) + po);
    kp = reinterpret_cast<uint16_t *>(reinterpret_cast<char *>(kp) + po);
    vq = reinterpret_cast<uint32_t *>(reinterpret_cast<char *>(vq) + po);
    vp = reinterpret_cast<uint16_t *>(reinterpret_cast<char *>(vp) + po);
    kn = reinterpret_cast<float *>(reinterpret_cast<char *>(kn) + po);
    return ga - pi * gpp;
}

/* one key row's E channels of this lane, through the butterflies when rotate, times f */
template <int E>
__device__ __forceinline__ void pk_row(float (&x)[E], const bf16 *row, int rotate, float f, int lane) {
    load_bf16<E>(row + lane * E, x);
    if (rotate) fwht_warp<E>(x, lane);
#pragma unroll
    for (int i = 0; i < E; i++) x[i] = __fmul_rn(x[i], f);
}

/* One block per group of 32 tokens, all KV heads (the whole pack is this one kernel):
 *   1. token norms (norm_scale): warp w takes tokens w, w+8, ..; per head the lane's E channels
 *      are rotated in registers (fwht_warp, times 1/sqrt(hd)) and squared into an fp64 sum,
 *      reduced over the lanes: kn[t] (1.0 without norm_scale);
 *   2. per head: the 32 rows again (from L2), through the butterflies and times the token's
 *      factor (osc_kvq_khat), into shared fp32 [32][hd + 1]; then one thread per (channel,
 *      code word): min / max over the 32 tokens,
 *      range, the word's codes (and the params, from the word-0 thread);
 *   3. V: one warp per (token, head) row: per 32-channel group warp min / max, codes, words
 *      OR-reduced by shuffles.
 * Arithmetic and order as kv_quant.c (fp64 norm, the factor by __fdiv_rn), so codes and params
 * are bit-identical. */
template <int E, int BITS>
__global__ void __launch_bounds__(PK_THREADS)
k_kv_pack(const bf16 *__restrict__ k, const bf16 *__restrict__ v, int Hkv, int rotate, int norm_scale, float rsq,
          uint32_t *__restrict__ kq, uint16_t *__restrict__ kp, uint32_t *__restrict__ vq, uint16_t *__restrict__ vp,
          float *__restrict__ kn, const int *__restrict__ bt, int gpp, long long pgb, int g_first) {
    extern __shared__ float xs[]; /* [32][hd + 1] | key factors [32] */
    const int hd = 32 * E, LD = hd + 1, NW = PK_THREADS / 32;
    const int gi = blockIdx.x; /* input group: tokens 32 gi .. of k / v */
    const int g = pk_group(gi, bt, gpp, pgb, g_first, kq, kp, vq, vp, kn); /* output group */
    k += (size_t)gi * 32 * Hkv * hd;
    v += (size_t)gi * 32 * Hkv * hd;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *kns = xs + 32 * LD;
    /* 1. norms */
    for (int j = warp; j < 32; j += NW) {
        const size_t t = (size_t)g * 32 + j;
        float r = 1.0f;
        if (norm_scale) {
            double ss = 0.0;
#pragma unroll 4
            for (int h = 0; h < Hkv; h++) {
                float x[E];
                pk_row<E>(x, k + ((size_t)j * Hkv + h) * hd, rotate, rotate ? rsq : 1.0f, lane);
#pragma unroll
                for (int i = 0; i < E; i++) ss = __dadd_rn(ss, __dmul_rn((double)x[i], (double)x[i]));
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
            r = (float)__dsqrt_rn(ss);
            if (!(r > 0.0f) || isinf(r)) r = 1.0f;
        }
        if (lane == 0) { /* the key's one factor, as osc_kvq_khat */
            kns[j] = norm_scale ? __fdiv_rn(rotate ? rsq : 1.0f, r) : rotate ? rsq : 1.0f;
            kn[t] = r;
        }
    }
    __syncthreads();
    /* 2. K per head */
    const int per = 32 / BITS, qmax = (1 << BITS) - 1;
    for (int h = 0; h < Hkv; h++) {
#pragma unroll
        for (int j = warp; j < 32; j += NW) {
            float x[E];
            pk_row<E>(x, k + ((size_t)j * Hkv + h) * hd, rotate, kns[j], lane);
#pragma unroll
            for (int i = 0; i < E; i++) xs[j * LD + lane * E + i] = x[i];
        }
        __syncthreads();
        const size_t blk = (size_t)g * Hkv + h;
        for (int idx = threadIdx.x; idx < hd * BITS; idx += PK_THREADS) {
            const int c = idx % hd, w = idx / hd;
            float lo = INFINITY, hi = -INFINITY;
#pragma unroll 8
            for (int j = 0; j < 32; j++) {
                const float x = xs[j * LD + c];
                lo = fminf(lo, x);
                hi = fmaxf(hi, x);
            }
            float sc, rs;
            int zint;
            uint32_t prm;
            kv_range(lo, hi, BITS, &sc, &rs, &zint, &prm);
            if (w == 0) reinterpret_cast<uint32_t *>(kp)[blk * hd + c] = prm;
            const float mz = kv_mz(zint);
            uint32_t word = 0;
#pragma unroll
            for (int e = 0; e < per; e++) word |= kv_code(xs[(w * per + e) * LD + c], rs, mz, qmax) << (BITS * e);
            kq[(blk * BITS + w) * hd + c] = word;
        }
        __syncthreads();
    }
    /* 3. V rows */
    const int vw = hd * BITS / 32;
#pragma unroll 2
    for (int r = warp; r < 32 * Hkv; r += NW) {
        const size_t row = (size_t)g * 32 * Hkv + r; /* token-major: [token][head] */
        const bf16 *x = v + (size_t)r * hd;
        uint32_t *words = vq + row * vw;
        uint32_t *prm = reinterpret_cast<uint32_t *>(vp) + row * (hd / 32);
        float xr[E]; /* the row's loads first, all in flight */
#pragma unroll
        for (int gi = 0; gi < E; gi++) xr[gi] = bf2f(x[gi * 32 + lane]);
#pragma unroll
        for (int gi = 0; gi < E; gi++) {
            const float xv = xr[gi];
            float lo = xv, hi = xv;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
                hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
            }
            float sc, rs;
            int zint;
            uint32_t pr;
            kv_range(lo, hi, BITS, &sc, &rs, &zint, &pr);
            const float mz = kv_mz(zint);
            uint32_t word = kv_code(xv, rs, mz, qmax) << (BITS * (lane % per));
#pragma unroll
            for (int o = 1; o < per; o <<= 1) word |= __shfl_xor_sync(0xffffffffu, word, o);
            if (lane % per == 0) words[gi * BITS + lane / per] = word;
            if (lane == 0) prm[gi] = pr;
        }
    }
}

/* ---- hd = 128: the pack with a group a thread ------------------------------------------- */
/* The general kernel above spends ~880 warp instructions per (token, head) row (ncu, H200):
 * every key row is rotated twice with 4 channels per lane (5 levels of shuffles), V's groups
 * are reduced across all 32 lanes. Here a key row is read by 8 lanes, 4 rows per warp: lane j
 * has channels 8j..8j+7 and 64+8j..64+8j+7, so each of its two 16-byte loads is one coalesced
 * 128-byte piece of the row per 8 lanes (16 consecutive channels per lane took two loads that
 * each touched every sector of the row twice); its butterflies run in registers, half-widths 1,
 * 2, 4 in the lane and the rest after a transpose through the tile (PK_KC). A key element is one
 * multiply after the butterflies (the token's factor, as osc_kvq_khat), a code 2 instructions
 * (4 with clamps, kv_words16); the token norm comes from the unrotated key (H / sqrt(hd) is
 * orthonormal: ||k_rot||^2 = hd rsq^2 ||k||^2 in fp64, within an fp32 ulp of the norm of the
 * rotated values), so each key row is rotated once. Block: 32 tokens, all heads, 256 threads;
 * two heads a pass, the rotated, normalised rows go through two shared [32][PK_LD] tiles to one
 * thread per (channel, head); a V group (32 channels of a row) is one lane's. */
/* A tile row (one token's rotated, scaled key) is 8 chunks of PK_KC floats: chunk m holds the 16
 * channels c = m (mod 8) at k = c / 8. The same places first take the row after the butterflies
 * of half-widths 1, 2, 4 (lane j's channels 8j + i, 64 + 8j + i: 16 scalar stores), and lane j
 * reads chunk j back as 4 float4: channels j + 8k, whose butterflies of half-widths 8 .. 64 are
 * then in registers (k's bits). That is 16 stores and 4 loads where three levels of shuffles
 * took 48 SHFL and 48 FFMA. Banks: a row is 168 = 8 (mod 32) floats, so the 4 rows of a warp's
 * scalar stores fall on 4 different 8-bank runs; a chunk is 20 floats, so the 8 chunks start on
 * 8 different bank quads: the float4 accesses of a row, and the column reads of 32 consecutive
 * channels (8 chunks x 4 neighbouring k), touch every bank once. */
const int PK_KC = 20, PK_LD = 168, PK_TILE = 32 * PK_LD;
/* channel c's place in a tile row */
__device__ __forceinline__ int pk_pos(int c) { return (c & 7) * PK_KC + (c >> 3); }
/* the 2-bit K reorder words: channel c's two words (token halves) at uint2 kf_idx(c); the
 * 16-channel blocks of each 64 are shifted by 0, 1, 4, 5 uint2 pairs so the 8 lanes of a quarter
 * warp in frag_word_k (channels 16a + 4b, a < 4, b < 2) read 8 different bank quads */
const int PK_KF = 160; /* uint2 per buffer */
__device__ __forceinline__ int kf_idx(int c) {
    const int a = (c >> 4) & 3;
    return 80 * (c >> 6) + (c & 63) + 2 * ((a & 1) + 4 * (a >> 1));
}
/* the 16 codes of x as 16 / per words of per codes (code e of a word at bits BITS e), as
 * kv_code: each clamped value is M + code in fp32, so a word is the sum of their bit patterns
 * shifted into place (one LEA per code) less M's pattern times the sum of the shifts' powers
 * (mod 2^32). lo, hi: the min and max of the group, which holds no NaN when `finite`.
 * x * rs + mz is monotone in x (rs > 0), so when the extremes' values lie in [M, M + qmax]
 * every value does and the clamps change nothing: two instructions a code instead of four.
 * Otherwise (NaN, infinities, the zero's rounding putting an extreme half a step out or a tie
 * at the top, clamped ranges) the clamped rule. */
template <int BITS>
__device__ __forceinline__ void kv_words16(const float (&x)[16], float lo, float hi, float rs, int zint, bool finite,
                                           uint32_t (&w)[16 * BITS / 32]) {
    constexpr int per = 32 / BITS, qmax = (1 << BITS) - 1;
    constexpr uint32_t pw = BITS == 2 ? 0x55555555u : 0x11111111u; /* sum of 2^(BITS e), e < per */
    const float mz = kv_mz(zint);
    if (finite && __fmaf_rn(lo, rs, mz) >= OSC_KVQ_MAGIC && __fmaf_rn(hi, rs, mz) <= OSC_KVQ_MAGIC + (float)qmax) {
#pragma unroll
        for (int k = 0; k < 16 / per; k++) {
            uint32_t acc = 0u;
#pragma unroll
            for (int e = 0; e < per; e++) acc += __float_as_uint(__fmaf_rn(x[k * per + e], rs, mz)) << (BITS * e);
            w[k] = acc - __float_as_uint(OSC_KVQ_MAGIC) * pw;
        }
    } else {
#pragma unroll
        for (int k = 0; k < 16 / per; k++) {
            uint32_t acc = 0u;
#pragma unroll
            for (int e = 0; e < per; e++)
                acc += __float_as_uint(kv_code_f(x[k * per + e], rs, mz, qmax)) << (BITS * e);
            w[k] = acc - __float_as_uint(OSC_KVQ_MAGIC) * pw;
        }
    }
}

/* min that returns NaN when either input is (the fminf of --use_fast_math otherwise: .ftz) */
__device__ __forceinline__ float fmin_nan(float a, float b) {
    float d;
    asm("min.ftz.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
    return d;
}

/* float -> double without the flush to zero that --use_fast_math adds to (double)x (an FMUL.FTZ
 * before each conversion) */
__device__ __forceinline__ double f2d_exact(float x) {
    double d;
    asm("cvt.f64.f32 %0, %1;" : "=d"(d) : "f"(x));
    return d;
}

/* 16 bf16 (as loaded: two 16-byte words) -> float */
__device__ __forceinline__ void cvt16(const uint4 (&r)[2], float (&x)[16]);
/* ss + the squares of 16 bf16 (as loaded), in fp64 (exact products; kv_quant.c sums in fp64) */
__device__ __forceinline__ double sumsq16(const uint4 (&r)[2], double ss) {
    float x[16];
    cvt16(r, x);
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const double d = f2d_exact(x[i]);
        ss = __fma_rn(d, d, ss);
    }
    return ss;
}
__device__ __forceinline__ void cvt16(const uint4 (&r)[2], float (&x)[16]) {
    const __nv_bfloat162 *ha = reinterpret_cast<const __nv_bfloat162 *>(&r[0]),
                         *hb = reinterpret_cast<const __nv_bfloat162 *>(&r[1]);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 fa = __bfloat1622float2(ha[i]), fb = __bfloat1622float2(hb[i]);
        x[2 * i] = fa.x;
        x[2 * i + 1] = fa.y;
        x[8 + 2 * i] = fb.x;
        x[8 + 2 * i + 1] = fb.y;
    }
}
/* lane j's two 16-byte pieces of a 128-channel bf16 row (channels 8j.., 64 + 8j..) */
__device__ __forceinline__ void ld_row(const bf16 *row, int j, uint4 (&r)[2]) {
    r[0] = reinterpret_cast<const uint4 *>(row)[j];
    r[1] = reinterpret_cast<const uint4 *>(row)[8 + j];
}

/* osc_kvq_hadamard's butterfly levels of half-widths 1, 2, .., N / 2 over the register index
 * (lower index a + b, upper a - b) */
template <int N> __device__ __forceinline__ void bfly_regs(float (&x)[16]) {
#pragma unroll
    for (int h = 1; h < N; h <<= 1)
#pragma unroll
        for (int i = 0; i < 16; i++)
            if (!(i & h)) {
                const float a = x[i], b = x[i + h];
                x[i] = __fadd_rn(a, b);
                x[i + h] = __fsub_rn(a, b);
            }
}

/* The second half of a key row's transform (see PK_KC): this lane's tile chunk (channels j + 8k
 * at place k, after the half-widths 1, 2, 4) through the half-widths 8, 16, 32, 64 (k's bits),
 * times the token's factor f, back to the same places */
__device__ __forceinline__ void pk_krow_hi(float *chunk, float f) {
    float4 *c4 = reinterpret_cast<float4 *>(chunk);
    float y[16];
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const float4 r = c4[q];
        y[4 * q] = r.x;
        y[4 * q + 1] = r.y;
        y[4 * q + 2] = r.z;
        y[4 * q + 3] = r.w;
    }
    bfly_regs<16>(y);
#pragma unroll
    for (int i = 0; i < 16; i++) y[i] = __fmul_rn(y[i], f);
#pragma unroll
    for (int q = 0; q < 4; q++) c4[q] = make_float4(y[4 * q], y[4 * q + 1], y[4 * q + 2], y[4 * q + 3]);
}

/* 2-bit fragment order (kv_quant.h osc_kvq_frag_k / _v): w0 and w1 hold 16 codes each at bits
 * 2i; rows 0, 1 of a fragment word are codes g, g + 8 of w0, rows 2, 3 the same of w1. Returns
 * the 4 codes at bits 2 row. */
__device__ __forceinline__ uint32_t frag_byte(uint32_t w0, uint32_t w1, int g) {
    const uint32_t x0 = (w0 >> (2 * g)) & 0x00030003u, x1 = (w1 >> (2 * g)) & 0x00030003u;
    return (x0 | (x0 >> 14) | (x1 << 4) | (x1 >> 10)) & 0xffu;
}
/* word w of a K block in fragment order, from the row-layout block kw (channel c's words for
 * tokens 0-15, 16-31 at kw[kf_idx(c)]) */
__device__ __forceinline__ uint32_t frag_word_k(const uint2 *kw, int w) {
    const int s = 4 * (w >> 7) + (w & 3), lane = (w >> 2) & 31, g = lane >> 2, t = lane & 3;
    const uint4 *p = reinterpret_cast<const uint4 *>(kw + kf_idx(16 * s + 4 * t)); /* 16-byte aligned */
    const uint4 a = p[0], b = p[1]; /* channels +0, +1 | +2, +3 */
    return frag_byte(a.x, a.y, g) | frag_byte(a.z, a.w, g) << 16 | frag_byte(b.x, b.y, g) << 8 |
           frag_byte(b.z, b.w, g) << 24;
}
/* The V fragment words (osc_kvq_frag_v) of rows 16m + 2t + {0, 1, 8, 9} are the 32 words
 * w = 128m + 16g + 4t + ip (g < 8, ip < 4): one warp's rows and words. Lane L's word (g = L / 4,
 * ip = L % 4) from the warp's 4 row-layout rows vw[sub][8] (sub = par + 2p for row 2t + 8p + par) */
__device__ __forceinline__ uint32_t frag_word_v4(const uint32_t *vw, int L) {
    const int g = L >> 2, ip = L & 3;
    uint32_t word = 0;
#pragma unroll
    for (int p = 0; p < 2; p++)
#pragma unroll
        for (int par = 0; par < 2; par++) {
            const uint2 x = *reinterpret_cast<const uint2 *>(vw + (par + 2 * p) * 8 + 2 * ip);
            word |= frag_byte(x.x, x.y, g) << (16 * par + 8 * p);
        }
    return word;
}

/* Phases: 1. token norms (all heads of the block's keys); 2. K, two heads a pass through the two
 * tiles; 3. V, a group a lane. Odd blocks run 3 first, so half of the blocks of a wave start on
 * the values while the other half read the keys for their norms (2% faster on the H100 than all
 * in one order). 4 blocks per SM: 64 registers at most (a 65th costs a quarter of the warps).
 * Phases 2 and 3 give each group (a K channel over 32 tokens, a V row's 32 channels) to one
 * thread: its range, params and codes are then worked out once, with no shuffles (two threads a
 * group did the range twice); with the key rows' transpose in the tile (PK_KC) that is 15% fewer
 * instructions and 4% less time than two threads a group and one head a barrier (H100, session
 * 20). */
template <int BITS>
__global__ void __launch_bounds__(PK_THREADS, 4)
k_kv_pack128(const bf16 *__restrict__ k, const bf16 *__restrict__ v, int Hkv, int rotate, int norm_scale, float rsq,
             uint32_t *__restrict__ kq, uint16_t *__restrict__ kp, uint32_t *__restrict__ vq, uint16_t *__restrict__ vp,
             float *__restrict__ kn, const int *__restrict__ bt, int gpp, long long pgb, int g_first) {
    constexpr int HD = 128;
    __shared__ __align__(16) float tiles[2][PK_TILE];
    __shared__ float kns[32]; /* per token: the factor of its rotated key */
    __shared__ __align__(16) uint2 kfrs[2][PK_KF];  /* 2 bits: K row-layout codes to reorder */
    /* 2 bits: each warp's V row-layout codes to reorder, in the last 4 KB of the tiles: the norms'
     * cp.async staging (the first 32 KB) never reaches them, the keys use them only after the
     * barrier that follows the norms, and (not first) the values start after the keys' last
     * barrier */
    static_assert(2 * PK_TILE * 4 - 2 * 8 * 64 * 4 >= 4 * 32 * 16 * 16, "vfr overlaps the norms' staging");
    uint32_t(*vfr)[8][64] = reinterpret_cast<uint32_t(*)[8][64]>(&tiles[0][0] + 2 * PK_TILE - 2 * 8 * 64);
    const int gi = blockIdx.x;
    const int g = pk_group(gi, bt, gpp, pgb, g_first, kq, kp, vq, vp, kn);
    k += (size_t)gi * 32 * Hkv * HD;
    v += (size_t)gi * 32 * Hkv * HD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int sub = lane >> 3, j = lane & 7; /* row slot of the warp, 16-channel share */
    const int t = warp * 4 + sub;            /* this lane's token in phases 1 and 2 */
    /* 3. (first in odd blocks) */
    auto values = [&]() {
        /*    V rows, one lane a 32-channel group (lane L: group G = L % 4 of the warp's row slot
         *    L / 4), so the range and its params are worked out once a group, with no shuffles,
         *    where two lanes a group did both (half of this phase's instructions were per lane,
         *    not per value). 2 bits: in iteration it the warp takes heads 2 it + hq (slots 4 hq +
         *    s) of its four tokens 16m + 2t' + {0, 1, 8, 9} (warp 4m + t'), whose fragment-order
         *    words are its own (frag_word_v4: two words a lane, one a head); 4 bits: rows 8 warp
         *    + slot + 64 it ([token][head] order). The next rows are loaded over this one's codes. */
        const int G = lane & 3, slot = lane >> 2, hq = slot >> 2, s = slot & 3;
        const int tv = BITS == 2 ? 16 * (warp >> 2) + 2 * (warp & 3) + (s & 1) + 8 * (s >> 1) : 0;
        const int n_it = (Hkv + 1) >> 1;
        /* row of iteration it: 2 bits tv Hkv + 2 it + hq (valid while 2 it + hq < Hkv); 4 bits
         * 8 warp + slot + 64 it (valid while < 32 Hkv) */
        int r = BITS == 2 ? tv * Hkv + hq : 8 * warp + slot;
        const int step = BITS == 2 ? 2 : 64;
        const int rlast = BITS == 2 ? tv * Hkv + Hkv : 32 * Hkv; /* rows from here are not this lane's */
        const uint4 *vr = reinterpret_cast<const uint4 *>(v + (size_t)r * HD) + 4 * G;
        uint4 vn[4] = {};
        if (r < rlast) {
#pragma unroll
            for (int q = 0; q < 4; q++) vn[q] = vr[q];
        }
        uint16_t *vpo = vp + ((size_t)g * Hkv + hq) * 256;
        uint32_t *vqo =
            vq + (size_t)g * Hkv * 256 + 128 * (warp >> 2) + 16 * (lane >> 2) + 4 * (warp & 3) + (lane & 3);
        for (int it = 0; it < n_it; it++, r += step) {
            const uint4 cur[4] = {vn[0], vn[1], vn[2], vn[3]};
            const bool ok = r < rlast;
            vr += step * (HD / 8);
            if (r + step < rlast) {
#pragma unroll
                for (int q = 0; q < 4; q++) vn[q] = vr[q];
            }
            /* the group's range on the bf16 pairs (exact: min / max only pick values): lo NaN
             * when a value is, hi the max of the values that are not */
            const __nv_bfloat162 *pr = reinterpret_cast<const __nv_bfloat162 *>(cur);
            __nv_bfloat162 mn = pr[0], mx = pr[0];
#pragma unroll
            for (int i = 1; i < 16; i++) {
                mn = __hmin2_nan(mn, pr[i]);
                mx = __hmax2(mx, pr[i]);
            }
            float lo = fmin_nan(__low2float(mn), __high2float(mn));
            const float hi = fmaxf(__low2float(mx), __high2float(mx));
            const bool nan = isnan(lo); /* kv_quant.c's min skips NaN: the min of the rest */
            if (nan) {
                mn = pr[0];
#pragma unroll
                for (int i = 1; i < 16; i++) mn = __hmin2(mn, pr[i]);
                lo = fminf(__low2float(mn), __high2float(mn));
            }
            float sc, rs;
            int zint;
            uint32_t prm;
            kv_range(lo, hi, BITS, &sc, &rs, &zint, &prm);
            uint32_t wa[16 * BITS / 32], wb[16 * BITS / 32];
            {
                float y[16]; /* channels 32G + 0..15, then 32G + 16..31 */
                cvt16(*reinterpret_cast<const uint4(*)[2]>(&cur[0]), y);
                kv_words16<BITS>(y, lo, hi, rs, zint, !nan, wa);
                cvt16(*reinterpret_cast<const uint4(*)[2]>(&cur[2]), y);
                kv_words16<BITS>(y, lo, hi, rs, zint, !nan, wb);
            }
            if constexpr (BITS == 2) {
                if (ok) {
                    vpo[osc_kvq_frag_vp(tv, G, 0)] = (uint16_t)prm;
                    vpo[osc_kvq_frag_vp(tv, G, 1)] = (uint16_t)(prm >> 16);
                }
                vpo += 512;
                /* row-layout words 2G, 2G + 1 of row s of head hq to shared (two buffers, so one
                 * warp barrier an iteration), then a fragment-order word a head */
                uint32_t *vw = vfr[it & 1][warp];
                *reinterpret_cast<uint2 *>(vw + 32 * hq + 8 * s + 2 * G) = make_uint2(wa[0], wb[0]);
                __syncwarp();
                vqo[0] = frag_word_v4(vw, lane);
                if (2 * it + 1 < Hkv) vqo[256] = frag_word_v4(vw + 32, lane);
                vqo += 512;
            } else {
                if (ok) {
                    const size_t row = (size_t)g * 32 * Hkv + r;
                    reinterpret_cast<uint4 *>(vq)[row * 4 + G] = make_uint4(wa[0], wa[1], wb[0], wb[1]);
                    reinterpret_cast<uint32_t *>(vp)[row * 4 + G] = prm;
                }
            }
        }
    };
    const bool vfirst = blockIdx.x & 1;
    if (vfirst) values();
    /* 1. norms, from the unrotated keys (see above): eight heads' rows in flight at once (the
     *    first reads of the block, from DRAM), four to registers and, in the first round, four by
     *    cp.async to the (still unused) tiles, each lane reading back only its own pieces (later
     *    rounds, Hkv > 8, load them to registers too: no shared slot is written twice) */
    {
        float r = 1.0f;
        double ss = 0.0;
        if (norm_scale) {
            const uint4 *kt = reinterpret_cast<const uint4 *>(k + (size_t)t * Hkv * HD) + j; /* 16 per row */
            uint4 *stg = reinterpret_cast<uint4 *>(&tiles[0][0]) + t * 16 + j; /* [4][32 tokens][16] */
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (4 + u < Hkv) {
                    mma_cp16(stg + u * 512, kt + 16 * (4 + u));
                    mma_cp16(stg + u * 512 + 8, kt + 16 * (4 + u) + 8);
                }
            mma_commit();
            for (int h0 = 0; h0 < Hkv; h0 += 8, kt += 128) {
                uint4 raw[4][2];
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (h0 + u < Hkv) {
                        raw[u][0] = kt[16 * u];
                        raw[u][1] = kt[16 * u + 8];
                    } else {
                        raw[u][0] = raw[u][1] = make_uint4(0u, 0u, 0u, 0u); /* adds +0 */
                    }
                }
#pragma unroll
                for (int u = 0; u < 4; u++) ss = sumsq16(raw[u], ss);
                if (h0 == 0) mma_wait<0>();
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    if (h0 + 4 + u < Hkv) {
                        const uint4 *src = h0 == 0 ? stg + u * 512 : kt + 16 * (4 + u);
                        raw[u][0] = src[0];
                        raw[u][1] = src[8];
                    } else {
                        raw[u][0] = raw[u][1] = make_uint4(0u, 0u, 0u, 0u);
                    }
                }
#pragma unroll
                for (int u = 0; u < 4; u++) ss = sumsq16(raw[u], ss);
            }
#pragma unroll
            for (int m = 1; m < 8; m <<= 1) ss += __shfl_xor_sync(0xffffffffu, ss, m);
            if (rotate) ss *= (double)HD * (double)rsq * (double)rsq;
            r = (float)__dsqrt_rn(ss);
            if (!(r > 0.0f) || isinf(r)) r = 1.0f;
        }
        if (j == 0) {
            /* the key's one factor, kv_quant.c's osc_kvq_khat: fl((rotate ? rsq : 1) / n) */
            kns[t] = norm_scale ? __fdiv_rn(rotate ? rsq : 1.0f, r) : rotate ? rsq : 1.0f;
            kn[(size_t)g * 32 + t] = r;
        }
    }
    __syncthreads();
    /* 2. K two heads a pass: each lane's rows of heads 2p and 2p + 1 to the two tiles (one each),
     *    then thread (ck, hs) quantises channel ck of head 2p + hs over all 32 tokens, so a group's
     *    range, params and code words are one thread's (two threads a group and a shuffle did it
     *    before, with the range twice); two barriers a pass, one a head as before. 2 bits: the
     *    fragment-order words of the pass's heads after its second barrier, from kfrs. */
    const float ft = kns[t];
    const int hs = warp >> 2, ck = 32 * (warp & 3) + lane;
    const bf16 *krow = k + (size_t)t * Hkv * HD; /* token t's head rows */
    /* x (the lane's channels of a key row) to its places in tile (see PK_KC): rotated, the
     * half-widths 1, 2, 4 here and the rest from the transposed chunk; else only times the factor */
    auto row_to_tile = [&](float(&x)[16], float *tile) {
        float *row = tile + t * PK_LD;
        if (rotate) {
            bfly_regs<8>(x);
        } else {
#pragma unroll
            for (int i = 0; i < 16; i++) x[i] = __fmul_rn(x[i], ft);
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            row[i * PK_KC + j] = x[i];
            row[i * PK_KC + j + 8] = x[8 + i];
        }
        if (rotate) {
            __syncwarp();
            pk_krow_hi(row + j * PK_KC, ft);
        }
    };
    uint4 kr[2];
    ld_row(krow, j, kr);
    for (int h0 = 0; h0 < Hkv; h0 += 2) {
#pragma unroll
        for (int u = 0; u < 2; u++)
            if (h0 + u < Hkv) {
                float x[16];
                cvt16(kr, x);
                if (h0 + u + 1 < Hkv) ld_row(krow + (size_t)(h0 + u + 1) * HD, j, kr); /* in flight */
                row_to_tile(x, tiles[u]);
            }
        __syncthreads();
        const int h = h0 + hs;
        if (h < Hkv) {
            const float *sa = tiles[hs] + pk_pos(ck), *sb = sa + 16 * PK_LD;
            float ca[16], cb[16]; /* tokens 0..15, 16..31 */
            float lo = INFINITY, hi = -INFINITY;
#pragma unroll
            for (int i = 0; i < 16; i++) {
                ca[i] = sa[i * PK_LD];
                cb[i] = sb[i * PK_LD];
                lo = fmin_nan(fmin_nan(lo, ca[i]), cb[i]);
                hi = fmaxf(fmaxf(hi, ca[i]), cb[i]);
            }
            const bool nan = isnan(lo); /* kv_quant.c's min skips NaN: the min of the rest */
            if (nan) {
                lo = INFINITY;
#pragma unroll
                for (int i = 0; i < 16; i++) lo = fminf(fminf(lo, ca[i]), cb[i]);
            }
            float sc, rs;
            int zint;
            uint32_t prm;
            kv_range(lo, hi, BITS, &sc, &rs, &zint, &prm);
            uint32_t wa[16 * BITS / 32], wb[16 * BITS / 32];
            kv_words16<BITS>(ca, lo, hi, rs, zint, !nan, wa);
            kv_words16<BITS>(cb, lo, hi, rs, zint, !nan, wb);
            const size_t blk = (size_t)g * Hkv + h;
            if constexpr (BITS == 2) {
                kp[blk * 256 + osc_kvq_frag_kp(ck, 0)] = (uint16_t)prm;
                kp[blk * 256 + osc_kvq_frag_kp(ck, 1)] = (uint16_t)(prm >> 16);
                kfrs[hs][kf_idx(ck)] = make_uint2(wa[0], wb[0]);
            } else {
                reinterpret_cast<uint32_t *>(kp)[blk * HD + ck] = prm;
                kq[(blk * 4 + 0) * HD + ck] = wa[0];
                kq[(blk * 4 + 1) * HD + ck] = wa[1];
                kq[(blk * 4 + 2) * HD + ck] = wb[0];
                kq[(blk * 4 + 3) * HD + ck] = wb[1];
            }
        }
        __syncthreads();
        if constexpr (BITS == 2) {
            const size_t blk = (size_t)g * Hkv + h0;
            kq[blk * 256 + threadIdx.x] = frag_word_k(kfrs[0], threadIdx.x);
            if (h0 + 1 < Hkv) kq[(blk + 1) * 256 + threadIdx.x] = frag_word_k(kfrs[1], threadIdx.x);
        }
    }
    if (!vfirst) values();
}

/* the hd-128 kernel unless OSC_PACK128=0 (the general one, for comparison; 4 bits only: the
 * 2-bit fragment order is written by k_kv_pack128 alone) */
bool pack128_on() {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("OSC_PACK128");
        on = !(e && e[0] == '0');
    }
    return on != 0;
}

template <int E>
osc_status launch_pack_e(const bf16 *k, const bf16 *v, int n_tok, int Hkv, int bits, int rotate, int norm_scale,
                         uint32_t *kq, uint16_t *kp, uint32_t *vq, uint16_t *vp, float *kn, const int *bt, int gpp,
                         long long pgb, int g_first, cudaStream_t st) {
    const int hd = 32 * E;
    const float rsq = 1.0f / sqrtf((float)hd); /* as osc_kvq_hadamard */
    const size_t smem = ((size_t)32 * (hd + 1) + 32) * sizeof(float);
    const unsigned grid = (unsigned)(n_tok / 32);
    if (E == 4 && (bits == 2 || pack128_on())) { /* 2 bits: only this kernel writes fragment order */
        if (bits == 2)
            k_kv_pack128<2><<<grid, PK_THREADS, 0, st>>>(k, v, Hkv, rotate, norm_scale, rsq, kq, kp, vq, vp, kn, bt,
                                                         gpp, pgb, g_first);
        else
            k_kv_pack128<4><<<grid, PK_THREADS, 0, st>>>(k, v, Hkv, rotate, norm_scale, rsq, kq, kp, vq, vp, kn, bt,
                                                         gpp, pgb, g_first);
        OSC_CU_LAUNCH("k_kv_pack128");
        return OSC_OK;
    }
    if (bits == 2) {
        if (smem > 48 * 1024)
            OSC_CU_CHECK(cudaFuncSetAttribute(k_kv_pack<E, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        k_kv_pack<E, 2><<<grid, PK_THREADS, smem, st>>>(k, v, Hkv, rotate, norm_scale, rsq, kq, kp, vq, vp, kn, bt,
                                                         gpp, pgb, g_first);
    } else {
        if (smem > 48 * 1024)
            OSC_CU_CHECK(cudaFuncSetAttribute(k_kv_pack<E, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        k_kv_pack<E, 4><<<grid, PK_THREADS, smem, st>>>(k, v, Hkv, rotate, norm_scale, rsq, kq, kp, vq, vp, kn, bt,
                                                         gpp, pgb, g_first);
    }
    OSC_CU_LAUNCH("k_kv_pack");
    return OSC_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* decode attention                                                                             */
/* ------------------------------------------------------------------------------------------ */
const int DQ_NW = 4; /* warps per block */
const int DQ_THREADS = DQ_NW * 32;

template <int HD, int BITS, int GM> struct dq_cfg {
    static_assert(HD == 128 || HD == 256, "decode: hd 128 or 256");
    static const int CPL = HD / 32;            /* channels per lane (V, q) */
    static const int PER = 32 / BITS;          /* codes per word */
    static const int KLD = HD + 4;             /* K words row stride in shared (u32) */
    static const int VW = HD * BITS / 32;      /* V words per token */
    static const int VG = HD / 32;             /* V groups per token */
    /* 16-byte chunks of one group's packed data (per kv head) */
    static const int NKW = BITS * HD / 4;
    static const int NVW = 32 * VW / 4;
    static const int NVP = 32 * VG / 4;
    static const int RKW = (NKW + 31) / 32, RVW = (NVW + 31) / 32, RVP = (NVP + 31) / 32;
    /* per-warp shared floats/words */
    static const int QS_OFF = 0;                            /* float qs[GM][HD] */
    static const int KW_OFF = QS_OFF + GM * HD;             /* u32 kw[BITS][KLD] */
    static const int VW_OFF = KW_OFF + BITS * KLD;          /* u32 vw[32][VW] */
    static const int VS_OFF = VW_OFF + 32 * VW;             /* float2 vsz[32][VG] */
    static const int P_OFF = VS_OFF + 32 * VG * 2;          /* float p[GM][32] */
    static const int WARP_WORDS = (P_OFF + GM * 32 + 3) & ~3;
    static const size_t SMEM = (size_t)DQ_NW * WARP_WORDS * 4 + (size_t)DQ_NW * GM * 2 * 4;
};

__device__ __forceinline__ float code_f(uint32_t rot, int bits) {
    /* rot has the code in bits [23-bits, 23): float 1 + code / 2^bits */
    uint32_t m = ((1u << bits) - 1u) << (23 - bits);
    return __uint_as_float((rot & m) | 0x3F800000u);
}

/* online softmax update over one 32-token chunk; sc = this lane's token logit (log2 units) */
template <int GM, int CPL>
__device__ __forceinline__ void chunk_softmax(float (&sc)[GM], float (&m)[GM], float (&l)[GM], float (&acc)[GM][CPL],
                                              float *pbuf, int lane) {
#pragma unroll
    for (int h = 0; h < GM; h++) {
        float mx = warp_max(sc[h]);
        float mn = fmaxf(m[h], mx);
        float p = 0.f, alpha = 1.f;
        if (mn != -INFINITY) {
            p = exp2f(sc[h] - mn);
            alpha = exp2f(m[h] - mn);
        }
        m[h] = mn;
        l[h] = l[h] * alpha + p;
#pragma unroll
        for (int i = 0; i < CPL; i++) acc[h][i] *= alpha;
        pbuf[h * 32 + lane] = p;
    }
    __syncwarp();
}

/* One sequence's packed part + residual window for the decode kernel (the batched launch reads
 * an array of these from device memory, blockIdx.z = sequence). */
struct dq_seq {
    const uint32_t *kq;
    const uint16_t *kp;
    const uint32_t *vq;
    const uint16_t *vp;
    const float *kn;
    const bf16 *rk, *rv;
    const float *rn;
    const int *bt;
    long long pgb;
    int gpp, n_groups, gpb, nsq, n_res;
    const int *len1; /* graph step: n_res = *len1 - 32 n_groups, read on the device (else NULL) */
    int rs;          /* splits of the window's own (1..4), or 0: folded into the packed ones (dq_budget) */
};

/* sequence b of a device table, its window length from the device when the table says so */
__device__ __forceinline__ dq_seq dq_load(const dq_seq *__restrict__ seqs, int b) {
    dq_seq sq = seqs[b];
    if (sq.len1) sq.n_res = *sq.len1 - 32 * sq.n_groups;
    return sq;
}

/* The residual window is split too, into at most rs (1..4) splits after the packed ones (a
 * short window in one block was the longest block of a short context; dq_budget picks rs):
 * dq_rchunk tokens each, a multiple of the MMA kernel's 16-token tiles; dq_nrs of them hold
 * tokens. */
__host__ __device__ __forceinline__ int dq_rchunk(int n_res, int rs) { return ((n_res + rs - 1) / rs + 15) & ~15; }
__host__ __device__ __forceinline__ int dq_nrs(int n_res, int rs) {
    return n_res > 0 ? (n_res + dq_rchunk(n_res, rs) - 1) / dq_rchunk(n_res, rs) : 0;
}
__host__ __device__ __forceinline__ int dq_nrs(const dq_seq &sq) { return dq_nrs(sq.n_res, sq.rs); }
/* the window tokens [*rb, *re) of a split (empty unless it is one of the window's) */
__device__ __forceinline__ void dq_res_range(const dq_seq &sq, int split, int *rb, int *re) {
    const int r = split - sq.nsq, c = dq_rchunk(sq.n_res, sq.rs);
    *rb = *re = 0;
    if (r >= 0 && r < dq_nrs(sq)) *rb = r * c, *re = min(sq.n_res, r * c + c);
}

/* rs == 0 (k_kvq_mma's default plan): the window folded into the packed splits. The items
 * of a (sequence, KV head) are its packed groups, then its window's 16-token tiles (one item
 * each: a tile is 2.5x a group's bytes but loads in two round trips and runs one S and one PV
 * MMA chain); split s takes items [s c, s c + c), c = max(ceil(items / nsq), DQ_NW), so the
 * splits run about as long and none sits idle once a short window block is done. */
__host__ __device__ __forceinline__ int dq_tiles(int n_res) { return n_res > 0 ? (n_res + 15) / 16 : 0; }
__host__ __device__ __forceinline__ int dq_fchunk(const dq_seq &sq) {
    const int n = sq.n_groups + dq_tiles(sq.n_res), c = (n + sq.nsq - 1) / sq.nsq;
    return c > DQ_NW ? c : DQ_NW;
}
/* the splits that hold work (the first ones; the combine reads these) */
__host__ __device__ __forceinline__ int dq_used(const dq_seq &sq) {
    if (sq.rs) return sq.nsq + dq_nrs(sq);
    const int c = dq_fchunk(sq);
    return (sq.n_groups + dq_tiles(sq.n_res) + c - 1) / c;
}
/* split's packed groups [g0, g1) and window tiles [t0, t1) (tile k: tokens 16k .. 16k + 15 of
 * the window, up to n_res), either plan */
__device__ __forceinline__ void dq_split_items(const dq_seq &sq, int split, int *g0, int *g1, int *t0, int *t1) {
    if (sq.rs) {
        int rb, re;
        dq_res_range(sq, split, &rb, &re);
        *g0 = min(split * sq.gpb, sq.n_groups);
        *g1 = split < sq.nsq ? min(*g0 + sq.gpb, sq.n_groups) : *g0;
        *t0 = rb / 16;
        *t1 = (re + 15) / 16;
        return;
    }
    const int c = dq_fchunk(sq), n = sq.n_groups + dq_tiles(sq.n_res);
    const int i0 = min(split * c, n), i1 = min(i0 + c, n);
    *g0 = min(i0, sq.n_groups);
    *g1 = min(i1, sq.n_groups);
    *t0 = max(i0 - sq.n_groups, 0);
    *t1 = max(i1 - sq.n_groups, 0);
}

/* (its plan has rs > 0) splits [0, nsq) stream the packed groups, splits nsq .. nsq +
 * dq_nrs(sq) - 1 the residual window; any later split writes an empty partial (the batch
 * kernels return before the body for the splits a sequence does not use: a batch pads every
 * sequence to the longest split count) */
template <int HD, int BITS, int GM>
__device__ __forceinline__ void kvq_decode_body(float *__restrict__ part_acc, float2 *__restrict__ part_ml,
                                                const bf16 *__restrict__ q, int G, int Hkv, int rotate, float rsq,
                                                float qscale, const dq_seq &sq, int res_raw, int part_kvh) {
    const uint32_t *__restrict__ kq = sq.kq;
    const uint16_t *__restrict__ kp = sq.kp;
    const uint32_t *__restrict__ vq = sq.vq;
    const uint16_t *__restrict__ vp = sq.vp;
    const float *__restrict__ kn = sq.kn;
    const bf16 *__restrict__ rk = sq.rk;
    const bf16 *__restrict__ rv = sq.rv;
    const float *__restrict__ rn = sq.rn;
    const int *__restrict__ bt = sq.bt;
    const long long pgb = sq.pgb;
    const int gpp = sq.gpp, n_groups = sq.n_groups, gpb = sq.gpb, nsq = sq.nsq;
    int rb, re;
    dq_res_range(sq, blockIdx.x, &rb, &re);
    typedef dq_cfg<HD, BITS, GM> C;
    const int CPL = C::CPL;
    extern __shared__ __align__(16) uint32_t smq[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int split = blockIdx.x, kvh = blockIdx.y, NS = gridDim.x;
    uint32_t *ws = smq + warp * C::WARP_WORDS;
    float *qs = reinterpret_cast<float *>(ws + C::QS_OFF);
    uint32_t *kw = ws + C::KW_OFF;
    uint32_t *vw = ws + C::VW_OFF;
    float2 *vsz = reinterpret_cast<float2 *>(ws + C::VS_OFF);
    float *pbuf = reinterpret_cast<float *>(ws + C::P_OFF);
    float *mlb = reinterpret_cast<float *>(smq + DQ_NW * C::WARP_WORDS); /* [NW][GM][2] */

    /* q rows of this kv head, rotated, times scale*log2(e); lane holds channels lane*CPL.. */
    float qr[GM][CPL];
#pragma unroll
    for (int h = 0; h < GM; h++) {
        if (h < G) {
            load_bf16<CPL>(q + ((size_t)kvh * G + h) * HD + lane * CPL, qr[h]);
            if (rotate) {
                fwht_warp<CPL>(qr[h], lane);
#pragma unroll
                for (int i = 0; i < CPL; i++) qr[h][i] *= rsq;
            }
#pragma unroll
            for (int i = 0; i < CPL; i++) qr[h][i] *= qscale;
        } else {
#pragma unroll
            for (int i = 0; i < CPL; i++) qr[h][i] = 0.f;
        }
    }
    float m[GM], l[GM], acc[GM][CPL];
#pragma unroll
    for (int h = 0; h < GM; h++) {
        m[h] = -INFINITY;
        l[h] = 0.f;
#pragma unroll
        for (int i = 0; i < CPL; i++) acc[h][i] = 0.f;
    }

    const int per = C::PER;
    const int krow = lane / per;
    /* rotate right so that the code of token `lane` lands at bits [23-BITS, 23) */
    const uint32_t krot = (uint32_t)(BITS * (lane % per) - (23 - BITS)) & 31u;
    const int vword = lane * CPL * BITS / 32;           /* V word holding this lane's channels */
    const int vbit0 = (lane * CPL * BITS) % 32;          /* bit of its first channel */
    const int vgrp = lane * CPL / 32;

    if (split < nsq) {
        const int g0 = split * gpb, g1 = min(g0 + gpb, n_groups);
        uint4 rkw[C::RKW], rvw[C::RVW], rvp[C::RVP];
        uint32_t rkp[CPL];
        float rkn = 0.f;
        auto load_group = [&](int g) {
            /* paged: group g is group gl of page bt[g / gpp]; contiguous (bt NULL): page 0 */
            int gl = g;
            size_t po = 0;
            if (bt) {
                const int pi = g / gpp;
                gl = g - pi * gpp;
                po = (size_t)__ldg(bt + pi) * (size_t)pgb;
            }
            const uint32_t *kqp = reinterpret_cast<const uint32_t *>(reinterpret_cast<const char *>(kq) + po);
            const uint32_t *kpp = reinterpret_cast<const uint32_t *>(reinterpret_cast<const char *>(kp) + po);
            const uint32_t *vqp = reinterpret_cast<const uint32_t *>(reinterpret_cast<const char *>(vq) + po);
            const uint32_t *vpp = reinterpret_cast<const uint32_t *>(reinterpret_cast<const char *>(vp) + po);
            const float *knp = reinterpret_cast<const float *>(reinterpret_cast<const char *>(kn) + po);
            const size_t blk = (size_t)gl * Hkv + kvh;
            const uint4 *pk = reinterpret_cast<const uint4 *>(kqp + blk * BITS * HD);
#pragma unroll
            for (int r = 0; r < C::RKW; r++)
                if (r * 32 + lane < C::NKW) rkw[r] = __ldcs(pk + r * 32 + lane);
            const uint32_t *pp = kpp + blk * HD + lane * CPL;
#pragma unroll
            for (int i = 0; i < CPL; i += 4) {
                uint4 u = __ldcs(reinterpret_cast<const uint4 *>(pp + i));
                rkp[i] = u.x; rkp[i + 1] = u.y; rkp[i + 2] = u.z; rkp[i + 3] = u.w;
            }
            /* V rows of the group's 32 tokens for this kv head: [32][VW] words, token stride Hkv*VW */
#pragma unroll
            for (int r = 0; r < C::RVW; r++) {
                int idx = r * 32 + lane;
                if (idx < C::NVW) {
                    int t = idx / (C::VW / 4), c = idx % (C::VW / 4);
                    rvw[r] = __ldcs(reinterpret_cast<const uint4 *>(vqp + (((size_t)gl * 32 + t) * Hkv + kvh) * C::VW) + c);
                }
            }
#pragma unroll
            for (int r = 0; r < C::RVP; r++) {
                int idx = r * 32 + lane;
                if (idx < C::NVP) {
                    int t = idx / (C::VG / 4), c = idx % (C::VG / 4);
                    rvp[r] = __ldcs(reinterpret_cast<const uint4 *>(vpp + (((size_t)gl * 32 + t) * Hkv + kvh) * C::VG) + c);
                }
            }
            rkn = __ldcs(knp + (size_t)gl * 32 + lane);
        };
        int g = g0 + warp;
        if (g < g1) load_group(g);
        for (; g < g1; g += DQ_NW) {
            /* park the group in shared */
#pragma unroll
            for (int r = 0; r < C::RKW; r++) {
                int idx = r * 32 + lane;
                if (idx < C::NKW) {
                    int w = idx / (HD / 4), c = idx % (HD / 4);
                    *reinterpret_cast<uint4 *>(kw + w * C::KLD + c * 4) = rkw[r];
                }
            }
#pragma unroll
            for (int r = 0; r < C::RVW; r++)
                if (r * 32 + lane < C::NVW) reinterpret_cast<uint4 *>(vw)[r * 32 + lane] = rvw[r];
#pragma unroll
            for (int r = 0; r < C::RVP; r++) {
                int idx = r * 32 + lane;
                if (idx < C::NVP) {
                    uint32_t pw[4] = {rvp[r].x, rvp[r].y, rvp[r].z, rvp[r].w};
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        __half2 hz = *reinterpret_cast<__half2 *>(&pw[e]);
                        float s = __low2float(hz), z = __high2float(hz);
                        float sp = s * (float)(1 << BITS);
                        vsz[idx * 4 + e] = make_float2(sp, z - sp);
                    }
                }
            }
            /* q * S' rows and the zero term */
            float zq[GM];
            {
                float sp[CPL], zp[CPL];
#pragma unroll
                for (int i = 0; i < CPL; i++) {
                    __half2 hz = *reinterpret_cast<__half2 *>(&rkp[i]);
                    float s = __low2float(hz), z = __high2float(hz);
                    sp[i] = s * (float)(1 << BITS);
                    zp[i] = z - sp[i];
                }
#pragma unroll
                for (int h = 0; h < GM; h++) {
                    float a = 0.f;
#pragma unroll
                    for (int i = 0; i < CPL; i++) {
                        qs[h * HD + lane * CPL + i] = qr[h][i] * sp[i];
                        a = fmaf(qr[h][i], zp[i], a);
                    }
                    zq[h] = warp_sum(a);
                }
            }
            const float nt = rkn;
            __syncwarp();
            /* prefetch the next group */
            if (g + DQ_NW < g1) load_group(g + DQ_NW);

            /* K: lane = token */
            float dot[GM];
#pragma unroll
            for (int h = 0; h < GM; h++) dot[h] = 0.f;
            const uint32_t *kr = kw + krow * C::KLD;
#pragma unroll 4
            for (int c = 0; c < HD; c += 4) {
                uint4 w4 = *reinterpret_cast<const uint4 *>(kr + c);
                float f0 = code_f(__funnelshift_r(w4.x, w4.x, krot), BITS);
                float f1 = code_f(__funnelshift_r(w4.y, w4.y, krot), BITS);
                float f2 = code_f(__funnelshift_r(w4.z, w4.z, krot), BITS);
                float f3 = code_f(__funnelshift_r(w4.w, w4.w, krot), BITS);
#pragma unroll
                for (int h = 0; h < GM; h++) {
                    float4 q4 = *reinterpret_cast<const float4 *>(qs + h * HD + c);
                    dot[h] = fmaf(q4.x, f0, dot[h]);
                    dot[h] = fmaf(q4.y, f1, dot[h]);
                    dot[h] = fmaf(q4.z, f2, dot[h]);
                    dot[h] = fmaf(q4.w, f3, dot[h]);
                }
            }
            float sc[GM];
#pragma unroll
            for (int h = 0; h < GM; h++) sc[h] = nt * (dot[h] + zq[h]);
            chunk_softmax<GM, CPL>(sc, m, l, acc, pbuf, lane);

            /* V: lane = CPL channels */
#pragma unroll 4
            for (int t = 0; t < 32; t++) {
                uint32_t x = vw[t * C::VW + vword] >> vbit0;
                float2 sz = vsz[t * C::VG + vgrp];
                float vv[CPL];
#pragma unroll
                for (int i = 0; i < CPL; i++) {
                    const int sh = (23 - BITS) - BITS * i;
                    uint32_t r = sh >= 0 ? (x << (sh & 31)) : (x >> ((-sh) & 31));
                    vv[i] = fmaf(code_f(r, BITS), sz.x, sz.y);
                }
#pragma unroll
                for (int h = 0; h < GM; h++) {
                    float p = pbuf[h * 32 + t];
#pragma unroll
                    for (int i = 0; i < CPL; i++) acc[h][i] = fmaf(p, vv[i], acc[h][i]);
                }
            }
            __syncwarp();
        }
    } else {
        /* residual split: full precision, chunks of 32 tokens over the warps. Raw residual keys
         * (res_raw: neither rotated nor normalised) take the unrotated query. */
        if (res_raw && rotate) {
#pragma unroll
            for (int h = 0; h < GM; h++)
                if (h < G) {
                    load_bf16<CPL>(q + ((size_t)kvh * G + h) * HD + lane * CPL, qr[h]);
#pragma unroll
                    for (int i = 0; i < CPL; i++) qr[h][i] *= qscale;
                }
        }
#pragma unroll
        for (int h = 0; h < GM; h++)
#pragma unroll
            for (int i = 0; i < CPL; i++) qs[h * HD + lane * CPL + i] = qr[h][i];
        __syncwarp();
        for (int r0 = rb + warp * 32; r0 < re; r0 += DQ_NW * 32) {
            const int cnt = min(32, re - r0);
            float sc[GM];
            if (lane < cnt) {
                const bf16 *kr = rk + ((size_t)(r0 + lane) * Hkv + kvh) * HD;
                float dot[GM];
#pragma unroll
                for (int h = 0; h < GM; h++) dot[h] = 0.f;
                for (int c = 0; c < HD; c += 8) {
                    float kx[8];
                    load_bf16<8>(kr + c, kx);
#pragma unroll
                    for (int h = 0; h < GM; h++) {
                        float4 qa = *reinterpret_cast<const float4 *>(qs + h * HD + c);
                        float4 qb = *reinterpret_cast<const float4 *>(qs + h * HD + c + 4);
                        dot[h] = fmaf(qa.x, kx[0], dot[h]);
                        dot[h] = fmaf(qa.y, kx[1], dot[h]);
                        dot[h] = fmaf(qa.z, kx[2], dot[h]);
                        dot[h] = fmaf(qa.w, kx[3], dot[h]);
                        dot[h] = fmaf(qb.x, kx[4], dot[h]);
                        dot[h] = fmaf(qb.y, kx[5], dot[h]);
                        dot[h] = fmaf(qb.z, kx[6], dot[h]);
                        dot[h] = fmaf(qb.w, kx[7], dot[h]);
                    }
                }
                float nt = (rn && !res_raw) ? rn[r0 + lane] : 1.f;
#pragma unroll
                for (int h = 0; h < GM; h++) sc[h] = nt * dot[h];
            } else {
#pragma unroll
                for (int h = 0; h < GM; h++) sc[h] = -INFINITY;
            }
            chunk_softmax<GM, CPL>(sc, m, l, acc, pbuf, lane);
            for (int t = 0; t < cnt; t++) {
                float vv[CPL];
                load_bf16<CPL>(rv + ((size_t)(r0 + t) * Hkv + kvh) * HD + lane * CPL, vv);
#pragma unroll
                for (int h = 0; h < GM; h++) {
                    float p = pbuf[h * 32 + t];
#pragma unroll
                    for (int i = 0; i < CPL; i++) acc[h][i] = fmaf(p, vv[i], acc[h][i]);
                }
            }
            __syncwarp();
        }
    }

    /* merge the warps of the block */
#pragma unroll
    for (int h = 0; h < GM; h++) {
        float ls = warp_sum(l[h]);
        if (lane == 0) {
            mlb[(warp * GM + h) * 2] = m[h];
            mlb[(warp * GM + h) * 2 + 1] = ls;
        }
    }
    __syncthreads(); /* every warp is done with its tiles: reuse qs as the acc buffer */
#pragma unroll
    for (int h = 0; h < GM; h++)
#pragma unroll
        for (int i = 0; i < CPL; i++) qs[h * HD + lane * CPL + i] = acc[h][i];
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * HD; idx += DQ_THREADS) {
        const int h = idx / HD, c = idx % HD;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < DQ_NW; w++) M = fmaxf(M, mlb[(w * GM + h) * 2]);
        float a = 0.f, L = 0.f;
#pragma unroll
        for (int w = 0; w < DQ_NW; w++) {
            float mw = mlb[(w * GM + h) * 2];
            float wt = (mw == -INFINITY) ? 0.f : exp2f(mw - M);
            a += wt * reinterpret_cast<const float *>(smq + w * C::WARP_WORDS + C::QS_OFF)[h * HD + c];
            L += wt * mlb[(w * GM + h) * 2 + 1];
        }
        const size_t pi = ((size_t)part_kvh * NS + split) * G + h;
        part_acc[pi * HD + c] = a;
        if (c == 0) part_ml[pi] = make_float2(M, L);
    }
}

template <int HD, int BITS, int GM>
__global__ void __launch_bounds__(DQ_THREADS)
k_kvq_decode(float *__restrict__ part_acc, float2 *__restrict__ part_ml, const bf16 *__restrict__ q, int G, int Hkv,
             int rotate, float rsq, float qscale, const dq_seq sq, int res_raw) {
    pdl_enter();
    kvq_decode_body<HD, BITS, GM>(part_acc, part_ml, q, G, Hkv, rotate, rsq, qscale, sq, res_raw, blockIdx.y);
}

/* B sequences: grid (splits, Hkv, B); sequence b's partials sit at "kv head" b*Hkv + h, so
 * k_kvq_combine merges them as B*Hkv heads into out [B, Hq, HD] */
template <int HD, int BITS, int GM>
__global__ void __launch_bounds__(DQ_THREADS)
k_kvq_decode_batch(float *__restrict__ part_acc, float2 *__restrict__ part_ml, const bf16 *__restrict__ q, int G,
                   int Hkv, int rotate, float rsq, float qscale, const dq_seq *__restrict__ seqs, int res_raw) {
    pdl_enter();
    const int b = blockIdx.z;
    const dq_seq sq = dq_load(seqs, b);
    if ((int)blockIdx.x >= dq_used(sq)) return; /* a split it does not use: the combine skips it */
    kvq_decode_body<HD, BITS, GM>(part_acc, part_ml, q + (size_t)b * Hkv * G * HD, G, Hkv, rotate, rsq, qscale, sq,
                                  res_raw, b * Hkv + blockIdx.y);
}

/* one block (LSE_THREADS) per query head: merge the splits by log-sum-exp. With the batch's
 * device table (seqs, Hkv): only the splits sequence b uses (its packed ones and its window's);
 * the kernels leave the others unwritten. */
template <int LR>
__global__ void __launch_bounds__(LSE_THREADS)
k_kvq_combine(bf16 *__restrict__ out, const float *__restrict__ part_acc, const float2 *__restrict__ part_ml, int NS,
              int G, int HD, const dq_seq *__restrict__ seqs, int Hkv) {
    pdl_enter();
    extern __shared__ float wts[];
    const int kvh = blockIdx.x / G, h = blockIdx.x % G;
    /* NS is the layout's stride; n of them hold this sequence's partials */
    int n = NS;
    if (seqs) {
        const dq_seq sq = dq_load(seqs, blockIdx.x / (Hkv * G));
        n = min(NS, dq_used(sq));
    }
    lse_merge<LR>(out + ((size_t)kvh * G + h) * HD, part_acc + ((size_t)kvh * NS * G + h) * HD, (size_t)G * HD,
              (const float *)(part_ml + (size_t)kvh * NS * G + h), (size_t)2 * G, n, HD, wts);
}

/* the combine kernel for NS splits of hd channels (lse_rows_per_thread) */
decltype(&k_kvq_combine<4>) kvq_combine_for(int NS, int hd) {
    return lse_rows_per_thread(NS, hd) == 4 ? k_kvq_combine<4> : k_kvq_combine<16>;
}

template <int HD, int BITS, int GM>
osc_status launch_decode(float *pacc, float2 *pml, const bf16 *q, int G, int Hkv, int rotate, float rsq, float qscale,
                         const dq_seq &sq, const dq_seq *dseqs, int B, int NS, int res_raw, cudaStream_t st) {
    typedef dq_cfg<HD, BITS, GM> C;
    static bool attr = false;
    if (!attr) {
        OSC_CU_CHECK(cudaFuncSetAttribute(k_kvq_decode<HD, BITS, GM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)C::SMEM));
        OSC_CU_CHECK(cudaFuncSetAttribute(k_kvq_decode_batch<HD, BITS, GM>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)C::SMEM));
        attr = true;
    }
    if (dseqs) {
        dim3 grid((unsigned)NS, (unsigned)Hkv, (unsigned)B);
        OSC_CU_CHECK(osc_launch(k_kvq_decode_batch<HD, BITS, GM>, dim3(grid), dim3(DQ_THREADS), C::SMEM, st, pacc, pml,
                                q, G, Hkv, rotate, rsq, qscale, dseqs, res_raw));
        OSC_CU_LAUNCH("k_kvq_decode_batch");
    } else {
        dim3 grid((unsigned)NS, (unsigned)Hkv);
        OSC_CU_CHECK(osc_launch(k_kvq_decode<HD, BITS, GM>, dim3(grid), dim3(DQ_THREADS), C::SMEM, st, pacc, pml, q, G,
                                Hkv, rotate, rsq, qscale, sq, res_raw));
        OSC_CU_LAUNCH("k_kvq_decode");
    }
    return OSC_OK;
}

template <int HD, int BITS>
osc_status pick_gm(int GM, float *pacc, float2 *pml, const bf16 *q, int G, int Hkv, int rotate, float rsq, float qscale,
                   const dq_seq &sq, const dq_seq *dseqs, int B, int NS, int res_raw, cudaStream_t st) {
#define OSC_DQ(GV) return launch_decode<HD, BITS, GV>(pacc, pml, q, G, Hkv, rotate, rsq, qscale, sq, dseqs, B, NS, res_raw, st)
    if (GM == 1) OSC_DQ(1);
    if (GM == 2) OSC_DQ(2);
    if (GM == 4) OSC_DQ(4);
    OSC_DQ(8);
#undef OSC_DQ
}

/* ------------------------------------------------------------------------------------------ */
/* 2-bit, hd 128: decode attention on the tensor cores                                         */
/* ------------------------------------------------------------------------------------------ */
/* k_kvq_mma: the same contract, split plan and partials as k_kvq_decode, for hd 128 at 2 bits
 * (the only reader of the fragment order), both products as mma.m16n8k16 (f16 in, fp32
 * accumulate) on the packed codes, so the work per code is about one integer op instead of a
 * float conversion and G FMAs.
 *
 * A warp takes one 32-token group at a time, staged by cp.async into a 3-deep ring of its own
 * (K codes, K params, V codes, V params, norms: 3.2 KB; no block barrier in the loop).
 *   S (tokens x heads) = K codes (A: 16 tokens x 16 channels) * q' (B: 16 channels x 8 heads)
 *     with q' = q_rot * scale_c (f16, per group) and the zero term sum_c q'_c * zero_c, the
 *     same for all 32 tokens, by one more MMA per k-step whose A holds the zeros in every row
 *     (B = q'), so code * scale + zero is never formed.
 *   O^T (channels x heads) += V codes^T (A: 16 channels x 16 tokens) * P' (B: 16 tokens x 8
 *     heads), P' = p * scale_{t, channel group}. V's zero term sum_t p_t * zero_{t, j} is the
 *     same for the 32 channels of channel group j: one MMA per token tile (A row j = the
 *     zeros of group j along the tokens, B = p) into a 4-value accumulator that the softmax
 *     rescales with O and that is added to O after the loop.
 * Codes become f16 without conversion instructions. The 2-bit / hd-128 cache is stored in
 * fragment order (kv_quant.h osc_kvq_frag_k / _v): per k-step a lane's one word holds the 16
 * codes of its four A registers of both tiles, rows r = 0..3 at bits 2r (first channel or
 * token pair) and 8 + 2r (second pair) of each half (the half = the pair's even / odd
 * element). So a register is one LOP3 mask (second pair: of the word shifted by 8), leaving
 * the code as the mantissa of a subnormal f16: code * 4^r * 2^-24 (tensor cores take subnormal
 * inputs exactly, and the products are far above the fp32 subnormals). The row factors 4^r
 * (K: tokens g, g+8, 16+g, 24+g; V: output rows g, g+8 of even tiles, then of odd tiles) and
 * the 2^24 come off the fp32 results (the zero terms come out at true scale). A lane reads
 * its 8 K words and its 8 V words of a group with two LDS.128 each, and each 16-byte load of
 * params is a zero-term MMA's A quad (the zeros in rows g) holding the scales of two B
 * registers.
 * Channel order inside the MMAs: k-step s of S takes channels 16s + 4t + {0,1} (register 0)
 * and {2,3} (register 2), so a thread reads its 4 K params with one 16-byte load; output
 * M-tile i is channels 16i .. 16i+15 in order.
 * q is pre-scaled by 1/16 in f16 (the f16 products q * scale of unnormalised kivi2 keys stay
 * far from the f16 limit); the 16 comes back in fp32.
 * The residual window (bf16) is the up to rs splits after the packed ones (dq_nrs), or, folded
 * (rs = 0, the default), tiles after the packed groups of the same splits (dq_split_items): its
 * tiles of 16 tokens are converted to f16 in shared memory and go through ldmatrix into the
 * same two MMAs. */
/* 8 warps a block, 2 blocks an SM: the same 16 warps an SM as 4 x 4 before session 15, but
 * half as many blocks rotate q, merge their warps and publish a partial, and half as many
 * splits to merge (batches of 5 x 8 KV heads and more now merge in the kernel). H100 device
 * time against 4 x 4, two calls of 3 rounds: (16,8K) -2.2 / -2.4 us, (8,32K) -1.5 / -1,
 * (1,128K) -0.6 / level, (1,32K) level, (1,4K) +0.5 (8 warps share a split of 4-5 groups).
 * The split plan (dq_plan, dq_window_splits) still counts groups per warp with DQ_NW = 4, as
 * measured. */
namespace mq {
const int NW = 8, THREADS = NW * 32, STAGES = 3;
/* one stage (bytes), the group's blocks as stored (fragment order): K codes u32 [256] (lane
 * L's words are 4L..4L+3 and 128+4L..) | K params fp16 [256] | V codes u32 [256] | V params
 * fp16 [256] | norms f32 [32] */
const int KC = 0, KP = 1024, VC = 1536, VP = VC + 1024, KN = VP + 512, STAGE = KN + 128;
const int QS = 8 * 128 * 4;                   /* fp32 q rows of the block, [8][128] */
const int WARP_BYTES = STAGES * STAGE;        /* per-warp ring; reused for the residual tiles */
const int RLD = 136;                          /* halves per residual tile row (16 B pad) */
const size_t SMEM = (size_t)QS + (size_t)NW * WARP_BYTES;
static_assert(2 * 16 * RLD * 2 <= WARP_BYTES, "residual tiles fit the ring");
static_assert(8 * MMA_OB_LD * 4 <= WARP_BYTES, "warp output fits the ring");
} // namespace mq

/* the A registers of one fragment-order word: rows r0, r0 + 1, first pair (bits 2 row) then
 * second pair (8 bits up): code * 4^row * 2^-24 as subnormal f16 pairs */
struct mq_a4 {
    uint32_t a0, a1, a2, a3;
};
__device__ __forceinline__ mq_a4 mq_frag(uint32_t w, uint32_t wh, int r0) {
    const uint32_t m0 = 0x00030003u << (2 * r0), m1 = m0 << 2;
    return {w & m0, w & m1, wh & m0, wh & m1};
}

/* the next group a warp stages: index gl inside page pi (no block table: gl = the group) */
struct mq_cursor {
    int gl, pi;
};
__device__ __forceinline__ mq_cursor mq_at(const dq_seq &sq, int g) {
    if (!sq.bt) return {g, 0};
    const int pi = g / sq.gpp;
    return {g - pi * sq.gpp, pi};
}
/* a warp's groups are NW apart: step without a division */
__device__ __forceinline__ void mq_step(mq_cursor &c, const dq_seq &sq) {
    c.gl += mq::NW;
    if (sq.bt)
        while (c.gl >= sq.gpp) c.gl -= sq.gpp, c.pi++;
}

__device__ __forceinline__ void mq_issue(char *sb, const dq_seq &sq, mq_cursor c, int Hkv, int kvh, int lane) {
    const size_t po = sq.bt ? (size_t)__ldg(sq.bt + c.pi) * (size_t)sq.pgb : 0;
    const size_t blk = (size_t)c.gl * Hkv + kvh;
    const char *kq = reinterpret_cast<const char *>(sq.kq) + po + blk * 1024;
    const char *kp = reinterpret_cast<const char *>(sq.kp) + po + blk * 512;
    const char *kn = reinterpret_cast<const char *>(sq.kn) + po + (size_t)c.gl * 128;
    mma_cp16(sb + mq::KC + lane * 16, kq + lane * 16);
    mma_cp16(sb + mq::KC + 512 + lane * 16, kq + 512 + lane * 16);
    mma_cp16(sb + mq::KP + lane * 16, kp + lane * 16);
    const char *vq = reinterpret_cast<const char *>(sq.vq) + po + blk * 1024;
    mma_cp16(sb + mq::VC + lane * 16, vq + lane * 16);
    mma_cp16(sb + mq::VC + 512 + lane * 16, vq + 512 + lane * 16);
    mma_cp16(sb + mq::VP + lane * 16, reinterpret_cast<const char *>(sq.vp) + po + blk * 512 + lane * 16);
    if (lane < 8) mma_cp16(sb + mq::KN + lane * 16, kn + lane * 16);
}

/* q rows warp and warp + NW of KV head kvh (G <= 8), lane's 4 channels, into registers */
__device__ __forceinline__ void mq_q_load(float (&qx)[2][4], const bf16 *__restrict__ q, int kvh, int G, int warp,
                                          int lane) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int h = warp + u * mq::NW;
        if (h < G) load_bf16<4>(q + ((size_t)kvh * G + h) * 128 + lane * 4, qx[u]);
    }
}
/* those rows times scale*log2(e)/16, rotated or not, to qs [G][128] */
__device__ __forceinline__ void mq_q_rows(float *qs, const float (&qx)[2][4], int G, bool rot, float rsq, float qscale,
                                          int warp, int lane) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
        const int h = warp + u * mq::NW;
        if (h >= G) break;
        float x[4] = {qx[u][0], qx[u][1], qx[u][2], qx[u][3]};
        if (rot) {
            fwht_warp<4>(x, lane);
#pragma unroll
            for (int i = 0; i < 4; i++) x[i] *= rsq;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) qs[h * 128 + lane * 4 + i] = x[i] * (qscale * 0.0625f);
    }
}

/* ---- the split-K merge inside k_kvq_mma -------------------------------------------------- */
/* A launch's (sequence, KV head) pairs merge their n splits' partials themselves, without the
 * combine kernel, in one level (the last block of the pair to finish merges all n into the
 * output; mq_one_level says when) or in two: the splits form chunks of CH = ceil(sqrt(n)); the
 * last block of a chunk to finish merges the chunk into the partial of its first split, and the
 * last chunk merger of the pair merges the chunks into the output. Which block does a merge
 * depends on timing, what it merges and in which order does not: the results are
 * deterministic. A merge has up to MQ_RB loads in flight a lane (one round trip of L2-resident
 * data per MQ_RB partials a warp; mq_merge). Before, k_kvq_combine ran after the whole grid: its
 * launch gap and its own round trips were ~3-4 us of a (1,128K) step (H100 block timings,
 * session 11). */
const int MQ_RB = 12;
const int MQ_MAX_ROWS = 32768; /* pairs x splits of a launch that may merge in the kernel */
__device__ unsigned g_mq_chunk_arrive[MQ_MAX_ROWS], g_mq_pair_arrive[MQ_MAX_ROWS];

__device__ __forceinline__ int mq_chunk(int n) {
    int c = 1;
    while (c * c < n) c++;
    return c;
}

/* merge partials k = 0..m-1, at part rows row0 + k * rstep + h (h < G; rows of 128 floats and
 * one (m, l)), by log-sum-exp: into out [G][128] bf16 when out, else back into rows row0 + h
 * as a partial. The partials come from other blocks: read past L1 (__ldcg). Beyond MQ_RB
 * partials WPH = NW / G warps share a head: warp part p folds partials p, p + WPH, ... (MQ_RB
 * loads in flight a lane), then part 0 folds the other parts' results in part order from shared
 * memory (sh, NW x 132 floats), so the order is fixed; up to MQ_RB one warp a head does it all
 * in one round trip (more warps add a barrier; session 17's A/B of the two compared a build with
 * itself, PERFORMANCE.md session 19). Every thread of the block calls it. */
__device__ __forceinline__ void mq_merge(float *__restrict__ pa, float2 *__restrict__ pml, bf16 *__restrict__ out,
                                         int G, size_t row0, size_t rstep, int m, float *sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int WPH = G < mq::NW && m > MQ_RB ? mq::NW / G : 1;
    const int h = warp / WPH, p = warp - h * WPH, c4 = lane * 4;
    const bool act = h < G;
    float M = -INFINITY, L = 0.f;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    if (act) {
        for (int k0 = p; k0 < m; k0 += MQ_RB * WPH) {
            float2 ml[MQ_RB];
            float4 x[MQ_RB];
#pragma unroll
            for (int j = 0; j < MQ_RB; j++) {
                ml[j] = make_float2(-INFINITY, 0.f);
                x[j] = make_float4(0.f, 0.f, 0.f, 0.f);
                if (k0 + j * WPH < m) {
                    const size_t r = row0 + (size_t)(k0 + j * WPH) * rstep + h;
                    ml[j] = __ldcg(pml + r);
                    x[j] = __ldcg(reinterpret_cast<const float4 *>(pa + r * 128 + c4));
                }
            }
            float mb = M;
#pragma unroll
            for (int j = 0; j < MQ_RB; j++) mb = fmaxf(mb, ml[j].x);
            if (mb == -INFINITY) continue;
            const float sc = M == -INFINITY ? 0.f : exp2f(M - mb);
            a = make_float4(a.x * sc, a.y * sc, a.z * sc, a.w * sc);
            L *= sc;
#pragma unroll
            for (int j = 0; j < MQ_RB; j++) {
                const float w = ml[j].x == -INFINITY ? 0.f : exp2f(ml[j].x - mb);
                a = make_float4(fmaf(w, x[j].x, a.x), fmaf(w, x[j].y, a.y), fmaf(w, x[j].z, a.z), fmaf(w, x[j].w, a.w));
                L = fmaf(w, ml[j].y, L);
            }
            M = mb;
        }
    }
    if (WPH > 1) {
        float *mine = sh + warp * 132;
        if (act && p > 0) {
            *reinterpret_cast<float4 *>(mine + c4) = a;
            if (lane == 0) mine[128] = M, mine[129] = L;
        }
        __syncthreads(); /* also: every part has read row0's (m, l) before part 0 rewrites it */
        if (act && p == 0)
            for (int q = 1; q < WPH; q++) {
                const float *o = sh + (warp + q) * 132;
                const float Mq = o[128], Lq = o[129];
                const float mb = fmaxf(M, Mq);
                if (mb == -INFINITY) continue;
                const float4 x = *reinterpret_cast<const float4 *>(o + c4);
                const float sc = M == -INFINITY ? 0.f : exp2f(M - mb), w = Mq == -INFINITY ? 0.f : exp2f(Mq - mb);
                a = make_float4(fmaf(w, x.x, a.x * sc), fmaf(w, x.y, a.y * sc), fmaf(w, x.z, a.z * sc),
                                fmaf(w, x.w, a.w * sc));
                L = fmaf(w, Lq, L * sc);
                M = mb;
            }
    }
    if (!act || p != 0) return;
    if (out) {
        const float inv = L > 0.f ? 1.f / L : 0.f;
        bf16 *o = out + (size_t)h * 128 + c4;
        reinterpret_cast<__nv_bfloat162 *>(o)[0] = __floats2bfloat162_rn(a.x * inv, a.y * inv);
        reinterpret_cast<__nv_bfloat162 *>(o)[1] = __floats2bfloat162_rn(a.z * inv, a.w * inv);
    } else {
        __syncwarp(); /* the head's lanes have read row0's (m, l) before lane 0 rewrites it */
        *reinterpret_cast<float4 *>(pa + (row0 + h) * 128 + c4) = a;
        if (c4 == 0) pml[row0 + h] = make_float2(M, L);
    }
}

/* a release-acquire add at gpu scope: after a block barrier, one thread's release covers every
 * store the block made before it (the PTX model's cumulativity; as CUTLASS's arrive / wait), so
 * no thread needs a fence of its own (__threadfence by every thread, before: a full fence each,
 * 3.6% of the warp samples of k_kvq_mma at (1,128K) waited in it, ncu on the H100) */
__device__ __forceinline__ unsigned atom_add_acq_rel(unsigned *p, unsigned v) {
    unsigned old;
    asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
}

/* after the block's partial of split `split` is stored: the chunk's and the pair's merges */
__device__ __forceinline__ void mq_merge_tail(float *__restrict__ pa, float2 *__restrict__ pml, bf16 *__restrict__ out,
                                              int G, int NS, int split, int pair, int n, bool one) {
    extern __shared__ __align__(16) unsigned char smb[];
    __shared__ int last;
    const int CH = one ? n : mq_chunk(n), nc = (n + CH - 1) / CH, c = split / CH,
              mine = min(CH, n - c * CH);
    float *sh = reinterpret_cast<float *>(smb + mq::QS); /* the ring areas, free again */
    const size_t prow = (size_t)pair * NS; /* the pair's first split row (times G below) */
    __syncthreads(); /* every thread's partial stores, before the block's arrival counts */
    if (threadIdx.x == 0) {
        unsigned *cnt = &g_mq_chunk_arrive[prow + c * CH];
        last = atom_add_acq_rel(cnt, 1u) == (unsigned)(mine - 1);
        if (last) *cnt = 0u; /* back to zero for the next launch */
    }
    __syncthreads(); /* the last block's threads read the others' partials after the acquire */
    if (!last) return;
    const size_t row0 = (prow + (size_t)c * CH) * G;
    if (nc == 1) {
        mq_merge(pa, pml, out + (size_t)pair * G * 128, G, row0, G, mine, sh);
        return;
    }
    mq_merge(pa, pml, nullptr, G, row0, G, mine, sh);
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atom_add_acq_rel(&g_mq_pair_arrive[pair], 1u) == (unsigned)(nc - 1);
        if (last) g_mq_pair_arrive[pair] = 0u;
    }
    __syncthreads();
    if (!last) return;
    mq_merge(pa, pml, out + (size_t)pair * G * 128, G, prow * G, (size_t)CH * G, nc, sh);
}

/* ---- the streaming combine ----------------------------------------------------------------- */
/* Where k_kvq_mma does not merge its splits itself (B = 1, small batches), k_kvq_combine_stream
 * does, while k_kvq_mma runs: each block, its partial stored, sets one ready flag per query
 * head; the combine (a programmatic dependent launch, so it starts only once every k_kvq_mma
 * block is resident or done, and its blocks take the SMs that finish first) folds each split's
 * partial in as soon as the flag is up, in split order. After the last block only that block's
 * partial is left to load. k_kvq_combine waited for the whole grid (0.8 us after its last block
 * at (1,128K)) and then took 2.5 us for its loads and merge (H100 block timings, session 12).
 * The flags go back to zero as the combine reads them. One decode launch at a time uses them. */
__device__ unsigned g_mq_ready[MQ_MAX_ROWS * 8]; /* rows (pair x splits + split) x G + h */
/* Block timeline probe (diagnostics, off unless built with -DMQ_PROF=1): each k_kvq_mma block
 * (up to 8064) stores %globaltimer at its start [0], q' ready [1], warp 0's first ring stage [2],
 * the block's loop end [3] (an extra barrier), its partial stored [4] and signalled or merged [5],
 * with [7] = groups | tiles << 16 | has_packed << 32; the streaming combine's blocks store their
 * end at rows 8064 + block. OSC_MQ_PROF=FILE appends the last launch's table at exit (header
 * NS, Hkv, B, B Hkv G as int32); tools/bench/mq_timeline.py summarises it. */
#ifdef MQ_PROF
__device__ unsigned long long g_mq_prof[8192][8];
__device__ __forceinline__ unsigned long long mq_gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
#define MQP(i)                                                                                                        \
    do {                                                                                                              \
        if (threadIdx.x == 0 && pbid < 8064) g_mq_prof[pbid][i] = mq_gtime();                                         \
    } while (0)
#else
#define MQP(i)                                                                                                        \
    do {                                                                                                              \
    } while (0)
#endif

__device__ __forceinline__ unsigned ld_acquire(const unsigned *p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release(unsigned *p, unsigned v) {
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

/* after the block's partial rows row0 .. row0 + G - 1 are stored (the barrier and the release
 * cover the whole block's stores, as atom_add_acq_rel) */
__device__ __forceinline__ void mq_signal(int G, size_t row0) {
    __syncthreads();
    if ((int)threadIdx.x < G) st_release(&g_mq_ready[row0 + threadIdx.x], 1u);
}

/* one block (8 warps) per query head: warp w folds splits w, w + 8, ... in that order (its own
 * running max), lanes 4 channels each; then the warps' results merge in warp order. The order
 * of every operation is fixed, whenever each partial arrives: the results are deterministic. */
__global__ void __launch_bounds__(256)
k_kvq_combine_stream(bf16 *__restrict__ out, const float *__restrict__ part_acc, const float2 *__restrict__ part_ml,
                     int NS, int G, const dq_seq *__restrict__ seqs, int Hkv) {
    /* no pdl_wait first: the partials are read behind their flags, and every earlier kernel has
     * finished (each k_kvq_mma block waited for it before letting this grid launch) */
    pdl_trigger();
    __shared__ float sm_a[8][128], sm_m[8], sm_l[8];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pair = blockIdx.x / G, h = blockIdx.x % G;
    int n = NS;
    if (seqs) n = min(NS, dq_used(dq_load(seqs, pair / Hkv)));
    const int K = n > warp ? (n - warp + 7) / 8 : 0; /* this warp's splits */
    const size_t rb = (size_t)pair * NS;           /* the pair's first split row */
    float M = -INFINITY, L = 0.f;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k0 = 0; k0 < K;) {
        /* lane j looks at split warp + 8 (k0 + j); the ready ones from k0 on are folded */
        const int j = k0 + lane;
        const bool up = j < K && ld_acquire(&g_mq_ready[(rb + warp + 8 * j) * G + h]) != 0u;
        const unsigned mask = __ballot_sync(0xffffffffu, up);
        const int nr = mask == 0xffffffffu ? 32 : __ffs(~mask) - 1;
        if (!nr) {
            __nanosleep(64);
            continue;
        }
        for (int c = 0; c < nr; c += 8) {
            float2 ml[8];
            float4 x[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                ml[u] = make_float2(-INFINITY, 0.f);
                if (c + u < nr) {
                    const size_t r = (rb + warp + 8 * (k0 + c + u)) * G + h;
                    ml[u] = __ldcg(part_ml + r);
                    x[u] = __ldcg(reinterpret_cast<const float4 *>(part_acc + r * 128) + lane);
                }
            }
#pragma unroll
            for (int u = 0; u < 8; u++) {
                if (ml[u].x == -INFINITY) continue; /* beyond nr, or a split with no keys */
                const float mn = fmaxf(M, ml[u].x), so = exp2f(M - mn), sn = exp2f(ml[u].x - mn);
                a = make_float4(fmaf(a.x, so, x[u].x * sn), fmaf(a.y, so, x[u].y * sn), fmaf(a.z, so, x[u].z * sn),
                                fmaf(a.w, so, x[u].w * sn));
                L = fmaf(L, so, ml[u].y * sn);
                M = mn;
            }
        }
        /* the flags back to zero for the next launch (this block alone reads them) */
        if (lane < nr) g_mq_ready[(rb + warp + 8 * j) * G + h] = 0u;
        k0 += nr;
    }
    reinterpret_cast<float4 *>(sm_a[warp])[lane] = a;
    if (!lane) sm_m[warp] = M, sm_l[warp] = L;
    __syncthreads();
    if (threadIdx.x < 128) {
        const int c = threadIdx.x;
        float mx = -INFINITY;
        for (int w = 0; w < 8; w++) mx = fmaxf(mx, sm_m[w]);
        float s = 0.f, l = 0.f;
        if (mx != -INFINITY)
            for (int w = 0; w < 8; w++) {
                const float e = sm_m[w] == -INFINITY ? 0.f : exp2f(sm_m[w] - mx);
                s = fmaf(sm_a[w][c], e, s);
                l = fmaf(sm_l[w], e, l);
            }
        out[(size_t)blockIdx.x * 128 + c] = f2bf(l > 0.f ? s / l : 0.f);
    }
#ifdef MQ_PROF
    if (threadIdx.x == 0 && blockIdx.x < 128) g_mq_prof[8064 + blockIdx.x][0] = mq_gtime();
#endif
    /* finish after k_kvq_mma: the next kernel's pdl_wait then covers both grids */
    pdl_wait();
}

__device__ __forceinline__ void kvq_mma_body(float *__restrict__ part_acc, float2 *__restrict__ part_ml,
                                             const bf16 *__restrict__ q, int G, int Hkv, int rotate, float rsq,
                                             float qscale, const dq_seq &sq, int res_raw, int part_kvh,
                                             bf16 *__restrict__ out, int n_used, int signal) {
    extern __shared__ __align__(16) unsigned char smb[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int split = blockIdx.x, kvh = blockIdx.y, NS = gridDim.x;
    int g0, g1, t0, t1; /* this split's packed groups and window tiles */
    dq_split_items(sq, split, &g0, &g1, &t0, &t1);
    const bool has_p = g1 > g0, has_w = t1 > t0;
#ifdef MQ_PROF
    const int pbid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    MQP(0);
    if (threadIdx.x == 0 && pbid < 8064)
        g_mq_prof[pbid][7] = (unsigned long long)(g1 - g0) | (unsigned long long)(t1 - t0) << 16 |
                             (unsigned long long)has_p << 32;
#endif
    float *qs = reinterpret_cast<float *>(smb);
    char *ws = reinterpret_cast<char *>(smb) + mq::QS + warp * mq::WARP_BYTES;

    /* q first: the previous kernel just wrote it (L2), so it comes back before the ring's
     * loads queue up. Issued after them, its wait was 9% of the warp time at (1,128K) (ncu
     * source counters); now the first ring stage's wait takes that time there, while short
     * contexts gain (1,4K) 1-1.5 us. */
    float qx[2][4];
    mq_q_load(qx, q, kvh, G, warp, lane);

    /* packed groups of this warp: g0 + warp, + NW, ... */
    const int n_my = g0 + warp < g1 ? (g1 - g0 - warp + mq::NW - 1) / mq::NW : 0;
    mq_cursor cur = mq_at(sq, g0 + warp);
    if (has_p) {
#pragma unroll
        for (int i = 0; i < mq::STAGES - 1; i++) {
            if (i < n_my) {
                mq_issue(ws + i * mq::STAGE, sq, cur, Hkv, kvh, lane);
                mq_step(cur, sq);
            }
            mma_commit();
        }
    }

    /* q rows of this kv head, times scale*log2(e)/16: rotated for packed keys, raw for a raw
     * window; a split with both keeps the packed keys' q' in registers, then the raw rows */
    const bool raw_w = rotate && res_raw && has_w;
    mq_q_rows(qs, qx, G, rotate && (has_p || !raw_w), rsq, qscale, warp, lane);
    __syncthreads();
    /* q' of the packed keys: q of head g at channels 16s + 4t + {0..3} */
    uint32_t qh[8][2];
#pragma unroll
    for (int s = 0; s < 8; s++) {
        if (g < G && has_p) {
            const float4 v = *reinterpret_cast<const float4 *>(qs + g * 128 + 16 * s + 4 * t);
            qh[s][0] = h2_pack(v.x, v.y);
            qh[s][1] = h2_pack(v.z, v.w);
        } else {
            qh[s][0] = qh[s][1] = 0u;
        }
    }
    if (has_p && raw_w) {
        __syncthreads();
        mq_q_rows(qs, qx, G, false, rsq, qscale, warp, lane);
        __syncthreads();
    }

    MQP(1);
    float o[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mr[2] = {-INFINITY, -INFINITY}, lr[2] = {0.f, 0.f};

    if (has_p) {
        /* V's zero terms sum_t p[t][h] * zero[t][j] of the 4 channel groups j, true scale:
         * zv[0], zv[1] = row g (j = g & 3; rows 4-7 repeat 0-3), heads 2t, 2t+1 */
        float zv[4] = {0.f, 0.f, 0.f, 0.f};
        int slot = 0; /* it % STAGES */
        for (int it = 0; it < n_my; it++) {
            mma_wait<mq::STAGES - 2>();
            __syncwarp();
#ifdef MQ_PROF
            if (it == 0) MQP(2);
#endif
            {
                const int nslot = slot == 0 ? mq::STAGES - 1 : slot - 1; /* (it + STAGES - 1) % STAGES */
                if (it + mq::STAGES - 1 < n_my) {
                    mq_issue(ws + nslot * mq::STAGE, sq, cur, Hkv, kvh, lane);
                    mq_step(cur, sq);
                }
                mma_commit();
            }
            const char *sb = ws + slot * mq::STAGE;
            slot = slot == mq::STAGES - 1 ? 0 : slot + 1;
            const uint32_t *kc = reinterpret_cast<const uint32_t *>(sb + mq::KC);
            const uint32_t *kpw = reinterpret_cast<const uint32_t *>(sb + mq::KP);
            const float *knf = reinterpret_cast<const float *>(sb + mq::KN);

            /* S = K q' + zero term, two tiles of 16 tokens; k-step s is word s of the lane. The
             * zero term sum_c zero_c q'_c is the same for every token of the group: A = the
             * zeros, so cb[0], cb[1] hold it (true scale) for heads 2t, 2t+1 */
            float c0[4] = {0.f, 0.f, 0.f, 0.f}, c1[4] = {0.f, 0.f, 0.f, 0.f}, cb[4] = {0.f, 0.f, 0.f, 0.f};
            const uint4 KA = *reinterpret_cast<const uint4 *>(kc + 4 * lane);
            const uint4 KB = *reinterpret_cast<const uint4 *>(kc + 128 + 4 * lane);
            const uint32_t kw[8] = {KA.x, KA.y, KA.z, KA.w, KB.x, KB.y, KB.z, KB.w};
#pragma unroll
            for (int s = 0; s < 8; s++) {
                /* zeros, scales of channels 16s+4t+{0,1}, then of {2,3}: as an A quad, the zeros
                 * are rows g (rows g+8, the scales, give cb[2], cb[3]: not used) */
                const uint4 P = *reinterpret_cast<const uint4 *>(kpw + 16 * s + 4 * t);
                const uint32_t bq0 = h2_mul(qh[s][0], P.y), bq1 = h2_mul(qh[s][1], P.w);
                mma_f16(cb, P.x, P.y, P.z, P.w, qh[s][0], qh[s][1]);
                const uint32_t w = kw[s], wh = w >> 8;
                const mq_a4 A0 = mq_frag(w, wh, 0), A1 = mq_frag(w, wh, 2);
                mma_f16(c0, A0.a0, A0.a1, A0.a2, A0.a3, bq0, bq1);
                mma_f16(c1, A1.a0, A1.a1, A1.a2, A1.a3, bq0, bq1);
            }
            float sc[8];
            {
                /* rows g, g+8, 16+g, 24+g came out times 4^0..4^3 * 2^-24; the 16 is q's */
                const float n0 = knf[g] * 16.f, n1 = knf[g + 8] * 16.f;
                const float n2 = knf[16 + g] * 16.f, n3 = knf[24 + g] * 16.f;
                sc[0] = fmaf(c0[0], 0x1p24f, cb[0]) * n0;
                sc[1] = fmaf(c0[1], 0x1p24f, cb[1]) * n0;
                sc[2] = fmaf(c0[2], 0x1p22f, cb[0]) * n1;
                sc[3] = fmaf(c0[3], 0x1p22f, cb[1]) * n1;
                sc[4] = fmaf(c1[0], 0x1p20f, cb[0]) * n2;
                sc[5] = fmaf(c1[1], 0x1p20f, cb[1]) * n2;
                sc[6] = fmaf(c1[2], 0x1p18f, cb[0]) * n3;
                sc[7] = fmaf(c1[3], 0x1p18f, cb[1]) * n3;
            }
            mma_softmax<2>(sc, mr, lr, o, zv);

            /* O^T += V^T P', two k-steps of 16 tokens; word ip of k-step m holds tiles 2ip, 2ip+1 */
            const uint4 *vpw = reinterpret_cast<const uint4 *>(sb + mq::VP);
            const uint4 VA = *reinterpret_cast<const uint4 *>(sb + mq::VC + 16 * lane);
            const uint4 VB = *reinterpret_cast<const uint4 *>(sb + mq::VC + 512 + 16 * lane);
            uint32_t pb[2][2];
#pragma unroll
            for (int m = 0; m < 2; m++) {
                pb[m][0] = mma_trans(h2_pack(sc[4 * m], sc[4 * m + 1]));     /* tokens 16m+2t.., head g */
                pb[m][1] = mma_trans(h2_pack(sc[4 * m + 2], sc[4 * m + 3])); /* tokens 16m+8+2t.. */
            }
            const uint32_t va[4] = {VA.x, VA.y, VA.z, VA.w}, vb[4] = {VB.x, VB.y, VB.z, VB.w};
#pragma unroll
            for (int j = 0; j < 4; j++) {
#pragma unroll
                for (int m = 0; m < 2; m++) {
                    /* channel group j: zeros, scales of tokens 16m+2t, +1, then of +8, +9 */
                    const uint4 T = vpw[(4 * m + j) * 4 + t];
                    const uint32_t bs0 = h2_mul(pb[m][0], T.y), bs1 = h2_mul(pb[m][1], T.w);
                    const uint32_t w = m ? vb[j] : va[j], wh = w >> 8;
                    const mq_a4 A0 = mq_frag(w, wh, 0), A1 = mq_frag(w, wh, 2);
                    mma_f16(o[2 * j], A0.a0, A0.a1, A0.a2, A0.a3, bs0, bs1);
                    mma_f16(o[2 * j + 1], A1.a0, A1.a1, A1.a2, A1.a3, bs0, bs1);
                }
            }
            /* the zero terms: A row g = the zeros of channel group g & 3 along the tile's tokens
             * (rows g+8: its scales, unused), B = p; one MMA per token tile */
#pragma unroll
            for (int m = 0; m < 2; m++) {
                const uint4 Z = vpw[(4 * m + (g & 3)) * 4 + t];
                mma_f16(zv, Z.x, Z.y, Z.z, Z.w, pb[m][0], pb[m][1]);
            }
        }
        /* output rows g, g+8 of even tiles came out times 4^0, 4^1 * 2^-24, of odd tiles 4^2, 4^3 */
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float f0 = (i & 1) ? 0x1p20f : 0x1p24f, f1 = (i & 1) ? 0x1p18f : 0x1p22f;
            o[i][0] *= f0;
            o[i][1] *= f0;
            o[i][2] *= f1;
            o[i][3] *= f1;
        }
        /* plus V's zero terms: group j's sums for heads 2t, 2t+1 are in lane 4j + t */
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float z0 = __shfl_sync(0xffffffffu, zv[0], 4 * j + t);
            const float z1 = __shfl_sync(0xffffffffu, zv[1], 4 * j + t);
#pragma unroll
            for (int i = 2 * j; i < 2 * j + 2; i++) o[i][0] += z0, o[i][1] += z1, o[i][2] += z0, o[i][3] += z1;
        }
        mma_wait<0>();
        __syncwarp();
    }
    if (has_w) {
        /* residual window: tiles of 16 tokens, bf16 -> f16 in shared, ldmatrix; the split's k-th
         * tile goes to warp (packed groups + k) % NW, so the warps stay level */
        uint32_t qr[8][2];
#pragma unroll
        for (int s = 0; s < 8; s++) {
            if (g < G) {
                const float2 a = *reinterpret_cast<const float2 *>(qs + g * 128 + 16 * s + 2 * t);
                const float2 b = *reinterpret_cast<const float2 *>(qs + g * 128 + 16 * s + 8 + 2 * t);
                qr[s][0] = h2_pack(a.x, a.y);
                qr[s][1] = h2_pack(b.x, b.y);
            } else {
                qr[s][0] = qr[s][1] = 0u;
            }
        }
        __half *kt = reinterpret_cast<__half *>(ws);
        __half *vt = kt + 16 * mq::RLD;
        const bf16 *__restrict__ rk = sq.rk;
        const bf16 *__restrict__ rv = sq.rv;
        const float *__restrict__ rn = res_raw ? nullptr : sq.rn;
        const int re = min(sq.n_res, 16 * t1);
        const int k0 = (warp - (g1 - g0) % mq::NW + mq::NW) % mq::NW;
        for (int r0 = 16 * (t0 + k0); r0 < re; r0 += mq::NW * 16) {
            const int ta = r0 + g, tb = r0 + g + 8;
            const float na = ta < re ? (rn ? rn[ta] : 1.f) * 16.f : 0.f;
            const float nb = tb < re ? (rn ? rn[tb] : 1.f) * 16.f : 0.f;
            /* the tile in two halves of 8 rows, each half's 8 loads in flight at once (one at a
             * time, the window's blocks were the launch's slowest: 16 round trips per tile) */
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                uint4 kk[4], vv[4];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int idx = (4 * hf + i) * 32 + lane, row = idx >> 4, c8 = (idx & 15) * 8, tok = r0 + row;
                    kk[i] = vv[i] = make_uint4(0u, 0u, 0u, 0u);
                    if (tok < re) {
                        kk[i] = *reinterpret_cast<const uint4 *>(rk + ((size_t)tok * Hkv + kvh) * 128 + c8);
                        vv[i] = *reinterpret_cast<const uint4 *>(rv + ((size_t)tok * Hkv + kvh) * 128 + c8);
                    }
                }
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int idx = (4 * hf + i) * 32 + lane, row = idx >> 4, c8 = (idx & 15) * 8;
                    *reinterpret_cast<uint4 *>(kt + row * mq::RLD + c8) =
                        make_uint4(bf2_to_h2(kk[i].x), bf2_to_h2(kk[i].y), bf2_to_h2(kk[i].z), bf2_to_h2(kk[i].w));
                    *reinterpret_cast<uint4 *>(vt + row * mq::RLD + c8) =
                        make_uint4(bf2_to_h2(vv[i].x), bf2_to_h2(vv[i].y), bf2_to_h2(vv[i].z), bf2_to_h2(vv[i].w));
                }
            }
            __syncwarp();
            float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
            for (int s = 0; s < 8; s++) {
                uint32_t a0, a1, a2, a3;
                mma_ldsm4(a0, a1, a2, a3, kt + (lane & 15) * mq::RLD + 16 * s + (lane >> 4) * 8);
                mma_f16(c, a0, a1, a2, a3, qr[s][0], qr[s][1]);
            }
            float sc[8];
            sc[0] = ta < re ? c[0] * na : -INFINITY;
            sc[1] = ta < re ? c[1] * na : -INFINITY;
            sc[2] = tb < re ? c[2] * nb : -INFINITY;
            sc[3] = tb < re ? c[3] * nb : -INFINITY;
            sc[4] = sc[5] = sc[6] = sc[7] = -INFINITY;
            mma_softmax<1>(sc, mr, lr, o);
            const uint32_t pb0 = mma_trans(h2_pack(sc[0], sc[1]));
            const uint32_t pb1 = mma_trans(h2_pack(sc[2], sc[3]));
            const int vrow = (lane & 7) + ((lane >> 4) << 3), vcol = ((lane >> 3) & 1) * 8;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                uint32_t a0, a1, a2, a3;
                mma_ldsm4t(a0, a1, a2, a3, vt + vrow * mq::RLD + 16 * i + vcol);
                mma_f16(o[i], a0, a1, a2, a3, pb0, pb1);
            }
            __syncwarp();
        }
    }

#ifdef MQ_PROF
    __syncthreads();
    MQP(3);
#endif
    /* this warp's partial -> its ring area; then the block merges its warps */
    mma_block_partial<mq::NW>(smb + mq::QS, mq::WARP_BYTES, o, mr, lr, G, part_acc, reinterpret_cast<float *>(part_ml),
                              ((size_t)part_kvh * NS + split) * G);
    MQP(4);
    if (out) mq_merge_tail(part_acc, part_ml, out, G, NS, split, part_kvh, n_used, signal == 2); /* else a combine */
    else if (signal) mq_signal(G, ((size_t)part_kvh * NS + split) * G);
    MQP(5);
}

__global__ void __launch_bounds__(mq::THREADS, 2)
k_kvq_mma(float *__restrict__ part_acc, float2 *__restrict__ part_ml, const bf16 *__restrict__ q, int G, int Hkv,
          int rotate, float rsq, float qscale, const dq_seq sq, int res_raw, bf16 *__restrict__ out, int signal) {
    pdl_enter();
    kvq_mma_body(part_acc, part_ml, q, G, Hkv, rotate, rsq, qscale, sq, res_raw, blockIdx.y, out, gridDim.x, signal);
}

__global__ void __launch_bounds__(mq::THREADS, 2)
k_kvq_mma_batch(float *__restrict__ part_acc, float2 *__restrict__ part_ml, const bf16 *__restrict__ q, int G,
                int Hkv, int rotate, float rsq, float qscale, const dq_seq *__restrict__ seqs, int res_raw,
                bf16 *__restrict__ out, int signal) {
    pdl_enter();
    const int b = blockIdx.z;
    const dq_seq sq = dq_load(seqs, b);
    const int n_used = dq_used(sq);
    if ((int)blockIdx.x >= n_used) return; /* a split it does not use: the merges skip it */
    kvq_mma_body(part_acc, part_ml, q + (size_t)b * Hkv * G * 128, G, Hkv, rotate, rsq, qscale, sq, res_raw,
                 b * Hkv + blockIdx.y, out, n_used, signal);
}

/* the tensor-core kernel serves hd 128 at 2 bits (the only reader of the fragment order) */
bool mq_use(int hd, int bits) { return hd == 128 && bits == 2; }

osc_status mq_attr(void) {
    static bool attr = false;
    if (!attr) {
        OSC_CU_CHECK(cudaFuncSetAttribute(k_kvq_mma, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mq::SMEM));
        OSC_CU_CHECK(cudaFuncSetAttribute(k_kvq_mma_batch, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)mq::SMEM));
        attr = true;
    }
    return OSC_OK;
}

/* resident k_kvq_mma_batch blocks per SM (registers and shared memory; the single-sequence
 * kernel has the same body), 4 if the runtime cannot say */
int mq_blocks_per_sm(void) {
    static int n = 0;
    if (!n) {
        int b = 0;
        if (mq_attr() != OSC_OK ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, k_kvq_mma_batch, mq::THREADS, mq::SMEM) != cudaSuccess ||
            b < 1)
            b = 4;
        n = b;
    }
    return n;
}

/* whether k_kvq_mma merges the splits of B x Hkv pairs itself (mq_merge_tail; else a combine
 * kernel): when a pair has fewer than 8 splits, up to MQ_MAX_ROWS pairs x splits. With 8 and
 * more the streaming combine was faster (session 12, call 10, device time: (8,32K), 8 splits,
 * 92.4 / 92.7 / 92.3 us vs 94.1 / 94.1 / 93.9 merged in the kernel; (16,8K), 4 splits, 57.0 /
 * 56.8 / 56.7 vs 55.9 / 55.7 / 56.0). Against k_kvq_combine after the grid (session 11,
 * call 10, device time): (8,32K) 93.2 / 93.8 us merged in the kernel vs 96.5 / 96.2,
 * (16,8K) 56.1 / 55.7 vs 58.3 / 58.6, but (1,128K) 51.4 / 51.4 vs 50.4 / 50.2 and (1,4K) +1 us:
 * with 66 splits a pair, four dependent round trips (two arrivals, two merges) after the last
 * block take longer than the combine's launch and single round trip. Merged in one level
 * (mq_one_level), batch 1 still loses to the streaming combine: (1,128K) 49.8-50.2 us vs
 * 48.4-48.6, (1,4K) 11.1-11.2 vs 10.2-10.4 (H100, session 18). OSC_KVQ_FUSED: 0 never, 2 always
 * (tests, A/B), else this rule. */
int g_mq_fused = -1; /* osc_cuda_kv_fused_merge; -1: OSC_KVQ_FUSED */
bool mq_fused(int B, int Hkv, int NS) {
    if (g_mq_fused < 0) {
        const char *e = getenv("OSC_KVQ_FUSED");
        g_mq_fused = e && (e[0] == '0' || e[0] == '2') ? e[0] - '0' : 1;
    }
    const int mode = g_mq_fused;
    if (!mode || (long long)B * Hkv * NS > MQ_MAX_ROWS) return false;
    return mode == 2 || (long long)B * Hkv * 8 > (long long)mq_blocks_per_sm() * osc_cu_num_sms();
}

/* whether the pairs' splits merge in one level (mq_merge_tail: the last block of the pair folds
 * all n partials, beyond MQ_RB of them with NW / G warps a head) instead of two (chunks of
 * ceil(sqrt(n)), then the chunks): when a warp folds at most 3 x MQ_RB partials, i.e. three
 * dependent round trips of loads, against two levels' two round trips plus the second arrival.
 * H100 (session 17, device time, one build): (8,32K) 87.2-88.0 us vs 89.1-90.2 with OSC_KVQ_ONE=0;
 * against the tree before it was not measured (PERFORMANCE.md session 19). OSC_KVQ_ONE: 0 never,
 * 2 always (tests, A/B), else this rule. */
int g_mq_one = -1; /* osc_cuda_kv_one_level_merge; -1: OSC_KVQ_ONE */
bool mq_one_level(int G, int NS) {
    if (g_mq_one < 0) {
        const char *e = getenv("OSC_KVQ_ONE");
        g_mq_one = e && (e[0] == '0' || e[0] == '2') ? e[0] - '0' : 1;
    }
    const int wph = G < mq::NW ? mq::NW / G : 1;
    return g_mq_one == 2 || (g_mq_one == 1 && (NS + wph - 1) / wph <= 3 * MQ_RB);
}

/* whether k_kvq_combine_stream merges the splits that k_kvq_mma does not merge itself (else
 * k_kvq_combine after the grid). OSC_KVQ_STREAM=0: never (A/B, tests). */
int g_mq_stream = -1; /* osc_cuda_kv_stream_combine; -1: OSC_KVQ_STREAM */
bool mq_stream(int B, int Hkv, int NS) {
    if (g_mq_stream < 0) {
        const char *e = getenv("OSC_KVQ_STREAM");
        g_mq_stream = e && e[0] == '0' ? 0 : 1;
    }
    return g_mq_stream && (long long)B * Hkv * NS <= MQ_MAX_ROWS;
}

#ifdef MQ_PROF
static int g_mq_prof_hdr[4];
static void mq_prof_dump(void) {
    static unsigned long long h[8192][8];
    const char *pf = getenv("OSC_MQ_PROF");
    if (!pf || cudaDeviceSynchronize() != cudaSuccess || cudaMemcpyFromSymbol(h, g_mq_prof, sizeof h) != cudaSuccess)
        return;
    FILE *f = fopen(pf, "ab");
    if (!f) return;
    fwrite(g_mq_prof_hdr, sizeof g_mq_prof_hdr, 1, f);
    fwrite(h, sizeof h, 1, f);
    fclose(f);
}
/* the launch's shape for the table written at exit (a CUDA graph replays the captured launch) */
static void mq_prof_arm(int NS, int Hkv, int B, int G) {
    static int armed = 0;
    g_mq_prof_hdr[0] = NS, g_mq_prof_hdr[1] = Hkv, g_mq_prof_hdr[2] = B, g_mq_prof_hdr[3] = B * Hkv * G;
    if (!armed && getenv("OSC_MQ_PROF")) armed = 1, atexit(mq_prof_dump);
}
#endif
/* k_kvq_mma over B sequences (dseqs: their device table; else sq, B = 1) and the merge of its
 * splits into out, bf16 [B][Hq][128]: inside the kernel (mq_fused), by k_kvq_combine_stream as
 * the splits end (mq_stream), or by k_kvq_combine after the grid */
osc_status mq_launch(float *pacc, float2 *pml, const bf16 *q, int G, int Hkv, int rotate, float rsq, float qscale,
                     const dq_seq &sq, const dq_seq *dseqs, int B, int NS, int res_raw, bf16 *out, cudaStream_t st) {
    OSC_TRY(mq_attr());
#ifdef MQ_PROF
    mq_prof_arm(NS, Hkv, B, G);
#endif
    const bool fused = mq_fused(B, Hkv, NS), stream = !fused && mq_stream(B, Hkv, NS);
    bf16 *fo = fused ? out : nullptr;
    const int sig = stream ? 1 : fused && mq_one_level(G, NS) ? 2 : 0; /* the kernel's signal / merge mode */
    if (dseqs) {
        dim3 grid((unsigned)NS, (unsigned)Hkv, (unsigned)B);
        OSC_CU_CHECK(osc_launch(k_kvq_mma_batch, dim3(grid), dim3(mq::THREADS), mq::SMEM, st, pacc, pml, q, G, Hkv,
                                rotate, rsq, qscale, dseqs, res_raw, fo, sig));
        OSC_CU_LAUNCH("k_kvq_mma_batch");
    } else {
        dim3 grid((unsigned)NS, (unsigned)Hkv);
        OSC_CU_CHECK(osc_launch(k_kvq_mma, dim3(grid), dim3(mq::THREADS), mq::SMEM, st, pacc, pml, q, G, Hkv, rotate,
                                rsq, qscale, sq, res_raw, fo, sig));
        OSC_CU_LAUNCH("k_kvq_mma");
    }
    if (fused) return OSC_OK;
    const unsigned nb = (unsigned)(B * Hkv * G);
    if (stream) {
        OSC_CU_CHECK(osc_launch(k_kvq_combine_stream, dim3(nb), dim3(256), 0, st, out, (const float *)pacc,
                                (const float2 *)pml, NS, G, dseqs, Hkv));
        OSC_CU_LAUNCH("k_kvq_combine_stream");
    } else {
        OSC_CU_CHECK(osc_launch(kvq_combine_for(NS, 128), dim3(nb), dim3(LSE_THREADS), (size_t)NS * sizeof(float), st,
                                out, (const float *)pacc, (const float2 *)pml, NS, G, 128, dseqs, Hkv));
        OSC_CU_LAUNCH("k_kvq_combine");
    }
    return OSC_OK;
}

/* The split plan of a launch over bh (sequence, KV head) pairs: splits per pair so that every
 * block is resident at once (one wave). slots = blocks per SM x SMs: k_kvq_mma's occupancy
 * (2 of its 8-warp blocks fit an SM), 4 for k_kvq_decode, OSC_KVQ_BPS to override. A pair gets
 * per = slots / bh blocks (at least 1). k_kvq_mma: all of them share the packed groups and the
 * window's tiles (rs = 0, dq_split_items), so no slot idles once a short window block is done;
 * k_kvq_decode: rs of them (4, 2 or 1 as per >= 32, >= 16, else) take the window, the rest
 * (want) the packed groups. Blocks past one wave started only when the window's short blocks
 * left and ended that much after the rest (session 10: the (1,128K) launch of 66 + 4 splits x
 * 8 heads on 528 slots had its SMs idle 24% of the time). Folding gained 1-3 us at (8,32K) and
 * (16,8K) on the H100 (session 10); at B = 1 it lost 1-1.5 us there then and on the H200 in
 * session 13, so batch 1 kept the window's own splits until session 21, when the H200 read the
 * folded plan 2% faster at (1,128K) (38.5-38.8 us device time vs 39.5-39.7, 5 rounds), 0.4 us
 * at (1,32K), level at (1,4K) (the H100: level at (1,128K), 0.3-0.5 us faster at (1,32K)).
 * OSC_KVQ_PLAN (A/B sweeps, tests): 0 the old plan (ceil(slots / bh) packed splits, 4 window
 * splits), 2 never fold (k_kvq_mma: the window in splits of its own, as few as end in time:
 * dq_window_splits, whose only user this plan now is), 3 always fold (the default), 4 one split
 * per pair (per = 1, the plan of batches with more pairs than slots), 5 as 2 with rs splits for
 * the window. */
struct dq_budget {
    int want, rs;
    bool fit; /* k_kvq_mma: dq_plan may give the window fewer splits (dq_window_splits) */
};
int g_kvq_plan = -1; /* osc_cuda_kv_split_plan; -1: OSC_KVQ_PLAN, else 1 */
dq_budget dq_budget_for(int bh, bool mma) {
    static int bps = -1;
    if (bps < 0) {
        const char *e = getenv("OSC_KVQ_BPS");
        bps = e && atoi(e) > 0 ? atoi(e) : 0;
    }
    if (g_kvq_plan < 0) {
        const char *p = getenv("OSC_KVQ_PLAN");
        g_kvq_plan = p && *p >= '0' && *p <= '5' ? *p - '0' : 1;
    }
    const int plan = g_kvq_plan;
    if (plan == 4) return {1, mma ? 0 : 1, false}; /* one block per pair: what batches past one wave get */
    const int per_sm = bps ? bps : mma ? mq_blocks_per_sm() : 4;
    const int slots = per_sm * osc_cu_num_sms();
    if (bh < 1) bh = 1;
    if (!plan) return {(slots + bh - 1) / bh, 4, false};
    const int per = slots / bh > 1 ? slots / bh : 1;
    if (mma && plan != 2 && plan != 5) return {per, 0, false};
    const int rs = per >= 32 ? 4 : per >= 16 ? 2 : 1;
    return {per - rs > 1 ? per - rs : 1, rs, mma && plan != 5};
}

/* k_kvq_mma, window in splits of its own: the fewest of 1, 2, 4 (at most rs) whose blocks end
 * no later than the packed ones, so the rest of the pair's blocks take packed groups. A warp's
 * window tile costs about 4 packed groups on a loaded memory system (H100 block timings,
 * session 11: (1,128K) window blocks of one tile per warp ended at 11-12 us, of four at 28 us,
 * packed blocks of 16-17 groups per warp at 33-40 us). The window is taken at its longest, 16
 * tiles (R = 256), or n_res if longer: a CUDA graph's table is built with the window empty. */
int dq_window_splits(int n_groups, int n_res, int want, int rs) {
    const int tiles = dq_tiles(n_res) > 16 ? dq_tiles(n_res) : 16, per = want + rs;
    for (int r = 1; r < rs; r *= 2) {
        const int pk = per - r, gpb = (n_groups + pk - 1) / pk;
        if ((tiles + 4 * r - 1) / (4 * r) * 4 <= (gpb + DQ_NW - 1) / DQ_NW) return r;
    }
    return rs;
}

/* the split plan of one sequence: groups per split for about `want` packed splits, or (rs = 0)
 * `want` splits sharing the groups and the window's tiles */
void dq_plan(dq_seq *sq, int n_quant, int n_res, dq_budget bud) {
    int want = bud.want;
    const int n_groups = n_quant / 32;
    if (bud.fit && bud.rs > 1 && n_groups > 0) {
        const int r = dq_window_splits(n_groups, n_res, want, bud.rs);
        want += bud.rs - r;
        bud.rs = r;
    }
    int nsq = 0, gpb = 1;
    if (!bud.rs) { /* folded: want splits share groups and tiles (dq_split_items) */
        nsq = want > 1 ? want : 1;
    } else if (n_groups > 0) {
        if (want < 1) want = 1;
        gpb = (n_groups + want - 1) / want;
        if (gpb < DQ_NW) gpb = DQ_NW;
        nsq = (n_groups + gpb - 1) / gpb;
    }
    sq->n_groups = n_groups;
    sq->gpb = gpb;
    sq->nsq = nsq;
    sq->n_res = n_res;
    sq->rs = bud.rs;
}

/* ------------------------------------------------------------------------------------------ */
/* dequantisation back to bf16 (prefill over a quantised cache, truncation, debugging)          */
/* ------------------------------------------------------------------------------------------ */
/* One warp per (token, kv head); lane holds channels lane*E .. lane*E+E-1. Keys come back in
 * the original domain: H (k_hat * n_t) (H is its own inverse). */
template <int E>
__global__ void k_kv_dequant(const uint32_t *__restrict__ kq, const uint16_t *__restrict__ kp,
                             const uint32_t *__restrict__ vq, const uint16_t *__restrict__ vp,
                             const float *__restrict__ kn, int t0, int n, int Hkv, int bits, int rotate, float rsq,
                             bf16 *__restrict__ ok, bf16 *__restrict__ ov, const int *__restrict__ bt, int gpp,
                             long long pgb) {
    const int HD = 32 * E;
    const int lane = threadIdx.x & 31;
    const long wid = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (wid >= (long)n * Hkv) return;
    const int i = (int)(wid / Hkv), h = (int)(wid % Hkv), t = t0 + i;
    const int j = t & 31, per = 32 / bits;
    /* paged: token t is token tl of page bt[(t / 32) / gpp]; contiguous (bt NULL): tl = t */
    int g = t >> 5, tl = t;
    size_t po = 0;
    if (bt) {
        const int pi = g / gpp;
        g -= pi * gpp;
        tl = g * 32 + j;
        po = (size_t)__ldg(bt + pi) * (size_t)pgb;
    }
    kq = reinterpret_cast<const uint32_t *>(reinterpret_cast<const char *>(kq) + po);
    kp = reinterpret_cast<const uint16_t *>(reinterpret_cast<const char *>(kp) + po);
    vq = reinterpret_cast<const uint32_t *>(reinterpret_cast<const char *>(vq) + po);
    vp = reinterpret_cast<const uint16_t *>(reinterpret_cast<const char *>(vp) + po);
    const uint32_t mask = (1u << bits) - 1u;
    const bool frag = bits == 2 && HD == 128; /* fragment order (kv_quant.h) */
    const uint32_t *kb = kq + ((size_t)g * Hkv + h) * bits * HD;
    const uint32_t *kw = kb + (size_t)(j / per) * HD;
    const __half *kpp = reinterpret_cast<const __half *>(kp) + ((size_t)g * Hkv + h) * HD * 2;
    const int sh = bits * (j % per);
    const float nt = kn ? reinterpret_cast<const float *>(reinterpret_cast<const char *>(kn) + po)[tl] : 1.f;
    float x[E];
#pragma unroll
    for (int e = 0; e < E; e++) {
        const int c = lane * E + e;
        int fb = 0;
        const uint32_t code = frag ? (kb[osc_kvq_frag_k(j, c, &fb)] >> fb) & mask : (kw[c] >> sh) & mask;
        const float ks = __half2float(kpp[frag ? osc_kvq_frag_kp(c, 0) : 2 * c]);
        const float kz = __half2float(kpp[frag ? osc_kvq_frag_kp(c, 1) : 2 * c + 1]);
        x[e] = ((float)code * ks + kz) * nt;
    }
    if (rotate) {
        fwht_warp<E>(x, lane);
#pragma unroll
        for (int e = 0; e < E; e++) x[e] *= rsq;
    }
    const size_t orow = ((size_t)i * Hkv + h) * HD;
    const uint32_t *vw = vq + ((size_t)tl * Hkv + h) * (HD * bits / 32);
    const uint32_t *vb = vq + ((size_t)g * Hkv + h) * 256; /* fragment order: the group's block */
    const __half *vpp = reinterpret_cast<const __half *>(vp) + ((size_t)tl * Hkv + h) * (HD / 32) * 2;
    const __half *vfp = reinterpret_cast<const __half *>(vp) + ((size_t)g * Hkv + h) * 256;
#pragma unroll
    for (int e = 0; e < E; e++) {
        const int c = lane * E + e;
        ok[orow + c] = f2bf(x[e]);
        int fb = 0;
        const uint32_t code = frag ? (vb[osc_kvq_frag_v(j, c, &fb)] >> fb) & mask
                                   : (vw[c / per] >> (bits * (c % per))) & mask;
        const float vs = __half2float(frag ? vfp[osc_kvq_frag_vp(j, c / 32, 0)] : vpp[2 * (c / 32)]);
        const float vz = __half2float(frag ? vfp[osc_kvq_frag_vp(j, c / 32, 1)] : vpp[2 * (c / 32) + 1]);
        ov[orow + c] = f2bf((float)code * vs + vz);
    }
}

/* int8 per (token, kv head) row, symmetric: scale = amax / 127 rounded UP to fp16 (1 for a zero
 * row), code = round(x / scale) clamped to [-127, 127] -- kv_quant.c's osc_kvq_quant_i8_row. */
__global__ void k_kv_i8_quant(const bf16 *__restrict__ x, long rows, int hd, int8_t *__restrict__ q,
                              uint16_t *__restrict__ sc) {
    const int lane = threadIdx.x & 31;
    const long r = ((long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (r >= rows) return;
    const bf16 *xr = x + r * hd;
    float amax = 0.f;
    for (int c = lane; c < hd; c += 32) amax = fmaxf(amax, fabsf(__bfloat162float(xr[c])));
    amax = warp_max(amax);
    __half h = amax > 0.f ? __float2half_ru(__fdiv_rn(amax, 127.0f)) : __float2half(1.0f);
    const float s = __half2float(h);
    for (int c = lane; c < hd; c += 32) {
        float v = roundf(__fdiv_rn(__bfloat162float(xr[c]), s));
        v = fminf(fmaxf(v, -127.f), 127.f);
        q[r * hd + c] = (int8_t)v;
    }
    if (lane == 0) sc[r] = __half_as_ushort(h);
}

__global__ void k_kv_i8_dequant(const int8_t *__restrict__ q, const uint16_t *__restrict__ sc, long rows, int hd,
                                bf16 *__restrict__ out) {
    const long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * hd) return;
    out[i] = f2bf((float)q[i] * __half2float(__ushort_as_half(sc[i / hd])));
}

} // namespace

extern "C" size_t osc_kvq_bytes_kq(int n_tok, int Hkv, int hd, int bits) {
    return (size_t)(n_tok / 32) * Hkv * bits * hd * 4;
}
extern "C" size_t osc_kvq_bytes_kp(int n_tok, int Hkv, int hd) { return (size_t)(n_tok / 32) * Hkv * hd * 4; }
extern "C" size_t osc_kvq_bytes_vq(int n_tok, int Hkv, int hd, int bits) {
    return (size_t)n_tok * Hkv * (hd * bits / 32) * 4;
}
extern "C" size_t osc_kvq_bytes_vp(int n_tok, int Hkv, int hd) { return (size_t)n_tok * Hkv * (hd / 32) * 4; }

static osc_status check_pages(const osc_kvq_pages *pg, const char *who) {
    if (pg && pg->bt && (pg->gpp <= 0 || pg->page_bytes <= 0 || pg->page_bytes % 16))
        return osc_error(OSC_ERR_INVALID_ARG, "%s: pages of %d groups, %lld bytes (a multiple of 16)", who, pg->gpp,
                         (long long)pg->page_bytes);
    return OSC_OK;
}

extern "C" osc_status osc_cuda_kv_pack(const void *k, const void *v, int n_tok, int Hkv, int hd, int bits, int rotate,
                                       int norm_scale, uint32_t *kq, uint16_t *kp, uint32_t *vq, uint16_t *vp,
                                       float *kn) {
    return osc_cuda_kv_pack_paged(k, v, n_tok, Hkv, hd, bits, rotate, norm_scale, kq, kp, vq, vp, kn, NULL, 0);
}

extern "C" osc_status osc_cuda_kv_pack_paged(const void *k, const void *v, int n_tok, int Hkv, int hd, int bits,
                                             int rotate, int norm_scale, uint32_t *kq, uint16_t *kp, uint32_t *vq,
                                             uint16_t *vp, float *kn, const osc_kvq_pages *pages, int t_first) {
    if (n_tok < 0 || n_tok % 32) return osc_error(OSC_ERR_INVALID_ARG, "kv_pack: n_tok %d not a multiple of 32", n_tok);
    if (bits != 2 && bits != 4) return osc_error(OSC_ERR_INVALID_ARG, "kv_pack: bits %d", bits);
    if (Hkv <= 0) return osc_error(OSC_ERR_INVALID_ARG, "kv_pack: Hkv %d", Hkv);
    if (t_first < 0 || t_first % 32) return osc_error(OSC_ERR_INVALID_ARG, "kv_pack: first token %d", t_first);
    OSC_TRY(check_pages(pages, "kv_pack"));
    if (n_tok == 0) return OSC_OK;
    const int *bt = pages ? pages->bt : NULL;
    const int gpp = bt ? pages->gpp : 1;
    const long long pgb = bt ? pages->page_bytes : 0;
    const int g_first = t_first / 32;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const bf16 *kb = (const bf16 *)k, *vb = (const bf16 *)v;
#define OSC_PK(EV) launch_pack_e<EV>(kb, vb, n_tok, Hkv, bits, rotate, norm_scale, kq, kp, vq, vp, kn, bt, gpp, pgb, g_first, st)
    switch (hd) {
    case 32: return OSC_PK(1);
    case 64: return OSC_PK(2);
    case 128: return OSC_PK(4);
    case 256: return OSC_PK(8);
    case 512: return OSC_PK(16);
    default: return osc_error(OSC_ERR_UNSUPPORTED, "kv_pack: head_dim %d (need a power of two 32..512)", hd);
    }
#undef OSC_PK
}

extern "C" osc_status osc_cuda_kv_decode_attn(void *out, const void *q, int Hq, int Hkv, int hd, int bits, int rotate,
                                              int norm_scale, const uint32_t *kq, const uint16_t *kp,
                                              const uint32_t *vq, const uint16_t *vp, const float *kn, int n_quant,
                                              const void *rk, const void *rv, const float *rn, int n_res,
                                              float scale) {
    return osc_cuda_kv_decode_attn_ex(out, q, Hq, Hkv, hd, bits, rotate, norm_scale, kq, kp, vq, vp, kn, n_quant, rk, rv,
                                      rn, n_res, scale, 0);
}

extern "C" osc_status osc_cuda_kv_decode_attn_ex(void *out, const void *q, int Hq, int Hkv, int hd, int bits,
                                                 int rotate, int norm_scale, const uint32_t *kq, const uint16_t *kp,
                                                 const uint32_t *vq, const uint16_t *vp, const float *kn, int n_quant,
                                                 const void *rk, const void *rv, const float *rn, int n_res,
                                                 float scale, int res_raw) {
    return osc_cuda_kv_decode_attn_paged(out, q, Hq, Hkv, hd, bits, rotate, norm_scale, kq, kp, vq, vp, kn, n_quant, rk,
                                         rv, rn, n_res, scale, res_raw, NULL);
}


extern "C" osc_status osc_cuda_kv_decode_attn_paged(void *out, const void *q, int Hq, int Hkv, int hd, int bits,
                                                    int rotate, int norm_scale, const uint32_t *kq, const uint16_t *kp,
                                                    const uint32_t *vq, const uint16_t *vp, const float *kn,
                                                    int n_quant, const void *rk, const void *rv, const float *rn,
                                                    int n_res, float scale, int res_raw, const osc_kvq_pages *pages) {
    (void)norm_scale; /* kn holds 1.0 without it */
    OSC_TRY(check_pages(pages, "kv_decode_attn"));
    const int *bt = pages ? pages->bt : NULL;
    const int gpp = bt ? pages->gpp : 1;
    const long long pgb = bt ? pages->page_bytes : 0;
    if (Hkv <= 0 || Hq % Hkv) return osc_error(OSC_ERR_INVALID_ARG, "kv_decode_attn: Hq %d / Hkv %d", Hq, Hkv);
    const int G = Hq / Hkv;
    if (G > 8) return osc_error(OSC_ERR_UNSUPPORTED, "kv_decode_attn: %d query heads per kv head (max 8)", G);
    if (bits != 2 && bits != 4) return osc_error(OSC_ERR_INVALID_ARG, "kv_decode_attn: bits %d", bits);
    if (hd != 128 && hd != 256)
        return osc_error(OSC_ERR_UNSUPPORTED, "kv_decode_attn: head_dim %d (128 or 256)", hd);
    if (n_quant < 0 || n_quant % 32 || n_res < 0)
        return osc_error(OSC_ERR_INVALID_ARG, "kv_decode_attn: n_quant %d / n_res %d", n_quant, n_res);
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    if (n_quant == 0 && n_res == 0) {
        OSC_CU_CHECK(cudaMemsetAsync(out, 0, (size_t)Hq * hd * 2, st));
        return OSC_OK;
    }
    dq_seq sq = {kq, kp, vq, vp, kn, (const bf16 *)rk, (const bf16 *)rv, rn, bt, pgb, gpp, 0, 1, 0, 0, nullptr, 1};
    dq_plan(&sq, n_quant, n_res, dq_budget_for(Hkv, mq_use(hd, bits)));
    const int NS = dq_used(sq);
    const int GM = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
    size_t acc_n = (size_t)Hkv * NS * G * hd, ml_n = (size_t)Hkv * NS * G;
    void *wsp;
    OSC_TRY(osc_cu_scratch(acc_n * sizeof(float) + ml_n * sizeof(float2), &wsp));
    float *pacc = (float *)wsp;
    float2 *pml = (float2 *)(pacc + acc_n);
    float sq_hd = sqrtf((float)hd);
    float rsq = 1.0f / sq_hd;
    float qscale = scale * kLog2e;
    const bf16 *qb = (const bf16 *)q;
    osc_status s;
#define OSC_HDB(HDV, BV) s = pick_gm<HDV, BV>(GM, pacc, pml, qb, G, Hkv, rotate, rsq, qscale, sq, nullptr, 1, NS, res_raw, st)
    if (mq_use(hd, bits)) {
        return mq_launch(pacc, pml, qb, G, Hkv, rotate, rsq, qscale, sq, nullptr, 1, NS, res_raw, (bf16 *)out, st);
    } else if (hd == 128) {
        OSC_HDB(128, 4);
    } else {
        if (bits == 2) OSC_HDB(256, 2); else OSC_HDB(256, 4);
    }
#undef OSC_HDB
    if (s != OSC_OK) return s;
    OSC_CU_CHECK(osc_launch(kvq_combine_for(NS, hd), dim3((unsigned)(Hkv * G)), dim3(LSE_THREADS), (size_t)NS * sizeof(float),
                            st, (bf16 *)out, pacc, pml, NS, G, hd, (const dq_seq *)nullptr, Hkv));
    OSC_CU_LAUNCH("k_kvq_combine");
    return OSC_OK;
}

static osc_status dq_check(const char *what, int B, int Hq, int Hkv, int hd, int bits) {
    if (B <= 0) return osc_error(OSC_ERR_INVALID_ARG, "%s: %d sequences", what, B);
    if (Hkv <= 0 || Hq % Hkv) return osc_error(OSC_ERR_INVALID_ARG, "%s: Hq %d / Hkv %d", what, Hq, Hkv);
    if (Hq / Hkv > 8) return osc_error(OSC_ERR_UNSUPPORTED, "%s: %d query heads per kv head (max 8)", what, Hq / Hkv);
    if (bits != 2 && bits != 4) return osc_error(OSC_ERR_INVALID_ARG, "%s: bits %d", what, bits);
    if (hd != 128 && hd != 256) return osc_error(OSC_ERR_UNSUPPORTED, "%s: head_dim %d (128 or 256)", what, hd);
    return OSC_OK;
}

/* the split-K kernels and the combine of B sequences whose dq_seq table is on the device */
osc_status dq_run_batch(void *out, const void *q, int B, int G, int Hkv, int hd, int bits, int rotate, float scale,
                        const dq_seq *dseqs, int NS, float *pacc, float2 *pml, int res_raw, cudaStream_t st) {
    const int GM = G <= 1 ? 1 : G <= 2 ? 2 : G <= 4 ? 4 : 8;
    const float rsq = 1.0f / sqrtf((float)hd), qscale = scale * kLog2e;
    const bf16 *qb = (const bf16 *)q;
    const dq_seq none = {};
    osc_status s;
#define OSC_HDB(HDV, BV) s = pick_gm<HDV, BV>(GM, pacc, pml, qb, G, Hkv, rotate, rsq, qscale, none, dseqs, B, NS, res_raw, st)
    if (mq_use(hd, bits)) {
        return mq_launch(pacc, pml, qb, G, Hkv, rotate, rsq, qscale, none, dseqs, B, NS, res_raw, (bf16 *)out, st);
    } else if (hd == 128) {
        OSC_HDB(128, 4);
    } else {
        if (bits == 2) OSC_HDB(256, 2); else OSC_HDB(256, 4);
    }
#undef OSC_HDB
    OSC_TRY(s);
    OSC_CU_CHECK(osc_launch(kvq_combine_for(NS, hd), dim3((unsigned)(B * Hkv * G)), dim3(LSE_THREADS), (size_t)NS * sizeof(float),
                            st, (bf16 *)out, pacc, pml, NS, G, hd, dseqs, Hkv));
    OSC_CU_LAUNCH("k_kvq_combine");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_kv_decode_attn_batch(void *out, const void *q, int B, int Hq, int Hkv, int hd, int bits,
                                                    int rotate, const osc_kvq_seq *seqs, float scale, int res_raw) {
    OSC_TRY(dq_check("kv_decode_attn_batch", B, Hq, Hkv, hd, bits));
    if (!seqs) return osc_error(OSC_ERR_INVALID_ARG, "kv_decode_attn_batch: no sequences");
    const int G = Hq / Hkv;
    dq_seq *hs = (dq_seq *)malloc((size_t)B * sizeof *hs);
    if (!hs) return osc_error(OSC_ERR_OOM, "kv_decode_attn_batch: host table");
    const dq_budget bud = dq_budget_for(B * Hkv, mq_use(hd, bits));
    int NS = 0;
    for (int b = 0; b < B; b++) {
        const osc_kvq_seq *x = &seqs[b];
        if (x->n_quant < 0 || x->n_quant % 32 || x->n_res < 0 || (x->n_quant == 0 && x->n_res == 0) ||
            (x->pages.bt && (x->pages.gpp <= 0 || x->pages.page_bytes <= 0 || x->pages.page_bytes % 16))) {
            free(hs);
            return osc_error(OSC_ERR_INVALID_ARG, "kv_decode_attn_batch: sequence %d: n_quant %d, n_res %d, pages", b,
                             x->n_quant, x->n_res);
        }
        const int *bt = x->pages.bt;
        hs[b] = dq_seq{x->kq, x->kp, x->vq, x->vp, x->kn, (const bf16 *)x->rk, (const bf16 *)x->rv, nullptr, bt,
                       bt ? x->pages.page_bytes : 0, bt ? x->pages.gpp : 1, 0, 1, 0, 0, nullptr, 1};
        dq_plan(&hs[b], x->n_quant, x->n_res, bud);
        const int ns = dq_used(hs[b]);
        if (ns > NS) NS = ns;
    }
    cudaStream_t st;
    osc_status s = osc_cu_stream(&st);
    const size_t acc_n = (size_t)B * Hkv * NS * G * hd, ml_n = (size_t)B * Hkv * NS * G;
    const size_t tab_off = (acc_n * sizeof(float) + ml_n * sizeof(float2) + 255) & ~(size_t)255;
    void *wsp = nullptr;
    if (s == OSC_OK) s = osc_cu_scratch(tab_off + (size_t)B * sizeof(dq_seq), &wsp);
    if (s == OSC_OK) {
        cudaError_t e = cudaMemcpyAsync((char *)wsp + tab_off, hs, (size_t)B * sizeof(dq_seq), cudaMemcpyHostToDevice, st);
        if (e != cudaSuccess) s = osc_error(OSC_ERR_DEVICE, "kv_decode_attn_batch: table upload: %s", cudaGetErrorString(e));
    }
    free(hs); /* pageable source: staged before cudaMemcpyAsync returned */
    OSC_TRY(s);
    return dq_run_batch(out, q, B, G, Hkv, hd, bits, rotate, scale, (const dq_seq *)((char *)wsp + tab_off), NS,
                        (float *)wsp, (float2 *)((float *)wsp + acc_n), res_raw, st);
}

/* ---- the decode step of a CUDA graph (kvquant_launch.h) ---- */

extern "C" int osc_cuda_kv_stream_combine(int on) {
    const int was = g_mq_stream < 0 ? 1 : g_mq_stream;
    g_mq_stream = on == 0 || on == 1 ? on : -1;
    return was;
}

extern "C" int osc_cuda_kv_fused_merge(int mode) {
    const int was = g_mq_fused < 0 ? 1 : g_mq_fused;
    g_mq_fused = mode >= 0 && mode <= 2 ? mode : -1;
    return was;
}

extern "C" int osc_cuda_kv_one_level_merge(int mode) {
    const int was = g_mq_one < 0 ? 1 : g_mq_one;
    g_mq_one = mode >= 0 && mode <= 2 ? mode : -1;
    return was;
}

extern "C" int osc_cuda_kv_split_plan(int plan) {
    const int was = g_kvq_plan < 0 ? 1 : g_kvq_plan;
    g_kvq_plan = plan >= 0 && plan <= 5 ? plan : -1;
    return was;
}

extern "C" int osc_cuda_kv_graph_splits(int B, int Hkv, int hd, int bits) {
    const dq_budget b = dq_budget_for(B * Hkv, mq_use(hd, bits));
    return b.want + b.rs; /* the packed splits, then the window's (none of its own when folded) */
}

extern "C" size_t osc_cuda_kv_graph_table_bytes(int B) { return (size_t)(B > 0 ? B : 0) * sizeof(dq_seq); }

extern "C" osc_status osc_cuda_kv_graph_table(void *host, const osc_kvq_seq *seqs, int B, int Hkv, int hd, int bits,
                                              int NS, const int32_t *lens1) {
    if (B <= 0 || Hkv <= 0 || !host || !seqs || !lens1 || NS != osc_cuda_kv_graph_splits(B, Hkv, hd, bits))
        return osc_error(OSC_ERR_INVALID_ARG, "kv graph table: B %d, Hkv %d, %d splits", B, Hkv, NS);
    const dq_budget bud = dq_budget_for(B * Hkv, mq_use(hd, bits));
    dq_seq *hs = (dq_seq *)host;
    for (int b = 0; b < B; b++) {
        const osc_kvq_seq *x = &seqs[b];
        const int *bt = x->pages.bt;
        if (x->n_quant < 0 || x->n_quant % 32 ||
            (bt && (x->pages.gpp <= 0 || x->pages.page_bytes <= 0 || x->pages.page_bytes % 16)))
            return osc_error(OSC_ERR_INVALID_ARG, "kv graph table: sequence %d: n_quant %d, pages", b, x->n_quant);
        dq_seq *d = &hs[b];
        memset(d, 0, sizeof *d); /* field by field: callers compare tables bytewise, padding included */
        d->kq = x->kq, d->kp = x->kp, d->vq = x->vq, d->vp = x->vp, d->kn = x->kn;
        d->rk = (const bf16 *)x->rk, d->rv = (const bf16 *)x->rv, d->bt = bt;
        d->pgb = bt ? x->pages.page_bytes : 0;
        d->gpp = bt ? x->pages.gpp : 1;
        d->len1 = lens1 + b;
        dq_plan(d, x->n_quant, 1, bud); /* at most NS splits in all (dq_used) */
    }
    return OSC_OK;
}

extern "C" size_t osc_cuda_kv_graph_part_bytes(int B, int Hq, int Hkv, int hd, int NS) {
    if (B <= 0 || Hkv <= 0 || Hq % Hkv || NS <= 0) return 0;
    const size_t rows = (size_t)B * Hkv * NS * (Hq / Hkv);
    return ((rows * hd * sizeof(float) + 255) & ~(size_t)255) + rows * sizeof(float2);
}

extern "C" osc_status osc_cuda_kv_decode_attn_graph(void *out, const void *q, int B, int Hq, int Hkv, int hd, int bits,
                                                    int rotate, const void *table, int NS, void *part, float scale) {
    OSC_TRY(dq_check("kv_decode_attn_graph", B, Hq, Hkv, hd, bits));
    if (!table || !part || NS < 1)
        return osc_error(OSC_ERR_INVALID_ARG, "kv_decode_attn_graph: table / part / %d splits", NS);
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const size_t rows = (size_t)B * Hkv * NS * (Hq / Hkv);
    float *pacc = (float *)part;
    float2 *pml = (float2 *)((char *)part + ((rows * hd * sizeof(float) + 255) & ~(size_t)255));
    return dq_run_batch(out, q, B, Hq / Hkv, Hkv, hd, bits, rotate, scale, (const dq_seq *)table, NS, pacc, pml, 1, st);
}

extern "C" osc_status osc_cuda_kv_dequant(const uint32_t *kq, const uint16_t *kp, const uint32_t *vq, const uint16_t *vp,
                                          const float *kn, int t0, int n, int Hkv, int hd, int bits, int rotate,
                                          void *out_k, void *out_v) {
    return osc_cuda_kv_dequant_paged(kq, kp, vq, vp, kn, t0, n, Hkv, hd, bits, rotate, out_k, out_v, NULL);
}

extern "C" osc_status osc_cuda_kv_dequant_paged(const uint32_t *kq, const uint16_t *kp, const uint32_t *vq,
                                                const uint16_t *vp, const float *kn, int t0, int n, int Hkv, int hd,
                                                int bits, int rotate, void *out_k, void *out_v,
                                                const osc_kvq_pages *pages) {
    OSC_TRY(check_pages(pages, "kv_dequant"));
    const int *bt = pages ? pages->bt : NULL;
    const int gpp = bt ? pages->gpp : 1;
    const long long pgb = bt ? pages->page_bytes : 0;
    if (t0 < 0 || n < 0 || Hkv <= 0 || (bits != 2 && bits != 4))
        return osc_error(OSC_ERR_INVALID_ARG, "kv_dequant: t0 %d n %d Hkv %d bits %d", t0, n, Hkv, bits);
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const long warps = (long)n * Hkv;
    const unsigned blocks = (unsigned)((warps * 32 + 255) / 256);
    const float rsq = 1.0f / sqrtf((float)hd);
    bf16 *ok = (bf16 *)out_k, *ov = (bf16 *)out_v;
#define OSC_DQK(EV) \
    k_kv_dequant<EV><<<blocks, 256, 0, st>>>(kq, kp, vq, vp, kn, t0, n, Hkv, bits, rotate, rsq, ok, ov, bt, gpp, pgb)
    switch (hd) {
    case 32: OSC_DQK(1); break;
    case 64: OSC_DQK(2); break;
    case 128: OSC_DQK(4); break;
    case 256: OSC_DQK(8); break;
    case 512: OSC_DQK(16); break;
    default: return osc_error(OSC_ERR_UNSUPPORTED, "kv_dequant: head_dim %d (need a power of two 32..512)", hd);
    }
#undef OSC_DQK
    OSC_CU_LAUNCH("k_kv_dequant");
    return OSC_OK;
}

namespace {
__global__ void k_kv_set_i32(int *p, int v) { *p = v; }
} // namespace

extern "C" osc_status osc_cuda_kv_set_i32(int *dst, int value) {
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    k_kv_set_i32<<<1, 1, 0, st>>>(dst, value);
    OSC_CU_LAUNCH("k_kv_set_i32");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_kv_i8_quant(const void *x, long rows, int hd, int8_t *q, uint16_t *scales) {
    if (rows <= 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    k_kv_i8_quant<<<(unsigned)((rows * 32 + 255) / 256), 256, 0, st>>>((const bf16 *)x, rows, hd, q, scales);
    OSC_CU_LAUNCH("k_kv_i8_quant");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_kv_i8_dequant(const int8_t *q, const uint16_t *scales, long rows, int hd, void *out) {
    if (rows <= 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    long n = rows * hd;
    k_kv_i8_dequant<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(q, scales, rows, hd, (bf16 *)out);
    OSC_CU_LAUNCH("k_kv_i8_dequant");
    return OSC_OK;
}
