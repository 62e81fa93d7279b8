/* safetensors reader/writer: round trips, a hand-built file, shards, and malformed inputs. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "tests/check.h"

static char g_tmp[1024];

static const char *tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_tmp, name);
    return buf;
}

/* Write 8-byte little-endian length + header + data. */
static void write_raw(const char *path, uint64_t hlen_field, const char *hdr, const void *data, size_t dn) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    unsigned char lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (unsigned char)(hlen_field >> (8 * i));
    fwrite(lb, 1, 8, f);
    if (hdr) fwrite(hdr, 1, strlen(hdr), f);
    if (dn) fwrite(data, 1, dn, f);
    fclose(f);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(1); }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* A header + data file where the header length is right. */
static void write_hdr(const char *path, const char *hdr, const void *data, size_t dn) {
    write_raw(path, strlen(hdr), hdr, data, dn);
}

/* Opening must fail with a message naming `path_in_msg` and containing `phrase`. */
static void expect_bad(const char *open_path, const char *path_in_msg, const char *phrase, const char *what) {
    osc_st *st = (osc_st *)1;
    osc_status s = osc_st_open(open_path, &st);
    const char *m = osc_last_error();
    CHECK(s != OSC_OK, "%s: opened a bad file", what);
    CHECK(st == NULL, "%s: out not NULL on failure", what);
    CHECK(strstr(m, path_in_msg) != NULL, "%s: message lacks path: %s", what, m);
    CHECK(strstr(m, phrase) != NULL, "%s: message lacks '%s': %s", what, phrase, m);
    if (s == OSC_OK) osc_st_close(st);
}

