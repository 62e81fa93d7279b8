/* Token sampler: logits[n_vocab] (float32, host) -> next token id.
 *
 * Semantics follow HuggingFace transformers' logits processors, applied in HF's order:
 *   1. repetition penalty (RepetitionPenaltyLogitsProcessor): for each DISTINCT token id in the
 *      last repeat_last_n entries of the history (repeat_last_n <= 0: the whole history),
 *      logit < 0 ? logit * penalty : logit / penalty.
 *   2. temperature <= 0: greedy argmax of the penalised logits (first index on ties); stop here.
 *   3. temperature (TemperatureLogitsWarper): logits /= temperature.
 *   4. top_k (TopKLogitsWarper): keep every token whose logit >= the k-th largest logit (ties with
 *      the k-th value are kept, as HF does).
 *   5. top_p (TopPLogitsWarper): of what is left, keep the smallest set of most probable tokens
 *      whose cumulative probability reaches top_p (always at least one token).
 *   6. min_p (MinPLogitsWarper): of what is left, keep tokens with prob >= min_p * max prob.
 *   7. draw from the softmax of the kept logits with the sampler's own seeded RNG
 *      (xoshiro256**, seeded through splitmix64).
 * NaN logits are treated as -inf. Token ids in the history outside [0, n_vocab) are ignored.
 *
 * Ownership: osc_sampler_new allocates all scratch (O(n_vocab)) once; osc_sampler_sample never
 * allocates. Thread-safety: one sampler per thread (it owns mutable RNG state and scratch);
 * different samplers are independent. Determinism: the same params, seed and call sequence give
 * the same tokens.
 */
#ifndef OSC_LLM_SAMPLER_H
#define OSC_LLM_SAMPLER_H
#include <stdint.h>

#include "core/status.h"

typedef struct osc_sampler_params {
    float temperature;    /* <= 0: greedy */
    int top_k;            /* <= 0 or >= n_vocab: off */
    float top_p;          /* <= 0 or >= 1: off */
    float min_p;          /* <= 0: off; must be <= 1 */
    float repeat_penalty; /* 0 or 1: off; must not be negative */
    int repeat_last_n;    /* window of the history the penalty looks at; <= 0: whole history */
    uint64_t seed;
} osc_sampler_params;

typedef struct osc_sampler osc_sampler;

/* Greedy, no filters, no penalty, seed 0. */
osc_sampler_params osc_sampler_default_params(void);

/* Errors: OSC_ERR_INVALID_ARG (NULL p/out, n_vocab <= 0, NaN or out-of-range params),
 * OSC_ERR_OOM. *out is NULL on failure. */
osc_status osc_sampler_new(const osc_sampler_params *p, int n_vocab, osc_sampler **out);
void osc_sampler_free(osc_sampler *s); /* NULL is fine */

/* Pick the next token from logits[n_vocab]. history[n_history] = previous token ids (prompt +
 * generated), used only by the repetition penalty (may be NULL when n_history == 0).
 * logits are modified in place (penalty, temperature). No allocation. Returns a token id in
 * [0, n_vocab); if every logit is -inf/NaN it returns 0. */
int32_t osc_sampler_sample(osc_sampler *s, float *logits, const int32_t *history, int n_history);

/* Re-seed the RNG (e.g. per request) without reallocating. */
void osc_sampler_reseed(osc_sampler *s, uint64_t seed);

#endif
