/* oscar: the command-line front end. The only place that prints and picks exit codes.
 * Exit codes: 0 ok, 1 runtime error (bad model, bad input, out of memory), 2 usage error. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oscar.h"

#define OSC_VERSION "0.1.0"

#include "cli.h"
#include "kernels/ops.h"
#include "pipelines/lib/mmchat.h"
#include "lib/args.h"

#define CHAT_MAX_MEDIA 64

typedef struct chat_opts {
    const char *model, *prompt, *system, *kv, *device;
    const char *media[CHAT_MAX_MEDIA]; /* --image / --audio in the order given */
    int media_audio[CHAT_MAX_MEDIA];
    int n_media;
    int n_predict, n_ctx, threads, json, verbose;
    osc_sampling_flags smp;
} chat_opts;

static void usage_main(FILE *f) {
    fprintf(f,
            "oscar %s: inference for omni-modal LLMs with a 2-bit OScaR KV cache\n\n"
            "usage: oscar <command> [options]\n\n"
            "commands:\n"
            "  chat     chat with a model (one prompt with -p, or interactive)\n"
            "  listen   transcribe an audio file with Qwen2.5-Omni, then chat about it\n"
            "  vqa      answer a question about images (Qwen2.5-Omni, Qwen2.5-VL)\n"
            "  caption  caption many videos (Qwen2.5-Omni), one JSON line each; resumable, batched\n"
            "  bench    measure prefill/decode speed and decode attention (random weights of a named shape)\n"
            "  kvstat   KV-cache fidelity report: per-layer attention error, KL and key norms of each cache mode\n"
            "  ppl      perplexity on a text file and KL divergence of each KV cache mode from bf16\n"
            "  help     show this help, or `oscar help <command>`\n\n"
            "Run `oscar <command> --help` for the options of a command.\n",
            OSC_VERSION);
}

static void usage_chat(FILE *f) {
    fprintf(f,
            "usage: oscar chat -m MODEL_DIR [options]\n\n"
            "Chat with a model from a HuggingFace snapshot folder (config.json, *.safetensors,\n"
            "tokenizer.json). With -p the reply to one prompt is streamed to stdout; without -p\n"
            "an interactive multi-turn chat reads lines from stdin (/reset clears it, /exit or\n"
            "end of input leaves). Speed is reported on stderr.\n"
            "With Qwen2.5-Omni or Qwen2.5-VL, the line `/image PATH` attaches an image to the next\n"
            "message (several lines attach several; they go before the text) and `/audio PATH` an\n"
            "audio (Qwen2.5-Omni); the conversation about them goes on turn after turn.\n\n"
            "options:\n"
            "  -m, --model DIR       model folder (required)\n"
            "  -p, --prompt TEXT     the user message; omit for an interactive chat\n"
            "  -i, --image FILE      attach an image to the first message (repeat for more)\n"
            "  -a, --audio FILE      attach an audio to the first message (Qwen2.5-Omni)\n"
            "  -s, --system TEXT     system prompt (default: the model family's)\n"
            "  -n, --n-predict N     most tokens to generate per reply (default 256)\n"
            "  -c, --ctx N           context length in tokens (default min(model max, 4096))\n"
            "      --temp T          temperature; 0 = greedy (default: generation_config.json, else 0)\n"
            "      --top-k K         keep the K most likely tokens (0 = off)\n"
            "      --top-p P         nucleus sampling threshold (1 = off)\n"
            "      --min-p P         drop tokens below P x the top probability (0 = off)\n"
            "      --repeat-penalty R  penalise tokens already seen (1 = off)\n"
            "      --seed S          random seed (default 0)\n"
            "      --kv MODE         KV cache mode: bf16, int8, kivi2, kivi4, rot2, oscar2, oscar4\n"
            "                        (default oscar2; bf16 when the model's head_dim does not allow it)\n"
            "      --device D        cpu, cuda or auto (default auto: cuda when a GPU is usable)\n"
            "  -t, --threads N       CPU threads (default: all cores)\n"
            "      --json            print one JSON object with the reply and statistics (with\n"
            "                        images/audio: one per turn, one line each when interactive)\n"
            "  -v, --verbose         log loading details to stderr\n"
            "  -h, --help            this help\n");
}

