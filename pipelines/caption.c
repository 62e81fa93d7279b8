/* `oscar caption`: caption many videos with Qwen2.5-Omni, one JSON line per video.
 *
 * Throughput design (docs/VIDEO.md):
 *   producers  --workers threads decode + sample frames (encoders/video.h), resize/normalise/
 *              patchify (encoders/vision_pre.h) and, with --use-audio, read the sound track and
 *              its log-mel features, into a bounded queue (pipelines/lib/caption_prep.h);
 *   consumer   this thread owns the device: it pops prepared videos, runs the vision (and audio)
 *              encoder and the prefill of each into a free KV slot, and decodes ALL active
 *              captions together, one osc_llm_forward per step with n_seq = active sequences.
 *              A finished caption frees its slot, which is refilled at once with the next
 *              video's prefill (continuous batching). Slots come from pipelines/lib/caption_slots.h.
 * Prompt (llm/omni_prompt.h):
 *   <|im_start|>system\n{SYS}<|im_end|>\n<|im_start|>user\n<|vision_bos|><|VIDEO|>*N<|vision_eos|>
 *   {PROMPT}<|im_end|>\n<|im_start|>assistant\n
 * with --use-audio the video span is <|vision_bos|><|audio_bos|>(V..A..)*<|audio_eos|><|vision_eos|>
 * (2 s chunks), TMRoPE positions from llm/mm_pos.h; a generated token at cache index c gets
 * position c + rope delta.
 * Output: {"file","caption","tokens","seconds","error"} per line, each line built whole and
 * written with one fwrite + fflush; --out FILE appends, and the successful entries already in it
 * are skipped (resume). A video that fails gives an error line; the batch goes on. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "core/config.h"
#include "core/device.h"
#include "core/fileio.h"
#include "encoders/audio_enc.h"
#include "encoders/audio_io.h"
#include "encoders/mel.h"
#include "encoders/video.h"
#include "encoders/vision.h"
#include "encoders/vision_pre.h"
#include "kernels/ops.h"
#include "llm/chat.h"
#include "llm/mm_pos.h"
#include "llm/model.h"
#include "llm/omni_prompt.h"
#include "llm/presets.h"
#include "llm/sampler.h"
#include "llm/tokenizer.h"
#include "lib/caption_prep.h"
#include "lib/caption_slots.h"
#include "lib/args.h"
#include "oscar.h"

#define CAP_DEFAULT_PROMPT "Describe this video."
#define CAP_MAX_BATCH 1024

typedef struct cap_opts {
    const char *model, *prompt, *system, *kv, *device, *out, *list, *tokenizer;
    const char **inputs;
    int n_inputs;
    int n_predict, n_ctx, threads, batch, workers, queue, use_audio, json_errors, ids, verbose;
    double fps;
    int max_frames, min_frames, nframes;
    long long min_pixels, max_pixels;
    osc_sampling_flags smp;
} cap_opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: oscar caption -m MODEL (VIDEO... | --list FILE | DIR) [options]\n\n"
            "Caption many videos with Qwen2.5-Omni: one JSON line per video,\n"
            "  {\"file\": ..., \"caption\": ..., \"tokens\": N, \"seconds\": S, \"error\": null or \"...\"}\n"
            "to stdout or --out FILE. With --out the file is appended to and videos it already holds a\n"
            "caption for are skipped, so an interrupted run resumes. A video that cannot be read gives\n"
            "an error line and the batch goes on. Progress goes to stderr.\n\n"
            "options:\n"
            "  -m, --model DIR       Qwen2.5-Omni snapshot folder, or random:omni-7b / random:omni-3b\n"
            "                        (random weights of that shape, for benchmarks; needs --tokenizer)\n"
            "  -p, --prompt TEXT     the request (default \"%s\")\n"
            "  -s, --system TEXT     system prompt (default: the Qwen2.5-Omni one)\n"
            "      --list FILE       read video paths from FILE, one per line\n"
            "                        (a DIR argument takes the video files in it, sorted)\n"
            "  -o, --out FILE        append JSON lines here (resumable) instead of stdout\n"
            "      --fps F           frames sampled per second (default 2)\n"
            "      --max-frames N    most frames per video (default 768)\n"
            "      --min-frames N    fewest frames per video (default 4)\n"
            "      --nframes N       exactly N frames per video (rounded to even)\n"
            "      --min-pixels N, --max-pixels N   resized frame area bounds\n"
            "      --use-audio       also give the model the video's sound track (use_audio_in_video)\n"
            "  -b, --batch N         captions decoded together (default: as many KV slots as fit)\n"
            "  -c, --ctx N           KV slot size in tokens (default: from the first videos + -n)\n"
            "  -n, --n-predict N     most tokens per caption (default 128)\n"
            "      --temp T          temperature; 0 = greedy (default: generation_config.json, else 0)\n"
            "      --top-k K, --top-p P, --min-p P, --repeat-penalty R   sampling filters\n"
            "      --seed S          random seed (each video's sampler is seeded from S and its path,\n"
            "                        so results do not depend on batching or order)\n"
            "      --kv MODE         KV cache mode: bf16, int8, kivi2, kivi4, rot2, oscar2, oscar4\n"
            "                        (default oscar2; bf16 when the model's head_dim does not allow it)\n"
            "      --device D        cpu, cuda or auto (default auto)\n"
            "      --workers N       decoder threads preparing videos ahead (default: half the\n"
            "                        cores, at least 2, at most 16)\n"
            "      --queue N         prepared videos held ahead (default workers + 2)\n"
            "      --tokenizer FILE  tokenizer.json for random:* models (default $OSC_QWEN_TOKENIZER,\n"
            "                        else ~/.cache/oscar/qwen-tokenizer/tokenizer.json)\n"
            "      --ids             add the generated token ids (\"ids\": [...]) to each line\n"
            "      --json-errors     also report a fatal error as a JSON line {\"file\": null, \"error\": ...}\n"
            "  -t, --threads N       CPU threads (default: all cores)\n"
            "  -v, --verbose         log details to stderr\n"
            "  -h, --help            this help\n",
            CAP_DEFAULT_PROMPT);
}

static void log_to_stderr(osc_log_level lv, const char *msg, void *user) {
    (void)user;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "oscar: %s: %s\n", names[lv], msg);
}

/* 0 ok, 2 usage error, 3 help */
static int parse(int argc, char **argv, cap_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->kv = "auto";
    o->device = "auto";
    o->prompt = CAP_DEFAULT_PROMPT;
    o->fps = OSC_VIDEO_FPS;
    /* decoding a 30 s 720p H.264 clip takes 2-6 s of one core and the GPU needs ~2 s per video:
     * half the cores (at least 2, at most 16) keep it fed */
    {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        o->workers = nc >= 4 ? (int)(nc / 2 > 16 ? 16 : nc / 2) : 2;
    }
    o->inputs = calloc((size_t)(argc > 0 ? argc : 1), sizeof *o->inputs);
    if (!o->inputs) return 2;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEEDV(); o->prompt = v; }
        else if (!strcmp(a, "-s") || !strcmp(a, "--system")) { NEEDV(); o->system = v; }
        else if (!strcmp(a, "--list")) { NEEDV(); o->list = v; }
        else if (!strcmp(a, "-o") || !strcmp(a, "--out")) { NEEDV(); o->out = v; }
        else if (!strcmp(a, "--tokenizer")) { NEEDV(); o->tokenizer = v; }
        else if (!strcmp(a, "--fps")) { NEEDV(); if (osc_arg_double(a, v, 0.01, 1000, &o->fps)) return 2; }
        else if (!strcmp(a, "--max-frames")) { NEEDV(); if (osc_arg_int(a, v, 2, 1 << 20, &o->max_frames)) return 2; }
        else if (!strcmp(a, "--min-frames")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 20, &o->min_frames)) return 2; }
        else if (!strcmp(a, "--nframes")) { NEEDV(); if (osc_arg_int(a, v, 2, 1 << 20, &o->nframes)) return 2; }
        else if (!strcmp(a, "--min-pixels")) { NEEDV(); if (osc_arg_ll(a, v, 784, 1LL << 40, &o->min_pixels)) return 2; }
        else if (!strcmp(a, "--max-pixels")) { NEEDV(); if (osc_arg_ll(a, v, 784, 1LL << 40, &o->max_pixels)) return 2; }
        else if (!strcmp(a, "--use-audio")) o->use_audio = 1;
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) { NEEDV(); if (osc_arg_int(a, v, 1, CAP_MAX_BATCH, &o->batch)) return 2; }
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) { NEEDV(); if (osc_arg_int(a, v, 64, 1 << 22, &o->n_ctx)) return 2; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) { NEEDV(); if (osc_arg_int(a, v, 0, 1 << 20, &o->n_predict)) return 2; }
        else if (osc_sampling_flag_is(a)) { NEEDV(); if (osc_sampling_flag_parse(a, v, &o->smp)) return 2; }
        else if (!strcmp(a, "--kv")) { NEEDV(); o->kv = v; }
        else if (!strcmp(a, "--device")) {
            NEEDV();
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) { fprintf(stderr, "oscar: --device must be cpu, cuda or auto\n"); return 2; }
            o->device = v;
        }
        else if (!strcmp(a, "--workers")) { NEEDV(); if (osc_arg_int(a, v, 1, 256, &o->workers)) return 2; }
        else if (!strcmp(a, "--queue")) { NEEDV(); if (osc_arg_int(a, v, 1, 4096, &o->queue)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (osc_arg_int(a, v, 0, 1024, &o->threads)) return 2; }
        else if (!strcmp(a, "--ids")) o->ids = 1;
        else if (!strcmp(a, "--json-errors")) o->json_errors = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "oscar: unknown option '%s' (see oscar caption --help)\n", a); return 2; }
        else o->inputs[o->n_inputs++] = a;
