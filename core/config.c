#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "fileio.h"

#define CFG_MAX_BYTES ((size_t)4 * 1024 * 1024)

const char *osc_arch_name(osc_arch a) {
    switch (a) {
    case OSC_ARCH_QWEN2: return "qwen2";
    case OSC_ARCH_QWEN3: return "qwen3";
    case OSC_ARCH_LLAMA: return "llama";
    case OSC_ARCH_QWEN2_5_OMNI: return "qwen2_5_omni";
    case OSC_ARCH_QWEN2_5_VL: return "qwen2_5_vl";
    }
    return "?";
}

/* ---- JSON helpers. Each looks a key up in a list of objects (first hit wins; NULL entries are
 * skipped) and returns 1 when found and well typed, 0 when absent (or null), and sets an error
 * and returns -1 when present with the wrong type. ---- */

typedef struct cfg_ctx {
    const char *path;        /* for messages */
    const cJSON *objs[4];    /* search order */
    int nobjs;
} cfg_ctx;

static const cJSON *cfg_find(const cfg_ctx *c, const char *key) {
    for (int i = 0; i < c->nobjs; i++) {
        if (!c->objs[i]) continue;
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(c->objs[i], key);
        if (j && !cJSON_IsNull(j)) return j;
    }
    return NULL;
}

static int json_to_int(const cJSON *j, int *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != floor(d)) return 0;
    *out = (int)d;
    return 1;
}

static int cfg_int_j(const char *path, const cJSON *j, const char *key, int *out) {
    if (!j) return 0;
    if (!json_to_int(j, out)) {
        osc_error(OSC_ERR_FORMAT, "%s: %s must be an integer", path, key);
        return -1;
    }
    return 1;
}

static int cfg_num_j(const char *path, const cJSON *j, const char *key, double *out) {
    if (!j) return 0;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble)) {
        osc_error(OSC_ERR_FORMAT, "%s: %s must be a number", path, key);
        return -1;
    }
    *out = j->valuedouble;
    return 1;
}

static int cfg_bool_j(const char *path, const cJSON *j, const char *key, int *out) {
    if (!j) return 0;
    if (!cJSON_IsBool(j)) {
        osc_error(OSC_ERR_FORMAT, "%s: %s must be true or false", path, key);
        return -1;
    }
    *out = cJSON_IsTrue(j) ? 1 : 0;
    return 1;
}

static int cfg_int(const cfg_ctx *c, const char *key, int *out) {
    return cfg_int_j(c->path, cfg_find(c, key), key, out);
}
static int cfg_num(const cfg_ctx *c, const char *key, double *out) {
    return cfg_num_j(c->path, cfg_find(c, key), key, out);
}
static int cfg_bool(const cfg_ctx *c, const char *key, int *out) {
    return cfg_bool_j(c->path, cfg_find(c, key), key, out);
}

/* A required positive-or-any integer field. */
static osc_status cfg_req_int(const cfg_ctx *c, const char *key, int *out) {
    int r = cfg_int(c, key, out);
    if (r < 0) return OSC_ERR_FORMAT;
    if (r == 0) return osc_error(OSC_ERR_FORMAT, "%s: missing %s", c->path, key);
    return OSC_OK;
}

/* An int-or-list token id field (eos_token_id). Up to OSC_CONFIG_MAX_EOS ids. */
static osc_status cfg_id_list(const char *path, const cJSON *j, const char *key, int *ids, int *n) {
    *n = 0;
    if (!j || cJSON_IsNull(j)) return OSC_OK;
    if (cJSON_IsNumber(j)) {
        if (!json_to_int(j, &ids[0]) || ids[0] < 0)
            return osc_error(OSC_ERR_FORMAT, "%s: %s must be a non-negative integer or a list of them", path, key);
        *n = 1;
        return OSC_OK;
    }
    if (!cJSON_IsArray(j))
        return osc_error(OSC_ERR_FORMAT, "%s: %s must be an integer or a list of integers", path, key);
    int cnt = cJSON_GetArraySize(j);
    if (cnt > OSC_CONFIG_MAX_EOS)
        return osc_error(OSC_ERR_FORMAT, "%s: %s lists %d ids, more than the %d supported", path, key, cnt,
                         OSC_CONFIG_MAX_EOS);
    for (const cJSON *e = j->child; e; e = e->next) {
        int v;
        if (!json_to_int(e, &v) || v < 0)
            return osc_error(OSC_ERR_FORMAT, "%s: %s must be a non-negative integer or a list of them", path, key);
        ids[(*n)++] = v;
    }
    return OSC_OK;
}

