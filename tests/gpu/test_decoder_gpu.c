/* The decoder on CUDA (bf16 weights and activations, fp32 accumulation) against the CPU float32
 * reference and the transformers goldens: logits rel. L2 <= 2e-2 per row, the same 32 greedy
 * tokens, batched decode equal to single-sequence decode. Skipped (77) without a GPU. */
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "llm/generate.h"
#include "llm/model.h"
#include "tests/check.h"

static void test_model(const char *root, const char *name) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/%s", root, name);
    osc_llm *gm = NULL, *cm = NULL;
    CHECK(osc_llm_load(dir, OSC_DEV_CUDA, &gm) == OSC_OK, "%s cuda load: %s", name, osc_last_error());
    CHECK(osc_llm_load(dir, OSC_DEV_CPU, &cm) == OSC_OK, "%s cpu load: %s", name, osc_last_error());
    osc_st *g = NULL;
    CHECK(osc_st_open(osc_path_join(path, sizeof path, dir, "golden.safetensors"), &g) == OSC_OK, "%s", osc_last_error());
    if (!gm || !cm || !g) goto out;
    const int V = osc_llm_config_of(gm)->vocab_size;
    osc_llm_ctx *gc = NULL, *cc = NULL;
    CHECK(osc_llm_ctx_new(gm, 256, &gc) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_llm_ctx_new(cm, 256, &cc) == OSC_OK, "%s", osc_last_error());
    for (int p = 0; p < 4; p++) {
        char key[32];
        snprintf(key, sizeof key, "p%d.ids", p);
        const osc_st_tensor *ti = osc_st_get(g, key);
        if (!ti) continue;
        int S = (int)ti->shape[0];
        float *a = malloc((size_t)S * V * 4), *b = malloc((size_t)S * V * 4);
        osc_kv *kg = NULL, *kc = NULL;
        osc_llm_kv_new(gm, NULL, S + 4, &kg);
        osc_llm_kv_new(cm, NULL, S + 4, &kc);
        int st[2] = {0, S};
        osc_llm_batch bg = {.n_seq = 1, .seq_start = st, .tokens = ti->data, .kv = &kg, .all_logits = 1}, bc = {.n_seq = 1, .seq_start = st, .tokens = ti->data, .kv = &kc, .all_logits = 1};
        CHECK(osc_llm_forward(gm, gc, &bg, a) == OSC_OK, "%s p%d cuda: %s", name, p, osc_last_error());
        CHECK(osc_llm_forward(cm, cc, &bc, b) == OSC_OK, "%s p%d cpu: %s", name, p, osc_last_error());
        /* VERIFY.md: ||out - ref|| / ||ref|| over the logits <= 2e-2; the worst single row is
         * printed too (bf16 rounding of the activations puts a few rows near 2e-2) */
        double worst = 0, all = rel_l2(a, b, (long)S * V);
        for (int r = 0; r < S; r++) {
            double e = rel_l2(a + (size_t)r * V, b + (size_t)r * V, V);
            if (e > worst) worst = e;
        }
        CHECK(all <= 2e-2, "%s p%d: cuda vs cpu rel err %.3g", name, p, all);
        printf("%s p%d S=%d: cuda bf16 vs cpu f32 rel. error %.2e (worst row %.2e)\n", name, p, S, all, worst);
        osc_kv_free(kg);
        osc_kv_free(kc);
        free(a);
        free(b);
    }
    const osc_st_tensor *gi = osc_st_get(g, "greedy.ids"), *p0 = osc_st_get(g, "p0.ids"), *p1 = osc_st_get(g, "p1.ids");
    if (gi && p0 && p1) {
        int n = (int)gi->shape[0];
        int32_t o0[64], o1[64], solo[64];
        osc_kv *kv[2] = {0};
        osc_llm_kv_new(gm, NULL, 512, &kv[0]);
        osc_llm_kv_new(gm, NULL, 512, &kv[1]);
        osc_gen_request r[2] = {{p0->data, (int)p0->shape[0], n, kv[0], NULL, o0, 0, 0},
                                {p1->data, (int)p1->shape[0], n, kv[1], NULL, o1, 0, 0}};
        CHECK(osc_generate_batch(gm, gc, r, 2, NULL, 0) == OSC_OK, "%s", osc_last_error());
        int same = 0;
        while (same < n && o0[same] == ((const int32_t *)gi->data)[same]) same++;
        CHECK(same == n, "%s: cuda greedy matches transformers for %d of %d tokens", name, same, n);
        printf("%s: cuda greedy %d/%d tokens identical to transformers\n", name, same, n);
        osc_kv_truncate(kv[1], 0);
        osc_gen_request r1 = {p1->data, (int)p1->shape[0], n, kv[1], NULL, solo, 0, 0};
        CHECK(osc_generate_batch(gm, gc, &r1, 1, NULL, 0) == OSC_OK, "%s", osc_last_error());
        CHECK(!memcmp(o1, solo, (size_t)n * 4), "%s: cuda batched decode differs from single", name);
        osc_kv_free(kv[0]);
        osc_kv_free(kv[1]);
    }
    osc_llm_ctx_free(gc);
    osc_llm_ctx_free(cc);
