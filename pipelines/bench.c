/* oscar bench: prefill/decode throughput of a whole model and a decode-attention
 * microbenchmark, printed as a table and optionally written as JSON (docs/PERFORMANCE.md).
 *
 * Timing method (host code only): osc_device_sync, then CLOCK_MONOTONIC around the region,
 * then osc_device_sync again before reading the clock; warm-up first, median of the reps.
 * Every input is random (osc_op_fill_uniform / random token ids), never zeros.
 * Exit codes: 0 ok, 1 runtime error (incl. out of memory, with needed/free bytes), 2 usage. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/device.h"
#include "kernels/ops.h"
#include "encoders/vision.h"
#include "kvcache/kvcache.h"
#include "kvcache/kv_batch.h"
#include "llm/model.h"
#include "llm/presets.h"
#include "oscar.h"
#include "lib/args.h"

/* Entry point of `oscar bench`; pipelines/main.c declares it extern and calls it with the
 * arguments after "bench". */
int osc_cli_bench(int argc, char **argv);

#define MAX_LIST 16
#define MAX_KV 8

typedef struct bench_opts {
    const char *shape, *model_dir, *device, *json, *fill;
    const char *kv[MAX_KV];
    int n_kv, kv_default;
    int vision; /* --vision: the vision-encoder benchmark */ /* kv_default: the list was not given (modes the shape cannot use are skipped) */
    int ctx[MAX_LIST], n_ctx;
    int batch[MAX_LIST], n_batch;
    int prompt, gen, attn, reps, threads, warmup;
    int hq, hkv, hd;
    uint64_t seed;
    double copy_bw; /* GB/s; 0 = measure */
} bench_opts;

static void usage_bench(FILE *f) {
    fprintf(f,
            "usage: oscar bench [--shape NAME | -m MODEL_DIR] [options]\n\n"
            "End to end (default): for each context C in --ctx and batch B in --batch\n"
            "  prefill   tokens/s of one sequence of P = --prompt (default min(C, 2048)) tokens;\n"
            "  fill      B caches are filled to C tokens (by prefill, timed and reported, or\n"
            "            with random K/V, see --fill);\n"
            "  decode    3 warm-up steps, then --gen steps of all B sequences x 1 token (greedy,\n"
            "            argmax on the device, ids downloaded); decode tok/s = B*gen / total time, step = median;\n"
            "  bandwidth (weight bytes read per step + B * KV bytes of C tokens) / median step,\n"
            "            and that as a fraction of the device-to-device copy bandwidth.\n"
            "With --attn: only the decode-attention microbenchmark (osc_op_attention, S = 1,\n"
            "  q [1,Hq,D], k/v [T,Hkv,D], bf16 on CUDA / f32 on CPU) at (B,T) = (1,4096),\n"
            "  (1,32768), (1,131072), (8,32768), (16,8192) unless --ctx/--batch are given;\n"
            "  B > 1 is one osc_op_attention_decode_batch call (B <= 64). Also times a decode\n"
            "  step of attention through each --kv cache mode (store 1 token + attend, 1 layer),\n"
            "  and that attention alone (the rows stored before the timer, as torch's baseline).\n"
            "  Each row is timed per call (CUDA events from an idle device, the host's launch work\n"
            "  inside) and, on CUDA, as device time alone (dev_us: the same region queued behind a\n"
            "  hold kernel, nvbench's method; tools/bench/torch_sdpa.py times torch both ways).\n\n"
            "options:\n"
            "  --shape NAME        random weights of a named shape: %s\n"
            "  -m, --model DIR     load a checkpoint folder instead (config.json + *.safetensors)\n"
            "  --device D          cpu, cuda or auto (default auto: cuda when a GPU is usable)\n"
            "  --ctx N[,N...]      contexts in tokens (default 4096; --attn: the list above)\n"
            "  --batch B[,B...]    batch sizes (default 1; --attn: the list above)\n"
            "  --prompt N          prefill length to time (default min(C, 2048))\n"
            "  --gen N             decode steps timed (default 32)\n"
            "  --kv MODE[,MODE]    KV cache modes (default bf16,oscar2; built in: %s)\n"
            "  --fill F            prefill (default: run the model over C random tokens per\n"
            "                      sequence, timed) or random (write random K/V straight into\n"
            "                      the caches: fast for long contexts, same bytes per step)\n"
            "  --attn              run the attention microbenchmark instead of end to end\n"
            "  --vision            vision encoder of the Qwen2.5-Omni-7B shape (random weights): images/s\n"
            "                      at 448x448 and 1024x1024, and time to first token of an image\n"
            "                      question (encoder + prefill of image tokens + 32 text tokens + first\n"
            "                      token) on the --shape decoder (default qwen2.5-omni-7b), --kv cache\n"
            "  --heads HQ,HKV,D    attention shape for --attn (default 32,8,128)\n"
            "  --reps R            timed repetitions for --attn (default 50, after 5 warm-ups)\n"
            "  --copy-bw GBPS      copy bandwidth to compare with (read+write GB/s); default:\n"
            "                      measured (CUDA: 1 GiB device-to-device copy, median of 10;\n"
            "                      CPU: 64 MiB memcpy)\n"
            "  --json FILE         also write the results as a JSON array to FILE\n"
            "  --seed S            random seed for weights, tokens and inputs (default 0)\n"
            "  -t, --threads N     CPU threads (default: all cores)\n"
            "  -h, --help          this help\n\n"
            "JSON fields: kind (e2e|attn|kvattn|kvpack), shape, device, kv, bits_per_element and\n"
            "bytes_per_token_per_layer (of the kv mode, residual window excluded), batch, ctx,\n"
            "prompt_tokens_per_s, decode_tokens_per_s, step_ms, graph_steps (timed decode steps\n"
            "replayed from a CUDA graph; OSC_CUDA_GRAPHS=0 disables them), weight_bytes, kv_bytes_per_seq,\n"
            "achieved_gbps, copy_gbps, frac_of_copy, attn_us, attend_us (kvattn: attention alone),\n"
            "attn_dev_us, attend_dev_us, dev_frac_of_copy, attend_dev_frac_of_copy (device time\n"
            "alone), date, commit (env OSC_COMMIT).\n",
            osc_llm_preset_names(), osc_kv_modes());
}

/* ---------- small helpers ---------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A timed region of the attention microbenchmarks: on CUDA the device time between two
 * events (as torch_sdpa.py times torch: launch latency and the host wait not counted), on
 * the CPU the host clock. Both start from an idle device. queued (CUDA): the region's work
 * waits behind a hold kernel (osc_device_hold) until the host has launched all of it, so the
 * events time the device work alone, without the host's launch work between the start event
 * and the first kernel (what a decode step's CUDA graph sees; nvbench's blocking-kernel
 * method; torch_sdpa.py does the same with torch.cuda._sleep). */
static double g_hold_us = 2000.0; /* doubled whenever a rep's host launch work outlasts half of it */
static osc_status region_start(osc_dev dev, double *t0, int queued) {
    OSC_TRY(osc_device_sync(dev));
    if (queued && dev == OSC_DEV_CUDA) OSC_TRY(osc_device_hold(dev, g_hold_us));
    *t0 = now_s();
    return dev == OSC_DEV_CUDA ? osc_device_timer_start(dev) : OSC_OK;
}
/* *redo = 1: a queued region whose host work took more than half the hold (the timing may
 * include host time); the hold is doubled and the caller repeats the rep */
static osc_status region_stop(osc_dev dev, double t0, double *secs, int queued, int *redo) {
    *redo = 0;
    if (dev == OSC_DEV_CUDA) {
        const double host = now_s() - t0;
        OSC_TRY(osc_device_timer_stop(dev, secs));
        if (queued && host > 0.5e-6 * g_hold_us) {
            if (g_hold_us >= 256e3) return osc_error(OSC_ERR_DEVICE, "bench: host launch work of %.0f us", host * 1e6);
            g_hold_us *= 2;
            *redo = 1;
        }
        return OSC_OK;
    }
    OSC_TRY(osc_device_sync(dev));
    *secs = now_s() - t0;
    return OSC_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int parse_list(const char *flag, const char *v, int lo, int hi, int *out, int *n) {
    char buf[256];
    if (strlen(v) >= sizeof buf) {
        fprintf(stderr, "oscar: %s: list too long\n", flag);
        return -1;
    }
    strcpy(buf, v);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST) {
            fprintf(stderr, "oscar: %s takes at most %d values\n", flag, MAX_LIST);
            return -1;
        }
        if (osc_arg_int(flag, t, lo, hi, &out[*n])) return -1;
        (*n)++;
    }
    if (*n == 0) {
        fprintf(stderr, "oscar: %s needs at least one value\n", flag);
        return -1;
    }
    return 0;
}