static void log_to_stderr(osc_log_level lv, const char *msg, void *user) {
    (void)user;
    static const char *names[] = {"debug", "info", "warning", "error"};
    fprintf(stderr, "oscar: %s: %s\n", names[lv], msg);
}

/* Returns 0 on success, 2 on a usage error, 3 for --help. */
static int parse_chat(int argc, char **argv, chat_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    o->device = "auto";
    o->kv = NULL; /* auto: oscar2 when the model allows it */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEEDV(); o->prompt = v; }
        else if (!strcmp(a, "-i") || !strcmp(a, "--image") || !strcmp(a, "-a") || !strcmp(a, "--audio")) {
            NEEDV();
            if (o->n_media == CHAT_MAX_MEDIA) { fprintf(stderr, "oscar: at most %d images and audios\n", CHAT_MAX_MEDIA); return 2; }
            o->media_audio[o->n_media] = a[1] == 'a' || a[2] == 'a';
            o->media[o->n_media++] = v;
        }
        else if (!strcmp(a, "-s") || !strcmp(a, "--system")) { NEEDV(); o->system = v; }
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
        else if (!strcmp(a, "--json")) o->json = 1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) o->verbose = 1;
        else { fprintf(stderr, "oscar: unknown option '%s' (see oscar chat --help)\n", a); return 2; }
#undef NEEDV
    }
    if (!o->model) {
        fprintf(stderr, "oscar: chat needs a model folder: -m MODEL_DIR (see oscar chat --help)\n");
        return 2;
    }
    return 0;
}

typedef struct stream_ctx { int print; char *buf; size_t len, cap; } stream_ctx;

static int on_token(const char *text, int32_t id, void *user) {
    (void)id;
    stream_ctx *c = user;
    if (c->print) {
        fputs(text, stdout);
        fflush(stdout);
    }
    size_t n = strlen(text);
    if (c->len + n + 1 > c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 1024;
        while (nc < c->len + n + 1) nc *= 2;
        char *nb = realloc(c->buf, nc);
        if (!nb) return 1;
        c->buf = nb;
        c->cap = nc;
    }
    memcpy(c->buf + c->len, text, n + 1);
    c->len += n;
    return 0;
}

static void print_speed(const osc_gen_stats *st) {
    fprintf(stderr, "\noscar: prompt %d tokens in %.2f s (%.1f tok/s), generated %d tokens in %.2f s (%.1f tok/s)\n",
            st->prompt_tokens, st->prompt_seconds, st->prompt_seconds > 0 ? st->prompt_tokens / st->prompt_seconds : 0.0,
            st->gen_tokens, st->gen_seconds, st->gen_seconds > 0 ? st->gen_tokens / st->gen_seconds : 0.0);
}

static int fail(const char *what) {
    fprintf(stderr, "oscar: %s: %s\n", what, osc_last_error());
    return 1;
}

/* ---- chat with images / audio (pipelines/lib/mmchat.h) ------------------------------------ */

/* "/image PATH" -> PATH (after spaces), or NULL when the line is not that command. */
static const char *media_cmd(const char *line, const char *cmd) {
    size_t k = strlen(cmd);
    if (strncmp(line, cmd, k) || (line[k] && line[k] != ' ' && line[k] != '\t')) return NULL;
    line += k;
    while (*line == ' ' || *line == '\t') line++;
    return line;
}

static int mm_on_token(const char *piece, int32_t id, void *user) {
    stream_ctx *c = user;
    return on_token(piece, id, c);
}

static int mm_attach(osc_mmchat *c, const char *path, int audio, const char **names, int *is_audio, int *n_names) {
    if ((audio ? osc_mmchat_attach_audio(c, path) : osc_mmchat_attach_image(c, path)) != OSC_OK) {
        fprintf(stderr, "oscar: cannot attach the %s: %s\n", audio ? "audio" : "image", osc_last_error());
        return -1;
    }
    if (*n_names < CHAT_MAX_MEDIA) {
        names[*n_names] = strdup(path);
        is_audio[(*n_names)++] = audio;
    }
    return 0;
}

static void mm_free_names(const char **names, int *n) {
    for (int i = 0; i < *n; i++) free((char *)names[i]);
    *n = 0;
}

/* One user turn; prints the reply (streamed, or a JSON object), speed on stderr. 0 ok, 1 fatal,
 * -1 the turn was refused (context) and the chat goes on. */
