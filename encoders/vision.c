/* The Qwen2.5-Omni / Qwen2.5-VL vision encoder, written once against kernels/ops.h. */
#include "vision.h"

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

typedef struct vis_block {
    osc_tensor norm1, norm2, wq, bq, wk, bk, wv, bv, wo, bo, wg, bg, wu, bu, wd, bd;
} vis_block;

struct osc_vision {
    osc_vision_config cfg;
    osc_dev dev;
    osc_dtype act;
    osc_tensor patch_w;           /* [C, patch_dim] */
    vis_block *blocks;
    osc_tensor ln_q, m0_w, m0_b, m2_w, m2_b;
    void **allocs;
    int n_allocs, cap_allocs;
    osc_rope rope;                /* 2D rotary as a 2-axis M-RoPE: axis 0 = patch row, 1 = column */
    osc_arena arena;              /* scratch of one encode, grown on demand */
    /* host scratch of one encode */
    int32_t *h_perm, *h_rev, *h_pos;
    int32_t *h_cu, *h_cu_full; /* segment offsets in patches (N <= 2^28) */
    float *h_pv;
    int64_t host_cap;             /* patches the host scratch holds */
};

/* ---- config -------------------------------------------------------------------------------- */

static int json_int(const cJSON *o, const char *k, int def, int *ok) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return def;
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble) {
        *ok = 0;
        return def;
    }
    return (int)v->valuedouble;
}

