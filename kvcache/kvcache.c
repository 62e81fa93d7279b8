#include "kvcache.h"

#include <stdlib.h>
#include <string.h>

#include "../core/arena.h"
#include "../kernels/ops.h"

struct osc_kv {
    osc_kv_params p;
    int len;      /* committed tokens */
    int pending;  /* tokens stored by the current forward (same for every layer) */
    void *k, *v;  /* [n_layers][n_ctx][n_kv_heads][head_dim] in act_dt */
    size_t layer_elems;
};

const char *osc_kv_modes(void) { return "bf16"; }

static osc_status check_mode(const char *mode) {
    if (!mode || !strcmp(mode, "bf16")) return OSC_OK;
    return osc_error(OSC_ERR_UNSUPPORTED, "unknown KV cache mode '%s' (known: %s)", mode, osc_kv_modes());
}

size_t osc_kv_bytes_for(const osc_kv_params *p) {
    return 2ull * (size_t)p->n_layers * (size_t)p->n_ctx * (size_t)p->n_kv_heads * (size_t)p->head_dim *
           osc_dtype_size(p->act_dt);
}

osc_status osc_kv_new(const osc_kv_params *p, osc_kv **out) {
    *out = NULL;
    OSC_TRY(check_mode(p->mode));
    if (p->n_layers <= 0 || p->n_kv_heads <= 0 || p->head_dim <= 0 || p->n_ctx <= 0)
        return osc_error(OSC_ERR_INVALID_ARG, "kv cache: bad sizes (layers %d, kv heads %d, head dim %d, ctx %d)",
                         p->n_layers, p->n_kv_heads, p->head_dim, p->n_ctx);
    osc_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return osc_error(OSC_ERR_OOM, "kv cache: out of host memory");
    kv->p = *p;
    kv->p.mode = "bf16";
    kv->layer_elems = (size_t)p->n_ctx * p->n_kv_heads * p->head_dim;
    size_t half = osc_kv_bytes_for(p) / 2;
    osc_status s = osc_dev_malloc(p->dev, half, &kv->k);
    if (s == OSC_OK) s = osc_dev_malloc(p->dev, half, &kv->v);
    if (s != OSC_OK) {
        osc_kv_free(kv);
        return osc_error_prefix(s, "kv cache of %d tokens (%.1f MiB)", p->n_ctx, 2.0 * half / (1 << 20));
    }
    *out = kv;
    return OSC_OK;
}

void osc_kv_free(osc_kv *kv) {
    if (!kv) return;
    osc_dev_free(kv->p.dev, kv->k);
    osc_dev_free(kv->p.dev, kv->v);
    free(kv);
}

size_t osc_kv_bytes(const osc_kv *kv) { return osc_kv_bytes_for(&kv->p); }
int osc_kv_len(const osc_kv *kv) { return kv->len; }
int osc_kv_capacity(const osc_kv *kv) { return kv->p.n_ctx; }

static osc_tensor layer_view(const osc_kv *kv, void *base, int layer, int64_t r0, int64_t n) {
    size_t es = osc_dtype_size(kv->p.act_dt);
    char *p = (char *)base + ((size_t)layer * kv->layer_elems + (size_t)r0 * kv->p.n_kv_heads * kv->p.head_dim) * es;
    int64_t ne[3] = {n, kv->p.n_kv_heads, kv->p.head_dim};
    return osc_tensor_make(p, kv->p.act_dt, kv->p.dev, 3, ne);
}

osc_status osc_kv_store(osc_kv *kv, int layer, const osc_tensor *k, const osc_tensor *v) {
    if (layer < 0 || layer >= kv->p.n_layers) return osc_error(OSC_ERR_INVALID_ARG, "kv store: layer %d", layer);
    int S = (int)k->ne[0];
    if (kv->len + S > kv->p.n_ctx)
        return osc_error(OSC_ERR_CONTEXT, "context full: %d tokens cached + %d new > context size %d",
                         kv->len, S, kv->p.n_ctx);
    kv->pending = S;
    osc_tensor dk = layer_view(kv, kv->k, layer, kv->len, S);
    osc_tensor dv = layer_view(kv, kv->v, layer, kv->len, S);
    OSC_TRY(osc_op_convert(&dk, k));
    return osc_op_convert(&dv, v);
}

osc_status osc_kv_attend(osc_kv *kv, int layer, const osc_tensor *q, osc_tensor *out, float scale) {
    int T = kv->len + kv->pending;
    osc_tensor k = layer_view(kv, kv->k, layer, 0, T);
    osc_tensor v = layer_view(kv, kv->v, layer, 0, T);
    return osc_op_attention(out, q, &k, &v, T - q->ne[0], scale, 1);
}

void osc_kv_advance(osc_kv *kv, int n) {
    kv->len += n;
    kv->pending = 0;
}

void osc_kv_truncate(osc_kv *kv, int n) {
    if (n < kv->len) kv->len = n < 0 ? 0 : n;
    kv->pending = 0;
}
