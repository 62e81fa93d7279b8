/* oscar ppl: perplexity of a model on a text file, and how far each quantized KV cache mode
 * moves the model's next-token distributions away from the unquantized cache (docs/QUALITY.md).
 *
 * Method (llama.cpp's perplexity, with the KV cache made to matter):
 *   The text is tokenized (plain text: special-token strings are not parsed; no BOS is added).
 *   Window k holds tokens w = t[k*S .. k*S + N) (N = --ctx, S = --stride, default N: windows do
 *   not overlap). Only the second half is scored: tokens w[j], j in [N/2, N), each predicted from
 *   the logits at position j-1, so every scored token sees at least N/2 tokens of context.
 *   Each window starts from an empty cache of the mode being measured:
 *     1. prefill w[0 .. N/2) in forwards of at most --batch tokens (default 512); the logits of
 *        the last one predict w[N/2];
 *     2. feed w[N/2 .. N-1) in chunks of --chunk tokens (default 32) with a logit row per token.
 *   Why chunks: a forward attends to its own tokens in full precision (kvcache.h "current-token
 *   rule"), so one forward over the whole window would never read a quantized key for the
 *   scored tokens. In chunks, every scored token reads all tokens of earlier chunks from the
 *   cache as the mode stores them: packed, or still in the mode's full-precision residual window
 *   (--residual, default 256 tokens, for kivi/rot/oscar; int8 has none). --chunk 1 is exact
 *   token-by-token decoding; 32 keeps the cost of a window near one prefill.
 *   Reference: the mode "bf16" (unquantized: float32 on the CPU path, bf16 on CUDA). For every
 *   other mode and every scored position: KL(p_ref || p_mode) over the full vocabulary
 *   (natural log) and whether the argmax tokens agree. The reference log-probabilities are
 *   kept in a temporary file (scored positions x vocab x 4 bytes) so that the modes run one
 *   after another on one copy of the weights; the rotating modes (rot2, oscar2, oscar4) run
 *   last, after the value rotation is folded into the weights (osc_llm_fold_v_rotation).
 *   PPL = exp(mean NLL over all scored tokens); ± is exp's first-order error from the standard
 *   error of the mean NLL.
 * Exit codes: 0 ok, 1 runtime error, 2 usage error. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/device.h"
#include "core/fileio.h"
#include "kernels/ops.h"
#include "kvcache/kvcache.h"
#include "llm/model.h"
#include "llm/tokenizer.h"
#include "pipelines/cli.h"
#include "lib/args.h"

#define PPL_MAX_MODES 16
#define PPL_MAX_TEXT (256u << 20)

typedef struct ppl_opts {
    const char *model, *text, *device;
    const char *modes[PPL_MAX_MODES];
    char modes_buf[256];
    int n_modes;
    int ctx, stride, chunk, batch, residual, max_windows, threads, json, verbose, key_stats;
} ppl_opts;

typedef struct mode_res {
    const char *mode;
    double nll_sum, nll_sq, kl_sum, kl_max, seconds, bits;
    long n, agree;
    int rotates;
} mode_res;

static void usage_ppl(FILE *f) {
    fprintf(f,
            "usage: oscar ppl -m MODEL -f TEXT --ctx N [options]\n\n"
            "Perplexity over sliding windows of N tokens (the second half of each window is scored),\n"
            "and for every quantized KV cache mode the mean KL divergence of its next-token\n"
            "distributions from the unquantized (bf16) cache on the same positions, plus top-1\n"
            "agreement. The scored half is fed in chunks, so it attends to the cache as each mode\n"
            "stores it (see the top of pipelines/ppl.c and docs/QUALITY.md for the exact method).\n\n"
            "options:\n"
            "  -m, --model PATH      a .gguf file or a HuggingFace snapshot folder (required)\n"
            "  -f, --file TEXT       UTF-8 text to evaluate on (required)\n"
            "  -c, --ctx N           window length in tokens (required; even, >= 4)\n"
            "      --stride S        distance between window starts (default N: no overlap)\n"
            "      --kv MODE[,MODE]  cache modes (default bf16,int8,kivi4,kivi2,rot2,oscar4,oscar2;\n"
            "                        bf16 is always run first as the reference; built in: %s)\n"
            "      --max-windows W   evaluate at most W windows (default: all that fit)\n"
            "      --chunk C         tokens per forward in the scored half (default 32; 1 = decode)\n"
            "      --batch B         tokens per forward in the prefill half (default 512)\n"
            "      --residual R      full-precision residual window of kivi/rot/oscar modes, a\n"
            "                        multiple of 32 (default 256)\n"
            "      --device D        cpu, cuda or auto (default auto: cuda when a GPU is usable)\n"
            "  -t, --threads N       CPU threads (default: all cores)\n"
            "      --key-stats       also report per-layer statistics of the per-token key norm\n"
            "                        ||concat over KV heads of k|| (after RoPE, as OScaR's n_t) from\n"
            "                        the bf16 pass: mean, max, min, token 0, and max/min inside\n"
            "                        groups of 32 consecutive tokens (median and max over groups)\n"
            "      --json            print one JSON object instead of the table\n"
            "  -v, --verbose         more progress detail on stderr\n"
            "  -h, --help            this help\n",
            osc_kv_modes());
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int add_mode(ppl_opts *o, const char *m) {
    for (int i = 0; i < o->n_modes; i++)
        if (!strcmp(o->modes[i], m)) return 0;
    if (o->n_modes == PPL_MAX_MODES) {
        fprintf(stderr, "oscar: --kv takes at most %d modes\n", PPL_MAX_MODES);
        return -1;
    }
    o->modes[o->n_modes++] = m;
    return 0;
}

/* Returns 0 ok, 2 usage error, 3 help. */
static int parse_ppl(int argc, char **argv, ppl_opts *o) {
    memset(o, 0, sizeof *o);
    o->device = "auto";
    o->chunk = 32;
    o->batch = 512;
    o->residual = 256;
    const char *kv = "bf16,int8,kivi4,kivi2,rot2,oscar4,oscar2";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEEDV(); o->text = v; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (osc_arg_int(a, v, 4, 1 << 20, &o->ctx)) return 2; }
        else if (!strcmp(a, "--stride")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 20, &o->stride)) return 2; }
        else if (!strcmp(a, "--max-windows")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 20, &o->max_windows)) return 2; }
        else if (!strcmp(a, "--chunk")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 16, &o->chunk)) return 2; }
        else if (!strcmp(a, "--batch")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 16, &o->batch)) return 2; }
        else if (!strcmp(a, "--residual")) { NEEDV(); if (osc_arg_int(a, v, 32, 1 << 20, &o->residual)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (osc_arg_int(a, v, 0, 1024, &o->threads)) return 2; }
        else if (!strcmp(a, "--kv")) { NEEDV(); kv = v; }
        else if (!strcmp(a, "--device")) {
            NEEDV();
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) { fprintf(stderr, "oscar: --device must be cpu, cuda or auto\n"); return 2; }
            o->device = v;
        }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--key-stats")) o->key_stats = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else { fprintf(stderr, "oscar: unknown option '%s' (see oscar ppl --help)\n", a); return 2; }
