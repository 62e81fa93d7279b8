/* Generation of several sequences at once: each prompt is prefilled on its own, then all
 * unfinished sequences decode together, one token each per forward (one batched GEMM per
 * weight). Each request brings its own KV cache and sampler. */
#ifndef OSC_LLM_GENERATE_H
#define OSC_LLM_GENERATE_H
#include "model.h"
#include "sampler.h"

typedef struct osc_gen_request {
    const int32_t *prompt;   /* in: prompt ids (appended to whatever kv already holds) */
    int n_prompt;
    int max_new;             /* in: most tokens to generate */
    osc_kv *kv;              /* in: this sequence's cache */
    osc_sampler *sampler;    /* in: NULL = greedy */
    int32_t *out;            /* in: room for max_new ids; out: generated ids (a stop token included) */
    int n_out;               /* out */
    int stopped;             /* out: 1 = a stop token, 2 = context full, 0 = max_new reached */
} osc_gen_request;

/* stop[n_stop]: ids that end a sequence (kept as its last output). */
osc_status osc_generate_batch(osc_llm *m, osc_llm_ctx *c, osc_gen_request *r, int n,
                              const int32_t *stop, int n_stop);

#endif
