/* kernels/cuda/kvquant_launch.h: CUDA kernels of the OScaR / KIVI 2- and 4-bit KV cache
 * (kernels/cuda/cuda_kvquant.cu), as C launchers on raw device pointers. Only compiled/linked
 * when OSC_HAVE_CUDA is defined. Everything runs on the library stream (osc_cu_stream), so the
 * launches are ordered with every other op; nothing here synchronises.
 *
 * Device layout of ONE layer of ONE sequence's quantised part (n_tok tokens, n_tok % 32 == 0,
 * n_groups = n_tok / 32; bits = 2 or 4; hd a power of two, 128 or 256 for attention, 32..512
 * for pack). It is kvcache/kv_quant.h's per-block layout, blocks stored back to back:
 *   kq: u32  [n_groups][Hkv][bits][hd]   K codes of one (group of 32 tokens, kv head) = one
 *                                         osc_kvq_quant_k_group block (word w of channel c holds
 *                                         tokens 32/bits*w .. +32/bits-1, code of token j of the
 *                                         word at bits bits*(j % (32/bits)))
 *   kp: fp16 [n_groups][Hkv][hd][2]      (scale, zero) per channel of that block
 *   vq: u32  [n_tok][Hkv][hd*bits/32]    V codes of one (token, kv head) = osc_kvq_quant_v_row
 *   vp: fp16 [n_tok][Hkv][hd/32][2]      (scale, zero) per group of 32 channels
 *   kn: f32  [n_tok]                     OScaR token norm n_t over all KV heads of the rotated
 *                                         key (norm_scale); 1.0 when norm_scale == 0
 * Except at 2 bits and hd = 128 (oscar2 / kivi2 / rot2 on every model we load): there kq and
 * vq hold the same codes in fragment order (kv_quant.h osc_kvq_frag_k / _v, converters
 * osc_kvq_frag_k_blocks / _v_groups), 256 words per (group, kv head) for K and for V alike:
 *   kq: u32  [n_groups][Hkv][256]        vq: u32 [n_groups][Hkv][256]
 * (the same bytes per group as above; kp, vp, kn unchanged).
 * Dequantisation: x_hat = code * scale + zero. Keys hold k_hat = (H k) / n_t (H = Sylvester
 * Walsh-Hadamard / sqrt(hd) when rotate, identity otherwise; n_t = 1 when !norm_scale).
 * Bytes per token per kv head at hd = 128, 2 bits: 32 (K codes) + 16 (K params, amortised)
 * + 32 (V codes) + 16 (V params) + 4 / Hkv (norm). */
#ifndef OSC_KERNELS_CUDA_KVQUANT_LAUNCH_H
#define OSC_KERNELS_CUDA_KVQUANT_LAUNCH_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "../../core/status.h"

/* Bytes of each array above for n_tok tokens (n_tok % 32 == 0). */
size_t osc_kvq_bytes_kq(int n_tok, int Hkv, int hd, int bits);
size_t osc_kvq_bytes_kp(int n_tok, int Hkv, int hd);
size_t osc_kvq_bytes_vq(int n_tok, int Hkv, int hd, int bits);
size_t osc_kvq_bytes_vp(int n_tok, int Hkv, int hd);

/* Quantise and pack n_tok tokens (n_tok % 32 == 0).
 *   k: bf16 [n_tok][Hkv][hd] keys after RoPE (NOT rotated); v: bf16 [n_tok][Hkv][hd].
 *   rotate: apply H per head to the keys; norm_scale: divide each token's (rotated) key by its
 *   norm over all KV heads and store the norm in kn (else kn = 1).
 *   Outputs as in the layout above; codes and params are bit-identical to kv_quant.c on the
 *   same bf16 inputs (up to ties at fp32 rounding of the norm: at hd = 128 the norm comes from
 *   the unrotated key, ||H k / sqrt(hd)|| = ||k||, within an fp32 ulp of kv_quant.c's). */
osc_status osc_cuda_kv_pack(const void *k, const void *v, int n_tok, int Hkv, int hd, int bits, int rotate,
                            int norm_scale, uint32_t *kq, uint16_t *kp, uint32_t *vq, uint16_t *vp, float *kn);

/* osc_cuda_kv_pack writing paged storage (osc_kvq_pages below; NULL = contiguous): the n_tok
 * tokens become packed tokens t_first .. t_first + n_tok - 1 of the sequence (t_first % 32 ==
 * 0), each group of 32 into group (t / 32) % gpp of page bt[(t / 32) / gpp]; kq..kn are the
 * page-0 pointers. One launch however many pages it spans. */
struct osc_kvq_pages;
osc_status osc_cuda_kv_pack_paged(const void *k, const void *v, int n_tok, int Hkv, int hd, int bits, int rotate,
                                  int norm_scale, uint32_t *kq, uint16_t *kp, uint32_t *vq, uint16_t *vp, float *kn,
                                  const struct osc_kvq_pages *pages, int t_first);