static const char *fmt_bytes(double b, char *buf, size_t n) {
    if (b >= 1e9) snprintf(buf, n, "%.2f GB", b / 1e9);
    else if (b >= 1e6) snprintf(buf, n, "%.2f MB", b / 1e6);
    else snprintf(buf, n, "%.1f kB", b / 1e3);
    return buf;
}

/* Reports a failed library call; for OOM adds what was needed and what the device has free. */
static void report_err(const char *what, osc_status s, osc_dev dev, double needed) {
    fprintf(stderr, "oscar: bench: %s: %s (%s)\n", what, osc_last_error(), osc_status_name(s));
    if (s == OSC_ERR_OOM) {
        size_t fr = 0, tot = 0;
        char a[32], b[32], c[32];
        if (osc_device_mem_info(dev, &fr, &tot) == OSC_OK)
            fprintf(stderr, "oscar: bench: out of %s memory: needed about %s, free %s of %s\n",
                    dev == OSC_DEV_CUDA ? "device" : "host", needed > 0 ? fmt_bytes(needed, a, sizeof a) : "?",
                    fmt_bytes((double)fr, b, sizeof b), fmt_bytes((double)tot, c, sizeof c));
    }
}

/* Fails early (OOM) when `need` bytes are clearly more than the device has free. */
static osc_status check_mem(osc_dev dev, double need, const char *what) {
    size_t fr = 0, tot = 0;
    if (osc_device_mem_info(dev, &fr, &tot) != OSC_OK || fr == 0) return OSC_OK;
    if (need > (double)fr) {
        char a[32], b[32];
        fprintf(stderr, "oscar: bench: %s needs about %s but only %s is free\n", what, fmt_bytes(need, a, sizeof a),
                fmt_bytes((double)fr, b, sizeof b));
        return OSC_ERR_OOM;
    }
    return OSC_OK;
}

/* ---------- results ---------- */

typedef struct result {
    const char *kind;
    char shape[64], kv[32];
    int batch, ctx, prompt, gen, launches;
    long graph_steps; /* e2e: timed decode steps replayed from a CUDA graph */
    double prompt_tps, fill_s, decode_tps, step_ms, step_ms_min, weight_bytes, bytes_per_step, kv_bytes_per_seq,
        achieved_gbps, attn_us, attn_us_min;
    double attend_us, attend_us_min; /* kvattn: the attention alone, the rows stored before */
    double dev_us, attend_dev_us;     /* CUDA: the same regions queued (device time alone), 0 else */
    double bits_per_element, bytes_per_token_per_layer; /* of the kv mode, residual window excluded */
    int image_px, vis_tokens;                             /* --vision */
    double encode_ms, images_per_s, ttft_ms;
} result;

/* Storage cost of a cache mode for heads x head_dim (osc_kv_bits_per_element). */
static void set_kv_cost(result *r, const char *mode, int Hkv, int hd, osc_dtype act) {
    osc_kv_params p = {.mode = mode, .n_layers = 1, .n_kv_heads = Hkv, .head_dim = hd, .n_ctx = 1024,
                       .dev = OSC_DEV_CPU, .act_dt = act};
    r->bits_per_element = osc_kv_bits_per_element(&p);
    r->bytes_per_token_per_layer = (double)osc_kv_bytes_per_token_per_layer(&p);
}

typedef struct results {
    result *r;
    int n, cap;
} results;

static result *add_result(results *rs) {
    if (rs->n == rs->cap) {
        int nc = rs->cap ? rs->cap * 2 : 16;
        result *nr = realloc(rs->r, (size_t)nc * sizeof *nr);
        if (!nr) return NULL;
        rs->r = nr;
        rs->cap = nc;
    }
    result *r = &rs->r[rs->n++];
    memset(r, 0, sizeof *r);
    return r;
}

