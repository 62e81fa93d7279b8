/* Decoder weights and forward pass, written once against kernels/ops.h (CPU or CUDA by where
 * the tensors live). */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/device.h"
#include "../core/safetensors.h"
#include "../kernels/ops.h"
#include "../kernels/rope.h"
#include "../kvcache/kv_batch.h"
#include "gguf_load.h"
#ifdef OSC_HAVE_CUDA
#include "../kernels/cuda/kvquant_launch.h"
#include "../kernels/cuda/launch.h"
#endif

typedef struct osc_layer_w {
    osc_tensor attn_norm, wq, bq, wk, bk, wv, bv, wo, q_norm, k_norm;
    osc_tensor mlp_norm, w_gate, w_up, w_down;
    /* CUDA: [wq; wk; wv], [bq; bk; bv] and [w_gate; w_up] in one buffer each (the separate
     * tensors above are views into them), so a one-row step runs one GEMV for each; data NULL
     * when not fused (CPU, OSC_FUSE_W=0) */
    osc_tensor wqkv, bqkv, wgu;
} osc_layer_w;

struct osc_llm {
    osc_llm_config cfg;
    osc_dev dev;
    osc_dtype act;
    osc_tensor embed, norm, lm_head;
    osc_layer_w *layers;
    void **allocs;
    int n_allocs, cap_allocs;
    size_t weight_bytes;
    osc_rope rope;
    int v_rotated;
    char desc[256];
};

struct osc_llm_ctx {
    osc_llm *m;
    int max_tokens;
    osc_arena arena;
    /* scratch, sized for max_tokens rows */
    osc_tensor x, xn, q, k, v, att, o, gate, up, ids, pos, last, logits;
    float *logits_host; /* unused on CPU (logits land in the caller's buffer directly) */
    osc_llm_probe_fn probe;
    void *probe_user;
    /* batched decode attention: per-sequence K/V views and lengths, max_tokens entries */
    osc_tensor *bk, *bv;
    const osc_tensor **bkp, **bvp;
    int *blen;
#ifdef OSC_HAVE_CUDA
    struct dgraph *dg; /* CUDA-graph decode steps (NULL until the first eligible step) */
#endif
};

void osc_llm_ctx_set_probe(osc_llm_ctx *c, osc_llm_probe_fn fn, void *user) {
    c->probe = fn;
    c->probe_user = user;
}

const osc_llm_config *osc_llm_config_of(const osc_llm *m) { return &m->cfg; }
osc_dev osc_llm_device(const osc_llm *m) { return m->dev; }
osc_dtype osc_llm_act_dtype(const osc_llm *m) { return m->act; }
size_t osc_llm_weight_bytes(const osc_llm *m) { return m->weight_bytes; }
const char *osc_llm_describe(const osc_llm *m) { return m->desc; }
int osc_llm_v_rotated(const osc_llm *m) { return m->v_rotated; }

osc_status osc_llm_fold_v_rotation(osc_llm *m) {
    if (m->v_rotated) return OSC_OK;
    const osc_llm_config *c = &m->cfg;
    const int64_t D = c->hidden_size, hd = c->head_dim;
    const int64_t kd = (int64_t)c->n_kv_heads * hd, qd = (int64_t)c->n_heads * hd;
    float *wv = malloc((size_t)(kd * D + kd + D * qd) * sizeof(float));
    if (!wv) return osc_error(OSC_ERR_OOM, "value rotation: out of host memory");
    float *bv = wv + kd * D, *wo = bv + kd;
    osc_status s = OSC_OK;
    /* weights move through host float32: exact on the CPU path, one bf16 rounding on CUDA */
    for (int l = 0; l < c->n_layers && s == OSC_OK; l++) {
        osc_layer_w *L = &m->layers[l];
        s = osc_tensor_download_f32(wv, &L->wv, kd * D);
        if (s == OSC_OK && c->attn_bias) s = osc_tensor_download_f32(bv, &L->bv, kd);
        if (s == OSC_OK) s = osc_tensor_download_f32(wo, &L->wo, D * qd);
        if (s == OSC_OK) s = osc_kv_fold_v_hadamard(wv, c->attn_bias ? bv : NULL, wo, c->n_kv_heads, c->n_heads, (int)hd, (int)D);
        if (s == OSC_OK) s = osc_tensor_upload_f32(&L->wv, wv, kd * D);
        if (s == OSC_OK && c->attn_bias) s = osc_tensor_upload_f32(&L->bv, bv, kd);
        if (s == OSC_OK) s = osc_tensor_upload_f32(&L->wo, wo, D * qd);
    }
    free(wv);
    if (s == OSC_OK) m->v_rotated = 1;
    return s;
}

static osc_status track(osc_llm *m, void *p) {
    if (m->n_allocs == m->cap_allocs) {
        int nc = m->cap_allocs ? m->cap_allocs * 2 : 64;
        void **na = realloc(m->allocs, (size_t)nc * sizeof *na);
        if (!na) return osc_error(OSC_ERR_OOM, "out of host memory");
        m->allocs = na;
        m->cap_allocs = nc;
    }
    m->allocs[m->n_allocs++] = p;
    return OSC_OK;
}

/* device memory for tensor t (its shape and dtype), owned by the model: freed with it */
static osc_status alloc_w(osc_llm *m, osc_tensor *t) {
    void *p;
    OSC_TRY(osc_dev_malloc(m->dev, osc_tensor_nbytes(t), &p));
    osc_status s = track(m, p);
    if (s != OSC_OK) {
        osc_dev_free(m->dev, p);
        return s;
    }
    t->data = p;
    return OSC_OK;
}

/* free a tracked allocation */
static void untrack_free(osc_llm *m, void *p) {
    for (int i = 0; i < m->n_allocs; i++)
        if (m->allocs[i] == p) {
            m->allocs[i] = m->allocs[--m->n_allocs];
            break;
        }
    osc_dev_free(m->dev, p);
}

/* Move n tensors of equal row length (or 1-D) into one new buffer, rows stacked in order, and
 * make each a view into it: *fused covers them all. */
static osc_status fuse_rows(osc_llm *m, osc_tensor **parts, int n, osc_tensor *fused) {
    int64_t rows = 0;
    const int nd = parts[0]->nd;
    for (int i = 0; i < n; i++) rows += parts[i]->ne[0];
    int64_t shape[2] = {rows, nd == 2 ? parts[0]->ne[1] : 1};
    osc_tensor f = osc_tensor_make(NULL, m->act, m->dev, nd, shape);
    OSC_TRY(alloc_w(m, &f));
    char *p = f.data;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const size_t b = osc_tensor_nbytes(parts[i]);
        OSC_TRY(osc_copy_bytes(p + off, m->dev, parts[i]->data, m->dev, b));
        untrack_free(m, parts[i]->data);
        parts[i]->data = p + off;
        off += b;
    }
    *fused = f;
    return OSC_OK;
}

/* CUDA: stack q/k/v (weights and biases) and gate/up of every layer (see osc_layer_w) */
static osc_status fuse_weights(osc_llm *m) {
    const char *e = getenv("OSC_FUSE_W");
    if (m->dev == OSC_DEV_CPU || (e && !strcmp(e, "0"))) return OSC_OK;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        osc_layer_w *L = &m->layers[l];
        osc_tensor *qkv[3] = {&L->wq, &L->wk, &L->wv}, *b[3] = {&L->bq, &L->bk, &L->bv}, *gu[2] = {&L->w_gate, &L->w_up};
        OSC_TRY(fuse_rows(m, qkv, 3, &L->wqkv));
        if (m->cfg.attn_bias) OSC_TRY(fuse_rows(m, b, 3, &L->bqkv));
        OSC_TRY(fuse_rows(m, gu, 2, &L->wgu));
    }
    return OSC_OK;
}

