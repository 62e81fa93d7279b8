/* Video preparation and the producer queue of `oscar caption` (see caption_prep.h). */
#include "caption_prep.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "encoders/audio_io.h"
#include "encoders/mel.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static char *dupf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return strdup(buf);
}

void osc_cap_item_free(osc_cap_item *it) {
    if (!it) return;
    free(it->error);
    free(it->warning);
    free(it->pixels);
    free(it->mel);
    free(it);
}

osc_cap_item *osc_cap_prepare(const osc_cap_prep_params *p, int index, const char *file) {
    osc_cap_item *it = calloc(1, sizeof *it);
    if (!it) return NULL;
    it->index = index;
    it->file = file;
    double t0 = now_s();
    osc_video v;
    if (osc_video_load(file, &p->video, &v) != OSC_OK) {
        it->error = strdup(osc_last_error());
        return it;
    }
    it->info = v.info;
    it->second_per_grid = v.info.second_per_grid;
    osc_vision_pre_params vp = p->vision;
    vp.min_pixels = v.info.min_pixels;
    vp.max_pixels = v.info.max_pixels;
    vp.resize_float = 0; /* the frames are already at the resized size */
    int g[3];
    if (osc_vision_preprocess(v.frames, v.info.n_frames, &vp, &it->pixels, &it->n_patches, g) != OSC_OK) {
        it->error = dupf("%s: cannot preprocess the frames: %s", file, osc_last_error());
        osc_video_free(&v);
        return it;
    }
    it->grid[0] = g[0], it->grid[1] = g[1], it->grid[2] = g[2];
    int has_audio = v.info.has_audio;
    osc_video_free(&v);
    if (p->use_audio) {
        if (!has_audio) {
            it->warning = dupf("%s: no audio track; captioned from the frames alone", file);
        } else {
            float *pcm = NULL;
            int64_t n = 0;
            if (osc_audio_load(file, OSC_MEL_SAMPLE_RATE, p->max_audio_seconds, &pcm, &n) != OSC_OK) {
                it->error = dupf("cannot read the audio track: %s", osc_last_error());
                free(it->pixels);
                it->pixels = NULL;
                return it;
            }
            /* the processor keeps the first 300 s of one audio */
            if (n > OSC_MEL_MAX_SAMPLES) n = OSC_MEL_MAX_SAMPLES;
            if (osc_mel_features(pcm, n, &it->mel, &it->mel_frames) != OSC_OK) {
                it->error = dupf("%s: audio features: %s", file, osc_last_error());
                free(pcm);
                return it;
            }
            free(pcm);
            if (osc_audio_n_tokens(it->mel_frames) <= 0) { /* too short to give a token */
                free(it->mel);
                it->mel = NULL;
                it->mel_frames = 0;
                it->warning = dupf("%s: the audio track is too short; captioned from the frames alone", file);
            }
        }
    }
    it->prep_seconds = now_s() - t0;
    return it;
}

/* ---- prompt ---- */

/* Video and audio pad counts per 2 s chunk, as transformers' get_chunked_index splits them
 * (chunks[2c] video, chunks[2c+1] audio). Returns the number of chunks, -1 on OOM. */
int osc_cap_aiv_chunks(const osc_mm_pos_params *pp, const int32_t g[3], float spg, int n_aud, int32_t **chunks) {
    const int64_t per = (int64_t)(g[1] / pp->merge) * (g[2] / pp->merge);
    const int64_t tpc = (int64_t)pp->position_id_per_seconds * pp->seconds_per_chunk;
    /* video: slices k with tau_k = floor(k * spg * pps) (float32, as torch); boundary when tau >= cur*tpc */
    int cap = g[0] + n_aud + 2;
    int32_t *vc = calloc((size_t)cap, sizeof *vc), *ac = calloc((size_t)cap, sizeof *ac);
    if (!vc || !ac) { free(vc); free(ac); return -1; }
    int nv = 0, na = 0;
    int64_t cur = 1;
    vc[0] = 0;
    for (int k = 0; k < g[0]; k++) {
        int64_t tau = (int64_t)((float)k * spg * (float)pp->position_id_per_seconds);
        if (tau >= cur * tpc) { nv++; cur++; }
        vc[nv] += (int32_t)per;
    }
    nv++;
    cur = 1;
    ac[0] = 0;
    for (int i = 0; i < n_aud; i++) {
        if (i >= cur * tpc) { na++; cur++; }
        ac[na]++;
    }
    na = n_aud > 0 ? na + 1 : 0;
    int nc = nv > na ? nv : na;
    int32_t *c = calloc((size_t)2 * nc, sizeof *c);
    if (!c) { free(vc); free(ac); return -1; }
    for (int j = 0; j < nc; j++) {
        c[2 * j] = j < nv ? vc[j] : 0;
        c[2 * j + 1] = j < na ? ac[j] : 0;
    }
    free(vc);
    free(ac);
    *chunks = c;
    return nc;
}

