/* kernels/cuda/cuda_attention.cu: causal / non-causal GQA attention of one sequence.
 * q[S,Hq,D], k[T,Hkv,D], v[T,Hkv,D] -> out[S,Hq,D], bf16 in/out, fp32 softmax and accumulation.
 *
 * GQA row packing (both kernels): the query heads h = kvh*G + g (G = Hq/Hkv) that share one
 * KV head are handled by the same block, as "rows" r = s*G + g (query s = r / G, absolute
 * position q_pos0 + s), so each K/V tile is read once for all G heads.
 *
 * (a) k_attn_prefill<DP>: flash attention with tensor cores (WMMA bf16 16x16x16, fp32 accum).
 *     Block = 4 warps = 64 rows of one KV head; loops over 64-key tiles (only up to the last
 *     key any of its rows may see when causal). Per tile: S = Q K^T (WMMA, fp32) -> shared,
 *     online softmax per row in fp32 (exp2 with log2e folded into the scale), P (bf16) ->
 *     shared, O (fp32, in shared) = O*alpha + P V (WMMA accumulators loaded from / stored to
 *     shared). Never materialises an S x T matrix. Head dim D is zero-padded to DP (a
 *     multiple of 16: 32, 64, 80, 96, 128, 160, 192, 256), rows/keys beyond S*G / T are
 *     zero-filled and masked, so any S, T and D <= 256 work.
 * (b) k_attn_decode + k_attn_combine (S <= 4): split-K flash decoding. Grid (splits, Hkv);
 *     each block takes a contiguous chunk of keys for all S*G rows of its KV head, keeps
 *     (max, sum, acc[D]) per row in fp32 and writes them as partials to a scratch buffer; the
 *     combine kernel merges the splits by log-sum-exp and normalises.
 * (c) k_attn_decode1: the common decode case (one query row, D 64/128/256, up to 8 query heads
 *     per KV head), a streaming kernel with 16-byte loads and per-key-group online softmax
 *     (see its comment); same partials and combine as (b).
 * (a2) k_attn_fa2: the prefill kernel for head dims 32/64/80/96/128 (16-byte aligned rows): mma.sync
 *     with registers for Q, scores and O, cp.async double-buffered K/V tiles (see its comment);
 *     (a) remains for the other head dims (and with OSC_ATTN_WMMA set, for comparison).
 * osc_cuda_attention picks (c) when it applies, else (b) when S <= 4 and its shared memory
 * fits, else (a2) or (a). */
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_mma.cuh"

#include <mma.h>

using namespace nvcuda;

namespace {

const float kLog2e = 1.4426950408889634f;

/* ------------------------------------------------------------------------------------------ */
/* (a) prefill                                                                                  */
/* ------------------------------------------------------------------------------------------ */
const int PB_Q = 64;  /* rows per block (4 warps x 16) */
const int PB_K = 64;  /* keys per tile */
const int P_LDS = PB_K + 4;  /* fp32 scores row stride */
const int P_LDP = PB_K + 8;  /* bf16 probabilities row stride */

template <int DP> struct prefill_smem {
    static const int LDQ = DP + 8;  /* bf16 rows of Q, K, V */
    static const int LDO = DP + 4;  /* fp32 rows of O */
    static const size_t q_off = 0;
    static const size_t k_off = q_off + (size_t)PB_Q * LDQ * 2;
    static const size_t v_off = k_off + (size_t)PB_K * LDQ * 2;
    static const size_t s_off = v_off + (size_t)PB_K * LDQ * 2;
    static const size_t p_off = s_off + (size_t)PB_Q * P_LDS * 4;
    static const size_t o_off = p_off + (size_t)PB_Q * P_LDP * 2;
    static const size_t m_off = o_off + (size_t)PB_Q * LDO * 4;
    static const size_t l_off = m_off + PB_Q * 4;
    static const size_t bytes = l_off + PB_Q * 4;
};

/* Load `rows` rows of D bf16 values into shared rows of DP (+pad) elements; src(row) gives the
 * global row pointer or nullptr for a zero row. Columns D..DP-1 are zeroed. */
template <int DP, typename F>
__device__ __forceinline__ void load_tile(bf16 *dst, int ld, int rows, int D, bool vec, F src) {
    const int CH = DP / 8; /* 16-byte chunks per row */
    for (int idx = threadIdx.x; idx < rows * CH; idx += blockDim.x) {
        int r = idx / CH, c = idx % CH, d0 = c * 8;
        const bf16 *g = src(r);
        uint4 val = make_uint4(0, 0, 0, 0);
        if (g && d0 < D) {
            if (vec) {
                val = *reinterpret_cast<const uint4 *>(g + d0);
            } else {
                union { uint4 u; bf16 h[8]; } tmp;
#pragma unroll
                for (int e = 0; e < 8; e++) tmp.h[e] = d0 + e < D ? g[d0 + e] : f2bf(0.f);
                val = tmp.u;
            }
        }
        *reinterpret_cast<uint4 *>(dst + (size_t)r * ld + d0) = val;
    }
}

template <int DP>
__global__ void __launch_bounds__(128)
k_attn_prefill(bf16 *__restrict__ out, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
               const bf16 *__restrict__ v, int S, int T, int Hq, int Hkv, int D, long long q_pos0,
               float scale_log2, int causal, int vec_ok, const int *__restrict__ cu) {
    typedef prefill_smem<DP> L;
    if (cu) { /* varlen: blockIdx.z is a segment [cu[z], cu[z+1]) of the packed rows, attending to itself */
        const int o0 = cu[blockIdx.z];
        S = T = cu[blockIdx.z + 1] - o0;
        if ((int)blockIdx.x * PB_Q >= S * (Hq / Hkv)) return; /* whole block: no barrier reached */
        q += (size_t)o0 * Hq * D;
        out += (size_t)o0 * Hq * D;
        k += (size_t)o0 * Hkv * D;
        v += (size_t)o0 * Hkv * D;
        q_pos0 = 0;
    }
    extern __shared__ __align__(128) unsigned char smem_pf[];
    unsigned char *smem = smem_pf;
    bf16 *Qs = (bf16 *)(smem + L::q_off);
    bf16 *Ks = (bf16 *)(smem + L::k_off);
    bf16 *Vs = (bf16 *)(smem + L::v_off);
    float *Ss = (float *)(smem + L::s_off);
    bf16 *Ps = (bf16 *)(smem + L::p_off);
    float *Os = (float *)(smem + L::o_off);
    float *row_m = (float *)(smem + L::m_off);
    float *row_l = (float *)(smem + L::l_off);

    const int G = Hq / Hkv;
    const int kvh = blockIdx.y;
    const int NR = S * G;
    const int r0 = blockIdx.x * PB_Q;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool vec = vec_ok != 0; /* D % 8 == 0 and 16-byte aligned bases */

    /* Q tile and state */
    load_tile<DP>(Qs, L::LDQ, PB_Q, D, vec, [&](int r) -> const bf16 * {
        int gr = r0 + r;
        if (gr >= NR) return nullptr;
        int s = gr / G, g = gr % G;
        return q + ((size_t)s * Hq + (size_t)kvh * G + g) * D;
    });
    for (int i = threadIdx.x; i < PB_Q * L::LDO; i += blockDim.x) Os[i] = 0.f;
    for (int i = threadIdx.x; i < PB_Q; i += blockDim.x) {
        row_m[i] = -INFINITY;
        row_l[i] = 0.f;
    }

    const int rlast = min(r0 + PB_Q, NR) - 1;
    long long kend_ll = causal ? q_pos0 + rlast / G + 1 : (long long)T;
    const int kend = (int)(kend_ll < T ? kend_ll : T);

    for (int k0 = 0; k0 < kend; k0 += PB_K) {
        __syncthreads(); /* previous tile's P V is done with Ks/Vs (and Q/O init is visible) */
        load_tile<DP>(Ks, L::LDQ, PB_K, D, vec, [&](int r) -> const bf16 * {
            int j = k0 + r;
            return j < T ? k + ((size_t)j * Hkv + kvh) * D : nullptr;
        });
        load_tile<DP>(Vs, L::LDQ, PB_K, D, vec, [&](int r) -> const bf16 * {
            int j = k0 + r;
            return j < T ? v + ((size_t)j * Hkv + kvh) * D : nullptr;
        });
        __syncthreads();

        /* S[16 rows of this warp, 64 keys] = Q K^T */
        {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[PB_K / 16];
#pragma unroll
            for (int n = 0; n < PB_K / 16; n++) wmma::fill_fragment(acc[n], 0.f);
#pragma unroll
            for (int kk = 0; kk < DP / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::load_matrix_sync(a, Qs + (size_t)warp * 16 * L::LDQ + kk * 16, L::LDQ);
#pragma unroll
                for (int n = 0; n < PB_K / 16; n++) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
                    wmma::load_matrix_sync(b, Ks + (size_t)n * 16 * L::LDQ + kk * 16, L::LDQ);
                    wmma::mma_sync(acc[n], a, b, acc[n]);
                }
            }
#pragma unroll
            for (int n = 0; n < PB_K / 16; n++)
                wmma::store_matrix_sync(Ss + (size_t)warp * 16 * P_LDS + n * 16, acc[n], P_LDS, wmma::mem_row_major);
        }
        __syncwarp();

        /* online softmax on this warp's 16 rows; rescale their O rows */
        for (int rr = 0; rr < 16; rr++) {
            int r = warp * 16 + rr;
            int gr = r0 + r;
            long long lim = gr < NR ? (causal ? q_pos0 + gr / G : (long long)T - 1) : -1;
            int c0 = lane, c1 = lane + 32;
            int j0 = k0 + c0, j1 = k0 + c1;
            float x0 = (j0 < T && j0 <= lim) ? Ss[r * P_LDS + c0] * scale_log2 : -INFINITY;
            float x1 = (j1 < T && j1 <= lim) ? Ss[r * P_LDS + c1] * scale_log2 : -INFINITY;
            float tmax = warp_max(fmaxf(x0, x1));
            float m_old = row_m[r];
            float m_new = fmaxf(m_old, tmax);
            float p0 = 0.f, p1 = 0.f, alpha = 1.f;
            if (m_new != -INFINITY) {
                p0 = exp2f(x0 - m_new);
                p1 = exp2f(x1 - m_new);
                alpha = exp2f(m_old - m_new);
            }
            bf16 b0 = f2bf(p0), b1 = f2bf(p1);
            Ps[r * P_LDP + c0] = b0;
            Ps[r * P_LDP + c1] = b1;
            float psum = warp_sum(bf2f(b0) + bf2f(b1));
            __syncwarp();
            if (lane == 0) {
                row_l[r] = row_l[r] * alpha + psum;
                row_m[r] = m_new;
            }
            if (alpha != 1.f)
                for (int d = lane; d < DP; d += 32) Os[(size_t)r * L::LDO + d] *= alpha;
        }
        __syncwarp();

        /* O[16 rows, DP] += P[16, 64] V[64, DP] */
#pragma unroll
        for (int n = 0; n < DP / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
            float *op = Os + (size_t)warp * 16 * L::LDO + n * 16;
            wmma::load_matrix_sync(o, op, L::LDO, wmma::mem_row_major);
#pragma unroll
            for (int kk = 0; kk < PB_K / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
                wmma::load_matrix_sync(a, Ps + (size_t)warp * 16 * P_LDP + kk * 16, P_LDP);
                wmma::load_matrix_sync(b, Vs + (size_t)kk * 16 * L::LDQ + n * 16, L::LDQ);
                wmma::mma_sync(o, a, b, o);
            }
            wmma::store_matrix_sync(op, o, L::LDO, wmma::mem_row_major);
        }
    }
    __syncthreads();