/* Load one weight (checked against the shape the config implies) onto the model's device. */
static osc_status load_w(osc_llm *m, const osc_wsrc *src, const char *name, int nd, const int64_t *shape,
                         osc_tensor *out) {
    if (!src->has(src->ctx, name)) return osc_error(OSC_ERR_FORMAT, "%s: missing tensor %s", src->what, name);
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    osc_tensor w = osc_tensor_make(NULL, m->act, m->dev, nd, shape);
    OSC_TRY(alloc_w(m, &w));
    void *p = w.data;
    if (m->dev == OSC_DEV_CPU) {
        OSC_TRY(src->read_f32(src->ctx, name, nd, shape, p));
    } else {
        /* stage on the host: raw bf16 when the source has it, else float32 converted on upload */
        void *tmp = malloc((size_t)n * 4);
        if (!tmp) return osc_error(OSC_ERR_OOM, "cannot stage tensor %s (%lld elements)", name, (long long)n);
        osc_status s = src->read_bf16 ? src->read_bf16(src->ctx, name, nd, shape, tmp) : OSC_ERR_UNSUPPORTED;
        if (s == OSC_OK) {
            s = osc_copy_bytes(p, m->dev, tmp, OSC_DEV_CPU, (size_t)n * 2);
        } else if (s == OSC_ERR_UNSUPPORTED) {
            osc_clear_error();
            s = src->read_f32(src->ctx, name, nd, shape, tmp);
            if (s == OSC_OK) s = osc_tensor_upload_f32(&w, tmp, n);
        }
        free(tmp);
        OSC_TRY(s);
    }
    m->weight_bytes += osc_tensor_nbytes(&w);
    *out = w;
    return OSC_OK;
}

static osc_status load_w1(osc_llm *m, const osc_wsrc *src, const char *name, int64_t n0, osc_tensor *out) {
    return load_w(m, src, name, 1, &n0, out);
}
static osc_status load_w2(osc_llm *m, const osc_wsrc *src, const char *name, int64_t n0, int64_t n1, osc_tensor *out) {
    int64_t s[2] = {n0, n1};
    return load_w(m, src, name, 2, s, out);
}

/* Checkpoints name the decoder differently: plain LMs "model.", the Omni thinker
 * "thinker.model.", transformers-5 VL "model.language_model.". */
static const char *find_prefix(const osc_st *st, const char **lm_head) {
    static const struct { const char *model, *head; } cands[] = {
        {"model.", "lm_head.weight"},
        {"thinker.model.", "thinker.lm_head.weight"},
        {"model.language_model.", "lm_head.weight"},
        {"language_model.model.", "language_model.lm_head.weight"},
    };
    char name[256];
    for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
        snprintf(name, sizeof name, "%sembed_tokens.weight", cands[i].model);
        if (osc_st_get(st, name)) {
            *lm_head = cands[i].head;
            return cands[i].model;
        }
    }
    return NULL;
}

/* The safetensors source: HF names under the checkpoint's decoder prefix. */
typedef struct st_src {
    const osc_st *st;
    const char *prefix, *head;
} st_src;

static const osc_st_tensor *st_find(const st_src *c, const char *name) {
    char full[320];
    if (strcmp(name, "lm_head.weight") == 0) return osc_st_get(c->st, c->head);
    snprintf(full, sizeof full, "%s%s", c->prefix, name);
    return osc_st_get(c->st, full);
}
static int st_has(void *ctx, const char *name) { return st_find(ctx, name) != NULL; }
static osc_status st_read_f32(void *ctx, const char *name, int nd, const int64_t *shape, float *dst) {
    const st_src *c = ctx;
    const osc_st_tensor *t = st_find(c, name);
    OSC_TRY(osc_st_expect(c->st, t ? t->name : name, nd, shape, &t));
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    return osc_st_read_f32(t, dst, n);
}
static osc_status st_read_bf16(void *ctx, const char *name, int nd, const int64_t *shape, uint16_t *dst) {
    const st_src *c = ctx;
    const osc_st_tensor *t = st_find(c, name);
    OSC_TRY(osc_st_expect(c->st, t ? t->name : name, nd, shape, &t));
    if (t->dt != OSC_BF16) return OSC_ERR_UNSUPPORTED;
    memcpy(dst, t->data, t->nbytes);
    return OSC_OK;
}

osc_status osc_llm_load(const char *dir, osc_dev dev, osc_llm **out) {
    *out = NULL;
    if (osc_gguf_is_file(dir)) return osc_llm_load_gguf(dir, dev, out); /* one .gguf file */
    osc_llm_config cfg;
    osc_st *st = NULL;
    osc_status s = osc_config_load(dir, &cfg);
    if (s == OSC_OK) s = osc_st_open(dir, &st);
    if (s != OSC_OK) return s;
    st_src c = {st, NULL, NULL};
    c.prefix = find_prefix(st, &c.head);
    if (!c.prefix) {
        osc_st_close(st);
        return osc_error(OSC_ERR_FORMAT, "%s: no token embedding (model.embed_tokens.weight or a known prefix) in the checkpoint", dir);
    }
    osc_wsrc src = {&c, dir, st_has, st_read_f32, st_read_bf16};
    s = osc_llm_load_src(&cfg, &src, dev, out);
    osc_st_close(st);
    return s;
}

static osc_status init_rope(osc_llm *m) {
    const osc_llm_config *c = &m->cfg;
    return osc_rope_init(&m->rope, c->head_dim, c->rope_theta, c->rope_type == OSC_ROPE_LLAMA3 ? 1 : 0, c->rope_factor,
                         c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_orig_max_pos,
                         c->rope_type == OSC_ROPE_MROPE ? c->mrope_section : NULL);
}

static void describe(osc_llm *m, const char *what) {
    const osc_llm_config *c = &m->cfg;
    snprintf(m->desc, sizeof m->desc, "%s%s: %d layers, hidden %d, heads %d/%d x %d, vocab %d, %.1f MiB of %s weights on %s",
             c->model_type, what, c->n_layers, c->hidden_size, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
             m->weight_bytes / 1048576.0, m->act == OSC_F32 ? "f32" : "bf16", m->dev == OSC_DEV_CPU ? "cpu" : "cuda");
}

osc_status osc_llm_load_src(const osc_llm_config *cfg, const osc_wsrc *src, osc_dev dev, osc_llm **out) {
    *out = NULL;
    OSC_TRY(osc_llm_config_validate(cfg, src->what));
    osc_llm *m = calloc(1, sizeof *m);
    if (!m) return osc_error(OSC_ERR_OOM, "out of host memory");
    m->dev = dev;
    m->act = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    m->cfg = *cfg;
    osc_status s;
    const osc_llm_config *c = &m->cfg;
    const int64_t D = c->hidden_size, F = c->intermediate_size, hd = c->head_dim;
    const int64_t qd = (int64_t)c->n_heads * hd, kd = (int64_t)c->n_kv_heads * hd;
    char nm[320];
#define W2(field, suffix, a, b) do { snprintf(nm, sizeof nm, "%s%s", lp, suffix); s = load_w2(m, src, nm, a, b, &L->field); if (s) goto fail; } while (0)
#define W1(field, suffix, a) do { snprintf(nm, sizeof nm, "%s%s", lp, suffix); s = load_w1(m, src, nm, a, &L->field); if (s) goto fail; } while (0)
    if ((s = load_w2(m, src, "embed_tokens.weight", c->vocab_size, D, &m->embed))) goto fail;
    if ((s = load_w1(m, src, "norm.weight", D, &m->norm))) goto fail;
    if (c->tie_embeddings) {
        m->lm_head = m->embed;
    } else if (src->has(src->ctx, "lm_head.weight")) {
        if ((s = load_w2(m, src, "lm_head.weight", c->vocab_size, D, &m->lm_head))) goto fail;
    } else {
        /* Some Omni-3B exports drop the untied head; the embedding is then the head. */
        osc_log(OSC_LOG_WARN, "%s: no output head; using the token embedding as the output head", src->what);
        m->lm_head = m->embed;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        s = osc_error(OSC_ERR_OOM, "out of host memory");
        goto fail;
    }
    for (int l = 0; l < c->n_layers; l++) {
        osc_layer_w *L = &m->layers[l];
        char lp[128];
        snprintf(lp, sizeof lp, "layers.%d.", l);
        W1(attn_norm, "input_layernorm.weight", D);
        W2(wq, "self_attn.q_proj.weight", qd, D);
        W2(wk, "self_attn.k_proj.weight", kd, D);
        W2(wv, "self_attn.v_proj.weight", kd, D);
        W2(wo, "self_attn.o_proj.weight", D, qd);
        if (c->attn_bias) {
            W1(bq, "self_attn.q_proj.bias", qd);
            W1(bk, "self_attn.k_proj.bias", kd);
            W1(bv, "self_attn.v_proj.bias", kd);
        }
        if (c->qk_norm) {
            W1(q_norm, "self_attn.q_norm.weight", hd);
            W1(k_norm, "self_attn.k_norm.weight", hd);
        }
        W1(mlp_norm, "post_attention_layernorm.weight", D);
        W2(w_gate, "mlp.gate_proj.weight", F, D);
        W2(w_up, "mlp.up_proj.weight", F, D);
        W2(w_down, "mlp.down_proj.weight", D, F);
    }
#undef W1
#undef W2
    if ((s = fuse_weights(m))) goto fail;
    s = init_rope(m);
    if (s != OSC_OK) {
        osc_error_prefix(s, "%s: config", src->what);
        goto fail;
    }
    describe(m, "");
    *out = m;
    return OSC_OK;
fail:
    osc_llm_free(m);
    return s;
}

