/* The Qwen2.5-Omni audio encoder, written once against kernels/ops.h (see audio_enc.h). */
#include "audio_enc.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/device.h"
#include "../core/fileio.h"
#include "../core/safetensors.h"
#include "../kernels/ops.h"

#define CFG_MAX_BYTES (4u << 20)

typedef struct enc_layer {
    osc_tensor ln1_w, ln1_b, wq, bq, wk, wv, bv, wo, bo, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} enc_layer;

struct osc_audio_enc {
    osc_audio_enc_config cfg;
    osc_dev dev;
    osc_dtype act;
    osc_tensor conv1_w, conv1_b; /* [D, n_mels*3] (the Conv1d weight [D, n_mels, 3] flattened), [D] */
    osc_tensor conv2_w, conv2_b; /* [D, D*3], [D] */
    osc_tensor ln_post_w, ln_post_b, proj_w, proj_b;
    enc_layer *layers;
    void **allocs;
    int n_allocs, cap_allocs;
    size_t weight_bytes;
    int pass_frames; /* mel frames per pass, a multiple of 2*n_window */
    /* scratch for one pass of up to sc_chunks chunks */
    int sc_chunks;
    osc_arena arena;
    osc_tensor mel, col1, h1, col2, x, xn, q, k, v, att, o, f, pe, pooled, pn, y;
    float *stage; /* host: the pass's features transposed to [T, n_mels] */
    int32_t *cu;  /* host: [chunks + 1] row offsets of the pass's chunks after conv2 (cu_seqlens) */
};

/* ---- config ------------------------------------------------------------------------------ */

static const cJSON *obj(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsObject(v) ? v : NULL;
}

/* An integer field: absent -> default; present but not an integer in [lo, hi] -> error. */
static osc_status get_int(const char *path, const cJSON *o, const char *k, int def, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return OSC_OK;
    }
    double d = v->valuedouble;
    if (!cJSON_IsNumber(v) || d != floor(d) || d < lo || d > hi)
        return osc_error(OSC_ERR_FORMAT, "%s: audio_config.%s must be an integer in [%d, %d]", path, k, lo, hi);
    *out = (int)d;
    return OSC_OK;
}

osc_status osc_audio_enc_config_load(const char *dir, osc_audio_enc_config *cfg) {
    char path[4096];
    osc_path_join(path, sizeof path, dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    OSC_TRY(osc_read_file(path, CFG_MAX_BYTES, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return osc_error(OSC_ERR_FORMAT, "%s: not valid JSON", path);
    osc_status s = OSC_OK;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *ac = NULL;
    if (cJSON_IsString(mt) && strcmp(mt->valuestring, "qwen2_5_omni") == 0) {
        const cJSON *th = obj(root, "thinker_config");
        ac = th ? obj(th, "audio_config") : NULL;
    } else if (cJSON_IsString(mt) && strcmp(mt->valuestring, "qwen2_5_omni_thinker") == 0) {
        ac = obj(root, "audio_config");
    } else {
        s = osc_error(OSC_ERR_UNSUPPORTED, "%s: model_type '%.48s' has no Qwen2.5-Omni audio encoder "
                      "(want qwen2_5_omni or qwen2_5_omni_thinker)", path, cJSON_IsString(mt) ? mt->valuestring : "?");
        cJSON_Delete(root);
        return s;
    }
    if (!ac) {
        cJSON_Delete(root);
        return osc_error(OSC_ERR_FORMAT, "%s: no audio_config object (this checkpoint has no audio encoder)", path);
    }
    memset(cfg, 0, sizeof *cfg);
    /* defaults: transformers' Qwen2_5OmniAudioEncoderConfig */
    if (s == OSC_OK) s = get_int(path, ac, "num_mel_bins", 128, 1, 1024, &cfg->n_mels);
    if (s == OSC_OK) s = get_int(path, ac, "d_model", 1280, 2, 16384, &cfg->d_model);
    if (s == OSC_OK) s = get_int(path, ac, "encoder_layers", 32, 0, 512, &cfg->n_layers);
    if (s == OSC_OK) s = get_int(path, ac, "encoder_attention_heads", 20, 1, 1024, &cfg->n_heads);
    if (s == OSC_OK) s = get_int(path, ac, "encoder_ffn_dim", 5120, 1, 1 << 17, &cfg->ffn_dim);
    if (s == OSC_OK) s = get_int(path, ac, "n_window", 100, 1, 1 << 16, &cfg->n_window);
    if (s == OSC_OK) s = get_int(path, ac, "max_source_positions", 1500, 1, 1 << 20, &cfg->max_source_positions);
    if (s == OSC_OK) s = get_int(path, ac, "output_dim", 3584, 1, 1 << 17, &cfg->output_dim);
    cfg->ln_eps = 1e-5f;
    if (s == OSC_OK) {
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(ac, "activation_function");
        if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "gelu") != 0))
            s = osc_error(OSC_ERR_UNSUPPORTED, "%s: audio_config.activation_function must be \"gelu\"", path);
    }
    cJSON_Delete(root);
    if (s != OSC_OK) return s;
    if (cfg->d_model % cfg->n_heads || (cfg->d_model / cfg->n_heads) % 2 || cfg->d_model % 2)
        return osc_error(OSC_ERR_FORMAT, "%s: audio_config d_model %d is not an even multiple of %d heads", path,
                         cfg->d_model, cfg->n_heads);
    if (cfg->d_model / cfg->n_heads > 256)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: audio head_dim %d > 256", path, cfg->d_model / cfg->n_heads);
    if (cfg->n_window > cfg->max_source_positions)
        return osc_error(OSC_ERR_FORMAT, "%s: audio_config n_window %d exceeds max_source_positions %d", path,
                         cfg->n_window, cfg->max_source_positions);
    return OSC_OK;
}

