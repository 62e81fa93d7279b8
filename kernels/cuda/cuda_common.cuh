/* kernels/cuda/cuda_common.cuh: shared by every kernels/cuda/*.cu file.
 *
 * - C headers of the library included with C linkage (status.h/tensor.h/ops.h have no
 *   extern "C" guards of their own).
 * - OSC_CU_CHECK / OSC_CUBLAS_CHECK / OSC_CU_LAUNCH: turn any CUDA/cuBLAS error into
 *   osc_error(OSC_ERR_DEVICE, "<call> failed: <reason> at file:line") and return it.
 * - The one library-wide stream and the lazily created cuBLAS / cuBLASLt handles
 *   (cuda_runtime.cu), plus a grow-only device workspace for split-K partials.
 * - bf16 load/store helpers (fp32 compute everywhere). */
#ifndef OSC_KERNELS_CUDA_COMMON_CUH
#define OSC_KERNELS_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <cublasLt.h>
#include <stdint.h>

extern "C" {
#include "core/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"
}
#include "kernels/cuda/launch.h"

#define OSC_CU_CHECK(call)                                                                   \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess)                                                               \
            return osc_error(OSC_ERR_DEVICE, "%s failed: %s at %s:%d", #call,               \
                             cudaGetErrorString(e_), __FILE__, __LINE__);                    \
    } while (0)

#define OSC_CUBLAS_CHECK(call)                                                               \
    do {                                                                                     \
        cublasStatus_t s_ = (call);                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                     \
            return osc_error(OSC_ERR_DEVICE, "%s failed: %s at %s:%d", #call,               \
                             cublasGetStatusString(s_), __FILE__, __LINE__);                 \
    } while (0)

/* After every kernel launch: configuration errors show up here. */
#define OSC_CU_LAUNCH(name)                                                                  \
    do {                                                                                     \
        cudaError_t e_ = cudaGetLastError();                                                 \
        if (e_ != cudaSuccess)                                                               \
            return osc_error(OSC_ERR_DEVICE, "launch of %s failed: %s at %s:%d", name,      \
                             cudaGetErrorString(e_), __FILE__, __LINE__);                    \
    } while (0)

/* Library state (cuda_runtime.cu). Each returns OSC_OK and fills *out, or an error. */
osc_status osc_cu_stream(cudaStream_t *out);
osc_status osc_cu_cublas(cublasHandle_t *out);
osc_status osc_cu_cublaslt(cublasLtHandle_t *out, void **workspace, size_t *ws_bytes);
/* Device scratch of at least `bytes` (grow-only, freed at exit; used on the library stream
 * only, so reuse between launches is ordered). */
osc_status osc_cu_scratch(size_t bytes, void **out);
/* Properties of the current device (cached). */
int osc_cu_num_sms(void);
/* 1 when launches go out as programmatic dependent launches (sm_90+, unless OSC_PDL=0). */
int osc_cu_pdl(void);

/* Programmatic dependent launch (PDL). A kernel started by osc_launch may begin while the
 * kernel before it on the stream is still running, so it must call pdl_wait() before it reads
 * or writes any memory an earlier launch touches (weights and other constants may be read
 * before). pdl_trigger() lets the next PDL launch start: its blocks become resident and run
 * up to their own pdl_wait(), which returns only after this whole grid has finished and its
 * writes are visible, so the ordering stays transitive. Both are no-ops without PDL. */
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
/* the usual entry of a step kernel: wait for the previous one, let the next one start */
__device__ __forceinline__ void pdl_enter() {
    pdl_wait();
    pdl_trigger();
}

/* kernel<<<grid, block, smem, st>>>(args...), as a programmatic dependent launch when
 * osc_cu_pdl(); only for kernels that call pdl_wait() first (see above). Returns the launch
 * error (check with OSC_CU_CHECK or OSC_CU_LAUNCH). */
