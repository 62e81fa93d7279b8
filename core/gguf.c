/* GGUF reader and ggml block dequantization. See gguf.h.
 *
 * File layout (all little-endian):
 *   "GGUF" u32 version u64 n_tensors u64 n_kv
 *   n_kv x { string key, u32 type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to general.alignment, then the data section (tensor offsets are relative to it)
 * A string is u64 length + bytes; an array is u32 element type + u64 count + elements (nested
 * arrays repeat that header per element). */
#include "gguf.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "tensor.h"

/* ---- ggml type traits ---- */

typedef struct ggml_traits { const char *name; int blck, size, dequant; } ggml_traits;

#define QK_K 256
static const ggml_traits TRAITS[] = {
    [OSC_GGML_F32] = {"F32", 1, 4, 1},
    [OSC_GGML_F16] = {"F16", 1, 2, 1},
    [OSC_GGML_Q4_0] = {"Q4_0", 32, 2 + 16, 1},
    [OSC_GGML_Q4_1] = {"Q4_1", 32, 2 + 2 + 16, 1},
    [OSC_GGML_Q5_0] = {"Q5_0", 32, 2 + 4 + 16, 1},
    [OSC_GGML_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16, 1},
    [OSC_GGML_Q8_0] = {"Q8_0", 32, 2 + 32, 1},
    [OSC_GGML_Q8_1] = {"Q8_1", 32, 4 + 4 + 32, 0},
    [OSC_GGML_Q2_K] = {"Q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2, 1},
    [OSC_GGML_Q3_K] = {"Q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2, 1},
    [OSC_GGML_Q4_K] = {"Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2, 1},
    [OSC_GGML_Q5_K] = {"Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, 1},
    [OSC_GGML_Q6_K] = {"Q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, 1},
    [OSC_GGML_Q8_K] = {"Q8_K", QK_K, 4 + QK_K + QK_K / 8, 0},
    [OSC_GGML_IQ2_XXS] = {"IQ2_XXS", QK_K, 2 + QK_K / 4, 0},
    [OSC_GGML_IQ2_XS] = {"IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, 0},
    [OSC_GGML_IQ3_XXS] = {"IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, 0},
    [OSC_GGML_IQ1_S] = {"IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, 0},
    [OSC_GGML_IQ4_NL] = {"IQ4_NL", 32, 2 + 16, 0},
    [OSC_GGML_IQ3_S] = {"IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, 0},
    [OSC_GGML_IQ2_S] = {"IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, 0},
    [OSC_GGML_IQ4_XS] = {"IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, 0},
    [OSC_GGML_I8] = {"I8", 1, 1, 0},
    [OSC_GGML_I16] = {"I16", 1, 2, 0},
    [OSC_GGML_I32] = {"I32", 1, 4, 0},
    [OSC_GGML_I64] = {"I64", 1, 8, 0},
    [OSC_GGML_F64] = {"F64", 1, 8, 0},
    [OSC_GGML_IQ1_M] = {"IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, 0},
    [OSC_GGML_BF16] = {"BF16", 1, 2, 1},
    [OSC_GGML_TQ1_0] = {"TQ1_0", QK_K, 2 + 4 * 13, 0},
    [OSC_GGML_TQ2_0] = {"TQ2_0", QK_K, 2 + 64, 0},
    [OSC_GGML_MXFP4] = {"MXFP4", 32, 1 + 16, 0},
    [OSC_GGML_NVFP4] = {"NVFP4", 64, 4 + 32, 0},
    [OSC_GGML_Q1_0] = {"Q1_0", 128, 2 + 16, 0},
};
#define N_TRAITS ((uint32_t)(sizeof TRAITS / sizeof TRAITS[0]))

static const ggml_traits *traits(uint32_t type) {
    return type < N_TRAITS && TRAITS[type].name ? &TRAITS[type] : NULL;
}
const char *osc_ggml_type_name(uint32_t type) { return traits(type) ? traits(type)->name : "?"; }
int osc_ggml_block_size(uint32_t type) { return traits(type) ? traits(type)->blck : 0; }
int osc_ggml_type_size(uint32_t type) { return traits(type) ? traits(type)->size : 0; }
int osc_ggml_can_dequant(uint32_t type) { return traits(type) ? traits(type)->dequant : 0; }

/* ---- metadata value types ---- */

static const char *const VTYPE_NAMES[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool",
                                          "string", "array", "u64", "i64", "f64"};
static const int VTYPE_SIZE[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}; /* 0: variable */
#define N_VTYPES 13

const char *osc_gguf_type_name(osc_gguf_type t) {
    return (unsigned)t < N_VTYPES ? VTYPE_NAMES[t] : "?";
}

/* ---- the reader ---- */

struct osc_gguf {
    char *path;
    osc_mmap map;
    uint32_t version;
    uint64_t alignment, data_off;
    int n_kv;
    char **keys;
    osc_gguf_value *vals;
    int *kv_order; /* kv indices sorted by key */
    int n_t;
    osc_gguf_tensor *t; /* file order */
    int *t_order;       /* tensor indices sorted by name */
};

typedef struct rd {
    const unsigned char *b;
    uint64_t pos, size;
    const char *path;
} rd;

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t rd_left(const rd *r) { return r->size - r->pos; }

static osc_status rd_need(const rd *r, uint64_t n, const char *what, const char *name) {
    if (n <= rd_left(r)) return OSC_OK;
    return osc_error(OSC_ERR_FORMAT, "%s: truncated: %s%s%s needs %llu bytes at offset %llu, the file has %llu left",
                     r->path, what, name ? " of " : "", name ? name : "", (unsigned long long)n,
                     (unsigned long long)r->pos, (unsigned long long)rd_left(r));
}

static osc_status rd_u32(rd *r, uint32_t *v, const char *what, const char *name) {
    OSC_TRY(rd_need(r, 4, what, name));
    *v = (uint32_t)le(r->b + r->pos, 4);
    r->pos += 4;
    return OSC_OK;
}

static osc_status rd_u64(rd *r, uint64_t *v, const char *what, const char *name) {
    OSC_TRY(rd_need(r, 8, what, name));
    *v = le(r->b + r->pos, 8);
    r->pos += 8;
    return OSC_OK;
}

/* A key or tensor name: 1..OSC_GGUF_MAX_NAME bytes, no NUL; copied. */
static osc_status rd_name(rd *r, const char *what, char **out) {
    uint64_t len;
    uint64_t at = r->pos;
    OSC_TRY(rd_u64(r, &len, what, NULL));
    if (len == 0 || len > OSC_GGUF_MAX_NAME)
        return osc_error(OSC_ERR_FORMAT, "%s: %s at offset %llu is %llu bytes long (must be 1..%d)", r->path, what,
                         (unsigned long long)at, (unsigned long long)len, OSC_GGUF_MAX_NAME);
    OSC_TRY(rd_need(r, len, what, NULL));
    const char *s = (const char *)r->b + r->pos;
    if (memchr(s, 0, (size_t)len))
        return osc_error(OSC_ERR_FORMAT, "%s: %s at offset %llu contains a NUL byte", r->path, what,
                         (unsigned long long)at);
    char *c = malloc((size_t)len + 1);
    if (!c) return osc_error(OSC_ERR_OOM, "%s: out of memory", r->path);
    memcpy(c, s, (size_t)len);
    c[len] = 0;
    r->pos += len;
    *out = c;
    return OSC_OK;
}

static void value_free(osc_gguf_value *v) {
    if (v->type != OSC_GGUF_ARRAY) return;
    free((void *)v->str_off);
    if (v->items) {
        for (uint64_t i = 0; i < v->n; i++) value_free((osc_gguf_value *)&v->items[i]);
        free((void *)v->items);
    }
    v->str_off = NULL;
    v->items = NULL;
}

/* One value of type `type` (its type tag already read). key names the entry for messages. */
static osc_status parse_value(rd *r, uint32_t type, int depth, const char *key, osc_gguf_value *v) {
    memset(v, 0, sizeof *v);
    if (type >= N_VTYPES)
        return osc_error(OSC_ERR_FORMAT, "%s: metadata %s has unknown value type %u", r->path, key, type);
    v->type = (osc_gguf_type)type;
    if (type == OSC_GGUF_STRING) {
        OSC_TRY(rd_u64(r, &v->n, "string length", key));
        OSC_TRY(rd_need(r, v->n, "string", key));
        v->p = r->b + r->pos;
        r->pos += v->n;
        return OSC_OK;
    }
    if (type != OSC_GGUF_ARRAY) {
        OSC_TRY(rd_need(r, (uint64_t)VTYPE_SIZE[type], "value", key));
        v->p = r->b + r->pos;
        if (type == OSC_GGUF_BOOL && v->p[0] > 1)
            return osc_error(OSC_ERR_FORMAT, "%s: metadata %s: bool byte is %u (must be 0 or 1)", r->path, key,
                             v->p[0]);
        r->pos += (uint64_t)VTYPE_SIZE[type];
        return OSC_OK;
    }
    if (depth >= OSC_GGUF_MAX_DEPTH)
        return osc_error(OSC_ERR_FORMAT, "%s: metadata %s: arrays nested deeper than %d", r->path, key,
                         OSC_GGUF_MAX_DEPTH);
    uint32_t et;
    OSC_TRY(rd_u32(r, &et, "array element type", key));
    if (et >= N_VTYPES)
        return osc_error(OSC_ERR_FORMAT, "%s: metadata %s: array has unknown element type %u", r->path, key, et);
    v->elem = (osc_gguf_type)et;
    OSC_TRY(rd_u64(r, &v->n, "array length", key));
    v->p = r->b + r->pos;
    /* smallest encoding of one element: its fixed size, a string's length, a nested array's header */
    uint64_t min = VTYPE_SIZE[et] ? (uint64_t)VTYPE_SIZE[et] : et == OSC_GGUF_STRING ? 8 : 12;
    if (v->n > rd_left(r) / min)
        return osc_error(OSC_ERR_FORMAT, "%s: metadata %s: array of %llu %s elements does not fit in the %llu bytes left",
                         r->path, key, (unsigned long long)v->n, VTYPE_NAMES[et], (unsigned long long)rd_left(r));
    if (VTYPE_SIZE[et]) {
        if (et == OSC_GGUF_BOOL)
            for (uint64_t i = 0; i < v->n; i++)
                if (v->p[i] > 1)
                    return osc_error(OSC_ERR_FORMAT, "%s: metadata %s: bool element %llu is %u (must be 0 or 1)",
                                     r->path, key, (unsigned long long)i, v->p[i]);
        r->pos += v->n * min;
        return OSC_OK;
    }
    if (v->n == 0) return OSC_OK;
    if (et == OSC_GGUF_STRING) {
        uint64_t *off = malloc((size_t)v->n * sizeof *off);
        if (!off) return osc_error(OSC_ERR_OOM, "%s: out of memory for metadata %s", r->path, key);
        v->str_off = off;
        for (uint64_t i = 0; i < v->n; i++) {
            off[i] = r->pos - (uint64_t)(v->p - r->b);
            uint64_t len;
            OSC_TRY(rd_u64(r, &len, "string length", key));
            OSC_TRY(rd_need(r, len, "string", key));
            r->pos += len;
        }
        return OSC_OK;
    }
    osc_gguf_value *items = calloc((size_t)v->n, sizeof *items);
    if (!items) return osc_error(OSC_ERR_OOM, "%s: out of memory for metadata %s", r->path, key);
    v->items = items;
    for (uint64_t i = 0; i < v->n; i++) OSC_TRY(parse_value(r, OSC_GGUF_ARRAY, depth + 1, key, &items[i]));
    return OSC_OK;
}

void osc_gguf_close(osc_gguf *g) {
    if (!g) return;
    for (int i = 0; i < g->n_kv; i++) {
        free(g->keys[i]);
        value_free(&g->vals[i]);
    }
    free(g->keys);
    free(g->vals);
    free(g->kv_order);
    for (int i = 0; i < g->n_t; i++) free((char *)g->t[i].name);
    free(g->t);
    free(g->t_order);
    osc_mmap_close(&g->map);
    free(g->path);
    free(g);
}

/* Keys and tensor names are sorted once (as (name, index) pairs) for binary search. */
typedef struct name_ix { const char *name; int i; } name_ix;
static int cmp_name_ix(const void *a, const void *b) {
    return strcmp(((const name_ix *)a)->name, ((const name_ix *)b)->name);
}

/* Sort n names into order[]; the first duplicate's index goes to *dup (else -1). */
static int sort_names(int n, const char *(*get)(const osc_gguf *, int), const osc_gguf *g, int *order,
                      int *dup) {
    *dup = -1;
    if (n == 0) return 0;
    name_ix *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) return -1;
    for (int i = 0; i < n; i++) tmp[i] = (name_ix){get(g, i), i};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_name_ix);
    for (int i = 0; i < n; i++) {
        order[i] = tmp[i].i;
        if (i && *dup < 0 && strcmp(tmp[i - 1].name, tmp[i].name) == 0) *dup = tmp[i].i;
    }
    free(tmp);
    return 0;
}
static const char *get_key(const osc_gguf *g, int i) { return g->keys[i]; }
static const char *get_tname(const osc_gguf *g, int i) { return g->t[i].name; }

typedef struct off_ix { uint64_t off; int i; } off_ix;
static int cmp_off_ix(const void *a, const void *b) {
    uint64_t x = ((const off_ix *)a)->off, y = ((const off_ix *)b)->off;
    return x < y ? -1 : x > y;
}

static osc_status parse_tensor(osc_gguf *g, rd *r, osc_gguf_tensor *t) {
    char *name = NULL;
    OSC_TRY(rd_name(r, "tensor name", &name));
    t->name = name;
    t->file = g->path;
    uint32_t nd, type;
    OSC_TRY(rd_u32(r, &nd, "dimension count", name));
    if (nd < 1 || nd > OSC_GGUF_MAX_DIMS)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s has %u dims (must be 1..%d)", g->path, name, nd,
                         OSC_GGUF_MAX_DIMS);
    t->n_dims = (int)nd;
    for (int i = 0; i < OSC_GGUF_MAX_DIMS; i++) t->ne[i] = 1;
    for (uint32_t i = 0; i < nd; i++) {
        uint64_t v;
        OSC_TRY(rd_u64(r, &v, "dimension", name));
        if (v > (uint64_t)INT64_MAX)
            return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: dimension %u is %llu, too large", g->path, name, i,
                             (unsigned long long)v);
        t->ne[i] = (int64_t)v;
    }
    OSC_TRY(rd_u32(r, &type, "type", name));
    if (!traits(type))
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s has unknown type id %u", g->path, name, type);
    t->type = type;
    OSC_TRY(rd_u64(r, &t->offset, "data offset", name));
    return OSC_OK;
}

/* Sizes and placement of one tensor, once the data section is known. */
static osc_status check_tensor(const osc_gguf *g, osc_gguf_tensor *t, uint64_t data_size) {
    const ggml_traits *tr = traits(t->type);
    uint64_t ne = 1;
    for (int i = 0; i < t->n_dims; i++) {
        uint64_t d = (uint64_t)t->ne[i];
        if (d && ne > (uint64_t)INT64_MAX / d)
            return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: element count overflows", g->path, t->name);
        ne *= d;
    }
    t->nelem = (int64_t)ne;
    if (t->ne[0] % tr->blck != 0)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: row of %lld elements is not a multiple of the %s block (%d)",
                         g->path, t->name, (long long)t->ne[0], tr->name, tr->blck);
    uint64_t nb = ne / (uint64_t)tr->blck;
    if (nb > UINT64_MAX / (uint64_t)tr->size || nb * (uint64_t)tr->size > (uint64_t)SIZE_MAX)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: byte size overflows", g->path, t->name);
    uint64_t bytes = nb * (uint64_t)tr->size;
    if (t->offset % g->alignment != 0)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: data offset %llu is not a multiple of the alignment %llu",
                         g->path, t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
    if (t->offset > data_size || bytes > data_size - t->offset)
        return osc_error(OSC_ERR_FORMAT,
                         "%s: tensor %s: %llu bytes at data offset %llu run past the end of the data section (%llu bytes)",
                         g->path, t->name, (unsigned long long)bytes, (unsigned long long)t->offset,
                         (unsigned long long)data_size);
    t->nbytes = (size_t)bytes;
    t->data = (const unsigned char *)g->map.data + g->data_off + t->offset;
    return OSC_OK;
}

static osc_status gguf_parse(osc_gguf *g) {
    const char *path = g->path;
    rd r = {g->map.data, 0, g->map.size, path};
    if (r.size < 24)
        return osc_error(OSC_ERR_FORMAT, "%s: file is %llu bytes, too short for a GGUF header", path,
                         (unsigned long long)r.size);
    if (memcmp(r.b, "GGUF", 4) != 0)
        return osc_error(OSC_ERR_FORMAT, "%s: not a GGUF file (the first bytes are not \"GGUF\")", path);
    r.pos = 4;
    uint32_t ver;
    OSC_TRY(rd_u32(&r, &ver, "version", NULL));
    if (ver != 2 && ver != 3) {
        if (ver && (ver & 0xffffu) == 0)
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: a big-endian GGUF file; only little-endian is supported", path);
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: GGUF version %u is not supported (2 and 3 are)", path, ver);
    }
    g->version = ver;
    uint64_t nt, nkv;
    OSC_TRY(rd_u64(&r, &nt, "tensor count", NULL));
    OSC_TRY(rd_u64(&r, &nkv, "metadata count", NULL));
    /* a key/value takes at least 8 (key length) + 1 + 4 (type) + 1 bytes; a tensor info (checked
     * below, after the metadata) 8 + 1 + 4 + 8 + 4 + 8 */
    if (nkv > rd_left(&r) / 14 || nkv > INT32_MAX)
        return osc_error(OSC_ERR_FORMAT, "%s: header claims %llu metadata entries, more than the file can hold", path,
                         (unsigned long long)nkv);
    g->keys = calloc((size_t)nkv + 1, sizeof *g->keys);
    g->vals = calloc((size_t)nkv + 1, sizeof *g->vals);
    g->kv_order = calloc((size_t)nkv + 1, sizeof *g->kv_order);
    if (!g->keys || !g->vals || !g->kv_order) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    for (uint64_t i = 0; i < nkv; i++) {
        char *key = NULL;
        OSC_TRY(rd_name(&r, "metadata key", &key));
        g->keys[i] = key;
        g->n_kv = (int)i + 1;
        uint32_t type;
        OSC_TRY(rd_u32(&r, &type, "value type", key));
        OSC_TRY(parse_value(&r, type, 0, key, &g->vals[i]));
    }
    int dup;
    if (sort_names(g->n_kv, get_key, g, g->kv_order, &dup)) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    if (dup >= 0) return osc_error(OSC_ERR_FORMAT, "%s: metadata key %s appears twice", path, g->keys[dup]);

    g->alignment = OSC_GGUF_DEFAULT_ALIGNMENT;
    const osc_gguf_value *al = osc_gguf_find(g, "general.alignment");
    if (al) {
        uint64_t a = al->type == OSC_GGUF_U32 ? le(al->p, 4) : 0;
        if (a == 0 || (a & (a - 1)) != 0)
            return osc_error(OSC_ERR_FORMAT, "%s: general.alignment must be a u32 power of two", path);
        g->alignment = a;
    }

    if (nt > rd_left(&r) / 33 || nt > INT32_MAX)
        return osc_error(OSC_ERR_FORMAT, "%s: header claims %llu tensors, more than the file can hold", path,
                         (unsigned long long)nt);
    g->t = calloc((size_t)nt + 1, sizeof *g->t);
    g->t_order = calloc((size_t)nt + 1, sizeof *g->t_order);
    if (!g->t || !g->t_order) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    for (uint64_t i = 0; i < nt; i++) {
        g->n_t = (int)i + 1;
        OSC_TRY(parse_tensor(g, &r, &g->t[i]));
    }
    if (sort_names(g->n_t, get_tname, g, g->t_order, &dup)) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    if (dup >= 0) return osc_error(OSC_ERR_FORMAT, "%s: tensor %s appears twice", path, g->t[dup].name);

    /* the data section starts at the next multiple of the alignment */
    uint64_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_off = r.pos + pad;
    uint64_t data_size = 0;
    if (g->data_off <= r.size) data_size = r.size - g->data_off;
    else if (g->n_t > 0)
        return osc_error(OSC_ERR_FORMAT, "%s: truncated: the data section would start at %llu, past the end (%llu bytes)",
                         path, (unsigned long long)g->data_off, (unsigned long long)r.size);
    for (int i = 0; i < g->n_t; i++) OSC_TRY(check_tensor(g, &g->t[i], data_size));
    if (g->n_t > 1) {
        off_ix *o = malloc((size_t)g->n_t * sizeof *o);
        if (!o) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        for (int i = 0; i < g->n_t; i++) o[i] = (off_ix){g->t[i].offset, i};
        qsort(o, (size_t)g->n_t, sizeof *o, cmp_off_ix);
        int bad = -1;
        for (int i = 1; i < g->n_t && bad < 0; i++) {
            const osc_gguf_tensor *a = &g->t[o[i - 1].i];
            if (a->offset + a->nbytes > o[i].off) bad = i;
        }
        osc_status s = OSC_OK;
        if (bad >= 0)
            s = osc_error(OSC_ERR_FORMAT, "%s: tensors %s and %s overlap in the data section", path,
                          g->t[o[bad - 1].i].name, g->t[o[bad].i].name);
        free(o);
        OSC_TRY(s);
    }
    return OSC_OK;
}

osc_status osc_gguf_open(const char *path, osc_gguf **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_gguf_open: out is NULL");
    *out = NULL;
    if (!path) return osc_error(OSC_ERR_INVALID_ARG, "osc_gguf_open: NULL path");
    osc_gguf *g = calloc(1, sizeof *g);
    if (!g) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    g->path = strdup(path);
    osc_status s = g->path ? osc_mmap_open(path, &g->map) : osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    if (s == OSC_OK) s = gguf_parse(g);
    if (s != OSC_OK) {
        osc_gguf_close(g);
        return s;
    }
    *out = g;
    return OSC_OK;
}

int osc_gguf_is_file(const char *path) {
    struct stat st;
    if (!path || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".gguf") == 0) return 1;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    char m[4];
    int ok = read(fd, m, 4) == 4 && memcmp(m, "GGUF", 4) == 0;
    close(fd);
    return ok;
}

const char *osc_gguf_path(const osc_gguf *g) { return g ? g->path : NULL; }
uint32_t osc_gguf_version(const osc_gguf *g) { return g ? g->version : 0; }
uint64_t osc_gguf_alignment(const osc_gguf *g) { return g ? g->alignment : 0; }
uint64_t osc_gguf_data_offset(const osc_gguf *g) { return g ? g->data_off : 0; }

/* ---- metadata access ---- */

int osc_gguf_n_kv(const osc_gguf *g) { return g ? g->n_kv : 0; }
const char *osc_gguf_key_at(const osc_gguf *g, int i) { return g && i >= 0 && i < g->n_kv ? g->keys[i] : NULL; }
const osc_gguf_value *osc_gguf_value_at(const osc_gguf *g, int i) {
    return g && i >= 0 && i < g->n_kv ? &g->vals[i] : NULL;
}

/* Binary search of name among n names sorted through order[]; the index, or -1. */
static int find_name(const osc_gguf *g, int n, const int *order, const char *(*get)(const osc_gguf *, int),
                     const char *name) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, k = order[mid];
        int c = strcmp(name, get(g, k));
        if (c == 0) return k;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return -1;
}

const osc_gguf_value *osc_gguf_find(const osc_gguf *g, const char *key) {
    int k = g && key ? find_name(g, g->n_kv, g->kv_order, get_key, key) : -1;
    return k >= 0 ? &g->vals[k] : NULL;
}

/* A fixed-size scalar of type t at p as a signed/unsigned 64-bit integer or double. */
static int scalar_i(osc_gguf_type t, const unsigned char *p, int64_t *i, uint64_t *u, int *is_signed) {
    uint64_t raw = (unsigned)t < N_VTYPES && VTYPE_SIZE[t] ? le(p, VTYPE_SIZE[t]) : 0;
    *is_signed = 0;
    switch (t) {
    case OSC_GGUF_U8: case OSC_GGUF_U16: case OSC_GGUF_U32: case OSC_GGUF_U64: case OSC_GGUF_BOOL:
        *u = raw;
        return 1;
    case OSC_GGUF_I8: *i = (int8_t)raw; break;
    case OSC_GGUF_I16: *i = (int16_t)raw; break;
    case OSC_GGUF_I32: *i = (int32_t)raw; break;
    case OSC_GGUF_I64: *i = (int64_t)raw; break;
    default: return 0;
    }
    *is_signed = 1;
    return 1;
}

static int elem_i64(osc_gguf_type t, const unsigned char *p, int64_t *out) {
    int64_t i;
    uint64_t u;
    int sg;
    if (!scalar_i(t, p, &i, &u, &sg)) return 0;
    if (!sg) {
        if (u > (uint64_t)INT64_MAX) return 0;
        i = (int64_t)u;
    }
    *out = i;
    return 1;
}

static int elem_f64(osc_gguf_type t, const unsigned char *p, double *out) {
    if (t == OSC_GGUF_F32) {
        union { uint32_t u; float f; } v = {(uint32_t)le(p, 4)};
        *out = v.f;
        return 1;
    }
    if (t == OSC_GGUF_F64) {
        union { uint64_t u; double f; } v = {le(p, 8)};
        *out = v.f;
        return 1;
    }
    int64_t i;
    uint64_t u;
    int sg;
    if (t == OSC_GGUF_BOOL || !scalar_i(t, p, &i, &u, &sg)) return 0;
    *out = sg ? (double)i : (double)u;
    return 1;
}

int osc_gguf_value_i64(const osc_gguf_value *v, int64_t *out) { return v && elem_i64(v->type, v->p, out); }

int osc_gguf_value_u64(const osc_gguf_value *v, uint64_t *out) {
    int64_t i;
    uint64_t u;
    int sg;
    if (!v || !scalar_i(v->type, v->p, &i, &u, &sg)) return 0;
    if (sg) {
        if (i < 0) return 0;
        u = (uint64_t)i;
    }
    *out = u;
    return 1;
}

int osc_gguf_value_f64(const osc_gguf_value *v, double *out) { return v && elem_f64(v->type, v->p, out); }

int osc_gguf_arr_i64(const osc_gguf_value *a, uint64_t i, int64_t *out) {
    if (!a || a->type != OSC_GGUF_ARRAY || i >= a->n || !VTYPE_SIZE[a->elem]) return 0;
    return elem_i64(a->elem, a->p + i * (uint64_t)VTYPE_SIZE[a->elem], out);
}

int osc_gguf_arr_f64(const osc_gguf_value *a, uint64_t i, double *out) {
    if (!a || a->type != OSC_GGUF_ARRAY || i >= a->n || !VTYPE_SIZE[a->elem]) return 0;
    return elem_f64(a->elem, a->p + i * (uint64_t)VTYPE_SIZE[a->elem], out);
}

const char *osc_gguf_arr_str(const osc_gguf_value *a, uint64_t i, size_t *len) {
    if (len) *len = 0;
    if (!a || a->type != OSC_GGUF_ARRAY || a->elem != OSC_GGUF_STRING || i >= a->n) return NULL;
    const unsigned char *p = a->p + a->str_off[i];
    if (len) *len = (size_t)le(p, 8);
    return (const char *)p + 8;
}

const osc_gguf_value *osc_gguf_arr_at(const osc_gguf_value *a, uint64_t i) {
    if (!a || a->type != OSC_GGUF_ARRAY || a->elem != OSC_GGUF_ARRAY || i >= a->n) return NULL;
    return &a->items[i];
}

static osc_status get_typed(const osc_gguf *g, const char *key, const osc_gguf_value **v) {
    if (!g || !key) return osc_error(OSC_ERR_INVALID_ARG, "osc_gguf_get: NULL argument");
    *v = osc_gguf_find(g, key);
    if (!*v) return osc_error(OSC_ERR_FORMAT, "%s: missing metadata %s", g->path, key);
    return OSC_OK;
}

static osc_status wrong_type(const osc_gguf *g, const char *key, const osc_gguf_value *v, const char *want) {
    return osc_error(OSC_ERR_FORMAT, "%s: metadata %s is %s%s%s, expected %s", g->path, key,
                     osc_gguf_type_name(v->type), v->type == OSC_GGUF_ARRAY ? " of " : "",
                     v->type == OSC_GGUF_ARRAY ? osc_gguf_type_name(v->elem) : "", want);
}

osc_status osc_gguf_get_u32(const osc_gguf *g, const char *key, uint32_t *out) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    uint64_t u;
    if (v->type == OSC_GGUF_BOOL || !osc_gguf_value_u64(v, &u) || u > UINT32_MAX)
        return wrong_type(g, key, v, "an integer in [0, 2^32)");
    *out = (uint32_t)u;
    return OSC_OK;
}

osc_status osc_gguf_get_i32(const osc_gguf *g, const char *key, int32_t *out) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    int64_t i;
    if (v->type == OSC_GGUF_BOOL || !osc_gguf_value_i64(v, &i) || i < INT32_MIN || i > INT32_MAX)
        return wrong_type(g, key, v, "a 32-bit integer");
    *out = (int32_t)i;
    return OSC_OK;
}

osc_status osc_gguf_get_u64(const osc_gguf *g, const char *key, uint64_t *out) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    if (v->type == OSC_GGUF_BOOL || !osc_gguf_value_u64(v, out)) return wrong_type(g, key, v, "a non-negative integer");
    return OSC_OK;
}

osc_status osc_gguf_get_f32(const osc_gguf *g, const char *key, float *out) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    double d;
    if ((v->type != OSC_GGUF_F32 && v->type != OSC_GGUF_F64) || !osc_gguf_value_f64(v, &d))
        return wrong_type(g, key, v, "f32");
    *out = (float)d;
    return OSC_OK;
}

osc_status osc_gguf_get_bool(const osc_gguf *g, const char *key, int *out) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    if (v->type != OSC_GGUF_BOOL) return wrong_type(g, key, v, "bool");
    *out = v->p[0] != 0;
    return OSC_OK;
}

