/* Multi-turn multimodal chat (pipelines/lib/mmchat.c, `oscar chat` with /image) on
 * tests/models/omni-tiny vs transformers goldens (tools/golden/make_mmchat_goldens.py):
 * a 3-turn conversation (image + question, another image + question, text only), greedy.
 * - library: after each turn the cached conversation ids equal the golden whole-conversation
 *   prompt (system, turns, replies as generated), their M-RoPE positions equal get_rope_index over
 *   the whole conversation, the logits of the first reply token match (<= 1e-4 rel.), the reply
 *   ids equal transformers' generate; /reset then the first turn again gives the same;
 * - CLI: the same conversation from a stdin script with --json (one object per turn): reply ids
 *   and per-turn prompt token counts equal the goldens;
 * - CLI errors: a missing file and a non-image after /image are reported and the chat goes on
 *   (exit 0); --image with -p on a bad file exits 1; /image on a text-only model (qwen2-tiny) is
 *   refused and the chat goes on; a text-only chat on omni-tiny prints what the session path
 *   (-p) prints; smoke runs of /audio on omni-tiny and /image on vl-tiny (/audio refused there). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/safetensors.h"
#include "pipelines/lib/mmchat.h"
#include "tests/check.h"

#define N_TURNS 3
static const char *k_q[N_TURNS] = {"What is in this picture?", "And what is in this one?", "Thanks. Which one is brighter?"};
static char g_img[N_TURNS][1200];
static char g_models[1024], g_dir[1100];

static const osc_st_tensor *gget(const osc_st *g, const char *fmt, int k) {
    char name[64];
    snprintf(name, sizeof name, fmt, k);
    const osc_st_tensor *t = osc_st_get(g, name);
    if (!t) fprintf(stderr, "golden %s missing\n", name);
    return t;
}
static int gint(const osc_st *g, const char *fmt, int k) {
    const osc_st_tensor *t = gget(g, fmt, k);
    return t ? ((const int32_t *)t->data)[0] : -999;
}

typedef struct first_logits { const osc_mmchat *c; float *row; int got; } first_logits;
static int grab_first(const char *piece, int32_t id, void *user) {
    (void)piece;
    first_logits *f = user;
    if (!f->got && id >= 0) {
        memcpy(f->row, osc_mmchat_logits(f->c), (size_t)osc_mmchat_vocab(f->c) * sizeof(float));
        f->got = 1;
    }
    return 0;
}

static double max_rel(const float *a, const float *ref, int n) {
    double mx = 0, md = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(a[i])) return INFINITY;
        double d = fabs((double)a[i] - ref[i]);
        if (d > md) md = d;
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
    }
    return mx > 0 ? md / mx : INFINITY;
}

/* one turn through the library; compares with the golden turn k (1-based) */
static void lib_turn(osc_mmchat *c, const osc_st *g, int k) {
    const osc_st_tensor *tids = gget(g, "turn%d.ids", k), *tpos = gget(g, "turn%d.pos", k), *tlog = gget(g, "turn%d.logits", k);
    const osc_st_tensor *tgen = gget(g, "turn%d.gen", k);
    if (!tids || !tpos || !tlog || !tgen) { CHECK(0, "goldens of turn %d missing", k); return; }
    const int V = osc_mmchat_vocab(c), n_gen = gint(g, "turn%d.n_gen", k);
    if (g_img[k - 1][0]) CHECK(osc_mmchat_attach_image(c, g_img[k - 1]) == OSC_OK, "attach: %s", osc_last_error());
    float *row = malloc((size_t)V * sizeof(float)), *ref = malloc((size_t)V * sizeof(float));
    first_logits fl = {c, row, 0};
    osc_mmchat_stats st;
    osc_status s = osc_mmchat_turn(c, k_q[k - 1], 6, grab_first, &fl, &st);
    CHECK(s == OSC_OK, "turn %d: %s", k, osc_last_error());
    int n = 0, nr = 0;
    const int32_t *ids = osc_mmchat_ids(c, &n), *pos = osc_mmchat_positions(c), *rep = osc_mmchat_reply(c, &nr);
    const int L = (int)tids->shape[0];
    const int32_t *gi = tids->data, *gp = tpos->data;
    int ids_ok = n >= L && memcmp(ids, gi, (size_t)L * 4) == 0, pos_ok = n >= L;
    for (int i = 0; pos_ok && i < L; i++)
        for (int a = 0; a < 3; a++) pos_ok &= pos[3 * i + a] == gp[a * L + i];
    double err = INFINITY;
    if (fl.got && osc_st_read_f32(tlog, ref, V) == OSC_OK) err = max_rel(row, ref, V);
    int gen_ok = nr == n_gen && (n_gen == 0 || memcmp(rep, tgen->data, (size_t)n_gen * 4) == 0);
    printf("turn %d: conversation %d ids (golden prompt %d: ids %s, positions %s), delta %d (golden %d), "
           "first-token logits err %.3g, reply %d ids %s\n", k, n, L, ids_ok ? "equal" : "DIFFER",
           pos_ok ? "equal" : "DIFFER", st.rope_delta, gint(g, "turn%d.delta", k), err, nr, gen_ok ? "equal" : "DIFFER");
    CHECK(ids_ok, "turn %d: conversation ids differ from transformers'", k);
    CHECK(pos_ok, "turn %d: positions differ from get_rope_index", k);
    CHECK(st.rope_delta == gint(g, "turn%d.delta", k), "turn %d: rope delta", k);
    CHECK(err <= 1e-4, "turn %d: logits err %g", k, err);
    CHECK(gen_ok, "turn %d: reply ids differ from transformers' generate", k);
    CHECK(st.stopped == gint(g, "turn%d.stopped", k), "turn %d: stop", k);
    free(row);
    free(ref);
}

