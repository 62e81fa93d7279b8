/* kernels/cpu/cpu_elementwise.c: embed, silu_mul, gelu, add, add_bias, softmax, convert,
 * argmax on float32 (convert also handles BF16/F16). */
#include "cpu.h"

#include <math.h>
#include <string.h>

#define PAR_MIN 16384 /* elements below which loops stay single-threaded */

/* table F32 [V,D], ids I32 [S] -> out F32 [S,D]. An id outside [0,V) is OSC_ERR_INVALID_ARG
 * (checked for all ids before anything is written). */
osc_status osc_cpu_embed(osc_tensor *out, const osc_tensor *table, const osc_tensor *ids) {
    const int64_t V = table->ne[0], D = table->ne[1], S = osc_tensor_nelem(ids);
    const int32_t *id = (const int32_t *)ids->data;
    for (int64_t s = 0; s < S; s++)
        if (id[s] < 0 || id[s] >= V)
            return osc_error(OSC_ERR_INVALID_ARG, "embed: id %d at %lld is outside [0,%lld)", id[s], (long long)s,
                             (long long)V);
    const float *t = (const float *)table->data;
    float *o = (float *)out->data;
    for (int64_t s = 0; s < S; s++) memcpy(o + s * D, t + (int64_t)id[s] * D, (size_t)D * sizeof(float));
    return OSC_OK;
}

/* gate, up, out F32 [R,F] (out may alias gate or up): out = gate * sigmoid(gate) * up. */
osc_status osc_cpu_silu_mul(osc_tensor *out, const osc_tensor *gate, const osc_tensor *up) {
    const int64_t n = osc_tensor_nelem(out);
    const float *g = (const float *)gate->data, *u = (const float *)up->data;
    float *o = (float *)out->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float a = g[i];
        o[i] = a / (1.0f + expf(-a)) * u[i];
    }
    return OSC_OK;
}

/* x, out F32 (any shape, out may alias x): out = 0.5 x (1 + erf(x / sqrt 2)). */
osc_status osc_cpu_gelu(osc_tensor *out, const osc_tensor *x) {
    const int64_t n = osc_tensor_nelem(out);
    const float *a = (const float *)x->data;
    float *o = (float *)out->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) o[i] = 0.5f * a[i] * (1.0f + erff(a[i] * 0.70710678118654752f));
    return OSC_OK;
}

/* a, b, out F32, same shape (out may alias a or b): out = a + b. */
osc_status osc_cpu_add(osc_tensor *out, const osc_tensor *a, const osc_tensor *b) {
    const int64_t n = osc_tensor_nelem(out);
    const float *pa = (const float *)a->data, *pb = (const float *)b->data;
    float *o = (float *)out->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) o[i] = pa[i] + pb[i];
    return OSC_OK;
}

/* x F32 [R,N] += bias F32 [N]. */
osc_status osc_cpu_add_bias(osc_tensor *x, const osc_tensor *bias) {
    const int64_t N = x->ne[x->nd - 1], R = N ? osc_tensor_nelem(x) / N : 0;
    const float *b = (const float *)bias->data;
    float *xa = (float *)x->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (R * N > PAR_MIN)
    for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < N; i++) xa[r * N + i] += b[i];
    return OSC_OK;
}

/* x F32 [R,N], in place: x = exp(x - max) / sum(exp(x - max)) per row (sum in double).
 * A row of all -inf becomes all zeros rather than NaN. */
osc_status osc_cpu_softmax(osc_tensor *x) {
    const int64_t N = x->ne[x->nd - 1], R = N ? osc_tensor_nelem(x) / N : 0;
    float *xa = (float *)x->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (R * N > PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        float *row = xa + r * N;
        float m = -INFINITY;
        for (int64_t i = 0; i < N; i++) m = row[i] > m ? row[i] : m;
        if (m == -INFINITY) {
            for (int64_t i = 0; i < N; i++) row[i] = 0.0f;
            continue;
        }
        double sum = 0;
        for (int64_t i = 0; i < N; i++) {
            row[i] = expf(row[i] - m);
            sum += row[i];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < N; i++) row[i] *= inv;
    }
    return OSC_OK;
}

/* in -> out, same element count: F32/BF16/F16 -> F32, F32/BF16 -> BF16, or a plain copy when
 * the dtypes are equal (bf16 rounding is to nearest even). */
osc_status osc_cpu_convert(osc_tensor *out, const osc_tensor *in) {
    const int64_t n = osc_tensor_nelem(out);
    if (out->dt == in->dt) {
        if (out->data != in->data) memmove(out->data, in->data, osc_tensor_nbytes(out));
        return OSC_OK;
    }
    if (out->dt == OSC_F32) return osc_convert_to_f32((float *)out->data, in->data, in->dt, n);
    if (out->dt == OSC_BF16 && in->dt == OSC_F32) {
        const float *s = (const float *)in->data;
        uint16_t *d = (uint16_t *)out->data;
#pragma omp parallel for schedule(static) num_threads(osc_cpu_threads()) if (n > PAR_MIN)
        for (int64_t i = 0; i < n; i++) d[i] = osc_f32_to_bf16(s[i]);
        return OSC_OK;
    }
    return osc_error(OSC_ERR_UNSUPPORTED, "convert: %s -> %s on cpu", osc_dtype_name(in->dt),
                     osc_dtype_name(out->dt));
}

/* x F32 [R,N] -> out I32 [R]: index of the largest value, first one on ties (NaN ignored;
 * a row of only NaN gives 0). */
osc_status osc_cpu_argmax(osc_tensor *out, const osc_tensor *x) {
    const int64_t N = x->ne[x->nd - 1], R = osc_tensor_nelem(x) / N;
    const float *xa = (const float *)x->data;
    int32_t *o = (int32_t *)out->data;
    for (int64_t r = 0; r < R; r++) {
        const float *row = xa + r * N;
        int64_t best = 0;
        float bv = -INFINITY;
        int found = 0;
        for (int64_t i = 0; i < N; i++)
            if (!isnan(row[i]) && (!found || row[i] > bv)) {
                bv = row[i];
                best = i;
                found = 1;
            }
        o[r] = (int32_t)best;
    }
    return OSC_OK;
}
