/* Multi-turn multimodal chat on one K/V cache: see mmchat.h. */
#include "mmchat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/config.h"
#include "core/fileio.h"
#include "encoders/audio_enc.h"
#include "encoders/audio_io.h"
#include "encoders/image.h"
#include "encoders/mel.h"
#include "encoders/vision.h"
#include "encoders/vision_pre.h"
#include "kvcache/kvcache.h"
#include "llm/chat.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/tokenizer.h"

typedef struct ivec { int32_t *v; int n, cap; } ivec;

static int ivec_reserve(ivec *a, int n) {
    if (n <= a->cap) return 0;
    int nc = a->cap ? a->cap : 256;
    while (nc < n) nc *= 2;
    int32_t *nv = realloc(a->v, (size_t)nc * sizeof *nv);
    if (!nv) return -1;
    a->v = nv;
    a->cap = nc;
    return 0;
}
static int ivec_push(ivec *a, const int32_t *x, int n) {
    if (ivec_reserve(a, a->n + n)) return -1;
    if (n > 0) memcpy(a->v + a->n, x, (size_t)n * sizeof *x);
    a->n += n;
    return 0;
}

typedef struct media {
    int is_audio;
    char *path;
    float *data;   /* image: pixel_values [n_patch][patch_dim]; audio: mel [n_mels][L] */
    int64_t n_patch;
    int32_t grid[3];
    int L;         /* audio mel frames */
    int n_tok;     /* pad tokens */
} media;

