/* kvcache/kvcache.c: the mode dispatcher, storage, flush policy and the CPU reference attention
 * of the quantised modes. Pure quantisation maths lives in kv_quant.c. */
#include "kvcache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../core/device.h"
#include "../kernels/ops.h"
#include "kv_internal.h"
#include "kv_quant.h"

const char *osc_kv_mode_for(const char *requested, int head_dim) {
    if (requested && strcmp(requested, "auto")) return requested;
    int ok = head_dim > 0 && head_dim % OSC_KV_G == 0 && head_dim <= OSC_KV_MAX_HD && osc_kvq_is_pow2(head_dim);
    return ok ? "oscar2" : "bf16";
}

const char *osc_kv_modes(void) { return "bf16,int8,kivi2,kivi4,rot2,oscar2,oscar4"; }

static const kv_mode *find_mode(const char *mode) {
    if (!mode) return &k_modes[0];
    for (int i = 0; i < N_MODES; i++)
        if (!strcmp(mode, k_modes[i].name)) return &k_modes[i];
    return NULL;
}

int osc_kv_mode_rotates(const char *mode) {
    const kv_mode *m = find_mode(mode);
    return m ? m->rotate : -1;
}

static osc_status check_mode(const char *mode) {
    if (find_mode(mode)) return OSC_OK;
    return osc_error(OSC_ERR_UNSUPPORTED, "unknown KV cache mode '%s' (known: %s)", mode, osc_kv_modes());
}

static int r_evict_of(const osc_kv_params *p) { return p->r_evict > 0 ? p->r_evict : 256; }

/* ---- sizes ------------------------------------------------------------------------------ */

size_t osc_kv_bytes_per_token_per_layer(const osc_kv_params *p) {
    const kv_mode *m = find_mode(p->mode);
    if (!m) return 0;
    size_t e = (size_t)p->n_kv_heads * p->head_dim; /* elements of K (or V) per token per layer */
    switch (m->kind) {
    case KV_PLAIN: return 2 * e * osc_dtype_size(p->act_dt);
    case KV_INT8: return 2 * (e + (size_t)p->n_kv_heads * 2);
    default: /* codes + one fp16 pair per 32 elements (K: per channel per 32 tokens; V: per 32 channels) */
        return 2 * (e * m->bits / 8 + e / OSC_KV_G * 4) + (m->norm ? 4 : 0);
    }
}

double osc_kv_bits_per_element(const osc_kv_params *p) {
    double e = 2.0 * p->n_kv_heads * p->head_dim;
    if (e <= 0) return 0;
    return 8.0 * (double)osc_kv_bytes_per_token_per_layer(p) / e;
}

typedef struct kv_sizes {
    size_t kw, kp, vw, vp, k8, k8s, norms, res; /* element counts of one layer */
} kv_sizes;

static kv_sizes sizes_of(const osc_kv_params *p, const kv_mode *m) {
    kv_sizes z = {0};
    size_t H = p->n_kv_heads, hd = p->head_dim, C = p->n_ctx, ng = (C + OSC_KV_G - 1) / OSC_KV_G;
    int R = r_evict_of(p);
    size_t Ra = (size_t)(R < p->n_ctx ? R : p->n_ctx);
    if (m->kind == KV_INT8) {
        z.k8 = H * C * hd;
        z.k8s = H * C;
    } else if (m->kind == KV_BLOCK) {
        z.kw = H * ng * m->bits * hd;
        z.kp = H * ng * hd * 2;
        z.vw = H * C * hd * m->bits / 32;
        z.vp = H * C * (hd / OSC_KV_G) * 2;
        z.res = Ra * H * hd;
        if (m->norm) z.norms = C;
    }
    return z;
}

size_t osc_kv_bytes_for(const osc_kv_params *p) {
    const kv_mode *m = find_mode(p->mode);
    if (!m) return 0;
#ifdef OSC_HAVE_CUDA
    if (m->kind != KV_PLAIN && p->dev != OSC_DEV_CPU) return osc_kvg_bytes(p, m->kind, m->bits, m->norm);
#endif
    if (m->kind == KV_PLAIN)
        return 2ull * (size_t)p->n_layers * (size_t)p->n_ctx * (size_t)p->n_kv_heads * (size_t)p->head_dim *
               osc_dtype_size(p->act_dt);
    kv_sizes z = sizes_of(p, m);
    size_t per_layer = z.kw * 4 + z.kp * 2 + z.vw * 4 + z.vp * 2 + 2 * (z.k8 + z.k8s * 2) + z.norms * 4 +
                       2 * z.res * 4 + 2 * sizeof(int);
    return (size_t)p->n_layers * per_layer + sizeof(struct osc_kv);
}

/* ---- creation --------------------------------------------------------------------------- */

static osc_status check_quant(const osc_kv_params *p, const kv_mode *m) {
    if (p->dev == OSC_DEV_CPU ? p->act_dt != OSC_F32 : p->act_dt != OSC_BF16)
        return osc_error(OSC_ERR_UNSUPPORTED, "kv cache mode '%s' takes float32 tensors on the CPU and bf16 on CUDA", m->name);
#ifndef OSC_HAVE_CUDA
    if (p->dev != OSC_DEV_CPU)
        return osc_error(OSC_ERR_UNSUPPORTED, "kv cache mode '%s': this build has no CUDA", m->name);
#endif
    if (p->head_dim % OSC_KV_G || p->head_dim > OSC_KV_MAX_HD)
        return osc_error(OSC_ERR_UNSUPPORTED, "kv cache mode '%s' needs head_dim a multiple of %d and <= %d (got %d)",
                         m->name, OSC_KV_G, OSC_KV_MAX_HD, p->head_dim);
    if (m->rotate && !osc_kvq_is_pow2(p->head_dim))
        return osc_error(OSC_ERR_UNSUPPORTED,
                         "kv cache mode '%s' rotates keys by a Walsh-Hadamard matrix and needs head_dim a power "
                         "of two (got %d); use kivi2/kivi4/int8 for this model", m->name, p->head_dim);
    if (p->r_evict < 0 || p->r_evict % OSC_KV_G)
        return osc_error(OSC_ERR_INVALID_ARG, "kv cache: r_evict %d must be 0 (default 256) or a multiple of %d",
                         p->r_evict, OSC_KV_G);
    return OSC_OK;
}

