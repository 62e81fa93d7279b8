/* kernels/cuda/cuda_elementwise.cu: embed (row gather), silu_mul, gelu (exact erf), add,
 * add_bias, softmax (BF16/F32, in place), convert (F32 <-> BF16, or copy), argmax (BF16/F32).
 * bf16 math follows torch's bf16 ops: each torch op computes in fp32 and rounds once, so
 * silu_mul = bf16(bf16(silu(g)) * u) like act_fn(gate) * up in HF. Element-wise kernels
 * use 16-byte accesses (8 bf16) for the aligned bulk and a scalar tail. */
#include "kernels/cuda/cuda_common.cuh"

namespace {

bool al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }


/* ---- binary element-wise: out = op(a, b) ---- */
struct op_silu_mul {
    __device__ float operator()(float g, float u) const {
        float s = round_bf(g / (1.f + expf(-g)));
        return s * u;
    }
};
struct op_add {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct op_gelu {
    __device__ float operator()(float x, float) const { return 0.5f * x * (1.f + erff(x * 0.70710678118654752f)); }
};

template <class Op>
__global__ void k_binary(bf16 *out, const bf16 *a, const bf16 *b, int64_t n, int vec) {
    pdl_enter();
    Op op;
    int64_t tid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, stride = (int64_t)gridDim.x * blockDim.x;
    int64_t nv = vec ? n / 8 : 0;
    for (int64_t i = tid; i < nv; i += stride) {
        float fa[8], fb[8];
        load8(a + i * 8, fa);
        if (b) load8(b + i * 8, fb);
#pragma unroll
        for (int j = 0; j < 8; j++) fa[j] = op(fa[j], b ? fb[j] : 0.f);
        store8(out + i * 8, fa);
    }
    for (int64_t i = nv * 8 + tid; i < n; i += stride) out[i] = f2bf(op(bf2f(a[i]), b ? bf2f(b[i]) : 0.f));
}

template <class Op>
osc_status launch_binary(const char *name, osc_tensor *out, const osc_tensor *a, const osc_tensor *b) {
    int64_t n = osc_tensor_nelem(out);
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    int vec = al16(out->data) && al16(a->data) && (!b || al16(b->data));
    int th = 256;
    OSC_CU_CHECK(osc_launch(k_binary<Op>, dim3(osc_cu_blocks(vec ? (n + 7) / 8 : n, th)), dim3(th), 0, st,
                            (bf16 *)out->data, (const bf16 *)a->data, b ? (const bf16 *)b->data : nullptr, n, vec));
    OSC_CU_LAUNCH(name);
    return OSC_OK;
}

/* ---- embed ---- */
__global__ void k_embed(bf16 *__restrict__ out, const bf16 *__restrict__ table, const int32_t *__restrict__ ids,
                        int64_t V, int64_t D, int vec) {
    pdl_enter();
    int64_t s = blockIdx.x;
    int64_t id = ids[s];
    bf16 *o = out + s * D;
    if (id < 0 || id >= V) { /* the CPU path rejects these; never read out of bounds here */
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) o[i] = f2bf(0.f);
        return;
    }
    const bf16 *t = table + id * D;
    if (vec) {
        for (int64_t i = threadIdx.x; i < D / 8; i += blockDim.x)
            reinterpret_cast<uint4 *>(o)[i] = reinterpret_cast<const uint4 *>(t)[i];
    } else {
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) o[i] = t[i];
    }
}

/* ---- add_bias ---- */
__global__ void k_add_bias(bf16 *x, const bf16 *__restrict__ bias, int64_t n, int64_t N) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = f2bf(bf2f(x[i]) + bf2f(bias[i % N]));
}

/* ---- softmax: one block per row ---- */
template <typename T>
__global__ void k_softmax(T *x, int64_t N) {
    __shared__ float red[32];
    T *r = x + blockIdx.x * N;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) m = fmaxf(m, ld_f<T>(r, i));
    m = block_max(m, red);
    if (m == -INFINITY) m = 0.f; /* all -inf: exp gives 0 / 0 = NaN like torch */
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) s += expf(ld_f<T>(r, i) - m);
    s = block_sum(s, red);
    float inv = 1.f / s;
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) st_f<T>(r, i, expf(ld_f<T>(r, i) - m) * inv);
}

/* ---- convert ---- */
template <typename TI, typename TO>
__global__ void k_convert(TO *__restrict__ out, const TI *__restrict__ in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st_f<TO>(out, i, ld_f<TI>(in, i));
}

