/* The KV cache modes on the CPU reference path: the quantiser (hand-worked + random bounds),
 * Hadamard, the OScaR token norm, attention over a quantised cache against a naive float32
 * attention over the dequantised cache across flush boundaries, the token-norm-imbalance demo
 * (oscar2 vs kivi2 vs rot2), memory accounting, the offline V fold, errors. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/tensor.h"
#include "kvcache/kv_quant.h"
#include "kvcache/kvcache.h"
#include "tests/check.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float urand(void) {
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) + 0.5) / 16777216.0f; /* (0, 1) */
}
static float nrand(void) { return sqrtf(-2.0f * logf(urand())) * cosf(6.2831853f * urand()); }

/* ---- quantiser ---------------------------------------------------------------------------- */

static void test_hand_worked(void) {
    /* 4 tokens (n = 4 < 32: the other 28 rows are absent) x 3 channels, 2 bits.
     * ch0: {-1, 0, 0.5, 2}: lo=-1 hi=2, scale=(2-(-1))/3=1 (fp16 0x3C00 exact),
     *      zint=rne(1*1)=1, codes=rne(x*1+1) = {0, 1, rne(1.5)=2, 3};
     *      zero=-zint*s=-1 (0xBC00); word = 0 | 1<<2 | 2<<4 | 3<<6 = 0xE4; dequant {-1,0,1,2}.
     * ch1: all 0 -> range [-1, 1]: scale=2/3 -> fp16 rounded up = 0x3956 (0.66699; 0x3955 =
     *      0.66650 < 2/3), zint=rne(1/0.66699)=rne(1.4993)=1, codes all 1, word 0x55,
     *      zero=fp16(-0.66699)=0xB956, dequant 1*s+zero = 0.
     * ch2: {0.2, 0.8, 0.4, 0.6}: lo=0.2 hi=0.8 scale=0.2 -> fp16 up 0x3267 (0.20007; 0x3266 =
     *      0.19995 < 0.2), zint=rne(-0.2/0.20007)=rne(-0.9996)=-1, x/s = {0.9996, 3.9985,
     *      1.9993, 2.9989} -> round {1,4,2,3} -1 = codes {0,3,1,2}; word = 3<<2|1<<4|2<<6 = 0x9C;
     *      zero = -(-1)*s = 0x3267; dequant code*s+s = {0.20007, 0.80029, 0.40015, 0.60022}. */
    const float x[4][3] = {{-1, 0, 0.2f}, {0, 0, 0.8f}, {0.5f, 0, 0.4f}, {2, 0, 0.6f}};
    uint32_t w[2 * 3];
    uint16_t prm[3 * 2];
    osc_kvq_quant_k_group(&x[0][0], 4, 3, 3, 2, w, prm);
    CHECK(w[0] == 0xE4 && w[1] == 0x55 && w[2] == 0x9C, "words %x %x %x", w[0], w[1], w[2]);
    CHECK(w[3] == 0 && w[4] == 0 && w[5] == 0, "tokens 16..31 absent: %x %x %x", w[3], w[4], w[5]);
    CHECK(prm[0] == 0x3C00 && prm[1] == 0xBC00, "ch0 params %04x %04x", prm[0], prm[1]);
    CHECK(prm[2] == 0x3956 && prm[3] == 0xB956, "ch1 params %04x %04x", prm[2], prm[3]);
    CHECK(prm[4] == 0x3267 && prm[5] == 0x3267, "ch2 params %04x %04x", prm[4], prm[5]);
    float y[4][3];
    osc_kvq_dequant_k_group(w, prm, 4, 3, 2, &y[0][0], 3);
    const float s2 = 0.2000732421875f;
    const float want[4][3] = {{-1, 0, s2}, {0, 0, 4 * s2}, {1, 0, 2 * s2}, {2, 0, 3 * s2}};
    for (int j = 0; j < 4; j++)
        for (int c = 0; c < 3; c++) CHECK(fabsf(y[j][c] - want[j][c]) < 1e-6f, "dequant [%d][%d] %g want %g", j, c, y[j][c], want[j][c]);
    /* V row (per token, 32 channels a group): channel e = e*0.1 for e < 32 -> lo 0, hi 3.1,
     * scale 3.1/3 = 1.0333 -> fp16 up 0x3C23 (1.03418), zint 0, code(e) = rne(0.1e/1.03418):
     * e=5 -> rne(0.4835)=0, e=6 -> rne(0.580)=1, e=31 -> rne(2.9975)=3. */
    float xv[32], yv[32];
    for (int e = 0; e < 32; e++) xv[e] = 0.1f * e;
    uint32_t vw[2];
    uint16_t vp[2];
    osc_kvq_quant_v_row(xv, 32, 2, vw, vp);
    CHECK(vp[0] == 0x3C23 && vp[1] == 0, /* zero = -0 * s = +0 */ "v params %04x %04x", vp[0], vp[1]);
    CHECK(((vw[0] >> 10) & 3) == 0 && ((vw[0] >> 12) & 3) == 1 && ((vw[1] >> 30) & 3) == 3, "v codes %08x %08x", vw[0], vw[1]);
    osc_kvq_dequant_v_row(vw, vp, 32, 2, yv);
    CHECK(fabsf(yv[31] - 3 * 1.0341796875f) < 1e-6f, "v dequant %g", yv[31]);
}

