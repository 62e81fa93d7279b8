/* oscar kvstat (pipelines/lib/kvstat.h, plot.h, pipelines/kvstat.c):
 *  - KL / relative-error / percentile helpers against hand-computed values;
 *  - the plotter: pixels, lines, glyphs, and a PNG read back with libpng;
 *  - qwen2-tiny (head_dim 16): bf16 against its own reference is exactly 0 (attention error,
 *    KL) with 100% top-1, and the quantised modes are reported unavailable, not crashed;
 *  - qwen3-tiny (head_dim 32): per-layer attention error bounds and orderings of the modes,
 *    key norms equal to the OScaR n_t that an oscar2 cache computes independently;
 *  - a synthetic qwen2-shaped model (weights from a procedural source) with a few huge-norm
 *    key tokens: kivi2's attention error is larger than oscar2's (Token Norm Imbalance);
 *  - the CLI exits 2 on bad flags and 1 on a bad model (needs OSC_BIN/oscar). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#ifdef OSC_HAVE_PNG
#include <png.h>
#endif

#include "core/config.h"
#include "kvcache/kvcache.h"
#include "llm/model.h"
#include "pipelines/lib/kvstat.h"
#include "pipelines/lib/plot.h"
#include "tests/check.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static void test_helpers(void) {
    /* p = softmax(0, 0) = (1/2, 1/2); q = softmax(0, ln 3) = (1/4, 3/4):
     * KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3) */
    float ref[2] = {0, 0}, x[2] = {0, logf(3)};
    double kl = osc_kvstat_kl(ref, x, 2);
    CHECK(fabs(kl - 0.5 * log(4.0 / 3.0)) < 1e-7, "KL %.9f", kl);
    /* shift invariance of both arguments */
    float ref2[2] = {5, 5}, x2[2] = {-7, -7 + logf(3)};
    CHECK(fabs(osc_kvstat_kl(ref2, x2, 2) - kl) < 1e-6, "KL shifted %.9f", osc_kvstat_kl(ref2, x2, 2));
    /* 3 classes: p = (0.7, 0.2, 0.1) and q = (0.2, 0.3, 0.5) as logits log(p), log(q) */
    float lp[3] = {logf(0.7f), logf(0.2f), logf(0.1f)}, lq[3] = {logf(0.2f), logf(0.3f), logf(0.5f)};
    double want = 0.7 * log(0.7 / 0.2) + 0.2 * log(0.2 / 0.3) + 0.1 * log(0.1 / 0.5);
    CHECK(fabs(osc_kvstat_kl(lp, lq, 3) - want) < 1e-6, "KL3 %.9f want %.9f", osc_kvstat_kl(lp, lq, 3), want);
    CHECK(osc_kvstat_kl(lp, lp, 3) == 0, "KL(p||p) = %g", osc_kvstat_kl(lp, lp, 3));
    float nan3[3] = {0, NAN, 0};
    CHECK(isinf(osc_kvstat_kl(lp, nan3, 3)), "NaN logits must not pass");

    float a[3] = {1, 2, 2}, b[3] = {1, 2, 3}, z[3] = {0, 0, 0};
    CHECK(fabs(osc_kvstat_rel_l2(a, b, 3) - 1 / sqrt(14.0)) < 1e-12, "rel %g", osc_kvstat_rel_l2(a, b, 3));
    CHECK(osc_kvstat_rel_l2(b, b, 3) == 0, "rel self");
    CHECK(osc_kvstat_rel_l2(z, z, 3) == 0, "rel zero/zero");
    CHECK(isinf(osc_kvstat_rel_l2(a, z, 3)), "rel vs zero ref");

    float v[5] = {5, 1, 4, 2, 3};
    osc_kvstat_kstats st;
    osc_kvstat_stats(v, 5, &st);
    CHECK(st.count == 5 && st.mean == 3 && st.min == 1 && st.max == 5, "stats %d %g %g %g", st.count, st.mean, st.min, st.max);
    /* linear interpolation at (n-1) p/100 = 0.2, 1, 2, 3, 3.8 */
    double wp[5] = {1.2, 2, 3, 4, 4.8};
    for (int i = 0; i < 5; i++) CHECK(fabs(st.pct[i] - wp[i]) < 1e-6, "p%g = %g want %g", osc_kvstat_pcts[i], st.pct[i], wp[i]);
    osc_kvstat_stats(v, 0, &st);
    CHECK(st.count == 0 && isnan(st.mean), "empty stats");
}

