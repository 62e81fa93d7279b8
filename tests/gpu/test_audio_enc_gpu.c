/* tests/gpu/test_audio_enc_gpu.c: the Qwen2.5-Omni audio encoder and an audio prompt on CUDA
 * (bf16) against transformers (tests/models/omni-tiny/audio_golden.safetensors) and the CPU:
 * - encoder output on the reference features of audio_golden.wav and on 4 chunks of synthetic
 *   features: rel. L2 <= 2e-2 (host F32 output and device BF16 output)
 * - one chunk per pass equals one pass (the long-audio path)
 * - thinker logits with GPU audio embeddings scattered over the <|AUDIO|> rows: rel. L2 <= 2e-2
 * - oscar listen --device cuda --json: valid JSON; its greedy ids equal the reference while the
 *   reference's top-1/top-2 margin is >= 0.25 (after a near-tie bf16 may legitimately differ)
 * Skipped (77) without a GPU. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/arena.h"
#include "core/device.h"
#include "core/fileio.h"
#include "core/safetensors.h"
#include "encoders/audio_enc.h"
#include "encoders/audio_io.h"
#include "kvcache/kvcache.h"
#include "llm/model.h"
#include "tests/check.h"

#define TOL 2e-2

static char g_dir[2048];

static float *read_f(const osc_st *st, const char *name, int64_t *n0, int64_t *n1) {
    const osc_st_tensor *t = osc_st_get(st, name);
    if (!t) {
        CHECK(0, "golden %s missing", name);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < t->nd; i++) n *= t->shape[i];
    *n0 = t->shape[0];
    *n1 = t->nd > 1 ? t->shape[1] : 1;
    float *p = malloc((size_t)n * sizeof(float));
    CHECK(osc_st_read_f32(t, p, n) == OSC_OK, "%s", osc_last_error());
    return p;
}

static const int32_t *read_i(const osc_st *st, const char *name, int *n) {
    const osc_st_tensor *t = osc_st_get(st, name);
    *n = t && t->dt == OSC_I32 ? (int)(t->nbytes / 4) : 0;
    CHECK(t && t->dt == OSC_I32, "golden %s missing", name);
    return t && t->dt == OSC_I32 ? t->data : NULL;
}

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

/* Encode to host F32, and again to a device BF16 tensor; both compared with ref. */
static float *check_encode(osc_audio_enc *e, const float *feat, int L, const float *ref, const char *what) {
    int nt = osc_audio_enc_n_tokens(L), D = osc_audio_enc_config_of(e)->output_dim;
    float *h = malloc((size_t)nt * D * sizeof(float));
    osc_tensor th = osc_tensor_2d(h, OSC_F32, OSC_DEV_CPU, nt, D);
    osc_status s = osc_audio_enc_encode(e, feat, L, &th, NULL, NULL);
    CHECK(s == OSC_OK, "%s: encode: %s", what, osc_last_error());
    double err = rel_l2(h, ref, (long)nt * D);
    printf("%s (%d frames -> %d tokens): cuda bf16 vs transformers f32 rel. L2 %.2e\n", what, L, nt, err);
    CHECK(err <= TOL, "%s: rel L2 %g", what, err);
    osc_tensor td = osc_tensor_2d(NULL, OSC_BF16, OSC_DEV_CUDA, nt, D);
    void *p = NULL;
    if (osc_dev_malloc(OSC_DEV_CUDA, osc_tensor_nbytes(&td), &p) == OSC_OK) {
        td.data = p;
        s = osc_audio_enc_encode(e, feat, L, &td, NULL, NULL);
        CHECK(s == OSC_OK, "%s: encode to device: %s", what, osc_last_error());
        float *d = malloc((size_t)nt * D * sizeof(float));
        osc_tensor_download_f32(d, &td, (int64_t)nt * D);
        double e2 = rel_l2(d, ref, (long)nt * D);
        CHECK(e2 <= TOL, "%s: device output rel L2 %g", what, e2);
        free(d);
        osc_dev_free(OSC_DEV_CUDA, p);
    }
    return h;
}

