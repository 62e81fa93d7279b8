/* GGUF: the reader (metadata of every type, dequantization of every supported tensor type equal to
 * the gguf Python package's), the loader (tiny llama/qwen2/qwen3 checkpoints converted to GGUF as
 * llama.cpp does give the transformers goldens' logits and the same weights as the safetensors
 * path, Q/K permutation undone), the tokenizer from GGUF metadata (same ids as tokenizer.json,
 * and as HF for the gpt-2 / smollm pre-tokenizers), and bad files (clean errors, no crash).
 * Data: tests/models/gguf/ from tools/golden/make_gguf_goldens.py.
 * Env: OSC_TEST_MODELS, OSC_TEST_TMP. With OSC_GGUF_CHECK_MODEL=file.gguf and
 * OSC_GGUF_CHECK_GOLDEN=golden.gguf only the real-file check of tools/golden/check_gguf_dequant.py
 * runs: every tensor of the golden file against the same-named tensor of the model. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/device.h"
#include "core/fileio.h"
#include "core/gguf.h"
#include "core/safetensors.h"
#include "include/oscar.h"
#include "llm/gguf_load.h"
#include "llm/model.h"
#include "llm/tokenizer.h"
#include "tests/check.h"

static char g_tmp[1024];
static const char *g_models;

static const char *path_in(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return buf;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static int starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* ---- metadata ---- */

static void test_metadata(void) {
    char p[1200];
    path_in(p, sizeof p, g_models, "gguf/quants.gguf");
    osc_gguf *g = NULL;
    CHECK(osc_gguf_open(p, &g) == OSC_OK, "%s", osc_last_error());
    if (!g) return;
    CHECK(osc_gguf_version(g) == 3 && osc_gguf_alignment(g) == 64 && osc_gguf_data_offset(g) % 64 == 0,
          "version %u alignment %llu", osc_gguf_version(g), (unsigned long long)osc_gguf_alignment(g));
    CHECK(osc_gguf_n_kv(g) == 20, "%d keys", osc_gguf_n_kv(g));
    CHECK(!strcmp(osc_gguf_key_at(g, 0), "general.architecture") && osc_gguf_key_at(g, 99) == NULL, "key order");
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f32;
    int b;
    const char *s;
    size_t sl;
    CHECK(osc_gguf_get_u32(g, "test.u8", &u32) == OSC_OK && u32 == 200, "u8 %u", u32);
    CHECK(osc_gguf_get_i32(g, "test.i8", &i32) == OSC_OK && i32 == -100, "i8");
    CHECK(osc_gguf_get_u32(g, "test.u16", &u32) == OSC_OK && u32 == 60000, "u16");
    CHECK(osc_gguf_get_i32(g, "test.i16", &i32) == OSC_OK && i32 == -30000, "i16");
    CHECK(osc_gguf_get_u32(g, "test.u32", &u32) == OSC_OK && u32 == 4000000000u, "u32");
    CHECK(osc_gguf_get_i32(g, "test.i32", &i32) == OSC_OK && i32 == -2000000000, "i32");
    CHECK(osc_gguf_get_f32(g, "test.f32", &f32) == OSC_OK && f32 == 1.5f, "f32");
    CHECK(osc_gguf_get_bool(g, "test.bool", &b) == OSC_OK && b == 1, "bool");
    CHECK(osc_gguf_get_u64(g, "test.u64", &u64) == OSC_OK && u64 == (1ull << 40) + 3, "u64");
    CHECK(osc_gguf_get_f32(g, "test.f64", &f32) == OSC_OK && f32 == 0.1f, "f64 as f32");
    CHECK(osc_gguf_get_str(g, "test.string", &s, &sl) == OSC_OK && sl == strlen("héllo wörld ✓") &&
              !memcmp(s, "héllo wörld ✓", sl), "string");
    const osc_gguf_value *v = osc_gguf_find(g, "test.i64");
    int64_t i64;
    CHECK(v && osc_gguf_value_i64(v, &i64) && i64 == -(1ll << 40), "i64");
    CHECK(v && !osc_gguf_value_u64(v, &u64), "negative i64 as u64 accepted");
    /* wrong types and ranges */
    CHECK(osc_gguf_get_i32(g, "test.u32", &i32) == OSC_ERR_FORMAT && strstr(osc_last_error(), "test.u32") &&
              starts_with(osc_last_error(), p), "u32 4e9 as i32: %s", osc_last_error());
    CHECK(osc_gguf_get_u32(g, "test.i8", &u32) == OSC_ERR_FORMAT, "negative as u32");
    CHECK(osc_gguf_get_u32(g, "test.string", &u32) == OSC_ERR_FORMAT && strstr(osc_last_error(), "is string"),
          "string as u32: %s", osc_last_error());
    CHECK(osc_gguf_get_bool(g, "test.u8", &b) == OSC_ERR_FORMAT, "u8 as bool");
    CHECK(osc_gguf_get_u32(g, "test.bool", &u32) == OSC_ERR_FORMAT, "bool as u32");
    CHECK(osc_gguf_get_str(g, "no.such.key", &s, &sl) == OSC_ERR_FORMAT && strstr(osc_last_error(), "missing metadata no.such.key"),
          "missing: %s", osc_last_error());
    CHECK(osc_gguf_find(g, "no.such.key") == NULL, "find missing");
    /* arrays */
    const osc_gguf_value *a;
    double d;
    CHECK(osc_gguf_get_arr(g, "test.arr_i32", OSC_GGUF_I32, &a) == OSC_OK && a->n == 3 && osc_gguf_arr_i64(a, 1, &i64) &&
              i64 == -2 && !osc_gguf_arr_i64(a, 3, &i64), "arr_i32");
    CHECK(osc_gguf_get_arr(g, "test.arr_i32", OSC_GGUF_STRING, &a) == OSC_ERR_FORMAT, "arr elem type not checked");
    CHECK(osc_gguf_get_arr(g, "test.arr_f32", -1, &a) == OSC_OK && osc_gguf_arr_f64(a, 1, &d) && d == -1.25, "arr_f32");
    CHECK(osc_gguf_get_arr(g, "test.arr_bool", OSC_GGUF_BOOL, &a) == OSC_OK && osc_gguf_arr_i64(a, 1, &i64) && i64 == 0 &&
              osc_gguf_arr_i64(a, 2, &i64) && i64 == 1, "arr_bool");
    CHECK(osc_gguf_get_arr(g, "test.arr_str", OSC_GGUF_STRING, &a) == OSC_OK && a->n == 4, "arr_str");
    if (a && a->elem == OSC_GGUF_STRING) {
        s = osc_gguf_arr_str(a, 2, &sl);
        CHECK(s && sl == strlen("ünï") && !memcmp(s, "ünï", sl), "arr_str[2]");
        s = osc_gguf_arr_str(a, 1, &sl);
        CHECK(s && sl == 0, "empty string element");
        CHECK(osc_gguf_arr_str(a, 4, &sl) == NULL, "arr_str out of range");
    }
    CHECK(osc_gguf_get_arr(g, "test.arr_nested", OSC_GGUF_ARRAY, &a) == OSC_OK && a->n == 2, "nested");
    if (a && a->elem == OSC_GGUF_ARRAY) {
        const osc_gguf_value *x0 = osc_gguf_arr_at(a, 0), *x1 = osc_gguf_arr_at(a, 1);
        CHECK(x0 && x0->n == 2 && osc_gguf_arr_i64(x0, 1, &i64) && i64 == 2, "nested[0]");
        CHECK(x1 && x1->n == 1 && osc_gguf_arr_i64(x1, 0, &i64) && i64 == 3, "nested[1]");
        CHECK(osc_gguf_arr_at(a, 2) == NULL, "nested out of range");
    }
    CHECK(osc_gguf_get_arr(g, "test.arr_nested2", OSC_GGUF_ARRAY, &a) == OSC_OK && a->n == 2, "nested2");
    if (a && a->elem == OSC_GGUF_ARRAY) {
        const osc_gguf_value *x = osc_gguf_arr_at(osc_gguf_arr_at(a, 0), 1);
        s = x ? osc_gguf_arr_str(x, 1, &sl) : NULL;
        CHECK(s && sl == 1 && s[0] == 'z', "nested2[0][1][1]");
    }
    osc_gguf_close(g);
}