static const cJSON *obj_item(const cJSON *o, const char *key) {
    if (!o) return NULL;
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsObject(j) ? j : NULL;
}

/* An optional special-token id, tried under several names. -1 when absent. */
static osc_status cfg_token(const cfg_ctx *c, const char *const *keys, int nk, int *out) {
    *out = -1;
    for (int i = 0; i < nk; i++) {
        int v, r = cfg_int(c, keys[i], &v);
        if (r < 0) return OSC_ERR_FORMAT;
        if (r > 0) {
            if (v < 0) return osc_error(OSC_ERR_FORMAT, "%s: %s is negative", c->path, keys[i]);
            *out = v;
            return OSC_OK;
        }
    }
    return OSC_OK;
}

/* ---- rope ---- */

static osc_status cfg_rope(const cfg_ctx *tc, osc_llm_config *cfg) {
    const char *path = tc->path;
    /* transformers 5.x: rope_parameters {rope_type, rope_theta, ...}; older: rope_theta and
     * rope_scaling {type|rope_type, ...}. Either may be absent. */
    const cJSON *rp = cfg_find(tc, "rope_parameters");
    if (rp && !cJSON_IsObject(rp))
        return osc_error(OSC_ERR_FORMAT, "%s: rope_parameters must be an object", path);
    /* Per-layer-type rope parameters ({"full_attention": {...}, ...}): use full attention's. */
    if (rp && !cJSON_GetObjectItemCaseSensitive(rp, "rope_type") && !cJSON_GetObjectItemCaseSensitive(rp, "rope_theta") &&
        obj_item(rp, "full_attention"))
        rp = obj_item(rp, "full_attention");
    const cJSON *rs = cfg_find(tc, "rope_scaling");
    if (rs && !cJSON_IsObject(rs))
        return osc_error(OSC_ERR_FORMAT, "%s: rope_scaling must be an object or null", path);
    cfg_ctx rc = {path, {rp, rs}, 2};

    double theta = 10000.0;
    int r = cfg_num(tc, "rope_theta", &theta);
    if (r < 0) return OSC_ERR_FORMAT;
    if (r == 0 && cfg_num(&rc, "rope_theta", &theta) < 0) return OSC_ERR_FORMAT;
    cfg->rope_theta = theta;

    const cJSON *jt = cfg_find(&rc, "rope_type");
    if (!jt) jt = cfg_find(&rc, "type");
    const char *type = "default";
    if (jt) {
        if (!cJSON_IsString(jt)) return osc_error(OSC_ERR_FORMAT, "%s: rope type must be a string", path);
        type = jt->valuestring;
    }
    const cJSON *ms = cfg_find(&rc, "mrope_section");
    cfg->rope_type = OSC_ROPE_DEFAULT;
    if (strcmp(type, "llama3") == 0) {
        cfg->rope_type = OSC_ROPE_LLAMA3;
        double f, lo, hi;
        int om;
        if (cfg_num(&rc, "factor", &f) != 1 || cfg_num(&rc, "low_freq_factor", &lo) != 1 ||
            cfg_num(&rc, "high_freq_factor", &hi) != 1 ||
            cfg_int(&rc, "original_max_position_embeddings", &om) != 1)
            return osc_error(OSC_ERR_FORMAT,
                             "%s: llama3 rope scaling needs numeric factor, low_freq_factor, high_freq_factor and "
                             "original_max_position_embeddings",
                             path);
        cfg->rope_factor = (float)f;
        cfg->rope_low_freq_factor = (float)lo;
        cfg->rope_high_freq_factor = (float)hi;
        cfg->rope_orig_max_pos = om;
    } else if (strcmp(type, "default") != 0 && strcmp(type, "mrope") != 0) {
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: rope type '%.32s' is not supported (default, llama3, mrope)",
                         path, type);
    }
    if (ms || strcmp(type, "mrope") == 0) {
        if (cfg->rope_type == OSC_ROPE_LLAMA3)
            return osc_error(OSC_ERR_FORMAT, "%s: mrope_section with llama3 rope scaling", path);
        if (!cJSON_IsArray(ms) || cJSON_GetArraySize(ms) != 3)
            return osc_error(OSC_ERR_FORMAT, "%s: mrope_section must be a list of 3 integers", path);
        int i = 0;
        for (const cJSON *e = ms->child; e; e = e->next, i++)
            if (!json_to_int(e, &cfg->mrope_section[i]) || cfg->mrope_section[i] < 0)
                return osc_error(OSC_ERR_FORMAT, "%s: mrope_section must be a list of 3 non-negative integers",
                                 path);
        cfg->rope_type = OSC_ROPE_MROPE;
    }
    return OSC_OK;
}