/* One decode step (one query token) over the quantised part plus a full-precision residual.
 *   out: bf16 [Hq][hd]; q: bf16 [Hq][hd] after RoPE, not rotated (rotated inside when rotate);
 *   Hq % Hkv == 0, Hq / Hkv <= 8; hd in {128, 256}.
 *   kq/kp/vq/vp/kn: n_quant tokens (n_quant % 32 == 0; may be 0, pointers then unused).
 *   rk: bf16 [n_res][Hkv][hd] residual keys, already rotated and divided by their norm when
 *   rotate/norm_scale; rv: bf16 [n_res][Hkv][hd]; rn: f32 [n_res] their norms or NULL (= 1).
 *   Logits: s_t = n_t * (q_rot . k_hat_t) * scale, softmax in fp32. With no keys at all the
 *   output is zero. Uses the library's split-K scratch (osc_cu_scratch). */
osc_status osc_cuda_kv_decode_attn(void *out, const void *q, int Hq, int Hkv, int hd, int bits, int rotate,
                                   int norm_scale, const uint32_t *kq, const uint16_t *kp, const uint32_t *vq,
                                   const uint16_t *vp, const float *kn, int n_quant, const void *rk,
                                   const void *rv, const float *rn, int n_res, float scale);

/* As osc_cuda_kv_decode_attn; res_raw = 1: the residual keys are raw (after RoPE, neither
 * rotated nor normalised; rn ignored), so they are scored against the unrotated query. The KV
 * cache keeps its residual window raw. */
osc_status osc_cuda_kv_decode_attn_ex(void *out, const void *q, int Hq, int Hkv, int hd, int bits, int rotate,
                                      int norm_scale, const uint32_t *kq, const uint16_t *kp, const uint32_t *vq,
                                      const uint16_t *vp, const float *kn, int n_quant, const void *rk,
                                      const void *rv, const float *rn, int n_res, float scale, int res_raw);

/* Paged addressing (the KV page pool, kvcache/kv_internal.h): the packed arrays of a sequence
 * are split into pages of gpp groups (32 * gpp tokens); group g is group g % gpp of page
 * bt[g / gpp], in the layout above with n_tok = 32 * gpp. The kq/kp/vq/vp/kn pointers given
 * with a table are those of page 0 (of the layer); page p's are page_bytes bytes further
 * (page_bytes % 16 == 0, so the 16-byte loads stay aligned). bt: int32 device array, read by
 * the kernels. A NULL osc_kvq_pages, or bt NULL, is the contiguous layout. */
typedef struct osc_kvq_pages {
    const int *bt;
    int gpp;
    long long page_bytes;
} osc_kvq_pages;

/* osc_cuda_kv_decode_attn_ex over a paged packed part (pages may be NULL: contiguous). */
osc_status osc_cuda_kv_decode_attn_paged(void *out, const void *q, int Hq, int Hkv, int hd, int bits, int rotate,
                                         int norm_scale, const uint32_t *kq, const uint16_t *kp, const uint32_t *vq,
                                         const uint16_t *vp, const float *kn, int n_quant, const void *rk,
                                         const void *rv, const float *rn, int n_res, float scale, int res_raw,
                                         const osc_kvq_pages *pages);

/* One sequence of a batched decode step (osc_cuda_kv_decode_attn_batch): its packed part and
 * raw residual window as for osc_cuda_kv_decode_attn_paged (pages.bt NULL: contiguous). */
typedef struct osc_kvq_seq {
    const uint32_t *kq;
    const uint16_t *kp;
    const uint32_t *vq;
    const uint16_t *vp;
    const float *kn;
    int n_quant;
    const void *rk, *rv;
    int n_res;
    osc_kvq_pages pages;
} osc_kvq_seq;

/* The decode attention of B sequences in one launch: q/out [B, Hq, hd], sequence b attends to
 * seqs[b] (same Hkv, hd, bits, rotate for all; residual keys raw when res_raw). Equals B calls
 * of osc_cuda_kv_decode_attn_paged up to the split plan (float summation order). */
osc_status osc_cuda_kv_decode_attn_batch(void *out, const void *q, int B, int Hq, int Hkv, int hd, int bits,
                                         int rotate, const osc_kvq_seq *seqs, float scale, int res_raw);

