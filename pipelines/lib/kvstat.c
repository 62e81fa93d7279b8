/* pipelines/lib/kvstat.c: the KV-cache fidelity report, see kvstat.h and docs/KVSTAT.md. */
#include "kvstat.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "kvcache/kv_quant.h"
#include "kvcache/kvcache.h"
#include "plot.h"

const double osc_kvstat_pcts[OSC_KVSTAT_NPCT] = {5, 25, 50, 75, 95};

static const char *const k_kind_names[OSC_TOK_KINDS] = {"text", "image", "audio", "video", "sink"};

const char *osc_tok_kind_name(int kind) {
    return kind >= 0 && kind < OSC_TOK_KINDS ? k_kind_names[kind] : "?";
}

osc_kvstat_params osc_kvstat_default_params(void) {
    osc_kvstat_params p = {NULL, 64, 0, 0, 1, 512};
    return p;
}

/* ---- helpers ------------------------------------------------------------------------------- */

double osc_kvstat_kl(const float *ref, const float *x, int n) {
    double mr = -INFINITY, mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isnan(ref[i]) || isnan(x[i]) || ref[i] == INFINITY || x[i] == INFINITY) return INFINITY;
        if (ref[i] > mr) mr = ref[i];
        if (x[i] > mx) mx = x[i];
    }
    if (n <= 0 || mr == -INFINITY || mx == -INFINITY) return INFINITY;
    double sr = 0, sx = 0;
    for (int i = 0; i < n; i++) {
        sr += exp((double)ref[i] - mr);
        sx += exp((double)x[i] - mx);
    }
    double lzr = mr + log(sr), lzx = mx + log(sx), kl = 0;
    for (int i = 0; i < n; i++) {
        double lp = (double)ref[i] - lzr, lq = (double)x[i] - lzx, p = exp(lp);
        if (p > 0) kl += p * (lp - lq);
    }
    return kl < 0 ? 0 : kl; /* KL >= 0; only rounding can make it negative */
}

