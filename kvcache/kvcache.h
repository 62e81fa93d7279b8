/* The KV cache of one sequence, all layers.
 *
 * Protocol for one forward pass over S new tokens of this sequence:
 *   for each layer: osc_kv_store(kv, layer, k, v)   -- rows [len, len+S) of that layer
 *                   osc_kv_attend(kv, layer, q, out) -- causal attention over [0, len+S)
 *   then once:      osc_kv_advance(kv, S)
 * Keys are stored after RoPE. Modes are chosen at run time by name; every mode has the same
 * API, so a comparison between modes changes nothing else.
 *   "bf16":   unquantized, in the device's activation dtype (bf16 on CUDA, float32 on the CPU
 *             reference path).
 *   "int8":   K and V per (token, kv head) symmetric int8 with an fp16 scale; no residual window.
 *   "kivi2", "kivi4": K per channel over groups of 32 tokens, V per token over groups of 32
 *             channels, asymmetric 2/4-bit, fp16 (scale, zero); the newest tokens stay in a
 *             float32 residual window of r_evict tokens. No rotation, no norm.
 *   "rot2":   kivi2 on Hadamard-rotated keys (queries rotated alike): QuaRot-like.
 *   "oscar2", "oscar4": rotation + omni-token norm scaling (docs/oscar-kv.md steps 1-4, 6-8).
 * The quantised modes take float32 tensors on the CPU and bf16 on CUDA (kv_gpu.c), and
 * need head_dim % 32 == 0 and head_dim <= 512; the rotating ones need head_dim a power of two.
 * Packed layouts and the quantiser are documented in kv_quant.h.
 * Flushing (lazy): a full residual window of r_evict tokens is quantised and appended when the
 * next token arrives, so the newest token is always in the window (a decode step never reads
 * its own token packed) and a store of S tokens may flush several blocks; after T tokens the
 * window holds ((T - 1) mod r_evict) + 1 of them. On CUDA the window keeps raw keys (bf16, not
 * rotated or normalised); the CPU reference keeps them rotated and normalised in float32.
 * Current-token rule (oscar-kv.md step 8): osc_kv_attend always uses the S tokens of the current
 * forward in full precision, read from the k/v tensors given to the matching osc_kv_store
 * (unrotated, unnormalised), even if a flush inside that store already packed them; older
 * tokens are read as the cache holds them (packed, or from the residual window). Hence for the
 * quantised modes the k and v passed to osc_kv_store must stay valid and unchanged until
 * osc_kv_attend of the same layer returns (the decoder's scratch does), and attend must follow
 * the store of the same layer.
 * Memory is sized once at creation for n_ctx tokens (or taken page by page from a pool, below).
 * Errors: OSC_ERR_CONTEXT when a store would pass n_ctx; OSC_ERR_UNSUPPORTED for an unknown mode
 * (the message lists the known ones).
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
    int r_evict;        /* residual window of the kivi/rot/oscar modes: 0 = 256; a multiple of 32 */
} osc_kv_params;

/* The default mode: what a command uses when the user names none (NULL) or "auto": "oscar2"
 * when the head size allows it (a power of two, a multiple of 32, at most 512), else "bf16".
 * Any other name is returned unchanged. */
const char *osc_kv_mode_for(const char *requested, int head_dim);

/* Names of the modes this build offers, comma-separated. */
const char *osc_kv_modes(void);
/* 1 if the mode rotates keys with the Hadamard (rot2, oscar2, oscar4): such modes expect the value
 * rotation folded into the weights at load (osc_kv_fold_v_hadamard); 0 if not; -1 unknown mode. */
int osc_kv_mode_rotates(const char *mode);
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

/* Memory per cached element (K and V elements both count; residual window excluded), in bits:
 * the packed codes + fp16 (scale, zero) + the fp32 OScaR norm (32 bits per token per layer,
 * spread over the 2 * n_kv_heads * head_dim elements of that token). oscar2/kivi2 at
 * (8 heads, 128 dims): 3 + 32/2048 = 3.016. "bf16": 8 * sizeof(act_dt) (16 for OSC_BF16, 32 for
 * the CPU's OSC_F32). 0 for an unknown mode. */
double osc_kv_bits_per_element(const osc_kv_params *p);
/* Bytes of quantised (or plain) storage per token per layer, K + V + norm, residual excluded. */
size_t osc_kv_bytes_per_token_per_layer(const osc_kv_params *p);

