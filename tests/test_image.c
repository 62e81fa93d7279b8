/* Image decoding and Qwen2-VL preprocessing vs references from PIL and transformers
 * (tests/data/images, made by tools/golden/make_image_goldens.py), plus malformed inputs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "encoders/image.h"
#include "encoders/vision_pre.h"
#include "tests/check.h"

static char g_dir[1024], g_tmp[1024];
static osc_st *g_gold;

static const char *data_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_tmp, name);
    return buf;
}

static const osc_st_tensor *gold(const char *fmt, const char *name) {
    char key[256];
    snprintf(key, sizeof key, fmt, name);
    const osc_st_tensor *t = osc_st_get(g_gold, key);
    CHECK(t != NULL, "golden %s missing", key);
    return t;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)len + 1);
    if (fread(p, 1, (size_t)len, f) != (size_t)len) { perror(path); exit(1); }
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* ---- decoding ---- */

/* Compare a decode with the golden [h,w,3] U8; returns max abs difference (or 999), mean in *mean. */
static int cmp_decode(const osc_image *im, const osc_st_tensor *g, double *mean) {
    *mean = 999;
    if (!g || g->dt != OSC_U8 || g->nd != 3 || g->shape[0] != im->h || g->shape[1] != im->w || g->shape[2] != 3)
        return 999;
    const uint8_t *r = g->data;
    int mx = 0;
    double sum = 0;
    size_t n = (size_t)im->w * im->h * 3;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)im->rgb[i] - r[i]);
        if (d > mx) mx = d;
        sum += d;
    }
    *mean = sum / n;
    return mx;
}

static void test_decode_exact(void) {
    /* Lossless formats: must equal PIL + qwen-omni-utils to_rgb byte for byte. */
    static const char *files[] = {
        "odd_3x5.png", "grad_150x100.png", "mixed_60x45.png", "updown_50x62.png", "rgba_40x30.png", "gray_30x20.png",
        "la_9x7.png", "pal4_8x6.png", "adam7_13x11.png", "bw1_10x3.png", "rgb16_6x4.png", "rgba16_5x3.png",
#ifdef OSC_HAVE_FFMPEG
        "tiny_8x6.bmp", "anim_32x24.gif", "lossless_32x24.webp", "alpha_20x16.webp",
#endif
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p[1200];
        osc_image im;
        osc_status s = osc_image_load(data_path(p, sizeof p, files[i]), 0, &im);
        CHECK(s == OSC_OK, "%s: %s", files[i], osc_last_error());
        if (s != OSC_OK) continue;
        double mean;
        int mx = cmp_decode(&im, gold("dec.%s", files[i]), &mean);
        CHECK(mx == 0, "%s (%dx%d): max abs diff %d vs PIL, mean %.4f", files[i], im.w, im.h, mx, mean);
        osc_image_free(&im);
        CHECK(im.rgb == NULL && im.w == 0, "free resets");
    }
    /* 16-bit gray: we keep the high byte (PIL clips the 16-bit value to 255 instead). */
    char p[1200];
    osc_image im;
    osc_status s = osc_image_load(data_path(p, sizeof p, "gray16_7x5.png"), 0, &im);
    CHECK(s == OSC_OK, "gray16: %s", osc_last_error());
    const osc_st_tensor *raw = gold("raw16.%s", "gray16_7x5.png");
    if (s == OSC_OK && raw && raw->dt == OSC_I32 && raw->shape[0] == im.h && raw->shape[1] == im.w) {
        const int32_t *v = raw->data;
        int bad = 0;
        for (int i = 0; i < im.w * im.h; i++)
            for (int c = 0; c < 3; c++) bad += im.rgb[3 * i + c] != (v[i] >> 8);
        CHECK(bad == 0, "gray16: %d samples differ from the high byte", bad);
    }
    osc_image_free(&im);
}