/* One weight tensor filled on its device by osc_op_fill_uniform(lo, hi). */
static osc_status rand_w(osc_llm *m, int nd, const int64_t *shape, uint64_t seed, float lo, float hi, osc_tensor *out) {
    osc_tensor w = osc_tensor_make(NULL, m->act, m->dev, nd, shape);
    OSC_TRY(alloc_w(m, &w));
    OSC_TRY(osc_op_fill_uniform(&w, seed, lo, hi));
    m->weight_bytes += osc_tensor_nbytes(&w);
    *out = w;
    return OSC_OK;
}

osc_status osc_llm_new_random(const osc_llm_config *cfg, osc_dev dev, uint64_t seed, osc_llm **out) {
    *out = NULL;
    OSC_TRY(osc_llm_config_validate(cfg, "random model"));
    osc_llm *m = calloc(1, sizeof *m);
    if (!m) return osc_error(OSC_ERR_OOM, "out of host memory");
    m->dev = dev;
    m->act = dev == OSC_DEV_CPU ? OSC_F32 : OSC_BF16;
    m->cfg = *cfg;
    const osc_llm_config *c = &m->cfg;
    const int64_t D = c->hidden_size, F = c->intermediate_size, hd = c->head_dim;
    const int64_t qd = (int64_t)c->n_heads * hd, kd = (int64_t)c->n_kv_heads * hd;
    uint64_t sd = seed * 1000003u;
    osc_status s;
    int64_t sh[2];
#define R2(dst, a, b, fan) do { sh[0] = a; sh[1] = b; float r_ = sqrtf(3.0f / (float)(fan)); \
        if ((s = rand_w(m, 2, sh, ++sd, -r_, r_, dst))) goto fail; } while (0)
#define R1(dst, a, lo, hi) do { sh[0] = a; if ((s = rand_w(m, 1, sh, ++sd, lo, hi, dst))) goto fail; } while (0)
    R2(&m->embed, c->vocab_size, D, 3);
    R1(&m->norm, D, 1.0f, 1.0f);
    if (c->tie_embeddings) m->lm_head = m->embed;
    else R2(&m->lm_head, c->vocab_size, D, D);
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) {
        s = osc_error(OSC_ERR_OOM, "out of host memory");
        goto fail;
    }
    for (int l = 0; l < c->n_layers; l++) {
        osc_layer_w *L = &m->layers[l];
        R1(&L->attn_norm, D, 1.0f, 1.0f);
        R1(&L->mlp_norm, D, 1.0f, 1.0f);
        R2(&L->wq, qd, D, D);
        R2(&L->wk, kd, D, D);
        R2(&L->wv, kd, D, D);
        R2(&L->wo, D, qd, qd);
        if (c->attn_bias) {
            R1(&L->bq, qd, -0.1f, 0.1f);
            R1(&L->bk, kd, -0.1f, 0.1f);
            R1(&L->bv, kd, -0.1f, 0.1f);
        }
        if (c->qk_norm) {
            R1(&L->q_norm, hd, 1.0f, 1.0f);
            R1(&L->k_norm, hd, 1.0f, 1.0f);
        }
        R2(&L->w_gate, F, D, D);
        R2(&L->w_up, F, D, D);
        R2(&L->w_down, D, F, F);
    }
#undef R1
#undef R2
    if ((s = fuse_weights(m))) goto fail;
    s = init_rope(m);
    if (s != OSC_OK) goto fail;
    describe(m, " (random weights)");
    *out = m;
    return OSC_OK;
fail:
    osc_llm_free(m);
    return s;
}

void osc_llm_free(osc_llm *m) {
    if (!m) return;
    for (int i = 0; i < m->n_allocs; i++) osc_dev_free(m->dev, m->allocs[i]);
    free(m->allocs);
    free(m->layers);
    free(m);
}

osc_status osc_llm_kv_new(const osc_llm *m, const char *mode, int n_ctx, osc_kv **out) {
    osc_kv_params p = {mode, m->cfg.n_layers, m->cfg.n_kv_heads, m->cfg.head_dim, n_ctx, m->dev, m->act, 0};
    return osc_kv_new(&p, out);
}

osc_status osc_llm_ctx_new(osc_llm *m, int max_tokens, osc_llm_ctx **out) {
    *out = NULL;
    if (max_tokens <= 0) return osc_error(OSC_ERR_INVALID_ARG, "forward context: max_tokens %d", max_tokens);
    const osc_llm_config *c = &m->cfg;
    osc_llm_ctx *x = calloc(1, sizeof *x);
    if (!x) return osc_error(OSC_ERR_OOM, "out of host memory");
    x->m = m;
    x->max_tokens = max_tokens;
    int64_t N = max_tokens, D = c->hidden_size, F = c->intermediate_size;
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kd = (int64_t)c->n_kv_heads * c->head_dim;
    size_t es = osc_dtype_size(m->act);
    size_t bytes = (size_t)N * es * (size_t)(3 * D + 2 * qd + 2 * kd + 2 * F) + (size_t)N * 4 * 4 +
                   (size_t)N * es * D + (size_t)N * 4 * c->vocab_size + 16 * 256;
    osc_status s = osc_arena_init(&x->arena, bytes, m->dev);
    if (s != OSC_OK) {
        free(x);
        return osc_error_prefix(s, "forward scratch for %d tokens", max_tokens);
    }
    osc_arena *a = &x->arena;
    x->x = osc_arena_2d(a, m->act, N, D);
    x->xn = osc_arena_2d(a, m->act, N, D);
    x->o = osc_arena_2d(a, m->act, N, D);
    x->q = osc_arena_2d(a, m->act, N, qd);
    x->att = osc_arena_2d(a, m->act, N, qd);
    x->k = osc_arena_2d(a, m->act, N, kd);
    x->v = osc_arena_2d(a, m->act, N, kd);
    x->gate = osc_arena_2d(a, m->act, N, F);
    x->up = osc_arena_2d(a, m->act, N, F);
    x->ids = osc_arena_2d(a, OSC_I32, 1, N);
    x->pos = osc_arena_2d(a, OSC_I32, 3, N);
    x->last = osc_arena_2d(a, m->act, N, D);
    x->logits = osc_arena_2d(a, OSC_F32, N, c->vocab_size);
    x->bk = calloc((size_t)N, sizeof *x->bk);
    x->bv = calloc((size_t)N, sizeof *x->bv);
    x->bkp = calloc((size_t)N, sizeof *x->bkp);
    x->bvp = calloc((size_t)N, sizeof *x->bvp);
    x->blen = calloc((size_t)N, sizeof *x->blen);
    if (!x->logits.data || !x->bk || !x->bv || !x->bkp || !x->bvp || !x->blen) {
        osc_llm_ctx_free(x);
        return OSC_ERR_OOM;
    }
    *out = x;
    return OSC_OK;
}

int osc_llm_ctx_max_tokens(const osc_llm_ctx *c) { return c->max_tokens; }

#ifdef OSC_HAVE_CUDA
static void dgraph_free(struct dgraph *g);
#endif