/* ---- weights ----------------------------------------------------------------------------- */

const osc_audio_enc_config *osc_audio_enc_config_of(const osc_audio_enc *e) { return &e->cfg; }
osc_dev osc_audio_enc_device(const osc_audio_enc *e) { return e->dev; }
size_t osc_audio_enc_weight_bytes(const osc_audio_enc *e) { return e->weight_bytes; }

int osc_audio_enc_n_tokens(int n_frames) {
    if (n_frames <= 0) return 0;
    int l1 = (n_frames - 1) / 2 + 1;
    return l1 / 2; /* == (l1 - 2) // 2 + 1 with Python's floor division, l1 >= 1 */
}

static osc_status track(osc_audio_enc *e, void *p) {
    if (e->n_allocs == e->cap_allocs) {
        int nc = e->cap_allocs ? e->cap_allocs * 2 : 64;
        void **na = realloc(e->allocs, (size_t)nc * sizeof *na);
        if (!na) return osc_error(OSC_ERR_OOM, "out of host memory");
        e->allocs = na;
        e->cap_allocs = nc;
    }
    e->allocs[e->n_allocs++] = p;
    return OSC_OK;
}

/* Load prefix+name (checked to have exactly file_shape) onto the device as a tensor of shape
 * `shape` (the same elements, e.g. a Conv1d weight [O,I,K] as [O, I*K]). */
static osc_status load_w(osc_audio_enc *e, const osc_st *st, const char *prefix, const char *name, int fnd,
                         const int64_t *fshape, int nd, const int64_t *shape, osc_tensor *out) {
    char full[320];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const osc_st_tensor *t;
    OSC_TRY(osc_st_expect(st, full, fnd, fshape, &t));
    osc_tensor w = osc_tensor_make(NULL, e->act, e->dev, nd, shape);
    int64_t n = osc_tensor_nelem(&w);
    void *p;
    OSC_TRY(osc_dev_malloc(e->dev, osc_tensor_nbytes(&w), &p));
    osc_status s = track(e, p);
    if (s != OSC_OK) {
        osc_dev_free(e->dev, p);
        return s;
    }
    w.data = p;
    if (e->dev == OSC_DEV_CPU) {
        OSC_TRY(osc_st_read_f32(t, p, n));
    } else if (t->dt == OSC_BF16) {
        OSC_TRY(osc_copy_bytes(p, e->dev, t->data, OSC_DEV_CPU, (size_t)n * 2));
    } else {
        float *tmp = malloc((size_t)n * sizeof(float));
        if (!tmp) return osc_error(OSC_ERR_OOM, "cannot stage tensor %s (%lld elements)", full, (long long)n);
        s = osc_st_read_f32(t, tmp, n);
        if (s == OSC_OK) s = osc_tensor_upload_f32(&w, tmp, n);
        free(tmp);
        OSC_TRY(s);
    }
    e->weight_bytes += osc_tensor_nbytes(&w);
    *out = w;
    return OSC_OK;
}

