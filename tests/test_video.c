/* encoders/video.c and the caption prompt pieces against tools/golden/make_video_goldens.py
 * (PyAV decode + qwen-omni-utils sampling + transformers' Qwen2_5OmniProcessor and thinker on
 * tests/models/omni-tiny), stored in tests/data/video/goldens.safetensors.
 *   - sampling rules (pure functions) on the worked examples of docs/qwen2_5_omni.md 5;
 *   - the committed clips: frame indices, F, r, grid, second_per_grid exactly; the decoded RGB
 *     frames vs PyAV's (4x4 box means; both decoders are FFmpeg's and the YUV->RGB conversion
 *     is the same swscale path, so we expect exact equality; the tolerance of 0.5 levels
 *     (mean abs) / 3 levels (max) only allows for SIMD rounding differences between swscale
 *     builds); pixel_values rows vs the processor's (torchvision's uint8 bicubic resize: at
 *     most one 8-bit level where a value sits within float error of a rounding boundary);
 *   - prompt ids (video, and video + audio interleaved) equal the processor's, positions equal
 *     get_rope_index, the last-8-row logits of the whole pipeline (our decode, resize, encoders,
 *     decoder) within 1e-4 relative (max |diff| / max |ref|) of transformers', and the greedy
 *     tokens equal;
 *   - bad files: missing, empty, garbage, truncated header, truncated data, a still image,
 *     an audio-only file: clear errors, no crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "core/device.h"
#include "core/safetensors.h"
#include "encoders/audio_enc.h"
#include "encoders/audio_io.h"
#include "encoders/mel.h"
#include "encoders/video.h"
#include "encoders/vision.h"
#include "encoders/vision_pre.h"
#include "llm/chat.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/tokenizer.h"
#include "pipelines/lib/caption_prep.h"

static const osc_st_tensor *G(const osc_st *g, const char *name) {
    const osc_st_tensor *t = osc_st_get(g, name);
    if (!t) fprintf(stderr, "golden %s missing\n", name);
    return t;
}
static const osc_st_tensor *Gf(const osc_st *g, const char *clip, const char *what) {
    char n[128];
    snprintf(n, sizeof n, "%s.%s", clip, what);
    return G(g, n);
}

static void test_sampling(void) {
    osc_video_params p;
    osc_video_default_params(&p);
    int64_t idx[64];
    int n = 0;
    CHECK(osc_video_sample_indices(36, 12.0, &p, idx, &n) == OSC_OK && n == 6, "36 frames at 12 fps: n %d", n);
    int64_t want[6] = {0, 7, 14, 21, 28, 35};
    CHECK(n == 6 && !memcmp(idx, want, sizeof want), "indices");
    /* doc example: 10 s at 30 fps -> 20 frames */
    CHECK(osc_video_sample_indices(300, 30.0, &p, NULL, &n) == OSC_OK && n == 20, "10 s at 30 fps: n %d", n);
    /* short clip: min 4 frames, but never more than F, always even */
    CHECK(osc_video_sample_indices(5, 30.0, &p, idx, &n) == OSC_OK && n == 4, "5 frames: n %d", n);
    CHECK(osc_video_sample_indices(3, 30.0, &p, idx, &n) == OSC_OK && n == 2 && idx[0] == 0 && idx[1] == 2, "3 frames: n %d", n);
    CHECK(osc_video_sample_indices(1, 30.0, &p, idx, &n) == OSC_ERR_FORMAT, "1 frame refused");
    CHECK(osc_video_sample_indices(0, 30.0, &p, idx, &n) == OSC_ERR_FORMAT, "0 frames refused");
    CHECK(osc_video_sample_indices(100, 0.0, &p, idx, &n) == OSC_ERR_FORMAT, "no frame rate refused");
    /* long video: capped at 768 */
    CHECK(osc_video_sample_indices(3600 * 30, 30.0, &p, NULL, &n) == OSC_OK && n == 768, "1 h: n %d", n);
    /* nframes: round half to even to a multiple of 2 (7 -> 8, 5 -> 4), capped at F */
    p.nframes = 7;
    CHECK(osc_video_sample_indices(300, 30.0, &p, NULL, &n) == OSC_OK && n == 8, "nframes 7: n %d", n);
    p.nframes = 5;
    CHECK(osc_video_sample_indices(300, 30.0, &p, NULL, &n) == OSC_OK && n == 4, "nframes 5: n %d", n);
    p.nframes = 0;
    p.max_frames = 9;
    CHECK(osc_video_sample_indices(3000, 30.0, &p, NULL, &n) == OSC_OK && n == 8, "max_frames 9: n %d", n);
    /* linspace rounding: F = 10, n = 4 -> 0, 3, 6, 9; F = 8, n = 6: 0 1.4 2.8 4.2 5.6 7 -> 0 1 3 4 6 7 */
    p.max_frames = 0;
    p.nframes = 4;
    CHECK(osc_video_sample_indices(10, 1.0, &p, idx, &n) == OSC_OK && n == 4 && idx[1] == 3 && idx[2] == 6 && idx[3] == 9, "F10 n4");
    p.nframes = 6;
    int64_t w8[6] = {0, 1, 3, 4, 6, 7};
    CHECK(osc_video_sample_indices(8, 1.0, &p, idx, &n) == OSC_OK && n == 6 && !memcmp(idx, w8, sizeof w8), "F8 n6");
    /* F = 6, n = 4: 0 1.667 3.333 5 -> 0 2 3 5 */
    p.nframes = 4;
    CHECK(osc_video_sample_indices(6, 1.0, &p, idx, &n) == OSC_OK && idx[1] == 2 && idx[2] == 3, "F6 n4: %lld %lld",
          (long long)idx[1], (long long)idx[2]);
    /* budget: doc example 10 s 30 fps 360x640 -> 364x644; 720p with 60 frames -> 560x1008 */
    osc_video_default_params(&p);
    int64_t mn, mx;
    int rh, rw;
    CHECK(osc_video_frame_budget(20, 360, 640, &p, &mn, &mx, &rh, &rw) == OSC_OK && rh == 364 && rw == 644 && mx == 602112,
          "360x640: %dx%d max %lld", rh, rw, (long long)mx);
    CHECK(osc_video_frame_budget(60, 720, 1280, &p, &mn, &mx, &rh, &rw) == OSC_OK && rh == 560 && rw == 1008, "720p: %dx%d", rh, rw);
    /* many frames: total / n * 2 binds: 768 frames -> 235200 */
    CHECK(osc_video_frame_budget(768, 720, 1280, &p, &mn, &mx, &rh, &rw) == OSC_OK && mx == 235200, "768 frames: max %lld",
          (long long)mx);
    /* small frames are scaled up to min_pixels: 120x160 -> 280x392 */
    CHECK(osc_video_frame_budget(6, 120, 160, &p, &mn, &mx, &rh, &rw) == OSC_OK && rh == 280 && rw == 392, "160x120: %dx%d", rh, rw);
}