/* ---- queue -------------------------------------------------------------------------------- */

struct osc_cap_queue {
    osc_cap_prep_params p;
    const char *const *files;
    const int *todo;
    int n_todo;
    int next;               /* next todo entry a worker takes */
    int popped;
    int stop;
    osc_cap_item **ring;
    int cap, head, count;
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    pthread_t *th;
    int n_th;
};

static void *worker(void *arg) {
    osc_cap_queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        if (q->stop || q->next >= q->n_todo) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        int k = q->next++;
        pthread_mutex_unlock(&q->mu);
        int idx = q->todo[k];
        osc_cap_item *it = osc_cap_prepare(&q->p, idx, q->files[idx]);
        if (!it) { /* out of memory for the item itself: report it as an error item */
            it = calloc(1, sizeof *it);
            if (it) {
                it->index = idx;
                it->file = q->files[idx];
                it->error = strdup("out of host memory");
            }
        }
        pthread_mutex_lock(&q->mu);
        while (q->count == q->cap && !q->stop) pthread_cond_wait(&q->not_full, &q->mu);
        if (q->stop) {
            pthread_mutex_unlock(&q->mu);
            osc_cap_item_free(it);
            return NULL;
        }
        q->ring[(q->head + q->count) % q->cap] = it;
        q->count++;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
}

osc_status osc_cap_queue_start(const osc_cap_prep_params *p, const char *const *files, const int *todo, int n_todo,
                               int n_workers, int capacity, osc_cap_queue **out) {
    *out = NULL;
    if (n_workers < 1) n_workers = 1;
    if (capacity < 1) capacity = 1;
    osc_cap_queue *q = calloc(1, sizeof *q);
    if (!q) return osc_error(OSC_ERR_OOM, "out of host memory");
    q->p = *p;
    q->files = files;
    q->todo = todo;
    q->n_todo = n_todo;
    q->cap = capacity;
    q->ring = calloc((size_t)capacity, sizeof *q->ring);
    q->th = calloc((size_t)n_workers, sizeof *q->th);
    if (!q->ring || !q->th) {
        free(q->ring);
        free(q->th);
        free(q);
        return osc_error(OSC_ERR_OOM, "out of host memory");
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->not_full, NULL);
    pthread_cond_init(&q->not_empty, NULL);
    for (int i = 0; i < n_workers && i < (n_todo > 0 ? n_todo : 1); i++) {
        if (pthread_create(&q->th[q->n_th], NULL, worker, q) != 0) break;
        q->n_th++;
    }
    if (q->n_th == 0 && n_todo > 0) {
        osc_cap_queue_free(q);
        return osc_error(OSC_ERR_OOM, "cannot start a decoder thread");
    }
    *out = q;
    return OSC_OK;
}

int osc_cap_queue_done(osc_cap_queue *q) {
    pthread_mutex_lock(&q->mu);
    int d = q->popped >= q->n_todo;
    pthread_mutex_unlock(&q->mu);
    return d;
}

osc_cap_item *osc_cap_queue_pop(osc_cap_queue *q, int wait) {
    pthread_mutex_lock(&q->mu);
    while (wait && q->count == 0 && q->popped < q->n_todo && !q->stop) pthread_cond_wait(&q->not_empty, &q->mu);
    osc_cap_item *it = NULL;
    if (q->count > 0) {
        it = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        q->popped++;
        pthread_cond_signal(&q->not_full);
    }
    pthread_mutex_unlock(&q->mu);
    return it;
}

void osc_cap_queue_free(osc_cap_queue *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->not_full);
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->n_th; i++) pthread_join(q->th[i], NULL);
    while (q->count > 0) {
        osc_cap_item_free(q->ring[q->head]);
        q->head = (q->head + 1) % q->cap;
        q->count--;
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_full);
    pthread_cond_destroy(&q->not_empty);
    free(q->ring);
    free(q->th);
    free(q);
}
