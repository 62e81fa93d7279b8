/* Video input: demux + decode a file with FFmpeg (libavformat/libavcodec/libswscale), sample
 * frames as qwen-omni-utils does for Qwen2.5-Omni (docs/qwen2_5_omni.md section 5, docs/VIDEO.md)
 * and return them as 8-bit RGB images ready for osc_vision_preprocess (resize_float = 1).
 *
 * Sampling ([U] smart_nframes / fetch_video), with F the frames of the video stream and r its
 * average frame rate:
 *   nframes given: n = min(round2(nframes), F);
 *   else n = floor2(min(max(F / r * fps, ceil2(min_frames)), floor2(max_frames or min(768, F)), F))
 *   (round2/ceil2/floor2: to multiples of FRAME_FACTOR 2); 2 <= n <= F or the video is refused;
 *   indices round(linspace(0, F-1, n)) (round half to even, as torch.round);
 *   sample_fps = n / F * r.
 * Per-frame pixel budget ([U] fetch_video): min_pixels (default 128*28*28), total_pixels
 * (default: env VIDEO_MAX_PIXELS, else 128000*28*28*0.9), max_pixels =
 * max(min(768*28*28, total_pixels / n * 2), int(min_pixels * 1.05)), capped by an explicit
 * max_pixels; each sampled frame is resized to smart_resize(H, W, 28, min_pixels, max_pixels)
 * right after decoding, as [U] does: torchvision's resize(BICUBIC, antialias=True) on the uint8
 * frames, i.e. the antialiased bicubic (a = -0.5) in float, then rounded (half to even) and
 * clamped to uint8 at the end ([U] calls .float() only after the resize; the video path of
 * docs/qwen2_5_omni.md 5.2/8.6 says "not rounded", which the [U] source contradicts). The frames
 * then go to osc_vision_preprocess, whose smart_resize is the identity on them.
 * second_per_grid = temporal_patch_size / fps where fps is the rate ASKED for (default 2.0, so
 * 1.0 s): Qwen2_5OmniProcessor computes it from the fps passed to it, not from sample_fps.
 *
 * F comes from the stream header (nb_frames) when the container states it, else from a
 * demux-only packet count; the decode pass then counts the frames it really gets, and when the
 * stream ends early the indices are recomputed for the frames that exist (a truncated file still
 * gives a video when at least 2 frames decode).
 *
 * Bounded work and memory: a file is refused before decoding when its header states a frame
 * over max_frame_pixels, a duration over max_seconds, or when n frames of its size would need
 * more than max_bytes; decoding runs once through the stream, converts only the sampled frames
 * to RGB, stops after the last sampled frame, and gives up after 'max_decode_errors' broken
 * packets in a row. Only the sampled frames are kept.
 *
 * Errors (messages start with the path): OSC_ERR_IO (cannot open/read), OSC_ERR_FORMAT (not a
 * video, no video stream, corrupt/truncated data, fewer than 2 decodable frames, over a limit),
 * OSC_ERR_UNSUPPORTED (built without FFmpeg, or no decoder for the codec), OSC_ERR_INVALID_ARG
 * (bad parameters), OSC_ERR_OOM.
 * Thread-safety: every call is independent (several videos may be decoded at once on different
 * threads). Ownership: osc_video owns its frames and arrays; osc_video_free releases them (safe on
 * a zeroed or already-freed video). The audio track: osc_audio_load(path, 16000, ...) from
 * encoders/audio_io.h reads it (osc_audio_probe says whether there is one). */
#ifndef OSC_ENCODERS_VIDEO_H
#define OSC_ENCODERS_VIDEO_H
#include <stdint.h>

#include "core/status.h"
#include "encoders/image.h"

#define OSC_VIDEO_FPS 2.0
#define OSC_VIDEO_FRAME_FACTOR 2
#define OSC_VIDEO_MIN_FRAMES 4
#define OSC_VIDEO_MAX_FRAMES 768
#define OSC_VIDEO_MIN_PIXELS (128 * 28 * 28)
#define OSC_VIDEO_MAX_PIXELS (768 * 28 * 28)
#define OSC_VIDEO_TOTAL_PIXELS ((int64_t)(128000 * 28 * 28 * 0.9)) /* 90316800 */

typedef struct osc_video_params {
    double fps;                /* frames per second to sample (2.0) */
    int nframes;               /* > 0: sample exactly this many (rounded to 2) instead of by fps */
    int min_frames, max_frames;/* 4, 0 = min(768, F) */
    int64_t min_pixels;        /* resized frame area lower bound (100352) */
    int64_t max_pixels;        /* 0: the [U] budget alone; > 0: also capped by this */
    int64_t total_pixels;      /* 0: env VIDEO_MAX_PIXELS, else 90316800 */
    int factor;                /* patch * merge = 28 */
    int temporal_patch;        /* 2 */
    /* limits for untrusted files */
    int64_t max_frame_pixels;  /* source frame w*h (default 8192*8192) */
    double max_seconds;        /* stated duration (default 4 h) */
    int64_t max_bytes;         /* RGB bytes of the sampled frames (default 8 GiB) */
    int threads;               /* decoder threads; 0 = FFmpeg's choice (auto) */
    int keep_size;             /* 0 (default): frames come out resized (see below); 1: source size */
} osc_video_params;

void osc_video_default_params(osc_video_params *p);

typedef struct osc_video_info {
    int width, height;          /* source frame size */
    double fps;                 /* native average frame rate r */
    double duration;            /* seconds (container or stream; -1 unknown) */
    int64_t total_frames;       /* F */
    int n_frames;               /* n sampled */
    double sample_fps;          /* n / F * r */
    float second_per_grid;      /* temporal_patch / fps asked */
    int64_t min_pixels, max_pixels; /* the per-frame budget for osc_vision_preprocess */
    int resized_h, resized_w;   /* smart_resize(height, width) under that budget */
    int has_audio;              /* the container has an audio stream */
    char codec[32];
} osc_video_info;

typedef struct osc_video {
    osc_video_info info;
    osc_image *frames;          /* [n_frames] RGB8 at resized_h x resized_w (keep_size: source) */
    int64_t *indices;           /* [n_frames] frame numbers in the stream (presentation order) */
    double *timestamps;         /* [n_frames] seconds (pts - start), -1 when unknown */
} osc_video;

/* The frame indices the reference samples from F frames at native rate r; idx must hold
 * max(F, nframes) entries, or pass NULL to get only *n. OSC_ERR_FORMAT when fewer than 2. */
osc_status osc_video_sample_indices(int64_t F, double r, const osc_video_params *p, int64_t *idx, int *n);

/* The per-frame pixel budget for n frames and the resized size of an h x w frame. */
osc_status osc_video_frame_budget(int n, int h, int w, const osc_video_params *p, int64_t *min_pixels,
                                  int64_t *max_pixels, int *rh, int *rw);

/* Header only: stream size, rate, frame count, and what sampling would give. p NULL = defaults. */
osc_status osc_video_probe(const char *path, const osc_video_params *p, osc_video_info *info);

/* Decode the sampled frames. On failure *out is zeroed. p NULL = defaults. */
osc_status osc_video_load(const char *path, const osc_video_params *p, osc_video *out);
void osc_video_free(osc_video *v);

/* Benchmark source: a path "synthetic:WxH:SECONDS[:FPS]" (FPS default 30) is not opened but
 * made up: a moving colour pattern with that header, sampled and sized exactly as a real video
 * of that header, no audio track. Works without FFmpeg. */
int osc_video_is_synthetic(const char *path);

/* 1 when built with FFmpeg. */
int osc_video_available(void);

#endif