/* max |a-b| and mean |a-b| */
static void diffs(const float *a, const float *b, int64_t n, double *mx, double *mean) {
    double m = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d)) d = INFINITY;
        if (d > m) m = d;
        s += d;
    }
    *mx = m;
    *mean = n ? s / n : 0;
}

typedef struct model_set {
    osc_llm *llm;
    osc_vision *vis;
    osc_audio_enc *aud;
    osc_tokenizer *tok;
    osc_llm_config cfg;
    osc_mm_pos_params pp;
} model_set;

/* The caption pipeline by hand for one clip: decode, preprocess, (audio), prompt, positions,
 * encoders, prefill; compare with the golden case <clip>.<c>. */
static void check_case(const osc_st *g, model_set *ms, const char *path, const char *clip, const char *c, const osc_video *v,
                       const float *pix, int64_t n_patch, const int32_t grid[3]) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s.%s", clip, c);
    const osc_st_tensor *tids = Gf(g, nm, "ids"), *tpos = Gf(g, nm, "pos"), *tdel = Gf(g, nm, "delta"),
                        *tlog = Gf(g, nm, "logits"), *tgr = Gf(g, nm, "greedy");
    if (!tids || !tpos || !tdel || !tlog || !tgr) { CHECK(0, "goldens of %s", nm); return; }
    int aiv = !strcmp(c, "va");
    const osc_vision_config *vc = osc_vision_config_of(ms->vis);
    int64_t n_vid = osc_vision_tokens(vc, grid);
    float *mel = NULL, *pcm = NULL;
    int L = 0, n_aud = 0;
    int32_t *chunks = NULL, *ids = NULL, *pos = NULL, *rows = NULL;
    float *logits = NULL;
    osc_kv *kv = NULL;
    osc_llm_ctx *ctx = NULL;
    void *mmbuf = NULL;
    int nc = 0;
    if (aiv) {
        int64_t ns = 0;
        CHECK(osc_audio_load(path, 16000, 0, &pcm, &ns) == OSC_OK, "audio of %s: %s", path, osc_last_error());
        if (!pcm) goto out;
        CHECK(osc_mel_features(pcm, ns, &mel, &L) == OSC_OK, "mel");
        const osc_st_tensor *tL = Gf(g, clip, "audio_L");
        CHECK(tL && L == ((const int32_t *)tL->data)[0], "%s: %d mel frames, reference %d (%lld samples)", clip, L,
              tL ? ((const int32_t *)tL->data)[0] : -1, (long long)ns);
        n_aud = osc_audio_enc_n_tokens(L);
        nc = osc_cap_aiv_chunks(&ms->pp, grid, v->info.second_per_grid, n_aud, &chunks);
    }
    osc_prompt_part parts[2];
    parts[0] = aiv ? (osc_prompt_part){OSC_PART_VIDEO_AUDIO, NULL, 0, chunks, nc}
                   : (osc_prompt_part){OSC_PART_VIDEO, NULL, (int)n_vid, NULL, 0};
    parts[1] = (osc_prompt_part){OSC_PART_TEXT, "Describe this video.", 0, NULL, 0};
    int n = 0;
    CHECK(osc_omni_prompt_build(ms->tok, &ms->cfg, osc_chat_default_system(OSC_CHAT_CHATML, 1), parts, 2, 1, &ids, &n) == OSC_OK,
          "prompt: %s", osc_last_error());
    int same_ids = ids && n == (int)tids->shape[0] && !memcmp(ids, tids->data, (size_t)n * 4);
    CHECK(same_ids, "%s: prompt ids differ from the processor's (%d vs %d)", nm, n, (int)tids->shape[0]);
    if (!same_ids) goto out;
    pos = malloc((size_t)3 * n * 4);
    int32_t delta = 0;
    osc_mm_inputs in = {NULL, 0, (const int32_t(*)[3])grid, &v->info.second_per_grid, 1, aiv ? &L : NULL, aiv, aiv};
    CHECK(osc_mm_rope_index(&ms->pp, ids, n, &in, pos, &delta) == OSC_OK, "rope index: %s", osc_last_error());
    CHECK(!memcmp(pos, tpos->data, (size_t)3 * n * 4) && delta == ((const int32_t *)tdel->data)[0], "%s: positions / delta %d",
          nm, delta);
    /* encoders + prefill with every row's logits */
    osc_tensor emb;
    CHECK(osc_vision_encode(ms->vis, pix, n_patch, (const int32_t(*)[3])grid, 1, &emb) == OSC_OK, "vision: %s", osc_last_error());
    osc_tensor mm = emb;
    const int D = ms->cfg.hidden_size;
    if (aiv) {
        float *a = malloc((size_t)n_aud * D * sizeof(float));
        osc_tensor at = osc_tensor_2d(a, OSC_F32, OSC_DEV_CPU, n_aud, D);
        CHECK(osc_audio_enc_encode(ms->aud, mel, L, &at, NULL, NULL) == OSC_OK, "audio enc: %s", osc_last_error());
        mmbuf = malloc((size_t)(n_vid + n_aud) * D * sizeof(float));
        size_t vo = 0, ao = 0, oo = 0;
        for (int k = 0; k < nc; k++) {
            memcpy((float *)mmbuf + oo * D, (float *)emb.data + vo * D, (size_t)chunks[2 * k] * D * 4);
            oo += chunks[2 * k], vo += chunks[2 * k];
            memcpy((float *)mmbuf + oo * D, a + ao * D, (size_t)chunks[2 * k + 1] * D * 4);
            oo += chunks[2 * k + 1], ao += chunks[2 * k + 1];
        }
        free(a);
        mm = osc_tensor_2d(mmbuf, OSC_F32, OSC_DEV_CPU, n_vid + n_aud, D);
    }
    rows = malloc((size_t)(n_vid + n_aud) * 4);
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] == ms->cfg.video_token_id || (aiv && ids[i] == ms->cfg.audio_token_id)) rows[nr++] = i;
    const int V = ms->cfg.vocab_size, G = (int)tgr->shape[0];
    logits = malloc((size_t)n * V * sizeof(float));
    CHECK(osc_llm_kv_new(ms->llm, "bf16", n + G + 1, &kv) == OSC_OK && osc_llm_ctx_new(ms->llm, 256, &ctx) == OSC_OK, "kv");
    int st[2] = {0, n};
    osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = pos, .kv = &kv, .all_logits = 1,
                       .n_mm = nr, .mm_rows = rows, .mm_embeds = &mm};
    CHECK(osc_llm_forward(ms->llm, ctx, &b, logits) == OSC_OK, "prefill: %s", osc_last_error());
    float ref[8 * 1024];
    int64_t nl = 8 * (int64_t)V;
    CHECK(V <= 1024 && osc_st_read_f32(tlog, ref, nl) == OSC_OK, "logits golden");
    double mx = 0, mean = 0, rmax = 0;
    diffs(logits + (size_t)(n - 8) * V, ref, nl, &mx, &mean);
    for (int64_t i = 0; i < nl; i++) rmax = fabs(ref[i]) > rmax ? fabs(ref[i]) : rmax;
    printf("%s: prompt %d ids (= processor), positions = get_rope_index, logits max rel err %.2e\n", nm, n, mx / rmax);
    CHECK(mx / rmax <= 1e-4, "%s: logits rel err %.3e", nm, mx / rmax);
    /* greedy: feed our own argmax and compare with the reference tokens */
    float *row = logits + (size_t)(n - 1) * V;
    int same = 1;
    for (int k = 0; k < G && same; k++) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (row[i] > row[best]) best = i;
        same = best == ((const int32_t *)tgr->data)[k];
        if (!same || k + 1 == G) break;
        int32_t t = best, p3[3];
        p3[0] = p3[1] = p3[2] = osc_kv_len(kv) + delta;
        int s2[2] = {0, 1};
        osc_llm_batch d = {.n_seq = 1, .seq_start = s2, .tokens = &t, .pos = p3, .kv = &kv};
        if (osc_llm_forward(ms->llm, ctx, &d, logits) != OSC_OK) { same = 0; break; }
        row = logits;
    }
    CHECK(same, "%s: greedy tokens differ from transformers'", nm);
