#include "safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio.h"

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000) /* 100 MB, as the reference reader */
#define ST_MAX_INDEX ((size_t)64 * 1024 * 1024)
#define ST_MAX_INT ((uint64_t)1 << 53) /* exact in a JSON double */

typedef struct st_file {
    char *path;
    osc_mmap map;
} st_file;

struct osc_st {
    char *path;
    st_file *files;
    int nfiles;
    osc_st_tensor *t; /* sorted by name after open */
    int n, cap;
};

static char *st_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void osc_st_close(osc_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free((char *)st->t[i].name);
    free(st->t);
    for (int i = 0; i < st->nfiles; i++) {
        osc_mmap_close(&st->files[i].map);
        free(st->files[i].path);
    }
    free(st->files);
    free(st->path);
    free(st);
}

/* ---- dtypes ---- */

static int st_parse_dtype(const char *s, osc_dtype *dt) {
    static const struct { const char *name; osc_dtype dt; } tab[] = {
        {"F32", OSC_F32}, {"F16", OSC_F16}, {"BF16", OSC_BF16},
        {"I32", OSC_I32}, {"I64", OSC_I64}, {"U8", OSC_U8},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(s, tab[i].name) == 0) {
            *dt = tab[i].dt;
            return 1;
        }
    return 0;
}

/* A JSON non-negative integer <= max. */
static int st_json_uint(const cJSON *j, uint64_t max, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return 0;
    double d = j->valuedouble;
    if (!(d >= 0) || d > (double)max || d != floor(d)) return 0;
    *out = (uint64_t)d;
    return 1;
}

/* ---- one file ---- */

static osc_status st_add_file(osc_st *st, const char *path, int *file_idx) {
    st_file *nf = realloc(st->files, (size_t)(st->nfiles + 1) * sizeof *nf);
    if (!nf) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    st->files = nf;
    st_file *f = &st->files[st->nfiles];
    memset(f, 0, sizeof *f);
    f->path = st_strdup(path);
    if (!f->path) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    st->nfiles++;
    osc_status s = osc_mmap_open(path, &f->map);
    if (s != OSC_OK) return s; /* message already names the path ("file is empty", ...) */
    *file_idx = st->nfiles - 1;
    return OSC_OK;
}

static osc_status st_parse_entry(osc_st *st, const st_file *f, const cJSON *e,
                                 const char *base, uint64_t data_size) {
    const char *path = f->path, *name = e->string;
    if (!cJSON_IsObject(e))
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: header entry is not an object", path, name);
    const cJSON *jdt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *joff = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jdt))
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: missing or non-string dtype", path, name);
    osc_dtype dt;
    if (!st_parse_dtype(jdt->valuestring, &dt))
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "%s: tensor %s: unsupported dtype %.32s (supported: F32, F16, BF16, I32, I64, U8)",
                         path, name, jdt->valuestring);
    if (!cJSON_IsArray(jshape))
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: shape is not a list", path, name);
    int nd = cJSON_GetArraySize(jshape);
    if (nd > OSC_ST_MAX_DIMS)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: shape has %d dims, more than the %d supported",
                         path, name, nd, OSC_ST_MAX_DIMS);
    osc_st_tensor t;
    memset(&t, 0, sizeof t);
    t.dt = dt;
    t.nd = nd;
    uint64_t nelem = 1;
    int i = 0;
    for (const cJSON *d = jshape->child; d; d = d->next, i++) {
        uint64_t v;
        if (!st_json_uint(d, ST_MAX_INT, &v))
            return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: shape must be a list of non-negative integers",
                             path, name);
        t.shape[i] = (int64_t)v;
        if (v != 0 && nelem > ST_MAX_INT / v)
            return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: element count overflows", path, name);
        nelem *= v;
    }
    uint64_t esz = osc_dtype_size(dt);
    if (nelem > ST_MAX_INT / esz)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: byte size overflows", path, name);
    uint64_t nbytes = nelem * esz;
    uint64_t b, en;
    if (!cJSON_IsArray(joff) || cJSON_GetArraySize(joff) != 2 || !st_json_uint(joff->child, ST_MAX_INT, &b) ||
        !st_json_uint(joff->child->next, ST_MAX_INT, &en))
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, end] non-negative integers",
                         path, name);
    if (b > en)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] have begin > end", path,
                         name, (unsigned long long)b, (unsigned long long)en);
    if (en > data_size)
        return osc_error(OSC_ERR_FORMAT,
                         "%s: tensor %s: data_offsets [%llu, %llu] run past the end of the data (%llu bytes)",
                         path, name, (unsigned long long)b, (unsigned long long)en,
                         (unsigned long long)data_size);
    if (en - b != nbytes)
        return osc_error(OSC_ERR_FORMAT,
                         "%s: tensor %s: data_offsets span %llu bytes but shape and dtype %s need %llu",
                         path, name, (unsigned long long)(en - b), osc_dtype_name(dt),
                         (unsigned long long)nbytes);
    t.data = base + b;
    t.nbytes = (size_t)nbytes;
    t.file = f->path;
    t.name = st_strdup(name);
    if (!t.name) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    if (st->n == st->cap) { /* cap was reserved by the caller; defensive */
        free((char *)t.name);
        return osc_error(OSC_ERR_OOM, "%s: tensor table full", path);
    }
    st->t[st->n++] = t;
    return OSC_OK;
}

