/* Multimodal position ids (llm/mm_pos.c) vs transformers 5.17's get_rope_index, exact equality,
 * on the cases of tools/golden/make_vision_goldens.py (pos.<case>.*: text only, one image, two
 * images, video, video with second_per_grid 2 after an image, image + audio, audio + image, audio
 * only, video with interleaved audio (second_per_grid 1 and 3)) for Qwen2.5-Omni and Qwen2.5-VL;
 * plus rejection of prompts that disagree with their media lists. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/safetensors.h"
#include "llm/mm_pos.h"
#include "tests/check.h"

static void run_cases(const char *models, const char *name, int want_cases) {
    char dir[1024], gp[1200];
    snprintf(dir, sizeof dir, "%s/%s", models, name);
    snprintf(gp, sizeof gp, "%s/golden_vision.safetensors", dir);
    osc_llm_config cfg;
    osc_mm_pos_params p;
    osc_st *g = NULL;
    CHECK(osc_config_load(dir, &cfg) == OSC_OK, "%s config: %s", name, osc_last_error());
    CHECK(osc_mm_pos_params_load(dir, &cfg, &p) == OSC_OK, "%s params: %s", name, osc_last_error());
    CHECK(osc_st_open(gp, &g) == OSC_OK, "%s: %s", gp, osc_last_error());
    if (!g) return;
    int n_cases = 0;
    for (int i = 0; i < osc_st_count(g); i++) {
        const osc_st_tensor *t = osc_st_at(g, i);
        size_t L = strlen(t->name);
        if (strncmp(t->name, "pos.", 4) || L < 8 || strcmp(t->name + L - 4, ".ids")) continue;
        char c[128], nm[200];
        snprintf(c, sizeof c, "%.*s", (int)(L - 8), t->name + 4);
        const osc_st_tensor *tp, *td, *ti, *tv, *ts, *ta, *tx;
#define G(var, suffix) (snprintf(nm, sizeof nm, "pos.%s.%s", c, suffix), var = osc_st_get(g, nm))
        G(tp, "pos");
        G(td, "delta");
        G(ti, "image_grid");
        G(tv, "video_grid");
        G(ts, "spg");
        G(ta, "audio_len");
        G(tx, "aiv");
#undef G
        const int n = (int)t->shape[0];
        osc_mm_inputs in = {0};
        if (ti) in.image_grid = (const int32_t(*)[3])ti->data, in.n_images = (int)ti->shape[0];
        if (tv) in.video_grid = (const int32_t(*)[3])tv->data, in.n_videos = (int)tv->shape[0];
        if (ts) in.second_per_grid = ts->data;
        if (ta) in.audio_len = ta->data, in.n_audios = (int)ta->shape[0];
        in.use_audio_in_video = tx ? ((const int32_t *)tx->data)[0] : 0;
        int32_t *pos = malloc((size_t)3 * n * 4), delta = -12345;
        osc_status s = osc_mm_rope_index(&p, t->data, n, &in, pos, &delta);
        CHECK(s == OSC_OK, "%s/%s: %s", name, c, osc_last_error());
        if (s == OSC_OK && tp && td) {
            int bad = -1;
            const int32_t *ref = tp->data;
            for (int k = 0; k < 3 * n && bad < 0; k++)
                if (pos[k] != ref[k]) bad = k;
            CHECK(bad < 0, "%s/%s: position %d (axis %d, token %d) is %d, transformers %d", name, c, bad, bad / n, bad % n,
                  bad >= 0 ? pos[bad] : 0, bad >= 0 ? ref[bad] : 0);
            CHECK(delta == ((const int32_t *)td->data)[0], "%s/%s: delta %d vs %d", name, c, delta,
                  ((const int32_t *)td->data)[0]);
            printf("%s/%s: %d tokens, delta %d: %s\n", name, c, n, delta, bad < 0 ? "same" : "DIFFERENT");
        }
        /* a prompt whose media lists disagree is refused */
        if (in.n_images > 0) {
            osc_mm_inputs b = in;
            b.n_images--;
            CHECK(osc_mm_rope_index(&p, t->data, n, &b, pos, &delta) == OSC_ERR_INVALID_ARG, "%s/%s: one image short", name, c);
            if (n > 3) {
                int32_t *ids2 = malloc((size_t)n * 4);
                memcpy(ids2, t->data, (size_t)n * 4);
                int k = 0;
                while (k < n && ids2[k] != p.image_id) k++;
                ids2[k] = 1; /* one pad token less */
                CHECK(osc_mm_rope_index(&p, ids2, n, &in, pos, &delta) == OSC_ERR_INVALID_ARG, "%s/%s: short pad run", name, c);
                free(ids2);
            }
        }
        free(pos);
        n_cases++;
    }
    CHECK(n_cases == want_cases, "%s: %d cases, want %d", name, n_cases, want_cases);
    osc_st_close(g);
}

static void test_units(void) {
    CHECK(osc_mm_audio_tokens(1000) == 250, "10 s audio -> 250 tokens");
    CHECK(osc_mm_audio_tokens(3000) == 750, "30 s");
    CHECK(osc_mm_audio_tokens(30000) == 7500, "300 s");
    CHECK(osc_mm_audio_tokens(333) == 83, "L=333: L1=167, (167-2)//2+1 = 83");
    osc_mm_pos_params p = {OSC_MM_OMNI, 10, 11, 12, 20, 21, 22, 23, 2, 25, 2, 2};
    int32_t ids[6] = {1, 2, 3, 4, 5, 6}, pos[18], delta = 7;
    CHECK(osc_mm_rope_index(&p, ids, 6, NULL, pos, &delta) == OSC_OK && delta == 0 && pos[5] == 5 && pos[17] == 5,
          "text only");
    /* image spec example: 448x448 -> grid [1,32,32], 256 tokens, positions end at s + 16 */
    int32_t big[260], bp[3 * 260];
    big[0] = 1;
    big[1] = 20;
    for (int i = 0; i < 256; i++) big[2 + i] = 10;
    big[258] = 21;
    big[259] = 5;
    int32_t grid[1][3] = {{1, 32, 32}};
    osc_mm_inputs in = {(const int32_t(*)[3])grid, 1, NULL, NULL, 0, NULL, 0, 0};
    CHECK(osc_mm_rope_index(&p, big, 260, &in, bp, &delta) == OSC_OK, "448x448: %s", osc_last_error());
    CHECK(bp[258] == 2 + 16 && bp[259] == 19 && delta == 20 - 260, "448x448 eos %d, delta %d", bp[258], delta);
    CHECK(bp[260 + 2 + 255] == 2 + 15 && bp[520 + 2 + 255] == 2 + 15 && bp[2 + 255] == 2, "last unit (t,h,w)");
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS");
    if (!models) models = "tests/models";
    test_units();
    run_cases(models, "omni-tiny", 10);
    run_cases(models, "vl-tiny", 5);
    return check_done("test_mm_pos");
}
