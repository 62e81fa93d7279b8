/* Tokenizer tests: encode/decode/streaming decode against goldens made with the HuggingFace
 * `tokenizers` library (tools/golden/make_tokenizer_goldens.py) for two tiny trained tokenizers
 * and the real Qwen2.5/Qwen3 tokenizer; bad files and bad input give clean errors.
 * Env: OSC_TEST_MODELS (tests/models), OSC_TEST_TMP (scratch dir), OSC_QWEN_TOKENIZER (the real
 * tokenizer.json; when set the file must exist). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "core/fileio.h"
#include "llm/tokenizer.h"
#include "tests/check.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int json_ids(const cJSON *arr, int32_t **ids) {
    int n = cJSON_GetArraySize(arr);
    *ids = malloc(sizeof **ids * (size_t)(n ? n : 1));
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr)(*ids)[i++] = (int32_t)x->valuedouble;
    return n;
}

/* Index of the first difference, or -1 when equal. */
static int first_diff(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb;
    for (int i = 0; i < n; i++)
        if (a[i] != b[i]) return i;
    return na == nb ? -1 : n;
}

static char *stream_decode(const osc_tokenizer *t, const int32_t *ids, int n, int skip) {
    size_t cap = 64, len = 0;
    char *s = malloc(cap);
    osc_detok d;
    osc_detok_init(&d);
    for (int i = 0; i <= n; i++) {
        const char *o = i < n ? osc_detok_push(&d, t, ids[i], skip) : osc_detok_flush(&d);
        size_t l = strlen(o);
        while (len + l + 1 > cap) s = realloc(s, cap *= 2);
        memcpy(s + len, o, l);
        len += l;
    }
    s[len] = 0;
    return s;
}

static void check_cases(const osc_tokenizer *t, const cJSON *cases, const char *name) {
    int idx = 0, ok_cases = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const char *want_dec = cJSON_GetObjectItem(c, "decoded")->valuestring;
        int32_t *want, *want_plain = NULL;
        int nw = json_ids(cJSON_GetObjectItem(c, "ids"), &want), nwp = nw;
        const cJSON *plain = cJSON_GetObjectItem(c, "ids_plain");
        if (plain) nwp = json_ids(plain, &want_plain);
        int32_t *ids = NULL;
        int n = 0;
        osc_status st = osc_tokenizer_encode(t, text, strlen(text), 1, &ids, &n);
        int d = st == OSC_OK ? first_diff(ids, n, want, nw) : 0;
        int good = st == OSC_OK && d < 0;
        CHECK(st == OSC_OK && d < 0, "%s case %d (%.40s...): status %d, %d ids vs %d golden, "
              "first diff at %d (got %d want %d)", name, idx, text, st, n, nw, d,
              d >= 0 && d < n ? ids[d] : -1, d >= 0 && d < nw ? want[d] : -1);
        /* decode the golden ids */
        char *dec = NULL;
        st = osc_tokenizer_decode(t, want, nw, 0, &dec);
        /* decode keeps invalid UTF-8 as bytes where HF writes U+FFFD; the streaming decoder
         * below writes U+FFFD and is compared in all cases */
        int has_fffd = strstr(want_dec, "\xef\xbf\xbd") != NULL;
        int dec_ok = st == OSC_OK && (has_fffd || strcmp(dec, want_dec) == 0);
        good &= dec_ok;
        CHECK(dec_ok, "%s case %d: decode differs", name, idx);
        char *sd = stream_decode(t, want, nw, 0);
        good &= strcmp(sd, want_dec) == 0;
        CHECK(strcmp(sd, want_dec) == 0, "%s case %d: streaming decode differs", name, idx);
        free(sd);
        free(dec);
        /* special tokens as plain text */
        int32_t *pids = NULL;
        int np = 0;
        st = osc_tokenizer_encode(t, text, strlen(text), 0, &pids, &np);
        int nspecial = 0;
        for (int i = 0; st == OSC_OK && i < np; i++) nspecial += osc_tokenizer_is_special(t, pids[i]);
        const int32_t *wp = want_plain ? want_plain : want;
        d = st == OSC_OK ? first_diff(pids, np, wp, nwp) : 0;
        good &= st == OSC_OK && d < 0 && nspecial == 0;
        CHECK(st == OSC_OK && d < 0 && nspecial == 0,
              "%s case %d: parse_special=0 differs at %d (%d special ids)", name, idx, d, nspecial);
        ok_cases += good;
        free(pids);
        free(ids);
        free(want);
        free(want_plain);
        idx++;
    }
    fprintf(stderr, "%s: %d/%d golden cases exact\n", name, ok_cases, idx);
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Loading `data` must fail with `want` (or any error when want is OSC_OK) naming the path. */
static void expect_load_error(const char *tmp, const char *name, const char *data, size_t n,
                              osc_status want) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    if (data) write_file(path, data, n);
    osc_tokenizer *t = NULL;
    osc_status st = osc_tokenizer_load(path, &t);
    CHECK(st != OSC_OK && t == NULL, "%s: loaded a bad file", name);
    if (want != OSC_OK) CHECK(st == want, "%s: status %d, want %d (%s)", name, st, want,
                              osc_last_error());
    CHECK(strstr(osc_last_error(), path) != NULL, "%s: error does not name the path: %s", name,
          osc_last_error());
    osc_tokenizer_free(t);
}

