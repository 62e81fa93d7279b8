/* kernels/cpu/cpu_threads.c: thread count of the CPU backend (OpenMP loops and OpenBLAS). */
#include "cpu.h"

#include <omp.h>
#ifdef OSC_HAVE_BLAS
#include <cblas.h>
#endif

static int g_threads; /* 0: not set yet -> all cores */

void osc_cpu_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    if (n < 1) n = 1;
    g_threads = n;
    omp_set_num_threads(n);
#ifdef OSC_HAVE_BLAS
    openblas_set_num_threads(n);
#endif
}

int osc_cpu_get_threads(void) { return g_threads > 0 ? g_threads : omp_get_num_procs(); }

int osc_cpu_threads(void) { return osc_cpu_get_threads(); }
