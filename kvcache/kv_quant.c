/* kvcache/kv_quant.c: see kv_quant.h. */
#include "kv_quant.h"

#include <math.h>
#include <string.h>

#include "../core/tensor.h"

int osc_kvq_is_pow2(int d) { return d > 0 && (d & (d - 1)) == 0; }

/* in-place butterflies: after the pass with half-width h, x = (H_2h (x) I) x per block */
static void butterflies(float *x, int d) {
    for (int h = 1; h < d; h <<= 1)
        for (int i = 0; i < d; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

void osc_kvq_hadamard(float *x, int d) {
    butterflies(x, d);
    float r = 1.0f / sqrtf((float)d);
    for (int i = 0; i < d; i++) x[i] *= r;
}

static float norm_of(double s) {
    float r = (float)sqrt(s);
    if (!(r > 0) || isinf(r)) return 1.0f; /* 0 or NaN (comparison false) or inf */
    return r;
}

float osc_kvq_token_norm(const float *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
    return norm_of(s);
}

float osc_kvq_khat(float *x, int Hkv, int hd, int rotate, int norm) {
    const size_t n = (size_t)Hkv * hd;
    const float r = rotate ? 1.0f / sqrtf((float)hd) : 1.0f;
    if (rotate)
        for (int h = 0; h < Hkv; h++) butterflies(x + (size_t)h * hd, hd);
    float nt = 1.0f;
    if (norm) { /* osc_kvq_token_norm of the rotated key fl(y r) */
        double s = 0;
        for (size_t i = 0; i < n; i++) {
            const float v = x[i] * r;
            s += (double)v * v;
        }
        nt = norm_of(s);
    }
    const float f = r / nt;
    for (size_t i = 0; i < n; i++) x[i] *= f;
    return nt;
}

/* fp16 of a positive value, rounded up (never below v); capped at the largest finite fp16 */
static uint16_t f16_up(float v) {
    if (!(v < 65504.0f)) return 0x7bffu;
    uint16_t h = osc_f32_to_f16(v);
    if (osc_f16_to_f32(h) < v) h++;
    return h;
}

void osc_kvq_range(float lo, float hi, int bits, uint16_t prm[2], float *s_out, int *zint_out) {
    const int qmax = (1 << bits) - 1;
    if (!(hi > lo)) { /* constant (or NaN) group */
        if (lo == 0.0f || isnan(lo)) {
            lo = -1.0f;
            hi = 1.0f;
        } else {
            float e = fabsf(lo) / 1024.0f;
            float c = lo;
            lo = c - e;
            hi = c + e;
        }
    }
    uint16_t s16 = f16_up((hi - lo) * (1.0f / (float)qmax));
    float s = osc_f16_to_f32(s16);
    float zr = rintf(-lo * (1.0f / s)); /* round half to even */
    if (zr > OSC_KVQ_ZINT_MAX) zr = OSC_KVQ_ZINT_MAX;
    if (zr < -OSC_KVQ_ZINT_MAX) zr = -OSC_KVQ_ZINT_MAX;
    int zint = (int)zr; /* NaN cannot reach here: s > 0 and lo is a number */
    prm[0] = s16;
    prm[1] = osc_f32_to_f16((float)(-zint) * s); /* +0 when zint == 0 */
    *s_out = s;
    *zint_out = zint;
}

/* the code of x in a group of scale s, zint (kv_quant.h): rs = 1 / s, mz = M + zint */
static inline uint32_t quant1(float x, float rs, float mz, int qmax) {
    float t = fmaf(x, rs, mz); /* M + rne(x * rs + zint), one rounding */
    t = fminf(fmaxf(t, OSC_KVQ_MAGIC), OSC_KVQ_MAGIC + (float)qmax); /* fmaxf(NaN, M) = M */
    return (uint32_t)(t - OSC_KVQ_MAGIC);
}

void osc_kvq_quant_k_group(const float *x, int n, int ld, int nc, int bits, uint32_t *words, uint16_t *prm) {
    const int per = 32 / bits, qmax = (1 << bits) - 1;
    for (int c = 0; c < nc; c++) {
        float lo = INFINITY, hi = -INFINITY;
        for (int j = 0; j < n; j++) {
            float v = x[(size_t)j * ld + c];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
        if (n == 0) lo = hi = 0.0f;
        float s;
        int zint;
        osc_kvq_range(lo, hi, bits, prm + 2 * c, &s, &zint);
        const float rs = 1.0f / s, mz = OSC_KVQ_MAGIC + (float)zint;
        for (int w = 0; w < bits; w++) {
            uint32_t word = 0;
            for (int e = 0; e < per; e++) {
                int j = w * per + e;
                if (j < n) word |= quant1(x[(size_t)j * ld + c], rs, mz, qmax) << (bits * e);
            }
            words[(size_t)w * nc + c] = word;
        }
    }
}

void osc_kvq_dequant_k_group(const uint32_t *words, const uint16_t *prm, int n, int nc, int bits, float *out, int ld) {
    const int per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    for (int c = 0; c < nc; c++) {
        float s = osc_f16_to_f32(prm[2 * c]), z = osc_f16_to_f32(prm[2 * c + 1]);
        for (int j = 0; j < n; j++) {
            uint32_t code = (words[(size_t)(j / per) * nc + c] >> (bits * (j % per))) & mask;
            out[(size_t)j * ld + c] = (float)code * s + z;
        }
    }
}

void osc_kvq_quant_v_row(const float *x, int hd, int bits, uint32_t *words, uint16_t *prm) {
    const int per = 32 / bits, qmax = (1 << bits) - 1;
    for (int i = 0; i < hd * bits / 32; i++) words[i] = 0;
    for (int g = 0; g < hd / OSC_KV_G; g++) {
        const float *xg = x + g * OSC_KV_G;
        /* fminf / fmaxf skip NaN wherever it sits, as the GPU pack's do (a comparison chain
         * started at a NaN xg[0] kept it as the min and max) */
        float lo = xg[0], hi = xg[0];
        for (int c = 1; c < OSC_KV_G; c++) {
            lo = fminf(lo, xg[c]);
            hi = fmaxf(hi, xg[c]);
        }
        float s;
        int zint;
        osc_kvq_range(lo, hi, bits, prm + 2 * g, &s, &zint);
        const float rs = 1.0f / s, mz = OSC_KVQ_MAGIC + (float)zint;
        for (int c = 0; c < OSC_KV_G; c++) {
            int e = g * OSC_KV_G + c;
            words[e / per] |= quant1(xg[c], rs, mz, qmax) << (bits * (e % per));
        }
    }
}

void osc_kvq_dequant_v_row(const uint32_t *words, const uint16_t *prm, int hd, int bits, float *out) {
    const int per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    for (int g = 0; g < hd / OSC_KV_G; g++) {
        float s = osc_f16_to_f32(prm[2 * g]), z = osc_f16_to_f32(prm[2 * g + 1]);
        for (int c = 0; c < OSC_KV_G; c++) {
            int e = g * OSC_KV_G + c;
            uint32_t code = (words[e / per] >> (bits * (e % per))) & mask;
            out[e] = (float)code * s + z;
        }
    }
}

void osc_kvq_frag_k_blocks(const uint32_t *src, uint32_t *dst, size_t n_blocks, int to_frag) {
    for (size_t b = 0; b < n_blocks; b++) {
        const uint32_t *s = src + b * 256;
        uint32_t *d = dst + b * 256;
        memset(d, 0, 256 * sizeof *d);
        for (int j = 0; j < 32; j++)
            for (int c = 0; c < 128; c++) {
                int fb, lb = 2 * (j % 16);
                const int fw = osc_kvq_frag_k(j, c, &fb), lw = (j / 16) * 128 + c;
                const uint32_t code = to_frag ? (s[lw] >> lb) & 3u : (s[fw] >> fb) & 3u;
                if (to_frag) d[fw] |= code << fb;
                else d[lw] |= code << lb;
            }
    }
}

void osc_kvq_frag_v_groups(const uint32_t *src, uint32_t *dst, int n_groups, int Hkv, int to_frag) {
    for (int g = 0; g < n_groups; g++)
        for (int h = 0; h < Hkv; h++) {
            const size_t blk = ((size_t)g * Hkv + h) * 256;
            if (to_frag) memset(dst + blk, 0, 256 * sizeof *dst);
            for (int j = 0; j < 32; j++) {
                const size_t row = (((size_t)g * 32 + j) * Hkv + h) * 8; /* the token's row */
                if (!to_frag) memset(dst + row, 0, 8 * sizeof *dst);
                for (int c = 0; c < 128; c++) {
                    int fb;
                    const size_t fw = blk + (size_t)osc_kvq_frag_v(j, c, &fb), lw = row + (size_t)c / 16;
                    const int lb = 2 * (c % 16);
                    if (to_frag) dst[fw] |= ((src[lw] >> lb) & 3u) << fb;
                    else dst[lw] |= ((src[fw] >> fb) & 3u) << lb;
                }
            }
        }
}

void osc_kvq_frag_kp_blocks(const uint16_t *src, uint16_t *dst, size_t n_blocks, int to_frag) {
    for (size_t b = 0; b < n_blocks; b++)
        for (int c = 0; c < 128; c++)
            for (int z = 0; z < 2; z++) {
                const size_t f = b * 256 + (size_t)osc_kvq_frag_kp(c, z), r = b * 256 + 2 * (size_t)c + z;
                if (to_frag) dst[f] = src[r];
                else dst[r] = src[f];
            }
}

void osc_kvq_frag_vp_groups(const uint16_t *src, uint16_t *dst, int n_groups, int Hkv, int to_frag) {
    for (int g = 0; g < n_groups; g++)
        for (int h = 0; h < Hkv; h++)
            for (int j = 0; j < 32; j++)
                for (int J = 0; J < 4; J++)
                    for (int z = 0; z < 2; z++) {
                        const size_t f = ((size_t)g * Hkv + h) * 256 + (size_t)osc_kvq_frag_vp(j, J, z);
                        const size_t r = (((size_t)g * 32 + j) * Hkv + h) * 8 + 2 * (size_t)J + z;
                        if (to_frag) dst[f] = src[r];
                        else dst[r] = src[f];
                    }
}

void osc_kvq_quant_i8_row(const float *x, int n, int8_t *codes, uint16_t *s16) {
    float amax = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    uint16_t h = amax > 0.0f ? f16_up(amax / 127.0f) : osc_f32_to_f16(1.0f);
    float s = osc_f16_to_f32(h);
    for (int i = 0; i < n; i++) {
        float q = roundf(x[i] / s);
        if (!(q >= -127.0f)) q = q != q ? 0.0f : -127.0f;
        if (q > 127.0f) q = 127.0f;
        codes[i] = (int8_t)q;
    }
    *s16 = h;
}

void osc_kvq_dequant_i8_row(const int8_t *codes, uint16_t s16, int n, float *out) {
    float s = osc_f16_to_f32(s16);
    for (int i = 0; i < n; i++) out[i] = (float)codes[i] * s;
}
