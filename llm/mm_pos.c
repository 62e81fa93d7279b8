/* 3-D multimodal position ids (get_rope_index), Qwen2.5-Omni and Qwen2.5-VL. See mm_pos.h. */
#include "mm_pos.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fileio.h"

static int jint(const cJSON *o, const char *k, int def) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsNumber(v) ? (int)v->valuedouble : def;
}

osc_status osc_mm_pos_params_load(const char *dir, const osc_llm_config *cfg, osc_mm_pos_params *p) {
    memset(p, 0, sizeof *p);
    if (cfg->arch == OSC_ARCH_QWEN2_5_OMNI) p->style = OSC_MM_OMNI;
    else if (cfg->arch == OSC_ARCH_QWEN2_5_VL) p->style = OSC_MM_VL;
    else return osc_error(OSC_ERR_UNSUPPORTED, "%s: %s has no multimodal position ids", dir, osc_arch_name(cfg->arch));
    p->image_id = cfg->image_token_id;
    p->video_id = cfg->video_token_id;
    p->audio_id = cfg->audio_token_id;
    p->vision_start_id = cfg->vision_start_id;
    p->vision_end_id = cfg->vision_end_id;
    p->audio_start_id = cfg->audio_start_id;
    p->audio_end_id = cfg->audio_end_id;
    char path[4096];
    osc_path_join(path, sizeof path, dir, "config.json");
    char *txt = NULL;
    size_t len = 0;
    OSC_TRY(osc_read_file(path, 4u << 20, &txt, &len));
    cJSON *root = cJSON_ParseWithLength(txt, len);
    free(txt);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return osc_error(OSC_ERR_FORMAT, "%s: not a JSON object", path);
    }
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(root, "thinker_config");
    const cJSON *holder = cJSON_IsObject(th) ? th : root;
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(holder, "vision_config");
    p->merge = jint(vc, "spatial_merge_size", 2);
    p->position_id_per_seconds = jint(holder, "position_id_per_seconds", 25);
    p->seconds_per_chunk = jint(holder, "seconds_per_chunk", 2);
    p->tokens_per_second = jint(vc, "tokens_per_second", 4);
    cJSON_Delete(root);
    if (p->merge <= 0 || p->merge > 8 || p->position_id_per_seconds < 0 || p->position_id_per_seconds > 100000 ||
        p->seconds_per_chunk <= 0 || p->seconds_per_chunk > 100000 || p->tokens_per_second < 0 ||
        p->tokens_per_second > 100000)
        return osc_error(OSC_ERR_FORMAT, "%s: out-of-range multimodal position settings", path);
    if (p->image_id < 0 || p->vision_start_id < 0)
        return osc_error(OSC_ERR_FORMAT, "%s: no image / vision_start token ids", path);
    return OSC_OK;
}

int osc_mm_audio_tokens(int L) {
    if (L <= 0) return 0;
    return ((L - 1) / 2 + 1 - 2) / 2 + 1;
}

/* The writer: positions are emitted in sequence order in blocks; "next" is the largest id of the
 * last emitted block + 1 (0 before any block), as transformers' llm_pos_ids_list[-1].max() + 1. */
typedef struct pw {
    int32_t *pos;
    int n, o;
    int64_t last_max;  /* -1: no block yet */
    int64_t all_max;
} pw;

static int64_t nxt(const pw *w) { return w->last_max + 1; }

static osc_status put(pw *w, int64_t t, int64_t h, int64_t x, int64_t *bmax) {
    if (w->o >= w->n) return osc_error(OSC_ERR_INVALID_ARG, "rope index: more positions than tokens");
    if (t > INT32_MAX || h > INT32_MAX || x > INT32_MAX) return osc_error(OSC_ERR_INVALID_ARG, "rope index: position overflow");
    w->pos[w->o] = (int32_t)t;
    w->pos[w->n + w->o] = (int32_t)h;
    w->pos[2 * w->n + w->o] = (int32_t)x;
    w->o++;
    int64_t m = t > h ? t : h;
    if (x > m) m = x;
    if (m > *bmax) *bmax = m;
    if (m > w->all_max) w->all_max = m;
    return OSC_OK;
}