#undef NEEDV
    }
    if (!o->model || !o->text || !o->ctx) {
        fprintf(stderr, "oscar: ppl needs -m MODEL, -f TEXT and --ctx N (see oscar ppl --help)\n");
        return 2;
    }
    if (o->ctx % 2) { fprintf(stderr, "oscar: --ctx must be even, got %d\n", o->ctx); return 2; }
    if (o->residual % 32) { fprintf(stderr, "oscar: --residual must be a multiple of 32, got %d\n", o->residual); return 2; }
    if (!o->stride) o->stride = o->ctx;
    if (strlen(kv) >= sizeof o->modes_buf) { fprintf(stderr, "oscar: --kv list too long\n"); return 2; }
    strcpy(o->modes_buf, kv);
    const char *list[PPL_MAX_MODES];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(o->modes_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (osc_kv_mode_rotates(t) < 0) {
            fprintf(stderr, "oscar: unknown KV cache mode '%s' (built in: %s)\n", t, osc_kv_modes());
            return 2;
        }
        if (n == PPL_MAX_MODES) { fprintf(stderr, "oscar: --kv takes at most %d modes\n", PPL_MAX_MODES); return 2; }
        list[n++] = t;
    }
    /* the reference first, then the non-rotating modes, then the rotating ones (after the fold) */
    if (add_mode(o, "bf16")) return 2;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if (osc_kv_mode_rotates(list[i]) == pass && add_mode(o, list[i])) return 2;
    return 0;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* log-softmax of one row in place (double accumulation); returns the argmax. */