static void test_roundtrip(void) {
    char p[1200];
    tmp_path(p, sizeof p, "rt.safetensors");
    /* bf16: 1, -2, 0.5, 3.25 (all exact) ; f16: 1.5, -0.25, 65504 ; f32 ; i32 */
    const uint16_t bf[4] = {0x3F80, 0xC000, 0x3F00, 0x4050};
    const uint16_t hf[3] = {0x3E00, 0xB400, 0x7BFF};
    const float f32[6] = {0.1f, -1e-3f, 3.0f, 1e20f, -7.5f, 0.0f};
    const int32_t i32[2] = {-5, 123456789};
    const char *names[] = {"b.weight", "a.half", "z.f32", "m.idx"};
    osc_dtype dts[] = {OSC_BF16, OSC_F16, OSC_F32, OSC_I32};
    int nds[] = {2, 1, 3, 1};
    int64_t shapes[4][OSC_MAX_DIMS] = {{2, 2}, {3}, {1, 2, 3}, {2}};
    const void *datas[] = {bf, hf, f32, i32};
    osc_status s = osc_st_write(p, 4, names, dts, nds, (const int64_t(*)[OSC_MAX_DIMS])shapes, datas);
    CHECK(s == OSC_OK, "write: %s", osc_last_error());

    osc_st *st = NULL;
    s = osc_st_open(p, &st);
    CHECK(s == OSC_OK, "open: %s", osc_last_error());
    if (s != OSC_OK) return;
    CHECK(osc_st_count(st) == 4, "count %d", osc_st_count(st));
    /* sorted by name */
    CHECK(strcmp(osc_st_at(st, 0)->name, "a.half") == 0, "at0 %s", osc_st_at(st, 0)->name);
    CHECK(strcmp(osc_st_at(st, 3)->name, "z.f32") == 0, "at3 %s", osc_st_at(st, 3)->name);
    CHECK(osc_st_at(st, 4) == NULL && osc_st_at(st, -1) == NULL, "at out of range");
    CHECK(osc_st_get(st, "nope") == NULL, "get missing");

    const osc_st_tensor *t = osc_st_get(st, "b.weight");
    CHECK(t && t->dt == OSC_BF16 && t->nd == 2 && t->shape[0] == 2 && t->shape[1] == 2 && t->nbytes == 8,
          "bf16 meta");
    CHECK(t && strcmp(t->file, p) == 0, "file path");
    float out[8];
    if (t) {
        CHECK(osc_st_read_f32(t, out, 4) == OSC_OK, "read bf16");
        CHECK(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.5f && out[3] == 3.25f, "bf16 values %g %g %g %g",
              out[0], out[1], out[2], out[3]);
        CHECK(osc_st_read_f32(t, out, 3) != OSC_OK, "wrong n accepted");
    }
    t = osc_st_get(st, "a.half");
    CHECK(t && t->dt == OSC_F16 && t->nd == 1 && t->shape[0] == 3, "f16 meta");
    if (t) {
        CHECK(osc_st_read_f32(t, out, 3) == OSC_OK, "read f16");
        CHECK(out[0] == 1.5f && out[1] == -0.25f && out[2] == 65504.0f, "f16 values %g %g %g", out[0], out[1],
              out[2]);
    }
    t = osc_st_get(st, "z.f32");
    CHECK(t && t->dt == OSC_F32 && t->nd == 3 && t->shape[2] == 3, "f32 meta");
    if (t) {
        CHECK(osc_st_read_f32(t, out, 6) == OSC_OK, "read f32");
        CHECK(memcmp(out, f32, sizeof f32) == 0, "f32 values");
    }
    t = osc_st_get(st, "m.idx");
    CHECK(t && t->dt == OSC_I32 && t->nbytes == 8, "i32 meta");
    if (t) {
        int32_t v[2];
        memcpy(v, t->data, 8);
        CHECK(v[0] == -5 && v[1] == 123456789, "i32 values");
        CHECK(osc_st_read_f32(t, out, 2) != OSC_OK, "i32 to f32 should be unsupported");
    }

    /* expect */
    const osc_st_tensor *e = NULL;
    int64_t good[2] = {2, 2}, bad[2] = {4, 1};
    CHECK(osc_st_expect(st, "b.weight", 2, good, &e) == OSC_OK && e && e->dt == OSC_BF16, "expect ok");
    s = osc_st_expect(st, "b.weight", 2, bad, &e);
    CHECK(s == OSC_ERR_FORMAT && e == NULL, "expect wrong shape");
    CHECK(strstr(osc_last_error(), p) && strstr(osc_last_error(), "has shape [2,2] but the config implies [4,1]"),
          "shape msg: %s", osc_last_error());
    s = osc_st_expect(st, "b.weight", 1, good, &e);
    CHECK(s == OSC_ERR_FORMAT, "expect wrong nd");
    s = osc_st_expect(st, "lm_head.weight", 2, good, &e);
    CHECK(s == OSC_ERR_FORMAT && strstr(osc_last_error(), "missing tensor lm_head.weight") &&
              strstr(osc_last_error(), p),
          "missing msg: %s", osc_last_error());
    int64_t ishape[1] = {2};
    s = osc_st_expect(st, "m.idx", 1, ishape, &e);
    CHECK(s != OSC_OK && strstr(osc_last_error(), "I32"), "expect int weight: %s", osc_last_error());
    osc_st_close(st);

    /* The same file opened through its directory as model.safetensors. */
    char d[1200], m[1300];
    tmp_path(d, sizeof d, "rtdir");
    mkdir(d, 0755);
    snprintf(m, sizeof m, "%s/model.safetensors", d);
    CHECK(osc_st_write(m, 4, names, dts, nds, (const int64_t(*)[OSC_MAX_DIMS])shapes, datas) == OSC_OK,
          "write dir");
    s = osc_st_open(d, &st);
    CHECK(s == OSC_OK && osc_st_count(st) == 4, "open dir: %s", osc_last_error());
    if (s == OSC_OK) osc_st_close(st);
    osc_st_close(NULL);
}