double osc_kvstat_rel_l2(const float *x, const float *ref, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i]) || isnan(ref[i])) return INFINITY;
        double d = (double)x[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

void osc_kvstat_stats(float *v, int n, osc_kvstat_kstats *st) {
    memset(st, 0, sizeof *st);
    st->count = n;
    if (n <= 0) {
        st->mean = st->min = st->max = NAN;
        for (int i = 0; i < OSC_KVSTAT_NPCT; i++) st->pct[i] = NAN;
        return;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_float);
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    st->mean = s / n;
    st->min = v[0];
    st->max = v[n - 1];
    for (int i = 0; i < OSC_KVSTAT_NPCT; i++) {
        double pos = osc_kvstat_pcts[i] / 100.0 * (n - 1);
        int lo = (int)floor(pos);
        int hi = lo + 1 < n ? lo + 1 : lo;
        double f = pos - lo;
        st->pct[i] = v[lo] + f * ((double)v[hi] - v[lo]);
    }
}

/* log-sum-exp of n logits minus logit[id]: the NLL of id in nats. */
static double nll_of(const float *lg, int n, int id) {
    double mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (lg[i] > mx) mx = lg[i];
    double s = 0;
    for (int i = 0; i < n; i++) s += exp((double)lg[i] - mx);
    return mx + log(s) - lg[id];
}

static int argmax_f(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void hadamard_rows(float *x, int rows, int hd) {
    for (int r = 0; r < rows; r++) osc_kvq_hadamard(x + (size_t)r * hd, hd);
}

/* ---- the shadow-cache probe ------------------------------------------------------------------ */

typedef struct kvs_probe {
    osc_kvstat_result *r;
    int L, Hq, Hkv, hd, T;
    int n_modes;
    osc_kv *sh[OSC_KVSTAT_MAX_MODES]; /* NULL: mode not available */
    int folded;                       /* the model's values are rotated (folded weights) */
    int need_plain, need_rot;
    int n_prefill;                    /* rows before this are prefill, the rest scored decode steps */
    int done;                         /* tokens through all layers so far */
    int max_rows;
    float *k, *v, *v2, *q, *att, *att2, *o; /* host scratch */
    double *num, *den;                /* [modes][L] pooled squared errors */
    double *step_num, *step_den;      /* [modes][L] of the current step */
} kvs_probe;

static osc_status dl_rows(float *dst, const osc_tensor *t, int r0, int n) {
    osc_tensor v = osc_tensor_rows(t, r0, n);
    return osc_tensor_download_f32(dst, &v, osc_tensor_nelem(&v));
}

static osc_status kvs_probe_fn(void *user, int layer, int n_seq, const int *seq_start, osc_kv **kv, const osc_tensor *q,
                               const osc_tensor *k, const osc_tensor *v, const osc_tensor *att, float scale) {
    (void)kv;
    kvs_probe *P = user;
    if (n_seq != 1) return osc_error(OSC_ERR_INVALID_ARG, "kvstat probe: one sequence expected, got %d", n_seq);
    const int r0 = seq_start[0], N = seq_start[1] - seq_start[0];
    if (N > P->max_rows || P->done + N > P->T)
        return osc_error(OSC_ERR_INVALID_ARG, "kvstat probe: %d rows after %d of %d tokens", N, P->done, P->T);
    const int Hkv = P->Hkv, Hq = P->Hq, hd = P->hd;
    const size_t kr = (size_t)Hkv * hd, qr = (size_t)Hq * hd;
    OSC_TRY(dl_rows(P->k, k, r0, N));
    float *kn = P->r->key_norm + (size_t)layer * P->T + P->done;
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (size_t j = 0; j < kr; j++) s += (double)P->k[i * kr + j] * P->k[i * kr + j];
        kn[i] = (float)sqrt(s);
    }
    int any = 0;
    for (int j = 0; j < P->n_modes; j++) any |= P->sh[j] != NULL;
    if (any) {
        OSC_TRY(dl_rows(P->v, v, r0, N));
        /* values in both bases as needed: plain (un-rotated) and rotated (H per head) */
        float *vplain = P->v, *vrot = P->v;
        if (P->folded && P->need_plain) {
            memcpy(P->v2, P->v, (size_t)N * kr * sizeof(float));
            hadamard_rows(P->v2, N * Hkv, hd);
            vplain = P->v2;
        } else if (!P->folded && P->need_rot) {
            memcpy(P->v2, P->v, (size_t)N * kr * sizeof(float));
            hadamard_rows(P->v2, N * Hkv, hd);
            vrot = P->v2;
        }
        const int eval = P->done >= P->n_prefill; /* a forward is all prefill or one decode step */
        float *aplain = P->att;
        if (eval) {
            OSC_TRY(dl_rows(P->q, q, r0, N));
            OSC_TRY(dl_rows(P->att, att, r0, N));
            if (P->folded) {
                memcpy(P->att2, P->att, (size_t)N * qr * sizeof(float));
                hadamard_rows(P->att2, N * Hq, hd);
                aplain = P->att2;
            }
        }
        int64_t nek[3] = {N, Hkv, hd}, neq[3] = {N, Hq, hd};
        osc_tensor kt = osc_tensor_make(P->k, OSC_F32, OSC_DEV_CPU, 3, nek);
        osc_tensor qt = osc_tensor_make(P->q, OSC_F32, OSC_DEV_CPU, 3, neq);
        osc_tensor ot = osc_tensor_make(P->o, OSC_F32, OSC_DEV_CPU, 3, neq);
        for (int j = 0; j < P->n_modes; j++) {
            if (!P->sh[j]) continue;
            int rot = P->r->modes[j].rotates;
            osc_tensor vt = osc_tensor_make(rot ? vrot : vplain, OSC_F32, OSC_DEV_CPU, 3, nek);
            OSC_TRY(osc_kv_store(P->sh[j], layer, &kt, &vt));
            if (!eval) continue;
            OSC_TRY(osc_kv_attend(P->sh[j], layer, &qt, &ot, scale));
            if (rot) hadamard_rows(P->o, N * Hq, hd); /* back to the plain value basis */
            double num = 0, den = 0;
            for (size_t i = 0; i < (size_t)N * qr; i++) {
                double d = (double)P->o[i] - aplain[i];
                num += d * d;
                den += (double)aplain[i] * aplain[i];
            }
            if (isnan(num)) num = INFINITY;
            size_t ix = (size_t)j * P->L + layer;
            P->num[ix] += num;
            P->den[ix] += den;
            double e = den > 0 ? sqrt(num / den) : num == 0 ? 0 : INFINITY;
            if (!(e <= P->r->modes[j].att_err_step_max[layer])) P->r->modes[j].att_err_step_max[layer] = e;
        }
    }
    if (layer == P->L - 1) {
        for (int j = 0; j < P->n_modes; j++)
            if (P->sh[j]) osc_kv_advance(P->sh[j], N);
        P->done += N;
    }
    return OSC_OK;
}

/* ---- one run of the model over the sequence (teacher forcing) -------------------------------- */

typedef void (*kvs_step_fn)(void *user, int step, const float *logits);

typedef struct kvs_seq {
    osc_llm *m;
    osc_llm_ctx *c;
    const osc_kvstat_input *in;
    int P, E, n_ctx, r_evict, mrope;
    float *lg; /* [V] */
} kvs_seq;

static osc_status run_seq(const kvs_seq *S, const char *mode, kvs_step_fn fn, void *user) {
    const osc_llm_config *cf = osc_llm_config_of(S->m);
    const osc_kvstat_input *in = S->in;
    const int T = in->n_tokens;
    osc_kv_params kp = {mode, cf->n_layers, cf->n_kv_heads, cf->head_dim, S->n_ctx, osc_llm_device(S->m),
                        osc_llm_act_dtype(S->m), S->r_evict};
    osc_kv *kv = NULL;
    OSC_TRY(osc_kv_new(&kp, &kv));
    osc_status s = OSC_OK;
    int32_t *posbuf = NULL;
    const int planes = S->mrope ? 3 : 1;
    if (in->pos) {
        posbuf = malloc((size_t)planes * (S->P > 0 ? S->P : 1) * sizeof *posbuf);
        if (!posbuf) s = osc_error(OSC_ERR_OOM, "kvstat: positions");
    }
    int mi = 0; /* next multimodal row */
    if (s == OSC_OK && S->P > 0) {
        int ss[2] = {0, S->P};
        if (posbuf)
            for (int a = 0; a < planes; a++)
                for (int i = 0; i < S->P; i++) posbuf[a * S->P + i] = in->pos[(size_t)a * T + i];
        while (mi < in->n_mm && in->mm_rows[mi] < S->P) mi++;
        osc_tensor mmv;
        if (mi > 0) mmv = osc_tensor_rows(in->mm_embeds, 0, mi);
        osc_llm_batch b = {1, ss, in->tokens, posbuf, &kv, 0, mi, in->mm_rows, mi > 0 ? &mmv : NULL};
        s = osc_llm_forward(S->m, S->c, &b, NULL);
    }
    for (int j = 0; j < S->E && s == OSC_OK; j++) {
        const int t = S->P + j;
        int ss[2] = {0, 1};
        int32_t pstep[3];
        if (in->pos)
            for (int a = 0; a < planes; a++) pstep[a] = in->pos[(size_t)a * T + t];
        int n_mm = 0, zero = 0;
        osc_tensor mmv;
        if (mi < in->n_mm && in->mm_rows[mi] == t) {
            mmv = osc_tensor_rows(in->mm_embeds, mi, 1);
            n_mm = 1;
            mi++;
        }
        osc_llm_batch b = {1, ss, in->tokens + t, in->pos ? pstep : NULL, &kv, 0, n_mm, &zero, n_mm ? &mmv : NULL};
        s = osc_llm_forward(S->m, S->c, &b, S->lg);
        if (s == OSC_OK) fn(user, j, S->lg);
    }
    free(posbuf);
    osc_kv_free(kv);
    return s;
}

typedef struct kvs_ref_acc {
    float *ref; /* [E][V] */
    const int32_t *tokens;
    int T, P, V;
    double nll;
    int n_nll;
} kvs_ref_acc;

static void ref_step(void *user, int step, const float *lg) {
    kvs_ref_acc *a = user;
    memcpy(a->ref + (size_t)step * a->V, lg, (size_t)a->V * sizeof(float));
    int t = a->P + step;
    if (t + 1 < a->T) {
        a->nll += nll_of(lg, a->V, a->tokens[t + 1]);
        a->n_nll++;
    }
}

typedef struct kvs_mode_acc {
    osc_kvstat_mode *md;
    const float *ref;
    const int32_t *tokens;
    int T, P, V;
    double nll;
    int n_nll;
} kvs_mode_acc;

static void mode_step(void *user, int step, const float *lg) {
    kvs_mode_acc *a = user;
    const float *rf = a->ref + (size_t)step * a->V;
    a->md->kl[step] = osc_kvstat_kl(rf, lg, a->V);
    a->md->top1[step] = argmax_f(rf, a->V) == argmax_f(lg, a->V);
    int t = a->P + step;
    if (t + 1 < a->T) {
        a->nll += nll_of(lg, a->V, a->tokens[t + 1]);
        a->n_nll++;
    }
}

static void run_mode_e2e(const kvs_seq *S, osc_kvstat_mode *md, const float *ref, int V) {
    kvs_mode_acc a = {md, ref, S->in->tokens, S->in->n_tokens, S->P, V, 0, 0};
    osc_status s = run_seq(S, md->name, mode_step, &a);
    if (s != OSC_OK) {
        md->e2e_ok = 0;
        snprintf(md->e2e_msg, sizeof md->e2e_msg, "%s", osc_last_error());
        return;
    }
    md->e2e_ok = 1;
    double ks = 0, km = 0;
    int agree = 0;
    for (int j = 0; j < S->E; j++) {
        ks += md->kl[j];
        if (md->kl[j] > km || isnan(md->kl[j])) km = md->kl[j];
        agree += md->top1[j];
    }
    md->kl_mean = ks / S->E;
    md->kl_max = km;
    md->top1_rate = (double)agree / S->E;
    md->nll_mean = a.n_nll ? a.nll / a.n_nll : NAN;
}

/* ---- the run ----------------------------------------------------------------------------------- */

static osc_status parse_modes(const char *list, osc_kvstat_result *r) {
    char buf[256];
    if (!list) list = osc_kv_modes();
    if (strlen(list) >= sizeof buf) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: mode list too long");
    strcpy(buf, list);
    r->n_modes = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        size_t n = strlen(t);
        while (n && t[n - 1] == ' ') t[--n] = 0;
        if (!n) continue;
        int rot = osc_kv_mode_rotates(t);
        if (rot < 0) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: unknown KV cache mode '%s' (known: %s)", t, osc_kv_modes());
        for (int j = 0; j < r->n_modes; j++)
            if (!strcmp(r->modes[j].name, t)) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: mode '%s' given twice", t);
        if (r->n_modes == OSC_KVSTAT_MAX_MODES)
            return osc_error(OSC_ERR_INVALID_ARG, "kvstat: at most %d modes", OSC_KVSTAT_MAX_MODES);
        osc_kvstat_mode *md = &r->modes[r->n_modes++];
        snprintf(md->name, sizeof md->name, "%s", t);
        md->rotates = rot;
    }
    if (r->n_modes == 0) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: no KV cache mode given");
    return OSC_OK;
}