static void bad_files(const char *tmp, const char *tiny_path) {
    mkdir(tmp, 0777);
    expect_load_error(tmp, "does_not_exist.json", NULL, 0, OSC_ERR_IO);
    const char *malformed = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,";
    expect_load_error(tmp, "malformed.json", malformed, strlen(malformed), OSC_ERR_FORMAT);
    const char *nomodel = "{\"version\": \"1.0\", \"added_tokens\": []}";
    expect_load_error(tmp, "nomodel.json", nomodel, strlen(nomodel), OSC_ERR_FORMAT);
    const char *novocab = "{\"model\": {\"type\": \"BPE\", \"merges\": []},"
                          " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    expect_load_error(tmp, "novocab.json", novocab, strlen(novocab), OSC_ERR_FORMAT);
    const char *dupid = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0},"
                        " \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    expect_load_error(tmp, "dupid.json", dupid, strlen(dupid), OSC_ERR_FORMAT);
    const char *negid = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1},"
                        " \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    expect_load_error(tmp, "negid.json", negid, strlen(negid), OSC_ERR_FORMAT);
    const char *hugeid = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 4000000000},"
                         " \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    expect_load_error(tmp, "hugeid.json", hugeid, strlen(hugeid), OSC_ERR_FORMAT);
    const char *badmerge = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1},"
                           " \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    expect_load_error(tmp, "badmerge.json", badmerge, strlen(badmerge), OSC_ERR_FORMAT);
    const char *badadded = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                           " \"pre_tokenizer\": {\"type\": \"ByteLevel\"},"
                           " \"added_tokens\": [{\"id\": \"x\", \"content\": \"<s>\"}]}";
    expect_load_error(tmp, "badadded.json", badadded, strlen(badadded), OSC_ERR_FORMAT);
    const char *wordpiece = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {\"a\": 0}}}";
    expect_load_error(tmp, "wordpiece.json", wordpiece, strlen(wordpiece), OSC_ERR_UNSUPPORTED);
    const char *badre = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                        " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                        "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"},"
                        " \"behavior\": \"Isolated\", \"invert\": false},"
                        "{\"type\": \"ByteLevel\", \"use_regex\": false}]}}";
    expect_load_error(tmp, "badregex.json", badre, strlen(badre), OSC_ERR_UNSUPPORTED);
    CHECK(strstr(osc_last_error(), "\\w+") != NULL, "unsupported regex not named: %s",
          osc_last_error());

    /* truncations and byte flips of a real file: errors or loads, never a crash */
    char *data = NULL;
    size_t n = 0;
    if (osc_read_file(tiny_path, 1 << 24, &data, &n) != OSC_OK) {
        CHECK(0, "cannot read %s", tiny_path);
        return;
    }
    expect_load_error(tmp, "truncated.json", data, n / 2, OSC_ERR_FORMAT);
    char path[1024];
    snprintf(path, sizeof path, "%s/mutated.json", tmp);
    int loaded = 0, failed = 0;
    uint32_t rng = 12345;
    for (int it = 0; it < 60; it++) {
        char *m = malloc(n);
        memcpy(m, data, n);
        size_t len = n;
        if (it < 30) len = (size_t)((double)n * it / 30.0);
        else
            for (int k = 0; k < 4; k++) {
                rng = rng * 1664525u + 1013904223u;
                m[(rng >> 8) % n] = (char)(rng >> 24);
            }
        write_file(path, m, len);
        osc_tokenizer *t = NULL;
        if (osc_tokenizer_load(path, &t) == OSC_OK) {
            loaded++;
            int32_t *ids = NULL;
            int ni = 0;
            osc_tokenizer_encode(t, "hello world 123", 15, 1, &ids, &ni);
            free(ids);
            osc_tokenizer_free(t);
        } else {
            failed++;
        }
        free(m);
    }
    CHECK(failed >= 30, "truncated files must fail (%d failed, %d loaded)", failed, loaded);
    free(data);
}