/* a group far from zero against its range: rne(-lo / s) does not fit an int and is clamped
 * (osc_kvq_range), and every code still lands in [0, 2^b - 1] */
static void test_zint_clamp(void) {
    uint16_t prm[2];
    float s;
    int zint;
    osc_kvq_range(4e20f, 4e20f, 2, prm, &s, &zint); /* constant: range +-|lo|/1024, fp16 scale capped */
    CHECK(s == 65504.0f && zint == -1000000000, "huge constant group: s %g zint %d", s, zint);
    osc_kvq_range(-3e20f, -2.9e20f, 4, prm, &s, &zint);
    CHECK(s == 65504.0f && zint == 1000000000, "huge negative group: s %g zint %d", s, zint);
    float x[32], y[32];
    uint32_t w[2];
    uint16_t vp[2];
    for (int i = 0; i < 32; i++) x[i] = 4e20f * (1.0f + i / 64.0f);
    osc_kvq_quant_v_row(x, 32, 2, w, vp);
    osc_kvq_dequant_v_row(w, vp, 32, 2, y); /* no UB on the way; codes within range by construction */
    CHECK(osc_f16_to_f32(vp[0]) == 65504.0f, "huge row: scale %g", osc_f16_to_f32(vp[0]));
}

static void test_random_bounds(void) {
    enum { NC = 128 };
    static float x[32 * NC], y[32 * NC];
    uint32_t w[4 * NC];
    uint16_t prm[NC * 2];
    for (int bits = 2; bits <= 4; bits += 2) {
        int bad = 0;
        double worst = 0;
        for (int rep = 0; rep < 20; rep++) {
            for (int c = 0; c < NC; c++) {
                float off = 3 * nrand(), sc = expf(2 * nrand());
                for (int j = 0; j < 32; j++) x[j * NC + c] = off + sc * nrand();
            }
            osc_kvq_quant_k_group(x, 32, NC, NC, bits, w, prm);
            osc_kvq_dequant_k_group(w, prm, 32, NC, bits, y, NC);
            for (int c = 0; c < NC; c++) {
                float s = osc_f16_to_f32(prm[2 * c]), z = osc_f16_to_f32(prm[2 * c + 1]);
                for (int j = 0; j < 32; j++) {
                    float e = fabsf(y[j * NC + c] - x[j * NC + c]);
                    float tol = s / 2 + fabsf(z) * 4.9e-4f + 1e-6f * fabsf(x[j * NC + c]) + 1e-7f;
                    if (e > tol) bad++;
                    if (e / s > worst) worst = e / s;
                }
            }
            /* V per token, hd = 128 (4 groups of 32 channels) */
            for (int r = 0; r < 32; r++) {
                float *xr = x + r * NC, *yr = y + r * NC;
                osc_kvq_quant_v_row(xr, NC, bits, w, prm);
                osc_kvq_dequant_v_row(w, prm, NC, bits, yr);
                for (int e = 0; e < NC; e++) {
                    float s = osc_f16_to_f32(prm[2 * (e / 32)]), z = osc_f16_to_f32(prm[2 * (e / 32) + 1]);
                    float tol = s / 2 + fabsf(z) * 4.9e-4f + 1e-6f * fabsf(xr[e]) + 1e-7f;
                    if (fabsf(yr[e] - xr[e]) > tol) bad++;
                }
            }
        }
        CHECK(bad == 0, "%d-bit: %d values beyond half a step (+ fp16 slack)", bits, bad);
        printf("quantiser %d-bit: worst |err|/scale = %.4f\n", bits, worst);
    }
    int8_t c8[NC];
    uint16_t s8;
    int bad = 0;
    for (int e = 0; e < NC; e++) x[e] = 5 * nrand();
    osc_kvq_quant_i8_row(x, NC, c8, &s8);
    osc_kvq_dequant_i8_row(c8, s8, NC, y);
    for (int e = 0; e < NC; e++)
        if (fabsf(y[e] - x[e]) > osc_f16_to_f32(s8) / 2 + 1e-6f) bad++;
    CHECK(bad == 0, "int8: %d values beyond half a step", bad);
}

/* ---- Hadamard and norm ------------------------------------------------------------------ */

/* The GPU's 2-bit / hd-128 fragment order: hand-worked positions, every (token, channel) in its
 * own slot, and the block converters are inverse permutations that keep every code. */
