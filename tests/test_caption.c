/* `oscar caption` end to end on tests/models/omni-tiny (binary from $OSC_BIN):
 *   - the committed clips + a corrupt file + a missing file: one valid JSON line each, with the
 *     keys file/caption/tokens/seconds/error; error lines for the bad ones, the batch goes on;
 *   - the greedy caption ids equal transformers' greedy tokens computed by
 *     tools/golden/make_video_goldens.py (video, video + audio, and the MPEG-4 clip);
 *   - resume: a second run on the same --out skips the videos already captioned and retries
 *     the failed ones;
 *   - --batch 2 over three videos (continuous batching, a slot refilled when a caption ends)
 *     gives the same captions as --batch 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "core/safetensors.h"

static char g_bin[1024], g_model[1100], g_tmp[1024];

static int run(const char *args) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/oscar' caption -m '%s' --device cpu --temp 0 --repeat-penalty 1 --ids %s 2>>'%s/caption_stderr.txt'",
             g_tmp, g_bin, g_model, args, g_tmp);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int copy(const char *src, const char *dst) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    int ok = a && b;
    char buf[65536];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b) fclose(b);
    return ok ? 0 : -1;
}

typedef struct line { char file[256]; char *caption; int tokens; int err; int ids[64]; int n_ids; } line;

/* Parse a JSONL file; returns the number of lines (-1 if any line is not a valid result). */
static int read_lines(const char *name, line *out, int max) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[65536];
    int n = 0, bad = 0;
    while (fgets(buf, sizeof buf, f)) {
        size_t k = strlen(buf);
        if (!k || buf[k - 1] != '\n') bad = 1; /* every line complete */
        cJSON *j = cJSON_Parse(buf);
        const cJSON *fl = cJSON_GetObjectItem(j, "file"), *cp = cJSON_GetObjectItem(j, "caption"),
                    *tk = cJSON_GetObjectItem(j, "tokens"), *sc = cJSON_GetObjectItem(j, "seconds"),
                    *er = cJSON_GetObjectItem(j, "error"), *ids = cJSON_GetObjectItem(j, "ids");
        if (!j || !cJSON_IsString(fl) || !cJSON_IsNumber(tk) || !cJSON_IsNumber(sc) || !er || !cp ||
            !(cJSON_IsNull(er) ? cJSON_IsString(cp) : (cJSON_IsString(er) && cJSON_IsNull(cp)))) {
            fprintf(stderr, "bad line in %s: %s", name, buf);
            bad = 1;
        } else if (n < max) {
            line *l = &out[n++];
            memset(l, 0, sizeof *l);
            snprintf(l->file, sizeof l->file, "%s", fl->valuestring);
            l->caption = cJSON_IsString(cp) ? strdup(cp->valuestring) : NULL;
            l->tokens = (int)tk->valuedouble;
            l->err = !cJSON_IsNull(er);
            if (cJSON_IsArray(ids))
                for (const cJSON *e = ids->child; e && l->n_ids < 64; e = e->next) l->ids[l->n_ids++] = (int)e->valuedouble;
        }
        cJSON_Delete(j);
    }
    fclose(f);
    return bad ? -1 : n;
}
static void free_lines(line *l, int n) {
    for (int i = 0; i < n; i++) free(l[i].caption);
}
static const line *find(const line *l, int n, const char *file) {
    for (int i = 0; i < n; i++)
        if (!strcmp(l[i].file, file)) return &l[i];
    return NULL;
}
static int count(const line *l, int n, const char *file) {
    int c = 0;
    for (int i = 0; i < n; i++) c += !strcmp(l[i].file, file);
    return c;
}
static int same_ids(const line *l, const osc_st_tensor *t) {
    if (!l || !t || l->n_ids != (int)t->shape[0]) return 0;
    for (int i = 0; i < l->n_ids; i++)
        if (l->ids[i] != ((const int32_t *)t->data)[i]) return 0;
    return 1;
}