static osc_status st_parse_file(osc_st *st, int fi) {
    const st_file *f = &st->files[fi];
    const char *path = f->path;
    const unsigned char *p = f->map.data;
    uint64_t size = f->map.size;
    if (size < 8)
        return osc_error(OSC_ERR_FORMAT, "%s: file is %llu bytes, too short for a safetensors header",
                         path, (unsigned long long)size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > ST_MAX_HEADER)
        return osc_error(OSC_ERR_FORMAT, "%s: header length %llu is larger than the 100 MB limit", path,
                         (unsigned long long)hlen);
    if (hlen > size - 8)
        return osc_error(OSC_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)",
                         path, (unsigned long long)hlen, (unsigned long long)size);
    cJSON *root = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!root) return osc_error(OSC_ERR_FORMAT, "%s: header is not valid JSON", path);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return osc_error(OSC_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    int count = cJSON_GetArraySize(root); /* bounded by hlen */
    if (count > INT32_MAX / 2 - st->n) {
        cJSON_Delete(root);
        return osc_error(OSC_ERR_FORMAT, "%s: too many tensors", path);
    }
    if (st->n + count > st->cap) {
        int ncap = st->n + count;
        osc_st_tensor *nt = realloc(st->t, (size_t)ncap * sizeof *nt);
        if (!nt) {
            cJSON_Delete(root);
            return osc_error(OSC_ERR_OOM, "%s: out of memory for %d tensors", path, ncap);
        }
        st->t = nt;
        st->cap = ncap;
    }
    const char *base = (const char *)p + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    osc_status s = OSC_OK;
    for (const cJSON *e = root->child; e && s == OSC_OK; e = e->next) {
        if (!e->string) {
            s = osc_error(OSC_ERR_FORMAT, "%s: header entry without a name", path);
            break;
        }
        if (strcmp(e->string, "__metadata__") == 0) continue;
        s = st_parse_entry(st, f, e, base, data_size);
    }
    cJSON_Delete(root);
    return s;
}

static int st_cmp_tensor(const void *a, const void *b) {
    return strcmp(((const osc_st_tensor *)a)->name, ((const osc_st_tensor *)b)->name);
}

static osc_status st_sort(osc_st *st) {
    if (st->n > 1) qsort(st->t, (size_t)st->n, sizeof *st->t, st_cmp_tensor);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
            return osc_error(OSC_ERR_FORMAT, "%s: tensor %s appears twice (also in %s)", st->t[i].file,
                             st->t[i].name, st->t[i - 1].file);
    return OSC_OK;
}