static osc_status load1(osc_audio_enc *e, const osc_st *st, const char *pfx, const char *name, int64_t n0,
                        osc_tensor *out) {
    return load_w(e, st, pfx, name, 1, &n0, 1, &n0, out);
}
static osc_status load2(osc_audio_enc *e, const osc_st *st, const char *pfx, const char *name, int64_t n0, int64_t n1,
                        osc_tensor *out) {
    int64_t s[2] = {n0, n1};
    return load_w(e, st, pfx, name, 2, s, 2, s, out);
}

static const char *find_prefix(const osc_st *st) {
    static const char *cands[] = {"thinker.audio_tower.", "audio_tower.", "model.audio_tower."};
    char name[128];
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        snprintf(name, sizeof name, "%sconv1.weight", cands[i]);
        if (osc_st_get(st, name)) return cands[i];
    }
    return NULL;
}

osc_status osc_audio_enc_load(const char *dir, osc_dev dev, osc_audio_enc **out) {
    *out = NULL;
    osc_audio_enc_config cfg;
    OSC_TRY(osc_audio_enc_config_load(dir, &cfg));
    if (dev == OSC_DEV_CUDA && !osc_device_cuda_available())
        return osc_error(OSC_ERR_UNSUPPORTED, "audio encoder: CUDA requested but no usable GPU (or built without CUDA)");
    osc_st *st = NULL;
    OSC_TRY(osc_st_open(dir, &st));
    const char *pfx = find_prefix(st);
    if (!pfx) {
        osc_st_close(st);
        return osc_error(OSC_ERR_FORMAT, "%s: no audio encoder weights (thinker.audio_tower.conv1.weight) in the checkpoint",
                         dir);
    }
    osc_audio_enc *e = calloc(1, sizeof *e);
    if (!e) {
        osc_st_close(st);
        return osc_error(OSC_ERR_OOM, "out of host memory");
    }
    e->cfg = cfg;
    e->dev = dev;
    e->act = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    const int64_t D = cfg.d_model, M = cfg.n_mels, F = cfg.ffn_dim, O = cfg.output_dim;
    osc_status s = OSC_OK;
    {
        int64_t f1[3] = {D, M, 3}, s1[2] = {D, M * 3}, f2[3] = {D, D, 3}, s2[2] = {D, D * 3};
        s = load_w(e, st, pfx, "conv1.weight", 3, f1, 2, s1, &e->conv1_w);
        if (s == OSC_OK) s = load1(e, st, pfx, "conv1.bias", D, &e->conv1_b);
        if (s == OSC_OK) s = load_w(e, st, pfx, "conv2.weight", 3, f2, 2, s2, &e->conv2_w);
        if (s == OSC_OK) s = load1(e, st, pfx, "conv2.bias", D, &e->conv2_b);
    }
    if (s == OSC_OK) s = load1(e, st, pfx, "ln_post.weight", D, &e->ln_post_w);
    if (s == OSC_OK) s = load1(e, st, pfx, "ln_post.bias", D, &e->ln_post_b);
    if (s == OSC_OK) s = load2(e, st, pfx, "proj.weight", O, D, &e->proj_w);
    if (s == OSC_OK) s = load1(e, st, pfx, "proj.bias", O, &e->proj_b);
    if (s == OSC_OK && cfg.n_layers > 0) {
        e->layers = calloc((size_t)cfg.n_layers, sizeof *e->layers);
        if (!e->layers) s = osc_error(OSC_ERR_OOM, "out of host memory");
    }
    for (int l = 0; l < cfg.n_layers && s == OSC_OK; l++) {
        enc_layer *L = &e->layers[l];
        char lp[160];
        snprintf(lp, sizeof lp, "%slayers.%d.", pfx, l);
#define W1(f, n, a) if (s == OSC_OK) s = load1(e, st, lp, n, a, &L->f)
#define W2(f, n, a, b) if (s == OSC_OK) s = load2(e, st, lp, n, a, b, &L->f)
        W1(ln1_w, "self_attn_layer_norm.weight", D);
        W1(ln1_b, "self_attn_layer_norm.bias", D);
        W2(wq, "self_attn.q_proj.weight", D, D);
        W1(bq, "self_attn.q_proj.bias", D);
        W2(wk, "self_attn.k_proj.weight", D, D); /* k_proj has no bias */
        W2(wv, "self_attn.v_proj.weight", D, D);
        W1(bv, "self_attn.v_proj.bias", D);
        W2(wo, "self_attn.out_proj.weight", D, D);
        W1(bo, "self_attn.out_proj.bias", D);
        W1(ln2_w, "final_layer_norm.weight", D);
        W1(ln2_b, "final_layer_norm.bias", D);
        W2(fc1_w, "fc1.weight", F, D);
        W1(fc1_b, "fc1.bias", F);
        W2(fc2_w, "fc2.weight", D, F);
        W1(fc2_b, "fc2.bias", D);
#undef W1
#undef W2
    }
    osc_st_close(st);
    if (s != OSC_OK) {
        osc_audio_enc_free(e);
        return s;
    }
    osc_audio_enc_set_pass_frames(e, 0);
    *out = e;
    return OSC_OK;
}

