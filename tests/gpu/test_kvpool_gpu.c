/* tests/gpu/test_kvpool_gpu.c: the paged KV pool on CUDA (kvcache.h osc_kv_pool, kv_gpu.c, the
 * block-table reads of kernels/cuda/cuda_kvquant.cu).
 *
 * Several sequences of different lengths run interleaved in ONE CUDA pool; each also runs in a
 * CUDA cache of its own (contiguous layout, osc_kv_new) and in the CPU float32 reference. The
 * same random keys (token norms 0.05x..20x, rounded to bf16 so every side quantises the same
 * numbers), values and queries go to all three. Checked after every forward:
 *   pooled GPU vs own GPU cache: bit-identical (same kernels on the same numbers, only the
 *     addressing differs; a rel L2 above 1e-2 is reported separately as a gross error);
 *   pooled GPU vs CPU: rel L2 <= 3e-2 (bf16 outputs, codes may differ at rounding ties, as in
 *     test_kvcache_gpu.c) -- until a truncation cuts into the packed part of that sequence
 *     (re-quantisation rounds differently on the two devices, see test_kvcache_gpu.c); from
 *     then on until the sequence is re-created only the GPU-vs-GPU check applies.
 * Schedules: prefill chunks, decode steps across flushes (page takes), truncations (pages
 * given back), sequences ending and new ones starting on the freed (stale) pages; page
 * accounting after every step. Exhaustion: a store that needs more pages than are free fails
 * with OSC_ERR_OOM "KV pool full", leaves the cache as it was, and succeeds after another
 * sequence is freed. Shapes: head_dim 128 and 256 (fused split-K decode kernel through the
 * block table; long enough sequences for several splits), head_dim 64 (dequantise-then-attend
 * path through the table). Exits 77 without a GPU. Prints one line per case. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/tensor.h"
#include "kernels/cuda/kvquant_launch.h"
#include "kvcache/kvcache.h"
#include "tests/check.h"

enum { L = 2, MAXS = 128, NSEQ = 3 };

static uint64_t g_rng = 0x853C49E6748FEA9Bull;
static float frand(void) { return check_frand(&g_rng); }
static uint32_t irand(uint32_t n) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (uint32_t)((g_rng >> 33) % n);
}
static float rbf(float x) { return osc_bf16_to_f32(osc_f32_to_bf16(x)); }

typedef struct shape {
    int Hq, Hkv, hd, R, n_ctx;
} shape;

/* one cache with its own device buffers for k/v/q/out */
typedef struct side {
    osc_kv *kv;
    osc_dev dev;
    osc_dtype dt;
    void *k, *v, *q, *o;
} side;

static float *g_k[L], *g_v[L], *g_q[L]; /* host inputs [MAXS][H][hd] */
static float *g_out[3][L];              /* host outputs per side kind: 0 pooled, 1 own GPU, 2 CPU */

static osc_status side_bufs(side *s, const shape *sh) {
    size_t es = osc_dtype_size(s->dt);
    OSC_TRY(osc_dev_malloc(s->dev, (size_t)MAXS * sh->Hkv * sh->hd * es, &s->k));
    OSC_TRY(osc_dev_malloc(s->dev, (size_t)MAXS * sh->Hkv * sh->hd * es, &s->v));
    OSC_TRY(osc_dev_malloc(s->dev, (size_t)MAXS * sh->Hq * sh->hd * es, &s->q));
    return osc_dev_malloc(s->dev, (size_t)MAXS * sh->Hq * sh->hd * es, &s->o);
}

static void side_free(side *s) {
    osc_kv_free(s->kv);
    if (s->k) osc_dev_free(s->dev, s->k);
    if (s->v) osc_dev_free(s->dev, s->v);
    if (s->q) osc_dev_free(s->dev, s->q);
    if (s->o) osc_dev_free(s->dev, s->o);
    memset(s, 0, sizeof *s);
}

static osc_tensor t3(void *p, osc_dtype dt, osc_dev dev, int64_t a, int64_t b, int64_t c) {
    int64_t ne[3] = {a, b, c};
    return osc_tensor_make(p, dt, dev, 3, ne);
}

/* kind 0: pooled (pool != NULL), 1: own CUDA cache, 2: own CPU cache */
static osc_status side_new(side *s, int kind, const char *mode, const shape *sh, osc_kv_pool *pool) {
    memset(s, 0, sizeof *s);
    s->dev = kind == 2 ? OSC_DEV_CPU : OSC_DEV_CUDA;
    s->dt = kind == 2 ? OSC_F32 : OSC_BF16;
    osc_kv_params p = {mode, L, sh->Hkv, sh->hd, sh->n_ctx, s->dev, s->dt, sh->R};
    OSC_TRY(kind == 0 ? osc_kv_new_in_pool(pool, sh->n_ctx, &s->kv) : osc_kv_new(&p, &s->kv));
    return side_bufs(s, sh);
}

