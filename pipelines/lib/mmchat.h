/* Multi-turn multimodal chat on one K/V cache (Qwen2.5-Omni thinker, Qwen2.5-VL): the engine of
 * `oscar chat` when images or audio are attached (`/image PATH`, `/audio PATH`, --image/--audio).
 *
 * The conversation, in the model's ChatML (docs/qwen2_5_omni.md 1.6):
 *   <|im_start|>system\n{SYS}<|im_end|>\n
 *   <|im_start|>user\n{media}{text}<|im_end|>\n<|im_start|>assistant\n{reply}
 *   <|im_end|>\n<|im_start|>user\n{media}{text}<|im_end|>\n<|im_start|>assistant\n{reply} ...
 * with each attached image <vision_bos><image pad>*n<vision_eos> and each audio
 * <audio_bos><audio pad>*n<audio_eos>, in the order attached, before the text (llm/omni_prompt.h).
 * Every turn appends only its new ids to the cache; replies stay as generated (no re-tokenisation).
 * Positions: M-RoPE ids (llm/mm_pos.h) computed over the whole conversation with every media item
 * so far, of which the new tokens take the tail (earlier ids keep theirs: get_rope_index runs left
 * to right); reply tokens sit at cache index + the turn's rope delta. The new tokens are fed in
 * chunks, one per media item (its encoder rows scattered into its pad rows, llm/model.h
 * osc_llm_batch.mm_rows relative to the chunk), then the text.
 * Encoders load on first use: the vision encoder at the first image, the audio encoder at the
 * first audio. Attaching reads and preprocesses the file at once (a bad file is reported then and
 * changes nothing); encoding happens at the turn.
 * Not thread-safe (one conversation, one thread). */
#ifndef OSC_PIPELINES_MMCHAT_H
#define OSC_PIPELINES_MMCHAT_H
#include <stdint.h>

#include "core/device.h"
#include "core/status.h"
#include "llm/sampler.h"

typedef struct osc_mmchat osc_mmchat;

typedef struct osc_mmchat_params {
    const char *model;      /* HuggingFace snapshot folder (Qwen2.5-Omni or Qwen2.5-VL) */
    const char *system;     /* NULL: the model family's default system prompt */
    const char *kv;         /* KV mode; NULL or "auto": osc_kv_mode_for */
    osc_dev dev;
    int n_ctx;              /* <= 0: min(max_position_embeddings, 4096), as oscar chat */
    int64_t min_pixels, max_pixels; /* image resize bounds; 0: the defaults */
    osc_sampler_params sp;  /* a new sampler with these is made at every turn (as osc_session) */
} osc_mmchat_params;

/* sp from dir/generation_config.json (do_sample's filters and temperature, repetition penalty),
 * else greedy. */
osc_status osc_mmchat_sampler_defaults(const char *dir, osc_sampler_params *sp);

/* 1 when dir/config.json is a Qwen2.5-Omni or Qwen2.5-VL model (one this engine serves). Quiet. */
int osc_mmchat_model_ok(const char *dir);

osc_status osc_mmchat_open(const osc_mmchat_params *p, osc_mmchat **out);
void osc_mmchat_free(osc_mmchat *c);

/* Queue a medium for the next user turn. Errors (nothing queued): OSC_ERR_UNSUPPORTED when the
 * model has no such encoder, the image/audio loaders' errors (message starts with the path). */
osc_status osc_mmchat_attach_image(osc_mmchat *c, const char *path);
osc_status osc_mmchat_attach_audio(osc_mmchat *c, const char *path);
int osc_mmchat_n_attached(const osc_mmchat *c);
void osc_mmchat_drop_attached(osc_mmchat *c);

typedef struct osc_mmchat_stats {
    int prompt_tokens;   /* ids fed for this turn (with the previous reply's last token if unfed) */
    int image_tokens, audio_tokens, n_images, n_audios;
    int gen_tokens;      /* reply tokens, the stop token not counted */
    int stopped;         /* 1: a stop token ended the reply; 0: max_tokens or the context */
    int context_tokens;  /* tokens in the cache after the turn */
    int32_t rope_delta;
    double encode_seconds, prompt_seconds, gen_seconds;
} osc_mmchat_stats;

/* piece: the reply's next text (may be ""); return nonzero to stop the reply. */
typedef int (*osc_mmchat_token_fn)(const char *piece, int32_t id, void *user);

/* One user turn: the attached media (then cleared) + text, and the reply (at most max_tokens).
 * A turn that does not fit the context fails with OSC_ERR_CONTEXT and changes nothing (the media
 * stay attached); errors after feeding began leave the conversation unusable: reset it. */
osc_status osc_mmchat_turn(osc_mmchat *c, const char *text, int max_tokens, osc_mmchat_token_fn fn, void *user,
                           osc_mmchat_stats *st);

/* Forget the conversation and the attached media (the cache is kept, emptied). */
void osc_mmchat_reset(osc_mmchat *c);

/* Introspection (valid until the next call that changes the conversation): */
const int32_t *osc_mmchat_ids(const osc_mmchat *c, int *n);      /* ids whose K/V are cached */
const int32_t *osc_mmchat_positions(const osc_mmchat *c);        /* [n][3] (t, h, w) of those ids */
const int32_t *osc_mmchat_reply(const osc_mmchat *c, int *n);    /* the last reply's ids */
const float *osc_mmchat_logits(const osc_mmchat *c);             /* [vocab] the last computed row */
int osc_mmchat_vocab(const osc_mmchat *c);
const char *osc_mmchat_kv_mode(const osc_mmchat *c);
int osc_mmchat_n_ctx(const osc_mmchat *c);
const char *osc_mmchat_describe(const osc_mmchat *c);

#endif