    /* out = O / l */
    for (int rr = 0; rr < 16; rr++) {
        int r = warp * 16 + rr;
        int gr = r0 + r;
        if (gr >= NR) break;
        int s = gr / G, g = gr % G;
        float l = row_l[r];
        float inv = l > 0.f ? 1.f / l : 0.f;
        bf16 *o = out + ((size_t)s * Hq + (size_t)kvh * G + g) * D;
        for (int d = lane; d < D; d += 32) o[d] = f2bf(Os[(size_t)r * L::LDO + d] * inv);
    }
}

template <int DP>
osc_status launch_prefill(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, int S, int T, int Hq, int Hkv,
                          int D, long long q_pos0, float scale, int causal, int vec_ok, cudaStream_t st,
                          const int *cu = nullptr, int nseg = 1) {
    typedef prefill_smem<DP> L;
    static bool attr_set = false; /* benign race: setting it twice is harmless */
    if (!attr_set) {
        OSC_CU_CHECK(cudaFuncSetAttribute(k_attn_prefill<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          (int)L::bytes));
        attr_set = true;
    }
    int NR = S * (Hq / Hkv);
    dim3 grid((unsigned)((NR + PB_Q - 1) / PB_Q), (unsigned)Hkv, (unsigned)nseg); /* varlen: S = longest segment */
    k_attn_prefill<DP><<<grid, 128, L::bytes, st>>>(out, q, k, v, S, T, Hq, Hkv, D, q_pos0, scale * kLog2e, causal,
                                                  vec_ok, cu);
    OSC_CU_LAUNCH("k_attn_prefill");
    return OSC_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* (a2) prefill with mma.sync (FlashAttention-2 style), head dims 32/64/80/96/128               */
/* ------------------------------------------------------------------------------------------ */
/* Block = 4 warps = 64 GQA rows (16 per warp) of one KV head, 64-key tiles. Q fragments, the
 * scores and the O accumulator live in registers (mma.sync m16n8k16 bf16 -> fp32 layouts), so
 * the softmax rescale never touches shared memory; the scores become the A operand of P V
 * directly (the accumulator layout of two n8 tiles is the A layout of one k16 step). K/V tiles
 * are double-buffered in shared memory with cp.async (rows past T are zero-filled) and read
 * with ldmatrix (.trans for V). Rows are the same r = s*G + g packing as (a); causal and varlen
 * handling too. Needs D == DP and 16-byte aligned rows (D % 8 == 0). */
const int FA_BM = 64, FA_BN = 64;

template <int DP> struct fa_smem {
    static const int LD = DP + 8; /* bf16 per row: 16-byte rows, ldmatrix rows on distinct banks */
    static const size_t bytes = (size_t)4 * FA_BN * LD * 2; /* K, V x 2 stages */
};

__device__ __forceinline__ void fa_cp16(void *smem, const void *g, bool pred) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(n));
}
__device__ __forceinline__ void fa_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void fa_wait1() { asm volatile("cp.async.wait_group 1;\n" ::); }
__device__ __forceinline__ void fa_ldsm4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void fa_ldsm4t(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void fa_mma(float *c, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ unsigned fa_pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned *>(&h);
}

/* load keys [k0, k0 + 64) of one KV head (D bf16 per row) into a [64][LD] shared tile */
template <int DP>
__device__ __forceinline__ void fa_load(bf16 *dst, const bf16 *src, int k0, int T, int Hkv, int kvh) {
    constexpr int CH = DP / 8, LD = fa_smem<DP>::LD;
    for (int i = threadIdx.x; i < FA_BN * CH; i += blockDim.x) {
        const int r = i / CH, c = (i % CH) * 8, j = k0 + r;
        const bool ok = j < T;
        fa_cp16(dst + r * LD + c, ok ? src + ((size_t)j * Hkv + kvh) * DP + c : src, ok);
    }
}

template <int DP>
__global__ void __launch_bounds__(128)
k_attn_fa2(bf16 *__restrict__ out, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
           const bf16 *__restrict__ v, int S, int T, int Hq, int Hkv, long long q_pos0, float scale_log2, int causal,
           const int *__restrict__ cu) {
    constexpr int LD = fa_smem<DP>::LD, KS = DP / 16, NT = FA_BN / 8, ON = DP / 8;
    extern __shared__ __align__(16) unsigned char fa_sm[];
    bf16 *Ks = (bf16 *)fa_sm, *Vs = Ks + 2 * FA_BN * LD;
    const int G = Hq / Hkv;
    if (cu) {
        const int o0 = cu[blockIdx.z];
        S = T = cu[blockIdx.z + 1] - o0;
        if ((int)blockIdx.x * FA_BM >= S * G) return;
        q += (size_t)o0 * Hq * DP;
        out += (size_t)o0 * Hq * DP;
        k += (size_t)o0 * Hkv * DP;
        v += (size_t)o0 * Hkv * DP;
        q_pos0 = 0;
    }
    const int kvh = blockIdx.y, NR = S * G, r0 = blockIdx.x * FA_BM;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, qr = lane >> 2, qc = (lane & 3) * 2;
    const int rA = r0 + warp * 16 + qr, rB = rA + 8;
    const bf16 *pa = rA < NR ? q + ((size_t)(rA / G) * Hq + (size_t)kvh * G + rA % G) * DP : nullptr;
    const bf16 *pb = rB < NR ? q + ((size_t)(rB / G) * Hq + (size_t)kvh * G + rB % G) * DP : nullptr;
    unsigned qa[KS][4];
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        qa[kk][0] = pa ? *reinterpret_cast<const unsigned *>(pa + kk * 16 + qc) : 0u;
        qa[kk][1] = pb ? *reinterpret_cast<const unsigned *>(pb + kk * 16 + qc) : 0u;
        qa[kk][2] = pa ? *reinterpret_cast<const unsigned *>(pa + kk * 16 + 8 + qc) : 0u;
        qa[kk][3] = pb ? *reinterpret_cast<const unsigned *>(pb + kk * 16 + 8 + qc) : 0u;
    }
    float o[ON][4];
#pragma unroll
    for (int n = 0; n < ON; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
    const long long limA = rA < NR ? (causal ? q_pos0 + rA / G : (long long)T - 1) : -1;
    const long long limB = rB < NR ? (causal ? q_pos0 + rB / G : (long long)T - 1) : -1;
    const int rlast = min(r0 + FA_BM, NR) - 1;
    const long long kend_ll = causal ? q_pos0 + rlast / G + 1 : (long long)T;
    const int kend = (int)(kend_ll < T ? kend_ll : T);
    const int ntile = (kend + FA_BN - 1) / FA_BN;
    const int j8 = lane >> 3, l8 = lane & 7;

    if (ntile > 0) {
        fa_load<DP>(Ks, k, 0, T, Hkv, kvh);
        fa_load<DP>(Vs, v, 0, T, Hkv, kvh);
    }
    fa_commit();
    for (int t = 0; t < ntile; t++) {
        if (t + 1 < ntile) {
            const int b = (t + 1) & 1;
            fa_load<DP>(Ks + b * FA_BN * LD, k, (t + 1) * FA_BN, T, Hkv, kvh);
            fa_load<DP>(Vs + b * FA_BN * LD, v, (t + 1) * FA_BN, T, Hkv, kvh);
        }
        fa_commit();
        fa_wait1();
        __syncthreads();
        const bf16 *Kt = Ks + (t & 1) * FA_BN * LD, *Vt = Vs + (t & 1) * FA_BN * LD;
        float sc[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                unsigned b0, b1, b2, b3;
                fa_ldsm4(b0, b1, b2, b3, Kt + (np * 16 + (j8 >> 1) * 8 + l8) * LD + kk * 16 + (j8 & 1) * 8);
                fa_mma(sc[2 * np], qa[kk], b0, b1);
                fa_mma(sc[2 * np + 1], qa[kk], b2, b3);
            }
        }
        /* scale, mask, online softmax (rows rA: elements 0,1; rB: 2,3; a row spans a lane quad) */
        const int k0 = t * FA_BN;
        float xA = -INFINITY, xB = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = k0 + n * 8 + qc + (e & 1);
                const long long lim = e < 2 ? limA : limB;
                float x = (key < T && key <= lim) ? sc[n][e] * scale_log2 : -INFINITY;
                sc[n][e] = x;
                if (e < 2) xA = fmaxf(xA, x);
                else xB = fmaxf(xB, x);
            }
        xA = fmaxf(xA, __shfl_xor_sync(0xffffffffu, xA, 1));
        xA = fmaxf(xA, __shfl_xor_sync(0xffffffffu, xA, 2));
        xB = fmaxf(xB, __shfl_xor_sync(0xffffffffu, xB, 1));
        xB = fmaxf(xB, __shfl_xor_sync(0xffffffffu, xB, 2));
        const float nA = fmaxf(mA, xA), nB = fmaxf(mB, xB);
        const float aA = nA == -INFINITY ? 1.f : exp2f(mA - nA), aB = nB == -INFINITY ? 1.f : exp2f(mB - nB);
        mA = nA, mB = nB;
        unsigned pk[NT][2];
        float sA = 0.f, sB = 0.f;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            float p0 = nA == -INFINITY ? 0.f : exp2f(sc[n][0] - nA), p1 = nA == -INFINITY ? 0.f : exp2f(sc[n][1] - nA);
            float p2 = nB == -INFINITY ? 0.f : exp2f(sc[n][2] - nB), p3 = nB == -INFINITY ? 0.f : exp2f(sc[n][3] - nB);
            pk[n][0] = fa_pack(p0, p1);
            pk[n][1] = fa_pack(p2, p3);
            const __nv_bfloat162 h0 = *reinterpret_cast<const __nv_bfloat162 *>(&pk[n][0]);
            const __nv_bfloat162 h1 = *reinterpret_cast<const __nv_bfloat162 *>(&pk[n][1]);
            sA += __low2float(h0) + __high2float(h0); /* l sums the bf16 probabilities P V uses */
            sB += __low2float(h1) + __high2float(h1);
        }
        lA = lA * aA + sA;
        lB = lB * aB + sB;
