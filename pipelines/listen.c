/* oscar listen: transcribe an audio file with a Qwen2.5-Omni thinker, then chat about it in the
 * same conversation (one question with -p, or interactive from stdin).
 *
 * The conversation, in the model's ChatML template (docs/qwen2_5_omni.md 1.6):
 *   <|im_start|>system\n{SYSTEM}<|im_end|>\n
 *   <|im_start|>user\n<|audio_bos|><|AUDIO|>*N<|audio_eos|>{INSTRUCTION}<|im_end|>\n
 *   <|im_start|>assistant\n{transcript}<|im_end|>\n
 *   <|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n{answer} ...
 * The audio pads get the audio encoder's embeddings (osc_llm_batch.mm_rows/mm_embeds). Audio
 * longer than 300 s (what the reference processor keeps of one audio) is cut into 300 s pieces,
 * each its own <|audio_bos|>...<|audio_eos|> item in the same user turn, as if they were given as
 * several audios. The K/V cache keeps the whole conversation, so nothing is recomputed between
 * turns; generated ids are kept as generated (no re-tokenisation of replies).
 * Prompt ids come from llm/omni_prompt.h and TMRoPE positions from llm/mm_pos.h (for audio only
 * they equal the token index, rope delta 0); later tokens get cache index + delta.
 *
 * --audio-seconds S: no chat; measures the audio encoder alone on S seconds of synthetic audio
 * (features from a deterministic signal) and prints its real-time factor. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/device.h"
#include "core/fileio.h"
#include "encoders/audio_enc.h"
#include "encoders/audio_io.h"
#include "encoders/mel.h"
#include "kernels/ops.h"
#include "llm/chat.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/sampler.h"
#include "llm/tokenizer.h"
#include "lib/args.h"

#define LISTEN_DEFAULT_INSTRUCTION "Transcribe the English audio into text without any punctuation marks."
#define LISTEN_PIECE_SAMPLES ((int64_t)OSC_MEL_MAX_SAMPLES) /* 300 s at 16 kHz */

typedef struct listen_opts {
    const char *model, *audio, *prompt, *system, *instruction, *kv, *device;
    int n_predict, n_ctx, threads, json, verbose, transcribe_only;
    double max_seconds, bench_seconds;
    osc_sampling_flags smp;
} listen_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: oscar listen -m MODEL_DIR --audio FILE [options]\n\n"
            "Transcribe an audio file with a Qwen2.5-Omni model, then chat about it in the same\n"
            "conversation: one question with -p, or interactive lines from stdin (/exit or end of\n"
            "input leaves). The transcript and answers go to stdout; progress and speed to stderr.\n"
            "Audio: WAV/FLAC/OGG/MP3 (libsndfile) and, when built with FFmpeg, M4A/Opus/video files;\n"
            "resampled to 16 kHz mono. Audio longer than 300 s is given to the model as 300 s pieces.\n\n"
            "options:\n"
            "  -m, --model DIR       Qwen2.5-Omni snapshot folder (required)\n"
            "  -a, --audio FILE      the audio (required)\n"
            "  -p, --prompt TEXT     one question about the audio after the transcript\n"
            "      --instruction T   the transcription request (default: \"%s\")\n"
            "      --transcribe-only print the transcript and stop (no chat)\n"
            "  -s, --system TEXT     system prompt (default: the Qwen2.5-Omni one)\n"
            "  -n, --n-predict N     most tokens per reply (default 512)\n"
            "  -c, --ctx N           context length (default: the prompt + 2048, at least 4096)\n"
            "      --temp T          temperature; 0 = greedy (default: generation_config.json, else 0)\n"
            "      --top-k K, --top-p P, --min-p P, --repeat-penalty R   sampling filters as in oscar chat\n"
            "      --seed S          random seed (default 0)\n"
            "      --kv MODE         KV cache mode: bf16, int8, kivi2, kivi4, rot2, oscar2, oscar4\n"
            "                        (default oscar2; bf16 when the model's head_dim does not allow it)\n"
            "      --device D        cpu, cuda or auto (default auto)\n"
            "  -t, --threads N       CPU threads (default: all cores)\n"
            "      --max-seconds S   refuse audio longer than S seconds (default %.0f)\n"
            "      --json            print {\"transcript\": ..., \"answer\": ...} (and statistics)\n"
            "      --audio-seconds S benchmark: audio encoder real-time factor on S s of synthetic audio\n"
            "                        (no --audio; -m DIR, or -m random:7b / random:3b for the real\n"
            "                        encoder shape with random weights)\n"
            "  -v, --verbose         log loading details to stderr\n"
            "  -h, --help            this help\n",
            LISTEN_DEFAULT_INSTRUCTION, OSC_AUDIO_DEFAULT_MAX_SECONDS);
}

