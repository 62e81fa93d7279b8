/* Log-mel features for the audio encoders, computed as transformers' WhisperFeatureExtractor
 * does when Qwen2_5OmniProcessor calls it (docs/qwen2_5_omni.md 4.1, docs/AUDIO.md):
 *   16 kHz mono float input, zero-padded (or truncated) to max_samples (300 s = 4,800,000 for
 *   Qwen2.5-Omni), STFT n_fft 400 / hop 160 with a periodic Hann window, centre padding by
 *   reflection (200 samples), power spectrum, the last frame dropped, slaney mel filters
 *   (0..8 kHz), log10(max(mel, 1e-10)), floor at (global max - 8), then (x + 4) / 4.
 * Only the valid frames are returned: L = ceil(min(n, max_samples) / 160) columns, which equal the
 * first L columns of the reference's padded [n_mels, max_samples/160] matrix (the floor uses the
 * global max over the whole padded matrix, as the reference does); L is the number of ones in
 * the reference's feature_attention_mask.
 *
 * Errors: OSC_ERR_INVALID_ARG for NULL pointers, n <= 0, non-finite samples or bad params;
 * OSC_ERR_OOM. Outputs are set to NULL/0 on failure.
 * Thread-safety: all functions may be called from any thread at the same time (the FFTW plan is
 * made once, under a lock, and only executed afterwards). If other code in the process makes
 * FFTW plans concurrently, it must serialise them itself, as FFTW requires.
 * Ownership: *feat and *filters are malloc'd; the caller frees them with free(). */
#ifndef OSC_ENCODERS_MEL_H
#define OSC_ENCODERS_MEL_H
#include <stdint.h>
#include "oscar.h"

#define OSC_MEL_SAMPLE_RATE 16000
#define OSC_MEL_N_FFT 400
#define OSC_MEL_HOP 160
#define OSC_MEL_N_BINS (OSC_MEL_N_FFT / 2 + 1) /* 201 */
#define OSC_MEL_N_MELS 128
#define OSC_MEL_MAX_SAMPLES 4800000 /* chunk_length 300 s * 16 kHz (Qwen2.5-Omni) */

typedef struct osc_mel_params {
    int n_mels;          /* 128 for Qwen2.5-Omni / Whisper-large-v3; 80 for older Whisper */
    int64_t max_samples; /* pad/truncate length: 4,800,000 (Qwen2.5-Omni), 480,000 (Whisper) */
} osc_mel_params;

osc_mel_params osc_mel_default_params(void);

/* The slaney mel filter bank, [OSC_MEL_N_BINS, n_mels] row-major (bin-major, like
 * transformers' mel_filter_bank), computed in double and rounded to float. */
osc_status osc_mel_filters(int n_mels, float **filters);

/* Valid frames for n samples: ceil(min(n, max_samples) / 160); 0 for n <= 0. */
int osc_mel_n_frames(int64_t n_samples, int64_t max_samples);

/* Features with the default params: *feat is [128, *n_frames] row-major (mel-major, like the
 * reference's input_features[0][:, :L]). */
osc_status osc_mel_features(const float *pcm, int64_t n, float **feat, int *n_frames);
osc_status osc_mel_features_ex(const osc_mel_params *p, const float *pcm, int64_t n, float **feat,
                               int *n_frames);

/* Audio tokens the Qwen2.5-Omni audio encoder makes from L valid frames (conv stride 2, then
 * average pool 2), as transformers' _get_feat_extract_output_lengths and the processor count
 * them with Python floor division: L1 = (L-1)//2 + 1, N = (L1-2)//2 + 1. 0 for L <= 1. */
int osc_audio_n_tokens(int n_frames);

#endif
