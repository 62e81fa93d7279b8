/* A decoder from one GGUF file. See gguf_load.h. */
#include "gguf_load.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/rope.h"

/* ---- names ---- */

static const struct { const char *hf, *gg; } LAYER_NAMES[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};

/* The GGUF name of one of our weight names ("layers.3.self_attn.q_proj.weight" ->
 * "blk.3.attn_q.weight", "embed_tokens.weight" -> "token_embd.weight", "norm.weight" ->
 * "output_norm.weight", "lm_head.weight" -> "output.weight"); 0 when there is none. *suffix (if
 * not NULL) gets the name inside the layer ("" for the others). */
static int map_name(const char *hf, char *out, size_t n, const char **suffix) {
    static const struct { const char *hf, *gg; } TOP[] = {
        {"embed_tokens.weight", "token_embd.weight"},
        {"norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    if (suffix) *suffix = "";
    for (size_t i = 0; i < sizeof TOP / sizeof TOP[0]; i++)
        if (strcmp(hf, TOP[i].hf) == 0) return (size_t)snprintf(out, n, "%s", TOP[i].gg) < n;
    int layer, pos = 0;
    if (sscanf(hf, "layers.%d.%n", &layer, &pos) != 1 || pos == 0 || layer < 0) return 0;
    for (size_t i = 0; i < sizeof LAYER_NAMES / sizeof LAYER_NAMES[0]; i++)
        if (strcmp(hf + pos, LAYER_NAMES[i].hf) == 0) {
            if (suffix) *suffix = LAYER_NAMES[i].hf;
            return (size_t)snprintf(out, n, "blk.%d.%s", layer, LAYER_NAMES[i].gg) < n;
        }
    return 0;
}

/* ---- config ---- */

typedef struct meta {
    const osc_gguf *g;
    const char *arch;
    char key[160];
} meta;

static const char *K(meta *m, const char *suffix) {
    snprintf(m->key, sizeof m->key, "%s.%s", m->arch, suffix);
    return m->key;
}

/* A u32 key that must be present and fit an int. */
static osc_status req_int(meta *m, const char *suffix, int *out) {
    uint32_t v;
    OSC_TRY(osc_gguf_get_u32(m->g, K(m, suffix), &v));
    if (v > INT32_MAX)
        return osc_error(OSC_ERR_FORMAT, "%s: %s = %u is too large", osc_gguf_path(m->g), m->key, v);
    *out = (int)v;
    return OSC_OK;
}

/* An optional one: left as is when absent. */
static osc_status opt_int(meta *m, const char *suffix, int *out) {
    if (!osc_gguf_find(m->g, K(m, suffix))) return OSC_OK;
    return req_int(m, suffix, out);
}

/* An optional token id; -1 when absent, and (with a warning) when outside the vocabulary. */
static osc_status token_id(const osc_gguf *g, const char *key, int vocab, int *out) {
    *out = -1;
    if (!osc_gguf_find(g, key)) return OSC_OK;
    uint32_t v;
    OSC_TRY(osc_gguf_get_u32(g, key, &v));
    if (v >= (uint32_t)vocab) {
        osc_log(OSC_LOG_WARN, "%s: %s %u is outside the vocabulary (%d); ignored", osc_gguf_path(g), key, v, vocab);
        return OSC_OK;
    }
    *out = (int)v;
    return OSC_OK;
}

/* Llama-3 rope scaling from llama.cpp's rope_freqs.weight: f[j] divides frequency j. On
 * inv_freq_j the llama3 rule is f = 1 for wavelengths below high_wl, f = factor above low_wl,
 * and 1/f = (1 - s)/factor + s in between, s linear in 1/wavelength from 0 (at low_wl) to 1 (at
 * high_wl). Only the rule's values at the model's frequencies matter, so any (factor, low_wl,
 * high_wl) that reproduces every f[j] is equivalent: take factor = max f, fit s on the in-between
 * frequencies (or place the band between the neighbouring flat ones), then check all f[j] with
 * the rope code itself. */
static osc_status rope_from_freqs(const osc_gguf *g, const osc_gguf_tensor *t, osc_llm_config *c) {
    const char *path = osc_gguf_path(g);
    const int half = c->head_dim / 2;
    if (t->n_dims != 1 || t->ne[0] != half || t->type != OSC_GGML_F32)
        return osc_error(OSC_ERR_FORMAT, "%s: rope_freqs.weight must be %d f32 values (head size / 2)", path, half);
    float f[OSC_ROPE_MAX_HALF];
    double x[OSC_ROPE_MAX_HALF];
    if (half > OSC_ROPE_MAX_HALF) return osc_error(OSC_ERR_UNSUPPORTED, "%s: head size %d is too large", path, c->head_dim);
    OSC_TRY(osc_gguf_read_f32(t, 0, half, f));
    osc_rope base;
    OSC_TRY(osc_rope_init(&base, c->head_dim, c->rope_theta, OSC_ROPE_DEFAULT, 0, 0, 0, 0, NULL));
    double F = 1.0;
    for (int j = 0; j < half; j++) {
        if (!(f[j] >= 1.0f - 1e-6f) || !isfinite(f[j]) || (j && f[j] < f[j - 1] * (1 - 1e-6f)))
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope_freqs.weight is not a llama3 rope scaling (divisors must "
                             "be >= 1 and grow with the wavelength)", path);
        x[j] = base.inv_freq[j] / (2.0 * M_PI); /* 1 / wavelength; decreasing in j */
        if (f[j] > F) F = f[j];
    }
    if (F <= 1.0 + 1e-6) return OSC_OK; /* all ones: plain rope */
    const double tol = 1e-6;
    int first_mid = -1, last_mid = -1, last_one = -1, first_fac = -1;
    for (int j = 0; j < half; j++) {
        if (fabs(f[j] - 1.0) <= tol) last_one = j;
        else if (fabs(f[j] - F) <= tol * F) { if (first_fac < 0) first_fac = j; }
        else {
            if (first_mid < 0) first_mid = j;
            last_mid = j;
        }
    }
#define S_OF(j) ((1.0 / f[j] - 1.0 / F) / (1.0 - 1.0 / F))
    double xl, xh; /* 1 / low_wl < 1 / high_wl */
    if (first_mid >= 0 && last_mid > first_mid) {
        const double sa = S_OF(first_mid), sb = S_OF(last_mid);
        const double m = (sa - sb) / (x[first_mid] - x[last_mid]);
        if (!(m > 0)) return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope_freqs.weight is not a llama3 rope scaling", path);
        xl = x[first_mid] - sa / m;
        xh = xl + 1.0 / m;
    } else if (first_mid >= 0) {
        /* one in-between frequency: a band through it that leaves its neighbours flat */
        const double x1 = x[first_mid], s1 = S_OF(first_mid);
        double d = x1 / s1;
        if (last_one >= 0 && (x[last_one] - x1) / (1 - s1) < d) d = (x[last_one] - x1) / (1 - s1);
        if (first_fac >= 0 && (x1 - x[first_fac]) / s1 < d) d = (x1 - x[first_fac]) / s1;
        d *= 0.5;
        xh = x1 + (1 - s1) * d;
        xl = x1 - s1 * d;
    } else {
        /* no in-between frequency: a band strictly between the last 1 and the first factor */
        const double lo = x[first_fac], hi = last_one >= 0 ? x[last_one] : 4 * x[first_fac];
        xl = lo + (hi - lo) / 3;
        xh = lo + 2 * (hi - lo) / 3;
    }
#undef S_OF
    const int orig = 8192; /* any context length: the rule depends on orig / low and orig / high */
    c->rope_type = OSC_ROPE_LLAMA3;
    c->rope_factor = (float)F;
    c->rope_orig_max_pos = orig;
    c->rope_low_freq_factor = (float)(orig * xl);
    c->rope_high_freq_factor = (float)(orig * xh);
    osc_rope fit;
    if (osc_rope_init(&fit, c->head_dim, c->rope_theta, OSC_ROPE_LLAMA3, c->rope_factor, c->rope_low_freq_factor,
                      c->rope_high_freq_factor, orig, NULL) != OSC_OK)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope_freqs.weight is not a llama3 rope scaling", path);
    for (int j = 0; j < half; j++) {
        const double want = base.inv_freq[j] / f[j];
        if (fabs(fit.inv_freq[j] - want) > 1e-5 * want)
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope_freqs.weight is not a llama3 rope scaling (divisor %d is "
                             "%g; the closest llama3 rule gives %g)", path, j, (double)f[j],
                             base.inv_freq[j] / fit.inv_freq[j]);
    }
    return OSC_OK;
}

osc_status osc_gguf_llm_config(const osc_gguf *g, osc_llm_config *c) {
    if (!g || !c) return osc_error(OSC_ERR_INVALID_ARG, "osc_gguf_llm_config: NULL argument");
    memset(c, 0, sizeof *c);
    const char *path = osc_gguf_path(g), *a;
    size_t al;
    OSC_TRY(osc_gguf_get_str(g, "general.architecture", &a, &al));
    char arch[32];
    snprintf(arch, sizeof arch, "%.*s", (int)(al < sizeof arch ? al : sizeof arch - 1), a);
    if (strlen(arch) != al) arch[0] = 0; /* too long or holding a NUL: unsupported below */
    if (!strcmp(arch, "llama")) {
        c->arch = OSC_ARCH_LLAMA;
    } else if (!strcmp(arch, "qwen2")) {
        c->arch = OSC_ARCH_QWEN2;
        c->attn_bias = 1;
    } else if (!strcmp(arch, "qwen3")) {
        c->arch = OSC_ARCH_QWEN3;
        c->qk_norm = 1;
    } else {
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: general.architecture '%.*s' is not supported (llama, qwen2, qwen3)",
                         path, (int)(al > 48 ? 48 : al), a);
    }
    snprintf(c->model_type, sizeof c->model_type, "%s", arch);
    meta m = {g, arch, {0}};
    OSC_TRY(req_int(&m, "block_count", &c->n_layers));
    OSC_TRY(req_int(&m, "embedding_length", &c->hidden_size));
    OSC_TRY(req_int(&m, "feed_forward_length", &c->intermediate_size));
    OSC_TRY(req_int(&m, "attention.head_count", &c->n_heads));
    if (c->n_heads <= 0) return osc_error(OSC_ERR_FORMAT, "%s: %s.attention.head_count is 0", path, arch);
    c->n_kv_heads = c->n_heads;
    OSC_TRY(opt_int(&m, "attention.head_count_kv", &c->n_kv_heads));
    c->head_dim = c->hidden_size / c->n_heads;
    OSC_TRY(opt_int(&m, "attention.key_length", &c->head_dim));
    int vlen = c->head_dim, rdim = c->head_dim;
    OSC_TRY(opt_int(&m, "attention.value_length", &vlen));
    OSC_TRY(opt_int(&m, "rope.dimension_count", &rdim));
    if (vlen != c->head_dim)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: value head size %d differs from the key head size %d", path, vlen,
                         c->head_dim);
    if (rdim != c->head_dim)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope over %d of %d head dims (partial rotary) is not supported", path,
                         rdim, c->head_dim);
    OSC_TRY(osc_gguf_get_f32(g, K(&m, "attention.layer_norm_rms_epsilon"), &c->rms_eps));
    c->rope_theta = 10000.0;
    if (osc_gguf_find(g, K(&m, "rope.freq_base"))) {
        float th;
        OSC_TRY(osc_gguf_get_f32(g, m.key, &th));
        c->rope_theta = th;
    }
    c->max_pos = 2048;
    OSC_TRY(opt_int(&m, "context_length", &c->max_pos));
    int experts = 0;
    OSC_TRY(opt_int(&m, "expert_count", &experts));
    if (experts > 0) return osc_error(OSC_ERR_UNSUPPORTED, "%s: mixture-of-experts models are not supported", path);
    if (osc_gguf_find(g, K(&m, "rope.scaling.type"))) {
        const char *st;
        size_t sl;
        OSC_TRY(osc_gguf_get_str(g, m.key, &st, &sl));
        if (!(sl == 4 && !memcmp(st, "none", 4)))
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope scaling '%.*s' is not supported (only llama3's, given as "
                             "rope_freqs.weight)", path, (int)(sl > 32 ? 32 : sl), st);
    }

    const osc_gguf_tensor *emb = osc_gguf_tensor_find(g, "token_embd.weight");
    if (!emb) return osc_error(OSC_ERR_FORMAT, "%s: missing tensor token_embd.weight", path);
    const osc_gguf_value *toks = osc_gguf_find(g, "tokenizer.ggml.tokens");
    int64_t vocab = emb->ne[1];
    uint32_t vs;
    if (toks && toks->type == OSC_GGUF_ARRAY) vocab = (int64_t)toks->n;
    else if (osc_gguf_find(g, K(&m, "vocab_size")) && osc_gguf_get_u32(g, m.key, &vs) == OSC_OK) vocab = vs;
    if (vocab != emb->ne[1] || emb->n_dims != 2)
        return osc_error(OSC_ERR_FORMAT, "%s: token_embd.weight has %lld rows but the vocabulary has %lld tokens", path,
                         (long long)emb->ne[1], (long long)vocab);
    if (vocab > INT32_MAX) return osc_error(OSC_ERR_FORMAT, "%s: vocabulary of %lld is too large", path, (long long)vocab);
    c->vocab_size = (int)vocab;
    c->tie_embeddings = osc_gguf_tensor_find(g, "output.weight") == NULL;
    if (c->arch == OSC_ARCH_LLAMA) c->attn_bias = osc_gguf_tensor_find(g, "blk.0.attn_q.bias") != NULL;

    OSC_TRY(token_id(g, "tokenizer.ggml.bos_token_id", c->vocab_size, &c->bos_id));
    OSC_TRY(token_id(g, "tokenizer.ggml.padding_token_id", c->vocab_size, &c->pad_id));
    static const char *const stop_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                            "tokenizer.ggml.eom_token_id"};
    for (int i = 0; i < 3; i++) {
        int id, dup = 0;
        OSC_TRY(token_id(g, stop_keys[i], c->vocab_size, &id));
        for (int k = 0; k < c->n_eos; k++) dup |= c->eos_ids[k] == id;
        if (id >= 0 && !dup) c->eos_ids[c->n_eos++] = id;
    }
    c->image_token_id = c->video_token_id = c->audio_token_id = -1;
    c->vision_start_id = c->vision_end_id = c->audio_start_id = c->audio_end_id = -1;

    /* the head size must be known (and sane) before the rope table is built */
    OSC_TRY(osc_llm_config_validate(c, path));
    const osc_gguf_tensor *rf = osc_gguf_tensor_find(g, "rope_freqs.weight");
    if (rf) OSC_TRY(rope_from_freqs(g, rf, c));
    return osc_llm_config_validate(c, path);
}