static osc_status new_quant(osc_kv *kv) {
    const osc_kv_params *p = &kv->p;
    const kv_mode *m = &kv->m;
    OSC_TRY(check_quant(p, m));
    kv->R = r_evict_of(p);
    kv->R_alloc = kv->R < p->n_ctx ? kv->R : p->n_ctx;
    kv->n_groups = (p->n_ctx + OSC_KV_G - 1) / OSC_KV_G;
    kv_sizes z = sizes_of(p, m);
    size_t L = p->n_layers;
    kv->nq = calloc(L, sizeof(int));
    kv->nres = calloc(L, sizeof(int));
    if (!kv->nq || !kv->nres) return osc_error(OSC_ERR_OOM, "kv cache: out of host memory");
    if (kv->pool) {
        kv->bt_cap = (p->n_ctx + kv->R - 1) / kv->R;
        kv->bt = calloc((size_t)kv->bt_cap, sizeof(int));
        if (!kv->bt) return osc_error(OSC_ERR_OOM, "kv cache: out of host memory");
        /* the packed part lives in the pool: only the window (and its norms) here */
        z.kw = z.kp = z.vw = z.vp = z.norms = 0;
        if (m->norm && p->dev == OSC_DEV_CPU) {
            kv->rnorm = calloc(L * (size_t)kv->R_alloc, sizeof(float));
            if (!kv->rnorm) return osc_error(OSC_ERR_OOM, "kv cache: out of host memory");
        }
    }
#ifdef OSC_HAVE_CUDA
    if (p->dev != OSC_DEV_CPU) return osc_kvg_new(kv);
#endif
    int ok = 1;
#define ALLOC(f, n) if (ok && (n)) { kv->f = calloc(L * (n), sizeof *kv->f); ok = kv->f != NULL; }
    ALLOC(kw, z.kw) ALLOC(kp, z.kp) ALLOC(vw, z.vw) ALLOC(vp, z.vp)
    ALLOC(k8, z.k8) ALLOC(v8, z.k8) ALLOC(k8s, z.k8s) ALLOC(v8s, z.k8s)
    ALLOC(norms, z.norms) ALLOC(rk, z.res) ALLOC(rv, z.res)
#undef ALLOC
    if (!ok)
        return osc_error(OSC_ERR_OOM, "kv cache '%s' of %d tokens (%.1f MiB): out of host memory", m->name, p->n_ctx,
                         osc_kv_bytes_for(p) / 1048576.0);
    return OSC_OK;
}

static osc_status kv_create(const osc_kv_params *p, osc_kv_pool *pool, osc_kv **out) {
    *out = NULL;
    OSC_TRY(check_mode(p->mode));
    if (p->n_layers <= 0 || p->n_kv_heads <= 0 || p->head_dim <= 0 || p->n_ctx <= 0)
        return osc_error(OSC_ERR_INVALID_ARG, "kv cache: bad sizes (layers %d, kv heads %d, head dim %d, ctx %d)",
                         p->n_layers, p->n_kv_heads, p->head_dim, p->n_ctx);
    osc_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return osc_error(OSC_ERR_OOM, "kv cache: out of host memory");
    kv->p = *p;
    kv->m = *find_mode(p->mode);
    kv->p.mode = kv->m.name;
    kv->cur_layer = -1;
    kv->pool = pool;
    if (pool) pool->n_caches++; /* osc_kv_free below undoes it on failure */
    osc_status s;
    if (kv->m.kind == KV_PLAIN) {
        kv->layer_elems = (size_t)p->n_ctx * p->n_kv_heads * p->head_dim;
        size_t half = osc_kv_bytes_for(p) / 2;
        s = osc_dev_malloc(p->dev, half, &kv->k);
        if (s == OSC_OK) s = osc_dev_malloc(p->dev, half, &kv->v);
        if (s != OSC_OK) s = osc_error_prefix(s, "kv cache of %d tokens (%.1f MiB)", p->n_ctx, 2.0 * half / (1 << 20));
    } else {
        s = new_quant(kv);
    }
    if (s != OSC_OK) {
        osc_kv_free(kv);
        return s;
    }
    *out = kv;
    return OSC_OK;
}

osc_status osc_kv_new(const osc_kv_params *p, osc_kv **out) { return kv_create(p, NULL, out); }

static void pool_trim(osc_kv *kv, int keep);

void osc_kv_free(osc_kv *kv) {
    if (!kv) return;
    if (kv->pool) {
        if (kv->bt) pool_trim(kv, 0);
        kv->pool->n_caches--;
    }
#ifdef OSC_HAVE_CUDA
    if (kv->g) osc_kvg_free(kv);
#endif
    if (kv->k) osc_dev_free(kv->p.dev, kv->k);
    if (kv->v) osc_dev_free(kv->p.dev, kv->v);
    free(kv->nq), free(kv->nres), free(kv->kw), free(kv->kp), free(kv->vw), free(kv->vp);
    free(kv->k8), free(kv->v8), free(kv->k8s), free(kv->v8s), free(kv->norms), free(kv->rk), free(kv->rv);
    free(kv->bt), free(kv->rnorm);
    free(kv);
}