static int write_json(const char *path, const results *rs, const char *device, double copy_gbps,
                      const char *copy_method) {
    char date[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *commit = getenv("OSC_COMMIT");
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < rs->n; i++) {
        const result *r = &rs->r[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "kind", r->kind);
        cJSON_AddStringToObject(o, "shape", r->shape);
        cJSON_AddStringToObject(o, "device", device);
        cJSON_AddStringToObject(o, "kv", r->kv);
        if (r->image_px > 0) {
            cJSON_AddNumberToObject(o, "image_px", r->image_px);
            cJSON_AddNumberToObject(o, "vision_tokens", r->vis_tokens);
            cJSON_AddNumberToObject(o, "encode_ms", r->encode_ms);
            cJSON_AddNumberToObject(o, "images_per_s", r->images_per_s);
            cJSON_AddNumberToObject(o, "ttft_ms", r->ttft_ms);
        }
        if (r->bits_per_element > 0) {
            cJSON_AddNumberToObject(o, "bits_per_element", r->bits_per_element);
            cJSON_AddNumberToObject(o, "bytes_per_token_per_layer", r->bytes_per_token_per_layer);
        }
        cJSON_AddNumberToObject(o, "batch", r->batch);
        cJSON_AddNumberToObject(o, "ctx", r->ctx);
        if (!strcmp(r->kind, "e2e")) {
            cJSON_AddNumberToObject(o, "prompt_tokens", r->prompt);
            cJSON_AddNumberToObject(o, "prompt_tokens_per_s", r->prompt_tps);
            cJSON_AddNumberToObject(o, "fill_s", r->fill_s);
            cJSON_AddNumberToObject(o, "gen", r->gen);
            cJSON_AddNumberToObject(o, "decode_tokens_per_s", r->decode_tps);
            cJSON_AddNumberToObject(o, "step_ms", r->step_ms);
            cJSON_AddNumberToObject(o, "step_ms_min", r->step_ms_min);
            cJSON_AddNumberToObject(o, "graph_steps", (double)r->graph_steps);
            cJSON_AddNumberToObject(o, "weight_bytes", r->weight_bytes);
            cJSON_AddNumberToObject(o, "bytes_per_step", r->bytes_per_step);
        } else {
            cJSON_AddNumberToObject(o, "attn_us", r->attn_us);
            cJSON_AddNumberToObject(o, "attn_us_min", r->attn_us_min);
            if (r->attend_us > 0) {
                cJSON_AddNumberToObject(o, "attend_us", r->attend_us);
                cJSON_AddNumberToObject(o, "attend_us_min", r->attend_us_min);
            }
            /* device time alone (queued behind a hold kernel): bytes over it, against the copy */
            const double bytes_s = r->achieved_gbps * r->attn_us; /* GB/s x us = kB */
            if (r->dev_us > 0) {
                cJSON_AddNumberToObject(o, "attn_dev_us", r->dev_us);
                cJSON_AddNumberToObject(o, "dev_frac_of_copy", copy_gbps > 0 ? bytes_s / r->dev_us / copy_gbps : 0);
            }
            if (r->attend_dev_us > 0) {
                cJSON_AddNumberToObject(o, "attend_dev_us", r->attend_dev_us);
                cJSON_AddNumberToObject(o, "attend_dev_frac_of_copy",
                                        copy_gbps > 0 ? bytes_s / r->attend_dev_us / copy_gbps : 0);
            }
            cJSON_AddNumberToObject(o, "launches", r->launches);
        }
        cJSON_AddNumberToObject(o, "kv_bytes_per_seq", r->kv_bytes_per_seq);
        cJSON_AddNumberToObject(o, "achieved_gbps", r->achieved_gbps);
        cJSON_AddNumberToObject(o, "copy_gbps", copy_gbps);
        cJSON_AddNumberToObject(o, "frac_of_copy", copy_gbps > 0 ? r->achieved_gbps / copy_gbps : 0);
        cJSON_AddStringToObject(o, "copy_method", copy_method);
        cJSON_AddStringToObject(o, "timing",
                                !strcmp(r->kind, "e2e") || !strcmp(device, "cpu")
                                    ? "osc_device_sync + CLOCK_MONOTONIC, warm-up, median"
                                    : "CUDA events from an idle device, warm-up, median; *_dev_us: the same "
                                      "regions queued behind a hold kernel (device time alone)");
        cJSON_AddStringToObject(o, "date", date);
        if (commit) cJSON_AddStringToObject(o, "commit", commit);
        else cJSON_AddNullToObject(o, "commit");
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(arr);
    cJSON_Delete(arr);
    if (!text) {
        fprintf(stderr, "oscar: bench: out of memory writing JSON\n");
        return -1;
    }
    FILE *f = fopen(path, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f)) ok = 0;
    free(text);
    if (!ok) {
        fprintf(stderr, "oscar: bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---------- copy bandwidth ---------- */

/* Read+write bytes per second of a large copy, in GB/s (median of 10 after 2 warm-ups). */
static osc_status measure_copy(osc_dev dev, double *gbps) {
    size_t n = dev == OSC_DEV_CUDA ? ((size_t)1 << 30) : ((size_t)64 << 20);
    void *a = NULL, *b = NULL;
    osc_status s = osc_dev_malloc(dev, n, &a);
    if (s == OSC_OK) s = osc_dev_malloc(dev, n, &b);
    if (s == OSC_OK) {
        osc_tensor t = osc_tensor_1d(a, OSC_F32, dev, (int64_t)(n / 4));
        s = osc_op_fill_uniform(&t, 12345, -1, 1);
    }
    double ts[10];
    for (int i = 0; i < 12 && s == OSC_OK; i++) {
        s = osc_device_sync(dev);
        double t0 = now_s();
        if (s == OSC_OK) s = osc_copy_bytes(b, dev, a, dev, n);
        if (s == OSC_OK) s = osc_device_sync(dev);
        double t1 = now_s();
        if (i >= 2) ts[i - 2] = t1 - t0;
    }
    if (s == OSC_OK) *gbps = 2.0 * (double)n / median(ts, 10) / 1e9;
    osc_dev_free(dev, a);
    osc_dev_free(dev, b);
    return s;
}

/* ---------- attention microbenchmark ---------- */

static osc_status bench_attn_one(const bench_opts *o, osc_dev dev, int B, int T, result *r) {
    if (B > 64) return osc_error(OSC_ERR_INVALID_ARG, "attention benchmark: batch %d (at most 64)", B);
    const osc_dtype dt = dev == OSC_DEV_CUDA ? OSC_BF16 : OSC_F32;
    const size_t es = osc_dtype_size(dt);
    const int Hq = o->hq, Hkv = o->hkv, D = o->hd;
    const size_t kv1 = (size_t)T * Hkv * D * es; /* one K (or V) tensor of one sequence */
    const size_t set_bytes = (size_t)B * 2 * kv1;
    /* rotate over input sets so the working set exceeds the L2 cache (50 MB on H200) */
    int nsets = 1;
    if (dev == OSC_DEV_CUDA) {
        size_t want = (size_t)256 << 20;
        nsets = (int)((want + set_bytes - 1) / set_bytes);
        if (nsets < 1) nsets = 1;
        if (nsets > 16) nsets = 16;
    }
    const size_t qbytes = (size_t)Hq * D * es;
    double need = (double)nsets * ((double)set_bytes + (double)B * qbytes) + (double)qbytes;
    OSC_TRY(check_mem(dev, need, "attention inputs"));
    void *kvbuf = NULL, *qbuf = NULL, *obuf = NULL;
    osc_status s = osc_dev_malloc(dev, (size_t)nsets * set_bytes, &kvbuf);
    if (s == OSC_OK) s = osc_dev_malloc(dev, (size_t)nsets * B * qbytes, &qbuf);
    if (s == OSC_OK) s = osc_dev_malloc(dev, (size_t)B * qbytes, &obuf);
    if (s != OSC_OK) {
        report_err("attention inputs", s, dev, need);
        goto done;
    }
    {
        osc_tensor all = osc_tensor_1d(kvbuf, dt, dev, (int64_t)((size_t)nsets * set_bytes / es));
        osc_tensor qall = osc_tensor_1d(qbuf, dt, dev, (int64_t)nsets * B * Hq * D);
        s = osc_op_fill_uniform(&all, o->seed * 7919 + 11 + (uint64_t)T, -1, 1);
        if (s == OSC_OK) s = osc_op_fill_uniform(&qall, o->seed * 7919 + 13 + (uint64_t)T, -1, 1);
    }
    int64_t qne[3] = {1, Hq, D}, kne[3] = {T, Hkv, D};
    osc_tensor out = osc_tensor_make(obuf, dt, dev, 3, qne);
    const float scale = 1.0f / sqrtf((float)D);
    const int warm = 5, R = o->reps;
    double *ts = malloc(sizeof(double) * (size_t)R);
    if (!ts) {
        s = OSC_ERR_OOM;
        goto done;
    }
    double *tq = malloc(sizeof(double) * (size_t)R);
    if (!tq) {
        free(ts);
        s = OSC_ERR_OOM;
        goto done;
    }
    /* each rep twice on CUDA: as launched, then queued (device time alone) */
    const int nv = dev == OSC_DEV_CUDA ? 2 : 1;
    int set = 0;
    for (int it = 0; it < nv * (warm + R) && s == OSC_OK; it++) {
        const int queued = nv == 2 && (it & 1), rep = it / nv - warm;
        char *base = (char *)kvbuf + (size_t)set * set_bytes;
        double t0 = 0, el = 0;
        int redo = 0;
        s = region_start(dev, &t0, queued);
        if (s == OSC_OK && B == 1) {
            osc_tensor q = osc_tensor_make((char *)qbuf + (size_t)set * qbytes, dt, dev, 3, qne);
            osc_tensor k = osc_tensor_make(base, dt, dev, 3, kne);
            osc_tensor v = osc_tensor_make(base + kv1, dt, dev, 3, kne);
            s = osc_op_attention(&out, &q, &k, &v, T - 1, scale, 1);
        } else if (s == OSC_OK) { /* the decode step of B sequences: one batched call, as the decoder makes it */
            osc_tensor kt[64], vt[64];
            const osc_tensor *kp[64], *vp[64];
            int lens[64];
            for (int b = 0; b < B; b++) {
                kt[b] = osc_tensor_make(base + (size_t)b * 2 * kv1, dt, dev, 3, kne);
                vt[b] = osc_tensor_make(base + (size_t)b * 2 * kv1 + kv1, dt, dev, 3, kne);
                kp[b] = &kt[b], vp[b] = &vt[b], lens[b] = T;
            }
            int64_t bne[3] = {B, Hq, D};
            osc_tensor qb = osc_tensor_make((char *)qbuf + (size_t)set * B * qbytes, dt, dev, 3, bne);
            osc_tensor ob = osc_tensor_make(obuf, dt, dev, 3, bne);
            if (s == OSC_OK) s = osc_op_attention_decode_batch(&ob, &qb, kp, vp, lens, B, scale);
        }
        if (s == OSC_OK) s = region_stop(dev, t0, &el, queued, &redo);
        set = (set + 1) % nsets;
        if (redo) {
            it--;
            continue;
        }
        if (rep >= 0) (queued ? tq : ts)[rep] = el;
    }
    if (s == OSC_OK) {
        double med = median(ts, R);
        r->attn_us = med * 1e6;
        r->attn_us_min = ts[0] * 1e6; /* sorted by median() */
        if (nv == 2) r->dev_us = median(tq, R) * 1e6;
        r->kv_bytes_per_seq = 2.0 * (double)kv1;
        r->achieved_gbps = (double)set_bytes / med / 1e9;
        r->launches = 1;
    } else {
        report_err("attention", s, dev, 0);
    }
    free(ts);
    free(tq);
done:
    osc_dev_free(dev, kvbuf);
    osc_dev_free(dev, qbuf);
    osc_dev_free(dev, obuf);
    return s;
}

/* One decode step of attention through a cache mode: B one-layer caches hold T-1 random
 * tokens; each rep stores one more token (k, v) and attends with S = 1 (not advanced, so
 * every rep sees T keys; the caches are truncated back to T-1 between reps, untimed).
 * Measures store + attend of the mode for B sequences. */
static osc_status bench_kvattn_one(const bench_opts *o, osc_dev dev, const char *mode, int B, int T, result *r) {
    const osc_dtype dt = dev == OSC_DEV_CUDA ? OSC_BF16 : OSC_F32;
    const size_t es = osc_dtype_size(dt);
    const int Hq = o->hq, Hkv = o->hkv, D = o->hd;
    osc_kv_params p = {.mode = mode, .n_layers = 1, .n_kv_heads = Hkv, .head_dim = D, .n_ctx = T, .dev = dev, .act_dt = dt};
    size_t kvb = osc_kv_bytes_for(&p);
    const int chunk = T < 4096 ? T : 4096;
    const size_t rowb = (size_t)Hkv * D * es;
    double need = (double)B * (double)kvb + 2.0 * chunk * rowb + 2.0 * B * Hq * D * es;
    OSC_TRY(check_mem(dev, need, "kv-cache attention"));
    osc_kv **kvs = calloc((size_t)B, sizeof *kvs);
    void *tmp = NULL, *qo = NULL;
    int batched = 0;
    /* per rep: store+attend, attend alone; on CUDA both again queued (device time alone) */
    const int nv = dev == OSC_DEV_CUDA ? 4 : 2;
    double *tv[4] = {NULL, NULL, NULL, NULL};
    osc_status s = kvs ? OSC_OK : OSC_ERR_OOM;
    for (int i = 0; i < nv && s == OSC_OK; i++)
        if (!(tv[i] = malloc(sizeof(double) * (size_t)o->reps))) s = OSC_ERR_OOM;
    double *ts = tv[0], *ta = tv[1];
    if (s == OSC_OK) s = osc_dev_malloc(dev, 2 * (size_t)chunk * rowb, &tmp);
    if (s == OSC_OK) s = osc_dev_malloc(dev, 2 * (size_t)B * Hq * D * es, &qo);
    for (int b = 0; b < B && s == OSC_OK; b++) s = osc_kv_new(&p, &kvs[b]);
    if (s != OSC_OK) {
        report_err("kv-cache attention setup", s, dev, need);
        goto done;
    }
    {
        int64_t qne[3] = {B, Hq, D};
        osc_tensor q = osc_tensor_make(qo, dt, dev, 3, qne);
        osc_tensor out = osc_tensor_make((char *)qo + (size_t)B * Hq * D * es, dt, dev, 3, qne);
        s = osc_op_fill_uniform(&q, o->seed + 99, -1, 1);
        uint64_t sd = o->seed * 31 + 1000;
        for (int b = 0; b < B && s == OSC_OK; b++) {
            for (int done = 0; done < T - 1 && s == OSC_OK;) {
                int n = T - 1 - done < chunk ? T - 1 - done : chunk;
                int64_t ne[3] = {n, Hkv, D};
                osc_tensor k = osc_tensor_make(tmp, dt, dev, 3, ne);
                osc_tensor v = osc_tensor_make((char *)tmp + (size_t)chunk * rowb, dt, dev, 3, ne);
                s = osc_op_fill_uniform(&k, ++sd, -1, 1);
                if (s == OSC_OK) s = osc_op_fill_uniform(&v, ++sd, -1, 1);
                if (s == OSC_OK) s = osc_kv_store(kvs[b], 0, &k, &v);
                if (s == OSC_OK) osc_kv_advance(kvs[b], n);
                done += n;
            }
        }
        int64_t ne1[3] = {1, Hkv, D};
        osc_tensor k1 = osc_tensor_make(tmp, dt, dev, 3, ne1);
        osc_tensor v1 = osc_tensor_make((char *)tmp + (size_t)chunk * rowb, dt, dev, 3, ne1);
        const float scale = 1.0f / sqrtf((float)D);
        const int warm = 5;
        /* plain caches' layer views for the batched kernel: [B] tensors, pointers, lengths */
        osc_tensor *pk = malloc(2 * (size_t)B * sizeof *pk), *pv = pk ? pk + B : NULL;
        const osc_tensor **pkp = malloc(2 * (size_t)B * sizeof *pkp), **pvp = pkp ? pkp + B : NULL;
        int *plen = malloc((size_t)B * sizeof *plen);
        if (!pk || !pkp || !plen) s = OSC_ERR_OOM;
        for (int b = 0; b < B && s == OSC_OK; b++) pkp[b] = &pk[b], pvp[b] = &pv[b];
        /* each rep twice: timed from the stores (as a decode step runs them), then with the
         * stores done before the timer (the attention alone, as torch's baseline times it) */
        for (int it = 0; it < nv * (warm + o->reps) && s == OSC_OK; it++) {
            const int var = it % nv, alone = var & 1, queued = var >> 1, rep = it / nv - warm;
            /* back to T-1 committed tokens (the quantised modes count stored rows), untimed */
            for (int b = 0; b < B; b++) osc_kv_truncate(kvs[b], T - 1);
            double t0 = 0, el = 0;
            int redo = 0;
            if (!alone) s = region_start(dev, &t0, queued);
            /* as the decoder does (llm/model.c): every cache stores its row, then one batched
             * attention when the mode has one (plain caches on the GPU: the batched kernel over
             * their layer views; quantised block modes), else one call per cache */
            for (int b = 0; b < B && s == OSC_OK; b++) s = osc_kv_store(kvs[b], 0, &k1, &v1);
            if (alone && s == OSC_OK) s = region_start(dev, &t0, queued); /* after the stores */
            batched = 0;
            if (s == OSC_OK && dev == OSC_DEV_CUDA && B > 1 && osc_kv_plain_layer(kvs[0], 0, &pk[0], &pv[0])) {
                for (int b = 0; b < B; b++) {
                    osc_kv_plain_layer(kvs[b], 0, &pk[b], &pv[b]);
                    plen[b] = (int)pk[b].ne[0];
                }
                s = osc_op_attention_decode_batch(&out, &q, pkp, pvp, plen, B, scale);
                batched = 1;
            }
            if (s == OSC_OK && !batched) s = osc_kv_attend_batch(kvs, B, 0, &q, &out, scale, &batched);
            for (int b = 0; b < B && s == OSC_OK && !batched; b++) {
                osc_tensor qb = osc_tensor_rows(&q, b, 1), ob = osc_tensor_rows(&out, b, 1);
                s = osc_kv_attend(kvs[b], 0, &qb, &ob, scale);
            }
            if (s == OSC_OK) s = region_stop(dev, t0, &el, queued, &redo);
            if (redo) {
                it--;
                continue;
            }
            if (rep >= 0) tv[var][rep] = el;
        }
        free(pk);
        free(pkp);
        free(plen);
    }
    if (s == OSC_OK) {
        double med = median(ts, o->reps);
        r->attn_us = med * 1e6;
        r->attn_us_min = ts[0] * 1e6;
        const double meda = median(ta, o->reps);
        r->attend_us = meda * 1e6;
        r->attend_us_min = ta[0] * 1e6;
        if (nv == 4) {
            r->dev_us = median(tv[2], o->reps) * 1e6;
            r->attend_dev_us = median(tv[3], o->reps) * 1e6;
        }
        r->kv_bytes_per_seq = (double)kvb; /* the whole cache of T tokens is read */
        r->achieved_gbps = (double)B * (double)kvb / med / 1e9;
        r->launches = batched ? 1 : B;
    } else {
        report_err("kv-cache attention", s, dev, need);
    }
done:
    if (kvs)
        for (int b = 0; b < B; b++) osc_kv_free(kvs[b]);
    free(kvs);
    for (int i = 0; i < 4; i++) free(tv[i]);
    osc_dev_free(dev, tmp);
    osc_dev_free(dev, qo);
    return s;
}

/* The prefill pack of a cache mode: T tokens of random K/V stored into an empty one-layer
 * cache (the block modes quantise and pack every whole block but the last window, on CUDA in
 * one kernel), device-timed. Bytes = the bf16 K/V read + the packed bytes written. */
static osc_status bench_kvpack_one(const bench_opts *o, osc_dev dev, const char *mode, int T, result *r) {
    const osc_dtype dt = dev == OSC_DEV_CUDA ? OSC_BF16 : OSC_F32;
    const size_t es = osc_dtype_size(dt);
    const int Hkv = o->hkv, D = o->hd;
    osc_kv_params p = {.mode = mode, .n_layers = 1, .n_kv_heads = Hkv, .head_dim = D, .n_ctx = T, .dev = dev, .act_dt = dt};
    const size_t rowb = (size_t)Hkv * D * es;
    double need = (double)osc_kv_bytes_for(&p) + 2.0 * T * rowb;
    OSC_TRY(check_mem(dev, need, "kv-cache pack"));
    osc_kv *kv = NULL;
    void *tmp = NULL;
    double *ts = malloc(sizeof(double) * (size_t)o->reps), *tq = malloc(sizeof(double) * (size_t)o->reps);
    osc_status s = ts && tq ? OSC_OK : OSC_ERR_OOM;
    if (s == OSC_OK) s = osc_dev_malloc(dev, 2 * (size_t)T * rowb, &tmp);
    if (s == OSC_OK) s = osc_kv_new(&p, &kv);
    int64_t ne[3] = {T, Hkv, D};
    osc_tensor k = osc_tensor_make(tmp, dt, dev, 3, ne), v = osc_tensor_make((char *)tmp + (size_t)T * rowb, dt, dev, 3, ne);
    if (s == OSC_OK) s = osc_op_fill_uniform(&k, o->seed * 131 + 7, -1, 1);
    if (s == OSC_OK) s = osc_op_fill_uniform(&v, o->seed * 131 + 8, -1, 1);
    const int warm = 3, nv = dev == OSC_DEV_CUDA ? 2 : 1; /* CUDA: each rep queued too */
    for (int it = 0; it < nv * (warm + o->reps) && s == OSC_OK; it++) {
        const int queued = nv == 2 && (it & 1), rep = it / nv - warm;
        osc_kv_truncate(kv, 0);
        double t0 = 0, el = 0;
        int redo = 0;
        s = region_start(dev, &t0, queued);
        if (s == OSC_OK) s = osc_kv_store(kv, 0, &k, &v);
        if (s == OSC_OK) s = region_stop(dev, t0, &el, queued, &redo);
        if (redo) {
            it--;
            continue;
        }
        if (rep >= 0) (queued ? tq : ts)[rep] = el;
    }
    if (s == OSC_OK) {
        double med = median(ts, o->reps);
        const int packed = (T - 1) / 256 * 256; /* the default window R = 256 stays unpacked */
        const double bytes = 2.0 * packed * rowb + (double)packed * (double)osc_kv_bytes_per_token_per_layer(&p);
        r->attn_us = med * 1e6;
        r->attn_us_min = ts[0] * 1e6;
        if (nv == 2) r->dev_us = median(tq, o->reps) * 1e6;
        r->kv_bytes_per_seq = bytes;
        r->achieved_gbps = bytes / med / 1e9;
        r->launches = 1;
    } else {
        report_err("kv-cache pack", s, dev, need);
    }
    osc_kv_free(kv);
    free(ts);
    free(tq);
    osc_dev_free(dev, tmp);
    return s;
}

/* ---------- end to end ---------- */

static void random_tokens(int32_t *t, int n, int vocab, uint64_t *st) {
    for (int i = 0; i < n; i++) t[i] = (int32_t)(rng_next(st) % (uint64_t)vocab);
}

static int32_t argmax_row(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Writes n random K/V rows into every layer of kv (for --fill random). */
static osc_status fill_random_kv(osc_kv *kv, const osc_llm_config *c, osc_dev dev, osc_dtype dt, int n,
                                 uint64_t *sd) {
    const int chunk = n < 1024 ? n : 1024;
    const size_t rowb = (size_t)c->n_kv_heads * c->head_dim * osc_dtype_size(dt);
    void *tmp = NULL;
    OSC_TRY(osc_dev_malloc(dev, 2 * (size_t)chunk * rowb, &tmp));
    osc_status s = OSC_OK;
    for (int done = 0; done < n && s == OSC_OK;) {
        int m = n - done < chunk ? n - done : chunk;
        int64_t ne[3] = {m, c->n_kv_heads, c->head_dim};
        osc_tensor k = osc_tensor_make(tmp, dt, dev, 3, ne);
        osc_tensor v = osc_tensor_make((char *)tmp + (size_t)chunk * rowb, dt, dev, 3, ne);
        for (int l = 0; l < c->n_layers && s == OSC_OK; l++) {
            s = osc_op_fill_uniform(&k, ++*sd, -1, 1);
            if (s == OSC_OK) s = osc_op_fill_uniform(&v, ++*sd, -1, 1);
            if (s == OSC_OK) s = osc_kv_store(kv, l, &k, &v);
        }
        if (s == OSC_OK) osc_kv_advance(kv, m);
        done += m;
    }
    osc_status s2 = osc_device_sync(dev);
    osc_dev_free(dev, tmp);
    return s ? s : s2;
}

typedef struct e2e_env {
    osc_llm *m;
    osc_llm_ctx *ctx;
    const osc_llm_config *c;
    osc_dev dev;
    osc_dtype act;
    const char *label;
    double weight_bytes, weight_read;
    float *logits;   /* [max_batch, vocab] */
    int32_t *tokens; /* max(max_ctx, max_prompt) */
    uint64_t rng;
} e2e_env;

/* Prefill throughput of one sequence of P tokens (fresh cache). One untimed prefill of the same
 * shape first: the first use of a mode's kernels pays one-time costs (CUDA lazy module
 * loading, cuBLASLt heuristics) that are not throughput. */
static osc_status bench_prefill(e2e_env *e, const char *mode, int P, double *tps) {
    osc_status s = OSC_OK;
    double t0 = 0, t1 = 0;
    for (int rep = 0; rep < 2 && s == OSC_OK; rep++) {
        osc_kv *kv = NULL;
        OSC_TRY(osc_llm_kv_new(e->m, mode, P, &kv));
        random_tokens(e->tokens, P, e->c->vocab_size, &e->rng);
        int st[2] = {0, P};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = e->tokens, .kv = &kv, .all_logits = 0};
        s = osc_device_sync(e->dev);
        t0 = now_s();
        if (s == OSC_OK) s = osc_llm_forward(e->m, e->ctx, &b, e->logits);
        if (s == OSC_OK) s = osc_device_sync(e->dev);
        t1 = now_s();
        osc_kv_free(kv);
    }
    if (s == OSC_OK) *tps = P / (t1 - t0);
    return s;
}

static osc_status bench_decode(e2e_env *e, const bench_opts *o, const char *mode, int B, int C, result *r) {
    const osc_llm_config *c = e->c;
    /* 3 warm-ups: a quantised cache filled to a multiple of its window flushes at the first step,
     * runs the second eagerly through the graph path and captures the third */
    const int warm = 3, cap = C + warm + o->gen;
    osc_kv_params kp = {.mode = mode, .n_layers = c->n_layers, .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim, .n_ctx = cap, .dev = e->dev, .act_dt = e->act};
    double per_seq = (double)osc_kv_bytes_for(&kp);
    OSC_TRY(check_mem(e->dev, B * per_seq, "the KV caches"));
    osc_kv **kvs = calloc((size_t)B, sizeof *kvs);
    int32_t *cur = calloc((size_t)B, sizeof *cur);
    int *st = calloc((size_t)B + 1, sizeof *st);
    double *ts = calloc((size_t)o->gen, sizeof *ts);
    osc_status s = kvs && cur && st && ts ? OSC_OK : osc_error(OSC_ERR_OOM, "out of host memory");
    for (int b = 0; b < B && s == OSC_OK; b++) s = osc_llm_kv_new(e->m, mode, cap, &kvs[b]);
    if (s != OSC_OK) {
        report_err("KV caches", s, e->dev, B * per_seq);
        goto done;
    }
    /* fill every cache to C tokens */
    double t0 = now_s();
    for (int b = 0; b < B && s == OSC_OK; b++) {
        if (!strcmp(o->fill, "random")) {
            s = fill_random_kv(kvs[b], c, e->dev, e->act, C, &e->rng);
            cur[b] = (int32_t)(rng_next(&e->rng) % (uint64_t)c->vocab_size);
        } else {
            random_tokens(e->tokens, C, c->vocab_size, &e->rng);
            int s2[2] = {0, C};
            osc_llm_batch bb = {.n_seq = 1, .seq_start = s2, .tokens = e->tokens, .kv = &kvs[b], .all_logits = 0};
            s = osc_llm_forward(e->m, e->ctx, &bb, e->logits);
            if (s == OSC_OK) cur[b] = argmax_row(e->logits, c->vocab_size);
        }
    }
    if (s == OSC_OK) s = osc_device_sync(e->dev);
    r->fill_s = now_s() - t0;
    if (s != OSC_OK) {
        report_err("filling the caches", s, e->dev, 0);
        goto done;
    }
    /* decode: warm-up steps, then gen timed steps of all B sequences x 1 token */
    for (int b = 0; b <= B; b++) st[b] = b;
    double total = 0;
    long rep0 = 0, rep1 = 0;
    for (int it = 0; it < warm + o->gen && s == OSC_OK; it++) {
        if (it == warm) osc_llm_ctx_graph_stats(e->ctx, NULL, &rep0, NULL);
        osc_llm_batch bb = {.n_seq = B, .seq_start = st, .tokens = cur, .kv = kvs, .all_logits = 0};
        s = osc_device_sync(e->dev);
        double a = now_s();
        /* greedy on the device: only B ids come back, as in osc_generate_batch */
        if (s == OSC_OK) s = osc_llm_forward_greedy(e->m, e->ctx, &bb, cur);
        if (s == OSC_OK) s = osc_device_sync(e->dev);
        double z = now_s();
        if (it >= warm) {
            ts[it - warm] = z - a;
            total += z - a;
        }
    }
    if (s != OSC_OK) {
        report_err("decode", s, e->dev, 0);
        goto done;
    }
    osc_llm_ctx_graph_stats(e->ctx, NULL, &rep1, NULL);
    r->graph_steps = rep1 - rep0;
    {
        double med = median(ts, o->gen);
        /* bytes of C cached tokens (what one step reads per sequence) */
        double kv_read = (double)osc_kv_bytes(kvs[0]) * (double)C / (double)osc_kv_capacity(kvs[0]);
        r->decode_tps = (double)B * o->gen / total;
        r->step_ms = med * 1e3;
        r->step_ms_min = ts[0] * 1e3;
        r->kv_bytes_per_seq = kv_read;
        r->weight_bytes = e->weight_bytes;
        r->bytes_per_step = e->weight_read + (double)B * kv_read;
        r->achieved_gbps = r->bytes_per_step / med / 1e9;
    }
done:
    if (kvs)
        for (int b = 0; b < B; b++) osc_kv_free(kvs[b]);
    free(kvs);
    free(cur);
    free(st);
    free(ts);
    return s;
}

/* ---------- options ---------- */

/* 0 ok, 2 usage error, 3 help */
static int parse_bench(int argc, char **argv, bench_opts *o) {
    memset(o, 0, sizeof *o);
    o->device = "auto";
    o->fill = "prefill";
    o->gen = 32;
    o->reps = 50;
    o->hq = 32;
    o->hkv = 8;
    o->hd = 128;
    o->prompt = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "oscar: %s needs a value\n", a); return 2; } i++; } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) return 3;
        else if (!strcmp(a, "--shape")) { NEEDV(); o->shape = v; }
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEEDV(); o->model_dir = v; }
        else if (!strcmp(a, "--device")) {
            NEEDV();
            if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
                fprintf(stderr, "oscar: --device must be cpu, cuda or auto\n");
                return 2;
            }
            o->device = v;
        }
        else if (!strcmp(a, "--ctx")) { NEEDV(); if (parse_list(a, v, 1, 1 << 22, o->ctx, &o->n_ctx)) return 2; }
        else if (!strcmp(a, "--batch")) { NEEDV(); if (parse_list(a, v, 1, 4096, o->batch, &o->n_batch)) return 2; }
        else if (!strcmp(a, "--prompt")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 22, &o->prompt)) return 2; }
        else if (!strcmp(a, "--gen")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 20, &o->gen)) return 2; }
        else if (!strcmp(a, "--reps")) { NEEDV(); if (osc_arg_int(a, v, 1, 1 << 20, &o->reps)) return 2; }
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) { NEEDV(); if (osc_arg_int(a, v, 0, 1024, &o->threads)) return 2; }
        else if (!strcmp(a, "--kv")) {
            NEEDV();
            static char buf[256];
            if (strlen(v) >= sizeof buf) { fprintf(stderr, "oscar: --kv: list too long\n"); return 2; }
            strcpy(buf, v);
            o->n_kv = 0;
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (o->n_kv == MAX_KV) { fprintf(stderr, "oscar: --kv takes at most %d modes\n", MAX_KV); return 2; }
                o->kv[o->n_kv++] = t;
            }
            if (!o->n_kv) { fprintf(stderr, "oscar: --kv needs a mode\n"); return 2; }
        }
        else if (!strcmp(a, "--fill")) {
            NEEDV();
            if (strcmp(v, "prefill") && strcmp(v, "random")) { fprintf(stderr, "oscar: --fill must be prefill or random\n"); return 2; }
            o->fill = v;
        }
        else if (!strcmp(a, "--attn")) o->attn = 1;
        else if (!strcmp(a, "--vision")) o->vision = 1;
        else if (!strcmp(a, "--heads")) {
            NEEDV();
            int h[MAX_LIST], n = 0;
            if (parse_list(a, v, 1, 1024, h, &n)) return 2;
            if (n != 3 || h[0] % h[1] || h[2] % 2 || h[2] > 512) {
                fprintf(stderr, "oscar: --heads expects HQ,HKV,D with HQ %% HKV == 0 and D even <= 512\n");
                return 2;
            }
            o->hq = h[0], o->hkv = h[1], o->hd = h[2];
        }
        else if (!strcmp(a, "--copy-bw")) {
            NEEDV();
            char *end;
            errno = 0;
            o->copy_bw = strtod(v, &end);
            if (errno || *end || end == v || !(o->copy_bw > 0 && o->copy_bw < 1e6)) {
                fprintf(stderr, "oscar: --copy-bw expects a positive number of GB/s, got '%s'\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--json")) { NEEDV(); o->json = v; }
        else if (!strcmp(a, "--seed")) {
            NEEDV();
            if (osc_arg_u64(a, v, &o->seed)) return 2;
        }
        else { fprintf(stderr, "oscar: unknown option '%s' (see oscar bench --help)\n", a); return 2; }
#undef NEEDV
    }
    if (o->shape && o->model_dir) {
        fprintf(stderr, "oscar: bench takes --shape or -m, not both\n");
        return 2;
    }
    if (!o->attn && !o->vision && !o->shape && !o->model_dir) {
        fprintf(stderr, "oscar: bench needs a model: --shape NAME (random weights) or -m MODEL_DIR "
                        "(see oscar bench --help)\n");
        return 2;
    }
    if (o->shape) {
        osc_llm_config c;
        if (osc_llm_preset(o->shape, &c) != OSC_OK) {
            fprintf(stderr, "oscar: bench: %s\n", osc_last_error());
            return 2;
        }
    }
    if (!o->n_kv) { /* the default mode and its baseline, for comparison */
        o->kv_default = 1;
        o->kv[o->n_kv++] = "bf16";
        o->kv[o->n_kv++] = "oscar2";
    }
    return 0;
}