static void test_lib(const osc_st *g) {
    osc_mmchat_params p;
    memset(&p, 0, sizeof p);
    p.model = g_dir;
    p.dev = OSC_DEV_CPU;
    p.kv = "bf16";
    p.sp = osc_sampler_default_params(); /* greedy, no penalty */
    osc_mmchat *c = NULL;
    CHECK(osc_mmchat_open(&p, &c) == OSC_OK, "open: %s", osc_last_error());
    if (!c) return;
    for (int k = 1; k <= N_TURNS; k++) lib_turn(c, g, k);
    osc_mmchat_reset(c);
    int n = -1;
    osc_mmchat_ids(c, &n);
    CHECK(n == 0 && osc_mmchat_n_attached(c) == 0, "reset leaves %d ids", n);
    lib_turn(c, g, 1);
    /* a turn that does not fit is refused and changes nothing */
    int n_before = 0;
    osc_mmchat_ids(c, &n_before);
    char *big = malloc(40000);
    for (int i = 0; i < 39999; i++) big[i] = i % 5 == 4 ? ' ' : 'a' + i % 7;
    big[39999] = 0;
    osc_mmchat_stats st;
    CHECK(osc_mmchat_turn(c, big, 4, NULL, NULL, &st) == OSC_ERR_CONTEXT, "oversized turn: %s", osc_last_error());
    osc_mmchat_ids(c, &n);
    CHECK(n == n_before, "refused turn changed the conversation (%d -> %d ids)", n_before, n);
    free(big);
    /* text-only model */
    osc_mmchat_free(c);
    char dq[1200];
    snprintf(dq, sizeof dq, "%s/qwen2-tiny", g_models);
    p.model = dq;
    CHECK(!osc_mmchat_model_ok(dq) && osc_mmchat_model_ok(g_dir), "model_ok");
    CHECK(osc_mmchat_open(&p, &c) == OSC_ERR_UNSUPPORTED && !c, "text model refused: %s", osc_last_error());
}