/* ---- argmax: first index on ties, NaN never wins ----
 * A row is split over gridDim.y blocks (a 152K vocabulary row read by one block was ~140 us);
 * each writes its (value, index) winner, and k_argmax_final reduces them per row. With one
 * block per row (gridDim.y == 1) k_argmax writes the index directly. */
__device__ __forceinline__ void argmax_pick(float &bv, int64_t &bi, float ov, int64_t oi) {
    if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
}

template <typename T>
__global__ void k_argmax(int32_t *__restrict__ out, const T *__restrict__ x, int64_t N, float *__restrict__ pv,
                         int64_t *__restrict__ pi) {
    pdl_enter();
    __shared__ float sv[32];
    __shared__ int64_t si[32];
    const T *r = x + blockIdx.x * N;
    const int64_t per = (N + gridDim.y - 1) / gridDim.y, lo = (int64_t)blockIdx.y * per, hi = min(N, lo + per);
    float bv = -INFINITY;
    int64_t bi = -1;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float v = ld_f<T>(r, i);
        if (v > bv || (bi < 0 && !isnan(v))) { bv = v; bi = i; }
    }
    /* warp reduce: larger value wins, equal values -> smaller index; bi < 0 means none */
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    if (lane == 0) { sv[w] = bv; si[w] = bi; }
    __syncthreads();
    if (w == 0) {
        bv = lane < nw ? sv[lane] : -INFINITY;
        bi = lane < nw ? si[lane] : -1;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) { bv = ov; bi = oi; }
        }
        if (lane == 0) {
            if (gridDim.y == 1) {
                out[blockIdx.x] = (int32_t)(bi < 0 ? 0 : bi);
            } else {
                pv[(size_t)blockIdx.x * gridDim.y + blockIdx.y] = bv;
                pi[(size_t)blockIdx.x * gridDim.y + blockIdx.y] = bi;
            }
        }
    }
}

/* one warp per row: the NB block winners of k_argmax */
__global__ void k_argmax_final(int32_t *__restrict__ out, const float *__restrict__ pv, const int64_t *__restrict__ pi,
                               int NB) {
    pdl_enter();
    const int row = blockIdx.x, lane = threadIdx.x;
    float bv = -INFINITY;
    int64_t bi = -1;
    for (int b = lane; b < NB; b += 32) argmax_pick(bv, bi, pv[(size_t)row * NB + b], pi[(size_t)row * NB + b]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        argmax_pick(bv, bi, ov, oi);
    }
    if (lane == 0) out[row] = (int32_t)(bi < 0 ? 0 : bi);
}

int row_threads(int64_t N) {
    int th = 32;
    while (th < N && th < 1024) th *= 2;
    return th;
}

} // namespace