/* Offline value rotation (oscar-kv.md step 5), float32 host weights, in place:
 *   w_v [Hkv*hd, D] (row-major, out x in): rows of each kv head block <- H w_v_block
 *   b_v [Hkv*hd] or NULL: each head block <- H b_v_block
 *   w_o [D, Hq*hd]: columns of each q head block <- w_o_block H
 * with H = H_hd / sqrt(hd) (Sylvester, symmetric, its own inverse). The attention output then
 * comes out rotated and w_o undoes it. OSC_ERR_UNSUPPORTED when hd is not a power of two. */
osc_status osc_kv_fold_v_hadamard(float *w_v, float *b_v, float *w_o, int Hkv, int Hq, int hd, int D);

/* Debug/test: tokens [t0, t0+n) of a layer as the cache holds them now (any token stored, even
 * by a store not yet advanced): packed tokens dequantised, residual tokens as kept. K is
 * returned in the ORIGINAL key domain: multiplied back by the OScaR norm n_t and un-rotated
 * (H applied again), so it is directly comparable with the keys that were stored.
 * k, v: [n, n_kv_heads, head_dim] float32 host. CPU caches only. */
osc_status osc_kv_debug_dequant(const osc_kv *kv, int layer, int t0, int n, float *k, float *v);
/* Debug/test: the OScaR norm n_t of token t of a layer (1 for the modes without norm; NaN when
 * t is not stored). */
float osc_kv_debug_norm(const osc_kv *kv, int layer, int t);

/* ---- the paged pool (block modes: kivi2, kivi4, rot2, oscar2, oscar4) --------------------
 * Many sequences of different lengths share one memory pool: a page holds the packed part of
 * R = r_evict tokens of ALL layers (K codes, K params, V codes, V params, norms). A cache made
 * by osc_kv_new_in_pool has the whole osc_kv API above (store/attend/advance/truncate/debug,
 * same results as a cache of its own: bitwise on the CPU); it keeps its own full-precision
 * residual window (R tokens per layer) and a block table of its pages. A flush of a full window
 * writes into a page taken from the pool; a store that needs more pages than are free fails
 * with OSC_ERR_OOM ("KV pool full: N pages of R tokens in use") and leaves the cache unchanged;
 * osc_kv_truncate and osc_kv_free give pages back. Pages are taken at the start of a store, for
 * every flush that store will make (so the failing store is the first layer's, before any
 * layer changed). On CUDA the block table has a device copy, written only when a page is added.
 * docs/KVCACHE.md has the layout and the page accounting. Free every cache of a pool before the
 * pool. Not thread-safe (one thread drives the pool and all its caches). */
typedef struct osc_kv_pool osc_kv_pool;

/* p: the caches' parameters (n_ctx ignored); n_pages >= 1. OSC_ERR_UNSUPPORTED for the modes
 * without blocks (bf16, int8), OSC_ERR_OOM when the memory is not there. */
osc_status osc_kv_pool_new(const osc_kv_params *p, int n_pages, osc_kv_pool **out);
void osc_kv_pool_free(osc_kv_pool *pool);
int osc_kv_pool_pages(const osc_kv_pool *pool);      /* pages in the pool */
int osc_kv_pool_pages_free(const osc_kv_pool *pool); /* pages not held by any cache */
int osc_kv_pool_page_tokens(const osc_kv_pool *pool); /* = r_evict */
/* Bytes of one page, and of a pool of n_pages, on p->dev (0 for a mode without blocks). */
size_t osc_kv_pool_page_bytes(const osc_kv_params *p);
size_t osc_kv_pool_bytes_for(const osc_kv_params *p, int n_pages);
/* Bytes a pooled cache of p->n_ctx tokens holds outside the pool (its residual window, block
 * table, norms of the window), on p->dev plus host. osc_kv_bytes of a pooled cache returns it. */
size_t osc_kv_pool_seq_bytes(const osc_kv_params *p);
/* A cache of at most n_ctx tokens whose packed blocks live in the pool's pages. It takes no
 * page until its first flush. */
osc_status osc_kv_new_in_pool(osc_kv_pool *pool, int n_ctx, osc_kv **out);
/* Pages a cache holds now (0 for a cache outside a pool). */
int osc_kv_pages(const osc_kv *kv);

#endif