/* a block of len sequential ids starting at st */
static osc_status seq_block(pw *w, int64_t st, int64_t len) {
    if (len <= 0) return OSC_OK;
    int64_t bm = -1;
    for (int64_t i = 0; i < len; i++) OSC_TRY(put(w, st + i, st + i, st + i, &bm));
    w->last_max = bm;
    return OSC_OK;
}

static int find_from(const int32_t *ids, int n, int id, int from) {
    for (int i = from < 0 ? 0 : from; i < n; i++)
        if (ids[i] == id) return i;
    return -1;
}

static osc_status check_run(const int32_t *ids, int n, int at, int64_t len, int id, const char *what) {
    if (at < 0 || at + len > n) return osc_error(OSC_ERR_INVALID_ARG, "rope index: %s pad run runs past the sequence", what);
    for (int64_t i = 0; i < len; i++)
        if (ids[at + i] != id)
            return osc_error(OSC_ERR_INVALID_ARG, "rope index: %s at token %d has %lld pad tokens but its grid/length needs %lld",
                             what, at, (long long)i, (long long)len);
    return OSC_OK;
}

static osc_status grid_ok(const int32_t g[3], int merge, int64_t *tokens) {
    if (g[0] <= 0 || g[1] <= 0 || g[2] <= 0 || g[1] % merge || g[2] % merge || g[0] > 1 << 20 || g[1] > 1 << 20 ||
        g[2] > 1 << 20 || (int64_t)g[0] * g[1] * g[2] > INT32_MAX)
        return osc_error(OSC_ERR_INVALID_ARG, "rope index: bad grid [%d,%d,%d]", g[0], g[1], g[2]);
    *tokens = (int64_t)g[0] * (g[1] / merge) * (g[2] / merge);
    return OSC_OK;
}

/* time id of temporal slice k: floor(k * spg * pps) in float32, as torch */
static int64_t tau(int k, float spg, int pps) {
    float a = (float)k * spg;
    a = a * (float)pps;
    return (int64_t)a;
}

/* vision block: unit (k,i,j) -> (st + tk[k], st + i, st + j) */
static void vision_ids(int64_t st, const int32_t g[3], int merge, const int64_t *tk, int64_t k, int64_t r,
                       int64_t out[3]) {
    const int64_t gh = g[1] / merge, gw = g[2] / merge;
    (void)gh;
    out[0] = st + tk[k];
    out[1] = st + r / gw;
    out[2] = st + r % gw;
}

/* transformers' get_chunked_index over values v[0..n) (already minus the start id): chunk
 * boundaries into b (b[0] = 0, ..., b[nc] = n); returns nc. */
static int chunk_bounds(const int64_t *v, int64_t n, int64_t per, int64_t *b) {
    int nc = 0;
    int64_t cur = 1;
    b[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        if (v[i] >= cur * per) {
            b[++nc] = i;
            cur++;
        }
    }
    b[++nc] = n;
    return nc;
}

