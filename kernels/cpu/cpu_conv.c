/* kernels/cpu/cpu_conv.c: im2col for 1-D convolutions over time and the pair-average pool
 * (float32 reference; see kernels/ops.h). */
#include <string.h>

#include "cpu.h"
#include "cpu_conv.h"

osc_status osc_cpu_im2col1d(osc_tensor *out, const osc_tensor *x, int kernel, int stride, int pad) {
    const int64_t T_in = x->ne[0], C = x->ne[x->nd - 1];
    const int64_t T_out = out->ne[0], W = C * kernel;
    const float *xp = x->data;
    float *op = out->data;
#pragma omp parallel for num_threads(osc_cpu_threads()) schedule(static)
    for (int64_t t = 0; t < T_out; t++) {
        float *row = op + t * W;
        for (int k = 0; k < kernel; k++) {
            int64_t s = t * stride + k - pad;
            if (s < 0 || s >= T_in) {
                for (int64_t c = 0; c < C; c++) row[c * kernel + k] = 0.0f;
            } else {
                const float *src = xp + s * C;
                for (int64_t c = 0; c < C; c++) row[c * kernel + k] = src[c];
            }
        }
    }
    return OSC_OK;
}

osc_status osc_cpu_avgpool2_rows(osc_tensor *out, const osc_tensor *x) {
    const int64_t D = x->ne[x->nd - 1], R = out->ne[0];
    const float *xp = x->data;
    float *op = out->data;
#pragma omp parallel for num_threads(osc_cpu_threads()) schedule(static)
    for (int64_t i = 0; i < R; i++) {
        const float *a = xp + 2 * i * D, *b = a + D;
        float *o = op + i * D;
        for (int64_t d = 0; d < D; d++) o[d] = (a[d] + b[d]) / 2.0f;
    }
    return OSC_OK;
}
