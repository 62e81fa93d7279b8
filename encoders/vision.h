/* The Qwen2.5-Omni / Qwen2.5-VL vision encoder (docs/qwen2_5_omni.md section 3).
 *
 * pixel_values [n_patches, C*Tp*P*P] (1176 for the real models: 3 channels, 2 frames, 14x14),
 * laid out by the image preprocessor (every 4 consecutive rows are one 2x2 merge block), and one
 * grid (t, h, w) in patches per item -> embeddings [sum t*h*w/4, out_hidden], one row per pad
 * token, in (item, t, i, j) order.
 * Pipeline: patch embedding (the stride = kernel Conv3d as one matmul), 2D rotary on q/k
 * (frequencies k < head_dim/4 rotate with the patch row, the next head_dim/4 with the patch
 * column), window attention over 8x8-patch windows (window_size / patch) in the window order of
 * the merge units, full attention per temporal slice in the fullatt_block_indexes layers,
 * RMSNorm + SwiGLU-with-bias blocks, the 2x2 merger (RMSNorm ln_q, Linear, GELU, Linear), and the
 * inverse window permutation at the end.
 *
 * Weights: thinker.visual.* (Qwen2.5-Omni), visual.* or model.visual.* (Qwen2.5-VL); q/k/v as
 * split attn.{q,k,v} or fused attn.qkv, whichever the checkpoint holds. float32 on the CPU, bf16
 * on CUDA.
 * Ownership: osc_vision owns its weights and a scratch arena that grows to the largest input
 * seen; the tensor returned by osc_vision_encode lives in that scratch and stays valid until the
 * next encode or osc_vision_free. Thread-safety: one thread at a time per osc_vision.
 * Errors: loading names the file and the tensor; encode checks pixel counts against the grids
 * (OSC_ERR_INVALID_ARG). */
#ifndef OSC_ENCODERS_VISION_H
#define OSC_ENCODERS_VISION_H
#include <stdint.h>
#include "../core/status.h"
#include "../core/tensor.h"

#define OSC_VISION_MAX_FULLATT 64

typedef struct osc_vision_config {
    int depth, hidden, n_heads, head_dim, intermediate;
    int in_channels, patch, temporal_patch, merge, window, out_hidden;
    int n_fullatt, fullatt[OSC_VISION_MAX_FULLATT];
    double rope_theta;        /* 10000 */
    float eps;                /* RMSNorm eps, 1e-6 */
    int tokens_per_second;    /* VL: vision_config.tokens_per_second (time ids per second) */
    int patch_dim;            /* in_channels * temporal_patch * patch * patch */
} osc_vision_config;

typedef struct osc_vision osc_vision;

/* Parse the vision part of dir/config.json (Qwen2.5-Omni: thinker_config.vision_config; thinker
 * or VL: vision_config), with transformers' defaults for absent fields. */
osc_status osc_vision_config_load(const char *dir, osc_vision_config *cfg);

osc_status osc_vision_load(const char *dir, osc_dev dev, osc_vision **out);
void osc_vision_free(osc_vision *v); /* NULL is fine */

/* Benchmarks: the Qwen2.5-Omni-7B vision shape (depth 32, hidden 1280, 16 heads, FFN 3420, patch
 * 14, temporal 2, merge 2, window 112, full attention in blocks 7/15/23/31, out 3584), and an
 * encoder of any shape with deterministic random weights (U(-a, a), a = sqrt(3 / fan_in); norms
 * 1; biases U(-0.02, 0.02)). */
void osc_vision_default_config(osc_vision_config *cfg);
osc_status osc_vision_new_random(const osc_vision_config *cfg, osc_dev dev, uint64_t seed, osc_vision **out);
const osc_vision_config *osc_vision_config_of(const osc_vision *v);
osc_dev osc_vision_device(const osc_vision *v);

/* Number of output rows (pad tokens) of one grid: t*h*w / merge^2. h and w must be multiples of
 * merge; returns -1 for a bad grid. */
int64_t osc_vision_tokens(const osc_vision_config *c, const int32_t grid_thw[3]);

/* Encode n_items items (images and/or videos) in one call. pixel_values: float32 host
 * [n_patches, patch_dim] with n_patches == sum t*h*w. *out: [n_tokens, out_hidden] on the
 * model's device (F32 on the CPU, BF16 on CUDA), valid until the next call. */
osc_status osc_vision_encode(osc_vision *v, const float *pixel_values, int64_t n_patches,
                             const int32_t (*grid_thw)[3], int n_items, osc_tensor *out);

#endif