struct osc_mmchat {
    char *model, *system;
    char kv_mode[32];
    osc_dev dev;
    int n_ctx;
    osc_llm_config cfg;
    osc_mm_pos_params pp;
    osc_vision_pre_params vp;
    osc_sampler_params sp;
    osc_tokenizer *tok;
    osc_llm *llm;
    osc_llm_ctx *ctx;
    osc_kv *kv;
    osc_vision *vis;
    osc_audio_enc *aenc;
    int vis_tried, aenc_tried;
    int32_t stop[16];
    int n_stop;
    ivec hist;        /* ids in the cache */
    ivec hpos;        /* [n][3] their positions */
    ivec pending;     /* the last reply token when it was not fed (length stop) */
    ivec grids;       /* [n_images][3] of the conversation, in order */
    ivec alens;       /* mel frames of the conversation's audios, in order */
    ivec reply;
    int32_t delta;
    media *att;
    int n_att, cap_att;
    float *logits;
    char describe[512];
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static osc_status oom(void) { return osc_error(OSC_ERR_OOM, "out of host memory"); }

osc_status osc_mmchat_sampler_defaults(const char *dir, osc_sampler_params *sp) {
    osc_gen_config g;
    OSC_TRY(osc_gen_config_load(dir, &g));
    *sp = osc_sampler_default_params();
    if (g.do_sample) {
        sp->temperature = g.temperature;
        sp->top_k = g.top_k;
        sp->top_p = g.top_p;
        sp->min_p = g.min_p;
    }
    sp->repeat_penalty = g.repeat_penalty > 0 ? g.repeat_penalty : 1.0f;
    return OSC_OK;
}

int osc_mmchat_model_ok(const char *dir) {
    char path[4096];
    if (!dir || !osc_path_join(path, sizeof path, dir, "config.json") || !osc_file_exists(path)) return 0;
    osc_llm_config cfg;
    osc_status s = osc_config_load(dir, &cfg);
    osc_clear_error();
    return s == OSC_OK && (cfg.arch == OSC_ARCH_QWEN2_5_OMNI || cfg.arch == OSC_ARCH_QWEN2_5_VL);
}

static void media_free(media *m) {
    free(m->path);
    free(m->data);
    memset(m, 0, sizeof *m);
}

void osc_mmchat_drop_attached(osc_mmchat *c) {
    for (int i = 0; i < c->n_att; i++) media_free(&c->att[i]);
    c->n_att = 0;
}

int osc_mmchat_n_attached(const osc_mmchat *c) { return c->n_att; }

void osc_mmchat_free(osc_mmchat *c) {
    if (!c) return;
    osc_mmchat_drop_attached(c);
    free(c->att);
    free(c->hist.v);
    free(c->hpos.v);
    free(c->pending.v);
    free(c->grids.v);
    free(c->alens.v);
    free(c->reply.v);
    free(c->logits);
    osc_llm_ctx_free(c->ctx);
    osc_kv_free(c->kv);
    osc_vision_free(c->vis);
    osc_audio_enc_free(c->aenc);
    osc_llm_free(c->llm);
    osc_tokenizer_free(c->tok);
    free(c->model);
    free(c->system);
    free(c);
}

osc_status osc_mmchat_open(const osc_mmchat_params *p, osc_mmchat **out) {
    *out = NULL;
    if (!p || !p->model) return osc_error(OSC_ERR_INVALID_ARG, "mmchat: no model folder");
    osc_mmchat *c = calloc(1, sizeof *c);
    if (!c) return oom();
    osc_status s = OSC_OK;
    char path[4096];
    c->dev = p->dev;
    c->sp = p->sp;
    c->model = strdup(p->model);
    c->system = p->system ? strdup(p->system) : NULL;
    if (!c->model || (p->system && !c->system)) { s = oom(); goto fail; }
    if ((s = osc_config_load(p->model, &c->cfg)) != OSC_OK) goto fail;
    if (c->cfg.arch != OSC_ARCH_QWEN2_5_OMNI && c->cfg.arch != OSC_ARCH_QWEN2_5_VL) {
        s = osc_error(OSC_ERR_UNSUPPORTED, "%s: images and audio need a Qwen2.5-Omni or Qwen2.5-VL model (this is %s)",
                      p->model, osc_arch_name(c->cfg.arch));
        goto fail;
    }
    if ((s = osc_mm_pos_params_load(p->model, &c->cfg, &c->pp)) != OSC_OK) goto fail;
    if ((s = osc_tokenizer_load(osc_path_join(path, sizeof path, p->model, "tokenizer.json"), &c->tok)) != OSC_OK) goto fail;
    if (osc_tokenizer_token_id(c->tok, "<|im_start|>") < 0 || osc_tokenizer_token_id(c->tok, "<|im_end|>") < 0) {
        s = osc_error(OSC_ERR_FORMAT, "%s: the tokenizer has no <|im_start|>/<|im_end|>", p->model);
        goto fail;
    }
    if ((s = osc_llm_load(p->model, p->dev, &c->llm)) != OSC_OK) goto fail;
    {
        const char *mode = osc_kv_mode_for(p->kv ? p->kv : "auto", c->cfg.head_dim);
        int rot = osc_kv_mode_rotates(mode);
        if (rot < 0) {
            s = osc_error(OSC_ERR_INVALID_ARG, "unknown KV cache mode '%s' (known: %s)", mode, osc_kv_modes());
            goto fail;
        }
        snprintf(c->kv_mode, sizeof c->kv_mode, "%s", mode);
        if (rot && (s = osc_llm_fold_v_rotation(c->llm)) != OSC_OK) goto fail;
    }
    c->n_ctx = p->n_ctx > 0 ? p->n_ctx : c->cfg.max_pos > 0 && c->cfg.max_pos < 4096 ? c->cfg.max_pos : 4096;
    if ((s = osc_llm_kv_new(c->llm, c->kv_mode, c->n_ctx, &c->kv)) != OSC_OK) goto fail;
    if ((s = osc_llm_ctx_new(c->llm, 512, &c->ctx)) != OSC_OK) goto fail;
    c->logits = calloc((size_t)c->cfg.vocab_size, sizeof(float));
    if (!c->logits) { s = oom(); goto fail; }
    {
        osc_gen_config g;
        if ((s = osc_gen_config_load(p->model, &g)) != OSC_OK) goto fail;
        int32_t cand[2 * OSC_CONFIG_MAX_EOS + 2];
        int nc = 0;
        for (int i = 0; i < c->cfg.n_eos; i++) cand[nc++] = c->cfg.eos_ids[i];
        for (int i = 0; i < g.n_eos; i++) cand[nc++] = g.eos_ids[i];
        cand[nc++] = osc_tokenizer_token_id(c->tok, "<|im_end|>");
        cand[nc++] = osc_tokenizer_token_id(c->tok, "<|endoftext|>");
        for (int i = 0; i < nc; i++) {
            int dup = cand[i] < 0;
            for (int j = 0; j < c->n_stop && !dup; j++) dup = c->stop[j] == cand[i];
            if (!dup && c->n_stop < 16) c->stop[c->n_stop++] = cand[i];
        }
    }
    osc_vision_pre_defaults(&c->vp);
    if (p->min_pixels) c->vp.min_pixels = p->min_pixels;
    if (p->max_pixels) c->vp.max_pixels = p->max_pixels;
    snprintf(c->describe, sizeof c->describe, "%s; kv %s, context %d", osc_llm_describe(c->llm), c->kv_mode, c->n_ctx);
    *out = c;
    return OSC_OK;
fail:
    osc_mmchat_free(c);
    return s;
}

static osc_status need_vision(osc_mmchat *c) {
    if (c->vis) return OSC_OK;
    if (c->vis_tried) return osc_error(OSC_ERR_UNSUPPORTED, "%s has no usable vision encoder", c->model);
    c->vis_tried = 1;
    if (c->cfg.image_token_id < 0 || c->cfg.vision_start_id < 0 || c->cfg.vision_end_id < 0)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s has no image input (no image token in config.json)", c->model);
    osc_status s = osc_vision_load(c->model, c->dev, &c->vis);
    if (s != OSC_OK) return osc_error(s, "%s: cannot load the vision encoder: %s", c->model, osc_last_error());
    const osc_vision_config *vc = osc_vision_config_of(c->vis);
    if (vc->out_hidden != c->cfg.hidden_size) {
        osc_vision_free(c->vis);
        c->vis = NULL;
        return osc_error(OSC_ERR_FORMAT, "%s: the vision encoder's out_hidden_size %d differs from the decoder's %d",
                         c->model, vc->out_hidden, c->cfg.hidden_size);
    }
    c->vp.patch_size = vc->patch;
    c->vp.merge_size = vc->merge;
    c->vp.temporal_patch_size = vc->temporal_patch;
    return OSC_OK;
}

static osc_status need_audio(osc_mmchat *c) {
    if (c->aenc) return OSC_OK;
    if (c->aenc_tried) return osc_error(OSC_ERR_UNSUPPORTED, "%s has no usable audio encoder", c->model);
    c->aenc_tried = 1;
    if (c->cfg.arch != OSC_ARCH_QWEN2_5_OMNI || c->cfg.audio_token_id < 0 || c->cfg.audio_start_id < 0 ||
        c->cfg.audio_end_id < 0)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s has no audio input (audio needs a Qwen2.5-Omni model)", c->model);
    osc_status s = osc_audio_enc_load(c->model, c->dev, &c->aenc);
    if (s != OSC_OK) return osc_error(s, "%s: cannot load the audio encoder: %s", c->model, osc_last_error());
    if (osc_audio_enc_config_of(c->aenc)->output_dim != c->cfg.hidden_size) {
        osc_audio_enc_free(c->aenc);
        c->aenc = NULL;
        return osc_error(OSC_ERR_FORMAT, "%s: the audio encoder's output_dim differs from the decoder's hidden size",
                         c->model);
    }
    return OSC_OK;
}

static osc_status push_media(osc_mmchat *c, media *m) {
    if (c->n_att == c->cap_att) {
        int nc = c->cap_att ? 2 * c->cap_att : 4;
        media *na = realloc(c->att, (size_t)nc * sizeof *na);
        if (!na) return oom();
        c->att = na;
        c->cap_att = nc;
    }
    c->att[c->n_att++] = *m;
    return OSC_OK;
}

osc_status osc_mmchat_attach_image(osc_mmchat *c, const char *path) {
    OSC_TRY(need_vision(c));
    osc_image img = {0};
    OSC_TRY(osc_image_load(path, 0, &img));
    media m = {0};
    int g[3];
    osc_status s = osc_vision_preprocess(&img, 1, &c->vp, &m.data, &m.n_patch, g);
    osc_image_free(&img);
    if (s != OSC_OK) return osc_error(s, "%s: %s", path, osc_last_error());
    for (int k = 0; k < 3; k++) m.grid[k] = g[k];
    int64_t nt = osc_vision_tokens(osc_vision_config_of(c->vis), m.grid);
    m.n_tok = (int)nt;
    m.path = strdup(path);
    if (nt <= 0 || !m.path || (s = push_media(c, &m)) != OSC_OK) {
        media_free(&m);
        return nt <= 0 ? osc_error(OSC_ERR_INVALID_ARG, "%s: the image gives a bad grid", path) : s ? s : oom();
    }
    return OSC_OK;
}

osc_status osc_mmchat_attach_audio(osc_mmchat *c, const char *path) {
    OSC_TRY(need_audio(c));
    float *pcm = NULL;
    int64_t n = 0;
    OSC_TRY(osc_audio_load(path, OSC_MEL_SAMPLE_RATE, OSC_AUDIO_DEFAULT_MAX_SECONDS, &pcm, &n));
    if (n > (int64_t)OSC_MEL_MAX_SAMPLES) {
        free(pcm);
        return osc_error(OSC_ERR_INVALID_ARG, "%s: %.1f s of audio; chat takes at most 300 s per audio (oscar listen "
                         "takes longer ones)", path, n / (double)OSC_MEL_SAMPLE_RATE);
    }
    media m = {0};
    m.is_audio = 1;
    osc_status s = osc_mel_features(pcm, n, &m.data, &m.L);
    free(pcm);
    if (s != OSC_OK) return osc_error(s, "%s: %s", path, osc_last_error());
    m.n_tok = osc_audio_enc_n_tokens(m.L);
    if (m.n_tok <= 0) {
        media_free(&m);
        return osc_error(OSC_ERR_INVALID_ARG, "%s: the audio is too short (%.3f s)", path, n / (double)OSC_MEL_SAMPLE_RATE);
    }
    m.path = strdup(path);
    if (!m.path || (s = push_media(c, &m)) != OSC_OK) {
        media_free(&m);
        return s ? s : oom();
    }
    return OSC_OK;
}

void osc_mmchat_reset(osc_mmchat *c) {
    osc_mmchat_drop_attached(c);
    osc_kv_truncate(c->kv, 0);
    c->hist.n = c->hpos.n = c->pending.n = c->grids.n = c->alens.n = c->reply.n = 0;
    c->delta = 0;
}

/* Feed ids[0..n) at positions pos ([n][3]), with n_mm rows of mm scattered at rows. */
static osc_status feed(osc_mmchat *c, const int32_t *ids, int n, const int32_t *pos3, int n_mm, const int32_t *rows,
                       const osc_tensor *mm) {
    int32_t *planes = malloc((size_t)3 * n * sizeof *planes);
    if (!planes) return oom();
    for (int i = 0; i < n; i++)
        for (int a = 0; a < 3; a++) planes[a * n + i] = pos3[3 * i + a];
    int st[2] = {0, n};
    osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = planes, .kv = &c->kv, .all_logits = 0,
                       .n_mm = n_mm, .mm_rows = rows, .mm_embeds = mm};
    osc_status s = osc_llm_forward(c->llm, c->ctx, &b, c->logits);
    free(planes);
    if (s != OSC_OK) return s;
    if (ivec_push(&c->hist, ids, n) || ivec_push(&c->hpos, pos3, 3 * n)) return oom();
    return OSC_OK;
}