size_t osc_kv_bytes(const osc_kv *kv) { return kv->pool ? osc_kv_pool_seq_bytes(&kv->p) : osc_kv_bytes_for(&kv->p); }
int osc_kv_len(const osc_kv *kv) { return kv->len; }
int osc_kv_capacity(const osc_kv *kv) { return kv->p.n_ctx; }

/* ---- the page pool ------------------------------------------------------------------------ */

static size_t al256(size_t b) { return (b + 255) & ~(size_t)255; }

kv_page_layout osc_kv_page_layout(const osc_kv_params *p, const kv_mode *m, int R) {
    kv_page_layout y = {0};
    size_t H = p->n_kv_heads, hd = p->head_dim, b = m->bits, ng = (size_t)R / OSC_KV_G;
    y.kq = 0;
    y.kp = y.kq + ng * H * b * hd * 4;
    y.vq = y.kp + ng * H * hd * 2 * 2;
    y.vp = y.vq + (size_t)R * H * hd * b / 8;
    y.kn = y.vp + (size_t)R * H * (hd / OSC_KV_G) * 2 * 2;
    y.layer_bytes = al256(y.kn + (size_t)R * 4);
    y.page_bytes = (size_t)p->n_layers * y.layer_bytes;
    return y;
}

static int pool_mode_ok(const osc_kv_params *p) {
    const kv_mode *m = find_mode(p->mode);
    return m && m->kind == KV_BLOCK && p->n_layers > 0 && p->n_kv_heads > 0 && p->head_dim > 0 &&
           p->head_dim % OSC_KV_G == 0 && p->r_evict >= 0 && p->r_evict % OSC_KV_G == 0;
}

size_t osc_kv_pool_page_bytes(const osc_kv_params *p) {
    if (!pool_mode_ok(p)) return 0;
    return osc_kv_page_layout(p, find_mode(p->mode), r_evict_of(p)).page_bytes;
}

size_t osc_kv_pool_bytes_for(const osc_kv_params *p, int n_pages) {
    return n_pages > 0 ? (size_t)n_pages * osc_kv_pool_page_bytes(p) : 0;
}

size_t osc_kv_pool_seq_bytes(const osc_kv_params *p) {
    if (!pool_mode_ok(p) || p->n_ctx <= 0) return 0;
    const kv_mode *m = find_mode(p->mode);
    int R = r_evict_of(p);
    size_t L = p->n_layers, Ra = (size_t)(R < p->n_ctx ? R : p->n_ctx), row = (size_t)p->n_kv_heads * p->head_dim;
    size_t bt = (size_t)((p->n_ctx + R - 1) / R) * sizeof(int), host = sizeof(struct osc_kv) + 2 * L * sizeof(int) + bt;
#ifdef OSC_HAVE_CUDA
    if (p->dev != OSC_DEV_CPU) return host + osc_kvg_seq_bytes(p);
#endif
    return host + L * Ra * (2 * row * sizeof(float) + (m->norm ? sizeof(float) : 0));
}

osc_status osc_kv_pool_new(const osc_kv_params *p, int n_pages, osc_kv_pool **out) {
    *out = NULL;
    OSC_TRY(check_mode(p->mode));
    const kv_mode *m = find_mode(p->mode);
    if (m->kind != KV_BLOCK)
        return osc_error(OSC_ERR_UNSUPPORTED, "KV pool: mode '%s' has no blocks to page (paged modes: kivi2, kivi4, rot2, "
                         "oscar2, oscar4)", m->name);
    if (p->n_layers <= 0 || p->n_kv_heads <= 0 || p->head_dim <= 0 || n_pages <= 0)
        return osc_error(OSC_ERR_INVALID_ARG, "KV pool: bad sizes (layers %d, kv heads %d, head dim %d, pages %d)",
                         p->n_layers, p->n_kv_heads, p->head_dim, n_pages);
    OSC_TRY(check_quant(p, m));
    osc_kv_pool *P = calloc(1, sizeof *P);
    if (!P) return osc_error(OSC_ERR_OOM, "KV pool: out of host memory");
    P->p = *p;
    P->p.mode = m->name;
    P->p.n_ctx = 0;
    P->m = *m;
    P->R = r_evict_of(p);
    P->lay = osc_kv_page_layout(p, m, P->R);
    P->n_pages = n_pages;
    P->free_list = malloc((size_t)n_pages * sizeof(int));
    if (!P->free_list) {
        free(P);
        return osc_error(OSC_ERR_OOM, "KV pool: out of host memory");
    }
    for (int i = 0; i < n_pages; i++) P->free_list[i] = n_pages - 1 - i; /* page 0 on top */
    P->n_free = n_pages;
    size_t bytes = (size_t)n_pages * P->lay.page_bytes;
    osc_status s = osc_dev_malloc(p->dev, bytes, &P->mem);
    if (s != OSC_OK) {
        free(P->free_list);
        free(P);
        return osc_error_prefix(s, "KV pool '%s' of %d pages of %d tokens (%.1f MiB)", m->name, n_pages, r_evict_of(p),
                                bytes / 1048576.0);
    }
    *out = P;
    return OSC_OK;
}

void osc_kv_pool_free(osc_kv_pool *pool) {
    if (!pool) return;
    if (pool->n_caches)
        osc_log(OSC_LOG_WARN, "KV pool freed while %d of its caches are alive (free them first)", pool->n_caches);
    osc_dev_free(pool->p.dev, pool->mem);
    free(pool->free_list);
    free(pool);
}

