// read_probe: how fast can a kernel shaped like k_kvq_mma read the packed cache, doing no math?
//
// The (1,128K) and (1,32K) decode-attention launches of the 2-bit cache (8 KV heads, hd 128):
// the same grid (splits x KV heads), 4 warps a block, 4 blocks an SM (56 KB of shared memory
// each, as the kernel's registers allow), a 3-stage cp.async ring per warp and the same 16-byte
// pieces per 32-token group (K codes 1 KB, K params 512 B, V codes 1 KB, V params 512 B, norms
// 128 B), consumed by an XOR instead of the MMAs. Three layouts of the same bytes (as stored:
// heads interleaved per group; head-major; one 3.2 KB block per (head, group)), a plain
// grid-stride read and a device-to-device memcpy for reference. Timed per call (CUDA events
// around one launch from an idle device, as `oscar bench`'s median_us), median of 30.
// docs/PERFORMANCE.md (session 13) compares it with k_kvq_mma.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/read_probe tools/bench/read_probe.cu && /tmp/read_probe
//
// `read_probe --floor` (session 15): the read floor at four sizes (25 MB = (1,32K), 101 MB =
// (1,128K), 202 MB = (8,32K), 405 MB), the stored layout only: the ring above with 3 or 4
// stages, the same ring filled by TMA bulk copies (cp.async.bulk of a group's 5 pieces onto one
// mbarrier per stage, issued by lane 0; 1 or 2 groups a stage) and a plain read, each timed on
// device (one launch queued behind a 1 ms hold kernel, so no host launch work inside) and per
// call, median of 35, buffers rotated past the L2. (The TMA ring refills a slot after a
// __syncwarp without a proxy fence: enough for timing, not a pattern for a kernel whose results
// matter.)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>
#include <vector>

#include "../../kernels/cuda/cuda_mma.cuh" /* mma_cp16, mma_commit, mma_wait: the kernel's own */

#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e_ = (x);                                                                      \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "read_probe: %s: %s\n", #x, cudaGetErrorString(e_));                   \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

const int NW = 4, STAGE = 3200, QS = 4096;
const size_t SMEM = 56 * 1024; /* 4 blocks an SM, as k_kvq_mma before session 15 */

/* MODE 0: five arrays, heads interleaved per group (the cache as stored); 1: five arrays,
 * head-major; 2: one 3.2 KB block per (head, group) */
template <int MODE, int STAGES = 3>
__global__ void __launch_bounds__(NW * 32, 4) k_probe(const char *kq, const char *kp, const char *vq, const char *vp,
                                                       const char *kn, int NG, int Hkv, int gpb, unsigned *sink) {
    extern __shared__ __align__(16) unsigned char sm[];
    const int WARP_BYTES = STAGES * STAGE;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, split = blockIdx.x, kvh = blockIdx.y;
    char *ws = (char *)sm + QS + warp * WARP_BYTES;
    const int g0 = split * gpb, g1 = min(g0 + gpb, NG);
    const int n = g0 + warp < g1 ? (g1 - g0 - warp + NW - 1) / NW : 0;
    auto issue = [&](char *sb, int gl) {
        if (MODE == 2) {
            const char *b = kq + ((size_t)kvh * NG + gl) * STAGE;
            for (int i = lane; i < STAGE / 16; i += 32) mma_cp16(sb + i * 16, b + i * 16);
            return;
        }
        const size_t blk = MODE == 0 ? (size_t)gl * Hkv + kvh : (size_t)kvh * NG + gl;
        mma_cp16(sb + lane * 16, kq + blk * 1024 + lane * 16);
        mma_cp16(sb + 512 + lane * 16, kq + blk * 1024 + 512 + lane * 16);
        mma_cp16(sb + 1024 + lane * 16, kp + blk * 512 + lane * 16);
        mma_cp16(sb + 1536 + lane * 16, vq + blk * 1024 + lane * 16);
        mma_cp16(sb + 2048 + lane * 16, vq + blk * 1024 + 512 + lane * 16);
        mma_cp16(sb + 2560 + lane * 16, vp + blk * 512 + lane * 16);
        if (lane < 8) mma_cp16(sb + 3072 + lane * 16, kn + (size_t)gl * 128 + lane * 16);
    };
    for (int i = 0; i < STAGES - 1; i++) {
        if (i < n) issue(ws + i * STAGE, g0 + warp + i * NW);
        mma_commit();
    }
    unsigned acc = 0;
    for (int it = 0; it < n; it++) {
        mma_wait<STAGES - 2>();
        __syncwarp();
        if (it + STAGES - 1 < n) issue(ws + ((it + STAGES - 1) % STAGES) * STAGE, g0 + warp + (it + STAGES - 1) * NW);
        mma_commit();
        const uint4 *sb = (const uint4 *)(ws + (it % STAGES) * STAGE);
        for (int i = lane; i < STAGE / 16; i += 32) {
            const uint4 v = sb[i];
            acc ^= v.x ^ v.y ^ v.z ^ v.w;
        }
        __syncwarp();
    }
    if (acc == 0x12345678u) sink[0] = acc; /* keeps the reads */
}