/* Older tokens read from quantised storage at the last decode step (token T-1 attends to
 * [0, T-1) from the cache; the block modes keep floor(T / R) * R tokens packed after its store). */
static int quantized_older(const char *mode, int T, int R) {
    if (!strcmp(mode, "bf16")) return 0;
    if (!strcmp(mode, "int8")) return T - 1;
    int nq = T / R * R;
    return nq < T - 1 ? nq : T - 1;
}

void osc_kvstat_free(osc_kvstat_result *r) {
    if (!r) return;
    for (int j = 0; j < OSC_KVSTAT_MAX_MODES; j++) {
        free(r->modes[j].att_err);
        free(r->modes[j].att_err_step_max);
        free(r->modes[j].kl);
        free(r->modes[j].top1);
    }
    free(r->key_norm);
    free(r->kind);
    free(r->kstats);
    free(r);
}

osc_status osc_kvstat_run(osc_llm *m, const osc_kvstat_input *in, const osc_kvstat_params *pp, osc_kvstat_result **out) {
    *out = NULL;
    osc_kvstat_params p = pp ? *pp : osc_kvstat_default_params();
    const osc_llm_config *cf = osc_llm_config_of(m);
    const int T = in ? in->n_tokens : 0, L = cf->n_layers, V = cf->vocab_size;
    if (!in || T < 1 || !in->tokens) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: no tokens");
    if (p.n_eval < 1) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: n_eval %d must be >= 1", p.n_eval);
    if (p.n_sink < 0 || p.r_evict < 0 || p.n_ctx < 0 || p.max_tokens < 0)
        return osc_error(OSC_ERR_INVALID_ARG, "kvstat: negative parameter");
    if (in->n_mm < 0 || (in->n_mm > 0 && (!in->mm_rows || !in->mm_embeds)))
        return osc_error(OSC_ERR_INVALID_ARG, "kvstat: %d multimodal rows without rows/embeddings", in->n_mm);
    for (int i = 0; i < in->n_mm; i++)
        if (in->mm_rows[i] < 0 || in->mm_rows[i] >= T || (i && in->mm_rows[i] <= in->mm_rows[i - 1]))
            return osc_error(OSC_ERR_INVALID_ARG, "kvstat: multimodal row %d out of order or outside [0, %d)", in->mm_rows[i], T);
    if (in->kinds)
        for (int i = 0; i < T; i++)
            if (in->kinds[i] >= OSC_TOK_KINDS) return osc_error(OSC_ERR_INVALID_ARG, "kvstat: token %d has kind %d", i, in->kinds[i]);
    const int E = p.n_eval < T ? p.n_eval : T, P = T - E;
    const int n_ctx = p.n_ctx ? p.n_ctx : T;
    if (n_ctx < T) return osc_error(OSC_ERR_CONTEXT, "kvstat: %d tokens do not fit a context of %d", T, n_ctx);
    const int max_rows = p.max_tokens ? p.max_tokens : 512;

    osc_kvstat_result *r = calloc(1, sizeof *r);
    if (!r) return osc_error(OSC_ERR_OOM, "kvstat: out of memory");
    osc_status s = parse_modes(p.modes, r);
    if (s != OSC_OK) {
        osc_kvstat_free(r);
        return s;
    }
    snprintf(r->model, sizeof r->model, "%s", osc_llm_describe(m));
    r->n_layers = L;
    r->n_kv_heads = cf->n_kv_heads;
    r->n_heads = cf->n_heads;
    r->head_dim = cf->head_dim;
    r->vocab = V;
    r->n_tokens = T;
    r->n_prefill = P;
    r->n_eval = E;
    r->n_ctx = n_ctx;
    r->r_evict = p.r_evict ? p.r_evict : 256;
    r->n_sink = p.n_sink < T ? p.n_sink : T;
    r->v_rotated_at_entry = osc_llm_v_rotated(m);
    r->fold_kl_mean = NAN;
    r->ref_nll_mean = NAN;
    r->key_norm = calloc((size_t)L * T, sizeof *r->key_norm);
    r->kind = malloc((size_t)T);
    r->kstats = calloc((size_t)L * OSC_TOK_KINDS, sizeof *r->kstats);
    int ok = r->key_norm && r->kind && r->kstats;
    for (int j = 0; j < r->n_modes && ok; j++) {
        osc_kvstat_mode *md = &r->modes[j];
        md->att_err = calloc((size_t)L, sizeof(double));
        md->att_err_step_max = calloc((size_t)L, sizeof(double));
        md->kl = calloc((size_t)E, sizeof(double));
        md->top1 = calloc((size_t)E, 1);
        ok = md->att_err && md->att_err_step_max && md->kl && md->top1;
        md->att_err_mean = md->att_err_max = NAN;
        md->kl_mean = md->kl_max = md->top1_rate = md->nll_mean = NAN;
        md->quantized_tokens = quantized_older(md->name, T, r->r_evict);
        osc_kv_params kp = {md->name, L, cf->n_kv_heads, cf->head_dim, n_ctx, OSC_DEV_CPU, OSC_F32, p.r_evict};
        md->bits_per_element = osc_kv_bits_per_element(&kp);
    }
    if (!ok) {
        osc_kvstat_free(r);
        return osc_error(OSC_ERR_OOM, "kvstat: out of memory for the results");
    }
    for (int i = 0; i < T; i++) r->kind[i] = in->kinds ? in->kinds[i] : OSC_TOK_TEXT;
    for (int i = 0; i < r->n_sink; i++) r->kind[i] = OSC_TOK_SINK;

    /* scratch and shadow caches */
    kvs_probe pr;
    memset(&pr, 0, sizeof pr);
    pr.r = r;
    pr.L = L;
    pr.Hq = cf->n_heads;
    pr.Hkv = cf->n_kv_heads;
    pr.hd = cf->head_dim;
    pr.T = T;
    pr.n_modes = r->n_modes;
    pr.folded = osc_llm_v_rotated(m);
    pr.max_rows = max_rows;
    pr.n_prefill = P;
    const size_t kr = (size_t)pr.Hkv * pr.hd, qr = (size_t)pr.Hq * pr.hd;
    pr.k = malloc((size_t)max_rows * kr * sizeof(float));
    pr.v = malloc((size_t)max_rows * kr * sizeof(float));
    pr.v2 = malloc((size_t)max_rows * kr * sizeof(float));
    pr.q = malloc((size_t)max_rows * qr * sizeof(float));
    pr.att = malloc((size_t)max_rows * qr * sizeof(float));
    pr.att2 = malloc((size_t)max_rows * qr * sizeof(float));
    pr.o = malloc((size_t)max_rows * qr * sizeof(float));
    pr.num = calloc((size_t)r->n_modes * L, sizeof(double));
    pr.den = calloc((size_t)r->n_modes * L, sizeof(double));
    float *ref = malloc((size_t)E * V * sizeof(float)), *ref2 = NULL;
    float *lg = malloc((size_t)V * sizeof(float));
    osc_llm_ctx *ctx = NULL;
    if (!pr.k || !pr.v || !pr.v2 || !pr.q || !pr.att || !pr.att2 || !pr.o || !pr.num || !pr.den || !ref || !lg)
        s = osc_error(OSC_ERR_OOM, "kvstat: out of memory for scratch (%d rows) and %d x %d reference logits", max_rows, E, V);
    if (s == OSC_OK) s = osc_llm_ctx_new(m, max_rows, &ctx);
    int any_rot = 0, hd_pow2 = osc_kvq_is_pow2(cf->head_dim);
    for (int j = 0; j < r->n_modes && s == OSC_OK; j++) {
        osc_kvstat_mode *md = &r->modes[j];
        any_rot |= md->rotates;
        if ((md->rotates || pr.folded) && !hd_pow2) {
            /* the probe would need the Hadamard to move values between bases */
            snprintf(md->att_msg, sizeof md->att_msg, "head_dim %d is not a power of two", cf->head_dim);
            continue;
        }
        osc_kv_params kp = {md->name, L, cf->n_kv_heads, cf->head_dim, n_ctx, OSC_DEV_CPU, OSC_F32, p.r_evict};
        if (osc_kv_new(&kp, &pr.sh[j]) != OSC_OK) {
            snprintf(md->att_msg, sizeof md->att_msg, "%s", osc_last_error());
            pr.sh[j] = NULL;
            continue;
        }
        md->att_ok = 1;
        if (md->rotates) pr.need_rot = 1;
        else pr.need_plain = 1;
    }

    /* 1. the bf16 reference, with the shadow caches riding on its probe */
    kvs_seq S = {m, ctx, in, P, E, n_ctx, p.r_evict, cf->rope_type == OSC_ROPE_MROPE, lg};
    kvs_ref_acc ra = {ref, in->tokens, T, P, V, 0, 0};
    if (s == OSC_OK) {
        osc_llm_ctx_set_probe(ctx, kvs_probe_fn, &pr);
        s = run_seq(&S, "bf16", ref_step, &ra);
        osc_llm_ctx_set_probe(ctx, NULL, NULL);
    }
    for (int j = 0; j < r->n_modes; j++) osc_kv_free(pr.sh[j]);
    if (s == OSC_OK) {
        r->ref_nll_mean = ra.n_nll ? ra.nll / ra.n_nll : NAN;
        for (int j = 0; j < r->n_modes; j++) {
            osc_kvstat_mode *md = &r->modes[j];
            if (!md->att_ok) continue;
            double sum = 0, mx = 0;
            for (int l = 0; l < L; l++) {
                double num = pr.num[(size_t)j * L + l], den = pr.den[(size_t)j * L + l];
                double e = den > 0 ? sqrt(num / den) : num == 0 ? 0 : INFINITY;
                md->att_err[l] = e;
                sum += e;
                if (!(e <= mx)) mx = e;
            }
            md->att_err_mean = sum / L;
            md->att_err_max = mx;
        }
    }

    /* 2. end to end: non-rotating modes on the weights as they are, then the rotating ones */
    for (int pass = 0; pass < 2 && s == OSC_OK; pass++) {
        const float *rf = ref;
        if (pass == 1) {
            if (!any_rot) break;
            if (!osc_llm_v_rotated(m)) {
                if (!hd_pow2) {
                    for (int j = 0; j < r->n_modes; j++)
                        if (r->modes[j].rotates)
                            snprintf(r->modes[j].e2e_msg, sizeof r->modes[j].e2e_msg,
                                     "head_dim %d is not a power of two: no value rotation", cf->head_dim);
                    break;
                }
                s = osc_llm_fold_v_rotation(m);
                if (s != OSC_OK) break;
                r->folded_here = 1;
                /* the rotating modes are compared with bf16 on the same (folded) weights */
                ref2 = malloc((size_t)E * V * sizeof(float));
                if (!ref2) {
                    s = osc_error(OSC_ERR_OOM, "kvstat: reference logits");
                    break;
                }
                kvs_ref_acc r2 = {ref2, in->tokens, T, P, V, 0, 0};
                s = run_seq(&S, "bf16", ref_step, &r2);
                if (s != OSC_OK) break;
                double f = 0;
                for (int j = 0; j < E; j++) f += osc_kvstat_kl(ref + (size_t)j * V, ref2 + (size_t)j * V, V);
                r->fold_kl_mean = f / E;
                rf = ref2;
            }
        }
        for (int j = 0; j < r->n_modes; j++) {
            osc_kvstat_mode *md = &r->modes[j];
            if (md->rotates != pass) continue;
            run_mode_e2e(&S, md, rf, V);
        }
    }

    /* 3. key-norm statistics per layer and kind */
    if (s == OSC_OK) {
        float *tmp = malloc((size_t)T * sizeof(float));
        if (!tmp) s = osc_error(OSC_ERR_OOM, "kvstat: statistics");
        for (int l = 0; l < L && s == OSC_OK; l++)
            for (int kd = 0; kd < OSC_TOK_KINDS; kd++) {
                int n = 0;
                for (int t = 0; t < T; t++)
                    if (r->kind[t] == kd) tmp[n++] = r->key_norm[(size_t)l * T + t];
                osc_kvstat_stats(tmp, n, &r->kstats[(size_t)l * OSC_TOK_KINDS + kd]);
            }
        free(tmp);
    }

    free(pr.k), free(pr.v), free(pr.v2), free(pr.q), free(pr.att), free(pr.att2), free(pr.o);
    free(pr.num), free(pr.den), free(ref), free(ref2), free(lg);
    osc_llm_ctx_free(ctx);
    if (s != OSC_OK) {
        osc_kvstat_free(r);
        return s;
    }
    *out = r;
    return OSC_OK;
}