int osc_kv_pool_pages(const osc_kv_pool *pool) { return pool->n_pages; }
int osc_kv_pool_pages_free(const osc_kv_pool *pool) { return pool->n_free; }
int osc_kv_pool_page_tokens(const osc_kv_pool *pool) { return pool->R; }
int osc_kv_pages(const osc_kv *kv) { return kv->pool ? kv->n_bt : 0; }

osc_status osc_kv_new_in_pool(osc_kv_pool *pool, int n_ctx, osc_kv **out) {
    osc_kv_params p = pool->p;
    p.n_ctx = n_ctx;
    return kv_create(&p, pool, out);
}

/* Take the pages a store up to T tokens will flush into: with the lazy flush, a layer holding
 * T >= 1 tokens has packed (T - 1) / R * R of them. All or nothing. */
static osc_status pool_reserve(osc_kv *kv, int T) {
    int need = T > 0 ? (T - 1) / kv->R : 0;
    osc_kv_pool *P = kv->pool;
    if (need <= kv->n_bt) return OSC_OK;
    if (need > kv->bt_cap) /* cannot happen below n_ctx; kept as a guard */
        return osc_error(OSC_ERR_CONTEXT, "kv store: %d pages > block table of %d", need, kv->bt_cap);
    if (need - kv->n_bt > P->n_free)
        return osc_error(OSC_ERR_OOM, "KV pool full: %d pages of %d tokens in use (this cache needs %d more, %d free)",
                         P->n_pages - P->n_free, P->R, need - kv->n_bt, P->n_free);
    while (kv->n_bt < need) {
        int page = P->free_list[P->n_free - 1];
#ifdef OSC_HAVE_CUDA
        if (kv->g) OSC_TRY(osc_kvg_bt_set(kv, kv->n_bt, page));
#endif
        P->n_free--;
        kv->bt[kv->n_bt++] = page;
    }
    return OSC_OK;
}

/* Give back the pages from sequence page `keep` on. */
static void pool_trim(osc_kv *kv, int keep) {
    osc_kv_pool *P = kv->pool;
    while (kv->n_bt > keep) P->free_list[P->n_free++] = kv->bt[--kv->n_bt];
}

/* ---- plain mode ------------------------------------------------------------------------- */

static osc_tensor layer_view(const osc_kv *kv, void *base, int layer, int64_t r0, int64_t n) {
    size_t es = osc_dtype_size(kv->p.act_dt);
    char *p = (char *)base + ((size_t)layer * kv->layer_elems + (size_t)r0 * kv->p.n_kv_heads * kv->p.head_dim) * es;
    int64_t ne[3] = {n, kv->p.n_kv_heads, kv->p.head_dim};
    return osc_tensor_make(p, kv->p.act_dt, kv->p.dev, 3, ne);
}

/* ---- quantised modes: addressing -------------------------------------------------------- */

#define HKV (kv->p.n_kv_heads)
#define HD (kv->p.head_dim)
#define CTX ((size_t)kv->p.n_ctx)

/* Pooled caches: layer l of the pool page holding packed token t (kv_internal.h layout). */
static char *pg_layer(const osc_kv *kv, int l, int t) {
    const osc_kv_pool *P = kv->pool;
    return (char *)P->mem + (size_t)kv->bt[t / kv->R] * P->lay.page_bytes + (size_t)l * P->lay.layer_bytes;
}
static uint32_t *kw_at(const osc_kv *kv, int l, int h, int g) {
    if (kv->pool) {
        int gl = g % (kv->R / OSC_KV_G);
        return (uint32_t *)(pg_layer(kv, l, g * OSC_KV_G) + kv->pool->lay.kq) + ((size_t)gl * HKV + h) * kv->m.bits * HD;
    }
    return kv->kw + (((size_t)l * HKV + h) * kv->n_groups + g) * (size_t)kv->m.bits * HD;
}
static uint16_t *kp_at(const osc_kv *kv, int l, int h, int g) {
    if (kv->pool) {
        int gl = g % (kv->R / OSC_KV_G);
        return (uint16_t *)(pg_layer(kv, l, g * OSC_KV_G) + kv->pool->lay.kp) + ((size_t)gl * HKV + h) * HD * 2;
    }
    return kv->kp + (((size_t)l * HKV + h) * kv->n_groups + g) * (size_t)HD * 2;
}
static uint32_t *vw_at(const osc_kv *kv, int l, int h, int t) {
    if (kv->pool)
        return (uint32_t *)(pg_layer(kv, l, t) + kv->pool->lay.vq) + ((size_t)(t % kv->R) * HKV + h) * (HD * kv->m.bits / 32);
    return kv->vw + (((size_t)l * HKV + h) * CTX + t) * (size_t)(HD * kv->m.bits / 32);
}
static uint16_t *vp_at(const osc_kv *kv, int l, int h, int t) {
    if (kv->pool)
        return (uint16_t *)(pg_layer(kv, l, t) + kv->pool->lay.vp) + ((size_t)(t % kv->R) * HKV + h) * (HD / OSC_KV_G) * 2;
    return kv->vp + (((size_t)l * HKV + h) * CTX + t) * (size_t)(HD / OSC_KV_G) * 2;
}
/* the OScaR norm of token t of layer l (stored: packed or in the window). Consecutive tokens
 * of one 32-group, or of the window, are consecutive floats. */
