/* kernels/cuda/cuda_runtime.cu: the library-wide CUDA stream, cuBLAS/cuBLASLt handles (created
 * once, lazily, under a mutex), device memory and copies, and the grow-only scratch buffer.
 * Everything runs on the one stream; d2h/h2d copies synchronise it before returning. */
#include "kernels/cuda/cuda_common.cuh"

#include <atomic>
#include <mutex>
#include <stdlib.h>

namespace {
std::mutex g_mu;
bool g_init = false;
cudaStream_t g_stream = nullptr;
cublasHandle_t g_cublas = nullptr;
cublasLtHandle_t g_lt = nullptr;
void *g_lt_ws = nullptr;
const size_t g_lt_ws_bytes = 32u << 20;
void *g_scratch = nullptr;
size_t g_scratch_bytes = 0;
int g_sms = 0;
int g_avail = -1;

osc_status init_locked(void) {
    if (g_init) return OSC_OK;
    int dev = 0;
    OSC_CU_CHECK(cudaGetDevice(&dev));
    OSC_CU_CHECK(cudaDeviceGetAttribute(&g_sms, cudaDevAttrMultiProcessorCount, dev));
    OSC_CU_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    g_init = true;
    return OSC_OK;
}
} // namespace

osc_status osc_cu_stream(cudaStream_t *out) {
    std::lock_guard<std::mutex> lk(g_mu);
    OSC_TRY(init_locked());
    *out = g_stream;
    return OSC_OK;
}

osc_status osc_cu_cublas(cublasHandle_t *out) {
    std::lock_guard<std::mutex> lk(g_mu);
    OSC_TRY(init_locked());
    if (!g_cublas) {
        cublasHandle_t h;
        OSC_CUBLAS_CHECK(cublasCreate(&h));
        cublasStatus_t s = cublasSetStream(h, g_stream);
        if (s != CUBLAS_STATUS_SUCCESS) {
            cublasDestroy(h);
            OSC_CUBLAS_CHECK(s);
        }
        cublasSetMathMode(h, CUBLAS_DEFAULT_MATH);
        g_cublas = h;
    }
    *out = g_cublas;
    return OSC_OK;
}

osc_status osc_cu_cublaslt(cublasLtHandle_t *out, void **workspace, size_t *ws_bytes) {
    std::lock_guard<std::mutex> lk(g_mu);
    OSC_TRY(init_locked());
    if (!g_lt) {
        cublasLtHandle_t h;
        OSC_CUBLAS_CHECK(cublasLtCreate(&h));
        cudaError_t e = cudaMalloc(&g_lt_ws, g_lt_ws_bytes);
        if (e != cudaSuccess) {
            cublasLtDestroy(h);
            g_lt_ws = nullptr;
            OSC_CU_CHECK(e);
        }
        g_lt = h;
    }
    *out = g_lt;
    *workspace = g_lt_ws;
    *ws_bytes = g_lt_ws_bytes;
    return OSC_OK;
}

osc_status osc_cu_scratch(size_t bytes, void **out) {
    std::lock_guard<std::mutex> lk(g_mu);
    OSC_TRY(init_locked());
    if (bytes > g_scratch_bytes) {
        size_t want = bytes < (1u << 20) ? (1u << 20) : bytes;
        if (g_scratch) {
            /* pending kernels may still read the old buffer */
            OSC_CU_CHECK(cudaStreamSynchronize(g_stream));
            OSC_CU_CHECK(cudaFree(g_scratch));
            g_scratch = nullptr;
            g_scratch_bytes = 0;
        }
        OSC_CU_CHECK(cudaMalloc(&g_scratch, want));
        g_scratch_bytes = want;
    }
    *out = g_scratch;
    return OSC_OK;
}

int osc_cu_num_sms(void) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (init_locked() != OSC_OK) return 1;
    return g_sms > 0 ? g_sms : 1;
}

static std::atomic<int> g_pdl_override{-1};

extern "C" void osc_cuda_set_pdl(int on) { g_pdl_override.store(on < 0 ? -1 : (on ? 1 : 0)); }

int osc_cu_pdl(void) {
    const int o = g_pdl_override.load(std::memory_order_relaxed);
    static const int on = [] {
        const char *e = getenv("OSC_PDL");
        if (e && e[0] == '0') return 0;
        int dev = 0, major = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        return major >= 9 ? 1 : 0;
    }();
    return o >= 0 ? (o && on) : on;
}

extern "C" int osc_cuda_available(void) {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_avail < 0) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        g_avail = (e == cudaSuccess && n > 0) ? 1 : 0;
        if (!g_avail) cudaGetLastError(); /* clear the sticky-free error state */
    }
    return g_avail;
}

extern "C" osc_status osc_cuda_malloc(void **p, size_t n) {
    *p = nullptr;
    if (n == 0) return OSC_OK;
    cudaError_t e = cudaMalloc(p, n);
    if (e != cudaSuccess) {
        *p = nullptr;
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        if (e == cudaErrorMemoryAllocation && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
            return osc_error(OSC_ERR_OOM, "out of GPU memory: needed %.1f MiB more, %.1f MiB free of %.1f MiB",
                             n / 1048576.0, fr / 1048576.0, tot / 1048576.0);
        return osc_error(e == cudaErrorMemoryAllocation ? OSC_ERR_OOM : OSC_ERR_DEVICE,
                         "cudaMalloc(%zu bytes) failed: %s at %s:%d", n, cudaGetErrorString(e),
                         __FILE__, __LINE__);
    }
    return OSC_OK;
}

extern "C" void osc_cuda_free(void *p) {
    if (p) cudaFree(p);
}

extern "C" osc_status osc_cuda_memcpy_h2d(void *dst, const void *src, size_t n) {
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, st));
    OSC_CU_CHECK(cudaStreamSynchronize(st));
    return OSC_OK;
}