#define E(x) do { if ((s = (x)) != OSC_OK) goto out; } while (0)
#define FAIL(x) do { s = (x); goto out; } while (0)
static osc_status omni_index(const osc_mm_pos_params *p, const int32_t *ids, int n, const osc_mm_inputs *in, pw *w) {
    const int aiv = in->use_audio_in_video;
    osc_status s = OSC_OK;
    int64_t *tk = NULL, *vals = NULL, *vb = NULL, *ab = NULL;
    int n_img = 0, n_vid = 0, n_aud = 0;
    for (int i = 0; i + 1 < n; i++) {
        if (ids[i] != p->vision_start_id) continue;
        if (ids[i + 1] == p->image_id) n_img++;
        if (aiv ? ids[i + 1] == p->audio_start_id : ids[i + 1] == p->video_id) n_vid++;
    }
    for (int i = 0; i < n; i++) n_aud += ids[i] == p->audio_start_id;
    if (n_img != in->n_images || n_vid != in->n_videos || n_aud != in->n_audios)
        FAIL(osc_error(OSC_ERR_INVALID_ARG,
                         "rope index: the prompt has %d images, %d videos and %d audios but %d, %d and %d were given",
                         n_img, n_vid, n_aud, in->n_images, in->n_videos, in->n_audios));
    int st = 0, ii = 0, vi = 0, ai = 0;
    int rem_i = n_img, rem_v = n_vid, rem_a = n_aud;
    const int multimodal = aiv ? n_img + n_aud : n_img + n_vid + n_aud;
    for (int it = 0; it < multimodal && s == OSC_OK; it++) {
        int ed_i = rem_i > 0 ? find_from(ids, n, p->image_id, st) : -1;
        int ed_v = rem_v > 0 ? find_from(ids, n, p->video_id, st) : -1;
        int ed_a = rem_a > 0 ? find_from(ids, n, p->audio_id, st) : -1;
        const int big = n + 1;
        if (ed_i < 0) ed_i = big;
        if (ed_v < 0) ed_v = big;
        if (ed_a < 0) ed_a = big;
        int ed = ed_i < ed_v ? ed_i : ed_v;
        if (ed_a < ed) ed = ed_a;
        if (ed == big) FAIL(osc_error(OSC_ERR_INVALID_ARG, "rope index: a media item has no pad tokens"));
        if (ed == ed_a) {
            int64_t len = osc_mm_audio_tokens(in->audio_len[ai]);
            int text = ed - st - 1;
            if (text < 0 || ids[ed - 1] != p->audio_start_id)
                FAIL(osc_error(OSC_ERR_INVALID_ARG, "rope index: audio pads at %d without <audio_bos>", ed));
            E(check_run(ids, n, ed, len, p->audio_id, "audio"));
            E(seq_block(w, nxt(w), text));
            E(seq_block(w, nxt(w), 1));
            E(seq_block(w, nxt(w), len));
            E(seq_block(w, nxt(w), 1));
            st += text + 2 + (int)len;
            ai++;
            rem_a--;
        } else if (ed == ed_i || !aiv) {
            const int is_img = ed == ed_i;
            const int32_t *g = is_img ? in->image_grid[ii] : in->video_grid[vi];
            int64_t len;
            E(grid_ok(g, p->merge, &len));
            int text = ed - st - 1;
            if (text < 0 || ids[ed - 1] != p->vision_start_id)
                FAIL(osc_error(OSC_ERR_INVALID_ARG, "rope index: vision pads at %d without <vision_bos>", ed));
            E(check_run(ids, n, ed, len, is_img ? p->image_id : p->video_id, is_img ? "image" : "video"));
            E(seq_block(w, nxt(w), text));
            E(seq_block(w, nxt(w), 1));
            tk = realloc(tk, (size_t)g[0] * sizeof *tk);
            if (!tk) FAIL(osc_error(OSC_ERR_OOM, "rope index: out of memory"));
            float spg = is_img ? 1.0f : (in->second_per_grid ? in->second_per_grid[vi] : 1.0f);
            for (int k = 0; k < g[0]; k++) tk[k] = is_img ? (int64_t)k * p->position_id_per_seconds : tau(k, spg, p->position_id_per_seconds);
            const int64_t per = (int64_t)(g[1] / p->merge) * (g[2] / p->merge), s0 = nxt(w);
            int64_t bm = -1, id3[3];
            for (int64_t r = 0; r < len; r++) {
                vision_ids(s0, g, p->merge, tk, r / per, r % per, id3);
                if ((s = put(w, id3[0], id3[1], id3[2], &bm))) break;
            }
            if (s) goto out;
            w->last_max = bm;
            E(seq_block(w, nxt(w), 1));
            st += text + 2 + (int)len;
            if (is_img) {
                ii++;
                rem_i--;
            } else {
                vi++;
                rem_v--;
            }
        } else { /* video with its audio interleaved */
            const int32_t *g = in->video_grid[vi];
            int64_t vlen;
            E(grid_ok(g, p->merge, &vlen));
            const int64_t alen = osc_mm_audio_tokens(in->audio_len[ai]);
            int text = ed - st - 2;
            if (text < 0 || ids[ed - 2] != p->vision_start_id || ids[ed - 1] != p->audio_start_id)
                FAIL(osc_error(OSC_ERR_INVALID_ARG, "rope index: video at %d without <vision_bos><audio_bos>", ed));
            E(seq_block(w, nxt(w), text));
            const int64_t b = nxt(w);
            int64_t bm = -1;
            E(put(w, b, b, b, &bm));
            E(put(w, b, b, b, &bm));
            w->last_max = bm;
            const int64_t s0 = nxt(w);
            float spg = in->second_per_grid ? in->second_per_grid[vi] : 1.0f;
            tk = realloc(tk, (size_t)g[0] * sizeof *tk);
            vals = realloc(vals, (size_t)(vlen > alen ? vlen : alen) * sizeof *vals);
            vb = realloc(vb, (size_t)(vlen + 2) * sizeof *vb);
            ab = realloc(ab, (size_t)(alen + 2) * sizeof *ab);
            if (!tk || !vals || !vb || !ab) {
                s = osc_error(OSC_ERR_OOM, "rope index: out of memory");
                break;
            }
            for (int k = 0; k < g[0]; k++) tk[k] = tau(k, spg, p->position_id_per_seconds);
            const int64_t per = (int64_t)(g[1] / p->merge) * (g[2] / p->merge);
            const int64_t tpc = (int64_t)p->position_id_per_seconds * p->seconds_per_chunk;
            for (int64_t r = 0; r < vlen; r++) vals[r] = tk[r / per];
            int nvc = chunk_bounds(vals, vlen, tpc, vb);
            for (int64_t r = 0; r < alen; r++) vals[r] = r;
            int nac = chunk_bounds(vals, alen, tpc, ab);
            int at = ed;
            for (int j = 0; j < (nvc > nac ? nvc : nac); j++) {
                if (j < nvc) {
                    E(check_run(ids, n, at, vb[j + 1] - vb[j], p->video_id, "video chunk"));
                    bm = -1;
                    int64_t id3[3];
                    for (int64_t r = vb[j]; r < vb[j + 1]; r++) {
                        vision_ids(s0, g, p->merge, tk, r / per, r % per, id3);
                        E(put(w, id3[0], id3[1], id3[2], &bm));
                    }
                    w->last_max = bm;
                    at += (int)(vb[j + 1] - vb[j]);
                }
                if (j < nac) {
                    E(check_run(ids, n, at, ab[j + 1] - ab[j], p->audio_id, "audio chunk"));
                    bm = -1;
                    for (int64_t r = ab[j]; r < ab[j + 1]; r++) E(put(w, s0 + r, s0 + r, s0 + r, &bm));
                    w->last_max = bm;
                    at += (int)(ab[j + 1] - ab[j]);
                }
            }
            if (at + 2 > n || ids[at] != p->audio_end_id || ids[at + 1] != p->vision_end_id) {
                s = osc_error(OSC_ERR_INVALID_ARG, "rope index: video at %d does not end with <audio_eos><vision_eos>", ed);
                break;
            }
            const int64_t e = nxt(w);
            bm = -1;
            E(put(w, e, e, e, &bm));
            E(put(w, e, e, e, &bm));
            w->last_max = bm;
            st += text + 4 + (int)(vlen + alen);
            vi++;
            ai++;
            rem_v--;
            rem_a--;
        }
    }
    if (s == OSC_OK && st < n) s = seq_block(w, nxt(w), n - st);
out:
    free(tk);
    free(vals);
    free(vb);
    free(ab);
    return s;
}

