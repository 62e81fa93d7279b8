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

#endif