/* ---- plot ------------------------------------------------------------------------------------ */

#ifdef OSC_HAVE_PNG
/* Read an 8-bit RGB PNG back: returns malloc'd [h][w][3] or NULL. */
static uint8_t *read_png(const char *path, int *w, int *h) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8)) {
        fclose(f);
        return NULL;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    uint8_t *volatile img = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(img);
        return NULL;
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    *w = (int)png_get_image_width(png, info);
    *h = (int)png_get_image_height(png, info);
    int ok = png_get_bit_depth(png, info) == 8 && png_get_color_type(png, info) == PNG_COLOR_TYPE_RGB;
    if (ok) {
        img = malloc((size_t)*w * *h * 3);
        for (int y = 0; y < *h; y++) png_read_row(png, img + (size_t)y * *w * 3, NULL);
        png_read_end(png, NULL);
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    return img;
}
static uint32_t px_at(const uint8_t *img, int w, int x, int y) {
    const uint8_t *q = img + ((size_t)y * w + x) * 3;
    return (uint32_t)q[0] << 16 | (uint32_t)q[1] << 8 | q[2];
}
#endif

static void test_plot(const char *tmp) {
    osc_plot *p = NULL;
    CHECK(osc_plot_new(0, 10, 0, &p) == OSC_ERR_INVALID_ARG, "zero width refused");
    CHECK(osc_plot_new(64, 40, 0xffffff, &p) == OSC_OK, "%s", osc_last_error());
    if (!p) return;
    osc_plot_fill_rect(p, 10, 5, 19, 9, 0x123456);
    osc_plot_line(p, 0, 30, 63, 30, 0xff0000); /* horizontal */
    osc_plot_line(p, 40, 0, 50, 10, 0x00ff00); /* 45 degrees: (40+i, i) */
    osc_plot_fill_rect(p, -100, -100, 1000, -1, 0x0000ff); /* fully clipped: must not write */
    osc_plot_pixel(p, 64, 0, 0x0000ff);
    int wtxt = osc_plot_text(p, 2, 20, "1", 0x000000, 1);
    CHECK(wtxt == 5, "one glyph is 5 px wide, got %d", wtxt);
    CHECK(osc_plot_text_width("ab", 2) == 22, "width %d", osc_plot_text_width("ab", 2));
    CHECK(osc_plot_get(p, 10, 5) == 0x123456 && osc_plot_get(p, 19, 9) == 0x123456, "rect corners");
    CHECK(osc_plot_get(p, 20, 9) == 0xffffff && osc_plot_get(p, 10, 10) == 0xffffff, "rect is inclusive, no more");
    CHECK(osc_plot_get(p, 0, 30) == 0xff0000 && osc_plot_get(p, 63, 30) == 0xff0000, "line ends");
    CHECK(osc_plot_get(p, 45, 5) == 0x00ff00 && osc_plot_get(p, 46, 5) == 0xffffff, "diagonal");
    CHECK(osc_plot_get(p, 0, 0) == 0xffffff, "clipped fill wrote nothing");
    /* glyph '1' row 0 = 0x04: only column 2; row 6 = 0x0E: columns 1..3 */
    CHECK(osc_plot_get(p, 4, 20) == 0x000000 && osc_plot_get(p, 3, 20) == 0xffffff, "glyph 1, row 0");
    CHECK(osc_plot_get(p, 3, 26) == 0 && osc_plot_get(p, 5, 26) == 0 && osc_plot_get(p, 6, 26) == 0xffffff, "glyph 1, row 6");
    CHECK(osc_plot_glyph('a') == osc_plot_glyph('A'), "lower case drawn as upper case");
    /* every printable glyph of the label alphabet has some ink, except space */
    int blank = 0;
    for (int ch = 33; ch < 127; ch++) {
        const uint8_t *g = osc_plot_glyph((unsigned char)ch);
        int ink = 0;
        for (int r = 0; r < 7; r++) ink |= g[r];
        blank += !ink;
    }
    CHECK(blank == 0, "%d printable glyphs are blank", blank);
#ifdef OSC_HAVE_PNG
    char path[1024];
    snprintf(path, sizeof path, "%s/kvstat_plot_test.png", tmp);
    CHECK(osc_plot_write_png(p, path) == OSC_OK, "%s", osc_last_error());
    int w = 0, h = 0;
    uint8_t *img = read_png(path, &w, &h);
    CHECK(img && w == 64 && h == 40, "read back %dx%d", w, h);
    if (img) {
        int same = 1;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) same &= px_at(img, w, x, y) == osc_plot_get(p, x, y);
        CHECK(same, "PNG pixels differ from the canvas");
        CHECK(px_at(img, w, 15, 7) == 0x123456 && px_at(img, w, 30, 30) == 0xff0000, "PNG colours");
    }
    free(img);
    char bad[1100];
    snprintf(bad, sizeof bad, "%s/no/such/dir/x.png", tmp);
    CHECK(osc_plot_write_png(p, bad) == OSC_ERR_IO, "unwritable path");
#else
    (void)tmp;
    CHECK(osc_plot_write_png(p, "/dev/null") == OSC_ERR_UNSUPPORTED, "no libpng");
#endif
    osc_plot_free(p);
}