/* ---------- driver ---------- */

static double g_copy_gbps; /* the copy bandwidth the tables compare with */

/* one table line of a kvattn / kvpack row: "kv MODE what" */
static void print_row(const result *q, const char *kind, const char *op) {
    printf("%-8s %-28s %6d %8d %12.1f %12.1f %10.1f %8.2f", kind, op, q->batch, q->ctx, q->attn_us, q->attn_us_min,
           q->achieved_gbps, q->achieved_gbps / g_copy_gbps);
    if (q->dev_us > 0) printf(" %10.1f %11.2f", q->dev_us, q->achieved_gbps * q->attn_us / q->dev_us / g_copy_gbps);
    printf("\n");
    fflush(stdout);
}
static void print_attn_row(const result *q, const char *kind, const char *what) {
    char op[48];
    snprintf(op, sizeof op, "kv %s %s", q->kv, what);
    print_row(q, kind, op);
}

static int run_attn(const bench_opts *o, osc_dev dev, results *rs) {
    static const int def_b[] = {1, 1, 1, 8, 16}, def_t[] = {4096, 32768, 131072, 32768, 8192};
    int pb[MAX_LIST * MAX_LIST], pt[MAX_LIST * MAX_LIST], n = 0;
    if (!o->n_ctx && !o->n_batch) {
        for (int i = 0; i < 5; i++) pb[n] = def_b[i], pt[n++] = def_t[i];
    } else {
        int nb = o->n_batch ? o->n_batch : 1, nc = o->n_ctx ? o->n_ctx : 1;
        for (int i = 0; i < nb; i++)
            for (int j = 0; j < nc; j++) pb[n] = o->n_batch ? o->batch[i] : 1, pt[n++] = o->n_ctx ? o->ctx[j] : 4096;
    }
    char label[64];
    snprintf(label, sizeof label, "attn %dq/%dkv d%d", o->hq, o->hkv, o->hd);
    int fails = 0;
    printf("decode attention, %s, %s on %s, S = 1; B > 1: one batched launch, as the decoder's\n", label,
           dev == OSC_DEV_CUDA ? "bf16" : "f32", dev == OSC_DEV_CUDA ? "cuda" : "cpu");
    printf("%-8s %-28s %6s %8s %12s %12s %10s %8s", "kind", "op", "batch", "ctx", "median_us", "min_us", "GB/s",
           "of_copy");
    if (dev == OSC_DEV_CUDA) printf(" %10s %11s", "dev_us", "dev_of_copy");
    printf("\n");
    if (dev == OSC_DEV_CUDA)
        printf("(dev_us: the same region queued behind a hold kernel, so the host's launch work is not in it)\n");
    for (int i = 0; i < n; i++) {
        result *r = add_result(rs);
        if (!r) return 1;
        r->kind = "attn";
        snprintf(r->shape, sizeof r->shape, "%s", label);
        snprintf(r->kv, sizeof r->kv, "%s", "bf16");
        r->batch = pb[i];
        r->ctx = pt[i];
        if (bench_attn_one(o, dev, pb[i], pt[i], r) != OSC_OK) {
            rs->n--;
            fails++;
            continue;
        }
        print_row(r, "attn", "osc_op_attention");
        for (int k = 0; k < o->n_kv; k++) {
            if (o->kv_default && strcmp(osc_kv_mode_for("auto", o->hd), o->kv[k]) && strcmp(o->kv[k], "bf16")) continue;
            result *q = add_result(rs);
            if (!q) return 1;
            q->kind = "kvattn";
            snprintf(q->shape, sizeof q->shape, "%s", label);
            snprintf(q->kv, sizeof q->kv, "%s", o->kv[k]);
            set_kv_cost(q, o->kv[k], o->hkv, o->hd, dev == OSC_DEV_CUDA ? OSC_BF16 : OSC_F32);
            q->batch = pb[i];
            q->ctx = pt[i];
            if (bench_kvattn_one(o, dev, o->kv[k], pb[i], pt[i], q) != OSC_OK) {
                rs->n--;
                fails++;
                continue;
            }
            print_attn_row(q, "kvattn", "store+attend");
            /* the same row for the attention alone (GB/s over the same cache bytes) */
            result a = *q;
            a.attn_us = q->attend_us;
            a.attn_us_min = q->attend_us_min;
            a.dev_us = q->attend_dev_us;
            a.achieved_gbps = q->achieved_gbps * q->attn_us / q->attend_us;
            print_attn_row(&a, "kvattn", "attend");
        }
    }
    /* the prefill pack of each quantised block mode at 32K tokens */
    for (int k = 0; k < o->n_kv; k++) {
        if (o->kv_default && strcmp(osc_kv_mode_for("auto", o->hd), o->kv[k])) continue;
        osc_kv_params kp = {.mode = o->kv[k], .n_layers = 1, .n_kv_heads = o->hkv, .head_dim = o->hd, .n_ctx = 64,
                            .dev = dev, .act_dt = dev == OSC_DEV_CUDA ? OSC_BF16 : OSC_F32};
        if (osc_kv_bits_per_element(&kp) >= 8) continue; /* bf16 / int8: nothing is packed in blocks */
        result *q = add_result(rs);
        if (!q) return 1;
        q->kind = "kvpack";
        snprintf(q->shape, sizeof q->shape, "%s", label);
        snprintf(q->kv, sizeof q->kv, "%s", o->kv[k]);
        set_kv_cost(q, o->kv[k], o->hkv, o->hd, kp.act_dt);
        q->batch = 1;
        q->ctx = 32768;
        if (bench_kvpack_one(o, dev, o->kv[k], q->ctx, q) != OSC_OK) {
            rs->n--;
            fails++;
            continue;
        }
        print_attn_row(q, "kvpack", "prefill pack");
    }
    return fails ? 1 : 0;
}

