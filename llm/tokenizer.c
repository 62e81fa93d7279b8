/* Byte-level BPE tokenizer from a HuggingFace tokenizer.json. See tokenizer.h.
 *
 * Encoding follows the `tokenizers` library step by step:
 *   1. added tokens with normalized=false are cut out of the raw text (leftmost, then longest)
 *   2. each remaining piece is normalized (NFC) and normalized=true added tokens are cut out
 *   3. each remaining piece is split by the pre-tokenizer regex into words
 *   4. each word is byte-level BPE encoded (lowest merge rank first, leftmost on ties)
 * Byte-level BPE works on the GPT-2 byte<->unicode alphabet; since that map is a bijection we
 * convert every vocab token to raw bytes once at load and run BPE directly on bytes. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <unictype.h>
#include <uninorm.h>
#include <unistr.h>

#include "core/fileio.h"

/* character classes used by the pre-tokenizer matchers */
enum { TC_L = 1, TC_N = 2, TC_WS = 4, TC_CRLF = 8 };

/* Pre-tokenizer regexes of byte-level BPE tokenizers, written out by hand, plus UTF-8 helpers.
 *
 * Each matcher returns the end of the match that the regex (Oniguruma, leftmost-first
 * alternation, greedy with backtracking) finds at position i of a code-point array. Every
 * position matches one alternative in all three patterns, so splitting "Isolated" is just
 * "match, move to its end, repeat".
 *
 * Character classes: \p{L} and \p{N} are Unicode general categories; \s is the Unicode
 * White_Space property (what Oniguruma uses for UTF-8). */



static uint8_t tok_class(uint32_t c) {
    if (c < 128) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return TC_L;
        if (c >= '0' && c <= '9') return TC_N;
        if (c == '\r' || c == '\n') return TC_WS | TC_CRLF;
        if (c == ' ' || (c >= 9 && c <= 13)) return TC_WS;
        return 0;
    }
    uint8_t k = 0;
    if (uc_is_general_category(c, UC_CATEGORY_L)) k |= TC_L;
    else if (uc_is_general_category(c, UC_CATEGORY_N)) k |= TC_N;
    if (uc_is_property_white_space(c)) k |= TC_WS;
    return k;
}

/* Case-insensitive (Unicode simple case folding) for the letters of the contractions. */
static uint32_t fold(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's'; /* LATIN SMALL LETTER LONG S folds to s */
    return c;
}

/* '(s|t|re|ve|m|ll|d) at i; returns the end or 0. */
static size_t contraction(const uint32_t *cp, size_t i, size_t n, int icase) {
    if (cp[i] != '\'' || i + 1 >= n) return 0;
    uint32_t x = icase ? fold(cp[i + 1]) : cp[i + 1];
    if (x == 's' || x == 't' || x == 'm' || x == 'd') return i + 2;
    if (i + 2 >= n) return 0;
    uint32_t y = icase ? fold(cp[i + 2]) : cp[i + 2];
    if ((x == 'r' && y == 'e') || (x == 'v' && y == 'e') || (x == 'l' && y == 'l')) return i + 3;
    return 0;
}

#define IS_P(k) (!((k) & (TC_WS | TC_L | TC_N))) /* [^\s\p{L}\p{N}] */

/* Qwen2 / Llama-3:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,maxn}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_qwen(const uint32_t *cp, const uint8_t *k, size_t i, size_t n, int maxn) {
    size_t j = contraction(cp, i, n, 1);
    if (j) return j;
    uint8_t c = k[i];
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!(c & (TC_L | TC_N | TC_CRLF)) && i + 1 < n && (k[i + 1] & TC_L)) {
        j = i + 1;
        while (j < n && (k[j] & TC_L)) j++;
        return j;
    }
    if (c & TC_L) {
        j = i;
        while (j < n && (k[j] & TC_L)) j++;
        return j;
    }
    /* \p{N}{1,maxn} */
    if (c & TC_N) {
        j = i;
        while (j < n && (int)(j - i) < maxn && (k[j] & TC_N)) j++;
        return j;
    }
    /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
    size_t p = (cp[i] == ' ' && i + 1 < n && IS_P(k[i + 1])) ? i + 1 : i;
    if (IS_P(k[p])) {
        j = p;
        while (j < n && IS_P(k[j])) j++;
        while (j < n && (k[j] & TC_CRLF)) j++;
        return j;
    }
    /* the rest start with whitespace; c is whitespace here */
    j = i;
    while (j < n && (k[j] & TC_WS)) j++;
    /* \s*[\r\n]+ : up to the last CR/LF of the run */
    for (size_t q = j; q > i; q--)
        if (k[q - 1] & TC_CRLF) return q;
    /* \s+(?!\S) : the whole run at the end, else give the last space back */
    if (j == n) return j;
    if (j - i >= 2) return j - 1;
    return j; /* \s+ */
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const uint32_t *cp, const uint8_t *k, size_t i, size_t n) {
    size_t j = contraction(cp, i, n, 0);
    if (j) return j;
    size_t p = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;
    /* the optional space is taken only when the class run follows it */
    if (k[p] & TC_L) {
        j = p;
        while (j < n && (k[j] & TC_L)) j++;
        return j;
    }
    if (k[p] & TC_N) {
        j = p;
        while (j < n && (k[j] & TC_N)) j++;
        return j;
    }
    if (IS_P(k[p])) {
        j = p;
        while (j < n && IS_P(k[j])) j++;
        return j;
    }
    /* here cp[i] is whitespace (a lone ' ' followed by whitespace, or other space) */
    j = i;
    while (j < n && (k[j] & TC_WS)) j++;
    if (j == i) return i + 1; /* cannot happen: every class is covered */
    if (j == n) return j;
    if (j - i >= 2) return j - 1;
    return j;
}

static size_t tok_match(int pattern, const uint32_t *cp, const uint8_t *k, size_t i, size_t n) {
    switch (pattern) {
    case OSC_PRETOK_QWEN2: return match_qwen(cp, k, i, n, 1);
    case OSC_PRETOK_LLAMA3: return match_qwen(cp, k, i, n, 3);
    case OSC_PRETOK_GPT2: return match_gpt2(cp, k, i, n);
    default: return n; /* OSC_PRETOK_NONE: the whole piece is one word */
    }
}

/* Decode valid UTF-8 (already checked) into code points and their byte offsets (off[n] = len).
 * Returns the number of code points. */
static size_t decode_utf8(const uint8_t *s, size_t len, uint32_t *cp, uint32_t *off) {
    size_t n = 0, i = 0;
    while (i < len) {
        uint8_t b = s[i];
        uint32_t c;
        size_t l;
        if (b < 0x80) { c = b; l = 1; }
        else if (b < 0xE0) { c = b & 0x1F; l = 2; }
        else if (b < 0xF0) { c = b & 0x0F; l = 3; }
        else { c = b & 0x07; l = 4; }
        if (i + l > len) l = len - i; /* defensive; input is validated */
        for (size_t q = 1; q < l; q++) c = (c << 6) | (s[i + q] & 0x3F);
        cp[n] = c;
        off[n] = (uint32_t)i;
        n++;
        i += l;
    }
    off[n] = (uint32_t)len;
    return n;
}

/* One UTF-8 character at s[0..n): returns 1 with *len = its length when complete and valid,
 * 0 when s is a valid but incomplete prefix (need more bytes), -1 when invalid with *len = the
 * maximal invalid subpart (>= 1 byte), per Unicode's "best practice" (as Python and Rust do). */