osc_status osc_gguf_get_str(const osc_gguf *g, const char *key, const char **s, size_t *len) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    if (v->type != OSC_GGUF_STRING) return wrong_type(g, key, v, "string");
    *s = (const char *)v->p;
    *len = (size_t)v->n;
    return OSC_OK;
}

osc_status osc_gguf_get_arr(const osc_gguf *g, const char *key, int elem, const osc_gguf_value **out) {
    const osc_gguf_value *v;
    OSC_TRY(get_typed(g, key, &v));
    if (v->type != OSC_GGUF_ARRAY || (elem >= 0 && (int)v->elem != elem)) {
        char want[48];
        snprintf(want, sizeof want, "array of %s", elem >= 0 ? osc_gguf_type_name((osc_gguf_type)elem) : "anything");
        return wrong_type(g, key, v, want);
    }
    *out = v;
    return OSC_OK;
}

/* ---- tensors ---- */

int osc_gguf_n_tensors(const osc_gguf *g) { return g ? g->n_t : 0; }
const osc_gguf_tensor *osc_gguf_tensor_at(const osc_gguf *g, int i) {
    return g && i >= 0 && i < g->n_t ? &g->t[i] : NULL;
}

const osc_gguf_tensor *osc_gguf_tensor_find(const osc_gguf *g, const char *name) {
    int k = g && name ? find_name(g, g->n_t, g->t_order, get_tname, name) : -1;
    return k >= 0 ? &g->t[k] : NULL;
}