static int log_softmax(float *x, int V) {
    int am = 0;
    float mx = x[0];
    for (int i = 1; i < V; i++)
        if (x[i] > mx) { mx = x[i]; am = i; }
    double s = 0;
    for (int i = 0; i < V; i++) s += exp((double)x[i] - mx);
    double lse = mx + log(s);
    for (int i = 0; i < V; i++) x[i] = (float)((double)x[i] - lse);
    return am;
}

/* KL(p || q) from log-probabilities. */
static double kl_div(const float *lp, const float *lq, int V) {
    double k = 0;
    for (int i = 0; i < V; i++) {
        double p = exp((double)lp[i]);
        k += p * ((double)lp[i] - (double)lq[i]);
    }
    return k > 0 ? k : 0; /* rounding can give -1e-12 for identical rows */
}

/* Per-layer key-norm statistics (--key-stats), accumulated over the windows of the bf16 pass. */
typedef struct key_stats {
    int n_layers, N;
    float *norm;                     /* [n_layers, N]: this window's per-token norms */
    float *host;                     /* [rows, Hkv*hd] staging when k is not on the host */
    size_t host_n;
    double *sum, *mx, *mn, *tok0, *g_med, *g_max; /* [n_layers] */
    long *cnt;
    int windows;
} key_stats;