static int mm_turn(osc_mmchat *c, const chat_opts *o, const char *text, int max_tokens, const char **names,
                   const int *is_audio, int n_names, int pretty) {
    stream_ctx sc = {!o->json, NULL, 0, 0};
    osc_mmchat_stats st;
    osc_status s = osc_mmchat_turn(c, text, max_tokens, mm_on_token, &sc, &st);
    if (s != OSC_OK) {
        free(sc.buf);
        if (s == OSC_ERR_CONTEXT && !st.prompt_tokens && o->prompt == NULL) {
            fprintf(stderr, "oscar: %s\n", osc_last_error());
            return -1;
        }
        return fail("generation failed");
    }
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", o->model);
        cJSON_AddStringToObject(j, "prompt", text);
        cJSON *ji = cJSON_AddArrayToObject(j, "images"), *ja = cJSON_AddArrayToObject(j, "audios");
        for (int i = 0; i < n_names; i++) cJSON_AddItemToArray(is_audio[i] ? ja : ji, cJSON_CreateString(names[i]));
        cJSON_AddStringToObject(j, "reply", sc.buf ? sc.buf : "");
        int nr = 0;
        const int32_t *r = osc_mmchat_reply(c, &nr);
        cJSON *jr = cJSON_AddArrayToObject(j, "ids");
        for (int i = 0; i < nr; i++) cJSON_AddItemToArray(jr, cJSON_CreateNumber(r[i]));
        cJSON_AddNumberToObject(j, "prompt_tokens", st.prompt_tokens);
        cJSON_AddNumberToObject(j, "image_tokens", st.image_tokens);
        cJSON_AddNumberToObject(j, "audio_tokens", st.audio_tokens);
        cJSON_AddNumberToObject(j, "gen_tokens", st.gen_tokens);
        cJSON_AddNumberToObject(j, "context_tokens", st.context_tokens);
        cJSON_AddNumberToObject(j, "rope_delta", st.rope_delta);
        cJSON_AddNumberToObject(j, "encode_seconds", st.encode_seconds);
        cJSON_AddNumberToObject(j, "prompt_seconds", st.prompt_seconds);
        cJSON_AddNumberToObject(j, "gen_seconds", st.gen_seconds);
        cJSON_AddStringToObject(j, "finish", st.stopped ? "stop" : "length");
        cJSON_AddStringToObject(j, "kv", osc_mmchat_kv_mode(c));
        char *txt = pretty ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
        if (txt) puts(txt);
        fflush(stdout);
        free(txt);
        cJSON_Delete(j);
    } else {
        fputc('\n', stdout);
        fflush(stdout);
        if (st.image_tokens || st.audio_tokens)
            fprintf(stderr, "oscar: %d image + %d audio tokens encoded in %.2f s", st.image_tokens, st.audio_tokens,
                    st.encode_seconds);
        osc_gen_stats gs = {0};
        gs.prompt_tokens = st.prompt_tokens;
        gs.prompt_seconds = st.prompt_seconds;
        gs.gen_tokens = st.gen_tokens;
        gs.gen_seconds = st.gen_seconds;
        print_speed(&gs);
    }
    free(sc.buf);
    return 0;
}