out:
    free(pcm);
    free(mel);
    free(chunks);
    free(ids);
    free(pos);
    free(rows);
    free(logits);
    free(mmbuf);
    osc_kv_free(kv);
    osc_llm_ctx_free(ctx);
}

static void test_clip(const osc_st *g, model_set *ms, const char *dir, const char *clip, int with_audio) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.mp4", dir, clip);
    osc_video v, vs;
    osc_video_params kp;
    osc_video_default_params(&kp);
    kp.keep_size = 1;
    osc_status s = osc_video_load(path, NULL, &v);
    CHECK(s == OSC_OK, "load %s: %s", path, osc_last_error());
    if (s != OSC_OK) return;
    s = osc_video_load(path, &kp, &vs);
    CHECK(s == OSC_OK && vs.info.n_frames == v.info.n_frames && vs.frames[0].w == v.info.width &&
              v.frames[0].w == v.info.resized_w && v.frames[0].h == v.info.resized_h,
          "keep_size load %s: %s", path, osc_last_error());
    if (s != OSC_OK) { osc_video_free(&v); return; }
    const osc_st_tensor *ti = Gf(g, clip, "indices"), *tt = Gf(g, clip, "total"), *tf = Gf(g, clip, "fps"),
                        *tg = Gf(g, clip, "grid"), *ts = Gf(g, clip, "spg"), *tb = Gf(g, clip, "box"),
                        *tr = Gf(g, clip, "pv_rows"), *tp = Gf(g, clip, "pv"), *tsum = Gf(g, clip, "pv_sum");
    if (!ti || !tt || !tf || !tg || !ts || !tb || !tr || !tp || !tsum) { CHECK(0, "goldens of %s", clip); osc_video_free(&v); return; }
    int n = v.info.n_frames;
    int same = n == (int)ti->shape[0];
    for (int i = 0; same && i < n; i++) same = v.indices[i] == ((const int32_t *)ti->data)[i];
    CHECK(same, "%s: sampled frame indices differ", clip);
    CHECK(v.info.total_frames == ((const int32_t *)tt->data)[0], "%s: F %lld", clip, (long long)v.info.total_frames);
    CHECK(fabs(v.info.fps - ((const float *)tf->data)[0]) < 1e-4, "%s: fps %g", clip, v.info.fps);
    CHECK(v.info.second_per_grid == ((const float *)ts->data)[0], "%s: second_per_grid %g", clip, v.info.second_per_grid);
    CHECK(v.info.has_audio == with_audio, "%s: has_audio %d", clip, v.info.has_audio);
    /* timestamps: frame k of a constant-rate clip at k / r */
    CHECK(fabs(v.timestamps[n - 1] - v.indices[n - 1] / v.info.fps) < 1e-3, "%s: last timestamp %g", clip, v.timestamps[n - 1]);
    /* decoded frames: 4x4 box means */
    int H = v.info.height, W = v.info.width, bh = H / 4, bw = W / 4;
    int64_t nb = (int64_t)n * bh * bw * 3;
    float *box = calloc((size_t)nb, sizeof(float)), *rbox = malloc((size_t)nb * sizeof(float));
    if (tb->shape[0] == n && tb->shape[1] == bh && tb->shape[2] == bw && osc_st_read_f32(tb, rbox, nb) == OSC_OK) {
        for (int f = 0; f < n; f++)
            for (int y = 0; y < bh * 4; y++)
                for (int x = 0; x < bw * 4; x++)
                    for (int c = 0; c < 3; c++)
                        box[(((int64_t)f * bh + y / 4) * bw + x / 4) * 3 + c] += vs.frames[f].rgb[((int64_t)y * W + x) * 3 + c] / 16.0f;
        double mx, mean;
        diffs(box, rbox, nb, &mx, &mean);
        printf("%s: %d of %lld frames, decoded RGB vs PyAV (4x4 means): max %.3f, mean %.4f levels\n", clip, n,
               (long long)v.info.total_frames, mx, mean);
        CHECK(mx <= 3.0 && mean <= 0.5, "%s: decoded frames differ from PyAV's: max %.3f mean %.4f", clip, mx, mean);
    } else {
        CHECK(0, "%s: box golden shape", clip);
    }
    free(box);
    free(rbox);
    /* preprocessing */
    osc_vision_pre_params vp;
    osc_vision_pre_defaults(&vp);
    vp.min_pixels = v.info.min_pixels;
    vp.max_pixels = v.info.max_pixels;
    vp.resize_float = 0; /* identity: the frames are already resized */
    float *pix = NULL;
    int64_t np = 0;
    int gi[3];
    s = osc_vision_preprocess(v.frames, n, &vp, &pix, &np, gi);
    CHECK(s == OSC_OK, "preprocess: %s", osc_last_error());
    int32_t grid[3] = {gi[0], gi[1], gi[2]};
    CHECK(s == OSC_OK && !memcmp(grid, tg->data, 12) && gi[1] * 14 == v.info.resized_h && gi[2] * 14 == v.info.resized_w,
          "%s: grid [%d,%d,%d]", clip, gi[0], gi[1], gi[2]);
    if (s == OSC_OK) {
        int k = (int)tr->shape[0];
        float *ref = malloc((size_t)k * 1176 * sizeof(float)), *got = malloc((size_t)k * 1176 * sizeof(float));
        double mx = INFINITY, mean = 0;
        if (osc_st_read_f32(tp, ref, (int64_t)k * 1176) == OSC_OK) {
            for (int i = 0; i < k; i++) {
                int r = ((const int32_t *)tr->data)[i];
                memcpy(got + (size_t)i * 1176, pix + (size_t)r * 1176, 1176 * sizeof(float));
            }
            diffs(got, ref, (int64_t)k * 1176, &mx, &mean);
        }
        double sum = 0, sq = 0;
        for (int64_t i = 0; i < np * 1176; i++) sum += pix[i], sq += (double)pix[i] * pix[i];
        const float *rs = tsum->data;
        printf("%s: pixel_values [%lld, 1176] vs the processor: rows max %.2e mean %.2e; sum %.6g vs %.6g, sumsq %.8g vs %.8g\n",
               clip, (long long)np, mx, mean, sum, rs[0], sq, rs[1]);
        /* one 8-bit level is 1/255/std ~ 0.0146 after normalisation: our float bicubic and
         * torchvision's may round a value lying within float error of .5 differently, so a
         * single level may differ in rare pixels; the mean shows how rare */
        CHECK(mx <= 0.0151 && mean <= 1e-4, "%s: pixel_values differ: max %.3e mean %.3e", clip, mx, mean);
        CHECK(fabs(sq - rs[1]) <= 1e-4 * rs[1], "%s: sum of squares %.8g vs %.8g", clip, sq, rs[1]);
        free(ref);
        free(got);
        if (ms->llm) {
            check_case(g, ms, path, clip, "v", &v, pix, np, grid);
            if (with_audio) check_case(g, ms, path, clip, "va", &v, pix, np, grid);
        }
    }
    free(pix);
    /* probe agrees with load */
    osc_video_info pi;
    CHECK(osc_video_probe(path, NULL, &pi) == OSC_OK && pi.n_frames == n && pi.total_frames == v.info.total_frames &&
              pi.resized_h == v.info.resized_h && pi.resized_w == v.info.resized_w,
          "%s: probe", clip);
    osc_video_free(&v);
    osc_video_free(&vs);
}

