/* Model and generation configs: config.json and generation_config.json of a Hugging Face
 * checkpoint directory, parsed with the semantics (defaults) of transformers' config classes.
 *
 * Supported model_type values: qwen2, qwen3, llama, qwen2_5_omni (full omni config with
 * thinker_config), qwen2_5_omni_thinker, qwen2_5_vl. Both the classic rope_theta/rope_scaling
 * fields and transformers 5.x rope_parameters are accepted.
 *
 * Errors: OSC_ERR_IO (file cannot be read), OSC_ERR_FORMAT ("<dir>/config.json: <problem>"),
 * OSC_ERR_UNSUPPORTED (unknown model_type; the message lists the supported ones).
 * The loaders fill caller-owned structs and keep no state; they are thread-safe.
 */
#ifndef OSC_CORE_CONFIG_H
#define OSC_CORE_CONFIG_H
#include "status.h"

typedef enum osc_arch {
    OSC_ARCH_QWEN2,
    OSC_ARCH_QWEN3,
    OSC_ARCH_LLAMA,
    OSC_ARCH_QWEN2_5_OMNI,
    OSC_ARCH_QWEN2_5_VL
} osc_arch;

typedef enum osc_rope_type { OSC_ROPE_DEFAULT, OSC_ROPE_LLAMA3, OSC_ROPE_MROPE } osc_rope_type;

#define OSC_CONFIG_MAX_EOS 8

typedef struct osc_llm_config {
    osc_arch arch;
    char model_type[64];           /* top-level model_type as written */
    int vocab_size, hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim;
    float rms_eps;
    double rope_theta;
    osc_rope_type rope_type;
    /* llama3 rope scaling (rope_type == OSC_ROPE_LLAMA3) */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int mrope_section[3];          /* rope_type == OSC_ROPE_MROPE; sums to head_dim/2 */
    int max_pos;
    int tie_embeddings;
    int attn_bias;                 /* q,k,v projections have biases */
    int qk_norm;                   /* per-head RMSNorm on q and k (qwen3) */
    int bos_id, pad_id;            /* -1 when absent */
    int eos_ids[OSC_CONFIG_MAX_EOS];
    int n_eos;
    /* omni / VL special tokens; -1 when absent */
    int image_token_id, video_token_id, audio_token_id;
    int vision_start_id, vision_end_id, audio_start_id, audio_end_id;
} osc_llm_config;

/* Parse dir/config.json (at most 4 MB) and validate it (osc_llm_config_validate). */
osc_status osc_config_load(const char *dir, osc_llm_config *cfg);

/* Sanity checks on sizes: positive, n_heads % n_kv_heads == 0, head_dim even and <= 512, etc.
 * `where` prefixes the message (usually the config path). */
osc_status osc_llm_config_validate(const osc_llm_config *cfg, const char *where);

const char *osc_arch_name(osc_arch a);

typedef struct osc_gen_config {
    float temperature;   /* 0 = greedy */
    int top_k;           /* 0 = off */
    float top_p;         /* 1 = off */
    float min_p;         /* 0 = off */
    float repeat_penalty; /* 1 = off */
    int do_sample;
    int eos_ids[OSC_CONFIG_MAX_EOS];
    int n_eos;
    int bos_id;          /* -1 when absent */
} osc_gen_config;

/* Defaults: greedy (temperature 0, do_sample 0), top_k 0, top_p 1, min_p 0, repeat_penalty 1,
 * no eos, bos -1. */
void osc_gen_config_default(osc_gen_config *g);

/* Parse dir/generation_config.json. A missing file gives the defaults and OSC_OK; a malformed
 * one is an error. When do_sample is false the temperature is reported as 0 (greedy). */
osc_status osc_gen_config_load(const char *dir, osc_gen_config *g);

#endif