#ifdef OSC_HAVE_FFMPEG
static void test_decode_jpeg(void) {
    /* JPEG decoders differ: FFmpeg's IDCT vs libjpeg-turbo's ISLOW IDCT (a level or two) and,
     * for 4:2:0, swscale's bicubic chroma interpolation vs libjpeg's "fancy" triangle upsampling,
     * which differ most at sharp colour edges (the test image has a saturated red square).
     * Measured: 4:2:0 max 18 mean 0.81; 4:4:4 max 3 mean 0.06. Bounds with some margin. */
    static const struct { const char *file; int max; double mean; } t[] = {
        {"photo_64x48.jpg", 24, 1.0}, {"prog444_64x48.jpg", 4, 0.1}};
    for (size_t i = 0; i < 2; i++) {
        const char *file = t[i].file;
        char p[1200];
        osc_image im;
        osc_status s = osc_image_load(data_path(p, sizeof p, file), 0, &im);
        CHECK(s == OSC_OK, "%s: %s", file, osc_last_error());
        if (s != OSC_OK) continue;
        double mean;
        int mx = cmp_decode(&im, gold("dec.%s", file), &mean);
        printf("%s vs PIL: max abs %d, mean abs %.4f (levels of 255)\n", file, mx, mean);
        CHECK(mx <= t[i].max && mean <= t[i].mean, "%s: max abs %d mean %.4f vs PIL", file, mx, mean);
        osc_image_free(&im);
    }
}
#endif

/* ---- smart_resize ---- */

static void test_smart_resize(void) {
    /* h, w, min, max -> H, W. Expected values hand-checked against the qwen-omni-utils formula
     * (tools/golden/make_image_goldens.py omni_smart_resize); transformers' own smart_resize
     * agrees except where noted (it lacks the max(28, round(..)) first step). */
    static const struct { int64_t h, w, mn, mx; int H, W; } t[] = {
        {480, 640, 3136, 12845056, 476, 644},    /* docs example */
        {5, 3, 3136, 12845056, 84, 56},          /* min branch (ceil) */
        {100, 150, 784, 2400, 28, 56},           /* max branch (floor) */
        {42, 70, 3136, 12845056, 56, 56},        /* 1.5 -> 2 and 2.5 -> 2: half to even */
        {70, 98, 3136, 12845056, 56, 112},       /* 2.5 -> 2, 3.5 -> 4 */
        {14, 14, 3136, 12845056, 56, 56},        /* 0.5 -> 0 -> 28, then min branch */
        {1, 200, 3136, 12845056, 28, 196},       /* transformers alone: 28 x 812 */
        {200, 1, 3136, 12845056, 196, 28},       /* transformers alone: 812 x 28 */
        {4000, 6000, 3136, 12845056, 2912, 4368},
        {1080, 1920, 3136, 12845056, 1092, 1932},
        {28, 28, 784, 784, 28, 28},
        {10, 2000, 784, 3136, 28, 784},          /* utils would give 0 rows; we keep >= 28 as transformers */
        {56, 56, 3136, 12845056, 56, 56},
        {45, 60, 3136, 12845056, 56, 56},
        {360, 640, 100352, 602112, 364, 644},    /* video budget example of the docs */
        {2000, 2000, 3136, 1003520, 980, 980},
        {1, 1, 3136, 12845056, 56, 56},
        {99, 1, 3136, 12845056, 112, 28},        /* transformers alone: 560 x 28 */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int H = -1, W = -1;
        osc_status s = osc_smart_resize(t[i].h, t[i].w, 28, t[i].mn, t[i].mx, &H, &W);
        CHECK(s == OSC_OK && H == t[i].H && W == t[i].W, "smart_resize(%lld, %lld, %lld, %lld) = %d x %d (%s), want %d x %d",
              (long long)t[i].h, (long long)t[i].w, (long long)t[i].mn, (long long)t[i].mx, H, W,
              s == OSC_OK ? "ok" : osc_last_error(), t[i].H, t[i].W);
    }
    int H, W;
    CHECK(osc_smart_resize(1, 201, 28, 3136, 12845056, &H, &W) == OSC_ERR_INVALID_ARG, "ratio 201 accepted");
    CHECK(strstr(osc_last_error(), "aspect ratio") != NULL, "msg: %s", osc_last_error());
    CHECK(osc_smart_resize(0, 10, 28, 3136, 12845056, &H, &W) == OSC_ERR_INVALID_ARG, "zero height accepted");
    CHECK(osc_smart_resize(10, 10, 28, 5000, 4000, &H, &W) == OSC_ERR_INVALID_ARG, "min > max accepted");
    CHECK(osc_smart_resize(10, 10, 28, 0, 100, &H, &W) == OSC_ERR_INVALID_ARG, "max < 28*28 accepted");
    CHECK(osc_smart_resize(10, 10, 0, 0, 100, &H, &W) == OSC_ERR_INVALID_ARG, "factor 0 accepted");
}