/* ---- dequantization ---- */

static void test_dequant(void) {
    char p[1200];
    path_in(p, sizeof p, g_models, "gguf/quants.gguf");
    osc_gguf *g = NULL;
    CHECK(osc_gguf_open(p, &g) == OSC_OK, "%s", osc_last_error());
    if (!g) return;
    int n_checked = 0, types_seen[64] = {0};
    for (int i = 0; i < osc_gguf_n_tensors(g); i++) {
        const osc_gguf_tensor *t = osc_gguf_tensor_at(g, i);
        size_t nl = strlen(t->name);
        if (nl > 7 && !strcmp(t->name + nl - 7, ".golden")) continue;
        float *out = malloc((size_t)t->nelem * 4);
        uint16_t *ob = malloc((size_t)t->nelem * 2);
        if (!osc_ggml_can_dequant(t->type)) {
            osc_status s = osc_gguf_read_f32(t, 0, t->nelem, out);
            CHECK(s == OSC_ERR_UNSUPPORTED && strstr(osc_last_error(), "IQ4_NL") && starts_with(osc_last_error(), p),
                  "%s: %d %s", t->name, s, osc_last_error());
            CHECK(osc_gguf_read_bf16(t, 0, t->nelem, ob) == OSC_ERR_UNSUPPORTED, "%s bf16", t->name);
            free(out);
            free(ob);
            continue;
        }
        char gn[300];
        snprintf(gn, sizeof gn, "%s.golden", t->name);
        const osc_gguf_tensor *gt = osc_gguf_tensor_find(g, gn);
        CHECK(gt && gt->type == OSC_GGML_F32 && gt->nelem == t->nelem, "%s: golden", t->name);
        if (!gt) continue;
        const float *want = gt->data; /* 64-byte aligned in the file */
        CHECK(osc_gguf_read_f32(t, 0, t->nelem, out) == OSC_OK, "%s: %s", t->name, osc_last_error());
        int64_t bad = 0;
        double worst = 0;
        for (int64_t k = 0; k < t->nelem; k++) {
            if (memcmp(&out[k], &want[k], 4) != 0) bad++;
            double e = fabs((double)out[k] - want[k]);
            if (e > worst) worst = e;
        }
        CHECK(bad == 0, "%s (%s): %lld of %lld values differ from gguf.quants.dequantize (max abs %g)", t->name,
              osc_ggml_type_name(t->type), (long long)bad, (long long)t->nelem, worst);
        /* bf16: the float32 values rounded */
        CHECK(osc_gguf_read_bf16(t, 0, t->nelem, ob) == OSC_OK, "%s: %s", t->name, osc_last_error());
        bad = 0;
        for (int64_t k = 0; k < t->nelem; k++) bad += ob[k] != osc_f32_to_bf16(want[k]);
        CHECK(bad == 0, "%s: %lld bf16 values differ", t->name, (long long)bad);
        /* one row at an offset */
        if (t->ne[1] > 1) {
            const int64_t row = t->ne[0];
            CHECK(osc_gguf_read_f32(t, row, row, out) == OSC_OK && !memcmp(out, want + row, (size_t)row * 4),
                  "%s: row 1", t->name);
        }
        /* ranges that are not whole blocks, or outside */
        const int bs = osc_ggml_block_size(t->type);
        if (bs > 1) CHECK(osc_gguf_read_f32(t, 1, bs, out) == OSC_ERR_INVALID_ARG, "%s: misaligned range", t->name);
        CHECK(osc_gguf_read_f32(t, 0, t->nelem + bs, out) == OSC_ERR_INVALID_ARG, "%s: range past the end", t->name);
        types_seen[t->type < 64 ? t->type : 0] = 1;
        n_checked++;
        free(out);
        free(ob);
    }
    static const int want_types[] = {OSC_GGML_F32, OSC_GGML_F16, OSC_GGML_BF16, OSC_GGML_Q4_0, OSC_GGML_Q4_1,
                                     OSC_GGML_Q5_0, OSC_GGML_Q5_1, OSC_GGML_Q8_0, OSC_GGML_Q2_K, OSC_GGML_Q3_K,
                                     OSC_GGML_Q4_K, OSC_GGML_Q5_K, OSC_GGML_Q6_K};
    for (size_t k = 0; k < sizeof want_types / sizeof want_types[0]; k++)
        CHECK(types_seen[want_types[k]] && osc_ggml_can_dequant((uint32_t)want_types[k]), "type %s not covered",
              osc_ggml_type_name((uint32_t)want_types[k]));
    fprintf(stderr, "dequant: %d tensors of %d types bit-identical to gguf.quants.dequantize\n", n_checked,
            (int)(sizeof want_types / sizeof want_types[0]));
    osc_gguf_close(g);
}