static osc_status side_forward(side *s, const shape *sh, int S, float *const *out) {
    float scale = 1.0f / sqrtf((float)sh->hd);
    for (int l = 0; l < L; l++) {
        osc_tensor K = t3(s->k, s->dt, s->dev, S, sh->Hkv, sh->hd), V = t3(s->v, s->dt, s->dev, S, sh->Hkv, sh->hd);
        osc_tensor Q = t3(s->q, s->dt, s->dev, S, sh->Hq, sh->hd), O = t3(s->o, s->dt, s->dev, S, sh->Hq, sh->hd);
        OSC_TRY(osc_tensor_upload_f32(&K, g_k[l], (int64_t)S * sh->Hkv * sh->hd));
        OSC_TRY(osc_tensor_upload_f32(&V, g_v[l], (int64_t)S * sh->Hkv * sh->hd));
        OSC_TRY(osc_tensor_upload_f32(&Q, g_q[l], (int64_t)S * sh->Hq * sh->hd));
        OSC_TRY(osc_kv_store(s->kv, l, &K, &V));
        OSC_TRY(osc_kv_attend(s->kv, l, &Q, &O, scale));
        OSC_TRY(osc_tensor_download_f32(out[l], &O, (int64_t)S * sh->Hq * sh->hd));
    }
    osc_kv_advance(s->kv, S);
    return OSC_OK;
}

static void fill(const shape *sh, int S) {
    for (int l = 0; l < L; l++) {
        for (int r = 0; r < S; r++) {
            float u = frand(), tn = u > 0.8f ? 20.0f : u < -0.8f ? 0.05f : 1.0f + 0.5f * u;
            for (int i = 0; i < sh->Hkv * sh->hd; i++)
                g_k[l][(size_t)r * sh->Hkv * sh->hd + i] = rbf(frand() * tn * ((i % sh->hd) % 17 == 3 ? 6.0f : 1.0f));
        }
        for (int i = 0; i < S * sh->Hkv * sh->hd; i++) g_v[l][i] = rbf(frand());
        for (int i = 0; i < S * sh->Hq * sh->hd; i++) g_q[l][i] = rbf(frand());
    }
}

typedef struct seq {
    side s[3];
    int diverged; /* truncated into its packed part: no CPU comparison until re-created */
} seq;

static int seq_new(seq *q, const char *mode, const shape *sh, osc_kv_pool *pool) {
    q->diverged = 0;
    for (int k = 0; k < 3; k++)
        if (side_new(&q->s[k], k, mode, sh, pool) != OSC_OK) return 0;
    return 1;
}
static void seq_free(seq *q) {
    for (int k = 0; k < 3; k++) side_free(&q->s[k]);
}