/* ---- text models ----------------------------------------------------------------------------- */

static const osc_kvstat_mode *find_mode(const osc_kvstat_result *r, const char *name) {
    for (int j = 0; j < r->n_modes; j++)
        if (!strcmp(r->modes[j].name, name)) return &r->modes[j];
    return NULL;
}

static int32_t *random_tokens(int T, int lo, int hi, uint64_t seed) {
    int32_t *t = malloc((size_t)T * sizeof *t);
    uint64_t s = seed;
    for (int i = 0; i < T; i++) t[i] = lo + (int32_t)((check_frand(&s) * 0.5f + 0.5f) * (hi - lo - 1));
    return t;
}

static void test_qwen2_tiny(const char *root) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/qwen2-tiny", root);
    osc_llm *m = NULL;
    CHECK(osc_llm_load(dir, OSC_DEV_CPU, &m) == OSC_OK, "%s", osc_last_error());
    if (!m) return;
    const int T = 100;
    int32_t *tok = random_tokens(T, 3, 690, 11);
    osc_kvstat_params p = osc_kvstat_default_params();
    p.modes = "bf16,kivi2,oscar2";
    p.n_eval = 12;
    p.r_evict = 32;
    p.max_tokens = 40; /* chunked prefill: the probe must follow chunks */
    p.n_sink = 2;
    osc_kvstat_input in = {T, tok, NULL, 0, NULL, NULL, NULL};
    osc_kvstat_result *r = NULL;
    CHECK(osc_kvstat_run(m, &in, &p, &r) == OSC_OK, "%s", osc_last_error());
    if (r) {
        CHECK(r->n_prefill == T - 12 && r->n_eval == 12 && r->n_layers == 2, "sizes %d %d", r->n_prefill, r->n_eval);
        const osc_kvstat_mode *b = find_mode(r, "bf16");
        CHECK(b && b->att_ok && b->e2e_ok, "bf16 ran");
        if (b && b->att_ok && b->e2e_ok) {
            for (int l = 0; l < r->n_layers; l++)
                CHECK(b->att_err[l] == 0 && b->att_err_step_max[l] == 0, "bf16 layer %d error %g", l, b->att_err[l]);
            for (int s = 0; s < r->n_eval; s++) CHECK(b->kl[s] == 0 && b->top1[s] == 1, "bf16 step %d KL %g", s, b->kl[s]);
            CHECK(b->top1_rate == 1 && b->kl_max == 0, "bf16 summary");
            CHECK(b->nll_mean == r->ref_nll_mean && isfinite(b->nll_mean), "bf16 NLL %g vs %g", b->nll_mean, r->ref_nll_mean);
        }
        /* head_dim 16: the block modes cannot run, and say why */
        const osc_kvstat_mode *o = find_mode(r, "oscar2"), *k = find_mode(r, "kivi2");
        CHECK(o && !o->att_ok && !o->e2e_ok && strstr(o->att_msg, "head") && strstr(o->e2e_msg, "head"), "oscar2: '%s' / '%s'",
              o ? o->att_msg : "", o ? o->e2e_msg : "");
        CHECK(k && !k->att_ok && !k->e2e_ok && strstr(k->att_msg, "head_dim"), "kivi2: '%s'", k ? k->att_msg : "");
        /* kinds: 2 sink tokens, the rest text; key norms positive and finite */
        const osc_kvstat_kstats *s0 = &r->kstats[OSC_TOK_SINK], *t0 = &r->kstats[OSC_TOK_TEXT];
        CHECK(s0->count == 2 && t0->count == T - 2 && r->kstats[OSC_TOK_IMAGE].count == 0, "kind counts %d %d", s0->count,
              t0->count);
        int good = 1;
        for (int i = 0; i < r->n_layers * T; i++) good &= isfinite(r->key_norm[i]) && r->key_norm[i] > 0;
        CHECK(good, "key norms finite and positive");
        CHECK(s0->min == fminf(r->key_norm[0], r->key_norm[1]) && s0->max == fmaxf(r->key_norm[0], r->key_norm[1]),
              "sink stats are tokens 0, 1");
        osc_kvstat_free(r);
    }
    /* bad input: more tokens than the context, unknown mode, unordered mm rows */
    p.n_ctx = T - 1;
    CHECK(osc_kvstat_run(m, &in, &p, &r) == OSC_ERR_CONTEXT && !r, "context too small");
    p.n_ctx = 0;
    p.modes = "bf16,oscar3";
    CHECK(osc_kvstat_run(m, &in, &p, &r) == OSC_ERR_INVALID_ARG, "unknown mode");
    p.modes = "bf16,bf16";
    CHECK(osc_kvstat_run(m, &in, &p, &r) == OSC_ERR_INVALID_ARG, "duplicate mode");
    p.modes = "bf16";
    int32_t rows[2] = {5, 3};
    osc_kvstat_input bad = in;
    bad.n_mm = 2;
    bad.mm_rows = rows;
    float emb[2 * 64] = {0};
    osc_tensor et = osc_tensor_2d(emb, OSC_F32, OSC_DEV_CPU, 2, 64);
    bad.mm_embeds = &et;
    CHECK(osc_kvstat_run(m, &bad, &p, &r) == OSC_ERR_INVALID_ARG, "unordered mm rows");
    free(tok);
    osc_llm_free(m);
}