/* ---- resize and full preprocessing vs goldens ---- */

static void load_or_die(const char *name, osc_image *im) {
    char p[1200];
    if (osc_image_load(data_path(p, sizeof p, name), 0, im) != OSC_OK) {
        fprintf(stderr, "cannot load %s: %s\n", name, osc_last_error());
        exit(1);
    }
}

static void test_preprocess_golden(void) {
    static const struct { const char *cas, *file; double max_tol, mean_tol; } t[] = {
        /* our path = PIL path: bit-exact expected (tolerance 1e-6 allows for nothing but noise) */
        {"odd_default", "odd_3x5.png", 1e-6, 1e-7},
        {"grad_down", "grad_150x100.png", 1e-6, 1e-7},
        {"mixed", "mixed_60x45.png", 1e-6, 1e-7},
        {"updown", "updown_50x62.png", 1e-6, 1e-7},
        {"rgba_small", "rgba_40x30.png", 1e-6, 1e-7},
        {"gray_small", "gray_30x20.png", 1e-6, 1e-7},
        /* transformers alone resizes with torchvision's uint8 antialiased bicubic, which can
         * differ from PIL's by one uint8 level in a pixel = 1/(255*0.2613) = 0.015 after
         * normalisation; allow two levels max and 1e-3 mean. */
        {"grad_down_hf", "grad_150x100.png", 2.0 / (255 * 0.26130258), 1e-3},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        osc_image im;
        load_or_die(t[i].file, &im);
        const osc_st_tensor *gp = gold("%s.params", t[i].cas), *gv = gold("%s.pixel_values", t[i].cas),
                            *gg = gold("%s.grid_thw", t[i].cas);
        if (!gp || !gv || !gg) { osc_image_free(&im); continue; }
        const int64_t *pr = gp->data, *grid = gg->data;
        osc_vision_pre_params vp;
        osc_vision_pre_defaults(&vp);
        vp.min_pixels = pr[0];
        vp.max_pixels = pr[1];
        float *pv = NULL;
        int64_t np = 0;
        int thw[3];
        osc_status s = osc_vision_preprocess(&im, 1, &vp, &pv, &np, thw);
        CHECK(s == OSC_OK, "%s: %s", t[i].cas, osc_last_error());
        if (s == OSC_OK) {
            CHECK(thw[0] == grid[0] && thw[1] == grid[1] && thw[2] == grid[2], "%s: grid %d,%d,%d vs %lld,%lld,%lld",
                  t[i].cas, thw[0], thw[1], thw[2], (long long)grid[0], (long long)grid[1], (long long)grid[2]);
            CHECK(gv->nd == 2 && gv->shape[0] == np && gv->shape[1] == 1176, "%s: %lld patches vs [%lld,%lld]",
                  t[i].cas, (long long)np, (long long)gv->shape[0], (long long)gv->shape[1]);
            if (gv->nd == 2 && gv->shape[0] == np && gv->shape[1] == 1176) {
                float *ref = malloc(sizeof(float) * np * 1176);
                osc_st_read_f32(gv, ref, np * 1176);
                double mx = 0, sum = 0;
                for (int64_t j = 0; j < np * 1176; j++) {
                    double d = fabs((double)pv[j] - ref[j]);
                    if (isnan(pv[j])) d = INFINITY;
                    if (d > mx) mx = d;
                    sum += d;
                }
                double mean = sum / (np * 1176);
                printf("%-13s %dx%d -> grid [%d,%d,%d]: pixel_values max abs %.3g, mean abs %.3g, rel L2 %.3g\n",
                       t[i].cas, im.w, im.h, thw[0], thw[1], thw[2], mx, mean, rel_l2(pv, ref, (long)(np * 1176)));
                CHECK(mx <= t[i].max_tol && mean <= t[i].mean_tol, "%s: max abs %g mean abs %g", t[i].cas, mx, mean);
                free(ref);
            }
        }
        /* the resized uint8 image itself, where the golden has it */
        char key[96];
        snprintf(key, sizeof key, "%s.resized", t[i].cas);
        const osc_st_tensor *gr = osc_st_get(g_gold, key);
        if (gr && s == OSC_OK) {
            osc_image r;
            s = osc_image_resize_bicubic(&im, thw[2] * 14, thw[1] * 14, &r);
            CHECK(s == OSC_OK, "resize: %s", osc_last_error());
            double mean;
            int mx = cmp_decode(&r, gr, &mean);
            CHECK(mx == 0, "%s: resize differs from PIL: max %d mean %.4f", t[i].cas, mx, mean);
            osc_image_free(&r);
        }
        free(pv);
        osc_image_free(&im);
    }
}

