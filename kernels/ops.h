/* kernels/ops.h: one device-agnostic call per op.
 *
 * Every op takes osc_tensor views, checks dtypes and shapes, and dispatches on the device of
 * its output: the files in kernels/cpu (float32 reference, OpenBLAS + OpenMP) or kernels/cuda
 * (bf16 storage, fp32 accumulation) through C launchers. All tensors of one call must live on
 * the same device. Tensors are contiguous, row-major, ne[0] outermost. Ops never allocate
 * (except one-time library handles such as the cuBLAS handle) and never print.
 * Errors: OSC_ERR_INVALID_ARG for shape/dtype/device mismatches (message names the op),
 * OSC_ERR_UNSUPPORTED when the device's backend is not built in, OSC_ERR_DEVICE on CUDA errors.
 *
 * Dtypes: CPU ops work on OSC_F32 activations and OSC_F32 weights. CUDA ops work on OSC_BF16
 * activations/weights unless stated; ids and positions are OSC_I32 on the same device.
 */
#ifndef OSC_KERNELS_OPS_H
#define OSC_KERNELS_OPS_H
#include "../core/tensor.h"

/* Rotary embedding description, shared by all RoPE variants (default, llama3-scaled, M-RoPE).
 * inv_freq[j], j < head_dim/2, already includes any frequency scaling (llama3). Dims d and
 * d + head_dim/2 are rotated together (NeoX "rotate_half" convention).
 * mrope: when mrope_section[0] > 0, frequency j takes its position from axis 0 (t) for
 * j < s0, axis 1 (h) for j < s0+s1, axis 2 (w) otherwise; positions are then [3, S].
 * attn_factor multiplies cos and sin (1 for the models we support). */
#define OSC_ROPE_MAX_HALF 256
typedef struct osc_rope {
    int head_dim;
    int mrope_section[3];
    float attn_factor;
    float inv_freq[OSC_ROPE_MAX_HALF];
} osc_rope;

/* Process-wide settings of the CPU backend. n <= 0: all cores. */
void osc_cpu_set_threads(int n);
int osc_cpu_get_threads(void);

/* out[S,D] = table[ids[s], :]. ids: I32 [S]; an id outside [0,V) is an error (CPU checks). */
osc_status osc_op_embed(osc_tensor *out, const osc_tensor *table, const osc_tensor *ids);

/* out[M,N] = x[M,K] * w[N,K]^T (+ bias[N] if bias != NULL). */
osc_status osc_op_matmul(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *bias);

/* The gated MLP input: out[M,F] = silu(x w_gate^T) * (x w_up^T), each product rounded to the
 * activation dtype first (matmul, matmul, silu_mul). up [M,F] is scratch (it may hold x w_up^T
 * afterwards). On CUDA, when w_up directly follows w_gate in memory (stacked [w_gate; w_up]) and
 * M <= 4, one kernel computes both rows and the product (same result bit for bit). out and up
 * must not alias x, the weights or each other. */
osc_status osc_op_matmul_glu(osc_tensor *out, osc_tensor *up, const osc_tensor *x, const osc_tensor *w_gate,
                             const osc_tensor *w_up);

/* Row-wise RMSNorm over the last dim D: out = w * (x * rsqrt(mean(x^2) + eps)), statistics in
 * fp32; on bf16 the normalised value is rounded to bf16 before the weight multiply (as HF).
 * x and out are [R, D] (any leading shape flattened into R); out may alias x. */
osc_status osc_op_rmsnorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, float eps);

/* x = x + d (in place, rounded to x's dtype), then out = rmsnorm(x) * w as osc_op_rmsnorm: the
 * residual add and the next norm of a decoder layer in one pass (one launch on CUDA; the CPU
 * runs the two ops). x, d, out [R, D]; out must not alias x or d. */
osc_status osc_op_add_rmsnorm(osc_tensor *x, const osc_tensor *d, osc_tensor *out, const osc_tensor *w, float eps);

/* LayerNorm with weight and bias (encoders): out = (x - mean) * rsqrt(var + eps) * w + b. */
osc_status osc_op_layernorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w,
                            const osc_tensor *b, float eps);

/* In-place rotary embedding of x[S, H, head_dim]. pos: I32 [S] (plain) or [3, S] (M-RoPE).
 * cos/sin are computed in fp32 from pos * inv_freq (on bf16 they are rounded to bf16). */
osc_status osc_op_rope(osc_tensor *x, const osc_tensor *pos, const osc_rope *rope);

