/* kernels/cuda/launch.h: C entry points of the CUDA backend (implemented in the .cu files of kernels/cuda/
 * with extern "C" linkage). Only compiled/linked when OSC_HAVE_CUDA is defined.
 *
 * Op launchers: identical parameters to the osc_op_* functions in kernels/ops.h. kernels/ops.c
 * has already validated shapes, dtypes and devices (all tensors on OSC_DEV_CUDA) before calling,
 * so launchers only check what is backend-specific. Dtypes the launchers receive:
 *   embed:      table BF16 [V,D], ids I32 [S], out BF16 [S,D] (ids not range-checked on device)
 *   matmul:     x BF16 [M,K], w BF16 [N,K], bias BF16 [N] or NULL, out BF16 or F32 [M,N]
 *   rmsnorm:    x BF16 [R,D], w BF16 [D], out BF16 [R,D] (may alias x)
 *   layernorm:  x BF16 [R,D], w/b BF16 [D], out BF16 [R,D]
 *   rope:       x BF16 [S,H,Dh] in place, pos I32 [S] or [3,S] (M-RoPE); rope struct on host
 *   silu_mul, gelu, add, add_bias: BF16
 *   softmax:    BF16 or F32 [R,N] in place
 *   convert:    any of F32/BF16 -> F32/BF16 (same dtype = device copy)
 *   argmax:     x BF16 or F32 [R,N] -> out I32 [R]
 *   attention:  q/k/v/out BF16, fp32 softmax
 * Errors: OSC_ERR_DEVICE (via osc_error) on CUDA/cuBLAS failures.
 *
 * Streams: everything (ops and the runtime helpers below) runs on ONE library-wide CUDA stream,
 * so launches are ordered; memcpy helpers synchronise that stream as needed before returning
 * host-visible data (d2h returns only after the copy completed). */
#ifndef OSC_KERNELS_CUDA_LAUNCH_H
#define OSC_KERNELS_CUDA_LAUNCH_H
#include <stddef.h>
#include "../ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- runtime helpers (one library-wide stream) ---- */
int osc_cuda_available(void); /* 1 when a usable CUDA device is present, else 0 */
osc_status osc_cuda_malloc(void **p, size_t n);
void osc_cuda_free(void *p);
osc_status osc_cuda_memcpy_h2d(void *dst, const void *src, size_t n);
osc_status osc_cuda_memcpy_d2h(void *dst, const void *src, size_t n);
osc_status osc_cuda_memcpy_d2d(void *dst, const void *src, size_t n);
/* d0 <- s0 and d1 <- s1, n bytes each, device to device in one kernel launch (a decode step's
 * K and V rows: two cudaMemcpyAsync would cost two API calls and break the PDL chain) */
osc_status osc_cuda_copy_pair(void *d0, const void *s0, void *d1, const void *s1, size_t n);
osc_status osc_cuda_sync(void);
/* Programmatic dependent launch of the step kernels: 0 off, 1 on where the device and OSC_PDL
 * allow it, -1 back to that default. Launches already captured in CUDA graphs keep theirs. */
void osc_cuda_set_pdl(int on);
osc_status osc_cuda_mem_info(size_t *free_b, size_t *total_b);
/* Device time of the work queued between start and stop (CUDA events on the library stream);
 * stop waits for it. */
osc_status osc_cuda_timer_start(void);
osc_status osc_cuda_timer_stop(double *seconds);
/* Queue a kernel that keeps the library stream busy for `us` microseconds of device time (one
 * thread polling the global timer), so that work queued behind it starts only once the host
 * has finished launching it: a timer started after the hold measures device time alone, host
 * launch work excluded (nvbench's blocking-kernel method). 1 <= us <= 1e6. */
osc_status osc_cuda_hold(double us);

/* CUDA graphs of the library stream (the decode step, llm/model.c). begin: start capturing
 * (thread-local mode: the ops launched until end are recorded, not run); end: stop and
 * instantiate into *out (on error the capture is discarded and *out is NULL); launch: replay on
 * the stream (asynchronous, ordered with the other ops). Ops inside a capture must not
 * synchronise, allocate or copy from pageable host memory. */
typedef struct osc_cuda_graph osc_cuda_graph;
osc_status osc_cuda_graph_begin(void);
osc_status osc_cuda_graph_end(osc_cuda_graph **out);
osc_status osc_cuda_graph_launch(osc_cuda_graph *g);
void osc_cuda_graph_free(osc_cuda_graph *g);
/* copy on the stream without waiting (h2d from pageable memory is staged before returning) */
osc_status osc_cuda_memcpy_async(void *dst, const void *src, size_t n, int h2d);

/* Decode step with device-side tables (the graph path of llm/model.c), bf16 caches:
 * kv_append: row b of k/v [B, row] goes to row lens1[b] - 1 of tab[b] (keys) / tab[tab_stride + b]
 * (values); attention_decode_tab: q/out [B, Hq, D], sequence b attends to the first lens1[b]
 * rows of ktab[b]/vtab[b] ([T, Hkv, D]); part: nsplit partials, part_floats(B, ...) floats.
 * tab, lens1, part are device memory; nothing depends on host values at replay. */
