/* kernels/cpu/cpu.h: the CPU (float32 reference) backend of kernels/ops.h.
 * Each osc_cpu_<op> takes the same arguments as osc_op_<op> and assumes kernels/ops.c has
 * validated them: all tensors on OSC_DEV_CPU, activations and weights OSC_F32, ids/positions
 * OSC_I32, shapes as documented in ops.h. Parallel with OpenMP (osc_cpu_threads() threads);
 * GEMM through OpenBLAS when OSC_HAVE_BLAS. No allocation; thread-safe for distinct outputs. */
#ifndef OSC_KERNELS_CPU_H
#define OSC_KERNELS_CPU_H
#include "../ops.h"

/* Thread count the CPU ops use (osc_cpu_set_threads; default: all cores). */
int osc_cpu_threads(void);

osc_status osc_cpu_embed(osc_tensor *out, const osc_tensor *table, const osc_tensor *ids);
osc_status osc_cpu_matmul(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *bias);
osc_status osc_cpu_rmsnorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, float eps);
osc_status osc_cpu_layernorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, const osc_tensor *b,
                             float eps);
osc_status osc_cpu_rope(osc_tensor *x, const osc_tensor *pos, const osc_rope *rope);
osc_status osc_cpu_silu_mul(osc_tensor *out, const osc_tensor *gate, const osc_tensor *up);
osc_status osc_cpu_gelu(osc_tensor *out, const osc_tensor *x);
osc_status osc_cpu_add(osc_tensor *out, const osc_tensor *a, const osc_tensor *b);
osc_status osc_cpu_add_bias(osc_tensor *x, const osc_tensor *bias);
osc_status osc_cpu_softmax(osc_tensor *x);
osc_status osc_cpu_convert(osc_tensor *out, const osc_tensor *in);
osc_status osc_cpu_argmax(osc_tensor *out, const osc_tensor *x);
osc_status osc_cpu_fill_uniform(osc_tensor *t, uint64_t seed, float lo, float hi);
osc_status osc_cpu_attention(osc_tensor *out, const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                             int64_t q_pos0, float scale, int causal);

#endif