static void test_encoder(const osc_st *g) {
    osc_audio_enc *e = NULL;
    CHECK(osc_audio_enc_load(g_dir, OSC_DEV_CUDA, &e) == OSC_OK, "cuda load: %s", osc_last_error());
    if (!e) return;
    int64_t nm, L, r0, r1;
    float *feat = read_f(g, "mel.feat", &nm, &L), *ref = read_f(g, "enc.out", &r0, &r1);
    if (feat && ref) free(check_encode(e, feat, (int)L, ref, "encoder, wav features"));
    int n;
    const int32_t *sl = read_i(g, "syn.len", &n), *ss = read_i(g, "syn.seed", &n);
    float *sref = read_f(g, "syn.out", &r0, &r1);
    if (sl && ss && sref) {
        float *sf = syn_features(sl[0], ss[0]);
        float *one = check_encode(e, sf, sl[0], sref, "encoder, synthetic 4 chunks");
        osc_audio_enc_set_pass_frames(e, 200);
        float *per = check_encode(e, sf, sl[0], sref, "encoder, one chunk per pass");
        double d = rel_l2(per, one, (long)osc_audio_enc_n_tokens(sl[0]) * 64);
        CHECK(d <= 1e-2, "passes differ on cuda: %g", d);
        osc_audio_enc_set_pass_frames(e, 0);
        free(one);
        free(per);
        free(sf);
    }
    free(sref);
    free(feat);
    free(ref);
    osc_audio_enc_free(e);
}

static void test_thinker(const osc_st *g) {
    osc_llm *m = NULL;
    osc_audio_enc *e = NULL;
    CHECK(osc_llm_load(g_dir, OSC_DEV_CUDA, &m) == OSC_OK, "llm: %s", osc_last_error());
    CHECK(osc_audio_enc_load(g_dir, OSC_DEV_CUDA, &e) == OSC_OK, "enc: %s", osc_last_error());
    int S = 0, np = 0, nt0 = 0;
    const int32_t *ids = read_i(g, "lm.ids", &S), *pos = read_i(g, "lm.pos", &np), *ts = read_i(g, "lm.tail_start", &nt0);
    int64_t lr, lv, nm, L;
    float *ref = read_f(g, "lm.logits", &lr, &lv), *feat = read_f(g, "mel.feat", &nm, &L);
    if (m && e && ids && pos && ts && ref && feat) {
        const osc_llm_config *cf = osc_llm_config_of(m);
        int nt = osc_audio_enc_n_tokens((int)L);
        osc_tensor emb = osc_tensor_2d(NULL, OSC_BF16, OSC_DEV_CUDA, nt, cf->hidden_size);
        void *p = NULL;
        CHECK(osc_dev_malloc(OSC_DEV_CUDA, osc_tensor_nbytes(&emb), &p) == OSC_OK, "%s", osc_last_error());
        emb.data = p;
        CHECK(osc_audio_enc_encode(e, feat, (int)L, &emb, NULL, NULL) == OSC_OK, "%s", osc_last_error());
        int32_t *rows = malloc((size_t)S * sizeof *rows);
        int n_mm = 0;
        for (int i = 0; i < S; i++)
            if (ids[i] == cf->audio_token_id) rows[n_mm++] = i;
        osc_kv *kv = NULL;
        osc_llm_ctx *ctx = NULL;
        osc_llm_kv_new(m, "bf16", S + 8, &kv);
        osc_llm_ctx_new(m, 64, &ctx);
        float *lg = malloc((size_t)S * cf->vocab_size * sizeof(float));
        int st[2] = {0, S};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = ids, .pos = pos, .kv = &kv, .all_logits = 1,
                           .n_mm = n_mm, .mm_rows = rows, .mm_embeds = &emb};
        osc_status s = kv && ctx ? osc_llm_forward(m, ctx, &b, lg) : OSC_ERR_OOM;
        CHECK(s == OSC_OK, "forward: %s", osc_last_error());
        if (s == OSC_OK && lr == S - ts[0] && lv == cf->vocab_size) {
            double err = rel_l2(lg + (size_t)ts[0] * lv, ref, (long)(lr * lv));
            printf("thinker logits with cuda audio embeddings (%lld rows): rel. L2 %.2e\n", (long long)lr, err);
            CHECK(err <= TOL, "logits rel L2 %g", err);
        }
        free(lg);
        free(rows);
        osc_kv_free(kv);
        osc_llm_ctx_free(ctx);
        osc_dev_free(OSC_DEV_CUDA, p);
    }
    free(ref);
    free(feat);
    osc_llm_free(m);
    osc_audio_enc_free(e);
}

