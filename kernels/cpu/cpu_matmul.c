/* kernels/cpu/cpu_matmul.c: out[M,N] = x[M,K] * w[N,K]^T (+ bias[N]), float32.
 * OpenBLAS sgemm when OSC_HAVE_BLAS, else an OpenMP loop over (row, column block). */
#include "cpu.h"

#ifdef OSC_HAVE_BLAS
#include <cblas.h>
#endif

/* Dot product of two float vectors [n] with 8 partial sums (vectorisable without -ffast-math). */
static inline float dot8(const float *a, const float *b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* out [M,N], x [M,K], w [N,K], bias [N] or NULL; all F32. */
osc_status osc_cpu_matmul(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *bias) {
    const int64_t K = x->ne[x->nd - 1];
    const int64_t M = osc_tensor_nelem(x) / K;
    const int64_t N = w->ne[0];
    float *o = (float *)out->data;
    const float *xa = (const float *)x->data, *wa = (const float *)w->data;
    const float *ba = bias ? (const float *)bias->data : NULL;
    if (M == 0 || N == 0) return OSC_OK;
#ifdef OSC_HAVE_BLAS
    if (ba) {
        /* out = bias broadcast, then out += x w^T */
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) o[m * N + n] = ba[n];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, xa, (int)K, wa, (int)K,
                ba ? 1.0f : 0.0f, o, (int)N);
#else
    const int64_t NB = 64;              /* column block: 64 weight rows stay in cache over a row chunk */
    const int64_t nblk = (N + NB - 1) / NB;
    const int64_t MB = 16;              /* rows of x per task */
    const int64_t mblk = (M + MB - 1) / MB;
#pragma omp parallel for collapse(2) schedule(static) num_threads(osc_cpu_threads())
    for (int64_t bn = 0; bn < nblk; bn++)
        for (int64_t bm = 0; bm < mblk; bm++) {
            int64_t n1 = (bn + 1) * NB < N ? (bn + 1) * NB : N;
            int64_t m1 = (bm + 1) * MB < M ? (bm + 1) * MB : M;
            for (int64_t m = bm * MB; m < m1; m++)
                for (int64_t n = bn * NB; n < n1; n++)
                    o[m * N + n] = dot8(xa + m * K, wa + n * K, K) + (ba ? ba[n] : 0.0f);
        }
#endif
    return OSC_OK;
}
