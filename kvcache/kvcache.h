/* The KV cache of one sequence, all layers.
 *
 * Protocol for one forward pass over S new tokens of this sequence:
 *   for each layer: osc_kv_store(kv, layer, k, v)   -- rows [len, len+S) of that layer
 *                   osc_kv_attend(kv, layer, q, out) -- causal attention over [0, len+S)
 *   then once:      osc_kv_advance(kv, S)
 * Keys are stored after RoPE. Modes are chosen at run time by name; every mode has the same
 * API, so a comparison between modes changes nothing else.
 *   "bf16": unquantized, in the device's activation dtype (bf16 on CUDA, float32 on the CPU
 *           reference path).
 * Memory is sized once at creation for n_ctx tokens. Errors: OSC_ERR_CONTEXT when a store would
 * pass n_ctx; OSC_ERR_UNSUPPORTED for an unknown mode (the message lists the known ones).
 * Not thread-safe; one sequence per cache. */
#ifndef OSC_KVCACHE_H
#define OSC_KVCACHE_H
#include "../core/tensor.h"

typedef struct osc_kv osc_kv;

typedef struct osc_kv_params {
    const char *mode;   /* NULL = "bf16" */
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int n_ctx;
    osc_dev dev;
    osc_dtype act_dt;   /* activation dtype of k/v/q tensors passed in */
} osc_kv_params;

/* Names of the modes this build offers, comma-separated. */
const char *osc_kv_modes(void);
osc_status osc_kv_new(const osc_kv_params *p, osc_kv **out);
void osc_kv_free(osc_kv *kv);
/* Bytes this cache holds on its device for n_ctx tokens (for memory planning). */
size_t osc_kv_bytes(const osc_kv *kv);
size_t osc_kv_bytes_for(const osc_kv_params *p);

int osc_kv_len(const osc_kv *kv);
int osc_kv_capacity(const osc_kv *kv);

/* k, v: [S, n_kv_heads, head_dim]. */
osc_status osc_kv_store(osc_kv *kv, int layer, const osc_tensor *k, const osc_tensor *v);
/* q: [S, Hq, head_dim] for the same S rows as the last store; out like q. */
osc_status osc_kv_attend(osc_kv *kv, int layer, const osc_tensor *q, osc_tensor *out, float scale);
void osc_kv_advance(osc_kv *kv, int n);
/* Forget everything after the first n tokens. */
void osc_kv_truncate(osc_kv *kv, int n);

#endif