static int utf8_next(const uint8_t *s, size_t n, size_t *len) {
    uint8_t b = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (b < 0x80) { *len = 1; return 1; }
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else { *len = 1; return -1; }
    for (size_t q = 1; q < need; q++) {
        if (q >= n) { *len = q; return 0; }
        uint8_t c = s[q];
        uint8_t l2 = q == 1 ? lo : 0x80, h2 = q == 1 ? hi : 0xBF;
        if (c < l2 || c > h2) { *len = q; return -1; }
    }
    *len = need;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* GPT-2 byte <-> unicode alphabet                                                             */

/* Printable bytes map to themselves; the other 68 bytes map to U+0100.. in byte order. */
static void byte_alphabet(uint32_t byte2cp[256], int16_t cp2byte[324]) {
    int extra = 0;
    for (int i = 0; i < 324; i++) cp2byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        byte2cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
        cp2byte[byte2cp[b]] = (int16_t)b;
    }
}

/* What a token string decodes to through the ByteLevel decoder: every character mapped back to
 * its byte when all of them are in the alphabet, else the string's own UTF-8 bytes (as HF).
 * Writes at most slen bytes to dst; returns the length and sets *mapped. */
static size_t token_to_bytes(const int16_t cp2byte[324], const char *s, size_t slen, char *dst,
                             int *mapped) {
    size_t n = 0, i = 0;
    *mapped = 1;
    while (i < slen) {
        ucs4_t c;
        int l = u8_mbtouc(&c, (const uint8_t *)s + i, slen - i);
        if (l <= 0 || c >= 324 || cp2byte[c] < 0) { *mapped = 0; break; }
        dst[n++] = (char)cp2byte[c];
        i += (size_t)l;
    }
    if (!*mapped) {
        memcpy(dst, s, slen);
        return slen;
    }
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* byte arena and string -> id hash map                                                        */

typedef struct sbuf { char *p; size_t n, cap; } sbuf;

static int sbuf_reserve(sbuf *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Append n bytes; returns the offset or -1 (out of memory / arena over 4 GB). */
static int64_t sbuf_add(sbuf *b, const void *s, size_t n) {
    if (sbuf_reserve(b, n + 1) != 0 || b->n + n >= UINT32_MAX) return -1;
    int64_t off = (int64_t)b->n;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    return off;
}

static uint64_t hash_bytes(const void *s, size_t n) {
    const uint8_t *p = s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

typedef struct smap_ent { uint32_t off, len; int32_t id; } smap_ent;
/* Open addressing over a fixed capacity given at init (counts are known before filling). */
typedef struct smap { smap_ent *ent; size_t n, cap; int32_t *slot; size_t mask; } smap;

static int smap_init(smap *m, size_t cap) {
    size_t ns = 16;
    while (ns < 2 * cap + 16) ns *= 2;
    m->ent = malloc((cap ? cap : 1) * sizeof *m->ent);
    m->slot = malloc(ns * sizeof *m->slot);
    if (!m->ent || !m->slot) return -1;
    for (size_t i = 0; i < ns; i++) m->slot[i] = -1;
    m->n = 0;
    m->cap = cap;
    m->mask = ns - 1;
    return 0;
}

static void smap_free(smap *m) {
    free(m->ent);
    free(m->slot);
}

static int32_t smap_get(const smap *m, const char *arena, const char *s, size_t n) {
    if (!m->slot) return -1;
    for (size_t h = hash_bytes(s, n) & m->mask;; h = (h + 1) & m->mask) {
        int32_t e = m->slot[h];
        if (e < 0) return -1;
        const smap_ent *x = &m->ent[e];
        if (x->len == n && memcmp(arena + x->off, s, n) == 0) return x->id;
    }
}

/* Insert; returns -1 when inserted, else the id already stored under that string (the stored
 * one is kept unless replace). Caller guarantees m->n < m->cap. */
static int32_t smap_put(smap *m, const char *arena, uint32_t off, uint32_t len, int32_t id,
                        int replace) {
    for (size_t h = hash_bytes(arena + off, len) & m->mask;; h = (h + 1) & m->mask) {
        int32_t e = m->slot[h];
        if (e < 0) {
            m->ent[m->n] = (smap_ent){off, len, id};
            m->slot[h] = (int32_t)m->n++;
            return -1;
        }
        smap_ent *x = &m->ent[e];
        if (x->len == len && memcmp(arena + x->off, arena + off, len) == 0) {
            int32_t old = x->id;
            if (replace) x->id = id;
            return old;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the tokenizer                                                                               */

#define MAX_ID (1 << 24) /* ids must be below this (bounds every per-id allocation) */

typedef struct added_tok {
    int32_t id;
    uint32_t off, len; /* the content as matched: NFC'd when normalized and the normalizer is NFC */
    uint8_t lstrip, rstrip, single_word, normalized, special;
} added_tok;

typedef struct trie_node { int32_t child, sibling, term; uint8_t byte; } trie_node;
typedef struct trie { trie_node *nodes; size_t n, cap; uint8_t first[256]; } trie;

enum { TF_EXISTS = 1, TF_SPECIAL = 2 };

struct osc_tokenizer {
    sbuf arena;
    smap by_str;   /* vocab key as written in the file -> id */
    smap by_bytes; /* vocab token as raw bytes -> id (tokens made of the byte alphabet) */
    smap added_by_str; /* added-token content -> id */
    int32_t n_ids; /* max id + 1 */
    uint32_t *tok_off, *tok_len; /* per id: decoded bytes in the arena */
    uint8_t *tok_flags;
    int32_t byte_id[256]; /* single byte -> id, -1 if absent */
    uint64_t *mkey; /* merges: (left << 32 | right) -> rank, new id; UINT64_MAX = empty */
    int32_t *mrank, *mnew;
    size_t mmask;
    added_tok *added;
    int n_added;
    trie raw_trie, norm_trie;
    int nfc, pretok, add_prefix_space, ignore_merges;
    int32_t unk_id;
};

static int trie_init(trie *t) {
    t->cap = 64;
    t->nodes = malloc(t->cap * sizeof *t->nodes);
    if (!t->nodes) return -1;
    t->nodes[0] = (trie_node){-1, -1, -1, 0};
    t->n = 1;
    memset(t->first, 0, sizeof t->first);
    return 0;
}

static int trie_add(trie *t, const uint8_t *s, size_t n, int32_t term) {
    if (n == 0) return 0;
    t->first[s[0]] = 1;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = t->nodes[cur].child;
        while (c >= 0 && t->nodes[c].byte != s[i]) c = t->nodes[c].sibling;
        if (c < 0) {
            if (t->n == t->cap) {
                trie_node *p = realloc(t->nodes, 2 * t->cap * sizeof *p);
                if (!p) return -1;
                t->nodes = p;
                t->cap *= 2;
            }
            c = (int32_t)t->n++;
            t->nodes[c] = (trie_node){-1, t->nodes[cur].child, -1, s[i]};
            t->nodes[cur].child = c;
        }
        cur = c;
    }
    if (t->nodes[cur].term < 0) t->nodes[cur].term = term; /* first one wins on duplicates */
    return 0;
}

/* Longest added token starting at s[0..n): its index, or -1; *mlen its length. */
static int trie_longest(const trie *t, const uint8_t *s, size_t n, size_t *mlen) {
    int best = -1;
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = t->nodes[cur].child;
        while (c >= 0 && t->nodes[c].byte != s[i]) c = t->nodes[c].sibling;
        if (c < 0) break;
        cur = c;
        if (t->nodes[c].term >= 0) {
            best = t->nodes[c].term;
            *mlen = i + 1;
        }
    }
    return best;
}

void osc_tokenizer_free(osc_tokenizer *t) {
    if (!t) return;
    free(t->arena.p);
    smap_free(&t->by_str);
    smap_free(&t->by_bytes);
    smap_free(&t->added_by_str);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_flags);
    free(t->mkey);
    free(t->mrank);
    free(t->mnew);
    free(t->added);
    free(t->raw_trie.nodes);
    free(t->norm_trie.nodes);
    free(t);
}

static int merge_get(const osc_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *nid) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t h = hash_bytes(&key, 8) & t->mmask;; h = (h + 1) & t->mmask) {
        if (t->mkey[h] == UINT64_MAX) return 0;
        if (t->mkey[h] == key) {
            *rank = t->mrank[h];
            *nid = t->mnew[h];
            return 1;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* loading                                                                                     */

static const char *QWEN2_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *LLAMA3_RE =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *GPT2_RE =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *jstr(const cJSON *o, const char *key) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

/* Boolean field; absent or null gives def; -1 for another type. */
static int jbool(const cJSON *o, const char *key, int def) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!x || cJSON_IsNull(x)) return def;
    if (cJSON_IsBool(x)) return cJSON_IsTrue(x);
    return -1;
}

/* Integer id in [0, MAX_ID), else -1. */
static int32_t jid(const cJSON *x) {
    if (!cJSON_IsNumber(x)) return -1;
    double d = x->valuedouble;
    if (!(d >= 0 && d < MAX_ID) || d != (double)(int32_t)d) return -1;
    return (int32_t)d;
}

#define LFAIL(st, ...) do { status = osc_error(st, __VA_ARGS__); goto done; } while (0)

static osc_status parse_normalizer(const char *path, const cJSON *n, int *nfc) {
    *nfc = 0;
    if (!n || cJSON_IsNull(n)) return OSC_OK;
    const char *type = jstr(n, "type");
    if (!type) return osc_error(OSC_ERR_FORMAT, "%s: normalizer has no \"type\"", path);
    if (!strcmp(type, "NFC")) {
        *nfc = 1;
        return OSC_OK;
    }
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list))
            return osc_error(OSC_ERR_FORMAT, "%s: normalizer Sequence without a list", path);
        const cJSON *x;
        cJSON_ArrayForEach(x, list) {
            int sub;
            OSC_TRY(parse_normalizer(path, x, &sub));
            if (sub) *nfc = 1;
        }
        return OSC_OK;
    }
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported (only NFC)",
                     path, type);
}

