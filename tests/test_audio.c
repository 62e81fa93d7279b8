/* Audio input and log-mel features against independent references made by
 * tools/golden/make_mel_goldens.py (soundfile + python-soxr as librosa.load does them, and
 * transformers' WhisperFeatureExtractor with the Qwen2.5-Omni settings), plus bad inputs. */
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "encoders/audio_io.h"
#include "encoders/mel.h"
#include "tests/check.h"
#ifdef OSC_HAVE_FFMPEG
#include <libavutil/log.h>
#endif

static char g_data[1024], g_tmp[1024], g_samples[1024];
static osc_st *g_gold;

/* Measured on the goldens (docs/AUDIO.md): features from identical 16 kHz input agree to ~1e-6;
 * the limit is the one the brief sets. */
#define FEAT_TOL 1e-4

static const char *dpath(const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_data, name);
    return buf[k];
}

static const char *tpath(const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

/* A golden tensor as malloc'd float32 (NULL + failure when missing). */
static float *gold(const char *name, int64_t *n) {
    const osc_st_tensor *t = osc_st_get(g_gold, name);
    CHECK(t != NULL, "golden %s missing", name);
    if (!t) return NULL;
    int64_t cnt = 1;
    for (int i = 0; i < t->nd; i++) cnt *= t->shape[i];
    float *p = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
    if (osc_st_read_f32(t, p, cnt) != OSC_OK) {
        CHECK(0, "golden %s unreadable: %s", name, osc_last_error());
        free(p);
        return NULL;
    }
    if (n) *n = cnt;
    return p;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}

/* Same LCG as the golden script. */
static float *lcg(int64_t n, uint64_t seed, int amp_shift) {
    float *x = malloc(sizeof(float) * (size_t)n);
    uint64_t s = seed;
    const double scale = ldexp(1.0, -(23 + amp_shift));
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t v = (int64_t)(s >> 40) - (1 << 23);
        double y = (double)v * scale;
        if ((i / 4000) % 2 == 1) y /= 64.0;
        x[i] = (float)y;
    }
    return x;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static size_t read_file(const char *path, unsigned char **out) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = malloc((size_t)n + 1);
    size_t got = fread(*out, 1, (size_t)n, f);
    fclose(f);
    return got;
}