/* The new ids of a turn: [pending] [<|im_end|>\n] <|im_start|>user\n{media}{text}<|im_end|>\n
 * <|im_start|>assistant\n, with the system turn first in a fresh conversation. */
static osc_status build_turn(osc_mmchat *c, const char *text, ivec *ids) {
    osc_status s = OSC_OK;
    osc_prompt_part *parts = calloc((size_t)c->n_att + 1, sizeof *parts);
    if (!parts) return oom();
    for (int i = 0; i < c->n_att; i++) {
        parts[i].kind = c->att[i].is_audio ? OSC_PART_AUDIO : OSC_PART_IMAGE;
        parts[i].n_pad = c->att[i].n_tok;
    }
    parts[c->n_att].kind = OSC_PART_TEXT;
    parts[c->n_att].text = text;
    int32_t *t = NULL;
    int n = 0;
    if (ivec_push(ids, c->pending.v, c->pending.n)) s = oom();
    if (s == OSC_OK && c->hist.n + c->pending.n > 0) {
        /* close the previous reply; the stop token itself was not fed */
        s = osc_tokenizer_encode(c->tok, "<|im_end|>\n", strlen("<|im_end|>\n"), 1, &t, &n);
        if (s == OSC_OK && ivec_push(ids, t, n)) s = oom();
        free(t);
        t = NULL;
    }
    if (s == OSC_OK) {
        const char *sys = NULL;
        if (c->hist.n + c->pending.n == 0)
            sys = c->system ? c->system : osc_chat_default_system(OSC_CHAT_CHATML, c->cfg.arch == OSC_ARCH_QWEN2_5_OMNI);
        s = osc_omni_prompt_build(c->tok, &c->cfg, sys, parts, c->n_att + 1, 1, &t, &n);
        if (s == OSC_OK && ivec_push(ids, t, n)) s = oom();
        free(t);
    }
    free(parts);
    return s;
}