static void test_resize_float(void) {
    /* Float resize vs torchvision (float input, bicubic, antialias): same taps and weights, float
     * accumulation in a different order: agreement to ~1e-4 of the 0..255 range. */
    osc_image im;
    load_or_die("mixed_60x45.png", &im);
    const osc_st_tensor *g = gold("%s.resized_f32", "mixed");
    if (!g || g->nd != 3) { osc_image_free(&im); return; }
    int H = (int)g->shape[1], W = (int)g->shape[2];
    float *out = malloc(sizeof(float) * 3 * H * W), *ref = malloc(sizeof(float) * 3 * H * W);
    osc_st_read_f32(g, ref, 3 * H * W);
    CHECK(osc_image_resize_bicubic_f32(&im, W, H, out) == OSC_OK, "resize f32: %s", osc_last_error());
    double mx = 0;
    int over = 0;
    for (int i = 0; i < 3 * H * W; i++) {
        double d = fabs((double)out[i] - ref[i]);
        if (d > mx || isnan(out[i])) mx = isnan(out[i]) ? INFINITY : d;
        over += ref[i] > 255.f || ref[i] < 0.f;
    }
    printf("float resize vs torchvision: max abs %.3g (of 255), %d samples outside 0..255 kept\n", mx, over);
    CHECK(mx <= 2e-3, "float resize max abs %g", mx);
    CHECK(over > 0, "the test image should overshoot somewhere");
    free(out), free(ref);
    osc_image_free(&im);
}

/* ---- flatten order on multi-frame input, checked with the spec's index formula ---- */

static void test_patch_order(void) {
    /* 3 frames of 84 x 56 (already multiples of 28: no resize) -> padded to 4 frames, grid [2,4,6]. */
    enum { W = 84, H = 56, NF = 3 };
    uint8_t buf[NF][H * W * 3];
    osc_image fr[NF];
    uint64_t seed = 12345;
    for (int f = 0; f < NF; f++) {
        for (int i = 0; i < H * W * 3; i++) buf[f][i] = (uint8_t)((check_frand(&seed) + 1.f) * 127.9f);
        fr[f].w = W, fr[f].h = H, fr[f].rgb = buf[f];
    }
    osc_vision_pre_params p;
    osc_vision_pre_defaults(&p);
    float *pv;
    int64_t np;
    int thw[3];
    osc_status s = osc_vision_preprocess(fr, NF, &p, &pv, &np, thw);
    CHECK(s == OSC_OK, "%s", osc_last_error());
    if (s != OSC_OK) return;
    CHECK(thw[0] == 2 && thw[1] == 4 && thw[2] == 6 && np == 48, "grid %d %d %d np %lld", thw[0], thw[1], thw[2],
          (long long)np);
    const int gh = 4, gw = 6;
    int bad = 0;
    for (int t = 0; t < 2; t++)
        for (int ph = 0; ph < gh; ph++)
            for (int pw = 0; pw < gw; pw++) {
                int bh = ph / 2, mh = ph % 2, bw = pw / 2, mw = pw % 2;
                int row = ((t * (gh / 2) + bh) * (gw / 2) + bw) * 4 + mh * 2 + mw;
                for (int c = 0; c < 3; c++)
                    for (int tt = 0; tt < 2; tt++)
                        for (int py = 0; py < 14; py++)
                            for (int px = 0; px < 14; px++) {
                                int col = ((c * 2 + tt) * 14 + py) * 14 + px;
                                int f = t * 2 + tt < NF ? t * 2 + tt : NF - 1;
                                int y = ph * 14 + py, x = pw * 14 + px;
                                float v = buf[f][(y * W + x) * 3 + c];
                                float want = (v - p.mean[c] * 255.f) / (p.std[c] * 255.f);
                                bad += pv[(size_t)row * 1176 + col] != want;
                            }
            }
    CHECK(bad == 0, "%d values not where the spec puts them", bad);
    free(pv);

    /* single frame: both temporal copies identical, grid_t 1 */
    s = osc_vision_preprocess(fr, 1, &p, &pv, &np, thw);
    CHECK(s == OSC_OK && thw[0] == 1 && np == 24, "single frame grid %d", thw[0]);
    if (s == OSC_OK) {
        int diff = 0;
        for (int64_t r = 0; r < np; r++)
            for (int c = 0; c < 3; c++)
                diff += memcmp(pv + r * 1176 + (c * 2) * 196, pv + r * 1176 + (c * 2 + 1) * 196, 196 * 4) != 0;
        CHECK(diff == 0, "temporal copies differ in %d places", diff);
        free(pv);
    }
}

