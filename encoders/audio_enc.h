/* The Qwen2.5-Omni audio encoder (thinker.audio_tower, a Whisper-style encoder; spec:
 * docs/qwen2_5_omni.md section 4.2), on the CPU (float32) or CUDA (bf16) by the device it is
 * loaded on.
 *
 * Input: log-mel features [n_mels, n_frames] (float32, host, row-major: mel bin outermost) of ONE
 * audio, as encoders/mel.h makes them (only the valid frames, no padding). Output: n_tokens =
 * osc_audio_enc_n_tokens(n_frames) embeddings of output_dim (the thinker's hidden size), one per
 * 40 ms, ready to replace the <|AUDIO|> rows of a prompt (osc_llm_batch.mm_embeds).
 *
 * What it computes, as transformers' Qwen2_5OmniAudioEncoder: the frames are cut into chunks of
 * 2*n_window (200) frames (the last one shorter); each chunk independently goes through
 * conv1 (k3 p1) + GELU, conv2 (k3 s2 p1) + GELU (zero padding at the chunk's own edges) and gets a
 * sinusoidal position table restarting at 0; the encoder layers (pre-LN, block-diagonal
 * non-causal attention within each chunk, GELU MLP) follow; then AvgPool1d(2,2) over the whole
 * audio (an odd last frame is dropped), ln_post and proj.
 * Nothing crosses a chunk boundary except the pooling, whose pairs never straddle one (chunks
 * give an even number of frames), so long audio is processed in passes of a few chunks with
 * memory bounded by the pass, not the audio; the result is identical to one pass.
 *
 * Ownership: osc_audio_enc owns its weights and scratch (grown on demand to one pass).
 * Thread-safety: one encoder per thread (the scratch is shared by calls).
 * Errors: loading names the file and the problem (missing tensor, wrong shape, bad
 * audio_config); encode returns OSC_ERR_INVALID_ARG for bad features/out, OSC_ERR_CANCELLED when
 * the progress callback asks to stop. */
#ifndef OSC_ENCODERS_AUDIO_ENC_H
#define OSC_ENCODERS_AUDIO_ENC_H
#include <stdint.h>

#include "../core/tensor.h"

typedef struct osc_audio_enc_config {
    int n_mels;               /* num_mel_bins (128) */
    int d_model;              /* 1280 */
    int n_layers;             /* encoder_layers (32) */
    int n_heads;              /* encoder_attention_heads (20) */
    int ffn_dim;              /* encoder_ffn_dim (5120) */
    int n_window;             /* chunks are 2*n_window mel frames (100) */
    int max_source_positions; /* rows of the sinusoidal table (1500) */
    int output_dim;           /* proj output = the thinker's hidden size (3584 / 2048) */
    float ln_eps;             /* 1e-5 (torch nn.LayerNorm default) */
} osc_audio_enc_config;

typedef struct osc_audio_enc osc_audio_enc;

/* Parse the audio_config of dir/config.json (model_type qwen2_5_omni: thinker_config.audio_config;
 * qwen2_5_omni_thinker: audio_config), with transformers' class defaults for absent fields. */
osc_status osc_audio_enc_config_load(const char *dir, osc_audio_enc_config *cfg);

/* Load the encoder weights (thinker.audio_tower.* or audio_tower.*) of the checkpoint in dir. */
osc_status osc_audio_enc_load(const char *dir, osc_dev dev, osc_audio_enc **out);
void osc_audio_enc_free(osc_audio_enc *e); /* NULL is fine */

/* Benchmarks: the Qwen2.5-Omni-7B shape (transformers' class defaults: 128 mels, d_model 1280,
 * 32 layers, 20 heads, FFN 5120, n_window 100, 1500 positions, output 3584), and an encoder of
 * any shape with deterministic random weights (U(-a, a), a = sqrt(3 / fan_in); LN 1/0). */
void osc_audio_enc_default_config(osc_audio_enc_config *cfg);
osc_status osc_audio_enc_new_random(const osc_audio_enc_config *cfg, osc_dev dev, uint64_t seed, osc_audio_enc **out);

const osc_audio_enc_config *osc_audio_enc_config_of(const osc_audio_enc *e);
osc_dev osc_audio_enc_device(const osc_audio_enc *e);
size_t osc_audio_enc_weight_bytes(const osc_audio_enc *e);

/* Tokens for n_frames mel frames: L1 = (L-1)/2 + 1, N = (L1-2)/2 + 1 (floor division; 0 for L<=0),
 * the formula of the processor, the encoder and get_rope_index. */
int osc_audio_enc_n_tokens(int n_frames);

/* Called after each pass with the mel frames done so far and in all; non-zero cancels. */
typedef int (*osc_audio_enc_progress_fn)(void *user, int64_t frames_done, int64_t frames_total);

/* Mel frames per pass (a multiple of 2*n_window); 0 restores the default (30 s on CPU, 150 s on
 * CUDA). Larger passes use more scratch memory and fewer, larger GEMMs. */
void osc_audio_enc_set_pass_frames(osc_audio_enc *e, int frames);

/* Encode one audio: feat [n_mels, n_frames] float32 host -> out [n_tokens, output_dim].
 * out is either a tensor on the encoder's device (F32 or BF16; on the CPU F32) or, for a CUDA
 * encoder, a host F32 tensor; it must have exactly osc_audio_enc_n_tokens(n_frames) rows.
 * n_frames in [1, 2^24]. progress may be NULL. */
osc_status osc_audio_enc_encode(osc_audio_enc *e, const float *feat, int n_frames, osc_tensor *out,
                                osc_audio_enc_progress_fn progress, void *user);

#endif