osc_status osc_vision_config_load(const char *dir, osc_vision_config *c) {
    char path[4096];
    osc_path_join(path, sizeof path, dir, "config.json");
    char *txt = NULL;
    size_t len = 0;
    OSC_TRY(osc_read_file(path, 4u << 20, &txt, &len));
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return osc_error(OSC_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *holder = root, *vc;
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(root, "thinker_config");
    if (cJSON_IsObject(th)) holder = th;
    vc = cJSON_GetObjectItemCaseSensitive(holder, "vision_config");
    if (!cJSON_IsObject(vc)) {
        cJSON_Delete(root);
        return osc_error(OSC_ERR_FORMAT, "%s: no vision_config (not a Qwen2.5-Omni or Qwen2.5-VL model)", path);
    }
    memset(c, 0, sizeof *c);
    int ok = 1;
    /* transformers 5.17 class defaults (Qwen2_5OmniVisionEncoderConfig / Qwen2_5_VLVisionConfig) */
    c->depth = json_int(vc, "depth", 32, &ok);
    c->hidden = json_int(vc, "hidden_size", 3584, &ok);
    c->n_heads = json_int(vc, "num_heads", 16, &ok);
    c->intermediate = json_int(vc, "intermediate_size", 3420, &ok);
    c->in_channels = json_int(vc, "in_channels", 3, &ok);
    c->patch = json_int(vc, "patch_size", 14, &ok);
    c->temporal_patch = json_int(vc, "temporal_patch_size", 2, &ok);
    c->merge = json_int(vc, "spatial_merge_size", 2, &ok);
    c->window = json_int(vc, "window_size", 112, &ok);
    c->out_hidden = json_int(vc, "out_hidden_size", 3584, &ok);
    c->tokens_per_second = json_int(vc, "tokens_per_second", th ? 25 : 4, &ok);
    c->rope_theta = 10000.0;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(vc, "rope_parameters");
    if (cJSON_IsObject(rp)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rp, "rope_theta");
        if (cJSON_IsNumber(t)) c->rope_theta = t->valuedouble;
    }
    c->eps = 1e-6f;
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(vc, "fullatt_block_indexes");
    if (fa && !cJSON_IsNull(fa)) {
        if (!cJSON_IsArray(fa) || cJSON_GetArraySize(fa) > OSC_VISION_MAX_FULLATT) {
            ok = 0;
        } else {
            for (const cJSON *e = fa->child; e; e = e->next) {
                if (!cJSON_IsNumber(e)) ok = 0;
                else c->fullatt[c->n_fullatt++] = (int)e->valuedouble;
            }
        }
    } else {
        static const int def[] = {7, 15, 23, 31};
        c->n_fullatt = 4;
        memcpy(c->fullatt, def, sizeof def);
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(vc, "hidden_act");
    int silu = !act || (cJSON_IsString(act) && strcmp(act->valuestring, "silu") == 0);
    cJSON_Delete(root);
    if (!ok) return osc_error(OSC_ERR_FORMAT, "%s: vision_config has a field of the wrong type", path);
    if (!silu) return osc_error(OSC_ERR_UNSUPPORTED, "%s: vision_config.hidden_act must be silu (Qwen2.5 vision)", path);
    if (c->depth <= 0 || c->depth > 1024 || c->hidden <= 0 || c->hidden > 65536 || c->n_heads <= 0 ||
        c->hidden % c->n_heads || c->intermediate <= 0 || c->intermediate > 1 << 20 || c->in_channels <= 0 ||
        c->in_channels > 16 || c->patch <= 0 || c->patch > 64 || c->temporal_patch <= 0 || c->temporal_patch > 16 ||
        c->merge <= 0 || c->merge > 8 || c->out_hidden <= 0 || c->out_hidden > 65536 ||
        c->window < c->patch * c->merge || !(c->rope_theta > 1.0) || c->tokens_per_second < 0)
        return osc_error(OSC_ERR_FORMAT, "%s: vision_config has out-of-range sizes", path);
    c->head_dim = c->hidden / c->n_heads;
    if (c->head_dim % 4 || c->head_dim / 2 > OSC_ROPE_MAX_HALF)
        return osc_error(OSC_ERR_FORMAT, "%s: vision head_dim %d must be a multiple of 4 (2D rotary)", path, c->head_dim);
    for (int i = 0; i < c->n_fullatt; i++)
        if (c->fullatt[i] < 0 || c->fullatt[i] >= c->depth)
            return osc_error(OSC_ERR_FORMAT, "%s: fullatt_block_indexes entry %d outside [0, %d)", path, c->fullatt[i], c->depth);
    c->patch_dim = c->in_channels * c->temporal_patch * c->patch * c->patch;
    return OSC_OK;
}

/* ---- weights ------------------------------------------------------------------------------- */

static osc_status track(osc_vision *v, void *p) {
    if (v->n_allocs == v->cap_allocs) {
        int nc = v->cap_allocs ? v->cap_allocs * 2 : 64;
        void **na = realloc(v->allocs, (size_t)nc * sizeof *na);
        if (!na) return osc_error(OSC_ERR_OOM, "out of host memory");
        v->allocs = na;
        v->cap_allocs = nc;
    }
    v->allocs[v->n_allocs++] = p;
    return OSC_OK;
}

/* Upload n floats as a tensor of shape [n0, n1] (n1 = 0: 1-D) in the model's dtype. */
static osc_status upload(osc_vision *v, const float *src, int64_t n0, int64_t n1, osc_tensor *out) {
    int64_t ne[2] = {n0, n1};
    osc_tensor w = osc_tensor_make(NULL, v->act, v->dev, n1 ? 2 : 1, ne);
    void *p;
    OSC_TRY(osc_dev_malloc(v->dev, osc_tensor_nbytes(&w), &p));
    osc_status s = track(v, p);
    if (s != OSC_OK) {
        osc_dev_free(v->dev, p);
        return s;
    }
    w.data = p;
    OSC_TRY(osc_tensor_upload_f32(&w, src, n1 ? n0 * n1 : n0));
    *out = w;
    return OSC_OK;
}

typedef struct wload {
    osc_vision *v;
    const osc_st *st;
    const char *prefix;
    float *buf;          /* host staging, large enough for any weight */
    uint64_t rng;        /* st == NULL: random weights from this state (osc_vision_new_random) */
} wload;

/* Deterministic random weights for osc_vision_new_random: U(-a, a) with a = sqrt(3 / fan_in) for
 * matrices, 1 for norm weights, U(-0.02, 0.02) for biases. */
static void random_fill(wload *L, const char *name, int nd, const int64_t *shape, int64_t n) {
    int64_t fan = 1;
    for (int i = 1; i < nd; i++) fan *= shape[i];
    int is_norm = nd == 1 && strstr(name, "norm") != NULL;
    int is_ln = nd == 1 && strstr(name, "ln_q") != NULL;
    float a = nd >= 2 ? sqrtf(3.0f / (float)fan) : 0.02f;
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = (L->rng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)((double)(z >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
        L->buf[i] = (is_norm || is_ln) ? 1.0f : a * u;
    }
}

/* Read prefix+name with exactly shape [nd] into rows [r0, r0+n0) of ... the whole tensor when
 * take_rows == 0; upload rows [r0, r0 + rows) as [rows, cols] (cols 0: 1-D). */
static osc_status load_part(wload *L, const char *name, int nd, const int64_t *shape, int64_t r0, int64_t rows,
                            int64_t cols, osc_tensor *out) {
    char full[320];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    if (!L->st) {
        random_fill(L, full, nd, shape, n);
    } else {
        const osc_st_tensor *t;
        OSC_TRY(osc_st_expect(L->st, full, nd, shape, &t));
        OSC_TRY(osc_st_read_f32(t, L->buf, n));
    }
    int64_t stride = cols ? cols : 1;
    return upload(L->v, L->buf + r0 * stride, rows, cols, out);
}
static osc_status load2(wload *L, const char *name, int64_t a, int64_t b, osc_tensor *out) {
    int64_t sh[2] = {a, b};
    return load_part(L, name, 2, sh, 0, a, b, out);
}
static osc_status load1(wload *L, const char *name, int64_t a, osc_tensor *out) {
    return load_part(L, name, 1, &a, 0, a, 0, out);
}

static const char *find_prefix(const osc_st *st) {
    static const char *const cands[] = {"thinker.visual.", "visual.", "model.visual."};
    char name[128];
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        snprintf(name, sizeof name, "%spatch_embed.proj.weight", cands[i]);
        if (osc_st_get(st, name)) return cands[i];
    }
    return NULL;
}

static osc_status load_weights(osc_vision *v, const osc_st *st, const char *prefix, const char *dir, uint64_t seed) {
    const osc_vision_config *c = &v->cfg;
    const int64_t C = c->hidden, F = c->intermediate, M = (int64_t)C * c->merge * c->merge, O = c->out_hidden;
    int64_t big = 3 * C * C;
    if (F * C > big) big = F * C;
    if (M * M > big) big = M * M;
    if (M * O > big) big = M * O;
    if (C * c->patch_dim > big) big = C * c->patch_dim;
    wload L = {v, st, prefix, malloc((size_t)big * sizeof(float)), seed};
    if (!L.buf) return osc_error(OSC_ERR_OOM, "vision: cannot stage weights (%lld floats)", (long long)big);
    osc_status s;
    char nm[160];
    /* Conv3d [C, in, Tp, P, P] with stride = kernel: a [C, patch_dim] matrix in (c, t, y, x) order */
    {
        int64_t sh[5] = {C, c->in_channels, c->temporal_patch, c->patch, c->patch};
        if ((s = load_part(&L, "patch_embed.proj.weight", 5, sh, 0, C, c->patch_dim, &v->patch_w))) goto done;
    }
    v->blocks = calloc((size_t)c->depth, sizeof *v->blocks);
    if (!v->blocks) {
        s = osc_error(OSC_ERR_OOM, "out of host memory");
        goto done;
    }
    for (int l = 0; l < c->depth; l++) {
        vis_block *B = &v->blocks[l];
#define NM(suffix) (snprintf(nm, sizeof nm, "blocks.%d.%s", l, suffix), nm)
#define T(x) do { if ((s = (x))) goto done; } while (0)
        T(load1(&L, NM("norm1.weight"), C, &B->norm1));
        T(load1(&L, NM("norm2.weight"), C, &B->norm2));
        char full[320];
        snprintf(full, sizeof full, "%sblocks.%d.attn.qkv.weight", prefix, l);
        if (st && osc_st_get(st, full)) { /* fused [3C, C]: rows q, k, v */
            int64_t sh[2] = {3 * C, C}, sb = 3 * C;
            T(load_part(&L, NM("attn.qkv.weight"), 2, sh, 0, C, C, &B->wq));
            T(load_part(&L, NM("attn.qkv.weight"), 2, sh, C, C, C, &B->wk));
            T(load_part(&L, NM("attn.qkv.weight"), 2, sh, 2 * C, C, C, &B->wv));
            T(load_part(&L, NM("attn.qkv.bias"), 1, &sb, 0, C, 0, &B->bq));
            T(load_part(&L, NM("attn.qkv.bias"), 1, &sb, C, C, 0, &B->bk));
            T(load_part(&L, NM("attn.qkv.bias"), 1, &sb, 2 * C, C, 0, &B->bv));
        } else {
            T(load2(&L, NM("attn.q.weight"), C, C, &B->wq));
            T(load1(&L, NM("attn.q.bias"), C, &B->bq));
            T(load2(&L, NM("attn.k.weight"), C, C, &B->wk));
            T(load1(&L, NM("attn.k.bias"), C, &B->bk));
            T(load2(&L, NM("attn.v.weight"), C, C, &B->wv));
            T(load1(&L, NM("attn.v.bias"), C, &B->bv));
        }
        T(load2(&L, NM("attn.proj.weight"), C, C, &B->wo));
        T(load1(&L, NM("attn.proj.bias"), C, &B->bo));
        T(load2(&L, NM("mlp.gate_proj.weight"), F, C, &B->wg));
        T(load1(&L, NM("mlp.gate_proj.bias"), F, &B->bg));
        T(load2(&L, NM("mlp.up_proj.weight"), F, C, &B->wu));
        T(load1(&L, NM("mlp.up_proj.bias"), F, &B->bu));
        T(load2(&L, NM("mlp.down_proj.weight"), C, F, &B->wd));
        T(load1(&L, NM("mlp.down_proj.bias"), C, &B->bd));
#undef NM
    }
    T(load1(&L, "merger.ln_q.weight", C, &v->ln_q));
    T(load2(&L, "merger.mlp.0.weight", M, M, &v->m0_w));
    T(load1(&L, "merger.mlp.0.bias", M, &v->m0_b));
    T(load2(&L, "merger.mlp.2.weight", O, M, &v->m2_w));
    T(load1(&L, "merger.mlp.2.bias", O, &v->m2_b));
#undef T
    s = OSC_OK;
done:
    free(L.buf);
    if (s != OSC_OK) osc_error_prefix(s, "%s: vision encoder", dir);
    return s;
}

static void rope_init(osc_vision *v);

osc_status osc_vision_load(const char *dir, osc_dev dev, osc_vision **out) {
    *out = NULL;
    osc_vision *v = calloc(1, sizeof *v);
    if (!v) return osc_error(OSC_ERR_OOM, "out of host memory");
    v->dev = dev;
    v->act = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    osc_st *st = NULL;
    osc_status s = osc_vision_config_load(dir, &v->cfg);
    if (s == OSC_OK) s = osc_st_open(dir, &st);
    if (s == OSC_OK) {
        const char *prefix = find_prefix(st);
        if (!prefix)
            s = osc_error(OSC_ERR_FORMAT, "%s: no vision encoder weights (thinker.visual.*, visual.* or model.visual.*)", dir);
        else
            s = load_weights(v, st, prefix, dir, 0);
    }
    osc_st_close(st);
    if (s == OSC_OK) rope_init(v);
    if (s != OSC_OK) {
        osc_vision_free(v);
        return s;
    }
    *out = v;
    return OSC_OK;
}

void osc_vision_default_config(osc_vision_config *c) {
    memset(c, 0, sizeof *c);
    c->depth = 32;
    c->hidden = 1280;
    c->n_heads = 16;
    c->head_dim = 80;
    c->intermediate = 3420;
    c->in_channels = 3;
    c->patch = 14;
    c->temporal_patch = 2;
    c->merge = 2;
    c->window = 112;
    c->out_hidden = 3584;
    c->n_fullatt = 4;
    c->fullatt[0] = 7, c->fullatt[1] = 15, c->fullatt[2] = 23, c->fullatt[3] = 31;
    c->rope_theta = 10000.0;
    c->eps = 1e-6f;
    c->tokens_per_second = 25;
    c->patch_dim = 3 * 2 * 14 * 14;
}

osc_status osc_vision_new_random(const osc_vision_config *cfg, osc_dev dev, uint64_t seed, osc_vision **out) {
    *out = NULL;
    const osc_vision_config *c = cfg;
    if (c->depth <= 0 || c->hidden <= 0 || c->n_heads <= 0 || c->hidden % c->n_heads || c->hidden / c->n_heads != c->head_dim ||
        c->head_dim % 4 || c->head_dim / 2 > OSC_ROPE_MAX_HALF || c->intermediate <= 0 || c->merge <= 0 || c->patch <= 0 ||
        c->temporal_patch <= 0 || c->in_channels <= 0 || c->out_hidden <= 0 ||
        c->patch_dim != c->in_channels * c->temporal_patch * c->patch * c->patch || c->n_fullatt < 0 ||
        c->n_fullatt > OSC_VISION_MAX_FULLATT || c->window < c->patch * c->merge)
        return osc_error(OSC_ERR_INVALID_ARG, "random vision encoder: bad config");
    osc_vision *v = calloc(1, sizeof *v);
    if (!v) return osc_error(OSC_ERR_OOM, "out of host memory");
    v->cfg = *c;
    v->dev = dev;
    v->act = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    osc_status s = load_weights(v, NULL, "", "random", seed * 0x2545F4914F6CDD1Dull + 1);
    if (s == OSC_OK) rope_init(v);
    if (s != OSC_OK) {
        osc_vision_free(v);
        return s;
    }
    *out = v;
    return OSC_OK;
}

static void rope_init(osc_vision *v) {
    {
        /* 2D rotary: head_dim/4 frequencies theta^(-2k/(head_dim/2)), used twice: the first copy
         * (frequency slots [0, q)) turns with the patch row, the second ([q, 2q)) with the column;
         * dims d and d + head_dim/2 share a slot (rotate_half). */
        const osc_vision_config *c = &v->cfg;
        int q = c->head_dim / 4, spatial = c->head_dim / 2;
        v->rope.head_dim = c->head_dim;
        v->rope.mrope_section[0] = q;
        v->rope.mrope_section[1] = q;
        v->rope.mrope_section[2] = 0;
        v->rope.attn_factor = 1.0f;
        for (int k = 0; k < q; k++) {
            float e = (float)(2 * k) / (float)spatial;
            float f = 1.0f / (float)pow(c->rope_theta, (double)e);
            v->rope.inv_freq[k] = f;
            v->rope.inv_freq[q + k] = f;
        }
    }
}

void osc_vision_free(osc_vision *v) {
    if (!v) return;
    for (int i = 0; i < v->n_allocs; i++) osc_dev_free(v->dev, v->allocs[i]);
    free(v->allocs);
    free(v->blocks);
    osc_arena_free(&v->arena);
    free(v->h_perm);
    free(v->h_rev);
    free(v->h_pos);
    free(v->h_cu);
    free(v->h_cu_full);
    free(v->h_pv);
    free(v);
}

const osc_vision_config *osc_vision_config_of(const osc_vision *v) { return &v->cfg; }
osc_dev osc_vision_device(const osc_vision *v) { return v->dev; }

int64_t osc_vision_tokens(const osc_vision_config *c, const int32_t g[3]) {
    if (g[0] <= 0 || g[1] <= 0 || g[2] <= 0 || g[1] % c->merge || g[2] % c->merge) return -1;
    if ((int64_t)g[0] * g[1] * g[2] > ((int64_t)1 << 31)) return -1;
    return (int64_t)g[0] * g[1] * g[2] / ((int64_t)c->merge * c->merge);
}

/* ---- encode -------------------------------------------------------------------------------- */

static osc_status host_reserve(osc_vision *v, int64_t N) {
    if (N <= v->host_cap) return OSC_OK;
    const int mu = v->cfg.merge * v->cfg.merge;
    free(v->h_perm); free(v->h_rev); free(v->h_pos); free(v->h_cu); free(v->h_cu_full); free(v->h_pv);
    v->h_perm = malloc((size_t)(N / mu + 1) * sizeof(int32_t));
    v->h_rev = malloc((size_t)(N / mu + 1) * sizeof(int32_t));
    v->h_pos = malloc((size_t)3 * N * sizeof(int32_t));
    v->h_cu = malloc((size_t)(N / mu + 2) * sizeof(int32_t));
    v->h_cu_full = malloc((size_t)(N + 2) * sizeof(int32_t));
    v->h_pv = malloc((size_t)N * v->cfg.patch_dim * sizeof(float));
    v->host_cap = 0;
    if (!v->h_perm || !v->h_rev || !v->h_pos || !v->h_cu || !v->h_cu_full || !v->h_pv)
        return osc_error(OSC_ERR_OOM, "vision: out of host memory for %lld patches", (long long)N);
    v->host_cap = N;
    return OSC_OK;
}

/* Scratch tensors of one encode of N patches. */
typedef struct vis_scratch {
    osc_tensor pv, x, xn, q, k, v, att, tmp, gate, up, pos, m1, y, out, rev;
} vis_scratch;

static size_t scratch_bytes(const osc_vision_config *c, int64_t N, size_t el) {
    const int64_t C = c->hidden, F = c->intermediate, mu = (int64_t)c->merge * c->merge;
    size_t b = 0;
    b += (size_t)N * c->patch_dim * el;           /* pv */
    b += (size_t)N * C * el * 7;                  /* x xn q k v att tmp */
    b += (size_t)N * F * el * 2;                  /* gate up */
    b += (size_t)N * 3 * 4;                       /* pos */
    b += (size_t)(N / mu) * C * mu * el;          /* m1 */
    b += (size_t)(N / mu) * c->out_hidden * el * 2; /* y out */
    b += (size_t)(N / mu) * 4;                    /* rev */
    return b + 16 * 256;                          /* alignment slack */
}

static osc_status scratch_make(osc_vision *v, int64_t N, vis_scratch *s) {
    const osc_vision_config *c = &v->cfg;
    size_t el = osc_dtype_size(v->act), need = scratch_bytes(c, N, el);
    if (need > v->arena.cap) {
        osc_arena_free(&v->arena);
        OSC_TRY(osc_arena_init(&v->arena, need, v->dev));
    }
    osc_arena_reset(&v->arena);
    const int64_t C = c->hidden, F = c->intermediate, mu = (int64_t)c->merge * c->merge, T = N / mu;
    osc_arena *a = &v->arena;
    s->pv = osc_arena_2d(a, v->act, N, c->patch_dim);
    s->x = osc_arena_2d(a, v->act, N, C);
    s->xn = osc_arena_2d(a, v->act, N, C);
    s->q = osc_arena_2d(a, v->act, N, C);
    s->k = osc_arena_2d(a, v->act, N, C);
    s->v = osc_arena_2d(a, v->act, N, C);
    s->att = osc_arena_2d(a, v->act, N, C);
    s->tmp = osc_arena_2d(a, v->act, N, C);
    s->gate = osc_arena_2d(a, v->act, N, F);
    s->up = osc_arena_2d(a, v->act, N, F);
    s->pos = osc_arena_2d(a, OSC_I32, 3, N);
    s->m1 = osc_arena_2d(a, v->act, T, C * mu);
    s->y = osc_arena_2d(a, v->act, T, c->out_hidden);
    s->out = osc_arena_2d(a, v->act, T, c->out_hidden);
    s->rev = osc_tensor_1d(osc_arena_alloc(a, (size_t)T * 4), OSC_I32, v->dev, T);
    const osc_tensor *all[] = {&s->pv, &s->x, &s->xn, &s->q, &s->k, &s->v, &s->att, &s->tmp,
                               &s->gate, &s->up, &s->pos, &s->m1, &s->y, &s->out, &s->rev};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!all[i]->data) return osc_error(OSC_ERR_OOM, "vision: scratch arena too small (sizing bug)");
    return OSC_OK;
}

