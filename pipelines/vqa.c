/* `oscar vqa`: answer a question about one or more images with Qwen2.5-Omni or Qwen2.5-VL.
 *
 * Pipeline: image decode (encoders/image.h) -> smart resize + normalise + patchify
 * (encoders/vision_pre.h) -> vision encoder (encoders/vision.h) -> prompt
 *   <|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n
 *   <vision_bos><image pad>*N_1<vision_eos> ... {QUESTION}<|im_end|>\n<|im_start|>assistant\n
 * (llm/omni_prompt.h) -> M-RoPE position ids (llm/mm_pos.h) -> one prefill with the encoder
 * rows scattered into the pad rows -> sampling, each new token at position cache_index + delta.
 * The answer streams to stdout (or one JSON object with --json); speed goes to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "core/config.h"
#include "core/device.h"
#include "core/fileio.h"
#include "encoders/image.h"
#include "encoders/vision.h"
#include "encoders/vision_pre.h"
#include "kernels/ops.h"
#include "kvcache/kvcache.h"
#include "llm/chat.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/sampler.h"
#include "llm/tokenizer.h"
#include "oscar.h"
#include "lib/args.h"

#define VQA_MAX_IMAGES 64

typedef struct vqa_opts {
    const char *model, *prompt, *system, *kv, *device;
    const char *images[VQA_MAX_IMAGES];
    int n_images;
    int n_predict, n_ctx, threads, json, verbose;
    long long min_pixels, max_pixels;
    osc_sampling_flags smp;
} vqa_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: oscar vqa -m MODEL_DIR --image FILE [--image FILE ...] [-p] \"QUESTION\"\n\n"
            "Answer a question about images with Qwen2.5-Omni (thinker) or Qwen2.5-VL from a HuggingFace\n"
            "snapshot folder. The answer streams to stdout; speed goes to stderr.\n\n"
            "options:\n"
            "  -m, --model DIR       model folder (required)\n"
            "  -i, --image FILE      an image (PNG, JPEG, BMP, GIF, WebP as built in); repeat for more\n"
            "  -p, --prompt TEXT     the question (or give it as the last argument)\n"
            "  -s, --system TEXT     system prompt (default: the model family's)\n"
            "  -n, --n-predict N     most tokens to generate (default 256)\n"
            "  -c, --ctx N           context length (default: prompt + n-predict)\n"
            "      --min-pixels N    smallest resized image area (default 3136 = 4*28*28)\n"
            "      --max-pixels N    largest resized image area (default 12845056 = 16384*28*28)\n"
            "      --temp T          temperature; 0 = greedy (default: generation_config.json, else 0)\n"
            "      --top-k K         keep the K most likely tokens (0 = off)\n"
            "      --top-p P         nucleus sampling threshold (1 = off)\n"
            "      --min-p P         drop tokens below P x the top probability (0 = off)\n"
            "      --repeat-penalty R  penalise tokens already seen (1 = off)\n"
            "      --seed S          random seed (default 0)\n"
            "      --kv MODE         KV cache mode: bf16, int8, kivi2, kivi4, rot2, oscar2, oscar4\n"
            "                        (default oscar2; bf16 when the model's head_dim does not allow it)\n"
            "      --device D        cpu, cuda or auto (default auto)\n"
            "  -t, --threads N       CPU threads (default: all cores)\n"
            "      --json            print one JSON object with the answer and statistics\n"
            "  -v, --verbose         log loading details to stderr\n"
            "  -h, --help            this help\n");
}

/* 0 ok, 2 usage error, 3 help */
static int parse(int argc, char **argv, vqa_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 256;
    o->kv = "auto";
    o->device = "auto";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model = v; }
        else if (!strcmp(a, "-i") || !strcmp(a, "--image")) {
            NEEDV();
            if (o->n_images == VQA_MAX_IMAGES) { fprintf(stderr, "oscar: at most %d images\n", VQA_MAX_IMAGES); return 2; }
            o->images[o->n_images++] = v;
        }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEEDV(); o->prompt = v; }
        else if (!strcmp(a, "-s") || !strcmp(a, "--system")) { NEEDV(); o->system = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { NEEDV(); if (osc_arg_ll(a, v, 0, 1 << 20, &x)) return 2; o->n_predict = (int)x; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (osc_arg_ll(a, v, 16, 1 << 22, &x)) return 2; o->n_ctx = (int)x; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (osc_arg_ll(a, v, 0, 1024, &x)) return 2; o->threads = (int)x; }
        else if (!strcmp(a, "--min-pixels")) { NEEDV(); if (osc_arg_ll(a, v, 784, 1LL << 40, &o->min_pixels)) return 2; }
        else if (!strcmp(a, "--max-pixels")) { NEEDV(); if (osc_arg_ll(a, v, 784, 1LL << 40, &o->max_pixels)) return 2; }
        else if (osc_sampling_flag_is(a)) { NEEDV(); if (osc_sampling_flag_parse(a, v, &o->smp)) return 2; }
        else if (!strcmp(a, "--kv")) { NEEDV(); o->kv = v; }
        else if (!strcmp(a, "--device")) {
            NEEDV();
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) { fprintf(stderr, "oscar: --device must be cpu, cuda or auto\n"); return 2; }
            o->device = v;
        }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "oscar: unknown option '%s' (see oscar vqa --help)\n", a); return 2; }
        else if (!o->prompt) o->prompt = a;
        else { fprintf(stderr, "oscar: more than one question given ('%s')\n", a); return 2; }