void osc_llm_ctx_free(osc_llm_ctx *c) {
    if (!c) return;
#ifdef OSC_HAVE_CUDA
    dgraph_free(c->dg);
#endif
    free(c->bk), free(c->bv), free(c->bkp), free(c->bvp), free(c->blen);
    osc_arena_free(&c->arena);
    free(c);
}

static osc_tensor view3(const osc_tensor *t, int64_t n0, int64_t n1, int64_t n2) {
    int64_t ne[3] = {n0, n1, n2};
    return osc_tensor_make(t->data, t->dt, t->dev, 3, ne);
}
static osc_tensor rows2(const osc_tensor *t, int64_t r0, int64_t n) { return osc_tensor_rows(t, r0, n); }

/* 1 when the context's q and gate buffers hold a fused one-row step's outputs: q | k | v in
 * q's buffer, gate | up in gate's (llm_ctx buffers are max_tokens rows) */
static int fuse_room(const osc_llm *m, const osc_llm_ctx *c) {
    const int64_t qd = (int64_t)m->cfg.n_heads * m->cfg.head_dim, kd = (int64_t)m->cfg.n_kv_heads * m->cfg.head_dim;
    return c->max_tokens >= 2 && (int64_t)(c->max_tokens - 1) * qd >= 2 * kd;
}

/* The per-layer work around attention, shared by forward_chunk and the graph decode step. Rows
 * are the N token rows of x / xn / q / k / v / att / o / g / u (views of the context buffers). */
/* attention inputs: q, k, v of layer L from x (RMSNorm, projections, Qwen3 q/k norms, RoPE) */
/* fused: one row (N == 1) whose q buffer has room for q, k and v back to back: one GEMV over
 * [wq; wk; wv], q/k/v become views of its output, one RoPE launch for the q and k heads.
 * posT NULL: no RoPE (the graph step rotates and appends to the cache in one launch). */
static osc_status layer_qkv(const osc_llm *m, const osc_layer_w *L, osc_tensor *x, osc_tensor *xn, osc_tensor *q,
                            osc_tensor *k, osc_tensor *v, const osc_tensor *posT, int64_t N, int fused, int normed) {
    const osc_llm_config *cf = &m->cfg;
    const int64_t hd = cf->head_dim;
    const int Hq = cf->n_heads, Hkv = cf->n_kv_heads;
    if (!normed) OSC_TRY(osc_op_rmsnorm(xn, x, &L->attn_norm, cf->rms_eps)); /* else the last layer did it */
    fused = fused && N == 1 && L->wqkv.data && (!cf->attn_bias || L->bqkv.data);
    if (fused) {
        const int64_t qd = (int64_t)Hq * hd, kd = (int64_t)Hkv * hd;
        const size_t es = osc_dtype_size(q->dt);
        osc_tensor out = osc_tensor_2d(q->data, q->dt, q->dev, 1, qd + 2 * kd);
        OSC_TRY(osc_op_matmul(&out, xn, &L->wqkv, cf->attn_bias ? &L->bqkv : NULL));
        *k = osc_tensor_2d((char *)q->data + (size_t)qd * es, q->dt, q->dev, 1, kd);
        *v = osc_tensor_2d((char *)q->data + (size_t)(qd + kd) * es, q->dt, q->dev, 1, kd);
    } else {
        OSC_TRY(osc_op_matmul(q, xn, &L->wq, cf->attn_bias ? &L->bq : NULL));
        OSC_TRY(osc_op_matmul(k, xn, &L->wk, cf->attn_bias ? &L->bk : NULL));
        OSC_TRY(osc_op_matmul(v, xn, &L->wv, cf->attn_bias ? &L->bv : NULL));
    }
    if (cf->qk_norm) {
        osc_tensor qh = osc_tensor_2d(q->data, q->dt, q->dev, N * Hq, hd);
        osc_tensor kh = osc_tensor_2d(k->data, k->dt, k->dev, N * Hkv, hd);
        OSC_TRY(osc_op_rmsnorm(&qh, &qh, &L->q_norm, cf->rms_eps));
        OSC_TRY(osc_op_rmsnorm(&kh, &kh, &L->k_norm, cf->rms_eps));
    }
    if (!posT) return OSC_OK; /* the caller applies RoPE */
    if (fused) { /* q and k heads are adjacent: one launch */
        osc_tensor qk3 = view3(q, 1, Hq + Hkv, hd);
        return osc_op_rope(&qk3, posT, &m->rope);
    }
    osc_tensor q3 = view3(q, N, Hq, hd), k3 = view3(k, N, Hkv, hd);
    OSC_TRY(osc_op_rope(&q3, posT, &m->rope));
    return osc_op_rope(&k3, posT, &m->rope);
}

/* after attention: x += att W_o; x += MLP(RMSNorm(x)) (SwiGLU) */
/* Each residual add runs with the norm that follows it (osc_op_add_rmsnorm): the MLP norm, and
 * next_norm (the next layer's attention norm, into xn) when not NULL. The gate/up products and
 * SwiGLU are one op (one GEMV over the stacked [w_gate; w_up] for a few rows on CUDA). */
static osc_status layer_out_mlp(const osc_llm *m, const osc_layer_w *L, osc_tensor *x, osc_tensor *xn, osc_tensor *att,
                                osc_tensor *o, osc_tensor *g, osc_tensor *u, const osc_tensor *next_norm) {
    OSC_TRY(osc_op_matmul(o, att, &L->wo, NULL));
    OSC_TRY(osc_op_add_rmsnorm(x, o, xn, &L->mlp_norm, m->cfg.rms_eps));
    OSC_TRY(osc_op_matmul_glu(g, u, xn, &L->w_gate, &L->w_up));
    OSC_TRY(osc_op_matmul(o, g, &L->w_down, NULL));
    return next_norm ? osc_op_add_rmsnorm(x, o, xn, next_norm, m->cfg.rms_eps) : osc_op_add(x, x, o);
}

/* One forward over at most max_tokens rows. */
#define OSC_PROBE_MAX_SEQ 256

/* Rows [base, base+N) of the batch: replace the embeddings of its multimodal rows, one copy per
 * run of consecutive rows. */
static osc_status scatter_mm(osc_llm *m, osc_tensor *x, const osc_llm_batch *b, int base, int N) {
    const osc_tensor *e = b->mm_embeds;
    const int64_t D = m->cfg.hidden_size;
    if (e->nd != 2 || e->ne[0] < b->n_mm || e->ne[1] != D)
        return osc_error(OSC_ERR_INVALID_ARG, "forward: multimodal embeddings must be [%d, %lld]", b->n_mm, (long long)D);
    for (int j = 0; j < b->n_mm;) {
        int r = b->mm_rows[j];
        int n = 1;
        while (j + n < b->n_mm && b->mm_rows[j + n] == r + n) n++;
        int lo = r < base ? base : r, hi = r + n > base + N ? base + N : r + n;
        if (lo < hi) {
            osc_tensor dst = osc_tensor_rows(x, lo - base, hi - lo);
            osc_tensor src = osc_tensor_rows(e, j + (lo - r), hi - lo);
            if (e->dev == OSC_DEV_CPU && m->dev != OSC_DEV_CPU) {
                if (e->dt != OSC_F32) return osc_error(OSC_ERR_INVALID_ARG, "forward: host multimodal embeddings must be float32");
                OSC_TRY(osc_tensor_upload_f32(&dst, src.data, (int64_t)(hi - lo) * D));
            } else {
                OSC_TRY(osc_op_convert(&dst, &src));
            }
        }
        j += n;
    }
    return OSC_OK;
}

#ifdef OSC_HAVE_CUDA
/* ---- the decode step as a CUDA graph ------------------------------------------------------------
 * A decode step of B caches on the GPU, one token each, is the same ~15 launches per layer every
 * time; only the token ids, positions and cache lengths change. This path keeps those in device
 * memory and advances them on the device at the end of each step (positions and lengths + 1;
 * ids <- the step's greedy picks), so a step that continues from the previous one uploads nothing
 * but the ids the host sampled (nothing at all when it took the device's greedy picks); anything
 * else (new batch, jumps) re-uploads the whole step state. It stores K/V through a device table of
 * row addresses (uploaded only when it changes) and runs a batched decode attention with a split
 * count that does not depend on the lengths, so the whole step (embedding, layers, final norm,
 * head, argmax) is captured once per batch size, cache kind and mode (greedy ids / logits) and
 * replayed. Two cache kinds:
 *   plain (bf16): the table holds each layer's K/V base, the attention reads lens1 rows;
 *   quantised block modes (kivi, rot, oscar): the table holds each residual window moved back by
 *     the packed count, and a device table of the packed parts (kvquant_launch.h) goes up when a
 *     cache's packed part changed. A step whose store would flush a full window runs eagerly
 *     (forward_chunk); the next one replays the same graph with the new tables.
 * A batch size runs eagerly the first time it is seen (warms cuBLASLt's algorithm cache) and is
 * captured the second time. OSC_CUDA_GRAPHS=0 turns it off. */