static float *norm_at(const osc_kv *kv, int l, int t) {
    if (!kv->pool) return kv->norms + (size_t)l * CTX + t;
    if (t < kv->nq[l]) return (float *)(pg_layer(kv, l, t) + kv->pool->lay.kn) + t % kv->R;
    return kv->rnorm + (size_t)l * kv->R_alloc + (t - kv->nq[l]);
}
static size_t i8_row(const osc_kv *kv, int l, int h, int t) { return ((size_t)l * HKV + h) * CTX + t; }
/* residual row of slot r: [Hkv][hd] */
static float *rk_at(const osc_kv *kv, int l, int r) { return kv->rk + ((size_t)l * kv->R_alloc + r) * HKV * HD; }
static float *rv_at(const osc_kv *kv, int l, int r) { return kv->rv + ((size_t)l * kv->R_alloc + r) * HKV * HD; }

/* Quantise residual slots [0, R) of layer l into packed tokens [nq, nq + R). */
static void flush_block(osc_kv *kv, int l) {
    const int H = HKV, hd = HD, b = kv->m.bits, t0 = kv->nq[l];
    for (int g = 0; g < kv->R / OSC_KV_G; g++)
        for (int h = 0; h < H; h++)
            osc_kvq_quant_k_group(rk_at(kv, l, g * OSC_KV_G) + (size_t)h * hd, OSC_KV_G, H * hd, hd, b,
                                  kw_at(kv, l, h, t0 / OSC_KV_G + g), kp_at(kv, l, h, t0 / OSC_KV_G + g));
    for (int r = 0; r < kv->R; r++)
        for (int h = 0; h < H; h++)
            osc_kvq_quant_v_row(rv_at(kv, l, r) + (size_t)h * hd, hd, b, vw_at(kv, l, h, t0 + r), vp_at(kv, l, h, t0 + r));
    if (kv->pool && kv->m.norm) /* the window's norms go with its tokens into the page */
        memcpy((float *)(pg_layer(kv, l, t0) + kv->pool->lay.kn), kv->rnorm + (size_t)l * kv->R_alloc, sizeof(float) * kv->R);
    kv->nq[l] += kv->R;
    kv->nres[l] = 0;
}

/* Forget layer l's tokens from n on (n <= stored). Packed tokens of a partly kept block are
 * dequantised back into the residual window (lossy: they were already quantised). */
static void truncate_layer(osc_kv *kv, int l, int n) {
    if (n >= kv->nq[l] + kv->nres[l]) return;
    if (kv->m.kind == KV_INT8) {
        kv->nq[l] = n;
        return;
    }
    if (n >= kv->nq[l]) {
        kv->nres[l] = n - kv->nq[l];
        return;
    }
    const int H = HKV, hd = HD, b = kv->m.bits;
    int nq = n / kv->R * kv->R;
    for (int t = nq; t < n; t += OSC_KV_G) {
        int g = t / OSC_KV_G, cnt = n - t < OSC_KV_G ? n - t : OSC_KV_G;
        for (int h = 0; h < H; h++)
            osc_kvq_dequant_k_group(kw_at(kv, l, h, g), kp_at(kv, l, h, g), cnt, hd, b, rk_at(kv, l, t - nq) + (size_t)h * hd,
                                    H * hd);
    }
    for (int t = nq; t < n; t++)
        for (int h = 0; h < H; h++)
            osc_kvq_dequant_v_row(vw_at(kv, l, h, t), vp_at(kv, l, h, t), hd, b, rv_at(kv, l, t - nq) + (size_t)h * hd);
    if (kv->pool && kv->m.norm && n > nq)
        memcpy(kv->rnorm + (size_t)l * kv->R_alloc, (float *)(pg_layer(kv, l, nq) + kv->pool->lay.kn),
               sizeof(float) * (size_t)(n - nq));
    kv->nq[l] = nq;
    kv->nres[l] = n - nq;
}

static osc_status store_quant(osc_kv *kv, int l, const osc_tensor *k, const osc_tensor *v) {
    const int H = HKV, hd = HD, S = (int)k->ne[0];
    const size_t row = (size_t)H * hd;
    if (k->dev != OSC_DEV_CPU || v->dev != OSC_DEV_CPU || k->dt != OSC_F32 || v->dt != OSC_F32 || k->nd != 3 ||
        v->nd != 3 || k->ne[1] != H || k->ne[2] != hd || v->ne[0] != S || v->ne[1] != H || v->ne[2] != hd)
        return osc_error(OSC_ERR_INVALID_ARG, "kv store (%s): k and v must be float32 CPU [S, %d, %d]", kv->m.name, H, hd);
    int stored = kv->nq[l] + kv->nres[l];
    if (stored > kv->len) truncate_layer(kv, l, kv->len); /* a repeated store of this forward */
    else if (stored < kv->len)
        return osc_error(OSC_ERR_INVALID_ARG, "kv store: layer %d holds %d tokens, cache length %d", l, stored, kv->len);
    const float *kin = k->data, *vin = v->data;
    for (int s = 0; s < S; s++) {
        int t = kv->nq[l] + kv->nres[l];
        if (kv->m.kind == KV_INT8) {
            for (int h = 0; h < H; h++) {
                size_t r = i8_row(kv, l, h, t);
                osc_kvq_quant_i8_row(kin + s * row + (size_t)h * hd, hd, kv->k8 + r * hd, kv->k8s + r);
                osc_kvq_quant_i8_row(vin + s * row + (size_t)h * hd, hd, kv->v8 + r * hd, kv->v8s + r);
            }
            kv->nq[l]++;
            continue;
        }
        if (kv->nres[l] == kv->R) flush_block(kv, l); /* lazy: the newest token always stays in the window */
        float *dk = rk_at(kv, l, kv->nres[l]);
        memcpy(dk, kin + s * row, row * sizeof(float));
        memcpy(rv_at(kv, l, kv->nres[l]), vin + s * row, row * sizeof(float));
        if (kv->m.rotate || kv->m.norm) {
            const float n = osc_kvq_khat(dk, H, hd, kv->m.rotate, kv->m.norm);
            if (kv->m.norm) *norm_at(kv, l, t) = n;
        }
        kv->nres[l]++;
    }
    kv->cur_k = kin;
    kv->cur_v = vin;
    kv->cur_S = S;
    kv->cur_layer = l;
    return OSC_OK;
}