/* ---- JSON ---------------------------------------------------------------------------------------- */

static cJSON *num_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }
static void add_num(cJSON *o, const char *k, double v) { cJSON_AddItemToObject(o, k, num_or_null(v)); }
static cJSON *darr(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, num_or_null(v[i]));
    return a;
}

static cJSON *kstats_json(const osc_kvstat_kstats *st) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "count", st->count);
    add_num(o, "mean", st->mean);
    add_num(o, "min", st->min);
    add_num(o, "max", st->max);
    for (int i = 0; i < OSC_KVSTAT_NPCT; i++) {
        char k[8];
        snprintf(k, sizeof k, "p%d", (int)osc_kvstat_pcts[i]);
        add_num(o, k, st->pct[i]);
    }
    return o;
}

void *osc_kvstat_to_json(const osc_kvstat_result *r) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddStringToObject(j, "model", r->model);
    cJSON_AddNumberToObject(j, "layers", r->n_layers);
    cJSON_AddNumberToObject(j, "heads", r->n_heads);
    cJSON_AddNumberToObject(j, "kv_heads", r->n_kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", r->head_dim);
    cJSON_AddNumberToObject(j, "vocab", r->vocab);
    cJSON_AddNumberToObject(j, "tokens", r->n_tokens);
    cJSON_AddNumberToObject(j, "prefill_tokens", r->n_prefill);
    cJSON_AddNumberToObject(j, "eval_steps", r->n_eval);
    cJSON_AddNumberToObject(j, "ctx", r->n_ctx);
    cJSON_AddNumberToObject(j, "r_evict", r->r_evict);
    cJSON_AddNumberToObject(j, "sink_tokens", r->n_sink);
    cJSON_AddBoolToObject(j, "v_rotated_at_entry", r->v_rotated_at_entry);
    cJSON_AddBoolToObject(j, "folded_here", r->folded_here);
    add_num(j, "fold_kl_mean", r->fold_kl_mean);
    add_num(j, "ref_nll_mean", r->ref_nll_mean);
    cJSON *ms = cJSON_AddArrayToObject(j, "modes");
    for (int i = 0; ms && i < r->n_modes; i++) {
        const osc_kvstat_mode *md = &r->modes[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(ms, o);
        cJSON_AddStringToObject(o, "mode", md->name);
        cJSON_AddBoolToObject(o, "rotates", md->rotates);
        add_num(o, "bits_per_element", md->bits_per_element);
        cJSON_AddNumberToObject(o, "quantized_tokens", md->quantized_tokens);
        cJSON *a = cJSON_AddObjectToObject(o, "attention");
        if (a) {
            cJSON_AddBoolToObject(a, "ok", md->att_ok);
            if (!md->att_ok) cJSON_AddStringToObject(a, "error", md->att_msg);
            else {
                add_num(a, "mean", md->att_err_mean);
                add_num(a, "max", md->att_err_max);
                cJSON_AddItemToObject(a, "per_layer", darr(md->att_err, r->n_layers));
                cJSON_AddItemToObject(a, "per_layer_step_max", darr(md->att_err_step_max, r->n_layers));
            }
        }
        cJSON *e = cJSON_AddObjectToObject(o, "end_to_end");
        if (e) {
            cJSON_AddBoolToObject(e, "ok", md->e2e_ok);
            if (!md->e2e_ok) cJSON_AddStringToObject(e, "error", md->e2e_msg);
            else {
                add_num(e, "kl_mean", md->kl_mean);
                add_num(e, "kl_max", md->kl_max);
                add_num(e, "top1_rate", md->top1_rate);
                add_num(e, "nll_mean", md->nll_mean);
                cJSON_AddItemToObject(e, "kl", darr(md->kl, r->n_eval));
                cJSON *t = cJSON_AddArrayToObject(e, "top1");
                for (int s = 0; t && s < r->n_eval; s++) cJSON_AddItemToArray(t, cJSON_CreateBool(md->top1[s]));
            }
        }
    }
    cJSON *kn = cJSON_AddObjectToObject(j, "key_norms");
    if (kn) {
        cJSON *kinds = cJSON_AddArrayToObject(kn, "token_kinds");
        for (int t = 0; kinds && t < r->n_tokens; t++) cJSON_AddItemToArray(kinds, cJSON_CreateString(osc_tok_kind_name(r->kind[t])));
        cJSON *pl = cJSON_AddArrayToObject(kn, "per_layer");
        for (int l = 0; pl && l < r->n_layers; l++) {
            cJSON *o = cJSON_CreateObject();
            if (!o) break;
            cJSON_AddItemToArray(pl, o);
            cJSON_AddNumberToObject(o, "layer", l);
            for (int k = 0; k < OSC_TOK_KINDS; k++) {
                const osc_kvstat_kstats *st = &r->kstats[(size_t)l * OSC_TOK_KINDS + k];
                if (st->count) cJSON_AddItemToObject(o, osc_tok_kind_name(k), kstats_json(st));
            }
        }
        cJSON *vals = cJSON_AddArrayToObject(kn, "values");
        for (int l = 0; vals && l < r->n_layers; l++) {
            cJSON *row = cJSON_CreateArray();
            if (!row) break;
            cJSON_AddItemToArray(vals, row);
            for (int t = 0; t < r->n_tokens; t++) cJSON_AddItemToArray(row, num_or_null(r->key_norm[(size_t)l * r->n_tokens + t]));
        }
    }
    return j;
}

/* ---- PNG ----------------------------------------------------------------------------------------- */

uint32_t osc_kvstat_kind_color(int kind) {
    static const uint32_t c[OSC_TOK_KINDS] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0x9467bd, 0xd62728};
    return kind >= 0 && kind < OSC_TOK_KINDS ? c[kind] : 0x000000;
}

