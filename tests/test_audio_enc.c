/* tests/test_audio_enc.c: the Qwen2.5-Omni audio encoder and `oscar listen` on the CPU against
 * transformers (tests/models/omni-tiny/audio_golden.*, made by tools/golden/make_audio_goldens.py).
 *
 * - audio_config parsing, token counts (the processor's formula)
 * - encoder on the reference features of audio_golden.wav (2 chunks, odd pooled length) and on
 *   synthetic features spanning 4 chunks: max rel. error <= 1e-4 and rel. L2 <= 1e-4
 * - the same through passes of one chunk each (long-audio path) = one pass
 * - our WAV decode + log-mel vs the reference features, then the encoder on OUR features
 * - the whole thinker on an audio + instruction prompt (audio embeddings scattered over the
 *   <|AUDIO|> rows, the reference's M-RoPE positions): logits <= 1e-4
 * - oscar listen end to end (when the binary is built): --json is valid JSON, its transcript and
 *   answer ids equal the greedy reference; a missing or non-audio file exits 1 with a message
 * - bad arguments and a bad config give clear errors */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tests/check.h"
#include "core/config.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "encoders/audio_enc.h"
#include "encoders/audio_io.h"
#include "encoders/mel.h"
#include "kvcache/kvcache.h"
#include "kernels/ops.h"
#include "llm/mm_pos.h"
#include "llm/model.h"

#define TOL 1e-4

static char g_dir[2048], g_gold[2400];

/* max |a-b| / max |b| */
static double max_rel(const float *a, const float *b, long n) {
    double m = 0, r = 0;
    for (long i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = fabs((double)a[i] - b[i]);
        if (d > m) m = d;
        if (fabs(b[i]) > r) r = fabs(b[i]);
    }
    return r > 0 ? m / r : (m > 0 ? INFINITY : 0);
}

static float *read_t(const osc_st *st, const char *name, int64_t *n0, int64_t *n1) {
    const osc_st_tensor *t = osc_st_get(st, name);
    if (!t) {
        CHECK(0, "golden tensor %s missing", name);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < t->nd; i++) n *= t->shape[i];
    if (n0) *n0 = t->shape[0];
    if (n1) *n1 = t->nd > 1 ? t->shape[1] : 1;
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (t->dt == OSC_I32) {
        for (int64_t i = 0; i < n; i++) p[i] = (float)((const int32_t *)t->data)[i];
    } else {
        osc_status s = osc_st_read_f32(t, p, n);
        CHECK(s == OSC_OK, "read %s: %s", name, osc_last_error());
    }
    return p;
}

static int32_t *read_i(const osc_st *st, const char *name, int *n) {
    const osc_st_tensor *t = osc_st_get(st, name);
    if (!t || t->dt != OSC_I32) {
        CHECK(0, "golden int tensor %s missing", name);
        *n = 0;
        return NULL;
    }
    *n = (int)(t->nbytes / 4);
    int32_t *p = malloc(t->nbytes ? t->nbytes : 4);
    memcpy(p, t->data, t->nbytes);
    return p;
}

/* Synthetic features of the golden script (exact in float32). */
static float *syn_features(int L, int seed) {
    float *f = malloc((size_t)128 * L * sizeof(float));
    for (uint64_t i = 0; i < (uint64_t)128 * L; i++) {
        uint64_t h = (i * 2654435761ull + (uint64_t)seed * 40503ull) & 0xFFFFFFFFull;
        h ^= h >> 15;
        h = (h * 2246822519ull) & 0xFFFFFFFFull;
        h ^= h >> 13;
        f[i] = (float)((double)(h >> 8) * (1.0 / 16777216.0) * 3.0 - 1.5);
    }
    return f;
}