static void write_file(const char *path, const void *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        if (n) fwrite(d, 1, n, f);
        fclose(f);
    }
}

static void test_bad(const char *dir, const char *tmp, const char *root) {
    char p[1400], src[1400];
    osc_video v;
    snprintf(p, sizeof p, "%s/no-such-video.mp4", tmp);
    CHECK(osc_video_load(p, NULL, &v) == OSC_ERR_IO && !v.frames && strstr(osc_last_error(), p), "missing: %s", osc_last_error());
    snprintf(p, sizeof p, "%s/empty.mp4", tmp);
    write_file(p, "", 0);
    CHECK(osc_video_load(p, NULL, &v) == OSC_ERR_FORMAT, "empty: %s", osc_last_error());
    snprintf(p, sizeof p, "%s/garbage.mp4", tmp);
    char junk[4096];
    for (int i = 0; i < (int)sizeof junk; i++) junk[i] = (char)(i * 131 + 7);
    write_file(p, junk, sizeof junk);
    CHECK(osc_video_load(p, NULL, &v) == OSC_ERR_FORMAT, "garbage: %s", osc_last_error());
    /* truncated copies of clip.mp4 (moov first: faststart) */
    snprintf(src, sizeof src, "%s/clip.mp4", dir);
    FILE *f = fopen(src, "rb");
    static char buf[1 << 17];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    size_t cuts[] = {100, 2000, n / 3, n / 2, n - 500};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        snprintf(p, sizeof p, "%s/trunc%zu.mp4", tmp, i);
        write_file(p, buf, cuts[i]);
        osc_status s = osc_video_load(p, NULL, &v);
        /* either a clear error or a shorter video sampled from the frames that decode */
        CHECK(s == OSC_ERR_FORMAT || (s == OSC_OK && v.info.n_frames >= 2 && v.info.n_frames % 2 == 0 && v.frames[0].rgb),
              "truncated at %zu: %d %s", cuts[i], s, s ? osc_last_error() : "");
        printf("truncated at %zu bytes: %s\n", cuts[i], s == OSC_OK ? "decoded" : osc_last_error());
        osc_video_free(&v);
        osc_video_free(&v); /* twice is fine */
    }
    /* a still image: one frame */
    snprintf(p, sizeof p, "%s/data/images/photo_64x48.jpg", root);
    osc_status s = osc_video_load(p, NULL, &v);
    CHECK(s == OSC_ERR_FORMAT, "still image: %d %s", s, osc_last_error());
    /* audio only */
    snprintf(p, sizeof p, "%s/data/audio/stereo16k.wav", root);
    s = osc_video_load(p, NULL, &v);
    CHECK(s == OSC_ERR_FORMAT && strstr(osc_last_error(), "no video stream"), "audio only: %s", osc_last_error());
    /* limits from headers, before decoding */
    osc_video_params lp;
    osc_video_default_params(&lp);
    lp.max_frame_pixels = 100 * 100;
    snprintf(p, sizeof p, "%s/clip.mp4", dir);
    CHECK(osc_video_load(p, &lp, &v) == OSC_ERR_FORMAT && strstr(osc_last_error(), "exceed"), "pixel limit: %s", osc_last_error());
    osc_video_default_params(&lp);
    lp.max_seconds = 1;
    CHECK(osc_video_load(p, &lp, &v) == OSC_ERR_FORMAT, "duration limit: %s", osc_last_error());
    osc_video_default_params(&lp);
    lp.max_bytes = 1000;
    CHECK(osc_video_load(p, &lp, &v) == OSC_ERR_FORMAT, "memory limit: %s", osc_last_error());
}