/* ByteLevel pre-tokenizer: sets *use_regex and add_prefix_space. */
static osc_status parse_bytelevel(const char *path, const cJSON *p, int *use_regex, int *aps) {
    *use_regex = jbool(p, "use_regex", 1);
    *aps = jbool(p, "add_prefix_space", 1);
    if (*use_regex < 0 || *aps < 0)
        return osc_error(OSC_ERR_FORMAT, "%s: ByteLevel pre_tokenizer has non-boolean options",
                         path);
    return OSC_OK;
}

static osc_status parse_pretok(const char *path, const cJSON *p, int *pretok, int *aps) {
    const char *type = p ? jstr(p, "type") : NULL;
    if (!type)
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "%s: pre_tokenizer is missing; only byte-level BPE is supported", path);
    int use_regex;
    if (!strcmp(type, "ByteLevel")) {
        OSC_TRY(parse_bytelevel(path, p, &use_regex, aps));
        *pretok = use_regex ? OSC_PRETOK_GPT2 : OSC_PRETOK_NONE;
        return OSC_OK;
    }
    if (strcmp(type, "Sequence") != 0)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: pre_tokenizer \"%s\" is not supported", path,
                         type);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : -1;
    const cJSON *split = n == 2 ? cJSON_GetArrayItem(list, 0) : NULL;
    const cJSON *bl = n == 2 ? cJSON_GetArrayItem(list, 1) : NULL;
    const char *t0 = split ? jstr(split, "type") : NULL, *t1 = bl ? jstr(bl, "type") : NULL;
    if (!t0 || !t1 || strcmp(t0, "Split") != 0 || strcmp(t1, "ByteLevel") != 0)
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "%s: pre_tokenizer Sequence is not [Split, ByteLevel]; not supported",
                         path);
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(split, "pattern");
    const char *re = pat ? jstr(pat, "Regex") : NULL;
    const char *beh = jstr(split, "behavior");
    if (!re)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: Split pre_tokenizer without a Regex pattern",
                         path);
    if (!beh || strcmp(beh, "Isolated") != 0 || jbool(split, "invert", 0) != 0)
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "%s: Split pre_tokenizer behavior \"%s\"/invert is not supported", path,
                         beh ? beh : "(none)");
    if (!strcmp(re, QWEN2_RE)) *pretok = OSC_PRETOK_QWEN2;
    else if (!strcmp(re, LLAMA3_RE)) *pretok = OSC_PRETOK_LLAMA3;
    else if (!strcmp(re, GPT2_RE)) *pretok = OSC_PRETOK_GPT2;
    else
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: pre-tokenizer regex is not supported: %.300s",
                         path, re);
    OSC_TRY(parse_bytelevel(path, bl, &use_regex, aps));
    if (use_regex)
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "%s: ByteLevel(use_regex=true) after a Split is not supported", path);
    return OSC_OK;
}

/* ---- building blocks shared by the tokenizer.json and the array (GGUF) loaders ---- */

/* Per-id tables for n_ids ids, n_vocab vocab tokens and n_added added tokens; *tmp gets a scratch
 * buffer of 2 * OSC_TOKENIZER_MAX_TOKEN_BYTES + 8 bytes (caller frees). */
static osc_status tok_alloc(osc_tokenizer *t, const char *path, int32_t n_ids, size_t n_vocab, int n_added,
                            char **tmp) {
    t->n_ids = n_ids;
    t->tok_off = calloc((size_t)t->n_ids, sizeof *t->tok_off);
    t->tok_len = calloc((size_t)t->n_ids, sizeof *t->tok_len);
    t->tok_flags = calloc((size_t)t->n_ids, 1);
    t->added = calloc((size_t)(n_added ? n_added : 1), sizeof *t->added);
    *tmp = malloc(2 * OSC_TOKENIZER_MAX_TOKEN_BYTES + 8);
    if (!t->tok_off || !t->tok_len || !t->tok_flags || !t->added || !*tmp ||
        smap_init(&t->by_str, n_vocab) || smap_init(&t->by_bytes, n_vocab) ||
        smap_init(&t->added_by_str, (size_t)n_added) || trie_init(&t->raw_trie) ||
        trie_init(&t->norm_trie))
        return osc_error(OSC_ERR_OOM, "%s: out of memory for %d tokens", path, t->n_ids);
    return OSC_OK;
}

/* Vocab token id with key s[0..sl) (as written in the vocab, e.g. "Ġthe"). A repeated string is
 * an error unless dup_ok (then the later id wins, as llama.cpp's map does). */
static osc_status tok_add_vocab(osc_tokenizer *t, const char *path, int32_t id, const char *s, size_t sl,
                                const int16_t cp2byte[324], char *tmp, int dup_ok) {
    if (sl == 0) return osc_error(OSC_ERR_FORMAT, "%s: vocab has an empty token (id %d)", path, id);
    if (sl > OSC_TOKENIZER_MAX_TOKEN_BYTES)
        return osc_error(OSC_ERR_FORMAT, "%s: vocab token %d is %zu bytes long (limit %d)", path, id, sl,
                         OSC_TOKENIZER_MAX_TOKEN_BYTES);
    const int shown = (int)(sl > 60 ? 60 : sl);
    if (t->tok_flags[id] & TF_EXISTS)
        return osc_error(OSC_ERR_FORMAT, "%s: id %d is used by two vocab tokens (\"%.*s\")", path, id, shown, s);
    int64_t so = sbuf_add(&t->arena, s, sl);
    if (so < 0) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    if (smap_put(&t->by_str, t->arena.p, (uint32_t)so, (uint32_t)sl, id, dup_ok) >= 0 && !dup_ok)
        return osc_error(OSC_ERR_FORMAT, "%s: vocab token \"%.*s\" appears twice", path, shown, s);
    int mapped;
    size_t bl = token_to_bytes(cp2byte, t->arena.p + so, sl, tmp, &mapped);
    int64_t bo = sbuf_add(&t->arena, tmp, bl);
    if (bo < 0) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    t->tok_off[id] = (uint32_t)bo;
    t->tok_len[id] = (uint32_t)bl;
    t->tok_flags[id] = TF_EXISTS;
    if (mapped) smap_put(&t->by_bytes, t->arena.p, (uint32_t)bo, (uint32_t)bl, id, dup_ok);
    return OSC_OK;
}