/* ---- sharded ---- */

static int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static osc_status st_open_index(osc_st *st, const char *dir, const char *ipath) {
    char *text = NULL;
    size_t len = 0;
    OSC_TRY(osc_read_file(ipath, ST_MAX_INDEX, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return osc_error(OSC_ERR_FORMAT, "%s: not valid JSON", ipath);
    osc_status s = OSC_OK;
    const char **shards = NULL;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(wm)) {
        s = osc_error(OSC_ERR_FORMAT, "%s: weight_map is missing or not an object", ipath);
        goto done;
    }
    int nw = cJSON_GetArraySize(wm);
    if (nw == 0) {
        s = osc_error(OSC_ERR_FORMAT, "%s: weight_map is empty", ipath);
        goto done;
    }
    shards = malloc((size_t)nw * sizeof *shards);
    if (!shards) {
        s = osc_error(OSC_ERR_OOM, "%s: out of memory", ipath);
        goto done;
    }
    int ns = 0;
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!e->string || !cJSON_IsString(e) || !e->valuestring[0]) {
            s = osc_error(OSC_ERR_FORMAT, "%s: weight_map entry %s is not a file name", ipath,
                          e->string ? e->string : "?");
            goto done;
        }
        const char *v = e->valuestring;
        if (strchr(v, '/') || strchr(v, '\\') || strcmp(v, ".") == 0 || strcmp(v, "..") == 0 ||
            strlen(v) > 255) {
            s = osc_error(OSC_ERR_FORMAT, "%s: weight_map names shard '%.64s', which is not a plain file name",
                          ipath, v);
            goto done;
        }
        shards[ns++] = v;
    }
    qsort(shards, (size_t)ns, sizeof *shards, st_cmp_str);
    int nu = 0;
    for (int i = 0; i < ns; i++)
        if (nu == 0 || strcmp(shards[nu - 1], shards[i]) != 0) shards[nu++] = shards[i];
    for (int i = 0; i < nu && s == OSC_OK; i++) {
        char sp[4096];
        if ((size_t)snprintf(sp, sizeof sp, "%s/%s", dir, shards[i]) >= sizeof sp) {
            s = osc_error(OSC_ERR_FORMAT, "%s: shard path too long", ipath);
            break;
        }
        if (!osc_file_exists(sp)) {
            s = osc_error(OSC_ERR_IO, "%s: shard file named in %s does not exist", sp, ipath);
            break;
        }
        int fi;
        s = st_add_file(st, sp, &fi);
        if (s == OSC_OK) s = st_parse_file(st, fi);
    }
    if (s == OSC_OK) s = st_sort(st);
    /* Every tensor the index names must be in the shard it names. */
    for (const cJSON *e = wm->child; e && s == OSC_OK; e = e->next) {
        const osc_st_tensor *t = osc_st_get(st, e->string);
        char sp[4096];
        if ((size_t)snprintf(sp, sizeof sp, "%s/%s", dir, e->valuestring) >= sizeof sp) {
            s = osc_error(OSC_ERR_FORMAT, "%s: shard path too long", ipath);
            break;
        }
        if (!t)
            s = osc_error(OSC_ERR_FORMAT, "%s: tensor %s listed in %s is missing from the shard", sp,
                          e->string, ipath);
        else if (strcmp(t->file, sp) != 0)
            s = osc_error(OSC_ERR_FORMAT, "%s: tensor %s is in %s, not in %s as the index says", ipath,
                          e->string, t->file, sp);
    }
done:
    free(shards);
    cJSON_Delete(root);
    return s;
}

