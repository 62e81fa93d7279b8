/* oscar kvstat: KV-cache fidelity report of a text prompt (docs/KVSTAT.md). A thin wrapper
 * around osc_kvstat_run (pipelines/lib/kvstat.h): parse flags, load the model and tokenizer,
 * tokenize, run, print a table (or JSON) and optionally draw the PNG.
 * Exit codes: 0 ok, 1 runtime error (bad model, unreadable file, out of memory), 2 usage. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/device.h"
#include "core/fileio.h"
#include "kernels/ops.h"
#include "kvcache/kvcache.h"
#include "llm/gguf_load.h"
#include "llm/model.h"
#include "llm/tokenizer.h"
#include "oscar.h"
#include "pipelines/lib/kvstat.h"
#include "lib/args.h"

#define KVSTAT_MAX_FILE (64u << 20)

typedef struct kvstat_opts {
    const char *model, *prompt, *file, *kv, *png, *device;
    int n_ctx, n_eval, r_evict, n_sink, layer, threads, json, verbose;
} kvstat_opts;

static void usage_kvstat(FILE *f) {
    fprintf(f,
            "usage: oscar kvstat -m MODEL (-p PROMPT | -f FILE) [options]\n\n"
            "KV-cache fidelity report: how far each cache mode moves the model from the bf16\n"
            "cache on one text, by teacher forcing (the text is prefilled except its last E\n"
            "tokens, which are fed one at a time and scored):\n"
            "  attn err   per layer, the relative L2 error of the attention output over the\n"
            "             E decode steps, the mode's cache fed the reference's own k/v at every\n"
            "             layer (identical inputs, no accumulated drift); mean and max over layers\n"
            "  KL, top-1  end to end (the mode's cache through the whole model): mean/max\n"
            "             KL(bf16 || mode) of the next-token distribution, argmax agreement\n"
            "  NLL        mean negative log-likelihood of the actual next token\n"
            "It also reports per-layer key norms per token kind (text, sink) - the Token Norm\n"
            "Imbalance picture of docs/oscar-kv.md. See docs/KVSTAT.md.\n\n"
            "options:\n"
            "  -m, --model PATH    a model folder (config.json, *.safetensors, tokenizer.json)\n"
            "                      or a .gguf file\n"
            "  -p, --prompt TEXT   the text (special tokens written in it are parsed)\n"
            "  -f, --file FILE     read the text from FILE instead (taken literally)\n"
            "      --kv MODES      comma-separated cache modes (default all: %s)\n"
            "  -c, --ctx N         analyse at most N tokens (the first N; default 4096)\n"
            "      --eval N        decode steps scored, the last N tokens (default 64)\n"
            "      --r-evict N     residual window of kivi/rot/oscar modes, a multiple of 32\n"
            "                      (default 256, the cache default; tokens older than the last\n"
            "                      full window are the quantised ones)\n"
            "      --sink N        the first N tokens count as attention sinks (default 1)\n"
            "      --layer L       layer of the key-norm panel of --png (default n_layers/2)\n"
            "      --json          print everything as one JSON object instead of the table\n"
            "      --png FILE      draw key norms and per-layer attention error to FILE\n"
            "      --device D      cpu, cuda or auto (default auto; quantised modes run\n"
            "                      end to end on the CPU only for now)\n"
            "  -t, --threads N     CPU threads (default: all cores)\n"
            "  -v, --verbose       log loading details to stderr\n"
            "  -h, --help          this help\n",
            osc_kv_modes());
}

/* 0 ok, 2 usage error, 3 help. */
static int parse_kvstat(int argc, char **argv, kvstat_opts *o) {
    memset(o, 0, sizeof *o);
    o->device = "auto";
    o->n_ctx = 4096;
    o->n_eval = 64;
    o->n_sink = 1;
    o->layer = -1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEEDV(); o->prompt = v; }
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEEDV(); o->file = v; }
        else if (!strcmp(a, "--kv")) { NEEDV(); o->kv = v; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (osc_arg_int(a, v, 2, 1 << 22, &o->n_ctx)) return 2; }
        else if (!strcmp(a, "--eval")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 20, &o->n_eval)) return 2; }
        else if (!strcmp(a, "--r-evict")) {
            NEEDV();
            if (osc_arg_int(a, v, 32, 1 << 20, &o->r_evict)) return 2;
            if (o->r_evict % 32) { fprintf(stderr, "oscar: --r-evict must be a multiple of 32\n"); return 2; }
        }
        else if (!strcmp(a, "--sink")) { NEEDV(); if (osc_arg_int(a, v, 0, 1 << 20, &o->n_sink)) return 2; }
        else if (!strcmp(a, "--layer")) { NEEDV(); if (osc_arg_int(a, v, 0, 1 << 16, &o->layer)) return 2; }
        else if (!strcmp(a, "--png")) { NEEDV(); o->png = v; }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "--device")) {
            NEEDV();
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) { fprintf(stderr, "oscar: --device must be cpu, cuda or auto\n"); return 2; }
            o->device = v;
        }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (osc_arg_int(a, v, 0, 1024, &o->threads)) return 2; }
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else { fprintf(stderr, "oscar: unknown option '%s' (see oscar kvstat --help)\n", a); return 2; }
#undef NEEDV
    }
    if (!o->model) { fprintf(stderr, "oscar: kvstat needs a model folder: -m MODEL_DIR (see oscar kvstat --help)\n"); return 2; }
    if (!o->prompt == !o->file) { fprintf(stderr, "oscar: kvstat needs exactly one of -p PROMPT or -f FILE\n"); return 2; }
    if (o->kv) { /* every mode must be known: a typo is a usage error, not a runtime one */
        char buf[256];
        if (strlen(o->kv) >= sizeof buf) { fprintf(stderr, "oscar: --kv: list too long\n"); return 2; }
        strcpy(buf, o->kv);
        int n = 0;
        for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save), n++)
            if (osc_kv_mode_rotates(t) < 0) {
                fprintf(stderr, "oscar: --kv: unknown mode '%s' (known: %s)\n", t, osc_kv_modes());
                return 2;
            }
        if (!n) { fprintf(stderr, "oscar: --kv needs at least one mode\n"); return 2; }
    }
    return 0;
}