#pragma unroll
        for (int n = 0; n < ON; n++) {
            o[n][0] *= aA, o[n][1] *= aA;
            o[n][2] *= aB, o[n][3] *= aB;
        }
        /* O += P V */
#pragma unroll
        for (int kk = 0; kk < FA_BN / 16; kk++) {
            const unsigned a[4] = {pk[2 * kk][0], pk[2 * kk][1], pk[2 * kk + 1][0], pk[2 * kk + 1][1]};
#pragma unroll
            for (int np = 0; np < ON / 2; np++) {
                unsigned b0, b1, b2, b3;
                fa_ldsm4t(b0, b1, b2, b3, Vt + (kk * 16 + (j8 & 1) * 8 + l8) * LD + np * 16 + (j8 >> 1) * 8);
                fa_mma(o[2 * np], a, b0, b1);
                fa_mma(o[2 * np + 1], a, b2, b3);
            }
        }
        __syncthreads(); /* everyone is done with this stage before it is refilled */
    }
    lA += __shfl_xor_sync(0xffffffffu, lA, 1);
    lA += __shfl_xor_sync(0xffffffffu, lA, 2);
    lB += __shfl_xor_sync(0xffffffffu, lB, 1);
    lB += __shfl_xor_sync(0xffffffffu, lB, 2);
    const float iA = lA > 0.f ? 1.f / lA : 0.f, iB = lB > 0.f ? 1.f / lB : 0.f;
    if (rA < NR) {
        bf16 *dst = out + ((size_t)(rA / G) * Hq + (size_t)kvh * G + rA % G) * DP;
#pragma unroll
        for (int n = 0; n < ON; n++)
            *reinterpret_cast<__nv_bfloat162 *>(dst + n * 8 + qc) = __floats2bfloat162_rn(o[n][0] * iA, o[n][1] * iA);
    }
    if (rB < NR) {
        bf16 *dst = out + ((size_t)(rB / G) * Hq + (size_t)kvh * G + rB % G) * DP;
#pragma unroll
        for (int n = 0; n < ON; n++)
            *reinterpret_cast<__nv_bfloat162 *>(dst + n * 8 + qc) = __floats2bfloat162_rn(o[n][2] * iB, o[n][3] * iB);
    }
}

template <int DP>
osc_status launch_fa2(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, int S, int T, int Hq, int Hkv,
                      long long q_pos0, float scale, int causal, cudaStream_t st, const int *cu = nullptr,
                      int nseg = 1) {
    typedef fa_smem<DP> L;
    static bool attr_set = false; /* benign race: setting it twice is harmless */
    if (!attr_set) {
        OSC_CU_CHECK(cudaFuncSetAttribute(k_attn_fa2<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)L::bytes));
        attr_set = true;
    }
    const int NR = S * (Hq / Hkv);
    dim3 grid((unsigned)((NR + FA_BM - 1) / FA_BM), (unsigned)Hkv, (unsigned)nseg);
    k_attn_fa2<DP><<<grid, 128, L::bytes, st>>>(out, q, k, v, S, T, Hq, Hkv, q_pos0, scale * kLog2e, causal, cu);
    OSC_CU_LAUNCH("k_attn_fa2");
    return OSC_OK;
}

/* the mma kernel takes head dims 32/64/80/96/128 with 16-byte aligned rows (OSC_ATTN_WMMA set in
 * the environment: the older WMMA kernel instead, for comparison) */
bool fa2_ok(int D, int vec_ok) {
    static int wmma = -1;
    if (wmma < 0) wmma = getenv("OSC_ATTN_WMMA") != nullptr;
    return !wmma && vec_ok && (D == 32 || D == 64 || D == 80 || D == 96 || D == 128);
}