static void test_frag_order(void) {
    int bit;
    /* K token 9, channel 6: k-step 0, lane (g 1, t 1) = 5, word 4*5 = 20; channel 4t+2 is the
     * second pair's even one (low half), row 9/8 = 1: bit 2 (1 + 4) = 10 */
    CHECK(osc_kvq_frag_k(9, 6, &bit) == 20 && bit == 10, "frag K (9, 6): %d %d", osc_kvq_frag_k(9, 6, &bit), bit);
    /* K token 26, channel 77: k-step 4 (word block 1), lane (2, 3) = 11, odd channel of pair 0,
     * row 3: word 128 + 44 = 172, bit 16 + 6 = 22 */
    CHECK(osc_kvq_frag_k(26, 77, &bit) == 172 && bit == 22, "frag K (26, 77)");
    /* V token 13, channel 50: half 0, lane (g 2, t 2) = 10, channel pair 1: word 41; odd token
     * (high half) of the second token pair (p 1), row 2 (tile 3 is odd, g not g+8): 16 + 2 (2 + 4) */
    CHECK(osc_kvq_frag_v(13, 50, &bit) == 41 && bit == 28, "frag V (13, 50)");
    static unsigned char seen_k[256 * 32], seen_v[256 * 32];
    int dup = 0, bad = 0;
    for (int j = 0; j < 32; j++)
        for (int c = 0; c < 128; c++) {
            int w = osc_kvq_frag_k(j, c, &bit);
            if (w < 0 || w >= 256 || bit < 0 || bit > 30 || bit % 2) bad++;
            else dup += seen_k[w * 32 + bit]++ != 0;
            w = osc_kvq_frag_v(j, c, &bit);
            if (w < 0 || w >= 256 || bit < 0 || bit > 30 || bit % 2) bad++;
            else dup += seen_v[w * 32 + bit]++ != 0;
        }
    CHECK(!dup && !bad, "frag order: %d shared slots, %d out of range", dup, bad);
    /* two groups x 3 heads of random codes through both converters and back */
    enum { NG = 2, H = 3, NW = NG * H * 256 };
    static uint32_t a[NW], f[NW], b[NW];
    for (int i = 0; i < NW; i++) a[i] = (uint32_t)(urand() * 65536.0f) << 16 | (uint32_t)(urand() * 65536.0f);
    osc_kvq_frag_k_blocks(a, f, NG * H, 1);
    osc_kvq_frag_k_blocks(f, b, NG * H, 0);
    int kok = !memcmp(a, b, sizeof a) && memcmp(a, f, sizeof a);
    /* one code by hand: K block 1, token 26 channel 77 (row layout word 128 + 77, bits 2 * 10) */
    kok = kok && ((f[256 + 172] >> 22) & 3u) == ((a[256 + 128 + 77] >> 20) & 3u);
    CHECK(kok, "frag K blocks round trip");
    osc_kvq_frag_v_groups(a, f, NG, H, 1);
    osc_kvq_frag_v_groups(f, b, NG, H, 0);
    int vok = !memcmp(a, b, sizeof a) && memcmp(a, f, sizeof a);
    /* group 1, head 2, token 13, channel 50: row (32 + 13) * 3 + 2, word 50 / 16 = 3, bits 2 * 2 */
    vok = vok && ((f[(1 * H + 2) * 256 + 41] >> 28) & 3u) == ((a[((32 + 13) * H + 2) * 8 + 3] >> 4) & 3u);
    CHECK(vok, "frag V groups round trip");
    /* params: K channel 6 (chunk 1, second pair, even): its zero at 8 + 4 + 0 = 12, its scale at
     * 14; V token 13 (t 2, the second pair, odd), group 2, scale: fp16 2 (4 (4 * 2 + 2) + 2 + 1)
     * + 1 = 87 */
    CHECK(osc_kvq_frag_kp(6, 1) == 12 && osc_kvq_frag_kp(6, 0) == 14 && osc_kvq_frag_vp(13, 2, 0) == 87,
          "frag params (hand-worked): %d %d %d", osc_kvq_frag_kp(6, 1), osc_kvq_frag_kp(6, 0),
          osc_kvq_frag_vp(13, 2, 0));
    static unsigned char pk[256], pv[256];
    int pdup = 0;
    for (int c = 0; c < 128; c++)
        for (int z = 0; z < 2; z++) pdup += pk[osc_kvq_frag_kp(c, z) & 255]++ != 0;
    for (int j = 0; j < 32; j++)
        for (int J = 0; J < 4; J++)
            for (int z = 0; z < 2; z++) pdup += pv[osc_kvq_frag_vp(j, J, z) & 255]++ != 0;
    CHECK(!pdup, "frag params: %d shared slots", pdup);
    static uint16_t pa[NG * H * 256], pf[NG * H * 256], pb[NG * H * 256];
    for (int i = 0; i < NG * H * 256; i++) pa[i] = (uint16_t)(urand() * 65536.0f);
    osc_kvq_frag_kp_blocks(pa, pf, NG * H, 1);
    osc_kvq_frag_kp_blocks(pf, pb, NG * H, 0);
    int pok = !memcmp(pa, pb, sizeof pa) && pf[256 + 12] == pa[256 + 2 * 6 + 1];
    osc_kvq_frag_vp_groups(pa, pf, NG, H, 1);
    osc_kvq_frag_vp_groups(pf, pb, NG, H, 0);
    /* group 1, head 2, token 13, group 2 scale: row (32 + 13) * 3 + 2 */
    pok = pok && !memcmp(pa, pb, sizeof pa) && pf[(1 * H + 2) * 256 + 87] == pa[((32 + 13) * H + 2) * 8 + 4];
    CHECK(pok, "frag params round trip");
}

