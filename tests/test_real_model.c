/* The real SmolLM2-135M-Instruct GGUF (Q4_1, llama architecture; scripts/fetch_models.sh) on the
 * CPU path against an independent implementation: tools/ref/gguf_numpy_forward.py, a float64
 * numpy forward over the `gguf` package's dequantized tensors that applies llama.cpp's
 * adjacent-pair RoPE to the file's permuted Q/K rows (oscar un-permutes them instead and uses
 * half-split RoPE), with its own byte-level BPE built from the file's tokenizer data (checked
 * against transformers' GGUF tokenizer when the golden was made). That reference itself agrees
 * with transformers loading the same GGUF to 7e-6 (`gguf_numpy_forward.py check`).
 *
 * Checked: the GGUF tokenizer gives the reference's prompt ids; the logits of the first and last
 * prompt positions (full vocabulary) within rel. L2 1e-4; 32 greedy tokens identical, decoded one
 * at a time through the cache; at every greedy step the reference's top-8 logits within 2e-3
 * absolute.
 * Tolerances: both sides use the same dequantized weights (the Q4_1/Q8_0 dequantization d*q+m is
 * one float32 rounding in either), so the difference is float32 accumulation rounding in oscar
 * (float64 in the reference) through 30 layers: VERIFY.md's 1e-4 relative budget for float32
 * vs a float32/64 reference. The smallest top-1/top-2 logit gap over the 32 greedy steps is
 * 0.052 (golden.json min_margin), 25x the 2e-3 absolute bound, so identical greedy ids are a
 * fair demand, not luck.
 * The model is not in the repository (98 MB): it is read from $OSC_MODELS, else
 * ~/.cache/oscar/models (where scripts/fetch_models.sh --small puts it); when absent the test
 * exits 77 (skipped). The goldens are in $OSC_TEST_MODELS/smollm2-golden. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "llm/model.h"
#include "llm/tokenizer.h"
#include "tests/check.h"

#define MODEL_FILE "smollm2-135m-instruct.gguf"
#define MODEL_SHA "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

static int find_model(char *path, size_t n) {
    const char *dir = getenv("OSC_MODELS");
    const char *home = getenv("HOME");
    char d[1024];
    if (dir && *dir) snprintf(d, sizeof d, "%s", dir);
    else if (home) snprintf(d, sizeof d, "%s/.cache/oscar/models", home);
    else return 0;
    osc_path_join(path, n, d, MODEL_FILE);
    return access(path, R_OK) == 0;
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static int read_ids(const osc_st *g, const char *name, int32_t **out) {
    const osc_st_tensor *t = osc_st_get(g, name);
    CHECK(t && t->dt == OSC_I32 && t->nd == 1, "golden tensor %s missing or not int32[n]", name);
    if (!t || t->dt != OSC_I32) return 0;
    *out = malloc(t->nbytes);
    memcpy(*out, t->data, t->nbytes);
    return (int)t->shape[0];
}

int main(void) {
    char model[1200], gdir[1024], path[1200];
    if (!find_model(model, sizeof model)) {
        printf("test_real_model: %s not found (run scripts/fetch_models.sh --small): skipped\n", model);
        return OSC_TEST_SKIP;
    }
    const char *root = getenv("OSC_TEST_MODELS");
    snprintf(gdir, sizeof gdir, "%s/smollm2-golden", root ? root : "tests/models");

    osc_st *g = NULL;
    char *gj = NULL;
    CHECK(osc_st_open(osc_path_join(path, sizeof path, gdir, "golden.safetensors"), &g) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_read_file(osc_path_join(path, sizeof path, gdir, "golden.json"), 1 << 22, &gj, NULL) == OSC_OK, "%s", osc_last_error());
    cJSON *meta = gj ? cJSON_Parse(gj) : NULL;
    CHECK(meta != NULL, "golden.json does not parse");
    if (!g || !meta) return check_done("test_real_model");
    cJSON *sha = cJSON_GetObjectItem(meta, "model_sha256");
    CHECK(cJSON_IsString(sha) && !strcmp(sha->valuestring, MODEL_SHA), "golden made from another file");

    osc_llm *m = NULL;
    osc_status s = osc_llm_load(model, OSC_DEV_CPU, &m);
    CHECK(s == OSC_OK, "load %s: %s", model, osc_last_error());
    osc_tokenizer *tok = NULL;
    CHECK(osc_tokenizer_load_gguf(model, &tok) == OSC_OK, "tokenizer: %s", osc_last_error());
    if (!m || !tok) goto out;
    const osc_llm_config *c = osc_llm_config_of(m);
    const int V = c->vocab_size;
    CHECK(c->arch == OSC_ARCH_LLAMA && c->n_layers == 30 && c->hidden_size == 576 && c->n_heads == 9 &&
              c->n_kv_heads == 3 && c->head_dim == 64 && V == 49152 && c->intermediate_size == 1536,
          "config: arch %d, %d layers, hidden %d, heads %d/%d x %d, vocab %d, ffn %d", c->arch, c->n_layers,
          c->hidden_size, c->n_heads, c->n_kv_heads, c->head_dim, V, c->intermediate_size);
    fprintf(stderr, "%s\n", osc_llm_describe(m));

    int32_t *pids = NULL, *gids = NULL;
    int S = read_ids(g, "prompt_ids", &pids), n = read_ids(g, "greedy_ids", &gids);
    CHECK(S > 8 && n == 32, "golden sizes: prompt %d, greedy %d", S, n);
    if (S <= 8 || n != 32) goto out2;

    /* the GGUF tokenizer against the reference's BPE (chat markup parsed as special tokens) */
    cJSON *pj = cJSON_GetObjectItem(meta, "prompt");
    if (cJSON_IsString(pj)) {
        int32_t *mine = NULL;
        int nm = 0;
        CHECK(osc_tokenizer_encode(tok, pj->valuestring, strlen(pj->valuestring), 1, &mine, &nm) == OSC_OK, "%s", osc_last_error());
        int same = nm == S && mine && !memcmp(mine, pids, (size_t)S * 4);
        CHECK(same, "tokenizer: %d ids, reference %d", nm, S);
        free(mine);
    }

    /* prompt logits, one forward */
    float *lg = malloc((size_t)S * V * 4), *ref = malloc((size_t)V * 4);
    osc_llm_ctx *ctx = NULL;
    CHECK(osc_llm_ctx_new(m, 64, &ctx) == OSC_OK, "%s", osc_last_error());
    osc_kv *kv = NULL;
    CHECK(osc_llm_kv_new(m, NULL, S + n + 8, &kv) == OSC_OK, "%s", osc_last_error());
    if (!ctx || !kv) goto out3;
    int st[2] = {0, S};
    osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = pids, .kv = &kv, .all_logits = 1};
    CHECK(osc_llm_forward(m, ctx, &b, lg) == OSC_OK, "prompt forward: %s", osc_last_error());
    static const struct { const char *name; int row; } rows[] = {{"logits_first_prompt", 0}, {"logits_last_prompt", -1}};
    for (int i = 0; i < 2; i++) {
        const osc_st_tensor *t = osc_st_get(g, rows[i].name);
        CHECK(t && t->nd == 1 && t->shape[0] == V, "golden %s", rows[i].name);
        if (!t) continue;
        osc_st_read_f32(t, ref, V);
        int r = rows[i].row < 0 ? S - 1 : rows[i].row;
        double e = rel_l2(lg + (size_t)r * V, ref, V);
        CHECK(e <= 1e-4, "%s: rel. L2 error %.3g", rows[i].name, e);
        fprintf(stderr, "prompt position %d: logits rel. L2 error vs numpy float64 %.2e\n", r, e);
    }

    /* 32 greedy steps through the cache, one token per forward */
    cJSON *steps = cJSON_GetObjectItem(meta, "steps");
    CHECK(cJSON_GetArraySize(steps) == n, "golden.json steps");
    const float *cur = lg + (size_t)(S - 1) * V;
    float *step = malloc((size_t)V * 4);
    int same = 0;
    double worst_abs = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = argmax(cur, V);
        if (id != gids[i]) {
            CHECK(0, "greedy step %d: oscar %d, reference %d", i, id, gids[i]);
            break;
        }
        same++;
        cJSON *sj = cJSON_GetArrayItem(steps, i);
        cJSON *ids = cJSON_GetObjectItem(sj, "ids"), *vals = cJSON_GetObjectItem(sj, "logits");
        for (int k = 0; k < cJSON_GetArraySize(ids) && k < cJSON_GetArraySize(vals); k++) {
            int tid = cJSON_GetArrayItem(ids, k)->valueint;
            if (tid < 0 || tid >= V) continue;
            double d = fabs((double)cur[tid] - cJSON_GetArrayItem(vals, k)->valuedouble);
            if (d > worst_abs) worst_abs = d;
        }
        if (i + 1 == n) break;
        int s1[2] = {0, 1};
        osc_llm_batch bs = {.n_seq = 1, .seq_start = s1, .tokens = &id, .kv = &kv, .all_logits = 0};
        s = osc_llm_forward(m, ctx, &bs, step);
        CHECK(s == OSC_OK, "decode step %d: %s", i, osc_last_error());
        if (s != OSC_OK) break;
        cur = step;
    }
    CHECK(same == n, "greedy: %d of %d tokens identical", same, n);
    CHECK(worst_abs <= 2e-3, "greedy steps: top-8 logits differ by up to %.3g", worst_abs);
    fprintf(stderr, "greedy: %d/%d tokens identical to the numpy reference; top-8 logits max abs error %.2e\n", same, n,
            worst_abs);
    char *txt = NULL;
    if (osc_tokenizer_decode(tok, gids, n, 0, &txt) == OSC_OK) fprintf(stderr, "continuation: %s\n", txt);
    free(txt);
    free(step);
out3:
    osc_kv_free(kv);
    osc_llm_ctx_free(ctx);
    free(lg);
    free(ref);
out2:
    free(pids);
    free(gids);
out:
    osc_tokenizer_free(tok);
    osc_llm_free(m);
    cJSON_Delete(meta);
    free(gj);
    osc_st_close(g);
    return check_done("test_real_model");
}