osc_status launch_fa2_any(bf16 *out, const bf16 *q, const bf16 *k, const bf16 *v, int S, int T, int Hq, int Hkv,
                          int D, long long q_pos0, float scale, int causal, cudaStream_t st, const int *cu = nullptr,
                          int nseg = 1) {
    switch (D) {
    case 32: return launch_fa2<32>(out, q, k, v, S, T, Hq, Hkv, q_pos0, scale, causal, st, cu, nseg);
    case 64: return launch_fa2<64>(out, q, k, v, S, T, Hq, Hkv, q_pos0, scale, causal, st, cu, nseg);
    case 80: return launch_fa2<80>(out, q, k, v, S, T, Hq, Hkv, q_pos0, scale, causal, st, cu, nseg);
    case 96: return launch_fa2<96>(out, q, k, v, S, T, Hq, Hkv, q_pos0, scale, causal, st, cu, nseg);
    default: return launch_fa2<128>(out, q, k, v, S, T, Hq, Hkv, q_pos0, scale, causal, st, cu, nseg);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* (b) split-K decode                                                                          */
/* ------------------------------------------------------------------------------------------ */
const int DK_T = 64;        /* keys per shared tile */
const int DK_THREADS = 128;
const int DK_MAX_SPLITS = 512; /* splits per KV head (combine keeps their weights in shared) */
const int D1_MIN_CHUNK = 64;   /* keys per split at least, k_attn_decode1_batch */

struct decode_layout {
    int R, DE, LDK; /* rows, D rounded up to even, bf16 row stride of K/V tiles (odd word count) */
    size_t q_off, k_off, v_off, s_off, o_off, a_off, bytes;
};

decode_layout decode_plan(int R, int D) {
    decode_layout L;
    L.R = R;
    L.DE = (D + 1) & ~1;
    L.LDK = L.DE;
    if ((L.LDK / 2) % 2 == 0) L.LDK += 2;
    L.q_off = 0;                                           /* float Q[R][DE] (scaled) */
    L.k_off = L.q_off + (size_t)R * L.DE * 4;              /* bf16 K[DK_T][LDK] */
    L.v_off = L.k_off + (size_t)DK_T * L.LDK * 2;          /* bf16 V[DK_T][LDK] */
    L.s_off = L.v_off + (size_t)DK_T * L.LDK * 2;          /* float S/P[R][DK_T] */
    L.o_off = L.s_off + (size_t)R * DK_T * 4;              /* float O[R][DE] */
    L.a_off = L.o_off + (size_t)R * L.DE * 4;              /* float m, l, alpha [R] each */
    L.bytes = L.a_off + (size_t)R * 3 * 4;
    L.bytes = (L.bytes + 15) & ~(size_t)15;
    return L;
}

__global__ void __launch_bounds__(DK_THREADS)
k_attn_decode(float *__restrict__ part_acc, float *__restrict__ part_ml, const bf16 *__restrict__ q,
              const bf16 *__restrict__ k, const bf16 *__restrict__ v, int S, int T, int Hq, int Hkv, int D,
              long long q_pos0, float scale_log2, int causal, int chunk, int vec_ok, decode_layout L) {
    extern __shared__ __align__(128) unsigned char smem_dec[];
    unsigned char *smem = smem_dec;
    float *Qs = (float *)(smem + L.q_off);
    bf16 *Ks = (bf16 *)(smem + L.k_off);
    bf16 *Vs = (bf16 *)(smem + L.v_off);
    float *Ss = (float *)(smem + L.s_off);
    float *Os = (float *)(smem + L.o_off);
    float *rm = (float *)(smem + L.a_off);
    float *rl = rm + L.R;
    float *ra = rl + L.R;

    const int G = Hq / Hkv, R = L.R, DE = L.DE, LDK = L.LDK, DH = DE / 2;
    const int split = blockIdx.x, nsplit = gridDim.x, kvh = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    /* keys this block covers: [c0, c1), clipped to the last key any row sees */
    long long klim = causal ? q_pos0 + S : (long long)T; /* exclusive */
    if (klim > T) klim = T;
    int c0 = split * chunk;
    int c1 = (int)min((long long)c0 + chunk, klim);

    for (int i = threadIdx.x; i < R * DE; i += blockDim.x) {
        int r = i / DE, d = i % DE;
        int s = r / G, g = r % G;
        float val = d < D ? bf2f(q[((size_t)s * Hq + (size_t)kvh * G + g) * D + d]) * scale_log2 : 0.f;
        Qs[i] = val;
        Os[i] = 0.f;
    }
    for (int i = threadIdx.x; i < R; i += blockDim.x) {
        rm[i] = -INFINITY;
        rl[i] = 0.f;
    }
    const bool vec = vec_ok != 0; /* D % 8 == 0 and 16-byte aligned bases */

    for (int t0 = c0; t0 < c1; t0 += DK_T) {
        __syncthreads();
        /* K, V tiles: rows j in [t0, t0+DK_T), zero beyond c1 */
        if (vec) {
            const int CH = D / 8;
            for (int idx = threadIdx.x; idx < DK_T * CH; idx += blockDim.x) {
                int r = idx / CH, c = idx % CH;
                int j = t0 + r;
                uint4 kv4 = make_uint4(0, 0, 0, 0), vv4 = make_uint4(0, 0, 0, 0);
                if (j < c1) {
                    size_t off = ((size_t)j * Hkv + kvh) * D + c * 8;
                    kv4 = *reinterpret_cast<const uint4 *>(k + off);
                    vv4 = *reinterpret_cast<const uint4 *>(v + off);
                }
                uint32_t *kd = reinterpret_cast<uint32_t *>(Ks + (size_t)r * LDK + c * 8);
                uint32_t *vd = reinterpret_cast<uint32_t *>(Vs + (size_t)r * LDK + c * 8);
                kd[0] = kv4.x; kd[1] = kv4.y; kd[2] = kv4.z; kd[3] = kv4.w;
                vd[0] = vv4.x; vd[1] = vv4.y; vd[2] = vv4.z; vd[3] = vv4.w;
            }
        } else {
            for (int idx = threadIdx.x; idx < DK_T * DE; idx += blockDim.x) {
                int r = idx / DE, d = idx % DE;
                int j = t0 + r;
                bf16 kv = f2bf(0.f), vv = f2bf(0.f);
                if (j < c1 && d < D) {
                    size_t off = ((size_t)j * Hkv + kvh) * D + d;
                    kv = k[off];
                    vv = v[off];
                }
                Ks[(size_t)r * LDK + d] = kv;
                Vs[(size_t)r * LDK + d] = vv;
            }
        }
        __syncthreads();

        /* scores (already in log2 units) for (row, key) pairs */
        for (int idx = threadIdx.x; idx < R * DK_T; idx += blockDim.x) {
            int r = idx / DK_T, jj = idx % DK_T;
            int j = t0 + jj;
            long long lim = causal ? q_pos0 + r / G : (long long)T - 1;
            float sc = -INFINITY;
            if (j < c1 && j <= lim) {
                const float2 *qr = reinterpret_cast<const float2 *>(Qs + (size_t)r * DE);
                const __nv_bfloat162 *kr = reinterpret_cast<const __nv_bfloat162 *>(Ks + (size_t)jj * LDK);
                float a0 = 0.f, a1 = 0.f;
#pragma unroll 4
                for (int d = 0; d < DH; d++) {
                    float2 qq = qr[d];
                    float2 kk = __bfloat1622float2(kr[d]);
                    a0 = fmaf(qq.x, kk.x, a0);
                    a1 = fmaf(qq.y, kk.y, a1);
                }
                sc = a0 + a1;
            }
            Ss[(size_t)r * DK_T + jj] = sc;
        }
        __syncthreads();

        /* online softmax, one warp per row */
        for (int r = warp; r < R; r += DK_THREADS / 32) {
            float x0 = Ss[(size_t)r * DK_T + lane], x1 = Ss[(size_t)r * DK_T + lane + 32];
            float m_old = rm[r];
            float m_new = fmaxf(m_old, warp_max(fmaxf(x0, x1)));
            float p0 = 0.f, p1 = 0.f, alpha = 1.f;
            if (m_new != -INFINITY) {
                p0 = exp2f(x0 - m_new);
                p1 = exp2f(x1 - m_new);
                alpha = exp2f(m_old - m_new);
            }
            Ss[(size_t)r * DK_T + lane] = p0;
            Ss[(size_t)r * DK_T + lane + 32] = p1;
            float ps = warp_sum(p0 + p1);
            if (lane == 0) {
                rl[r] = rl[r] * alpha + ps;
                rm[r] = m_new;
                ra[r] = alpha;
            }
        }
        __syncthreads();

        /* O = O * alpha + P V, threads over (row, dim pair) */
        int jn = min(DK_T, c1 - t0);
        for (int idx = threadIdx.x; idx < R * DH; idx += blockDim.x) {
            int r = idx / DH, dp = idx % DH;
            const float *pr = Ss + (size_t)r * DK_T;
            float a0 = 0.f, a1 = 0.f;
            for (int jj = 0; jj < jn; jj++) {
                float p = pr[jj];
                float2 vv = __bfloat1622float2(reinterpret_cast<const __nv_bfloat162 *>(Vs + (size_t)jj * LDK)[dp]);
                a0 = fmaf(p, vv.x, a0);
                a1 = fmaf(p, vv.y, a1);
            }
            float al = ra[r];
            float2 *o = reinterpret_cast<float2 *>(Os + (size_t)r * DE) + dp;
            float2 cur = *o;
            cur.x = cur.x * al + a0;
            cur.y = cur.y * al + a1;
            *o = cur;
        }
    }
    __syncthreads();

    /* partials: [kvh][split][r] */
    size_t base = ((size_t)kvh * nsplit + split) * R;
    for (int i = threadIdx.x; i < R * D; i += blockDim.x) {
        int r = i / D, d = i % D;
        part_acc[(base + r) * D + d] = Os[(size_t)r * DE + d];
    }
    for (int r = threadIdx.x; r < R; r += blockDim.x) {
        part_ml[(base + r) * 2] = rm[r];
        part_ml[(base + r) * 2 + 1] = rl[r];
    }
}

/* one block (LSE_THREADS) per (kvh, row): merge the splits by log-sum-exp. lens (the tables' decode step,
 * "kvh" = b * Hkv + head): only the splits sequence b's keys reach are read (the others are
 * empty, weight 0), with the chunk rule of k_attn_dec_mma_batch. */
template <int LR>
__global__ void __launch_bounds__(LSE_THREADS)
k_attn_combine(bf16 *__restrict__ out, const float *__restrict__ part_acc, const float *__restrict__ part_ml,
               int nsplit, int R, int G, int Hq, int D, const int *__restrict__ lens = nullptr, int Hkv = 1,
               int min_chunk = 1) {
    pdl_enter();
    __shared__ float wts[DK_MAX_SPLITS];
    const int kvh = blockIdx.x / R, r = blockIdx.x % R;
    int ns = nsplit;
    if (lens) {
        const int len = lens[kvh / Hkv];
        const int chunk = max((len + nsplit - 1) / nsplit, min_chunk);
        ns = min(nsplit, (len + chunk - 1) / chunk);
    }
    const int s = r / G, g = r % G;
    lse_merge<LR>(out + ((size_t)s * Hq + (size_t)kvh * G + g) * D, part_acc + ((size_t)kvh * nsplit * R + r) * D,
              (size_t)R * D, part_ml + ((size_t)kvh * nsplit * R + r) * 2, (size_t)R * 2, ns, D, wts);
}

/* the combine kernel for nsplit splits of D channels (lse_rows_per_thread) */
static decltype(&k_attn_combine<4>) attn_combine_for(int nsplit, int D) {
    return lse_rows_per_thread(nsplit, D) == 4 ? k_attn_combine<4> : k_attn_combine<16>;
}

/* ------------------------------------------------------------------------------------------ */
/* (c) one query row (S = 1), D in {64, 128, 256}, G <= 8: the decode step's kernel            */
/* ------------------------------------------------------------------------------------------ */
/* Memory-bound streaming: a key row of D bf16 is read by TPK = D/8 threads with one 16-byte
 * load each (coalesced, 256 B per row at D = 128), so a warp covers 32/TPK keys at once and a
 * block of 4 warps NG = 128/TPK keys. Each such key group keeps its own online softmax (m, l,
 * acc[8 dims]) for all G query heads of the KV head, with U keys' loads in flight per step;
 * dots are reduced across the TPK lanes by xor-shuffles. The groups merge in shared memory
 * at the end and write one (m, l, acc[D]) partial per (split, head) in the layout of
 * k_attn_combine. */
/* D1_U: keys in flight per key group and step (a tuning knob, see dec_u below) */
template <int D, int GM, int D1_U>
__device__ __forceinline__ void decode1_body(float *__restrict__ part_acc, float *__restrict__ part_ml,
                                             const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                             const bf16 *__restrict__ v, int G, int Hkv, int kvh, int klim, int chunk,
                                             int split, int nsplit, int part_kvh, float scale_log2) {
    constexpr int TPK = D / 8, KPW = 32 / TPK, NG = 4 * KPW;
    __shared__ float red_acc[NG][GM][D];
    __shared__ float red_m[NG][GM], red_l[NG][GM];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int grp = warp * KPW + lane / TPK, sl = lane % TPK;
    const int c0 = split * chunk, c1 = min(c0 + chunk, klim);
    const size_t kstride = (size_t)Hkv * D;
    float qr[GM][8], acc[GM][8], m[GM], l[GM];
#pragma unroll
    for (int h = 0; h < GM; h++) {
        m[h] = -INFINITY;
        l[h] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[h][i] = 0.f;
        if (h < G) {
            uint4 u = *reinterpret_cast<const uint4 *>(q + ((size_t)kvh * G + h) * D + sl * 8);
            const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __bfloat1622float2(b[i]);
                qr[h][2 * i] = f.x * scale_log2;
                qr[h][2 * i + 1] = f.y * scale_log2;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) qr[h][i] = 0.f;
        }
    }
    const bf16 *kb = k + (size_t)kvh * D + sl * 8, *vb = v + (size_t)kvh * D + sl * 8;
    /* the trip count is the same for every lane (the shuffles below need the whole warp) */
    for (int jb = c0; jb < c1; jb += NG * D1_U) {
        const int j0 = jb + grp;
        uint4 kk[D1_U], vv[D1_U];
#pragma unroll
        for (int u = 0; u < D1_U; u++) {
            int j = j0 + u * NG;
            if (j < c1) {
                kk[u] = __ldcs(reinterpret_cast<const uint4 *>(kb + (size_t)j * kstride));
                vv[u] = __ldcs(reinterpret_cast<const uint4 *>(vb + (size_t)j * kstride));
            } else {
                kk[u] = make_uint4(0, 0, 0, 0);
                vv[u] = make_uint4(0, 0, 0, 0);
            }
        }
        float sc[D1_U][GM];
#pragma unroll
        for (int u = 0; u < D1_U; u++) {
            float kf[8];
            const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&kk[u]);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float2 f = __bfloat1622float2(b[i]);
                kf[2 * i] = f.x;
                kf[2 * i + 1] = f.y;
            }
#pragma unroll
            for (int h = 0; h < GM; h++) {
                float d = 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) d = fmaf(qr[h][i], kf[i], d);
#pragma unroll
                for (int o = TPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
                sc[u][h] = (j0 + u * NG < c1) ? d : -INFINITY;
            }
        }
#pragma unroll
        for (int h = 0; h < GM; h++) {
            float mx = m[h];
#pragma unroll
            for (int u = 0; u < D1_U; u++) mx = fmaxf(mx, sc[u][h]);
            if (mx == -INFINITY) continue;
            float alpha = exp2f(m[h] - mx);
            m[h] = mx;
            l[h] *= alpha;
#pragma unroll
            for (int i = 0; i < 8; i++) acc[h][i] *= alpha;
#pragma unroll
            for (int u = 0; u < D1_U; u++) {
                float p = exp2f(sc[u][h] - mx);
                l[h] += p;
                const __nv_bfloat162 *b = reinterpret_cast<const __nv_bfloat162 *>(&vv[u]);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    float2 f = __bfloat1622float2(b[i]);
                    acc[h][2 * i] = fmaf(p, f.x, acc[h][2 * i]);
                    acc[h][2 * i + 1] = fmaf(p, f.y, acc[h][2 * i + 1]);
                }
            }
        }
    }
    /* merge the NG key groups of the block */