static void test_hadamard(void) {
    static float Hm[256 * 256];
    for (int d = 16; d <= 256; d *= 2) {
        for (int i = 0; i < d; i++) {
            float *col = Hm + (size_t)i * d; /* H e_i = column i (H symmetric: also row i) */
            memset(col, 0, sizeof(float) * d);
            col[i] = 1;
            osc_kvq_hadamard(col, d);
        }
        double worst = 0;
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (int t = 0; t < d; t++) s += (double)Hm[i * d + t] * Hm[j * d + t];
                double e = fabs(s - (i == j));
                if (e > worst) worst = e;
            }
        CHECK(worst <= 1e-6, "d=%d: |H H^T - I| = %g", d, worst);
        CHECK(fabsf(Hm[1 * d + 1] + 1.0f / sqrtf((float)d)) < 1e-7f && Hm[1] > 0, "d=%d: Sylvester order", d);
        float q[256], k[256];
        double dot0 = 0, dot1 = 0, nq = 0, nk = 0;
        for (int i = 0; i < d; i++) q[i] = nrand(), k[i] = nrand(), dot0 += (double)q[i] * k[i], nq += q[i] * q[i], nk += k[i] * k[i];
        osc_kvq_hadamard(q, d);
        osc_kvq_hadamard(k, d);
        for (int i = 0; i < d; i++) dot1 += (double)q[i] * k[i];
        CHECK(fabs(dot1 - dot0) <= 1e-6 * sqrt(nq * nk), "d=%d: q.k %g -> %g", d, dot0, dot1);
    }
    float z[8] = {0};
    CHECK(osc_kvq_token_norm(z, 8) == 1.0f, "norm of 0 -> 1");
    z[3] = NAN;
    CHECK(osc_kvq_token_norm(z, 8) == 1.0f, "norm of NaN -> 1");
}

/* A NaN value element, first in its group or not, is skipped by the group's range (the others
 * keep the params they have without it) and gets code 0, as in the GPU pack; an all-NaN group
 * falls back to the range [-1, 1]. */
static void test_nan_values(void) {
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = 0.25f * (float)(i % 32) - 3.0f;
    uint32_t w0[4], w1[4];
    uint16_t p0[4], p1[4];
    for (int at = 0; at < 32; at += 13) { /* elements 0, 13, 26 of group 0 */
        float y[64];
        memcpy(y, x, sizeof x);
        y[at] = NAN;
        float r[64];
        memcpy(r, x, sizeof x);
        r[at] = r[at == 0 ? 1 : at - 1]; /* a duplicate of a neighbour: the same min and max */
        osc_kvq_quant_v_row(y, 64, 2, w1, p1);
        osc_kvq_quant_v_row(r, 64, 2, w0, p0);
        CHECK(!memcmp(p0, p1, sizeof p0), "NaN at %d: params %04x %04x vs %04x %04x", at, p1[0], p1[1], p0[0], p0[1]);
        CHECK(((w1[at / 16] >> (2 * (at % 16))) & 3u) == 0u, "NaN at %d: code %u", at,
              (w1[at / 16] >> (2 * (at % 16))) & 3u);
        for (int i = 0; i < 64; i++)
            if (i != at)
                CHECK(((w1[i / 16] ^ w0[i / 16]) >> (2 * (i % 16)) & 3u) == 0u, "NaN at %d: code %d differs", at, i);
    }
    float z[32];
    for (int i = 0; i < 32; i++) z[i] = NAN;
    uint32_t wz[2];
    uint16_t pz[2];
    osc_kvq_quant_v_row(z, 32, 2, wz, pz);
    CHECK(osc_f16_to_f32(pz[0]) > 0.66f && osc_f16_to_f32(pz[0]) < 0.67f && wz[0] == 0u && wz[1] == 0u,
          "all-NaN group: scale %g, words %08x %08x", osc_f16_to_f32(pz[0]), wz[0], wz[1]);
}

/* ---- cache helpers ------------------------------------------------------------------------- */

static osc_kv *mk(const char *mode, int L, int H, int hd, int ctx, int R) {
    osc_kv_params p = {mode, L, H, hd, ctx, OSC_DEV_CPU, OSC_F32, R};
    osc_kv *kv = NULL;
    osc_status s = osc_kv_new(&p, &kv);
    CHECK(s == OSC_OK, "new %s: %s", mode, osc_last_error());
    return kv;
}

