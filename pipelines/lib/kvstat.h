/* pipelines/lib/kvstat.h: KV-cache fidelity report (`oscar kvstat`, docs/KVSTAT.md).
 *
 * For one token sequence (text, or text interleaved with image/audio/video embeddings) this
 * measures, for every KV cache mode, how far the model drifts from the bf16 (unquantised) cache:
 *   - per layer, the relative L2 error of the attention output computed over a SHADOW cache of
 *     that mode, fed by the probe (osc_llm_ctx_set_probe) with exactly the k/v the reference
 *     model produced, so every layer sees identical inputs (no error accumulation);
 *   - end to end, the logit KL(bf16 || mode), top-1 agreement and next-token NLL, each mode
 *     running its own cache through the whole model on the same tokens;
 *   - per layer and token, the L2 norm of the key over all KV heads (after RoPE, as the cache
 *     sees it: the OScaR n_t of oscar-kv.md step 2, which the Hadamard does not change), with
 *     statistics per token kind (Token Norm Imbalance).
 * Teacher forcing: the first T - E tokens are prefilled in one forward (chunked by the scratch
 * size), the last E are fed one per forward; only these E decode steps are scored.
 *
 * Side effect: when a rotating mode (rot2, oscar2, oscar4) is requested and the model's value
 * rotation is not folded yet, the run folds it (osc_llm_fold_v_rotation) after the non-rotating
 * modes are done; the model stays folded (its outputs are unchanged up to rounding).
 * Shadow caches always live on the host in float32 (the quantised modes are CPU-only for now);
 * tensors from a CUDA model are downloaded. Memory: (modes + 1) caches of n_ctx tokens plus
 * E x vocab floats of reference logits.
 * Not thread-safe for one model (it runs forwards on it). Errors: OSC_ERR_INVALID_ARG (bad
 * input or parameters, unknown mode), OSC_ERR_OOM, and whatever a forward returns. A mode that
 * cannot run on this model (e.g. head_dim 16 for the quantised modes) is not an error: its
 * att_ok / e2e_ok is 0 with the reason in its message. */
#ifndef OSC_PIPELINES_KVSTAT_H
#define OSC_PIPELINES_KVSTAT_H
#include <stdint.h>

#include "core/tensor.h"
#include "llm/model.h"

typedef enum osc_tok_kind {
    OSC_TOK_TEXT = 0,
    OSC_TOK_IMAGE,
    OSC_TOK_AUDIO,
    OSC_TOK_VIDEO,
    OSC_TOK_SINK, /* the first n_sink tokens of the sequence, whatever their modality */
    OSC_TOK_KINDS
} osc_tok_kind;
const char *osc_tok_kind_name(int kind); /* "text", "image", "audio", "video", "sink" */

#define OSC_KVSTAT_MAX_MODES 8
#define OSC_KVSTAT_NPCT 5
extern const double osc_kvstat_pcts[OSC_KVSTAT_NPCT]; /* 5, 25, 50, 75, 95 */

typedef struct osc_kvstat_params {
    const char *modes; /* comma-separated cache modes; NULL = all (osc_kv_modes()) */
    int n_eval;        /* E: decode steps scored (default 64); clipped to n_tokens */
    int n_ctx;         /* cache size; 0 = n_tokens; must be >= n_tokens */
    int r_evict;       /* residual window of the block modes; 0 = the cache default (256) */
    int n_sink;        /* the first n_sink tokens count as "sink" (default 1; 0 = none) */
    int max_tokens;    /* forward scratch rows, i.e. prefill chunk (default 512) */
} osc_kvstat_params;
osc_kvstat_params osc_kvstat_default_params(void);

typedef struct osc_kvstat_input {
    int n_tokens;
    const int32_t *tokens;      /* [n_tokens] */
    const int32_t *pos;         /* NULL (positions 0..T-1), or [T] / [3][T] for M-RoPE, as osc_llm_batch */
    int n_mm;                   /* multimodal rows, as osc_llm_batch: ascending indices into tokens */
    const int32_t *mm_rows;     /* [n_mm] */
    const osc_tensor *mm_embeds;/* [n_mm, hidden], host float32 or on the model's device */
    const uint8_t *kinds;       /* [n_tokens] osc_tok_kind per token; NULL = all text */
} osc_kvstat_input;