/* ---- validation ---- */

osc_status osc_llm_config_validate(const osc_llm_config *c, const char *w) {
    if (!w) w = "config";
#define RANGE(v, lo, hi, name)                                                                       \
    if ((v) < (lo) || (v) > (hi))                                                                   \
        return osc_error(OSC_ERR_FORMAT, "%s: %s = %d is out of range [%d, %d]", w, name, (int)(v), \
                         (int)(lo), (int)(hi));
    RANGE(c->vocab_size, 1, 1 << 24, "vocab_size");
    RANGE(c->hidden_size, 1, 65536, "hidden_size");
    RANGE(c->intermediate_size, 1, 1 << 20, "intermediate_size");
    RANGE(c->n_layers, 1, 1024, "num_hidden_layers");
    RANGE(c->n_heads, 1, 1024, "num_attention_heads");
    RANGE(c->n_kv_heads, 1, 1024, "num_key_value_heads");
    RANGE(c->head_dim, 2, 512, "head_dim");
    RANGE(c->max_pos, 1, 1 << 24, "max_position_embeddings");
#undef RANGE
    if (c->n_heads % c->n_kv_heads != 0)
        return osc_error(OSC_ERR_FORMAT, "%s: num_attention_heads %d is not divisible by num_key_value_heads %d",
                         w, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0) return osc_error(OSC_ERR_FORMAT, "%s: head_dim %d is odd", w, c->head_dim);
    if ((int64_t)c->n_heads * c->head_dim > 65536)
        return osc_error(OSC_ERR_FORMAT, "%s: num_attention_heads * head_dim is too large", w);
    if (!(c->rms_eps > 0 && c->rms_eps < 1))
        return osc_error(OSC_ERR_FORMAT, "%s: rms_norm_eps %g is not in (0, 1)", w, (double)c->rms_eps);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return osc_error(OSC_ERR_FORMAT, "%s: rope_theta %g must be positive", w, c->rope_theta);
    if (c->rope_type == OSC_ROPE_LLAMA3) {
        if (!(c->rope_factor > 0 && c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
              c->rope_orig_max_pos > 0 && isfinite(c->rope_factor) && isfinite(c->rope_high_freq_factor)))
            return osc_error(OSC_ERR_FORMAT,
                             "%s: llama3 rope scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                             "original_max_position_embeddings > 0",
                             w);
    }
    if (c->rope_type == OSC_ROPE_MROPE) {
        int64_t s = (int64_t)c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2];
        if (s != c->head_dim / 2)
            return osc_error(OSC_ERR_FORMAT, "%s: mrope_section [%d,%d,%d] sums to %lld, not head_dim/2 = %d", w,
                             c->mrope_section[0], c->mrope_section[1], c->mrope_section[2], (long long)s,
                             c->head_dim / 2);
    }
    if ((c->arch == OSC_ARCH_QWEN2_5_OMNI || c->arch == OSC_ARCH_QWEN2_5_VL) && c->rope_type != OSC_ROPE_MROPE)
        return osc_error(OSC_ERR_FORMAT, "%s: %s needs rope_scaling.mrope_section", w, osc_arch_name(c->arch));
    if (c->n_eos < 0 || c->n_eos > OSC_CONFIG_MAX_EOS)
        return osc_error(OSC_ERR_FORMAT, "%s: bad eos count %d", w, c->n_eos);
    const struct { const char *name; int v; } ids[] = {
        {"bos_token_id", c->bos_id},           {"pad_token_id", c->pad_id},
        {"image_token_id", c->image_token_id}, {"video_token_id", c->video_token_id},
        {"audio_token_id", c->audio_token_id}, {"vision_start_token_id", c->vision_start_id},
        {"vision_end_token_id", c->vision_end_id}, {"audio_start_token_id", c->audio_start_id},
        {"audio_end_token_id", c->audio_end_id},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i].v < -1 || ids[i].v >= c->vocab_size)
            return osc_error(OSC_ERR_FORMAT, "%s: %s %d is outside the vocabulary (%d)", w, ids[i].name, ids[i].v,
                             c->vocab_size);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            return osc_error(OSC_ERR_FORMAT, "%s: eos_token_id %d is outside the vocabulary (%d)", w, c->eos_ids[i],
                             c->vocab_size);
    return OSC_OK;
}