static void put_le(unsigned char *p, uint32_t v, int nb) {
    for (int i = 0; i < nb; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A canonical 44-byte PCM WAV header. */
static void wav_header(unsigned char h[44], int rate, int ch, int bits, uint32_t data_bytes) {
    memcpy(h, "RIFF", 4);
    put_le(h + 4, 36 + data_bytes, 4);
    memcpy(h + 8, "WAVEfmt ", 8);
    put_le(h + 16, 16, 4);
    put_le(h + 20, 1, 2);
    put_le(h + 22, (uint32_t)ch, 2);
    put_le(h + 24, (uint32_t)rate, 4);
    put_le(h + 28, (uint32_t)(rate * ch * bits / 8), 4);
    put_le(h + 32, (uint32_t)(ch * bits / 8), 2);
    put_le(h + 34, (uint32_t)bits, 2);
    memcpy(h + 36, "data", 4);
    put_le(h + 40, data_bytes, 4);
}

/* ------------------------------------------------------------------ mel */
static void test_filters(void) {
    float *f = NULL;
    CHECK(osc_mel_filters(128, &f) == OSC_OK, "%s", osc_last_error());
    int64_t n = 0;
    float *g = gold("mel_filters", &n);
    if (f && g) {
        CHECK(n == 201 * 128, "filter count %lld", (long long)n);
        double m = max_abs_diff(f, g, n), r = rel_l2(f, g, n);
        CHECK(m <= 1e-7 && r <= 1e-6, "mel filters differ: max %.3g rel %.3g", m, r);
        printf("mel filters: max abs diff %.3g, rel L2 %.3g\n", m, r);
    }
    free(f);
    free(g);
    CHECK(osc_mel_filters(0, &f) == OSC_ERR_INVALID_ARG && f == NULL, "n_mels 0 accepted");
}

/* Features of pcm vs golden `key`.feat; returns the max abs diff. */
static double check_feat(const char *key, const float *pcm, int64_t n, double tol) {
    char name[128];
    float *feat = NULL;
    int L = -1;
    osc_status s = osc_mel_features(pcm, n, &feat, &L);
    CHECK(s == OSC_OK, "%s: %s", key, osc_last_error());
    snprintf(name, sizeof name, "%s.n_frames", key);
    float *gl = gold(name, NULL);
    snprintf(name, sizeof name, "%s.feat", key);
    int64_t gn = 0;
    float *gf = gold(name, &gn);
    double m = INFINITY;
    if (s == OSC_OK && gl && gf) {
        CHECK(L == (int)gl[0], "%s: %d frames, reference %d", key, L, (int)gl[0]);
        CHECK(L == osc_mel_n_frames(n, OSC_MEL_MAX_SAMPLES), "%s: n_frames rule", key);
        if (gn == (int64_t)128 * L) {
            m = max_abs_diff(feat, gf, gn);
            CHECK(m <= tol, "%s: features differ by %.3g (tol %.3g)", key, m, tol);
            printf("features %-14s n=%-7lld L=%-5d max abs diff %.3g\n", key, (long long)n, L, m);
        } else {
            CHECK(0, "%s: golden has %lld values, we have 128x%d", key, (long long)gn, L);
        }
    }
    free(feat);
    free(gl);
    free(gf);
    return m;
}

static void test_features_golden_pcm(void) {
    const char *keys[] = {"stereo16k", "stereo44k", "mono8k_u8"};
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s.pcm", keys[i]);
        int64_t n = 0;
        float *pcm = gold(name, &n);
        if (pcm) check_feat(keys[i], pcm, n, FEAT_TOL);
        free(pcm);
    }
    struct { const char *key; int64_t n; uint64_t seed; int shift; } lc[] = {
        {"lcg_short", 100, 11, 1}, {"lcg_hop", 1120, 12, 1}, {"lcg_quiet", 3000, 13, 21}};
    for (int i = 0; i < 3; i++) {
        float *x = lcg(lc[i].n, lc[i].seed, lc[i].shift);
        check_feat(lc[i].key, x, lc[i].n, FEAT_TOL);
        free(x);
    }
}

/* Longer than 300 s: truncated to 4.8M samples, right-edge reflection, 30000 frames. */
static void test_features_long(void) {
    const int64_t n = 4800000 + 12345;
    float *x = lcg(n, 14, 1);
    float *feat = NULL;
    int L = 0;
    CHECK(osc_mel_features(x, n, &feat, &L) == OSC_OK, "%s", osc_last_error());
    CHECK(L == 30000, "long: %d frames", L);
    float *head = gold("lcg_long.feat_head", NULL), *tail = gold("lcg_long.feat_tail", NULL);
    if (feat && L == 30000 && head && tail) {
        double m = 0;
        for (int r = 0; r < 128; r++)
            for (int c = 0; c < 4; c++) {
                double d = fabs((double)feat[(size_t)r * L + c] - head[r * 4 + c]);
                if (!(d <= m)) m = d;
            }
        for (int r = 0; r < 128; r++)
            for (int c = 0; c < 10; c++) {
                double d = fabs((double)feat[(size_t)r * L + (L - 10 + c)] - tail[r * 10 + c]);
                if (!(d <= m)) m = d;
            }
        CHECK(m <= FEAT_TOL, "long: head/tail frames differ by %.3g", m);
        printf("features lcg_long      n=%lld L=%d head+tail max abs diff %.3g\n", (long long)n, L, m);
    }
    free(head);
    free(tail);
    free(feat);
    free(x);
}

typedef struct { const float *x; int64_t n; float *feat; int L; osc_status s; } mel_job;

static void *mel_thread(void *arg) {
    mel_job *j = arg;
    j->s = osc_mel_features(j->x, j->n, &j->feat, &j->L);
    return NULL;
}

static void test_threads(void) {
    const int64_t n = 16000 * 3 + 77;
    float *x = lcg(n, 99, 1);
    float *ref = NULL;
    int L = 0;
    CHECK(osc_mel_features(x, n, &ref, &L) == OSC_OK, "%s", osc_last_error());
    mel_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (mel_job){x, n, NULL, 0, OSC_OK};
        pthread_create(&th[i], NULL, mel_thread, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].s == OSC_OK && jobs[i].L == L && ref &&
                  memcmp(jobs[i].feat, ref, sizeof(float) * 128 * (size_t)L) == 0,
              "thread %d differs", i);
        free(jobs[i].feat);
    }
    free(ref);
    free(x);
}