static void run_case(const char *mode, const shape *sh) {
    const int per_seq = (sh->n_ctx + sh->R - 1) / sh->R;
    osc_kv_params pp = {mode, L, sh->Hkv, sh->hd, 0, OSC_DEV_CUDA, OSC_BF16, sh->R};
    osc_kv_pool *pool = NULL;
    osc_status st = osc_kv_pool_new(&pp, NSEQ * per_seq, &pool);
    CHECK(st == OSC_OK, "%s hd %d: CUDA pool: %s", mode, sh->hd, osc_last_error());
    if (st != OSC_OK) return;
    for (int l = 0; l < L; l++) {
        g_k[l] = malloc(sizeof(float) * MAXS * sh->Hkv * sh->hd);
        g_v[l] = malloc(sizeof(float) * MAXS * sh->Hkv * sh->hd);
        g_q[l] = malloc(sizeof(float) * MAXS * sh->Hq * sh->hd);
        for (int k = 0; k < 3; k++) g_out[k][l] = malloc(sizeof(float) * MAXS * sh->Hq * sh->hd);
    }
    seq sq[NSEQ];
    memset(sq, 0, sizeof sq);
    int ok = 1;
    for (int i = 0; i < NSEQ && ok; i++) ok = seq_new(&sq[i], mode, sh, pool);
    CHECK(ok, "%s hd %d: caches: %s", mode, sh->hd, osc_last_error());
    double worst_cpu = 0, worst_gg = 0;
    int forwards = 0, nonident = 0, fails = 0, acct = 0, truncs = 0, recreated = 0, taken = 0, cmp_cpu = 0;
    const size_t orow = (size_t)sh->Hq * sh->hd;
    for (int round = 0; ok && round < 70; round++) {
        for (int i = 0; i < NSEQ && ok; i++) {
            seq *q = &sq[i];
            int len = osc_kv_len(q->s[1].kv), r = (int)irand(20), S;
            if (len > 0 && r == 0) {
                int n = (int)irand((uint32_t)len + 1);
                int packed = osc_kv_pages(q->s[0].kv) * sh->R; /* every layer packed that much */
                if (n < packed) q->diverged = 1;
                for (int k = 0; k < 3; k++) osc_kv_truncate(q->s[k].kv, n);
                truncs++;
                /* a truncation keeps the pages of the packed tokens it keeps */
                if (osc_kv_pages(q->s[0].kv) != (n < packed ? n / sh->R : packed / sh->R) && acct++ < 3)
                    CHECK(0, "%s: seq %d truncated to %d still holds %d pages", mode, i, n, osc_kv_pages(q->s[0].kv));
                continue;
            }
            if (len > 0 && r == 1) {
                seq_free(q);
                ok = seq_new(q, mode, sh, pool);
                CHECK(ok, "%s: re-create: %s", mode, osc_last_error());
                recreated++;
                continue;
            }
            /* first chunks long enough to give the split-K kernel several splits of packed groups */
            S = len == 0 ? 1 + (int)irand(MAXS) : r <= 3 ? 1 + (int)irand(48) : 1;
            if (len + S > sh->n_ctx) {
                for (int k = 0; k < 3; k++) osc_kv_truncate(q->s[k].kv, 0);
                q->diverged = 0; /* empty again: nothing re-quantised is left */
                continue;
            }
            fill(sh, S);
            int before = osc_kv_pages(q->s[0].kv);
            osc_status s0 = side_forward(&q->s[0], sh, S, g_out[0]);
            osc_status s1 = s0 == OSC_OK ? side_forward(&q->s[1], sh, S, g_out[1]) : s0;
            osc_status s2 = s1 == OSC_OK ? side_forward(&q->s[2], sh, S, g_out[2]) : s1;
            if (s2 != OSC_OK) {
                CHECK(0, "%s hd %d: seq %d forward of %d at %d: %s", mode, sh->hd, i, S, len, osc_last_error());
                ok = 0;
                break;
            }
            forwards++;
            taken += osc_kv_pages(q->s[0].kv) - before;
            if (osc_kv_pages(q->s[0].kv) != (len + S - 1) / sh->R && acct++ < 3)
                CHECK(0, "%s: seq %d at %d tokens holds %d pages, want %d", mode, i, len + S, osc_kv_pages(q->s[0].kv),
                      (len + S - 1) / sh->R);
            for (int l = 0; l < L; l++) {
                size_t n = (size_t)S * orow;
                if (memcmp(g_out[0][l], g_out[1][l], n * sizeof(float))) nonident++;
                double eg = rel_l2(g_out[0][l], g_out[1][l], (long)n);
                if (eg > worst_gg) worst_gg = eg;
                if (!(eg <= 1e-2) && fails++ < 3)
                    CHECK(0, "%s Hq %d hd %d: seq %d layer %d, %d rows at %d: pooled vs own GPU cache rel L2 %.3g", mode,
                          sh->Hq, sh->hd, i, l, S, len, eg);
                if (q->diverged) continue;
                double ec = rel_l2(g_out[0][l], g_out[2][l], (long)n);
                cmp_cpu++;
                if (ec > worst_cpu) worst_cpu = ec;
                if (!(ec <= 3e-2) && fails++ < 3)
                    CHECK(0, "%s Hq %d hd %d: seq %d layer %d, %d rows at %d: pooled GPU vs CPU rel L2 %.3g", mode, sh->Hq,
                          sh->hd, i, l, S, len, ec);
            }
        }
        int held = 0;
        for (int i = 0; i < NSEQ; i++)
            if (sq[i].s[0].kv) held += osc_kv_pages(sq[i].s[0].kv);
        if (held + osc_kv_pool_pages_free(pool) != osc_kv_pool_pages(pool) && acct++ < 3)
            CHECK(0, "%s: round %d: %d held + %d free != %d", mode, round, held, osc_kv_pool_pages_free(pool),
                  osc_kv_pool_pages(pool));
    }
    CHECK(fails == 0 && acct == 0, "%s hd %d: %d attention mismatches, %d accounting errors", mode, sh->hd, fails, acct);
    CHECK(nonident == 0, "%s hd %d: %d layer outputs of the pooled GPU cache not bit-identical to its own GPU cache (worst "
          "rel L2 %.3g); expected identical: same kernels, only the addressing differs", mode, sh->hd, nonident, worst_gg);
    /* pages were given back (truncations, re-created sequences) and taken again: over the run
     * more pages were taken than are held now */
    int held_end = 0;
    for (int i = 0; i < NSEQ; i++)
        if (sq[i].s[0].kv) held_end += osc_kv_pages(sq[i].s[0].kv);
    CHECK(taken > held_end && recreated + truncs > 0, "%s: %d pages taken, %d held at the end: freed pages never reused",
          mode, taken, held_end);
    /* contents of the pooled cache: dequantised like its own GPU cache's (identical) */
    int cont = 0;
    for (int i = 0; i < NSEQ && ok; i++) {
        int n = osc_kv_len(sq[i].s[0].kv);
        size_t row = (size_t)sh->Hkv * sh->hd;
        if (!n) continue;
        float *a = malloc(sizeof(float) * n * row * 4), *b = a + n * row;
        for (int l = 0; l < L; l++) {
            osc_status d0 = osc_kv_debug_dequant(sq[i].s[0].kv, l, 0, n, a, a + 2 * n * row);
            osc_status d1 = osc_kv_debug_dequant(sq[i].s[1].kv, l, 0, n, b, b + 2 * n * row);
            /* a: K0 [0,n) V0 [2n,3n); b: K1 [n,2n) V1 [3n,4n) */
            if (d0 != OSC_OK || d1 != OSC_OK || memcmp(a, b, sizeof(float) * n * row) ||
                memcmp(a + 2 * n * row, b + 2 * n * row, sizeof(float) * n * row))
                cont++;
            for (int t = 0; t < n; t += 7) {
                float x = osc_kv_debug_norm(sq[i].s[0].kv, l, t), y = osc_kv_debug_norm(sq[i].s[1].kv, l, t);
                if (!(x == y || (isnan(x) && isnan(y)))) cont++;
            }
        }
        free(a);
    }
    CHECK(cont == 0, "%s hd %d: %d differences between the pooled and own GPU caches' contents", mode, sh->hd, cont);
    printf("  %-6s Hq %2d Hkv %d hd %3d R %3d: %3d forwards (%d truncations, %d new sequences, %d pages taken of %d): "
           "pooled vs own GPU %s (worst rel %.1e), vs CPU worst rel L2 %.2e over %d outputs\n", mode, sh->Hq, sh->Hkv, sh->hd,
           sh->R, forwards, truncs, recreated, taken, osc_kv_pool_pages(pool), nonident ? "NOT identical" : "identical",
           worst_gg, worst_cpu, cmp_cpu);
    for (int i = 0; i < NSEQ; i++) seq_free(&sq[i]);
    CHECK(osc_kv_pool_pages_free(pool) == osc_kv_pool_pages(pool), "%s: pages lost", mode);
    osc_kv_pool_free(pool);
    for (int l = 0; l < L; l++) {
        free(g_k[l]), free(g_v[l]), free(g_q[l]);
        for (int k = 0; k < 3; k++) free(g_out[k][l]);
    }
}