#define DG_MAX_B 256

enum { DG_PLAIN = 0, DG_BLOCK = 1 };

struct dgraph {
    int32_t *dstep;                /* device: ids [DG_MAX_B] | pos [3 * DG_MAX_B] | lens1 [DG_MAX_B] */
    int32_t hstep[5 * DG_MAX_B];   /* host mirror of dstep (what the device holds now) */
    int32_t want[5 * DG_MAX_B];    /* the step state a new step needs */
    long uploads, id_uploads;      /* full step-state uploads / ids-only uploads */
    void **dtab;                   /* device: [layers][2][DG_MAX_B] K / V row bases */
    void **htab;                   /* host mirror of what dtab holds */
    float *dpart;                  /* device: attention partials for the largest split plan */
    size_t part_floats;
    /* block caches, allocated at their first step: */
    void *dseq;                    /* device: [layers][B] packed-part table of the last upload */
    unsigned char *hseq, *wseq;    /* host: mirror of dseq / the table this step needs */
    size_t seq_bytes;              /* bytes of one layer's table at DG_MAX_B */
    void *bpart;                   /* device: partials for the largest split plan */
    struct osc_kvq_seq *tseq;      /* host scratch [layers][DG_MAX_B] */
    void **twin;                   /* host scratch [layers][2][DG_MAX_B] window bases */
    int hseq_B;                    /* batch size the mirror was built for (0: none) */
    int bits, rotate;              /* the block mode of the current step */
    int bkey[2][DG_MAX_B + 1];     /* the block mode a block graph was made for: 2 bits + rotate + 1 */
    unsigned char warm[2][2][DG_MAX_B + 1];
    osc_cuda_graph *g[2][2][DG_MAX_B + 1]; /* [kind][greedy][B] */
    int failed;                    /* capture failed once: stay eager */
    int captured;
    long replayed, eager;
};

static void dgraph_free(struct dgraph *g) {
    if (!g) return;
    for (int k = 0; k < 2; k++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b <= DG_MAX_B; b++) osc_cuda_graph_free(g->g[k][a][b]);
    osc_cuda_free(g->dstep);
    osc_cuda_free(g->dtab);
    osc_cuda_free(g->dpart);
    osc_cuda_free(g->dseq);
    osc_cuda_free(g->bpart);
    free(g->htab);
    free(g->hseq);
    free(g->wseq);
    free(g->tseq);
    free(g->twin);
    free(g);
}

static int dgraph_enabled(void) {
    const char *e = getenv("OSC_CUDA_GRAPHS");
    return !(e && !strcmp(e, "0"));
}

static osc_status dgraph_get(osc_llm *m, osc_llm_ctx *c, struct dgraph **out) {
    if (c->dg) {
        *out = c->dg;
        return OSC_OK;
    }
    const osc_llm_config *cf = &m->cfg;
    struct dgraph *g = calloc(1, sizeof *g);
    if (!g) return osc_error(OSC_ERR_OOM, "out of host memory");
    size_t nt = (size_t)cf->n_layers * 2 * DG_MAX_B;
    size_t pf = 0;
    for (int b = 1; b <= DG_MAX_B; b++) {
        size_t f = osc_cuda_decode_tab_part_floats(b, cf->n_heads, cf->n_kv_heads, cf->head_dim,
                                                   osc_cuda_decode_tab_splits(b, cf->n_kv_heads, cf->head_dim));
        if (f > pf) pf = f;
    }
    g->part_floats = pf;
    g->htab = calloc(nt, sizeof *g->htab);
    osc_status s = g->htab ? OSC_OK : osc_error(OSC_ERR_OOM, "out of host memory");
    if (s == OSC_OK) s = osc_cuda_malloc((void **)&g->dstep, sizeof g->hstep);
    if (s == OSC_OK) s = osc_cuda_malloc((void **)&g->dtab, nt * sizeof(void *));
    if (s == OSC_OK) s = osc_cuda_malloc((void **)&g->dpart, pf * sizeof(float));
    if (s == OSC_OK) s = osc_cuda_memcpy_h2d(g->dtab, g->htab, nt * sizeof(void *)); /* all NULL */
    if (s != OSC_OK) {
        dgraph_free(g);
        return osc_error_prefix(s, "decode graph buffers");
    }
    c->dg = g;
    *out = g;
    return OSC_OK;
}

/* the block-cache buffers of g, at the first step over such caches */
static osc_status dgraph_block_buffers(const osc_llm *m, struct dgraph *g) {
    if (g->dseq) return OSC_OK;
    const osc_llm_config *cf = &m->cfg;
    const int L = cf->n_layers;
    size_t pb = 0;
    for (int b = 1; b <= DG_MAX_B; b++) {
        for (int bits = 2; bits <= 4; bits += 2) { /* the plan depends on the kernel: both modes */
            const int ns = osc_cuda_kv_graph_splits(b, cf->n_kv_heads, (int)cf->head_dim, bits);
            size_t x = osc_cuda_kv_graph_part_bytes(b, cf->n_heads, cf->n_kv_heads, cf->head_dim, ns);
            if (x > pb) pb = x;
        }
    }
    g->seq_bytes = osc_cuda_kv_graph_table_bytes(DG_MAX_B);
    const size_t tb = (size_t)L * g->seq_bytes;
    g->hseq = calloc(1, tb);
    g->wseq = calloc(1, tb);
    g->tseq = calloc((size_t)L * DG_MAX_B, sizeof *g->tseq);
    g->twin = calloc((size_t)L * 2 * DG_MAX_B, sizeof *g->twin);
    osc_status s = g->hseq && g->wseq && g->tseq && g->twin ? OSC_OK : osc_error(OSC_ERR_OOM, "out of host memory");
    if (s == OSC_OK) s = osc_cuda_malloc(&g->bpart, pb);
    if (s == OSC_OK) s = osc_cuda_malloc(&g->dseq, tb);
    if (s != OSC_OK) {
        osc_cuda_free(g->bpart), osc_cuda_free(g->dseq);
        free(g->hseq), free(g->wseq), free(g->tseq), free(g->twin);
        g->bpart = g->dseq = NULL, g->hseq = g->wseq = NULL, g->tseq = NULL, g->twin = NULL;
        return osc_error_prefix(s, "decode graph buffers (quantised caches)");
    }
    return OSC_OK;
}

/* Block caches: check that every cache can take a graph step now and gather, for every layer,
 * the window row bases (into g->twin) and the packed parts (into g->tseq). 0: not now. */
static int dgraph_block_views(const osc_llm *m, struct dgraph *g, osc_kv **kv, int B) {
    const int L = m->cfg.n_layers;
    const char *mode0 = NULL;
    for (int s = 0; s < B; s++)
        for (int l = 0; l < L; l++) {
            const char *mode;
            int bits, rot;
            void **w = g->twin + (size_t)l * 2 * DG_MAX_B;
            if (!osc_kv_graph_layer(kv[s], l, &w[s], &w[DG_MAX_B + s], &g->tseq[(size_t)l * DG_MAX_B + s], &mode, &bits,
                                    &rot))
                return 0;
            if (!mode0) {
                mode0 = mode;
                g->bits = bits;
                g->rotate = rot;
            } else if (strcmp(mode, mode0)) {
                return 0;
            }
        }
    return 1;
}

