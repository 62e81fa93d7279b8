/* Sampler: see sampler.h for the semantics (HF logits-processor order). */
#include "llm/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float v;   /* logit after penalty and temperature */
    int32_t i; /* token id */
} cand;

struct osc_sampler {
    osc_sampler_params p;
    int n_vocab;
    uint64_t rng[4];  /* xoshiro256** state */
    uint32_t *stamp;  /* [n_vocab] epoch at which a token was last penalised (distinct ids) */
    uint32_t epoch;
    cand *cand;       /* [n_vocab] candidate set */
    float *tmp;       /* [n_vocab] scratch for top-k selection */
};

/* ---- RNG: splitmix64 seeding, xoshiro256** generation ---- */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t rng_next(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}
/* uniform in [0, 1) with 53 random bits */
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

void osc_sampler_reseed(osc_sampler *s, uint64_t seed) {
    if (!s) return;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

osc_sampler_params osc_sampler_default_params(void) {
    osc_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

osc_status osc_sampler_new(const osc_sampler_params *p, int n_vocab, osc_sampler **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "sampler: out is NULL");
    *out = NULL;
    if (!p) return osc_error(OSC_ERR_INVALID_ARG, "sampler: params is NULL");
    if (n_vocab <= 0) return osc_error(OSC_ERR_INVALID_ARG, "sampler: n_vocab %d <= 0", n_vocab);
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) || isnan(p->repeat_penalty))
        return osc_error(OSC_ERR_INVALID_ARG, "sampler: NaN parameter");
    if (p->min_p > 1.0f)
        return osc_error(OSC_ERR_INVALID_ARG, "sampler: min_p %g > 1", (double)p->min_p);
    if (p->repeat_penalty < 0.0f || isinf(p->repeat_penalty))
        return osc_error(OSC_ERR_INVALID_ARG, "sampler: repeat_penalty %g must be finite and >= 0",
                         (double)p->repeat_penalty);
    if (isinf(p->temperature))
        return osc_error(OSC_ERR_INVALID_ARG, "sampler: infinite temperature");

    osc_sampler *s = calloc(1, sizeof *s);
    if (!s) return osc_error(OSC_ERR_OOM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->stamp = calloc((size_t)n_vocab, sizeof *s->stamp);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->tmp = malloc((size_t)n_vocab * sizeof *s->tmp);
    if (!s->stamp || !s->cand || !s->tmp) {
        osc_sampler_free(s);
        return osc_error(OSC_ERR_OOM, "sampler: out of memory for vocab %d", n_vocab);
    }
    s->epoch = 0;
    osc_sampler_reseed(s, p->seed);
    *out = s;
    return OSC_OK;
}

void osc_sampler_free(osc_sampler *s) {
    if (!s) return;
    free(s->stamp);
    free(s->cand);
    free(s->tmp);
    free(s);
}

/* HF RepetitionPenaltyLogitsProcessor over distinct ids of the last window of history. */
static void apply_repeat_penalty(osc_sampler *s, float *logits, const int32_t *hist, int n_hist) {
    float pen = s->p.repeat_penalty;
    if (!hist || n_hist <= 0 || pen == 0.0f || pen == 1.0f) return;
    int start = 0;
    if (s->p.repeat_last_n > 0 && n_hist > s->p.repeat_last_n) start = n_hist - s->p.repeat_last_n;
    if (++s->epoch == 0) { /* wrapped: forget all stamps */
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof *s->stamp);
        s->epoch = 1;
    }
    for (int j = start; j < n_hist; j++) {
        int32_t t = hist[j];
        if (t < 0 || t >= s->n_vocab || s->stamp[t] == s->epoch) continue;
        s->stamp[t] = s->epoch;
        float l = logits[t];
        logits[t] = l < 0.0f ? l * pen : l / pen;
    }
}

/* k-th largest value (k in [1, n]) of a[0..n), reordering a. Quickselect with a 3-way partition
 * so long runs of equal values (e.g. masked -inf) stay linear. No NaN allowed. */
static float kth_largest(float *a, int n, int k) {
    int lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        float pivot = (x < y) ? ((y < z) ? y : (x < z ? z : x)) : ((x < z) ? x : (y < z ? z : y));
        int lt = lo, i = lo, gt = hi;
        while (i <= gt) { /* descending: [lo,lt) > pivot, [lt,gt] == pivot, (gt,hi] < pivot */
            if (a[i] > pivot) {
                float t = a[lt]; a[lt] = a[i]; a[i] = t;
                lt++; i++;
            } else if (a[i] < pivot) {
                float t = a[gt]; a[gt] = a[i]; a[i] = t;
                gt--;
            } else {
                i++;
            }
        }
        if (target < lt) hi = lt - 1;
        else if (target > gt) lo = gt + 1;
        else return pivot;
    }
    return a[lo];
}