#undef NEEDV
    }
    if (!o->model) { fprintf(stderr, "oscar: caption needs a model: -m MODEL_DIR (see oscar caption --help)\n"); return 2; }
    if (!o->n_inputs && !o->list) { fprintf(stderr, "oscar: caption needs videos: VIDEO..., DIR or --list FILE\n"); return 2; }
    if (o->min_pixels && o->max_pixels && o->min_pixels > o->max_pixels) {
        fprintf(stderr, "oscar: --min-pixels is larger than --max-pixels\n");
        return 2;
    }
    if (!o->queue) o->queue = o->workers + 2;
    return 0;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- inputs ----------------------------------------------------------------------------- */

typedef struct strv { char **v; int n, cap; } strv;
static int strv_add(strv *s, const char *x) {
    if (s->n == s->cap) {
        int nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, (size_t)nc * sizeof *nv);
        if (!nv) return -1;
        s->v = nv;
        s->cap = nc;
    }
    if (!(s->v[s->n] = strdup(x))) return -1;
    s->n++;
    return 0;
}
static void strv_free(strv *s) {
    for (int i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}
static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int is_video_name(const char *n) {
    static const char *ext[] = {".mp4", ".m4v", ".mkv", ".mov", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                                ".flv", ".wmv", ".3gp", ".ogv", ".mts", ".m2ts"};
    const char *dot = strrchr(n, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

static int add_dir(strv *s, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    strv tmp = {0};
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_video_name(e->d_name)) continue;
        osc_path_join(path, sizeof path, dir, e->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && strv_add(&tmp, path)) break;
    }
    closedir(d);
    qsort(tmp.v, (size_t)tmp.n, sizeof *tmp.v, cmp_str);
    for (int i = 0; i < tmp.n; i++) strv_add(s, tmp.v[i]);
    strv_free(&tmp);
    return 0;
}

static int gather(const cap_opts *o, strv *files) {
    for (int i = 0; i < o->n_inputs; i++) {
        struct stat st;
        if (stat(o->inputs[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            if (add_dir(files, o->inputs[i])) {
                fprintf(stderr, "oscar: cannot list %s: %s\n", o->inputs[i], strerror(errno));
                return -1;
            }
        } else if (strv_add(files, o->inputs[i])) return -1;
    }
    if (o->list) {
        FILE *f = fopen(o->list, "r");
        if (!f) {
            fprintf(stderr, "oscar: cannot open the list %s: %s\n", o->list, strerror(errno));
            return -1;
        }
        char line[8192];
        while (fgets(line, sizeof line, f)) {
            size_t k = strlen(line);
            while (k && (line[k - 1] == '\n' || line[k - 1] == '\r' || line[k - 1] == ' ' || line[k - 1] == '\t')) line[--k] = 0;
            char *s = line;
            while (*s == ' ' || *s == '\t') s++;
            if (!*s || *s == '#') continue;
            if (strv_add(files, s)) { fclose(f); return -1; }
        }
        fclose(f);
    }
    return 0;
}

/* Successful entries of an existing output file, sorted (for bsearch). */
static int load_done(const char *path, strv *done, int *needs_newline) {
    *needs_newline = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : -1;
    size_t cap = 1 << 16, n = 0;
    char *line = malloc(cap);
    int c, last = '\n';
    if (!line) { fclose(f); return -1; }
    for (;;) {
        c = fgetc(f);
        if (c == EOF || c == '\n') {
            line[n] = 0;
            if (n) {
                cJSON *j = cJSON_Parse(line);
                const cJSON *fl = j ? cJSON_GetObjectItemCaseSensitive(j, "file") : NULL;
                const cJSON *er = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
                const cJSON *cp = j ? cJSON_GetObjectItemCaseSensitive(j, "caption") : NULL;
                if (cJSON_IsString(fl) && (!er || cJSON_IsNull(er)) && cJSON_IsString(cp)) strv_add(done, fl->valuestring);
                cJSON_Delete(j);
            }
            n = 0;
            if (c == EOF) break;
            last = c;
            continue;
        }
        last = c;
        if (n + 2 > cap) {
            char *nl = realloc(line, cap * 2);
            if (!nl) break;
            line = nl;
            cap *= 2;
        }
        line[n++] = (char)c;
    }
    *needs_newline = last != '\n';
    free(line);
    fclose(f);
    qsort(done->v, (size_t)done->n, sizeof *done->v, cmp_str);
    return 0;
}

/* ---- output ----------------------------------------------------------------------------- */

typedef struct sink { FILE *f; int is_stdout; } sink;

/* One whole line, one fwrite, flushed. */
static int emit(sink *s, cJSON *j) {
    char *txt = cJSON_PrintUnformatted(j);
    if (!txt) return -1;
    size_t k = strlen(txt);
    char *line = malloc(k + 2);
    if (!line) { free(txt); return -1; }
    memcpy(line, txt, k);
    line[k] = '\n';
    size_t w = fwrite(line, 1, k + 1, s->f);
    int r = (w == k + 1 && fflush(s->f) == 0) ? 0 : -1;
    free(line);
    free(txt);
    return r;
}

static int emit_result(sink *s, const char *file, const char *caption, int tokens, double seconds, const char *error,
                       const int32_t *ids, int n_ids) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return -1;
    if (file) cJSON_AddStringToObject(j, "file", file);
    else cJSON_AddNullToObject(j, "file");
    if (caption) cJSON_AddStringToObject(j, "caption", caption);
    else cJSON_AddNullToObject(j, "caption");
    cJSON_AddNumberToObject(j, "tokens", tokens);
    cJSON_AddNumberToObject(j, "seconds", round(seconds * 1000) / 1000);
    if (error) cJSON_AddStringToObject(j, "error", error);
    else cJSON_AddNullToObject(j, "error");
    if (ids) {
        cJSON *a = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < n_ids; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    }
    int r = emit(s, j);
    cJSON_Delete(j);
    return r;
}

/* ---- progress --------------------------------------------------------------------------- */

typedef struct progress {
    int tty, total, done, failed;
    double t0, last;
    long long tokens;
} progress;

static void progress_show(progress *p, int final) {
    double t = now_s(), el = t - p->t0;
    if (!final && !p->tty && t - p->last < 10.0) return;
    if (!final && p->tty && t - p->last < 0.2) return;
    p->last = t;
    double rate = el > 0 ? p->done / el : 0; /* videos per second */
    double eta = rate > 0 ? (p->total - p->done) / rate : -1;
    char etas[32];
    if (eta >= 0) snprintf(etas, sizeof etas, "%02d:%02d:%02d", (int)(eta / 3600), (int)fmod(eta / 60, 60), (int)fmod(eta, 60));
    else snprintf(etas, sizeof etas, "--:--:--");
    if (p->tty) {
        int w = 30, fill = p->total ? (int)((double)p->done / p->total * w) : w;
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\r[%s] %d/%d videos (%d failed)  %.1f videos/h  %.1f tok/s  ETA %s ", bar, p->done, p->total,
                p->failed, rate * 3600, el > 0 ? p->tokens / el : 0.0, etas);
        if (final) fputc('\n', stderr);
    } else {
        fprintf(stderr, "oscar: caption: %d/%d videos (%d failed), %.1f videos/h, %.1f tok/s, ETA %s\n", p->done, p->total,
                p->failed, rate * 3600, el > 0 ? p->tokens / el : 0.0, etas);
    }
    fflush(stderr);
}

/* ---- models ------------------------------------------------------------------------------- */

typedef struct models {
    osc_llm_config cfg;
    osc_mm_pos_params pp;
    osc_tokenizer *tok;
    osc_llm *llm;
    osc_vision *vis;
    osc_audio_enc *aud;
    osc_gen_config gen;
    int random;
} models;

static void models_free(models *m) {
    osc_audio_enc_free(m->aud);
    osc_vision_free(m->vis);
    osc_llm_free(m->llm);
    osc_tokenizer_free(m->tok);
    memset(m, 0, sizeof *m);
}

static const char *default_tokenizer(const cap_opts *o, char *buf, size_t n) {
    if (o->tokenizer) return o->tokenizer;
    const char *e = getenv("OSC_QWEN_TOKENIZER");
    if (e && *e) return e;
    const char *h = getenv("HOME");
    snprintf(buf, n, "%s/.cache/oscar/qwen-tokenizer/tokenizer.json", h ? h : ".");
    return buf;
}

static osc_status load_models(const cap_opts *o, osc_dev dev, models *m) {
    memset(m, 0, sizeof *m);
    char path[4096];
    osc_gen_config_default(&m->gen);
    if (!strncmp(o->model, "random:", 7)) {
        const char *shape = o->model + 7;
        const char *preset = !strcmp(shape, "omni-7b") ? "qwen2.5-omni-7b" : !strcmp(shape, "omni-3b") ? "qwen2.5-omni-3b" : NULL;
        if (!preset) return osc_error(OSC_ERR_INVALID_ARG, "unknown random model '%s' (random:omni-7b, random:omni-3b)", o->model);
        m->random = 1;
        OSC_TRY(osc_llm_preset(preset, &m->cfg));
        m->pp = (osc_mm_pos_params){OSC_MM_OMNI, m->cfg.image_token_id, m->cfg.video_token_id, m->cfg.audio_token_id,
                                    m->cfg.vision_start_id, m->cfg.vision_end_id, m->cfg.audio_start_id, m->cfg.audio_end_id,
                                    2, 25, 2, 0};
        const char *tp = default_tokenizer(o, path, sizeof path);
        osc_status s = osc_tokenizer_load(tp, &m->tok);
        if (s != OSC_OK) return osc_error_prefix(s, "random models need a Qwen tokenizer.json (--tokenizer FILE)");
        OSC_TRY(osc_llm_new_random(&m->cfg, dev, 1, &m->llm));
        osc_vision_config vc;
        osc_vision_default_config(&vc);
        vc.out_hidden = m->cfg.hidden_size;
        OSC_TRY(osc_vision_new_random(&vc, dev, 2, &m->vis));
        if (o->use_audio) {
            osc_audio_enc_config ac;
            osc_audio_enc_default_config(&ac);
            ac.output_dim = m->cfg.hidden_size;
            OSC_TRY(osc_audio_enc_new_random(&ac, dev, 3, &m->aud));
        }
        return OSC_OK;
    }
    OSC_TRY(osc_config_load(o->model, &m->cfg));
    if (m->cfg.arch != OSC_ARCH_QWEN2_5_OMNI)
        return osc_error(OSC_ERR_UNSUPPORTED, "caption needs a Qwen2.5-Omni model; %s is %s", o->model, osc_arch_name(m->cfg.arch));
    OSC_TRY(osc_mm_pos_params_load(o->model, &m->cfg, &m->pp));
    OSC_TRY(osc_gen_config_load(o->model, &m->gen));
    osc_path_join(path, sizeof path, o->model, "tokenizer.json");
    OSC_TRY(osc_tokenizer_load(path, &m->tok));
    OSC_TRY(osc_llm_load(o->model, dev, &m->llm));
    OSC_TRY(osc_vision_load(o->model, dev, &m->vis));
    if (o->use_audio) OSC_TRY(osc_audio_enc_load(o->model, dev, &m->aud));
    const osc_vision_config *vc = osc_vision_config_of(m->vis);
    if (vc->out_hidden != m->cfg.hidden_size)
        return osc_error(OSC_ERR_FORMAT, "the vision encoder's out_hidden_size %d differs from the decoder's hidden size %d",
                         vc->out_hidden, m->cfg.hidden_size);
    return OSC_OK;
}

/* ---- prompt pieces ---------------------------------------------------------------------- */

/* ---- the consumer ------------------------------------------------------------------------- */

typedef struct slot {
    int active;
    osc_cap_item *it;
    osc_kv *kv;
    int32_t *hist;     /* prompt + generated, n_ctx + 1 */
    int n_hist, n_prompt, n_gen;
    int32_t pending;   /* the last sampled token, fed in the next step */
    int32_t delta;
    osc_sampler *smp;
    osc_detok dt;
    char *text;
    size_t text_n, text_cap;
    double t0;
} slot;

typedef struct engine {
    const cap_opts *o;
    models *m;
    osc_dev dev;
    osc_llm_ctx *ctx;
    osc_kv_slots *slots_pool;
    slot *slots;
    int n_slots, n_ctx;
    int32_t stop[16];
    int n_stop;
    osc_sampler_params sp;
    const char *system;
    float *logits;     /* [n_slots, vocab] */
    void *mm_buf;      /* device buffer for the interleaved video+audio embeddings */
    size_t mm_cap;
    void *aud_buf;
    size_t aud_cap;
    sink *out;
    progress *prog;
    int io_error;
} engine;

static int text_add(slot *s, const char *t) {
    size_t k = strlen(t);
    if (s->text_n + k + 1 > s->text_cap) {
        size_t nc = s->text_cap ? s->text_cap * 2 : 256;
        while (nc < s->text_n + k + 1) nc *= 2;
        char *nt = realloc(s->text, nc);
        if (!nt) return -1;
        s->text = nt;
        s->text_cap = nc;
    }
    memcpy(s->text + s->text_n, t, k + 1);
    s->text_n += k;
    return 0;
}

static uint64_t path_seed(uint64_t seed, const char *file) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)file; *p; p++) h = (h ^ *p) * 1099511628211ull;
    uint64_t z = seed ^ h;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void finish_line(engine *e, const osc_cap_item *it, const char *caption, int tokens, double seconds, const char *err,
                        const int32_t *ids, int n_ids) {
    if (emit_result(e->out, it->file, caption, tokens, seconds, err, e->o->ids ? ids : NULL, n_ids)) e->io_error = 1;
    e->prog->done++;
    if (err) e->prog->failed++;
    e->prog->tokens += tokens;
    progress_show(e->prog, 0);
}