static float *encode(osc_audio_enc *e, const float *feat, int L, int *n_tok) {
    int nt = osc_audio_enc_n_tokens(L);
    int D = osc_audio_enc_config_of(e)->output_dim;
    float *out = malloc((size_t)(nt ? nt : 1) * D * sizeof(float));
    osc_tensor t = osc_tensor_2d(out, OSC_F32, OSC_DEV_CPU, nt, D);
    osc_status s = osc_audio_enc_encode(e, feat, L, &t, NULL, NULL);
    CHECK(s == OSC_OK, "encode %d frames: %s", L, osc_last_error());
    *n_tok = nt;
    return out;
}

/* im2col1d + matmul equals a direct Conv1d; avgpool2_rows averages pairs (CPU ops). */
static void test_conv_ops(void) {
    uint64_t rng = 42;
    const int T = 11, C = 5, O = 4;
    for (int stride = 1; stride <= 2; stride++) {
        int To = (T + 2 - 3) / stride + 1;
        float x[11 * 5], w[4 * 5 * 3], b[4], col[11 * 15], y[11 * 4];
        for (int i = 0; i < T * C; i++) x[i] = check_frand(&rng);
        for (int i = 0; i < O * C * 3; i++) w[i] = check_frand(&rng);
        for (int i = 0; i < O; i++) b[i] = check_frand(&rng);
        osc_tensor xt = osc_tensor_2d(x, OSC_F32, OSC_DEV_CPU, T, C), ct = osc_tensor_2d(col, OSC_F32, OSC_DEV_CPU, To, C * 3);
        osc_tensor wt = osc_tensor_2d(w, OSC_F32, OSC_DEV_CPU, O, C * 3), bt = osc_tensor_1d(b, OSC_F32, OSC_DEV_CPU, O);
        osc_tensor yt = osc_tensor_2d(y, OSC_F32, OSC_DEV_CPU, To, O);
        CHECK(osc_op_im2col1d(&ct, &xt, 3, stride, 1) == OSC_OK, "im2col: %s", osc_last_error());
        CHECK(osc_op_matmul(&yt, &ct, &wt, &bt) == OSC_OK, "matmul: %s", osc_last_error());
        double err = 0;
        for (int t = 0; t < To; t++)
            for (int o = 0; o < O; o++) {
                double acc = b[o];
                for (int c = 0; c < C; c++)
                    for (int k = 0; k < 3; k++) {
                        int src = t * stride + k - 1;
                        if (src >= 0 && src < T) acc += (double)w[(o * C + c) * 3 + k] * x[src * C + c];
                    }
                err = fmax(err, fabs(acc - y[t * O + o]));
            }
        CHECK(err < 1e-5, "conv1d stride %d: max err %g", stride, err);
        osc_tensor bad = osc_tensor_2d(col, OSC_F32, OSC_DEV_CPU, To + 1, C * 3);
        CHECK(osc_op_im2col1d(&bad, &xt, 3, stride, 1) == OSC_ERR_INVALID_ARG, "im2col accepted a wrong T_out");
    }
    float x[7 * 3], p[3 * 3];
    for (int i = 0; i < 21; i++) x[i] = check_frand(&rng);
    osc_tensor xt = osc_tensor_2d(x, OSC_F32, OSC_DEV_CPU, 7, 3), pt = osc_tensor_2d(p, OSC_F32, OSC_DEV_CPU, 3, 3);
    CHECK(osc_op_avgpool2_rows(&pt, &xt) == OSC_OK, "avgpool: %s", osc_last_error());
    int ok = 1;
    for (int i = 0; i < 3; i++)
        for (int d = 0; d < 3; d++) ok &= p[i * 3 + d] == (x[2 * i * 3 + d] + x[(2 * i + 1) * 3 + d]) / 2.0f;
    CHECK(ok, "avgpool2_rows values");
    osc_tensor p4 = osc_tensor_2d(p, OSC_F32, OSC_DEV_CPU, 4, 3);
    CHECK(osc_op_avgpool2_rows(&p4, &xt) == OSC_ERR_INVALID_ARG, "avgpool accepted 4 rows from 7");
}

