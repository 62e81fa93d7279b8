/* kernels/rope.h: filling an osc_rope (kernels/ops.h) from a model's rope configuration.
 * Pure host code, no allocation, thread-safe. */
#ifndef OSC_KERNELS_ROPE_H
#define OSC_KERNELS_ROPE_H
#include "ops.h"

#define OSC_ROPE_DEFAULT 0
#define OSC_ROPE_LLAMA3 1

/* Fills r for head_dim (even, head_dim/2 <= OSC_ROPE_MAX_HALF) and base theta.
 * Base: inv_freq[j] = 1 / theta^(fp32(2j)/fp32(head_dim)), computed as torch does in fp32
 * (the power is evaluated in double and rounded to float: within 1 ulp of torch's fp32 pow).
 * type OSC_ROPE_LLAMA3 applies transformers' _compute_llama3_parameters (factor,
 * low_freq_factor, high_freq_factor, orig_max_pos = original_max_position_embeddings), in fp32
 * arithmetic like the torch code; the other scaling arguments are ignored for the default type.
 * mrope_section: NULL for plain RoPE, else 3 section sizes (in frequencies, summing to
 * head_dim/2; e.g. {16,24,24}). attn_factor is set to 1.
 * Returns OSC_ERR_INVALID_ARG on a bad head_dim, theta or mrope_section (r is zeroed). */
osc_status osc_rope_init(osc_rope *r, int head_dim, double theta, int type, float factor,
                         float low_freq_factor, float high_freq_factor, int orig_max_pos,
                         const int *mrope_section);

#endif