static void slot_close(engine *e, slot *s) {
    osc_kv_slots_release(e->slots_pool, s->kv);
    osc_cap_item_free(s->it);
    s->it = NULL;
    s->kv = NULL;
    s->active = 0;
}

static void slot_finish(engine *e, slot *s, const char *err) {
    if (!err) text_add(s, osc_detok_flush(&s->dt));
    finish_line(e, s->it, err ? NULL : (s->text ? s->text : ""), s->n_gen, now_s() - s->t0, err, s->hist + s->n_prompt, s->n_gen);
    slot_close(e, s);
}

/* Take a sampled token: stop, or keep it (finishing at -n or a full slot). */
static void slot_take(engine *e, slot *s, const float *row) {
    float *lg = (float *)row;
    int32_t t = osc_sampler_sample(s->smp, lg, s->hist, s->n_hist);
    for (int j = 0; j < e->n_stop; j++)
        if (e->stop[j] == t) {
            slot_finish(e, s, NULL);
            return;
        }
    s->hist[s->n_hist++] = t;
    s->n_gen++;
    if (text_add(s, osc_detok_push(&s->dt, e->m->tok, t, 1))) {
        slot_finish(e, s, "out of host memory");
        return;
    }
    if (s->n_gen >= e->o->n_predict || osc_kv_len(s->kv) + 1 >= e->n_ctx) {
        slot_finish(e, s, NULL);
        return;
    }
    s->pending = t;
}

