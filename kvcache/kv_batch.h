/* kvcache/kv_batch.h: what the decoder needs to run one attention launch over many plain
 * ("bf16") caches at once (kernels/ops.h osc_op_attention_decode_batch). */
#ifndef OSC_KV_BATCH_H
#define OSC_KV_BATCH_H
#include "kvcache.h"

/* For a plain-mode cache: the keys and values of `layer` that an attend right after a store
 * would read, rows [0, len + pending) as [len + pending, Hkv, hd] views of the cache's own
 * memory (valid until the cache is freed). Returns 1 and fills k, v; 0 for the other modes (k,
 * v untouched). */
int osc_kv_plain_layer(const osc_kv *kv, int layer, osc_tensor *k, osc_tensor *v);

/* A decode step's stores for B caches at once: row b of k, v [B, Hkv, hd] appended to kvs[b]
 * as osc_kv_store(kvs[b], layer, row b) would (window flushes included). One copy launch when
 * every cache is a quantised block mode on the GPU with the same shape and room for the row;
 * then *done = 1. Otherwise *done = 0 and nothing changed (store per cache). */
osc_status osc_kv_store_batch(osc_kv **kvs, int B, int layer, const osc_tensor *k, const osc_tensor *v, int *done);

/* A decode step's attention for B caches at once, after each cache's osc_kv_store of its one
 * row of `layer`: q/out [B, Hq, hd], row b attends to kvs[b] as osc_kv_attend would. One launch
 * when every cache is a quantised block mode (kivi, rot, oscar) on the GPU with the same mode
 * and shape and the fused decode kernel applies; then *done = 1. Otherwise *done = 0 and
 * nothing ran (call osc_kv_attend per cache). */
osc_status osc_kv_attend_batch(osc_kv **kvs, int B, int layer, const osc_tensor *q, osc_tensor *out, float scale,
                               int *done);

/* The decode step of a CUDA graph over quantised block caches (llm/model.c). For a cache whose
 * next one-row store is a plain window append (a block mode on the GPU, every layer holding len
 * tokens, the window not full: no flush), what a captured step needs at `layer`:
 *   win_k, win_v: the residual window moved back by the packed count, so that row len (the
 *     step's token) is at win + len rows: the address of a device-side append at lens1 - 1;
 *   seq: the packed part and window for osc_cuda_kv_graph_table (n_res 0: the kernel reads it);
 *   mode: the mode's name (caches decoded together must share it), bits, rotate.
 * Returns 1, or 0 when the cache cannot take such a step now (nothing filled). The addresses
 * stay valid until the cache is freed or its packed part changes (a flush, a truncation). */
struct osc_kvq_seq;
int osc_kv_graph_layer(const osc_kv *kv, int layer, void **win_k, void **win_v, struct osc_kvq_seq *seq,
                       const char **mode, int *bits, int *rotate);
/* After a graph step appended one row to every layer's window (then osc_kv_advance(kv, 1)). */
void osc_kv_graph_stored(osc_kv *kv);

#endif
