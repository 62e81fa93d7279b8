/* Host-side preparation of videos for `oscar caption`: decode + sample frames (encoders/video.h),
 * resize + normalise + patchify (encoders/vision_pre.h), and with use_audio the sound track
 * (encoders/audio_io.h, cut to 300 s) and its log-mel features (encoders/mel.h); plus a bounded
 * queue filled by producer threads ahead of the GPU consumer.
 *
 * A prepared item either holds everything the encoders need, or an error message (the batch
 * goes on). Ownership: items are malloc'd by the producers and released with
 * osc_cap_item_free by whoever pops them. Thread-safety: osc_cap_prepare is reentrant; the queue
 * functions may be called from any thread. */
#ifndef OSC_PIPELINES_LIB_CAPTION_PREP_H
#define OSC_PIPELINES_LIB_CAPTION_PREP_H
#include <stdint.h>

#include "core/status.h"
#include "encoders/video.h"
#include "encoders/vision_pre.h"
#include "llm/mm_pos.h"

typedef struct osc_cap_item {
    int index;              /* position in the input list */
    const char *file;       /* points into the caller's list */
    char *error;            /* malloc'd message, or NULL when prepared */
    char *warning;          /* malloc'd note (e.g. no audio track), or NULL */
    /* video */
    float *pixels;          /* [n_patches, patch_dim] */
    int64_t n_patches;
    int32_t grid[3];        /* t, h, w in patches */
    float second_per_grid;
    osc_video_info info;
    /* audio (use_audio and the file has a sound track) */
    float *mel;             /* [128, mel_frames] */
    int mel_frames;         /* L; 0 = no audio */
    double prep_seconds;    /* decode + preprocessing time */
} osc_cap_item;

typedef struct osc_cap_prep_params {
    osc_video_params video;
    osc_vision_pre_params vision; /* patch/merge/temporal from the model; min/max set per video */
    int use_audio;
    double max_audio_seconds;     /* decode limit for the sound track */
} osc_cap_prep_params;

/* Prepare one video; never fails as a call: problems go to item->error. */
osc_cap_item *osc_cap_prepare(const osc_cap_prep_params *p, int index, const char *file);
void osc_cap_item_free(osc_cap_item *it);

/* Video and audio pad counts per chunk of use_audio_in_video (position_id_per_seconds *
 * seconds_per_chunk position ids = 2 s), split as transformers' get_chunked_index does (a video
 * slice k has time id floor(k * spg * position_id_per_seconds), float32): *chunks (malloc'd) gets
 * [2*n] counts (video, audio) for llm/omni_prompt.h's OSC_PART_VIDEO_AUDIO. Returns n, -1 on OOM. */
int osc_cap_aiv_chunks(const osc_mm_pos_params *pp, const int32_t grid[3], float second_per_grid, int n_audio_tokens,
                       int32_t **chunks);

/* The producer side: n_workers threads take the inputs in order (a shared counter) and push the
 * prepared items into a queue of at most `capacity` items (they block while it is full). */
typedef struct osc_cap_queue osc_cap_queue;
osc_status osc_cap_queue_start(const osc_cap_prep_params *p, const char *const *files, const int *todo, int n_todo,
                               int n_workers, int capacity, osc_cap_queue **out);
/* Pop the next prepared item. wait = 0: NULL at once when none is ready. Returns NULL when every
 * input has been handed out (check osc_cap_queue_done) or nothing is ready. */
osc_cap_item *osc_cap_queue_pop(osc_cap_queue *q, int wait);
/* 1 when all inputs were popped. */
int osc_cap_queue_done(osc_cap_queue *q);
/* Stop the workers (they finish the item in hand), join them, free what is left. */
void osc_cap_queue_free(osc_cap_queue *q);

#endif