/* The step body: everything between the step upload and the result download. */
static osc_status dgraph_body(osc_llm *m, osc_llm_ctx *c, struct dgraph *g, int B, int greedy, int kind) {
    const osc_llm_config *cf = &m->cfg;
    const int64_t hd = cf->head_dim;
    const int Hq = cf->n_heads, Hkv = cf->n_kv_heads;
    const int mrope = cf->rope_type == OSC_ROPE_MROPE;
    const int nsplit =
        kind == DG_BLOCK ? osc_cuda_kv_graph_splits(B, Hkv, (int)hd, g->bits)
                         : osc_cuda_decode_tab_splits(B, Hkv, (int)hd);
    const int fused = fuse_room(m, c);
    const int32_t *lens1 = g->dstep + 4 * DG_MAX_B;
    osc_tensor ids = osc_tensor_1d(g->dstep, OSC_I32, m->dev, B);
    osc_tensor posT = mrope ? osc_tensor_2d(g->dstep + DG_MAX_B, OSC_I32, m->dev, 3, B)
                            : osc_tensor_1d(g->dstep + DG_MAX_B, OSC_I32, m->dev, B);
    osc_tensor x = rows2(&c->x, 0, B), xn = rows2(&c->xn, 0, B), o = rows2(&c->o, 0, B);
    osc_tensor q = rows2(&c->q, 0, B), k = rows2(&c->k, 0, B), v = rows2(&c->v, 0, B), att = rows2(&c->att, 0, B);
    osc_tensor gt = rows2(&c->gate, 0, B), u = rows2(&c->up, 0, B);
    OSC_TRY(osc_op_embed(&x, &m->embed, &ids));
    for (int l = 0; l < cf->n_layers; l++) {
        const osc_layer_w *L = &m->layers[l];
        OSC_TRY(layer_qkv(m, L, &x, &xn, &q, &k, &v, NULL, B, fused, l > 0));
        void **tab = g->dtab + (size_t)l * 2 * DG_MAX_B;
        OSC_TRY(osc_cuda_rope_kv_append(q.data, k.data, v.data, (int64_t)Hq * hd, (int64_t)Hkv * hd, (int64_t)Hkv * hd,
                                        (const int32_t *)posT.data, B, &m->rope, Hq, Hkv, tab, DG_MAX_B, lens1, B));
        if (kind == DG_BLOCK)
            OSC_TRY(osc_cuda_kv_decode_attn_graph(att.data, q.data, B, Hq, Hkv, (int)hd, g->bits, g->rotate,
                                                  (const char *)g->dseq + (size_t)l * B * (g->seq_bytes / DG_MAX_B),
                                                  nsplit, g->bpart, 1.0f / sqrtf((float)hd)));
        else
            OSC_TRY(osc_cuda_attention_decode_tab(att.data, q.data, (const void *const *)tab,
                                                  (const void *const *)(tab + DG_MAX_B), lens1, B, Hq, Hkv, (int)hd,
                                                  1.0f / sqrtf((float)hd), g->dpart, nsplit));
        OSC_TRY(layer_out_mlp(m, L, &x, &xn, &att, &o, &gt, &u,
                              l + 1 < cf->n_layers ? &m->layers[l + 1].attn_norm : NULL));
    }
    osc_tensor last = rows2(&c->last, 0, B), lg = rows2(&c->logits, 0, B);
    OSC_TRY(osc_op_rmsnorm(&last, &x, &m->norm, cf->rms_eps));
    OSC_TRY(osc_op_matmul(&lg, &last, &m->lm_head, NULL));
    if (greedy) {
        osc_tensor am = osc_tensor_1d(c->ids.data, OSC_I32, m->dev, B);
        OSC_TRY(osc_op_argmax(&am, &lg));
    }
    /* the next step's state, on the device (dgraph_step mirrors it on the host) */
    return osc_cuda_step_advance(g->dstep + DG_MAX_B, mrope ? 3 : 1, B, g->dstep + 4 * DG_MAX_B, g->dstep,
                                 greedy ? (const int32_t *)c->ids.data : NULL, B);
}

/* the host mirror of osc_cuda_step_advance */
static void dgraph_advance_mirror(struct dgraph *g, int B, int mrope, const int32_t *picked) {
    for (int s = 0; s < B; s++) {
        for (int a = 0; a < (mrope ? 3 : 1); a++) g->hstep[DG_MAX_B + a * B + s] += 1;
        g->hstep[4 * DG_MAX_B + s] += 1;
        if (picked) g->hstep[s] = picked[s];
    }
}

/* A decode step through the graph path. *done = 0 (nothing run) when the batch does not qualify. */
static osc_status dgraph_step(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, int n_seq, const int *seq_start,
                              const int32_t *tokens, const int32_t *pos, int pos_stride, osc_kv **kv, float *logits,
                              int32_t *ids_out, int *done) {
    const osc_llm_config *cf = &m->cfg;
    *done = 0;
    const int B = n_seq, base = seq_start[0];
    if (m->dev == OSC_DEV_CPU || !dgraph_enabled() || B > DG_MAX_B || B > c->max_tokens || b->n_mm > 0 || c->probe ||
        b->all_logits || (!logits && !ids_out) || seq_start[B] - base != B ||
        !osc_cuda_decode_tab_ok(cf->n_heads, cf->n_kv_heads, cf->head_dim) || (cf->n_kv_heads * cf->head_dim) % 8)
        return OSC_OK;
    osc_tensor tk, tv;
    int kind = DG_PLAIN;
    for (int s = 0; s < B; s++)
        if (!osc_kv_plain_layer(kv[s], 0, &tk, &tv)) kind = DG_BLOCK;
    struct dgraph *g = NULL;
    OSC_TRY(dgraph_get(m, c, &g));
    if (g->failed) return OSC_OK;
    if (kind == DG_BLOCK) {
        OSC_TRY(dgraph_block_buffers(m, g));
        if (!dgraph_block_views(m, g, kv, B)) return OSC_OK; /* e.g. a window to flush: eager step */
    }
    /* step inputs: ids, positions ([3][B] for M-RoPE), attend lengths */
    const int mrope = cf->rope_type == OSC_ROPE_MROPE;
    int32_t *h = g->want;
    memcpy(h, g->hstep, sizeof g->want);
    for (int s = 0; s < B; s++) {
        int n0 = osc_kv_len(kv[s]);
        h[s] = tokens[base + s];
        for (int a = 0; a < (mrope ? 3 : 1); a++)
            h[DG_MAX_B + a * B + s] = pos ? pos[(mrope ? a : 0) * pos_stride + base + s] : n0;
        h[4 * DG_MAX_B + s] = n0 + 1;
    }
    /* row table (cache bases or moved windows): uploaded when a slot's address changed */
    int dirty = 0;
    for (int l = 0; l < cf->n_layers; l++)
        for (int s = 0; s < B; s++) {
            void *bk, *bv;
            if (kind == DG_BLOCK) {
                bk = g->twin[(size_t)l * 2 * DG_MAX_B + s];
                bv = g->twin[(size_t)l * 2 * DG_MAX_B + DG_MAX_B + s];
            } else {
                osc_kv_plain_layer(kv[s], l, &tk, &tv);
                bk = tk.data, bv = tv.data;
            }
            void **t = g->htab + (size_t)l * 2 * DG_MAX_B;
            if (t[s] != bk || t[DG_MAX_B + s] != bv) {
                t[s] = bk;
                t[DG_MAX_B + s] = bv;
                dirty = 1;
            }
        }
    if (dirty)
        OSC_TRY(osc_cuda_memcpy_async(g->dtab, g->htab, (size_t)cf->n_layers * 2 * DG_MAX_B * sizeof(void *), 1));
    if (kind == DG_BLOCK) {
        /* packed-part tables [layers][B] for this batch size: up when anything in them changed */
        const size_t eb = g->seq_bytes / DG_MAX_B, lb = (size_t)B * eb;
        const int hd = (int)cf->head_dim, nsplit = osc_cuda_kv_graph_splits(B, cf->n_kv_heads, hd, g->bits);
        const int32_t *lens1 = g->dstep + 4 * DG_MAX_B;
        for (int l = 0; l < cf->n_layers; l++)
            OSC_TRY(osc_cuda_kv_graph_table(g->wseq + (size_t)l * lb, g->tseq + (size_t)l * DG_MAX_B, B,
                                            cf->n_kv_heads, hd, g->bits, nsplit, lens1));
        const size_t tb = (size_t)cf->n_layers * lb;
        if (g->hseq_B != B || memcmp(g->wseq, g->hseq, tb)) {
            memcpy(g->hseq, g->wseq, tb);
            g->hseq_B = B;
            OSC_TRY(osc_cuda_memcpy_async(g->dseq, g->hseq, tb, 1));
        }
        /* a graph bakes the mode's kernels: another block mode at this batch size starts over */
        const int key = 2 * g->bits + g->rotate + 1, gr = ids_out != NULL;
        if (g->bkey[gr][B] != key) {
            osc_cuda_graph_free(g->g[DG_BLOCK][gr][B]);
            g->g[DG_BLOCK][gr][B] = NULL;
            g->warm[DG_BLOCK][gr][B] = 0;
            g->bkey[gr][B] = key;
        }
    }
    /* step state: nothing moves when the device's advanced state is this step's; ids only when
     * just the ids differ (host-sampled tokens); else everything */
    if (memcmp(h + DG_MAX_B, g->hstep + DG_MAX_B, 4 * DG_MAX_B * sizeof *h)) {
        memcpy(g->hstep, h, sizeof g->hstep);
        OSC_TRY(osc_cuda_memcpy_async(g->dstep, g->hstep, sizeof g->hstep, 1));
        g->uploads++;
    } else if (memcmp(h, g->hstep, (size_t)B * sizeof *h)) {
        memcpy(g->hstep, h, (size_t)B * sizeof *h);
        OSC_TRY(osc_cuda_memcpy_async(g->dstep, g->hstep, (size_t)B * sizeof *h, 1));
        g->id_uploads++;
    }
    const int greedy = ids_out != NULL;
    if (g->g[kind][greedy][B]) {
        OSC_TRY(osc_cuda_graph_launch(g->g[kind][greedy][B]));
        g->replayed++;
    } else if (!g->warm[kind][greedy][B]) {
        OSC_TRY(dgraph_body(m, c, g, B, greedy, kind));
        g->warm[kind][greedy][B] = 1;
        g->eager++;
    } else {
        OSC_TRY(osc_cuda_graph_begin());
        osc_status s = dgraph_body(m, c, g, B, greedy, kind);
        osc_cuda_graph *gr = NULL;
        osc_status s2 = osc_cuda_graph_end(&gr);
        if (s != OSC_OK || s2 != OSC_OK) {
            osc_cuda_graph_free(gr);
            g->failed = 1;
            osc_log(OSC_LOG_WARN, "decode graph: capture failed (%s); decoding without graphs", osc_last_error());
            OSC_TRY(dgraph_body(m, c, g, B, greedy, kind)); /* run this step eagerly */
            g->eager++;
        } else {
            g->g[kind][greedy][B] = gr;
            g->captured++;
            OSC_TRY(osc_cuda_graph_launch(gr));
            g->replayed++;
        }
    }
    for (int s = 0; s < B; s++) {
        if (kind == DG_BLOCK) osc_kv_graph_stored(kv[s]);
        osc_kv_advance(kv[s], 1);
    }
    *done = 1;
    if (greedy) {
        osc_status s = osc_copy_bytes(ids_out, OSC_DEV_CPU, c->ids.data, m->dev, (size_t)B * sizeof(int32_t));
        if (s == OSC_OK) dgraph_advance_mirror(g, B, mrope, ids_out);
        else g->failed = 1; /* the mirror may be off: stay eager */
        return s;
    }
    dgraph_advance_mirror(g, B, mrope, NULL);
    osc_tensor lg = rows2(&c->logits, 0, B);
    return osc_tensor_download_f32(logits, &lg, (int64_t)B * cf->vocab_size);
}
#endif