out:
    osc_st_close(g);
    osc_llm_free(gm);
    osc_llm_free(cm);
}

/* Random weights of one shape on both devices: the shared hash gives the same weights (up to
 * bf16 rounding), so the logits must agree like a checkpoint's. */
static void test_random_model(void) {
    osc_llm_config c;
    memset(&c, 0, sizeof c);
    c.arch = OSC_ARCH_QWEN2;
    snprintf(c.model_type, sizeof c.model_type, "qwen2");
    c.vocab_size = 300; c.hidden_size = 128; c.intermediate_size = 256; c.n_layers = 2;
    c.n_heads = 8; c.n_kv_heads = 2; c.head_dim = 16; c.rms_eps = 1e-6f; c.rope_theta = 10000;
    c.rope_type = OSC_ROPE_DEFAULT; c.max_pos = 512; c.attn_bias = 1; c.bos_id = c.pad_id = -1;
    c.image_token_id = c.video_token_id = c.audio_token_id = -1;
    c.vision_start_id = c.vision_end_id = c.audio_start_id = c.audio_end_id = -1;
    osc_llm *gm = NULL, *cm = NULL;
    CHECK(osc_llm_new_random(&c, OSC_DEV_CUDA, 7, &gm) == OSC_OK, "random cuda: %s", osc_last_error());
    CHECK(osc_llm_new_random(&c, OSC_DEV_CPU, 7, &cm) == OSC_OK, "random cpu: %s", osc_last_error());
    if (gm && cm) {
        enum { S = 50 };
        int32_t ids[S];
        for (int i = 0; i < S; i++) ids[i] = (i * 37 + 11) % c.vocab_size;
        float *a = malloc((size_t)S * c.vocab_size * 4), *b = malloc((size_t)S * c.vocab_size * 4);
        osc_llm_ctx *gc = NULL, *cc = NULL;
        osc_kv *kg = NULL, *kc = NULL;
        osc_llm_ctx_new(gm, 64, &gc);
        osc_llm_ctx_new(cm, 64, &cc);
        osc_llm_kv_new(gm, NULL, 64, &kg);
        osc_llm_kv_new(cm, NULL, 64, &kc);
        int st[2] = {0, S};
        osc_llm_batch bg = {.n_seq = 1, .seq_start = st, .tokens = ids, .kv = &kg, .all_logits = 1}, bc = {.n_seq = 1, .seq_start = st, .tokens = ids, .kv = &kc, .all_logits = 1};
        CHECK(osc_llm_forward(gm, gc, &bg, a) == OSC_OK, "%s", osc_last_error());
        CHECK(osc_llm_forward(cm, cc, &bc, b) == OSC_OK, "%s", osc_last_error());
        double e = rel_l2(a, b, (long)S * c.vocab_size);
        CHECK(e <= 2e-2, "random model cuda vs cpu rel err %.3g", e);
        printf("random-weights qwen2 shape: cuda vs cpu rel. error %.2e\n", e);
        osc_kv_free(kg);
        osc_kv_free(kc);
        osc_llm_ctx_free(gc);
        osc_llm_ctx_free(cc);
        free(a);
        free(b);
    }
    osc_llm_free(gm);
    osc_llm_free(cm);
}

int main(void) {
    if (!osc_device_cuda_available()) {
        printf("no GPU: skipped\n");
        return OSC_TEST_SKIP;
    }
    const char *root = getenv("OSC_TEST_MODELS");
    if (!root) root = "tests/models";
    test_model(root, "qwen2-tiny");
    test_model(root, "qwen3-tiny");
    test_model(root, "llama-tiny");
    test_random_model();
    return check_done("test_decoder_gpu");
}
