/* kernels/cpu/cpu_norm.c: row-wise RMSNorm and LayerNorm over the last dim, float32
 * (statistics accumulated in double, then applied in float). */
#include "cpu.h"

#include <math.h>

/* x [R,D], w [D] -> out [R,D] (out may alias x):
 * out = w * (x * rsqrt(mean(x^2) + eps))  (HF Qwen2/Llama RMSNorm on float32). */
osc_status osc_cpu_rmsnorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, float eps) {
    const int64_t D = x->ne[x->nd - 1], R = osc_tensor_nelem(x) / D;
    const float *xa = (const float *)x->data, *wa = (const float *)w->data;
    float *o = (float *)out->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (R > 1)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = xa + r * D;
        float *orow = o + r * D;
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float var = (float)(ss / (double)D);
        float inv = 1.0f / sqrtf(var + eps);
        for (int64_t i = 0; i < D; i++) orow[i] = wa[i] * (xr[i] * inv);
    }
    return OSC_OK;
}

/* x [R,D], w [D], b [D] -> out [R,D] (out may alias x):
 * out = (x - mean) * rsqrt(var + eps) * w + b, biased variance (torch LayerNorm). */
osc_status osc_cpu_layernorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *b,
                             float eps) {
    const int64_t D = x->ne[x->nd - 1], R = osc_tensor_nelem(x) / D;
    const float *xa = (const float *)x->data, *wa = (const float *)w->data, *ba = (const float *)b->data;
    float *o = (float *)out->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (R > 1)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = xa + r * D;
        float *orow = o + r * D;
        double s = 0;
        for (int64_t i = 0; i < D; i++) s += xr[i];
        double mean = s / (double)D, v = 0;
        for (int64_t i = 0; i < D; i++) {
            double d = xr[i] - mean;
            v += d * d;
        }
        float meanf = (float)mean;
        float inv = (float)(1.0 / sqrt(v / (double)D + (double)eps));
        for (int64_t i = 0; i < D; i++) orow[i] = (xr[i] - meanf) * inv * wa[i] + ba[i];
    }
    return OSC_OK;
}
