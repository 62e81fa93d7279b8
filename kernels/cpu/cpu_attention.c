/* kernels/cpu/cpu_attention.c: causal / full GQA attention of one sequence, float32.
 * One (query, head) pair per task; keys are visited in chunks of ATT_CHUNK with an online
 * softmax (running max and sum), so only fixed-size stack buffers are used for any T. */
#include "cpu.h"

#include <math.h>
#include <string.h>

#define ATT_CHUNK 128   /* keys scored per step */
#define ATT_MAX_D 1024  /* largest head dim (stack accumulator) */

static inline float dotf(const float *a, const float *b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* q [S,Hq,D], k [T,Hkv,D], v [T,Hkv,D] -> out [S,Hq,D]; query head h reads kv head
 * h / (Hq/Hkv). Query i sees keys j <= q_pos0 + i when causal, all T keys otherwise.
 * out[i,h] = sum_j softmax_j(scale * q[i,h].k[j,g]) v[j,g], softmax in fp32. */
osc_status osc_cpu_attention(osc_tensor *out, const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                             int64_t q_pos0, float scale, int causal) {
    const int64_t S = q->ne[0], Hq = q->ne[1], D = q->ne[2];
    const int64_t T = k->ne[0], Hkv = k->ne[1], group = Hq / Hkv;
    if (D > ATT_MAX_D)
        return osc_error(OSC_ERR_UNSUPPORTED, "attention: head dim %lld > %d on cpu", (long long)D, ATT_MAX_D);
    const float *qa = (const float *)q->data, *ka = (const float *)k->data, *va = (const float *)v->data;
    float *o = (float *)out->data;
    const int64_t ntask = S * Hq;
#pragma omp parallel for schedule(dynamic, 4) num_threads(osc_cpu_threads()) if (ntask > 1)
    for (int64_t t = 0; t < ntask; t++) {
        const int64_t i = t / Hq, h = t % Hq, g = h / group;
        const float *qv = qa + (i * Hq + h) * D;
        float *ov = o + (i * Hq + h) * D;
        int64_t nk = causal ? q_pos0 + i + 1 : T;
        if (nk > T) nk = T;
        float acc[ATT_MAX_D];  /* [D] running sum of p * v */
        float sc[ATT_CHUNK];   /* [chunk] scores of this chunk */
        float m = -INFINITY;   /* running max */
        float l = 0.0f;        /* running sum of exp(score - m) */
        memset(acc, 0, (size_t)D * sizeof(float));
        for (int64_t j0 = 0; j0 < nk; j0 += ATT_CHUNK) {
            const int64_t n = nk - j0 < ATT_CHUNK ? nk - j0 : ATT_CHUNK;
            float cm = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                sc[j] = dotf(qv, ka + ((j0 + j) * Hkv + g) * D, D) * scale;
                cm = sc[j] > cm ? sc[j] : cm;
            }
            const float mn = cm > m ? cm : m;
            if (mn == -INFINITY) continue; /* all scores -inf so far */
            const float corr = expf(m - mn); /* 0 on the first chunk (m = -inf) */
            if (corr != 1.0f) {
                l *= corr;
                for (int64_t d = 0; d < D; d++) acc[d] *= corr;
            }
            m = mn;
            for (int64_t j = 0; j < n; j++) {
                const float p = expf(sc[j] - m);
                l += p;
                const float *vv = va + ((j0 + j) * Hkv + g) * D;
                for (int64_t d = 0; d < D; d++) acc[d] += p * vv[d];
            }
        }
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int64_t d = 0; d < D; d++) ov[d] = acc[d] * inv;
    }
    return OSC_OK;
}