static int run_cmd(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Compare ids with the reference while the reference margin stays >= 0.25; returns steps used. */
static int compare_ids(const cJSON *arr, const int32_t *ref, int n, const float *gaps, int *gi, const char *what) {
    int ok = cJSON_IsArray(arr), cmp = 0;
    for (int i = 0; ok && i < n; i++) {
        if (gaps[(*gi)++] < 0.25f) break; /* step i is a near-tie in the reference */
        const cJSON *it = cJSON_GetArrayItem(arr, i);
        if (!it || (int)it->valuedouble != ref[i]) { ok = 0; break; }
        cmp++;
    }
    CHECK(ok, "%s: cuda greedy ids differ from the reference at step %d", what, cmp);
    printf("listen %s: %d greedy ids equal the reference\n", what, cmp);
    return cmp;
}

static void test_listen(const osc_st *g) {
    const char *bin = getenv("OSC_BIN");
    char exe[2300];
    snprintf(exe, sizeof exe, "%s/oscar", bin ? bin : ".");
    if (!bin || !osc_file_exists(exe) || !(osc_audio_backends() & 1)) {
        printf("oscar binary or libsndfile missing: skipping the CLI check\n");
        return;
    }
    int n1, n2, nn;
    const int32_t *g1 = read_i(g, "listen.ids1", &n1), *g2 = read_i(g, "listen.ids2", &n2), *gn = read_i(g, "listen.n", &nn);
    int64_t ng, one;
    float *gaps = read_f(g, "listen.gaps", &ng, &one);
    if (!gn || !gaps) return;
    char cmd[8192];
    size_t cap = 1 << 20;
    char *out = malloc(cap);
    snprintf(cmd, sizeof cmd,
             "'%s' listen -m '%s' --audio '%s/audio_golden.wav' -p 'What is the mood of the speaker?' -n %d "
             "--temp 0 --repeat-penalty 1 --device cuda --json 2>/dev/null",
             exe, g_dir, g_dir, gn[0]);
    int rc = run_cmd(cmd, out, cap);
    CHECK(rc == 0, "listen --device cuda exit %d", rc);
    cJSON *j = cJSON_Parse(out);
    CHECK(j && cJSON_IsString(cJSON_GetObjectItem(j, "transcript")) && cJSON_IsString(cJSON_GetObjectItem(j, "answer")),
          "listen --json: %.200s", out);
    if (j) {
        int gi = 0;
        int c1 = compare_ids(cJSON_GetObjectItem(j, "transcript_ids"), g1, n1, gaps, &gi, "transcript");
        /* the answer depends on the whole transcript: compare it only when that matched fully */
        if (c1 == n1 && gi == n1) {
            gi = n1 < gn[0] ? n1 + 1 : n1; /* a stop step also has a margin */
            compare_ids(cJSON_GetObjectItem(j, "answer_ids"), g2, n2, gaps, &gi, "answer");
        }
        cJSON_Delete(j);
    }
    free(out);
    free(gaps);
}

int main(void) {
    if (!osc_device_cuda_available()) {
        printf("no GPU: skipped\n");
        return OSC_TEST_SKIP;
    }
    const char *models = getenv("OSC_TEST_MODELS");
    snprintf(g_dir, sizeof g_dir, "%s/omni-tiny", models ? models : "tests/models");
    char path[2400];
    snprintf(path, sizeof path, "%s/audio_golden.safetensors", g_dir);
    osc_st *g = NULL;
    CHECK(osc_st_open(path, &g) == OSC_OK, "golden: %s", osc_last_error());
    if (g) {
        test_encoder(g);
        test_thinker(g);
        test_listen(g);
        osc_st_close(g);
    }
    return check_done("test_audio_enc_gpu");
}