osc_status osc_kv_store(osc_kv *kv, int layer, const osc_tensor *k, const osc_tensor *v) {
    if (layer < 0 || layer >= kv->p.n_layers) return osc_error(OSC_ERR_INVALID_ARG, "kv store: layer %d", layer);
    int S = (int)k->ne[0];
    if (kv->len + S > kv->p.n_ctx)
        return osc_error(OSC_ERR_CONTEXT, "context full: %d tokens cached + %d new > context size %d",
                         kv->len, S, kv->p.n_ctx);
    if (kv->pool && S > 0) OSC_TRY(pool_reserve(kv, kv->len + S));
    kv->pending = S;
#ifdef OSC_HAVE_CUDA
    if (kv->g) return osc_kvg_store(kv, layer, k, v);
#endif
    if (kv->m.kind != KV_PLAIN) return store_quant(kv, layer, k, v);
    osc_tensor dk = layer_view(kv, kv->k, layer, kv->len, S);
    osc_tensor dv = layer_view(kv, kv->v, layer, kv->len, S);
    OSC_TRY(osc_op_convert(&dk, k));
    return osc_op_convert(&dv, v);
}

osc_status osc_kv_store_batch(osc_kv **kvs, int B, int layer, const osc_tensor *k, const osc_tensor *v, int *done) {
    *done = 0;
    if (B < 2 || !kvs || layer < 0 || layer >= kvs[0]->p.n_layers) return OSC_OK;
#ifdef OSC_HAVE_CUDA
    const osc_kv *k0 = kvs[0];
    const int H = k0->p.n_kv_heads, hd = k0->p.head_dim;
    if (!k0->g || k->dev != k0->p.dev || v->dev != k0->p.dev || k->dt != OSC_BF16 || v->dt != OSC_BF16 || k->nd != 3 ||
        v->nd != 3 || k->ne[0] != B || v->ne[0] != B || k->ne[1] != H || v->ne[1] != H || k->ne[2] != hd ||
        v->ne[2] != hd || ((H * hd) % 8))
        return OSC_OK;
    for (int b = 0; b < B; b++) {
        const osc_kv *kv = kvs[b];
        if (!kv->g || kv->m.kind != KV_BLOCK || kv->p.n_kv_heads != H || kv->p.head_dim != hd ||
            kv->p.n_layers != k0->p.n_layers || kv->len + 1 > kv->p.n_ctx ||
            kv->nq[layer] + kv->nres[layer] != kv->len)
            return OSC_OK;
    }
    for (int b = 0; b < B; b++) {
        osc_kv *kv = kvs[b];
        if (kv->pool) OSC_TRY(pool_reserve(kv, kv->len + 1));
        kv->pending = 1;
    }
    OSC_TRY(osc_kvg_store_rows(kvs, B, layer, k, v));
    *done = 1;
#else
    (void)k, (void)v;
#endif
    return OSC_OK;
}

/* ---- quantised attention (CPU reference) -------------------------------------------------- */

/* Online-softmax state of the gq query heads sharing one kv head. */
typedef struct sm_state {
    float m, l;
} sm_state;

/* Fold n logits lg[n] (already scaled) with value rows vrow(j) = vbase + j*vld into (st, acc). */
static void sm_update(sm_state *st, float *acc, int hd, const float *lg, int n, const float *vbase, size_t vld) {
    float mx = st->m;
    for (int j = 0; j < n; j++)
        if (lg[j] > mx) mx = lg[j];
    if (mx > st->m) {
        float c = expf(st->m - mx); /* 0 when st->m = -inf */
        st->l *= c;
        for (int d = 0; d < hd; d++) acc[d] *= c;
        st->m = mx;
    }
    for (int j = 0; j < n; j++) {
        float p = expf(lg[j] - st->m);
        st->l += p;
        const float *vr = vbase + (size_t)j * vld;
        for (int d = 0; d < hd; d++) acc[d] += p * vr[d];
    }
}