static void test_tokens(void) {
    int64_t n = 0;
    float *Ls = gold("tokens.L", &n), *toks = gold("tokens.n", NULL);
    if (Ls && toks) {
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            if (osc_audio_n_tokens((int)Ls[i]) != (int)toks[i]) {
                if (bad++ < 5) CHECK(0, "tokens(%d) = %d, reference %d", (int)Ls[i], osc_audio_n_tokens((int)Ls[i]), (int)toks[i]);
            }
        CHECK(bad == 0, "%d token counts differ", bad);
    }
    free(Ls);
    free(toks);
    /* docs/qwen2_5_omni.md 4.2: 10 s, 30 s, 300 s. */
    CHECK(osc_audio_n_tokens(1000) == 250 && osc_audio_n_tokens(3000) == 750 && osc_audio_n_tokens(30000) == 7500,
          "token examples");
    CHECK(osc_mel_n_frames(160000, OSC_MEL_MAX_SAMPLES) == 1000 && osc_mel_n_frames(160001, OSC_MEL_MAX_SAMPLES) == 1001 &&
              osc_mel_n_frames(9000000, OSC_MEL_MAX_SAMPLES) == 30000 && osc_mel_n_frames(0, OSC_MEL_MAX_SAMPLES) == 0,
          "n_frames rule");
}

static void test_mel_bad(void) {
    float x[500];
    for (int i = 0; i < 500; i++) x[i] = 0.01f * (float)(i % 7);
    float *feat = (float *)1;
    int L = 5;
    CHECK(osc_mel_features(x, 0, &feat, &L) == OSC_ERR_INVALID_ARG && feat == NULL && L == 0, "n=0 accepted");
    CHECK(osc_mel_features(NULL, 10, &feat, &L) == OSC_ERR_INVALID_ARG, "NULL pcm accepted");
    x[123] = NAN;
    CHECK(osc_mel_features(x, 500, &feat, &L) == OSC_ERR_INVALID_ARG && feat == NULL, "NaN accepted");
    CHECK(strstr(osc_last_error(), "123") != NULL, "NaN message: %s", osc_last_error());
    x[123] = INFINITY;
    CHECK(osc_mel_features(x, 500, &feat, &L) == OSC_ERR_INVALID_ARG, "Inf accepted");
    osc_mel_params p = osc_mel_default_params();
    p.max_samples = 100;
    x[123] = 0;
    CHECK(osc_mel_features_ex(&p, x, 500, &feat, &L) == OSC_ERR_INVALID_ARG, "tiny max_samples accepted");
    /* All zeros is valid input (silence): every value is the floor, (-10 + 4) / 4. */
    float z[320] = {0};
    CHECK(osc_mel_features(z, 320, &feat, &L) == OSC_OK && L == 2, "silence");
    if (feat) {
        int ok = 1;
        for (int i = 0; i < 128 * 2; i++) ok &= fabsf(feat[i] - (-1.5f)) < 1e-6f;
        CHECK(ok, "silence features not -1.5");
        free(feat);
    }
}

/* ------------------------------------------------------------------ audio I/O */
/* The int16 samples of a PCM WAV, found by walking its chunks (an independent decoder). */
static float *wav_int16(const char *path, int64_t *n) {
    unsigned char *b = NULL;
    size_t len = read_file(path, &b);
    size_t off = 12;
    float *out = NULL;
    *n = 0;
    while (off + 8 <= len) {
        uint32_t sz = b[off + 4] | b[off + 5] << 8 | b[off + 6] << 16 | (uint32_t)b[off + 7] << 24;
        if (!memcmp(b + off, "data", 4)) {
            int64_t cnt = (int64_t)(sz / 2);
            out = malloc(sizeof(float) * (size_t)cnt);
            for (int64_t i = 0; i < cnt; i++) {
                int16_t v = (int16_t)(b[off + 8 + 2 * i] | b[off + 9 + 2 * i] << 8);
                out[i] = (float)v / 32768.0f;
            }
            *n = cnt;
            break;
        }
        off += 8 + sz + (sz & 1);
    }
    free(b);
    return out;
}

