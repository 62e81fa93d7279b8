/* The CPU decoder against transformers (float32, weights upcast from the bf16 checkpoint):
 * logits of several prompts (rel. L2 <= 1e-4 per VERIFY.md), 32 greedy tokens identical,
 * chunked prefill and batched decoding give the same results as one pass. Goldens come from
 * tools/golden/make_text_goldens.py. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "llm/generate.h"
#include "llm/model.h"
#include "llm/tokenizer.h"
#include "tests/check.h"

static const osc_st_tensor *get(const osc_st *g, const char *name) {
    const osc_st_tensor *t = osc_st_get(g, name);
    CHECK(t != NULL, "golden tensor %s missing", name);
    return t;
}

static double max_row_rel(const float *a, const float *b, int rows, int V) {
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double e = rel_l2(a + (size_t)r * V, b + (size_t)r * V, V);
        if (e > worst) worst = e;
    }
    return worst;
}

static void test_model(const char *root, const char *name) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    osc_llm *m = NULL;
    osc_status s = osc_llm_load(dir, OSC_DEV_CPU, &m);
    CHECK(s == OSC_OK, "%s: load: %s", name, osc_last_error());
    if (s != OSC_OK) return;
    const int V = osc_llm_config_of(m)->vocab_size;
    osc_st *g = NULL;
    s = osc_st_open(osc_path_join(path, sizeof path, dir, "golden.safetensors"), &g);
    CHECK(s == OSC_OK, "%s: goldens: %s", name, osc_last_error());
    osc_tokenizer *tok = NULL;
    CHECK(osc_tokenizer_load(osc_path_join(path, sizeof path, dir, "tokenizer.json"), &tok) == OSC_OK, "%s", osc_last_error());
    char *gj = NULL;
    CHECK(osc_read_file(osc_path_join(path, sizeof path, dir, "golden.json"), 1 << 24, &gj, NULL) == OSC_OK, "%s", osc_last_error());
    cJSON *meta = gj ? cJSON_Parse(gj) : NULL;
    if (!g || !tok || !meta) goto out;
    osc_llm_ctx *ctx = NULL, *small = NULL;
    CHECK(osc_llm_ctx_new(m, 512, &ctx) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_llm_ctx_new(m, 7, &small) == OSC_OK, "%s", osc_last_error());

    cJSON *prompts = cJSON_GetObjectItem(meta, "prompts");
    int np = cJSON_GetArraySize(prompts);
    CHECK(np >= 3, "%s: %d prompts in golden.json", name, np);
    for (int p = 0; p < np; p++) {
        char key[64];
        snprintf(key, sizeof key, "p%d.ids", p);
        const osc_st_tensor *ti = get(g, key);
        snprintf(key, sizeof key, "p%d.logits", p);
        const osc_st_tensor *tl = get(g, key);
        if (!ti || !tl) continue;
        int S = (int)ti->shape[0];
        const int32_t *ids = ti->data;
        CHECK(tl->shape[0] == S && tl->shape[1] == V, "%s p%d: logits shape", name, p);
        /* the tokenizer gives the same ids for the prompt text */
        cJSON *pj = cJSON_GetArrayItem(prompts, p);
        cJSON *txt = cJSON_GetObjectItem(pj, "text");
        if (cJSON_IsString(txt)) {
            int32_t *mine = NULL;
            int nm = 0;
            CHECK(osc_tokenizer_encode(tok, txt->valuestring, strlen(txt->valuestring), 1, &mine, &nm) == OSC_OK, "%s", osc_last_error());
            int same = nm == S && mine && !memcmp(mine, ids, (size_t)S * 4);
            CHECK(same, "%s p%d: tokenizer gives %d ids, golden %d", name, p, nm, S);
            free(mine);
        }
        float *ref = malloc((size_t)S * V * 4), *out = malloc((size_t)S * V * 4);
        osc_st_read_f32(tl, ref, (int64_t)S * V);
        for (int pass = 0; pass < 2; pass++) {
            osc_kv *kv = NULL;
            CHECK(osc_llm_kv_new(m, NULL, S + 8, &kv) == OSC_OK, "%s", osc_last_error());
            int st[2] = {0, S};
            osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .kv = &kv, .all_logits = 1};
            s = osc_llm_forward(m, pass ? small : ctx, &b, out);
            CHECK(s == OSC_OK, "%s p%d: forward: %s", name, p, osc_last_error());
            double e = max_row_rel(out, ref, S, V);
            CHECK(e <= 1e-4, "%s p%d (%s prefill, %d tokens): worst row rel err %.3g", name, p, pass ? "chunked" : "one-pass", S, e);
            fprintf(stderr, "%s p%d %s S=%d: worst row rel. error %.2e\n", name, p, pass ? "chunk7 " : "onepass", S, e);
            osc_kv_free(kv);
        }
        free(ref);
        free(out);
    }

    /* 32 greedy tokens from p0, alone and decoded together with p1 */
    const osc_st_tensor *gi = get(g, "greedy.ids"), *p0 = get(g, "p0.ids"), *p1 = get(g, "p1.ids");
    if (gi && p0 && p1) {
        int n = (int)gi->shape[0];
        osc_kv *kv[2] = {0};
        int32_t out0[64], out1[64], solo1[64];
        osc_llm_kv_new(m, NULL, 512, &kv[0]);
        osc_llm_kv_new(m, NULL, 512, &kv[1]);
        osc_gen_request r[2] = {
            {p0->data, (int)p0->shape[0], n, kv[0], NULL, out0, 0, 0},
            {p1->data, (int)p1->shape[0], n, kv[1], NULL, out1, 0, 0},
        };
        CHECK(osc_generate_batch(m, ctx, r, 2, NULL, 0) == OSC_OK, "%s", osc_last_error());
        CHECK(r[0].n_out == n && !memcmp(out0, gi->data, (size_t)n * 4), "%s: batched greedy tokens differ from transformers", name);
        osc_kv_truncate(kv[1], 0);
        osc_gen_request r1 = {p1->data, (int)p1->shape[0], n, kv[1], NULL, solo1, 0, 0};
        CHECK(osc_generate_batch(m, ctx, &r1, 1, NULL, 0) == OSC_OK, "%s", osc_last_error());
        CHECK(r1.n_out == n && !memcmp(out1, solo1, (size_t)n * 4), "%s: p1 decoded in a batch differs from p1 alone", name);
        int nmatch = 0;
        while (nmatch < n && out0[nmatch] == ((const int32_t *)gi->data)[nmatch]) nmatch++;
        fprintf(stderr, "%s: greedy %d/%d tokens identical to transformers\n", name, nmatch, n);
        /* the greedy steps' logits */
        const osc_st_tensor *gl = get(g, "greedy.logits");
        if (gl) {
            int S0 = (int)p0->shape[0];
            int T = S0 + n - 1;
            int32_t *seq = malloc((size_t)T * 4);
            memcpy(seq, p0->data, (size_t)S0 * 4);
            memcpy(seq + S0, gi->data, (size_t)(n - 1) * 4);
            float *all = malloc((size_t)T * V * 4), *ref = malloc((size_t)n * V * 4);
            osc_kv_truncate(kv[0], 0);
            int st[2] = {0, T};
            osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = seq, .kv = &kv[0], .all_logits = 1};
            CHECK(osc_llm_forward(m, ctx, &b, all) == OSC_OK, "%s", osc_last_error());
            osc_st_read_f32(gl, ref, (int64_t)n * V);
            double e = max_row_rel(all + (size_t)(S0 - 1) * V, ref, n, V);
            CHECK(e <= 1e-4, "%s: greedy-step logits rel err %.3g", name, e);
            free(seq);
            free(all);
            free(ref);
        }
        /* a prompt longer than the context is refused, not crashed */
        osc_kv *tiny = NULL;
        osc_llm_kv_new(m, NULL, 4, &tiny);
        int st[2] = {0, (int)p0->shape[0]};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = p0->data, .kv = &tiny, .all_logits = 0};
        float *lg = malloc((size_t)V * 4);
        s = osc_llm_forward(m, ctx, &b, lg);
        CHECK(s == OSC_ERR_CONTEXT && strstr(osc_last_error(), "context"), "%s: overlong prompt: %d %s", name, s, osc_last_error());
        int32_t bad = V + 5;
        int st1[2] = {0, 1};
        osc_llm_batch bb = {.n_seq = 1, .seq_start = st1, .tokens = &bad, .kv = &kv[0], .all_logits = 0};
        CHECK(osc_llm_forward(m, ctx, &bb, lg) == OSC_ERR_INVALID_ARG, "%s: out-of-vocab id accepted", name);
        free(lg);
        osc_kv_free(tiny);
        osc_kv_free(kv[0]);
        osc_kv_free(kv[1]);
    }
    osc_llm_ctx_free(ctx);
    osc_llm_ctx_free(small);