static char *run(const char *cmd, int *rc) {
    FILE *f = popen(cmd, "r");
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    if (f) n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    int st = f ? pclose(f) : -1;
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static void test_cli(const osc_st *g, const char *bin, const char *tmp) {
    char script[1300], cmd[8192];
    snprintf(script, sizeof script, "%s/mmchat_script.txt", tmp);
    FILE *f = fopen(script, "w");
    CHECK(f != NULL, "cannot write %s", script);
    if (!f) return;
    for (int k = 0; k < N_TURNS; k++) {
        if (g_img[k][0]) fprintf(f, "/image %s\n", g_img[k]);
        fprintf(f, "%s\n", k_q[k]);
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s' -n 6 --temp 0 --repeat-penalty 1 --device cpu --json < '%s' 2>/dev/null",
             bin, g_dir, script);
    int rc;
    char *out = run(cmd, &rc);
    CHECK(rc == 0, "chat exit %d: %s", rc, out);
    char *line = out;
    int ctx_prev = 0;
    for (int k = 1; k <= N_TURNS; k++) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        cJSON *j = cJSON_Parse(line);
        CHECK(j != NULL, "turn %d: not a JSON line: %s", k, line);
        if (!j) break;
        const cJSON *ids = cJSON_GetObjectItem(j, "ids"), *pt = cJSON_GetObjectItem(j, "prompt_tokens");
        const cJSON *ct = cJSON_GetObjectItem(j, "context_tokens");
        const osc_st_tensor *tgen = gget(g, "turn%d.gen", k), *tids = gget(g, "turn%d.ids", k);
        int n_gen = gint(g, "turn%d.n_gen", k);
        int same = tgen && cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == n_gen;
        for (int i = 0; same && i < n_gen; i++)
            same = (int)cJSON_GetArrayItem(ids, i)->valuedouble == ((const int32_t *)tgen->data)[i];
        int want_pt = tids ? (int)tids->shape[0] - ctx_prev : -1;
        printf("oscar chat turn %d: prompt %d new tokens (golden %d), reply ids %s transformers'\n", k,
               cJSON_IsNumber(pt) ? (int)pt->valuedouble : -1, want_pt, same ? "equal" : "DIFFER FROM");
        CHECK(same, "CLI turn %d reply ids differ: %s", k, line);
        CHECK(cJSON_IsNumber(pt) && (int)pt->valuedouble == want_pt, "CLI turn %d prompt tokens", k);
        ctx_prev = cJSON_IsNumber(ct) ? (int)ct->valuedouble : -1;
        cJSON_Delete(j);
        if (!nl) break;
        line = nl + 1;
    }
    free(out);

    /* bad files: reported, chat goes on */
    f = fopen(script, "w");
    fprintf(f, "/image %s/nope.png\n/image %s/config.json\n/image\nHello\n/exit\n", tmp, g_dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s' -n 3 --temp 0 --device cpu --json < '%s' 2>&1", bin, g_dir, script);
    out = run(cmd, &rc);
    CHECK(rc == 0 && strstr(out, "cannot attach the image") && strstr(out, "nope.png") && strstr(out, "config.json") &&
          strstr(out, "\"images\":[]") && strstr(out, "\"reply\""), "bad images: rc %d: %s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s' --image '%s/config.json' -p hi --device cpu 2>&1", bin, g_dir, g_dir);
    out = run(cmd, &rc);
    CHECK(rc == 1 && strstr(out, "cannot attach the image"), "-p with a bad image: rc %d: %s", rc, out);
    free(out);
    /* text-only model: /image refused, the chat goes on */
    f = fopen(script, "w");
    fprintf(f, "/image %s\nHello\n", g_img[0]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s/qwen2-tiny' -n 3 --temp 0 --kv bf16 --device cpu < '%s' 2>&1", bin,
             g_models, script);
    out = run(cmd, &rc);
    CHECK(rc == 0 && strstr(out, "takes no images") && strstr(out, "generated"), "text model /image: rc %d: %s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s/qwen2-tiny' --image '%s' -p hi --device cpu 2>&1", bin, g_models, g_img[0]);
    out = run(cmd, &rc);
    CHECK(rc == 1 && strstr(out, "Qwen2.5-Omni"), "text model --image: rc %d: %s", rc, out);
    free(out);
    /* text-only chat on omni-tiny: the multimodal path prints what the session path prints */
    f = fopen(script, "w");
    fprintf(f, "Hello there\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s' -n 8 --temp 0 --device cpu < '%s' 2>/dev/null", bin, g_dir, script);
    out = run(cmd, &rc);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s' -n 8 --temp 0 --device cpu -p 'Hello there' 2>/dev/null", bin, g_dir);
    int rc2;
    char *out2 = run(cmd, &rc2);
    CHECK(rc == 0 && rc2 == 0 && !strcmp(out, out2), "text-only reply differs: '%s' vs '%s'", out, out2);
    free(out);
    free(out2);
    /* audio on omni-tiny (smoke: runs, counts audio tokens) */
    f = fopen(script, "w");
    fprintf(f, "/audio %s/audio_golden.wav\nWhat do you hear?\n/image %s\nAnd now?\n", g_dir, g_img[1]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s' -n 3 --temp 0 --device cpu --json < '%s' 2>/dev/null", bin, g_dir, script);
    out = run(cmd, &rc);
    {
        char *nl = strchr(out, '\n');
        cJSON *j1 = nl ? cJSON_ParseWithLength(out, (size_t)(nl - out)) : NULL;
        const cJSON *at = j1 ? cJSON_GetObjectItem(j1, "audio_tokens") : NULL;
        CHECK(rc == 0 && cJSON_IsNumber(at) && at->valuedouble > 0 && nl && strstr(nl, "\"image_tokens\":4"),
              "audio chat: rc %d: %s", rc, out);
        cJSON_Delete(j1);
    }
    free(out);
    /* vl-tiny: images yes, audio no */
    f = fopen(script, "w");
    fprintf(f, "/audio %s/audio_golden.wav\n/image %s\nWhat is it?\n/image %s\nAnd this?\n", g_dir, g_img[0], g_img[1]);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s/oscar' chat -m '%s/vl-tiny' -n 3 --temp 0 --device cpu --json < '%s' 2>&1", bin, g_models,
             script);
    out = run(cmd, &rc);
    CHECK(rc == 0 && strstr(out, "no audio input") && strstr(out, "\"image_tokens\":12") && strstr(out, "\"image_tokens\":4"),
          "vl-tiny chat: rc %d: %s", rc, out);
    free(out);
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS"), *bin = getenv("OSC_BIN"), *tmp = getenv("OSC_TEST_TMP");
    snprintf(g_models, sizeof g_models, "%s", models ? models : "tests/models");
    snprintf(g_dir, sizeof g_dir, "%s/omni-tiny", g_models);
    snprintf(g_img[0], sizeof g_img[0], "%s/vqa_image.png", g_dir);
    snprintf(g_img[1], sizeof g_img[1], "%s/../data/images/mixed_60x45.png", g_models);
    g_img[2][0] = 0;
    char gp[1200];
    snprintf(gp, sizeof gp, "%s/golden_mmchat.safetensors", g_dir);
    osc_st *g = NULL;
    CHECK(osc_st_open(gp, &g) == OSC_OK, "%s: %s", gp, osc_last_error());
    if (!g) return check_done("test_mmchat");
    test_lib(g);
    if (bin) test_cli(g, bin, tmp ? tmp : "/tmp");
    else printf("OSC_BIN not set: CLI tests skipped\n");
    osc_st_close(g);
    return check_done("test_mmchat");
}