static void test_qwen3_tiny(const char *root, const char *tmp) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/qwen3-tiny", root);
    osc_llm *m = NULL;
    CHECK(osc_llm_load(dir, OSC_DEV_CPU, &m) == OSC_OK, "%s", osc_last_error());
    if (!m) return;
    const int T = 200;
    int32_t *tok = random_tokens(T, 3, 690, 5);
    /* caller-given kinds: a block of "image" tokens and a block of "audio" tokens */
    uint8_t kinds[200];
    for (int i = 0; i < T; i++) kinds[i] = i >= 40 && i < 80 ? OSC_TOK_IMAGE : i >= 100 && i < 120 ? OSC_TOK_AUDIO : OSC_TOK_TEXT;
    osc_kvstat_params p = osc_kvstat_default_params();
    p.n_eval = 24;
    p.r_evict = 32;
    osc_kvstat_input in = {T, tok, NULL, 0, NULL, NULL, kinds};
    osc_kvstat_result *r = NULL;
    CHECK(osc_kvstat_run(m, &in, &p, &r) == OSC_OK, "%s", osc_last_error());
    if (!r) goto out;
    CHECK(r->n_modes == 7 && r->folded_here && osc_llm_v_rotated(m), "all modes, folded here");
    CHECK(r->fold_kl_mean < 1e-8, "folding changes the f32 model only by rounding: KL %g", r->fold_kl_mean);
    CHECK(r->kstats[OSC_TOK_IMAGE].count == 40 && r->kstats[OSC_TOK_AUDIO].count == 20 &&
              r->kstats[OSC_TOK_SINK].count == 1 && r->kstats[OSC_TOK_TEXT].count == T - 61,
          "kind counts");
    for (int j = 0; j < r->n_modes; j++) {
        const osc_kvstat_mode *md = &r->modes[j];
        CHECK(md->att_ok && md->e2e_ok, "%s: %s %s", md->name, md->att_msg, md->e2e_msg);
        printf("qwen3-tiny %-6s attn err per layer:", md->name);
        for (int l = 0; l < r->n_layers; l++) printf(" %.4f", md->att_err[l]);
        printf("  KL mean %.4g  top-1 %.3f\n", md->kl_mean, md->top1_rate);
    }
    const osc_kvstat_mode *b = find_mode(r, "bf16"), *i8 = find_mode(r, "int8"), *k2 = find_mode(r, "kivi2"),
                          *k4 = find_mode(r, "kivi4"), *o2 = find_mode(r, "oscar2"), *o4 = find_mode(r, "oscar4");
    if (b && i8 && k2 && k4 && o2 && o4 && o2->att_ok && o4->att_ok && i8->att_ok && k2->att_ok && k4->att_ok) {
        CHECK(b->att_err_max == 0 && b->kl_max == 0, "bf16 exact: %g %g", b->att_err_max, b->kl_max);
        for (int l = 0; l < r->n_layers; l++) {
            /* bounds from the quantiser's step size, with margin: 2 bits -> 4 levels over the range */
            CHECK(o2->att_err[l] > 0 && o2->att_err[l] < 0.5, "oscar2 layer %d error %g", l, o2->att_err[l]);
            CHECK(o4->att_err[l] > 0 && o4->att_err[l] < 0.12, "oscar4 layer %d error %g", l, o4->att_err[l]);
            CHECK(i8->att_err[l] > 0 && i8->att_err[l] < 0.01, "int8 layer %d error %g", l, i8->att_err[l]);
            CHECK(i8->att_err[l] < o4->att_err[l] && o4->att_err[l] < o2->att_err[l], "layer %d: int8 < oscar4 < oscar2", l);
            CHECK(k4->att_err[l] < k2->att_err[l], "layer %d: kivi4 < kivi2", l);
        }
        CHECK(o4->kl_mean < o2->kl_mean && i8->kl_mean < o4->kl_mean, "KL int8 %g < oscar4 %g < oscar2 %g", i8->kl_mean,
              o4->kl_mean, o2->kl_mean);
        CHECK(o2->quantized_tokens == 192 && i8->quantized_tokens == T - 1 && b->quantized_tokens == 0, "quantized %d",
              o2->quantized_tokens);
    }
    /* the key norm is the OScaR n_t: an oscar2 cache fed the same tokens computes it from the rotated
     * keys on its own (kv_quant's token norm); compare every token of every layer */
    {
        osc_kv *kv = NULL;
        osc_llm_ctx *c = NULL;
        CHECK(osc_llm_kv_new(m, "oscar2", T, &kv) == OSC_OK, "%s", osc_last_error());
        CHECK(osc_llm_ctx_new(m, T, &c) == OSC_OK, "%s", osc_last_error());
        if (kv && c) {
            int ss[2] = {0, T};
            osc_llm_batch bt = {1, ss, tok, NULL, &kv, 0, 0, NULL, NULL};
            CHECK(osc_llm_forward(m, c, &bt, NULL) == OSC_OK, "%s", osc_last_error());
            double worst = 0;
            for (int l = 0; l < r->n_layers; l++)
                for (int t = 0; t < T; t++) {
                    double n = osc_kv_debug_norm(kv, l, t), e = fabs(n - r->key_norm[(size_t)l * T + t]) / n;
                    if (!(e <= worst)) worst = e;
                }
            CHECK(worst < 1e-5, "key norm vs oscar2 n_t: worst rel. diff %g", worst);
        }
        osc_llm_ctx_free(c);
        osc_kv_free(kv);
    }
    /* JSON has the per-layer arrays */
    {
        cJSON *j = osc_kvstat_to_json(r);
        cJSON *ms = cJSON_GetObjectItem(j, "modes");
        cJSON *m0 = cJSON_GetArrayItem(ms, 0);
        cJSON *pl = cJSON_GetObjectItem(cJSON_GetObjectItem(m0, "attention"), "per_layer");
        CHECK(cJSON_GetArraySize(ms) == 7 && cJSON_GetArraySize(pl) == 2, "json modes/per_layer");
        cJSON *vals = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "key_norms"), "values");
        CHECK(cJSON_GetArraySize(vals) == 2 && cJSON_GetArraySize(cJSON_GetArrayItem(vals, 1)) == T, "json key norms");
        cJSON_Delete(j);
    }
