/* Audio input: decode a file (audio, or the audio track of a video) to mono float PCM at a target
 * rate, as qwen_omni_utils does with librosa.load(path, sr=16000) (docs/AUDIO.md).
 *
 * Decoders: libsndfile first (WAV, FLAC, OGG/Vorbis, Opus-in-Ogg, MP3, AIFF, ... as built), then
 * FFmpeg's libavformat/libavcodec for everything else (M4A/AAC, Opus, WebM, the audio track of
 * MP4/MKV/MOV video, ...). Samples are scaled to [-1, 1) like libsndfile / soundfile do
 * (int16 / 32768, ...), downmixed to mono as the mean of the channels (librosa.to_mono), then
 * resampled to target_rate with libswresample's soxr engine (librosa's default is soxr "HQ";
 * see docs/AUDIO.md for the measured difference) and cut or zero-filled to
 * ceil(frames * target_rate / rate) samples, as librosa.resample does. A file already at
 * target_rate is not resampled, so its samples are exact.
 *
 * Limits: a regular, non-empty file; sample rates 1000..768000 Hz, 1..64 channels. max_seconds (> 0; <= 0 means
 * OSC_AUDIO_DEFAULT_MAX_SECONDS) bounds the duration: a file whose header or container states a
 * longer duration is refused before any sample is decoded, and decoding stops with an error as
 * soon as more than that has come out, so memory stays bounded by the limit.
 *
 * Errors: OSC_ERR_INVALID_ARG (NULL pointers, bad target_rate), OSC_ERR_IO (cannot open/read),
 * OSC_ERR_FORMAT (not audio, corrupt, truncated header, no audio stream, zero-length audio, odd
 * rate or channel count, longer than max_seconds), OSC_ERR_UNSUPPORTED (a format or a resampling
 * that needs a library not built in), OSC_ERR_OOM. Messages start with the path.
 * Thread-safety: every call is independent; calls may run concurrently.
 * Ownership: *pcm is malloc'd; free() it. On failure *pcm is NULL and *n_samples 0. */
#ifndef OSC_ENCODERS_AUDIO_IO_H
#define OSC_ENCODERS_AUDIO_IO_H
#include <stdint.h>
#include "oscar.h"

#define OSC_AUDIO_DEFAULT_MAX_SECONDS 1200.0 /* 20 min; the model itself reads only 300 s */
#define OSC_AUDIO_MAX_SECONDS_CAP 1e7         /* larger limits are taken as this */

typedef struct osc_audio_info {
    int sample_rate;      /* of the (first/best) audio stream */
    int channels;
    int64_t frames;       /* -1 when the container does not say */
    double seconds;       /* -1 when unknown */
    int via_ffmpeg;       /* 1: FFmpeg would decode it; 0: libsndfile */
    char codec[32];       /* e.g. "pcm_s16le", "flac", "aac", "vorbis", "sndfile:0x010002" */
} osc_audio_info;

/* Decode path to mono float at target_rate (e.g. 16000). Video files give their audio track
 * (an error if they have none). */
osc_status osc_audio_load(const char *path, int target_rate, double max_seconds, float **pcm,
                          int64_t *n_samples);

/* Look at a file without decoding it: rate, channels, duration when known. OSC_ERR_FORMAT when it
 * has no audio stream (for video: whether use_audio_in_video is possible). */
osc_status osc_audio_probe(const char *path, osc_audio_info *info);

/* Which decoders were built in: bit 0 libsndfile, bit 1 FFmpeg (with libswresample). */
int osc_audio_backends(void);

#endif