static int cmd_chat_mm(const chat_opts *o) {
    osc_mmchat_params p;
    memset(&p, 0, sizeof p);
    p.model = o->model;
    p.system = o->system;
    p.kv = o->kv;
    p.n_ctx = o->n_ctx;
    p.dev = OSC_DEV_CPU;
    if (!strcmp(o->device, "cuda") || (!strcmp(o->device, "auto") && osc_device_cuda_available())) {
        if (!osc_device_cuda_available()) {
            fprintf(stderr, "oscar: --device cuda: no usable GPU (or built without CUDA)\n");
            return 1;
        }
        p.dev = OSC_DEV_CUDA;
    }
    if (o->threads > 0) osc_cpu_set_threads(o->threads);
    if (osc_mmchat_sampler_defaults(o->model, &p.sp) != OSC_OK) return fail("cannot load the model");
    osc_sampling_flags_apply(&o->smp, &p.sp);
    const int max_tokens = o->n_predict >= 0 ? o->n_predict : 256;
    osc_mmchat *c;
    if (osc_mmchat_open(&p, &c) != OSC_OK) return fail("cannot load the model");
    if (o->verbose) fprintf(stderr, "oscar: %s\n", osc_mmchat_describe(c));
    const char *names[CHAT_MAX_MEDIA];
    int is_audio[CHAT_MAX_MEDIA], n_names = 0, rc = 0;
    for (int i = 0; i < o->n_media; i++) {
        if (mm_attach(c, o->media[i], o->media_audio[i], names, is_audio, &n_names)) {
            rc = 1;
            break;
        }
    }
    if (!rc && o->prompt) {
        rc = mm_turn(c, o, o->prompt, max_tokens, names, is_audio, n_names, 1) ? 1 : 0;
    } else if (!rc) {
        char line[65536];
        for (;;) {
            fputs("> ", stderr);
            if (!fgets(line, sizeof line, stdin)) break;
            size_t n = strlen(line);
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            if (!n) continue;
            if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
            if (!strcmp(line, "/reset")) {
                osc_mmchat_reset(c);
                mm_free_names(names, &n_names);
                fputs("(conversation cleared)\n", stderr);
                continue;
            }
            const char *path;
            int audio = 0;
            if ((path = media_cmd(line, "/image")) || (audio = 1, path = media_cmd(line, "/audio"))) {
                if (!*path) {
                    fprintf(stderr, "oscar: usage: %s PATH\n", audio ? "/audio" : "/image");
                    continue;
                }
                if (!mm_attach(c, path, audio, names, is_audio, &n_names))
                    fprintf(stderr, "(%s %s attached to the next message)\n", audio ? "audio" : "image", path);
                continue;
            }
            int r = mm_turn(c, o, line, max_tokens, names, is_audio, n_names, 0);
            if (r > 0) { rc = 1; break; }
            if (r == 0) mm_free_names(names, &n_names);
        }
        if (!rc && osc_mmchat_n_attached(c))
            fprintf(stderr, "oscar: warning: %d attached image(s)/audio(s) were not sent (no message followed)\n",
                    osc_mmchat_n_attached(c));
    }
    mm_free_names(names, &n_names);
    osc_mmchat_free(c);
    return rc;
}