#ifdef OSC_HAVE_PNG
    {
        char path[1024];
        snprintf(path, sizeof path, "%s/kvstat_qwen3.png", tmp);
        CHECK(osc_kvstat_plot(r, 1, path) == OSC_OK, "%s", osc_last_error());
        int w = 0, h = 0;
        uint8_t *img = read_png(path, &w, &h);
        CHECK(img && w == OSC_KVSTAT_PNG_W && h == OSC_KVSTAT_PNG_H, "kvstat png %dx%d", w, h);
        if (img) {
            /* every kind present is drawn in its colour in the top panel (the legend is in it
             * too, so count more pixels than a swatch has), each mode's colour in the bottom one */
            int n_kind[OSC_TOK_KINDS] = {0};
            for (int y = 50; y < 390; y++)
                for (int x = 100; x < 960; x++)
                    for (int k = 0; k < OSC_TOK_KINDS; k++) n_kind[k] += px_at(img, w, x, y) == osc_kvstat_kind_color(k);
            CHECK(n_kind[OSC_TOK_TEXT] > 300 && n_kind[OSC_TOK_IMAGE] > 300 && n_kind[OSC_TOK_AUDIO] > 200 &&
                      n_kind[OSC_TOK_SINK] > 64 && n_kind[OSC_TOK_VIDEO] == 0,
                  "kind pixels %d %d %d %d %d", n_kind[0], n_kind[1], n_kind[2], n_kind[3], n_kind[4]);
            int n_o2 = 0;
            for (int y = 480; y < 800; y++)
                for (int x = 100; x < 960; x++) n_o2 += px_at(img, w, x, y) == osc_kvstat_mode_color("oscar2");
            CHECK(n_o2 > 100, "oscar2 line pixels %d", n_o2);
            CHECK(px_at(img, w, 5, 5) == 0xffffff && px_at(img, w, 100, 380) == 0x000000, "background, axes corner");
        }
        free(img);
    }
