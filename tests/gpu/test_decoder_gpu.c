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
        osc_llm_batch bg = {1, st, ti->data, NULL, &kg, 1}, bc = {1, st, ti->data, NULL, &kc, 1};
        CHECK(osc_llm_forward(gm, gc, &bg, a) == OSC_OK, "%s p%d cuda: %s", name, p, osc_last_error());
        CHECK(osc_llm_forward(cm, cc, &bc, b) == OSC_OK, "%s p%d cpu: %s", name, p, osc_last_error());
        double worst = 0;
        for (int r = 0; r < S; r++) {
            double e = rel_l2(a + (size_t)r * V, b + (size_t)r * V, V);
            if (e > worst) worst = e;
        }
        CHECK(worst <= 2e-2, "%s p%d: cuda vs cpu worst row rel err %.3g", name, p, worst);
        printf("%s p%d S=%d: cuda bf16 vs cpu f32 worst row rel. error %.2e\n", name, p, S, worst);
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
    return check_done("test_decoder_gpu");
}
