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
#include <algorithm>
#include <cstdint>
#include <cstdio>
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

const int NW = 4, STAGES = 3, STAGE = 3200, WARP_BYTES = STAGES * STAGE, QS = 4096;
const size_t SMEM = 56 * 1024; /* 4 blocks an SM, as k_kvq_mma */

/* MODE 0: five arrays, heads interleaved per group (the cache as stored); 1: five arrays,
 * head-major; 2: one 3.2 KB block per (head, group) */
template <int MODE>
__global__ void __launch_bounds__(NW * 32, 4) k_probe(const char *kq, const char *kp, const char *vq, const char *vp,
                                                       const char *kn, int NG, int Hkv, int gpb, unsigned *sink) {
    extern __shared__ __align__(16) unsigned char sm[];
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

__global__ void k_read(const uint4 *p, size_t n, unsigned *sink) {
    unsigned acc = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 v = __ldcs(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}

int main() {
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
