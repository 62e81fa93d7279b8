/* The paged KV pool on the CPU (kvcache.h osc_kv_pool): several sequences of different lengths
 * interleaved in one pool must give attention outputs, dequantised contents and norms
 * IDENTICAL (bitwise) to the same sequences each in its own cache (osc_kv_new: the contiguous
 * layout, a different addressing of the same packed blocks), across prefill chunks, decode
 * steps, window flushes, truncations (pages given back), frees and re-creation (freed pages
 * reused, stale data in them). Page accounting after every operation (pages held + free ==
 * pool; a cache holds (len - 1) / R pages after a forward). Exhaustion: OSC_ERR_OOM with the
 * "KV pool full" message, the failing cache unchanged, and the same forward succeeding (and
 * still identical) once another sequence is freed. Sizes and errors. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/tensor.h"
#include "kvcache/kvcache.h"
#include "tests/check.h"

enum { L = 3, H = 2, HQ = 4, HD = 64, R = 32, MAXS = 128, CTX = 300, NSEQ = 4 };

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;
static float frand(void) { return check_frand(&g_rng); }
static uint32_t irand(uint32_t n) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (uint32_t)((g_rng >> 33) % n);
}

static float Kb[L][MAXS * H * HD], Vb[L][MAXS * H * HD], Qb[L][MAXS * HQ * HD];
static float Oa[L][MAXS * HQ * HD], Ob[L][MAXS * HQ * HD];

static osc_kv_params params(const char *mode, int n_ctx) {
    osc_kv_params p = {mode, L, H, HD, n_ctx, OSC_DEV_CPU, OSC_F32, R};
    return p;
}

static osc_tensor t3(float *p, int a, int b, int c) {
    int64_t ne[3] = {a, b, c};
    return osc_tensor_make(p, OSC_F32, OSC_DEV_CPU, 3, ne);
}

/* keys with token norms spread 0.05x..20x and a few outlier channels (OScaR's case) */
static void fill(int S) {
    for (int l = 0; l < L; l++) {
        for (int r = 0; r < S; r++) {
            float u = frand(), tn = u > 0.8f ? 20.0f : u < -0.8f ? 0.05f : 1.0f + 0.5f * u;
            for (int i = 0; i < H * HD; i++) Kb[l][r * H * HD + i] = frand() * tn * ((i % HD) % 17 == 3 ? 6.0f : 1.0f);
        }
        for (int i = 0; i < S * H * HD; i++) Vb[l][i] = frand();
        for (int i = 0; i < S * HQ * HD; i++) Qb[l][i] = frand();
    }
}

/* One forward of S rows (the data in Kb/Vb/Qb) over every layer; outputs into O. */
static osc_status forward(osc_kv *kv, int S, float O[L][MAXS * HQ * HD]) {
    for (int l = 0; l < L; l++) {
        osc_tensor k = t3(Kb[l], S, H, HD), v = t3(Vb[l], S, H, HD), q = t3(Qb[l], S, HQ, HD), o = t3(O[l], S, HQ, HD);
        OSC_TRY(osc_kv_store(kv, l, &k, &v));
        OSC_TRY(osc_kv_attend(kv, l, &q, &o, 0.125f));
    }
    osc_kv_advance(kv, S);
    return OSC_OK;
}

/* bitwise: outputs of the last forward */
static int same_out(int S) {
    for (int l = 0; l < L; l++)
        if (memcmp(Oa[l], Ob[l], sizeof(float) * (size_t)S * HQ * HD)) return 0;
    return 1;
}

/* bitwise: every stored token (dequantised) and norm of every layer */
static int same_contents(const osc_kv *a, const osc_kv *b) {
    int n = osc_kv_len(a);
    if (n != osc_kv_len(b)) return 0;
    if (n == 0) return 1;
    size_t row = (size_t)H * HD;
    float *ka = malloc(sizeof(float) * n * row * 4), *va = ka + n * row, *kb = va + n * row, *vb = kb + n * row;
    int ok = ka != NULL;
    for (int l = 0; ok && l < L; l++) {
        ok = osc_kv_debug_dequant(a, l, 0, n, ka, va) == OSC_OK && osc_kv_debug_dequant(b, l, 0, n, kb, vb) == OSC_OK &&
             !memcmp(ka, kb, sizeof(float) * n * row) && !memcmp(va, vb, sizeof(float) * n * row);
        for (int t = 0; ok && t < n; t++) {
            float x = osc_kv_debug_norm(a, l, t), y = osc_kv_debug_norm(b, l, t);
            ok = !memcmp(&x, &y, sizeof x);
        }
    }
    free(ka);
    return ok;
}