static int cmd_chat(int argc, char **argv) {
    chat_opts o;
    int r = parse_chat(argc, argv, &o);
    if (r == 3) { usage_chat(stdout); return 0; }
    if (r) return r;
    osc_set_log_callback(log_to_stderr, NULL, o.verbose ? OSC_LOG_DEBUG : OSC_LOG_WARN);
    /* Qwen2.5-Omni / Qwen2.5-VL: the multimodal engine for interactive chats (where /image may
     * come) and for any chat with --image/--audio; every other chat goes through osc_session. */
    if (osc_mmchat_model_ok(o.model) && (!o.prompt || o.n_media)) return cmd_chat_mm(&o);
    if (o.n_media) {
        fprintf(stderr, "oscar: %s: images and audio need a Qwen2.5-Omni or Qwen2.5-VL model folder\n", o.model);
        return 1;
    }
    osc_model_params mp = osc_model_default_params();
    mp.device = !strcmp(o.device, "cpu") ? OSC_DEVICE_CPU : !strcmp(o.device, "cuda") ? OSC_DEVICE_CUDA : OSC_DEVICE_AUTO;
    mp.n_threads = o.threads;
    mp.kv_mode = o.kv;
    osc_model *m;
    if (osc_model_load(o.model, &mp, &m) != OSC_OK) return fail("cannot load the model");
    if (o.verbose) fprintf(stderr, "oscar: %s\n", osc_model_describe(m));
    osc_session_params ps = osc_session_default_params();
    ps.n_ctx = o.n_ctx;
    ps.kv_mode = o.kv;
    ps.system_prompt = o.system;
    osc_session *s;
    if (osc_session_new(m, &ps, &s) != OSC_OK) {
        int rc = fail("cannot start a session");
        osc_model_free(m);
        return rc;
    }
    osc_sampling_params sp = osc_sampling_default_params(m);
    if (o.n_predict >= 0) sp.max_tokens = o.n_predict;
    osc_sampling_flags_apply_api(&o.smp, &sp);
    int rc = 0;
    if (o.prompt) {
        stream_ctx sc = {!o.json, NULL, 0, 0};
        osc_gen_stats st;
        if (osc_session_add_message(s, "user", o.prompt) != OSC_OK ||
            osc_session_generate(s, &sp, on_token, &sc, &st) != OSC_OK) {
            rc = fail("generation failed");
        } else if (o.json) {
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "model", o.model);
            cJSON_AddStringToObject(j, "prompt", o.prompt);
            cJSON_AddStringToObject(j, "reply", sc.buf ? sc.buf : "");
            cJSON_AddStringToObject(j, "kv", o.kv ? o.kv : osc_model_kv_mode(m));
            cJSON_AddNumberToObject(j, "prompt_tokens", st.prompt_tokens);
            cJSON_AddNumberToObject(j, "gen_tokens", st.gen_tokens);
            cJSON_AddNumberToObject(j, "prompt_seconds", st.prompt_seconds);
            cJSON_AddNumberToObject(j, "gen_seconds", st.gen_seconds);
            cJSON_AddStringToObject(j, "finish", st.stopped_by_eos ? "stop" : "length");
            cJSON_AddStringToObject(j, "kv", o.kv);
            char *txt = cJSON_Print(j);
            if (txt) puts(txt);
            free(txt);
            cJSON_Delete(j);
        } else {
            fputc('\n', stdout);
            print_speed(&st);
        }
        free(sc.buf);
    } else {
        char line[65536];
        for (;;) {
            fputs("> ", stderr);
            if (!fgets(line, sizeof line, stdin)) break;
            size_t n = strlen(line);
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            if (!n) continue;
            if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
            if (media_cmd(line, "/image") || media_cmd(line, "/audio")) {
                fprintf(stderr, "oscar: this model takes no images or audio (they need Qwen2.5-Omni or Qwen2.5-VL); "
                        "nothing attached\n");
                continue;
            }
            if (!strcmp(line, "/reset")) {
                osc_session_free(s);
                if (osc_session_new(m, &ps, &s) != OSC_OK) { rc = fail("cannot reset the session"); s = NULL; break; }
                fputs("(conversation cleared)\n", stderr);
                continue;
            }
            stream_ctx sc = {1, NULL, 0, 0};
            osc_gen_stats st;
            if (osc_session_add_message(s, "user", line) != OSC_OK || osc_session_generate(s, &sp, on_token, &sc, &st) != OSC_OK) {
                rc = fail("generation failed");
                free(sc.buf);
                break;
            }
            fputc('\n', stdout);
            print_speed(&st);
            free(sc.buf);
        }
    }
    osc_session_free(s);
    osc_model_free(m);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) { usage_main(stdout); return 0; }
    if (!strcmp(cmd, "--version")) { printf("oscar %s\n", OSC_VERSION); return 0; }
    if (!strcmp(cmd, "help")) {
        if (argc > 2 && !strcmp(argv[2], "chat")) usage_chat(stdout);
        else if (argc > 2 && !strcmp(argv[2], "bench")) { char *h[] = {"--help"}; return osc_cli_bench(1, h); }
        else if (argc > 2 && !strcmp(argv[2], "listen")) { char *h[] = {"--help"}; return osc_cli_listen(1, h); }
        else if (argc > 2 && !strcmp(argv[2], "ppl")) { char *h[] = {"--help"}; return osc_cli_ppl(1, h); }
        else if (argc > 2 && !strcmp(argv[2], "vqa")) { char *h[] = {"--help"}; return osc_cli_vqa(1, h); }
        else if (argc > 2 && !strcmp(argv[2], "kvstat")) { char *h[] = {"--help"}; return osc_cli_kvstat(1, h); }
        else if (argc > 2 && !strcmp(argv[2], "caption")) { char *h[] = {"--help"}; return osc_cli_caption(1, h); }
        else usage_main(stdout);
        return 0;
    }
    if (!strcmp(cmd, "chat")) return cmd_chat(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return osc_cli_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "kvstat")) return osc_cli_kvstat(argc - 2, argv + 2);
    if (!strcmp(cmd, "listen")) return osc_cli_listen(argc - 2, argv + 2);
    if (!strcmp(cmd, "ppl")) return osc_cli_ppl(argc - 2, argv + 2);
    if (!strcmp(cmd, "vqa")) return osc_cli_vqa(argc - 2, argv + 2);
    if (!strcmp(cmd, "caption")) return osc_cli_caption(argc - 2, argv + 2);
    fprintf(stderr, "oscar: unknown command '%s'\n\n", cmd);
    usage_main(stderr);
    return 2;
}