/* Independently of the writer: a header typed by hand, unaligned data, metadata, I64/U8. */
static void test_handmade(void) {
    char p[1200];
    tmp_path(p, sizeof p, "hand.safetensors");
    const char *hdr =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"x\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
        "\"y\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[6,10]},"
        "\"ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[10,18]},"
        "\"mask\":{\"dtype\":\"U8\",\"shape\":[2,1],\"data_offsets\":[18,20]},"
        "\"empty\":{\"dtype\":\"F16\",\"shape\":[0,4],\"data_offsets\":[20,20]}}";
    unsigned char data[20];
    /* bf16 little-endian: 1.0 = 0x3F80, -3.0 = 0xC040, 0.125 = 0x3E00 */
    const unsigned char x[6] = {0x80, 0x3F, 0x40, 0xC0, 0x00, 0x3E};
    memcpy(data, x, 6);
    float y = -42.5f;
    memcpy(data + 6, &y, 4);
    int64_t id = 1234567890123LL;
    memcpy(data + 10, &id, 8);
    data[18] = 7;
    data[19] = 255;
    write_hdr(p, hdr, data, sizeof data); /* header length is odd: data is unaligned */

    osc_st *st = NULL;
    osc_status s = osc_st_open(p, &st);
    CHECK(s == OSC_OK, "open handmade: %s", osc_last_error());
    if (s != OSC_OK) return;
    CHECK(osc_st_count(st) == 5, "count %d (metadata must be skipped)", osc_st_count(st));
    CHECK(osc_st_get(st, "__metadata__") == NULL, "metadata is not a tensor");
    const osc_st_tensor *t = osc_st_get(st, "x");
    float out[3] = {0};
    CHECK(t && osc_st_read_f32(t, out, 3) == OSC_OK, "read x");
    CHECK(out[0] == 1.0f && out[1] == -3.0f && out[2] == 0.125f, "x values %g %g %g", out[0], out[1], out[2]);
    t = osc_st_get(st, "y");
    CHECK(t && t->nd == 0 && t->nbytes == 4, "scalar meta");
    CHECK(t && osc_st_read_f32(t, out, 1) == OSC_OK && out[0] == -42.5f, "scalar value %g", out[0]);
    t = osc_st_get(st, "ids");
    int64_t idv = 0;
    if (t) memcpy(&idv, t->data, 8);
    CHECK(t && t->dt == OSC_I64 && idv == 1234567890123LL, "i64");
    t = osc_st_get(st, "mask");
    CHECK(t && t->dt == OSC_U8 && t->shape[0] == 2 && t->shape[1] == 1 &&
              ((const unsigned char *)t->data)[1] == 255,
          "u8");
    t = osc_st_get(st, "empty");
    CHECK(t && t->nbytes == 0 && t->shape[0] == 0 && t->shape[1] == 4, "empty tensor");
    osc_st_close(st);
}