#pragma unroll
    for (int h = 0; h < GM; h++) {
#pragma unroll
        for (int i = 0; i < 8; i++) red_acc[grp][h][sl * 8 + i] = acc[h][i];
        if (sl == 0) {
            red_m[grp][h] = m[h];
            red_l[grp][h] = l[h];
        }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < G * D; idx += blockDim.x) {
        const int h = idx / D, d = idx % D;
        float M = -INFINITY;
#pragma unroll
        for (int g = 0; g < NG; g++) M = fmaxf(M, red_m[g][h]);
        float a = 0.f, L = 0.f;
        if (M != -INFINITY) {
#pragma unroll
            for (int g = 0; g < NG; g++) {
                float w = red_m[g][h] == -INFINITY ? 0.f : exp2f(red_m[g][h] - M);
                a += w * red_acc[g][h][d];
                L += w * red_l[g][h];
            }
        }
        const size_t base = ((size_t)part_kvh * nsplit + split) * G + h;
        part_acc[base * D + d] = a;
        if (d == 0) {
            part_ml[base * 2] = M;
            part_ml[base * 2 + 1] = L;
        }
    }
}

/* one sequence: grid (splits, Hkv) */
template <int D, int GM, int U>
__global__ void __launch_bounds__(128)
k_attn_decode1(float *__restrict__ part_acc, float *__restrict__ part_ml, const bf16 *__restrict__ q,
               const bf16 *__restrict__ k, const bf16 *__restrict__ v, int G, int Hkv, int klim, int chunk,
               float scale_log2) {
    pdl_enter();
    decode1_body<D, GM, U>(part_acc, part_ml, q, k, v, G, Hkv, blockIdx.y, klim, chunk, blockIdx.x, gridDim.x, blockIdx.y,
                        scale_log2);
}

/* B sequences with their own K/V buffers and lengths: grid (splits, Hkv, B); partials of
 * sequence b, kv head h at "kv head" b*Hkv + h, so k_attn_combine merges them as B*Hkv heads */
/* Each sequence spreads its own length over the gridDim.x splits (at least 64 keys per split),
 * read from device memory: the launch does not depend on the lengths (CUDA graph replay). */
template <int D, int GM, int U>
__global__ void __launch_bounds__(128)
k_attn_decode1_batch(float *__restrict__ part_acc, float *__restrict__ part_ml, const bf16 *__restrict__ q,
                     const bf16 *const *__restrict__ ks, const bf16 *const *__restrict__ vs,
                     const int *__restrict__ lens, int G, int Hkv, float scale_log2) {
    pdl_enter();
    const int b = blockIdx.z, len = lens[b];
    int chunk = (len + (int)gridDim.x - 1) / (int)gridDim.x;
    if (chunk < D1_MIN_CHUNK) chunk = D1_MIN_CHUNK;
    decode1_body<D, GM, U>(part_acc, part_ml, q + (size_t)b * Hkv * G * D, ks[b], vs[b], G, Hkv, blockIdx.y, len, chunk,
                        blockIdx.x, gridDim.x, b * Hkv + blockIdx.y, scale_log2);
}

/* ------------------------------------------------------------------------------------------ */
/* (c') one query row, D = 128: the same contract on the tensor cores                          */
/* ------------------------------------------------------------------------------------------ */
/* Each warp streams tiles of 32 keys of its split (tiles w, w + 4, ...) through a 3-deep
 * cp.async ring of its own (K and V rows of the tile, 17 KB per stage, rows padded by 16 B so
 * ldmatrix rows fall on distinct banks), so ~100 KB per SM are in flight whatever the
 * registers allow; one block of 4 warps per SM. Per tile:
 *   S (keys x heads) = K (A via ldmatrix, 16 keys x 16 dims) * q (B, 16 dims x 8 heads: the G
 *     query heads of the KV head, the rest zero), two M tiles of 16 keys;
 *   online softmax over the key rows (mma_softmax), P to bf16 and transposed by movmatrix into
 *     B fragments;
 *   O^T (dims x heads) += V^T (A via ldmatrix.trans) * P^T.
 * Warps merge in shared memory and write decode1's partial layout, so k_attn_combine and the
 * split plans are unchanged. */
namespace dm {
const int NW = 4, THREADS = NW * 32, STAGES = 3, TK = 32, LD = 136; /* bf16 per padded row */
const int STAGE = 2 * TK * LD * 2;                                  /* K and V tiles, bytes */
const int WARP_BYTES = STAGES * STAGE;
const size_t SMEM = (size_t)NW * WARP_BYTES;
static_assert(8 * MMA_OB_LD * 4 <= WARP_BYTES, "warp output fits the ring");
} // namespace dm

__device__ __forceinline__ void dm_cp16z(void *smem, const void *g, bool pred) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    int n = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(g), "r"(n) : "memory");
}

/* keys [j0, j0 + 32) of one KV head into a stage; rows at or past c1 are zero-filled */
__device__ __forceinline__ void dm_issue(char *sb, const bf16 *k, const bf16 *v, size_t kstride, int j0, int c1,
                                         int lane) {
    bf16 *kt = reinterpret_cast<bf16 *>(sb), *vt = kt + dm::TK * dm::LD;
#pragma unroll
    for (int r = 0; r < dm::TK * 16 / 32; r++) {
        const int idx = r * 32 + lane, row = idx >> 4, c8 = (idx & 15) * 8, j = j0 + row;
        const bool ok = j < c1;
        const size_t off = (size_t)(ok ? j : j0) * kstride + c8;
        dm_cp16z(kt + row * dm::LD + c8, k + off, ok);
        dm_cp16z(vt + row * dm::LD + c8, v + off, ok);
    }
}

