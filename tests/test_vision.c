/* Vision encoder and the image + question path vs transformers goldens
 * (tools/golden/make_vision_goldens.py): tests/models/omni-tiny (thinker.visual.*, split q/k/v)
 * and tests/models/vl-tiny (visual.*, fused qkv).
 * - encoder output for two images and a 2-frame video in one call, from the same synthetic
 *   pixel_values: max rel. error <= 1e-4 (|a-b| / max|ref|)
 * - the image + question prompt built by llm/omni_prompt.c equals the golden ids; its M-RoPE
 *   positions equal transformers' get_rope_index; the logits after a prefill that scatters the
 *   encoder output into the pad rows match (<= 1e-4); greedy decoding continued with the rope
 *   delta gives the golden tokens and logits. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/device.h"
#include "core/safetensors.h"
#include "encoders/vision.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/tokenizer.h"
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
    CHECK(osc_vision_load(dir, OSC_DEV_CPU, &v) == OSC_OK, "%s: vision load: %s", name, osc_last_error());
    if (!v) {
        osc_st_close(g);
        return;
    }
    /* 1. encoder */
    double err = vision_check_encoder(v, g, OSC_DEV_CPU);
    printf("%s: encoder max rel err %.3g\n", name, err);
    CHECK(err <= 1e-4, "%s: encoder err %g", name, err);

    /* 2. prompt, positions, logits, greedy */
    osc_llm *m = NULL;
    CHECK(osc_llm_load(dir, OSC_DEV_CPU, &m) == OSC_OK, "%s: llm load: %s", name, osc_last_error());
    if (m) {
        vqa_result r;
        int ok = vision_run_vqa(dir, v, m, g, "bf16", &r);
        CHECK(ok, "%s: vqa run failed: %s", name, osc_last_error());
        if (ok) {
            printf("%s: prompt %d ids (match %d), positions match %d, delta %d, prefill logits err %.3g, "
                   "greedy %d/%d same, greedy logits err %.3g\n",
                   name, r.n_ids, r.ids_match, r.pos_match, r.delta, r.prefill_err, r.greedy_same, r.n_greedy,
                   r.greedy_err);
            CHECK(r.ids_match, "%s: prompt ids differ from the golden", name);
            CHECK(r.pos_match, "%s: positions differ", name);
            CHECK(r.prefill_err <= 1e-4, "%s: prefill logits err %g", name, r.prefill_err);
            CHECK(r.greedy_same == r.n_greedy, "%s: greedy tokens %d/%d", name, r.greedy_same, r.n_greedy);
            CHECK(r.greedy_err <= 1e-4, "%s: greedy logits err %g", name, r.greedy_err);
        }
        osc_llm_free(m);
    }
    osc_vision_free(v);
    osc_st_close(g);
}

static void test_bad(const char *models) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/omni-tiny", models);
    osc_vision *v = NULL;
    if (osc_vision_load(dir, OSC_DEV_CPU, &v) != OSC_OK) return;
    float pv[16 * 1176];
    for (int i = 0; i < 16 * 1176; i++) pv[i] = 0.25f;
    osc_tensor out;
    int32_t bad_odd[1][3] = {{1, 4, 3}}, ok_grid[1][3] = {{1, 4, 4}}, neg[1][3] = {{0, 4, 4}};
    CHECK(osc_vision_encode(v, pv, 12, (const int32_t(*)[3])bad_odd, 1, &out) == OSC_ERR_INVALID_ARG, "odd grid");
    CHECK(osc_vision_encode(v, pv, 0, (const int32_t(*)[3])neg, 1, &out) == OSC_ERR_INVALID_ARG, "zero t");
    CHECK(osc_vision_encode(v, pv, 15, (const int32_t(*)[3])ok_grid, 1, &out) == OSC_ERR_INVALID_ARG,
          "pixel count mismatch");
    CHECK(osc_vision_encode(v, pv, 16, (const int32_t(*)[3])ok_grid, 1, &out) == OSC_OK, "good grid: %s",
          osc_last_error());
    CHECK(out.ne[0] == 4 && out.ne[1] == 64, "out shape");
    osc_vision_free(v);
    /* a text-only model has no vision part */
    snprintf(dir, sizeof dir, "%s/qwen2-tiny", models);
    CHECK(osc_vision_load(dir, OSC_DEV_CPU, &v) == OSC_ERR_FORMAT && !v, "text model: %s", osc_last_error());
}

/* `oscar vqa` end to end on the committed vqa_image.png: greedy answer ids equal transformers'
 * (image processor + model), and a file that is not an image fails with exit code 1. */
static void test_cli(const char *models) {
    const char *bin = getenv("OSC_BIN");
    if (!bin) {
        printf("OSC_BIN not set: CLI test skipped\n");
        return;
    }
    char dir[1024], cmd[4096], gp[1200];
    snprintf(dir, sizeof dir, "%s/omni-tiny", models);
    snprintf(gp, sizeof gp, "%s/golden_vision.safetensors", dir);
    osc_st *g = NULL;
    if (osc_st_open(gp, &g) != OSC_OK) return;
    const osc_st_tensor *tids = osc_st_get(g, "cli.ids"), *tpl = osc_st_get(g, "cli.prompt_len");
    CHECK(tids && tpl, "cli goldens missing");
    snprintf(cmd, sizeof cmd,
             "'%s/oscar' vqa -m '%s' --image '%s/vqa_image.png' -p 'What is in this picture?' -n %d --temp 0 "
             "--repeat-penalty 1 --device cpu --json",
             bin, dir, dir, tids ? (int)tids->shape[0] : 8);
    FILE *f = popen(cmd, "r");
    char buf[65536];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    int rc = f ? pclose(f) : -1;
    CHECK(rc == 0, "vqa exit status %d: %s", rc, buf);
    cJSON *j = cJSON_Parse(buf);
    CHECK(j != NULL, "vqa --json output is not JSON: %s", buf);
    if (j && tids && tpl) {
        const cJSON *ids = cJSON_GetObjectItem(j, "ids"), *pt = cJSON_GetObjectItem(j, "prompt_tokens");
        int same = cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == (int)tids->shape[0];
        for (int i = 0; same && i < (int)tids->shape[0]; i++)
            same = (int)cJSON_GetArrayItem(ids, i)->valuedouble == ((const int32_t *)tids->data)[i];
        CHECK(same, "vqa answer ids differ from transformers': %s", buf);
        CHECK(cJSON_IsNumber(pt) && (int)pt->valuedouble == ((const int32_t *)tpl->data)[0], "prompt length");
        printf("oscar vqa: prompt %d tokens, answer ids %s transformers'\n", cJSON_IsNumber(pt) ? (int)pt->valuedouble : -1,
               same ? "equal" : "DIFFER FROM");
    }
    cJSON_Delete(j);
    snprintf(cmd, sizeof cmd, "'%s/oscar' vqa -m '%s' --image '%s/config.json' 'What?' 2>&1", bin, dir, dir);
    f = popen(cmd, "r");
    n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    rc = f ? pclose(f) : -1;
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1 && strstr(buf, "cannot read image"), "bad image: rc %d, %s", rc, buf);
    snprintf(cmd, sizeof cmd, "'%s/oscar' vqa -m '%s' 'What?' 2>&1", bin, dir);
    f = popen(cmd, "r");
    n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    rc = f ? pclose(f) : -1;
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "no image: usage error, rc %d", rc);
    osc_st_close(g);
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS");
    if (!models) models = "tests/models";
    test_model(models, "omni-tiny");
    test_model(models, "vl-tiny");
    test_bad(models);
    test_cli(models);
    return check_done("test_vision");
}