#undef NEEDV
    }
    if (!o->model) { fprintf(stderr, "oscar: vqa needs a model folder: -m MODEL_DIR (see oscar vqa --help)\n"); return 2; }
    if (!o->n_images) { fprintf(stderr, "oscar: vqa needs at least one --image FILE\n"); return 2; }
    if (!o->prompt) { fprintf(stderr, "oscar: vqa needs a question (-p TEXT or the last argument)\n"); return 2; }
    if (o->min_pixels && o->max_pixels && o->min_pixels > o->max_pixels) {
        fprintf(stderr, "oscar: --min-pixels is larger than --max-pixels\n");
        return 2;
    }
    return 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void vqa_log(osc_log_level lv, const char *msg, void *user) {
    (void)user;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "oscar: %s: %s\n", names[lv], msg);
}

static int fail(const char *what) {
    fprintf(stderr, "oscar: %s: %s\n", what, osc_last_error());
    return 1;
}

typedef struct sbuf { char *s; size_t n, cap; } sbuf;
static int sbuf_add(sbuf *b, const char *t) {
    size_t k = strlen(t);
    if (b->n + k + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->n + k + 1) nc *= 2;
        char *ns = realloc(b->s, nc);
        if (!ns) return -1;
        b->s = ns;
        b->cap = nc;
    }
    memcpy(b->s + b->n, t, k + 1);
    b->n += k;
    return 0;
}