__device__ __forceinline__ void decode1_mma_body(float *__restrict__ part_acc, float *__restrict__ part_ml,
                                                 const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                                 const bf16 *__restrict__ v, int G, int Hkv, int kvh, int klim,
                                                 int chunk, int split, int nsplit, int part_kvh, float scale_log2) {
    extern __shared__ __align__(16) unsigned char dsm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int c0 = split * chunk, c1 = min(c0 + chunk, klim);
    const size_t kstride = (size_t)Hkv * 128;
    const bf16 *kb = k + (size_t)kvh * 128, *vb = v + (size_t)kvh * 128;
    char *ws = reinterpret_cast<char *>(dsm) + warp * dm::WARP_BYTES;
    const int n_tiles = c1 > c0 ? (c1 - c0 + dm::TK - 1) / dm::TK : 0;
    const int n_my = warp < n_tiles ? (n_tiles - warp + dm::NW - 1) / dm::NW : 0;
    /* Before waiting for the previous launch (PDL): pull the split's first K/V rows into L2. Rows
     * below klim - 1 were written steps ago; the newest row may still be in flight, but L2 is
     * where writes land, so a prefetch cannot leave a stale copy. */
    const int n_pf = min(c1 - c0, (dm::STAGES - 1) * dm::NW * dm::TK); /* what the ring loads first */
    for (int i = threadIdx.x; i < n_pf * 4; i += dm::THREADS) {
        const int r = c0 + (i >> 2), half = i & 1;
        const bf16 *p = ((i >> 1) & 1 ? vb : kb) + (size_t)r * kstride + half * 64;
        asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
    }
    pdl_enter();
#pragma unroll
    for (int i = 0; i < dm::STAGES - 1; i++) {
        if (i < n_my) dm_issue(ws + i * dm::STAGE, kb, vb, kstride, c0 + (warp + i * dm::NW) * dm::TK, c1, lane);
        mma_commit();
    }
    /* q of head g at dims 16s + 2t.. and 16s + 8 + 2t.., times scale*log2(e), bf16 */
    uint32_t qf[8][2];
#pragma unroll
    for (int s = 0; s < 8; s++) {
        if (g < G) {
            const bf16 *qh = q + ((size_t)kvh * G + g) * 128 + 16 * s + 2 * t;
            const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(qh));
            const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(qh + 8));
            qf[s][0] = fa_pack(a.x * scale_log2, a.y * scale_log2);
            qf[s][1] = fa_pack(b.x * scale_log2, b.y * scale_log2);
        } else {
            qf[s][0] = qf[s][1] = 0u;
        }
    }
    float o[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float mr[2] = {-INFINITY, -INFINITY}, lr[2] = {0.f, 0.f};
    const int vrow = (lane & 7) + ((lane >> 4) << 3), vcol = ((lane >> 3) & 1) * 8;
    for (int it = 0; it < n_my; it++) {
        mma_wait<dm::STAGES - 2>();
        __syncwarp();
        {
            const int nx = it + dm::STAGES - 1;
            if (nx < n_my)
                dm_issue(ws + (nx % dm::STAGES) * dm::STAGE, kb, vb, kstride, c0 + (warp + nx * dm::NW) * dm::TK, c1,
                         lane);
            mma_commit();
        }
        const bf16 *kt = reinterpret_cast<const bf16 *>(ws + (it % dm::STAGES) * dm::STAGE);
        const bf16 *vt = kt + dm::TK * dm::LD;
        const int j0 = c0 + (warp + it * dm::NW) * dm::TK;
        float c[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
        for (int s = 0; s < 8; s++) {
#pragma unroll
            for (int m = 0; m < 2; m++) {
                uint32_t a0, a1, a2, a3;
                mma_ldsm4(a0, a1, a2, a3, kt + (16 * m + (lane & 15)) * dm::LD + 16 * s + (lane >> 4) * 8);
                mma_bf16(c[m], a0, a1, a2, a3, qf[s][0], qf[s][1]);
            }
        }
        float sc[8];
#pragma unroll
        for (int m = 0; m < 2; m++) {
            const bool va = j0 + 16 * m + g < c1, vb2 = j0 + 16 * m + g + 8 < c1;
            sc[4 * m] = va ? c[m][0] : -INFINITY;
            sc[4 * m + 1] = va ? c[m][1] : -INFINITY;
            sc[4 * m + 2] = vb2 ? c[m][2] : -INFINITY;
            sc[4 * m + 3] = vb2 ? c[m][3] : -INFINITY;
        }
        mma_softmax<2>(sc, mr, lr, o);
#pragma unroll
        for (int m = 0; m < 2; m++) {
            const uint32_t pb0 = mma_trans(fa_pack(sc[4 * m], sc[4 * m + 1]));
            const uint32_t pb1 = mma_trans(fa_pack(sc[4 * m + 2], sc[4 * m + 3]));
#pragma unroll
            for (int i = 0; i < 8; i++) {
                uint32_t a0, a1, a2, a3;
                mma_ldsm4t(a0, a1, a2, a3, vt + (16 * m + vrow) * dm::LD + 16 * i + vcol);
                mma_bf16(o[i], a0, a1, a2, a3, pb0, pb1);
            }
        }
    }
    mma_wait<0>();
    __syncwarp();
    /* the warps merge into decode1's partial layout */
    mma_block_partial<dm::NW>(dsm, dm::WARP_BYTES, o, mr, lr, G, part_acc, part_ml, ((size_t)part_kvh * nsplit + split) * G);
}

__global__ void __launch_bounds__(dm::THREADS, 1)
k_attn_dec_mma(float *__restrict__ part_acc, float *__restrict__ part_ml, const bf16 *__restrict__ q,
               const bf16 *__restrict__ k, const bf16 *__restrict__ v, int G, int Hkv, int klim, int chunk,
               float scale_log2) {
    decode1_mma_body(part_acc, part_ml, q, k, v, G, Hkv, blockIdx.y, klim, chunk, blockIdx.x, gridDim.x, blockIdx.y,
                     scale_log2);
}

__global__ void __launch_bounds__(dm::THREADS, 1)
k_attn_dec_mma_batch(float *__restrict__ part_acc, float *__restrict__ part_ml, const bf16 *__restrict__ q,
                     const bf16 *const *__restrict__ ks, const bf16 *const *__restrict__ vs,
                     const int *__restrict__ lens, int G, int Hkv, float scale_log2, int min_chunk) {
    /* grid (Hkv, splits, B): the blocks of low splits, the ones a short sequence uses, come first
     * in launch order. lens and the tables were written at least two launches back (the step
     * state, or a copy before the launch), so they may be read before decode1_mma_body's
     * pdl_enter; a split past the sequence's keys writes nothing (k_attn_combine with lens
     * reads only the splits in use) and leaves at once. */
    const int b = blockIdx.z, kvh = blockIdx.x, split = blockIdx.y, nsplit = gridDim.y, len = lens[b];
    int chunk = (len + nsplit - 1) / nsplit;
    if (chunk < min_chunk) chunk = min_chunk;
    if (split * chunk >= len) return;
    decode1_mma_body(part_acc, part_ml, q + (size_t)b * Hkv * G * 128, ks[b], vs[b], G, Hkv, kvh, len, chunk, split,
                     nsplit, b * Hkv + kvh, scale_log2);
}

/* the tensor-core decode kernel serves D = 128 unless OSC_DEC_MMA=0 */
bool dec_mma(int D) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("OSC_DEC_MMA");
        on = !(e && e[0] == '0');
    }
    return on && D == 128;
}

osc_status dec_mma_attr(void) {
    static bool done = false;
    if (!done) {
        OSC_CU_CHECK(cudaFuncSetAttribute(k_attn_dec_mma, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dm::SMEM));
        OSC_CU_CHECK(
            cudaFuncSetAttribute(k_attn_dec_mma_batch, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dm::SMEM));
        done = true;
    }
    return OSC_OK;
}

/* Tuning knobs of the one-row decode kernels. Keys in flight per key group: 8 for a batch of
 * sequences or more than 4 query heads per KV head, else 4 (a sweep on the H200, PERFORMANCE.md:
 * U 8 lifted the 7B shape's 16 x 32K decode from 449 to 613 tokens/s, while single sequences
 * with 4 heads per KV head were fastest at U 4); blocks per SM the split count aims at: 4 for
 * that kernel, 2 for the tensor-core one (D = 128; its 209 KB ring allows one block per SM, and
 * a sweep of 1/2/4 put 2 ahead at (1, 128K) and level elsewhere). The environment overrides
 * both for sweeps: OSC_DEC_U (2, 4, 8), OSC_DEC_BPS. */
int env_int(const char *name, int def) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : def;
}
/* keys per split at least, tensor-core kernel: a block's fixed cost (q, the merge) is worth
 * several tiles of 32 keys (OSC_DEC_MIN_CHUNK, rounded up to 32) */
int dm_min_chunk(void) {
    static int c = -1;
    if (c < 0) {
        c = env_int("OSC_DEC_MIN_CHUNK", 256);
        c = c < 32 ? 32 : (c + 31) / 32 * 32;
    }
    return c;
}
/* the chunk rule's minimum of the batched kernel serving head dim D */
int batch_min_chunk(int D) { return dec_mma(D) ? dm_min_chunk() : D1_MIN_CHUNK; }
int dec_u(int auto_u) {
    static int u = -1;
    if (u < 0) u = env_int("OSC_DEC_U", 0);
    return u == 2 || u == 4 || u == 8 ? u : auto_u;
}
int dec_bps(int D);
/* splits per (sequence, KV head) for bh of them: at most dec_bps blocks per SM in all (rounded
 * down: 136 blocks on 132 SMs would run a second wave of 4) */
int split_want(int D, int bh) {
    if (bh < 1) bh = 1;
    const int w = dec_bps(D) * osc_cu_num_sms() / bh;
    return w < 1 ? 1 : w;
}
int dec_bps(int D) {
    static int b = -1;
    if (b < 0) b = env_int("OSC_DEC_BPS", 0);
    if (b >= 1) return b;
    return dec_mma(D) ? 1 : 4; /* the tensor-core kernel holds one block per SM: one wave */
}

template <int D>
osc_status launch_decode1(float *pacc, float *pml, const bf16 *q, const bf16 *k, const bf16 *v, int G, int Hkv,
                          int klim, int chunk, int nsplit, float scale_log2, cudaStream_t st) {
    dim3 grid((unsigned)nsplit, (unsigned)Hkv);
    if (dec_mma(D)) {
        OSC_TRY(dec_mma_attr());
        OSC_CU_CHECK(osc_launch(k_attn_dec_mma, dim3(grid), dim3(dm::THREADS), dm::SMEM, st, pacc, pml, q, k, v, G, Hkv,
                                klim, chunk, scale_log2));
        OSC_CU_LAUNCH("k_attn_dec_mma");
        return OSC_OK;
    }
    const int du = dec_u(G > 4 ? 8 : 4);
#define OSC_D1U(GV, U)                                                                                                 \
    OSC_CU_CHECK(osc_launch(k_attn_decode1<D, GV, U>, grid, dim3(128), 0, st, pacc, pml, q, k, v, G, Hkv, klim, chunk, \
                            scale_log2))
#define OSC_D1(GV) do { if (du == 2) OSC_D1U(GV, 2); else if (du == 8) OSC_D1U(GV, 8); else OSC_D1U(GV, 4); } while (0)
    if (G <= 1) OSC_D1(1);
    else if (G <= 2) OSC_D1(2);
    else if (G <= 4) OSC_D1(4);
    else OSC_D1(8);
#undef OSC_D1
#undef OSC_D1U
    OSC_CU_LAUNCH("k_attn_decode1");
    return OSC_OK;
}

template <int D>
osc_status launch_decode1_batch(float *pacc, float *pml, const bf16 *q, const bf16 *const *ks, const bf16 *const *vs,
                                const int *lens, int G, int Hkv, int B, int nsplit, float scale_log2,
                                cudaStream_t st) {
    dim3 grid((unsigned)nsplit, (unsigned)Hkv, (unsigned)B);
    if (dec_mma(D)) {
        OSC_TRY(dec_mma_attr());
        OSC_CU_CHECK(osc_launch(k_attn_dec_mma_batch, dim3((unsigned)Hkv, (unsigned)nsplit, (unsigned)B),
                                dim3(dm::THREADS), dm::SMEM, st, pacc, pml, q, ks, vs, lens, G, Hkv, scale_log2,
                                dm_min_chunk()));
        OSC_CU_LAUNCH("k_attn_dec_mma_batch");
        return OSC_OK;
    }
    const int du = dec_u(G > 4 || B > 1 ? 8 : 4);
#define OSC_D1BU(GV, U)                                                                                                \
    OSC_CU_CHECK(osc_launch(k_attn_decode1_batch<D, GV, U>, grid, dim3(128), 0, st, pacc, pml, q, ks, vs, lens, G,     \
                            Hkv, scale_log2))
#define OSC_D1B(GV) do { if (du == 2) OSC_D1BU(GV, 2); else if (du == 8) OSC_D1BU(GV, 8); else OSC_D1BU(GV, 4); } while (0)
    if (G <= 1) OSC_D1B(1);
    else if (G <= 2) OSC_D1B(2);
    else if (G <= 4) OSC_D1B(4);
    else OSC_D1B(8);
#undef OSC_D1B
#undef OSC_D1BU
    OSC_CU_LAUNCH("k_attn_decode1_batch");
    return OSC_OK;
}

