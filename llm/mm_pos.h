/* Multimodal 3-D (t, h, w) position ids for M-RoPE decoders: transformers' get_rope_index for one
 * unpadded sequence (docs/qwen2_5_omni.md section 6.3).
 *
 * Qwen2.5-Omni (TMRoPE, transformers 5.17 Qwen2_5OmniThinker...get_rope_index):
 *   text: (c,c,c), c += 1. Image: vision_bos (c); merged unit (i,j) gets (s, s+i, s+j) with s the
 *   next id; next id = max of the block + 1; vision_eos. Video: unit (k,i,j) gets
 *   (s + floor(k*second_per_grid*position_id_per_seconds), s+i, s+j) (float32 arithmetic, as
 *   torch). Audio: sequential, N = ((L-1)//2 + 1 - 2)//2 + 1 tokens for L mel frames.
 *   Audio in video: both bos share one id, video and audio ids are emitted chunk by chunk
 *   (transformers' get_chunked_index with position_id_per_seconds*seconds_per_chunk ids per
 *   chunk), both eos share max(last chunk) + 1.
 *   Without image/video grids: 0..n-1 on all axes.
 * Qwen2.5-VL (transformers 5.17 Qwen2_5_VLModel.get_rope_index): runs of text tokens count on;
 *   a run of image (video) pad tokens starting at c gets (c + k*interval, c+i, c+j) with interval
 *   1 for images and tokens_per_second * int(second_per_grid) for videos, and the next id is
 *   c + max(h', w') (h', w' = merged grid).
 * rope delta = max(all ids) + 1 - n: a token at cache index p (generation) gets p + delta on
 * all three axes.
 * Pure host code; thread-safe; no allocation except the malloc'd work arrays in osc_mm_rope_index
 * (freed before return). Errors: OSC_ERR_INVALID_ARG when the ids and the media lists disagree
 * (counts, pad runs, grids) or sizes are out of range. */
#ifndef OSC_LLM_MM_POS_H
#define OSC_LLM_MM_POS_H
#include <stdint.h>
#include "../core/config.h"
#include "../core/status.h"

typedef enum osc_mm_style { OSC_MM_OMNI = 0, OSC_MM_VL = 1 } osc_mm_style;

typedef struct osc_mm_pos_params {
    osc_mm_style style;
    int image_id, video_id, audio_id;
    int vision_start_id, vision_end_id, audio_start_id, audio_end_id;
    int merge;                   /* vision spatial_merge_size (2) */
    int position_id_per_seconds; /* Omni: thinker_config.position_id_per_seconds (25) */
    int seconds_per_chunk;       /* Omni: thinker_config.seconds_per_chunk (2) */
    int tokens_per_second;       /* VL: vision_config.tokens_per_second */
} osc_mm_pos_params;

/* Fill p from dir/config.json (token ids through osc_config_load's cfg, the rest parsed here).
 * Errors: OSC_ERR_UNSUPPORTED for a model without M-RoPE multimodal tokens. */
osc_status osc_mm_pos_params_load(const char *dir, const osc_llm_config *cfg, osc_mm_pos_params *p);

typedef struct osc_mm_inputs {
    const int32_t (*image_grid)[3]; /* [n_images] (t, h, w) in patches */
    int n_images;
    const int32_t (*video_grid)[3]; /* [n_videos] */
    const float *second_per_grid;   /* [n_videos]; NULL = 1.0 each */
    int n_videos;
    const int32_t *audio_len;       /* [n_audios] mel frames L (feature_attention_mask sums) */
    int n_audios;
    int use_audio_in_video;         /* Omni: each video carries the next audio interleaved */
} osc_mm_inputs;

/* Audio pad tokens of an audio with L mel frames (Omni). */
int osc_mm_audio_tokens(int L);

/* pos: int32 [3][n] (planes t, h, w), delta: the rope delta. in may be NULL (text only). */
osc_status osc_mm_rope_index(const osc_mm_pos_params *p, const int32_t *ids, int n, const osc_mm_inputs *in,
                             int32_t *pos, int32_t *delta);

#endif