static void test_config_and_counts(void) {
    osc_audio_enc_config c;
    osc_status s = osc_audio_enc_config_load(g_dir, &c);
    CHECK(s == OSC_OK, "config: %s", osc_last_error());
    CHECK(c.n_mels == 128 && c.d_model == 32 && c.n_layers == 2 && c.n_heads == 2 && c.ffn_dim == 64 &&
              c.n_window == 100 && c.max_source_positions == 1500 && c.output_dim == 64,
          "audio_config %d %d %d %d %d %d %d %d", c.n_mels, c.d_model, c.n_layers, c.n_heads, c.ffn_dim, c.n_window,
          c.max_source_positions, c.output_dim);
    /* processor: L1 = (L-1)//2+1, N = (L1-2)//2+1 (Python floor division) */
    static const int L[] = {1, 2, 3, 4, 5, 199, 200, 201, 270, 613, 1000, 3000, 30000};
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        int l1 = (L[i] - 1) / 2 + 1;
        int num = l1 - 2, q = num >= 0 ? num / 2 : -((-num + 1) / 2);
        int want = q + 1;
        CHECK(osc_audio_enc_n_tokens(L[i]) == want, "n_tokens(%d) = %d, want %d", L[i], osc_audio_enc_n_tokens(L[i]), want);
        CHECK(osc_audio_n_tokens(L[i]) == want, "mel.h osc_audio_n_tokens(%d) = %d, want %d", L[i], osc_audio_n_tokens(L[i]), want);
    }
    CHECK(osc_audio_enc_n_tokens(1000) == 250 && osc_audio_enc_n_tokens(30000) == 7500, "doc examples");
}