/* ---- weights ---- */

static int gg_has(void *ctx, const char *name) {
    const osc_gguf_weights *c = ctx;
    char gn[160];
    return map_name(name, gn, sizeof gn, NULL) && osc_gguf_tensor_find(c->g, gn) != NULL;
}

static void fmt_dims(char *buf, size_t n, int nd, const int64_t *d, int reverse) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)d[reverse ? nd - 1 - i : i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Find name, check it holds shape[nd] (HF order), and convert it into dst (float32 or bf16),
 * undoing llama.cpp's Q/K row permutation for the llama architecture. */
static osc_status gg_read(void *ctx, const char *name, int nd, const int64_t *shape, void *dst, int bf16) {
    const osc_gguf_weights *c = ctx;
    const char *path = osc_gguf_path(c->g), *suffix;
    char gn[160];
    if (!map_name(name, gn, sizeof gn, &suffix))
        return osc_error(OSC_ERR_FORMAT, "%s: no GGUF tensor corresponds to %s", path, name);
    const osc_gguf_tensor *t = osc_gguf_tensor_find(c->g, gn);
    if (!t) return osc_error(OSC_ERR_FORMAT, "%s: missing tensor %s", path, gn);
    int same = nd >= 1 && nd <= OSC_GGUF_MAX_DIMS && t->n_dims >= nd;
    for (int i = 0; same && i < OSC_GGUF_MAX_DIMS; i++) same = t->ne[i] == (i < nd ? shape[nd - 1 - i] : 1);
    if (!same) {
        char have[96], want[96];
        fmt_dims(have, sizeof have, t->n_dims, t->ne, 0);
        fmt_dims(want, sizeof want, nd, shape, 1);
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s has dims %s but the config implies %s (GGUF order)", path, gn,
                         have, want);
    }
    int heads = 0;
    if (c->cfg->arch == OSC_ARCH_LLAMA) {
        if (!strncmp(suffix, "self_attn.q_proj.", 17)) heads = c->cfg->n_heads;
        else if (!strncmp(suffix, "self_attn.k_proj.", 17)) heads = c->cfg->n_kv_heads;
    }
    if (!heads)
        return bf16 ? osc_gguf_read_bf16(t, 0, t->nelem, dst) : osc_gguf_read_f32(t, 0, t->nelem, dst);
    const int64_t rows = shape[0], row = nd == 2 ? shape[1] : 1, hd = rows / heads;
    if (rows % heads || hd % 2)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: %lld rows do not split into %d heads of even size", path, gn,
                         (long long)rows, heads);
    /* GGUF row r = h*hd + 2j + i holds HF row h*hd + i*hd/2 + j */
    osc_status s = OSC_OK;