static int run_e2e(const bench_opts *o, osc_dev dev, results *rs) {
    osc_llm_config cfg;
    osc_llm *m = NULL;
    osc_status s;
    char label[64];
    if (o->shape) {
        if ((s = osc_llm_preset(o->shape, &cfg)) != OSC_OK) {
            fprintf(stderr, "oscar: bench: %s\n", osc_last_error());
            return 2;
        }
        /* the weights the model will allocate (es bytes each), for an OOM message */
        double D = cfg.hidden_size, F = cfg.intermediate_size, hd = cfg.head_dim;
        double qd = cfg.n_heads * hd, kd = cfg.n_kv_heads * hd;
        double np = (double)cfg.vocab_size * D * (cfg.tie_embeddings ? 1 : 2) +
                    cfg.n_layers * (2 * D * qd + 2 * D * kd + 3 * D * F + 2 * D + qd + 2 * kd + 2 * hd) + D;
        double need = np * (dev == OSC_DEV_CUDA ? 2 : 4);
        if (check_mem(dev, need, "the weights") != OSC_OK) return 1;
        double t0 = now_s();
        s = osc_llm_new_random(&cfg, dev, o->seed, &m);
        if (s != OSC_OK) {
            report_err("random weights", s, dev, need);
            return 1;
        }
        fprintf(stderr, "oscar: bench: %s: random weights in %.1f s\n", o->shape, now_s() - t0);
        snprintf(label, sizeof label, "%s", o->shape);
    } else {
        s = osc_llm_load(o->model_dir, dev, &m);
        if (s != OSC_OK) {
            report_err(o->model_dir, s, dev, 0);
            return 1;
        }
        cfg = *osc_llm_config_of(m);
        const char *slash = strrchr(o->model_dir, '/');
        snprintf(label, sizeof label, "%s", slash && slash[1] ? slash + 1 : o->model_dir);
    }
    e2e_env e;
    memset(&e, 0, sizeof e);
    e.m = m;
    e.c = osc_llm_config_of(m);
    e.dev = dev;
    e.act = osc_llm_act_dtype(m);
    e.label = label;
    e.rng = o->seed * 0x1000193ull + 7;
    e.weight_bytes = (double)osc_llm_weight_bytes(m);
    /* a decode step reads every weight except the (untied) embedding table, of which it reads
     * only B rows (neglected) */
    e.weight_read = e.weight_bytes -
                    (e.c->tie_embeddings ? 0 : (double)e.c->vocab_size * e.c->hidden_size * osc_dtype_size(e.act));
    int def_ctx = 4096;
    const int *ctxs = o->n_ctx ? o->ctx : &def_ctx;
    int nctx = o->n_ctx ? o->n_ctx : 1;
    int def_b = 1;
    const int *bs = o->n_batch ? o->batch : &def_b;
    int nb = o->n_batch ? o->n_batch : 1;
    int maxB = 1, maxTok = 1;
    for (int i = 0; i < nb; i++) maxB = bs[i] > maxB ? bs[i] : maxB;
    for (int j = 0; j < nctx; j++) {
        int P = o->prompt ? o->prompt : (ctxs[j] < 2048 ? ctxs[j] : 2048);
        maxTok = P > maxTok ? P : maxTok;
        maxTok = ctxs[j] > maxTok ? ctxs[j] : maxTok;
        if (ctxs[j] > e.c->max_pos)
            fprintf(stderr, "oscar: bench: warning: context %d is past the model's max_position_embeddings %d\n",
                    ctxs[j], e.c->max_pos);
    }
    int scratch = maxTok < 2048 ? maxTok : 2048;
    if (scratch < maxB) scratch = maxB;
    int rc = 0;
    e.logits = malloc(sizeof(float) * (size_t)maxB * (size_t)e.c->vocab_size);
    e.tokens = malloc(sizeof(int32_t) * (size_t)maxTok);
    if (!e.logits || !e.tokens) {
        fprintf(stderr, "oscar: bench: out of host memory\n");
        rc = 1;
        goto out;
    }
    if ((s = osc_llm_ctx_new(m, scratch, &e.ctx)) != OSC_OK) {
        report_err("forward scratch", s, dev, 0);
        rc = 1;
        goto out;
    }
    char wb[32];
    printf("end to end: %s (%s), %s, weights %s, fill by %s, %d decode steps after 3 warm-ups\n", label,
           osc_llm_describe(m), dev == OSC_DEV_CUDA ? "cuda bf16" : "cpu f32", fmt_bytes(e.weight_bytes, wb, sizeof wb),
           o->fill, o->gen);
    /* warm-up: library handles, first launches */
    {
        double dummy;
        int P = maxTok < 16 ? maxTok : 16;
        if ((s = bench_prefill(&e, o->kv[0], P, &dummy)) != OSC_OK) {
            report_err("warm-up", s, dev, 0);
            rc = 1;
            goto out;
        }
    }
    printf("%-6s %-8s %6s %8s %8s %12s %9s %12s %10s %10s %10s %8s\n", "kind", "kv", "batch", "ctx", "prompt",
           "prefill_t/s", "fill_s", "decode_t/s", "step_ms", "KV/seq", "GB/s", "of_copy");
    for (int k = 0; k < o->n_kv; k++) {
        if (o->kv_default && strcmp(osc_kv_mode_for("auto", e.c->head_dim), o->kv[k]) && strcmp(o->kv[k], "bf16")) {
            printf("(%s skipped: head_dim %d)\n", o->kv[k], e.c->head_dim);
            continue;
        }
        for (int j = 0; j < nctx; j++) {
            int C = ctxs[j];
            int P = o->prompt ? o->prompt : (C < 2048 ? C : 2048);
            double ptps = 0;
            if ((s = bench_prefill(&e, o->kv[k], P, &ptps)) != OSC_OK) {
                report_err("prefill", s, dev, 0);
                rc = 1;
                continue;
            }
            for (int i = 0; i < nb; i++) {
                result *r = add_result(rs);
                if (!r) { rc = 1; goto out; }
                r->kind = "e2e";
                snprintf(r->shape, sizeof r->shape, "%s", label);
                snprintf(r->kv, sizeof r->kv, "%s", o->kv[k]);
                set_kv_cost(r, o->kv[k], e.c->n_kv_heads, e.c->head_dim, e.act);
                r->batch = bs[i];
                r->ctx = C;
                r->prompt = P;
                r->gen = o->gen;
                r->prompt_tps = ptps;
                if (bench_decode(&e, o, o->kv[k], bs[i], C, r) != OSC_OK) {
                    rs->n--;
                    rc = 1;
                    continue;
                }
                char kvb[32];
                printf("%-6s %-8s %6d %8d %8d %12.1f %9.2f %12.1f %10.3f %10s %10.1f %8.2f\n", "e2e", r->kv, r->batch,
                       r->ctx, r->prompt, r->prompt_tps, r->fill_s, r->decode_tps, r->step_ms,
                       fmt_bytes(r->kv_bytes_per_seq, kvb, sizeof kvb), r->achieved_gbps,
                       r->achieved_gbps / g_copy_gbps);
                fflush(stdout);
            }
        }
    }
out:
    free(e.logits);
    free(e.tokens);
    osc_llm_ctx_free(e.ctx);
    osc_llm_free(m);
    return rc;
}