/* After the vocab: the single-byte tokens. */
static void tok_byte_ids(osc_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = smap_get(&t->by_bytes, t->arena.p, &c, 1);
    }
}

static osc_status tok_alloc_merges(osc_tokenizer *t, const char *path, size_t n_merges) {
    size_t ms = 16;
    while (ms < 2 * n_merges + 16) ms *= 2;
    t->mmask = ms - 1;
    t->mkey = malloc(ms * sizeof *t->mkey);
    t->mrank = malloc(ms * sizeof *t->mrank);
    t->mnew = malloc(ms * sizeof *t->mnew);
    if (!t->mkey || !t->mrank || !t->mnew) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    memset(t->mkey, 0xff, ms * sizeof *t->mkey);
    return OSC_OK;
}

/* Merge number `rank` of vocab keys a + b (at most as many merges as tok_alloc_merges allowed). */
static osc_status tok_add_merge(osc_tokenizer *t, const char *path, int rank, const char *a, size_t al,
                                const char *b, size_t bl, char *tmp) {
    int32_t ia = smap_get(&t->by_str, t->arena.p, a, al);
    int32_t ib = smap_get(&t->by_str, t->arena.p, b, bl);
    int32_t in = -1;
    if (al + bl <= 2 * OSC_TOKENIZER_MAX_TOKEN_BYTES) {
        memcpy(tmp, a, al);
        memcpy(tmp + al, b, bl);
        in = smap_get(&t->by_str, t->arena.p, tmp, al + bl);
    }
    if (ia < 0 || ib < 0 || in < 0)
        return osc_error(OSC_ERR_FORMAT, "%s: merge %d (\"%.*s\" + \"%.*s\") uses a token not in the "
                         "vocab", path, rank, (int)(al > 60 ? 60 : al), a, (int)(bl > 60 ? 60 : bl), b);
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t h = hash_bytes(&key, 8) & t->mmask;
    while (t->mkey[h] != UINT64_MAX && t->mkey[h] != key) h = (h + 1) & t->mmask;
    t->mkey[h] = key; /* a repeated merge takes the later rank, as HF's map does */
    t->mrank[h] = rank;
    t->mnew[h] = in;
    return OSC_OK;
}

/* Added token id with content c[0..cl) and HF's flags (special, lstrip, rstrip, single_word,
 * normalized). */
static osc_status tok_add_added(osc_tokenizer *t, const char *path, int32_t id, const char *c, size_t cl, int sp,
                                int ls, int rs, int sw, int nz, const int16_t cp2byte[324], char *tmp) {
    added_tok *a = &t->added[t->n_added];
    a->id = id;
    if (cl > OSC_TOKENIZER_MAX_TOKEN_BYTES)
        return osc_error(OSC_ERR_FORMAT, "%s: added token %d is %zu bytes long (limit %d)", path, a->id, cl,
                         OSC_TOKENIZER_MAX_TOKEN_BYTES);
    if (u8_check((const uint8_t *)c, cl))
        return osc_error(OSC_ERR_FORMAT, "%s: added token %d is not valid UTF-8", path, a->id);
    a->special = (uint8_t)sp;
    a->lstrip = (uint8_t)ls;
    a->rstrip = (uint8_t)rs;
    a->single_word = (uint8_t)sw;
    a->normalized = (uint8_t)nz;
    int64_t co = sbuf_add(&t->arena, c, cl);
    if (co < 0) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    smap_put(&t->added_by_str, t->arena.p, (uint32_t)co, (uint32_t)cl, a->id, 1);
    /* the string matched in text: a normalized token is matched (and decodes) in its
     * normalized form, as in HF */
    a->off = (uint32_t)co;
    a->len = (uint32_t)cl;
    if (nz && t->nfc) {
        size_t nl = 0;
        uint8_t *nc = u8_normalize(UNINORM_NFC, (const uint8_t *)t->arena.p + co, cl, NULL, &nl);
        if (!nc) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        int64_t no = nl <= OSC_TOKENIZER_MAX_TOKEN_BYTES ? sbuf_add(&t->arena, nc, nl) : -1;
        free(nc);
        if (no < 0) return osc_error(OSC_ERR_FORMAT, "%s: added token %d: cannot normalize", path, a->id);
        a->off = (uint32_t)no;
        a->len = (uint32_t)nl;
    }
    /* decoded bytes for this id (the added token wins over a vocab entry, as in HF) */
    int mapped;
    size_t bl = token_to_bytes(cp2byte, t->arena.p + a->off, a->len, tmp, &mapped);
    int64_t bo = sbuf_add(&t->arena, tmp, bl);
    if (bo < 0) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    t->tok_off[a->id] = (uint32_t)bo;
    t->tok_len[a->id] = (uint32_t)bl;
    t->tok_flags[a->id] = (uint8_t)(TF_EXISTS | (sp ? TF_SPECIAL : 0));
    t->n_added++;
    return OSC_OK;
}

/* After the added tokens: the tries that find them in text. */
static osc_status tok_build_tries(osc_tokenizer *t, const char *path) {
    for (int i = 0; i < t->n_added; i++) {
        added_tok *a = &t->added[i];
        if (trie_add(a->normalized ? &t->norm_trie : &t->raw_trie, (const uint8_t *)t->arena.p + a->off, a->len, i))
            return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    }
    return OSC_OK;
}

