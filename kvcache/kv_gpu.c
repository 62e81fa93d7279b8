/* kvcache/kv_gpu.c: the quantised cache modes (int8, kivi2/4, rot2, oscar2/4) on CUDA, with the
 * same bookkeeping as the CPU reference in kvcache.c (nq packed tokens, nres in the residual
 * window, lazy flush of a full window when the next token arrives) and the kernels of
 * kernels/cuda/cuda_kvquant.cu.
 *
 * Per layer, back to back, sized once for n_ctx tokens:
 *   kq/kp/vq/vp/kn  the packed layout of kvquant_launch.h for ceil(n_ctx/32) groups
 *   rk/rv           bf16 [R][Hkv][hd] residual window, RAW keys (after RoPE, not rotated or
 *                   normalised: the fused decode kernel scores them against the unrotated
 *                   query, and the pack kernel rotates/normalises them when the window is full)
 *   int8: k8/v8 int8 [n_ctx][Hkv][hd], k8s/v8s fp16 [n_ctx][Hkv]; no residual window.
 * A pooled cache (osc_kv_new_in_pool) holds only rk/rv and the device copy of its block table;
 * its packed arrays are pool pages (kv_internal.h), flushes pack straight into the page, and
 * the kernels read through the table (osc_kvq_pages).
 * Attention:
 *   one query row, head_dim 128/256, kivi/rot/oscar: the fused split-K kernel over the packed
 *     tokens + the residual (the current token is always in the window: lazy flush);
 *   anything else (prefill chunks, int8, other head sizes): the cached tokens are dequantised
 *     to bf16 into a shared scratch, this forward's tokens are copied in at full precision
 *     (the current-token rule), and the ordinary causal attention op runs over it. */
#ifdef OSC_HAVE_CUDA
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/device.h"
#include "../kernels/cuda/kvquant_launch.h"
#include "../kernels/cuda/launch.h"
#include "../kernels/ops.h"
#include "kv_internal.h"
#include "kv_quant.h"

struct kv_gpu {
    void *mem;          /* one allocation holding everything below */
    uint32_t *kq, *vq;
    uint16_t *kp, *vp;
    float *kn;
    uint16_t *rk, *rv;  /* bf16 */
    int8_t *k8, *v8;
    uint16_t *k8s, *v8s;
    size_t kq_l, kp_l, vq_l, vp_l, res_l, i8_l; /* elements per layer */
    int *bt;            /* pooled: device copy of the block table [bt_cap] */
};

/* One scratch pair of bf16 [rows][Hkv][hd] K and V shared by every GPU cache: all work runs on
 * the library stream in order, so reuse between layers and caches is safe. */
static void *g_tmp;
static size_t g_tmp_bytes;
static int g_users;

static osc_status tmp_get(size_t bytes, void **out) {
    if (bytes > g_tmp_bytes) {
        if (g_tmp) osc_dev_free(OSC_DEV_CUDA, g_tmp);
        g_tmp = NULL;
        g_tmp_bytes = 0;
        OSC_TRY(osc_dev_malloc(OSC_DEV_CUDA, bytes, &g_tmp));
        g_tmp_bytes = bytes;
    }
    *out = g_tmp;
    return OSC_OK;
}

typedef struct gsz {
    size_t kq, kp, vq, vp, kn, res, i8, i8s; /* elements per layer */
} gsz;

/* pooled: only the window; the packed part lives in the pool's pages */
static gsz gsizes(const osc_kv_params *p, int kind, int bits, int pooled) {
    gsz z = {0};
    size_t H = p->n_kv_heads, hd = p->head_dim, C = p->n_ctx;
    size_t ng = (C + OSC_KV_G - 1) / OSC_KV_G, C32 = ng * OSC_KV_G;
    if (kind == KV_INT8) {
        z.i8 = C * H * hd;
        z.i8s = C * H;
        return z;
    }
    int R = p->r_evict > 0 ? p->r_evict : 256;
    size_t Ra = (size_t)(R < p->n_ctx ? R : p->n_ctx);
    if (pooled) {
        z.res = Ra * H * hd;
        return z;
    }
    z.kq = ng * H * bits * hd;      /* u32 */
    z.kp = ng * H * hd * 2;         /* u16 */
    z.vq = C32 * H * hd * bits / 32;
    z.vp = C32 * H * (hd / 32) * 2;
    z.kn = C32;
    z.res = Ra * H * hd;            /* bf16 */
    return z;
}