/* 4 pages: A takes 3; B's chunk needing 2 fails with OSC_ERR_OOM and changes nothing; after A is
 * freed it succeeds and matches B's own GPU cache fed the same. */
static void run_oom(const char *mode) {
    const shape sh = {8, 2, 128, 32, 400};
    osc_kv_params pp = {mode, L, sh.Hkv, sh.hd, 0, OSC_DEV_CUDA, OSC_BF16, sh.R};
    osc_kv_pool *pool = NULL;
    if (osc_kv_pool_new(&pp, 4, &pool) != OSC_OK) {
        CHECK(0, "%s: pool: %s", mode, osc_last_error());
        return;
    }
    for (int l = 0; l < L; l++) {
        g_k[l] = malloc(sizeof(float) * MAXS * sh.Hkv * sh.hd);
        g_v[l] = malloc(sizeof(float) * MAXS * sh.Hkv * sh.hd);
        g_q[l] = malloc(sizeof(float) * MAXS * sh.Hq * sh.hd);
        for (int k = 0; k < 3; k++) g_out[k][l] = malloc(sizeof(float) * MAXS * sh.Hq * sh.hd);
    }
    side a, b, bref;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b), memset(&bref, 0, sizeof bref);
    int ok = side_new(&a, 0, mode, &sh, pool) == OSC_OK && side_new(&b, 0, mode, &sh, pool) == OSC_OK &&
             side_new(&bref, 1, mode, &sh, NULL) == OSC_OK;
    CHECK(ok, "%s: caches: %s", mode, osc_last_error());
    if (ok) {
        fill(&sh, 3 * sh.R + 3);
        CHECK(side_forward(&a, &sh, 3 * sh.R + 3, g_out[0]) == OSC_OK && osc_kv_pages(a.kv) == 3, "%s: A", mode);
        fill(&sh, 2 * sh.R + 7); /* B: 71 tokens -> 2 pages, 1 free */
        osc_status s = side_forward(&b, &sh, 2 * sh.R + 7, g_out[0]);
        CHECK(s == OSC_ERR_OOM && strstr(osc_last_error(), "KV pool full"), "%s: want OOM 'KV pool full', got %d '%s'", mode,
              (int)s, osc_last_error());
        CHECK(osc_kv_len(b.kv) == 0 && osc_kv_pages(b.kv) == 0 && osc_kv_pool_pages_free(pool) == 1,
              "%s: failed store changed things: len %d pages %d free %d", mode, osc_kv_len(b.kv), osc_kv_pages(b.kv),
              osc_kv_pool_pages_free(pool));
        side_free(&a);
        s = side_forward(&b, &sh, 2 * sh.R + 7, g_out[0]);
        osc_status s1 = side_forward(&bref, &sh, 2 * sh.R + 7, g_out[1]);
        CHECK(s == OSC_OK && s1 == OSC_OK, "%s: after freeing A: %s", mode, osc_last_error());
        int same = 1;
        for (int l = 0; l < L; l++)
            same &= !memcmp(g_out[0][l], g_out[1][l], sizeof(float) * (2 * sh.R + 7) * sh.Hq * sh.hd);
        for (int t = 0; t < 40 && s == OSC_OK; t++) { /* decode over A's stale pages */
            fill(&sh, 1);
            s = side_forward(&b, &sh, 1, g_out[0]);
            if (side_forward(&bref, &sh, 1, g_out[1]) != OSC_OK) s = OSC_ERR_INVALID_ARG;
            for (int l = 0; l < L; l++) same &= !memcmp(g_out[0][l], g_out[1][l], sizeof(float) * sh.Hq * sh.hd);
        }
        CHECK(s == OSC_OK && same, "%s: retried sequence differs from its own GPU cache (%s)", mode,
              s == OSC_OK ? "outputs" : osc_last_error());
        printf("  %-6s pool exhaustion: OSC_ERR_OOM, cache unchanged, retry after a free %s\n", mode,
               same ? "identical to its own cache" : "DIFFERS");
    }
    side_free(&a), side_free(&b), side_free(&bref);
    osc_kv_pool_free(pool);
    for (int l = 0; l < L; l++) {
        free(g_k[l]), free(g_v[l]), free(g_q[l]);
        for (int k = 0; k < 3; k++) free(g_out[k][l]);
    }
}