static osc_status ensure_dev(engine *e, void **buf, size_t *cap, size_t need) {
    if (need <= *cap) return OSC_OK;
    osc_dev_free(e->dev, *buf);
    *buf = NULL;
    *cap = 0;
    OSC_TRY(osc_dev_malloc(e->dev, need, buf));
    *cap = need;
    return OSC_OK;
}

/* Encode one prepared video and prefill it into slot s. On failure the error line is written. */
static void slot_start(engine *e, slot *s, osc_cap_item *it) {
    const osc_llm_config *cfg = &e->m->cfg;
    const osc_vision_config *vc = osc_vision_config_of(e->m->vis);
    double t0 = now_s();
    s->active = 0;
    s->kv = NULL;
    s->n_hist = s->n_prompt = s->n_gen = 0;
    s->pending = 0;
    s->delta = 0;
    s->text_n = 0;
    if (s->text) s->text[0] = 0;
    s->it = it;
    s->t0 = t0 - it->prep_seconds;
    int32_t *ids = NULL, *pos = NULL, *rows = NULL, *chunks = NULL;
    float *aud_host = NULL;
    char err[1024] = {0};
    if (it->warning) osc_log(OSC_LOG_WARN, "%s", it->warning);
    int64_t n_vid = osc_vision_tokens(vc, it->grid);
    int n_aud = it->mel_frames > 0 && e->m->aud ? osc_audio_enc_n_tokens(it->mel_frames) : 0;
    int aiv = n_aud > 0;
    if (n_vid <= 0 || n_vid > (1 << 24)) {
        snprintf(err, sizeof err, "%s: bad video grid [%d,%d,%d]", it->file, it->grid[0], it->grid[1], it->grid[2]);
        goto fail;
    }
    osc_prompt_part parts[2];
    int nc = 0;
    if (aiv) {
        nc = osc_cap_aiv_chunks(&e->m->pp, it->grid, it->second_per_grid, n_aud, &chunks);
        if (nc < 0) { snprintf(err, sizeof err, "out of host memory"); goto fail; }
        parts[0] = (osc_prompt_part){OSC_PART_VIDEO_AUDIO, NULL, 0, chunks, nc};
    } else {
        parts[0] = (osc_prompt_part){OSC_PART_VIDEO, NULL, (int)n_vid, NULL, 0};
    }
    parts[1] = (osc_prompt_part){OSC_PART_TEXT, e->o->prompt, 0, NULL, 0};
    int n = 0;
    if (osc_omni_prompt_build(e->m->tok, cfg, e->system, parts, 2, 1, &ids, &n) != OSC_OK) {
        snprintf(err, sizeof err, "prompt: %s", osc_last_error());
        goto fail;
    }
    if (n + 1 > e->n_ctx) {
        snprintf(err, sizeof err, "the prompt needs %d tokens (%lld for the frames%s), more than the KV slot of %d (raise -c, or "
                 "lower --max-frames / --max-pixels)", n, (long long)n_vid, aiv ? " and audio" : "", e->n_ctx);
        goto fail;
    }
    s->kv = osc_kv_slots_acquire(e->slots_pool, n + 1);
    if (!s->kv) { snprintf(err, sizeof err, "no free KV slot (internal)"); goto fail; }
    pos = malloc((size_t)3 * n * sizeof *pos);
    rows = malloc((size_t)(n_vid + n_aud) * sizeof *rows);
    if (!pos || !rows) { snprintf(err, sizeof err, "out of host memory"); goto fail; }
    osc_mm_inputs in = {NULL, 0, (const int32_t(*)[3])it->grid, &it->second_per_grid, 1,
                        aiv ? &it->mel_frames : NULL, aiv ? 1 : 0, aiv};
    if (osc_mm_rope_index(&e->m->pp, ids, n, &in, pos, &s->delta) != OSC_OK) {
        snprintf(err, sizeof err, "positions: %s", osc_last_error());
        goto fail;
    }
    int nr = 0;
    for (int i = 0; i < n; i++)
        if (ids[i] == cfg->video_token_id || (aiv && ids[i] == cfg->audio_token_id)) rows[nr++] = i;
    if (nr != n_vid + n_aud) { snprintf(err, sizeof err, "prompt has %d media rows, expected %lld", nr, (long long)(n_vid + n_aud)); goto fail; }
    osc_tensor emb;
    if (osc_vision_encode(e->m->vis, it->pixels, it->n_patches, (const int32_t(*)[3])it->grid, 1, &emb) != OSC_OK) {
        snprintf(err, sizeof err, "vision encoder: %s", osc_last_error());
        goto fail;
    }
    double t_enc = 0; /* -v: the encoder's share of the time (one extra sync) */
    if (e->o->verbose && osc_device_sync(e->dev) == OSC_OK) t_enc = now_s() - t0;
    osc_tensor mm = emb;
    if (aiv) {
        /* audio embeddings in the vision output's dtype, then both interleaved in prompt order */
        const size_t es = osc_dtype_size(emb.dt), rb = es * (size_t)cfg->hidden_size;
        osc_tensor at = osc_tensor_2d(NULL, emb.dt, e->dev, n_aud, cfg->hidden_size);
        if (ensure_dev(e, &e->aud_buf, &e->aud_cap, rb * n_aud) != OSC_OK ||
            ensure_dev(e, &e->mm_buf, &e->mm_cap, rb * (size_t)(n_vid + n_aud)) != OSC_OK) {
            snprintf(err, sizeof err, "audio embeddings: %s", osc_last_error());
            goto fail;
        }
        at.data = e->aud_buf;
        if (osc_audio_enc_encode(e->m->aud, it->mel, it->mel_frames, &at, NULL, NULL) != OSC_OK) {
            snprintf(err, sizeof err, "audio encoder: %s", osc_last_error());
            goto fail;
        }
        size_t vo = 0, ao = 0, oo = 0;
        osc_status cs = OSC_OK;
        for (int c = 0; c < nc && cs == OSC_OK; c++) {
            size_t v = (size_t)chunks[2 * c], a = (size_t)chunks[2 * c + 1];
            if (v) cs = osc_copy_bytes((char *)e->mm_buf + oo * rb, e->dev, (char *)emb.data + vo * rb, e->dev, v * rb);
            oo += v, vo += v;
            if (a && cs == OSC_OK) cs = osc_copy_bytes((char *)e->mm_buf + oo * rb, e->dev, (char *)e->aud_buf + ao * rb, e->dev, a * rb);
            oo += a, ao += a;
        }
        if (cs != OSC_OK) { snprintf(err, sizeof err, "embeddings: %s", osc_last_error()); goto fail; }
        mm = osc_tensor_2d(e->mm_buf, emb.dt, e->dev, n_vid + n_aud, cfg->hidden_size);
    }
    int st[2] = {0, n};
    osc_kv *kv = s->kv;
    osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = pos, .kv = &kv, .all_logits = 0,
                       .n_mm = nr, .mm_rows = rows, .mm_embeds = &mm};
    float *row = e->logits; /* row 0 is free between steps */
    if (osc_llm_forward(e->m->llm, e->ctx, &b, row) != OSC_OK) {
        snprintf(err, sizeof err, "prefill: %s", osc_last_error());
        goto fail;
    }
    memcpy(s->hist, ids, (size_t)n * sizeof *ids);
    s->n_hist = s->n_prompt = n;
    s->active = 1;
    osc_detok_init(&s->dt);
    osc_sampler_reseed(s->smp, path_seed(e->o->smp.seed, it->file));
    free(ids);
    free(pos);
    free(rows);
    free(chunks);
    free(aud_host);
    if (e->o->verbose)
        osc_log(OSC_LOG_INFO, "%s: %d frames -> grid [%d,%d,%d], %lld video + %d audio tokens, prompt %d, prep %.2f s, "
                "encode+prefill %.2f s (vision encoder %.2f s)", it->file, it->info.n_frames, it->grid[0], it->grid[1],
                it->grid[2], (long long)n_vid, n_aud, n, it->prep_seconds, now_s() - t0, t_enc);
    if (e->o->n_predict == 0) {
        slot_finish(e, s, NULL);
        return;
    }
    slot_take(e, s, row);
    return;