static size_t al256(size_t b) { return (b + 255) & ~(size_t)255; }

static size_t layer_bytes(const gsz *z) {
    return al256(z->kq * 4) + al256(z->kp * 2) + al256(z->vq * 4) + al256(z->vp * 2) + al256(z->kn * 4) +
           2 * al256(z->res * 2) + 2 * al256(z->i8) + 2 * al256(z->i8s * 2);
}

size_t osc_kvg_bytes(const osc_kv_params *p, int kind, int bits, int norm) {
    (void)norm;
    gsz z = gsizes(p, kind, bits, 0);
    return (size_t)p->n_layers * layer_bytes(&z);
}

static size_t bt_bytes(const osc_kv_params *p) {
    int R = p->r_evict > 0 ? p->r_evict : 256;
    return al256((size_t)((p->n_ctx + R - 1) / R) * sizeof(int));
}

size_t osc_kvg_seq_bytes(const osc_kv_params *p) {
    gsz z = gsizes(p, KV_BLOCK, 2, 1);
    return (size_t)p->n_layers * layer_bytes(&z) + bt_bytes(p);
}

osc_status osc_kvg_new(osc_kv *kv) {
    const osc_kv_params *p = &kv->p;
    struct kv_gpu *g = calloc(1, sizeof *g);
    if (!g) return osc_error(OSC_ERR_OOM, "kv cache: out of host memory");
    kv->g = g;
    gsz z = gsizes(p, kv->m.kind, kv->m.bits, kv->pool != NULL);
    size_t L = p->n_layers, total = L * layer_bytes(&z) + (kv->pool ? bt_bytes(p) : 0);
    osc_status s = osc_dev_malloc(p->dev, total, &g->mem);
    if (s != OSC_OK)
        return osc_error_prefix(s, "kv cache '%s' of %d tokens x %d layers (%.1f MiB)", kv->m.name, p->n_ctx, p->n_layers,
                                total / 1048576.0);
    char *c = g->mem;
#define CARVE(f, n, es) do { g->f = (void *)c; c += L * al256((n) * (es)); } while (0)
    /* each array holds its L layers back to back, layer stride = the aligned per-layer size */
    CARVE(kq, z.kq, 4); CARVE(kp, z.kp, 2); CARVE(vq, z.vq, 4); CARVE(vp, z.vp, 2); CARVE(kn, z.kn, 4);
    CARVE(rk, z.res, 2); CARVE(rv, z.res, 2); CARVE(k8, z.i8, 1); CARVE(v8, z.i8, 1); CARVE(k8s, z.i8s, 2);
    CARVE(v8s, z.i8s, 2);
#undef CARVE
    if (kv->pool) g->bt = (int *)c;
    g->kq_l = al256(z.kq * 4) / 4;
    g->kp_l = al256(z.kp * 2) / 2;
    g->vq_l = al256(z.vq * 4) / 4;
    g->vp_l = al256(z.vp * 2) / 2;
    g->res_l = al256(z.res * 2) / 2;
    g->i8_l = al256(z.i8);
    kv->n_groups = (p->n_ctx + OSC_KV_G - 1) / OSC_KV_G;
    g_users++;
    return OSC_OK;
}

void osc_kvg_free(osc_kv *kv) {
    struct kv_gpu *g = kv->g;
    if (g->mem) {
        osc_dev_free(kv->p.dev, g->mem);
        if (--g_users == 0 && g_tmp) {
            osc_dev_free(OSC_DEV_CUDA, g_tmp);
            g_tmp = NULL;
            g_tmp_bytes = 0;
        }
    }
    free(g);
    kv->g = NULL;
}

osc_status osc_kvg_bt_set(osc_kv *kv, int i, int page) { return osc_cuda_kv_set_i32(kv->g->bt + i, page); }

/* ---- addressing (layer l) ---------------------------------------------------------------- */

#define HKV (kv->p.n_kv_heads)
#define HD (kv->p.head_dim)
#define ROW ((size_t)HKV * HD)