osc_status osc_tokenizer_load(const char *path, osc_tokenizer **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_load: path is NULL");
    osc_status status = OSC_OK;
    char *buf = NULL, *tmp = NULL;
    size_t len = 0;
    cJSON *root = NULL;
    osc_tokenizer *t = NULL;

    status = osc_read_file(path, OSC_TOKENIZER_MAX_FILE, &buf, &len);
    if (status != OSC_OK) return status;
    root = cJSON_ParseWithLength(buf, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        long at = (e && e >= buf && e <= buf + len) ? (long)(e - buf) : -1;
        LFAIL(OSC_ERR_FORMAT, "%s: not valid JSON (error near byte %ld of %zu)", path, at, len);
    }
    if (!cJSON_IsObject(root)) LFAIL(OSC_ERR_FORMAT, "%s: top level is not a JSON object", path);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) LFAIL(OSC_ERR_FORMAT, "%s: no \"model\" object", path);
    const char *mtype = jstr(model, "type");
    if (mtype && strcmp(mtype, "BPE") != 0)
        LFAIL(OSC_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", path,
              mtype);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab)) LFAIL(OSC_ERR_FORMAT, "%s: model has no \"vocab\" object", path);
    if (merges && !cJSON_IsArray(merges) && !cJSON_IsNull(merges))
        LFAIL(OSC_ERR_FORMAT, "%s: model \"merges\" is not an array", path);
    const char *cont = jstr(model, "continuing_subword_prefix");
    const char *eow = jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (eow && *eow))
        LFAIL(OSC_ERR_UNSUPPORTED,
              "%s: BPE continuing_subword_prefix/end_of_word_suffix are not supported", path);

    t = calloc(1, sizeof *t);
    if (!t) LFAIL(OSC_ERR_OOM, "%s: out of memory", path);
    t->unk_id = -1;
    if ((status = parse_normalizer(path, cJSON_GetObjectItemCaseSensitive(root, "normalizer"),
                                   &t->nfc)) != OSC_OK)
        goto done;
    if ((status = parse_pretok(path, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"),
                               &t->pretok, &t->add_prefix_space)) != OSC_OK)
        goto done;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    if (dec && !cJSON_IsNull(dec)) {
        const char *dt = jstr(dec, "type");
        if (!dt || strcmp(dt, "ByteLevel") != 0)
            LFAIL(OSC_ERR_UNSUPPORTED, "%s: decoder \"%s\" is not supported (only ByteLevel)",
                  path, dt ? dt : "(no type)");
    }
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    if (t->ignore_merges < 0) LFAIL(OSC_ERR_FORMAT, "%s: model ignore_merges is not a boolean", path);

    /* sizes */
    int n_vocab = cJSON_GetArraySize(vocab);
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (addl && !cJSON_IsArray(addl) && !cJSON_IsNull(addl))
        LFAIL(OSC_ERR_FORMAT, "%s: \"added_tokens\" is not an array", path);
    int n_added = cJSON_IsArray(addl) ? cJSON_GetArraySize(addl) : 0;
    if (n_vocab <= 0) LFAIL(OSC_ERR_FORMAT, "%s: the vocab is empty", path);
    int32_t max_id = -1;
    const cJSON *x;
    cJSON_ArrayForEach(x, vocab) {
        int32_t id = jid(x);
        if (id < 0)
            LFAIL(OSC_ERR_FORMAT, "%s: vocab entry \"%.60s\" has a bad id (want an integer in "
                  "[0, %d))", path, x->string, MAX_ID);
        if (id > max_id) max_id = id;
    }
    cJSON_ArrayForEach(x, addl) {
        int32_t id = cJSON_IsObject(x) ? jid(cJSON_GetObjectItemCaseSensitive(x, "id")) : -1;
        const char *c = cJSON_IsObject(x) ? jstr(x, "content") : NULL;
        if (id < 0 || !c || !*c)
            LFAIL(OSC_ERR_FORMAT, "%s: an added token lacks a valid id or content", path);
        if (id > max_id) max_id = id;
    }
    if ((status = tok_alloc(t, path, max_id + 1, (size_t)n_vocab, n_added, &tmp)) != OSC_OK) goto done;

    uint32_t byte2cp[256];
    int16_t cp2byte[324];
    byte_alphabet(byte2cp, cp2byte);

    /* vocab */
    cJSON_ArrayForEach(x, vocab) {
        if ((status = tok_add_vocab(t, path, jid(x), x->string, strlen(x->string), cp2byte, tmp, 0)) != OSC_OK)
            goto done;
    }
    tok_byte_ids(t);
    const char *unk = jstr(model, "unk_token");
    if (unk) t->unk_id = smap_get(&t->by_str, t->arena.p, unk, strlen(unk));

    /* merges */
    int n_merges = cJSON_IsArray(merges) ? cJSON_GetArraySize(merges) : 0;
    if ((status = tok_alloc_merges(t, path, (size_t)n_merges)) != OSC_OK) goto done;
    int rank = 0;
    cJSON_ArrayForEach(x, merges) {
        const char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        if (cJSON_IsString(x)) {
            const char *s = x->valuestring, *sp = strchr(s, ' ');
            if (sp && !strchr(sp + 1, ' ')) {
                a = s;
                al = (size_t)(sp - s);
                b = sp + 1;
                bl = strlen(b);
            }
        } else if (cJSON_IsArray(x) && cJSON_GetArraySize(x) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(x, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(x, 1))) {
            a = cJSON_GetArrayItem(x, 0)->valuestring;
            b = cJSON_GetArrayItem(x, 1)->valuestring;
            al = strlen(a);
            bl = strlen(b);
        }
        if (!a || !al || !bl)
            LFAIL(OSC_ERR_FORMAT, "%s: merge %d is not \"a b\" or [\"a\", \"b\"]", path, rank);
        if ((status = tok_add_merge(t, path, rank, a, al, b, bl, tmp)) != OSC_OK) goto done;
        rank++;
    }

    /* added tokens */
    cJSON_ArrayForEach(x, addl) {
        const char *c = jstr(x, "content");
        int32_t id = jid(cJSON_GetObjectItemCaseSensitive(x, "id"));
        int sp = jbool(x, "special", 0), ls = jbool(x, "lstrip", 0), rs = jbool(x, "rstrip", 0);
        int sw = jbool(x, "single_word", 0), nz = jbool(x, "normalized", !sp);
        if (sp < 0 || ls < 0 || rs < 0 || sw < 0 || nz < 0)
            LFAIL(OSC_ERR_FORMAT, "%s: added token %d has a non-boolean flag", path, id);
        if ((status = tok_add_added(t, path, id, c, strlen(c), sp, ls, rs, sw, nz, cp2byte, tmp)) != OSC_OK)
            goto done;
    }
    status = tok_build_tries(t, path);
done:
    free(tmp);
    cJSON_Delete(root);
    free(buf);
    if (status != OSC_OK) {
        osc_tokenizer_free(t);
        return status;
    }
    *out = t;
    return OSC_OK;
}

/* ---- from arrays / GGUF ---- */

osc_status osc_tokenizer_new(const char *what, const osc_tokenizer_def *d, osc_tokenizer **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_new: out is NULL");
    *out = NULL;
    if (!what) what = "tokenizer";
    if (!d || d->n_tokens <= 0 || d->n_tokens > MAX_ID || !d->tokens || !d->token_len || d->n_merges < 0 ||
        (d->n_merges && (!d->merges || !d->merge_len)) || d->pretok < OSC_PRETOK_NONE || d->pretok > OSC_PRETOK_SMOLLM)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: bad tokenizer definition (want 1..%d tokens, merges with lengths, "
                         "a known pre-tokenizer)", what, MAX_ID);
    osc_status status = OSC_OK;
    char *tmp = NULL;
    osc_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return osc_error(OSC_ERR_OOM, "%s: out of memory", what);
    t->unk_id = -1;
    t->nfc = d->nfc != 0;
    t->pretok = d->pretok;
    t->add_prefix_space = d->add_prefix_space != 0;
    t->ignore_merges = d->ignore_merges != 0;
    size_t n_vocab = 0;
    int n_added = 0;
    int32_t n_ids = 0;
    for (int32_t i = 0; i < d->n_tokens; i++) {
        int ty = d->token_type ? d->token_type[i] : OSC_TOKEN_NORMAL;
        if (ty < OSC_TOKEN_NORMAL || ty > OSC_TOKEN_BYTE)
            LFAIL(OSC_ERR_FORMAT, "%s: token %d has type %d (known: 1..6)", what, i, ty);
        if (ty == OSC_TOKEN_UNUSED) continue;
        if (ty == OSC_TOKEN_CONTROL || ty == OSC_TOKEN_USER_DEFINED) {
            if (d->token_len[i] == 0) LFAIL(OSC_ERR_FORMAT, "%s: added token %d is empty", what, i);
            n_added++;
        } else {
            n_vocab++;
        }
        n_ids = i + 1;
    }
    if (n_vocab == 0) LFAIL(OSC_ERR_FORMAT, "%s: the vocab is empty", what);
    if ((status = tok_alloc(t, what, n_ids, n_vocab, n_added, &tmp)) != OSC_OK) goto done;
    uint32_t byte2cp[256];
    int16_t cp2byte[324];
    byte_alphabet(byte2cp, cp2byte);
    for (int32_t i = 0; i < n_ids; i++) {
        int ty = d->token_type ? d->token_type[i] : OSC_TOKEN_NORMAL;
        if (ty == OSC_TOKEN_NORMAL || ty == OSC_TOKEN_UNKNOWN || ty == OSC_TOKEN_BYTE)
            if ((status = tok_add_vocab(t, what, i, d->tokens[i], d->token_len[i], cp2byte, tmp, 1)) != OSC_OK)
                goto done;
    }
    tok_byte_ids(t);
    if (d->unk_id >= 0 && d->unk_id < n_ids && (t->tok_flags[d->unk_id] & TF_EXISTS)) t->unk_id = d->unk_id;
    if ((status = tok_alloc_merges(t, what, (size_t)d->n_merges)) != OSC_OK) goto done;
    for (int32_t r = 0; r < d->n_merges; r++) {
        const char *m = d->merges[r];
        size_t ml = d->merge_len[r];
        const char *sp = ml > 1 ? memchr(m + 1, ' ', ml - 1) : NULL;
        if (!sp || sp + 1 == m + ml)
            LFAIL(OSC_ERR_FORMAT, "%s: merge %d (\"%.*s\") is not \"a b\"", what, r, (int)(ml > 60 ? 60 : ml), m);
        size_t al = (size_t)(sp - m);
        if ((status = tok_add_merge(t, what, r, m, al, sp + 1, ml - al - 1, tmp)) != OSC_OK) goto done;
    }
    for (int32_t i = 0; i < n_ids; i++) {
        int ty = d->token_type ? d->token_type[i] : OSC_TOKEN_NORMAL;
        if (ty == OSC_TOKEN_CONTROL || ty == OSC_TOKEN_USER_DEFINED)
            if ((status = tok_add_added(t, what, i, d->tokens[i], d->token_len[i], ty == OSC_TOKEN_CONTROL, 0, 0, 0, 0,
                                        cp2byte, tmp)) != OSC_OK)
                goto done;
    }
    status = tok_build_tries(t, what);
done:
    free(tmp);
    if (status != OSC_OK) {
        osc_tokenizer_free(t);
        return status;
    }
    *out = t;
    return OSC_OK;
}