extern "C" osc_status osc_cuda_embed(osc_tensor *out, const osc_tensor *table, const osc_tensor *ids) {
    int64_t S = osc_tensor_nelem(ids), V = table->ne[0], D = osc_cu_last(table);
    if (S == 0 || D == 0) return OSC_OK;
    if (S > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "embed: too many ids");
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    int vec = D % 8 == 0 && al16(out->data) && al16(table->data);
    int th = row_threads(vec ? D / 8 : D);
    if (th > 256) th = 256;
    OSC_CU_CHECK(osc_launch(k_embed, dim3((unsigned)S), dim3(th), 0, st, (bf16 *)out->data, (const bf16 *)table->data,
                            (const int32_t *)ids->data, V, D, vec));
    OSC_CU_LAUNCH("k_embed");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_silu_mul(osc_tensor *out, const osc_tensor *gate, const osc_tensor *up) {
    return launch_binary<op_silu_mul>("k_silu_mul", out, gate, up);
}

extern "C" osc_status osc_cuda_gelu(osc_tensor *out, const osc_tensor *x) {
    return launch_binary<op_gelu>("k_gelu", out, x, nullptr);
}

extern "C" osc_status osc_cuda_add(osc_tensor *out, const osc_tensor *a, const osc_tensor *b) {
    return launch_binary<op_add>("k_add", out, a, b);
}

extern "C" osc_status osc_cuda_add_bias(osc_tensor *x, const osc_tensor *bias) {
    int64_t n = osc_tensor_nelem(x), N = osc_tensor_nelem(bias);
    if (n == 0 || N == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    int th = 256;
    k_add_bias<<<osc_cu_blocks(n, th), th, 0, st>>>((bf16 *)x->data, (const bf16 *)bias->data, n, N);
    OSC_CU_LAUNCH("k_add_bias");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_softmax(osc_tensor *x) {
    int64_t N = osc_cu_last(x), R = osc_cu_rows(x);
    if (R == 0 || N == 0) return OSC_OK;
    if (R > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "softmax: too many rows");
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    int th = row_threads(N);
    if (x->dt == OSC_F32)
        k_softmax<float><<<(unsigned)R, th, 0, st>>>((float *)x->data, N);
    else if (x->dt == OSC_BF16)
        k_softmax<bf16><<<(unsigned)R, th, 0, st>>>((bf16 *)x->data, N);
    else
        return osc_error(OSC_ERR_INVALID_ARG, "softmax: dtype %s not supported on CUDA", osc_dtype_name(x->dt));
    OSC_CU_LAUNCH("k_softmax");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_convert(osc_tensor *out, const osc_tensor *in) {
    int64_t n = osc_tensor_nelem(in);
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    if (out->dt == in->dt) {
        if (out->data != in->data)
            OSC_CU_CHECK(cudaMemcpyAsync(out->data, in->data, osc_tensor_nbytes(in), cudaMemcpyDeviceToDevice, st));
        return OSC_OK;
    }
    int th = 256;
    unsigned bl = osc_cu_blocks(n, th);
    if (in->dt == OSC_F32 && out->dt == OSC_BF16)
        k_convert<float, bf16><<<bl, th, 0, st>>>((bf16 *)out->data, (const float *)in->data, n);
    else if (in->dt == OSC_BF16 && out->dt == OSC_F32)
        k_convert<bf16, float><<<bl, th, 0, st>>>((float *)out->data, (const bf16 *)in->data, n);
    else
        return osc_error(OSC_ERR_INVALID_ARG, "convert: %s -> %s not supported on CUDA", osc_dtype_name(in->dt),
                         osc_dtype_name(out->dt));
    OSC_CU_LAUNCH("k_convert");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_argmax(osc_tensor *out, const osc_tensor *x) {
    int64_t N = osc_cu_last(x), R = osc_cu_rows(x);
    if (R == 0) return OSC_OK;
    if (R > INT32_MAX || N > INT32_MAX) return osc_error(OSC_ERR_UNSUPPORTED, "argmax: too large");
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    int th = row_threads(N);
    if (th > 512) th = 512;
    /* long rows (vocabularies) over up to 64 blocks each; the winners' buffer is allocated once
     * for up to 256 rows on the first call (never inside a graph capture: the decode graph's
     * first step of a batch size runs eagerly), longer batches keep one block per row */
    static float *pv = nullptr;
    static int64_t *pi = nullptr;
    const int ARG_ROWS = 256, ARG_NB = 64;
    int NB = (int)((N + 4095) / 4096);
    if (NB > ARG_NB) NB = ARG_NB;
    if (NB > 1 && R <= ARG_ROWS && !pv) {
        OSC_CU_CHECK(cudaMalloc((void **)&pv, (size_t)ARG_ROWS * ARG_NB * sizeof(float)));
        OSC_CU_CHECK(cudaMalloc((void **)&pi, (size_t)ARG_ROWS * ARG_NB * sizeof(int64_t)));
    }
    if (R > ARG_ROWS) NB = 1;
    if (NB > 1) th = 256;
    dim3 grid((unsigned)R, (unsigned)NB);
    if (x->dt == OSC_F32)
        OSC_CU_CHECK(osc_launch(k_argmax<float>, dim3(grid), dim3(th), 0, st, (int32_t *)out->data,
                                (const float *)x->data, N, pv, pi));
    else if (x->dt == OSC_BF16)
        OSC_CU_CHECK(osc_launch(k_argmax<bf16>, dim3(grid), dim3(th), 0, st, (int32_t *)out->data,
                                (const bf16 *)x->data, N, pv, pi));
    else
        return osc_error(OSC_ERR_INVALID_ARG, "argmax: dtype %s not supported on CUDA", osc_dtype_name(x->dt));
    OSC_CU_LAUNCH("k_argmax");
    if (NB > 1) {
        OSC_CU_CHECK(osc_launch(k_argmax_final, dim3((unsigned)R), dim3(32), 0, st, (int32_t *)out->data, pv, pi, NB));
        OSC_CU_LAUNCH("k_argmax_final");
    }
    return OSC_OK;
}