/* Pooled caches: layer l of pool page `page` (kv_internal.h layout), at byte offset off. */
static char *pg_at(const osc_kv *kv, int page, int l, size_t off) {
    const osc_kv_pool *P = kv->pool;
    return (char *)P->mem + (size_t)page * P->lay.page_bytes + (size_t)l * P->lay.layer_bytes + off;
}
/* The packed arrays of layer l as the kernels take them: the contiguous arrays, or page 0 of
 * the pool with pages() describing the table. */
static uint32_t *g_kq(const osc_kv *kv, int l) {
    return kv->pool ? (uint32_t *)pg_at(kv, 0, l, kv->pool->lay.kq) : kv->g->kq + (size_t)l * kv->g->kq_l;
}
static uint16_t *g_kp(const osc_kv *kv, int l) {
    return kv->pool ? (uint16_t *)pg_at(kv, 0, l, kv->pool->lay.kp) : kv->g->kp + (size_t)l * kv->g->kp_l;
}
static uint32_t *g_vq(const osc_kv *kv, int l) {
    return kv->pool ? (uint32_t *)pg_at(kv, 0, l, kv->pool->lay.vq) : kv->g->vq + (size_t)l * kv->g->vq_l;
}
static uint16_t *g_vp(const osc_kv *kv, int l) {
    return kv->pool ? (uint16_t *)pg_at(kv, 0, l, kv->pool->lay.vp) : kv->g->vp + (size_t)l * kv->g->vp_l;
}
static float *g_kn(const osc_kv *kv, int l) {
    if (kv->pool) return (float *)pg_at(kv, 0, l, kv->pool->lay.kn);
    return kv->g->kn + (size_t)l * (al256((size_t)kv->n_groups * OSC_KV_G * 4) / 4);
}
static const osc_kvq_pages *pages_of(const osc_kv *kv, osc_kvq_pages *pg) {
    if (!kv->pool) return NULL;
    pg->bt = kv->g->bt;
    pg->gpp = kv->R / OSC_KV_G;
    pg->page_bytes = (long long)kv->pool->lay.page_bytes;
    return pg;
}
static uint16_t *g_rk(const osc_kv *kv, int l, int r) { return kv->g->rk + (size_t)l * kv->g->res_l + (size_t)r * ROW; }
static uint16_t *g_rv(const osc_kv *kv, int l, int r) { return kv->g->rv + (size_t)l * kv->g->res_l + (size_t)r * ROW; }
static int8_t *g_k8(const osc_kv *kv, int l, int t) { return kv->g->k8 + (size_t)l * kv->g->i8_l + (size_t)t * ROW; }
static int8_t *g_v8(const osc_kv *kv, int l, int t) { return kv->g->v8 + (size_t)l * kv->g->i8_l + (size_t)t * ROW; }
static size_t i8s_l(const osc_kv *kv) { return al256((size_t)kv->p.n_ctx * HKV * 2) / 2; }
static uint16_t *g_k8s(const osc_kv *kv, int l, int t) { return kv->g->k8s + (size_t)l * i8s_l(kv) + (size_t)t * HKV; }
static uint16_t *g_v8s(const osc_kv *kv, int l, int t) { return kv->g->v8s + (size_t)l * i8s_l(kv) + (size_t)t * HKV; }

static osc_tensor rows3(void *p, int64_t n, const osc_kv *kv) {
    int64_t ne[3] = {n, HKV, HD};
    return osc_tensor_make(p, OSC_BF16, kv->p.dev, 3, ne);
}

/* Dequantise packed tokens [t0, t0+n) of layer l into bf16 rows dk, dv (original key domain). */
static osc_status dequant_packed(const osc_kv *kv, int l, int t0, int n, void *dk, void *dv) {
    if (n <= 0) return OSC_OK;
    if (kv->m.kind == KV_INT8) {
        OSC_TRY(osc_cuda_kv_i8_dequant(g_k8(kv, l, t0), g_k8s(kv, l, t0), (long)n * HKV, HD, dk));
        return osc_cuda_kv_i8_dequant(g_v8(kv, l, t0), g_v8s(kv, l, t0), (long)n * HKV, HD, dv);
    }
    osc_kvq_pages pg;
    return osc_cuda_kv_dequant_paged(g_kq(kv, l), g_kp(kv, l), g_vq(kv, l), g_vp(kv, l), kv->m.norm ? g_kn(kv, l) : NULL, t0,
                                     n, HKV, HD, kv->m.bits, kv->m.rotate, dk, dv, pages_of(kv, &pg));
}