typedef struct seq {
    osc_kv *pk, *ref; /* pooled, own cache */
    int pages;        /* the model of what the pooled cache should hold */
} seq;

static int seq_new(seq *s, osc_kv_pool *pool, const char *mode) {
    osc_kv_params p = params(mode, CTX);
    s->pages = 0;
    return osc_kv_new_in_pool(pool, CTX, &s->pk) == OSC_OK && osc_kv_new(&p, &s->ref) == OSC_OK;
}

static void seq_free(seq *s) {
    osc_kv_free(s->pk);
    osc_kv_free(s->ref);
    s->pk = s->ref = NULL;
}

static int pages_held(seq *sq, int n) {
    int t = 0;
    for (int i = 0; i < n; i++)
        if (sq[i].pk) t += osc_kv_pages(sq[i].pk);
    return t;
}

static void test_interleaved(const char *mode) {
    const int per_seq = (CTX + R - 1) / R;
    osc_kv_params p = params(mode, 0);
    osc_kv_pool *pool = NULL;
    osc_status st = osc_kv_pool_new(&p, NSEQ * per_seq, &pool);
    CHECK(st == OSC_OK, "%s: pool: %s", mode, osc_last_error());
    if (st != OSC_OK) return;
    CHECK(osc_kv_pool_page_tokens(pool) == R && osc_kv_pool_pages(pool) == NSEQ * per_seq &&
          osc_kv_pool_pages_free(pool) == NSEQ * per_seq, "%s: fresh pool accounting", mode);
    seq sq[NSEQ];
    for (int i = 0; i < NSEQ; i++) CHECK(seq_new(&sq[i], pool, mode), "%s: caches: %s", mode, osc_last_error());
    int mism = 0, cont = 0, acct = 0, forwards = 0, truncs = 0, recreated = 0, taken = 0;
    for (int round = 0; round < 160; round++) {
        for (int i = 0; i < NSEQ; i++) {
            seq *s = &sq[i];
            int len = osc_kv_len(s->ref), r = (int)irand(24), S;
            if (len > 0 && r == 0) { /* truncate, possibly into the packed part */
                int n = (int)irand((uint32_t)len + 1);
                osc_kv_truncate(s->pk, n);
                osc_kv_truncate(s->ref, n);
                if (n < s->pages * R) s->pages = n / R;
                truncs++;
                if (osc_kv_pages(s->pk) != s->pages && acct++ < 3)
                    CHECK(0, "%s: seq %d after truncation to %d holds %d pages, want %d", mode, i, n, osc_kv_pages(s->pk), s->pages);
                if (!same_contents(s->pk, s->ref) && cont++ < 3) CHECK(0, "%s: seq %d contents differ after truncation", mode, i);
                continue;
            }
            if (len > 0 && r == 1) { /* the sequence ends; a new one starts on the freed pages */
                if (!same_contents(s->pk, s->ref) && cont++ < 3) CHECK(0, "%s: seq %d contents differ at its end", mode, i);
                seq_free(s);
                CHECK(seq_new(s, pool, mode), "%s: re-create: %s", mode, osc_last_error());
                recreated++;
                continue;
            }
            S = len == 0 ? 1 + (int)irand(96) : r <= 4 ? 1 + (int)irand(40) : 1;
            if (len + S > CTX) { /* full: start over */
                osc_kv_truncate(s->pk, 0);
                osc_kv_truncate(s->ref, 0);
                s->pages = 0;
                continue;
            }
            fill(S);
            int before = osc_kv_pages(s->pk);
            osc_status sa = forward(s->pk, S, Oa), sb = forward(s->ref, S, Ob);
            CHECK(sa == OSC_OK && sb == OSC_OK, "%s: seq %d forward of %d at %d: %s", mode, i, S, len, osc_last_error());
            forwards++;
            if ((len + S - 1) / R > s->pages) s->pages = (len + S - 1) / R;
            taken += osc_kv_pages(s->pk) - before;
            if (!same_out(S) && mism++ < 3)
                CHECK(0, "%s: seq %d forward of %d rows at %d: pooled output differs from its own cache", mode, i, S, len);
            if (osc_kv_pages(s->pk) != s->pages && acct++ < 3)
                CHECK(0, "%s: seq %d at %d tokens holds %d pages, want %d", mode, i, len + S, osc_kv_pages(s->pk), s->pages);
        }
        if (pages_held(sq, NSEQ) + osc_kv_pool_pages_free(pool) != osc_kv_pool_pages(pool) && acct++ < 3)
            CHECK(0, "%s: round %d: %d held + %d free != %d", mode, round, pages_held(sq, NSEQ), osc_kv_pool_pages_free(pool),
                  osc_kv_pool_pages(pool));
    }
    for (int i = 0; i < NSEQ; i++)
        if (!same_contents(sq[i].pk, sq[i].ref) && cont++ < 3) CHECK(0, "%s: seq %d contents differ at the end", mode, i);
    CHECK(mism == 0 && cont == 0 && acct == 0, "%s: %d output, %d content, %d accounting mismatches", mode, mism, cont, acct);
    CHECK(taken > osc_kv_pool_pages(pool), "%s: only %d pages taken over the run: freed pages never reused", mode, taken);
    CHECK(truncs > 5 && recreated > 5, "%s: schedule too tame (%d truncations, %d re-creations)", mode, truncs, recreated);
    for (int i = 0; i < NSEQ; i++) seq_free(&sq[i]);
    CHECK(osc_kv_pool_pages_free(pool) == osc_kv_pool_pages(pool), "%s: pages lost: %d of %d free after freeing all", mode,
          osc_kv_pool_pages_free(pool), osc_kv_pool_pages(pool));
    printf("  %-6s %d forwards, %d truncations, %d re-created sequences, %d pages taken from a pool of %d: %s\n", mode,
           forwards, truncs, recreated, taken, osc_kv_pool_pages(pool), mism || cont ? "DIFFERENT" : "identical");
    osc_kv_pool_free(pool);
}