/* Window order of the merge units and the attention segments (transformers'
 * get_vision_window_index and get_vision_cu_seqlens). perm[T]: unit index in window order;
 * cu[n_cu+1] window segment bounds in patches; cu_full[n_full+1] one segment per temporal slice. */
static void window_index(const osc_vision_config *c, const int32_t (*g)[3], int n_items, int32_t *perm, int32_t *cu,
                         int *n_cu, int32_t *cu_full, int *n_full) {
    const int ws = c->window / c->merge / c->patch, mu = c->merge * c->merge;
    int64_t np = 0, off = 0;
    int nc = 0, nf = 0;
    cu[0] = 0;
    cu_full[0] = 0;
    for (int it = 0; it < n_items; it++) {
        const int gt = g[it][0], gh = g[it][1] / c->merge, gw = g[it][2] / c->merge;
        const int nh = (gh + ws - gh % ws) / ws, nw = (gw + ws - gw % ws) / ws; /* HF pads a full window when divisible */
        for (int t = 0; t < gt; t++) {
            for (int a = 0; a < nh; a++)
                for (int b = 0; b < nw; b++) {
                    int64_t cnt = 0;
                    for (int i = a * ws; i < (a + 1) * ws && i < gh; i++)
                        for (int j = b * ws; j < (b + 1) * ws && j < gw; j++) {
                            perm[np++] = (int32_t)(off + ((int64_t)t * gh + i) * gw + j);
                            cnt++;
                        }
                    if (cnt) { /* unique_consecutive drops empty windows */
                        cu[nc + 1] = cu[nc] + (int32_t)(cnt * mu);
                        nc++;
                    }
                }
            cu_full[nf + 1] = cu_full[nf] + gh * gw * mu;
            nf++;
        }
        off += (int64_t)gt * gh * gw;
    }
    *n_cu = nc;
    *n_full = nf;
}