/* Pack the full residual window of layer l (R tokens) into packed tokens [nq, nq + R). */
/* Quantise and pack n (a multiple of R) raw tokens k/v [n][H][hd] (bf16, device) as the next
 * packed tokens of layer l: one launch, into the contiguous arrays or across the pool's pages
 * (held already: a store takes its pages before it starts). */
static osc_status pack_tokens(osc_kv *kv, int l, const void *k, const void *v, int n) {
    const int b = kv->m.bits, H = HKV, hd = HD, nq = kv->nq[l];
    osc_kvq_pages pg;
    const osc_kvq_pages *pp = pages_of(kv, &pg);
    if (pp) {
        OSC_TRY(osc_cuda_kv_pack_paged(k, v, n, H, hd, b, kv->m.rotate, kv->m.norm, g_kq(kv, l), g_kp(kv, l),
                                       g_vq(kv, l), g_vp(kv, l), g_kn(kv, l), pp, nq));
    } else {
        const size_t g0 = (size_t)nq / OSC_KV_G;
        OSC_TRY(osc_cuda_kv_pack(k, v, n, H, hd, b, kv->m.rotate, kv->m.norm, g_kq(kv, l) + g0 * H * b * hd,
                                 g_kp(kv, l) + g0 * H * hd * 2, g_vq(kv, l) + (size_t)nq * H * (hd * b / 32),
                                 g_vp(kv, l) + (size_t)nq * H * (hd / 32) * 2, g_kn(kv, l) + nq));
    }
    kv->nq[l] += n;
    return OSC_OK;
}

static osc_status flush_window(osc_kv *kv, int l) {
    OSC_TRY(pack_tokens(kv, l, g_rk(kv, l, 0), g_rv(kv, l, 0), kv->R));
    kv->nres[l] = 0;
    return OSC_OK;
}

osc_status osc_kvg_truncate_layer(osc_kv *kv, int l, int n) {
    if (n >= kv->nq[l] + kv->nres[l]) return OSC_OK;
    if (kv->m.kind == KV_INT8) {
        kv->nq[l] = n;
        return OSC_OK;
    }
    if (n >= kv->nq[l]) {
        kv->nres[l] = n - kv->nq[l];
        return OSC_OK;
    }
    /* a partly kept block goes back into the window (lossy: it was quantised already) */
    int nq = n / kv->R * kv->R;
    OSC_TRY(dequant_packed(kv, l, nq, n - nq, g_rk(kv, l, 0), g_rv(kv, l, 0)));
    kv->nq[l] = nq;
    kv->nres[l] = n - nq;
    return OSC_OK;
}

osc_status osc_kvg_store(osc_kv *kv, int l, const osc_tensor *k, const osc_tensor *v) {
    const int H = HKV, hd = HD, S = (int)k->ne[0];
    if (k->dev != kv->p.dev || v->dev != kv->p.dev || k->dt != OSC_BF16 || v->dt != OSC_BF16 || k->nd != 3 ||
        v->nd != 3 || k->ne[1] != H || k->ne[2] != hd || v->ne[0] != S || v->ne[1] != H || v->ne[2] != hd)
        return osc_error(OSC_ERR_INVALID_ARG, "kv store (%s): k and v must be bf16 CUDA [S, %d, %d]", kv->m.name, H, hd);
    int stored = kv->nq[l] + kv->nres[l];
    if (stored > kv->len) OSC_TRY(osc_kvg_truncate_layer(kv, l, kv->len)); /* a repeated store of this forward */
    else if (stored < kv->len)
        return osc_error(OSC_ERR_INVALID_ARG, "kv store: layer %d holds %d tokens, cache length %d", l, stored, kv->len);
    if (kv->m.kind == KV_INT8) {
        int t = kv->nq[l];
        OSC_TRY(osc_cuda_kv_i8_quant(k->data, (long)S * H, hd, g_k8(kv, l, t), g_k8s(kv, l, t)));
        OSC_TRY(osc_cuda_kv_i8_quant(v->data, (long)S * H, hd, g_v8(kv, l, t), g_v8s(kv, l, t)));
        kv->nq[l] += S;
    } else {
        for (int off = 0; off < S;) {
            if (kv->nres[l] == kv->R) OSC_TRY(flush_window(kv, l)); /* lazy: the newest token stays in the window */
            if (kv->nres[l] == 0 && S - off > kv->R) {
                /* whole windows that would be flushed within this store are packed straight
                 * from k/v in one launch (the same bf16 rows the window would hold); the last
                 * 1..R tokens go to the window */
                const int n = (S - off - 1) / kv->R * kv->R;
                const size_t src = (size_t)off * ROW * 2;
                OSC_TRY(pack_tokens(kv, l, (const char *)k->data + src, (const char *)v->data + src, n));
                off += n;
                continue;
            }
            int n = kv->R - kv->nres[l];
            if (n > S - off) n = S - off;
            size_t bytes = (size_t)n * ROW * 2, src = (size_t)off * ROW * 2;
            OSC_TRY(osc_cuda_copy_pair(g_rk(kv, l, kv->nres[l]), (const char *)k->data + src, g_rv(kv, l, kv->nres[l]),
                                       (const char *)v->data + src, bytes));
            kv->nres[l] += n;
            off += n;
        }
    }
    kv->cur_k = k->data;
    kv->cur_v = v->data;
    kv->cur_S = S;
    kv->cur_layer = l;
    return OSC_OK;
}