/* ---------- vision encoder + time to first token ---------- */

static int run_vision(const bench_opts *o, osc_dev dev, results *rs) {
    osc_vision_config vc;
    osc_vision_default_config(&vc);
    osc_vision *v = NULL;
    osc_llm *m = NULL;
    osc_llm_ctx *ctx = NULL;
    osc_llm_config cfg;
    float *pix = NULL, *logits = NULL;
    int32_t *tok = NULL;
    int rc = 0;
    const char *shape = o->shape ? o->shape : "qwen2.5-omni-7b";
    const char *mode = o->kv_default ? osc_kv_mode_for("auto", 128) : o->kv[0];
    osc_status s = osc_vision_new_random(&vc, dev, o->seed + 1, &v);
    if (s == OSC_OK) s = osc_llm_preset(shape, &cfg);
    if (s == OSC_OK) s = osc_llm_new_random(&cfg, dev, o->seed, &m);
    if (s == OSC_OK) s = osc_llm_ctx_new(m, 2048, &ctx);
    if (s != OSC_OK) {
        report_err("vision benchmark setup", s, dev, 0);
        rc = 1;
        goto out;
    }
    printf("vision encoder: Qwen2.5-Omni-7B shape (depth %d, hidden %d), random weights, %s; TTFT on %s, kv %s\n",
           vc.depth, vc.hidden, dev == OSC_DEV_CUDA ? "cuda bf16" : "cpu f32", shape, mode);
    printf("%-8s %8s %8s %12s %10s %10s\n", "kind", "image", "tokens", "encode_ms", "images/s", "ttft_ms");
    const int sizes[2] = {448, 1024};
    for (int si = 0; si < 2; si++) {
        const int S = sizes[si], g = (S + vc.patch * vc.merge - 1) / (vc.patch * vc.merge) * vc.merge; /* smart_resize */
        const int32_t grid[1][3] = {{1, g, g}};
        const int64_t np = (int64_t)g * g, ntok = osc_vision_tokens(&vc, grid[0]);
        const int T = (int)ntok + 32;
        free(pix);
        pix = malloc(sizeof(float) * (size_t)np * vc.patch_dim);
        free(tok);
        tok = malloc(sizeof(int32_t) * (size_t)T);
        free(logits);
        logits = malloc(sizeof(float) * (size_t)cfg.vocab_size);
        if (!pix || !tok || !logits) { rc = 1; goto out; }
        uint64_t st = o->seed * 31 + (uint64_t)S;
        for (int64_t i = 0; i < np * vc.patch_dim; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            pix[i] = (float)((st >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
        }
        for (int i = 0; i < T; i++) tok[i] = (int32_t)((i * 7919 + 13) % cfg.vocab_size);
        osc_tensor emb;
        enum { REPS = 5 };
        double ts[REPS], tt[REPS];
        for (int it = -1; it < REPS && s == OSC_OK; it++) {
            double t0 = now_s();
            s = osc_vision_encode(v, pix, np, grid, 1, &emb);
            if (s == OSC_OK) s = osc_device_sync(dev);
            double t1 = now_s();
            /* first token: prefill of the image rows (scattered into pad rows) + text, argmax */
            osc_kv *kv = NULL;
            if (s == OSC_OK) s = osc_llm_kv_new(m, mode, T + 8, &kv);
            if (s == OSC_OK) {
                int sst[2] = {0, T};
                int32_t *rows = malloc(sizeof(int32_t) * (size_t)ntok);
                if (!rows) s = OSC_ERR_OOM;
                for (int64_t i = 0; rows && i < ntok; i++) rows[i] = (int32_t)(4 + i);
                osc_llm_batch b = {.n_seq = 1, .seq_start = sst, .tokens = tok, .kv = &kv, .n_mm = (int)ntok,
                                   .mm_rows = rows, .mm_embeds = &emb};
                if (s == OSC_OK) s = osc_llm_forward(m, ctx, &b, logits);
                if (s == OSC_OK) (void)argmax_row(logits, cfg.vocab_size);
                free(rows);
            }
            osc_kv_free(kv);
            double t2 = now_s();
            if (it >= 0) {
                ts[it] = t1 - t0;
                tt[it] = t2 - t0;
            }
        }
        if (s != OSC_OK) {
            report_err("vision benchmark", s, dev, 0);
            rc = 1;
            break;
        }
        result *r = add_result(rs);
        if (!r) { rc = 1; break; }
        r->kind = "vision";
        snprintf(r->shape, sizeof r->shape, "%s", shape);
        snprintf(r->kv, sizeof r->kv, "%s", mode);
        r->batch = 1;
        r->ctx = T;
        r->image_px = S;
        r->vis_tokens = (int)ntok;
        r->encode_ms = median(ts, REPS) * 1e3;
        r->images_per_s = 1e3 / r->encode_ms;
        r->ttft_ms = median(tt, REPS) * 1e3;
        printf("%-8s %4dx%-4d %8d %12.2f %10.2f %10.2f\n", "vision", S, S, r->vis_tokens, r->encode_ms, r->images_per_s,
               r->ttft_ms);
        fflush(stdout);
    }
out:
    free(pix);
    free(tok);
    free(logits);
    osc_llm_ctx_free(ctx);
    osc_llm_free(m);
    osc_vision_free(v);
    return rc;
}

int osc_cli_bench(int argc, char **argv) {
    bench_opts o;
    int pr = parse_bench(argc, argv, &o);
    if (pr == 3) {
        usage_bench(stdout);
        return 0;
    }
    if (pr) return pr;
    if (o.threads) osc_cpu_set_threads(o.threads);
    osc_dev dev;
    if (!strcmp(o.device, "cuda")) {
        if (!osc_device_cuda_available()) {
            fprintf(stderr, "oscar: bench: --device cuda, but no usable CUDA GPU (or built without CUDA)\n");
            return 1;
        }
        dev = OSC_DEV_CUDA;
    } else if (!strcmp(o.device, "cpu")) {
        dev = OSC_DEV_CPU;
    } else {
        dev = osc_device_cuda_available() ? OSC_DEV_CUDA : OSC_DEV_CPU;
    }
    const char *devname = dev == OSC_DEV_CUDA ? "cuda" : "cpu";
    double copy = o.copy_bw;
    const char *copy_method = "given by --copy-bw";
    if (copy <= 0) {
        osc_status s = measure_copy(dev, &copy);
        if (s != OSC_OK) {
            report_err("copy bandwidth", s, dev, dev == OSC_DEV_CUDA ? 2.0 * (1 << 30) : 2.0 * (64 << 20));
            return 1;
        }
        copy_method = dev == OSC_DEV_CUDA ? "1 GiB device-to-device osc_copy_bytes, read+write, median of 10"
                                          : "64 MiB host memcpy, read+write, median of 10";
    }
    printf("copy bandwidth (%s): %.1f GB/s\n", copy_method, copy);
    g_copy_gbps = copy;
    results rs = {0};
    int rc = o.attn ? run_attn(&o, dev, &rs) : o.vision ? run_vision(&o, dev, &rs) : run_e2e(&o, dev, &rs);
    if (o.json && write_json(o.json, &rs, devname, copy, copy_method)) rc = 1;
    free(rs.r);
    return rc;
}