uint32_t osc_kvstat_mode_color(const char *mode) {
    static const struct { const char *n; uint32_t c; } t[] = {
        {"bf16", 0x7f7f7f}, {"int8", 0x8c564b}, {"kivi2", 0xd62728}, {"kivi4", 0xff9896},
        {"rot2", 0xbcbd22}, {"oscar2", 0x1f77b4}, {"oscar4", 0x17becf},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(mode, t[i].n)) return t[i].c;
    return 0x000000;
}

static int legend_width(const char *const *names, int n, int scale) {
    int w = 0;
    for (int i = 0; i < n; i++) {
        int x = osc_plot_text_width(names[i], scale);
        if (x > w) w = x;
    }
    return w + 18 * scale;
}

osc_status osc_kvstat_plot(const osc_kvstat_result *r, int layer, const char *png_path) {
    if (layer < 0) layer = r->n_layers / 2;
    if (layer >= r->n_layers) return osc_error(OSC_ERR_INVALID_ARG, "kvstat plot: layer %d of %d", layer, r->n_layers);
    osc_plot *pl;
    OSC_TRY(osc_plot_new(OSC_KVSTAT_PNG_W, OSC_KVSTAT_PNG_H, 0xffffff, &pl));
    const int T = r->n_tokens;
    char title[160];

    /* panel 1: key norm per token at one layer, coloured by kind */
    osc_plot_axes a1 = {100, 50, 960, 380, -0.5 - 0.01 * T, T - 0.5 + 0.01 * T, 0, 0, 1};
    double ymax = 0;
    for (int t = 0; t < T; t++)
        if (r->key_norm[(size_t)layer * T + t] > ymax) ymax = r->key_norm[(size_t)layer * T + t];
    a1.ymax = ymax * 1.05;
    snprintf(title, sizeof title, "key L2 norm per token (all kv heads), layer %d of %d", layer, r->n_layers);
    osc_plot_draw_axes(pl, &a1, title, "token position", "key norm");
    int rad = T <= 256 ? 2 : T <= 2048 ? 1 : 0;
    const char *names[OSC_TOK_KINDS + OSC_KVSTAT_MAX_MODES];
    uint32_t cols[OSC_TOK_KINDS + OSC_KVSTAT_MAX_MODES];
    int nl = 0;
    /* text first, rarer kinds on top of it, sink last */
    for (int k = 0; k < OSC_TOK_KINDS; k++) {
        int any = 0;
        for (int t = 0; t < T; t++) {
            if (r->kind[t] != k) continue;
            double x = t, y = r->key_norm[(size_t)layer * T + t];
            osc_plot_series(pl, &a1, &x, &y, 1, osc_kvstat_kind_color(k), 0, k == OSC_TOK_SINK ? rad + 1 : rad);
            any = 1;
        }
        if (any) {
            names[nl] = osc_tok_kind_name(k);
            cols[nl++] = osc_kvstat_kind_color(k);
        }
    }
    osc_plot_legend(pl, a1.px1 - 6 - legend_width(names, nl, 2), a1.py0 + 6, names, cols, nl, 2);

    /* panel 2: per-layer attention error per mode */
    osc_plot_axes a2 = {100, 480, 960, 790, -0.25, r->n_layers - 0.75, 0, 0, 1};
    double emax = 0;
    for (int j = 0; j < r->n_modes; j++)
        if (r->modes[j].att_ok)
            for (int l = 0; l < r->n_layers; l++)
                if (isfinite(r->modes[j].att_err[l]) && r->modes[j].att_err[l] > emax) emax = r->modes[j].att_err[l];
    a2.ymax = emax * 1.05;
    snprintf(title, sizeof title, "attention output rel. L2 error vs bf16 (%d decode steps)", r->n_eval);
    osc_plot_draw_axes(pl, &a2, title, "layer", "rel. error");
    nl = 0;
    double *xs = malloc((size_t)r->n_layers * sizeof *xs);
    if (!xs) {
        osc_plot_free(pl);
        return osc_error(OSC_ERR_OOM, "kvstat plot");
    }
    for (int l = 0; l < r->n_layers; l++) xs[l] = l;
    for (int j = 0; j < r->n_modes; j++) {
        const osc_kvstat_mode *md = &r->modes[j];
        if (!md->att_ok) continue;
        uint32_t c = osc_kvstat_mode_color(md->name);
        osc_plot_series(pl, &a2, xs, md->att_err, r->n_layers, c, 1, 2);
        names[nl] = md->name;
        cols[nl++] = c;
    }
    free(xs);
    if (nl) osc_plot_legend(pl, a2.px1 - 6 - legend_width(names, nl, 2), a2.py0 + 6, names, cols, nl, 2);
    osc_status s = osc_plot_write_png(pl, png_path);
    osc_plot_free(pl);
    return s;
}