/* One decode row per cache for B GPU block caches (osc_kv_store_batch): full windows are
 * flushed first (per cache, as osc_kvg_store does), then one launch copies row b of k/v
 * [B, Hkv, hd] into cache b's window. The caller has checked modes, shapes and lengths. */
osc_status osc_kvg_store_rows(osc_kv **kvs, int B, int l, const osc_tensor *k, const osc_tensor *v) {
    const osc_kv *k0 = kvs[0];
    const size_t row = (size_t)k0->p.n_kv_heads * k0->p.head_dim, rowb = row * 2;
    const size_t tab_bytes = (size_t)2 * B * sizeof(void *), bytes = tab_bytes + (size_t)B * sizeof(int32_t);
    char *h = malloc(bytes);
    if (!h) return osc_error(OSC_ERR_OOM, "kv store batch: out of host memory");
    void **tab = (void **)h;
    int32_t *lens1 = (int32_t *)(h + tab_bytes);
    osc_status s = OSC_OK;
    for (int b = 0; b < B && s == OSC_OK; b++) {
        osc_kv *kv = kvs[b];
        if (kv->nres[l] == kv->R) s = flush_window(kv, l); /* lazy: the newest token stays in the window */
        tab[b] = g_rk(kv, l, kv->nres[l]);
        tab[B + b] = g_rv(kv, l, kv->nres[l]);
        lens1[b] = 1;
    }
    void *d = NULL;
    if (s == OSC_OK) s = tmp_get(bytes, &d);
    if (s == OSC_OK) s = osc_cuda_memcpy_async(d, h, bytes, 1); /* staged: h may go at once */
    free(h);
    OSC_TRY(s);
    OSC_TRY(osc_cuda_kv_append(k->data, v->data, (void *const *)d, B, (const int32_t *)((char *)d + tab_bytes), B,
                               (int)row));
    for (int b = 0; b < B; b++) {
        osc_kv *kv = kvs[b];
        kv->nres[l] += 1;
        kv->cur_k = (char *)k->data + (size_t)b * rowb;
        kv->cur_v = (char *)v->data + (size_t)b * rowb;
        kv->cur_S = 1;
        kv->cur_layer = l;
    }
    return OSC_OK;
}

/* The fused decode path of osc_kvg_attend for B caches at once (kv_batch.h). *done = 0 and
 * nothing launched when any cache is not on that path or the caches differ in shape or mode. */