/* out[R,F] = silu(gate[R,F]) * up[R,F]. out may alias gate. */
osc_status osc_op_silu_mul(osc_tensor *out, const osc_tensor *gate, const osc_tensor *up);
/* out = gelu_erf(x), exact erf form; out may alias x. */
osc_status osc_op_gelu(osc_tensor *out, const osc_tensor *x);
/* out = a + b, same shapes; out may alias a or b. */
osc_status osc_op_add(osc_tensor *out, const osc_tensor *a, const osc_tensor *b);
/* x[R,N] += bias[N] in place. */
osc_status osc_op_add_bias(osc_tensor *x, const osc_tensor *bias);
/* Row-wise softmax over the last dim, in place, fp32 statistics. */
osc_status osc_op_softmax(osc_tensor *x);
/* dtype conversion / copy between same-shaped tensors on the same device (F32 <-> BF16, or same). */
osc_status osc_op_convert(osc_tensor *out, const osc_tensor *in);
/* out[R] (I32) = argmax over the last dim of x[R,N] (first index on ties). */
osc_status osc_op_argmax(osc_tensor *out, const osc_tensor *x);

/* Fill t (F32 or BF16) with deterministic pseudo-random values uniform in [lo, hi): element i
 * gets a value from a counter-based hash of (seed, i), so CPU and CUDA give the same numbers
 * (before rounding to the tensor's dtype). lo == hi fills a constant. */
osc_status osc_op_fill_uniform(osc_tensor *t, uint64_t seed, float lo, float hi);

/* Causal GQA attention of one sequence.
 * q[S,Hq,D], k[T,Hkv,D], v[T,Hkv,D] -> out[S,Hq,D]; Hq % Hkv == 0; query head h uses kv head
 * h / (Hq/Hkv). Query i sits at absolute position q_pos0 + i and sees keys j <= q_pos0 + i
 * (q_pos0 + S <= T). scale multiplies q.k; softmax in fp32. causal = 0: every query sees all T
 * keys (encoders). */
/* Decode attention of B sequences in one call: row b of q [B, Hq, D] attends causally to the
 * first lens[b] rows of its own k[b], v[b] ([T_b >= lens[b], Hkv, D], separate buffers, same
 * Hkv and D); out [B, Hq, D]. On CUDA one launch for all sequences (head_dim 64/128/256, up to 8
 * query heads per KV head; other shapes loop); on the CPU a loop of osc_op_attention. */
osc_status osc_op_attention_decode_batch(osc_tensor *out, const osc_tensor *q, const osc_tensor *const *k,
                                         const osc_tensor *const *v, const int *lens, int B, float scale);
osc_status osc_op_attention(osc_tensor *out, const osc_tensor *q, const osc_tensor *k,
                            const osc_tensor *v, int64_t q_pos0, float scale, int causal);
/* Attention inside segments of packed rows (cu_seqlens): rows [cu[s], cu[s+1]) of q [N,Hq,D]
 * attend to the same rows of k, v [N,Hkv,D] (causal: row i of a segment sees its rows <= i),
 * out [N,Hq,D]. cu is a host array of nseg+1 nondecreasing offsets, cu[0] >= 0, cu[nseg] <= N
 * (empty segments allowed; rows outside every segment are left untouched). Equals a loop of
 * osc_op_attention over the segments (the CPU path is that loop); on CUDA one launch for up to
 * 65535 segments. */
osc_status osc_op_attention_varlen(osc_tensor *out, const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                                   const int32_t *cu, int nseg, float scale, int causal);


/* ---- 1-D convolution helpers (audio encoder; kernels/cpu/cpu_conv.c, kernels/cuda/cuda_conv.cu) ----
 * im2col of a 1-D convolution over time: x[T_in, C] is time-major (rows = frames);
 * out[T_out, C*kernel] with out[t, c*kernel + k] = x[t*stride + k - pad, c], zero outside [0, T_in).
 * T_out must equal (T_in + 2*pad - kernel) / stride + 1. A torch Conv1d with weight [C_out, C, kernel]
 * is then osc_op_matmul(y[T_out, C_out], out, weight viewed as [C_out, C*kernel], bias). */
osc_status osc_op_im2col1d(osc_tensor *out, const osc_tensor *x, int kernel, int stride, int pad);
/* AvgPool1d(kernel 2, stride 2) over rows: out[i, :] = (x[2i, :] + x[2i+1, :]) / 2 for x[R, D] and
 * out[R/2, D] (an odd last row of x is dropped). out must not alias x. */
osc_status osc_op_avgpool2_rows(osc_tensor *out, const osc_tensor *x);

#endif