__device__ __forceinline__ unsigned long long gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__global__ void k_hold(unsigned long long ns) {
    const unsigned long long t0 = gtime();
    while (gtime() - t0 < ns) {
    }
}

__device__ __forceinline__ unsigned sa(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void mb_init(uint64_t *b, int cnt) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(b)), "r"(cnt) : "memory");
}
__device__ __forceinline__ void mb_expect(uint64_t *b, unsigned tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(sa(b)), "r"(tx) : "memory");
}
__device__ __forceinline__ void bulk(void *dst, const void *src, unsigned bytes, uint64_t *b) {
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(sa(dst)),
        "l"(src), "r"(bytes), "r"(sa(b))
        : "memory");
}
__device__ __forceinline__ void mb_wait(uint64_t *b, unsigned ph) {
    asm volatile(
        "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}" ::"r"(sa(b)),
        "r"(ph)
        : "memory");
}

/* TMA: lane 0 of each warp issues the 5 pieces of a group as bulk copies onto the stage's mbarrier; GPS groups per
 * stage */
template <int STAGES, int GPS>
__global__ void __launch_bounds__(NW * 32, 4) k_tma(const char *kq, const char *kp, const char *vq, const char *vp,
                                                    const char *kn, int NG, int Hkv, int gpb, unsigned *sink) {
    extern __shared__ __align__(16) unsigned char sm[];
    __shared__ uint64_t bar[NW][STAGES];
    const int SB = GPS * STAGE;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, split = blockIdx.x, kvh = blockIdx.y;
    char *ws = (char *)sm + QS + warp * STAGES * SB;
    const int g0 = split * gpb, g1 = min(g0 + gpb, NG);
    const int n = g0 + warp < g1 ? (g1 - g0 - warp + NW - 1) / NW : 0; /* groups of this warp */
    const int ns = (n + GPS - 1) / GPS;
    if (lane == 0)
        for (int s = 0; s < STAGES; s++)
            mb_init(&bar[warp][s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    __syncwarp();
    auto issue = [&](int st, int k) { /* stage k of this warp into slot st */
        if (lane != 0) return;
        const int gn = min(GPS, n - k * GPS);
        mb_expect(&bar[warp][st], gn * STAGE);
        char *sb = ws + st * SB;
        for (int u = 0; u < gn; u++) {
            const int gl = g0 + warp + (k * GPS + u) * NW;
            const size_t blk = (size_t)gl * Hkv + kvh;
            char *d = sb + u * STAGE;
            bulk(d, kq + blk * 1024, 1024, &bar[warp][st]);
            bulk(d + 1024, kp + blk * 512, 512, &bar[warp][st]);
            bulk(d + 1536, vq + blk * 1024, 1024, &bar[warp][st]);
            bulk(d + 2560, vp + blk * 512, 512, &bar[warp][st]);
            bulk(d + 3072, kn + (size_t)gl * 128, 128, &bar[warp][st]);
        }
    };
    for (int i = 0; i < STAGES - 1 && i < ns; i++)
        issue(i, i);
    unsigned acc = 0;
    for (int k = 0; k < ns; k++) {
        const int st = k % STAGES;
        if (k + STAGES - 1 < ns)
            issue((k + STAGES - 1) % STAGES, k + STAGES - 1);
        mb_wait(&bar[warp][st], (k / STAGES) & 1);
        const int gn = min(GPS, n - k * GPS);
        const uint4 *sb = (const uint4 *)(ws + st * SB);
        for (int i = lane; i < gn * STAGE / 16; i += 32) {
            const uint4 v = sb[i];
            acc ^= v.x ^ v.y ^ v.z ^ v.w;
        }
        __syncwarp();
    }
    if (acc == 0x12345678u)
        sink[0] = acc;
}

__global__ void k_read(const uint4 *p, size_t n, unsigned *sink) {
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldcs(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}

/* --floor: the read floor at four sizes, device time and per call */
static int floor_table() {
    const int Hkv = 8;
    int nsm = 0;
    CK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, 0));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("read_probe --floor on %s (%d SMs)\n", prop.name, nsm);
    const size_t SM4 = QS + NW * 4 * STAGE, SMT2 = QS + NW * 3 * 2 * STAGE;
    CK(cudaFuncSetAttribute(k_probe<0, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize, 56 * 1024));
    CK(cudaFuncSetAttribute(k_probe<0, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SM4));
    CK(cudaFuncSetAttribute(k_tma<3, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, 56 * 1024));
    CK(cudaFuncSetAttribute(k_tma<4, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SM4));
    CK(cudaFuncSetAttribute(k_tma<3, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMT2));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int T : {32768, 131072, 262144, 524288}) {
        const int NG = T / 32;
        const size_t b_kq = (size_t)NG * Hkv * 1024, b_kp = (size_t)NG * Hkv * 512, b_kn = (size_t)NG * 128;
        const size_t tot = 2 * b_kq + 2 * b_kp + b_kn;
        /* sets rotated past the 50 MB L2 */
        const int NSET = std::max<int>(2, (int)(400e6 / tot) + 1);
        std::vector<char *> bufs(NSET);
        for (auto &p : bufs) {
            CK(cudaMalloc(&p, tot + 4096));
            CK(cudaMemset(p, 1, tot + 4096));
        }
        unsigned *sink;
        CK(cudaMalloc(&sink, 64));
        auto timeit = [&](const char *name, auto fn) -> int {
            std::vector<float> v, w;
            for (int r = 0; r < 40; r++) {
                char *buf = bufs[r % NSET];
                k_hold<<<1, 1>>>(1000000ull);
                CK(cudaEventRecord(a));
                fn(buf);
                CK(cudaEventRecord(b));
                CK(cudaEventSynchronize(b));
                float ms;
                CK(cudaEventElapsedTime(&ms, a, b));
                if (r >= 5)
                    v.push_back(ms * 1000.f);
                buf = bufs[(r + 1) % NSET];
                CK(cudaEventRecord(a));
                fn(buf);
                CK(cudaEventRecord(b));
                CK(cudaEventSynchronize(b));
                CK(cudaEventElapsedTime(&ms, a, b));
                if (r >= 5)
                    w.push_back(ms * 1000.f);
            }
            CK(cudaGetLastError());
            std::sort(v.begin(), v.end());
            std::sort(w.begin(), w.end());
            const float d = v[v.size() / 2];
            printf("T=%-6d %7.1f MB %-28s dev %6.1f us %5.2f TB/s | call %6.1f us\n", T, tot / 1e6, name, d,
                   tot / (d * 1e-6) / 1e12, w[w.size() / 2]);
            return 0;
        };
        for (int sp : {T == 32768 ? 33 : T / 2048 + 2, T == 32768 ? 66 : T / 1024}) {
            const int gpb = (NG + sp - 1) / sp;
            const dim3 grid(sp, Hkv);
            char nm[64];
#define P(NAME, ...)                                                                                                   \
    snprintf(nm, sizeof nm, NAME " sp%d", sp);                                                                         \
    if (timeit(nm, [&](char *buf) {                                                                                    \
            char *kq = buf, *kp = kq + b_kq, *vq = kp + b_kp, *vp = vq + b_kq, *kn = vp + b_kp;                        \
            __VA_ARGS__;                                                                                               \
        }))                                                                                                            \
        return 1;
            P("cp.async 3st", (k_probe<0, 3><<<grid, NW * 32, 56 * 1024>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink)));
            P("cp.async 4st", (k_probe<0, 4><<<grid, NW * 32, SM4>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink)));
            P("tma 3st", (k_tma<3, 1><<<grid, NW * 32, 56 * 1024>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink)));
            P("tma 4st", (k_tma<4, 1><<<grid, NW * 32, SM4>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink)));
            P("tma 3st x2grp", (k_tma<3, 2><<<grid, NW * 32, SMT2>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink)));