/* ---- models ---- */

static double max_row_rel(const float *a, const float *b, int rows, int V) {
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double e = rel_l2(a + (size_t)r * V, b + (size_t)r * V, V);
        if (e > worst) worst = e;
    }
    return worst;
}

/* The weights read through the GGUF source equal the checkpoint's (bf16 values; Q/K rows back in
 * HF order), as float32 and as raw bf16. */
static void check_weights(const char *name, const char *gpath, const char *dir) {
    osc_gguf *g = NULL;
    osc_st *st = NULL;
    osc_llm_config cfg;
    CHECK(osc_gguf_open(gpath, &g) == OSC_OK && osc_gguf_llm_config(g, &cfg) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_st_open(dir, &st) == OSC_OK, "%s", osc_last_error());
    if (!g || !st) goto out;
    osc_gguf_weights w = {g, &cfg};
    osc_wsrc src = osc_gguf_wsrc(&w);
    int n = 0, bad = 0;
    for (int i = 0; i < osc_st_count(st); i++) {
        const osc_st_tensor *t = osc_st_at(st, i);
        const char *hf = !strcmp(t->name, "lm_head.weight") ? t->name : t->name + 6; /* "model." */
        if (!src.has(src.ctx, hf)) {
            CHECK(cfg.tie_embeddings && !strcmp(hf, "lm_head.weight"), "%s: %s not in the GGUF", name, hf);
            continue;
        }
        int64_t ne = 1;
        for (int d = 0; d < t->nd; d++) ne *= t->shape[d];
        float *a = malloc((size_t)ne * 4), *b = malloc((size_t)ne * 4);
        uint16_t *h = malloc((size_t)ne * 2);
        osc_st_read_f32(t, b, ne);
        osc_status s = src.read_f32(src.ctx, hf, t->nd, t->shape, a);
        CHECK(s == OSC_OK, "%s: %s", name, osc_last_error());
        int same = s == OSC_OK && !memcmp(a, b, (size_t)ne * 4);
        if (t->dt == OSC_BF16) {
            s = src.read_bf16(src.ctx, hf, t->nd, t->shape, h);
            same = same && s == OSC_OK && !memcmp(h, t->data, (size_t)ne * 2);
        }
        CHECK(same, "%s: weight %s differs from the checkpoint", name, hf);
        bad += !same;
        n++;
        free(a);
        free(b);
        free(h);
    }
    /* a wrong shape is named */
    int64_t wrong[2] = {cfg.hidden_size + 1, cfg.hidden_size};
    float *tmp = malloc((size_t)(cfg.hidden_size + 1) * cfg.hidden_size * 4);
    CHECK(src.read_f32(src.ctx, "layers.0.self_attn.o_proj.weight", 2, wrong, tmp) == OSC_ERR_FORMAT &&
              strstr(osc_last_error(), "blk.0.attn_output.weight") && starts_with(osc_last_error(), gpath),
          "wrong shape: %s", osc_last_error());
    free(tmp);
    fprintf(stderr, "%s: %d weights read from GGUF equal the checkpoint's (%d differ)\n", name, n, bad);
out:
    osc_st_close(st);
    osc_gguf_close(g);
}