/* ---- config.json ---- */

static osc_status cfg_parse(const char *path, const cJSON *root, osc_llm_config *cfg) {
    if (!cJSON_IsObject(root)) return osc_error(OSC_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *jmt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(jmt)) return osc_error(OSC_ERR_FORMAT, "%s: missing model_type", path);
    const char *mt = jmt->valuestring;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);

    const cJSON *tc = root;      /* text (decoder) fields */
    const cJSON *tok = NULL;     /* where the multimodal token ids live */
    int bias_default = 0, max_pos_default = 32768;
    if (strcmp(mt, "qwen2") == 0) {
        cfg->arch = OSC_ARCH_QWEN2;
    } else if (strcmp(mt, "qwen3") == 0) {
        cfg->arch = OSC_ARCH_QWEN3;
        cfg->qk_norm = 1;
        max_pos_default = 32768;
    } else if (strcmp(mt, "llama") == 0) {
        cfg->arch = OSC_ARCH_LLAMA;
        max_pos_default = 2048;
    } else if (strcmp(mt, "qwen2_5_omni") == 0 || strcmp(mt, "qwen2_5_omni_thinker") == 0) {
        cfg->arch = OSC_ARCH_QWEN2_5_OMNI;
        const cJSON *th = root;
        if (strcmp(mt, "qwen2_5_omni") == 0) {
            th = obj_item(root, "thinker_config");
            if (!th) return osc_error(OSC_ERR_FORMAT, "%s: qwen2_5_omni config without a thinker_config object", path);
        }
        tc = obj_item(th, "text_config");
        if (!tc) return osc_error(OSC_ERR_FORMAT, "%s: thinker config without a text_config object", path);
        tok = th;
    } else if (strcmp(mt, "qwen2_5_vl") == 0 || strcmp(mt, "qwen2_5_vl_text") == 0) {
        cfg->arch = OSC_ARCH_QWEN2_5_VL;
        /* Newer checkpoints nest the decoder under text_config; older ones keep it at the top. */
        const cJSON *t = obj_item(root, "text_config");
        if (t && cJSON_GetObjectItemCaseSensitive(t, "hidden_size")) tc = t;
        tok = root;
        max_pos_default = 128000;
    } else {
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "%s: model_type '%.48s' is not supported (supported: qwen2, qwen3, llama, qwen2_5_omni, "
                         "qwen2_5_omni_thinker, qwen2_5_vl)",
                         path, mt);
    }
    /* Text fields: the decoder's object first, then its parents (VL may split them). */
    cfg_ctx c = {path, {tc, tc == root ? NULL : tok, tc == root ? NULL : root}, 3};

    OSC_TRY(cfg_req_int(&c, "vocab_size", &cfg->vocab_size));
    OSC_TRY(cfg_req_int(&c, "hidden_size", &cfg->hidden_size));
    OSC_TRY(cfg_req_int(&c, "intermediate_size", &cfg->intermediate_size));
    OSC_TRY(cfg_req_int(&c, "num_hidden_layers", &cfg->n_layers));
    OSC_TRY(cfg_req_int(&c, "num_attention_heads", &cfg->n_heads));
    if (cfg->n_heads <= 0)
        return osc_error(OSC_ERR_FORMAT, "%s: num_attention_heads %d must be positive", path, cfg->n_heads);
    int r = cfg_int(&c, "num_key_value_heads", &cfg->n_kv_heads);
    if (r < 0) return OSC_ERR_FORMAT;
    if (r == 0) cfg->n_kv_heads = cfg->n_heads;
    /* Qwen3Config defaults head_dim to 128; the others derive it. */
    r = cfg_int(&c, "head_dim", &cfg->head_dim);
    if (r < 0) return OSC_ERR_FORMAT;
    if (r == 0) cfg->head_dim = cfg->arch == OSC_ARCH_QWEN3 ? 128 : cfg->hidden_size / cfg->n_heads;

    double d = 1e-6;
    if (cfg_num(&c, "rms_norm_eps", &d) < 0) return OSC_ERR_FORMAT;
    cfg->rms_eps = (float)d;
    OSC_TRY(cfg_rope(&c, cfg));
    cfg->max_pos = max_pos_default;
    if (cfg_int(&c, "max_position_embeddings", &cfg->max_pos) < 0) return OSC_ERR_FORMAT;

    /* The Qwen2 decoder (qwen2, omni text, VL text) always has q/k/v biases. */
    if (cfg->arch == OSC_ARCH_QWEN2 || cfg->arch == OSC_ARCH_QWEN2_5_OMNI || cfg->arch == OSC_ARCH_QWEN2_5_VL) {
        cfg->attn_bias = 1;
    } else {
        cfg->attn_bias = bias_default;
        if (cfg_bool(&c, "attention_bias", &cfg->attn_bias) < 0) return OSC_ERR_FORMAT;
        int mlp_bias = 0;
        if (cfg_bool(&c, "mlp_bias", &mlp_bias) < 0) return OSC_ERR_FORMAT;
        if (mlp_bias) return osc_error(OSC_ERR_UNSUPPORTED, "%s: mlp_bias = true is not supported", path);
    }
    cfg->tie_embeddings = 0; /* Qwen2/Qwen3/Llama/omni thinker class defaults */
    if (cfg_bool(&c, "tie_word_embeddings", &cfg->tie_embeddings) < 0) return OSC_ERR_FORMAT;
    int sw = 0;
    if (cfg_bool(&c, "use_sliding_window", &sw) < 0) return OSC_ERR_FORMAT;
    if (sw) return osc_error(OSC_ERR_UNSUPPORTED, "%s: use_sliding_window = true is not supported", path);
    const cJSON *act = cfg_find(&c, "hidden_act");
    if (act && (!cJSON_IsString(act) || (strcmp(act->valuestring, "silu") != 0 && strcmp(act->valuestring, "swish") != 0)))
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: hidden_act must be silu", path);

    /* Special ids: the token-id holder (thinker / VL top level) first, then the decoder's. */
    cfg_ctx ic = {path, {tok, tc, root}, 3};
    static const char *const bos_k[] = {"bos_token_id"}, *const pad_k[] = {"pad_token_id"};
    OSC_TRY(cfg_token(&ic, bos_k, 1, &cfg->bos_id));
    OSC_TRY(cfg_token(&ic, pad_k, 1, &cfg->pad_id));
    OSC_TRY(cfg_id_list(path, cfg_find(&ic, "eos_token_id"), "eos_token_id", cfg->eos_ids, &cfg->n_eos));

    cfg->image_token_id = cfg->video_token_id = cfg->audio_token_id = -1;
    cfg->vision_start_id = cfg->vision_end_id = cfg->audio_start_id = cfg->audio_end_id = -1;
    if (tok) {
        cfg_ctx mc = {path, {tok}, 1};
        static const char *const img[] = {"image_token_id", "image_token_index"};
        static const char *const vid[] = {"video_token_id", "video_token_index"};
        static const char *const aud[] = {"audio_token_id", "audio_token_index"};
        static const char *const vs[] = {"vision_start_token_id"}, *const ve[] = {"vision_end_token_id"};
        static const char *const as[] = {"audio_start_token_id"}, *const ae[] = {"audio_end_token_id"};
        OSC_TRY(cfg_token(&mc, img, 2, &cfg->image_token_id));
        OSC_TRY(cfg_token(&mc, vid, 2, &cfg->video_token_id));
        OSC_TRY(cfg_token(&mc, aud, 2, &cfg->audio_token_id));
        OSC_TRY(cfg_token(&mc, vs, 1, &cfg->vision_start_id));
        OSC_TRY(cfg_token(&mc, ve, 1, &cfg->vision_end_id));
        OSC_TRY(cfg_token(&mc, as, 1, &cfg->audio_start_id));
        OSC_TRY(cfg_token(&mc, ae, 1, &cfg->audio_end_id));
    }
    return OSC_OK;
}