#undef P
        }
        if (timeit("plain read 8x256/SM",
                   [&](char *buf) { k_read<<<nsm * 8, 256>>>((const uint4 *)buf, tot / 16, sink); }))
            return 1;
        if (timeit("plain read 4x1024/SM",
                   [&](char *buf) { k_read<<<nsm * 2, 1024>>>((const uint4 *)buf, tot / 16, sink); }))
            return 1;
        for (auto p : bufs)
            CK(cudaFree(p));
        CK(cudaFree(sink));
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--floor"))
        return floor_table();
    const int Hkv = 8;
    int dev = 0, nsm = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, dev));
    printf("read_probe on %s (%d SMs)\n", prop.name, nsm);
    CK(cudaFuncSetAttribute(k_probe<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM));
    CK(cudaFuncSetAttribute(k_probe<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM));
    CK(cudaFuncSetAttribute(k_probe<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM));
    int occ = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, k_probe<0>, NW * 32, SMEM));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int T : {131072, 32768}) {
        const int NG = T / 32;
        const size_t b_kq = (size_t)NG * Hkv * 1024, b_kp = (size_t)NG * Hkv * 512, b_kn = (size_t)NG * 128;
        const size_t tot = 2 * b_kq + 2 * b_kp + b_kn, blocks = (size_t)NG * Hkv * STAGE;
        const size_t alloc = std::max(tot, blocks) + 4096;
        char *buf = nullptr, *dst = nullptr;
        unsigned *sink = nullptr;
        CK(cudaMalloc(&buf, alloc));
        CK(cudaMalloc(&dst, alloc));
        CK(cudaMalloc(&sink, 64));
        CK(cudaMemset(buf, 1, alloc));
        char *kq = buf, *kp = kq + b_kq, *vq = kp + b_kp, *vp = vq + b_kq, *kn = vp + b_kp;
        auto timeit = [&](const char *name, auto fn, size_t bytes) -> int {
            std::vector<float> v;
            for (int r = 0; r < 30; r++) {
                CK(cudaEventRecord(a));
                fn();
                CK(cudaEventRecord(b));
                CK(cudaEventSynchronize(b));
                float ms = 0.f;
                CK(cudaEventElapsedTime(&ms, a, b));
                v.push_back(ms * 1000.f);
            }
            CK(cudaGetLastError());
            std::sort(v.begin(), v.end());
            printf("T=%-6d %-34s %7.1f us  %5.2f TB/s  (min %.1f)\n", T, name, v[15], bytes / (v[15] * 1e-6) / 1e12,
                   v[0]);
            return 0;
        };
        for (int sp : {66, 132, 33}) { /* (1,128K)'s split count, twice as many, half */
            const int gpb = (NG + sp - 1) / sp;
            const dim3 grid(sp, Hkv);
            char nm[64];
            snprintf(nm, sizeof nm, "interleaved, %d splits, %d blk/SM", sp, occ);
            if (timeit(nm, [&] { k_probe<0><<<grid, NW * 32, SMEM>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink); }, tot))
                return 1;
            snprintf(nm, sizeof nm, "head-major, %d splits", sp);
            if (timeit(nm, [&] { k_probe<1><<<grid, NW * 32, SMEM>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink); }, tot))
                return 1;
            snprintf(nm, sizeof nm, "3.2 KB blocks, %d splits", sp);
            if (timeit(nm, [&] { k_probe<2><<<grid, NW * 32, SMEM>>>(kq, kp, vq, vp, kn, NG, Hkv, gpb, sink); }, blocks))
                return 1;
        }
        if (timeit("plain read, 8 x 256 per SM", [&] { k_read<<<nsm * 8, 256>>>((const uint4 *)buf, tot / 16, sink); }, tot))
            return 1;
        if (timeit("memcpy d2d (read + write)", [&] { cudaMemcpyAsync(dst, buf, tot, cudaMemcpyDeviceToDevice); }, 2 * tot))
            return 1;
        CK(cudaFree(buf));
        CK(cudaFree(dst));
        CK(cudaFree(sink));
    }
    return 0;
}