void osc_audio_enc_free(osc_audio_enc *e) {
    if (!e) return;
    for (int i = 0; i < e->n_allocs; i++) osc_dev_free(e->dev, e->allocs[i]);
    free(e->allocs);
    free(e->layers);
    osc_arena_free(&e->arena);
    free(e->stage);
    free(e->cu);
    free(e);
}

void osc_audio_enc_set_pass_frames(osc_audio_enc *e, int frames) {
    const int C = 2 * e->cfg.n_window;
    if (frames <= 0) frames = e->dev == OSC_DEV_CPU ? 3000 : 15000; /* 30 s / 150 s at 100 frames/s */
    int chunks = (frames + C - 1) / C;
    if (chunks < 1) chunks = 1;
    /* passes must end on an even post-conv frame so that no pooling pair straddles two passes */
    const int n2full = (C - 1) / 2 + 1;
    if (n2full % 2 && chunks % 2) chunks++;
    e->pass_frames = chunks * C;
}

/* ---- scratch ----------------------------------------------------------------------------- */

/* Sinusoidal table of transformers' SinusoidsPositionEmbedding, all fp32 like torch:
 * inv[c] = exp(-c * ln(1e4) / (D/2 - 1)), pe[t, c] = sin(t * inv[c]), pe[t, D/2 + c] = cos(t * inv[c]).
 * Row r of the scratch table holds position r mod n2full (every chunk but the last of an audio is
 * full, and passes start on chunk boundaries). */
static osc_status fill_pe(osc_audio_enc *e, int64_t rows, int n2full) {
    const int D = e->cfg.d_model, half = D / 2;
    float *h = malloc((size_t)rows * D * sizeof(float));
    if (!h) return osc_error(OSC_ERR_OOM, "audio encoder: out of host memory for the position table");
    const float inc = (float)(log(10000.0) / (double)(half - 1 > 0 ? half - 1 : 1));
    for (int64_t r = 0; r < rows; r++) {
        float t = (float)(r % n2full);
        for (int c = 0; c < half; c++) {
            float inv = expf(-inc * (float)c);
            float a = t * inv;
            h[r * D + c] = sinf(a);
            h[r * D + half + c] = cosf(a);
        }
    }
    osc_status s = osc_tensor_upload_f32(&e->pe, h, rows * D);
    free(h);
    return s;
}