/* The benchmark source: a 30 s 1280x720 header at 30 fps samples like a real file of that header,
 * worked by hand from docs/qwen2_5_omni.md 5.1-5.2: F = 900, n = 900/30*2 = 60 frames; budget
 * min(602112, 90316800/60*2) = 602112 px; smart_resize(720, 1280): 728x1288 is over it, beta =
 * sqrt(720*1280/602112) = 1.2372, h = floor(720/1.2372/28)*28 = 560, w = floor(1280/1.2372/28)*28
 * = 1008. Bad specs are refused. */
static void test_synthetic(void) {
    osc_video_params p;
    osc_video_default_params(&p);
    osc_video v;
    CHECK(osc_video_load("synthetic:1280x720:30#7", &p, &v) == OSC_OK, "synthetic: %s", osc_last_error());
    CHECK(v.info.n_frames == 60 && v.info.total_frames == 900, "synthetic: %d of %lld frames", v.info.n_frames,
          (long long)v.info.total_frames);
    CHECK(v.info.resized_h == 560 && v.info.resized_w == 1008 && v.frames && v.frames[59].h == 560 && v.frames[59].w == 1008,
          "synthetic: resized %dx%d", v.info.resized_w, v.info.resized_h);
    CHECK(v.indices && v.indices[0] == 0 && v.indices[59] == 899 && !v.info.has_audio, "synthetic: indices");
    CHECK(v.frames && v.frames[1].rgb[0] != v.frames[2].rgb[0], "synthetic: frames move");
    osc_video_free(&v);
    CHECK(osc_video_load("synthetic:1280x720", &p, &v) == OSC_ERR_INVALID_ARG, "synthetic without seconds");
    CHECK(osc_video_load("synthetic:0x720:3", &p, &v) == OSC_ERR_INVALID_ARG, "synthetic 0 wide");
    CHECK(osc_video_load("synthetic:64x64:0.05", &p, &v) == OSC_ERR_FORMAT, "synthetic with one frame");
}