static void check_tokenizer(const char *name, const char *gpath, const char *dir, const cJSON *goldens) {
    char tp[1200];
    osc_tokenizer *a = NULL, *b = NULL;
    CHECK(osc_tokenizer_load_gguf(gpath, &a) == OSC_OK, "%s: %s", name, osc_last_error());
    CHECK(osc_tokenizer_load(path_in(tp, sizeof tp, dir, "tokenizer.json"), &b) == OSC_OK, "%s", osc_last_error());
    if (!a || !b) goto out;
    CHECK(osc_tokenizer_vocab_size(a) == osc_tokenizer_vocab_size(b), "%s: vocab %d vs %d", name,
          osc_tokenizer_vocab_size(a), osc_tokenizer_vocab_size(b));
    for (int32_t id = 0; id < osc_tokenizer_vocab_size(b) + 70; id++) {
        size_t la, lb;
        const char *pa = osc_tokenizer_token_bytes(a, id, &la), *pb = osc_tokenizer_token_bytes(b, id, &lb);
        int same = (!pa && !pb) || (pa && pb && la == lb && !memcmp(pa, pb, la));
        same = same && osc_tokenizer_is_special(a, id) == osc_tokenizer_is_special(b, id);
        CHECK(same, "%s: token %d differs", name, id);
        if (!same) break;
    }
    int cases = 0, diff = 0;
    {
        const cJSON *c; /* the tiny tokenizers' case lists hold the same texts: take one */
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(cJSON_GetObjectItem(goldens, "gpt2-tiny"), "cases")) {
            const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
            for (int ps = 0; ps < 2; ps++) {
                int32_t *ia = NULL, *ib = NULL;
                int na = 0, nb = 0;
                osc_status sa = osc_tokenizer_encode(a, text, strlen(text), ps, &ia, &na);
                osc_status sb = osc_tokenizer_encode(b, text, strlen(text), ps, &ib, &nb);
                int same = sa == sb && na == nb && (na == 0 || !memcmp(ia, ib, (size_t)na * 4));
                if (!same && diff < 3)
                    CHECK(0, "%s: '%.40s' (parse_special %d): GGUF tokenizer gives %d ids, tokenizer.json %d", name, text,
                          ps, na, nb);
                diff += !same;
                cases++;
                free(ia);
                free(ib);
            }
        }
    }
    CHECK(diff == 0 && cases >= 600, "%s: %d of %d encodings differ", name, diff, cases);
    fprintf(stderr, "%s: GGUF tokenizer = tokenizer.json on %d encodings\n", name, cases);
out:
    osc_tokenizer_free(a);
    osc_tokenizer_free(b);
}

/* On a GPU (bf16 weights, uploaded through read_bf16): the GGUF model computes exactly what the
 * safetensors one does. */
static void check_cuda(const char *name, const char *gpath, const char *dir, const osc_st *gold) {
    osc_llm *m[2] = {0};
    CHECK(osc_llm_load(gpath, OSC_DEV_CUDA, &m[0]) == OSC_OK, "%s cuda: %s", name, osc_last_error());
    CHECK(osc_llm_load(dir, OSC_DEV_CUDA, &m[1]) == OSC_OK, "%s cuda: %s", name, osc_last_error());
    const osc_st_tensor *ti = osc_st_get(gold, "p0.ids"), *tl = osc_st_get(gold, "p0.logits");
    if (m[0] && m[1] && ti && tl) {
        const int S = (int)ti->shape[0], V = osc_llm_config_of(m[0])->vocab_size;
        float *out[2] = {malloc((size_t)S * V * 4), malloc((size_t)S * V * 4)}, *ref = malloc((size_t)S * V * 4);
        osc_st_read_f32(tl, ref, (int64_t)S * V);
        for (int k = 0; k < 2; k++) {
            osc_llm_ctx *c = NULL;
            osc_kv *kv = NULL;
            int st[2] = {0, S};
            osc_llm_ctx_new(m[k], 64, &c);
            osc_llm_kv_new(m[k], NULL, S + 4, &kv);
            osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ti->data, .kv = &kv, .all_logits = 1};
            CHECK(osc_llm_forward(m[k], c, &b, out[k]) == OSC_OK, "%s cuda: %s", name, osc_last_error());
            osc_kv_free(kv);
            osc_llm_ctx_free(c);
        }
        double e = max_row_rel(out[0], out[1], S, V), eg = max_row_rel(out[0], ref, S, V);
        CHECK(e <= 1e-6, "%s cuda: GGUF vs safetensors logits rel err %.3g", name, e);
        fprintf(stderr, "%s cuda (bf16): GGUF logits rel. error %.2e vs the safetensors load, %.2e vs transformers\n",
                name, e, eg);
        free(out[0]);
        free(out[1]);
        free(ref);
    }
    osc_llm_free(m[0]);
    osc_llm_free(m[1]);
}