/* A pool of 5 pages: A takes 3, B's prefill needing 3 fails with OSC_ERR_OOM and leaves B as it
 * was; after freeing A the same forward succeeds and matches B's own cache. Then decode until a
 * flush finds the pool empty. */
static void test_exhaustion(const char *mode) {
    osc_kv_params p = params(mode, 0), pc = params(mode, CTX);
    osc_kv_pool *pool = NULL;
    if (osc_kv_pool_new(&p, 5, &pool) != OSC_OK) {
        CHECK(0, "%s: pool: %s", mode, osc_last_error());
        return;
    }
    osc_kv *a, *b, *c, *bref;
    CHECK(osc_kv_new_in_pool(pool, CTX, &a) == OSC_OK && osc_kv_new_in_pool(pool, CTX, &b) == OSC_OK &&
          osc_kv_new_in_pool(pool, CTX, &c) == OSC_OK && osc_kv_new(&pc, &bref) == OSC_OK, "%s: caches", mode);
    fill(3 * R + 5);
    CHECK(forward(a, 3 * R + 5, Oa) == OSC_OK && osc_kv_pages(a) == 3, "%s: A holds %d pages", mode, osc_kv_pages(a));
    fill(20);
    CHECK(forward(b, 20, Oa) == OSC_OK && forward(bref, 20, Ob) == OSC_OK && same_out(20), "%s: B's first chunk", mode);
    fill(3 * R + 10); /* B to 20 + 106 = 126 tokens: 3 pages, only 2 free */
    int free0 = osc_kv_pool_pages_free(pool);
    osc_tensor k = t3(Kb[0], 3 * R + 10, H, HD), v = t3(Vb[0], 3 * R + 10, H, HD);
    osc_status s = osc_kv_store(b, 0, &k, &v);
    CHECK(s == OSC_ERR_OOM, "%s: store into a full pool returned %d", mode, (int)s);
    CHECK(strstr(osc_last_error(), "KV pool full") != NULL, "%s: message '%s'", mode, osc_last_error());
    CHECK(osc_kv_len(b) == 20 && osc_kv_pages(b) == 0 && osc_kv_pool_pages_free(pool) == free0,
          "%s: failed store changed the cache: len %d pages %d free %d", mode, osc_kv_len(b), osc_kv_pages(b),
          osc_kv_pool_pages_free(pool));
    CHECK(same_contents(b, bref), "%s: B's contents changed by the failed store", mode);
    osc_kv_free(a);
    CHECK(osc_kv_pool_pages_free(pool) == 5, "%s: free gave back %d of 5", mode, osc_kv_pool_pages_free(pool));
    s = forward(b, 3 * R + 10, Oa);
    CHECK(s == OSC_OK && forward(bref, 3 * R + 10, Ob) == OSC_OK, "%s: retry after freeing A: %s", mode, osc_last_error());
    CHECK(same_out(3 * R + 10) && same_contents(b, bref), "%s: retried forward differs from B's own cache", mode);
    CHECK(osc_kv_pages(b) == 3, "%s: B holds %d pages", mode, osc_kv_pages(b));
    /* C decodes until its third page finds the pool empty (B 3 + C 2 = 5): the store of token
     * 3R + 1 needs page 3 */
    int oom_at = -1;
    for (int t = 0; t < 4 * R; t++) {
        fill(1);
        s = forward(c, 1, Oa);
        if (s != OSC_OK) {
            oom_at = osc_kv_len(c);
            break;
        }
    }
    CHECK(s == OSC_ERR_OOM && oom_at == 3 * R, "%s: decode OOM at %d (status %d), want at %d", mode, oom_at, (int)s, 3 * R);
    osc_kv_truncate(b, 0); /* B gives back its pages; C goes on */
    CHECK(osc_kv_pages(b) == 0 && osc_kv_pool_pages_free(pool) == 3, "%s: truncate to 0: %d pages, %d free", mode,
          osc_kv_pages(b), osc_kv_pool_pages_free(pool));
    CHECK(forward(c, 1, Oa) == OSC_OK && osc_kv_pages(c) == 3, "%s: C after B's truncation: %s", mode, osc_last_error());
    osc_kv_free(b), osc_kv_free(c), osc_kv_free(bref);
    CHECK(osc_kv_pool_pages_free(pool) == 5, "%s: pages lost", mode);
    osc_kv_pool_free(pool);
}