static void invalid_utf8(const osc_tokenizer *t) {
    const char *bad[] = {"\xff", "abc\xc3", "\xed\xa0\x80", "\xc0\xaf", "ok \xe6\x97"};
    for (int i = 0; i < 5; i++) {
        int32_t *ids = (int32_t *)1;
        int n = -1;
        osc_status st = osc_tokenizer_encode(t, bad[i], strlen(bad[i]), 1, &ids, &n);
        CHECK(st == OSC_ERR_INVALID_ARG && ids == NULL && n == 0, "invalid UTF-8 %d accepted", i);
    }
    int32_t *ids = NULL;
    int n = -1;
    CHECK(osc_tokenizer_encode(t, "", 0, 1, &ids, &n) == OSC_OK && n == 0, "empty text");
    free(ids);
}

/* Streaming decode of split and broken UTF-8, using the single-byte tokens. */
static void streaming(const osc_tokenizer *t) {
    int32_t byte_id[256];
    for (int b = 0; b < 256; b++) byte_id[b] = -1;
    for (int32_t id = 0; id < osc_tokenizer_vocab_size(t); id++) {
        size_t l;
        const char *s = osc_tokenizer_token_bytes(t, id, &l);
        if (s && l == 1 && byte_id[(uint8_t)s[0]] < 0) byte_id[(uint8_t)s[0]] = id;
    }
    int all = 1;
    for (int b = 0; b < 256; b++) all &= byte_id[b] >= 0;
    CHECK(all, "every byte has a token");
    if (!all) return;
    osc_detok d;
    osc_detok_init(&d);
    /* 日 = E6 97 A5 arrives byte by byte */
    CHECK(strcmp(osc_detok_push(&d, t, byte_id[0xE6], 0), "") == 0, "held 1");
    CHECK(strcmp(osc_detok_push(&d, t, byte_id[0x97], 0), "") == 0, "held 2");
    CHECK(strcmp(osc_detok_push(&d, t, byte_id[0xA5], 0), "\xe6\x97\xa5") == 0, "completed");
    /* broken: E6 then 'a' -> U+FFFD a (Python: b'\xe6a'.decode(errors='replace')) */
    osc_detok_push(&d, t, byte_id[0xE6], 0);
    CHECK(strcmp(osc_detok_push(&d, t, byte_id['a'], 0), "\xef\xbf\xbd" "a") == 0, "fffd a");
    CHECK(strcmp(osc_detok_push(&d, t, byte_id[0xFF], 0), "\xef\xbf\xbd") == 0, "ff");
    /* E6 97 then 'x': one U+FFFD for the maximal subpart */
    osc_detok_push(&d, t, byte_id[0xE6], 0);
    osc_detok_push(&d, t, byte_id[0x97], 0);
    CHECK(strcmp(osc_detok_push(&d, t, byte_id['x'], 0), "\xef\xbf\xbdx") == 0, "subpart");
    /* ED A0 (surrogate range): two U+FFFD */
    osc_detok_push(&d, t, byte_id[0xED], 0);
    CHECK(strcmp(osc_detok_push(&d, t, byte_id[0xA0], 0), "\xef\xbf\xbd\xef\xbf\xbd") == 0,
          "surrogate");
    /* incomplete at the end of the stream */
    osc_detok_push(&d, t, byte_id[0xF0], 0);
    osc_detok_push(&d, t, byte_id[0x9F], 0);
    CHECK(strcmp(osc_detok_flush(&d), "\xef\xbf\xbd") == 0, "flush");
    CHECK(strcmp(osc_detok_flush(&d), "") == 0, "flush twice");
    /* plain decode keeps the raw bytes */
    int32_t ids[2] = {byte_id[0xE6], byte_id['a']};
    char *s = NULL;
    CHECK(osc_tokenizer_decode(t, ids, 2, 0, &s) == OSC_OK && strcmp(s, "\xe6" "a") == 0,
          "decode keeps bytes");
    free(s);
    CHECK(strcmp(osc_detok_push(&d, t, -5, 0), "") == 0, "unknown id");
    CHECK(osc_tokenizer_token_bytes(t, -1, NULL) == NULL &&
          osc_tokenizer_token_bytes(t, osc_tokenizer_vocab_size(t), NULL) == NULL, "bad ids");
}

