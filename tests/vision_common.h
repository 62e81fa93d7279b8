/* Shared by tests/test_vision.c (CPU) and tests/gpu/test_vision_gpu.c: the synthetic pixel
 * values of tools/golden/make_vision_goldens.py, the encoder check and the image + question run
 * against golden_vision.safetensors. Include after tests/check.h. */
#ifndef OSC_TESTS_VISION_COMMON_H
#define OSC_TESTS_VISION_COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/device.h"
#include "core/safetensors.h"
#include "encoders/vision.h"
#include "kvcache/kvcache.h"
#include "llm/chat.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/tokenizer.h"

/* element i of the golden pixel_values (see make_vision_goldens.py) */
static void vision_pixels(float *pv, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t h = (uint32_t)((uint64_t)i * 2654435761u + (uint64_t)seed * 40503u);
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        pv[i] = (float)((double)(h >> 8) * (1.0 / 16777216.0) * 4.0 - 2.0);
    }
}

static const osc_st_tensor *gget(const osc_st *g, const char *name) {
    const osc_st_tensor *t = osc_st_get(g, name);
    if (!t) fprintf(stderr, "golden tensor %s missing\n", name);
    return t;
}

/* max |a-b| / max |ref| */
static double max_rel(const float *a, const float *ref, int64_t n) {
    double mx = 0, md = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(ref[i])) return INFINITY;
        double d = fabs((double)a[i] - ref[i]);
        if (d > md) md = d;
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    }
    return mx > 0 ? md / mx : INFINITY;
}

/* Encode the golden's items; returns the error (CPU: max_rel, CUDA: rel L2), INFINITY on failure. */
static double vision_check_encoder(osc_vision *v, const osc_st *g, osc_dev dev) {
    const osc_st_tensor *tg = gget(g, "enc.grid"), *ts = gget(g, "enc.pixels_seed"), *to = gget(g, "enc.out");
    if (!tg || !ts || !to) return INFINITY;
    const int32_t(*grid)[3] = (const int32_t(*)[3])tg->data;
    int n_items = (int)tg->shape[0];
    int64_t N = 0;
    for (int i = 0; i < n_items; i++) N += (int64_t)grid[i][0] * grid[i][1] * grid[i][2];
    const int PD = osc_vision_config_of(v)->patch_dim;
    float *pv = malloc((size_t)N * PD * sizeof(float));
    int64_t no = to->shape[0] * to->shape[1];
    float *ref = malloc((size_t)no * sizeof(float)), *got = malloc((size_t)no * sizeof(float));
    double err = INFINITY;
    osc_tensor out;
    vision_pixels(pv, N * PD, (uint32_t)((const int32_t *)ts->data)[0]);
    if (osc_st_read_f32(to, ref, no) == OSC_OK && osc_vision_encode(v, pv, N, grid, n_items, &out) == OSC_OK &&
        out.ne[0] == to->shape[0] && out.ne[1] == to->shape[1] && osc_tensor_download_f32(got, &out, no) == OSC_OK)
        err = dev == OSC_DEV_CPU ? max_rel(got, ref, no) : rel_l2(got, ref, no);
    else
        fprintf(stderr, "encoder: %s\n", osc_last_error());
    free(pv);
    free(ref);
    free(got);
    return err;
}

typedef struct vqa_result {
    int n_ids, ids_match, pos_match, delta;
    double prefill_err;      /* CPU: max_rel; CUDA: rel L2 */
    int n_greedy, greedy_same;
    double greedy_err;       /* worst step */
    int greedy_gap_ok;       /* CUDA: argmax agrees wherever the golden top-2 gap > 0.1 */
} vqa_result;

/* Build the golden's prompt, positions, encode its images, prefill, then decode the golden's greedy
 * tokens (teacher-forced) with the rope delta. Returns 1 when everything ran. */