/* tokenizer.ggml.pre -> pre-tokenizer, NFC, ignore_merges (llama-vocab.cpp's meaning of the
 * names, with the normalizer of the HF tokenizers they come from). */
static const struct { const char *name; osc_pretok pretok; int nfc, ignore_merges; } GGUF_PRE[] = {
    {"qwen2", OSC_PRETOK_QWEN2, 1, 0},      {"deepseek-r1-qwen", OSC_PRETOK_QWEN2, 1, 0},
    {"llama3", OSC_PRETOK_LLAMA3, 0, 1},    {"llama-v3", OSC_PRETOK_LLAMA3, 0, 1},
    {"llama-bpe", OSC_PRETOK_LLAMA3, 0, 1}, {"smollm", OSC_PRETOK_SMOLLM, 0, 0},
    {"gpt-2", OSC_PRETOK_GPT2, 0, 0},       {"default", OSC_PRETOK_GPT2, 0, 0},
};

osc_status osc_tokenizer_from_gguf(const osc_gguf *g, osc_tokenizer **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_from_gguf: out is NULL");
    *out = NULL;
    if (!g) return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_from_gguf: NULL file");
    const char *path = osc_gguf_path(g), *s;
    size_t sl;
    if (!osc_gguf_find(g, "tokenizer.ggml.model"))
        return osc_error(OSC_ERR_FORMAT, "%s: no tokenizer (tokenizer.ggml.model is missing)", path);
    OSC_TRY(osc_gguf_get_str(g, "tokenizer.ggml.model", &s, &sl));
    if (sl != 4 || memcmp(s, "gpt2", 4) != 0)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model '%.*s' is not supported (only 'gpt2', "
                         "byte-level BPE)", path, (int)(sl > 32 ? 32 : sl), s);
    osc_tokenizer_def d;
    memset(&d, 0, sizeof d);
    d.pretok = OSC_PRETOK_GPT2;
    d.unk_id = -1;
    if (osc_gguf_find(g, "tokenizer.ggml.pre")) {
        OSC_TRY(osc_gguf_get_str(g, "tokenizer.ggml.pre", &s, &sl));
        size_t k = 0, nk = sizeof GGUF_PRE / sizeof GGUF_PRE[0];
        while (k < nk && !(strlen(GGUF_PRE[k].name) == sl && memcmp(GGUF_PRE[k].name, s, sl) == 0)) k++;
        if (k == nk)
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre '%.*s' is not supported (known: qwen2, "
                             "deepseek-r1-qwen, llama3, llama-v3, llama-bpe, smollm, gpt-2, default)",
                             path, (int)(sl > 48 ? 48 : sl), s);
        d.pretok = GGUF_PRE[k].pretok;
        d.nfc = GGUF_PRE[k].nfc;
        d.ignore_merges = GGUF_PRE[k].ignore_merges;
    }
    if (osc_gguf_find(g, "tokenizer.ggml.add_space_prefix"))
        OSC_TRY(osc_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &d.add_prefix_space));
    if (osc_gguf_find(g, "tokenizer.ggml.unknown_token_id")) {
        uint32_t u;
        OSC_TRY(osc_gguf_get_u32(g, "tokenizer.ggml.unknown_token_id", &u));
        d.unk_id = u < (uint32_t)MAX_ID ? (int32_t)u : -1;
    }
    const osc_gguf_value *tok, *typ = NULL, *mer = NULL;
    OSC_TRY(osc_gguf_get_arr(g, "tokenizer.ggml.tokens", OSC_GGUF_STRING, &tok));
    if (tok->n == 0 || tok->n > (uint64_t)MAX_ID)
        return osc_error(OSC_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu tokens (want 1..%d)", path,
                         (unsigned long long)tok->n, MAX_ID);
    const int32_t n = (int32_t)tok->n;
    if (osc_gguf_find(g, "tokenizer.ggml.token_type")) {
        OSC_TRY(osc_gguf_get_arr(g, "tokenizer.ggml.token_type", -1, &typ));
        if (typ->n != tok->n || !osc_gguf_arr_i64(typ, 0, &(int64_t){0}))
            return osc_error(OSC_ERR_FORMAT, "%s: tokenizer.ggml.token_type must be %d integers, one per token",
                             path, n);
    }
    if (!osc_gguf_find(g, "tokenizer.ggml.merges"))
        return osc_error(OSC_ERR_FORMAT, "%s: tokenizer.ggml.merges is missing (a gpt2 tokenizer needs it)", path);
    OSC_TRY(osc_gguf_get_arr(g, "tokenizer.ggml.merges", OSC_GGUF_STRING, &mer));
    if (mer->n > (uint64_t)INT32_MAX)
        return osc_error(OSC_ERR_FORMAT, "%s: tokenizer.ggml.merges is too long", path);
    d.n_tokens = n;
    d.n_merges = (int32_t)mer->n;
    const char **strs = malloc(((size_t)n + (size_t)d.n_merges) * sizeof *strs);
    uint32_t *lens = malloc(((size_t)n + (size_t)d.n_merges) * sizeof *lens);
    int32_t *types = typ ? malloc((size_t)n * sizeof *types) : NULL;
    osc_status st = OSC_OK;
    if (!strs || !lens || (typ && !types)) {
        st = osc_error(OSC_ERR_OOM, "%s: out of memory for %d tokens", path, n);
        goto out;
    }
    for (uint64_t i = 0; i < tok->n + mer->n; i++) {
        size_t len;
        strs[i] = i < tok->n ? osc_gguf_arr_str(tok, i, &len) : osc_gguf_arr_str(mer, i - tok->n, &len);
        if (len > UINT32_MAX) {
            st = osc_error(OSC_ERR_FORMAT, "%s: a token or merge is %zu bytes long", path, len);
            goto out;
        }
        lens[i] = (uint32_t)len;
    }
    for (int32_t i = 0; typ && i < n; i++) {
        int64_t v = 0;
        osc_gguf_arr_i64(typ, (uint64_t)i, &v);
        types[i] = v >= INT32_MIN && v <= INT32_MAX ? (int32_t)v : 0;
    }
    d.tokens = strs;
    d.token_len = lens;
    d.token_type = types;
    d.merges = strs + n;
    d.merge_len = lens + n;
    st = osc_tokenizer_new(path, &d, out);
