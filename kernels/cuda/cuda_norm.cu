/* kernels/cuda/cuda_norm.cu: RMSNorm and LayerNorm over the last dim, one block per row,
 * fp32 statistics. Rows with D % 8 == 0 use 16-byte loads (8 bf16 per access).
 *   rmsnorm:   out = bf16( w * bf16( x * rsqrt(mean(x^2) + eps) ) )   (HF Qwen2RMSNorm)
 *   layernorm: out = bf16( (x - mean) * rsqrt(var + eps) * w + b )     (torch layer_norm)
 * out may alias x (each thread reads its elements before writing them; the statistics are
 * complete before any write because of the block reductions). */
#include "kernels/cuda/cuda_common.cuh"

namespace {


template <int V>
__global__ void k_rmsnorm(bf16 *out, const bf16 *x, const bf16 *__restrict__ w, int64_t D, float eps) {
    pdl_enter();
    __shared__ float red[32];
    const bf16 *xr = x + blockIdx.x * D;
    bf16 *orow = out + blockIdx.x * D;
    float ss = 0.f;
    if (V == 8) {
        for (int64_t i = threadIdx.x * 8; i < D; i += (int64_t)blockDim.x * 8) {
            float f[8];
            load8(xr + i, f);
#pragma unroll
            for (int j = 0; j < 8; j++) ss += f[j] * f[j];
        }
    } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
            float v = bf2f(xr[i]);
            ss += v * v;
        }
    }
    ss = block_sum(ss, red);
    float r = rsqrtf(ss / (float)D + eps);
    if (V == 8) {
        for (int64_t i = threadIdx.x * 8; i < D; i += (int64_t)blockDim.x * 8) {
            float f[8], g[8];
            load8(xr + i, f);
            load8(w + i, g);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = g[j] * round_bf(f[j] * r);
            store8(orow + i, f);
        }
    } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
            orow[i] = f2bf(bf2f(w[i]) * round_bf(bf2f(xr[i]) * r));
    }
}

template <int V>
__global__ void k_layernorm(bf16 *out, const bf16 *x, const bf16 *__restrict__ w, const bf16 *__restrict__ b,
                            int64_t D, float eps) {
    __shared__ float red[32];
    const bf16 *xr = x + blockIdx.x * D;
    bf16 *orow = out + blockIdx.x * D;
    float s = 0.f;
    if (V == 8) {
        for (int64_t i = threadIdx.x * 8; i < D; i += (int64_t)blockDim.x * 8) {
            float f[8];
            load8(xr + i, f);
#pragma unroll
            for (int j = 0; j < 8; j++) s += f[j];
        }
    } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) s += bf2f(xr[i]);
    }
    float mean = block_sum(s, red) / (float)D;
    float q = 0.f;
    if (V == 8) {
        for (int64_t i = threadIdx.x * 8; i < D; i += (int64_t)blockDim.x * 8) {
            float f[8];
            load8(xr + i, f);
#pragma unroll
            for (int j = 0; j < 8; j++) q += (f[j] - mean) * (f[j] - mean);
        }
    } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
            float d = bf2f(xr[i]) - mean;
            q += d * d;
        }
    }
    float var = block_sum(q, red) / (float)D;
    float r = rsqrtf(var + eps);
    if (V == 8) {
        for (int64_t i = threadIdx.x * 8; i < D; i += (int64_t)blockDim.x * 8) {
            float f[8], g[8], h[8];
            load8(xr + i, f);
            load8(w + i, g);
            load8(b + i, h);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = (f[j] - mean) * r * g[j] + h[j];
            store8(orow + i, f);
        }
    } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
            orow[i] = f2bf((bf2f(xr[i]) - mean) * r * bf2f(w[i]) + bf2f(b[i]));
    }
}

int norm_threads(int64_t D, int vec) {
    int64_t per = (D + vec - 1) / vec;
    int th = 32;
    while (th < per && th < 1024) th *= 2;
    return th;
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

} // namespace

