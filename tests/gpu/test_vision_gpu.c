/* Vision encoder and the image + question path on CUDA (bf16) vs the transformers float32
 * goldens (tools/golden/make_vision_goldens.py), for omni-tiny and vl-tiny: encoder output,
 * prefill logits and teacher-forced greedy logits within rel. L2 2e-2; the greedy argmax agrees
 * wherever the golden's top-2 gap exceeds 0.1; positions and prompt ids are exact. Also the CUDA
 * encoder vs the CPU encoder on one larger image with partial windows. Skipped (77) without a
 * GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/check.h"
#include "tests/vision_common.h"

static void test_model(const char *models, const char *name) {
    char dir[1024], gp[1200];
    snprintf(dir, sizeof dir, "%s/%s", models, name);
    snprintf(gp, sizeof gp, "%s/golden_vision.safetensors", dir);
    osc_st *g = NULL;
    CHECK(osc_st_open(gp, &g) == OSC_OK, "%s: %s", gp, osc_last_error());
    if (!g) return;
    osc_vision *v = NULL;
    CHECK(osc_vision_load(dir, OSC_DEV_CUDA, &v) == OSC_OK, "%s: vision load: %s", name, osc_last_error());
    osc_llm *m = NULL;
    CHECK(osc_llm_load(dir, OSC_DEV_CUDA, &m) == OSC_OK, "%s: llm load: %s", name, osc_last_error());
    if (v) {
        double err = vision_check_encoder(v, g, OSC_DEV_CUDA);
        printf("%s: cuda encoder rel L2 %.3g\n", name, err);
        CHECK(err <= 2e-2, "%s: encoder err %g", name, err);
    }
    if (v && m) {
        vqa_result r;
        int ok = vision_run_vqa(dir, v, m, g, "bf16", &r);
        CHECK(ok, "%s: vqa run failed", name);
        if (ok) {
            printf("%s: cuda prefill rel L2 %.3g, greedy %d/%d same (gap-checked ok %d), worst step rel L2 %.3g\n", name,
                   r.prefill_err, r.greedy_same, r.n_greedy, r.greedy_gap_ok, r.greedy_err);
            CHECK(r.ids_match && r.pos_match, "%s: ids/positions", name);
            CHECK(r.prefill_err <= 2e-2, "%s: prefill err %g", name, r.prefill_err);
            CHECK(r.greedy_err <= 2e-2, "%s: greedy err %g", name, r.greedy_err);
            CHECK(r.greedy_gap_ok, "%s: a greedy token with a clear golden margin differs", name);
        }
    }
    osc_llm_free(m);
    osc_vision_free(v);
    osc_st_close(g);
}

/* CUDA vs CPU encoder: one 2-frame video of 20x28 patches (partial windows) and an image. */
static void test_twin(const char *models) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/omni-tiny", models);
    osc_vision *vc = NULL, *vg = NULL;
    if (osc_vision_load(dir, OSC_DEV_CPU, &vc) != OSC_OK || osc_vision_load(dir, OSC_DEV_CUDA, &vg) != OSC_OK) {
        CHECK(0, "twin load: %s", osc_last_error());
        osc_vision_free(vc);
        return;
    }
    const int32_t grid[2][3] = {{2, 20, 28}, {1, 6, 10}};
    const int64_t N = 2 * 20 * 28 + 6 * 10, PD = osc_vision_config_of(vc)->patch_dim;
    float *pv = malloc((size_t)(N * PD) * sizeof(float));
    vision_pixels(pv, N * PD, 99);
    osc_tensor oc, og;
    CHECK(osc_vision_encode(vc, pv, N, grid, 2, &oc) == OSC_OK, "cpu encode: %s", osc_last_error());
    CHECK(osc_vision_encode(vg, pv, N, grid, 2, &og) == OSC_OK, "cuda encode: %s", osc_last_error());
    int64_t n = oc.ne[0] * oc.ne[1];
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    if (osc_tensor_download_f32(a, &oc, n) == OSC_OK && osc_tensor_download_f32(b, &og, n) == OSC_OK) {
        double e = rel_l2(b, a, n);
        printf("omni-tiny: cuda vs cpu encoder (video 2x20x28 + image 6x10) rel L2 %.3g\n", e);
        CHECK(e <= 2e-2, "twin err %g", e);
    }
    free(a);
    free(b);
    free(pv);
    osc_vision_free(vc);
    osc_vision_free(vg);
}

int main(void) {
    if (!osc_device_cuda_available()) {
        printf("test_vision_gpu: no GPU, skipped\n");
        return OSC_TEST_SKIP;
    }
    const char *models = getenv("OSC_TEST_MODELS");
    if (!models) models = "tests/models";
    test_model(models, "omni-tiny");
    test_model(models, "vl-tiny");
    test_twin(models);
    return check_done("test_vision_gpu");
}