static void test_preprocess_bad(void) {
    osc_vision_pre_params p;
    osc_vision_pre_defaults(&p);
    uint8_t px[201 * 3] = {0};
    osc_image thin = {201, 1, px}, a = {2, 2, px}, b = {3, 2, px};
    float *pv = (float *)1;
    int64_t np;
    int thw[3];
    CHECK(osc_vision_preprocess(&thin, 1, &p, &pv, &np, thw) == OSC_ERR_INVALID_ARG && pv == NULL,
          "201x1 accepted");
    osc_image two[2] = {a, b};
    CHECK(osc_vision_preprocess(two, 2, &p, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "mixed sizes accepted");
    CHECK(strstr(osc_last_error(), "frame 1") != NULL, "msg %s", osc_last_error());
    CHECK(osc_vision_preprocess(&a, 0, &p, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "0 frames accepted");
    CHECK(osc_vision_preprocess(NULL, 1, &p, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "NULL frames accepted");
    osc_image empty = {0, 0, NULL};
    CHECK(osc_vision_preprocess(&empty, 1, &p, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "empty frame accepted");
    osc_vision_pre_params q = p;
    q.std[1] = 0;
    CHECK(osc_vision_preprocess(&a, 1, &q, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "std 0 accepted");
    q = p;
    q.min_pixels = q.max_pixels + 1;
    CHECK(osc_vision_preprocess(&a, 1, &q, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "min > max accepted");
    q = p;
    q.patch_size = 0;
    CHECK(osc_vision_preprocess(&a, 1, &q, &pv, &np, thw) == OSC_ERR_INVALID_ARG, "patch 0 accepted");
    osc_image r;
    CHECK(osc_image_resize_bicubic(&a, 0, 5, &r) == OSC_ERR_INVALID_ARG && r.rgb == NULL, "resize to 0 accepted");
    CHECK(osc_image_from_rgb(px, 2, 2, 5, &r) == OSC_ERR_INVALID_ARG, "stride < 3w accepted");
    CHECK(osc_image_from_rgb(px, 2, 2, 7, &r) == OSC_OK && r.w == 2 && r.h == 2, "from_rgb");
    osc_image_free(&r);
    osc_image_free(&r); /* twice is fine */
}

/* ---- malformed and hostile files ---- */

static uint32_t crc32_png(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Load must fail with `code` and a message holding the path and `phrase`; the image stays empty. */
static void expect_bad(const char *path, int64_t max_pixels, osc_status code, const char *phrase, const char *what) {
    osc_image im = {7, 7, (uint8_t *)1};
    osc_status s = osc_image_load(path, max_pixels, &im);
    const char *m = osc_last_error();
    CHECK(s == code, "%s: status %s, want %s (%s)", what, osc_status_name(s), osc_status_name(code), m);
    CHECK(im.rgb == NULL && im.w == 0 && im.h == 0, "%s: output not cleared", what);
    CHECK(strstr(m, path) != NULL, "%s: message lacks the path: %s", what, m);
    CHECK(strstr(m, phrase) != NULL, "%s: message lacks '%s': %s", what, phrase, m);
    if (s == OSC_OK) osc_image_free(&im);
}

static void test_bad_files(void) {
    char p[1200], src[1200];
    osc_image ok;
    size_t n;
    expect_bad(tmp_path(p, sizeof p, "does_not_exist.png"), 0, OSC_ERR_IO, "cannot open", "missing file");
    expect_bad(g_tmp, 0, OSC_ERR_IO, "cannot read", "directory");
    write_bytes(tmp_path(p, sizeof p, "empty.png"), "", 0);
    expect_bad(p, 0, OSC_ERR_FORMAT, "empty file", "empty file");

    /* PNG: signature only, truncated in IDAT, corrupted IDAT (CRC), bad IHDR, huge header */
    uint8_t *png = read_all(data_path(src, sizeof src, "grad_150x100.png"), &n);
    write_bytes(tmp_path(p, sizeof p, "sig_only.png"), png, 8);
    expect_bad(p, 0, OSC_ERR_FORMAT, "PNG", "PNG signature only");
    write_bytes(tmp_path(p, sizeof p, "trunc.png"), png, n / 2);
    expect_bad(p, 0, OSC_ERR_FORMAT, "truncated", "truncated PNG");
    uint8_t *bad = malloc(n);
    memcpy(bad, png, n);
    bad[n / 2] ^= 0x55;
    write_bytes(tmp_path(p, sizeof p, "crc.png"), bad, n);
    expect_bad(p, 0, OSC_ERR_FORMAT, "corrupt", "PNG with a corrupted IDAT byte");
    /* IHDR at offset 8: len(4) "IHDR"(4) w(4) h(4) depth type ... crc(4) */
    memcpy(bad, png, n);
    put_be32(bad + 16, 0);
    put_be32(bad + 29, crc32_png(bad + 12, 17));
    write_bytes(tmp_path(p, sizeof p, "w0.png"), bad, n);
    expect_bad(p, 0, OSC_ERR_FORMAT, "PNG", "PNG with width 0");
    memcpy(bad, png, n);
    put_be32(bad + 16, 20000), put_be32(bad + 20, 20000);
    put_be32(bad + 29, crc32_png(bad + 12, 17));
    write_bytes(tmp_path(p, sizeof p, "huge.png"), bad, n);
    expect_bad(p, 0, OSC_ERR_FORMAT, "exceeds the limit", "PNG claiming 20000x20000");
    expect_bad(data_path(src, sizeof src, "grad_150x100.png"), 14999, OSC_ERR_FORMAT, "exceeds the limit",
               "PNG over a caller's limit");
    CHECK(osc_image_load(src, 15000, &ok) == OSC_OK, "PNG at exactly the limit: %s", osc_last_error());
    osc_image_free(&ok);
    free(bad);
    free(png);

    /* not an image at all */
    write_bytes(tmp_path(p, sizeof p, "hello.png"), "hello, world\n", 13);
#ifdef OSC_HAVE_FFMPEG
    /* with an image extension FFmpeg tries that decoder (FORMAT); without, nothing claims it */
    expect_bad(p, 0, OSC_ERR_FORMAT, "corrupt", "text file named .png");
    write_bytes(tmp_path(p, sizeof p, "hello.txt"), "hello, world\n", 13);
    expect_bad(p, 0, OSC_ERR_UNSUPPORTED, "not an image format", "text file");
    uint8_t noise[4096];
    uint64_t seed = 99;
    for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)((check_frand(&seed) + 1.f) * 127.9f);
    write_bytes(tmp_path(p, sizeof p, "noise.jpg"), noise, sizeof noise);
    expect_bad(p, 0, OSC_ERR_FORMAT, "corrupt", "random bytes named .jpg");
    write_bytes(tmp_path(p, sizeof p, "noise.bin"), noise, sizeof noise);
    expect_bad(p, 0, OSC_ERR_UNSUPPORTED, "not an image format", "random bytes");

    /* JPEG: truncated, header only, a SOF that claims 30000 x 30000, over the caller's limit */
    uint8_t *jpg = read_all(data_path(src, sizeof src, "photo_64x48.jpg"), &n);
    write_bytes(tmp_path(p, sizeof p, "trunc.jpg"), jpg, n / 2);
    expect_bad(p, 0, OSC_ERR_FORMAT, "truncated", "truncated JPEG");
    write_bytes(tmp_path(p, sizeof p, "soi.jpg"), jpg, 4);
    expect_bad(p, 0, OSC_ERR_FORMAT, "", "JPEG of 4 bytes");
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n; i++)
        if (jpg[i] == 0xFF && jpg[i + 1] == 0xC0) { sof = i; break; }
    CHECK(sof > 0, "no SOF0 in the test JPEG");
    if (sof) {
        /* 10000 x 10000 = 100 Mpx, over the default limit: FFmpeg's decoder already refuses it as
         * too large for its few bytes of data; either way it must fail before allocating */
        jpg[sof + 5] = 10000 >> 8, jpg[sof + 6] = 10000 & 255, jpg[sof + 7] = 10000 >> 8, jpg[sof + 8] = 10000 & 255;
        write_bytes(tmp_path(p, sizeof p, "bomb.jpg"), jpg, n);
        expect_bad(p, 0, OSC_ERR_FORMAT, "", "JPEG claiming 10000x10000");
        /* 30000 x 30000: FFmpeg calls that size invalid */
        jpg[sof + 5] = 30000 >> 8, jpg[sof + 6] = 30000 & 255, jpg[sof + 7] = 30000 >> 8, jpg[sof + 8] = 30000 & 255;
        write_bytes(tmp_path(p, sizeof p, "bomb2.jpg"), jpg, n);
        expect_bad(p, 0, OSC_ERR_FORMAT, "", "JPEG claiming 30000x30000");
    }
    free(jpg);
    expect_bad(data_path(src, sizeof src, "photo_64x48.jpg"), 64 * 48 - 1, OSC_ERR_FORMAT, "exceeds the limit",
               "JPEG over a caller's limit");
    expect_bad(data_path(src, sizeof src, "photo_64x48.jpg"), 1000, OSC_ERR_FORMAT, "exceeds the limit",
               "JPEG far over a caller's limit (refused by the decoder)");
    CHECK(osc_image_load(src, 64 * 48, &ok) == OSC_OK, "JPEG at exactly the limit: %s", osc_last_error());
    osc_image_free(&ok);
    expect_bad(data_path(src, sizeof src, "anim_32x24.gif"), 100, OSC_ERR_FORMAT, "exceeds the limit",
               "GIF over a caller's limit");
    expect_bad(data_path(src, sizeof src, "lossless_32x24.webp"), 100, OSC_ERR_FORMAT, "exceeds the limit",
               "WebP over a caller's limit");

    /* GIF / WebP / BMP truncated */
    static const char *others[] = {"anim_32x24.gif", "lossless_32x24.webp", "tiny_8x6.bmp"};
    for (int i = 0; i < 3; i++) {
        uint8_t *d = read_all(data_path(src, sizeof src, others[i]), &n);
        char name[64];
        snprintf(name, sizeof name, "trunc_%s", others[i]);
        write_bytes(tmp_path(p, sizeof p, name), d, n / 3);
        osc_image im;
        osc_status s = osc_image_load(p, 0, &im);
        CHECK(s == OSC_ERR_FORMAT, "%s: status %s (%s)", name, osc_status_name(s), osc_last_error());
        if (s == OSC_OK) osc_image_free(&im);
        free(d);
    }
#else
    expect_bad(p, 0, OSC_ERR_UNSUPPORTED, "FFmpeg", "non-PNG without FFmpeg");
#endif
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS");
    const char *tmp = getenv("OSC_TEST_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/../data/images", models ? models : "tests/models");
    snprintf(g_tmp, sizeof g_tmp, "%s", tmp ? tmp : "/tmp");
#ifndef OSC_HAVE_PNG
    printf("test_image: built without libpng; PNG tests need it\n");
#endif
    char p[1200];
    if (osc_st_open(data_path(p, sizeof p, "goldens.safetensors"), &g_gold) != OSC_OK) {
        fprintf(stderr, "cannot open goldens: %s\n", osc_last_error());
        return 1;
    }
    test_smart_resize();
    test_decode_exact();
#ifdef OSC_HAVE_FFMPEG
    test_decode_jpeg();
#endif
    test_preprocess_golden();
    test_resize_float();
    test_patch_order();
    test_preprocess_bad();
    test_bad_files();
    /* No bad file may have made us allocate its claimed size (the bombs claim >= 100 Mpx * 3). */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %ld MB\n", ru.ru_maxrss / 1024);
    CHECK(ru.ru_maxrss < 200 * 1024, "peak RSS %ld kB", ru.ru_maxrss);
    osc_st_close(g_gold);
    return check_done("test_image");
}