void osc_llm_ctx_graph_stats(const osc_llm_ctx *c, int *captured, long *replayed, long *eager) {
    int cap = 0;
    long rep = 0, eag = 0;
#ifdef OSC_HAVE_CUDA
    if (c->dg) cap = c->dg->captured, rep = c->dg->replayed, eag = c->dg->eager;
#endif
    if (captured) *captured = cap;
    if (replayed) *replayed = rep;
    if (eager) *eager = eag;
}

void osc_llm_ctx_graph_uploads(const osc_llm_ctx *c, long *full, long *ids) {
    long f = 0, i = 0;
#ifdef OSC_HAVE_CUDA
    if (c->dg) f = c->dg->uploads, i = c->dg->id_uploads;
#endif
    if (full) *full = f;
    if (ids) *ids = i;
}

static osc_status forward_chunk(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, int n_seq, const int *seq_start,
                                const int32_t *tokens, const int32_t *pos, int pos_stride, osc_kv **kv, int all_logits,
                                float *logits, int32_t *ids_out) {
    const osc_llm_config *cf = &m->cfg;
    const int N = seq_start[n_seq] - seq_start[0];
    const int base = seq_start[0];
    const int64_t hd = cf->head_dim;
    const int Hq = cf->n_heads, Hkv = cf->n_kv_heads;
    const int mrope = cf->rope_type == OSC_ROPE_MROPE;
    const float scale = 1.0f / sqrtf((float)hd);
#ifdef OSC_HAVE_CUDA
    {
        int done = 0;
        OSC_TRY(dgraph_step(m, c, b, n_seq, seq_start, tokens, pos, pos_stride, kv, logits, ids_out, &done));
        if (done) return OSC_OK;
    }
#endif

    /* positions: explicit, or continuing each sequence's cache */
    int32_t pos_host[3 * 512];
    int32_t *ph = pos_host;
    int32_t *heap = NULL;
    if ((size_t)N * 3 > sizeof pos_host / sizeof pos_host[0]) {
        heap = malloc((size_t)N * 3 * sizeof *heap); /* prefill only: decode batches are small */
        if (!heap) return osc_error(OSC_ERR_OOM, "positions");
        ph = heap;
    }
    for (int s = 0; s < n_seq; s++) {
        int n0 = osc_kv_len(kv[s]);
        for (int i = seq_start[s]; i < seq_start[s + 1]; i++) {
            int r = i - base;
            for (int a = 0; a < 3; a++)
                ph[a * N + r] = pos ? pos[(mrope ? a : 0) * pos_stride + i] : n0 + (i - seq_start[s]);
        }
    }
    osc_tensor ids = osc_tensor_1d(c->ids.data, OSC_I32, m->dev, N);
    osc_tensor posT = mrope ? osc_tensor_2d(c->pos.data, OSC_I32, m->dev, 3, N) : osc_tensor_1d(c->pos.data, OSC_I32, m->dev, N);
    osc_status s = osc_tensor_upload_i32(&ids, tokens + base, N);
    if (s == OSC_OK) s = osc_copy_bytes(c->pos.data, m->dev, ph, OSC_DEV_CPU, (size_t)(mrope ? 3 : 1) * N * 4);
    free(heap);
    OSC_TRY(s);

    /* one attention launch for all sequences: a decode step (one row each) over plain caches on
     * the GPU, batch within the context's preallocated tables */
    int batched = m->dev != OSC_DEV_CPU && n_seq > 1 && N == n_seq && n_seq <= c->max_tokens;
    for (int s2 = 0; batched && s2 < n_seq; s2++) {
        osc_tensor tk, tv;
        batched = osc_kv_plain_layer(kv[s2], 0, &tk, &tv);
    }
    osc_tensor x = rows2(&c->x, 0, N), xn = rows2(&c->xn, 0, N), o = rows2(&c->o, 0, N);
    osc_tensor q = rows2(&c->q, 0, N), k = rows2(&c->k, 0, N), v = rows2(&c->v, 0, N), att = rows2(&c->att, 0, N);
    osc_tensor g = rows2(&c->gate, 0, N), u = rows2(&c->up, 0, N);
    OSC_TRY(osc_op_embed(&x, &m->embed, &ids));
    if (b->n_mm > 0) OSC_TRY(scatter_mm(m, &x, b, base, N));
    const int fused = fuse_room(m, c);
    for (int l = 0; l < cf->n_layers; l++) {
        const osc_layer_w *L = &m->layers[l];
        OSC_TRY(layer_qkv(m, L, &x, &xn, &q, &k, &v, &posT, N, fused, l > 0));
        osc_tensor q3 = view3(&q, N, Hq, hd), k3 = view3(&k, N, Hkv, hd), v3 = view3(&v, N, Hkv, hd);
        osc_tensor a3 = view3(&att, N, Hq, hd);
        if (batched) {
            /* decode of several plain caches: stores, then one attention launch for all */
            for (int s2 = 0; s2 < n_seq; s2++) {
                osc_tensor ks = osc_tensor_rows(&k3, s2, 1), vs = osc_tensor_rows(&v3, s2, 1);
                OSC_TRY(osc_kv_store(kv[s2], l, &ks, &vs));
                osc_kv_plain_layer(kv[s2], l, &c->bk[s2], &c->bv[s2]);
                c->bkp[s2] = &c->bk[s2];
                c->bvp[s2] = &c->bv[s2];
                c->blen[s2] = (int)c->bk[s2].ne[0];
            }
            OSC_TRY(osc_op_attention_decode_batch(&a3, &q3, c->bkp, c->bvp, c->blen, n_seq, scale));
        } else if (m->dev != OSC_DEV_CPU && n_seq > 1 && N == n_seq) {
            /* decode of several quantised caches: one store launch and one fused attention
             * launch when they allow, else per cache */
            int done = 0;
            OSC_TRY(osc_kv_store_batch(kv, n_seq, l, &k3, &v3, &done));
            for (int s2 = 0; !done && s2 < n_seq; s2++) {
                osc_tensor ks = osc_tensor_rows(&k3, s2, 1), vs = osc_tensor_rows(&v3, s2, 1);
                OSC_TRY(osc_kv_store(kv[s2], l, &ks, &vs));
            }
            done = 0;
            OSC_TRY(osc_kv_attend_batch(kv, n_seq, l, &q3, &a3, scale, &done));
            for (int s2 = 0; !done && s2 < n_seq; s2++) {
                osc_tensor qs = osc_tensor_rows(&q3, s2, 1), as = osc_tensor_rows(&a3, s2, 1);
                OSC_TRY(osc_kv_attend(kv[s2], l, &qs, &as, scale));
            }
        } else {
            for (int s2 = 0; s2 < n_seq; s2++) {
                int r0 = seq_start[s2] - base, n = seq_start[s2 + 1] - seq_start[s2];
                osc_tensor ks = osc_tensor_rows(&k3, r0, n), vs = osc_tensor_rows(&v3, r0, n);
                osc_tensor qs = osc_tensor_rows(&q3, r0, n), as = osc_tensor_rows(&a3, r0, n);
                OSC_TRY(osc_kv_store(kv[s2], l, &ks, &vs));
                OSC_TRY(osc_kv_attend(kv[s2], l, &qs, &as, scale));
            }
        }
        if (c->probe) {
            int rel[OSC_PROBE_MAX_SEQ + 1];
            if (n_seq > OSC_PROBE_MAX_SEQ) return osc_error(OSC_ERR_UNSUPPORTED, "probe: more than %d sequences", OSC_PROBE_MAX_SEQ);
            for (int s2 = 0; s2 <= n_seq; s2++) rel[s2] = seq_start[s2] - base;
            OSC_TRY(c->probe(c->probe_user, l, n_seq, rel, kv, &q3, &k3, &v3, &a3, scale));
        }
        OSC_TRY(layer_out_mlp(m, L, &x, &xn, &att, &o, &g, &u,
                              l + 1 < cf->n_layers ? &m->layers[l + 1].attn_norm : NULL));
    }
    for (int s2 = 0; s2 < n_seq; s2++) osc_kv_advance(kv[s2], seq_start[s2 + 1] - seq_start[s2]);
    if (!logits && !ids_out) return OSC_OK;
    /* final norm + head on the rows whose logits are wanted */
    int n_out = all_logits ? N : n_seq;
    osc_tensor last = rows2(&c->last, 0, n_out);
    if (all_logits) {
        OSC_TRY(osc_op_rmsnorm(&last, &x, &m->norm, cf->rms_eps));
    } else {
        for (int s2 = 0; s2 < n_seq; s2++) {
            osc_tensor src = rows2(&x, seq_start[s2 + 1] - 1 - base, 1), dst = rows2(&last, s2, 1);
            OSC_TRY(osc_op_convert(&dst, &src));
        }
        OSC_TRY(osc_op_rmsnorm(&last, &last, &m->norm, cf->rms_eps));
    }
    osc_tensor lg = rows2(&c->logits, 0, n_out);
    OSC_TRY(osc_op_matmul(&lg, &last, &m->lm_head, NULL));
    if (ids_out) {
        /* greedy on the device: only the ids cross the bus (the token-id scratch is free now) */
        osc_tensor am = osc_tensor_1d(c->ids.data, OSC_I32, m->dev, n_out);
        OSC_TRY(osc_op_argmax(&am, &lg));
        return osc_copy_bytes(ids_out, OSC_DEV_CPU, am.data, m->dev, (size_t)n_out * sizeof(int32_t));
    }
    return osc_tensor_download_f32(logits, &lg, (int64_t)n_out * cf->vocab_size);
}

