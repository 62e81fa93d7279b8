/* tests/gpu/test_kvcache_gpu.c: every KV cache mode on CUDA (kvcache/kv_gpu.c) against the CPU
 * float32 reference (kvcache/kvcache.c) through the public osc_kv API.
 *
 * The same random keys/values/queries (rounded to bf16 first, so both sides quantise the same
 * numbers; keys with token norms spread over 0.05x..20x) go through both caches in the same
 * order: a prefill chunk, decode steps across several window flushes, a second prefill chunk
 * that itself flushes, more decode steps, a truncation into the packed part, more decode.
 * Every attention output (each layer, each step) must match: rel L2 <= 3e-2 (bf16 outputs,
 * codes may differ at rounding ties) until a truncation into packed blocks; after it, against
 * a float attention over the GPU cache's own dequantised contents (see the schedule). Shapes cover
 * the fused decode kernel (head_dim 128 / 256) and the general dequantise-then-attend path
 * (head_dim 64), GQA 2..4. Exits 77 without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "core/device.h"
#include "core/tensor.h"
#include "kvcache/kvcache.h"

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { return check_frand(&g_rng); }
static float rbf(float x) { return osc_bf16_to_f32(osc_f32_to_bf16(x)); }

typedef struct shape {
    int Hq, Hkv, hd, R, n_ctx;
} shape;

typedef struct side {
    osc_kv *kv;
    osc_dev dev;
    osc_dtype dt;
    void *k, *v, *q, *o; /* [maxS][H][hd] */
} side;

static osc_status side_new(side *s, const char *mode, const shape *sh, int L, int maxS, osc_dev dev) {
    memset(s, 0, sizeof *s);
    s->dev = dev;
    s->dt = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    osc_kv_params p = {mode, L, sh->Hkv, sh->hd, sh->n_ctx, dev, s->dt, sh->R};
    OSC_TRY(osc_kv_new(&p, &s->kv));
    size_t es = osc_dtype_size(s->dt);
    OSC_TRY(osc_dev_malloc(dev, (size_t)maxS * sh->Hkv * sh->hd * es, &s->k));
    OSC_TRY(osc_dev_malloc(dev, (size_t)maxS * sh->Hkv * sh->hd * es, &s->v));
    OSC_TRY(osc_dev_malloc(dev, (size_t)maxS * sh->Hq * sh->hd * es, &s->q));
    return osc_dev_malloc(dev, (size_t)maxS * sh->Hq * sh->hd * es, &s->o);
}

static void side_free(side *s) {
    osc_kv_free(s->kv);
    if (s->k) osc_dev_free(s->dev, s->k);
    if (s->v) osc_dev_free(s->dev, s->v);
    if (s->q) osc_dev_free(s->dev, s->q);
    if (s->o) osc_dev_free(s->dev, s->o);
}

static osc_tensor t3(void *p, osc_dtype dt, osc_dev dev, int64_t a, int64_t b, int64_t c) {
    int64_t ne[3] = {a, b, c};
    return osc_tensor_make(p, dt, dev, 3, ne);
}

/* One forward of S rows on one side for every layer; outputs downloaded into out[L][S*Hq*hd]. */
static osc_status side_forward(side *s, const shape *sh, int L, int S, float *const *k, float *const *v,
                               float *const *q, float *const *out) {
    float scale = 1.0f / sqrtf((float)sh->hd);
    for (int l = 0; l < L; l++) {
        osc_tensor K = t3(s->k, s->dt, s->dev, S, sh->Hkv, sh->hd), V = t3(s->v, s->dt, s->dev, S, sh->Hkv, sh->hd);
        osc_tensor Q = t3(s->q, s->dt, s->dev, S, sh->Hq, sh->hd), O = t3(s->o, s->dt, s->dev, S, sh->Hq, sh->hd);
        OSC_TRY(osc_tensor_upload_f32(&K, k[l], (int64_t)S * sh->Hkv * sh->hd));
        OSC_TRY(osc_tensor_upload_f32(&V, v[l], (int64_t)S * sh->Hkv * sh->hd));
        OSC_TRY(osc_tensor_upload_f32(&Q, q[l], (int64_t)S * sh->Hq * sh->hd));
        OSC_TRY(osc_kv_store(s->kv, l, &K, &V));
        OSC_TRY(osc_kv_attend(s->kv, l, &Q, &O, scale));
        OSC_TRY(osc_tensor_download_f32(out[l], &O, (int64_t)S * sh->Hq * sh->hd));
    }
    osc_kv_advance(s->kv, S);
    return OSC_OK;
}