static void test_encoder(const osc_st *g) {
    osc_audio_enc *e = NULL;
    osc_status s = osc_audio_enc_load(g_dir, OSC_DEV_CPU, &e);
    CHECK(s == OSC_OK, "load: %s", osc_last_error());
    if (!e) return;
    int64_t nm, L64, r0, r1;
    float *feat = read_t(g, "mel.feat", &nm, &L64);
    float *ref = read_t(g, "enc.out", &r0, &r1);
    int L = (int)L64, nt = 0;
    CHECK(nm == 128 && L == 270, "mel.feat shape [%lld,%lld]", (long long)nm, (long long)L64);
    float *out = encode(e, feat, L, &nt);
    CHECK(nt == r0 && r1 == 64, "tokens %d vs golden %lld", nt, (long long)r0);
    double mr = max_rel(out, ref, (long)nt * 64), l2 = rel_l2(out, ref, (long)nt * 64);
    printf("encoder (wav features, %d frames -> %d tokens): max rel %.3g, rel L2 %.3g\n", L, nt, mr, l2);
    CHECK(mr <= TOL && l2 <= TOL, "encoder max rel %g, rel l2 %g", mr, l2);

    /* 4 chunks of synthetic features */
    int n_syn = 0;
    int32_t *sl = read_i(g, "syn.len", &n_syn);
    int32_t *ss = read_i(g, "syn.seed", &n_syn);
    float *sref = read_t(g, "syn.out", &r0, &r1);
    if (sl && ss && sref) {
        float *sf = syn_features(sl[0], ss[0]);
        int nt2 = 0;
        float *so = encode(e, sf, sl[0], &nt2);
        CHECK(nt2 == r0, "syn tokens %d vs %lld", nt2, (long long)r0);
        mr = max_rel(so, sref, (long)nt2 * 64);
        l2 = rel_l2(so, sref, (long)nt2 * 64);
        printf("encoder (synthetic, %d frames -> %d tokens): max rel %.3g, rel L2 %.3g\n", sl[0], nt2, mr, l2);
        CHECK(mr <= TOL && l2 <= TOL, "syn max rel %g, rel l2 %g", mr, l2);
        /* the long-audio path: one chunk per pass gives the same numbers */
        osc_audio_enc_set_pass_frames(e, 200);
        int nt3 = 0;
        float *so1 = encode(e, sf, sl[0], &nt3);
        double d = rel_l2(so1, so, (long)nt3 * 64);
        printf("one chunk per pass vs one pass: rel L2 %.3g\n", d);
        CHECK(nt3 == nt2 && d <= 1e-6, "passes differ: %g", d);
        osc_audio_enc_set_pass_frames(e, 0);
        free(so1);
        free(so);
        free(sf);
    }
    free(sl);
    free(ss);
    free(sref);

    /* our own decode + features of the WAV, then the encoder on them */
    char wav[2600];
    snprintf(wav, sizeof wav, "%s/audio_golden.wav", g_dir);
    float *pcm = NULL, *myfeat = NULL;
    int64_t n = 0;
    int myL = 0;
    s = osc_audio_load(wav, 16000, 0, &pcm, &n);
    if (s == OSC_ERR_UNSUPPORTED) {
        printf("audio decoding not built in: skipping the WAV checks\n");
    } else {
        CHECK(s == OSC_OK && n == 43200, "load wav: %s (n %lld)", osc_last_error(), (long long)n);
        s = osc_mel_features(pcm, n, &myfeat, &myL);
        if (s == OSC_ERR_UNSUPPORTED) {
            printf("mel features not built in: skipping\n");
        } else {
            CHECK(s == OSC_OK && myL == L, "mel: %s (L %d)", osc_last_error(), myL);
            if (s == OSC_OK && myL == L) {
                double fm = rel_l2(myfeat, feat, (long)128 * L);
                printf("our log-mel vs WhisperFeatureExtractor: rel L2 %.3g, max rel %.3g\n", fm,
                       max_rel(myfeat, feat, (long)128 * L));
                CHECK(fm <= TOL, "mel rel l2 %g", fm);
                int nt4 = 0;
                float *o4 = encode(e, myfeat, myL, &nt4);
                double d4 = rel_l2(o4, ref, (long)nt4 * 64);
                printf("encoder on our features vs reference: rel L2 %.3g\n", d4);
                CHECK(d4 <= 1e-3, "encoder on our features: %g", d4);
                free(o4);
            }
        }
    }
    free(pcm);
    free(myfeat);

    /* bad input */
    osc_tensor small = osc_tensor_2d(out, OSC_F32, OSC_DEV_CPU, nt - 1, 64);
    CHECK(osc_audio_enc_encode(e, feat, L, &small, NULL, NULL) == OSC_ERR_INVALID_ARG, "wrong output rows accepted");
    osc_tensor o1 = osc_tensor_2d(out, OSC_F32, OSC_DEV_CPU, nt, 64);
    CHECK(osc_audio_enc_encode(e, feat, 0, &o1, NULL, NULL) == OSC_ERR_INVALID_ARG, "0 frames accepted");
    CHECK(osc_audio_enc_encode(e, NULL, L, &o1, NULL, NULL) == OSC_ERR_INVALID_ARG, "NULL features accepted");
    free(out);
    free(feat);
    free(ref);
    osc_audio_enc_free(e);
}

static int cancel_cb(void *u, int64_t done, int64_t total) {
    (void)u;
    return done < total; /* cancel after the first pass */
}

static void test_cancel(void) {
    osc_audio_enc *e = NULL;
    if (osc_audio_enc_load(g_dir, OSC_DEV_CPU, &e) != OSC_OK) return;
    osc_audio_enc_set_pass_frames(e, 200);
    float *f = syn_features(450, 3);
    int nt = osc_audio_enc_n_tokens(450);
    float *o = malloc((size_t)nt * 64 * sizeof(float));
    osc_tensor t = osc_tensor_2d(o, OSC_F32, OSC_DEV_CPU, nt, 64);
    CHECK(osc_audio_enc_encode(e, f, 450, &t, cancel_cb, NULL) == OSC_ERR_CANCELLED, "progress could not cancel");
    free(o);
    free(f);
    osc_audio_enc_free(e);
}