static osc_status key_probe(void *user, int layer, int n_seq, const int *seq_start, osc_kv **kv, const osc_tensor *q,
                            const osc_tensor *k, const osc_tensor *v, const osc_tensor *att, float scale) {
    (void)q, (void)v, (void)att, (void)scale;
    key_stats *ks = user;
    if (n_seq != 1) return OSC_OK;
    const int rows = seq_start[1] - seq_start[0];
    const int64_t width = k->ne[1] * k->ne[2];
    const float *kd = k->data;
    if (k->dev != OSC_DEV_CPU || k->dt != OSC_F32) {
        size_t need = (size_t)rows * (size_t)width;
        if (need > ks->host_n) {
            float *nh = realloc(ks->host, need * sizeof(float));
            if (!nh) return osc_error(OSC_ERR_OOM, "key statistics: out of host memory");
            ks->host = nh;
            ks->host_n = need;
        }
        osc_tensor kr = osc_tensor_rows(k, seq_start[0], rows);
        OSC_TRY(osc_tensor_download_f32(ks->host, &kr, (int64_t)need));
        kd = ks->host;
    } else {
        kd += (size_t)seq_start[0] * (size_t)width;
    }
    const int p0 = osc_kv_len(kv[0]);
    for (int r = 0; r < rows && p0 + r < ks->N; r++) {
        double s = 0;
        for (int64_t i = 0; i < width; i++) s += (double)kd[(size_t)r * width + i] * kd[(size_t)r * width + i];
        ks->norm[(size_t)layer * ks->N + p0 + r] = (float)sqrt(s);
    }
    return OSC_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fold one finished window (all N norms of every layer filled) into the totals. */
static void key_stats_window(key_stats *ks) {
    const int N = ks->N, G = 32, ng = N / G;
    double *ratio = malloc((size_t)(ng > 0 ? ng : 1) * sizeof(double));
    for (int l = 0; l < ks->n_layers; l++) {
        const float *nr = ks->norm + (size_t)l * N;
        for (int t = 0; t < N; t++) {
            ks->sum[l] += nr[t];
            if (nr[t] > ks->mx[l]) ks->mx[l] = nr[t];
            if (nr[t] < ks->mn[l]) ks->mn[l] = nr[t];
        }
        ks->cnt[l] += N;
        ks->tok0[l] += nr[0];
        if (!ratio || ng == 0) continue;
        for (int g = 0; g < ng; g++) {
            float lo = nr[g * G], hi = nr[g * G];
            for (int t = 1; t < G; t++) {
                if (nr[g * G + t] < lo) lo = nr[g * G + t];
                if (nr[g * G + t] > hi) hi = nr[g * G + t];
            }
            ratio[g] = lo > 0 ? (double)hi / lo : INFINITY;
        }
        qsort(ratio, (size_t)ng, sizeof *ratio, cmp_double);
        ks->g_med[l] += ng % 2 ? ratio[ng / 2] : 0.5 * (ratio[ng / 2 - 1] + ratio[ng / 2]);
        if (ratio[ng - 1] > ks->g_max[l]) ks->g_max[l] = ratio[ng - 1];
    }
    free(ratio);
    ks->windows++;
}

static void key_stats_free(key_stats *ks) {
    free(ks->norm);
    free(ks->host);
    free(ks->sum);
    free(ks->cnt);
}

static int key_stats_init(key_stats *ks, int n_layers, int N) {
    memset(ks, 0, sizeof *ks);
    ks->n_layers = n_layers;
    ks->N = N;
    ks->norm = calloc((size_t)n_layers * N, sizeof(float));
    ks->sum = calloc((size_t)n_layers * 6, sizeof(double));
    ks->cnt = calloc((size_t)n_layers, sizeof(long));
    if (!ks->norm || !ks->sum || !ks->cnt) return -1;
    ks->mx = ks->sum + n_layers;
    ks->mn = ks->mx + n_layers;
    ks->tok0 = ks->mn + n_layers;
    ks->g_med = ks->tok0 + n_layers;
    ks->g_max = ks->g_med + n_layers;
    for (int l = 0; l < n_layers; l++) ks->mn[l] = INFINITY;
    return 0;
}

typedef struct ppl_run {
    const ppl_opts *o;
    osc_llm *m;
    osc_llm_ctx *c;
    const int32_t *toks;
    int n_windows, V;
    float *logits;   /* [max(chunk,1), V] */
    float *ref_row;  /* [V] */
    int *ref_argmax; /* [n_windows * N/2] */
    FILE *ref;       /* reference log-probs, scored positions in order */
    key_stats *ks;   /* NULL unless --key-stats */
} ppl_run;

/* Score rows of logits [n, V] that predict targets[0..n); updates r. */
static osc_status score_rows(ppl_run *R, mode_res *r, float *lg, int n, const int32_t *targets, long *pos) {
    const int V = R->V;
    for (int i = 0; i < n; i++, (*pos)++) {
        float *row = lg + (size_t)i * V;
        int am = log_softmax(row, V);
        double nll = -(double)row[targets[i]];
        if (!isfinite(nll)) return osc_error(OSC_ERR_FORMAT, "non-finite log-probability at scored position %ld (mode %s)", *pos, r->mode);
        r->nll_sum += nll;
        r->nll_sq += nll * nll;
        r->n++;
        if (!strcmp(r->mode, "bf16")) {
            R->ref_argmax[*pos] = am;
            if (fwrite(row, sizeof(float), (size_t)V, R->ref) != (size_t)V)
                return osc_error(OSC_ERR_IO, "cannot write the reference log-probabilities to a temporary file (disk full?)");
        } else {
            if (fread(R->ref_row, sizeof(float), (size_t)V, R->ref) != (size_t)V)
                return osc_error(OSC_ERR_IO, "cannot read back the reference log-probabilities");
            double k = kl_div(R->ref_row, row, V);
            r->kl_sum += k;
            if (k > r->kl_max) r->kl_max = k;
            r->agree += am == R->ref_argmax[*pos];
        }
    }
    return OSC_OK;
}

static osc_status run_window(ppl_run *R, mode_res *r, int w, long *pos) {
    const ppl_opts *o = R->o;
    const int N = o->ctx, h = N / 2;
    const int32_t *win = R->toks + (size_t)w * o->stride;
    const osc_llm_config *cf = osc_llm_config_of(R->m);
    osc_kv_params kp = {r->mode, cf->n_layers, cf->n_kv_heads, cf->head_dim, N, osc_llm_device(R->m),
                        osc_llm_act_dtype(R->m), o->residual};
    osc_kv *kv = NULL;
    OSC_TRY(osc_kv_new(&kp, &kv));
    const int probe = R->ks && !strcmp(r->mode, "bf16");
    if (probe) osc_llm_ctx_set_probe(R->c, key_probe, R->ks);
    int st[2] = {0, h};
    osc_llm_batch b = {1, st, win, NULL, &kv, 0, 0, NULL, NULL};
    osc_status s = osc_llm_forward(R->m, R->c, &b, R->logits); /* chunks of --batch (ctx size) */
    if (s == OSC_OK) s = score_rows(R, r, R->logits, 1, win + h, pos);
    for (int off = h; s == OSC_OK && off < N - 1; off += o->chunk) {
        int n = N - 1 - off < o->chunk ? N - 1 - off : o->chunk;
        int st2[2] = {0, n};
        osc_llm_batch b2 = {1, st2, win + off, NULL, &kv, 1, 0, NULL, NULL};
        s = osc_llm_forward(R->m, R->c, &b2, R->logits);
        if (s == OSC_OK) s = score_rows(R, r, R->logits, n, win + off + 1, pos);
    }
    if (probe) {
        osc_llm_ctx_set_probe(R->c, NULL, NULL);
        if (s == OSC_OK) key_stats_window(R->ks);
    }
    osc_kv_free(kv);
    return s;
}

static void print_table(const ppl_opts *o, const mode_res *res, int n, int windows, long scored, int ntext) {
    printf("oscar ppl: %s on %s (%d tokens): ctx %d, stride %d, %d windows, %ld scored tokens, chunk %d, residual %d\n",
           o->model, o->text, ntext, o->ctx, o->stride, windows, scored, o->chunk, o->residual);
    printf("%-8s %7s %12s %9s %11s %10s %9s %8s\n", "kv", "bits", "ppl", "dppl", "kl_mean", "kl_max", "top1", "sec");
    double ref = exp(res[0].nll_sum / (double)res[0].n);
    for (int i = 0; i < n; i++) {
        const mode_res *r = &res[i];
        double mean = r->nll_sum / (double)r->n;
        double var = r->nll_sq / (double)r->n - mean * mean;
        double se = r->n > 1 && var > 0 ? sqrt(var / (double)(r->n - 1)) : 0;
        double p = exp(mean);
        char pp[32];
        snprintf(pp, sizeof pp, "%.3f±%.2f", p, p * se);
        if (i == 0)
            printf("%-8s %7.2f %12s %9s %11s %10s %9s %8.1f\n", r->mode, r->bits, pp, "-", "-", "-", "-", r->seconds);
        else
            printf("%-8s %7.2f %12s %+9.4f %11.6f %10.4f %8.2f%% %8.1f\n", r->mode, r->bits, pp, p - ref,
                   r->kl_sum / (double)r->n, r->kl_max, 100.0 * (double)r->agree / (double)r->n, r->seconds);
    }
}

static void print_key_stats(const key_stats *ks) {
    printf("\nper-token key norm ||concat_h k_h|| after RoPE (bf16 pass, %d windows x %d tokens)\n", ks->windows, ks->N);
    printf("%5s %9s %9s %9s %9s %14s %14s\n", "layer", "mean", "max", "min", "token0", "grp32 max/min", "grp32 max/min");
    printf("%5s %9s %9s %9s %9s %14s %14s\n", "", "", "", "", "(mean)", "(median)", "(max)");
    for (int l = 0; l < ks->n_layers; l++)
        printf("%5d %9.3f %9.3f %9.3f %9.3f %14.3f %14.3f\n", l, ks->sum[l] / (double)ks->cnt[l], ks->mx[l], ks->mn[l],
               ks->tok0[l] / ks->windows, ks->g_med[l] / ks->windows, ks->g_max[l]);
}

static void print_json(const ppl_opts *o, const mode_res *res, int n, int windows, long scored, int ntext, const char *desc,
                       const key_stats *ks) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", o->model);
    cJSON_AddStringToObject(j, "model_desc", desc);
    cJSON_AddStringToObject(j, "text", o->text);
    cJSON_AddNumberToObject(j, "text_tokens", ntext);
    cJSON_AddNumberToObject(j, "ctx", o->ctx);
    cJSON_AddNumberToObject(j, "stride", o->stride);
    cJSON_AddNumberToObject(j, "chunk", o->chunk);
    cJSON_AddNumberToObject(j, "prefill_batch", o->batch);
    cJSON_AddNumberToObject(j, "residual", o->residual);
    cJSON_AddNumberToObject(j, "windows", windows);
    cJSON_AddNumberToObject(j, "scored_tokens", (double)scored);
    cJSON *arr = cJSON_AddArrayToObject(j, "results");
    for (int i = 0; i < n; i++) {
        const mode_res *r = &res[i];
        double mean = r->nll_sum / (double)r->n;
        double var = r->nll_sq / (double)r->n - mean * mean;
        double se = r->n > 1 && var > 0 ? sqrt(var / (double)(r->n - 1)) : 0;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "kv", r->mode);
        cJSON_AddNumberToObject(e, "bits_per_element", r->bits);
        cJSON_AddNumberToObject(e, "nll", mean);
        cJSON_AddNumberToObject(e, "ppl", exp(mean));
        cJSON_AddNumberToObject(e, "ppl_stderr", exp(mean) * se);
        if (i > 0) {
            cJSON_AddNumberToObject(e, "kl_mean", r->kl_sum / (double)r->n);
            cJSON_AddNumberToObject(e, "kl_max", r->kl_max);
            cJSON_AddNumberToObject(e, "top1_agree", (double)r->agree / (double)r->n);
        }
        cJSON_AddNumberToObject(e, "seconds", r->seconds);
        cJSON_AddItemToArray(arr, e);
    }
    if (ks && ks->windows) {
        cJSON *ka = cJSON_AddArrayToObject(j, "key_norms");
        for (int l = 0; l < ks->n_layers; l++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "layer", l);
            cJSON_AddNumberToObject(e, "mean", ks->sum[l] / (double)ks->cnt[l]);
            cJSON_AddNumberToObject(e, "max", ks->mx[l]);
            cJSON_AddNumberToObject(e, "min", ks->mn[l]);
            cJSON_AddNumberToObject(e, "token0_mean", ks->tok0[l] / ks->windows);
            cJSON_AddNumberToObject(e, "group32_max_over_min_median", ks->g_med[l] / ks->windows);
            cJSON_AddNumberToObject(e, "group32_max_over_min_max", ks->g_max[l]);
            cJSON_AddItemToArray(ka, e);
        }
    }
    char *txt = cJSON_Print(j);
    if (txt) puts(txt);
    free(txt);
    cJSON_Delete(j);
}

