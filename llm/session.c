/* The public API of include/oscar.h: model = decoder + tokenizer + generation defaults;
 * session = one conversation with its own KV cache. A session re-renders the whole
 * conversation with the chat template at every turn and reuses the longest cached prefix,
 * so earlier turns are never recomputed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/config.h"
#include "../core/device.h"
#include "../core/fileio.h"
#include "../core/gguf.h"
#include "../kernels/ops.h"
#include "chat.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

#define OSC_MAX_STOP 16

struct osc_model {
    osc_llm *llm;
    char kv_mode[32];
    osc_tokenizer *tok;
    osc_gen_config gen;
    int chat_fmt; /* -1: none (raw text), else osc_chat_format */
    int32_t stop[OSC_MAX_STOP];
    int n_stop;
    char desc[384];
};

typedef struct msg {
    char *role; /* NULL for raw text */
    char *text;
} msg;

struct osc_session {
    osc_model *m;
    osc_session_params p;
    char *system_prompt;
    char kv_mode[32];
    osc_kv *kv;
    osc_llm_ctx *ctx;
    msg *msgs;
    int n_msgs, cap_msgs;
    int32_t *cached; /* ids whose K/V are in the cache, in order */
    int n_cached;
    float *logits;
};

osc_model_params osc_model_default_params(void) {
    osc_model_params p = {OSC_DEVICE_CPU, 0, NULL};
    return p;
}

