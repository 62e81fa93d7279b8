/* The decoder LLM (Qwen2/Qwen2.5, Qwen3, Llama-3; the text model inside Qwen2.5-Omni/VL).
 *
 * osc_llm owns its weights: float32 host arrays on the CPU path, bf16 device memory on CUDA,
 * loaded once. osc_llm_ctx owns the scratch of one forward pass, sized at creation for up to
 * max_tokens rows; a forward with more rows is split by the caller (osc_llm_forward does it).
 * Thread-safety: one ctx per thread; the model is read-only after load.
 * Errors: loading names the file and the problem (missing tensor, wrong shape, bad config);
 * forward returns OSC_ERR_CONTEXT when a sequence would pass its cache size. */
#ifndef OSC_LLM_MODEL_H
#define OSC_LLM_MODEL_H
#include "../core/config.h"
#include "../core/tensor.h"
#include "../kvcache/kvcache.h"

typedef struct osc_llm osc_llm;
typedef struct osc_llm_ctx osc_llm_ctx;

osc_status osc_llm_load(const char *dir, osc_dev dev, osc_llm **out);

/* Where the loader reads weights from. Names are always the HuggingFace ones without the model
 * prefix ("embed_tokens.weight", "layers.3.self_attn.q_proj.weight", "norm.weight") plus
 * "lm_head.weight"; a source for another format (GGUF) maps them to its own names.
 * has: 1 if the tensor exists. read_f32: check the tensor has exactly shape[nd] (else a clear
 * OSC_ERR_FORMAT naming file and tensor) and convert it to float32 into dst.
 * read_bf16: optional (NULL, or OSC_ERR_UNSUPPORTED for a tensor not stored as bf16): the raw
 * bf16 values, used to upload without a float32 round trip. */
typedef struct osc_wsrc {
    void *ctx;
    const char *what; /* for messages: the path */
    int (*has)(void *ctx, const char *name);
    osc_status (*read_f32)(void *ctx, const char *name, int nd, const int64_t *shape, float *dst);
    osc_status (*read_bf16)(void *ctx, const char *name, int nd, const int64_t *shape, uint16_t *dst);
} osc_wsrc;
/* Load a decoder of config cfg from src (cfg is copied). */
osc_status osc_llm_load_src(const osc_llm_config *cfg, const osc_wsrc *src, osc_dev dev, osc_llm **out);
/* A model of the given shape with deterministic random weights (no checkpoint), for
 * benchmarks: U(-a, a) with a = sqrt(3 / fan_in) per weight, norms 1, biases small. */
osc_status osc_llm_new_random(const osc_llm_config *cfg, osc_dev dev, uint64_t seed, osc_llm **out);
void osc_llm_free(osc_llm *m);
const osc_llm_config *osc_llm_config_of(const osc_llm *m);
osc_dev osc_llm_device(const osc_llm *m);
osc_dtype osc_llm_act_dtype(const osc_llm *m);
size_t osc_llm_weight_bytes(const osc_llm *m);
const char *osc_llm_describe(const osc_llm *m);

/* Fold the per-head value Hadamard into W_v, b_v and W_o (oscar-kv.md step 5), once, in place:
 * the attention output then comes out rotated and W_o undoes it, so the rotating cache modes
 * quantise rotated values with no per-token work. The model's outputs are unchanged up to
 * rounding (bf16 weights are re-rounded on CUDA). Needs a power-of-two head_dim. */
osc_status osc_llm_fold_v_rotation(osc_llm *m);
int osc_llm_v_rotated(const osc_llm *m);

/* A KV cache shaped for this model. mode NULL = "bf16". */
osc_status osc_llm_kv_new(const osc_llm *m, const char *mode, int n_ctx, osc_kv **out);

osc_status osc_llm_ctx_new(osc_llm *m, int max_tokens, osc_llm_ctx **out);
void osc_llm_ctx_free(osc_llm_ctx *c);
int osc_llm_ctx_max_tokens(const osc_llm_ctx *c);

/* Analysis probe (oscar kvstat): called in every forward right after a layer's attention, with
 * that chunk's rows: q [N, Hq, hd] after q-norm and RoPE, k and v [N, Hkv, hd] as given to the
 * cache (k after RoPE), att [N, Hq, hd] the attention output before o_proj (in the rotated value
 * basis when the V rotation is folded), seq_start[n_seq+1] chunk-relative row starts, kv the
 * caches (already holding these rows, not yet advanced), scale the softmax scale. Tensors live
 * on the model's device and are valid only during the call. A non-OK return stops the forward
 * with that status. NULL fn removes the probe. */
typedef osc_status (*osc_llm_probe_fn)(void *user, int layer, int n_seq, const int *seq_start, osc_kv **kv,
                                       const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                                       const osc_tensor *att, float scale);
void osc_llm_ctx_set_probe(osc_llm_ctx *c, osc_llm_probe_fn fn, void *user);

/* One forward over a batch of sequences.
 * tokens[n_tokens]: the new tokens of all sequences back to back; sequence s owns rows
 * [seq_start[s], seq_start[s+1]) and appends them to kv[s].
 * pos: NULL for positions kv_len + i; else int32 [n_tokens] (or [3][n_tokens] for M-RoPE
 * models: three planes t, h, w) absolute positions.
 * logits (host, float32): all_logits = 0: one row per sequence (its last token),
 * [n_seq, vocab]; all_logits = 1: a row per token [n_tokens, vocab]. NULL: no logits.
 * Multimodal input (images, audio): n_mm rows of mm_embeds [n_mm, hidden] (float32 host, or a
 * tensor on the model's device in any float dtype) replace the token embeddings of rows
 * mm_rows[0..n_mm) (indices into tokens, ascending); the token ids of those rows (the pad
 * tokens) must still be valid ids. */
typedef struct osc_llm_batch {
    int n_seq;
    const int *seq_start;
    const int32_t *tokens;
    const int32_t *pos;
    osc_kv **kv;
    int all_logits;
    int n_mm;
    const int32_t *mm_rows;
    const osc_tensor *mm_embeds;
} osc_llm_batch;
osc_status osc_llm_forward(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, float *logits);
/* The same forward (all_logits must be 0), but the greedy pick of each sequence is made on the
 * model's device and only ids[n_seq] come back (argmax of the last row's logits, first index on
 * ties, as a host argmax of osc_llm_forward's logits gives). */
osc_status osc_llm_forward_greedy(osc_llm *m, osc_llm_ctx *c, const osc_llm_batch *b, int32_t *ids);

/* CUDA: a decode step (one token per sequence, at most 256 sequences, every cache "bf16", no
 * multimodal rows, no probe) is replayed from a CUDA graph captured once per batch size and
 * output kind (logits / greedy ids); the first step of each batch size runs without one. Set
 * OSC_CUDA_GRAPHS=0 in the environment to disable. Counts for tests and benchmarks: graphs
 * captured, steps replayed, steps that ran the same path eagerly. All 0 on the CPU. */
void osc_llm_ctx_graph_stats(const osc_llm_ctx *c, int *captured, long *replayed, long *eager);
/* Host-to-device traffic of those graph steps: uploads of the whole step state (first step,
 * new batch size, positions that do not continue) and of the sampled ids alone. */
void osc_llm_ctx_graph_uploads(const osc_llm_ctx *c, long *full, long *ids);

#endif
