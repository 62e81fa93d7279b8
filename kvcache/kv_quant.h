/* kvcache/kv_quant.h: the pure building blocks of the quantised KV cache modes (CPU, float32).
 * No allocation, no global state, thread-safe. Used by kvcache.c and unit-tested directly.
 *
 * Quantiser (shared by K and V, b = 2 or 4 bits, asymmetric), over one group of values x:
 *   lo = min x, hi = max x; if hi == lo == 0 the range is [-1, 1]; if hi == lo != 0 the range
 *   is widened to [c - |c|/1024, c + |c|/1024] (c = lo) so the scale is never 0.
 *   scale = (hi - lo) * (1 / (2^b - 1)) in fp32, stored as fp16 rounded UP (so (hi-lo)/s <=
 *   2^b-1 up to fp32 rounding); all further arithmetic uses that stored fp16 scale s and its
 *   fp32 reciprocal r = 1 / s.
 *   zint  = rne(-lo * r)                            (an integer, may be negative; rne = round
 *                                                    half to even, rintf)
 *   code  = clamp(rne(x * r + zint), 0, 2^b - 1)    computed as fmaf(x, r, M + zint) with M =
 *           1.5 * 2^23, whose fp32 result is M + the rounded value (NaN -> code 0).
 *   Apart from exact ties and the reciprocal's rounding these are round(-lo / s) and round(x /
 *   s) + zint; multiplies and one rounding make the pack a few instructions a code on a GPU,
 *   bit for bit the same there (OSC_KVQ_MAGIC).
 *   zero  = fp16(-zint * s)                         ("lo-equivalent", in value units)
 *   dequant: x_hat = code * s + zero                (one FMA on a GPU)
 * Error: |x_hat - x| <= s/2 + |zero| * 2^-11 (fp16 rounding of zero) + fp32 rounding.
 * Params are stored as pairs uint16 {scale, zero} (fp16 bits).
 *
 * Packed layouts (u32 words, little bit order: code of element e sits at bits b*(e % (32/b))
 * of word e / (32/b)):
 *   K block of one (kv head, group of G = 32 tokens): words[b][hd]; word w of channel c holds
 *     the codes of tokens 32/b*w .. 32/b*w + 32/b - 1 of channel c (2-bit: 2 words = one u64
 *     of 32 tokens per channel; 4-bit: 4 words). Channel is the fastest index so a GPU warp
 *     with one lane per channel reads 128 contiguous bytes per word row (coalesced), and each
 *     lane then holds all 32 tokens of its channel in b registers; the (scale, zero) of its
 *     channel is one 32-bit load. Params: [hd][2] fp16.
 *   V row of one (kv head, token): words[hd * b / 32]; channel c at word c / (32/b).
 *     Params: [hd / 32][2] fp16 (one pair per group of 32 channels).
 *   int8 row of one (kv head, token): int8[hd] symmetric, x_hat = code * s, s = fp16 of
 *     max|x| / 127 rounded up (max|x| == 0 -> s = 1). */
#ifndef OSC_KV_QUANT_H
#define OSC_KV_QUANT_H
#include <stddef.h>
#include <stdint.h>

#define OSC_KV_G 32        /* tokens per K group, channels per V group */
#define OSC_KV_MAX_HD 512  /* largest head_dim of the quantised modes */

int osc_kvq_is_pow2(int d);

/* x[d] <- (H_d / sqrt(d)) x in place; H_d Sylvester order (H_2n = [[H, H], [H, -H]]),
 * no random signs. d a power of two. H_d/sqrt(d) is symmetric and orthonormal: it is its own
 * inverse. */
void osc_kvq_hadamard(float *x, int d);

/* ||x[0..n)||_2 in fp32 (accumulated in double); 0, NaN or inf -> 1. For OScaR, x is the
 * rotated key of one token concatenated over all KV heads: n = Hkv * hd. */
float osc_kvq_token_norm(const float *x, int n);

/* One token's key x [Hkv][hd] in place to what the cache quantises, k_hat = fl(y * f): y = the
 * butterflies of H_hd per head when rotate (unscaled), else x; f = fl(r / n) with r = 1 /
 * sqrt(hd) (1 without rotate) and n = osc_kvq_token_norm of fl(y * r), the rotated key over all
 * heads (1 without norm). One rounding after the butterflies, which the GPU pack does alike
 * (kernels/cuda). Returns n. */
float osc_kvq_khat(float *x, int Hkv, int hd, int rotate, int norm);

/* |zint| at most this: round(-lo / s) of a group far from zero relative to its range (or
 * clipped by the fp16 scale) would not fit an int; the GPU pack clamps the same way */
#define OSC_KVQ_ZINT_MAX 1000000000.0f
/* M above: fp32 values in [M, M + 2^22) are M + an integer, held in the low mantissa bits */
#define OSC_KVQ_MAGIC 12582912.0f

/* (scale, zero) for range [lo, hi] at b bits, per the rule above. s: the fp16 scale as a float;
 * zint: rne(-lo * (1/s)), clamped to +-OSC_KVQ_ZINT_MAX. prm[0] = scale fp16 bits, prm[1] = zero fp16
 * bits. */
void osc_kvq_range(float lo, float hi, int bits, uint16_t prm[2], float *s, int *zint);

/* K: quantise one group of n <= 32 tokens (rows beyond n count as absent: they neither set the
 * range nor get codes, their code bits are 0) per channel.
 *   x: [n][ld] floats, channel c of token j at x[j*ld + c], nc channels.
 *   words: [bits][nc] u32 (layout above).  prm: [nc][2] fp16. */