static void test_sharded(void) {
    char d[1200], p1[1300], p2[1300], ip[1300];
    tmp_path(d, sizeof d, "sharded");
    mkdir(d, 0755);
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", d);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", d);
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", d);
    const float a[2] = {1, 2}, b[3] = {3, 4, 5}, c[1] = {6};
    {
        const char *names[] = {"model.embed_tokens.weight", "model.norm.weight"};
        osc_dtype dts[] = {OSC_F32, OSC_F32};
        int nds[] = {1, 1};
        int64_t sh[2][OSC_MAX_DIMS] = {{2}, {3}};
        const void *ds[] = {a, b};
        CHECK(osc_st_write(p1, 2, names, dts, nds, (const int64_t(*)[OSC_MAX_DIMS])sh, ds) == OSC_OK, "shard1");
    }
    {
        const char *names[] = {"lm_head.weight"};
        osc_dtype dts[] = {OSC_F32};
        int nds[] = {1};
        int64_t sh[1][OSC_MAX_DIMS] = {{1}};
        const void *ds[] = {c};
        CHECK(osc_st_write(p2, 1, names, dts, nds, (const int64_t(*)[OSC_MAX_DIMS])sh, ds) == OSC_OK, "shard2");
    }
    const char *good =
        "{\"metadata\":{\"total_size\":24},\"weight_map\":{"
        "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\","
        "\"lm_head.weight\":\"model-00002-of-00002.safetensors\","
        "\"model.norm.weight\":\"model-00001-of-00002.safetensors\"}}";
    write_bytes(ip, good, strlen(good));
    osc_st *st = NULL;
    osc_status s = osc_st_open(d, &st);
    CHECK(s == OSC_OK, "open sharded: %s", osc_last_error());
    if (s == OSC_OK) {
        CHECK(osc_st_count(st) == 3, "sharded count %d", osc_st_count(st));
        const osc_st_tensor *t = osc_st_get(st, "lm_head.weight");
        float v = 0;
        CHECK(t && strcmp(t->file, p2) == 0, "lm_head file %s", t ? t->file : "-");
        CHECK(t && osc_st_read_f32(t, &v, 1) == OSC_OK && v == 6.0f, "lm_head value");
        t = osc_st_get(st, "model.norm.weight");
        float w[3] = {0};
        CHECK(t && strcmp(t->file, p1) == 0 && osc_st_read_f32(t, w, 3) == OSC_OK && w[2] == 5.0f, "norm");
        osc_st_close(st);
    }
    /* Index pointing to a shard that does not exist. */
    const char *missing_shard =
        "{\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00002.safetensors\","
        "\"lm_head.weight\":\"model-00003-of-00002.safetensors\"}}";
    write_bytes(ip, missing_shard, strlen(missing_shard));
    expect_bad(d, "model-00003-of-00002.safetensors", "does not exist", "missing shard");
    /* Index naming a tensor the shard lacks. */
    const char *missing_tensor =
        "{\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00002.safetensors\","
        "\"model.layers.0.mlp.up_proj.weight\":\"model-00002-of-00002.safetensors\"}}";
    write_bytes(ip, missing_tensor, strlen(missing_tensor));
    expect_bad(d, p2, "model.layers.0.mlp.up_proj.weight", "missing tensor in shard");
    /* Index placing a tensor in the wrong shard. */
    const char *wrong_shard = "{\"weight_map\":{\"lm_head.weight\":\"model-00001-of-00002.safetensors\","
                              "\"model.norm.weight\":\"model-00002-of-00002.safetensors\"}}";
    write_bytes(ip, wrong_shard, strlen(wrong_shard));
    expect_bad(d, ip, "not in", "wrong shard");
    /* Bad weight_map, path escape, non-JSON index. */
    const char *bad_wm = "{\"weight_map\":[1,2]}";
    write_bytes(ip, bad_wm, strlen(bad_wm));
    expect_bad(d, ip, "weight_map", "weight_map not an object");
    const char *escape = "{\"weight_map\":{\"x\":\"../etc/passwd\"}}";
    write_bytes(ip, escape, strlen(escape));
    expect_bad(d, ip, "not a plain file name", "shard path escape");
    const char *numval = "{\"weight_map\":{\"x\":5}}";
    write_bytes(ip, numval, strlen(numval));
    expect_bad(d, ip, "not a file name", "shard name not a string");
    write_bytes(ip, "{weight", 7);
    expect_bad(d, ip, "not valid JSON", "index not JSON");
    /* Directory with nothing in it. */
    char e[1200];
    tmp_path(e, sizeof e, "emptydir");
    mkdir(e, 0755);
    expect_bad(e, e, "no model.safetensors", "empty dir");
}