static float dotf(const float *a, const float *b, int n) {
    float s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Query row i (absolute position len + i) against kv head h, for its gq query heads.
 * q: [gq][hd] raw queries; out: [gq][hd]. */
static void attend_one(const osc_kv *kv, int l, int i, int h, int gq, const float *q, float *out, float scale) {
    const int H = HKV, hd = HD, len = kv->len, nq = kv->nq[l];
    const size_t row = (size_t)H * hd;
    float qr[gq * hd]; /* rotated queries (rotating modes), once per query head */
    float kb[OSC_KV_G * hd], vb[OSC_KV_G * hd], lg[OSC_KV_G];
    sm_state st[gq];
    memcpy(qr, q, sizeof qr);
    if (kv->m.rotate)
        for (int a = 0; a < gq; a++) osc_kvq_hadamard(qr + a * hd, hd);
    for (int a = 0; a < gq; a++) {
        st[a].m = -INFINITY;
        st[a].l = 0;
        memset(out + a * hd, 0, sizeof(float) * hd);
    }
    const int nrm = kv->m.norm;
    /* 1. packed tokens [0, min(nq, len)) in groups of 32 */
    int pend = nq < len ? nq : len;
    for (int t0 = 0; t0 < pend; t0 += OSC_KV_G) {
        int n = pend - t0 < OSC_KV_G ? pend - t0 : OSC_KV_G;
        const float *nb = nrm ? norm_at(kv, l, t0) : NULL;
        if (kv->m.kind == KV_INT8) {
            for (int j = 0; j < n; j++) {
                size_t r = i8_row(kv, l, h, t0 + j);
                osc_kvq_dequant_i8_row(kv->k8 + r * hd, kv->k8s[r], hd, kb + j * hd);
                osc_kvq_dequant_i8_row(kv->v8 + r * hd, kv->v8s[r], hd, vb + j * hd);
            }
        } else {
            int g = t0 / OSC_KV_G;
            osc_kvq_dequant_k_group(kw_at(kv, l, h, g), kp_at(kv, l, h, g), n, hd, kv->m.bits, kb, hd);
            for (int j = 0; j < n; j++) osc_kvq_dequant_v_row(vw_at(kv, l, h, t0 + j), vp_at(kv, l, h, t0 + j), hd, kv->m.bits, vb + j * hd);
        }
        for (int a = 0; a < gq; a++) {
            for (int j = 0; j < n; j++) lg[j] = dotf(qr + a * hd, kb + j * hd, hd) * (nb ? nb[j] : 1.0f) * scale;
            sm_update(&st[a], out + a * hd, hd, lg, n, vb, hd);
        }
    }
    /* 2. residual tokens [nq, len): stored rotated (and normalised) in float32 */
    for (int t0 = nq; t0 < len; t0 += OSC_KV_G) {
        int n = len - t0 < OSC_KV_G ? len - t0 : OSC_KV_G;
        const float *nb = nrm ? norm_at(kv, l, t0) : NULL;
        for (int a = 0; a < gq; a++) {
            for (int j = 0; j < n; j++)
                lg[j] = dotf(qr + a * hd, rk_at(kv, l, t0 + j - nq) + (size_t)h * hd, hd) * (nb ? nb[j] : 1.0f) * scale;
            sm_update(&st[a], out + a * hd, hd, lg, n, rv_at(kv, l, t0 - nq) + (size_t)h * hd, row);
        }
    }
    /* 3. this forward's tokens [len, len + i] in full precision from the store's inputs */
    const float *ck = kv->cur_k, *cv = kv->cur_v;
    for (int s0 = 0; s0 <= i; s0 += OSC_KV_G) {
        int n = i + 1 - s0 < OSC_KV_G ? i + 1 - s0 : OSC_KV_G;
        for (int a = 0; a < gq; a++) {
            for (int j = 0; j < n; j++) lg[j] = dotf(q + a * hd, ck + (s0 + j) * row + (size_t)h * hd, hd) * scale;
            sm_update(&st[a], out + a * hd, hd, lg, n, cv + s0 * row + (size_t)h * hd, row);
        }
    }
    for (int a = 0; a < gq; a++) {
        float inv = 1.0f / st[a].l;
        for (int d = 0; d < hd; d++) out[a * hd + d] *= inv;
    }
}

static osc_status attend_quant(osc_kv *kv, int l, const osc_tensor *q, osc_tensor *out, float scale) {
    const int H = HKV, hd = HD;
    const int S = (int)q->ne[0];
    if (q->dev != OSC_DEV_CPU || out->dev != OSC_DEV_CPU || q->dt != OSC_F32 || out->dt != OSC_F32 || q->nd != 3 ||
        out->nd != 3 || q->ne[2] != hd || q->ne[1] % H || out->ne[0] != S || out->ne[1] != q->ne[1] || out->ne[2] != hd)
        return osc_error(OSC_ERR_INVALID_ARG, "kv attend (%s): q/out must be float32 CPU [S, Hq, %d], Hq %% %d == 0",
                         kv->m.name, hd, H);
    if (kv->cur_layer != l || kv->cur_S != S || kv->pending != S)
        return osc_error(OSC_ERR_INVALID_ARG, "kv attend (%s): layer %d, %d rows must follow the store of the same layer and rows",
                         kv->m.name, l, S);
    const int Hq = (int)q->ne[1], gq = Hq / H;
    const float *qd = q->data;
    float *od = out->data;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int i = 0; i < S; i++)
        for (int h = 0; h < H; h++) {
            size_t off = ((size_t)i * Hq + (size_t)h * gq) * hd;
            attend_one(kv, l, i, h, gq, qd + off, od + off, scale);
        }
    return OSC_OK;
}

osc_status osc_kv_attend(osc_kv *kv, int layer, const osc_tensor *q, osc_tensor *out, float scale) {
    if (layer < 0 || layer >= kv->p.n_layers) return osc_error(OSC_ERR_INVALID_ARG, "kv attend: layer %d", layer);
#ifdef OSC_HAVE_CUDA
    if (kv->g) return osc_kvg_attend(kv, layer, q, out, scale);
#endif
    if (kv->m.kind != KV_PLAIN) return attend_quant(kv, layer, q, out, scale);
    int T = kv->len + kv->pending;
    osc_tensor k = layer_view(kv, kv->k, layer, 0, T);
    osc_tensor v = layer_view(kv, kv->v, layer, 0, T);
    return osc_op_attention(out, q, &k, &v, T - q->ne[0], scale, 1);
}

void osc_kv_advance(osc_kv *kv, int n) {
    kv->len += n;
    kv->pending = 0;
    kv->cur_layer = -1;
}

void osc_kv_truncate(osc_kv *kv, int n) {
    if (n < kv->len) kv->len = n < 0 ? 0 : n;
    kv->pending = 0;
    kv->cur_layer = -1;
    if (kv->m.kind != KV_PLAIN)
        for (int l = 0; l < kv->p.n_layers; l++) {
#ifdef OSC_HAVE_CUDA
            if (kv->g) {
                /* only fails on a device error, which the next op on the stream reports again */
                if (osc_kvg_truncate_layer(kv, l, kv->len) != OSC_OK) osc_log(OSC_LOG_WARN, "kv truncate: %s", osc_last_error());
                continue;
            }
#endif
            truncate_layer(kv, l, kv->len);
        }
    if (kv->pool) {
        int keep = 0;
        for (int l = 0; l < kv->p.n_layers; l++)
            if (kv->nq[l] / kv->R > keep) keep = kv->nq[l] / kv->R;
        pool_trim(kv, keep);
    }
}