osc_status osc_config_load(const char *dir, osc_llm_config *cfg) {
    if (!dir || !cfg) return osc_error(OSC_ERR_INVALID_ARG, "osc_config_load: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    char path[4096];
    osc_path_join(path, sizeof path, dir, "config.json");
    char *text = NULL;
    size_t len = 0;
    OSC_TRY(osc_read_file(path, CFG_MAX_BYTES, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return osc_error(OSC_ERR_FORMAT, "%s: not valid JSON", path);
    osc_status s = cfg_parse(path, root, cfg);
    cJSON_Delete(root);
    if (s == OSC_OK) s = osc_llm_config_validate(cfg, path);
    return s;
}

/* ---- generation_config.json ---- */

void osc_gen_config_default(osc_gen_config *g) {
    memset(g, 0, sizeof *g);
    g->temperature = 0.0f;
    g->top_k = 0;
    g->top_p = 1.0f;
    g->min_p = 0.0f;
    g->repeat_penalty = 1.0f;
    g->do_sample = 0;
    g->n_eos = 0;
    g->bos_id = -1;
}

osc_status osc_gen_config_load(const char *dir, osc_gen_config *g) {
    if (!dir || !g) return osc_error(OSC_ERR_INVALID_ARG, "osc_gen_config_load: NULL argument");
    osc_gen_config_default(g);
    char path[4096];
    osc_path_join(path, sizeof path, dir, "generation_config.json");
    if (!osc_file_exists(path)) return OSC_OK;
    char *text = NULL;
    size_t len = 0;
    OSC_TRY(osc_read_file(path, CFG_MAX_BYTES, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return osc_error(OSC_ERR_FORMAT, "%s: not valid JSON", path);
    osc_status s = OSC_OK;
    if (!cJSON_IsObject(root)) {
        s = osc_error(OSC_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    cfg_ctx c = {path, {root}, 1};
    /* transformers' GenerationConfig: when sampling, absent temperature = 1 and top_k = 50. */
    double temp = 1.0, top_p = 1.0, min_p = 0.0, rp = 1.0;
    int top_k = 50, do_sample = 0, bos = -1;
    if (cfg_bool(&c, "do_sample", &do_sample) < 0 || cfg_num(&c, "temperature", &temp) < 0 ||
        cfg_num(&c, "top_p", &top_p) < 0 || cfg_num(&c, "min_p", &min_p) < 0 ||
        cfg_num(&c, "repetition_penalty", &rp) < 0 || cfg_int(&c, "top_k", &top_k) < 0 ||
        cfg_int(&c, "bos_token_id", &bos) < 0) {
        s = OSC_ERR_FORMAT;
        goto done;
    }
    if (!(temp >= 0) || !(top_p > 0 && top_p <= 1) || !(min_p >= 0 && min_p <= 1) || !(rp > 0) || top_k < 0 ||
        bos < -1) {
        s = osc_error(OSC_ERR_FORMAT,
                      "%s: out-of-range value (need temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, "
                      "repetition_penalty > 0, top_k >= 0)",
                      path);
        goto done;
    }
    s = cfg_id_list(path, cfg_find(&c, "eos_token_id"), "eos_token_id", g->eos_ids, &g->n_eos);
    if (s != OSC_OK) goto done;
    g->do_sample = do_sample && temp > 0;
    g->temperature = g->do_sample ? (float)temp : 0.0f;
    g->top_k = top_k;
    g->top_p = (float)top_p;
    g->min_p = (float)min_p;
    g->repeat_penalty = (float)rp;
    g->bos_id = bos;
done:
    cJSON_Delete(root);
    return s;
}