fail:
    free(ids);
    free(pos);
    free(rows);
    free(chunks);
    free(aud_host);
    finish_line(e, it, NULL, 0, now_s() - s->t0, err, NULL, 0);
    if (s->kv) osc_kv_slots_release(e->slots_pool, s->kv);
    osc_cap_item_free(it);
    s->it = NULL;
    s->kv = NULL;
    s->active = 0;
}

/* One decode step over every active slot. */
static osc_status step(engine *e) {
    int act[CAP_MAX_BATCH], na = 0;
    for (int i = 0; i < e->n_slots; i++)
        if (e->slots[i].active) act[na++] = i;
    if (!na) return OSC_OK;
    int32_t tok[CAP_MAX_BATCH], pos[3 * CAP_MAX_BATCH];
    int st[CAP_MAX_BATCH + 1];
    osc_kv *kv[CAP_MAX_BATCH];
    for (int j = 0; j < na; j++) {
        slot *s = &e->slots[act[j]];
        tok[j] = s->pending;
        int32_t p = osc_kv_len(s->kv) + s->delta;
        pos[j] = pos[na + j] = pos[2 * na + j] = p;
        st[j] = j;
        kv[j] = s->kv;
    }
    st[na] = na;
    osc_llm_batch b = {.n_seq = na, .seq_start = st, .tokens = tok, .pos = pos, .kv = kv, .all_logits = 0};
    OSC_TRY(osc_llm_forward(e->m->llm, e->ctx, &b, e->logits));
    const int V = e->m->cfg.vocab_size;
    for (int j = 0; j < na; j++) slot_take(e, &e->slots[act[j]], e->logits + (size_t)j * V);
    return OSC_OK;
}