/* Naive causal attention for S query rows at positions T-S..T-1 over K,V [T][H][hd]. */
static void naive_attn(const float *q, const float *K, const float *V, int S, int T, int Hq, int H, int hd, float scale,
                       float *out) {
    static double lg[4096];
    int gq = Hq / H;
    for (int i = 0; i < S; i++)
        for (int hq = 0; hq < Hq; hq++) {
            int h = hq / gq, vis = T - S + i + 1;
            const float *qi = q + ((size_t)i * Hq + hq) * hd;
            double mx = -INFINITY, sum = 0;
            for (int t = 0; t < vis; t++) {
                double s = 0;
                for (int d = 0; d < hd; d++) s += (double)qi[d] * K[((size_t)t * H + h) * hd + d];
                lg[t] = s * scale;
                if (lg[t] > mx) mx = lg[t];
            }
            for (int t = 0; t < vis; t++) sum += lg[t] = exp(lg[t] - mx);
            float *o = out + ((size_t)i * Hq + hq) * hd;
            for (int d = 0; d < hd; d++) {
                double a = 0;
                for (int t = 0; t < vis; t++) a += lg[t] * V[((size_t)t * H + h) * hd + d];
                o[d] = (float)(a / sum);
            }
        }
}

static osc_tensor t3(float *p, int a, int b, int c) {
    int64_t ne[3] = {a, b, c};
    return osc_tensor_make(p, OSC_F32, OSC_DEV_CPU, 3, ne);
}

enum { L = 2, H = 2, HQ = 4, HD = 64, T = 300, R = 128 };
static float Kin[L][T][H][HD], Vin[L][T][H][HD], Qin[L][T][HQ][HD];
static float Kd[T * H * HD], Vd[T * H * HD], Ref[T * HQ * HD], Out[T * HQ * HD];
static float Dump[2][L][T * H * HD];

/* Feed T tokens in chunks of S; after each store check attend against the naive attention
 * over (dequantised cache for earlier tokens) + (this chunk in full precision). */
static double run_chunks(const char *mode, int S, float dump[L][T * H * HD]) {
    osc_kv *kv = mk(mode, L, H, HD, T + 8, R);
    if (!kv) return INFINITY;
    const float scale = 1.0f / sqrtf((float)HD);
    double worst = 0;
    for (int t0 = 0; t0 < T; t0 += S) {
        int n = T - t0 < S ? T - t0 : S;
        for (int l = 0; l < L; l++) {
            osc_tensor k = t3(&Kin[l][t0][0][0], n, H, HD), v = t3(&Vin[l][t0][0][0], n, H, HD);
            osc_tensor q = t3(&Qin[l][t0][0][0], n, HQ, HD), o = t3(Out, n, HQ, HD);
            osc_status s = osc_kv_store(kv, l, &k, &v);
            CHECK(s == OSC_OK, "%s store: %s", mode, osc_last_error());
            s = osc_kv_attend(kv, l, &q, &o, scale);
            CHECK(s == OSC_OK, "%s attend: %s", mode, osc_last_error());
            if (t0) CHECK(osc_kv_debug_dequant(kv, l, 0, t0, Kd, Vd) == OSC_OK, "dump: %s", osc_last_error());
            memcpy(Kd + (size_t)t0 * H * HD, &Kin[l][t0][0][0], sizeof(float) * n * H * HD);
            memcpy(Vd + (size_t)t0 * H * HD, &Vin[l][t0][0][0], sizeof(float) * n * H * HD);
            naive_attn(&Qin[l][t0][0][0], Kd, Vd, n, t0 + n, HQ, H, HD, scale, Ref);
            double e = rel_l2(Out, Ref, (long)n * HQ * HD);
            if (!(e <= worst)) worst = e;
        }
        osc_kv_advance(kv, n);
    }
    CHECK(osc_kv_len(kv) == T, "len");
    for (int l = 0; l < L; l++) CHECK(osc_kv_debug_dequant(kv, l, 0, T, dump[l], Vd) == OSC_OK, "final dump");
    if (!strcmp(mode, "oscar2")) {
        /* truncate into a packed block (dequantised back into the residual), then regrow */
        static float before[T * H * HD], after[T * H * HD];
        CHECK(osc_kv_debug_dequant(kv, 0, 0, 200, before, Vd) == OSC_OK, "dump");
        osc_kv_truncate(kv, 200);
        CHECK(osc_kv_len(kv) == 200, "truncate len");
        CHECK(osc_kv_debug_dequant(kv, 0, 0, 200, after, Vd) == OSC_OK, "dump after truncate: %s", osc_last_error());
        CHECK(osc_kv_debug_dequant(kv, 0, 0, 201, after, Vd) != OSC_OK, "token 200 must be gone");
        double e = 0;
        for (int i = 0; i < 200 * H * HD; i++) e = fmax(e, fabs(before[i] - after[i]));
        CHECK(e < 1e-5, "truncate changed kept tokens by %g", e);
        for (int l = 0; l < L; l++) {
            osc_tensor k = t3(&Kin[l][200][0][0], 100, H, HD), v = t3(&Vin[l][200][0][0], 100, H, HD);
            osc_tensor q = t3(&Qin[l][200][0][0], 100, HQ, HD), o = t3(Out, 100, HQ, HD);
            CHECK(osc_kv_store(kv, l, &k, &v) == OSC_OK && osc_kv_attend(kv, l, &q, &o, scale) == OSC_OK, "regrow: %s",
                  osc_last_error());
        }
        osc_kv_advance(kv, 100);
        CHECK(osc_kv_len(kv) == T, "regrown len");
    }
    osc_kv_free(kv);
    return worst;
}