static osc_status ensure_scratch(osc_audio_enc *e, int chunks) {
    if (chunks <= e->sc_chunks) return OSC_OK;
    osc_arena_free(&e->arena);
    free(e->stage);
    free(e->cu);
    e->stage = NULL;
    e->cu = NULL;
    e->sc_chunks = 0;
    const osc_audio_enc_config *c = &e->cfg;
    const int C = 2 * c->n_window, n2full = (C - 1) / 2 + 1;
    const int64_t T = (int64_t)chunks * C, S = (int64_t)chunks * n2full, P = S / 2;
    const int64_t D = c->d_model, M = c->n_mels, F = c->ffn_dim, O = c->output_dim;
    const size_t es = osc_dtype_size(e->act);
    size_t bytes = es * (size_t)(T * M + T * 3 * M + T * D + S * 3 * D + 7 * S * D + S * F + S * D + 2 * P * D) +
                   4 * (size_t)P * O + 32 * 256;
    osc_status s = osc_arena_init(&e->arena, bytes, e->dev);
    if (s != OSC_OK) return osc_error_prefix(s, "audio encoder scratch for %lld frames", (long long)T);
    osc_arena *a = &e->arena;
    e->mel = osc_arena_2d(a, e->act, T, M);
    e->col1 = osc_arena_2d(a, e->act, T, 3 * M);
    e->h1 = osc_arena_2d(a, e->act, T, D);
    e->col2 = osc_arena_2d(a, e->act, S, 3 * D);
    e->x = osc_arena_2d(a, e->act, S, D);
    e->xn = osc_arena_2d(a, e->act, S, D);
    e->q = osc_arena_2d(a, e->act, S, D);
    e->k = osc_arena_2d(a, e->act, S, D);
    e->v = osc_arena_2d(a, e->act, S, D);
    e->att = osc_arena_2d(a, e->act, S, D);
    e->o = osc_arena_2d(a, e->act, S, D);
    e->f = osc_arena_2d(a, e->act, S, F);
    e->pe = osc_arena_2d(a, e->act, S, D);
    e->pooled = osc_arena_2d(a, e->act, P, D);
    e->pn = osc_arena_2d(a, e->act, P, D);
    e->y = osc_arena_2d(a, OSC_F32, P, O);
    if (!e->y.data) return OSC_ERR_OOM;
    e->stage = malloc((size_t)T * M * sizeof(float));
    e->cu = malloc(((size_t)chunks + 1) * sizeof(int32_t));
    if (!e->stage || !e->cu) return osc_error(OSC_ERR_OOM, "audio encoder: out of host memory (%lld frames)", (long long)T);
    OSC_TRY(fill_pe(e, S, n2full));
    e->sc_chunks = chunks;
    return OSC_OK;
}

/* ---- forward ----------------------------------------------------------------------------- */

static osc_tensor view3(const osc_tensor *t, int64_t n0, int64_t n1, int64_t n2) {
    int64_t ne[3] = {n0, n1, n2};
    return osc_tensor_make(t->data, t->dt, t->dev, 3, ne);
}
static osc_tensor rows(const osc_tensor *t, int64_t r0, int64_t n) { return osc_tensor_rows(t, r0, n); }

/* One pass over chunks [c0, c1) of an audio of L frames (chunk length C, the last one shorter);
 * writes its pooled tokens into out rows [tok0, tok0 + n). last: the pass holds the audio's end. */