static int vision_run_vqa(const char *dir, osc_vision *v, osc_llm *m, const osc_st *g, const char *kvmode,
                          vqa_result *r) {
    memset(r, 0, sizeof *r);
    const osc_st_tensor *tids = gget(g, "vqa.ids"), *tgrid = gget(g, "vqa.grid"), *tseed = gget(g, "vqa.pixels_seed");
    const osc_st_tensor *tpos = gget(g, "vqa.pos"), *tdelta = gget(g, "vqa.delta"), *ttail = gget(g, "vqa.tail_start");
    const osc_st_tensor *tlog = gget(g, "vqa.logits"), *gids = gget(g, "greedy.ids"), *glog = gget(g, "greedy.logits");
    if (!tids || !tgrid || !tseed || !tpos || !tdelta || !ttail || !tlog || !gids || !glog) return 0;
    const osc_llm_config *cfg = osc_llm_config_of(m);
    const osc_vision_config *vc = osc_vision_config_of(v);
    const int V = cfg->vocab_size;
    int ok = 0;
    char path[1200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    osc_tokenizer *tok = NULL;
    int32_t *ids = NULL, *pos = NULL, *rows = NULL;
    float *pv = NULL, *logits = NULL, *ref = NULL;
    osc_kv *kv = NULL;
    osc_llm_ctx *ctx = NULL;
    if (osc_tokenizer_load(path, &tok) != OSC_OK) goto done;
    const int32_t(*grid)[3] = (const int32_t(*)[3])tgrid->data;
    const int n_img = (int)tgrid->shape[0];
    osc_prompt_part parts[8];
    int np = 0;
    int64_t N = 0, n_tok = 0;
    for (int i = 0; i < n_img && np < 7; i++) {
        int64_t t = osc_vision_tokens(vc, grid[i]);
        parts[np++] = (osc_prompt_part){OSC_PART_IMAGE, NULL, (int)t, NULL, 0};
        N += (int64_t)grid[i][0] * grid[i][1] * grid[i][2];
        n_tok += t;
    }
    parts[np++] = (osc_prompt_part){OSC_PART_TEXT, "What is in this picture?", 0, NULL, 0};
    int n = 0;
    const char *sys = osc_chat_default_system(OSC_CHAT_CHATML, cfg->arch == OSC_ARCH_QWEN2_5_OMNI);
    if (osc_omni_prompt_build(tok, cfg, sys, parts, np, 1, &ids, &n) != OSC_OK) goto done;
    r->n_ids = n;
    r->ids_match = n == (int)tids->shape[0] && memcmp(ids, tids->data, (size_t)n * 4) == 0;
    if (!r->ids_match) {
        /* continue with the golden ids so the rest is still checked */
        free(ids);
        n = (int)tids->shape[0];
        ids = malloc((size_t)n * 4);
        memcpy(ids, tids->data, (size_t)n * 4);
    }
    osc_mm_pos_params pp;
    if (osc_mm_pos_params_load(dir, cfg, &pp) != OSC_OK) goto done;
    osc_mm_inputs in = {grid, n_img, NULL, NULL, 0, NULL, 0, 0};
    const int G = (int)gids->shape[0];
    pos = malloc((size_t)3 * (n + G) * 4);
    int32_t delta = 0;
    if (osc_mm_rope_index(&pp, ids, n, &in, pos, &delta) != OSC_OK) goto done;
    r->delta = delta;
    r->pos_match = memcmp(pos, tpos->data, (size_t)3 * n * 4) == 0 && delta == ((const int32_t *)tdelta->data)[0];
    /* encode and prefill */
    const int PD = vc->patch_dim;
    pv = malloc((size_t)N * PD * sizeof(float));
    vision_pixels(pv, N * PD, (uint32_t)((const int32_t *)tseed->data)[0]);
    osc_tensor emb;
    if (osc_vision_encode(v, pv, N, grid, n_img, &emb) != OSC_OK) goto done;
    rows = malloc((size_t)n_tok * 4);
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] == cfg->image_token_id && nr < n_tok) rows[nr++] = i;
    if (nr != n_tok) {
        fprintf(stderr, "pad rows %d != tokens %lld\n", nr, (long long)n_tok);
        goto done;
    }
    if (osc_llm_kv_new(m, kvmode, n + G + 8, &kv) != OSC_OK) goto done;
    if (osc_llm_ctx_new(m, 64, &ctx) != OSC_OK) goto done; /* 64 < n: the prefill is split in chunks */
    logits = malloc((size_t)n * V * sizeof(float));
    int st[2] = {0, n};
    osc_llm_batch b = {1, st, ids, pos, &kv, 1, nr, rows, &emb};
    if (osc_llm_forward(m, ctx, &b, logits) != OSC_OK) goto done;
    const int tail = ((const int32_t *)ttail->data)[0];
    const int64_t nl = (int64_t)(n - tail) * V;
    ref = malloc((size_t)(nl > (int64_t)G * V ? nl : (int64_t)G * V) * sizeof(float));
    if (osc_st_read_f32(tlog, ref, nl) != OSC_OK) goto done;
    const float *mine = logits + (size_t)tail * V;
    r->prefill_err = osc_llm_device(m) == OSC_DEV_CPU ? max_rel(mine, ref, nl) : rel_l2(mine, ref, nl);
    /* greedy continuation, teacher-forced with the golden tokens */
    if (osc_st_read_f32(glog, ref, (int64_t)G * V) != OSC_OK) goto done;
    const int32_t *gi = gids->data;
    float *row = logits + (size_t)(n - 1) * V;
    r->n_greedy = G;
    r->greedy_gap_ok = 1;
    for (int s = 0; s < G; s++) {
        const float *rr = ref + (size_t)s * V;
        double e = osc_llm_device(m) == OSC_DEV_CPU ? max_rel(row, rr, V) : rel_l2(row, rr, V);
        if (e > r->greedy_err || isnan(e)) r->greedy_err = e;
        int am = 0, ra = 0;
        for (int j = 1; j < V; j++) {
            if (row[j] > row[am]) am = j;
            if (rr[j] > rr[ra]) ra = j;
        }
        float second = -INFINITY;
        for (int j = 0; j < V; j++)
            if (j != ra && rr[j] > second) second = rr[j];
        r->greedy_same += am == gi[s];
        if (am != gi[s] && rr[ra] - second > 0.1f) r->greedy_gap_ok = 0;
        if (s + 1 == G) break;
        int32_t tokn = gi[s], p3[3];
        int c = n + s;
        p3[0] = p3[1] = p3[2] = c + delta;
        int st1[2] = {0, 1};
        osc_llm_batch b1 = {1, st1, &tokn, p3, &kv, 0, 0, NULL, NULL};
        if (osc_llm_forward(m, ctx, &b1, row) != OSC_OK) goto done;
    }
    ok = 1;
done:
    if (!ok) fprintf(stderr, "vqa run: %s\n", osc_last_error());
    osc_llm_ctx_free(ctx);
    osc_kv_free(kv);
    osc_tokenizer_free(tok);
    free(ids);
    free(pos);
    free(rows);
    free(pv);
    free(logits);
    free(ref);
    return ok;
}

#endif