static void test_attend_vs_dequant(void) {
    for (int l = 0; l < L; l++)
        for (int t = 0; t < T; t++) {
            float big = (t % 37 == 3) ? 8.0f : 1.0f;
            for (int h = 0; h < H; h++)
                for (int d = 0; d < HD; d++) Kin[l][t][h][d] = big * nrand() + 0.5f * (d % 7 == 0), Vin[l][t][h][d] = nrand();
            for (int h = 0; h < HQ; h++)
                for (int d = 0; d < HD; d++) Qin[l][t][h][d] = nrand();
        }
    const char *modes[] = {"oscar2", "kivi2", "rot2", "int8", "kivi4", "oscar4", "bf16"};
    for (int m = 0; m < 7; m++) {
        double e1 = run_chunks(modes[m], 1, Dump[0]);
        double e77 = run_chunks(modes[m], 77, Dump[1]);
        printf("attend vs naive over dequantised cache, %-6s: rel. L2 err S=1 %.2e, S=77 %.2e\n", modes[m], e1, e77);
        CHECK(e1 <= 1e-5 && e77 <= 1e-5, "%s: attend differs from naive attention over the dequantised cache", modes[m]);
        /* the packed content does not depend on how the tokens were chunked */
        CHECK(!memcmp(Dump[0], Dump[1], sizeof Dump[0]), "%s: cache differs between S=1 and S=77", modes[m]);
        /* tokens [0,256) packed (lossy), [256,300) in the residual (exact up to rounding) */
        double e_packed = 0, e_res = 0;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < H * HD; i++) {
                double e = fabs(Dump[0][1][t * H * HD + i] - (&Kin[1][t][0][0])[i]);
                if (t < 256) e_packed = fmax(e_packed, e);
                else e_res = fmax(e_res, e);
            }
        if (strcmp(modes[m], "bf16")) CHECK(e_packed > 1e-3, "%s: tokens < 256 should be quantised", modes[m]);
        if (strcmp(modes[m], "int8") && strcmp(modes[m], "bf16")) CHECK(e_res < 1e-5, "%s: residual tokens changed by %g", modes[m], e_res);
    }
}

static void test_norm_shared(void) {
    osc_kv *kv = mk("oscar2", 2, 4, 64, 64, 32);
    if (!kv) return;
    static float k[2][3][4][64], v[3][4][64];
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < 4 * 64; i++) (&k[l][t][0][0])[i] = (l + 1) * (t + 1) * nrand();
    for (int i = 0; i < 3 * 4 * 64; i++) (&v[0][0][0])[i] = nrand();
    for (int l = 0; l < 2; l++) {
        osc_tensor kt = t3(&k[l][0][0][0], 3, 4, 64), vt = t3(&v[0][0][0], 3, 4, 64);
        CHECK(osc_kv_store(kv, l, &kt, &vt) == OSC_OK, "store");
        for (int t = 0; t < 3; t++) {
            float rot[4][64];
            memcpy(rot, k[l][t], sizeof rot);
            double s = 0;
            for (int h = 0; h < 4; h++) {
                osc_kvq_hadamard(rot[h], 64);
                for (int d = 0; d < 64; d++) s += (double)rot[h][d] * rot[h][d];
            }
            float n = osc_kv_debug_norm(kv, l, t);
            CHECK(fabs(n - sqrt(s)) <= 1e-6 * sqrt(s), "layer %d token %d: norm %g, ||concat rotated k|| %g", l, t, n, sqrt(s));
        }
    }
    CHECK(osc_kv_debug_norm(kv, 0, 1) != osc_kv_debug_norm(kv, 1, 1), "norm is per layer");
    CHECK(isnan(osc_kv_debug_norm(kv, 0, 3)), "token 3 not stored");
    osc_kv_free(kv);
}

/* ---- token norm imbalance --------------------------------------------------------------- */