osc_session_params osc_session_default_params(void) {
    osc_session_params p = {0, NULL, NULL};
    return p;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void add_stop(osc_model *m, int32_t id) {
    if (id < 0 || m->n_stop >= OSC_MAX_STOP) return;
    for (int i = 0; i < m->n_stop; i++)
        if (m->stop[i] == id) return;
    m->stop[m->n_stop++] = id;
}

osc_status osc_model_load(const char *dir, const osc_model_params *params, osc_model **out) {
    *out = NULL;
    if (!dir) return osc_error(OSC_ERR_INVALID_ARG, "no model directory given");
    osc_model_params p = params ? *params : osc_model_default_params();
    osc_dev dev = OSC_DEV_CPU;
    if (p.device == OSC_DEVICE_CUDA || (p.device == OSC_DEVICE_AUTO && osc_device_cuda_available())) {
        if (!osc_device_cuda_available())
            return osc_error(OSC_ERR_UNSUPPORTED, "CUDA requested but no usable GPU (or this build has no CUDA)");
        dev = OSC_DEV_CUDA;
    }
    osc_cpu_set_threads(p.n_threads);
    osc_model *m = calloc(1, sizeof *m);
    if (!m) return osc_error(OSC_ERR_OOM, "out of host memory");
    char path[4096];
    const int gguf = osc_gguf_is_file(dir); /* one .gguf file: tokenizer inside, no generation config */
    osc_status s = osc_llm_load(dir, dev, &m->llm);
    if (s == OSC_OK && gguf) s = osc_tokenizer_load_gguf(dir, &m->tok);
    else if (s == OSC_OK) s = osc_tokenizer_load(osc_path_join(path, sizeof path, dir, "tokenizer.json"), &m->tok);
    if (gguf) osc_gen_config_default(&m->gen);
    else if (s == OSC_OK) s = osc_gen_config_load(dir, &m->gen);
    if (s == OSC_OK) {
        const char *mode = osc_kv_mode_for(p.kv_mode, osc_llm_config_of(m->llm)->head_dim);
        if ((!p.kv_mode || !strcmp(p.kv_mode, "auto")) && strcmp(mode, "oscar2"))
            osc_log(OSC_LOG_INFO, "KV cache: bf16 (oscar2 needs a power-of-two head_dim >= 32; this model has %d)",
                    osc_llm_config_of(m->llm)->head_dim);
        snprintf(m->kv_mode, sizeof m->kv_mode, "%s", mode);
    }
    if (s == OSC_OK) {
        int rot = osc_kv_mode_rotates(m->kv_mode);
        if (rot < 0) s = osc_error(OSC_ERR_UNSUPPORTED, "unknown KV cache mode '%s' (known: %s)", m->kv_mode, osc_kv_modes());
        else if (rot) s = osc_llm_fold_v_rotation(m->llm);
    }
    if (s != OSC_OK) {
        osc_model_free(m);
        return s;
    }
    const osc_llm_config *c = osc_llm_config_of(m->llm);
    if (osc_tokenizer_vocab_size(m->tok) > c->vocab_size) {
        s = osc_error(OSC_ERR_FORMAT, "%s: %s has %d tokens but the model's vocabulary is %d", dir,
                      gguf ? "the tokenizer" : "tokenizer.json", osc_tokenizer_vocab_size(m->tok), c->vocab_size);
        osc_model_free(m);
        return s;
    }
    m->chat_fmt = -1;
    if (osc_tokenizer_token_id(m->tok, "<|im_start|>") >= 0) m->chat_fmt = OSC_CHAT_CHATML;
    else if (osc_tokenizer_token_id(m->tok, "<|start_header_id|>") >= 0) m->chat_fmt = OSC_CHAT_LLAMA3;
    for (int i = 0; i < c->n_eos; i++) add_stop(m, c->eos_ids[i]);
    for (int i = 0; i < m->gen.n_eos; i++) add_stop(m, m->gen.eos_ids[i]);
    if (m->chat_fmt == OSC_CHAT_CHATML) add_stop(m, osc_tokenizer_token_id(m->tok, "<|im_end|>"));
    if (m->chat_fmt == OSC_CHAT_LLAMA3) add_stop(m, osc_tokenizer_token_id(m->tok, "<|eot_id|>"));
    snprintf(m->desc, sizeof m->desc, "%s; chat template %s; KV cache %s", osc_llm_describe(m->llm),
             m->chat_fmt == OSC_CHAT_CHATML ? "ChatML" : m->chat_fmt == OSC_CHAT_LLAMA3 ? "Llama-3" : "none", m->kv_mode);
    *out = m;
    return OSC_OK;
}

void osc_model_free(osc_model *m) {
    if (!m) return;
    osc_llm_free(m->llm);
    osc_tokenizer_free(m->tok);
    free(m);
}

const char *osc_model_describe(const osc_model *m) { return m->desc; }
const char *osc_model_kv_mode(const osc_model *m) { return m->kv_mode; }

osc_sampling_params osc_sampling_default_params(const osc_model *m) {
    osc_sampling_params p = {256, 0.0f, 0, 1.0f, 0.0f, 1.0f, 0};
    if (m && m->gen.do_sample) {
        p.temperature = m->gen.temperature;
        p.top_k = m->gen.top_k;
        p.top_p = m->gen.top_p;
        p.min_p = m->gen.min_p;
    }
    if (m) p.repeat_penalty = m->gen.repeat_penalty > 0 ? m->gen.repeat_penalty : 1.0f;
    return p;
}

osc_status osc_session_new(osc_model *m, const osc_session_params *params, osc_session **out) {
    *out = NULL;
    osc_session *s = calloc(1, sizeof *s);
    if (!s) return osc_error(OSC_ERR_OOM, "out of host memory");
    s->m = m;
    s->p = params ? *params : osc_session_default_params();
    const osc_llm_config *c = osc_llm_config_of(m->llm);
    if (!s->p.kv_mode) s->p.kv_mode = m->kv_mode;
    snprintf(s->kv_mode, sizeof s->kv_mode, "%s", s->p.kv_mode);
    s->p.kv_mode = s->kv_mode;
    if (osc_kv_mode_rotates(s->kv_mode) == 1 && !osc_llm_v_rotated(m->llm)) {
        osc_status e = osc_error(OSC_ERR_INVALID_ARG, "KV mode '%s' needs the value rotation folded into the weights: "
                                 "load the model with kv_mode '%s' (oscar --kv does this)", s->kv_mode, s->kv_mode);
        free(s->system_prompt);
        free(s);
        return e;
    }
    if (s->p.n_ctx <= 0) s->p.n_ctx = c->max_pos > 0 && c->max_pos < 4096 ? c->max_pos : 4096;
    if (s->p.system_prompt) s->system_prompt = strdup(s->p.system_prompt);
    s->p.system_prompt = s->system_prompt;
    osc_status st = osc_llm_kv_new(m->llm, s->p.kv_mode, s->p.n_ctx, &s->kv);
    if (st == OSC_OK) st = osc_llm_ctx_new(m->llm, 256, &s->ctx);
    if (st == OSC_OK) {
        s->cached = malloc((size_t)s->p.n_ctx * sizeof(int32_t));
        s->logits = malloc((size_t)c->vocab_size * sizeof(float));
        if (!s->cached || !s->logits) st = osc_error(OSC_ERR_OOM, "out of host memory");
    }
    if (st != OSC_OK) {
        osc_session_free(s);
        return st;
    }
    *out = s;
    return OSC_OK;
}

void osc_session_free(osc_session *s) {
    if (!s) return;
    for (int i = 0; i < s->n_msgs; i++) {
        free(s->msgs[i].role);
        free(s->msgs[i].text);
    }
    free(s->msgs);
    osc_kv_free(s->kv);
    osc_llm_ctx_free(s->ctx);
    free(s->cached);
    free(s->logits);
    free(s->system_prompt);
    free(s);
}

static osc_status push_msg(osc_session *s, const char *role, const char *text, size_t len) {
    if (s->n_msgs == s->cap_msgs) {
        int nc = s->cap_msgs ? s->cap_msgs * 2 : 8;
        msg *nm = realloc(s->msgs, (size_t)nc * sizeof *nm);
        if (!nm) return osc_error(OSC_ERR_OOM, "out of host memory");
        s->msgs = nm;
        s->cap_msgs = nc;
    }
    msg *g = &s->msgs[s->n_msgs];
    g->role = role ? strdup(role) : NULL;
    g->text = strndup(text, len);
    if (!g->text || (role && !g->role)) return osc_error(OSC_ERR_OOM, "out of host memory");
    s->n_msgs++;
    return OSC_OK;
}

osc_status osc_session_add_message(osc_session *s, const char *role, const char *text) {
    if (!role || !text) return osc_error(OSC_ERR_INVALID_ARG, "add_message: role and text are required");
    if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant"))
        return osc_error(OSC_ERR_INVALID_ARG, "add_message: unknown role '%s' (system, user, assistant)", role);
    for (int i = 0; i < s->n_msgs; i++)
        if (!s->msgs[i].role) return osc_error(OSC_ERR_INVALID_ARG, "add_message: this session holds raw text; do not mix");
    if (s->m->chat_fmt < 0)
        return osc_error(OSC_ERR_UNSUPPORTED, "this model's tokenizer has no known chat template; use raw text");
    return push_msg(s, role, text, strlen(text));
}

osc_status osc_session_add_text(osc_session *s, const char *text) {
    if (!text) return osc_error(OSC_ERR_INVALID_ARG, "add_text: NULL text");
    for (int i = 0; i < s->n_msgs; i++)
        if (s->msgs[i].role) return osc_error(OSC_ERR_INVALID_ARG, "add_text: this session holds chat messages; do not mix");
    return push_msg(s, NULL, text, strlen(text));
}

/* The whole conversation as text, with the generation prompt when a reply is due. */
static osc_status render(osc_session *s, char **out) {
    *out = NULL;
    if (s->n_msgs == 0) return osc_error(OSC_ERR_INVALID_ARG, "generate: nothing to answer (add a message first)");
    if (!s->msgs[0].role) {
        size_t n = 1;
        for (int i = 0; i < s->n_msgs; i++) n += strlen(s->msgs[i].text);
        char *b = malloc(n);
        if (!b) return osc_error(OSC_ERR_OOM, "out of host memory");
        b[0] = 0;
        for (int i = 0; i < s->n_msgs; i++) strcat(b, s->msgs[i].text);
        *out = b;
        return OSC_OK;
    }
    osc_chat_msg *cm = malloc((size_t)s->n_msgs * sizeof *cm);
    if (!cm) return osc_error(OSC_ERR_OOM, "out of host memory");
    for (int i = 0; i < s->n_msgs; i++) {
        cm[i].role = s->msgs[i].role;
        cm[i].content = s->msgs[i].text;
    }
    int omni = osc_llm_config_of(s->m->llm)->arch == OSC_ARCH_QWEN2_5_OMNI;
    const char *sys = s->system_prompt ? s->system_prompt : osc_chat_default_system(s->m->chat_fmt, omni);
    int gen = strcmp(s->msgs[s->n_msgs - 1].role, "assistant") != 0;
    osc_status st = osc_chat_render(s->m->chat_fmt, cm, s->n_msgs, gen, sys, out);
    free(cm);
    return st;
}

static int is_stop(const osc_model *m, int32_t t) {
    for (int i = 0; i < m->n_stop; i++)
        if (m->stop[i] == t) return 1;
    return 0;
}

osc_status osc_session_generate(osc_session *s, const osc_sampling_params *sp_in, osc_token_fn fn, void *user,
                                osc_gen_stats *stats) {
    osc_model *m = s->m;
    osc_sampling_params sp = sp_in ? *sp_in : osc_sampling_default_params(m);
    osc_gen_stats st = {0};
    char *text = NULL;
    int32_t *ids = NULL;
    int n_ids = 0;
    osc_sampler *smp = NULL;
    char *reply = NULL;
    size_t reply_len = 0, reply_cap = 0;
    osc_status rc = render(s, &text);
    if (rc == OSC_OK) rc = osc_tokenizer_encode(m->tok, text, strlen(text), 1, &ids, &n_ids);
    free(text);
    if (rc != OSC_OK) goto done;
    if (n_ids == 0) {
        rc = osc_error(OSC_ERR_INVALID_ARG, "generate: the prompt is empty");
        goto done;
    }
    if (n_ids >= s->p.n_ctx) {
        rc = osc_error(OSC_ERR_CONTEXT, "the prompt is %d tokens, but the context holds %d (raise --ctx)", n_ids, s->p.n_ctx);
        goto done;
    }
    /* reuse the longest cached prefix; at least the last prompt token is recomputed for its logits */
    int keep = 0;
    while (keep < s->n_cached && keep < n_ids - 1 && s->cached[keep] == ids[keep]) keep++;
    osc_kv_truncate(s->kv, keep);
    s->n_cached = keep;
    osc_sampler_params spp = {sp.temperature, sp.top_k, sp.top_p, sp.min_p, sp.repeat_penalty, 0, sp.seed};
    const int V = osc_llm_config_of(m->llm)->vocab_size;
    rc = osc_sampler_new(&spp, V, &smp);
    if (rc != OSC_OK) goto done;

    double t0 = now_s();
    int st2[2] = {0, n_ids - keep};
    osc_llm_batch b = {.n_seq = 1, .seq_start = st2, .tokens = ids + keep, .kv = &s->kv, .all_logits = 0};
    rc = osc_llm_forward(m->llm, s->ctx, &b, s->logits);
    if (rc != OSC_OK) goto done;
    memcpy(s->cached + keep, ids + keep, (size_t)(n_ids - keep) * sizeof(int32_t));
    s->n_cached = n_ids;
    st.prompt_tokens = n_ids - keep;
    double t1 = now_s();
    st.prompt_seconds = t1 - t0;

    osc_detok dt;
    osc_detok_init(&dt);
    for (int i = 0; i < sp.max_tokens; i++) {
        int32_t t = osc_sampler_sample(smp, s->logits, s->cached, s->n_cached);
        st.gen_tokens++;
        int stop = is_stop(m, t);
        const char *piece = stop ? "" : osc_detok_push(&dt, m->tok, t, 1);
        size_t pl = strlen(piece);
        if (reply_len + pl + 1 > reply_cap) {
            size_t nc = reply_cap ? reply_cap * 2 : 256;
            while (nc < reply_len + pl + 1) nc *= 2;
            char *nr = realloc(reply, nc);
            if (!nr) {
                rc = osc_error(OSC_ERR_OOM, "out of host memory");
                goto done;
            }
            reply = nr;
            reply_cap = nc;
        }
        memcpy(reply + reply_len, piece, pl + 1);
        reply_len += pl;
        if (fn && !stop && fn(piece, t, user)) break;
        if (stop) {
            st.stopped_by_eos = 1;
            break;
        }
        if (i + 1 == sp.max_tokens) break;
        if (s->n_cached + 1 >= s->p.n_ctx) {
            osc_log(OSC_LOG_WARN, "context of %d tokens is full; stopping generation", s->p.n_ctx);
            break;
        }
        int st3[2] = {0, 1};
        osc_llm_batch b1 = {.n_seq = 1, .seq_start = st3, .tokens = &t, .kv = &s->kv, .all_logits = 0};
        rc = osc_llm_forward(m->llm, s->ctx, &b1, s->logits);
        if (rc != OSC_OK) goto done;
        s->cached[s->n_cached++] = t;
    }
    {
        const char *tail = osc_detok_flush(&dt);
        size_t tl = strlen(tail);
        if (tl && fn) fn(tail, -1, user);
        if (tl) {
            char *nr = realloc(reply, reply_len + tl + 1);
            if (nr) {
                memcpy(nr + reply_len, tail, tl + 1);
                reply = nr;
                reply_len += tl;
            }
        }
    }
    st.gen_seconds = now_s() - t1;
    /* the reply joins the conversation */
    if (s->n_msgs && s->msgs[0].role) rc = push_msg(s, "assistant", reply ? reply : "", reply_len);
    else rc = push_msg(s, NULL, reply ? reply : "", reply_len);
done:
    osc_sampler_free(smp);
    free(ids);
    free(reply);
    if (stats) *stats = st;
    return rc;
}