static osc_status encode_pass(osc_audio_enc *e, const float *feat, int L, int c0, int c1, osc_tensor *out,
                              int64_t tok0, int64_t *n_tok) {
    const osc_audio_enc_config *c = &e->cfg;
    const int C = 2 * c->n_window;
    const int64_t D = c->d_model, M = c->n_mels, H = c->n_heads, hd = D / H;
    const int64_t f0 = (int64_t)c0 * C, f1 = (int64_t)c1 * C < L ? (int64_t)c1 * C : L, T = f1 - f0;
    /* features of the pass, time-major */
    for (int64_t m = 0; m < M; m++) {
        const float *src = feat + m * (int64_t)L + f0;
        for (int64_t t = 0; t < T; t++) e->stage[t * M + m] = src[t];
    }
    osc_tensor mel = rows(&e->mel, 0, T);
    OSC_TRY(osc_tensor_upload_f32(&mel, e->stage, T * M));
    /* conv1 + GELU, per chunk with zero padding at the chunk's edges */
    int64_t S = 0;
    for (int ch = c0; ch < c1; ch++) {
        int64_t a = (int64_t)(ch - c0) * C, n = (int64_t)ch * C + C <= L ? C : L - (int64_t)ch * C;
        osc_tensor src = rows(&mel, a, n), dst = rows(&e->col1, a, n);
        OSC_TRY(osc_op_im2col1d(&dst, &src, 3, 1, 1));
        e->cu[ch - c0] = (int32_t)S;
        S += (n - 1) / 2 + 1;
    }
    e->cu[c1 - c0] = (int32_t)S;
    osc_tensor col1 = rows(&e->col1, 0, T), h1 = rows(&e->h1, 0, T);
    OSC_TRY(osc_op_matmul(&h1, &col1, &e->conv1_w, &e->conv1_b));
    OSC_TRY(osc_op_gelu(&h1, &h1));
    /* conv2 (stride 2) + GELU */
    int64_t s_off = 0;
    for (int ch = c0; ch < c1; ch++) {
        int64_t a = (int64_t)(ch - c0) * C, n = (int64_t)ch * C + C <= L ? C : L - (int64_t)ch * C;
        int64_t n2 = (n - 1) / 2 + 1;
        osc_tensor src = rows(&e->h1, a, n), dst = rows(&e->col2, s_off, n2);
        OSC_TRY(osc_op_im2col1d(&dst, &src, 3, 2, 1));
        s_off += n2;
    }
    osc_tensor col2 = rows(&e->col2, 0, S), x = rows(&e->x, 0, S);
    OSC_TRY(osc_op_matmul(&x, &col2, &e->conv2_w, &e->conv2_b));
    OSC_TRY(osc_op_gelu(&x, &x));
    osc_tensor pe = rows(&e->pe, 0, S);
    OSC_TRY(osc_op_add(&x, &x, &pe));
    /* encoder layers */
    osc_tensor xn = rows(&e->xn, 0, S), q = rows(&e->q, 0, S), k = rows(&e->k, 0, S), v = rows(&e->v, 0, S);
    osc_tensor att = rows(&e->att, 0, S), o = rows(&e->o, 0, S), f = rows(&e->f, 0, S);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < c->n_layers; l++) {
        const enc_layer *Lw = &e->layers[l];
        OSC_TRY(osc_op_layernorm(&xn, &x, &Lw->ln1_w, &Lw->ln1_b, c->ln_eps));
        OSC_TRY(osc_op_matmul(&q, &xn, &Lw->wq, &Lw->bq));
        OSC_TRY(osc_op_matmul(&k, &xn, &Lw->wk, NULL));
        OSC_TRY(osc_op_matmul(&v, &xn, &Lw->wv, &Lw->bv));
        /* block-diagonal attention: each chunk attends to itself only (cu_seqlens of the reference) */
        {
            osc_tensor q3 = view3(&q, S, H, hd), k3 = view3(&k, S, H, hd), v3 = view3(&v, S, H, hd);
            osc_tensor a3 = view3(&att, S, H, hd);
            OSC_TRY(osc_op_attention_varlen(&a3, &q3, &k3, &v3, e->cu, c1 - c0, scale, 0));
        }
        OSC_TRY(osc_op_matmul(&o, &att, &Lw->wo, &Lw->bo));
        OSC_TRY(osc_op_add(&x, &x, &o));
        OSC_TRY(osc_op_layernorm(&xn, &x, &Lw->ln2_w, &Lw->ln2_b, c->ln_eps));
        OSC_TRY(osc_op_matmul(&f, &xn, &Lw->fc1_w, &Lw->fc1_b));
        OSC_TRY(osc_op_gelu(&f, &f));
        OSC_TRY(osc_op_matmul(&o, &f, &Lw->fc2_w, &Lw->fc2_b));
        OSC_TRY(osc_op_add(&x, &x, &o));
    }
    /* head: pool pairs (an odd last frame of the audio is dropped), ln_post, proj */
    const int64_t P = S / 2;
    *n_tok = P;
    if (P == 0) return OSC_OK;
    osc_tensor x2 = rows(&e->x, 0, 2 * P), pooled = rows(&e->pooled, 0, P), pn = rows(&e->pn, 0, P);
    OSC_TRY(osc_op_avgpool2_rows(&pooled, &x2));
    OSC_TRY(osc_op_layernorm(&pn, &pooled, &e->ln_post_w, &e->ln_post_b, c->ln_eps));
    osc_tensor dst = rows(out, tok0, P);
    if (out->dev == e->dev) {
        OSC_TRY(osc_op_matmul(&dst, &pn, &e->proj_w, &e->proj_b)); /* CUDA GEMMs write BF16 or F32 */
    } else {
        osc_tensor y = rows(&e->y, 0, P); /* F32 on the device, then to the host */
        OSC_TRY(osc_op_matmul(&y, &pn, &e->proj_w, &e->proj_b));
        OSC_TRY(osc_tensor_download_f32(dst.data, &y, P * c->output_dim));
    }
    return OSC_OK;
}

