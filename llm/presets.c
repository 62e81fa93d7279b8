/* Named model shapes. Sources: the checkpoints' config.json (Qwen2.5-Omni-7B thinker
 * text_config, Qwen2.5-7B-Instruct, Llama-3.1-8B, Qwen3-8B) and docs/qwen2_5_omni.md.
 * Choice: Qwen2.5-Omni-3B is marked "(verify)" for tie_word_embeddings in the spec; we use
 * tie_embeddings = 0 (its own lm_head), which also makes the benchmark read the larger
 * weight set (an upper bound on the bytes per decode step). */
#include "presets.h"

#include <stdio.h>
#include <string.h>

#include "../core/status.h"

typedef struct preset {
    const char *name;
    osc_arch arch;
    const char *model_type;
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    float eps;
    double theta;
    osc_rope_type rope;
    int mrope0, mrope1, mrope2;
    int max_pos, tied, bias, qk_norm;
    int bos, pad, eos0, eos1, eos2;
    int omni; /* Qwen2.5-Omni special token ids */
} preset;

/* llama3 rope scaling (Llama 3.1): factor 8, low 1, high 4, original 8192 */
static const preset k_presets[] = {
    {"qwen2.5-omni-7b", OSC_ARCH_QWEN2_5_OMNI, "qwen2_5_omni", 152064, 3584, 18944, 28, 28, 4, 128, 1e-6f, 1e6,
     OSC_ROPE_MROPE, 16, 24, 24, 32768, 0, 1, 0, -1, 151643, 151645, 151643, -1, 1},
    {"qwen2.5-omni-3b", OSC_ARCH_QWEN2_5_OMNI, "qwen2_5_omni", 151936, 2048, 11008, 36, 16, 2, 128, 1e-6f, 1e6,
     OSC_ROPE_MROPE, 16, 24, 24, 32768, 0, 1, 0, -1, 151643, 151645, 151643, -1, 1},
    {"qwen2.5-7b", OSC_ARCH_QWEN2, "qwen2", 152064, 3584, 18944, 28, 28, 4, 128, 1e-6f, 1e6, OSC_ROPE_DEFAULT, 0, 0,
     0, 32768, 0, 1, 0, 151643, 151643, 151645, 151643, -1, 0},
    {"llama3-8b", OSC_ARCH_LLAMA, "llama", 128256, 4096, 14336, 32, 32, 8, 128, 1e-5f, 5e5, OSC_ROPE_LLAMA3, 0, 0, 0,
     131072, 0, 0, 0, 128000, -1, 128001, 128008, 128009, 0},
    {"qwen3-8b", OSC_ARCH_QWEN3, "qwen3", 151936, 4096, 12288, 36, 32, 8, 128, 1e-6f, 1e6, OSC_ROPE_DEFAULT, 0, 0, 0,
     40960, 0, 0, 1, 151643, -1, 151645, 151643, -1, 0},
    {"tiny", OSC_ARCH_QWEN2, "qwen2", 1024, 64, 128, 2, 4, 2, 16, 1e-6f, 1e6, OSC_ROPE_DEFAULT, 0, 0, 0, 4096, 0, 1,
     0, -1, -1, 1, -1, -1, 0},
};
#define N_PRESETS (int)(sizeof k_presets / sizeof k_presets[0])

const char *osc_llm_preset_names(void) {
    return "qwen2.5-omni-7b, qwen2.5-omni-3b, qwen2.5-7b, llama3-8b, qwen3-8b, tiny";
}

osc_status osc_llm_preset(const char *name, osc_llm_config *out) {
    if (!name || !out) return osc_error(OSC_ERR_INVALID_ARG, "osc_llm_preset: NULL argument");
    const preset *p = NULL;
    for (int i = 0; i < N_PRESETS; i++)
        if (!strcmp(name, k_presets[i].name)) p = &k_presets[i];
    if (!p) return osc_error(OSC_ERR_INVALID_ARG, "unknown model shape '%s' (known: %s)", name, osc_llm_preset_names());
    osc_llm_config c;
    memset(&c, 0, sizeof c);
    c.arch = p->arch;
    snprintf(c.model_type, sizeof c.model_type, "%s", p->model_type);
    c.vocab_size = p->vocab;
    c.hidden_size = p->hidden;
    c.intermediate_size = p->inter;
    c.n_layers = p->layers;
    c.n_heads = p->heads;
    c.n_kv_heads = p->kv_heads;
    c.head_dim = p->head_dim;
    c.rms_eps = p->eps;
    c.rope_theta = p->theta;
    c.rope_type = p->rope;
    if (p->rope == OSC_ROPE_LLAMA3) {
        c.rope_factor = 8.0f;
        c.rope_low_freq_factor = 1.0f;
        c.rope_high_freq_factor = 4.0f;
        c.rope_orig_max_pos = 8192;
    } else {
        c.rope_factor = 1.0f;
        c.rope_low_freq_factor = 0.0f;
        c.rope_high_freq_factor = 0.0f;
        c.rope_orig_max_pos = 0;
    }
    c.mrope_section[0] = p->mrope0;
    c.mrope_section[1] = p->mrope1;
    c.mrope_section[2] = p->mrope2;
    c.max_pos = p->max_pos;
    c.tie_embeddings = p->tied;
    c.attn_bias = p->bias;
    c.qk_norm = p->qk_norm;
    c.bos_id = p->bos;
    c.pad_id = p->pad;
    c.n_eos = 0;
    int eos[3] = {p->eos0, p->eos1, p->eos2};
    for (int i = 0; i < 3; i++)
        if (eos[i] >= 0) c.eos_ids[c.n_eos++] = eos[i];
    c.image_token_id = c.video_token_id = c.audio_token_id = -1;
    c.vision_start_id = c.vision_end_id = c.audio_start_id = c.audio_end_id = -1;
    if (p->omni) {
        c.audio_token_id = 151646;
        c.image_token_id = 151655;
        c.video_token_id = 151656;
        c.vision_start_id = 151652;
        c.vision_end_id = 151653;
        c.audio_start_id = 151647;
        c.audio_end_id = 151648;
    }
    char where[96];
    snprintf(where, sizeof where, "preset %s", p->name);
    osc_status s = osc_llm_config_validate(&c, where);
    if (s != OSC_OK) return s;
    *out = c;
    return OSC_OK;
}