static void test_model(const char *name, const cJSON *tok_goldens) {
    char dir[1024], gpath[1200], p[1200];
    snprintf(dir, sizeof dir, "%s/%s", g_models, name);
    snprintf(gpath, sizeof gpath, "%s/gguf/%s.gguf", g_models, name);
    osc_llm *mg = NULL, *ms = NULL;
    osc_st *gold = NULL;
    CHECK(osc_llm_load(gpath, OSC_DEV_CPU, &mg) == OSC_OK, "%s: %s", name, osc_last_error());
    CHECK(osc_llm_load(dir, OSC_DEV_CPU, &ms) == OSC_OK, "%s: %s", name, osc_last_error());
    CHECK(osc_st_open(path_in(p, sizeof p, dir, "golden.safetensors"), &gold) == OSC_OK, "%s", osc_last_error());
    if (!mg || !ms || !gold) goto out;
    const osc_llm_config *a = osc_llm_config_of(mg), *b = osc_llm_config_of(ms);
    CHECK(a->arch == b->arch && a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
              a->intermediate_size == b->intermediate_size && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
              a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim && a->rms_eps == b->rms_eps &&
              a->rope_theta == b->rope_theta && a->rope_type == b->rope_type && a->max_pos == b->max_pos &&
              a->tie_embeddings == b->tie_embeddings && a->attn_bias == b->attn_bias && a->qk_norm == b->qk_norm,
          "%s: the GGUF config differs from config.json", name);
    if (b->rope_type == 1)
        CHECK(a->rope_factor == b->rope_factor, "%s: llama3 factor %g vs %g", name, a->rope_factor, b->rope_factor);
    const int V = a->vocab_size;
    osc_llm_ctx *cg = NULL, *cs = NULL;
    osc_llm_ctx_new(mg, 256, &cg);
    osc_llm_ctx_new(ms, 256, &cs);
    double worst_gold = 0, worst_st = 0;
    for (int k = 0; k < 8; k++) {
        char key[32];
        snprintf(key, sizeof key, "p%d.ids", k);
        const osc_st_tensor *ti = osc_st_get(gold, key);
        snprintf(key, sizeof key, "p%d.logits", k);
        const osc_st_tensor *tl = osc_st_get(gold, key);
        if (!ti || !tl) break;
        const int S = (int)ti->shape[0];
        float *ref = malloc((size_t)S * V * 4), *og = malloc((size_t)S * V * 4), *os = malloc((size_t)S * V * 4);
        osc_st_read_f32(tl, ref, (int64_t)S * V);
        osc_kv *kg = NULL, *ks = NULL;
        osc_llm_kv_new(mg, NULL, S + 4, &kg);
        osc_llm_kv_new(ms, NULL, S + 4, &ks);
        int st[2] = {0, S};
        osc_llm_batch bg = {.n_seq = 1, .seq_start = st, .tokens = ti->data, .kv = &kg, .all_logits = 1};
        osc_llm_batch bs = {.n_seq = 1, .seq_start = st, .tokens = ti->data, .kv = &ks, .all_logits = 1};
        CHECK(osc_llm_forward(mg, cg, &bg, og) == OSC_OK && osc_llm_forward(ms, cs, &bs, os) == OSC_OK, "%s: %s", name,
              osc_last_error());
        double e1 = max_row_rel(og, ref, S, V), e2 = max_row_rel(og, os, S, V);
        if (e1 > worst_gold) worst_gold = e1;
        if (e2 > worst_st) worst_st = e2;
        osc_kv_free(kg);
        osc_kv_free(ks);
        free(ref);
        free(og);
        free(os);
    }
    CHECK(worst_gold <= 1e-4, "%s: GGUF logits vs transformers: worst row rel err %.3g", name, worst_gold);
    CHECK(worst_st <= 1e-5, "%s: GGUF logits vs the safetensors load: worst row rel err %.3g", name, worst_st);
    fprintf(stderr, "%s: GGUF logits worst row rel. error %.2e vs transformers, %.2e vs safetensors\n", name,
            worst_gold, worst_st);
    osc_llm_ctx_free(cg);
    osc_llm_ctx_free(cs);
    if (osc_device_cuda_available()) check_cuda(name, gpath, dir, gold);
    check_weights(name, gpath, dir);
    check_tokenizer(name, gpath, dir, tok_goldens);
    /* the public API takes the file too, and finds the chat format from the tokenizer */
    osc_model *om = NULL;
    CHECK(osc_model_load(gpath, NULL, &om) == OSC_OK, "%s: osc_model_load: %s", name, osc_last_error());
    if (om) {
        const char *want = a->arch == OSC_ARCH_LLAMA ? "Llama-3" : "ChatML";
        CHECK(strstr(osc_model_describe(om), want), "%s: %s", name, osc_model_describe(om));
        osc_model_free(om);
    }
out:
    osc_llm_free(mg);
    osc_llm_free(ms);
    osc_st_close(gold);
}

/* ---- tokenizers from vocab-only files, against HF ---- */