#else
    (void)tmp;
#endif
    osc_kvstat_free(r);
out:
    free(tok);
    osc_llm_free(m);
}

/* ---- a synthetic model with Token Norm Imbalance ---------------------------------------------- *
 * qwen2-shaped (biases, no qk-norm), head_dim 32. Channel 0 of the residual stream carries the
 * embedding's channel 0 unchanged through every layer (o_proj and down_proj write nothing into it);
 * it is 0 for ordinary tokens and 1 for a few "huge" token ids, whose embedding is otherwise small,
 * and every input_layernorm weighs channel 0 by A. So after the norm the huge tokens are almost a
 * spike of height A sqrt(D) in channel 0; only k_proj reads channel 0 (q, v, gate and up ignore it),
 * so their keys are about A x longer than the others at layer 0 (less at layer 1, where the
 * attention output adds to their residual) and nothing else about them is special.
 * Measured (see docs/KVSTAT.md): with A = 5 oscar2 has a smaller attention error than kivi2 and
 * rot2; with A = 40 the huge keys dominate the attention of the decode steps and kivi2, whose
 * per-channel range is set by them and represents them almost exactly, has the smaller error:
 * OScaR gives every token the same relative error, which the logit multiplies by n_t. The test
 * asserts the first and only prints the second. */