/* ---- debug + offline fold --------------------------------------------------------------- */

osc_status osc_kv_debug_dequant(const osc_kv *kv, int l, int t0, int n, float *k, float *v) {
#ifdef OSC_HAVE_CUDA
    if (kv->g) return osc_kvg_debug_dequant(kv, l, t0, n, k, v);
#endif
    if (kv->m.kind == KV_PLAIN) {
        if (l < 0 || l >= kv->p.n_layers || t0 < 0 || n < 0 || t0 + n > kv->len + kv->pending)
            return osc_error(OSC_ERR_INVALID_ARG, "kv debug dequant: layer %d tokens [%d, %d)", l, t0, t0 + n);
        osc_tensor tk = layer_view(kv, kv->k, l, t0, n), tv = layer_view(kv, kv->v, l, t0, n);
        int64_t cnt = (int64_t)n * kv->p.n_kv_heads * kv->p.head_dim;
        OSC_TRY(osc_tensor_download_f32(k, &tk, cnt));
        return osc_tensor_download_f32(v, &tv, cnt);
    }
    const int H = HKV, hd = HD;
    const size_t row = (size_t)H * hd;
    if (l < 0 || l >= kv->p.n_layers || t0 < 0 || n < 0 || t0 + n > kv->nq[l] + kv->nres[l])
        return osc_error(OSC_ERR_INVALID_ARG, "kv debug dequant: layer %d tokens [%d, %d)", l, t0, t0 + n);
    float kb[OSC_KV_G * hd];
    for (int t = t0; t < t0 + n; t++) {
        float *kd = k + (size_t)(t - t0) * row, *vd = v + (size_t)(t - t0) * row;
        if (t < kv->nq[l]) {
            for (int h = 0; h < H; h++) {
                if (kv->m.kind == KV_INT8) {
                    size_t r = i8_row(kv, l, h, t);
                    osc_kvq_dequant_i8_row(kv->k8 + r * hd, kv->k8s[r], hd, kd + (size_t)h * hd);
                    osc_kvq_dequant_i8_row(kv->v8 + r * hd, kv->v8s[r], hd, vd + (size_t)h * hd);
                } else {
                    int g = t / OSC_KV_G;
                    osc_kvq_dequant_k_group(kw_at(kv, l, h, g), kp_at(kv, l, h, g), t % OSC_KV_G + 1, hd, kv->m.bits, kb, hd);
                    memcpy(kd + (size_t)h * hd, kb + (size_t)(t % OSC_KV_G) * hd, sizeof(float) * hd);
                    osc_kvq_dequant_v_row(vw_at(kv, l, h, t), vp_at(kv, l, h, t), hd, kv->m.bits, vd + (size_t)h * hd);
                }
            }
        } else {
            memcpy(kd, rk_at(kv, l, t - kv->nq[l]), row * sizeof(float));
            memcpy(vd, rv_at(kv, l, t - kv->nq[l]), row * sizeof(float));
        }
        if (kv->m.norm) {
            float nt = *norm_at(kv, l, t);
            for (size_t i = 0; i < row; i++) kd[i] *= nt;
        }
        if (kv->m.rotate)
            for (int h = 0; h < H; h++) osc_kvq_hadamard(kd + (size_t)h * hd, hd);
    }
    return OSC_OK;
}

float osc_kv_debug_norm(const osc_kv *kv, int l, int t) {
#ifdef OSC_HAVE_CUDA
    if (kv->g) return osc_kvg_debug_norm(kv, l, t);
#endif
    int stored = kv->m.kind == KV_PLAIN ? kv->len + kv->pending : kv->nq[l] + kv->nres[l];
    if (l < 0 || l >= kv->p.n_layers || t < 0 || t >= stored) return NAN;
    return kv->m.norm ? *norm_at(kv, l, t) : 1.0f;
}

osc_status osc_kv_fold_v_hadamard(float *w_v, float *b_v, float *w_o, int Hkv, int Hq, int hd, int D) {
    if (!osc_kvq_is_pow2(hd) || hd > OSC_KV_MAX_HD || Hkv <= 0 || Hq <= 0 || D <= 0)
        return osc_error(OSC_ERR_UNSUPPORTED, "fold V Hadamard: head_dim %d must be a power of two <= %d", hd, OSC_KV_MAX_HD);
    float col[OSC_KV_MAX_HD];
    /* w_v: each head block [hd, D]; column j of the block <- H column */
    for (int h = 0; h < Hkv; h++) {
        float *blk = w_v + (size_t)h * hd * D;
        for (int j = 0; j < D; j++) {
            for (int r = 0; r < hd; r++) col[r] = blk[(size_t)r * D + j];
            osc_kvq_hadamard(col, hd);
            for (int r = 0; r < hd; r++) blk[(size_t)r * D + j] = col[r];
        }
        if (b_v) osc_kvq_hadamard(b_v + (size_t)h * hd, hd);
    }
    /* w_o: row i, columns of q head block h <- (row block) H = H (row block) (H symmetric) */
    for (int i = 0; i < D; i++)
        for (int h = 0; h < Hq; h++) osc_kvq_hadamard(w_o + (size_t)i * Hq * hd + (size_t)h * hd, hd);
    return OSC_OK;
}