#undef E
#undef FAIL

static osc_status vl_index(const osc_mm_pos_params *p, const int32_t *ids, int n, const osc_mm_inputs *in, pw *w) {
    int64_t cur = 0;
    int ii = 0, vi = 0;
    for (int i = 0; i < n;) {
        int type = ids[i] == p->image_id ? 1 : ids[i] == p->video_id ? 2 : 0;
        int j = i;
        while (j < n && (ids[j] == p->image_id ? 1 : ids[j] == p->video_id ? 2 : 0) == type) j++;
        int64_t bm = -1;
        if (type == 0) {
            for (int k = i; k < j; k++) OSC_TRY(put(w, cur + k - i, cur + k - i, cur + k - i, &bm));
            cur += j - i;
        } else {
            if ((type == 1 && ii >= in->n_images) || (type == 2 && vi >= in->n_videos))
                return osc_error(OSC_ERR_INVALID_ARG, "rope index: more %s runs than %s grids", type == 1 ? "image" : "video",
                                 type == 1 ? "image" : "video");
            const int32_t *g = type == 1 ? in->image_grid[ii] : in->video_grid[vi];
            int64_t len;
            OSC_TRY(grid_ok(g, p->merge, &len));
            if (len != j - i)
                return osc_error(OSC_ERR_INVALID_ARG, "rope index: a run of %d pad tokens at %d but its grid needs %lld", j - i, i,
                                 (long long)len);
            int64_t interval = 1;
            if (type == 2) {
                float spg = in->second_per_grid ? in->second_per_grid[vi] : 1.0f;
                interval = (int64_t)p->tokens_per_second * (int64_t)spg;
            }
            const int64_t gh = g[1] / p->merge, gw = g[2] / p->merge, per = gh * gw;
            for (int64_t r = 0; r < len; r++) {
                int64_t k = r / per, q = r % per;
                OSC_TRY(put(w, cur + k * interval, cur + q / gw, cur + q % gw, &bm));
            }
            cur += gh > gw ? gh : gw;
            if (type == 1) ii++;
            else vi++;
        }
        i = j;
    }
    if (ii != in->n_images || vi != in->n_videos)
        return osc_error(OSC_ERR_INVALID_ARG, "rope index: the prompt has %d image and %d video runs but %d and %d grids were given",
                         ii, vi, in->n_images, in->n_videos);
    return OSC_OK;
}