osc_status osc_st_open(const char *path, osc_st **out) {
    *out = NULL;
    if (!path) return osc_error(OSC_ERR_INVALID_ARG, "osc_st_open: NULL path");
    osc_st *st = calloc(1, sizeof *st);
    if (!st) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    st->path = st_strdup(path);
    if (!st->path) {
        free(st);
        return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    }
    osc_status s;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        s = osc_error(OSC_ERR_IO, "%s: does not exist", path);
    } else if (S_ISDIR(sb.st_mode)) {
        char ip[4096], sp[4096];
        osc_path_join(ip, sizeof ip, path, "model.safetensors.index.json");
        osc_path_join(sp, sizeof sp, path, "model.safetensors");
        if (strlen(path) > sizeof ip - 64) {
            s = osc_error(OSC_ERR_INVALID_ARG, "%s: path too long", path);
        } else if (osc_file_exists(ip)) {
            size_t dl = strlen(path);
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", path);
            while (dl > 1 && dir[dl - 1] == '/') dir[--dl] = 0;
            s = st_open_index(st, dir, ip);
        } else if (osc_file_exists(sp)) {
            int fi;
            s = st_add_file(st, sp, &fi);
            if (s == OSC_OK) s = st_parse_file(st, fi);
            if (s == OSC_OK) s = st_sort(st);
        } else {
            s = osc_error(OSC_ERR_IO, "%s: no model.safetensors or model.safetensors.index.json", path);
        }
    } else {
        int fi;
        s = st_add_file(st, path, &fi);
        if (s == OSC_OK) s = st_parse_file(st, fi);
        if (s == OSC_OK) s = st_sort(st);
    }
    if (s != OSC_OK) {
        osc_st_close(st);
        return s;
    }
    *out = st;
    return OSC_OK;
}

/* ---- lookup ---- */

const osc_st_tensor *osc_st_get(const osc_st *st, const char *name) {
    if (!st || !name) return NULL;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, st->t[mid].name);
        if (c == 0) return &st->t[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int osc_st_count(const osc_st *st) { return st ? st->n : 0; }

const osc_st_tensor *osc_st_at(const osc_st *st, int i) {
    if (!st || i < 0 || i >= st->n) return NULL;
    return &st->t[i];
}

const char *osc_st_path(const osc_st *st) { return st ? st->path : NULL; }

static void st_fmt_shape(char *buf, size_t n, int nd, const int64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < nd && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

osc_status osc_st_expect(const osc_st *st, const char *name, int nd, const int64_t *shape,
                         const osc_st_tensor **out) {
    if (out) *out = NULL;
    if (!st || !name || nd < 0 || nd > OSC_ST_MAX_DIMS || (nd && !shape))
        return osc_error(OSC_ERR_INVALID_ARG, "osc_st_expect: bad arguments");
    const osc_st_tensor *t = osc_st_get(st, name);
    if (!t) return osc_error(OSC_ERR_FORMAT, "%s: missing tensor %s", st->path, name);
    int same = t->nd == nd;
    for (int i = 0; same && i < nd; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char a[128], b[128];
        st_fmt_shape(a, sizeof a, t->nd, t->shape);
        st_fmt_shape(b, sizeof b, nd, shape);
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s has shape %s but the config implies %s", t->file,
                         name, a, b);
    }
    if (t->dt != OSC_F32 && t->dt != OSC_F16 && t->dt != OSC_BF16)
        return osc_error(OSC_ERR_FORMAT, "%s: tensor %s has dtype %s; weights must be F32, F16 or BF16",
                         t->file, name, osc_dtype_name(t->dt));
    if (out) *out = t;
    return OSC_OK;
}

osc_status osc_st_read_f32(const osc_st_tensor *t, float *dst, int64_t n) {
    if (!t || (!dst && n)) return osc_error(OSC_ERR_INVALID_ARG, "osc_st_read_f32: NULL argument");
    int64_t ne = 1;
    for (int i = 0; i < t->nd; i++) ne *= t->shape[i];
    if (n != ne)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: tensor %s has %lld elements, caller asked for %lld",
                         t->file, t->name, (long long)ne, (long long)n);
    const unsigned char *s = t->data;
    switch (t->dt) {
    case OSC_F32:
        memcpy(dst, s, (size_t)n * 4);
        return OSC_OK;
    case OSC_BF16:
    case OSC_F16:
        /* The data may be unaligned: read each element bytewise (little-endian). */
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
            dst[i] = t->dt == OSC_BF16 ? osc_bf16_to_f32(h) : osc_f16_to_f32(h);
        }
        return OSC_OK;
    default:
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: tensor %s: cannot convert %s to F32", t->file, t->name,
                         osc_dtype_name(t->dt));
    }
}