/* float attention of one query row over T cached rows (GQA): q [Hq][hd], k/v [T][Hkv][hd] */
static void host_attn(const float *q, const float *k, const float *v, int T, int Hq, int Hkv, int hd, float *out) {
    float *p = malloc(sizeof(float) * T);
    for (int h = 0; h < Hq; h++) {
        int kh = h / (Hq / Hkv);
        double mx = -1e300, sum = 0;
        for (int t = 0; t < T; t++) {
            double d = 0;
            for (int c = 0; c < hd; c++) d += (double)q[h * hd + c] * k[((size_t)t * Hkv + kh) * hd + c];
            p[t] = (float)(d / sqrt((double)hd));
            if (p[t] > mx) mx = p[t];
        }
        for (int t = 0; t < T; t++) sum += (p[t] = (float)exp(p[t] - mx));
        for (int c = 0; c < hd; c++) {
            double a = 0;
            for (int t = 0; t < T; t++) a += (double)p[t] * v[((size_t)t * Hkv + kh) * hd + c];
            out[h * hd + c] = (float)(a / sum);
        }
    }
    free(p);
}

static void fill(float *x, int rows, int width, int hd, int spread) {
    for (int r = 0; r < rows; r++) {
        float tn = 1.0f;
        if (spread) {
            float u = frand();
            tn = u > 0.8f ? 20.0f : u < -0.8f ? 0.05f : 1.0f + 0.5f * u;
        }
        for (int i = 0; i < width; i++) {
            float ch = (i % hd) % 17 == 3 ? 6.0f : 1.0f; /* a few outlier channels, as real keys have */
            x[(size_t)r * width + i] = rbf(frand() * tn * (spread ? ch : 1.0f));
        }
    }
}

