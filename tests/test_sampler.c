/* Sampler tests: greedy, repetition penalty, top-k/top-p/min-p sets and frequencies,
 * temperature, determinism, and speed on a 152064-token vocabulary. */
#include <string.h>
#include <time.h>

#include "llm/sampler.h"
#include "tests/check.h"

static osc_sampler *mk(float temp, int top_k, float top_p, float min_p, float pen, int last_n,
                       uint64_t seed, int n_vocab) {
    osc_sampler_params p = osc_sampler_default_params();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.repeat_penalty = pen;
    p.repeat_last_n = last_n;
    p.seed = seed;
    osc_sampler *s = NULL;
    osc_status st = osc_sampler_new(&p, n_vocab, &s);
    if (st != OSC_OK) {
        fprintf(stderr, "osc_sampler_new: %s\n", osc_last_error());
        exit(1);
    }
    return s;
}

/* draw `draws` tokens from a fresh copy of logits each time; counts[n] */
static void histo(osc_sampler *s, const float *logits, int n, int draws, long *counts) {
    float buf[16];
    memset(counts, 0, (size_t)n * sizeof *counts);
    for (int d = 0; d < draws; d++) {
        memcpy(buf, logits, (size_t)n * sizeof *buf);
        int32_t t = osc_sampler_sample(s, buf, NULL, 0);
        if (t >= 0 && t < n) counts[t]++;
    }
}

/* Pearson chi-square of counts against expected probabilities (zero-prob cells must be empty) */
static double chi2(const long *counts, const double *p, int n, long draws, int *bad) {
    double x = 0;
    *bad = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] == 0) {
            if (counts[i]) *bad = 1;
            continue;
        }
        double e = p[i] * draws, d = counts[i] - e;
        x += d * d / e;
    }
    return x;
}

static uint64_t lcg = 12345;
static float frand(void) { /* uniform (0,1) */
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return ((lcg >> 40) + 0.5f) / (float)(1 << 24);
}
static float nrand(void) { return sqrtf(-2.0f * logf(frand())) * cosf(6.2831853f * frand()); }

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_desc_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