static void test_thinker(const osc_st *g) {
    osc_llm *m = NULL;
    osc_status s = osc_llm_load(g_dir, OSC_DEV_CPU, &m);
    CHECK(s == OSC_OK, "llm load: %s", osc_last_error());
    osc_audio_enc *e = NULL;
    s = osc_audio_enc_load(g_dir, OSC_DEV_CPU, &e);
    if (!m || !e) {
        osc_llm_free(m);
        osc_audio_enc_free(e);
        return;
    }
    const osc_llm_config *cf = osc_llm_config_of(m);
    int S = 0, np = 0, nts = 0;
    int32_t *ids = read_i(g, "lm.ids", &S);
    int32_t *pos = read_i(g, "lm.pos", &np);
    int32_t *ts = read_i(g, "lm.tail_start", &nts);
    int64_t lr, lv, L64, nm;
    float *ref = read_t(g, "lm.logits", &lr, &lv);
    float *feat = read_t(g, "mel.feat", &nm, &L64);
    if (!ids || !pos || !ts || !ref || !feat || np != 3 * S) goto out;
    int nt = 0;
    float *emb = encode(e, feat, (int)L64, &nt);
    int32_t *rows = malloc((size_t)S * sizeof *rows);
    int n_mm = 0;
    for (int i = 0; i < S; i++)
        if (ids[i] == cf->audio_token_id) rows[n_mm++] = i;
    CHECK(n_mm == nt, "%d audio pads in the prompt, %d embeddings", n_mm, nt);
    /* audio-only prompt: the TMRoPE positions are the token index on every axis */
    int plain = 1;
    for (int a = 0; a < 3; a++)
        for (int i = 0; i < S; i++) plain &= pos[a * S + i] == i;
    CHECK(plain, "audio-only positions are not the plain index");
    /* llm/mm_pos.h gives the reference's positions */
    osc_mm_pos_params pp;
    int32_t *mypos = malloc((size_t)3 * S * sizeof *mypos), delta = -1, alen = (int32_t)L64;
    osc_mm_inputs in = {0};
    in.audio_len = &alen;
    in.n_audios = 1;
    s = osc_mm_pos_params_load(g_dir, cf, &pp);
    if (s == OSC_OK) s = osc_mm_rope_index(&pp, ids, S, &in, mypos, &delta);
    CHECK(s == OSC_OK && delta == 0 && memcmp(mypos, pos, (size_t)3 * S * sizeof *pos) == 0, "mm_pos: %s (delta %d)",
          s == OSC_OK ? "positions differ" : osc_last_error(), delta);
    free(mypos);
    osc_kv *kv = NULL;
    osc_llm_ctx *ctx = NULL;
    s = osc_llm_kv_new(m, "bf16", S + 8, &kv);
    if (s == OSC_OK) s = osc_llm_ctx_new(m, 64, &ctx); /* smaller than S: the forward is split */
    CHECK(s == OSC_OK, "kv/ctx: %s", osc_last_error());
    float *lg = malloc((size_t)S * cf->vocab_size * sizeof(float));
    osc_tensor et = osc_tensor_2d(emb, OSC_F32, OSC_DEV_CPU, nt, cf->hidden_size);
    int st[2] = {0, S};
    osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = pos, .kv = &kv, .all_logits = 1,
                       .n_mm = n_mm, .mm_rows = rows, .mm_embeds = &et};
    if (s == OSC_OK) {
        s = osc_llm_forward(m, ctx, &b, lg);
        CHECK(s == OSC_OK, "forward: %s", osc_last_error());
    }
    if (s == OSC_OK && lv == cf->vocab_size && lr == S - ts[0]) {
        const float *mine = lg + (size_t)ts[0] * cf->vocab_size;
        double mr = max_rel(mine, ref, (long)(lr * lv)), l2 = rel_l2(mine, ref, (long)(lr * lv));
        printf("thinker logits (audio + instruction, %d rows): max rel %.3g, rel L2 %.3g\n", (int)lr, mr, l2);
        CHECK(mr <= TOL && l2 <= TOL, "logits max rel %g, rel l2 %g", mr, l2);
    } else if (s == OSC_OK) {
        CHECK(0, "lm.logits shape [%lld,%lld] vs S %d tail %d", (long long)lr, (long long)lv, S, ts[0]);
    }
    free(lg);
    free(rows);
    free(emb);
    osc_kv_free(kv);
    osc_llm_ctx_free(ctx);