static float g_syn_a = 40; /* input_layernorm weight of channel 0 */
#define SYN_HUGE_LO 1
#define SYN_HUGE_HI 4 /* ids [1, 4) */

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h | 1;
}
static int syn_has(void *ctx, const char *name) {
    (void)ctx;
    (void)name;
    return 1;
}
static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}
static osc_status syn_read(void *ctx, const char *name, int nd, const int64_t *shape, float *dst) {
    (void)ctx;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    uint64_t s = hash_name(name);
    if (ends_with(name, "norm.weight")) {
        for (int64_t i = 0; i < n; i++) dst[i] = 1;
        if (ends_with(name, "input_layernorm.weight")) dst[0] = g_syn_a;
        return OSC_OK;
    }
    float a = nd == 2 ? sqrtf(3.0f / (float)shape[1]) : 0.1f;
    if (!strcmp(name, "embed_tokens.weight")) a = 1;
    for (int64_t i = 0; i < n; i++) dst[i] = a * check_frand(&s);
    if (!strcmp(name, "embed_tokens.weight")) {
        const int64_t D = shape[1];
        for (int64_t v = 0; v < shape[0]; v++) {
            int huge = v >= SYN_HUGE_LO && v < SYN_HUGE_HI;
            if (huge)
                for (int64_t d = 1; d < D; d++) dst[v * D + d] *= 0.01f;
            dst[v * D] = huge ? 1.0f : 0.0f;
        }
    }
    if (ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight"))
        for (int64_t j = 0; j < shape[1]; j++) dst[j] = 0; /* output row 0 */
    if (ends_with(name, "q_proj.weight") || ends_with(name, "v_proj.weight") || ends_with(name, "gate_proj.weight") ||
        ends_with(name, "up_proj.weight"))
        for (int64_t i = 0; i < shape[0]; i++) dst[i * shape[1]] = 0; /* input column 0: only keys read it */
    return OSC_OK;
}

static void test_tni(const char *root, float A) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/qwen2-tiny", root);
    osc_llm_config cfg;
    CHECK(osc_config_load(dir, &cfg) == OSC_OK, "%s", osc_last_error());
    cfg.hidden_size = 128;
    cfg.intermediate_size = 256;
    cfg.n_heads = 4;
    cfg.n_kv_heads = 2;
    cfg.head_dim = 32;
    cfg.tie_embeddings = 0;
    g_syn_a = A;
    osc_wsrc src = {NULL, "synthetic TNI model", syn_has, syn_read, NULL};
    osc_llm *m = NULL;
    CHECK(osc_llm_load_src(&cfg, &src, OSC_DEV_CPU, &m) == OSC_OK, "%s", osc_last_error());
    if (!m) return;
    const int T = 192;
    int32_t *tok = random_tokens(T, 10, 700, 99);
    const int huge_at[] = {3, 20, 45, 77, 110, 140};
    for (size_t i = 0; i < sizeof huge_at / sizeof huge_at[0]; i++) tok[huge_at[i]] = SYN_HUGE_LO + (int)(i % 3);
    osc_kvstat_params p = osc_kvstat_default_params();
    p.modes = "kivi2,rot2,oscar2";
    p.n_eval = 32;
    p.r_evict = 32;
    p.n_sink = 0;
    osc_kvstat_input in = {T, tok, NULL, 0, NULL, NULL, NULL};
    osc_kvstat_result *r = NULL;
    CHECK(osc_kvstat_run(m, &in, &p, &r) == OSC_OK, "%s", osc_last_error());
    if (r) {
        /* the imbalance is really there at layer 0: huge tokens' keys are > A/2 x the median */
        for (int l = 0; l < r->n_layers; l++) {
            const osc_kvstat_kstats *st = &r->kstats[(size_t)l * OSC_TOK_KINDS + OSC_TOK_TEXT];
            double hmin = INFINITY;
            for (size_t i = 0; i < sizeof huge_at / sizeof huge_at[0]; i++)
                hmin = fmin(hmin, r->key_norm[(size_t)l * T + huge_at[i]]);
            printf("TNI A=%g layer %d: median key norm %.3g, smallest huge-token norm %.3g\n", A, l, st->pct[2], hmin);
            if (l == 0) CHECK(hmin > A / 2 * st->pct[2], "layer 0: huge %g vs median %g", hmin, st->pct[2]);
        }
        const osc_kvstat_mode *k2 = find_mode(r, "kivi2"), *r2 = find_mode(r, "rot2"), *o2 = find_mode(r, "oscar2");
        if (k2 && r2 && o2 && k2->att_ok && r2->att_ok && o2->att_ok && k2->e2e_ok && r2->e2e_ok && o2->e2e_ok) {
            for (int l = 0; l < r->n_layers; l++)
                printf("TNI A=%g layer %d attn err: kivi2 %.4f rot2 %.4f oscar2 %.4f\n", A, l, k2->att_err[l], r2->att_err[l],
                       o2->att_err[l]);
            printf("TNI A=%g KL mean: kivi2 %.4g rot2 %.4g oscar2 %.4g\n", A, k2->kl_mean, r2->kl_mean, o2->kl_mean);
            if (A <= 5) {
                CHECK(k2->att_err[0] > 1.05 * o2->att_err[0], "layer 0: kivi2 %g vs oscar2 %g", k2->att_err[0], o2->att_err[0]);
                CHECK(r2->att_err[0] > 1.05 * o2->att_err[0], "layer 0: rot2 %g vs oscar2 %g", r2->att_err[0], o2->att_err[0]);
                CHECK(k2->kl_mean > 1.1 * o2->kl_mean, "KL kivi2 %g vs oscar2 %g", k2->kl_mean, o2->kl_mean);
            }
        } else {
            CHECK(0, "TNI modes did not run");
        }
        osc_kvstat_free(r);
    }
    free(tok);
    osc_llm_free(m);
}