int main(void) {
    test_sampling();
    test_synthetic();
    if (!osc_video_available()) {
        printf("built without FFmpeg: decoding tests skipped\n");
        return check_done("test_video");
    }
    const char *models = getenv("OSC_TEST_MODELS");
    if (!models) models = "tests/models";
    const char *tmp = getenv("OSC_TEST_TMP");
    if (!tmp) tmp = "/tmp";
    char root[1024], dir[1100], gp[1200], md[1100], tp[1200];
    snprintf(root, sizeof root, "%s/..", models); /* tests/ */
    snprintf(dir, sizeof dir, "%s/data/video", root);
    snprintf(gp, sizeof gp, "%s/goldens.safetensors", dir);
    snprintf(md, sizeof md, "%s/omni-tiny", models);
    osc_st *g = NULL;
    CHECK(osc_st_open(gp, &g) == OSC_OK, "goldens: %s", osc_last_error());
    model_set ms;
    memset(&ms, 0, sizeof ms);
    snprintf(tp, sizeof tp, "%s/tokenizer.json", md);
    if (osc_config_load(md, &ms.cfg) != OSC_OK || osc_mm_pos_params_load(md, &ms.cfg, &ms.pp) != OSC_OK ||
        osc_tokenizer_load(tp, &ms.tok) != OSC_OK || osc_llm_load(md, OSC_DEV_CPU, &ms.llm) != OSC_OK ||
        osc_vision_load(md, OSC_DEV_CPU, &ms.vis) != OSC_OK || osc_audio_enc_load(md, OSC_DEV_CPU, &ms.aud) != OSC_OK) {
        CHECK(0, "omni-tiny: %s", osc_last_error());
        osc_llm_free(ms.llm);
        ms.llm = NULL;
    }
    if (g) {
        test_clip(g, &ms, dir, "clip", 1);
        test_clip(g, &ms, dir, "clip2", 0);
    }
    test_bad(dir, tmp, root);
    osc_audio_enc_free(ms.aud);
    osc_vision_free(ms.vis);
    osc_llm_free(ms.llm);
    osc_tokenizer_free(ms.tok);
    osc_st_close(g);
    return check_done("test_video");
}