int osc_cli_ppl(int argc, char **argv) {
    ppl_opts o;
    int pr = parse_ppl(argc, argv, &o);
    if (pr == 3) { usage_ppl(stdout); return 0; }
    if (pr) return pr;
    if (o.threads) osc_cpu_set_threads(o.threads);
    osc_dev dev = !strcmp(o.device, "cpu") ? OSC_DEV_CPU
                  : !strcmp(o.device, "cuda") ? OSC_DEV_CUDA
                  : osc_device_cuda_available() ? OSC_DEV_CUDA : OSC_DEV_CPU;

    int rc = 1;
    osc_llm *m = NULL;
    osc_llm_ctx *c = NULL;
    osc_tokenizer *tok = NULL;
    char *text = NULL;
    int32_t *toks = NULL;
    int ntok = 0;
    ppl_run R = {0};
    key_stats ks;
    memset(&ks, 0, sizeof ks);
    mode_res res[PPL_MAX_MODES];
    memset(res, 0, sizeof res);
    int is_gguf = ends_with(o.model, ".gguf");
    char tpath[4096];
    osc_status s;

    /* tokenizer and text first: cheap failures before the weights load */
    if (is_gguf) s = osc_tokenizer_load_gguf(o.model, &tok);
    else s = osc_tokenizer_load(osc_path_join(tpath, sizeof tpath, o.model, "tokenizer.json"), &tok);
    if (s != OSC_OK) { fprintf(stderr, "oscar: ppl: cannot load the tokenizer: %s\n", osc_last_error()); goto out; }
    size_t tlen = 0;
    if (osc_read_file(o.text, PPL_MAX_TEXT, &text, &tlen) != OSC_OK) {
        fprintf(stderr, "oscar: ppl: cannot read the text: %s\n", osc_last_error());
        goto out;
    }
    if (osc_tokenizer_encode(tok, text, tlen, 0, &toks, &ntok) != OSC_OK) {
        fprintf(stderr, "oscar: ppl: cannot tokenize %s: %s\n", o.text, osc_last_error());
        goto out;
    }
    if (ntok < o.ctx) {
        fprintf(stderr, "oscar: ppl: %s has %d tokens, fewer than one window of --ctx %d\n", o.text, ntok, o.ctx);
        goto out;
    }
    int windows = (ntok - o.ctx) / o.stride + 1;
    if (o.max_windows && windows > o.max_windows) windows = o.max_windows;

    double t0 = now_s();
    if (osc_llm_load(o.model, dev, &m) != OSC_OK) { fprintf(stderr, "oscar: ppl: cannot load the model: %s\n", osc_last_error()); goto out; }
    const osc_llm_config *cf = osc_llm_config_of(m);
    if (o.ctx > cf->max_pos && cf->max_pos > 0)
        fprintf(stderr, "oscar: ppl: warning: --ctx %d is longer than the model's trained context %d\n", o.ctx, cf->max_pos);
    fprintf(stderr, "oscar: ppl: %s (loaded in %.1f s); %s: %d tokens -> %d windows of %d, %d scored each\n",
            osc_llm_describe(m), now_s() - t0, o.text, ntok, windows, o.ctx, o.ctx / 2);
    int maxt = o.batch > o.chunk ? o.batch : o.chunk;
    if (maxt > o.ctx / 2) maxt = o.ctx / 2 > o.chunk ? o.ctx / 2 : o.chunk;
    if (osc_llm_ctx_new(m, maxt, &c) != OSC_OK) { fprintf(stderr, "oscar: ppl: %s\n", osc_last_error()); goto out; }

    R.o = &o;
    R.m = m;
    R.c = c;
    R.toks = toks;
    R.n_windows = windows;
    R.V = cf->vocab_size;
    R.logits = malloc((size_t)o.chunk * R.V * sizeof(float));
    R.ref_row = malloc((size_t)R.V * sizeof(float));
    R.ref_argmax = malloc((size_t)windows * (o.ctx / 2) * sizeof(int));
    R.ref = tmpfile();
    if (!R.logits || !R.ref_row || !R.ref_argmax) { fprintf(stderr, "oscar: ppl: out of host memory\n"); goto out; }
    if (!R.ref) { fprintf(stderr, "oscar: ppl: cannot create a temporary file: %s\n", strerror(errno)); goto out; }
    if (o.key_stats) {
        /* the last token of a window is a target only, never fed: N-1 norms per window */
        if (key_stats_init(&ks, cf->n_layers, o.ctx - 1)) { fprintf(stderr, "oscar: ppl: out of host memory\n"); goto out; }
        R.ks = &ks;
    }
    if (o.n_modes > 1)
        fprintf(stderr, "oscar: ppl: reference log-probabilities take %.1f MB of temporary disk\n",
                (double)windows * (o.ctx / 2) * R.V * 4 / 1e6);

    for (int i = 0; i < o.n_modes; i++) {
        mode_res *r = &res[i];
        r->mode = o.modes[i];
        r->rotates = osc_kv_mode_rotates(r->mode);
        osc_kv_params kp = {r->mode, cf->n_layers, cf->n_kv_heads, cf->head_dim, o.ctx, dev, osc_llm_act_dtype(m), o.residual};
        r->bits = osc_kv_bits_per_element(&kp);
        if (r->rotates && !osc_llm_v_rotated(m)) {
            if (osc_llm_fold_v_rotation(m) != OSC_OK) { fprintf(stderr, "oscar: ppl: value rotation: %s\n", osc_last_error()); goto out; }
            if (o.verbose) fprintf(stderr, "oscar: ppl: value rotation folded into W_v/W_o for the rotating modes\n");
        }
        if (i > 0) rewind(R.ref);
        double ts = now_s();
        long pos = 0;
        const int tty = isatty(2);
        for (int w = 0; w < windows; w++) {
            if (run_window(&R, r, w, &pos) != OSC_OK) {
                fprintf(stderr, "\noscar: ppl: %s, window %d: %s\n", r->mode, w, osc_last_error());
                goto out;
            }
            double el = now_s() - ts;
            fprintf(stderr, "%soscar: ppl: %-7s window %d/%d  ppl %.4f", tty ? "\r" : "", r->mode, w + 1, windows, exp(r->nll_sum / (double)r->n));
            if (i > 0) fprintf(stderr, "  kl %.5f", r->kl_sum / (double)r->n);
            fprintf(stderr, "  (%.1f s, %.0f tok/s)%s", el, (double)(w + 1) * o.ctx / el, tty ? "   " : "\n");
        }
        r->seconds = now_s() - ts;
        if (tty) fputc('\n', stderr);
    }
    long scored = res[0].n;
    if (o.json) print_json(&o, res, o.n_modes, windows, scored, ntok, osc_llm_describe(m), R.ks);
    else {
        print_table(&o, res, o.n_modes, windows, scored, ntok);
        if (R.ks) print_key_stats(R.ks);
    }
    rc = 0;
out:
    if (R.ref) fclose(R.ref);
    free(R.logits);
    free(R.ref_row);
    free(R.ref_argmax);
    key_stats_free(&ks);
    osc_llm_ctx_free(c);
    osc_llm_free(m);
    osc_tokenizer_free(tok);
    free(toks);
    free(text);
    return rc;
}
