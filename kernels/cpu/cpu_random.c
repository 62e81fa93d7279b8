/* kernels/cpu/cpu_random.c: deterministic uniform fill (benchmark weights, test inputs). */
#include "../fill_hash.h"
#include "cpu.h"

/* t [any] F32: t[i] = lo + (hi - lo) * u(seed, i). */
osc_status osc_cpu_fill_uniform(osc_tensor *t, uint64_t seed, float lo, float hi) {
    const int64_t n = osc_tensor_nelem(t);
    float *p = t->data;
#pragma omp parallel for num_threads(osc_cpu_threads()) if (n > 65536)
    for (int64_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * osc_hash_uniform(seed, (uint64_t)i);
    return OSC_OK;
}