typedef struct osc_kvstat_kstats {
    int count;
    double mean, min, max;
    double pct[OSC_KVSTAT_NPCT]; /* linear interpolation between order statistics */
} osc_kvstat_kstats;

typedef struct osc_kvstat_mode {
    char name[16];
    int rotates;
    double bits_per_element;     /* packed storage per K/V element (osc_kv_bits_per_element) */
    int quantized_tokens;        /* older tokens read quantised at the last decode step */
    /* per-layer attention error over the E decode steps (shadow cache, identical inputs) */
    int att_ok;
    char att_msg[256];
    double *att_err;             /* [L]: sqrt(sum_steps ||o - o_ref||^2 / sum_steps ||o_ref||^2) */
    double *att_err_step_max;    /* [L]: largest single-step relative error */
    double att_err_mean, att_err_max; /* over layers */
    /* end to end over the E decode steps */
    int e2e_ok;
    char e2e_msg[256];
    double *kl;                  /* [E] KL(softmax(ref) || softmax(mode)) in nats */
    uint8_t *top1;               /* [E] 1 when the argmax agrees with the reference */
    double kl_mean, kl_max, top1_rate;
    double nll_mean;             /* mean NLL (nats) of the actual next token, E-1 positions; NaN if none */
} osc_kvstat_mode;

typedef struct osc_kvstat_result {
    char model[256];
    int n_layers, n_kv_heads, n_heads, head_dim, vocab;
    int n_tokens, n_prefill, n_eval, n_ctx, r_evict, n_sink;
    int v_rotated_at_entry;      /* the model came in folded: non-rotating e2e runs see rotated V */
    int folded_here;             /* this run folded the value rotation */
    double fold_kl_mean;         /* mean KL(bf16 before fold || bf16 after fold); NaN if no fold */
    double ref_nll_mean;         /* the bf16 reference's next-token NLL; NaN if E < 2 */
    float *key_norm;             /* [L][T] */
    uint8_t *kind;               /* [T] effective kinds (sink applied) */
    osc_kvstat_kstats *kstats;   /* [L][OSC_TOK_KINDS] (count 0: kind absent) */
    int n_modes;
    osc_kvstat_mode modes[OSC_KVSTAT_MAX_MODES];
} osc_kvstat_result;

osc_status osc_kvstat_run(osc_llm *m, const osc_kvstat_input *in, const osc_kvstat_params *p,
                          osc_kvstat_result **out);
void osc_kvstat_free(osc_kvstat_result *r); /* NULL is fine */

/* Everything in the result as a cJSON object (caller deletes); NULL when out of memory.
 * Non-finite numbers become null. Returned as void * so this header needs no cJSON. */
void *osc_kvstat_to_json(const osc_kvstat_result *r);

/* Two-panel PNG (needs libpng): top, per-token key norm vs position at `layer` (< 0: the median
 * layer n_layers / 2), one colour per kind; bottom, per-layer attention error per mode.
 * Size OSC_KVSTAT_PNG_W x OSC_KVSTAT_PNG_H. */
#define OSC_KVSTAT_PNG_W 1000
#define OSC_KVSTAT_PNG_H 860
osc_status osc_kvstat_plot(const osc_kvstat_result *r, int layer, const char *png_path);
uint32_t osc_kvstat_kind_color(int kind);
uint32_t osc_kvstat_mode_color(const char *mode);

/* Helpers (exposed for tests). */
/* KL(softmax(ref) || softmax(x)) over n logits, in nats, computed in double with log-softmax.
 * NaN in the input gives +inf. */
double osc_kvstat_kl(const float *ref, const float *x, int n);
/* ||x - ref|| / ||ref||; 0 when both are all-zero, +inf when only ref is, +inf on NaN. */
double osc_kvstat_rel_l2(const float *x, const float *ref, int64_t n);
/* Statistics of v[0..n) (sorted in place). */
void osc_kvstat_stats(float *v, int n, osc_kvstat_kstats *st);

#endif