osc_status osc_kvg_attend_batch(osc_kv **kvs, int B, int l, const osc_tensor *q, osc_tensor *out, float scale,
                                int *done) {
    *done = 0;
    if (B < 2 || B > 4096 || !kvs[0]->g) return OSC_OK;
    const osc_kv *k0 = kvs[0];
    const int H = k0->p.n_kv_heads, hd = k0->p.head_dim;
    if (q->dev != k0->p.dev || out->dev != k0->p.dev || q->dt != OSC_BF16 || out->dt != OSC_BF16 || q->nd != 3 ||
        out->nd != 3 || q->ne[0] != B || out->ne[0] != B || q->ne[2] != hd || out->ne[1] != q->ne[1] ||
        out->ne[2] != hd || q->ne[1] % H || q->ne[1] / H > 8 || (hd != 128 && hd != 256))
        return OSC_OK;
    for (int b = 0; b < B; b++) {
        const osc_kv *kv = kvs[b];
        if (!kv->g || kv->m.kind != KV_BLOCK || kv->m.bits != k0->m.bits || kv->m.rotate != k0->m.rotate ||
            kv->m.norm != k0->m.norm || kv->p.n_kv_heads != H || kv->p.head_dim != hd || kv->p.dev != k0->p.dev ||
            kv->cur_layer != l || kv->cur_S != 1 || kv->pending != 1 || kv->nq[l] > kv->len)
            return OSC_OK;
    }
    osc_kvq_seq *seqs = malloc((size_t)B * sizeof *seqs);
    if (!seqs) return osc_error(OSC_ERR_OOM, "kv attend batch: out of host memory");
    for (int b = 0; b < B; b++) {
        const osc_kv *kv = kvs[b];
        osc_kvq_pages pg;
        const osc_kvq_pages *pp = pages_of(kv, &pg);
        seqs[b] = (osc_kvq_seq){g_kq(kv, l), g_kp(kv, l), g_vq(kv, l), g_vp(kv, l), g_kn(kv, l), kv->nq[l],
                                g_rk(kv, l, 0), g_rv(kv, l, 0), kv->nres[l], pp ? *pp : (osc_kvq_pages){NULL, 1, 0}};
    }
    osc_status s = osc_cuda_kv_decode_attn_batch(out->data, q->data, B, (int)q->ne[1], H, hd, k0->m.bits, k0->m.rotate,
                                                 seqs, scale, 1);
    free(seqs);
    if (s == OSC_OK) *done = 1;
    return s;
}

int osc_kvg_graph_layer(const osc_kv *kv, int l, void **win_k, void **win_v, struct osc_kvq_seq *seq) {
    const int nq = kv->nq[l], nres = kv->nres[l];
    if (nq + nres != kv->len || nres >= kv->R || nq % OSC_KV_G) return 0;
    const uintptr_t back = (uintptr_t)nq * ROW * 2;
    *win_k = (void *)((uintptr_t)g_rk(kv, l, 0) - back);
    *win_v = (void *)((uintptr_t)g_rv(kv, l, 0) - back);
    osc_kvq_pages pg;
    const osc_kvq_pages *pp = pages_of(kv, &pg);
    const osc_kvq_pages none = {NULL, 1, 0};
    *seq = (osc_kvq_seq){g_kq(kv, l), g_kp(kv, l), g_vq(kv, l), g_vp(kv, l), g_kn(kv, l), nq,
                         g_rk(kv, l, 0), g_rv(kv, l, 0), 0, pp ? *pp : none};
    return 1;
}