osc_status osc_mm_rope_index(const osc_mm_pos_params *p, const int32_t *ids, int n, const osc_mm_inputs *in, int32_t *pos,
                             int32_t *delta) {
    static const osc_mm_inputs none = {0};
    if (!p || !ids || n <= 0 || !pos || !delta) return osc_error(OSC_ERR_INVALID_ARG, "rope index: bad arguments");
    if (!in) in = &none;
    if (in->n_images < 0 || in->n_videos < 0 || in->n_audios < 0 || (in->n_images && !in->image_grid) ||
        (in->n_videos && !in->video_grid) || (in->n_audios && !in->audio_len))
        return osc_error(OSC_ERR_INVALID_ARG, "rope index: bad media lists");
    for (int i = 0; i < in->n_audios; i++)
        if (in->audio_len[i] <= 0 || in->audio_len[i] > 1 << 26)
            return osc_error(OSC_ERR_INVALID_ARG, "rope index: bad audio length %d", in->audio_len[i]);
    for (int i = 0; in->second_per_grid && i < in->n_videos; i++)
        if (!(in->second_per_grid[i] >= 0.0f) || in->second_per_grid[i] > 1e4f)
            return osc_error(OSC_ERR_INVALID_ARG, "rope index: bad second_per_grid");
    pw w = {pos, n, 0, -1, -1};
    if (p->style == OSC_MM_VL) {
        OSC_TRY(vl_index(p, ids, n, in, &w));
    } else if (in->n_images == 0 && in->n_videos == 0) {
        /* transformers' text path (also for audio without images/videos: the same ids) */
        int na = 0, nv = 0;
        for (int i = 0; i < n; i++) {
            na += ids[i] == p->audio_start_id;
            nv += ids[i] == p->image_id || ids[i] == p->video_id;
        }
        if (nv) return osc_error(OSC_ERR_INVALID_ARG, "rope index: the prompt has image/video pads but no grids were given");
        if (na != in->n_audios)
            return osc_error(OSC_ERR_INVALID_ARG, "rope index: the prompt has %d audios but %d were given", na, in->n_audios);
        OSC_TRY(seq_block(&w, 0, n));
    } else {
        OSC_TRY(omni_index(p, ids, n, in, &w));
    }
    if (w.o != n) return osc_error(OSC_ERR_INVALID_ARG, "rope index: %d positions for %d tokens", w.o, n);
    *delta = (int32_t)(w.all_max + 1 - n);
    return OSC_OK;
}