static void test_tni(void) {
    enum { TN = 256, SQ = 8, TH = 2, THD = 64 };
    static float K[TN + SQ][TH][THD], V[TN + SQ][TH][THD], Q[SQ][TH][THD], ref[SQ * TH * THD], out[SQ * TH * THD];
    for (int t = 0; t < TN + SQ; t++)
        for (int h = 0; h < TH; h++)
            for (int d = 0; d < THD; d++) K[t][h][d] = nrand(), V[t][h][d] = nrand();
    for (int i = 0; i < SQ; i++)
        for (int h = 0; h < TH; h++)
            for (int d = 0; d < THD; d++) Q[i][h][d] = nrand();
    /* Two tokens of every group of 32 get 50x the norm of the others (like vision tokens in a
     * text stream). The queries share a direction u (q = 4u + noise); the big keys point mostly
     * along -u, so they get ~no attention in float32 and the output depends on the small
     * tokens, which per-channel quantisation without the norm crushes onto one level. */
    for (int h = 0; h < TH; h++) {
        float u[THD], un = 0;
        for (int d = 0; d < THD; d++) u[d] = nrand(), un += u[d] * u[d];
        for (int d = 0; d < THD; d++) u[d] /= sqrtf(un);
        for (int i = 0; i < SQ; i++)
            for (int d = 0; d < THD; d++) Q[i][h][d] += 4.0f * u[d];
        for (int t = 0; t < TN; t++) {
            if (t % 32 != 1 && t % 32 != 17) continue;
            float n = 0;
            for (int d = 0; d < THD; d++) K[t][h][d] = -0.9f * u[d] + 0.05f * nrand();
            for (int d = 0; d < THD; d++) n += K[t][h][d] * K[t][h][d];
            for (int d = 0; d < THD; d++) K[t][h][d] *= 50.0f * sqrtf((float)THD) / sqrtf(n);
        }
    }
    const float scale = 1.0f / sqrtf((float)THD);
    naive_attn(&Q[0][0][0], &K[0][0][0], &V[0][0][0], SQ, TN + SQ, TH, TH, THD, scale, ref);
    const char *modes[3] = {"oscar2", "kivi2", "rot2"};
    double err[3];
    for (int m = 0; m < 3; m++) {
        err[m] = INFINITY;
        osc_kv *kv = mk(modes[m], 1, TH, THD, TN + SQ, 128);
        if (!kv) continue;
        osc_tensor k = t3(&K[0][0][0], TN, TH, THD), v = t3(&V[0][0][0], TN, TH, THD);
        osc_tensor q = t3(&Q[0][0][0], SQ, TH, THD), o = t3(out, SQ, TH, THD);
        osc_tensor o0 = t3(out, TN, TH, THD);
        static float qdummy[TN * TH * THD];
        osc_tensor q0 = t3(qdummy, TN, TH, THD);
        static float obig[TN * TH * THD];
        o0.data = obig;
        CHECK(osc_kv_store(kv, 0, &k, &v) == OSC_OK && osc_kv_attend(kv, 0, &q0, &o0, scale) == OSC_OK, "prefill");
        osc_kv_advance(kv, TN); /* all 256 tokens are now packed (2 blocks of 128) */
        osc_tensor k2 = t3(&K[TN][0][0], SQ, TH, THD), v2 = t3(&V[TN][0][0], SQ, TH, THD);
        CHECK(osc_kv_store(kv, 0, &k2, &v2) == OSC_OK && osc_kv_attend(kv, 0, &q, &o, scale) == OSC_OK, "decode");
        err[m] = rel_l2(out, ref, SQ * TH * THD);
        osc_kv_free(kv);
    }
    printf("token norm imbalance (50x tokens), attention output rel. error vs float32: oscar2 %.4f  kivi2 %.4f  rot2 %.4f\n",
           err[0], err[1], err[2]);
    CHECK(err[0] < err[1] && err[0] < err[2], "oscar2 %.4f should beat kivi2 %.4f and rot2 %.4f", err[0], err[1], err[2]);
}

/* ---- memory, fold, errors ----------------------------------------------------------------- */

static void test_memory(void) {
    osc_kv_params p = {"oscar2", 28, 8, 128, 4096, OSC_DEV_CPU, OSC_F32, 0};
    double b = osc_kv_bits_per_element(&p);
    printf("bits/element (Hkv 8, d 128): oscar2 %.4f", b);
    CHECK(b <= 3.1 && fabs(b - (3.0 + 32.0 / (2 * 8 * 128))) < 1e-9, "oscar2 bits %g", b);
    CHECK(osc_kv_bytes_per_token_per_layer(&p) == 772, "oscar2 bytes/token/layer %zu", osc_kv_bytes_per_token_per_layer(&p));
    p.mode = "kivi2";
    printf(", kivi2 %.4f", osc_kv_bits_per_element(&p));
    CHECK(osc_kv_bits_per_element(&p) == 3.0, "kivi2 bits");
    p.mode = "oscar4";
    printf(", oscar4 %.4f", osc_kv_bits_per_element(&p));
    CHECK(fabs(osc_kv_bits_per_element(&p) - 5.015625) < 1e-9, "oscar4 bits");
    p.mode = "int8";
    printf(", int8 %.4f", osc_kv_bits_per_element(&p));
    CHECK(osc_kv_bits_per_element(&p) == 8.125, "int8 bits");
    p.mode = "bf16";
    p.act_dt = OSC_BF16;
    printf(", bf16 %.1f\n", osc_kv_bits_per_element(&p));
    CHECK(osc_kv_bits_per_element(&p) == 16.0, "bf16 bits");
    p.act_dt = OSC_F32;
    CHECK(osc_kv_bits_per_element(&p) == 32.0, "bf16 mode on the CPU stores float32");
    /* bytes_for counts everything: packed part + residual window */
    p.mode = "oscar2";
    p.n_layers = 1;
    p.n_ctx = 1024;
    size_t bf = osc_kv_bytes_for(&p);
    size_t packed = (size_t)1024 * 772, resid = 2ull * 256 * 8 * 128 * 4;
    CHECK(bf >= packed + resid && bf < packed + resid + 4096, "bytes_for %zu vs %zu + %zu", bf, packed, resid);
    osc_kv *kv = NULL;
    CHECK(osc_kv_new(&p, &kv) == OSC_OK && osc_kv_bytes(kv) == bf, "bytes of a cache");
    osc_kv_free(kv);
}