static void test_exact_16k(void) {
    float *pcm = NULL;
    int64_t n = 0;
    osc_status s = osc_audio_load(dpath("tone16k_mono.wav"), 16000, 0, &pcm, &n);
    CHECK(s == OSC_OK, "%s", osc_last_error());
    int64_t rn = 0;
    float *raw = wav_int16(dpath("tone16k_mono.wav"), &rn);
    CHECK(n == 20837 && rn == n, "tone16k: %lld samples, raw %lld", (long long)n, (long long)rn);
    if (pcm && raw && rn == n) CHECK(memcmp(pcm, raw, sizeof(float) * (size_t)n) == 0, "tone16k samples not exact");
    if (pcm) check_feat("tone16k_mono", pcm, n, FEAT_TOL);
    free(pcm);
    free(raw);
    /* Stereo at 16 kHz: the downmix must be bit-exact with numpy's float32 mean. */
    int64_t gn = 0;
    float *g = gold("stereo16k.pcm", &gn);
    s = osc_audio_load(dpath("stereo16k.wav"), 16000, 0, &pcm, &n);
    CHECK(s == OSC_OK, "%s", osc_last_error());
    if (s == OSC_OK && g) {
        CHECK(n == gn, "stereo16k: %lld vs %lld samples", (long long)n, (long long)gn);
        if (n == gn) CHECK(memcmp(pcm, g, sizeof(float) * (size_t)n) == 0, "stereo16k downmix not exact (max %.3g)",
                           max_abs_diff(pcm, g, n));
    }
    free(pcm);
    free(g);
}

/* Files that are resampled (or decoded by a lossy codec): our pcm vs librosa-like reference. */
typedef struct { const char *file, *key; int rate, ch; double max_tol, rel_tol; } rs_case;