osc_status osc_kvg_attend(osc_kv *kv, int l, const osc_tensor *q, osc_tensor *out, float scale) {
    const int H = HKV, hd = HD, S = (int)q->ne[0], len = kv->len;
    if (q->dev != kv->p.dev || out->dev != kv->p.dev || q->dt != OSC_BF16 || out->dt != OSC_BF16 || q->nd != 3 ||
        out->nd != 3 || q->ne[2] != hd || q->ne[1] % H || out->ne[0] != S || out->ne[1] != q->ne[1] || out->ne[2] != hd)
        return osc_error(OSC_ERR_INVALID_ARG, "kv attend (%s): q/out must be bf16 CUDA [S, Hq, %d], Hq %% %d == 0",
                         kv->m.name, hd, H);
    if (kv->cur_layer != l || kv->cur_S != S || kv->pending != S)
        return osc_error(OSC_ERR_INVALID_ARG, "kv attend (%s): layer %d, %d rows must follow the store of the same layer and rows",
                         kv->m.name, l, S);
    const int Hq = (int)q->ne[1], nq = kv->nq[l];
    if (S == 1 && kv->m.kind == KV_BLOCK && (hd == 128 || hd == 256) && Hq / H <= 8 && nq <= len) {
        /* decode: the current token is in the window (lazy flush), so packed + window is exactly
         * the cache plus this token */
        osc_kvq_pages pg;
        return osc_cuda_kv_decode_attn_paged(out->data, q->data, Hq, H, hd, kv->m.bits, kv->m.rotate, kv->m.norm,
                                             g_kq(kv, l), g_kp(kv, l), g_vq(kv, l), g_vp(kv, l), g_kn(kv, l), nq,
                                             g_rk(kv, l, 0), g_rv(kv, l, 0), NULL, kv->nres[l], scale, 1, pages_of(kv, &pg));
    }
    /* general path: [dequantised cache | window | this forward at full precision] in bf16 */
    const int T = len + S;
    void *tmp;
    OSC_TRY(tmp_get((size_t)T * ROW * 2 * 2, &tmp));
    char *tk = tmp, *tv = (char *)tmp + (size_t)T * ROW * 2;
    const int P = nq < len ? nq : len;
    OSC_TRY(dequant_packed(kv, l, 0, P, tk, tv));
    if (nq < len && kv->m.kind == KV_BLOCK) {
        size_t bytes = (size_t)(len - nq) * ROW * 2;
        OSC_TRY(osc_copy_bytes(tk + (size_t)nq * ROW * 2, kv->p.dev, g_rk(kv, l, 0), kv->p.dev, bytes));
        OSC_TRY(osc_copy_bytes(tv + (size_t)nq * ROW * 2, kv->p.dev, g_rv(kv, l, 0), kv->p.dev, bytes));
    }
    size_t cb = (size_t)S * ROW * 2;
    OSC_TRY(osc_copy_bytes(tk + (size_t)len * ROW * 2, kv->p.dev, kv->cur_k, kv->p.dev, cb));
    OSC_TRY(osc_copy_bytes(tv + (size_t)len * ROW * 2, kv->p.dev, kv->cur_v, kv->p.dev, cb));
    osc_tensor K = rows3(tk, T, kv), V = rows3(tv, T, kv);
    return osc_op_attention(out, q, &K, &V, len, scale, 1);
}

osc_status osc_kvg_debug_dequant(const osc_kv *kv, int l, int t0, int n, float *k, float *v) {
    const int stored = kv->nq[l] + kv->nres[l];
    if (l < 0 || l >= kv->p.n_layers || t0 < 0 || n < 0 || t0 + n > stored)
        return osc_error(OSC_ERR_INVALID_ARG, "kv debug dequant: layer %d tokens [%d, %d)", l, t0, t0 + n);
    if (n == 0) return OSC_OK;
    void *tmp;
    OSC_TRY(tmp_get((size_t)n * ROW * 2 * 2, &tmp));
    char *tk = tmp, *tv = (char *)tmp + (size_t)n * ROW * 2;
    const int nq = kv->nq[l];
    int a = t0 < nq ? t0 : nq, b = t0 + n < nq ? t0 + n : nq; /* packed part [a, b) */
    OSC_TRY(dequant_packed(kv, l, a, b - a, tk, tv));
    if (t0 + n > nq) {
        int r0 = (t0 > nq ? t0 : nq) - nq, cnt = t0 + n - (t0 > nq ? t0 : nq);
        size_t off = (size_t)(b - a) * ROW * 2, bytes = (size_t)cnt * ROW * 2;
        OSC_TRY(osc_copy_bytes(tk + off, kv->p.dev, g_rk(kv, l, r0), kv->p.dev, bytes));
        OSC_TRY(osc_copy_bytes(tv + off, kv->p.dev, g_rv(kv, l, r0), kv->p.dev, bytes));
    }
    osc_tensor K = rows3(tk, n, kv), V = rows3(tv, n, kv);
    OSC_TRY(osc_tensor_download_f32(k, &K, (int64_t)n * ROW));
    return osc_tensor_download_f32(v, &V, (int64_t)n * ROW);
}

float osc_kvg_debug_norm(const osc_kv *kv, int l, int t) {
    if (l < 0 || l >= kv->p.n_layers || t < 0 || t >= kv->nq[l] + kv->nres[l]) return NAN;
    if (!kv->m.norm) return 1.0f;
    if (t >= kv->nq[l]) return NAN; /* the window keeps raw keys: no norm until packed */
    float x;
    const float *src = kv->pool ? (const float *)pg_at(kv, kv->bt[t / kv->R], l, kv->pool->lay.kn) + t % kv->R
                                : g_kn(kv, l) + t;
    if (osc_copy_bytes(&x, OSC_DEV_CPU, src, kv->p.dev, 4) != OSC_OK) return NAN;
    return x;
}

#endif /* OSC_HAVE_CUDA */