int main(void) {
    const char *bin = getenv("OSC_BIN"), *models = getenv("OSC_TEST_MODELS"), *tmp = getenv("OSC_TEST_TMP");
    if (!bin) {
        printf("OSC_BIN not set: test_caption skipped\n");
        return check_done("test_caption");
    }
    if (!models) models = "tests/models";
    if (!tmp) tmp = "/tmp";
    snprintf(g_bin, sizeof g_bin, "%s", bin);
    snprintf(g_model, sizeof g_model, "%s/omni-tiny", models);
    snprintf(g_tmp, sizeof g_tmp, "%s/caption", tmp);
    char cmd[8192], p[1300], src[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", g_tmp, g_tmp);
    if (system(cmd) != 0) { CHECK(0, "tmp dir"); return check_done("test_caption"); }
    snprintf(cmd, sizeof cmd, "'%s/oscar' caption --help >/dev/null", g_bin);
    int rc = system(cmd);
    if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
        CHECK(0, "oscar caption --help: rc %d", rc);
        return check_done("test_caption");
    }
    snprintf(p, sizeof p, "%s/../data/video/goldens.safetensors", models);
    osc_st *g = NULL;
    CHECK(osc_st_open(p, &g) == OSC_OK, "goldens: %s", osc_last_error());
    if (!g) return check_done("test_caption");
    const osc_st_tensor *gv = osc_st_get(g, "clip.v.greedy"), *gva = osc_st_get(g, "clip.va.greedy"),
                        *g2 = osc_st_get(g, "clip2.v.greedy");
    CHECK(gv && gva && g2, "greedy goldens");
    const int N = gv ? (int)gv->shape[0] : 10;
    /* inputs: a.mp4 and c.mp4 = clip.mp4, b.mp4 = clip2.mp4, a corrupt one, a missing one */
    const char *names[][2] = {{"clip.mp4", "a.mp4"}, {"clip2.mp4", "b.mp4"}, {"clip.mp4", "c.mp4"}};
    for (int i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/../data/video/%s", models, names[i][0]);
        snprintf(p, sizeof p, "%s/%s", g_tmp, names[i][1]);
        CHECK(copy(src, p) == 0, "copy %s", src);
    }
    snprintf(p, sizeof p, "%s/corrupt.mp4", g_tmp);
    FILE *f = fopen(p, "wb");
    if (f) {
        for (int i = 0; i < 5000; i++) fputc((i * 37 + 11) & 255, f);
        fclose(f);
    }
    line L[16];
    char args[512];
    /* 1. good + corrupt + missing; the good caption equals transformers' greedy tokens */
    snprintf(args, sizeof args, "-n %d --batch 1 a.mp4 corrupt.mp4 missing.mp4 --out run1.jsonl", N);
    rc = run(args);
    CHECK(rc == 0, "run 1 exit %d", rc);
    int n = read_lines("run1.jsonl", L, 16);
    CHECK(n == 3, "run 1: %d valid lines", n);
    if (n > 0) {
        const line *a = find(L, n, "a.mp4"), *c = find(L, n, "corrupt.mp4"), *m = find(L, n, "missing.mp4");
        CHECK(a && !a->err && a->tokens == N && same_ids(a, gv), "a.mp4: caption ids differ from transformers' greedy");
        CHECK(c && c->err && !c->caption, "corrupt.mp4 has an error line");
        CHECK(m && m->err && !m->caption, "missing.mp4 has an error line");
        if (a) printf("a.mp4: %d tokens %s transformers' greedy\n", a->tokens, same_ids(a, gv) ? "equal to" : "DIFFERENT FROM");
    }
    free_lines(L, n > 0 ? n : 0);
    /* 2. resume: a.mp4 is skipped, b.mp4 is new, the failed ones are tried again */
    snprintf(args, sizeof args, "-n %d --batch 2 a.mp4 b.mp4 corrupt.mp4 missing.mp4 --out run1.jsonl", N);
    rc = run(args);
    CHECK(rc == 0, "run 2 exit %d", rc);
    n = read_lines("run1.jsonl", L, 16);
    CHECK(n == 6, "resume: %d lines (3 + b + corrupt + missing)", n);
    if (n > 0) {
        CHECK(count(L, n, "a.mp4") == 1, "a.mp4 captioned once");
        CHECK(count(L, n, "b.mp4") == 1, "b.mp4 captioned once");
        const line *b = find(L, n, "b.mp4");
        CHECK(b && !b->err && same_ids(b, g2), "b.mp4 (MPEG-4): caption ids differ from transformers' greedy");
    }
    free_lines(L, n > 0 ? n : 0);
    /* nothing left: a third run writes nothing new for the good ones */
    rc = run("-n 4 a.mp4 b.mp4 --out run1.jsonl");
    CHECK(rc == 0, "run 3 exit %d", rc);
    n = read_lines("run1.jsonl", L, 16);
    CHECK(n == 6, "all done: still %d lines", n);
    free_lines(L, n > 0 ? n : 0);
    /* 3. --batch 2 over three videos == --batch 1 (list file input, different -n per... same -n) */
    snprintf(p, sizeof p, "%s/list.txt", g_tmp);
    f = fopen(p, "w");
    if (f) {
        fputs("# videos\na.mp4\n\nb.mp4\nc.mp4\n", f);
        fclose(f);
    }
    rc = run("-n 12 --batch 1 --list list.txt > b1.jsonl");
    CHECK(rc == 0, "batch 1 exit %d", rc);
    rc = run("-n 12 --batch 2 --list list.txt > b2.jsonl");
    CHECK(rc == 0, "batch 2 exit %d", rc);
    line L1[8], L2[8];
    int n1 = read_lines("b1.jsonl", L1, 8), n2 = read_lines("b2.jsonl", L2, 8);
    CHECK(n1 == 3 && n2 == 3, "batch runs: %d and %d lines", n1, n2);
    for (int i = 0; i < n1 && n2 == 3; i++) {
        const line *o = find(L2, n2, L1[i].file);
        int same = o && !L1[i].err && !o->err && o->n_ids == L1[i].n_ids &&
                   !memcmp(o->ids, L1[i].ids, sizeof(int) * (size_t)o->n_ids) && !strcmp(o->caption, L1[i].caption);
        CHECK(same, "%s: --batch 2 caption differs from --batch 1", L1[i].file);
    }
    const line *a1 = find(L1, n1 > 0 ? n1 : 0, "a.mp4"), *c1 = find(L1, n1 > 0 ? n1 : 0, "c.mp4");
    CHECK(a1 && c1 && a1->n_ids == c1->n_ids && !memcmp(a1->ids, c1->ids, sizeof(int) * (size_t)a1->n_ids), "a == c (same clip)");
    free_lines(L1, n1 > 0 ? n1 : 0);
    free_lines(L2, n2 > 0 ? n2 : 0);
    /* 4. video + audio (use_audio_in_video) */
    snprintf(args, sizeof args, "-n %d --use-audio a.mp4 > va.jsonl", N);
    rc = run(args);
    CHECK(rc == 0, "use-audio exit %d", rc);
    n = read_lines("va.jsonl", L, 16);
    CHECK(n == 1 && !L[0].err && same_ids(&L[0], gva), "a.mp4 with audio: caption ids differ from transformers' greedy");
    free_lines(L, n > 0 ? n : 0);
    /* 5. usage errors and --json-errors on a bad model */
    snprintf(cmd, sizeof cmd, "'%s/oscar' caption a.mp4 2>/dev/null", g_bin);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "no model: usage error");
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s/oscar' caption -m '%s' --json-errors a.mp4 > fatal.jsonl 2>/dev/null", g_tmp, g_bin, g_tmp);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "bad model: exit 1");
    snprintf(p, sizeof p, "%s/fatal.jsonl", g_tmp);
    f = fopen(p, "r");
    char buf[4096] = {0};
    if (f) {
        if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
        fclose(f);
    }
    cJSON *j = cJSON_Parse(buf);
    CHECK(j && cJSON_IsString(cJSON_GetObjectItem(j, "error")) && cJSON_IsNull(cJSON_GetObjectItem(j, "file")),
          "--json-errors line: %s", buf);
    cJSON_Delete(j);
    osc_st_close(g);
    return check_done("test_caption");
}