template <typename... KArgs, typename... Args>
static inline cudaError_t osc_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                     Args... args) {
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = osc_cu_pdl() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...);
}

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }
/* Round a float to the nearest bf16 value and return it as float. */
__device__ __forceinline__ float round_bf(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

/* 8 bf16 <-> 8 floats with one 16-byte access (p must be 16-byte aligned). */
__device__ __forceinline__ void load8(const bf16 *p, float f[8]) {
    uint4 u = *reinterpret_cast<const uint4 *>(p);
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void store8(bf16 *p, const float f[8]) {
    uint4 u;
    __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *reinterpret_cast<uint4 *>(p) = u;
}

/* Generic element access for BF16 or F32 buffers. */
template <typename T> __device__ __forceinline__ float ld_f(const T *p, int64_t i);
template <> __device__ __forceinline__ float ld_f<float>(const float *p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld_f<bf16>(const bf16 *p, int64_t i) { return bf2f(p[i]); }
template <typename T> __device__ __forceinline__ void st_f(T *p, int64_t i, float v);
template <> __device__ __forceinline__ void st_f<float>(float *p, int64_t i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st_f<bf16>(bf16 *p, int64_t i, float v) { p[i] = f2bf(v); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Block-wide sum / max for blockDim.x a multiple of 32 (<= 1024). `red` holds 32 floats.
 * Every thread gets the result. */
__device__ __forceinline__ float block_sum(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float r = lane < nw ? red[lane] : 0.f;
    return warp_sum(r);
}
__device__ __forceinline__ float block_max(float v, float *red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float r = lane < nw ? red[lane] : -INFINITY;
    return warp_max(r);
}

/* The last step of split-K flash decoding, for one query row and one block of LSE_THREADS
 * threads: n partials (m_i, l_i: base-2 running max and sum, at ml[i * mls], ml[i * mls + 1];
 * acc_i: D unnormalised fp32 outputs at pa + i * ps) merge by log-sum-exp into o[D] =
 * sum_i w_i acc_i / sum_i w_i l_i with w_i = 2^(m_i - max_j m_j); w_i = 0 where m_i = -inf.
 * The threads split the n rows among P = LSE_THREADS / (D / V) groups, so each thread has only
 * n / P loads and they are all in flight together; one thread per channel walking all n rows
 * was a chain of n / 8 L2 round trips (~12 us for 70 splits). wts holds n floats (shared). */
#define LSE_THREADS 256
template <int V>
__device__ __forceinline__ void lse_rows(bf16 *__restrict__ o, const float *__restrict__ pa, size_t ps, int n, int D,
                                         const float *wts, float inv, float *part) {
    const int Q = D / V, P = LSE_THREADS / Q, t = threadIdx.x, q = t % Q, p = t / Q;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f); /* V == 1 uses a.x */
    if (p < P) {
        const float *src = pa + (size_t)q * V;
#pragma unroll 4
        for (int i = p; i < n; i += P) {
            const float w = wts[i];
            if (V == 4) {
                const float4 x = *(const float4 *)(src + (size_t)i * ps);
                a = make_float4(fmaf(w, x.x, a.x), fmaf(w, x.y, a.y), fmaf(w, x.z, a.z), fmaf(w, x.w, a.w));
            } else {
                a.x = fmaf(w, src[(size_t)i * ps], a.x);
            }
        }
        float *d = part + p * D + q * V;
        d[0] = a.x;
        if (V == 4) d[1] = a.y, d[2] = a.z, d[3] = a.w;
    }
    __syncthreads();
    const int np = min(P, n);
    for (int c = t; c < D; c += LSE_THREADS) {
        float s = 0.f;
        for (int j = 0; j < np; j++) s += part[j * D + c];
        o[c] = f2bf(s * inv);
    }
}
/* lse_merge for n <= R * P rows: each thread loads all its rows (acc and m, l) at once, so the
 * merge is one L2 round trip, one block max and one barrier (the two-phase version below waited
 * for the m row, then for the acc rows in batches of 4). R = 16 holds 64 floats of rows per
 * thread (113 registers: 2 blocks per SM), so launches with few splits take R = 4
 * (lse_rows_per_thread). */
template <int V, int R>
__device__ __forceinline__ void lse_regs(bf16 *__restrict__ o, const float *__restrict__ pa, size_t ps,
                                         const float *__restrict__ ml, size_t mls, int n, int D, float *red,
                                         float *part, float *lp) {
    const int Q = D / V, P = LSE_THREADS / Q, t = threadIdx.x, q = t % Q, p = t / Q;
    float4 x[R];
    float m[R], l[R];
#pragma unroll
    for (int k = 0; k < R; k++) {
        const int i = p + k * P;
        m[k] = -INFINITY;
        l[k] = 0.f;
        x[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (p < P && i < n) {
            m[k] = ml[(size_t)i * mls];
            l[k] = ml[(size_t)i * mls + 1];
            const float *src = pa + (size_t)i * ps + (size_t)q * V;
            x[k] = V == 4 ? *(const float4 *)src : make_float4(*src, 0.f, 0.f, 0.f);
        }
    }
    float mx = -INFINITY;
#pragma unroll
    for (int k = 0; k < R; k++) mx = fmaxf(mx, m[k]);
    const float M = block_max(mx, red);
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
    float L = 0.f;
    if (M != -INFINITY) {
#pragma unroll
        for (int k = 0; k < R; k++) {
            const float w = m[k] == -INFINITY ? 0.f : exp2f(m[k] - M);
            a = make_float4(fmaf(w, x[k].x, a.x), fmaf(w, x[k].y, a.y), fmaf(w, x[k].z, a.z), fmaf(w, x[k].w, a.w));
            L = fmaf(w, l[k], L);
        }
    }
    if (p < P) {
        float *d = part + p * D + q * V;
        d[0] = a.x;
        if (V == 4) d[1] = a.y, d[2] = a.z, d[3] = a.w;
        if (q == 0) lp[p] = L;
    }
    __syncthreads();
    const int np = min(P, n);
    float Lt = 0.f;
    for (int j = 0; j < np; j++) Lt += lp[j];
    const float inv = Lt > 0.f ? 1.f / Lt : 0.f;
    for (int c = t; c < D; c += LSE_THREADS) {
        float sum = 0.f;
        for (int j = 0; j < np; j++) sum += part[j * D + c];
        o[c] = f2bf(sum * inv);
    }
}

/* the R of lse_merge for n splits of D channels (host and device): 4, or 16 past 4 rows a thread */
__host__ __device__ __forceinline__ int lse_rows_per_thread(int n, int D) {
    const int P = D >= 4 && D <= 4 * LSE_THREADS ? LSE_THREADS / (D / 4) : 1;
    return n <= 4 * P ? 4 : 16;
}
template <int R>
__device__ __forceinline__ void lse_merge(bf16 *__restrict__ o, const float *__restrict__ pa, size_t ps,
                                          const float *__restrict__ ml, size_t mls, int n, int D, float *wts) {
    __shared__ float red[32], part[LSE_THREADS * 4]; /* part: the thread groups' sums */
    const bool v4 = D % 4 == 0 && ps % 4 == 0 && ((uintptr_t)pa & 15) == 0;
    const int P = v4 ? LSE_THREADS / (D / 4) : LSE_THREADS / D;
    if (P > 0 && n <= R * P) {
        __shared__ float lp[LSE_THREADS];
        if (v4) lse_regs<4, R>(o, pa, ps, ml, mls, n, D, red, part, lp);
        else lse_regs<1, R>(o, pa, ps, ml, mls, n, D, red, part, lp);
        return;
    }
    float m = -INFINITY;
    for (int i = threadIdx.x; i < n; i += LSE_THREADS) m = fmaxf(m, ml[(size_t)i * mls]);
    m = block_max(m, red);
    float l = 0.f;
    for (int i = threadIdx.x; i < n; i += LSE_THREADS) {
        const float mi = ml[(size_t)i * mls], w = mi == -INFINITY ? 0.f : exp2f(mi - m);
        wts[i] = w;
        l = fmaf(w, ml[(size_t)i * mls + 1], l);
    }
    l = block_sum(l, red); /* its __syncthreads make wts visible */
    const float inv = l > 0.f ? 1.f / l : 0.f;
    if (v4) lse_rows<4>(o, pa, ps, n, D, wts, inv, part);
    else lse_rows<1>(o, pa, ps, n, D, wts, inv, part);
}

static inline int64_t osc_cu_rows(const osc_tensor *t) {
    int64_t last = t->nd > 0 ? t->ne[t->nd - 1] : 1;
    return last > 0 ? osc_tensor_nelem(t) / last : 0;
}
static inline int64_t osc_cu_last(const osc_tensor *t) { return t->nd > 0 ? t->ne[t->nd - 1] : 1; }
static inline unsigned osc_cu_blocks(int64_t n, int threads, int64_t cap = 65535LL * 32) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > cap) b = cap;
    return (unsigned)b;
}

#endif