/* ---- planning ----------------------------------------------------------------------------- */

/* Tokens a video's prompt needs, from its header (0 when it cannot be probed). */
static int64_t probe_tokens(const cap_opts *o, const osc_video_params *vp, const char *file) {
    osc_video_info info;
    if (osc_video_probe(file, vp, &info) != OSC_OK) return 0;
    int64_t t = (int64_t)((info.n_frames + 1) / 2) * (info.resized_h / 28) * (info.resized_w / 28);
    if (o->use_audio && info.has_audio) {
        osc_audio_info ai;
        if (osc_audio_probe(file, &ai) == OSC_OK && ai.seconds > 0) {
            double sec = ai.seconds < 300 ? ai.seconds : 300;
            t += osc_audio_n_tokens((int)ceil(sec * 16000 / 160)) + 2;
        }
    }
    return t;
}

static int fatal(const cap_opts *o, sink *out, const char *what) {
    char msg[2048];
    snprintf(msg, sizeof msg, "%s: %s", what, osc_last_error());
    fprintf(stderr, "oscar: %s\n", msg);
    if (o->json_errors && out && out->f) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddNullToObject(j, "file");
        cJSON_AddStringToObject(j, "error", msg);
        emit(out, j);
        cJSON_Delete(j);
    }
    return 1;
}

