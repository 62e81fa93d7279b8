/* oscar: public C API.
 *
 * Ownership: every *_new / *_load returns a handle the caller frees with the matching *_free.
 * Strings passed in are copied; strings returned are owned by the library and stay valid until
 * the owning handle is freed (or the next call on it, where noted).
 * Errors: functions return osc_status; on failure osc_last_error() gives a human-readable
 * message (thread-local, valid until the next failing call on the same thread).
 * Thread-safety: a model may be shared by sessions on different threads only for reading;
 * a session must be used from one thread at a time. The library never prints to stdout.
 */
#ifndef OSCAR_H
#define OSCAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum osc_status {
    OSC_OK = 0,
    OSC_ERR_INVALID_ARG,  /* a bad argument from the caller */
    OSC_ERR_IO,           /* a file could not be opened or read */
    OSC_ERR_FORMAT,       /* a file is malformed, truncated or lies about its contents */
    OSC_ERR_OOM,          /* host or device memory exhausted */
    OSC_ERR_UNSUPPORTED,  /* a feature, architecture or library not built in */
    OSC_ERR_CONTEXT,      /* the prompt or generation does not fit in the context */
    OSC_ERR_DEVICE,       /* a CUDA error */
    OSC_ERR_CANCELLED     /* a callback asked to stop */
} osc_status;

/* Message of the last failure on this thread ("" if none). */
const char *osc_last_error(void);
const char *osc_status_name(osc_status s);

typedef enum osc_log_level { OSC_LOG_DEBUG = 0, OSC_LOG_INFO, OSC_LOG_WARN, OSC_LOG_ERROR } osc_log_level;
typedef void (*osc_log_fn)(osc_log_level level, const char *msg, void *user);
/* Route library log lines to fn (NULL: drop them). Default: none are printed. */
void osc_set_log_callback(osc_log_fn fn, void *user, osc_log_level min_level);

typedef enum osc_device_kind { OSC_DEVICE_CPU = 0, OSC_DEVICE_CUDA = 1, OSC_DEVICE_AUTO = 2 } osc_device_kind;

typedef struct osc_model osc_model;
typedef struct osc_session osc_session;

typedef struct osc_model_params {
    osc_device_kind device; /* CPU by default */
    int n_threads;          /* CPU threads, 0 = all cores */
    const char *kv_mode;    /* the KV cache mode sessions will use (NULL or "auto": oscar2 when the
                             * model's head_dim allows it, else bf16); a rotating
                             * mode (rot2, oscar2, oscar4) folds the value rotation into the
                             * weights at load */
} osc_model_params;
osc_model_params osc_model_default_params(void);

/* Load a HuggingFace snapshot folder (config.json, *.safetensors, tokenizer.json). */
osc_status osc_model_load(const char *dir, const osc_model_params *params, osc_model **out);
void osc_model_free(osc_model *m);
/* Short description, e.g. "qwen2 2 layers, hidden 128, vocab 600". Owned by the model. */
const char *osc_model_describe(const osc_model *m);
/* The KV cache mode sessions of this model use by default (after "auto" was resolved). */
const char *osc_model_kv_mode(const osc_model *m);

typedef struct osc_session_params {
    int n_ctx;                 /* context length in tokens; 0 = min(model max, 4096) */
    const char *kv_mode;       /* NULL: the model's (osc_model_params.kv_mode). One of bf16, int8,
                                * kivi2, kivi4, rot2, oscar2, oscar4. A rotating mode needs a
                                * model loaded with a rotating kv_mode. */
    const char *system_prompt; /* NULL: the model family's default */
} osc_session_params;
osc_session_params osc_session_default_params(void);

osc_status osc_session_new(osc_model *m, const osc_session_params *params, osc_session **out);
void osc_session_free(osc_session *s);

/* Append one chat message (role "system", "user" or "assistant") in the model's chat template.
 * Nothing is computed until osc_session_generate. */
osc_status osc_session_add_message(osc_session *s, const char *role, const char *text);
/* Append raw text (no template); special tokens written in it are parsed. */
osc_status osc_session_add_text(osc_session *s, const char *text);

typedef struct osc_sampling_params {
    int max_tokens;         /* default 256 */
    float temperature;      /* 0 = greedy; default from generation_config.json, else 0 */
    int top_k;              /* 0 = off */
    float top_p;            /* 1 = off */
    float min_p;            /* 0 = off */
    float repeat_penalty;   /* 1 = off */
    uint64_t seed;
} osc_sampling_params;
/* Defaults; with a model, its generation_config.json values are used. */
osc_sampling_params osc_sampling_default_params(const osc_model *m);

typedef struct osc_gen_stats {
    int prompt_tokens;
    int gen_tokens;
    double prompt_seconds;
    double gen_seconds;
    int stopped_by_eos;
} osc_gen_stats;

/* Called for every generated token with the text it completes (possibly "" while a UTF-8
 * character is incomplete). Return non-zero to stop. */
typedef int (*osc_token_fn)(const char *text, int32_t token, void *user);

/* Run the pending input through the model and generate the assistant's reply (the generation
 * prompt of the template is added when the last message was not from the assistant).
 * The reply is appended to the session history. stats may be NULL. */
osc_status osc_session_generate(osc_session *s, const osc_sampling_params *sp,
                                osc_token_fn fn, void *user, osc_gen_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