extern "C" osc_status osc_cuda_rmsnorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, float eps) {
    int64_t D = osc_cu_last(x), R = osc_cu_rows(x);
    if (R == 0 || D == 0) return OSC_OK;
    if (R > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "rmsnorm: too many rows");
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    bool v8 = D % 8 == 0 && aligned16(out->data) && aligned16(x->data) && aligned16(w->data);
    int th = norm_threads(D, v8 ? 8 : 1);
    if (v8)
        OSC_CU_CHECK(osc_launch(k_rmsnorm<8>, dim3((unsigned)R), dim3(th), 0, st, (bf16 *)out->data,
                                (const bf16 *)x->data, (const bf16 *)w->data, D, eps));
    else
        OSC_CU_CHECK(osc_launch(k_rmsnorm<1>, dim3((unsigned)R), dim3(th), 0, st, (bf16 *)out->data,
                                (const bf16 *)x->data, (const bf16 *)w->data, D, eps));
    OSC_CU_LAUNCH("k_rmsnorm");
    return OSC_OK;
}

/* x = bf16(x + d) in place, then out = rmsnorm(x) as k_rmsnorm (one block per row, 8-wide).
 * A thread's first 8 values stay in registers between the two passes, and their weights are
 * loaded before waiting for the previous launch (weights never change). */
__global__ void k_add_rmsnorm(bf16 *__restrict__ x, const bf16 *__restrict__ d, bf16 *__restrict__ out,
                              const bf16 *__restrict__ w, int64_t D, float eps) {
    __shared__ float red[32];
    const int64_t i0 = threadIdx.x * 8, step = (int64_t)blockDim.x * 8;
    float w0[8], x0[8];
    if (i0 < D) load8(w + i0, w0);
    pdl_enter();
    bf16 *xr = x + blockIdx.x * D;
    const bf16 *dr = d + blockIdx.x * D;
    bf16 *orow = out + blockIdx.x * D;
    float ss = 0.f;
    for (int64_t i = i0; i < D; i += step) {
        float f[8], g[8];
        load8(xr + i, f);
        load8(dr + i, g);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            f[j] = round_bf(f[j] + g[j]); /* what osc_op_add stores */
            ss += f[j] * f[j];
        }
        store8(xr + i, f);
        if (i == i0)
#pragma unroll
            for (int j = 0; j < 8; j++) x0[j] = f[j];
    }
    ss = block_sum(ss, red);
    const float r = rsqrtf(ss / (float)D + eps);
    if (i0 < D) {
#pragma unroll
        for (int j = 0; j < 8; j++) x0[j] = w0[j] * round_bf(x0[j] * r);
        store8(orow + i0, x0);
    }
    for (int64_t i = i0 + step; i < D; i += step) {
        float f[8], g[8];
        load8(xr + i, f); /* this thread's own stores */
        load8(w + i, g);
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = g[j] * round_bf(f[j] * r);
        store8(orow + i, f);
    }
}

extern "C" osc_status osc_cuda_add_rmsnorm(osc_tensor *x, const osc_tensor *d, osc_tensor *out, const osc_tensor *w,
                                           float eps) {
    int64_t D = osc_cu_last(x), R = osc_cu_rows(x);
    if (R == 0 || D == 0) return OSC_OK;
    if (R > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "add_rmsnorm: too many rows");
    bool v8 = D % 8 == 0 && aligned16(out->data) && aligned16(x->data) && aligned16(d->data) && aligned16(w->data);
    if (!v8) { /* the two ops */
        OSC_TRY(osc_cuda_add(x, x, d));
        return osc_cuda_rmsnorm(out, x, w, eps);
    }
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(osc_launch(k_add_rmsnorm, dim3((unsigned)R), dim3(norm_threads(D, 8)), 0, st, (bf16 *)x->data,
                            (const bf16 *)d->data, (bf16 *)out->data, (const bf16 *)w->data, D, eps));
    OSC_CU_LAUNCH("k_add_rmsnorm");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_layernorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w,
                                         const osc_tensor *b, float eps) {
    int64_t D = osc_cu_last(x), R = osc_cu_rows(x);
    if (R == 0 || D == 0) return OSC_OK;
    if (R > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "layernorm: too many rows");
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    bool v8 = D % 8 == 0 && aligned16(out->data) && aligned16(x->data) && aligned16(w->data) &&
              aligned16(b->data);
    int th = norm_threads(D, v8 ? 8 : 1);
    if (v8)
        k_layernorm<8><<<(unsigned)R, th, 0, st>>>((bf16 *)out->data, (const bf16 *)x->data, (const bf16 *)w->data,
                                                   (const bf16 *)b->data, D, eps);
    else
        k_layernorm<1><<<(unsigned)R, th, 0, st>>>((bf16 *)out->data, (const bf16 *)x->data, (const bf16 *)w->data,
                                                   (const bf16 *)b->data, D, eps);
    OSC_CU_LAUNCH("k_layernorm");
    return OSC_OK;
}