osc_status osc_audio_enc_encode(osc_audio_enc *e, const float *feat, int n_frames, osc_tensor *out,
                                osc_audio_enc_progress_fn progress, void *user) {
    const osc_audio_enc_config *c = &e->cfg;
    if (!feat || !out) return osc_error(OSC_ERR_INVALID_ARG, "audio encoder: NULL features or output");
    if (n_frames < 1 || n_frames > (1 << 24))
        return osc_error(OSC_ERR_INVALID_ARG, "audio encoder: %d mel frames (want 1 .. %d)", n_frames, 1 << 24);
    const int64_t n_tok = osc_audio_enc_n_tokens(n_frames);
    if (out->nd != 2 || out->ne[0] != n_tok || out->ne[1] != c->output_dim || !out->data)
        return osc_error(OSC_ERR_INVALID_ARG, "audio encoder: output must be [%lld, %d] for %d frames", (long long)n_tok,
                         c->output_dim, n_frames);
    if (out->dev == e->dev) {
        if (out->dt != OSC_F32 && !(e->dev == OSC_DEV_CUDA && out->dt == OSC_BF16))
            return osc_error(OSC_ERR_INVALID_ARG, "audio encoder: output dtype %s not supported", osc_dtype_name(out->dt));
    } else if (!(out->dev == OSC_DEV_CPU && out->dt == OSC_F32)) {
        return osc_error(OSC_ERR_INVALID_ARG, "audio encoder: output must be on the encoder's device or host float32");
    }
    const int C = 2 * c->n_window;
    const int n_chunks = (n_frames + C - 1) / C;
    const int per_pass = e->pass_frames / C;
    OSC_TRY(ensure_scratch(e, n_chunks < per_pass ? n_chunks : per_pass));
    int64_t tok = 0;
    for (int c0 = 0; c0 < n_chunks; c0 += per_pass) {
        int c1 = c0 + per_pass < n_chunks ? c0 + per_pass : n_chunks;
        int64_t nt = 0;
        osc_status s = encode_pass(e, feat, n_frames, c0, c1, out, tok, &nt);
        if (s != OSC_OK) return osc_error_prefix(s, "audio encoder");
        tok += nt;
        int64_t done = (int64_t)c1 * C < n_frames ? (int64_t)c1 * C : n_frames;
        if (progress && progress(user, done, n_frames)) {
            osc_device_sync(e->dev);
            return osc_error(OSC_ERR_CANCELLED, "audio encoder: cancelled");
        }
    }
    if (tok != n_tok)
        return osc_error(OSC_ERR_INVALID_ARG, "audio encoder: made %lld tokens, expected %lld", (long long)tok,
                         (long long)n_tok);
    return osc_device_sync(e->dev);
}

/* ---- random weights (benchmarks) ---------------------------------------------------------- */

static osc_status rand_w(osc_audio_enc *e, int64_t n0, int64_t n1, uint64_t seed, float lo, float hi, osc_tensor *out) {
    int64_t sh[2] = {n0, n1};
    osc_tensor w = osc_tensor_make(NULL, e->act, e->dev, n1 > 0 ? 2 : 1, sh);
    void *p;
    OSC_TRY(osc_dev_malloc(e->dev, osc_tensor_nbytes(&w), &p));
    osc_status s = track(e, p);
    if (s != OSC_OK) {
        osc_dev_free(e->dev, p);
        return s;
    }
    w.data = p;
    OSC_TRY(osc_op_fill_uniform(&w, seed, lo, hi));
    e->weight_bytes += osc_tensor_nbytes(&w);
    *out = w;
    return OSC_OK;
}