osc_status osc_mmchat_turn(osc_mmchat *c, const char *text, int max_tokens, osc_mmchat_token_fn fn, void *user,
                           osc_mmchat_stats *stp) {
    osc_mmchat_stats st;
    memset(&st, 0, sizeof st);
    if (!text) return osc_error(OSC_ERR_INVALID_ARG, "mmchat: no text");
    ivec ids = {0}, all = {0}, pos = {0}, grids = {0}, alens = {0};
    int32_t *planes = NULL;
    void *mm_mem = NULL;
    osc_sampler *smp = NULL;
    osc_status s = build_turn(c, text, &ids);
    const int n0 = c->hist.n, n = ids.n;
    if (s == OSC_OK && n0 + n + 1 > c->n_ctx)
        s = osc_error(OSC_ERR_CONTEXT, "this turn needs %d tokens, %d with the conversation, but the context holds %d "
                      "(raise -c, or /reset)", n, n0 + n + 1, c->n_ctx);
    /* positions over the whole conversation with every media item so far; keep the tail */
    if (s == OSC_OK && (ivec_push(&all, c->hist.v, n0) || ivec_push(&all, ids.v, n) ||
                        ivec_push(&grids, c->grids.v, c->grids.n) || ivec_push(&alens, c->alens.v, c->alens.n)))
        s = oom();
    for (int i = 0; s == OSC_OK && i < c->n_att; i++) {
        const media *m = &c->att[i];
        if (m->is_audio ? ivec_push(&alens, &m->L, 1) : ivec_push(&grids, m->grid, 3)) s = oom();
        if (m->is_audio) st.audio_tokens += m->n_tok, st.n_audios++;
        else st.image_tokens += m->n_tok, st.n_images++;
    }
    int32_t delta = 0;
    if (s == OSC_OK) {
        planes = malloc((size_t)3 * all.n * sizeof *planes);
        if (!planes || ivec_reserve(&pos, 3 * n)) s = oom();
    }
    if (s == OSC_OK) {
        osc_mm_inputs in = {(const int32_t(*)[3])grids.v, grids.n / 3, NULL, NULL, 0, alens.v, alens.n, 0};
        s = osc_mm_rope_index(&c->pp, all.v, all.n, &in, planes, &delta);
    }
    if (s == OSC_OK) {
        for (int i = 0; i < n; i++)
            for (int a = 0; a < 3; a++) pos.v[3 * i + a] = planes[a * all.n + n0 + i];
        pos.n = 3 * n;
        s = osc_sampler_new(&c->sp, c->cfg.vocab_size, &smp);
    }
    if (s != OSC_OK) goto done; /* nothing changed yet */
    c->pending.n = 0;

    /* feed: one chunk per media item (up to the end of its pads), then the rest */
    double t0 = now_s(), t_enc = 0;
    {
        int done_to = 0, item = 0;
        int32_t *rows = NULL;
        for (int i = 0; s == OSC_OK && i < n && item < c->n_att; i++) {
            const media *m = &c->att[item];
            int32_t pad = m->is_audio ? c->cfg.audio_token_id : c->cfg.image_token_id;
            if (ids.v[i] != pad) continue;
            int end = i + m->n_tok;
            if (end > n) { s = osc_error(OSC_ERR_INVALID_ARG, "mmchat: the prompt lost pad tokens"); break; }
            rows = malloc((size_t)m->n_tok * sizeof *rows);
            if (!rows) { s = oom(); break; }
            for (int k = 0; k < m->n_tok; k++) rows[k] = i - done_to + k;
            double te = now_s();
            osc_tensor emb;
            if (!m->is_audio) {
                s = osc_vision_encode(c->vis, m->data, m->n_patch, (const int32_t(*)[3])m->grid, 1, &emb);
                if (s == OSC_OK && (emb.ne[0] != m->n_tok || emb.ne[1] != c->cfg.hidden_size))
                    s = osc_error(OSC_ERR_INVALID_ARG, "mmchat: the vision encoder gave %lld rows for %d pads",
                                  (long long)emb.ne[0], m->n_tok);
            } else {
                emb = osc_tensor_2d(NULL, osc_llm_act_dtype(c->llm), c->dev, m->n_tok, c->cfg.hidden_size);
                s = osc_dev_malloc(c->dev, osc_tensor_nbytes(&emb), &mm_mem);
                emb.data = mm_mem;
                if (s == OSC_OK) s = osc_audio_enc_encode(c->aenc, m->data, m->L, &emb, NULL, NULL);
            }
            if (s == OSC_OK) s = osc_device_sync(c->dev);
            t_enc += now_s() - te;
            if (s == OSC_OK) s = feed(c, ids.v + done_to, end - done_to, pos.v + 3 * done_to, m->n_tok, rows, &emb);
            if (mm_mem) {
                osc_dev_free(c->dev, mm_mem);
                mm_mem = NULL;
            }
            free(rows);
            rows = NULL;
            done_to = end;
            i = end - 1;
            item++;
        }
        if (s == OSC_OK && item != c->n_att) s = osc_error(OSC_ERR_INVALID_ARG, "mmchat: media and pads disagree");
        if (s == OSC_OK && done_to < n) s = feed(c, ids.v + done_to, n - done_to, pos.v + 3 * done_to, 0, NULL, NULL);
    }
    if (s != OSC_OK) goto done;
    st.prompt_tokens = n;
    st.encode_seconds = t_enc;
    st.prompt_seconds = now_s() - t0 - t_enc;
    /* the media are now part of the conversation */
    for (int i = 0; s == OSC_OK && i < c->n_att; i++) {
        const media *m = &c->att[i];
        if (m->is_audio ? ivec_push(&c->alens, &m->L, 1) : ivec_push(&c->grids, m->grid, 3)) s = oom();
    }
    osc_mmchat_drop_attached(c);
    c->delta = delta;
    c->reply.n = 0;
    if (s != OSC_OK) goto done;

    /* generate: token at cache index p sits at p + delta on all axes */
    double tg = now_s();
    osc_detok dt;
    osc_detok_init(&dt);
    int user_stop = 0;
    for (int i = 0; i < max_tokens; i++) {
        /* media pad ids are never sampled: a stray pad would leave the conversation with a pad
         * run that no media item fills (the logits are restored for introspection) */
        int32_t pads[3] = {c->cfg.image_token_id, c->cfg.video_token_id, c->cfg.audio_token_id};
        float saved[3] = {0, 0, 0};
        for (int k = 0; k < 3; k++)
            if (pads[k] >= 0 && pads[k] < c->cfg.vocab_size) saved[k] = c->logits[pads[k]], c->logits[pads[k]] = -INFINITY;
        int32_t t = osc_sampler_sample(smp, c->logits, c->hist.v, c->hist.n);
        for (int k = 0; k < 3; k++)
            if (pads[k] >= 0 && pads[k] < c->cfg.vocab_size) c->logits[pads[k]] = saved[k];
        int is_stop = 0;
        for (int j = 0; j < c->n_stop; j++) is_stop |= c->stop[j] == t;
        if (is_stop) {
            st.stopped = 1;
            break;
        }
        if (ivec_push(&c->reply, &t, 1)) { s = oom(); break; }
        const char *piece = osc_detok_push(&dt, c->tok, t, 1);
        if (fn && fn(piece, t, user)) user_stop = 1;
        if (user_stop || i + 1 == max_tokens || c->hist.n + 2 >= c->n_ctx) {
            if (!user_stop && i + 1 < max_tokens)
                osc_log(OSC_LOG_WARN, "context of %d tokens is full; stopping this reply", c->n_ctx);
            if (ivec_push(&c->pending, &t, 1)) s = oom(); /* fed with the next turn */
            break;
        }
        int32_t p3[3];
        p3[0] = p3[1] = p3[2] = c->hist.n + delta;
        if ((s = feed(c, &t, 1, p3, 0, NULL, NULL)) != OSC_OK) break;
    }
    if (s == OSC_OK && fn) {
        const char *tail = osc_detok_flush(&dt);
        if (*tail) fn(tail, -1, user);
    }
    st.gen_tokens = c->reply.n;
    st.gen_seconds = now_s() - tg;
done:
    st.context_tokens = c->hist.n;
    st.rope_delta = c->delta;
    if (stp) *stp = st;
    osc_sampler_free(smp);
    if (mm_mem) osc_dev_free(c->dev, mm_mem);
    free(planes);
    free(ids.v);
    free(all.v);
    free(pos.v);
    free(grids.v);
    free(alens.v);
    return s;
}

const int32_t *osc_mmchat_ids(const osc_mmchat *c, int *n) {
    *n = c->hist.n;
    return c->hist.v;
}
const int32_t *osc_mmchat_positions(const osc_mmchat *c) { return c->hpos.v; }
const int32_t *osc_mmchat_reply(const osc_mmchat *c, int *n) {
    *n = c->reply.n;
    return c->reply.v;
}
const float *osc_mmchat_logits(const osc_mmchat *c) { return c->logits; }
int osc_mmchat_vocab(const osc_mmchat *c) { return c->cfg.vocab_size; }
const char *osc_mmchat_kv_mode(const osc_mmchat *c) { return c->kv_mode; }
int osc_mmchat_n_ctx(const osc_mmchat *c) { return c->n_ctx; }
const char *osc_mmchat_describe(const osc_mmchat *c) { return c->describe; }