static void test_sizes_errors(void) {
    const char *modes[] = {"kivi2", "kivi4", "rot2", "oscar2", "oscar4"};
    for (int i = 0; i < 5; i++) {
        osc_kv_params p = params(modes[i], 0);
        size_t pg = osc_kv_pool_page_bytes(&p), per = osc_kv_bytes_per_token_per_layer(&p);
        int norm = !strncmp(modes[i], "oscar", 5);
        /* a layer of a page: R tokens of codes + params (+ norms) as accounted by the cache,
         * the norm array always (CUDA reads 1.0 for the modes without norm), rounded to 256 */
        size_t want = (size_t)R * (per - (norm ? 4 : 0)) + (size_t)R * 4;
        CHECK(pg % L == 0 && pg / L >= want && pg / L < want + 256, "%s: page %zu bytes, want %d x ~%zu", modes[i], pg, L, want);
        CHECK(osc_kv_pool_bytes_for(&p, 7) == 7 * pg, "%s: pool bytes", modes[i]);
        p.n_ctx = 1000;
        CHECK(osc_kv_pool_seq_bytes(&p) >= (size_t)L * R * H * HD * 2 * sizeof(float), "%s: seq bytes %zu", modes[i],
              osc_kv_pool_seq_bytes(&p));
    }
    osc_kv_pool *pool = NULL;
    osc_kv_params p = params("bf16", 0);
    CHECK(osc_kv_pool_new(&p, 4, &pool) == OSC_ERR_UNSUPPORTED && !pool, "bf16 pool refused");
    p.mode = "int8";
    CHECK(osc_kv_pool_new(&p, 4, &pool) == OSC_ERR_UNSUPPORTED && !pool, "int8 pool refused");
    CHECK(osc_kv_pool_page_bytes(&p) == 0, "int8 has no pages");
    p.mode = "oscar2";
    CHECK(osc_kv_pool_new(&p, 0, &pool) == OSC_ERR_INVALID_ARG, "0 pages refused");
    p.r_evict = 48;
    CHECK(osc_kv_pool_new(&p, 4, &pool) == OSC_ERR_INVALID_ARG, "r_evict 48 refused");
    p.r_evict = 0; /* default 256 */
    CHECK(osc_kv_pool_new(&p, 2, &pool) == OSC_OK && osc_kv_pool_page_tokens(pool) == 256, "default page of 256 tokens");
    osc_kv *kv = NULL;
    CHECK(osc_kv_new_in_pool(pool, 100, &kv) == OSC_OK && osc_kv_capacity(kv) == 100 && osc_kv_pages(kv) == 0, "small cache");
    fill(96);
    CHECK(forward(kv, 96, Oa) == OSC_OK && osc_kv_pages(kv) == 0, "under a page: no page taken");
    osc_kv_free(kv);
    osc_kv_pool_free(pool);
}

int main(void) {
    const char *modes[] = {"kivi2", "kivi4", "rot2", "oscar2", "oscar4"};
    for (int i = 0; i < 5; i++) test_interleaved(modes[i]);
    for (int i = 0; i < 5; i++) test_exhaustion(modes[i]);
    test_sizes_errors();
    return check_done("test_kvpool");
}