int osc_cuda_decode_tab_ok(int Hq, int Hkv, int D);
int osc_cuda_decode_tab_splits(int B, int Hkv, int D);
size_t osc_cuda_decode_tab_part_floats(int B, int Hq, int Hkv, int D, int nsplit);
osc_status osc_cuda_kv_append(const void *k, const void *v, void *const *tab, int tab_stride, const int32_t *lens1,
                              int B, int row);
/* RoPE of the decode step's q [B, Hq, D] and k [B, Hkv, D] rows in place (row b at pos[b], or
 * pos[a * pos_stride + b] for M-RoPE axis a), then kv_append of the rotated k and of v: one
 * launch, the same values as osc_cuda_rope + osc_cuda_kv_append. Strides are elements between
 * rows b (multiples of 8); v rows 16-byte aligned. */
osc_status osc_cuda_rope_kv_append(void *q, void *k, const void *v, int64_t q_stride, int64_t k_stride,
                                   int64_t v_stride, const int32_t *pos, int pos_stride, const osc_rope *rope, int Hq,
                                   int Hkv, void *const *tab, int tab_stride, const int32_t *lens1, int B);
/* The decode-step state kept on the device between CUDA-graph steps: pos [n_pos_rows] rows of
 * pos_stride (columns 0..B-1) and lens1 [B] grow by one; ids [B] <- picked [B] when picked is
 * not NULL (the greedy ids of the step just run), so the next step needs no upload when it
 * continues from them. */
osc_status osc_cuda_step_advance(int32_t *pos, int n_pos_rows, int pos_stride, int32_t *lens1, int32_t *ids,
                                 const int32_t *picked, int B);
osc_status osc_cuda_attention_decode_tab(void *out, const void *q, const void *const *ktab, const void *const *vtab,
                                         const int32_t *lens1, int B, int Hq, int Hkv, int D, float scale,
                                         float *part, int nsplit);

/* ---- op launchers (same parameters as kernels/ops.h) ---- */
osc_status osc_cuda_embed(osc_tensor *out, const osc_tensor *table, const osc_tensor *ids);
osc_status osc_cuda_matmul(osc_tensor *out, const osc_tensor *x, const osc_tensor *w,
                           const osc_tensor *bias);
osc_status osc_cuda_rmsnorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w, float eps);
osc_status osc_cuda_add_rmsnorm(osc_tensor *x, const osc_tensor *d, osc_tensor *out, const osc_tensor *w, float eps);
osc_status osc_cuda_layernorm(osc_tensor *out, const osc_tensor *x, const osc_tensor *w,
                              const osc_tensor *b, float eps);
osc_status osc_cuda_rope(osc_tensor *x, const osc_tensor *pos, const osc_rope *rope);
/* out[M,F] = silu(x wg^T) * (x wu^T) in one GEMV when M <= 4, wu follows wg in memory and the
 * rows are 16-byte aligned; *done = 0 (nothing launched) otherwise */
osc_status osc_cuda_matmul_glu(osc_tensor *out, const osc_tensor *x, const osc_tensor *wg, const osc_tensor *wu,
                               int *done);
osc_status osc_cuda_silu_mul(osc_tensor *out, const osc_tensor *gate, const osc_tensor *up);
osc_status osc_cuda_gelu(osc_tensor *out, const osc_tensor *x);
osc_status osc_cuda_add(osc_tensor *out, const osc_tensor *a, const osc_tensor *b);
osc_status osc_cuda_add_bias(osc_tensor *x, const osc_tensor *bias);
osc_status osc_cuda_softmax(osc_tensor *x);
osc_status osc_cuda_convert(osc_tensor *out, const osc_tensor *in);
osc_status osc_cuda_argmax(osc_tensor *out, const osc_tensor *x);
osc_status osc_cuda_fill_uniform(osc_tensor *t, uint64_t seed, float lo, float hi);
osc_status osc_cuda_attention_decode_batch(osc_tensor *out, const osc_tensor *q, const osc_tensor *const *k,
                                          const osc_tensor *const *v, const int *lens, int B, float scale);
osc_status osc_cuda_attention(osc_tensor *out, const osc_tensor *q, const osc_tensor *k,
                              const osc_tensor *v, int64_t q_pos0, float scale, int causal);
osc_status osc_cuda_attention_varlen(osc_tensor *out, const osc_tensor *q, const osc_tensor *k, const osc_tensor *v,
                                     const int32_t *cu, int nseg, float scale, int causal);


/* 1-D convolution helpers (cuda_conv.cu): x/out BF16. */
osc_status osc_cuda_im2col1d(osc_tensor *out, const osc_tensor *x, int kernel, int stride, int pad);
osc_status osc_cuda_avgpool2_rows(osc_tensor *out, const osc_tensor *x);

#ifdef __cplusplus
}
#endif
#endif