static osc_status forward_impl(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, float *logits, int32_t *ids) {
    const osc_llm_config *cf = &m->cfg;
    int n_tokens = b->seq_start[b->n_seq] - b->seq_start[0];
    if (b->n_seq <= 0 || n_tokens <= 0) return osc_error(OSC_ERR_INVALID_ARG, "forward: empty batch");
    for (int i = 0; i < n_tokens; i++) {
        int32_t t = b->tokens[b->seq_start[0] + i];
        if (t < 0 || t >= cf->vocab_size)
            return osc_error(OSC_ERR_INVALID_ARG, "token id %d outside the vocabulary (%d)", t, cf->vocab_size);
    }
    for (int i = 0; i < b->n_mm; i++) {
        int r = b->mm_rows[i];
        if (r < b->seq_start[0] || r >= b->seq_start[b->n_seq] || (i > 0 && r <= b->mm_rows[i - 1]) || !b->mm_embeds)
            return osc_error(OSC_ERR_INVALID_ARG, "forward: multimodal row %d out of order or outside the batch", r);
    }
    for (int s = 0; s < b->n_seq; s++) {
        int n = b->seq_start[s + 1] - b->seq_start[s];
        if (osc_kv_len(b->kv[s]) + n > osc_kv_capacity(b->kv[s]))
            return osc_error(OSC_ERR_CONTEXT, "sequence %d: %d cached + %d new tokens exceed the context of %d",
                             s, osc_kv_len(b->kv[s]), n, osc_kv_capacity(b->kv[s]));
    }
    if (n_tokens <= c->max_tokens)
        return forward_chunk(m, c, b, b->n_seq, b->seq_start, b->tokens, b->pos, n_tokens, b->kv, b->all_logits, logits,
                             ids);
    if (b->n_seq != 1)
        return osc_error(OSC_ERR_INVALID_ARG, "forward: a batch of %d sequences with %d tokens exceeds the %d-token scratch",
                         b->n_seq, n_tokens, c->max_tokens);
    /* one long sequence: chunks of max_tokens, each attending to everything before it */
    for (int off = 0; off < n_tokens; off += c->max_tokens) {
        int n = n_tokens - off < c->max_tokens ? n_tokens - off : c->max_tokens;
        int st[2] = {b->seq_start[0] + off, b->seq_start[0] + off + n};
        int last = off + n == n_tokens;
        float *lg = NULL;
        if (logits && b->all_logits) lg = logits + (size_t)off * cf->vocab_size;
        else if (logits && last) lg = logits;
        OSC_TRY(forward_chunk(m, c, b, 1, st, b->tokens, b->pos, n_tokens, b->kv, b->all_logits, lg, last ? ids : NULL));
    }
    return OSC_OK;
}

osc_status osc_llm_forward(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, float *logits) {
    return forward_impl(m, c, b, logits, NULL);
}

osc_status osc_llm_forward_greedy(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, int32_t *ids) {
    if (!ids || b->all_logits) return osc_error(OSC_ERR_INVALID_ARG, "forward_greedy: ids required, all_logits must be 0");
    return forward_impl(m, c, b, NULL, ids);
}