static void test_vocab_files(const cJSON *tok_goldens) {
    char p[1200];
    char *text = NULL;
    CHECK(osc_read_file(path_in(p, sizeof p, g_models, "gguf/tokenizer_goldens.json"), 1 << 24, &text, NULL) == OSC_OK,
          "%s", osc_last_error());
    cJSON *gold = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *cases = cJSON_GetObjectItem(cJSON_GetObjectItem(tok_goldens, "gpt2-tiny"), "cases");
    CHECK(gold && cases, "tokenizer goldens");
    if (!gold || !cases) goto out;
    static const char *files[] = {"tok-gpt2.gguf", "tok-gpt2-prefix.gguf", "tok-smollm.gguf"};
    for (int f = 0; f < 3; f++) {
        osc_tokenizer *t = NULL;
        snprintf(p, sizeof p, "%s/gguf/%s", g_models, files[f]);
        CHECK(osc_tokenizer_load_gguf(p, &t) == OSC_OK, "%s: %s", files[f], osc_last_error());
        const cJSON *want = cJSON_GetObjectItem(gold, files[f]);
        if (!t || !want) {
            osc_tokenizer_free(t);
            continue;
        }
        int k = 0, bad = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cases) {
            const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
            const cJSON *ids = cJSON_GetArrayItem(want, k++);
            int32_t *got = NULL;
            int n = 0;
            osc_tokenizer_encode(t, s, strlen(s), 1, &got, &n);
            int same = n == cJSON_GetArraySize(ids);
            for (int i = 0; same && i < n; i++) same = got[i] == cJSON_GetArrayItem(ids, i)->valueint;
            if (!same && bad < 3) CHECK(0, "%s: '%.40s': %d ids, HF %d", files[f], s, n, cJSON_GetArraySize(ids));
            bad += !same;
            free(got);
        }
        CHECK(bad == 0 && k == cJSON_GetArraySize(want), "%s: %d of %d cases differ from HF", files[f], bad, k);
        fprintf(stderr, "%s: %d/%d cases as HF tokenizers\n", files[f], k - bad, k);
        osc_tokenizer_free(t);
    }
out:
    cJSON_Delete(gold);
}

/* ---- bad files ---- */

typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (n == 0) return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void u32(buf *b, uint32_t v) {
    unsigned char x[4] = {v, v >> 8, v >> 16, v >> 24};
    put(b, x, 4);
}
static void u64(buf *b, uint64_t v) {
    u32(b, (uint32_t)v);
    u32(b, (uint32_t)(v >> 32));
}
static void str(buf *b, const char *s) {
    u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void head(buf *b, uint64_t nt, uint64_t nkv) {
    b->n = 0;
    put(b, "GGUF", 4);
    u32(b, 3);
    u64(b, nt);
    u64(b, nkv);
}
static void kv_str(buf *b, const char *k, const char *v) {
    str(b, k);
    u32(b, OSC_GGUF_STRING);
    str(b, v);
}
static void tinfo(buf *b, const char *name, int nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    str(b, name);
    u32(b, (uint32_t)nd);
    for (int i = 0; i < nd; i++) u64(b, ne[i]);
    u32(b, type);
    u64(b, off);
}
static void pad_data(buf *b, size_t align, size_t data) {
    while (b->n % align) put(b, "", 1);
    for (size_t i = 0; i < data; i++) put(b, "\x01", 1);
}

/* Write b and open it: the status, and the message must start with the path. */
static osc_status try_open(const buf *b, const char *what, const char *want_msg) {
    char p[1200];
    snprintf(p, sizeof p, "%s/bad.gguf", g_tmp);
    write_bytes(p, b->p, b->n);
    osc_gguf *g = NULL;
    osc_status s = osc_gguf_open(p, &g);
    if (s != OSC_OK) {
        CHECK(g == NULL && starts_with(osc_last_error(), p), "%s: message does not name the file: %s", what,
              osc_last_error());
        if (want_msg) CHECK(strstr(osc_last_error(), want_msg), "%s: '%s' lacks '%s'", what, osc_last_error(), want_msg);
    }
    osc_gguf_close(g);
    return s;
}

static void test_bad_files(void) {
    buf b = {0};
    const uint64_t ne42[2] = {4, 2};
    /* a good minimal file first: the builder is right */
    head(&b, 1, 1);
    kv_str(&b, "general.architecture", "llama");
    tinfo(&b, "w", 2, ne42, OSC_GGML_F32, 0);
    pad_data(&b, 32, 32);
    CHECK(try_open(&b, "minimal", NULL) == OSC_OK, "minimal file: %s", osc_last_error());
    /* every truncation of it */
    buf t = {0};
    int trunc_ok = 1;
    for (size_t cut = 0; cut < b.n; cut++) {
        t.n = 0;
        put(&t, b.p, cut);
        osc_status s = try_open(&t, "truncated", NULL);
        if (s != OSC_ERR_FORMAT) trunc_ok = 0, fprintf(stderr, "cut at %zu: status %d\n", cut, s);
    }
    CHECK(trunc_ok, "a truncated file opened or gave another error");

    struct { const char *what, *msg; osc_status want; } cases[] = {
        {"bad magic", "not a GGUF file", OSC_ERR_FORMAT},
        {"version 1", "version 1", OSC_ERR_UNSUPPORTED},
        {"big-endian", "big-endian", OSC_ERR_UNSUPPORTED},
        {"huge kv count", "metadata entries", OSC_ERR_FORMAT},
        {"huge tensor count", "tensors, more than", OSC_ERR_FORMAT},
        {"huge string", "truncated", OSC_ERR_FORMAT},
        {"huge array", "does not fit", OSC_ERR_FORMAT},
        {"unknown value type", "unknown value type 13", OSC_ERR_FORMAT},
        {"unknown tensor type", "unknown type id 4", OSC_ERR_FORMAT},
        {"unknown tensor type 99", "unknown type id 99", OSC_ERR_FORMAT},
        {"lying offset", "run past the end", OSC_ERR_FORMAT},
        {"misaligned offset", "not a multiple of the alignment", OSC_ERR_FORMAT},
        {"5 dims", "5 dims", OSC_ERR_FORMAT},
        {"0 dims", "0 dims", OSC_ERR_FORMAT},
        {"element overflow", "overflows", OSC_ERR_FORMAT},
        {"partial block", "not a multiple of the Q8_0 block", OSC_ERR_FORMAT},
        {"duplicate key", "appears twice", OSC_ERR_FORMAT},
        {"duplicate tensor", "appears twice", OSC_ERR_FORMAT},
        {"overlap", "overlap", OSC_ERR_FORMAT},
        {"alignment 3", "general.alignment", OSC_ERR_FORMAT},
        {"alignment string", "general.alignment", OSC_ERR_FORMAT},
        {"bool 2", "bool byte is 2", OSC_ERR_FORMAT},
        {"deep nesting", "nested deeper", OSC_ERR_FORMAT},
        {"NUL in key", "NUL byte", OSC_ERR_FORMAT},
        {"empty key", "bytes long", OSC_ERR_FORMAT},
        {"huge dim", "too large", OSC_ERR_FORMAT},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *w = cases[c].what;
        uint32_t ttype = OSC_GGML_F32;
        uint64_t off = 0, ne[5] = {4, 2, 1, 1, 1};
        int nd = 2;
        head(&b, 1, 1);
        if (!strcmp(w, "bad magic")) memcpy(b.p, "GGUG", 4);
        if (!strcmp(w, "version 1")) b.p[4] = 1;
        if (!strcmp(w, "big-endian")) b.p[4] = 0, b.p[7] = 3;
        if (!strcmp(w, "huge kv count")) b.n = 16, u64(&b, 1ull << 62);
        if (!strcmp(w, "huge tensor count")) b.n = 8, u64(&b, 1ull << 62), u64(&b, 1);
        if (!strcmp(w, "huge string")) {
            str(&b, "k");
            u32(&b, OSC_GGUF_STRING);
            u64(&b, 1ull << 62);
        } else if (!strcmp(w, "huge array")) {
            str(&b, "k");
            u32(&b, OSC_GGUF_ARRAY);
            u32(&b, OSC_GGUF_U32);
            u64(&b, 1ull << 61);
        } else if (!strcmp(w, "unknown value type")) {
            str(&b, "k");
            u32(&b, 13);
        } else if (!strcmp(w, "duplicate key")) {
            head(&b, 1, 2);
            kv_str(&b, "a.b", "x");
            kv_str(&b, "a.b", "y");
        } else if (!strcmp(w, "alignment 3") || !strcmp(w, "alignment string")) {
            str(&b, "general.alignment");
            if (w[10] == '3') u32(&b, OSC_GGUF_U32), u32(&b, 3);
            else u32(&b, OSC_GGUF_STRING), str(&b, "32");
        } else if (!strcmp(w, "bool 2")) {
            str(&b, "k");
            u32(&b, OSC_GGUF_BOOL);
            put(&b, "\x02", 1);
        } else if (!strcmp(w, "deep nesting")) {
            str(&b, "k");
            u32(&b, OSC_GGUF_ARRAY);
            for (int i = 0; i < 9; i++) u32(&b, OSC_GGUF_ARRAY), u64(&b, 1);
            u32(&b, OSC_GGUF_U8);
            u64(&b, 0);
        } else if (!strcmp(w, "NUL in key")) {
            u64(&b, 3);
            put(&b, "a\0b", 3);
            u32(&b, OSC_GGUF_U8);
            put(&b, "\x01", 1);
        } else if (!strcmp(w, "empty key")) {
            str(&b, "");
            u32(&b, OSC_GGUF_U8);
            put(&b, "\x01", 1);
        } else {
            kv_str(&b, "general.architecture", "llama");
        }
        if (!strcmp(w, "unknown tensor type")) ttype = 4;
        if (!strcmp(w, "unknown tensor type 99")) ttype = 99;
        if (!strcmp(w, "lying offset")) off = 1ull << 40;
        if (!strcmp(w, "misaligned offset")) off = 4;
        if (!strcmp(w, "5 dims")) nd = 5;
        if (!strcmp(w, "0 dims")) nd = 0;
        if (!strcmp(w, "element overflow")) ne[0] = 1ull << 40, ne[1] = 1ull << 40;
        if (!strcmp(w, "huge dim")) ne[0] = 1ull << 63;
        if (!strcmp(w, "partial block")) ttype = OSC_GGML_Q8_0, ne[0] = 33, ne[1] = 1;
        if (!strcmp(w, "duplicate tensor") || !strcmp(w, "overlap")) {
            b.p[8] = 2; /* two tensors */
            tinfo(&b, "w", 2, ne, ttype, 0);
            tinfo(&b, w[0] == 'd' ? "w" : "v", 2, ne, ttype, w[0] == 'd' ? 32 : 0);
            pad_data(&b, 32, 64);
        } else {
            tinfo(&b, "w", nd, ne, ttype, off);
            pad_data(&b, 32, 64);
        }
        osc_status s = try_open(&b, w, cases[c].msg);
        CHECK(s == cases[c].want, "%s: status %d, want %d (%s)", w, s, cases[c].want, osc_last_error());
    }

    /* random byte flips in a real file: any status, no crash (run under ASan to see more) */
    char p[1200];
    char *data = NULL;
    size_t len = 0;
    path_in(p, sizeof p, g_models, "gguf/qwen2-tiny.gguf");
    if (osc_read_file(p, 1 << 24, &data, &len) == OSC_OK) {
        uint64_t seed = 0x9e3779b97f4a7c15ull;
        size_t meta_end = 60000 < len ? 60000 : len; /* the header, metadata and tensor infos */
        for (int it = 0; it < 300; it++) {
            t.n = 0;
            put(&t, data, len);
            for (int k = 0; k < 4; k++) {
                seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
                t.p[seed % meta_end] ^= (unsigned char)(1u << (seed >> 60 & 7));
            }
            try_open(&t, "flipped", NULL);
        }
        CHECK(1, "byte flips");
    }
    free(data);
    free(t.p);

    /* loader errors: a file that parses but is not a model, an unsupported architecture */
    head(&b, 1, 1);
    kv_str(&b, "general.architecture", "gpt2");
    tinfo(&b, "w", 2, ne42, OSC_GGML_F32, 0);
    pad_data(&b, 32, 32);
    snprintf(p, sizeof p, "%s/arch.gguf", g_tmp);
    write_bytes(p, b.p, b.n);
    osc_llm *m = NULL;
    CHECK(osc_llm_load(p, OSC_DEV_CPU, &m) == OSC_ERR_UNSUPPORTED && strstr(osc_last_error(), "'gpt2'"),
          "gpt2 arch: %s", osc_last_error());
    osc_tokenizer *tok = NULL;
    CHECK(osc_tokenizer_load_gguf(p, &tok) == OSC_ERR_FORMAT && strstr(osc_last_error(), "tokenizer"),
          "no tokenizer: %s", osc_last_error());
    head(&b, 1, 1);
    kv_str(&b, "general.architecture", "llama");
    tinfo(&b, "w", 2, ne42, OSC_GGML_F32, 0);
    pad_data(&b, 32, 32);
    write_bytes(p, b.p, b.n);
    CHECK(osc_llm_load(p, OSC_DEV_CPU, &m) == OSC_ERR_FORMAT && strstr(osc_last_error(), "llama.block_count"),
          "no config: %s", osc_last_error());
    /* a .gguf name that is not GGUF reaches the GGUF reader */
    snprintf(p, sizeof p, "%s/not.gguf", g_tmp);
    write_bytes(p, "{}", 2);
    CHECK(osc_llm_load(p, OSC_DEV_CPU, &m) == OSC_ERR_FORMAT && strstr(osc_last_error(), "GGUF"), "not gguf: %s",
          osc_last_error());
    osc_llm_free(m);
    free(b.p);
}

/* Model tensors that a golden file (tools/golden/check_gguf_dequant.py) lists. */
static int real_check(const char *model, const char *golden) {
    osc_gguf *m = NULL, *g = NULL;
    CHECK(osc_gguf_open(model, &m) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_gguf_open(golden, &g) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; m && g && i < osc_gguf_n_tensors(g); i++) {
        const osc_gguf_tensor *gt = osc_gguf_tensor_at(g, i), *t = osc_gguf_tensor_find(m, gt->name);
        CHECK(t && t->nelem == gt->nelem && gt->type == OSC_GGML_F32, "%s missing or of another size", gt->name);
        if (!t || t->nelem != gt->nelem) continue;
        float *out = malloc((size_t)t->nelem * 4);
        osc_status s = osc_gguf_read_f32(t, 0, t->nelem, out);
        CHECK(s == OSC_OK, "%s", osc_last_error());
        const float *want = gt->data;
        int64_t exact = 0;
        double max_abs = 0, max_rel = 0;
        for (int64_t k = 0; s == OSC_OK && k < t->nelem; k++) {
            double e = fabs((double)out[k] - want[k]), r = e / (fabs(want[k]) > 1e-30 ? fabs(want[k]) : 1e-30);
            exact += !memcmp(&out[k], &want[k], 4);
            if (e > max_abs) max_abs = e;
            if (e > 0 && r > max_rel) max_rel = r;
        }
        printf("%-28s %-5s %10lld values: %lld bit-identical, max abs diff %.3g, max rel diff %.3g\n", t->name,
               osc_ggml_type_name(t->type), (long long)t->nelem, (long long)exact, max_abs, max_rel);
        CHECK(max_rel <= 1e-6, "%s: max rel diff %g", t->name, max_rel);
        free(out);
    }
    osc_gguf_close(m);
    osc_gguf_close(g);
    return check_done("test_gguf (real file)");
}

int main(void) {
    const char *cm = getenv("OSC_GGUF_CHECK_MODEL"), *cg = getenv("OSC_GGUF_CHECK_GOLDEN");
    if (cm && cg) return real_check(cm, cg);
    g_models = getenv("OSC_TEST_MODELS");
    if (!g_models || !g_models[0]) g_models = "tests/models";
    const char *t = getenv("OSC_TEST_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_gguf", t && t[0] ? t : "/tmp");
    mkdir(t && t[0] ? t : "/tmp", 0755);
    mkdir(g_tmp, 0755);
    char p[1200];
    char *text = NULL;
    CHECK(osc_read_file(path_in(p, sizeof p, g_models, "tokenizer/goldens.json"), 1 << 24, &text, NULL) == OSC_OK, "%s",
          osc_last_error());
    cJSON *tok_goldens = text ? cJSON_Parse(text) : NULL;
    free(text);
    test_metadata();
    test_dequant();
    test_model("llama-tiny", tok_goldens);
    test_model("qwen2-tiny", tok_goldens);
    test_model("qwen3-tiny", tok_goldens);
    test_vocab_files(tok_goldens);
    test_bad_files();
    cJSON_Delete(tok_goldens);
    return check_done("test_gguf");
}