out:
    free(ids);
    free(pos);
    free(ts);
    free(ref);
    free(feat);
    osc_llm_free(m);
    osc_audio_enc_free(e);
}

/* Run a shell command, capture stdout (up to cap bytes) and return the exit status. */
static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int ids_equal(const cJSON *arr, const int32_t *ref, int n) {
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != n) return 0;
    for (int i = 0; i < n; i++)
        if ((int)cJSON_GetArrayItem(arr, i)->valuedouble != ref[i]) return 0;
    return 1;
}

static void test_listen_cli(const osc_st *g) {
    const char *bin = getenv("OSC_BIN");
    char exe[2300];
    snprintf(exe, sizeof exe, "%s/oscar", bin ? bin : ".");
    if (!bin || !osc_file_exists(exe)) {
        printf("oscar binary not found (OSC_BIN): skipping the CLI checks\n");
        return;
    }
    if (!(osc_audio_backends() & 1)) {
        printf("no libsndfile: skipping the CLI checks\n");
        return;
    }
    int n1 = 0, n2 = 0, nn = 0;
    int32_t *g1 = read_i(g, "listen.ids1", &n1), *g2 = read_i(g, "listen.ids2", &n2), *gn = read_i(g, "listen.n", &nn);
    if (!gn) return;
    size_t cap = 1 << 20;
    char *out = malloc(cap), cmd[8192];
    snprintf(cmd, sizeof cmd,
             "'%s' listen -m '%s' --audio '%s/audio_golden.wav' -p 'What is the mood of the speaker?' -n %d "
             "--temp 0 --repeat-penalty 1 --device cpu --json 2>/dev/null",
             exe, g_dir, g_dir, gn[0]);
    int rc = run_cmd(cmd, out, cap);
    CHECK(rc == 0, "listen exit %d", rc);
    cJSON *j = cJSON_Parse(out);
    CHECK(j != NULL, "listen --json output is not JSON: %.200s", out);
    if (j) {
        const cJSON *t = cJSON_GetObjectItem(j, "transcript"), *a = cJSON_GetObjectItem(j, "answer");
        CHECK(cJSON_IsString(t) && cJSON_IsString(a), "transcript/answer missing");
        CHECK(ids_equal(cJSON_GetObjectItem(j, "transcript_ids"), g1, n1), "transcript ids differ from the greedy reference");
        CHECK(ids_equal(cJSON_GetObjectItem(j, "answer_ids"), g2, n2), "answer ids differ from the greedy reference");
        const cJSON *at = cJSON_GetObjectItem(j, "audio_tokens");
        CHECK(cJSON_IsNumber(at) && at->valueint == 67, "audio_tokens");
        cJSON_Delete(j);
    }
    /* plain output and transcribe-only */
    snprintf(cmd, sizeof cmd, "'%s' listen -m '%s' --audio '%s/audio_golden.wav' -n 4 --device cpu --transcribe-only 2>/dev/null",
             exe, g_dir, g_dir);
    rc = run_cmd(cmd, out, cap);
    CHECK(rc == 0 && strlen(out) > 0, "transcribe-only exit %d", rc);
    /* bad audio: missing file, a JSON file, an empty file -> exit 1 with a message on stderr */
    const char *tmp = getenv("OSC_TEST_TMP");
    char empty[2400];
    snprintf(empty, sizeof empty, "%s/empty_audio.wav", tmp ? tmp : "/tmp");
    FILE *f = fopen(empty, "wb");
    if (f) fclose(f);
    const char *bad[] = {"/nonexistent/nothing.wav", NULL, empty};
    char cfgp[2400];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", g_dir);
    bad[1] = cfgp;
    for (int i = 0; i < 3; i++) {
        snprintf(cmd, sizeof cmd, "'%s' listen -m '%s' --audio '%s' -p hi --device cpu 2>&1", exe, g_dir, bad[i]);
        rc = run_cmd(cmd, out, cap);
        CHECK(rc == 1 && strstr(out, "cannot read the audio"), "bad audio %s: exit %d, output %.200s", bad[i], rc, out);
    }
    /* usage errors */
    snprintf(cmd, sizeof cmd, "'%s' listen -m '%s' 2>&1", exe, g_dir);
    CHECK(run_cmd(cmd, out, cap) == 2, "missing --audio is not a usage error");
    /* a text-only model has no audio encoder */
    snprintf(cmd, sizeof cmd, "'%s' listen -m '%s/../qwen2-tiny' --audio '%s/audio_golden.wav' --device cpu 2>&1", exe,
             g_dir, g_dir);
    rc = run_cmd(cmd, out, cap);
    CHECK(rc == 1 && strstr(out, "Qwen2.5-Omni"), "text model: exit %d, %.200s", rc, out);
    free(out);
    free(g1);
    free(g2);
    free(gn);
}