/* ---- dequantization ----
 * Block layouts (ggml-common.h). Each routine reproduces the reference float32 arithmetic in the
 * same order (scale products first), so results are bit-identical. */

static inline float h2f(const uint8_t *p) { return osc_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* Q4_0: f16 d, 16 bytes of nibbles; element j is the low nibble of byte j, element j + 16 the
 * high nibble; value d * (q - 8). */
static void dq_q4_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    const uint8_t *q = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((q[j] & 15) - 8);
        y[j + 16] = d * (float)((q[j] >> 4) - 8);
    }
}

/* Q4_1: f16 d, f16 m, 16 bytes of nibbles (as Q4_0); value d * q + m. */
static void dq_q4_1(const uint8_t *b, float *y) {
    const float d = h2f(b), m = h2f(b + 2);
    const uint8_t *q = b + 4;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(q[j] & 15) + m;
        y[j + 16] = d * (float)(q[j] >> 4) + m;
    }
}

/* Q5_0: f16 d, 4 bytes of fifth bits (bit j of the little-endian u32 belongs to element j), 16
 * bytes of nibbles as Q4_0; value d * (q - 16). */
static void dq_q5_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    const uint32_t qh = (uint32_t)le(b + 2, 4);
    const uint8_t *q = b + 6;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((int)((q[j] & 15) | ((qh >> j & 1) << 4)) - 16);
        y[j + 16] = d * (float)((int)((q[j] >> 4) | ((qh >> (j + 16) & 1) << 4)) - 16);
    }
}