static void log_to_stderr(osc_log_level lv, const char *msg, void *user) {
    (void)user;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "oscar: %s: %s\n", names[lv], msg);
}

/* 0 ok, 2 usage error, 3 help */
static int parse(int argc, char **argv, listen_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 512;
    o->device = "auto";
    o->kv = "auto";
    o->instruction = LISTEN_DEFAULT_INSTRUCTION;
    o->max_seconds = OSC_AUDIO_DEFAULT_MAX_SECONDS;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model = v; }
        else if (!strcmp(a, "-a") || !strcmp(a, "--audio")) { NEEDV(); o->audio = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEEDV(); o->prompt = v; }
        else if (!strcmp(a, "-s") || !strcmp(a, "--system")) { NEEDV(); o->system = v; }
        else if (!strcmp(a, "--instruction")) { NEEDV(); o->instruction = v; }
        else if (!strcmp(a, "--transcribe-only")) o->transcribe_only = 1;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { NEEDV(); if (osc_arg_int(a, v, 0, 1 << 20, &o->n_predict)) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (osc_arg_int(a, v, 16, 1 << 22, &o->n_ctx)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (osc_arg_int(a, v, 0, 1024, &o->threads)) return 2; }
        else if (osc_sampling_flag_is(a)) { NEEDV(); if (osc_sampling_flag_parse(a, v, &o->smp)) return 2; }
        else if (!strcmp(a, "--kv")) { NEEDV(); o->kv = v; }
        else if (!strcmp(a, "--device")) {
            NEEDV();
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) { fprintf(stderr, "oscar: --device must be cpu, cuda or auto\n"); return 2; }
            o->device = v;
        }
        else if (!strcmp(a, "--max-seconds")) { NEEDV(); if (osc_arg_double(a, v, 0.1, 86400, &o->max_seconds)) return 2; }
        else if (!strcmp(a, "--audio-seconds")) { NEEDV(); if (osc_arg_double(a, v, 0.1, 7200, &o->bench_seconds)) return 2; }
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else { fprintf(stderr, "oscar: unknown option '%s' (see oscar listen --help)\n", a); return 2; }
#undef NEEDV
    }
    if (!o->model) { fprintf(stderr, "oscar: listen needs a model folder: -m MODEL_DIR (see oscar listen --help)\n"); return 2; }
    if (!o->audio && o->bench_seconds <= 0) { fprintf(stderr, "oscar: listen needs an audio file: --audio FILE\n"); return 2; }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *what) {
    fprintf(stderr, "oscar: %s: %s\n", what, osc_last_error());
    return 1;
}

/* ---- growable arrays -------------------------------------------------------------------- */

