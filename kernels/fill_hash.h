/* The counter-based hash behind osc_op_fill_uniform, shared by the CPU and CUDA backends so
 * both produce the same numbers: splitmix64 of (seed, index) -> 24-bit uniform in [0, 1). */
#ifndef OSC_KERNELS_FILL_HASH_H
#define OSC_KERNELS_FILL_HASH_H
#include <stdint.h>

#ifdef __CUDACC__
#define OSC_HD __host__ __device__
#else
#define OSC_HD
#endif

static inline OSC_HD float osc_hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

#endif