static void test_resampled(void) {
    /* Tolerances: libswresample drives libsoxr at the same HQ (20-bit) setting as python-soxr
     * does for librosa; measured on these files (and on 7-30 s ones): bit-identical. 1e-5 leaves
     * room for other builds of libsoxr and of the lossy decoders (vorbis here differs by 1.5e-7)
     * and still fails clearly on a resampler that is not soxr (libswresample's own filter is
     * 0.5-2% off in rel. L2, docs/AUDIO.md). */
    const rs_case cases[] = {
        {"stereo44k.wav", "stereo44k", 44100, 2, 1e-5, 1e-5},
        {"mono22k_pcm24.wav", "mono22k_pcm24", 22050, 1, 1e-5, 1e-5},
        {"mono8k_u8.wav", "mono8k_u8", 8000, 1, 1e-5, 1e-5},
        {"six48k.flac", "six48k", 48000, 6, 1e-5, 1e-5},
        {"mono32k.ogg", "mono32k", 32000, 1, 1e-5, 1e-5},
        {"mono44k.mp3", "mono44k", 44100, 1, 1e-5, 1e-5},
        {"stereo48k.m4a", "stereo48k", 48000, 2, 1e-5, 1e-5},
        {"video_with_audio.mp4", "video_with_audio", 48000, 2, 1e-5, 1e-5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rs_case *c = &cases[i];
        osc_audio_info info;
        osc_status s = osc_audio_probe(dpath(c->file), &info);
        CHECK(s == OSC_OK, "probe %s: %s", c->file, osc_last_error());
        if (s == OSC_OK)
            CHECK(info.sample_rate == c->rate && info.channels == c->ch, "probe %s: %d Hz %d ch (%s)", c->file,
                  info.sample_rate, info.channels, info.codec);
        float *pcm = NULL;
        int64_t n = 0, gn = 0;
        s = osc_audio_load(dpath(c->file), 16000, 0, &pcm, &n);
        CHECK(s == OSC_OK, "load %s: %s", c->file, osc_last_error());
        char name[96];
        snprintf(name, sizeof name, "%s.pcm", c->key);
        float *g = gold(name, &gn);
        if (s == OSC_OK && g) {
            CHECK(n == gn, "%s: %lld samples, reference %lld", c->file, (long long)n, (long long)gn);
            int64_t m = n < gn ? n : gn;
            double mx = max_abs_diff(pcm, g, m), rl = rel_l2(pcm, g, m);
            CHECK(mx <= c->max_tol && rl <= c->rel_tol, "%s: pcm max abs %.3g rel L2 %.3g", c->file, mx, rl);
            printf("pcm %-22s %6d Hz %d ch (%-16s) -> %lld samples: max abs diff %.3g, rel L2 %.3g\n", c->file,
                   c->rate, c->ch, info.codec, (long long)n, mx, rl);
            /* Features of our own pcm vs the reference features, where the goldens have them. */
            snprintf(name, sizeof name, "%s.feat", c->key);
            if (osc_st_get(g_gold, name) && n == gn) {
                float *f = NULL;
                int L = 0;
                if (osc_mel_features(pcm, n, &f, &L) == OSC_OK) {
                    float *gf = gold(name, NULL);
                    double d = gf ? max_abs_diff(f, gf, (int64_t)128 * L) : INFINITY;
                    printf("    features from our pcm vs reference: max abs diff %.3g\n", d);
                    CHECK(d <= 0.05, "%s: features of our resampled pcm differ by %.3g", c->file, d);
                    free(gf);
                }
                free(f);
            }
        }
        free(pcm);
        free(g);
    }
}

/* Multichannel WAVs written here: the mean downmix at 16 kHz for 3 and 8 channels. */
static void test_downmix(void) {
    const int chs[] = {1, 3, 8};
    for (int k = 0; k < 3; k++) {
        const int ch = chs[k], frames = 1000;
        size_t db = (size_t)frames * ch * 2;
        unsigned char *b = malloc(44 + db);
        wav_header(b, 16000, ch, 16, (uint32_t)db);
        float *want = malloc(sizeof(float) * frames);
        uint64_t s = 1234 + (uint64_t)ch;
        for (int i = 0; i < frames; i++) {
            float acc = 0;
            for (int c = 0; c < ch; c++) {
                int16_t v = (int16_t)(check_frand(&s) * 30000);
                put_le(b + 44 + ((size_t)i * ch + c) * 2, (uint16_t)v, 2);
                acc += (float)v / 32768.0f;
            }
            want[i] = acc / (float)ch;
        }
        char name[64];
        snprintf(name, sizeof name, "mix%d.wav", ch);
        write_bytes(tpath(name), b, 44 + db);
        float *pcm = NULL;
        int64_t n = 0;
        osc_status st = osc_audio_load(tpath(name), 16000, 0, &pcm, &n);
        CHECK(st == OSC_OK && n == frames, "%d ch: %s", ch, osc_last_error());
        if (pcm && n == frames) CHECK(max_abs_diff(pcm, want, n) <= 1e-7, "%d ch downmix differs by %.3g", ch, max_abs_diff(pcm, want, n));
        free(pcm);
        free(want);
        free(b);
    }
}

/* Bad inputs: each must fail with a status and a message, and leave *pcm NULL. */
static void expect_fail(const char *path, double max_s, const char *phrase, const char *what) {
    float *pcm = (float *)1;
    int64_t n = 7;
    osc_status s = osc_audio_load(path, 16000, max_s, &pcm, &n);
    const char *m = osc_last_error();
    CHECK(s != OSC_OK, "%s: loaded", what);
    CHECK(pcm == NULL && n == 0, "%s: outputs not cleared", what);
    if (phrase) CHECK(strstr(m, phrase) != NULL, "%s: message lacks '%s': %s", what, phrase, m);
    printf("bad input %-28s -> %d: %s\n", what, (int)s, m);
    if (s == OSC_OK && pcm != (float *)1) free(pcm);
}

static void test_bad_inputs(void) {
    expect_fail(tpath("does_not_exist.wav"), 0, "cannot open", "missing file");
    write_bytes(tpath("empty.wav"), "", 0);
    expect_fail(tpath("empty.wav"), 0, "empty", "empty file");
    expect_fail("/dev/zero", 0, "regular", "a device");
    expect_fail(g_tmp, 0, "regular", "a directory");
    /* Random bytes. */
    unsigned char junk[3000];
    uint64_t s = 77;
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(check_frand(&s) * 127 + 128);
    write_bytes(tpath("junk.wav"), junk, sizeof junk);
    expect_fail(tpath("junk.wav"), 0, NULL, "random bytes");
    /* A text file and a PNG signature: not audio. */
    const char *txt = "hello, this is not audio at all\n";
    write_bytes(tpath("text.mp3"), txt, strlen(txt));
    expect_fail(tpath("text.mp3"), 0, NULL, "text file");
    const unsigned char png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    write_bytes(tpath("image.png"), png, sizeof png);
    expect_fail(tpath("image.png"), 0, NULL, "png header");
    /* Truncated header: the first 20 bytes of a real WAV. */
    unsigned char *b = NULL;
    size_t len = read_file(dpath("tone16k_mono.wav"), &b);
    write_bytes(tpath("trunc_header.wav"), b, 20);
    expect_fail(tpath("trunc_header.wav"), 0, NULL, "truncated header");
    /* Truncated data: a WAV cut in the middle loads what is there (as soundfile does). */
    write_bytes(tpath("trunc_data.wav"), b, 44 + 2 * 1000 + 1);
    float *pcm = NULL;
    int64_t n = 0;
    osc_status st = osc_audio_load(tpath("trunc_data.wav"), 16000, 0, &pcm, &n);
    CHECK(st == OSC_OK && n == 1000, "truncated data: %d n=%lld %s", (int)st, (long long)n, osc_last_error());
    free(pcm);
    free(b);
    (void)len;
    /* Zero-length audio: a valid header with no frames. */
    unsigned char h[44];
    wav_header(h, 16000, 1, 16, 0);
    write_bytes(tpath("zero.wav"), h, 44);
    expect_fail(tpath("zero.wav"), 0, "no samples", "zero-length audio");
    /* Odd headers: 0 channels, 200 channels, 100 Hz. */
    wav_header(h, 16000, 0, 16, 0);
    write_bytes(tpath("ch0.wav"), h, 44);
    expect_fail(tpath("ch0.wav"), 0, NULL, "0 channels");
    {
        unsigned char w[44 + 400 * 4] = {0};
        wav_header(w, 16000, 200, 16, 400 * 4);
        write_bytes(tpath("ch200.wav"), w, sizeof w);
        expect_fail(tpath("ch200.wav"), 0, "channels", "200 channels");
        wav_header(w, 100, 1, 16, 400 * 4);
        write_bytes(tpath("rate100.wav"), w, sizeof w);
        expect_fail(tpath("rate100.wav"), 0, "sample rate", "100 Hz");
    }
    /* Longer than max_seconds: a real file with a small limit, and a sparse 2 GB WAV whose header
     * says 18 hours (refused from the header: nothing is decoded or allocated). */
    expect_fail(dpath("tone16k_mono.wav"), 1.0, "limit", "over max_seconds (wav)");
    expect_fail(dpath("stereo48k.m4a"), 0.1, "limit", "over max_seconds (m4a)");
    expect_fail(dpath("video_with_audio.mp4"), 0.1, "limit", "over max_seconds (mp4)");
    {
        const uint32_t db = 2000000000u;
        wav_header(h, 16000, 1, 16, db);
        int fd = open(tpath("huge.wav"), O_CREAT | O_TRUNC | O_WRONLY, 0644);
        CHECK(fd >= 0 && write(fd, h, 44) == 44 && ftruncate(fd, 44 + (off_t)db) == 0, "sparse file");
        if (fd >= 0) close(fd);
        expect_fail(tpath("huge.wav"), 0, "limit", "sparse 2 GB wav");
        unlink(tpath("huge.wav"));
    }
    /* A video without an audio track. */
    expect_fail(dpath("video_no_audio.mp4"), 0, "no audio", "video without audio");
    osc_audio_info info;
    CHECK(osc_audio_probe(dpath("video_no_audio.mp4"), &info) == OSC_ERR_FORMAT, "probe: video without audio");
    /* An m4a with its middle overwritten: no crash; either an error or some audio. */
    len = read_file(dpath("stereo48k.m4a"), &b);
    for (size_t i = len / 3; i < len / 3 + 200 && i < len; i++) b[i] = (unsigned char)(i * 37);
    write_bytes(tpath("corrupt.m4a"), b, len);
    st = osc_audio_load(tpath("corrupt.m4a"), 16000, 0, &pcm, &n);
    printf("corrupt m4a -> %d (%s), %lld samples\n", (int)st, st ? osc_last_error() : "ok", (long long)n);
    CHECK(st != OSC_OK || (pcm && n > 0), "corrupt m4a: ok without samples");
    free(pcm);
    /* Truncated m4a: half of it. */
    write_bytes(tpath("half.m4a"), b, len / 2);
    st = osc_audio_load(tpath("half.m4a"), 16000, 0, &pcm, &n);
    printf("half m4a -> %d (%s), %lld samples\n", (int)st, st ? osc_last_error() : "ok", (long long)n);
    CHECK(st != OSC_OK || (pcm && n > 0), "half m4a: ok without samples");
    free(pcm);
    free(b);
    /* Bad arguments. */
    CHECK(osc_audio_load(NULL, 16000, 0, &pcm, &n) == OSC_ERR_INVALID_ARG, "NULL path");
    CHECK(osc_audio_load(dpath("tone16k_mono.wav"), 0, 0, &pcm, &n) == OSC_ERR_INVALID_ARG, "rate 0");
    CHECK(osc_audio_load(dpath("tone16k_mono.wav"), 16000, NAN, &pcm, &n) == OSC_ERR_INVALID_ARG, "NaN limit");
}

/* samples/speech.wav (espeak-ng): 6.57 s of speech -> 658 frames -> 164 audio tokens. The same
 * comparison with transformers, run once by hand, gave a max abs diff of 4.8e-5 (docs/AUDIO.md). */
static void test_speech_sample(void) {
    char p[1200];
    snprintf(p, sizeof p, "%s/speech.wav", g_samples);
    osc_audio_info info;
    osc_status s = osc_audio_probe(p, &info);
    CHECK(s == OSC_OK && info.sample_rate == 16000 && info.channels == 1, "speech probe: %s", osc_last_error());
    float *pcm = NULL, *feat = NULL;
    int64_t n = 0;
    int L = 0;
    CHECK(osc_audio_load(p, 16000, 0, &pcm, &n) == OSC_OK, "%s", osc_last_error());
    CHECK(n == 105136, "speech: %lld samples", (long long)n);
    if (pcm && osc_mel_features(pcm, n, &feat, &L) == OSC_OK) {
        CHECK(L == 658 && osc_audio_n_tokens(L) == 164, "speech: %d frames, %d tokens", L, osc_audio_n_tokens(L));
        float lo = INFINITY, hi = -INFINITY;
        for (int64_t i = 0; i < (int64_t)128 * L; i++) {
            if (feat[i] < lo) lo = feat[i];
            if (feat[i] > hi) hi = feat[i];
        }
        /* (log10 + 4) / 4 with the max-8 floor: a range of exactly 2 when the floor is reached. */
        CHECK(fabsf((hi - lo) - 2.0f) < 1e-5f && hi > 0.5f && hi < 3.f, "speech features span [%g, %g]", lo, hi);
    }
    free(feat);
    free(pcm);
}

/* Other target rates work too (e.g. 24 kHz), with the librosa length rule. */
static void test_other_rate(void) {
    float *pcm = NULL;
    int64_t n = 0;
    CHECK(osc_audio_load(dpath("tone16k_mono.wav"), 24000, 0, &pcm, &n) == OSC_OK, "%s", osc_last_error());
    CHECK(n == (int64_t)ceil(20837 * 1.5), "16k -> 24k: %lld samples", (long long)n);
    free(pcm);
}

int main(void) {
    const char *d = getenv("OSC_TEST_DATA");
    if (d) snprintf(g_data, sizeof g_data, "%s/audio", d);
    else { /* tests/data/audio next to this source file */
        snprintf(g_data, sizeof g_data, "%s", __FILE__);
        char *slash = strrchr(g_data, '/');
        if (slash) strcpy(slash, "/data/audio");
        else snprintf(g_data, sizeof g_data, "tests/data/audio");
    }
    snprintf(g_samples, sizeof g_samples, "%s", __FILE__); /* samples/ beside tests/ */
    {
        char *slash = strrchr(g_samples, '/');
        if (slash) {
            *slash = 0;
            slash = strrchr(g_samples, '/');
        }
        if (slash) strcpy(slash, "/samples");
        else snprintf(g_samples, sizeof g_samples, "samples");
    }
    const char *t = getenv("OSC_TEST_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s", t ? t : "/tmp");
    char gp[1200];
    snprintf(gp, sizeof gp, "%s/mel_goldens.safetensors", g_data);
    if (osc_st_open(gp, &g_gold) != OSC_OK) {
        fprintf(stderr, "cannot open goldens: %s\n", osc_last_error());
        return 1;
    }
    test_filters();
    test_features_golden_pcm();
    test_features_long();
    test_threads();
    test_tokens();
    test_mel_bad();
#ifdef OSC_HAVE_FFMPEG
    av_log_set_level(AV_LOG_QUIET); /* the bad inputs below make FFmpeg complain on stderr */
#endif
    int be = osc_audio_backends();
    if ((be & 3) == 3) {
        test_exact_16k();
        test_resampled();
        test_downmix();
        test_bad_inputs();
        test_other_rate();
        test_speech_sample();
    } else {
        printf("audio I/O tests skipped: this build lacks libsndfile or FFmpeg (backends %d)\n", be);
    }
    osc_st_close(g_gold);
    return check_done("test_audio");
}