#pragma omp parallel for schedule(static) if (rows * row >= (1 << 18))
    for (int64_t r = 0; r < rows; r++) {
        const int64_t h = r / hd, w = r % hd, hf = h * hd + (w % 2) * (hd / 2) + w / 2;
        osc_status e = bf16 ? osc_gguf_read_bf16(t, r * row, row, (uint16_t *)dst + hf * row)
                            : osc_gguf_read_f32(t, r * row, row, (float *)dst + hf * row);
        if (e != OSC_OK) {
#pragma omp critical(gguf_read_err)
            s = e;
        }
    }
    return s;
}

static osc_status gg_read_f32(void *ctx, const char *name, int nd, const int64_t *shape, float *dst) {
    return gg_read(ctx, name, nd, shape, dst, 0);
}
static osc_status gg_read_bf16(void *ctx, const char *name, int nd, const int64_t *shape, uint16_t *dst) {
    return gg_read(ctx, name, nd, shape, dst, 1);
}

osc_wsrc osc_gguf_wsrc(osc_gguf_weights *w) {
    osc_wsrc src = {w, osc_gguf_path(w->g), gg_has, gg_read_f32, gg_read_bf16};
    return src;
}

osc_status osc_llm_load_gguf(const char *path, osc_dev dev, osc_llm **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_llm_load_gguf: out is NULL");
    *out = NULL;
    osc_gguf *g = NULL;
    OSC_TRY(osc_gguf_open(path, &g));
    osc_llm_config cfg;
    osc_status s = osc_gguf_llm_config(g, &cfg);
    if (s == OSC_OK) {
        osc_gguf_weights w = {g, &cfg};
        osc_wsrc src = osc_gguf_wsrc(&w);
        s = osc_llm_load_src(&cfg, &src, dev, out);
    }
    osc_gguf_close(g);
    return s;
}