int main(void) {
    /* ---- argument checks ---- */
    {
        osc_sampler_params p = osc_sampler_default_params();
        osc_sampler *s = (osc_sampler *)1;
        CHECK(osc_sampler_new(&p, 0, &s) == OSC_ERR_INVALID_ARG && s == NULL, "n_vocab 0");
        p.min_p = 2.0f;
        CHECK(osc_sampler_new(&p, 10, &s) == OSC_ERR_INVALID_ARG, "min_p > 1");
        p = osc_sampler_default_params();
        p.repeat_penalty = -1.0f;
        CHECK(osc_sampler_new(&p, 10, &s) == OSC_ERR_INVALID_ARG, "negative penalty");
        CHECK(osc_sampler_new(NULL, 10, &s) == OSC_ERR_INVALID_ARG, "NULL params");
        osc_sampler_free(NULL);
    }

    /* ---- greedy: argmax, first index on ties ---- */
    {
        osc_sampler *s = mk(0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1, 6);
        float l1[6] = {0.1f, 2.0f, -3.0f, 1.9f, 0.0f, 2.0f};
        CHECK(osc_sampler_sample(s, l1, NULL, 0) == 1, "greedy tie -> first");
        float l2[6] = {-5, -4, -3, -2, -1, -0.5f};
        CHECK(osc_sampler_sample(s, l2, NULL, 0) == 5, "greedy last");
        float l3[6] = {NAN, -INFINITY, 1.0f, NAN, 0.5f, 1.0f};
        CHECK(osc_sampler_sample(s, l3, NULL, 0) == 2, "greedy ignores NaN");
        osc_sampler_free(s);
        s = mk(-1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1, 3); /* negative temperature = greedy too */
        float l4[3] = {1.0f, 3.0f, 2.0f};
        CHECK(osc_sampler_sample(s, l4, NULL, 0) == 1, "negative temperature greedy");
        osc_sampler_free(s);
    }

    /* ---- repetition penalty (HF): distinct tokens, l<0 ? l*p : l/p ---- */
    {
        osc_sampler *s = mk(0.0f, 0, 1.0f, 0.0f, 2.0f, 0, 1, 5);
        float l[5] = {2.0f, -1.0f, 0.5f, 3.0f, -0.25f};
        int32_t hist[] = {0, 1, 1, 0, 4, 4, 4, 999, -3}; /* repeats and out-of-range ids */
        int32_t t = osc_sampler_sample(s, l, hist, 9);
        /* 2/2=1, -1*2=-2, 0.5, 3, -0.25*2=-0.5 (each once, despite repeats) */
        CHECK(l[0] == 1.0f && l[1] == -2.0f && l[2] == 0.5f && l[3] == 3.0f && l[4] == -0.5f,
              "penalised %g %g %g %g %g", l[0], l[1], l[2], l[3], l[4]);
        CHECK(t == 3, "argmax after penalty %d", t);
        float l2[2] = {3.0f, 2.0f}; /* the penalty can change the greedy pick */
        osc_sampler_free(s);
        s = mk(0.0f, 0, 1.0f, 0.0f, 2.0f, 0, 1, 2);
        int32_t h2[] = {0};
        CHECK(osc_sampler_sample(s, l2, h2, 1) == 1 && l2[0] == 1.5f, "penalty flips argmax");
        osc_sampler_free(s);
        /* window: repeat_last_n = 2 -> only the last two history entries count */
        s = mk(0.0f, 0, 1.0f, 0.0f, 1.5f, 2, 1, 4);
        float l3[4] = {3.0f, 3.0f, -3.0f, 1.5f};
        int32_t h3[] = {0, 1, 2, 3};
        osc_sampler_sample(s, l3, h3, 4);
        CHECK(l3[0] == 3.0f && l3[1] == 3.0f && l3[2] == -4.5f && l3[3] == 1.0f,
              "window %g %g %g %g", l3[0], l3[1], l3[2], l3[3]);
        /* second call: stamps from the previous call must not leak */
        float l4[4] = {3.0f, 3.0f, -3.0f, 1.5f};
        int32_t h4[] = {2, 3, 0, 1};
        osc_sampler_sample(s, l4, h4, 4);
        CHECK(l4[0] == 2.0f && l4[1] == 2.0f && l4[2] == -3.0f && l4[3] == 1.5f,
              "window 2 %g %g %g %g", l4[0], l4[1], l4[2], l4[3]);
        osc_sampler_free(s);
        /* penalty 1 is a no-op */
        s = mk(0.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1, 2);
        float l5[2] = {-1.0f, 1.0f};
        int32_t h5[] = {0, 1};
        osc_sampler_sample(s, l5, h5, 2);
        CHECK(l5[0] == -1.0f && l5[1] == 1.0f, "penalty 1 no-op");
        osc_sampler_free(s);
    }

    const float probs4[4] = {0.5f, 0.3f, 0.15f, 0.05f};
    float lp4[4];
    for (int i = 0; i < 4; i++) lp4[i] = logf(probs4[i]);

    /* ---- top_k = 1: always the argmax, whatever the seed and temperature ---- */
    {
        int ok = 1;
        for (uint64_t seed = 0; seed < 50; seed++) {
            osc_sampler *s = mk(5.0f, 1, 1.0f, 0.0f, 1.0f, 0, seed, 4);
            float lb[4] = {lp4[2], lp4[1], lp4[0], lp4[3]};
            for (int d = 0; d < 20; d++) {
                float l[4];
                memcpy(l, lb, sizeof l);
                if (osc_sampler_sample(s, l, NULL, 0) != 2) ok = 0;
            }
            osc_sampler_free(s);
        }
        CHECK(ok, "top_k=1 not argmax");
        /* top_k keeps ties with the k-th value (HF semantics) */
        osc_sampler *s = mk(1.0f, 1, 1.0f, 0.0f, 1.0f, 0, 7, 3);
        float lt[3] = {1.0f, 0.0f, 1.0f};
        long c[3];
        histo(s, lt, 3, 2000, c);
        CHECK(c[1] == 0 && c[0] > 800 && c[2] > 800, "top_k ties %ld %ld %ld", c[0], c[1], c[2]);
        osc_sampler_free(s);
        /* top_k = 2 frequencies */
        s = mk(1.0f, 2, 1.0f, 0.0f, 1.0f, 0, 8, 4);
        long c4[4];
        histo(s, lp4, 4, 10000, c4);
        double pe[4] = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
        int bad;
        double x = chi2(c4, pe, 4, 10000, &bad);
        CHECK(!bad && x < 20, "top_k=2 chi2 %g bad %d", x, bad);
        osc_sampler_free(s);
    }

    /* ---- top_p = 0.7 on [0.5,0.3,0.15,0.05]: only {0,1}, at 0.5/0.8 and 0.3/0.8 ---- */
    {
        osc_sampler *s = mk(1.0f, 0, 0.7f, 0.0f, 1.0f, 0, 42, 4);
        long c[4];
        histo(s, lp4, 4, 10000, c);
        double pe[4] = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
        int bad;
        double x = chi2(c, pe, 4, 10000, &bad);
        CHECK(!bad && x < 20, "top_p chi2 %g counts %ld %ld %ld %ld", x, c[0], c[1], c[2], c[3]);
        osc_sampler_free(s);
        /* top_p smaller than the top prob: only the top token */
        s = mk(1.0f, 0, 0.3f, 0.0f, 1.0f, 0, 43, 4);
        histo(s, lp4, 4, 2000, c);
        CHECK(c[0] == 2000, "top_p 0.3 -> only token 0 (%ld)", c[0]);
        osc_sampler_free(s);
        /* top_p 0.9: 0.5+0.3 < 0.9 <= 0.5+0.3+0.15 -> {0,1,2} */
        s = mk(1.0f, 0, 0.9f, 0.0f, 1.0f, 0, 44, 4);
        histo(s, lp4, 4, 10000, c);
        double pe3[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0};
        x = chi2(c, pe3, 4, 10000, &bad);
        CHECK(!bad && x < 25, "top_p 0.9 chi2 %g", x);
        osc_sampler_free(s);
        /* top_k then top_p: probs [0.1,0.4,0.2,0.3], k=3 -> {1,3,2} renormalised
         * (.444,.333,.222); top_p 0.7 -> {1,3} */
        const float pp[4] = {0.1f, 0.4f, 0.2f, 0.3f};
        float lq[4];
        for (int i = 0; i < 4; i++) lq[i] = logf(pp[i]);
        s = mk(1.0f, 3, 0.7f, 0.0f, 1.0f, 0, 45, 4);
        histo(s, lq, 4, 10000, c);
        double pe2[4] = {0, 4.0 / 7.0, 0, 3.0 / 7.0};
        x = chi2(c, pe2, 4, 10000, &bad);
        CHECK(!bad && x < 20, "top_k+top_p chi2 %g bad %d", x, bad);
        osc_sampler_free(s);
    }

    /* ---- min_p = 0.25: keep p >= 0.125 -> {0,1,2} ---- */
    {
        osc_sampler *s = mk(1.0f, 0, 1.0f, 0.25f, 1.0f, 0, 99, 4);
        long c[4];
        histo(s, lp4, 4, 10000, c);
        double pe[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0};
        int bad;
        double x = chi2(c, pe, 4, 10000, &bad);
        CHECK(!bad && x < 25, "min_p chi2 %g counts %ld %ld %ld %ld", x, c[0], c[1], c[2], c[3]);
        osc_sampler_free(s);
        /* min_p 0.7 -> only the top token */
        s = mk(1.0f, 0, 1.0f, 0.7f, 1.0f, 0, 98, 4);
        histo(s, lp4, 4, 2000, c);
        CHECK(c[0] == 2000, "min_p 0.7 -> only token 0 (%ld)", c[0]);
        osc_sampler_free(s);
        /* top_p then min_p: top_p 0.9 -> {0,1,2}; min_p 0.5 of p_max -> {0,1} */
        s = mk(1.0f, 0, 0.9f, 0.5f, 1.0f, 0, 97, 4);
        histo(s, lp4, 4, 10000, c);
        double pe2[4] = {0.5 / 0.8, 0.3 / 0.8, 0, 0};
        x = chi2(c, pe2, 4, 10000, &bad);
        CHECK(!bad && x < 20, "top_p+min_p chi2 %g", x);
        osc_sampler_free(s);
    }

    /* ---- temperature: frequencies match softmax(logits / T) ---- */
    {
        const float lg[5] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f};
        const float temps[3] = {0.7f, 1.0f, 2.5f};
        for (int ti = 0; ti < 3; ti++) {
            float T = temps[ti];
            double pe[5], z = 0;
            for (int i = 0; i < 5; i++) z += (pe[i] = exp(lg[i] / T));
            for (int i = 0; i < 5; i++) pe[i] /= z;
            osc_sampler *s = mk(T, 0, 1.0f, 0.0f, 1.0f, 0, 1000 + ti, 5);
            long c[5];
            histo(s, lg, 5, 20000, c);
            int bad;
            double x = chi2(c, pe, 5, 20000, &bad);
            CHECK(!bad && x < 30, "temperature %g chi2 %g", T, x);
            osc_sampler_free(s);
        }
    }

    /* ---- determinism: same seed -> same sequence; different seed -> different ---- */
    {
        enum { V = 1000, N = 200 };
        static float base[V], l[V];
        for (int i = 0; i < V; i++) base[i] = nrand();
        int32_t a[N], b[N], c[N];
        osc_sampler *s1 = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1234, V);
        osc_sampler *s2 = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1234, V);
        osc_sampler *s3 = mk(1.0f, 0, 1.0f, 0.0f, 1.0f, 0, 1235, V);
        for (int k = 0; k < N; k++) {
            memcpy(l, base, sizeof l);
            a[k] = osc_sampler_sample(s1, l, NULL, 0);
            memcpy(l, base, sizeof l);
            b[k] = osc_sampler_sample(s2, l, NULL, 0);
            memcpy(l, base, sizeof l);
            c[k] = osc_sampler_sample(s3, l, NULL, 0);
        }
        CHECK(memcmp(a, b, sizeof a) == 0, "same seed differs");
        int diff = 0;
        for (int k = 0; k < N; k++) diff += a[k] != c[k];
        CHECK(diff > N / 2, "different seeds agree too often (%d of %d differ)", diff, N);
        /* reseed restarts the sequence */
        osc_sampler_reseed(s1, 1234);
        memcpy(l, base, sizeof l);
        CHECK(osc_sampler_sample(s1, l, NULL, 0) == a[0], "reseed");
        osc_sampler_free(s1);
        osc_sampler_free(s2);
        osc_sampler_free(s3);
    }

    /* ---- vocab 152064: top-p set matches a brute-force sort; speed ---- */
    {
        enum { V = 152064 };
        float *base = malloc(V * sizeof *base), *l = malloc(V * sizeof *l),
              *sorted = malloc(V * sizeof *sorted);
        int32_t *hist = malloc(512 * sizeof *hist);
        for (int i = 0; i < V; i++) base[i] = 3.0f * nrand();
        for (int i = 0; i < 512; i++) hist[i] = (int32_t)(frand() * V) % V;
        const float top_p = 0.9f;
        /* brute force: probability threshold of the top-p set (T = 1, no penalty) */
        double m = -INFINITY, z = 0;
        for (int i = 0; i < V; i++) m = base[i] > m ? base[i] : m;
        for (int i = 0; i < V; i++) z += exp(base[i] - m);
        memcpy(sorted, base, V * sizeof *base);
        qsort(sorted, V, sizeof *sorted, cmp_desc_f);
        double cum = 0;
        float cut = sorted[0];
        int nkeep = 0;
        for (int j = 0; j < V; j++) {
            cum += exp(sorted[j] - m) / z;
            cut = sorted[j];
            nkeep = j + 1;
            if (cum >= top_p) break;
        }
        osc_sampler *s = mk(1.0f, 0, top_p, 0.0f, 1.0f, 0, 5, V);
        int outside = 0;
        for (int d = 0; d < 300; d++) {
            memcpy(l, base, V * sizeof *l);
            int32_t t = osc_sampler_sample(s, l, NULL, 0);
            if (t < 0 || t >= V || base[t] < cut) outside++;
        }
        CHECK(outside == 0, "top_p on 152k: %d draws outside the set of %d", outside, nkeep);
        osc_sampler_free(s);

        struct { const char *name; float T; int k; float p; float mp; float pen; } cfg[] = {
            {"greedy+penalty", 0.0f, 0, 1.0f, 0.0f, 1.1f},
            {"T=1 plain", 1.0f, 0, 1.0f, 0.0f, 1.0f},
            {"top_k=40 top_p=0.95", 0.8f, 40, 0.95f, 0.0f, 1.1f},
            {"top_p=0.9", 0.7f, 0, 0.9f, 0.0f, 1.0f},
            {"min_p=0.05", 1.0f, 0, 1.0f, 0.05f, 1.0f},
            {"top_k=20 top_p=0.8 min_p=0.01", 0.7f, 20, 0.8f, 0.01f, 1.05f},
        };
        for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++) {
            s = mk(cfg[ci].T, cfg[ci].k, cfg[ci].p, cfg[ci].mp, cfg[ci].pen, 256, 77, V);
            const int iters = 50;
            double tsum = 0;
            for (int it = 0; it < iters; it++) {
                memcpy(l, base, V * sizeof *l);
                double t0 = now_s();
                int32_t t = osc_sampler_sample(s, l, hist, 512);
                tsum += now_s() - t0;
                CHECK(t >= 0 && t < V, "token out of range %d", t);
            }
            double ms = 1e3 * tsum / iters;
            printf("  sample vocab %d, %-32s %.3f ms/token\n", V, cfg[ci].name, ms);
            CHECK(ms < 30.0, "%s too slow: %.3f ms", cfg[ci].name, ms);
            osc_sampler_free(s);
        }
        free(base);
        free(l);
        free(sorted);
        free(hist);
    }

    return check_done("test_sampler");
}