static void test_fold(void) {
    enum { N = 5, D = 48, FH = 2, FHQ = 4, FHD = 32 };
    static float x[N][D], wv[FH * FHD][D], bv[FH * FHD], wo[D][FHQ * FHD], P[FHQ][N][N], y0[N][D], y1[N][D];
    for (int i = 0; i < N * D; i++) (&x[0][0])[i] = nrand();
    for (int i = 0; i < FH * FHD * D; i++) (&wv[0][0])[i] = nrand() * 0.2f;
    for (int i = 0; i < FH * FHD; i++) bv[i] = nrand();
    for (int i = 0; i < D * FHQ * FHD; i++) (&wo[0][0])[i] = nrand() * 0.2f;
    for (int h = 0; h < FHQ; h++)
        for (int i = 0; i < N; i++) {
            float s = 0;
            for (int j = 0; j <= i; j++) s += P[h][i][j] = urand();
            for (int j = 0; j <= i; j++) P[h][i][j] /= s;
        }
    for (int pass = 0; pass < 2; pass++) {
        float v[N][FH * FHD], a[N][FHQ * FHD];
        for (int t = 0; t < N; t++)
            for (int r = 0; r < FH * FHD; r++) {
                float s = bv[r];
                for (int d = 0; d < D; d++) s += wv[r][d] * x[t][d];
                v[t][r] = s;
            }
        for (int i = 0; i < N; i++)
            for (int h = 0; h < FHQ; h++)
                for (int d = 0; d < FHD; d++) {
                    float s = 0;
                    for (int j = 0; j <= i; j++) s += P[h][i][j] * v[j][(h / 2) * FHD + d];
                    a[i][h * FHD + d] = s;
                }
        float(*y)[D] = pass ? y1 : y0;
        for (int i = 0; i < N; i++)
            for (int o = 0; o < D; o++) {
                float s = 0;
                for (int c = 0; c < FHQ * FHD; c++) s += wo[o][c] * a[i][c];
                y[i][o] = s;
            }
        if (!pass) CHECK(osc_kv_fold_v_hadamard(&wv[0][0], bv, &wo[0][0], FH, FHQ, FHD, D) == OSC_OK, "fold");
    }
    double e = rel_l2(&y1[0][0], &y0[0][0], N * D);
    CHECK(e <= 1e-5, "folded layer output changed: rel %g", e);
    float dummy[96];
    CHECK(osc_kv_fold_v_hadamard(dummy, NULL, dummy, 1, 1, 48, 1) == OSC_ERR_UNSUPPORTED, "fold needs pow2");
}

static void test_errors(void) {
    osc_kv_params p = {"oscar3", 1, 2, 64, 64, OSC_DEV_CPU, OSC_F32, 0};
    osc_kv *kv = NULL;
    CHECK(osc_kv_new(&p, &kv) == OSC_ERR_UNSUPPORTED && strstr(osc_last_error(), "oscar2") &&
              strstr(osc_last_error(), "kivi4") && strstr(osc_last_error(), "int8"),
          "unknown mode: %s", osc_last_error());
    p.mode = "oscar2";
    p.head_dim = 96;
    CHECK(osc_kv_new(&p, &kv) == OSC_ERR_UNSUPPORTED && strstr(osc_last_error(), "power of two"), "pow2: %s",
          osc_last_error());
    p.mode = "kivi2";
    CHECK(osc_kv_new(&p, &kv) == OSC_OK, "kivi2 at head_dim 96: %s", osc_last_error());
    osc_kv_free(kv);
    p.head_dim = 64;
    p.r_evict = 100;
    CHECK(osc_kv_new(&p, &kv) == OSC_ERR_INVALID_ARG, "r_evict 100");
    p.r_evict = 32;
    p.n_ctx = 40;
    CHECK(osc_kv_new(&p, &kv) == OSC_OK, "new");
    static float k[41 * 2 * 64], q[41 * 2 * 64], o[41 * 2 * 64];
    osc_tensor kt = t3(k, 41, 2, 64), qt = t3(q, 41, 2, 64), ot = t3(o, 41, 2, 64);
    CHECK(osc_kv_store(kv, 0, &kt, &kt) == OSC_ERR_CONTEXT, "past n_ctx");
    kt.ne[0] = qt.ne[0] = ot.ne[0] = 40;
    CHECK(osc_kv_store(kv, 0, &kt, &kt) == OSC_OK && osc_kv_attend(kv, 0, &qt, &ot, 0.125f) == OSC_OK, "fill: %s",
          osc_last_error());
    osc_kv_advance(kv, 40);
    kt.ne[0] = 1;
    CHECK(osc_kv_store(kv, 0, &kt, &kt) == OSC_ERR_CONTEXT, "full");
    osc_kv_free(kv);
}

int main(void) {
    test_hand_worked();
    test_zint_clamp();
    test_random_bounds();
    test_frag_order();
    test_hadamard();
    test_nan_values();
    test_norm_shared();
    test_attend_vs_dequant();
    test_tni();
    test_memory();
    test_fold();
    test_errors();
    return check_done("test_kvcache");
}