static void run_case(const char *mode, const shape *sh) {
    const int L = 2, maxS = 96;
    side c, g;
    osc_status sc = side_new(&c, mode, sh, L, maxS, OSC_DEV_CPU);
    osc_status sg = sc == OSC_OK ? side_new(&g, mode, sh, L, maxS, OSC_DEV_CUDA) : sc;
    CHECK(sc == OSC_OK && sg == OSC_OK, "%s: create caches: %s", mode, osc_last_error());
    if (sc != OSC_OK || sg != OSC_OK) return;
    float *k[2], *v[2], *q[2], *oc[2], *og[2];
    for (int l = 0; l < L; l++) {
        k[l] = malloc(sizeof(float) * maxS * sh->Hkv * sh->hd);
        v[l] = malloc(sizeof(float) * maxS * sh->Hkv * sh->hd);
        q[l] = malloc(sizeof(float) * maxS * sh->Hq * sh->hd);
        oc[l] = malloc(sizeof(float) * maxS * sh->Hq * sh->hd);
        og[l] = malloc(sizeof(float) * maxS * sh->Hq * sh->hd);
    }
    /* schedule: positive = a forward of that many rows; negative = truncate by that many.
     * Truncating into packed blocks dequantises the kept part of a block back into the window
     * and quantises it again later; the CPU (float32, rotated domain) and the GPU (bf16, raw
     * domain) round that differently, so a value may land one code apart and the caches stop
     * being comparable code for code. From then on each GPU decode step is checked against a
     * float attention over the GPU cache's own dequantised contents instead (and the
     * truncation itself must keep the kept tokens' values). */
    const int sched[] = {70, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                         1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                         90, 1, 1, 1, 1, 1, -2, 1, 1, 1, 1, 1, -61, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 33, 1, 1, 1};
    double worst = 0, worst_after = 0;
    int steps = 0, fails = 0, requant = 0, stable = -1;
    const int blockwise = strcmp(mode, "bf16") && strcmp(mode, "int8");
    size_t row = (size_t)sh->Hkv * sh->hd;
    for (size_t i = 0; i < sizeof sched / sizeof sched[0]; i++) {
        int S = sched[i];
        if (S < 0) {
            int len = osc_kv_len(c.kv), n = len + S;
            int packed = blockwise && len > 0 ? (len - 1) / sh->R * sh->R : 0; /* lazy flush */
            if (n < packed) {
                float *b0 = malloc(sizeof(float) * n * row * 2), *b1 = malloc(sizeof(float) * n * row * 2);
                osc_status d0 = osc_kv_debug_dequant(g.kv, 0, 0, n, b0, b0 + n * row);
                osc_kv_truncate(g.kv, n);
                osc_status d1 = osc_kv_debug_dequant(g.kv, 0, 0, n, b1, b1 + n * row);
                double e = rel_l2(b1, b0, 2 * (size_t)n * row);
                CHECK(d0 == OSC_OK && d1 == OSC_OK && e <= 1e-2, "%s: truncation changed kept tokens: rel %.3g (%s)", mode, e,
                      osc_last_error());
                free(b0), free(b1);
                requant = 1;
                if (stable < 0 || n / sh->R * sh->R < stable) stable = n / sh->R * sh->R; /* never re-quantised */
            } else {
                osc_kv_truncate(g.kv, n);
            }
            osc_kv_truncate(c.kv, n);
            continue;
        }
        if (osc_kv_len(c.kv) + S > sh->n_ctx) break;
        for (int l = 0; l < L; l++) {
            fill(k[l], S, sh->Hkv * sh->hd, sh->hd, 1);
            fill(v[l], S, sh->Hkv * sh->hd, sh->hd, 0);
            fill(q[l], S, sh->Hq * sh->hd, sh->hd, 0);
        }
        if (requant) {
            sg = side_forward(&g, sh, L, S, k, v, q, og);
            CHECK(sg == OSC_OK, "%s: forward after truncation: %s", mode, osc_last_error());
            if (sg != OSC_OK) break;
            sc = side_forward(&c, sh, L, S, k, v, q, oc); /* keep the CPU cache in step */
            if (S != 1) continue;
            int T = osc_kv_len(g.kv);
            float *kd = malloc(sizeof(float) * T * row), *vd = malloc(sizeof(float) * T * row);
            float *ref = malloc(sizeof(float) * sh->Hq * sh->hd);
            for (int l = 0; l < L; l++) {
                CHECK(osc_kv_debug_dequant(g.kv, l, 0, T, kd, vd) == OSC_OK, "%s", osc_last_error());
                host_attn(q[l], kd, vd, T, sh->Hq, sh->Hkv, sh->hd, ref);
                double e = rel_l2(og[l], ref, (size_t)sh->Hq * sh->hd);
                if (e > worst_after) worst_after = e;
                if (!(e <= 2e-2) && fails++ < 3)
                    CHECK(0, "%s Hq %d hd %d: after truncation, layer %d at %d: rel L2 %.3g vs its own cache", mode, sh->Hq,
                          sh->hd, l, T - 1, e);
            }
            free(kd), free(vd), free(ref);
            steps++;
            continue;
        }
        sc = side_forward(&c, sh, L, S, k, v, q, oc);
        sg = sc == OSC_OK ? side_forward(&g, sh, L, S, k, v, q, og) : sc;
        if (sc != OSC_OK || sg != OSC_OK) {
            CHECK(0, "%s: forward of %d rows at %d: %s", mode, S, osc_kv_len(c.kv), osc_last_error());
            break;
        }
        for (int l = 0; l < L; l++) {
            double e = rel_l2(og[l], oc[l], (size_t)S * sh->Hq * sh->hd);
            if (e > worst) worst = e;
            if (!(e <= 3e-2) && fails++ < 3)
                CHECK(0, "%s Hq %d Hkv %d hd %d R %d: layer %d, %d rows at %d: rel L2 %.3g", mode, sh->Hq, sh->Hkv, sh->hd,
                      sh->R, l, S, osc_kv_len(c.kv) - S, e);
        }
        steps++;
    }
    CHECK(fails == 0, "%s: %d attention mismatches", mode, fails);
    /* cache contents: dequantised keys (original domain) and values of layer 1, the tokens
     * that were never re-quantised */
    int n = stable >= 0 ? stable : osc_kv_len(c.kv);
    float *kc = malloc(sizeof(float) * n * row), *vc = malloc(sizeof(float) * n * row);
    float *kg = malloc(sizeof(float) * n * row), *vg = malloc(sizeof(float) * n * row);
    osc_status d1 = osc_kv_debug_dequant(c.kv, 1, 0, n, kc, vc), d2 = osc_kv_debug_dequant(g.kv, 1, 0, n, kg, vg);
    CHECK(d1 == OSC_OK && d2 == OSC_OK, "%s: debug dequant: %s", mode, osc_last_error());
    /* per token: a rounding tie flips one 2-bit code, and a key of a 20x-norm token carries
     * that step times its norm, so count tokens off by more than 2e-2 instead of one global
     * error (ties: at most 2% of tokens) */
    double ek = rel_l2(kg, kc, (size_t)n * row), ev = rel_l2(vg, vc, (size_t)n * row);
    int off = 0;
    for (int t = 0; t < n; t++)
        if (rel_l2(kg + t * row, kc + t * row, row) > 2e-2 || rel_l2(vg + t * row, vc + t * row, row) > 2e-2) off++;
    CHECK(off <= n / 50, "%s: %d of %d cached tokens differ by more than 2e-2 (K %.3g V %.3g)", mode, off, n, ek, ev);
    printf("  %-6s Hq %2d Hkv %d hd %3d R %3d: %3d forwards, %d tokens, worst attention rel L2 vs cpu %.2e (after truncation "
           "vs own cache %.2e), cache K %.2e V %.2e (%d tokens off)\n", mode, sh->Hq, sh->Hkv, sh->hd, sh->R, steps, n, worst, worst_after, ek, ev, off);
    free(kc), free(vc), free(kg), free(vg);
    for (int l = 0; l < L; l++) free(k[l]), free(v[l]), free(q[l]), free(oc[l]), free(og[l]);
    side_free(&c);
    side_free(&g);
}

int main(void) {
    if (!osc_device_cuda_available()) {
        printf("no GPU: skipped\n");
        return OSC_TEST_SKIP;
    }
    const shape shapes[] = {
        {8, 2, 128, 32, 400},  /* fused decode kernel, flushes every 32 */
        {16, 4, 128, 64, 400}, /* fused, 4 q heads per kv head */
        {4, 2, 256, 32, 300},  /* fused, hd 256 */
        {4, 2, 64, 32, 300},   /* general path (dequantise + attention) */
    };
    const char *modes[] = {"bf16", "int8", "kivi2", "kivi4", "rot2", "oscar2", "oscar4"};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) run_case(modes[m], &shapes[s]);
    return check_done("test_kvcache_gpu");
}