/* ---- writer ---- */

osc_status osc_st_write(const char *path, int n, const char *const *names, const osc_dtype *dts,
                        const int *nds, const int64_t (*shapes)[OSC_MAX_DIMS],
                        const void *const *datas) {
    if (!path || n < 0 || (n > 0 && (!names || !dts || !nds || !shapes || !datas)))
        return osc_error(OSC_ERR_INVALID_ARG, "osc_st_write: bad arguments");
    size_t *sizes = calloc((size_t)n + 1, sizeof *sizes);
    cJSON *root = cJSON_CreateObject();
    char *hdr = NULL;
    FILE *fp = NULL;
    osc_status s = OSC_OK;
    if (!sizes || !root) {
        s = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (!names[i] || nds[i] < 0 || nds[i] > OSC_MAX_DIMS || cJSON_HasObjectItem(root, names[i]) ||
            osc_dtype_size(dts[i]) == 0) {
            s = osc_error(OSC_ERR_INVALID_ARG, "%s: tensor %d (%s): bad name, dims or dtype, or duplicate name",
                          path, i, names[i] ? names[i] : "NULL");
            goto done;
        }
        uint64_t ne = 1;
        int64_t dims[OSC_MAX_DIMS];
        for (int d = 0; d < nds[i]; d++) {
            if (shapes[i][d] < 0) {
                s = osc_error(OSC_ERR_INVALID_ARG, "%s: tensor %s: negative dim", path, names[i]);
                goto done;
            }
            dims[d] = shapes[i][d];
            ne *= (uint64_t)shapes[i][d];
        }
        sizes[i] = (size_t)(ne * osc_dtype_size(dts[i]));
        if (sizes[i] && !datas[i]) {
            s = osc_error(OSC_ERR_INVALID_ARG, "%s: tensor %s: NULL data", path, names[i]);
            goto done;
        }
        cJSON *e = cJSON_AddObjectToObject(root, names[i]);
        cJSON *jshape = cJSON_AddArrayToObject(e, "shape");
        cJSON *joff = cJSON_AddArrayToObject(e, "data_offsets");
        if (!e || !jshape || !joff || !cJSON_AddStringToObject(e, "dtype", osc_dtype_name(dts[i]))) {
            s = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
            goto done;
        }
        for (int d = 0; d < nds[i]; d++) cJSON_AddItemToArray(jshape, cJSON_CreateNumber((double)dims[d]));
        cJSON_AddItemToArray(joff, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(joff, cJSON_CreateNumber((double)(off + sizes[i])));
        off += sizes[i];
    }
    hdr = cJSON_PrintUnformatted(root);
    if (!hdr) {
        s = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8; /* pad with spaces to 8-byte alignment */
    fp = fopen(path, "wb");
    if (!fp) {
        s = osc_error(OSC_ERR_IO, "%s: cannot create", path);
        goto done;
    }
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(lenb, 1, 8, fp) == 8 && fwrite(hdr, 1, hl, fp) == hl;
    for (size_t i = hl; ok && i < padded; i++) ok = fputc(' ', fp) != EOF;
    for (int i = 0; ok && i < n; i++)
        if (sizes[i]) ok = fwrite(datas[i], 1, sizes[i], fp) == sizes[i];
    if (fclose(fp) != 0) ok = 0;
    fp = NULL;
    if (!ok) s = osc_error(OSC_ERR_IO, "%s: write failed", path);
done:
    free(hdr);
    cJSON_Delete(root);
    free(sizes);
    return s;
}