typedef struct ivec { int32_t *v; int n, cap; } ivec;
static int ivec_push(ivec *a, const int32_t *x, int n) {
    if (a->n + n > a->cap) {
        int nc = a->cap ? a->cap : 256;
        while (nc < a->n + n) nc *= 2;
        int32_t *nv = realloc(a->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        a->v = nv;
        a->cap = nc;
    }
    if (n) memcpy(a->v + a->n, x, (size_t)n * sizeof *x);
    a->n += n;
    return 0;
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

/* ---- the conversation ------------------------------------------------------------------- */

typedef struct conv {
    osc_llm *llm;
    osc_llm_ctx *ctx;
    osc_kv *kv;
    osc_tokenizer *tok;
    osc_sampler *smp;
    int n_ctx, vocab;
    ivec hist;      /* ids whose K/V are in the cache */
    ivec pending;   /* ids to feed before the next turn (the last generated token) */
    int32_t stop[8];
    int n_stop;
    int32_t delta;  /* rope delta of the prompt: a token at cache index p has position p + delta */
    int32_t *pos;   /* scratch for [3][n] positions */
    int pos_cap;
    float *logits;
} conv;

/* Append text to ids: special-token strings parsed (template) or not (user text). */
static osc_status add_text(const osc_tokenizer *tok, ivec *ids, const char *text, int special) {
    int32_t *t = NULL;
    int n = 0;
    OSC_TRY(osc_tokenizer_encode(tok, text, strlen(text), special, &t, &n));
    int r = ivec_push(ids, t, n);
    free(t);
    return r ? osc_error(OSC_ERR_OOM, "out of host memory") : OSC_OK;
}

/* Feed ids (with multimodal rows) and leave the last row's logits in c->logits. pos: [3][n]
 * positions, or NULL for cache index + delta. */
static osc_status feed(conv *c, const int32_t *ids, int n, const int32_t *pos, int n_mm, const int32_t *mm_rows,
                       const osc_tensor *mm) {
    if (c->hist.n + n >= c->n_ctx)
        return osc_error(OSC_ERR_CONTEXT, "the conversation needs %d tokens, but the context holds %d (raise -c)",
                         c->hist.n + n + 1, c->n_ctx);
    if (!pos && c->delta != 0) {
        if (3 * n > c->pos_cap) {
            int32_t *np = realloc(c->pos, (size_t)3 * n * sizeof *np);
            if (!np) return osc_error(OSC_ERR_OOM, "out of host memory");
            c->pos = np;
            c->pos_cap = 3 * n;
        }
        for (int a = 0; a < 3; a++)
            for (int i = 0; i < n; i++) c->pos[a * n + i] = c->hist.n + i + c->delta;
        pos = c->pos;
    }
    int st[2] = {0, n};
    osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = pos, .kv = &c->kv, .all_logits = 0,
                       .n_mm = n_mm, .mm_rows = mm_rows, .mm_embeds = mm};
    OSC_TRY(osc_llm_forward(c->llm, c->ctx, &b, c->logits));
    if (ivec_push(&c->hist, ids, n)) return osc_error(OSC_ERR_OOM, "out of host memory");
    return OSC_OK;
}

typedef struct reply {
    sbuf text;
    ivec ids;
    int stopped;
    double seconds;
} reply;

/* Sample up to max tokens after the prompt just fed; stream them to stdout when print. */
static osc_status generate(conv *c, int max, int print, reply *r) {
    double t0 = now_s();
    osc_detok dt;
    osc_detok_init(&dt);
    c->pending.n = 0;
    for (int i = 0; i < max; i++) {
        int32_t t = osc_sampler_sample(c->smp, c->logits, c->hist.v, c->hist.n);
        int stop = 0;
        for (int j = 0; j < c->n_stop; j++) stop |= c->stop[j] == t;
        if (stop) {
            r->stopped = 1;
            break;
        }
        if (ivec_push(&r->ids, &t, 1)) return osc_error(OSC_ERR_OOM, "out of host memory");
        const char *piece = osc_detok_push(&dt, c->tok, t, 1);
        if (sbuf_add(&r->text, piece)) return osc_error(OSC_ERR_OOM, "out of host memory");
        if (print) {
            fputs(piece, stdout);
            fflush(stdout);
        }
        if (i + 1 == max || c->hist.n + 2 >= c->n_ctx) {
            if (i + 1 < max) osc_log(OSC_LOG_WARN, "context of %d tokens is full; stopping this reply", c->n_ctx);
            ivec_push(&c->pending, &t, 1); /* fed with the next turn */
            break;
        }
        OSC_TRY(feed(c, &t, 1, NULL, 0, NULL, NULL));
    }
    const char *tail = osc_detok_flush(&dt);
    if (sbuf_add(&r->text, tail)) return osc_error(OSC_ERR_OOM, "out of host memory");
    if (print) {
        fputs(tail, stdout);
        fflush(stdout);
    }
    if (!r->text.s) sbuf_add(&r->text, "");
    r->seconds = now_s() - t0;
    return OSC_OK;
}

/* One more user turn: close the assistant turn, the question, the generation prompt. */
static osc_status ask(conv *c, const char *question, int max, int print, reply *r) {
    ivec ids = {0};
    osc_status s = ivec_push(&ids, c->pending.v, c->pending.n) ? osc_error(OSC_ERR_OOM, "out of host memory") : OSC_OK;
    if (s == OSC_OK) s = add_text(c->tok, &ids, "<|im_end|>\n<|im_start|>user\n", 1);
    if (s == OSC_OK) s = add_text(c->tok, &ids, question, 0);
    if (s == OSC_OK) s = add_text(c->tok, &ids, "<|im_end|>\n<|im_start|>assistant\n", 1);
    if (s == OSC_OK) s = feed(c, ids.v, ids.n, NULL, 0, NULL, NULL);
    free(ids.v);
    if (s == OSC_OK) s = generate(c, max, print, r);
    return s;
}

static void reply_free(reply *r) {
    free(r->text.s);
    free(r->ids.v);
    memset(r, 0, sizeof *r);
}

/* ---- audio -------------------------------------------------------------------------------- */

typedef struct progress_ctx { int show; double t0, total_s, done_before_s; } progress_ctx;

static int on_progress(void *user, int64_t done, int64_t total) {
    progress_ctx *p = user;
    (void)total;
    if (p->show) {
        double s = p->done_before_s + done / 100.0;
        double el = now_s() - p->t0;
        fprintf(stderr, "\roscar: encoding audio %.0f / %.0f s (%.1fx real time)   ", s, p->total_s, el > 0 ? s / el : 0.0);
        fflush(stderr);
    }
    return 0;
}

/* Encoder real-time factor on S seconds of a deterministic synthetic signal. */
static int bench_encoder(const listen_opts *o, osc_dev dev) {
    osc_audio_enc *enc;
    if (!strncmp(o->model, "random", 6)) {
        /* the Qwen2.5-Omni audio encoder shape with random weights: random, random:7b, random:3b */
        osc_audio_enc_config ec;
        osc_audio_enc_default_config(&ec);
        if (!strcmp(o->model, "random:3b")) ec.output_dim = 2048;
        else if (strcmp(o->model, "random") && strcmp(o->model, "random:7b")) {
            fprintf(stderr, "oscar: unknown random encoder '%s' (random:7b, random:3b)\n", o->model);
            return 2;
        }
        if (osc_audio_enc_new_random(&ec, dev, 1, &enc) != OSC_OK) return fail("cannot make the audio encoder");
    } else if (osc_audio_enc_load(o->model, dev, &enc) != OSC_OK) {
        return fail("cannot load the audio encoder");
    }
    int64_t n = (int64_t)(o->bench_seconds * 16000);
    float *pcm = malloc((size_t)n * sizeof(float));
    if (!pcm) { osc_audio_enc_free(enc); fprintf(stderr, "oscar: out of memory\n"); return 1; }
    for (int64_t i = 0; i < n; i++) {
        double t = i / 16000.0;
        pcm[i] = (float)(0.3 * sin(2 * M_PI * (200 + 50 * sin(t)) * t) + 0.05 * sin(2 * M_PI * 3100 * t));
    }
    const osc_audio_enc_config *ec = osc_audio_enc_config_of(enc);
    double t_mel = 0, t_enc = 0;
    int64_t tokens = 0;
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) { /* pass 0 warms up (scratch, GEMM handles) */
        t_mel = t_enc = 0;
        tokens = 0;
        for (int64_t off = 0; off < n && !rc; off += LISTEN_PIECE_SAMPLES) {
            int64_t len = n - off < LISTEN_PIECE_SAMPLES ? n - off : LISTEN_PIECE_SAMPLES;
            float *feat = NULL;
            int L = 0;
            double t0 = now_s();
            if (osc_mel_features(pcm + off, len, &feat, &L) != OSC_OK) { rc = fail("mel features"); break; }
            double t1 = now_s();
            int nt = osc_audio_enc_n_tokens(L);
            if (nt > 0) {
                osc_tensor out = osc_tensor_2d(NULL, OSC_F32, dev, nt, ec->output_dim);
                void *p = NULL;
                if (osc_dev_malloc(dev, osc_tensor_nbytes(&out), &p) != OSC_OK) { free(feat); rc = fail("output"); break; }
                out.data = p;
                if (osc_audio_enc_encode(enc, feat, L, &out, NULL, NULL) != OSC_OK) rc = fail("encode");
                osc_dev_free(dev, p);
            }
            t_enc += now_s() - t1;
            t_mel += t1 - t0;
            tokens += nt;
            free(feat);
        }
    }
    if (!rc) {
        if (o->json) {
            printf("{\"audio_seconds\": %.3f, \"device\": \"%s\", \"tokens\": %lld, \"mel_seconds\": %.6f, "
                   "\"encoder_seconds\": %.6f, \"encoder_rtf\": %.6f, \"encoder_x_realtime\": %.2f}\n",
                   o->bench_seconds, dev == OSC_DEV_CPU ? "cpu" : "cuda", (long long)tokens, t_mel, t_enc,
                   t_enc / o->bench_seconds, t_enc > 0 ? o->bench_seconds / t_enc : 0.0);
        } else {
            printf("audio encoder on %s: %.1f s of audio -> %lld tokens; mel %.3f s, encoder %.3f s: "
                   "RTF %.5f (%.1fx real time)\n",
                   dev == OSC_DEV_CPU ? "cpu" : "cuda", o->bench_seconds, (long long)tokens, t_mel, t_enc,
                   t_enc / o->bench_seconds, t_enc > 0 ? o->bench_seconds / t_enc : 0.0);
        }
    }
    free(pcm);
    osc_audio_enc_free(enc);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

static cJSON *ids_json(const ivec *v) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < v->n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v->v[i]));
    return a;
}

