/* Bad checkpoints and prompts: each gives a clear message naming the file and problem and a
 * non-OK status (the CLI: a non-zero exit), never a crash. Damaged copies of the tiny qwen2
 * model are made in $OSC_TEST_TMP. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/fileio.h"
#include "core/safetensors.h"
#include "oscar.h"
#include "tests/check.h"

static char g_src[1024], g_tmp[1024];

static int collect(const char *text, int32_t id, void *user) {
    (void)id;
    strncat((char *)user, text, 4000 - strlen((char *)user));
    return 0;
}

static int copy_file(const char *from, const char *to, long truncate_to) {
    char *buf;
    size_t n;
    if (osc_read_file(from, 1 << 26, &buf, &n) != OSC_OK) return -1;
    if (truncate_to >= 0 && (size_t)truncate_to < n) n = (size_t)truncate_to;
    FILE *f = fopen(to, "wb");
    if (!f) { free(buf); return -1; }
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    return 0;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) { fputs(text, f); fclose(f); }
}

/* A fresh copy of the tiny model in tmp/<name>; returns its path. */
static const char *fresh(const char *name) {
    static char dir[1200];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
    mkdir(dir, 0755);
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"};
    for (int i = 0; i < 4; i++) {
        char a[1300], b[1300];
        snprintf(a, sizeof a, "%s/%s", g_src, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        copy_file(a, b, -1);
    }
    return dir;
}

static void expect_load_fails(const char *dir, const char *what, const char *needle) {
    osc_model *m = NULL;
    osc_model_params p = osc_model_default_params();
    osc_status s = osc_model_load(dir, &p, &m);
    CHECK(s != OSC_OK, "%s: load succeeded", what);
    CHECK(m == NULL, "%s: handle returned on failure", what);
    CHECK(strstr(osc_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", what, osc_last_error(), needle);
    fprintf(stderr, "%-28s -> %s\n", what, osc_last_error());
    osc_model_free(m);
}

/* Rewrite one config.json field by textual replacement. */
static void patch_config(const char *dir, const char *from, const char *to) {
    char path[1300], *buf;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (osc_read_file(path, 1 << 20, &buf, NULL) != OSC_OK) return;
    char *p = strstr(buf, from);
    CHECK(p != NULL, "config.json has no '%s' to patch", from);
    if (p) {
        FILE *f = fopen(path, "wb");
        fwrite(buf, 1, (size_t)(p - buf), f);
        fputs(to, f);
        fputs(p + strlen(from), f);
        fclose(f);
    }
    free(buf);
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS");
    const char *tmp = getenv("OSC_TEST_TMP");
    if (!models) models = "tests/models";
    if (!tmp) tmp = "/tmp";
    snprintf(g_src, sizeof g_src, "%s/qwen2-tiny", models);
    snprintf(g_tmp, sizeof g_tmp, "%s/bad_input", tmp);
    mkdir(g_tmp, 0755);
    char path[1400], src[1400];

    expect_load_fails("/nonexistent/model", "missing folder", "/nonexistent/model");

    const char *d = fresh("truncated");
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    snprintf(src, sizeof src, "%s/model.safetensors", g_src);
    copy_file(src, path, 5000);
    expect_load_fails(d, "truncated safetensors", "model.safetensors");

    d = fresh("header_past_end");
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    { FILE *f = fopen(path, "r+b"); unsigned char h[8] = {0xff, 0xff, 0xff, 0x00, 0, 0, 0, 0}; fwrite(h, 1, 8, f); fclose(f); }
    expect_load_fails(d, "header length past the end", "model.safetensors");

    d = fresh("bad_shape");
    patch_config(d, "\"intermediate_size\": 128", "\"intermediate_size\": 96");
    expect_load_fails(d, "shape contradicts config", "shape");

    d = fresh("missing_tensor");
    {
        osc_st *st;
        snprintf(src, sizeof src, "%s/model.safetensors", g_src);
        if (osc_st_open(src, &st) == OSC_OK) {
            int n = osc_st_count(st), k = 0;
            const char **names = calloc((size_t)n, sizeof *names);
            osc_dtype *dts = calloc((size_t)n, sizeof *dts);
            int *nds = calloc((size_t)n, sizeof *nds);
            int64_t (*shapes)[OSC_MAX_DIMS] = calloc((size_t)n, sizeof *shapes);
            const void **datas = calloc((size_t)n, sizeof *datas);
            for (int i = 0; i < n; i++) {
                const osc_st_tensor *t = osc_st_at(st, i);
                if (strstr(t->name, "layers.1.mlp.up_proj")) continue;
                names[k] = t->name; dts[k] = t->dt; nds[k] = t->nd; datas[k] = t->data;
                memcpy(shapes[k], t->shape, sizeof shapes[k]);
                k++;
            }
            CHECK(k == n - 1, "tensor to drop not found");
            snprintf(path, sizeof path, "%s/model.safetensors", d);
            CHECK(osc_st_write(path, k, names, dts, nds, (const int64_t (*)[OSC_MAX_DIMS])shapes, datas) == OSC_OK, "%s", osc_last_error());
            free(names); free(dts); free(nds); free(shapes); free(datas);
            osc_st_close(st);
        }
    }
    expect_load_fails(d, "missing tensor", "layers.1.mlp.up_proj.weight");

    d = fresh("bad_config_json");
    snprintf(path, sizeof path, "%s/config.json", d);
    write_text(path, "{\"model_type\": \"qwen2\", \"hidden_size\": 64,");
    expect_load_fails(d, "malformed config.json", "config.json");

    d = fresh("bad_tokenizer_json");
    snprintf(path, sizeof path, "%s/tokenizer.json", d);
    write_text(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": [1,2,3]}}");
    expect_load_fails(d, "malformed tokenizer.json", "tokenizer.json");

    /* a prompt longer than the context: a clear error from generate, then the session still works */
    {
        osc_model *m = NULL;
        osc_model_params p = osc_model_default_params();
        CHECK(osc_model_load(g_src, &p, &m) == OSC_OK, "%s", osc_last_error());
        if (m) {
            osc_session_params sp = osc_session_default_params();
            sp.n_ctx = 32;
            osc_session *s = NULL;
            CHECK(osc_session_new(m, &sp, &s) == OSC_OK, "%s", osc_last_error());
            char longp[4000];
            memset(longp, 0, sizeof longp);
            for (int i = 0; i < 60; i++) strcat(longp, "word after word ");
            CHECK(osc_session_add_message(s, "user", longp) == OSC_OK, "%s", osc_last_error());
            osc_sampling_params g = osc_sampling_default_params(m);
            g.max_tokens = 4;
            osc_status st = osc_session_generate(s, &g, NULL, NULL, NULL);
            CHECK(st == OSC_ERR_CONTEXT && strstr(osc_last_error(), "context"), "overlong prompt: %d %s", st, osc_last_error());
            fprintf(stderr, "%-28s -> %s\n", "prompt longer than context", osc_last_error());
            osc_session_free(s);
            sp.n_ctx = 256;
            CHECK(osc_session_new(m, &sp, &s) == OSC_OK, "%s", osc_last_error());
            CHECK(osc_session_add_message(s, "user", "hi") == OSC_OK, "%s", osc_last_error());
            osc_gen_stats gs;
            char reply[4096] = "";
            CHECK(osc_session_generate(s, &g, collect, reply, &gs) == OSC_OK && gs.gen_tokens > 0, "%s", osc_last_error());
            CHECK(osc_session_add_message(s, "user", "again") == OSC_OK, "%s", osc_last_error());
            CHECK(osc_session_generate(s, &g, NULL, NULL, &gs) == OSC_OK, "second turn: %s", osc_last_error());
            int incremental = gs.prompt_tokens;
            /* the same conversation in a fresh session computes every prompt token */
            osc_session *s2 = NULL;
            CHECK(osc_session_new(m, &sp, &s2) == OSC_OK, "%s", osc_last_error());
            osc_session_add_message(s2, "user", "hi");
            osc_session_add_message(s2, "assistant", reply);
            osc_session_add_message(s2, "user", "again");
            CHECK(osc_session_generate(s2, &g, NULL, NULL, &gs) == OSC_OK, "%s", osc_last_error());
            CHECK(incremental > 0 && incremental < gs.prompt_tokens / 2,
                  "second turn recomputed %d of %d prompt tokens", incremental, gs.prompt_tokens);
            fprintf(stderr, "%-28s -> %d of %d prompt tokens computed\n", "second chat turn", incremental, gs.prompt_tokens);
            osc_session_free(s2);
            osc_session_free(s);
            osc_model_free(m);
        }
    }

    /* the CLI: non-zero exit and a message on stderr, never a crash */
    const char *bin = getenv("OSC_BIN");
    if (bin) {
        char cmd[4000];
        struct { const char *args; int want; } cases[] = {
            {"chat -m /nonexistent -p hi", 1},
            {"chat -p hi", 2},
            {"chat -m x --temp abc", 2},
            {"chat -m x --bogus", 2},
            {"frobnicate", 2},
            {"chat -m MODEL --kv bogus -p hi", 1},
            {"chat -m MODEL --kv oscar2 -p hi", 1}, /* qwen2-tiny: head_dim 16 cannot be quantised */
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char args[1500];
            const char *mm = strstr(cases[i].args, "MODEL");
            if (mm) snprintf(args, sizeof args, "%.*s%s%s", (int)(mm - cases[i].args), cases[i].args, g_src, mm + 5);
            else snprintf(args, sizeof args, "%s", cases[i].args);
            snprintf(cmd, sizeof cmd, "%s/oscar %s >/dev/null 2>%s/cli_err.txt", bin, args, g_tmp);
            int r = system(cmd);
            int code = WIFEXITED(r) ? WEXITSTATUS(r) : -1;
            CHECK(code == cases[i].want, "oscar %s: exit %d, want %d", cases[i].args, code, cases[i].want);
        }
        snprintf(cmd, sizeof cmd, "%s/oscar chat -m %s/truncated -p hi >/dev/null 2>%s/cli_err.txt", bin, g_tmp, g_tmp);
        int r = system(cmd);
        CHECK(WIFEXITED(r) && WEXITSTATUS(r) == 1, "CLI on a truncated checkpoint: status %d", r);
        char *err = NULL;
        snprintf(path, sizeof path, "%s/cli_err.txt", g_tmp);
        osc_read_file(path, 1 << 16, &err, NULL);
        CHECK(err && strstr(err, "model.safetensors"), "CLI error lacks the file name: %s", err ? err : "(none)");
        free(err);
        snprintf(cmd, sizeof cmd, "%s/oscar chat -m %s -p 'Hello there' -n 8 --json --device cpu > %s/cli_out.json 2>/dev/null", bin, g_src, g_tmp);
        r = system(cmd);
        CHECK(WIFEXITED(r) && WEXITSTATUS(r) == 0, "oscar chat --json failed: %d", r);
        char *js = NULL;
        snprintf(path, sizeof path, "%s/cli_out.json", g_tmp);
        osc_read_file(path, 1 << 20, &js, NULL);
        CHECK(js && strstr(js, "\"reply\"") && strstr(js, "\"gen_tokens\""), "--json output: %s", js ? js : "(none)");
        free(js);
    }
    return check_done("test_bad_input");
}