static int cand_cmp_desc(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->v > b->v) return -1;
    if (a->v < b->v) return 1;
    return (a->i > b->i) - (a->i < b->i); /* ties: lower id first */
}

int32_t osc_sampler_sample(osc_sampler *s, float *logits, const int32_t *history, int n_history) {
    if (!s || !logits) return 0;
    const int n = s->n_vocab;
    apply_repeat_penalty(s, logits, history, n_history);

    /* greedy: first index of the maximum (NaN never compares greater) */
    if (!(s->p.temperature > 0.0f)) {
        int best = 0;
        float bv = -INFINITY;
        for (int i = 0; i < n; i++)
            if (logits[i] > bv) { bv = logits[i]; best = i; }
        return best;
    }

    const float temp = s->p.temperature;
    float m = -INFINITY;
    int arg = 0;
    for (int i = 0; i < n; i++) {
        float v = logits[i] / temp;
        if (isnan(v)) v = -INFINITY; /* NaN -> -inf keeps selection well defined */
        logits[i] = v;
        if (v > m) { m = v; arg = i; }
    }
    if (m == -INFINITY || isinf(m)) return arg; /* all masked, or an +inf logit dominates */

    cand *c = s->cand;
    int nc = 0;
    double zrem = 0; /* sum of exp(v - m) over what remains after the previous filter */
    const int top_k = s->p.top_k;
    const int use_top_p = s->p.top_p > 0.0f && s->p.top_p < 1.0f;

    if (top_k > 0 && top_k < n) {
        memcpy(s->tmp, logits, (size_t)n * sizeof *logits);
        float kth = kth_largest(s->tmp, n, top_k);
        for (int i = 0; i < n; i++)
            if (logits[i] >= kth) {
                c[nc].v = logits[i];
                c[nc].i = i;
                nc++;
                zrem += exp((double)logits[i] - m);
            }
    } else if (use_top_p) {
        for (int i = 0; i < n; i++) zrem += exp((double)logits[i] - m);
        /* Top-p only needs the head of the sorted order: collect tokens above a probability
         * threshold; once their mass reaches top_p, everything below the threshold would be cut
         * anyway (it sorts after all of them). Lower the threshold until that holds. */
        const double need = (double)s->p.top_p * zrem;
        for (double t = 1e-3;; t *= 1e-3) {
            double thr = (t < 1e-300) ? -INFINITY : (double)m + log(t * zrem);
            double mass = 0;
            nc = 0;
            for (int i = 0; i < n; i++)
                if ((double)logits[i] >= thr) {
                    c[nc].v = logits[i];
                    c[nc].i = i;
                    nc++;
                    mass += exp((double)logits[i] - m);
                }
            if (mass >= need || thr == -INFINITY || nc == n) break;
        }
    } else {
        for (int i = 0; i < n; i++) {
            c[i].v = logits[i];
            c[i].i = i;
        }
        nc = n;
    }

    if (use_top_p && nc > 1) {
        qsort(c, (size_t)nc, sizeof *c, cand_cmp_desc);
        const double need = (double)s->p.top_p * zrem;
        double cum = 0;
        int keep = nc;
        for (int j = 0; j < nc; j++) {
            cum += exp((double)c[j].v - m);
            if (cum >= need) {
                keep = j + 1;
                break;
            }
        }
        nc = keep;
    }

    if (s->p.min_p > 0.0f && nc > 1) {
        /* keep p >= min_p * p_max, i.e. exp(v - m) >= min_p; the max always survives */
        const double mp = s->p.min_p;
        int w = 0;
        for (int j = 0; j < nc; j++)
            if (exp((double)c[j].v - m) >= mp) c[w++] = c[j];
        nc = w;
    }

    /* weights exp(v - m) computed once into tmp (top-k no longer needs it) */
    float *w = s->tmp;
    double total = 0;
    for (int j = 0; j < nc; j++) total += (w[j] = expf(c[j].v - m));
    if (!(total > 0)) return arg;
    double u = rng_uniform(s->rng) * total;
    double cum = 0;
    int last = -1;
    for (int j = 0; j < nc; j++) {
        if (w[j] <= 0) continue;
        last = j;
        cum += w[j];
        if (u < cum) return c[j].i;
    }
    return last >= 0 ? c[last].i : arg; /* rounding at the very end of the scan */
}