out:
    free(strs);
    free(lens);
    free(types);
    return st;
}

osc_status osc_tokenizer_load_gguf(const char *path, osc_tokenizer **out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_load_gguf: out is NULL");
    *out = NULL;
    osc_gguf *g = NULL;
    OSC_TRY(osc_gguf_open(path, &g));
    osc_status s = osc_tokenizer_from_gguf(g, out);
    osc_gguf_close(g);
    return s;
}

/* ------------------------------------------------------------------------------------------ */
/* queries                                                                                     */

int osc_tokenizer_vocab_size(const osc_tokenizer *t) { return t ? t->n_ids : 0; }

int32_t osc_tokenizer_token_id(const osc_tokenizer *t, const char *s) {
    if (!t || !s) return -1;
    size_t n = strlen(s);
    int32_t id = smap_get(&t->added_by_str, t->arena.p, s, n);
    if (id >= 0) return id;
    return smap_get(&t->by_str, t->arena.p, s, n);
}

const char *osc_tokenizer_token_bytes(const osc_tokenizer *t, int32_t id, size_t *len) {
    if (len) *len = 0;
    if (!t || id < 0 || id >= t->n_ids || !(t->tok_flags[id] & TF_EXISTS)) return NULL;
    if (len) *len = t->tok_len[id];
    return t->arena.p + t->tok_off[id];
}

int osc_tokenizer_is_special(const osc_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_ids) return 0;
    return (t->tok_flags[id] & TF_SPECIAL) != 0;
}

/* ------------------------------------------------------------------------------------------ */
/* encoding                                                                                    */

typedef struct seg { size_t s, e; int32_t added; } seg; /* added: index into t->added or -1 */
typedef struct segvec { seg *p; size_t n, cap; } segvec;
typedef struct sym { int32_t id, prev, next; uint32_t len; } sym;
typedef struct hent { int32_t rank, pos, nid; } hent;

typedef struct enc {
    int32_t *ids;
    size_t n_ids, cap_ids;
    uint32_t *cp, *off;
    uint8_t *cls;
    size_t cap_cp;
    sym *syms;
    hent *heap;
    size_t cap_sym, cap_heap;
    char *pre; /* piece with a prefix space */
    size_t cap_pre;
} enc;

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int push_id(enc *e, int32_t id) {
    if (e->n_ids == e->cap_ids &&
        grow((void **)&e->ids, &e->cap_ids, e->n_ids + 1, sizeof *e->ids))
        return -1;
    e->ids[e->n_ids++] = id;
    return 0;
}

static int seg_push(segvec *v, size_t s, size_t e, int32_t added) {
    if (grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p)) return -1;
    v->p[v->n++] = (seg){s, e, added};
    return 0;
}

static int heap_less(const hent *a, const hent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(hent *h, size_t *n, hent x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static hent heap_pop(hent *h, size_t *n) {
    hent top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

/* BPE on one pre-token word (raw bytes). */
static int bpe_word(const osc_tokenizer *t, enc *e, const uint8_t *w, size_t m) {
    if (m == 0) return 0;
    if (t->ignore_merges) { /* a word that is a token is emitted as is (Llama-3) */
        int32_t whole = smap_get(&t->by_bytes, t->arena.p, (const char *)w, m);
        if (whole >= 0) return push_id(e, whole);
    }
    if (grow((void **)&e->syms, &e->cap_sym, m, sizeof *e->syms) ||
        grow((void **)&e->heap, &e->cap_heap, m, sizeof *e->heap))
        return -1;
    sym *s = e->syms;
    int32_t ns = 0;
    for (size_t i = 0; i < m; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) id = t->unk_id; /* HF drops a byte missing from the vocab when no unk */
        if (id < 0) continue;
        s[ns] = (sym){id, ns - 1, ns + 1, 1};
        ns++;
    }
    if (ns == 0) return 0;
    s[ns - 1].next = -1;
    size_t nh = 0;
    int32_t rank, nid;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (merge_get(t, s[i].id, s[i + 1].id, &rank, &nid))
            heap_push(e->heap, &nh, (hent){rank, i, nid});
    while (nh) {
        hent top = heap_pop(e->heap, &nh);
        sym *l = &s[top.pos];
        if (l->len == 0 || l->next < 0) continue;
        sym *r = &s[l->next];
        if (!merge_get(t, l->id, r->id, &rank, &nid) || nid != top.nid || rank != top.rank)
            continue;
        l->id = nid;
        l->len += r->len;
        l->next = r->next;
        r->len = 0;
        if (l->next >= 0) s[l->next].prev = top.pos;
        if (l->prev >= 0 && merge_get(t, s[l->prev].id, l->id, &rank, &nid))
            heap_push(e->heap, &nh, (hent){rank, l->prev, nid});
        if (l->next >= 0 && merge_get(t, l->id, s[l->next].id, &rank, &nid))
            heap_push(e->heap, &nh, (hent){rank, top.pos, nid});
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if (push_id(e, s[i].id)) return -1;
    return 0;
}

/* A normalized piece with no added tokens: pre-tokenize and BPE each word. */
static int encode_plain(const osc_tokenizer *t, enc *e, const char *s, size_t n) {
    if (n == 0) return 0;
    if (t->add_prefix_space && s[0] != ' ') {
        if (grow((void **)&e->pre, &e->cap_pre, n + 1, 1)) return -1;
        e->pre[0] = ' ';
        memcpy(e->pre + 1, s, n);
        s = e->pre;
        n++;
    }
    if (t->pretok == OSC_PRETOK_NONE) return bpe_word(t, e, (const uint8_t *)s, n);
    size_t cap = e->cap_cp;
    if (grow((void **)&e->cp, &cap, n + 1, sizeof *e->cp)) return -1;
    cap = e->cap_cp;
    if (grow((void **)&e->off, &cap, n + 1, sizeof *e->off)) return -1;
    cap = e->cap_cp;
    if (grow((void **)&e->cls, &cap, n + 1, 1)) return -1;
    e->cap_cp = cap;
    size_t ncp = decode_utf8((const uint8_t *)s, n, e->cp, e->off);
    for (size_t i = 0; i < ncp; i++) e->cls[i] = tok_class(e->cp[i]);
    size_t run_end = 0; /* SmolLM: end of the current run without \p{N} */
    for (size_t i = 0; i < ncp;) {
        size_t j;
        if (t->pretok != OSC_PRETOK_SMOLLM) {
            j = tok_match(t->pretok, e->cp, e->cls, i, ncp);
        } else if (e->cls[i] & TC_N) {
            j = i + 1;
        } else {
            if (run_end <= i)
                for (run_end = i; run_end < ncp && !(e->cls[run_end] & TC_N);) run_end++;
            j = match_gpt2(e->cp, e->cls, i, run_end);
        }
        if (j <= i) j = i + 1; /* never stall */
        if (bpe_word(t, e, (const uint8_t *)s + e->off[i], e->off[j] - e->off[i])) return -1;
        i = j;
    }
    return 0;
}

/* Rust regex's Unicode \w, which HF uses for single_word: Alphabetic, marks, decimal digits,
 * connector punctuation and join controls. */
static int is_word_char(ucs4_t c) {
    if (c < 128)
        return c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z');
    return uc_is_property_alphabetic(c) || uc_is_general_category(c, UC_CATEGORY_M) ||
           uc_is_general_category(c, UC_CATEGORY_Nd) ||
           uc_is_general_category(c, UC_CATEGORY_Pc) || uc_is_property_join_control(c);
}

/* Split s[0..n) at added tokens of trie tr (leftmost, then longest; HF semantics for
 * single_word, lstrip, rstrip; special tokens skipped unless parse_special). */
static int split_added(const osc_tokenizer *t, const trie *tr, const char *s, size_t n,
                       int parse_special, segvec *v) {
    v->n = 0;
    const uint8_t *u = (const uint8_t *)s;
    size_t start_off = 0;
    if (tr->n > 1) {
        for (size_t i = 0; i < n;) {
            size_t ml = 0;
            int k = tr->first[u[i]] ? trie_longest(tr, u + i, n - i, &ml) : -1;
            if (k < 0) {
                i++;
                continue;
            }
            const added_tok *a = &t->added[k];
            size_t ms = i, me = i + ml;
            i = me;
            if (a->special && !parse_special) continue;
            if (a->single_word) {
                ucs4_t c;
                int start_ok = 1, stop_ok = 1;
                if (ms > 0) {
                    const uint8_t *p = u8_prev(&c, u + ms, u);
                    if (p && is_word_char(c)) start_ok = 0;
                }
                if (me < n && u8_mbtouc(&c, u + me, n - me) > 0 && is_word_char(c)) stop_ok = 0;
                if (!start_ok || !stop_ok) continue;
            }
            if (a->lstrip) {
                size_t q = ms;
                ucs4_t c;
                while (q > start_off) {
                    const uint8_t *p = u8_prev(&c, u + q, u + start_off);
                    if (!p || !uc_is_property_white_space(c)) break;
                    q = (size_t)(p - u);
                }
                ms = q;
            }
            if (a->rstrip) {
                ucs4_t c;
                int l;
                while (me < n && (l = u8_mbtouc(&c, u + me, n - me)) > 0 &&
                       uc_is_property_white_space(c))
                    me += (size_t)l;
                /* scanning goes on from the unstripped end: like HF, a following token that
                 * starts inside the stripped spaces still matches */
            }
            if (ms > start_off && seg_push(v, start_off, ms, -1)) return -1;
            if (seg_push(v, ms < start_off ? start_off : ms, me, k)) return -1;
            start_off = me;
        }
    }
    if (start_off < n && seg_push(v, start_off, n, -1)) return -1;
    return 0;
}

osc_status osc_tokenizer_encode(const osc_tokenizer *t, const char *text, size_t len,
                                int parse_special, int32_t **ids, int *n_ids) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len))
        return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_encode: NULL argument");
    if (len > (size_t)INT32_MAX / 2)
        return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_encode: text of %zu bytes is too long",
                         len);
    const uint8_t *bad = len ? u8_check((const uint8_t *)text, len) : NULL;
    if (bad)
        return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_encode: invalid UTF-8 at byte %zu",
                         (size_t)(bad - (const uint8_t *)text));
    enc e;
    memset(&e, 0, sizeof e);
    segvec outer = {0}, inner = {0};
    int err = split_added(t, &t->raw_trie, text, len, parse_special, &outer);
    for (size_t i = 0; !err && i < outer.n; i++) {
        seg sg = outer.p[i];
        if (sg.added >= 0) {
            err = push_id(&e, t->added[sg.added].id);
            continue;
        }
        const char *p = text + sg.s;
        size_t pn = sg.e - sg.s;
        uint8_t *norm = NULL;
        if (t->nfc) {
            size_t nl = 0;
            norm = u8_normalize(UNINORM_NFC, (const uint8_t *)p, pn, NULL, &nl);
            if (!norm) {
                err = 1;
                break;
            }
            p = (const char *)norm;
            pn = nl;
        }
        err = split_added(t, &t->norm_trie, p, pn, parse_special, &inner);
        for (size_t j = 0; !err && j < inner.n; j++) {
            seg s2 = inner.p[j];
            if (s2.added >= 0) err = push_id(&e, t->added[s2.added].id);
            else err = encode_plain(t, &e, p + s2.s, s2.e - s2.s);
        }
        free(norm);
    }
    free(outer.p);
    free(inner.p);
    free(e.cp);
    free(e.off);
    free(e.cls);
    free(e.syms);
    free(e.heap);
    free(e.pre);
    if (err || e.n_ids > INT32_MAX) {
        free(e.ids);
        return osc_error(OSC_ERR_OOM, "osc_tokenizer_encode: out of memory (%zu bytes of text)",
                         len);
    }
    *ids = e.ids;
    *n_ids = (int)e.n_ids;
    return OSC_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* decoding                                                                                    */