/* Q5_1: f16 d, f16 m, then as Q5_0 with unsigned q; value d * q + m. */
static void dq_q5_1(const uint8_t *b, float *y) {
    const float d = h2f(b), m = h2f(b + 2);
    const uint32_t qh = (uint32_t)le(b + 4, 4);
    const uint8_t *q = b + 8;
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((q[j] & 15) | ((qh >> j & 1) << 4)) + m;
        y[j + 16] = d * (float)((q[j] >> 4) | ((qh >> (j + 16) & 1) << 4)) + m;
    }
}

/* Q8_0: f16 d, 32 int8; value d * q. */
static void dq_q8_0(const uint8_t *b, float *y) {
    const float d = h2f(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

/* Q2_K: 16 scale bytes (low nibble scale, high nibble min, one per 16 values), 64 bytes of 2-bit
 * values, f16 d, f16 dmin. Two halves of 128 values; in a half, group s (0..3) of 32 values takes
 * bits 2s..2s+1 of the half's 32 bytes; value (d * scale) * q - (dmin * min). */
static void dq_q2_k(const uint8_t *b, float *y) {
    const uint8_t *sc = b, *q = b + 16;
    const float d = h2f(b + 80), dmin = h2f(b + 82);
    for (int h = 0; h < 2; h++, q += 32)
        for (int s = 0; s < 4; s++)
            for (int l = 0; l < 32; l++) {
                const int e = h * 128 + s * 32 + l, is = e / 16;
                const float dl = d * (float)(sc[is] & 15), ml = dmin * (float)(sc[is] >> 4);
                y[e] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
            }
}

/* Q3_K: 32 bytes of high-bit masks, 64 bytes of 2-bit values (laid out as Q2_K), 12 bytes of
 * 6-bit signed scales (one per 16 values: low 4 bits in bytes 0-7, low nibble for scales 0-7,
 * high nibble for 8-15; top 2 bits in bytes 8-11, bits 2k..2k+1 of byte 8 + i % 4 for scale i,
 * k = i / 4; minus 32), f16 d. Element e of a 32-group g = e / 32 has its mask bit in bit g of
 * mask byte e % 32; a clear bit subtracts 4. Value (d * scale) * q. */
static void dq_q3_k(const uint8_t *b, float *y) {
    const uint8_t *hm = b, *q = b + 32, *s = b + 96;
    const float d = h2f(b + 108);
    float dl[16];
    for (int i = 0; i < 16; i++) {
        const int lo = i < 8 ? s[i] & 15 : s[i - 8] >> 4, hi = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        dl[i] = d * (float)((lo | hi << 4) - 32);
    }
    for (int h = 0; h < 2; h++, q += 32)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                const int e = h * 128 + g * 32 + l;
                const int v = ((q[l] >> (2 * g)) & 3) - ((hm[l] >> (e / 32) & 1) ? 0 : 4);
                y[e] = dl[e / 16] * (float)v;
            }
}

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K super-block, packed in 12 bytes:
 * bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7; bytes 4-7 the mins
 * 0-3 and the top bits of mins 4-7; bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and
 * mins 4-7 (high nibble). */
static void k_scale_min(int j, const uint8_t *s, float *sc, float *mn) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *mn = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *mn = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles. 256 values in 4 chunks of 64:
 * chunk c takes bytes 32c..32c+31, low nibbles first (sub-block 2c) then high (sub-block 2c+1);
 * value (d * scale) * q - (dmin * min). */
static void dq_q4_k(const uint8_t *b, float *y) {
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *s = b + 4, *q = b + 16;
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        float sc, mn;
        k_scale_min(2 * c, s, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        k_scale_min(2 * c + 1, s, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)(q[l] & 15) - m1;
            y[l + 32] = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* Q5_K: as Q4_K plus 32 bytes of high bits after the scales: bit k of byte l is the fifth bit of
 * element l of sub-block k. */
static void dq_q5_k(const uint8_t *b, float *y) {
    const float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *s = b + 4, *qh = b + 16, *q = b + 48;
    for (int c = 0; c < 4; c++, q += 32, y += 64) {
        float sc, mn;
        k_scale_min(2 * c, s, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        k_scale_min(2 * c + 1, s, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        const int lo = 2 * c, hi = 2 * c + 1;
        for (int l = 0; l < 32; l++) {
            y[l] = d1 * (float)((q[l] & 15) | (((qh[l] >> lo) & 1) << 4)) - m1;
            y[l + 32] = d2 * (float)((q[l] >> 4) | (((qh[l] >> hi) & 1) << 4)) - m2;
        }
    }
}

/* Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 int8 scales (one per 16 values),
 * f16 d. Two halves of 128 values; in a half, group g (0..3) of 32 values takes the low nibbles
 * of bytes 0-31 / 32-63 (g = 0, 1) or their high nibbles (g = 2, 3) and bits 2g..2g+1 of the
 * half's 32 high bytes; value (d * scale) * (q - 32). */
static void dq_q6_k(const uint8_t *b, float *y) {
    const float d = h2f(b + 208);
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) {
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q1;
            y[l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
    }
}

static void dq_f16(const uint8_t *b, float *y) { *y = h2f(b); }
static void dq_bf16(const uint8_t *b, float *y) { *y = osc_bf16_to_f32((uint16_t)(b[0] | b[1] << 8)); }
static void dq_f32(const uint8_t *b, float *y) { memcpy(y, b, 4); }

typedef void (*dq_fn)(const uint8_t *, float *);

static dq_fn dq_for(uint32_t type) {
    switch (type) {
    case OSC_GGML_F32: return dq_f32;
    case OSC_GGML_F16: return dq_f16;
    case OSC_GGML_BF16: return dq_bf16;
    case OSC_GGML_Q4_0: return dq_q4_0;
    case OSC_GGML_Q4_1: return dq_q4_1;
    case OSC_GGML_Q5_0: return dq_q5_0;
    case OSC_GGML_Q5_1: return dq_q5_1;
    case OSC_GGML_Q8_0: return dq_q8_0;
    case OSC_GGML_Q2_K: return dq_q2_k;
    case OSC_GGML_Q3_K: return dq_q3_k;
    case OSC_GGML_Q4_K: return dq_q4_k;
    case OSC_GGML_Q5_K: return dq_q5_k;
    case OSC_GGML_Q6_K: return dq_q6_k;
    default: return NULL;
    }
}

#define PAR_ELEMS (1 << 18) /* convert on several threads from this many elements */

osc_status osc_ggml_dequant(uint32_t type, const void *src, int64_t nblocks, float *dst) {
    dq_fn fn = dq_for(type);
    if (!fn) return osc_error(OSC_ERR_UNSUPPORTED, "cannot dequantize ggml type %s (%u)", osc_ggml_type_name(type), type);
    if (nblocks < 0 || (nblocks && (!src || !dst))) return osc_error(OSC_ERR_INVALID_ARG, "osc_ggml_dequant: bad arguments");
    const uint8_t *s = src;
    const int64_t bs = TRAITS[type].blck, ts = TRAITS[type].size;
    if (type == OSC_GGML_F32) {
        memcpy(dst, s, (size_t)nblocks * 4);
        return OSC_OK;
    }
#pragma omp parallel for schedule(static) if (nblocks * bs >= PAR_ELEMS)
    for (int64_t i = 0; i < nblocks; i++) fn(s + i * ts, dst + i * bs);
    return OSC_OK;
}

static osc_status check_range(const osc_gguf_tensor *t, int64_t first, int64_t n, const void *dst) {
    if (!t || (n && !dst)) return osc_error(OSC_ERR_INVALID_ARG, "osc_gguf_read: NULL argument");
    const ggml_traits *tr = traits(t->type);
    if (!tr || !tr->dequant)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which this reader cannot convert "
                         "(supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
                         t->file, t->name, osc_ggml_type_name(t->type));
    if (first < 0 || n < 0 || first > t->nelem || n > t->nelem - first || first % tr->blck || n % tr->blck)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: tensor %s: elements [%lld, +%lld) are not whole %s blocks inside its %lld",
                         t->file, t->name, (long long)first, (long long)n, tr->name, (long long)t->nelem);
    return OSC_OK;
}

osc_status osc_gguf_read_f32(const osc_gguf_tensor *t, int64_t first, int64_t n, float *dst) {
    OSC_TRY(check_range(t, first, n, dst));
    const ggml_traits *tr = traits(t->type);
    const uint8_t *src = (const uint8_t *)t->data + first / tr->blck * tr->size;
    return osc_ggml_dequant(t->type, src, n / tr->blck, dst);
}

#define BF16_CHUNK 4096 /* a multiple of every block size */

osc_status osc_gguf_read_bf16(const osc_gguf_tensor *t, int64_t first, int64_t n, uint16_t *dst) {
    OSC_TRY(check_range(t, first, n, dst));
    const ggml_traits *tr = traits(t->type);
    const uint8_t *src = (const uint8_t *)t->data + first / tr->blck * tr->size;
    if (t->type == OSC_GGML_BF16) {
        memcpy(dst, src, (size_t)n * 2);
        return OSC_OK;
    }
    const int64_t nchunks = (n + BF16_CHUNK - 1) / BF16_CHUNK;
    const dq_fn fn = dq_for(t->type);
#pragma omp parallel for schedule(static) if (n >= PAR_ELEMS)
    for (int64_t c = 0; c < nchunks; c++) {
        float buf[BF16_CHUNK];
        const int64_t e0 = c * BF16_CHUNK, m = n - e0 < BF16_CHUNK ? n - e0 : BF16_CHUNK;
        const uint8_t *s = src + e0 / tr->blck * tr->size;
        for (int64_t b = 0; b < m / tr->blck; b++) fn(s + b * tr->size, buf + b * tr->blck);
        for (int64_t i = 0; i < m; i++) dst[e0 + i] = osc_f32_to_bf16(buf[i]);
    }
    return OSC_OK;
}