int g_decode_max_smem = 0;

} // namespace

extern "C" osc_status osc_cuda_attention(osc_tensor *out, const osc_tensor *q, const osc_tensor *k,
                                         const osc_tensor *v, int64_t q_pos0, float scale, int causal) {
    int64_t S64 = q->ne[0], Hq64 = q->ne[1], D64 = q->ne[2], T64 = k->ne[0], Hkv64 = k->ne[1];
    if (S64 == 0 || Hq64 == 0 || D64 == 0) return OSC_OK;
    if (D64 > 256) return osc_error(OSC_ERR_UNSUPPORTED, "attention: head_dim %lld > 256 on CUDA", (long long)D64);
    if (S64 * Hq64 > INT32_MAX || T64 > INT32_MAX)
        return osc_error(OSC_ERR_UNSUPPORTED, "attention: sequence too long");
    int S = (int)S64, Hq = (int)Hq64, D = (int)D64, T = (int)T64, Hkv = (int)Hkv64;
    if (Hkv <= 0 || Hq % Hkv) return osc_error(OSC_ERR_INVALID_ARG, "attention: Hq %d not a multiple of Hkv %d", Hq, Hkv);
    bf16 *o = (bf16 *)out->data;
    const bf16 *qp = (const bf16 *)q->data, *kp = (const bf16 *)k->data, *vp = (const bf16 *)v->data;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int G = Hq / Hkv;
    if (T == 0) { /* no keys: define the output as zeros */
        OSC_CU_CHECK(cudaMemsetAsync(o, 0, osc_tensor_nbytes(out), st));
        return OSC_OK;
    }

    const int vec_ok = D % 8 == 0 && (((uintptr_t)qp | (uintptr_t)kp | (uintptr_t)vp) & 15u) == 0;
    /* ---- (c) one query row ---- */
    int R = S * G;
    if (S == 1 && G <= 8 && vec_ok && (D == 64 || D == 128 || D == 256)) {
        long long kl = causal ? q_pos0 + 1 : (long long)T;
        if (kl > T) kl = T;
        if (kl < 1) kl = 1;
        const int klim = (int)kl;
        int want = split_want(D, Hkv);
        const int mk = dec_mma(D) ? dm_min_chunk() : 64; /* keys per split at least */
        int nsplit = (klim + mk - 1) / mk;
        if (nsplit > want) nsplit = want;
        if (nsplit > DK_MAX_SPLITS) nsplit = DK_MAX_SPLITS;
        if (nsplit < 1) nsplit = 1;
        int chunk = (klim + nsplit - 1) / nsplit;
        nsplit = (klim + chunk - 1) / chunk;
        size_t acc_n = (size_t)Hkv * nsplit * G * D, ml_n = (size_t)Hkv * nsplit * G * 2;
        void *ws;
        OSC_TRY(osc_cu_scratch((acc_n + ml_n) * sizeof(float), &ws));
        float *part_acc = (float *)ws, *part_ml = part_acc + acc_n;
        const float sl2 = scale * kLog2e;
        osc_status s1 = D == 64    ? launch_decode1<64>(part_acc, part_ml, qp, kp, vp, G, Hkv, klim, chunk, nsplit, sl2, st)
                        : D == 128 ? launch_decode1<128>(part_acc, part_ml, qp, kp, vp, G, Hkv, klim, chunk, nsplit, sl2, st)
                                   : launch_decode1<256>(part_acc, part_ml, qp, kp, vp, G, Hkv, klim, chunk, nsplit, sl2, st);
        OSC_TRY(s1);
        OSC_CU_CHECK(osc_launch(attn_combine_for(nsplit, D), dim3((unsigned)(Hkv * G)), dim3(LSE_THREADS), 0, st, o,
                                (const float *)part_acc, (const float *)part_ml, nsplit, G, G, Hq, D,
                                (const int *)nullptr, 1, 1));
        OSC_CU_LAUNCH("k_attn_combine");
        return OSC_OK;
    }
    /* ---- (b) decode ---- */
    if (S <= 4 && R <= 64) {
        decode_layout L = decode_plan(R, D);
        if (!g_decode_max_smem) {
            int dev = 0, optin = 0;
            OSC_CU_CHECK(cudaGetDevice(&dev));
            OSC_CU_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
            OSC_CU_CHECK(cudaFuncSetAttribute(k_attn_decode, cudaFuncAttributeMaxDynamicSharedMemorySize, optin));
            g_decode_max_smem = optin;
        }
        if ((int)L.bytes <= g_decode_max_smem) {
            long long klim = causal ? q_pos0 + S : (long long)T;
            if (klim > T) klim = T;
            if (klim < 1) klim = 1;
            int want = (2 * osc_cu_num_sms() + Hkv - 1) / Hkv;
            if (want < 1) want = 1;
            if (want > DK_MAX_SPLITS) want = DK_MAX_SPLITS;
            long long chunk = (klim + want - 1) / want;
            chunk = (chunk + DK_T - 1) / DK_T * DK_T;
            if (chunk < DK_T) chunk = DK_T;
            int nsplit = (int)((klim + chunk - 1) / chunk);
            size_t acc_n = (size_t)Hkv * nsplit * R * D, ml_n = (size_t)Hkv * nsplit * R * 2;
            void *ws;
            OSC_TRY(osc_cu_scratch((acc_n + ml_n) * sizeof(float), &ws));
            float *part_acc = (float *)ws, *part_ml = part_acc + acc_n;
            dim3 grid((unsigned)nsplit, (unsigned)Hkv);
            k_attn_decode<<<grid, DK_THREADS, L.bytes, st>>>(part_acc, part_ml, qp, kp, vp, S, T, Hq, Hkv, D,
                                                             (long long)q_pos0, scale * kLog2e, causal, (int)chunk, vec_ok,
                                                             L);
            OSC_CU_LAUNCH("k_attn_decode");
            OSC_CU_CHECK(osc_launch(attn_combine_for(nsplit, D), dim3((unsigned)(Hkv * R)), dim3(LSE_THREADS), 0, st, o,
                                    (const float *)part_acc, (const float *)part_ml, nsplit, R, G, Hq, D,
                                    (const int *)nullptr, 1, 1));
            OSC_CU_LAUNCH("k_attn_combine");
            return OSC_OK;
        }
    }

    /* ---- (a) prefill ---- */
    if ((long long)S * G > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "attention: too many rows");
    if (fa2_ok(D, vec_ok))
        return launch_fa2_any(o, qp, kp, vp, S, T, Hq, Hkv, D, (long long)q_pos0, scale, causal, st);
#define OSC_PREFILL(DPV) \
    return launch_prefill<DPV>(o, qp, kp, vp, S, T, Hq, Hkv, D, (long long)q_pos0, scale, causal, vec_ok, st)
    if (D <= 32) OSC_PREFILL(32);
    if (D <= 64) OSC_PREFILL(64);
    if (D <= 80) OSC_PREFILL(80);
    if (D <= 96) OSC_PREFILL(96);
    if (D <= 128) OSC_PREFILL(128);
    if (D <= 160) OSC_PREFILL(160);
    if (D <= 192) OSC_PREFILL(192);
    OSC_PREFILL(256);
#undef OSC_PREFILL
}

extern "C" osc_status osc_cuda_attention_decode_batch(osc_tensor *out, const osc_tensor *q, const osc_tensor *const *k,
                                                      const osc_tensor *const *v, const int *lens, int B, float scale) {
    const int Hq = (int)q->ne[1], D = (int)q->ne[2], Hkv = (int)k[0]->ne[1];
    const int G = Hq / Hkv;
    int aligned = ((uintptr_t)q->data & 15u) == 0, maxlen = 1;
    for (int b = 0; b < B; b++) {
        aligned &= (((uintptr_t)k[b]->data | (uintptr_t)v[b]->data) & 15u) == 0;
        if (lens[b] > maxlen) maxlen = lens[b];
    }
    if (!(G <= 8 && aligned && (D == 64 || D == 128 || D == 256))) {
        /* general shapes: one launch per sequence */
        for (int b = 0; b < B; b++) {
            osc_tensor ob = osc_tensor_rows(out, b, 1), qb = osc_tensor_rows(q, b, 1);
            osc_tensor kb = osc_tensor_rows(k[b], 0, lens[b]), vb = osc_tensor_rows(v[b], 0, lens[b]);
            OSC_TRY(osc_cuda_attention(&ob, &qb, &kb, &vb, lens[b] - 1, scale, 1));
        }
        return OSC_OK;
    }
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int mk = dec_mma(D) ? dm_min_chunk() : 64; /* keys per split at least */
    int nsplit = (maxlen + mk - 1) / mk, want = osc_cuda_decode_tab_splits(B, Hkv, D);
    if (nsplit > want) nsplit = want;
    /* scratch: [k ptrs][v ptrs][lens] then the partials */
    size_t tab = ((size_t)B * (2 * sizeof(void *) + sizeof(int)) + 255) & ~(size_t)255;
    size_t acc_n = (size_t)B * Hkv * nsplit * G * D, ml_n = (size_t)B * Hkv * nsplit * G * 2;
    void *ws;
    OSC_TRY(osc_cu_scratch(tab + (acc_n + ml_n) * sizeof(float), &ws));
    char *host = (char *)malloc(tab);
    if (!host) return osc_error(OSC_ERR_OOM, "attention batch: host table");
    const void **hk = (const void **)host, **hv = hk + B;
    int *hl = (int *)(hv + B);
    for (int b = 0; b < B; b++) {
        hk[b] = k[b]->data;
        hv[b] = v[b]->data;
        hl[b] = lens[b];
    }
    cudaError_t ce = cudaMemcpyAsync(ws, host, tab, cudaMemcpyHostToDevice, st);
    free(host); /* pageable source: staged before cudaMemcpyAsync returns */
    if (ce != cudaSuccess) return osc_error(OSC_ERR_DEVICE, "attention batch: table upload: %s", cudaGetErrorString(ce));
    const bf16 *const *dk = (const bf16 *const *)ws, *const *dv = dk + B;
    const int *dl = (const int *)(dv + B);
    float *part_acc = (float *)((char *)ws + tab), *part_ml = part_acc + acc_n;
    const float sl2 = scale * kLog2e;
    const bf16 *qp = (const bf16 *)q->data;
    osc_status s1 = D == 64 ? launch_decode1_batch<64>(part_acc, part_ml, qp, dk, dv, dl, G, Hkv, B, nsplit, sl2, st)
                    : D == 128
                        ? launch_decode1_batch<128>(part_acc, part_ml, qp, dk, dv, dl, G, Hkv, B, nsplit, sl2, st)
                        : launch_decode1_batch<256>(part_acc, part_ml, qp, dk, dv, dl, G, Hkv, B, nsplit, sl2, st);
    OSC_TRY(s1);
    OSC_CU_CHECK(osc_launch(attn_combine_for(nsplit, D), dim3((unsigned)(B * Hkv * G)), dim3(LSE_THREADS), 0, st,
                            (bf16 *)out->data, (const float *)part_acc, (const float *)part_ml, nsplit, G, G, Hq, D, dl,
                            Hkv, batch_min_chunk(D)));
    OSC_CU_LAUNCH("k_attn_combine");
    return OSC_OK;
}

