/* Multimodal ChatML prompt ids. See omni_prompt.h. */
#include "omni_prompt.h"

#include <stdlib.h>
#include <string.h>

typedef struct ibuf {
    int32_t *v;
    int n, cap;
    char *run; /* pending text, tokenized at the next special token */
    size_t rn, rcap;
    const osc_tokenizer *tok;
} ibuf;

static osc_status push(ibuf *b, int32_t id, int64_t count) {
    if (count < 0 || (int64_t)b->n + count > (1 << 28)) return osc_error(OSC_ERR_INVALID_ARG, "prompt: too many tokens");
    if (b->n + count > b->cap) {
        int64_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + count) nc *= 2;
        int32_t *nv = realloc(b->v, (size_t)nc * sizeof *nv);
        if (!nv) return osc_error(OSC_ERR_OOM, "prompt: out of memory");
        b->v = nv;
        b->cap = (int)nc;
    }
    for (int64_t i = 0; i < count; i++) b->v[b->n++] = id;
    return OSC_OK;
}

static osc_status text(ibuf *b, const char *s) {
    size_t n = strlen(s);
    if (b->rn + n + 1 > b->rcap) {
        size_t nc = b->rcap ? b->rcap : 256;
        while (nc < b->rn + n + 1) nc *= 2;
        char *nr = realloc(b->run, nc);
        if (!nr) return osc_error(OSC_ERR_OOM, "prompt: out of memory");
        b->run = nr;
        b->rcap = nc;
    }
    memcpy(b->run + b->rn, s, n);
    b->rn += n;
    return OSC_OK;
}

static osc_status flush(ibuf *b) {
    if (b->rn == 0) return OSC_OK;
    int32_t *ids = NULL;
    int n = 0;
    OSC_TRY(osc_tokenizer_encode(b->tok, b->run, b->rn, 0, &ids, &n));
    b->rn = 0;
    osc_status s = OSC_OK;
    for (int i = 0; i < n && s == OSC_OK; i++) s = push(b, ids[i], 1);
    free(ids);
    return s;
}

static osc_status special(ibuf *b, int32_t id, int64_t count) {
    OSC_TRY(flush(b));
    return push(b, id, count);
}

static osc_status need(int id, const char *what) {
    return id >= 0 ? OSC_OK : osc_error(OSC_ERR_INVALID_ARG, "prompt: the model has no %s token", what);
}

static osc_status build(ibuf *b, const osc_llm_config *c, const char *system, const osc_prompt_part *parts, int n_parts,
                        int gen) {
    int32_t ims = osc_tokenizer_token_id(b->tok, "<|im_start|>"), ime = osc_tokenizer_token_id(b->tok, "<|im_end|>");
    if (ims < 0 || ime < 0) return osc_error(OSC_ERR_FORMAT, "prompt: the tokenizer has no <|im_start|>/<|im_end|>");
    if (system) {
        OSC_TRY(special(b, ims, 1));
        OSC_TRY(text(b, "system\n"));
        OSC_TRY(text(b, system));
        OSC_TRY(special(b, ime, 1));
        OSC_TRY(text(b, "\n"));
    }
    OSC_TRY(special(b, ims, 1));
    OSC_TRY(text(b, "user\n"));
    for (int i = 0; i < n_parts; i++) {
        const osc_prompt_part *p = &parts[i];
        if (p->kind != OSC_PART_TEXT && p->n_pad < 0) return osc_error(OSC_ERR_INVALID_ARG, "prompt: negative pad count");
        switch (p->kind) {
        case OSC_PART_TEXT:
            if (p->text) OSC_TRY(text(b, p->text));
            break;
        case OSC_PART_IMAGE:
        case OSC_PART_VIDEO: {
            int pad = p->kind == OSC_PART_IMAGE ? c->image_token_id : c->video_token_id;
            OSC_TRY(need(c->vision_start_id, "vision start"));
            OSC_TRY(need(c->vision_end_id, "vision end"));
            OSC_TRY(need(pad, p->kind == OSC_PART_IMAGE ? "image" : "video"));
            OSC_TRY(special(b, c->vision_start_id, 1));
            OSC_TRY(push(b, pad, p->n_pad));
            OSC_TRY(push(b, c->vision_end_id, 1));
            break;
        }
        case OSC_PART_AUDIO:
            OSC_TRY(need(c->audio_start_id, "audio start"));
            OSC_TRY(need(c->audio_end_id, "audio end"));
            OSC_TRY(need(c->audio_token_id, "audio"));
            OSC_TRY(special(b, c->audio_start_id, 1));
            OSC_TRY(push(b, c->audio_token_id, p->n_pad));
            OSC_TRY(push(b, c->audio_end_id, 1));
            break;
        case OSC_PART_VIDEO_AUDIO:
            OSC_TRY(need(c->vision_start_id, "vision start"));
            OSC_TRY(need(c->audio_start_id, "audio start"));
            OSC_TRY(need(c->video_token_id, "video"));
            OSC_TRY(need(c->audio_token_id, "audio"));
            if (p->n_chunks < 0 || (p->n_chunks && !p->chunks)) return osc_error(OSC_ERR_INVALID_ARG, "prompt: bad chunks");
            OSC_TRY(special(b, c->vision_start_id, 1));
            OSC_TRY(push(b, c->audio_start_id, 1));
            for (int k = 0; k < p->n_chunks; k++) {
                OSC_TRY(push(b, c->video_token_id, p->chunks[2 * k]));
                OSC_TRY(push(b, c->audio_token_id, p->chunks[2 * k + 1]));
            }
            OSC_TRY(push(b, c->audio_end_id, 1));
            OSC_TRY(push(b, c->vision_end_id, 1));
            break;
        default:
            return osc_error(OSC_ERR_INVALID_ARG, "prompt: unknown part kind %d", (int)p->kind);
        }
    }
    OSC_TRY(special(b, ime, 1));
    OSC_TRY(text(b, "\n"));
    if (gen) {
        OSC_TRY(special(b, ims, 1));
        OSC_TRY(text(b, "assistant\n"));
    }
    return flush(b);
}

osc_status osc_omni_prompt_build(const osc_tokenizer *tok, const osc_llm_config *cfg, const char *system,
                                 const osc_prompt_part *parts, int n_parts, int add_generation_prompt, int32_t **ids,
                                 int *n_ids) {
    if (!tok || !cfg || !ids || !n_ids || n_parts < 0 || (n_parts && !parts))
        return osc_error(OSC_ERR_INVALID_ARG, "prompt: bad arguments");
    *ids = NULL;
    *n_ids = 0;
    ibuf b = {0};
    b.tok = tok;
    osc_status s = build(&b, cfg, system, parts, n_parts, add_generation_prompt);
    free(b.run);
    if (s != OSC_OK) {
        free(b.v);
        return s;
    }
    *ids = b.v;
    *n_ids = b.n;
    return OSC_OK;
}