static void log_to_stderr(osc_log_level lv, const char *msg, void *user) {
    (void)user;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "oscar: %s: %s\n", names[lv], msg);
}

static int fail(const char *what) {
    fprintf(stderr, "oscar: kvstat: %s: %s\n", what, osc_last_error());
    return 1;
}

static void fmt_num(char *b, size_t n, double v, int ok) {
    if (!ok) snprintf(b, n, "n/a");
    else if (!isfinite(v)) snprintf(b, n, "%s", isnan(v) ? "-" : "inf");
    else snprintf(b, n, "%.4g", v);
}

static void print_table(const osc_kvstat_result *r, const char *device, int layer) {
    printf("model: %s\n", r->model);
    printf("tokens: %d (%d prefilled, last %d decoded one at a time and scored), r_evict %d, sink %d, device %s\n",
           r->n_tokens, r->n_prefill, r->n_eval, r->r_evict, r->n_sink, device);
    if (r->folded_here || r->v_rotated_at_entry)
        printf("value rotation: %s; fold KL(bf16 || bf16 folded) = %.3g\n",
               r->folded_here ? "folded for the rotating modes" : "already folded at entry", r->fold_kl_mean);
    printf("\n%-7s %7s %8s %10s %10s %10s %10s %7s %8s\n", "mode", "bits/el", "quant.tk", "attn mean", "attn max",
           "KL mean", "KL max", "top-1", "NLL");
    for (int j = 0; j < r->n_modes; j++) {
        const osc_kvstat_mode *md = &r->modes[j];
        char am[32], ax[32], km[32], kx[32], t1[32], nl[32];
        fmt_num(am, sizeof am, md->att_err_mean, md->att_ok);
        fmt_num(ax, sizeof ax, md->att_err_max, md->att_ok);
        fmt_num(km, sizeof km, md->kl_mean, md->e2e_ok);
        fmt_num(kx, sizeof kx, md->kl_max, md->e2e_ok);
        if (md->e2e_ok) snprintf(t1, sizeof t1, "%.1f%%", 100 * md->top1_rate);
        else snprintf(t1, sizeof t1, "n/a");
        fmt_num(nl, sizeof nl, md->nll_mean, md->e2e_ok);
        printf("%-7s %7.2f %8d %10s %10s %10s %10s %7s %8s\n", md->name, md->bits_per_element, md->quantized_tokens, am,
               ax, km, kx, t1, nl);
    }
    for (int j = 0; j < r->n_modes; j++) {
        const osc_kvstat_mode *md = &r->modes[j];
        if (!md->att_ok) printf("  %s attention: %s\n", md->name, md->att_msg);
        if (!md->e2e_ok) printf("  %s end to end: %s\n", md->name, md->e2e_msg);
    }
    if (isfinite(r->ref_nll_mean)) printf("bf16 reference NLL: %.4g nats/token\n", r->ref_nll_mean);
    int quant = 0;
    for (int j = 0; j < r->n_modes; j++) quant |= r->modes[j].quantized_tokens > 0;
    if (!quant && r->n_tokens > 1)
        printf("note: no older token is quantised at %d tokens with r_evict %d (use a longer text or --r-evict)\n",
               r->n_tokens, r->r_evict);
    if (layer < 0 || layer >= r->n_layers) layer = r->n_layers / 2;
    printf("\nkey L2 norm (all kv heads) per token kind at layer %d:\n", layer);
    printf("%-6s %6s %9s %9s %9s %9s %9s %9s %9s\n", "kind", "count", "mean", "min", "p5", "p50", "p95", "max",
           "p50/text");
    const osc_kvstat_kstats *tx = &r->kstats[(size_t)layer * OSC_TOK_KINDS + OSC_TOK_TEXT];
    for (int k = 0; k < OSC_TOK_KINDS; k++) {
        const osc_kvstat_kstats *st = &r->kstats[(size_t)layer * OSC_TOK_KINDS + k];
        if (!st->count) continue;
        printf("%-6s %6d %9.4g %9.4g %9.4g %9.4g %9.4g %9.4g %9.3g\n", osc_tok_kind_name(k), st->count, st->mean,
               st->min, st->pct[0], st->pct[2], st->pct[4], st->max, tx->count ? st->pct[2] / tx->pct[2] : NAN);
    }
    printf("max/min key norm over all tokens, per layer:");
    for (int l = 0; l < r->n_layers; l++) {
        float lo = INFINITY, hi = 0;
        for (int t = 0; t < r->n_tokens; t++) {
            float v = r->key_norm[(size_t)l * r->n_tokens + t];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        printf(" %.3g", lo > 0 ? hi / lo : INFINITY);
    }
    printf("\n");
}

int osc_cli_kvstat(int argc, char **argv) {
    kvstat_opts o;
    int rc = parse_kvstat(argc, argv, &o);
    if (rc == 3) { usage_kvstat(stdout); return 0; }
    if (rc) return rc;
    osc_set_log_callback(log_to_stderr, NULL, o.verbose ? OSC_LOG_DEBUG : OSC_LOG_WARN);
    osc_cpu_set_threads(o.threads);
    osc_dev dev = OSC_DEV_CPU;
    if (!strcmp(o.device, "cuda") || (!strcmp(o.device, "auto") && osc_device_cuda_available())) {
        if (!osc_device_cuda_available()) {
            fprintf(stderr, "oscar: kvstat: CUDA requested but no usable GPU (or this build has no CUDA)\n");
            return 1;
        }
        dev = OSC_DEV_CUDA;
    }
    char *text = NULL;
    size_t text_len = 0;
    if (o.file) {
        if (osc_read_file(o.file, KVSTAT_MAX_FILE, &text, &text_len) != OSC_OK) return fail("cannot read the text");
    }
    osc_llm *m = NULL;
    osc_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    int n_ids = 0;
    osc_kvstat_result *res = NULL;
    char path[4096];
    rc = 1;
    size_t ml = strlen(o.model);
    int is_gguf = ml > 5 && !strcmp(o.model + ml - 5, ".gguf");
    if ((is_gguf ? osc_llm_load_gguf(o.model, dev, &m) : osc_llm_load(o.model, dev, &m)) != OSC_OK) {
        fail("cannot load the model");
        goto out;
    }
    if (o.verbose) fprintf(stderr, "oscar: %s\n", osc_llm_describe(m));
    if (o.layer >= osc_llm_config_of(m)->n_layers) {
        fprintf(stderr, "oscar: kvstat: --layer %d but the model has %d layers\n", o.layer, osc_llm_config_of(m)->n_layers);
        rc = 2;
        goto out;
    }
    if ((is_gguf ? osc_tokenizer_load_gguf(o.model, &tok)
                 : osc_tokenizer_load(osc_path_join(path, sizeof path, o.model, "tokenizer.json"), &tok)) != OSC_OK) {
        fail("cannot load the tokenizer");
        goto out;
    }
    if (o.prompt ? osc_tokenizer_encode(tok, o.prompt, strlen(o.prompt), 1, &ids, &n_ids)
                 : osc_tokenizer_encode(tok, text, text_len, 0, &ids, &n_ids)) {
        fail("cannot tokenize the text");
        goto out;
    }
    if (n_ids < 2) {
        fprintf(stderr, "oscar: kvstat: the text has %d token(s); at least 2 are needed\n", n_ids);
        goto out;
    }
    int vocab = osc_llm_config_of(m)->vocab_size;
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= vocab) {
            fprintf(stderr, "oscar: kvstat: token id %d outside the model's vocabulary (%d)\n", ids[i], vocab);
            goto out;
        }
    if (n_ids > o.n_ctx) {
        fprintf(stderr, "oscar: kvstat: the text has %d tokens; analysing the first %d (--ctx)\n", n_ids, o.n_ctx);
        n_ids = o.n_ctx;
    }
    if (o.n_eval >= n_ids) {
        fprintf(stderr, "oscar: kvstat: --eval %d >= %d tokens; scoring the last %d\n", o.n_eval, n_ids, n_ids - 1);
        o.n_eval = n_ids - 1;
    }
    osc_kvstat_params kp = osc_kvstat_default_params();
    kp.modes = o.kv;
    kp.n_eval = o.n_eval;
    kp.r_evict = o.r_evict;
    kp.n_sink = o.n_sink;
    osc_kvstat_input in = {n_ids, ids, NULL, 0, NULL, NULL, NULL};
    if (osc_kvstat_run(m, &in, &kp, &res) != OSC_OK) { fail("analysis failed"); goto out; }
    if (o.json) {
        cJSON *j = osc_kvstat_to_json(res);
        char *s = j ? cJSON_PrintUnformatted(j) : NULL;
        if (!s) {
            fprintf(stderr, "oscar: kvstat: out of memory writing JSON\n");
            cJSON_Delete(j);
            goto out;
        }
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        print_table(res, dev == OSC_DEV_CUDA ? "cuda" : "cpu", o.layer);
    }
    if (o.png) {
        if (osc_kvstat_plot(res, o.layer, o.png) != OSC_OK) { fail("cannot write the PNG"); goto out; }
        if (!o.json) printf("plot written to %s\n", o.png);
    }
    rc = 0;
out:
    osc_kvstat_free(res);
    free(ids);
    osc_tokenizer_free(tok);
    osc_llm_free(m);
    free(text);
    return rc;
}