int main(void) {
    if (!osc_device_cuda_available()) {
        printf("no GPU: skipped\n");
        return OSC_TEST_SKIP;
    }
    const shape shapes[] = {
        {8, 2, 128, 32, 700}, /* fused decode kernel through the table, pages of 32 tokens */
        {16, 4, 128, 64, 600}, /* fused, 4 q heads per kv head, pages of 2 groups */
        {4, 2, 256, 32, 400},  /* fused, hd 256 */
        {4, 2, 64, 32, 300},   /* general path: dequantise through the table + attention */
    };
    const char *modes[] = {"kivi2", "kivi4", "rot2", "oscar2", "oscar4"};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) run_case(modes[m], &shapes[s]);
    /* the 2-bit hd-128 modes again with the window in splits of its own (OSC_KVQ_PLAN=2; the
     * default folds it into the packed splits) */
    osc_cuda_kv_split_plan(2);
    for (size_t s = 0; s < 2; s++)
        for (size_t m = 0; m < 4; m += 3) run_case(modes[m], &shapes[s]); /* kivi2, oscar2 */
    /* and with the splits merged inside k_kvq_mma (the default of larger batches) */
    osc_cuda_kv_fused_merge(2);
    for (size_t s = 0; s < 2; s++)
        for (size_t m = 0; m < 4; m += 3) run_case(modes[m], &shapes[s]);
    osc_cuda_kv_fused_merge(-1);
    osc_cuda_kv_split_plan(-1);
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) run_oom(modes[m]);
    return check_done("test_kvpool_gpu");
}