osc_status osc_tokenizer_decode(const osc_tokenizer *t, const int32_t *ids, int n,
                                int skip_special, char **out) {
    if (out) *out = NULL;
    if (!t || !out || n < 0 || (!ids && n))
        return osc_error(OSC_ERR_INVALID_ARG, "osc_tokenizer_decode: bad argument");
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->tok_flags[id] & TF_EXISTS)) continue;
        if (skip_special && (t->tok_flags[id] & TF_SPECIAL)) continue;
        total += t->tok_len[id];
    }
    char *s = malloc(total + 1);
    if (!s) return osc_error(OSC_ERR_OOM, "osc_tokenizer_decode: out of memory");
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->tok_flags[id] & TF_EXISTS)) continue;
        if (skip_special && (t->tok_flags[id] & TF_SPECIAL)) continue;
        memcpy(s + k, t->arena.p + t->tok_off[id], t->tok_len[id]);
        k += t->tok_len[id];
    }
    s[k] = 0;
    *out = s;
    return OSC_OK;
}

void osc_detok_init(osc_detok *d) {
    d->n_pending = 0;
    d->out[0] = 0;
}

/* Emit the complete characters of b[0..n) into d->out, keeping an incomplete tail pending. */
static void detok_emit(osc_detok *d, const uint8_t *b, size_t n, int final) {
    size_t k = 0, i = 0;
    d->n_pending = 0;
    while (i < n) {
        size_t l;
        int r = utf8_next(b + i, n - i, &l);
        if (r == 0 && !final) {
            memcpy(d->pending, b + i, n - i);
            d->n_pending = (int)(n - i);
            break;
        }
        if (r == 1) {
            memcpy(d->out + k, b + i, l);
            k += l;
        } else { /* invalid, or incomplete at the end of the stream */
            memcpy(d->out + k, "\xEF\xBF\xBD", 3);
            k += 3;
            if (r == 0) l = n - i;
        }
        i += l;
    }
    d->out[k] = 0;
}

const char *osc_detok_push(osc_detok *d, const osc_tokenizer *t, int32_t id, int skip_special) {
    size_t len = 0;
    const char *tb = osc_tokenizer_token_bytes(t, id, &len);
    if (!tb || (skip_special && osc_tokenizer_is_special(t, id))) {
        d->out[0] = 0;
        return d->out;
    }
    uint8_t b[OSC_TOKENIZER_MAX_TOKEN_BYTES + 8];
    size_t np = (size_t)(d->n_pending > 0 && d->n_pending <= 3 ? d->n_pending : 0);
    memcpy(b, d->pending, np);
    if (len > OSC_TOKENIZER_MAX_TOKEN_BYTES) len = OSC_TOKENIZER_MAX_TOKEN_BYTES; /* by load */
    memcpy(b + np, tb, len);
    detok_emit(d, b, np + len, 0);
    return d->out;
}

const char *osc_detok_flush(osc_detok *d) {
    uint8_t b[8];
    size_t np = (size_t)(d->n_pending > 0 && d->n_pending <= 3 ? d->n_pending : 0);
    memcpy(b, d->pending, np);
    detok_emit(d, b, np, 1);
    return d->out;
}