/* ---- CLI exit codes ------------------------------------------------------------------------- */

static int run_cmd(const char *cmd) {
    int st = system(cmd);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static void test_cli(const char *bin, const char *root, const char *tmp) {
    char exe[1024], cmd[4096];
    snprintf(exe, sizeof exe, "%s/oscar", bin);
    FILE *f = fopen(exe, "rb");
    if (!f) {
        printf("test_kvstat: %s not built, CLI checks skipped\n", exe);
        return;
    }
    fclose(f);
    const char *q = " >/dev/null 2>&1";
    snprintf(cmd, sizeof cmd, "'%s' kvstat --help%s", exe, q);
    CHECK(run_cmd(cmd) == 0, "--help");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -p hi%s", exe, q);
    CHECK(run_cmd(cmd) == 2, "no model");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s/qwen2-tiny'%s", exe, root, q);
    CHECK(run_cmd(cmd) == 2, "no text");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s/qwen2-tiny' -p hi --bogus%s", exe, root, q);
    CHECK(run_cmd(cmd) == 2, "unknown flag");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s/qwen2-tiny' -p hi --kv bf16,oscar3%s", exe, root, q);
    CHECK(run_cmd(cmd) == 2, "unknown mode");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s/qwen2-tiny' -p hi --eval 0%s", exe, root, q);
    CHECK(run_cmd(cmd) == 2, "--eval 0");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s/qwen2-tiny' -p hi --r-evict 40%s", exe, root, q);
    CHECK(run_cmd(cmd) == 2, "--r-evict 40");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s/no-such-model' -p hi --device cpu%s", exe, tmp, q);
    CHECK(run_cmd(cmd) == 1, "missing model");
    snprintf(cmd, sizeof cmd, "'%s' kvstat -m '%s' -p hi --device cpu%s", exe, root, q); /* a folder, no config.json */
    CHECK(run_cmd(cmd) == 1, "not a model folder");
    /* a good run: JSON on stdout parses and has the modes asked for */
    char out[1100];
    snprintf(out, sizeof out, "%s/kvstat_cli.json", tmp);
    snprintf(cmd, sizeof cmd,
             "'%s' kvstat -m '%s/qwen3-tiny' -p 'hello world, hello kvstat: the quick brown fox jumps over the lazy dog "
             "and keeps running through the forest until night falls' --kv bf16,oscar2 --eval 8 --r-evict 32 --json "
             "--device cpu > '%s' 2>/dev/null",
             exe, root, out);
    CHECK(run_cmd(cmd) == 0, "good run");
    char *txt = NULL;
    FILE *jf = fopen(out, "rb");
    if (jf) {
        txt = calloc(1, 1 << 20);
        if (txt && fread(txt, 1, (1 << 20) - 1, jf) == 0) txt[0] = 0;
        fclose(jf);
    }
    cJSON *j = txt ? cJSON_Parse(txt) : NULL;
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "modes")) == 2, "CLI JSON");
    cJSON_Delete(j);
    free(txt);
}

int main(void) {
    const char *root = getenv("OSC_TEST_MODELS");
    const char *tmp = getenv("OSC_TEST_TMP");
    const char *bin = getenv("OSC_BIN");
    if (!tmp) tmp = "/tmp";
    test_helpers();
    test_plot(tmp);
    if (root) {
        test_qwen2_tiny(root);
        test_qwen3_tiny(root, tmp);
        test_tni(root, 5);
        test_tni(root, 40);
        if (bin) test_cli(bin, root, tmp);
    } else {
        CHECK(0, "OSC_TEST_MODELS not set");
    }
    return check_done("test_kvstat");
}