/* The same attention inside a captured decode step (llm/model.c's CUDA graphs): nothing may
 * depend on host values that change from step to step, so
 *   - the B sequences' descriptions are a device table, built on the host by
 *     osc_cuda_kv_graph_table (osc_cuda_kv_graph_table_bytes(B) bytes; seqs[b].n_res unused) and
 *     uploaded by the caller whenever it changes (a window flush, a new batch);
 *   - each window length is read on the device at run time: lens1[b] (device) - n_quant, with
 *     lens1 the step's attend lengths (cached tokens + this one) that the step advances itself;
 *   - the split count NS is fixed per batch size and shape (osc_cuda_kv_graph_splits: the
 *     packed splits' plan + the window's, one wave of the kernel in use); the splits a
 *     sequence does not need return at once and the combine skips them (it reads the table);
 *   - part is the caller's device scratch of osc_cuda_kv_graph_part_bytes(B, Hq, Hkv, hd, NS)
 *     bytes (not the library's growing scratch, whose address a graph would keep).
 * Residual keys are raw (res_raw). The same results as osc_cuda_kv_decode_attn_batch on the same
 * caches: the split plan is the same. */
int osc_cuda_kv_graph_splits(int B, int Hkv, int hd, int bits);
/* The packed-cache decode kernels' split plan (tests, sweeps): 1 the default, 0 the one before
 * session 10, 2 the window in splits of its own, 3 the window folded into the packed splits
 * (hd 128 / 2 bits), 4 one split per (sequence, KV head) (what a batch with more of those than
 * resident blocks gets), 5 the default without fitting the window's split count to the packed
 * splits (session 10's); -1 reads OSC_KVQ_PLAN again. Returns the plan in force before. Set it
 * only between decode steps of fresh contexts: graphs keep the split count they were made with. */
int osc_cuda_kv_split_plan(int plan);
/* Where k_kvq_mma's splits are merged (tests, A/B): 1 the default (inside the kernel for
 * batches whose pairs have fewer than 8 splits, else a combine kernel: osc_cuda_kv_stream_combine),
 * 0 never inside the kernel, 2 always; -1 reads OSC_KVQ_FUSED again. Returns the mode before. */
int osc_cuda_kv_fused_merge(int mode);
/* How k_kvq_mma merges a pair's splits when it merges them itself (tests, A/B): 1 the default (in
 * one level while a warp folds at most 36 partials, else in two), 0 always two levels (chunks,
 * then the chunks), 2 always one; -1 reads OSC_KVQ_ONE again. Returns the mode before. */
int osc_cuda_kv_one_level_merge(int mode);
/* Whether the splits k_kvq_mma does not merge itself are merged while it runs, by
 * k_kvq_combine_stream (1, the default), or by k_kvq_combine after it (0); -1 reads
 * OSC_KVQ_STREAM again. Returns the setting before. */
int osc_cuda_kv_stream_combine(int on);
size_t osc_cuda_kv_graph_table_bytes(int B);
/* NS must be osc_cuda_kv_graph_splits(B, Hkv, hd, bits) */
osc_status osc_cuda_kv_graph_table(void *host, const osc_kvq_seq *seqs, int B, int Hkv, int hd, int bits, int NS,
                                   const int32_t *lens1);
size_t osc_cuda_kv_graph_part_bytes(int B, int Hq, int Hkv, int hd, int NS);
osc_status osc_cuda_kv_decode_attn_graph(void *out, const void *q, int B, int Hq, int Hkv, int hd, int bits, int rotate,
                                         const void *table, int NS, void *part, float scale);

/* Tokens [t0, t0+n) of a packed region (any t0, n) back to bf16 [n][Hkv][hd]: keys in the
 * ORIGINAL domain H (k_hat * n_t) when rotate (kn may be NULL = 1), values as stored. */
osc_status osc_cuda_kv_dequant(const uint32_t *kq, const uint16_t *kp, const uint32_t *vq, const uint16_t *vp,
                               const float *kn, int t0, int n, int Hkv, int hd, int bits, int rotate, void *out_k,
                               void *out_v);

/* osc_cuda_kv_dequant over a paged packed part (pages may be NULL: contiguous). */
osc_status osc_cuda_kv_dequant_paged(const uint32_t *kq, const uint16_t *kp, const uint32_t *vq, const uint16_t *vp,
                                     const float *kn, int t0, int n, int Hkv, int hd, int bits, int rotate,
                                     void *out_k, void *out_v, const osc_kvq_pages *pages);

/* *dst = value on the device, queued on the library stream (no host sync): a block table entry. */
osc_status osc_cuda_kv_set_i32(int *dst, int value);

/* int8 mode: rows of hd bf16 values <-> int8 codes [rows][hd] + fp16 scales [rows] (the CPU
 * reference's rule, kv_quant.h osc_kvq_quant_i8_row). */
osc_status osc_cuda_kv_i8_quant(const void *x, long rows, int hd, int8_t *q, uint16_t *scales);
osc_status osc_cuda_kv_i8_dequant(const int8_t *q, const uint16_t *scales, long rows, int hd, void *out);

#ifdef __cplusplus
}
#endif
#endif