int osc_cli_vqa(int argc, char **argv) {
    vqa_opts o;
    int r = parse(argc, argv, &o);
    if (r == 3) { usage(stdout); return 0; }
    if (r) return r;
    osc_set_log_callback(vqa_log, NULL, o.verbose ? OSC_LOG_DEBUG : OSC_LOG_WARN);
    if (o.threads > 0) osc_cpu_set_threads(o.threads);
    osc_dev dev = OSC_DEV_CPU;
    if (!strcmp(o.device, "cuda") || (!strcmp(o.device, "auto") && osc_device_cuda_available())) {
        if (!osc_device_cuda_available()) { fprintf(stderr, "oscar: --device cuda: no usable GPU (or built without CUDA)\n"); return 1; }
        dev = OSC_DEV_CUDA;
    }
    int rc = 1;
    osc_llm_config cfg;
    osc_mm_pos_params pp;
    osc_tokenizer *tok = NULL;
    osc_llm *llm = NULL;
    osc_vision *vis = NULL;
    osc_llm_ctx *ctx = NULL;
    osc_kv *kv = NULL;
    osc_sampler *smp = NULL;
    osc_image img[VQA_MAX_IMAGES];
    memset(img, 0, sizeof img);
    float *pix = NULL, *logits = NULL;
    int32_t *ids = NULL, *pos = NULL, *rows = NULL, *hist = NULL;
    int32_t grids[VQA_MAX_IMAGES][3];
    osc_prompt_part parts[VQA_MAX_IMAGES + 1];
    sbuf answer = {0};
    char path[4096];
    double t0 = now_s(), t_load, t_pre, t_enc, t_prefill = 0, t_gen = 0;

    /* 1. images first: a bad file fails fast, before loading weights */
    osc_vision_pre_params vp;
    osc_vision_pre_defaults(&vp);
    if (o.min_pixels) vp.min_pixels = o.min_pixels;
    if (o.max_pixels) vp.max_pixels = o.max_pixels;
    int64_t n_patch = 0;
    for (int i = 0; i < o.n_images; i++) {
        if (osc_image_load(o.images[i], 0, &img[i]) != OSC_OK) {
            fprintf(stderr, "oscar: cannot read image %s: %s\n", o.images[i], osc_last_error());
            goto done;
        }
    }
    t_pre = now_s();
    /* 2. model */
    if (osc_config_load(o.model, &cfg) != OSC_OK) { fail("cannot load the model"); goto done; }
    if (cfg.arch != OSC_ARCH_QWEN2_5_OMNI && cfg.arch != OSC_ARCH_QWEN2_5_VL) {
        fprintf(stderr, "oscar: vqa needs a Qwen2.5-Omni or Qwen2.5-VL model; %s is %s\n", o.model, osc_arch_name(cfg.arch));
        goto done;
    }
    if (osc_mm_pos_params_load(o.model, &cfg, &pp) != OSC_OK) { fail("cannot load the model"); goto done; }
    osc_path_join(path, sizeof path, o.model, "tokenizer.json");
    if (osc_tokenizer_load(path, &tok) != OSC_OK) { fail("cannot load the tokenizer"); goto done; }
    if (osc_llm_load(o.model, dev, &llm) != OSC_OK) { fail("cannot load the model"); goto done; }
    if (osc_vision_load(o.model, dev, &vis) != OSC_OK) { fail("cannot load the vision encoder"); goto done; }
    const osc_vision_config *vc = osc_vision_config_of(vis);
    if (vc->out_hidden != cfg.hidden_size) {
        fprintf(stderr, "oscar: the vision encoder's out_hidden_size %d differs from the decoder's hidden size %d\n",
                vc->out_hidden, cfg.hidden_size);
        goto done;
    }
    {
        o.kv = osc_kv_mode_for(o.kv, cfg.head_dim);
        int rot = osc_kv_mode_rotates(o.kv);
        if (rot < 0) { fprintf(stderr, "oscar: unknown KV cache mode '%s' (known: %s)\n", o.kv, osc_kv_modes()); goto done; }
        if (rot && osc_llm_fold_v_rotation(llm) != OSC_OK) { fail("cannot prepare the KV mode"); goto done; }
    }
    if (o.verbose) fprintf(stderr, "oscar: %s\n", osc_llm_describe(llm));
    t_load = now_s();
    /* 3. preprocess every image, concatenate the pixel rows */
    vp.patch_size = vc->patch;
    vp.merge_size = vc->merge;
    vp.temporal_patch_size = vc->temporal_patch;
    int64_t n_img_tok = 0;
    for (int i = 0; i < o.n_images; i++) {
        float *pv = NULL;
        int64_t np = 0;
        int g[3];
        if (osc_vision_preprocess(&img[i], 1, &vp, &pv, &np, g) != OSC_OK) {
            fprintf(stderr, "oscar: cannot preprocess image %s: %s\n", o.images[i], osc_last_error());
            goto done;
        }
        float *nb = realloc(pix, (size_t)(n_patch + np) * vc->patch_dim * sizeof(float));
        if (!nb) { free(pv); fprintf(stderr, "oscar: out of memory\n"); goto done; }
        pix = nb;
        memcpy(pix + n_patch * vc->patch_dim, pv, (size_t)np * vc->patch_dim * sizeof(float));
        free(pv);
        n_patch += np;
        for (int k = 0; k < 3; k++) grids[i][k] = g[k];
        int64_t nt = osc_vision_tokens(vc, grids[i]);
        if (nt <= 0) { fprintf(stderr, "oscar: image %s gives a bad grid\n", o.images[i]); goto done; }
        parts[i] = (osc_prompt_part){OSC_PART_IMAGE, NULL, (int)nt, NULL, 0};
        n_img_tok += nt;
        if (o.verbose)
            fprintf(stderr, "oscar: image %s: %dx%d -> grid [%d,%d,%d], %lld tokens\n", o.images[i], img[i].w, img[i].h, g[0], g[1],
                    g[2], (long long)nt);
    }
    parts[o.n_images] = (osc_prompt_part){OSC_PART_TEXT, o.prompt, 0, NULL, 0};
    /* 4. prompt and positions */
    const char *sys = o.system ? o.system : osc_chat_default_system(OSC_CHAT_CHATML, cfg.arch == OSC_ARCH_QWEN2_5_OMNI);
    int n = 0;
    if (osc_omni_prompt_build(tok, &cfg, sys, parts, o.n_images + 1, 1, &ids, &n) != OSC_OK) { fail("prompt"); goto done; }
    int n_ctx = o.n_ctx ? o.n_ctx : n + o.n_predict + 1;
    if (n + 1 > n_ctx) {
        fprintf(stderr, "oscar: the prompt has %d tokens (%lld for the images), more than the context of %d\n", n,
                (long long)n_img_tok, n_ctx);
        goto done;
    }
    pos = malloc((size_t)3 * n * sizeof *pos);
    rows = malloc((size_t)n_img_tok * sizeof *rows);
    hist = malloc((size_t)(n + o.n_predict + 1) * sizeof *hist);
    logits = malloc((size_t)cfg.vocab_size * sizeof *logits);
    if (!pos || !rows || !hist || !logits) { fprintf(stderr, "oscar: out of memory\n"); goto done; }
    osc_mm_inputs in = {(const int32_t(*)[3])grids, o.n_images, NULL, NULL, 0, NULL, 0, 0};
    int32_t delta = 0;
    if (osc_mm_rope_index(&pp, ids, n, &in, pos, &delta) != OSC_OK) { fail("positions"); goto done; }
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] == cfg.image_token_id) rows[nr++] = i;
    /* 5. encode, prefill */
    osc_tensor emb;
    if (osc_vision_encode(vis, pix, n_patch, (const int32_t(*)[3])grids, o.n_images, &emb) != OSC_OK) {
        fail("vision encoder");
        goto done;
    }
    if (osc_device_sync(dev) != OSC_OK) { fail("vision encoder"); goto done; }
    t_enc = now_s();
    if (osc_llm_kv_new(llm, o.kv, n_ctx, &kv) != OSC_OK || osc_llm_ctx_new(llm, 512, &ctx) != OSC_OK) {
        fail("cannot allocate the cache");
        goto done;
    }
    {
        int st[2] = {0, n};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = pos, .kv = &kv, .all_logits = 0,
                           .n_mm = nr, .mm_rows = rows, .mm_embeds = &emb};
        if (osc_llm_forward(llm, ctx, &b, logits) != OSC_OK) { fail("prefill"); goto done; }
    }
    t_prefill = now_s() - t_enc;
    memcpy(hist, ids, (size_t)n * sizeof *hist);
    int n_hist = n;
    /* 6. sampler and stop tokens */
    int32_t stop[16];
    int n_stop = 0;
    {
        osc_gen_config g;
        if (osc_gen_config_load(o.model, &g) != OSC_OK) { fail("generation_config.json"); goto done; }
        osc_sampler_params sp = osc_sampler_default_params();
        if (g.do_sample) {
            sp.temperature = g.temperature;
            sp.top_k = g.top_k;
            sp.top_p = g.top_p;
            sp.min_p = g.min_p;
        }
        sp.repeat_penalty = g.repeat_penalty > 0 ? g.repeat_penalty : 1.0f;
        osc_sampling_flags_apply(&o.smp, &sp);
        sp.seed = o.smp.seed;
        if (osc_sampler_new(&sp, cfg.vocab_size, &smp) != OSC_OK) { fail("sampler"); goto done; }
        for (int i = 0; i < cfg.n_eos && n_stop < 12; i++) stop[n_stop++] = cfg.eos_ids[i];
        for (int i = 0; i < g.n_eos && n_stop < 12; i++) stop[n_stop++] = g.eos_ids[i];
        int32_t e1 = osc_tokenizer_token_id(tok, "<|im_end|>"), e2 = osc_tokenizer_token_id(tok, "<|endoftext|>");
        if (e1 >= 0) stop[n_stop++] = e1;
        if (e2 >= 0) stop[n_stop++] = e2;
    }
    /* 7. generate */
    double tg = now_s();
    int n_gen = 0, stopped = 0;
    osc_detok dt;
    osc_detok_init(&dt);
    for (int i = 0; i < o.n_predict; i++) {
        int32_t t = osc_sampler_sample(smp, logits, hist, n_hist);
        int is_stop = 0;
        for (int j = 0; j < n_stop; j++) is_stop |= stop[j] == t;
        if (is_stop) { stopped = 1; break; }
        hist[n_hist++] = t;
        n_gen++;
        const char *piece = osc_detok_push(&dt, tok, t, 1);
        if (sbuf_add(&answer, piece)) { fprintf(stderr, "oscar: out of memory\n"); goto done; }
        if (!o.json) { fputs(piece, stdout); fflush(stdout); }
        if (i + 1 == o.n_predict) break;
        if (n_hist + 1 > n_ctx) { osc_log(OSC_LOG_WARN, "context of %d tokens is full; stopping", n_ctx); break; }
        int32_t p3[3];
        p3[0] = p3[1] = p3[2] = n_hist - 1 + delta; /* cache index of t, plus the rope delta */
        int st[2] = {0, 1};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = &t, .pos = p3, .kv = &kv};
        if (osc_llm_forward(llm, ctx, &b, logits) != OSC_OK) { fail("decode"); goto done; }
    }
    {
        const char *tail = osc_detok_flush(&dt);
        if (sbuf_add(&answer, tail)) goto done;
        if (!o.json) { fputs(tail, stdout); fputc('\n', stdout); fflush(stdout); }
    }
    t_gen = now_s() - tg;
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "answer", answer.s ? answer.s : "");
        cJSON_AddStringToObject(j, "model", o.model);
        cJSON_AddStringToObject(j, "device", dev == OSC_DEV_CPU ? "cpu" : "cuda");
        cJSON_AddStringToObject(j, "kv", o.kv);
        cJSON *ja = cJSON_AddArrayToObject(j, "images");
        for (int i = 0; i < o.n_images; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "path", o.images[i]);
            cJSON_AddNumberToObject(e, "width", img[i].w);
            cJSON_AddNumberToObject(e, "height", img[i].h);
            cJSON *gg = cJSON_AddArrayToObject(e, "grid_thw");
            for (int k = 0; k < 3; k++) cJSON_AddItemToArray(gg, cJSON_CreateNumber(grids[i][k]));
            cJSON_AddNumberToObject(e, "tokens", (double)osc_vision_tokens(vc, grids[i]));
            cJSON_AddItemToArray(ja, e);
        }
        cJSON_AddNumberToObject(j, "prompt_tokens", n);
        cJSON_AddNumberToObject(j, "image_tokens", (double)n_img_tok);
        cJSON_AddNumberToObject(j, "generated_tokens", n_gen);
        cJSON *jid = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < n_gen; i++) cJSON_AddItemToArray(jid, cJSON_CreateNumber(hist[n + i]));
        cJSON_AddBoolToObject(j, "stopped", stopped);
        cJSON_AddNumberToObject(j, "rope_delta", delta);
        cJSON_AddNumberToObject(j, "load_seconds", t_load - t_pre);
        cJSON_AddNumberToObject(j, "encode_seconds", t_enc - t_load);
        cJSON_AddNumberToObject(j, "prefill_seconds", t_prefill);
        cJSON_AddNumberToObject(j, "generate_seconds", t_gen);
        cJSON_AddNumberToObject(j, "total_seconds", now_s() - t0);
        char *s = cJSON_PrintUnformatted(j);
        if (s) printf("%s\n", s);
        free(s);
        cJSON_Delete(j);
    } else {
        fprintf(stderr, "oscar: %d image tokens encoded in %.2f s; prompt %d tokens in %.2f s (%.1f tok/s); "
                "generated %d tokens in %.2f s (%.1f tok/s)\n",
                (int)n_img_tok, t_enc - t_load, n, t_prefill, t_prefill > 0 ? n / t_prefill : 0.0, n_gen, t_gen,
                t_gen > 0 ? n_gen / t_gen : 0.0);
    }
    rc = 0;
done:
    for (int i = 0; i < o.n_images; i++) osc_image_free(&img[i]);
    osc_sampler_free(smp);
    osc_llm_ctx_free(ctx);
    osc_kv_free(kv);
    osc_vision_free(vis);
    osc_llm_free(llm);
    osc_tokenizer_free(tok);
    free(pix);
    free(logits);
    free(ids);
    free(pos);
    free(rows);
    free(hist);
    free(answer.s);
    return rc;
}