extern "C" osc_status osc_cuda_memcpy_d2h(void *dst, const void *src, size_t n) {
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, st));
    OSC_CU_CHECK(cudaStreamSynchronize(st));
    return OSC_OK;
}

extern "C" osc_status osc_cuda_memcpy_d2d(void *dst, const void *src, size_t n) {
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, st));
    return OSC_OK;
}

namespace {
/* grid (x, 2): y picks the pair; 16-byte words when every pointer and n allow, else bytes */
__global__ void k_copy_pair(char *d0, const char *s0, char *d1, const char *s1, size_t n, int vec) {
    pdl_enter();
    char *d = blockIdx.y ? d1 : d0;
    const char *s = blockIdx.y ? s1 : s0;
    const size_t stride = (size_t)gridDim.x * blockDim.x, i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vec) {
        for (size_t i = i0; i < n / 16; i += stride)
            reinterpret_cast<uint4 *>(d)[i] = reinterpret_cast<const uint4 *>(s)[i];
    } else {
        for (size_t i = i0; i < n; i += stride) d[i] = s[i];
    }
}
} // namespace

extern "C" osc_status osc_cuda_copy_pair(void *d0, const void *s0, void *d1, const void *s1, size_t n) {
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    const int vec = ((((uintptr_t)d0 | (uintptr_t)s0 | (uintptr_t)d1 | (uintptr_t)s1 | n) & 15u) == 0);
    const size_t items = vec ? n / 16 : n;
    size_t blocks = (items + 255) / 256;
    if (blocks > 1024) blocks = 1024;
    OSC_CU_CHECK(osc_launch(k_copy_pair, dim3((unsigned)blocks, 2), dim3(256), 0, st, (char *)d0, (const char *)s0,
                            (char *)d1, (const char *)s1, n, vec));
    OSC_CU_LAUNCH("k_copy_pair");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_sync(void) {
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaStreamSynchronize(st));
    return OSC_OK;
}

extern "C" osc_status osc_cuda_mem_info(size_t *free_b, size_t *total_b) {
    size_t f = 0, t = 0;
    OSC_CU_CHECK(cudaMemGetInfo(&f, &t));
    if (free_b) *free_b = f;
    if (total_b) *total_b = t;
    return OSC_OK;
}

struct osc_cuda_graph {
    cudaGraphExec_t exec;
};

extern "C" osc_status osc_cuda_graph_begin(void) {
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    return OSC_OK;
}

extern "C" osc_status osc_cuda_graph_end(osc_cuda_graph **out) {
    *out = nullptr;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    cudaGraph_t g = nullptr;
    cudaError_t e = cudaStreamEndCapture(st, &g);
    if (e != cudaSuccess || !g) {
        cudaGetLastError();
        return osc_error(OSC_ERR_DEVICE, "CUDA graph capture failed: %s", cudaGetErrorString(e));
    }
    cudaGraphExec_t ex = nullptr;
    e = cudaGraphInstantiate(&ex, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return osc_error(OSC_ERR_DEVICE, "CUDA graph instantiate failed: %s", cudaGetErrorString(e));
    }
    osc_cuda_graph *h = (osc_cuda_graph *)malloc(sizeof *h);
    if (!h) {
        cudaGraphExecDestroy(ex);
        return osc_error(OSC_ERR_OOM, "out of host memory");
    }
    h->exec = ex;
    *out = h;
    return OSC_OK;
}

extern "C" osc_status osc_cuda_graph_launch(osc_cuda_graph *g) {
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaGraphLaunch(g->exec, st));
    return OSC_OK;
}

extern "C" void osc_cuda_graph_free(osc_cuda_graph *g) {
    if (!g) return;
    cudaGraphExecDestroy(g->exec);
    free(g);
}

extern "C" osc_status osc_cuda_memcpy_async(void *dst, const void *src, size_t n, int h2d) {
    if (n == 0) return OSC_OK;
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    OSC_CU_CHECK(cudaMemcpyAsync(dst, src, n, h2d ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice, st));
    return OSC_OK;
}

/* device-side timer: two events on the library stream, created once */
static cudaEvent_t g_tev[2];

extern "C" osc_status osc_cuda_timer_start(void) {
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    if (!g_tev[0]) {
        OSC_CU_CHECK(cudaEventCreate(&g_tev[0]));
        OSC_CU_CHECK(cudaEventCreate(&g_tev[1]));
    }
    OSC_CU_CHECK(cudaEventRecord(g_tev[0], st));
    return OSC_OK;
}

__global__ void k_hold(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        __nanosleep(1000);
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}

extern "C" osc_status osc_cuda_hold(double us) {
    if (!(us >= 1.0 && us <= 1e6)) return osc_error(OSC_ERR_INVALID_ARG, "device hold: %g us (1 .. 1e6)", us);
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    k_hold<<<1, 1, 0, st>>>((unsigned long long)(us * 1e3));
    OSC_CU_LAUNCH("k_hold");
    return OSC_OK;
}

extern "C" osc_status osc_cuda_timer_stop(double *seconds) {
    cudaStream_t st;
    OSC_TRY(osc_cu_stream(&st));
    if (!g_tev[0]) return osc_error(OSC_ERR_INVALID_ARG, "device timer stopped before it started");
    OSC_CU_CHECK(cudaEventRecord(g_tev[1], st));
    OSC_CU_CHECK(cudaEventSynchronize(g_tev[1]));
    float ms = 0.f;
    OSC_CU_CHECK(cudaEventElapsedTime(&ms, g_tev[0], g_tev[1]));
    *seconds = ms * 1e-3;
    return OSC_OK;
}