static void specials(const osc_tokenizer *t, const char *const *names, int n, int32_t first) {
    for (int i = 0; i < n; i++) {
        int32_t id = osc_tokenizer_token_id(t, names[i]);
        CHECK(id == first + i, "%s -> %d, want %d", names[i], id, first + i);
        CHECK(osc_tokenizer_is_special(t, id), "%s special", names[i]);
        size_t l;
        const char *b = osc_tokenizer_token_bytes(t, id, &l);
        CHECK(b && l == strlen(names[i]) && memcmp(b, names[i], l) == 0, "%s bytes", names[i]);
        char *s = NULL;
        int32_t two[2] = {id, id};
        CHECK(osc_tokenizer_decode(t, two, 2, 1, &s) == OSC_OK && s[0] == 0, "skip special");
        free(s);
        osc_detok d;
        osc_detok_init(&d);
        CHECK(strcmp(osc_detok_push(&d, t, id, 1), "") == 0, "stream skip special");
    }
    CHECK(osc_tokenizer_token_id(t, "no such token here") == -1, "unknown token string");
}

static osc_tokenizer *load_ok(const char *path) {
    osc_tokenizer *t = NULL;
    osc_status st = osc_tokenizer_load(path, &t);
    CHECK(st == OSC_OK, "load %s: %s", path, osc_last_error());
    return st == OSC_OK ? t : NULL;
}