/* Segments of packed rows in one launch (vision windows / frames, batched prefill): the prefill
 * kernel with grid.z over segments, up to 65535 segments per launch. */
extern "C" osc_status osc_cuda_attention_varlen(osc_tensor *out, const osc_tensor *q, const osc_tensor *k,
                                                const osc_tensor *v, const int32_t *cu, int nseg, float scale,
                                                int causal) {
    const int Hq = (int)q->ne[1], D = (int)q->ne[2], Hkv = (int)k->ne[1];
    if (D > 256) return osc_error(OSC_ERR_UNSUPPORTED, "attention: head_dim %d > 256 on CUDA", D);
    const int G = Hq / Hkv;
    const bf16 *qp = (const bf16 *)q->data, *kp = (const bf16 *)k->data, *vp = (const bf16 *)v->data;
    const int vec_ok = D % 8 == 0 && (((uintptr_t)qp | (uintptr_t)kp | (uintptr_t)vp) & 15u) == 0;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int kMaxZ = 65535;
    for (int s0 = 0; s0 < nseg; s0 += kMaxZ) {
        const int n = nseg - s0 < kMaxZ ? nseg - s0 : kMaxZ;
        int maxlen = 0;
        for (int i = 0; i < n; i++)
            if (cu[s0 + i + 1] - cu[s0 + i] > maxlen) maxlen = cu[s0 + i + 1] - cu[s0 + i];
        if (maxlen == 0) continue;
        if ((long long)maxlen * G > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "attention: too many rows");
        void *ws;
        OSC_TRY(osc_cu_scratch((size_t)(n + 1) * sizeof(int32_t), &ws));
        OSC_CU_CHECK(cudaMemcpyAsync(ws, cu + s0, (size_t)(n + 1) * sizeof(int32_t), cudaMemcpyHostToDevice, st));
        const int *dcu = (const int *)ws;
        bf16 *o = (bf16 *)out->data;
        if (fa2_ok(D, vec_ok)) {
            OSC_TRY(launch_fa2_any(o, qp, kp, vp, maxlen, maxlen, Hq, Hkv, D, 0, scale, causal, st, dcu, n));
            continue;
        }
#define OSC_VARLEN(DPV) \
    OSC_TRY(launch_prefill<DPV>(o, qp, kp, vp, maxlen, maxlen, Hq, Hkv, D, 0, scale, causal, vec_ok, st, dcu, n))
        if (D <= 32) OSC_VARLEN(32);
        else if (D <= 64) OSC_VARLEN(64);
        else if (D <= 80) OSC_VARLEN(80);
        else if (D <= 96) OSC_VARLEN(96);
        else if (D <= 128) OSC_VARLEN(128);
        else if (D <= 160) OSC_VARLEN(160);
        else if (D <= 192) OSC_VARLEN(192);
        else OSC_VARLEN(256);
#undef OSC_VARLEN
    }
    return OSC_OK;
}

/* ---- the decode step of a CUDA graph (llm/model.c): tables and lengths in device memory ---- */

extern "C" int osc_cuda_decode_tab_splits(int B, int Hkv, int D) {
    int bh = B * Hkv > 0 ? B * Hkv : 1;
    int want = split_want(D, bh);
    if (want > DK_MAX_SPLITS) want = DK_MAX_SPLITS;
    return want < 1 ? 1 : want;
}

extern "C" int osc_cuda_decode_tab_ok(int Hq, int Hkv, int D) {
    return Hkv > 0 && Hq % Hkv == 0 && Hq / Hkv <= 8 && (D == 64 || D == 128 || D == 256);
}

extern "C" size_t osc_cuda_decode_tab_part_floats(int B, int Hq, int Hkv, int D, int nsplit) {
    return (size_t)B * Hkv * nsplit * (Hq / Hkv) * (size_t)(D + 2);
}

namespace {
/* grid (B, 2): row b of k (y = 0) or v (y = 1), [B, row] bf16, goes to row lens1[b] - 1 of
 * tab[y * tab_stride + b] */
__global__ void k_kv_append(const bf16 *__restrict__ k, const bf16 *__restrict__ v, bf16 *const *__restrict__ tab,
                            int tab_stride, const int *__restrict__ lens1, int row) {
    pdl_enter();
    const int b = blockIdx.x, y = blockIdx.y;
    const bf16 *src = (y ? v : k) + (size_t)b * row;
    bf16 *dst = tab[y * tab_stride + b] + (size_t)(lens1[b] - 1) * row;
    if ((row & 7) == 0) {
        for (int i = threadIdx.x; i < row / 8; i += blockDim.x)
            reinterpret_cast<uint4 *>(dst)[i] = reinterpret_cast<const uint4 *>(src)[i];
    } else {
        for (int i = threadIdx.x; i < row; i += blockDim.x) dst[i] = src[i];
    }
}
} // namespace

extern "C" osc_status osc_cuda_kv_append(const void *k, const void *v, void *const *tab, int tab_stride,
                                         const int32_t *lens1, int B, int row) {
    if (B <= 0) return OSC_OK;
    if ((((uintptr_t)k | (uintptr_t)v) & 15u) && (row & 7) == 0)
        return osc_error(OSC_ERR_INVALID_ARG, "kv append: unaligned rows");
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(osc_launch(k_kv_append, dim3(dim3((unsigned)B, 2)), dim3(128), 0, st, (const bf16 *)k, (const bf16 *)v,
                            (bf16 *const *)tab, tab_stride, (const int *)lens1, row));
    OSC_CU_LAUNCH("k_kv_append");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_attention_decode_tab(void *out, const void *q, const void *const *ktab,
                                                    const void *const *vtab, const int32_t *lens1, int B, int Hq,
                                                    int Hkv, int D, float scale, float *part, int nsplit) {
    if (!osc_cuda_decode_tab_ok(Hq, Hkv, D) || nsplit < 1 || nsplit > DK_MAX_SPLITS)
        return osc_error(OSC_ERR_UNSUPPORTED, "decode attention (tables): Hq %d, Hkv %d, D %d, %d splits", Hq, Hkv, D,
                         nsplit);
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int G = Hq / Hkv;
    float *pacc = part, *pml = part + (size_t)B * Hkv * nsplit * G * D;
    const bf16 *const *dk = (const bf16 *const *)ktab, *const *dv = (const bf16 *const *)vtab;
    const float sl2 = scale * kLog2e;
    const int *dl = (const int *)lens1;
    const bf16 *qp = (const bf16 *)q;
    osc_status s = D == 64    ? launch_decode1_batch<64>(pacc, pml, qp, dk, dv, dl, G, Hkv, B, nsplit, sl2, st)
                   : D == 128 ? launch_decode1_batch<128>(pacc, pml, qp, dk, dv, dl, G, Hkv, B, nsplit, sl2, st)
                              : launch_decode1_batch<256>(pacc, pml, qp, dk, dv, dl, G, Hkv, B, nsplit, sl2, st);
    OSC_TRY(s);
    /* the tensor-core kernel's chunk rule bounds the splits a sequence uses */
    OSC_CU_CHECK(osc_launch(attn_combine_for(nsplit, D), dim3((unsigned)(B * Hkv * G)), dim3(LSE_THREADS), 0, st,
                            (bf16 *)out, (const float *)pacc, (const float *)pml, nsplit, G, G, Hq, D, dl, Hkv,
                            batch_min_chunk(D)));
    OSC_CU_LAUNCH("k_attn_combine");
    return OSC_OK;
}

namespace {
/* one thread per sequence: the next decode step's positions and lengths, and its ids when the
 * step picked them on the device */
__global__ void k_step_advance(int32_t *__restrict__ pos, int n_pos_rows, int pos_stride, int32_t *__restrict__ lens1,
                               int32_t *__restrict__ ids, const int32_t *__restrict__ picked, int B) {
    pdl_enter();
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    for (int a = 0; a < n_pos_rows; a++) pos[(size_t)a * pos_stride + b] += 1;
    lens1[b] += 1;
    if (picked) ids[b] = picked[b];
}
} // namespace

extern "C" osc_status osc_cuda_step_advance(int32_t *pos, int n_pos_rows, int pos_stride, int32_t *lens1, int32_t *ids,
                                            const int32_t *picked, int B) {
    if (B <= 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(osc_launch(k_step_advance, dim3((unsigned)((B + 127) / 128)), dim3(128), 0, st, pos, n_pos_rows,
                            pos_stride, lens1, ids, picked, B));
    OSC_CU_LAUNCH("k_step_advance");
    return OSC_OK;
}