static void test_bad_config(void) {
    const char *tmp = getenv("OSC_TEST_TMP");
    char d[2048], p[2400];
    snprintf(d, sizeof d, "%s/audio_bad_cfg", tmp ? tmp : "/tmp");
    char mk[2200];
    snprintf(mk, sizeof mk, "mkdir -p '%s'", d);
    if (system(mk) != 0) return;
    snprintf(p, sizeof p, "%s/config.json", d);
    static const char *cfgs[] = {
        "{\"model_type\": \"qwen2_5_omni_thinker\", \"audio_config\": {\"d_model\": 30, \"encoder_attention_heads\": 4}}",
        "{\"model_type\": \"qwen2_5_omni_thinker\", \"audio_config\": {\"n_window\": -3}}",
        "{\"model_type\": \"qwen2_5_omni_thinker\"}",
        "{\"model_type\": \"qwen2\"}",
        "{\"model_type\": \"qwen2_5_omni_thinker\", \"audio_config\": {\"d_model\": \"big\"}}",
        "not json",
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        FILE *f = fopen(p, "w");
        if (!f) return;
        fputs(cfgs[i], f);
        fclose(f);
        osc_audio_enc_config c;
        osc_status s = osc_audio_enc_config_load(d, &c);
        CHECK(s != OSC_OK && strstr(osc_last_error(), "config.json"), "bad config %zu accepted (%s)", i, osc_last_error());
    }
    /* a good config but no weights */
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs("{\"model_type\": \"qwen2_5_omni_thinker\", \"audio_config\": {}}", f);
    fclose(f);
    osc_audio_enc *e = NULL;
    CHECK(osc_audio_enc_load(d, OSC_DEV_CPU, &e) != OSC_OK && e == NULL, "load without weights succeeded");
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS");
    snprintf(g_dir, sizeof g_dir, "%s/omni-tiny", models ? models : "tests/models");
    snprintf(g_gold, sizeof g_gold, "%s/audio_golden.safetensors", g_dir);
    osc_st *g = NULL;
    osc_status s = osc_st_open(g_gold, &g);
    CHECK(s == OSC_OK, "golden: %s", osc_last_error());
    test_conv_ops();
    test_config_and_counts();
    test_bad_config();
    if (g) {
        test_encoder(g);
        test_cancel();
        test_thinker(g);
        test_listen_cli(g);
        osc_st_close(g);
    }
    return check_done("test_audio_enc");
}
