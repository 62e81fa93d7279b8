/* A decoder from one GGUF file (llama.cpp's format): the config from its metadata and the weights
 * through an osc_wsrc that maps our (HuggingFace) tensor names to llama.cpp's.
 *
 * Architectures: general.architecture "llama" (Llama 2/3, SmolLM, Mistral-style dense models),
 * "qwen2" (q/k/v biases) and "qwen3" (q/k RMSNorm). Config keys ({arch} = the architecture):
 *   {arch}.block_count, embedding_length, feed_forward_length, attention.head_count,
 *   attention.layer_norm_rms_epsilon (required); attention.head_count_kv (default head_count),
 *   attention.key_length (default embedding_length / head_count; value_length must match),
 *   rope.freq_base (default 10000), rope.dimension_count (must equal the head size: partial
 *   rotary is not supported), context_length (default 2048), rope.scaling.type (only "none");
 *   vocab size = the length of tokenizer.ggml.tokens (else {arch}.vocab_size, else the rows of
 *   token_embd.weight) and must match token_embd.weight; tied embeddings when output.weight is
 *   absent; bos/eos/padding from tokenizer.ggml.*_token_id, eos plus eot/eom as stop ids.
 * Llama 3 rope scaling comes as a rope_freqs.weight tensor (one divisor per frequency); it is
 * turned back into the equivalent llama3 scaling parameters and checked against every divisor
 * (OSC_ERR_UNSUPPORTED when no llama3 parameters reproduce them).
 *
 * Weights are dequantized on load (core/gguf.h lists the types): float32 on the CPU, bf16 on
 * CUDA. llama.cpp's converter permutes the rows of the llama architecture's Q and K projections
 * (and biases) so that its interleaved rope (pairs 2i, 2i+1) equals HF's rotate-half rope (pairs
 * i, i + d/2); the loader undoes it: GGUF row h*d + 2j + i is HF row h*d + i*d/2 + j. qwen2/qwen3
 * files are not permuted (llama.cpp uses rotate-half rope for them). GGUF dims (ne) are the
 * reverse of HF shapes.
 *
 * Errors name the file: OSC_ERR_FORMAT (missing key or tensor, wrong shape), OSC_ERR_UNSUPPORTED
 * (architecture, tensor type, rope variant). */
#ifndef OSC_LLM_GGUF_LOAD_H
#define OSC_LLM_GGUF_LOAD_H
#include "../core/config.h"
#include "../core/gguf.h"
#include "model.h"

/* The decoder config from an open file's metadata, validated (osc_llm_config_validate). */
osc_status osc_gguf_llm_config(const osc_gguf *g, osc_llm_config *cfg);

/* The weight source over an open file and its config (both must outlive the source): has /
 * read_f32 / read_bf16 of our weight names, shape-checked, dequantized, Q/K rows unpermuted. */
typedef struct osc_gguf_weights {
    const osc_gguf *g;
    const osc_llm_config *cfg;
} osc_gguf_weights;
osc_wsrc osc_gguf_wsrc(osc_gguf_weights *w);

/* Open path, read the config and load the weights onto dev. */
osc_status osc_llm_load_gguf(const char *path, osc_dev dev, osc_llm **out);

#endif