int osc_cli_listen(int argc, char **argv) {
    listen_opts o;
    int r = parse(argc, argv, &o);
    if (r == 3) { usage(stdout); return 0; }
    if (r) return r;
    osc_set_log_callback(log_to_stderr, NULL, o.verbose ? OSC_LOG_DEBUG : OSC_LOG_WARN);
    osc_cpu_set_threads(o.threads);
    osc_dev dev = OSC_DEV_CPU;
    if (!strcmp(o.device, "cuda") || (!strcmp(o.device, "auto") && osc_device_cuda_available())) {
        if (!osc_device_cuda_available()) {
            fprintf(stderr, "oscar: CUDA requested but no usable GPU (or this build has no CUDA)\n");
            return 1;
        }
        dev = OSC_DEV_CUDA;
    }
    if (o.bench_seconds > 0) return bench_encoder(&o, dev);

    int rc = 1;
    float *pcm = NULL;
    int64_t n_pcm = 0;
    conv c = {0};
    osc_audio_enc *enc = NULL;
    void *mm_mem = NULL;
    ivec prompt = {0}, mm_rows = {0};
    int32_t *prompt_pos = NULL;
    reply tr = {0}, an = {0};
    osc_status s;
    char path[4096];
    double t_start = now_s();

    /* 1. the audio, before anything heavy: a bad file fails fast */
    if (osc_audio_load(o.audio, OSC_MEL_SAMPLE_RATE, o.max_seconds, &pcm, &n_pcm) != OSC_OK) {
        fail("cannot read the audio");
        goto done;
    }
    const double audio_s = n_pcm / (double)OSC_MEL_SAMPLE_RATE;

    /* 2. model, tokenizer, audio encoder */
    osc_llm_config cfg;
    if (osc_config_load(o.model, &cfg) != OSC_OK) { fail("cannot load the model"); goto done; }
    if (cfg.arch != OSC_ARCH_QWEN2_5_OMNI || cfg.audio_token_id < 0 || cfg.audio_start_id < 0 || cfg.audio_end_id < 0) {
        fprintf(stderr, "oscar: %s is not a Qwen2.5-Omni model with audio input (model_type %s)\n", o.model, cfg.model_type);
        goto done;
    }
    if (osc_llm_load(o.model, dev, &c.llm) != OSC_OK) { fail("cannot load the model"); goto done; }
    if (osc_tokenizer_load(osc_path_join(path, sizeof path, o.model, "tokenizer.json"), &c.tok) != OSC_OK) {
        fail("cannot load the tokenizer");
        goto done;
    }
    if (osc_audio_enc_load(o.model, dev, &enc) != OSC_OK) { fail("cannot load the audio encoder"); goto done; }
    const osc_audio_enc_config *ec = osc_audio_enc_config_of(enc);
    if (ec->output_dim != cfg.hidden_size) {
        fprintf(stderr, "oscar: the audio encoder's output_dim %d differs from the decoder's hidden size %d\n",
                ec->output_dim, cfg.hidden_size);
        goto done;
    }
    if (osc_tokenizer_token_id(c.tok, "<|AUDIO|>") != cfg.audio_token_id ||
        osc_tokenizer_token_id(c.tok, "<|im_start|>") < 0) {
        fprintf(stderr, "oscar: tokenizer.json does not match config.json (<|AUDIO|> is not id %d)\n", cfg.audio_token_id);
        goto done;
    }
    {
        o.kv = osc_kv_mode_for(o.kv, cfg.head_dim);
        int rot = osc_kv_mode_rotates(o.kv);
        if (rot < 0) {
            fprintf(stderr, "oscar: unknown KV cache mode '%s' (known: %s)\n", o.kv, osc_kv_modes());
            goto done;
        }
        if (rot && osc_llm_fold_v_rotation(c.llm) != OSC_OK) { fail("cannot prepare the KV mode"); goto done; }
    }
    if (o.verbose) {
        fprintf(stderr, "oscar: %s\n", osc_llm_describe(c.llm));
        fprintf(stderr, "oscar: audio encoder: %d layers, d_model %d, %.1f MiB\n", ec->n_layers, ec->d_model,
                osc_audio_enc_weight_bytes(enc) / 1048576.0);
    }

    /* 3. features of each <= 300 s piece, and the prompt with one audio item per piece */
    int n_pieces = (int)((n_pcm + LISTEN_PIECE_SAMPLES - 1) / LISTEN_PIECE_SAMPLES);
    float **feats = calloc((size_t)n_pieces, sizeof *feats);
    int *lens = calloc((size_t)n_pieces, sizeof *lens);
    if (!feats || !lens) { fprintf(stderr, "oscar: out of memory\n"); free(feats); free(lens); goto done; }
    int n_audio_tok = 0;
    s = OSC_OK;
    for (int p = 0; p < n_pieces && s == OSC_OK; p++) {
        int64_t off = (int64_t)p * LISTEN_PIECE_SAMPLES;
        int64_t len = n_pcm - off < LISTEN_PIECE_SAMPLES ? n_pcm - off : LISTEN_PIECE_SAMPLES;
        s = osc_mel_features(pcm + off, len, &feats[p], &lens[p]);
        if (s == OSC_OK) n_audio_tok += osc_audio_enc_n_tokens(lens[p]);
    }
    free(pcm);
    pcm = NULL;
    if (s != OSC_OK) { fail("cannot compute audio features"); goto free_feats; }
    if (n_audio_tok == 0) {
        fprintf(stderr, "oscar: %s: the audio is too short (%.3f s; at least 0.03 s is needed)\n", o.audio, audio_s);
        goto free_feats;
    }
    {
        /* one audio part per piece, then the instruction (llm/omni_prompt.h) */
        osc_prompt_part *parts = calloc((size_t)n_pieces + 1, sizeof *parts);
        int32_t *alen = calloc((size_t)n_pieces, sizeof *alen);
        int np = 0, na = 0;
        if (!parts || !alen) s = osc_error(OSC_ERR_OOM, "out of host memory");
        for (int p = 0; s == OSC_OK && p < n_pieces; p++) {
            int nt = osc_audio_enc_n_tokens(lens[p]);
            if (nt == 0) continue; /* a last piece of a few samples */
            parts[np].kind = OSC_PART_AUDIO;
            parts[np++].n_pad = nt;
            alen[na++] = lens[p];
        }
        if (s == OSC_OK) {
            parts[np].kind = OSC_PART_TEXT;
            parts[np++].text = o.instruction;
            const char *sys = o.system ? o.system : osc_chat_default_system(OSC_CHAT_CHATML, 1);
            s = osc_omni_prompt_build(c.tok, &cfg, sys, parts, np, 1, &prompt.v, &prompt.n);
            prompt.cap = prompt.n;
        }
        /* the audio rows, and TMRoPE positions (llm/mm_pos.h) */
        for (int i = 0; s == OSC_OK && i < prompt.n; i++)
            if (prompt.v[i] == cfg.audio_token_id && ivec_push(&mm_rows, &i, 1)) s = osc_error(OSC_ERR_OOM, "out of host memory");
        if (s == OSC_OK && mm_rows.n != n_audio_tok)
            s = osc_error(OSC_ERR_INVALID_ARG, "the prompt has %d audio pads for %d audio embeddings", mm_rows.n, n_audio_tok);
        osc_mm_pos_params pp;
        if (s == OSC_OK) s = osc_mm_pos_params_load(o.model, &cfg, &pp);
        if (s == OSC_OK) {
            prompt_pos = malloc((size_t)3 * prompt.n * sizeof *prompt_pos);
            if (!prompt_pos) s = osc_error(OSC_ERR_OOM, "out of host memory");
        }
        if (s == OSC_OK) {
            osc_mm_inputs in = {0};
            in.audio_len = alen;
            in.n_audios = na;
            s = osc_mm_rope_index(&pp, prompt.v, prompt.n, &in, prompt_pos, &c.delta);
        }
        free(parts);
        free(alen);
        if (s != OSC_OK) { fail("cannot build the prompt"); goto free_feats; }
    }

    /* 4. encode every piece into the rows of one embedding matrix on the model's device */
    osc_tensor mm = osc_tensor_2d(NULL, osc_llm_act_dtype(c.llm), dev, n_audio_tok, cfg.hidden_size);
    if (osc_dev_malloc(dev, osc_tensor_nbytes(&mm), &mm_mem) != OSC_OK) { fail("audio embeddings"); goto free_feats; }
    mm.data = mm_mem;
    double t_enc0 = now_s();
    {
        progress_ctx pc = {audio_s > 60, t_enc0, audio_s, 0};
        int row = 0;
        for (int p = 0; p < n_pieces; p++) {
            int nt = osc_audio_enc_n_tokens(lens[p]);
            if (nt == 0) continue;
            osc_tensor dst = osc_tensor_rows(&mm, row, nt);
            pc.done_before_s = p * (LISTEN_PIECE_SAMPLES / (double)OSC_MEL_SAMPLE_RATE);
            if (osc_audio_enc_encode(enc, feats[p], lens[p], &dst, on_progress, &pc) != OSC_OK) {
                if (pc.show) fputc('\n', stderr);
                fail("cannot encode the audio");
                goto free_feats;
            }
            row += nt;
        }
        if (pc.show) fputc('\n', stderr);
    }
    double t_enc = now_s() - t_enc0;
    osc_audio_enc_free(enc); /* its scratch is no longer needed */
    enc = NULL;

    /* 5. the conversation: cache, sampler */
    c.vocab = cfg.vocab_size;
    c.n_ctx = o.n_ctx > 0 ? o.n_ctx : prompt.n + 2048 > 4096 ? prompt.n + 2048 : 4096;
    if (o.n_ctx <= 0 && cfg.max_pos > 0 && c.n_ctx > cfg.max_pos && prompt.n + 2048 <= cfg.max_pos) c.n_ctx = cfg.max_pos;
    if (cfg.max_pos > 0 && c.n_ctx > cfg.max_pos)
        osc_log(OSC_LOG_WARN, "the context (%d tokens) exceeds the model's max_position_embeddings %d", c.n_ctx, cfg.max_pos);
    c.logits = malloc((size_t)c.vocab * sizeof(float));
    if (!c.logits) { fprintf(stderr, "oscar: out of memory\n"); goto free_feats; }
    if (osc_llm_kv_new(c.llm, o.kv, c.n_ctx, &c.kv) != OSC_OK || osc_llm_ctx_new(c.llm, 512, &c.ctx) != OSC_OK) {
        fail("cannot allocate the context");
        goto free_feats;
    }
    {
        osc_gen_config g;
        if (osc_gen_config_load(o.model, &g) != OSC_OK) { fail("generation_config.json"); goto free_feats; }
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
        if (osc_sampler_new(&sp, c.vocab, &c.smp) != OSC_OK) { fail("sampler"); goto free_feats; }
        for (int i = 0; i < cfg.n_eos && c.n_stop < 6; i++) c.stop[c.n_stop++] = cfg.eos_ids[i];
        for (int i = 0; i < g.n_eos && c.n_stop < 6; i++) c.stop[c.n_stop++] = g.eos_ids[i];
        c.stop[c.n_stop++] = osc_tokenizer_token_id(c.tok, "<|im_end|>");
        int32_t eot = osc_tokenizer_token_id(c.tok, "<|endoftext|>");
        if (eot >= 0) c.stop[c.n_stop++] = eot;
    }

    /* 6. the transcript */
    double t_pf = now_s();
    if (feed(&c, prompt.v, prompt.n, prompt_pos, mm_rows.n, mm_rows.v, &mm) != OSC_OK) { fail("prefill failed"); goto free_feats; }
    t_pf = now_s() - t_pf;
    osc_dev_free(dev, mm_mem);
    mm_mem = NULL;
    if (generate(&c, o.n_predict, !o.json, &tr) != OSC_OK) { fail("generation failed"); goto free_feats; }
    if (!o.json) {
        fputc('\n', stdout);
        fflush(stdout);
        fprintf(stderr, "oscar: %.1f s of audio -> %d audio tokens (encoder %.2f s), prompt %d tokens in %.2f s, "
                "transcript %d tokens in %.2f s\n", audio_s, n_audio_tok, t_enc, prompt.n, t_pf, tr.ids.n, tr.seconds);
    }

    /* 7. the chat */
    rc = 0;
    if (o.prompt && !o.transcribe_only) {
        if (ask(&c, o.prompt, o.n_predict, !o.json, &an) != OSC_OK) {
            rc = fail("generation failed");
        } else if (!o.json) {
            fputc('\n', stdout);
        }
    } else if (!o.transcribe_only && !o.json) {
        char line[65536];
        for (;;) {
            fputs("> ", stderr);
            if (!fgets(line, sizeof line, stdin)) break;
            size_t n = strlen(line);
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            if (!n) continue;
            if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
            reply_free(&an);
            if (ask(&c, line, o.n_predict, 1, &an) != OSC_OK) { rc = fail("generation failed"); break; }
            fputc('\n', stdout);
            fflush(stdout);
        }
    }
    if (o.json && rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o.model);
        cJSON_AddStringToObject(j, "audio", o.audio);
        cJSON_AddNumberToObject(j, "audio_seconds", audio_s);
        cJSON_AddNumberToObject(j, "audio_tokens", n_audio_tok);
        cJSON_AddStringToObject(j, "instruction", o.instruction);
        cJSON_AddStringToObject(j, "transcript", tr.text.s ? tr.text.s : "");
        cJSON_AddItemToObject(j, "transcript_ids", ids_json(&tr.ids));
        if (o.prompt && !o.transcribe_only) {
            cJSON_AddStringToObject(j, "question", o.prompt);
            cJSON_AddStringToObject(j, "answer", an.text.s ? an.text.s : "");
            cJSON_AddItemToObject(j, "answer_ids", ids_json(&an.ids));
        } else {
            cJSON_AddNullToObject(j, "answer");
        }
        cJSON_AddNumberToObject(j, "prompt_tokens", prompt.n);
        cJSON_AddNumberToObject(j, "encoder_seconds", t_enc);
        cJSON_AddNumberToObject(j, "prefill_seconds", t_pf);
        cJSON_AddNumberToObject(j, "total_seconds", now_s() - t_start);
        cJSON_AddStringToObject(j, "device", dev == OSC_DEV_CPU ? "cpu" : "cuda");
        cJSON_AddStringToObject(j, "kv", o.kv);
        char *txt = cJSON_Print(j);
        if (txt) puts(txt);
        else rc = 1;
        free(txt);
        cJSON_Delete(j);
    }
free_feats:
    for (int p = 0; p < n_pieces; p++) free(feats[p]);
    free(feats);
    free(lens);
done:
    free(pcm);
    if (mm_mem) osc_dev_free(dev, mm_mem);
    reply_free(&tr);
    reply_free(&an);
    free(prompt.v);
    free(mm_rows.v);
    free(c.hist.v);
    free(c.pending.v);
    free(c.pos);
    free(prompt_pos);
    free(c.logits);
    osc_sampler_free(c.smp);
    osc_llm_ctx_free(c.ctx);
    osc_kv_free(c.kv);
    osc_tokenizer_free(c.tok);
    osc_llm_free(c.llm);
    osc_audio_enc_free(enc);
    return rc;
}