int osc_cli_caption(int argc, char **argv) {
    cap_opts o;
    int r = parse(argc, argv, &o);
    if (r == 3) { usage(stdout); free(o.inputs); return 0; }
    if (r) { free(o.inputs); return r; }
    osc_set_log_callback(log_to_stderr, NULL, o.verbose ? OSC_LOG_DEBUG : OSC_LOG_WARN);
    if (o.threads > 0) osc_cpu_set_threads(o.threads);
    int rc = 1;
    strv files = {0}, done = {0};
    int *todo = NULL;
    sink out = {stdout, 1};
    models m;
    memset(&m, 0, sizeof m);
    engine e;
    memset(&e, 0, sizeof e);
    osc_cap_queue *q = NULL;
    progress prog = {0};
    if (gather(&o, &files)) goto done;
    if (!osc_video_available()) {
        int real = 0;
        for (int i = 0; i < files.n; i++) real += !osc_video_is_synthetic(files.v[i]);
        if (real) {
            osc_error(OSC_ERR_UNSUPPORTED, "this build has no FFmpeg: video input is not available");
            rc = fatal(&o, &out, "caption");
            goto done;
        }
    }
    /* resume */
    if (o.out) {
        int nl = 0;
        if (load_done(o.out, &done, &nl)) {
            fprintf(stderr, "oscar: cannot read %s: %s\n", o.out, strerror(errno));
            goto done;
        }
        out.f = fopen(o.out, "ab");
        out.is_stdout = 0;
        if (!out.f) {
            fprintf(stderr, "oscar: cannot open %s for appending: %s\n", o.out, strerror(errno));
            goto done;
        }
        if (nl) fputc('\n', out.f); /* a line cut by a crash stays on its own */
    }
    todo = malloc((size_t)(files.n ? files.n : 1) * sizeof *todo);
    if (!todo) goto done;
    int n_todo = 0, n_skip = 0;
    {
        /* a path listed twice is captioned once */
        strv seen = {0};
        for (int i = 0; i < files.n; i++) strv_add(&seen, files.v[i]);
        qsort(seen.v, (size_t)seen.n, sizeof *seen.v, cmp_str);
        char *used = calloc((size_t)(seen.n ? seen.n : 1), 1);
        for (int i = 0; i < files.n && used; i++) {
            const char *f = files.v[i];
            char **hit = bsearch(&f, seen.v, (size_t)seen.n, sizeof *seen.v, cmp_str);
            while (hit && hit > seen.v && !strcmp(hit[-1], f)) hit--;
            if (hit && used[hit - seen.v]) continue;
            if (hit) used[hit - seen.v] = 1;
            if (done.n && bsearch(&f, done.v, (size_t)done.n, sizeof *done.v, cmp_str)) { n_skip++; continue; }
            todo[n_todo++] = i;
        }
        free(used);
        strv_free(&seen);
    }
    if (n_skip) fprintf(stderr, "oscar: caption: %d of %d videos already captioned in %s; skipping them\n", n_skip, files.n, o.out);
    if (!n_todo) {
        fprintf(stderr, "oscar: caption: nothing to do\n");
        rc = 0;
        goto done;
    }
    /* device and models */
    osc_dev dev = OSC_DEV_CPU;
    if (!strcmp(o.device, "cuda") || (!strcmp(o.device, "auto") && osc_device_cuda_available())) {
        if (!osc_device_cuda_available()) {
            osc_error(OSC_ERR_UNSUPPORTED, "--device cuda: no usable GPU (or built without CUDA)");
            rc = fatal(&o, &out, "caption");
            goto done;
        }
        dev = OSC_DEV_CUDA;
    }
    if (load_models(&o, dev, &m) != OSC_OK) { rc = fatal(&o, &out, "cannot load the model"); goto done; }
    {
        o.kv = osc_kv_mode_for(o.kv, osc_llm_config_of(m.llm)->head_dim);
        int rot = osc_kv_mode_rotates(o.kv);
        if (rot < 0) {
            osc_error(OSC_ERR_INVALID_ARG, "unknown KV cache mode '%s' (known: %s)", o.kv, osc_kv_modes());
            rc = fatal(&o, &out, "caption");
            goto done;
        }
        if (rot && osc_llm_fold_v_rotation(m.llm) != OSC_OK) { rc = fatal(&o, &out, "cannot prepare the KV mode"); goto done; }
    }
    const osc_vision_config *vc = osc_vision_config_of(m.vis);
    osc_cap_prep_params pp;
    memset(&pp, 0, sizeof pp);
    osc_video_default_params(&pp.video);
    pp.video.fps = o.fps;
    pp.video.nframes = o.nframes;
    if (o.min_frames) pp.video.min_frames = o.min_frames;
    pp.video.max_frames = o.max_frames;
    if (o.min_pixels) pp.video.min_pixels = o.min_pixels;
    pp.video.max_pixels = o.max_pixels;
    pp.video.factor = vc->patch * vc->merge;
    pp.video.temporal_patch = vc->temporal_patch;
    pp.video.threads = 0;
    osc_vision_pre_defaults(&pp.vision);
    pp.vision.patch_size = vc->patch;
    pp.vision.merge_size = vc->merge;
    pp.vision.temporal_patch_size = vc->temporal_patch;
    pp.vision.resize_float = 0;
    pp.use_audio = o.use_audio;
    pp.max_audio_seconds = OSC_AUDIO_DEFAULT_MAX_SECONDS;
    /* start decoding at once: the producers overlap with the planning below */
    if (osc_cap_queue_start(&pp, (const char *const *)files.v, todo, n_todo, o.workers, o.queue, &q) != OSC_OK) {
        rc = fatal(&o, &out, "caption");
        goto done;
    }
    /* system prompt, stop tokens, sampling */
    e.system = o.system ? o.system : osc_chat_default_system(OSC_CHAT_CHATML, 1);
    for (int i = 0; i < m.cfg.n_eos && e.n_stop < 12; i++) e.stop[e.n_stop++] = m.cfg.eos_ids[i];
    for (int i = 0; i < m.gen.n_eos && e.n_stop < 12; i++) e.stop[e.n_stop++] = m.gen.eos_ids[i];
    {
        int32_t e1 = osc_tokenizer_token_id(m.tok, "<|im_end|>"), e2 = osc_tokenizer_token_id(m.tok, "<|endoftext|>");
        if (e1 >= 0) e.stop[e.n_stop++] = e1;
        if (e2 >= 0) e.stop[e.n_stop++] = e2;
    }
    e.sp = osc_sampler_default_params();
    if (m.gen.do_sample) {
        e.sp.temperature = m.gen.temperature;
        e.sp.top_k = m.gen.top_k;
        e.sp.top_p = m.gen.top_p;
        e.sp.min_p = m.gen.min_p;
    }
    e.sp.repeat_penalty = m.gen.repeat_penalty > 0 ? m.gen.repeat_penalty : 1.0f;
    osc_sampling_flags_apply(&o.smp, &e.sp);
    e.sp.seed = o.smp.seed;
    /* the KV slot size: -c, or the largest of the first videos' prompts + -n */
    int n_ctx = o.n_ctx;
    int64_t max_patches = 0;
    if (!n_ctx) {
        int64_t need = 0;
        for (int i = 0; i < n_todo && i < 8; i++) {
            int64_t t = probe_tokens(&o, &pp.video, files.v[todo[i]]);
            if (t > need) need = t;
        }
        if (!need) need = 4096;
        int64_t c = need + 64 + (int64_t)strlen(o.prompt) + (e.system ? (int64_t)strlen(e.system) : 0) + o.n_predict + 1;
        c = (c + 255) / 256 * 256;
        if (m.cfg.max_pos > 0 && c > m.cfg.max_pos) c = m.cfg.max_pos;
        n_ctx = (int)c;
        max_patches = need * 4;
    } else {
        max_patches = (int64_t)n_ctx * 4;
    }
    e.n_ctx = n_ctx;
    /* the batch: --batch, or as many slots as the free device memory holds after the scratch */
    int prefill_rows = dev == OSC_DEV_CPU ? 512 : 1024;
    int batch = o.batch, fits = 0;
    size_t per_slot = osc_kv_slots_bytes_per_slot(m.llm, o.kv, n_ctx);
    if (!batch) {
        size_t fb = 0, tb = 0;
        if (osc_device_mem_info(dev, &fb, &tb) != OSC_OK || !per_slot) {
            batch = 1;
        } else {
            const osc_llm_config *c = &m.cfg;
            size_t es = osc_dtype_size(osc_llm_act_dtype(m.llm));
            /* forward scratch of prefill_rows rows + their logits */
            size_t llm_scratch = (size_t)prefill_rows * (es * (size_t)(6 * c->hidden_size + 4 * c->n_heads * c->head_dim +
                                                                      2 * c->intermediate_size) + 4 * (size_t)c->vocab_size);
            /* vision scratch for the largest video seen in the probe: ~ (12 C + 3 F) per patch */
            size_t vis_scratch = (size_t)max_patches * es * (size_t)(12 * vc->hidden + 3 * vc->intermediate + vc->patch_dim);
            size_t reserve = llm_scratch + vis_scratch + (size_t)(o.use_audio ? 2 : 1) * (1ull << 30);
            if (dev == OSC_DEV_CPU) reserve += fb / 2; /* leave the host room */
            batch = fb > reserve ? (int)((fb - reserve) / per_slot) : 1;
            if (dev == OSC_DEV_CPU && batch > 8) batch = 8;
        }
        if (batch < 1) batch = 1;
        if (batch > CAP_MAX_BATCH) batch = CAP_MAX_BATCH;
        fits = batch;
    }
    if (batch > n_todo) batch = n_todo;
    if (fits) fprintf(stderr, "oscar: caption: fits %d KV slots of %d tokens\n", fits, n_ctx);
    fprintf(stderr, "oscar: caption: %d videos, batch %d, KV slot %d tokens (%s, %.1f MiB each), %s\n", n_todo, batch, n_ctx,
            o.kv, per_slot / 1048576.0, dev == OSC_DEV_CPU ? "cpu" : "cuda");
    if (osc_kv_slots_new(m.llm, o.kv, batch, n_ctx, &e.slots_pool) != OSC_OK) {
        rc = fatal(&o, &out, "cannot allocate the KV cache slots (lower --batch or -c)");
        goto done;
    }
    if (osc_llm_ctx_new(m.llm, prefill_rows > batch ? prefill_rows : batch, &e.ctx) != OSC_OK) {
        rc = fatal(&o, &out, "cannot allocate the forward scratch");
        goto done;
    }
    e.o = &o;
    e.m = &m;
    e.dev = dev;
    e.n_slots = batch;
    e.slots = calloc((size_t)batch, sizeof *e.slots);
    e.logits = malloc((size_t)batch * m.cfg.vocab_size * sizeof(float));
    if (!e.slots || !e.logits) { fprintf(stderr, "oscar: out of memory\n"); goto done; }
    for (int i = 0; i < batch; i++) {
        e.slots[i].hist = malloc((size_t)(n_ctx + 2) * sizeof(int32_t));
        if (!e.slots[i].hist || osc_sampler_new(&e.sp, m.cfg.vocab_size, &e.slots[i].smp) != OSC_OK) {
            rc = fatal(&o, &out, "sampler");
            goto done;
        }
    }
    e.out = &out;
    prog.tty = isatty(2);
    prog.total = n_todo;
    prog.t0 = prog.last = now_s();
    e.prog = &prog;
    /* the loop: refill free slots (prefill each), then one decode step for all active */
    for (;;) {
        int n_active = 0;
        for (int i = 0; i < batch; i++) n_active += e.slots[i].active;
        for (int i = 0; i < batch; i++) {
            if (e.slots[i].active) continue;
            osc_cap_item *it = osc_cap_queue_pop(q, n_active == 0);
            if (!it) break;
            if (it->error) {
                finish_line(&e, it, NULL, 0, it->prep_seconds, it->error, NULL, 0);
                osc_cap_item_free(it);
                i--; /* the slot is still free */
                continue;
            }
            slot_start(&e, &e.slots[i], it);
            if (e.slots[i].active) n_active++;
            else i--; /* failed or finished at once: try the next video in this slot */
        }
        if (e.io_error) { fprintf(stderr, "oscar: cannot write the output: %s\n", strerror(errno)); goto done; }
        if (n_active == 0) {
            if (osc_cap_queue_done(q)) break;
            continue;
        }
        if (step(&e) != OSC_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "decode: %s", osc_last_error());
            for (int i = 0; i < batch; i++)
                if (e.slots[i].active) slot_finish(&e, &e.slots[i], msg);
            fprintf(stderr, "oscar: %s\n", msg);
            goto done;
        }
        if (e.io_error) { fprintf(stderr, "oscar: cannot write the output: %s\n", strerror(errno)); goto done; }
    }
    progress_show(&prog, 1);
    rc = 0; /* per-video failures are in the output; the run itself succeeded */
done:
    osc_cap_queue_free(q);
    if (e.slots)
        for (int i = 0; i < e.n_slots; i++) {
            osc_cap_item_free(e.slots[i].it);
            osc_sampler_free(e.slots[i].smp);
            free(e.slots[i].hist);
            free(e.slots[i].text);
        }
    free(e.slots);
    free(e.logits);
    osc_dev_free(e.dev, e.mm_buf);
    osc_dev_free(e.dev, e.aud_buf);
    osc_llm_ctx_free(e.ctx);
    osc_kv_slots_free(e.slots_pool);
    models_free(&m);
    if (out.f && !out.is_stdout) fclose(out.f);
    strv_free(&files);
    strv_free(&done);
    free(todo);
    free(o.inputs);
    return rc;
}