void osc_kvq_quant_k_group(const float *x, int n, int ld, int nc, int bits, uint32_t *words, uint16_t *prm);
/* Inverse: out[j*ld + c] for j < n, c < nc. */
void osc_kvq_dequant_k_group(const uint32_t *words, const uint16_t *prm, int n, int nc, int bits, float *out, int ld);

/* V: quantise one token row x[hd] (hd % 32 == 0) per group of 32 channels.
 *   words: [hd*bits/32] u32.  prm: [hd/32][2] fp16. */
void osc_kvq_quant_v_row(const float *x, int hd, int bits, uint32_t *words, uint16_t *prm);
void osc_kvq_dequant_v_row(const uint32_t *words, const uint16_t *prm, int hd, int bits, float *out);

/* The GPU's 2-bit, head_dim-128 order ("fragment order", kernels/cuda/kvquant_launch.h): the
 * same codes as the layouts above, permuted inside each 32-token group of one KV head so that a
 * tensor-core lane finds the 16 codes of one MMA k-step in one word, each register of two codes
 * one mask away. A K block and a group's V codes are both 256 words; for token j (0..31 of the
 * group) and channel c (0..127) these give the word (return value) and the bit of the code.
 *   K: lane (g, t) = (j % 8, c / 4 % 4), k-step s = c / 16: word 128 (s / 4) + 4 (4 g + t) + s % 4,
 *      bit 16 (c % 2) + 2 (j / 8 + 4 (c / 2 % 2)).
 *   V: lane (g, t) = (c % 8, j / 2 % 4), half m = j / 16, channel pair ip = c / 32: word
 *      128 m + 4 (4 g + t) + ip, bit 16 (j % 2) + 2 (2 (c / 16 % 2) + c / 8 % 2 + 4 (j / 8 % 2)).
 * The params of those groups are reordered too (below); the norms are not. */
#if defined(__CUDACC__)
#define OSC_KVQ_HD __host__ __device__
#else
#define OSC_KVQ_HD
#endif
static inline OSC_KVQ_HD int osc_kvq_frag_k(int j, int c, int *bit) {
    *bit = 16 * (c & 1) + 2 * ((j >> 3) + 4 * ((c >> 1) & 1));
    return 128 * (c >> 6) + 4 * (4 * (j & 7) + ((c >> 2) & 3)) + ((c >> 4) & 3);
}
static inline OSC_KVQ_HD int osc_kvq_frag_v(int j, int c, int *bit) {
    *bit = 16 * (j & 1) + 2 * (2 * ((c >> 4) & 1) + ((c >> 3) & 1) + 4 * ((j >> 3) & 1));
    return 128 * (j >> 4) + 4 * (4 * (c & 7) + ((j >> 1) & 3)) + (c >> 5);
}

/* Their params in fragment order, as fp16 index (of 256) inside the (group, kv head) block; `zero`
 * 0 = the scale, 1 = the zero. A lane's 16 bytes are two pairs (p = 0, 1), each its zeros and
 * then its scales: as an MMA A register quad, the zeros sit in the registers of rows g (the
 * zero-term MMAs), and the scales are the B registers' factors.
 *   K, channel c (chunk q = c / 4, pair p = c / 2 % 2): 8 q + 4 p + 2 (1 - zero) + c % 2
 *   V, token j, channel group J: 2 (4 (4 (4 m + J) + t) + 2 p + 1 - zero) + j % 2, with
 *      m = j / 16, p = j / 8 % 2, t = j / 2 % 4 (tokens 16m+2t, +1, then +8, +9). */
static inline OSC_KVQ_HD int osc_kvq_frag_kp(int c, int zero) {
    return 8 * (c >> 2) + 4 * ((c >> 1) & 1) + 2 * (1 - zero) + (c & 1);
}
static inline OSC_KVQ_HD int osc_kvq_frag_vp(int j, int J, int zero) {
    return 2 * (4 * (4 * (4 * (j >> 4) + J) + ((j >> 1) & 3)) + 2 * ((j >> 3) & 1) + 1 - zero) + (j & 1);
}

/* Convert n_groups x Hkv 2-bit, hd-128 groups between the layouts above (K blocks
 * [n_groups][Hkv][2][128] + params [..][128][2], V rows [n_groups * 32][Hkv][8] + params
 * [..][4][2]) and the fragment order ([n_groups][Hkv][256] for each of the four): to_frag 1 =
 * to it, 0 = back. src and dst must not overlap. */
void osc_kvq_frag_k_blocks(const uint32_t *src, uint32_t *dst, size_t n_blocks, int to_frag);
void osc_kvq_frag_v_groups(const uint32_t *src, uint32_t *dst, int n_groups, int Hkv, int to_frag);
void osc_kvq_frag_kp_blocks(const uint16_t *src, uint16_t *dst, size_t n_blocks, int to_frag);
void osc_kvq_frag_vp_groups(const uint16_t *src, uint16_t *dst, int n_groups, int Hkv, int to_frag);

/* int8, symmetric per row: x[n] -> codes[n], *s16 = fp16 scale. */
void osc_kvq_quant_i8_row(const float *x, int n, int8_t *codes, uint16_t *s16);
void osc_kvq_dequant_i8_row(const int8_t *codes, uint16_t s16, int n, float *out);

#endif
