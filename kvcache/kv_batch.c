/* kvcache/kv_batch.c: views for batched decode attention over plain caches (kv_batch.h). */
#include "kv_batch.h"

#include "kv_internal.h"

int osc_kv_plain_layer(const osc_kv *kv, int layer, osc_tensor *k, osc_tensor *v) {
    if (kv->m.kind != KV_PLAIN || layer < 0 || layer >= kv->p.n_layers) return 0;
    const size_t es = osc_dtype_size(kv->p.act_dt);
    const int64_t T = (int64_t)kv->len + kv->pending;
    int64_t ne[3] = {T, kv->p.n_kv_heads, kv->p.head_dim};
    *k = osc_tensor_make((char *)kv->k + (size_t)layer * kv->layer_elems * es, kv->p.act_dt, kv->p.dev, 3, ne);
    *v = osc_tensor_make((char *)kv->v + (size_t)layer * kv->layer_elems * es, kv->p.act_dt, kv->p.dev, 3, ne);
    return 1;
}

osc_status osc_kv_attend_batch(osc_kv **kvs, int B, int layer, const osc_tensor *q, osc_tensor *out, float scale,
                               int *done) {
    *done = 0;
    if (B < 2 || !kvs || layer < 0 || layer >= kvs[0]->p.n_layers) return OSC_OK;
#ifdef OSC_HAVE_CUDA
    return osc_kvg_attend_batch(kvs, B, layer, q, out, scale, done);
#else
    (void)q, (void)out, (void)scale;
    return OSC_OK;
#endif
}

int osc_kv_graph_layer(const osc_kv *kv, int layer, void **win_k, void **win_v, struct osc_kvq_seq *seq,
                       const char **mode, int *bits, int *rotate) {
#ifdef OSC_HAVE_CUDA
    if (!kv->g || kv->m.kind != KV_BLOCK || layer < 0 || layer >= kv->p.n_layers || kv->pending ||
        kv->len + 1 > kv->p.n_ctx || !osc_kvg_graph_layer(kv, layer, win_k, win_v, seq))
        return 0;
    *mode = kv->m.name;
    *bits = kv->m.bits;
    *rotate = kv->m.rotate;
    return 1;
#else
    (void)kv, (void)layer, (void)win_k, (void)win_v, (void)seq, (void)mode, (void)bits, (void)rotate;
    return 0;
#endif
}

void osc_kv_graph_stored(osc_kv *kv) {
    if (kv->m.kind != KV_BLOCK) return;
    for (int l = 0; l < kv->p.n_layers; l++) kv->nres[l] += 1;
}