void osc_audio_enc_default_config(osc_audio_enc_config *c) {
    c->n_mels = 128;
    c->d_model = 1280;
    c->n_layers = 32;
    c->n_heads = 20;
    c->ffn_dim = 5120;
    c->n_window = 100;
    c->max_source_positions = 1500;
    c->output_dim = 3584;
    c->ln_eps = 1e-5f;
}

osc_status osc_audio_enc_new_random(const osc_audio_enc_config *cfg, osc_dev dev, uint64_t seed, osc_audio_enc **out) {
    *out = NULL;
    const osc_audio_enc_config *c = cfg;
    if (c->n_mels < 1 || c->d_model < 2 || c->n_heads < 1 || c->d_model % c->n_heads || c->n_layers < 0 ||
        c->ffn_dim < 1 || c->n_window < 1 || c->n_window > c->max_source_positions || c->output_dim < 1)
        return osc_error(OSC_ERR_INVALID_ARG, "random audio encoder: bad config");
    osc_audio_enc *e = calloc(1, sizeof *e);
    if (!e) return osc_error(OSC_ERR_OOM, "out of host memory");
    e->cfg = *c;
    e->dev = dev;
    e->act = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    const int64_t D = c->d_model, M = c->n_mels, F = c->ffn_dim, O = c->output_dim;
    uint64_t sd = seed * 1000003u;
    osc_status s = OSC_OK;
#define RW(dst, a, b, fan) if (s == OSC_OK) { float r_ = sqrtf(3.0f / (float)(fan)); s = rand_w(e, a, b, ++sd, -r_, r_, dst); }
#define RB(dst, a, lo, hi) if (s == OSC_OK) s = rand_w(e, a, 0, ++sd, lo, hi, dst)
    RW(&e->conv1_w, D, M * 3, M * 3);
    RB(&e->conv1_b, D, -0.1f, 0.1f);
    RW(&e->conv2_w, D, D * 3, D * 3);
    RB(&e->conv2_b, D, -0.1f, 0.1f);
    RB(&e->ln_post_w, D, 1.0f, 1.0f);
    RB(&e->ln_post_b, D, 0.0f, 0.0f);
    RW(&e->proj_w, O, D, D);
    RB(&e->proj_b, O, -0.1f, 0.1f);
    if (s == OSC_OK && c->n_layers > 0) {
        e->layers = calloc((size_t)c->n_layers, sizeof *e->layers);
        if (!e->layers) s = osc_error(OSC_ERR_OOM, "out of host memory");
    }
    for (int l = 0; l < c->n_layers && s == OSC_OK; l++) {
        enc_layer *L = &e->layers[l];
        RB(&L->ln1_w, D, 1.0f, 1.0f);
        RB(&L->ln1_b, D, 0.0f, 0.0f);
        RB(&L->ln2_w, D, 1.0f, 1.0f);
        RB(&L->ln2_b, D, 0.0f, 0.0f);
        RW(&L->wq, D, D, D);
        RB(&L->bq, D, -0.1f, 0.1f);
        RW(&L->wk, D, D, D);
        RW(&L->wv, D, D, D);
        RB(&L->bv, D, -0.1f, 0.1f);
        RW(&L->wo, D, D, D);
        RB(&L->bo, D, -0.1f, 0.1f);
        RW(&L->fc1_w, F, D, D);
        RB(&L->fc1_b, F, -0.1f, 0.1f);
        RW(&L->fc2_w, D, F, F);
        RB(&L->fc2_b, D, -0.1f, 0.1f);
    }
#undef RW
#undef RB
    if (s != OSC_OK) {
        osc_audio_enc_free(e);
        return s;
    }
    osc_audio_enc_set_pass_frames(e, 0);
    *out = e;
    return OSC_OK;
}