out:
    cJSON_Delete(meta);
    free(gj);
    osc_tokenizer_free(tok);
    osc_st_close(g);
    osc_llm_free(m);
}

/* The value rotation folded into the weights leaves the logits as transformers gives them, and
 * every KV cache mode runs the whole decoder (qwen3-tiny: head_dim 32) across a flush; the
 * int8 and 4-bit modes stay closer to the unquantised logits than the 2-bit ones. */
static void test_kv_modes(const char *root) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/qwen3-tiny", root);
    osc_llm *m = NULL;
    osc_st *g = NULL;
    CHECK(osc_llm_load(dir, OSC_DEV_CPU, &m) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_st_open(osc_path_join(path, sizeof path, dir, "golden.safetensors"), &g) == OSC_OK, "%s", osc_last_error());
    if (!m || !g) goto out;
    CHECK(osc_llm_fold_v_rotation(m) == OSC_OK && osc_llm_v_rotated(m), "fold: %s", osc_last_error());
    const osc_st_tensor *ti = osc_st_get(g, "p3.ids"), *tl = osc_st_get(g, "p3.logits");
    if (!ti || !tl) goto out;
    const int S = (int)ti->shape[0], V = osc_llm_config_of(m)->vocab_size;
    float *ref = malloc((size_t)S * V * 4), *base = malloc((size_t)S * V * 4), *out = malloc((size_t)S * V * 4);
    osc_st_read_f32(tl, ref, (int64_t)S * V);
    osc_llm_ctx *ctx = NULL;
    osc_llm_ctx_new(m, 64, &ctx);
    static const char *modes[] = {"bf16", "int8", "kivi4", "oscar4", "kivi2", "rot2", "oscar2"};
    double err[7] = {0};
    for (int i = 0; i < 7; i++) {
        osc_kv_params kp = {modes[i], osc_llm_config_of(m)->n_layers, osc_llm_config_of(m)->n_kv_heads,
                            osc_llm_config_of(m)->head_dim, 256, OSC_DEV_CPU, OSC_F32, 64};
        osc_kv *kv = NULL;
        CHECK(osc_kv_new(&kp, &kv) == OSC_OK, "%s: %s", modes[i], osc_last_error());
        if (!kv) continue;
        /* prefill in chunks of 64 (= R_evict) so later chunks read packed blocks */
        int st[2] = {0, S};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ti->data, .kv = &kv, .all_logits = 1};
        CHECK(osc_llm_forward(m, ctx, &b, i ? out : base) == OSC_OK, "%s: %s", modes[i], osc_last_error());
        if (i == 0) {
            double e = 0;
            for (int r = 0; r < S; r++) {
                double x = rel_l2(base + (size_t)r * V, ref + (size_t)r * V, V);
                if (x > e) e = x;
            }
            CHECK(e <= 1e-4, "folded model vs transformers: worst row rel err %.3g", e);
            fprintf(stderr, "value rotation folded: logits vs transformers worst row rel. error %.2e\n", e);
        } else {
            err[i] = rel_l2(out, base, (long)S * V);
            CHECK(err[i] > 0 && err[i] < 1.0, "%s: logits rel err %.3g", modes[i], err[i]);
            fprintf(stderr, "kv %-7s %d tokens, R_evict 64: logits rel. error vs unquantised %.3e\n", modes[i], S, err[i]);
        }
        osc_kv_free(kv);
    }
    CHECK(err[1] < err[4] && err[1] < err[6], "int8 (%.3g) should beat the 2-bit modes", err[1]);
    CHECK(err[2] < err[4] && err[3] < err[6], "4-bit should beat 2-bit (kivi %.3g/%.3g, oscar %.3g/%.3g)", err[2], err[4], err[3], err[6]);
    osc_llm_ctx_free(ctx);
    free(ref);
    free(base);
    free(out);
out:
    osc_st_close(g);
    osc_llm_free(m);
}

int main(void) {
    const char *root = getenv("OSC_TEST_MODELS");
    if (!root) root = "tests/models";
    test_model(root, "qwen2-tiny");
    test_model(root, "qwen3-tiny");
    test_model(root, "llama-tiny");
    test_kv_modes(root);
    return check_done("test_decoder");
}