int main(void) {
    const char *models = getenv("OSC_TEST_MODELS");
    const char *tmp = getenv("OSC_TEST_TMP");
    const char *real = getenv("OSC_QWEN_TOKENIZER");
    if (!models) models = "tests/models";
    if (!tmp) tmp = "/tmp";
    char path[1024], qpath[1024], lpath[1024];
    snprintf(path, sizeof path, "%s/tokenizer/goldens.json", models);
    snprintf(qpath, sizeof qpath, "%s/tokenizer/qwen-tiny/tokenizer.json", models);
    snprintf(lpath, sizeof lpath, "%s/tokenizer/llama3-tiny/tokenizer.json", models);
    char *gtext = NULL;
    size_t glen = 0;
    if (osc_read_file(path, 1 << 26, &gtext, &glen) != OSC_OK) {
        fprintf(stderr, "FAIL: %s\n", osc_last_error());
        return 1;
    }
    cJSON *g = cJSON_ParseWithLength(gtext, glen);
    free(gtext);
    if (!g) {
        fprintf(stderr, "FAIL: %s is not valid JSON\n", path);
        return 1;
    }

    osc_tokenizer *q = load_ok(qpath);
    if (q) {
        CHECK(osc_tokenizer_vocab_size(q) == 703, "qwen-tiny vocab %d", osc_tokenizer_vocab_size(q));
        const char *sp[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
        specials(q, sp, 3, 700);
        check_cases(q, cJSON_GetObjectItem(cJSON_GetObjectItem(g, "qwen-tiny"), "cases"),
                    "qwen-tiny");
        invalid_utf8(q);
        streaming(q);
        osc_tokenizer_free(q);
    }
    osc_tokenizer *l = load_ok(lpath);
    if (l) {
        const char *sp[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|eot_id|>"};
        specials(l, sp, 5, 700);
        check_cases(l, cJSON_GetObjectItem(cJSON_GetObjectItem(g, "llama3-tiny"), "cases"),
                    "llama3-tiny");
        osc_tokenizer_free(l);
    }
    /* plain ByteLevel(use_regex, add_prefix_space), and HF's added-token options */
    const char *variants[] = {"gpt2-tiny", "added-tiny"};
    for (int v = 0; v < 2; v++) {
        char vpath[1024];
        snprintf(vpath, sizeof vpath, "%s/tokenizer/%s/tokenizer.json", models, variants[v]);
        osc_tokenizer *vt = load_ok(vpath);
        if (!vt) continue;
        check_cases(vt, cJSON_GetObjectItem(cJSON_GetObjectItem(g, variants[v]), "cases"),
                    variants[v]);
        osc_tokenizer_free(vt);
    }

    if (real && *real) {
        struct stat sb;
        CHECK(stat(real, &sb) == 0, "OSC_QWEN_TOKENIZER=%s does not exist", real);
        double t0 = now_s();
        osc_tokenizer *r = stat(real, &sb) == 0 ? load_ok(real) : NULL;
        double t_load = now_s() - t0;
        if (r) {
            fprintf(stderr, "qwen-real: load %.3f s, vocab %d\n", t_load,
                    osc_tokenizer_vocab_size(r));
            CHECK(t_load < 5.0, "load took %.2f s", t_load);
            const char *sp[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
            specials(r, sp, 3, 151643);
            CHECK(osc_tokenizer_token_id(r, "Ġthe") == 279, "Ġthe -> %d",
                  osc_tokenizer_token_id(r, "Ġthe"));
            const cJSON *cases = cJSON_GetObjectItem(cJSON_GetObjectItem(g, "qwen-real"), "cases");
            t0 = now_s();
            check_cases(r, cases, "qwen-real");
            fprintf(stderr, "qwen-real: golden cases %.3f s\n", now_s() - t0);
            streaming(r);
            /* ~1 MB: the longest golden text repeated */
            const char *base = "";
            const cJSON *c;
            cJSON_ArrayForEach(c, cases) {
                const char *s = cJSON_GetObjectItem(c, "text")->valuestring;
                if (strlen(s) > strlen(base)) base = s;
            }
            size_t bl = strlen(base), reps = bl ? (1u << 20) / bl + 1 : 0, total = bl * reps;
            char *big = malloc(total + 1);
            for (size_t i = 0; i < reps; i++) memcpy(big + i * bl, base, bl);
            big[total] = 0;
            int32_t *ids = NULL;
            int n = 0;
            t0 = now_s();
            osc_status st = osc_tokenizer_encode(r, big, total, 1, &ids, &n);
            double t_enc = now_s() - t0;
            fprintf(stderr, "qwen-real: encode %zu bytes -> %d ids in %.3f s (%.1f MB/s)\n", total,
                    n, t_enc, (double)total / 1e6 / (t_enc > 0 ? t_enc : 1e-9));
            CHECK(st == OSC_OK && n > 0, "big encode");
            CHECK(t_enc < 20.0, "1 MB encode took %.1f s", t_enc);
            char *dec = NULL;
            t0 = now_s();
            CHECK(st == OSC_OK && osc_tokenizer_decode(r, ids, n, 0, &dec) == OSC_OK &&
                  strcmp(dec, big) == 0, "1 MB round trip");
            fprintf(stderr, "qwen-real: decode %.3f s\n", now_s() - t0);
            free(dec);
            free(ids);
            free(big);
            /* a long run of one character (one pre-token word): the merge heap keeps it fast */
            size_t nsp = 200000;
            char *sp_run = malloc(nsp + 2);
            memset(sp_run, ' ', nsp);
            sp_run[nsp] = 'x';
            sp_run[nsp + 1] = 0;
            t0 = now_s();
            st = osc_tokenizer_encode(r, sp_run, nsp + 1, 1, &ids, &n);
            fprintf(stderr, "qwen-real: %zu spaces + x -> %d ids in %.3f s\n", nsp, n,
                    now_s() - t0);
            CHECK(st == OSC_OK && osc_tokenizer_decode(r, ids, n, 0, &dec) == OSC_OK &&
                  strcmp(dec, sp_run) == 0, "space run round trip");
            free(dec);
            free(ids);
            free(sp_run);
            osc_tokenizer_free(r);
        }
    } else {
        fprintf(stderr, "note: OSC_QWEN_TOKENIZER not set; real-tokenizer goldens skipped\n");
    }

    bad_files(tmp, qpath);
    cJSON_Delete(g);
    return check_done("test_tokenizer");
}
