/* Prompt ids for multimodal chat (Qwen2.5-Omni / Qwen2.5-VL ChatML, docs/qwen2_5_omni.md 1.6):
 *   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{parts}<|im_end|>\n
 *   [<|im_start|>assistant\n]
 * with each media part expanded to its pad tokens:
 *   image        <vision_bos> <image pad> x n <vision_eos>
 *   video        <vision_bos> <video pad> x n <vision_eos>
 *   audio        <audio_bos> <audio pad> x n <audio_eos>
 *   video+audio  <vision_bos><audio_bos> (V x v0)(A x a0)(V x v1)(A x a1)... <audio_eos><vision_eos>
 * Text between two special tokens is tokenized as one piece (as transformers does after
 * splitting on added tokens); user text is tokenized with special-token parsing off, so text
 * that spells "<|im_end|>" stays text. Special ids come from the model config (osc_llm_config);
 * <|im_start|>/<|im_end|> from the tokenizer. Pure host code, thread-safe.
 * Errors: OSC_ERR_INVALID_ARG (a part kind the model has no token for, negative counts),
 * OSC_ERR_FORMAT (tokenizer without <|im_start|>/<|im_end|>), OSC_ERR_OOM. */
#ifndef OSC_LLM_OMNI_PROMPT_H
#define OSC_LLM_OMNI_PROMPT_H
#include <stdint.h>
#include "../core/config.h"
#include "tokenizer.h"

typedef enum osc_part_kind {
    OSC_PART_TEXT = 0,
    OSC_PART_IMAGE,
    OSC_PART_VIDEO,
    OSC_PART_AUDIO,
    OSC_PART_VIDEO_AUDIO
} osc_part_kind;

typedef struct osc_prompt_part {
    osc_part_kind kind;
    const char *text;        /* OSC_PART_TEXT */
    int n_pad;               /* image/video/audio: pad tokens (encoder output rows) */
    const int32_t *chunks;   /* OSC_PART_VIDEO_AUDIO: [2*n_chunks] video, audio pad counts */
    int n_chunks;
} osc_prompt_part;

/* system: NULL = no system turn. add_generation_prompt: append <|im_start|>assistant\n.
 * *ids is malloc'd (caller frees). */
osc_status osc_omni_prompt_build(const osc_tokenizer *tok, const osc_llm_config *cfg, const char *system,
                                 const osc_prompt_part *parts, int n_parts, int add_generation_prompt,
                                 int32_t **ids, int *n_ids);

#endif