static void test_bad_files(void) {
    char p[1200];
    tmp_path(p, sizeof p, "bad.safetensors");
    unsigned char d64[64] = {0};

    write_bytes(p, "", 0);
    expect_bad(p, p, "empty", "empty file");
    write_bytes(p, "\x10\0\0\0", 4);
    expect_bad(p, p, "too short", "4-byte file");
    write_raw(p, 100, "{}", NULL, 0);
    expect_bad(p, p, "past the end", "header length past end");
    write_raw(p, (uint64_t)1 << 62, "{}", NULL, 0);
    expect_bad(p, p, "100 MB", "absurd header length");
    write_raw(p, UINT64_MAX, "{}", NULL, 0);
    expect_bad(p, p, "100 MB", "header length 2^64-1");
    write_hdr(p, "this is not json", NULL, 0);
    expect_bad(p, p, "not valid JSON", "non-JSON header");
    write_hdr(p, "[1,2,3]", NULL, 0);
    expect_bad(p, p, "not a JSON object", "array header");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d64, 4);
    expect_bad(p, p, "past the end", "offsets past end");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d64, 16);
    expect_bad(p, p, "need 12", "offsets inconsistent with shape");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", d64, 16);
    expect_bad(p, p, "begin > end", "offsets reversed");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", d64, 16);
    expect_bad(p, p, "data_offsets", "offsets one number");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", d64, 16);
    expect_bad(p, p, "data_offsets", "negative offsets");
    write_hdr(p, "{\"a\":{\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,4]}}", d64, 16);
    expect_bad(p, p, "unsupported dtype Q4_K", "unknown dtype");
    CHECK(osc_st_open(p, &(osc_st *){0}) == OSC_ERR_UNSUPPORTED, "unknown dtype status");
    write_hdr(p, "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", d64, 16);
    expect_bad(p, p, "F64", "F64 dtype");
    write_hdr(p, "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", d64, 16);
    expect_bad(p, p, "dtype", "numeric dtype");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", d64, 16);
    expect_bad(p, p, "non-negative integers", "negative shape");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", d64, 16);
    expect_bad(p, p, "non-negative integers", "fractional shape");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,4]}}", d64, 16);
    expect_bad(p, p, "not a list", "shape string");
    write_hdr(p, "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", d64, 16);
    expect_bad(p, p, "7 dims", "too many dims");
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
              "\"data_offsets\":[0,4]}}",
              d64, 16);
    expect_bad(p, p, "overflow", "element count overflow");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", d64, 16);
    expect_bad(p, p, "non-negative integers", "huge dim");
    write_hdr(p, "{\"a\":[1,2]}", d64, 16);
    expect_bad(p, p, "not an object", "entry not object");
    write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", d64, 16);
    expect_bad(p, p, "data_offsets", "no offsets");
    write_hdr(p,
              "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              d64, 16);
    expect_bad(p, p, "twice", "duplicate name");
    char nx[1200];
    tmp_path(nx, sizeof nx, "does-not-exist.safetensors");
    expect_bad(nx, nx, "not exist", "nonexistent path");

    /* Truncate a valid file byte by byte: every prefix must fail cleanly, never crash. */
    char ok[1200];
    tmp_path(ok, sizeof ok, "rt.safetensors");
    FILE *f = fopen(ok, "rb");
    unsigned char buf[4096];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    int fails = 0;
    for (size_t k = 0; k + 1 < n; k++) {
        write_bytes(p, buf, k);
        osc_st *st = NULL;
        if (osc_st_open(p, &st) == OSC_OK) {
            osc_st_close(st);
            fails++;
        }
    }
    CHECK(n > 100 && fails == 0, "truncated prefixes accepted: %d of %zu", fails, n);
    /* Flip each header byte: must never crash (result may be OK or an error). */
    for (size_t k = 8; k < n && k < 400; k++) {
        unsigned char save = buf[k];
        buf[k] ^= 0x5a;
        write_bytes(p, buf, n);
        osc_st *st = NULL;
        if (osc_st_open(p, &st) == OSC_OK) osc_st_close(st);
        buf[k] = save;
    }
    CHECK(1, "byte flips survived");
}

int main(void) {
    const char *t = getenv("OSC_TEST_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_safetensors", t && t[0] ? t : "/tmp");
    mkdir(t && t[0] ? t : "/tmp", 0755);
    mkdir(g_tmp, 0755);
    test_roundtrip();
    test_handmade();
    test_sharded();
    test_bad_files();
    return check_done("test_safetensors");
}