static int is_full(const osc_vision_config *c, int l) {
    for (int i = 0; i < c->n_fullatt; i++)
        if (c->fullatt[i] == l) return 1;
    return 0;
}

osc_status osc_vision_encode(osc_vision *v, const float *pixel_values, int64_t n_patches, const int32_t (*grid)[3],
                             int n_items, osc_tensor *out) {
    const osc_vision_config *c = &v->cfg;
    if (!pixel_values || !grid || n_items <= 0 || !out)
        return osc_error(OSC_ERR_INVALID_ARG, "vision encode: no input");
    memset(out, 0, sizeof *out);
    int64_t N = 0;
    for (int i = 0; i < n_items; i++) {
        int64_t t = osc_vision_tokens(c, grid[i]);
        if (t < 0)
            return osc_error(OSC_ERR_INVALID_ARG, "vision encode: bad grid [%d,%d,%d] (h and w must be positive multiples of %d)",
                             grid[i][0], grid[i][1], grid[i][2], c->merge);
        N += (int64_t)grid[i][0] * grid[i][1] * grid[i][2];
        if (N > ((int64_t)1 << 28)) return osc_error(OSC_ERR_INVALID_ARG, "vision encode: too many patches");
    }
    if (N != n_patches)
        return osc_error(OSC_ERR_INVALID_ARG, "vision encode: %lld pixel rows but the grids need %lld", (long long)n_patches,
                         (long long)N);
    const int mu = c->merge * c->merge;
    const int64_t T = N / mu, C = c->hidden, H = c->n_heads, hd = c->head_dim, PD = c->patch_dim;
    OSC_TRY(host_reserve(v, N));
    int n_cu = 0, n_full = 0;
    window_index(c, grid, n_items, v->h_perm, v->h_cu, &n_cu, v->h_cu_full, &n_full);
    /* pixel rows and rotary positions in window order; rev undoes the order after the merger */
    int32_t *ph = v->h_pos, *pw = v->h_pos + N, *p2 = v->h_pos + 2 * N;
    {
        /* patch row / column of every merge unit (in the natural order) */
        int64_t u0 = 0;
        int32_t *uh = v->h_rev, *uw = p2; /* temporaries: unit -> (h, w) of its first patch (p2 reused) */
        for (int it = 0; it < n_items; it++) {
            const int gt = grid[it][0], gh = grid[it][1] / c->merge, gw = grid[it][2] / c->merge;
            for (int t = 0; t < gt; t++)
                for (int i = 0; i < gh; i++)
                    for (int j = 0; j < gw; j++, u0++) {
                        uh[u0] = i * c->merge;
                        uw[u0] = j * c->merge;
                    }
        }
        for (int64_t r = 0; r < T; r++) {
            int64_t u = v->h_perm[r];
            memcpy(v->h_pv + r * mu * PD, pixel_values + u * mu * PD, (size_t)mu * PD * sizeof(float));
            for (int m = 0; m < mu; m++) {
                ph[r * mu + m] = uh[u] + m / c->merge;
                pw[r * mu + m] = uw[u] + m % c->merge;
            }
        }
        for (int64_t r = 0; r < T; r++) v->h_rev[v->h_perm[r]] = (int32_t)r;
        memset(p2, 0, (size_t)N * sizeof(int32_t));
    }
    vis_scratch s;
    OSC_TRY(scratch_make(v, N, &s));
    OSC_TRY(osc_tensor_upload_f32(&s.pv, v->h_pv, N * PD));
    OSC_TRY(osc_tensor_upload_i32(&s.pos, v->h_pos, 3 * N));
    OSC_TRY(osc_tensor_upload_i32(&s.rev, v->h_rev, T));

    OSC_TRY(osc_op_matmul(&s.x, &s.pv, &v->patch_w, NULL));
    int64_t ne3[3] = {N, H, hd};
    osc_tensor q3 = osc_tensor_make(s.q.data, v->act, v->dev, 3, ne3), k3 = osc_tensor_make(s.k.data, v->act, v->dev, 3, ne3);
    osc_tensor v3 = osc_tensor_make(s.v.data, v->act, v->dev, 3, ne3), a3 = osc_tensor_make(s.att.data, v->act, v->dev, 3, ne3);
    const float scale = 1.0f / sqrtf((float)hd);
    for (int l = 0; l < c->depth; l++) {
        const vis_block *B = &v->blocks[l];
        OSC_TRY(osc_op_rmsnorm(&s.xn, &s.x, &B->norm1, c->eps));
        OSC_TRY(osc_op_matmul(&s.q, &s.xn, &B->wq, &B->bq));
        OSC_TRY(osc_op_matmul(&s.k, &s.xn, &B->wk, &B->bk));
        OSC_TRY(osc_op_matmul(&s.v, &s.xn, &B->wv, &B->bv));
        OSC_TRY(osc_op_rope(&q3, &s.pos, &v->rope));
        OSC_TRY(osc_op_rope(&k3, &s.pos, &v->rope));
        if (is_full(c, l)) OSC_TRY(osc_op_attention_varlen(&a3, &q3, &k3, &v3, v->h_cu_full, n_full, scale, 0));
        else OSC_TRY(osc_op_attention_varlen(&a3, &q3, &k3, &v3, v->h_cu, n_cu, scale, 0)); /* one launch for all windows */
        OSC_TRY(osc_op_matmul(&s.tmp, &s.att, &B->wo, &B->bo));
        OSC_TRY(osc_op_add(&s.x, &s.x, &s.tmp));
        OSC_TRY(osc_op_rmsnorm(&s.xn, &s.x, &B->norm2, c->eps));
        OSC_TRY(osc_op_matmul(&s.gate, &s.xn, &B->wg, &B->bg));
        OSC_TRY(osc_op_matmul(&s.up, &s.xn, &B->wu, &B->bu));
        OSC_TRY(osc_op_silu_mul(&s.gate, &s.gate, &s.up));
        OSC_TRY(osc_op_matmul(&s.tmp, &s.gate, &B->wd, &B->bd));
        OSC_TRY(osc_op_add(&s.x, &s.x, &s.tmp));
    }
    /* merger: ln_q per patch, 2x2 blocks concatenated, Linear, GELU, Linear */
    OSC_TRY(osc_op_rmsnorm(&s.xn, &s.x, &v->ln_q, c->eps));
    osc_tensor xm = osc_tensor_2d(s.xn.data, v->act, v->dev, T, C * mu);
    OSC_TRY(osc_op_matmul(&s.m1, &xm, &v->m0_w, &v->m0_b));
    OSC_TRY(osc_op_gelu(&s.m1, &s.m1));
    OSC_TRY(osc_op_matmul(&s.y, &s.m1, &v->m2_w, &v->m2_b));
    OSC_TRY(osc_op_embed(&s.out, &s.y, &s.rev)); /* out[i] = y[rev[i]]: back to (item, t, i, j) order */
    *out = s.out;
    return OSC_OK;
}
