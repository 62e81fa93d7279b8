/* tests/test_ops_cpu.c: the CPU backend of kernels/ops.h against naive double-precision
 * references written here and hand-computed values; plus argument validation errors. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "kernels/rope.h"
#include "tests/check.h"

#define TOL 1e-5

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float *rnd(int64_t n, float amp) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = frand() * amp;
    return p;
}
static float *zeros(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }

static osc_tensor t1(void *d, osc_dtype dt, int64_t a) { return osc_tensor_1d(d, dt, OSC_DEV_CPU, a); }
static osc_tensor t2(void *d, osc_dtype dt, int64_t a, int64_t b) { return osc_tensor_2d(d, dt, OSC_DEV_CPU, a, b); }
static osc_tensor t3(void *d, osc_dtype dt, int64_t a, int64_t b, int64_t c) {
    int64_t ne[3] = {a, b, c};
    return osc_tensor_make(d, dt, OSC_DEV_CPU, 3, ne);
}
static int near(double a, double b, double tol) { return fabs(a - b) <= tol * (1.0 + fabs(b)); }

/* ---- matmul ---- */
static void test_matmul_case(int64_t M, int64_t K, int64_t N, int with_bias) {
    float *x = rnd(M * K, 1), *w = rnd(N * K, 1), *b = rnd(N, 1), *o = zeros(M * N), *r = zeros(M * N);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = with_bias ? b[n] : 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
            r[m * N + n] = (float)s;
        }
    osc_tensor to = t2(o, OSC_F32, M, N), tx = t2(x, OSC_F32, M, K), tw = t2(w, OSC_F32, N, K), tb = t1(b, OSC_F32, N);
    osc_status st = osc_op_matmul(&to, &tx, &tw, with_bias ? &tb : NULL);
    CHECK(st == OSC_OK, "matmul %lldx%lldx%lld: %s", (long long)M, (long long)K, (long long)N, osc_last_error());
    double e = rel_l2(o, r, (long)(M * N));
    CHECK(e <= TOL, "matmul M=%lld K=%lld N=%lld bias=%d rel %g", (long long)M, (long long)K, (long long)N,
          with_bias, e);
    free(x); free(w); free(b); free(o); free(r);
}

static void test_matmul(void) {
    for (int bias = 0; bias <= 1; bias++) {
        test_matmul_case(7, 13, 5, bias);
        test_matmul_case(1, 64, 33, bias);
        test_matmul_case(1, 1, 1, bias);
        test_matmul_case(64, 300, 257, bias);
        test_matmul_case(3, 1000, 17, bias);
    }
    /* 3-D x [2,3,K] flattens to M = 6 */
    float x[2 * 3 * 4], w[5 * 4], o[2 * 3 * 5];
    for (int i = 0; i < 24; i++) x[i] = (float)i;
    for (int i = 0; i < 20; i++) w[i] = (float)(i % 3);
    osc_tensor tx = t3(x, OSC_F32, 2, 3, 4), tw = t2(w, OSC_F32, 5, 4), to = t3(o, OSC_F32, 2, 3, 5);
    CHECK(osc_op_matmul(&to, &tx, &tw, NULL) == OSC_OK, "%s", osc_last_error());
    double s = 0;
    for (int k = 0; k < 4; k++) s += x[5 * 4 + k] * w[4 * 4 + k];
    CHECK(o[5 * 5 + 4] == (float)s, "matmul 3d %g vs %g", o[29], s);
    /* errors */
    osc_tensor bad_w = t2(w, OSC_F32, 4, 5);
    CHECK(osc_op_matmul(&to, &tx, &bad_w, NULL) == OSC_ERR_INVALID_ARG, "K mismatch accepted");
    CHECK(strstr(osc_last_error(), "matmul") != NULL, "message: %s", osc_last_error());
    osc_tensor bf_x = t3(x, OSC_BF16, 2, 3, 4);
    CHECK(osc_op_matmul(&to, &bf_x, &tw, NULL) == OSC_ERR_INVALID_ARG, "bf16 x on cpu accepted");
    osc_tensor bad_o = t2(o, OSC_F32, 6, 4);
    CHECK(osc_op_matmul(&bad_o, &tx, &tw, NULL) == OSC_ERR_INVALID_ARG, "N mismatch accepted");
    osc_tensor bad_b = t1(w, OSC_F32, 4);
    CHECK(osc_op_matmul(&to, &tx, &tw, &bad_b) == OSC_ERR_INVALID_ARG, "bias size mismatch accepted");
    osc_tensor cu_w = tw;
    cu_w.dev = OSC_DEV_CUDA;
    CHECK(osc_op_matmul(&to, &tx, &cu_w, NULL) == OSC_ERR_INVALID_ARG, "device mismatch accepted");
    CHECK(osc_op_matmul(&to, &tx, NULL, NULL) == OSC_ERR_INVALID_ARG, "NULL w accepted");
#ifndef OSC_HAVE_CUDA
    osc_tensor cx = tx, cw = tw, co = to;
    cx.dev = cw.dev = co.dev = OSC_DEV_CUDA;
    cx.dt = cw.dt = co.dt = OSC_BF16;
    CHECK(osc_op_matmul(&co, &cx, &cw, NULL) == OSC_ERR_UNSUPPORTED, "cuda without CUDA: %s", osc_last_error());
#endif
}

/* ---- embed ---- */
static void test_embed(void) {
    float *tab = rnd(10 * 6, 1), o[4 * 6];
    int32_t ids[4] = {3, 0, 9, 3};
    osc_tensor tt = t2(tab, OSC_F32, 10, 6), ti = t1(ids, OSC_I32, 4), to = t2(o, OSC_F32, 4, 6);
    CHECK(osc_op_embed(&to, &tt, &ti) == OSC_OK, "%s", osc_last_error());
    int ok = 1;
    for (int s = 0; s < 4; s++)
        for (int d = 0; d < 6; d++) ok &= o[s * 6 + d] == tab[ids[s] * 6 + d];
    CHECK(ok, "embed rows differ");
    ids[2] = 10;
    CHECK(osc_op_embed(&to, &tt, &ti) == OSC_ERR_INVALID_ARG, "id 10 of V=10 accepted");
    CHECK(strstr(osc_last_error(), "embed") != NULL, "message: %s", osc_last_error());
    ids[2] = -1;
    CHECK(osc_op_embed(&to, &tt, &ti) == OSC_ERR_INVALID_ARG, "id -1 accepted");
    ids[2] = 1;
    osc_tensor bad_o = t2(o, OSC_F32, 4, 5);
    CHECK(osc_op_embed(&bad_o, &tt, &ti) == OSC_ERR_INVALID_ARG, "D mismatch accepted");
    osc_tensor fi = t1(ids, OSC_F32, 4);
    CHECK(osc_op_embed(&to, &tt, &fi) == OSC_ERR_INVALID_ARG, "f32 ids accepted");
    free(tab);
}

/* ---- norms ---- */
static void test_norms(void) {
    /* hand-computed: x = [1,2,3,4], mean(x^2) = 7.5 */
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 0.5f}, o[4];
    const double want[4] = {0.365148372, 0.730296743, 2.190890230, 0.730296743};
    osc_tensor tx = t2(x, OSC_F32, 1, 4), tw = t1(w, OSC_F32, 4), to = t2(o, OSC_F32, 1, 4);
    CHECK(osc_op_rmsnorm(&to, &tx, &tw, 0.0f) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 4; i++) CHECK(near(o[i], want[i], 1e-6), "rmsnorm[%d] %.9f vs %.9f", i, o[i], want[i]);
    /* layernorm hand: mean 2.5, var 1.25 */
    float ones[4] = {1, 1, 1, 1}, zb[4] = {0, 0, 0, 0};
    const double lwant[4] = {-1.341640786, -0.447213595, 0.447213595, 1.341640786};
    osc_tensor t1s = t1(ones, OSC_F32, 4), tz = t1(zb, OSC_F32, 4);
    CHECK(osc_op_layernorm(&to, &tx, &t1s, &tz, 0.0f) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 4; i++) CHECK(near(o[i], lwant[i], 1e-6), "layernorm[%d] %.9f vs %.9f", i, o[i], lwant[i]);

    /* random vs double reference, in place (out aliases x) */
    const int64_t R = 5, D = 37;
    float *xr = rnd(R * D, 3), *wr = rnd(D, 1), *br = rnd(D, 1), *ref = zeros(R * D), *x2 = zeros(R * D);
    memcpy(x2, xr, (size_t)(R * D) * sizeof(float));
    const float eps = 1e-6f;
    for (int64_t r = 0; r < R; r++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[r * D + i] * xr[r * D + i];
        double inv = 1.0 / sqrt(ss / D + eps);
        for (int64_t i = 0; i < D; i++) ref[r * D + i] = (float)(wr[i] * xr[r * D + i] * inv);
    }
    osc_tensor tr = t2(x2, OSC_F32, R, D), twr = t1(wr, OSC_F32, D), tbr = t1(br, OSC_F32, D);
    CHECK(osc_op_rmsnorm(&tr, &tr, &twr, eps) == OSC_OK, "%s", osc_last_error());
    double e = rel_l2(x2, ref, (long)(R * D));
    CHECK(e <= TOL, "rmsnorm random rel %g", e);

    memcpy(x2, xr, (size_t)(R * D) * sizeof(float));
    for (int64_t r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < D; i++) m += xr[r * D + i];
        m /= D;
        for (int64_t i = 0; i < D; i++) v += (xr[r * D + i] - m) * (xr[r * D + i] - m);
        v /= D;
        for (int64_t i = 0; i < D; i++) ref[r * D + i] = (float)((xr[r * D + i] - m) / sqrt(v + 1e-5) * wr[i] + br[i]);
    }
    CHECK(osc_op_layernorm(&tr, &tr, &twr, &tbr, 1e-5f) == OSC_OK, "%s", osc_last_error());
    e = rel_l2(x2, ref, (long)(R * D));
    CHECK(e <= TOL, "layernorm random rel %g", e);

    osc_tensor bad_w = t1(wr, OSC_F32, D - 1);
    CHECK(osc_op_rmsnorm(&tr, &tr, &bad_w, eps) == OSC_ERR_INVALID_ARG, "rmsnorm w mismatch accepted");
    CHECK(strstr(osc_last_error(), "rmsnorm") != NULL, "message: %s", osc_last_error());
    CHECK(osc_op_layernorm(&tr, &tr, &twr, NULL, eps) == OSC_ERR_INVALID_ARG, "layernorm NULL bias accepted");
    free(xr); free(wr); free(br); free(ref); free(x2);
}

/* ---- rope ---- */

/* Naive reference: angle as the fp32 product (as HF), cos/sin and rotation in double. */
static void rope_ref(float *x, int64_t S, int64_t H, int D, const int32_t *pos, const osc_rope *r) {
    int half = D / 2, mrope = r->mrope_section[0] > 0;
    for (int64_t s = 0; s < S; s++)
        for (int64_t h = 0; h < H; h++) {
            float *v = x + (s * H + h) * D;
            double out[2 * OSC_ROPE_MAX_HALF];
            for (int d = 0; d < D; d++) {
                int j = d % half;
                int axis = 0;
                if (mrope) axis = j < r->mrope_section[0] ? 0 : j < r->mrope_section[0] + r->mrope_section[1] ? 1 : 2;
                float ang = (float)pos[axis * S + s] * r->inv_freq[j];
                double rot = d < half ? -(double)v[d + half] : (double)v[d - half];
                out[d] = v[d] * cos((double)ang) * r->attn_factor + rot * sin((double)ang) * r->attn_factor;
            }
            for (int d = 0; d < D; d++) v[d] = (float)out[d];
        }
}

static void test_rope(void) {
    osc_rope r;
    CHECK(osc_rope_init(&r, 4, 10000.0, OSC_ROPE_DEFAULT, 0, 0, 0, 0, NULL) == OSC_OK, "%s", osc_last_error());
    CHECK(r.inv_freq[0] == 1.0f && near(r.inv_freq[1], 0.01, 1e-7), "inv_freq %g %g", r.inv_freq[0], r.inv_freq[1]);
    /* hand-computed: pos 1, x = [1,2,3,4], angles 1 and 0.01 */
    float x[4] = {1, 2, 3, 4};
    int32_t p1 = 1;
    const double want[4] = {-1.984110649, 1.959900667, 2.462377902, 4.019799668};
    osc_tensor tx = t3(x, OSC_F32, 1, 1, 4), tp = t1(&p1, OSC_I32, 1);
    CHECK(osc_op_rope(&tx, &tp, &r) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 4; i++) CHECK(near(x[i], want[i], 1e-6), "rope hand[%d] %.9f vs %.9f", i, x[i], want[i]);

    /* base inv_freq for D=128, theta=1e6 vs the formula in double */
    CHECK(osc_rope_init(&r, 128, 1e6, OSC_ROPE_DEFAULT, 0, 0, 0, 0, NULL) == OSC_OK, "%s", osc_last_error());
    int ok = 1;
    for (int j = 0; j < 64; j++) ok &= near(r.inv_freq[j], pow(1e6, -2.0 * j / 128.0), 1e-6);
    CHECK(ok, "default inv_freq");

    /* llama3 scaling (Llama 3.1: theta 500000, factor 8, low 1, high 4, orig 8192) */
    CHECK(osc_rope_init(&r, 128, 500000.0, OSC_ROPE_LLAMA3, 8.0f, 1.0f, 4.0f, 8192, NULL) == OSC_OK, "%s",
          osc_last_error());
    int n_low = 0, n_high = 0, n_mid = 0;
    ok = 1;
    for (int j = 0; j < 64; j++) {
        double inv = pow(500000.0, -2.0 * j / 128.0), wl = 2 * M_PI / inv, want_j;
        if (wl < 8192.0 / 4.0) want_j = inv, n_high++;
        else if (wl > 8192.0 / 1.0) want_j = inv / 8.0, n_low++;
        else {
            double sm = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            want_j = (1 - sm) * inv / 8.0 + sm * inv;
            n_mid++;
        }
        if (!near(r.inv_freq[j], want_j, 1e-5)) {
            ok = 0;
            fprintf(stderr, "llama3 inv_freq[%d] %.9g vs %.9g\n", j, r.inv_freq[j], want_j);
        }
    }
    CHECK(ok && n_low > 0 && n_high > 0 && n_mid > 0, "llama3 inv_freq (low %d high %d mid %d)", n_low, n_high, n_mid);

    /* random plain rope vs reference, positions up to 5000 */
    const int64_t S = 6, H = 3;
    const int D = 16;
    CHECK(osc_rope_init(&r, D, 10000.0, OSC_ROPE_DEFAULT, 0, 0, 0, 0, NULL) == OSC_OK, "%s", osc_last_error());
    int32_t pos[3 * 6] = {0, 1, 7, 100, 2048, 4999};
    float *xa = rnd(S * H * D, 2), *xb = zeros(S * H * D), *xc = zeros(S * H * D);
    memcpy(xb, xa, (size_t)(S * H * D) * sizeof(float));
    osc_tensor ta = t3(xa, OSC_F32, S, H, D), tps = t1(pos, OSC_I32, S);
    CHECK(osc_op_rope(&ta, &tps, &r) == OSC_OK, "%s", osc_last_error());
    rope_ref(xb, S, H, D, pos, &r);
    double e = rel_l2(xa, xb, (long)(S * H * D));
    CHECK(e <= TOL, "rope random rel %g", e);

    /* M-RoPE, sections {2,3,3} of D/2 = 8, distinct t/h/w positions */
    const int sec[3] = {2, 3, 3};
    osc_rope rm;
    CHECK(osc_rope_init(&rm, D, 10000.0, OSC_ROPE_DEFAULT, 0, 0, 0, 0, sec) == OSC_OK, "%s", osc_last_error());
    int32_t p3[3 * 6] = {0, 1, 2, 3, 3, 3, /* t */ 0, 1, 1, 5, 6, 7, /* h */ 0, 1, 2, 9, 40, 2};
    float *ya = rnd(S * H * D, 2), *yb = zeros(S * H * D);
    memcpy(yb, ya, (size_t)(S * H * D) * sizeof(float));
    osc_tensor tya = t3(ya, OSC_F32, S, H, D), tp3 = t2(p3, OSC_I32, 3, S);
    CHECK(osc_op_rope(&tya, &tp3, &rm) == OSC_OK, "%s", osc_last_error());
    rope_ref(yb, S, H, D, p3, &rm);
    e = rel_l2(ya, yb, (long)(S * H * D));
    CHECK(e <= TOL, "mrope random rel %g", e);
    /* one frequency per axis checked directly: j=0 uses t, j=2 uses h, j=5 uses w */
    {
        float z[16] = {0};
        z[0] = 1; z[2] = 1; z[5] = 1;
        int32_t pz[3] = {3, 5, 7};
        osc_tensor tz = t3(z, OSC_F32, 1, 1, 16), tpz = t2(pz, OSC_I32, 3, 1);
        CHECK(osc_op_rope(&tz, &tpz, &rm) == OSC_OK, "%s", osc_last_error());
        CHECK(near(z[8], sin((double)(3.0f * rm.inv_freq[0])), 1e-6), "mrope axis t");
        CHECK(near(z[10], sin((double)(5.0f * rm.inv_freq[2])), 1e-6), "mrope axis h");
        CHECK(near(z[13], sin((double)(7.0f * rm.inv_freq[5])), 1e-6), "mrope axis w");
    }
    /* text positions: M-RoPE with t = h = w equals plain RoPE exactly */
    memcpy(xc, xb, (size_t)(S * H * D) * sizeof(float));
    int32_t pt[3 * 6];
    for (int a = 0; a < 3; a++)
        for (int s = 0; s < S; s++) pt[a * S + s] = pos[s];
    osc_tensor tb = t3(xb, OSC_F32, S, H, D), tc = t3(xc, OSC_F32, S, H, D), tpt = t2(pt, OSC_I32, 3, S);
    CHECK(osc_op_rope(&tb, &tps, &r) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_op_rope(&tc, &tpt, &rm) == OSC_OK, "%s", osc_last_error());
    CHECK(memcmp(xb, xc, (size_t)(S * H * D) * sizeof(float)) == 0, "mrope text != plain rope");

    /* errors */
    CHECK(osc_op_rope(&tc, &tps, &rm) == OSC_ERR_INVALID_ARG, "mrope with [S] positions accepted");
    CHECK(strstr(osc_last_error(), "rope") != NULL, "message: %s", osc_last_error());
    osc_tensor bad_x = t3(xc, OSC_F32, S, 2 * H, D / 2);
    CHECK(osc_op_rope(&bad_x, &tps, &r) == OSC_ERR_INVALID_ARG, "head_dim mismatch accepted");
    const int bad_sec[3] = {2, 3, 4};
    CHECK(osc_rope_init(&rm, D, 10000.0, OSC_ROPE_DEFAULT, 0, 0, 0, 0, bad_sec) == OSC_ERR_INVALID_ARG,
          "bad mrope_section accepted");
    free(xa); free(xb); free(xc); free(ya); free(yb);
}

/* ---- elementwise ---- */
static void test_elementwise(void) {
    const int64_t R = 7, F = 129, n = R * F;
    float *g = rnd(n, 6), *u = rnd(n, 2), *o = zeros(n), *ref = zeros(n);
    for (int64_t i = 0; i < n; i++) ref[i] = (float)(g[i] / (1.0 + exp(-(double)g[i])) * u[i]);
    osc_tensor tg = t2(g, OSC_F32, R, F), tu = t2(u, OSC_F32, R, F), to = t2(o, OSC_F32, R, F);
    CHECK(osc_op_silu_mul(&to, &tg, &tu) == OSC_OK, "%s", osc_last_error());
    double e = rel_l2(o, ref, (long)n);
    CHECK(e <= TOL, "silu_mul rel %g", e);
    osc_tensor bad = t2(u, OSC_F32, R, F - 1);
    CHECK(osc_op_silu_mul(&to, &tg, &bad) == OSC_ERR_INVALID_ARG, "silu_mul shape mismatch accepted");

    /* gelu at known points, then random vs double erf */
    float gx[5] = {1, -1, 2, -3, 0.5f}, go[5];
    const double gw[5] = {0.841344746069, -0.158655253931, 1.9544997361, -0.00404969409489, 0.345731230637};
    osc_tensor tgx = t1(gx, OSC_F32, 5), tgo = t1(go, OSC_F32, 5);
    CHECK(osc_op_gelu(&tgo, &tgx) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 5; i++) CHECK(near(go[i], gw[i], 2e-6), "gelu(%g) %.9f vs %.9f", gx[i], go[i], gw[i]);
    for (int64_t i = 0; i < n; i++) ref[i] = (float)(0.5 * g[i] * (1.0 + erf(g[i] / sqrt(2.0))));
    CHECK(osc_op_gelu(&to, &tg) == OSC_OK, "%s", osc_last_error());
    e = rel_l2(o, ref, (long)n);
    CHECK(e <= TOL, "gelu rel %g", e);

    /* add (aliasing out = a), add_bias */
    for (int64_t i = 0; i < n; i++) { o[i] = g[i]; ref[i] = g[i] + u[i]; }
    CHECK(osc_op_add(&to, &to, &tu) == OSC_OK, "%s", osc_last_error());
    CHECK(memcmp(o, ref, (size_t)n * sizeof(float)) == 0, "add");
    float *b = rnd(F, 1);
    for (int64_t i = 0; i < n; i++) { o[i] = g[i]; ref[i] = g[i] + b[i % F]; }
    osc_tensor tb = t1(b, OSC_F32, F), tbb = t1(b, OSC_F32, F - 2);
    CHECK(osc_op_add_bias(&to, &tb) == OSC_OK, "%s", osc_last_error());
    CHECK(memcmp(o, ref, (size_t)n * sizeof(float)) == 0, "add_bias");
    CHECK(osc_op_add_bias(&to, &tbb) == OSC_ERR_INVALID_ARG, "add_bias size mismatch accepted");
    osc_tensor ti = t2(g, OSC_I32, R, F);
    CHECK(osc_op_add(&to, &ti, &tu) == OSC_ERR_INVALID_ARG, "add with I32 accepted");

    /* softmax: random rows sum to 1 and match the reference; large inputs */
    for (int64_t r = 0; r < R; r++) {
        double m = -INFINITY, s = 0;
        for (int64_t i = 0; i < F; i++) m = fmax(m, g[r * F + i] * 10.0);
        for (int64_t i = 0; i < F; i++) s += exp(g[r * F + i] * 10.0 - m);
        for (int64_t i = 0; i < F; i++) ref[r * F + i] = (float)(exp(g[r * F + i] * 10.0 - m) / s);
    }
    for (int64_t i = 0; i < n; i++) o[i] = g[i] * 10.0f;
    CHECK(osc_op_softmax(&to) == OSC_OK, "%s", osc_last_error());
    e = rel_l2(o, ref, (long)n);
    CHECK(e <= TOL, "softmax rel %g", e);
    int ok = 1;
    for (int64_t r = 0; r < R; r++) {
        double s = 0;
        for (int64_t i = 0; i < F; i++) s += o[r * F + i];
        ok &= fabs(s - 1.0) < 1e-5;
    }
    CHECK(ok, "softmax rows do not sum to 1");
    float big[6] = {1000, 1001, 1002, -1e30f, 88.8f, -1e30f};
    const double bw[3] = {0.090030573, 0.244728471, 0.665240956};
    osc_tensor tbig = t2(big, OSC_F32, 2, 3);
    CHECK(osc_op_softmax(&tbig) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 3; i++) CHECK(near(big[i], bw[i], 1e-6), "softmax big[%d] %.9f", i, big[i]);
    CHECK(big[3] == 0.0f && big[4] == 1.0f && big[5] == 0.0f, "softmax %g %g %g", big[3], big[4], big[5]);

    /* argmax: first index on ties */
    float am[12] = {1, 3, 3, 2, /* */ 5, 5, 5, 5, /* */ -1, -2, -0.5f, -0.5f};
    int32_t ai[3] = {-1, -1, -1};
    osc_tensor tam = t2(am, OSC_F32, 3, 4), tai = t1(ai, OSC_I32, 3);
    CHECK(osc_op_argmax(&tai, &tam) == OSC_OK, "%s", osc_last_error());
    CHECK(ai[0] == 1 && ai[1] == 0 && ai[2] == 2, "argmax %d %d %d", ai[0], ai[1], ai[2]);
    osc_tensor bad_ai = t1(ai, OSC_I32, 2);
    CHECK(osc_op_argmax(&bad_ai, &tam) == OSC_ERR_INVALID_ARG, "argmax size mismatch accepted");

    /* convert f32 -> bf16 -> f32 */
    float cv[4] = {1.0f, 3.14159265f, -2.5f, 1e-3f}, back[4];
    uint16_t hb[4];
    osc_tensor tcv = t1(cv, OSC_F32, 4), thb = t1(hb, OSC_BF16, 4), tbk = t1(back, OSC_F32, 4);
    CHECK(osc_op_convert(&thb, &tcv) == OSC_OK, "%s", osc_last_error());
    CHECK(osc_op_convert(&tbk, &thb) == OSC_OK, "%s", osc_last_error());
    CHECK(back[0] == 1.0f && back[1] == 3.140625f && back[2] == -2.5f && fabsf(back[3] - 1e-3f) < 4e-6f,
          "convert %g %g %g %g", back[0], back[1], back[2], back[3]);
    osc_tensor bad_bk = t1(back, OSC_F32, 3);
    CHECK(osc_op_convert(&bad_bk, &thb) == OSC_ERR_INVALID_ARG, "convert size mismatch accepted");
    free(g); free(u); free(o); free(ref); free(b);
}

/* ---- attention ---- */
static void attn_ref(float *out, const float *q, const float *k, const float *v, int64_t S, int64_t T, int64_t Hq,
                     int64_t Hkv, int64_t D, int64_t q_pos0, float scale, int causal) {
    double *sc = malloc((size_t)T * sizeof(double));
    for (int64_t i = 0; i < S; i++)
        for (int64_t h = 0; h < Hq; h++) {
            int64_t g = h / (Hq / Hkv), nk = causal ? q_pos0 + i + 1 : T;
            double m = -INFINITY, s = 0;
            for (int64_t j = 0; j < nk; j++) {
                double d = 0;
                for (int64_t c = 0; c < D; c++) d += (double)q[(i * Hq + h) * D + c] * k[(j * Hkv + g) * D + c];
                sc[j] = d * scale;
                m = fmax(m, sc[j]);
            }
            for (int64_t j = 0; j < nk; j++) s += (sc[j] = exp(sc[j] - m));
            for (int64_t c = 0; c < D; c++) {
                double a = 0;
                for (int64_t j = 0; j < nk; j++) a += sc[j] * v[(j * Hkv + g) * D + c];
                out[(i * Hq + h) * D + c] = (float)(a / s);
            }
        }
    free(sc);
}

static void test_attention_case(int64_t S, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t q_pos0, int causal,
                                float amp) {
    float *q = rnd(S * Hq * D, amp), *k = rnd(T * Hkv * D, amp), *v = rnd(T * Hkv * D, 1);
    float *o = zeros(S * Hq * D), *r = zeros(S * Hq * D);
    float scale = (float)(1.0 / sqrt((double)D));
    osc_tensor to = t3(o, OSC_F32, S, Hq, D), tq = t3(q, OSC_F32, S, Hq, D), tk = t3(k, OSC_F32, T, Hkv, D),
               tv = t3(v, OSC_F32, T, Hkv, D);
    osc_status st = osc_op_attention(&to, &tq, &tk, &tv, q_pos0, scale, causal);
    CHECK(st == OSC_OK, "attention: %s", osc_last_error());
    attn_ref(r, q, k, v, S, T, Hq, Hkv, D, q_pos0, scale, causal);
    double e = rel_l2(o, r, (long)(S * Hq * D));
    CHECK(e <= TOL, "attention S=%lld T=%lld Hq=%lld Hkv=%lld D=%lld pos0=%lld causal=%d amp=%g rel %g",
          (long long)S, (long long)T, (long long)Hq, (long long)Hkv, (long long)D, (long long)q_pos0, causal,
          (double)amp, e);
    free(q); free(k); free(v); free(o); free(r);
}

static void test_attention(void) {
    /* causal prefill, GQA groups 1, 2, 4 */
    test_attention_case(1, 1, 2, 1, 8, 0, 1, 1);
    test_attention_case(5, 5, 4, 4, 16, 0, 1, 1);
    test_attention_case(5, 5, 4, 2, 16, 0, 1, 1);
    test_attention_case(67, 67, 8, 2, 32, 0, 1, 2);
    test_attention_case(300, 300, 4, 1, 16, 0, 1, 2);
    test_attention_case(67, 67, 2, 2, 128, 0, 1, 1);
    /* decode (S = 1, q_pos0 = T-1) and chunked prefill after a cache */
    test_attention_case(1, 300, 4, 1, 64, 299, 1, 2);
    test_attention_case(1, 5, 4, 2, 16, 4, 1, 1);
    test_attention_case(1, 67, 8, 2, 128, 66, 1, 1);
    test_attention_case(3, 300, 4, 2, 16, 297, 1, 1);
    test_attention_case(5, 130, 4, 4, 16, 100, 1, 1); /* keys past the window are ignored */
    /* large scores (peaky softmax) */
    test_attention_case(67, 67, 4, 2, 64, 0, 1, 8);
    /* non-causal (encoders) */
    test_attention_case(5, 5, 4, 4, 16, 0, 0, 1);
    test_attention_case(67, 67, 4, 1, 80, 0, 0, 2);
    test_attention_case(4, 300, 4, 2, 16, 0, 0, 1);
    test_attention_case(300, 300, 2, 2, 16, 0, 0, 1);

    /* errors */
    float buf[4 * 3 * 8] = {0}, ob[4 * 3 * 8];
    osc_tensor q = t3(buf, OSC_F32, 4, 3, 8), k = t3(buf, OSC_F32, 4, 2, 8), o = t3(ob, OSC_F32, 4, 3, 8);
    CHECK(osc_op_attention(&o, &q, &k, &k, 0, 1.0f, 1) == OSC_ERR_INVALID_ARG, "Hq %% Hkv != 0 accepted");
    CHECK(strstr(osc_last_error(), "attention") != NULL, "message: %s", osc_last_error());
    osc_tensor k1 = t3(buf, OSC_F32, 4, 1, 8);
    CHECK(osc_op_attention(&o, &q, &k1, &k1, 1, 1.0f, 1) == OSC_ERR_INVALID_ARG, "q_pos0 + S > T accepted");
    CHECK(osc_op_attention(&o, &q, &k1, &k1, 0, 1.0f, 1) == OSC_OK, "%s", osc_last_error());
    osc_tensor kd = t3(buf, OSC_F32, 4, 1, 4);
    CHECK(osc_op_attention(&o, &q, &kd, &kd, 0, 1.0f, 1) == OSC_ERR_INVALID_ARG, "head dim mismatch accepted");
    osc_tensor ob16 = t3(ob, OSC_BF16, 4, 3, 8);
    CHECK(osc_op_attention(&ob16, &q, &k1, &k1, 0, 1.0f, 1) == OSC_ERR_INVALID_ARG, "bf16 out on cpu accepted");
}

/* segments of packed rows: each against the naive reference on its own rows; rows outside
 * every segment untouched; bad segment tables rejected with a message */
static void test_attention_varlen(void) {
    const int32_t cu[] = {2, 7, 7, 40, 41, 90}; /* 5 segments, one empty; rows 0-1 and 90-92 outside */
    const int nseg = 5, N = 93, Hq = 4, Hkv = 2, D = 16;
    for (int causal = 0; causal < 2; causal++) {
        float *q = rnd((int64_t)N * Hq * D, 2), *k = rnd((int64_t)N * Hkv * D, 2), *v = rnd((int64_t)N * Hkv * D, 1);
        float *o = zeros((int64_t)N * Hq * D), *r = zeros((int64_t)N * Hq * D);
        for (int64_t i = 0; i < (int64_t)N * Hq * D; i++) o[i] = r[i] = 7.0f;
        const float scale = 0.25f;
        osc_tensor to = t3(o, OSC_F32, N, Hq, D), tq = t3(q, OSC_F32, N, Hq, D), tk = t3(k, OSC_F32, N, Hkv, D),
                   tv = t3(v, OSC_F32, N, Hkv, D);
        CHECK(osc_op_attention_varlen(&to, &tq, &tk, &tv, cu, nseg, scale, causal) == OSC_OK, "varlen: %s",
              osc_last_error());
        for (int sgi = 0; sgi < nseg; sgi++) {
            int64_t a = cu[sgi], n = cu[sgi + 1] - cu[sgi];
            if (n) attn_ref(r + a * Hq * D, q + a * Hq * D, k + a * Hkv * D, v + a * Hkv * D, n, n, Hq, Hkv, D, 0, scale, causal);
        }
        double e = rel_l2(o, r, (long)N * Hq * D);
        CHECK(e <= TOL, "varlen causal=%d rel %g", causal, e);
        int outside = 0;
        for (int64_t i = 0; i < (int64_t)2 * Hq * D; i++) outside += o[i] != 7.0f;
        for (int64_t i = (int64_t)90 * Hq * D; i < (int64_t)N * Hq * D; i++) outside += o[i] != 7.0f;
        CHECK(outside == 0, "varlen changed %d values outside the segments", outside);
        osc_tensor tq2 = t3(q, OSC_F32, N, Hq, D);
        const int32_t bad1[] = {0, 10, 5}, bad2[] = {0, 94}, bad3[] = {-1, 3};
        CHECK(osc_op_attention_varlen(&to, &tq2, &tk, &tv, bad1, 2, scale, causal) == OSC_ERR_INVALID_ARG &&
                  strstr(osc_last_error(), "segment 1"), "out-of-order segments: %s", osc_last_error());
        CHECK(osc_op_attention_varlen(&to, &tq2, &tk, &tv, bad2, 1, scale, causal) == OSC_ERR_INVALID_ARG,
              "segment beyond the rows accepted");
        CHECK(osc_op_attention_varlen(&to, &tq2, &tk, &tv, bad3, 1, scale, causal) == OSC_ERR_INVALID_ARG,
              "negative offset accepted");
        CHECK(osc_op_attention_varlen(&to, &tq2, &tk, &tv, NULL, 1, scale, causal) == OSC_ERR_INVALID_ARG,
              "missing table accepted");
        CHECK(osc_op_attention_varlen(&to, &tq2, &tk, &tv, cu, 0, scale, causal) == OSC_OK, "no segments: %s",
              osc_last_error());
        free(q); free(k); free(v); free(o); free(r);
    }
}

/* residual add + RMSNorm in one call: hand-computed values and the argument errors */
static void test_add_rmsnorm(void) {
    /* x + d = [1,2,3,4] (as in test_norms): mean of squares 7.5 */
    float x[4] = {0.5f, 2.5f, 1, 4}, d[4] = {0.5f, -0.5f, 2, 0}, w[4] = {1, 1, 2, 0.5f}, o[4];
    const double want[4] = {0.365148372, 0.730296743, 2.190890230, 0.730296743}, sum[4] = {1, 2, 3, 4};
    osc_tensor tx = t2(x, OSC_F32, 1, 4), td = t2(d, OSC_F32, 1, 4), tw = t1(w, OSC_F32, 4), to = t2(o, OSC_F32, 1, 4);
    CHECK(osc_op_add_rmsnorm(&tx, &td, &to, &tw, 0.0f) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 4; i++) {
        CHECK(near(x[i], sum[i], 1e-7), "add_rmsnorm x[%d] %.9f vs %.9f", i, x[i], sum[i]);
        CHECK(near(o[i], want[i], 1e-6), "add_rmsnorm out[%d] %.9f vs %.9f", i, o[i], want[i]);
    }
    /* out aliasing x or d, and a d of another shape, are refused */
    CHECK(osc_op_add_rmsnorm(&tx, &td, &tx, &tw, 0.0f) == OSC_ERR_INVALID_ARG, "alias out = x accepted");
    CHECK(strstr(osc_last_error(), "alias") != NULL, "message: %s", osc_last_error());
    CHECK(osc_op_add_rmsnorm(&tx, &td, &td, &tw, 0.0f) == OSC_ERR_INVALID_ARG, "alias out = d accepted");
    osc_tensor td3 = t2(d, OSC_F32, 1, 3);
    CHECK(osc_op_add_rmsnorm(&tx, &td3, &to, &tw, 0.0f) == OSC_ERR_INVALID_ARG, "d [1,3] accepted");
}

static void test_matmul_glu(void) {
    /* x = [1, 2]; gate rows [1,0], [0,1] -> [1, 2]; up rows [2,0], [1,1] -> [2, 3];
     * silu(1) = 0.731058579, silu(2) = 1.761594156 */
    float x[2] = {1, 2}, wg[4] = {1, 0, 0, 1}, wu[4] = {2, 0, 1, 1}, o[2], u[2];
    const double want[2] = {2 * 0.731058579, 3 * 1.761594156};
    osc_tensor tx = t2(x, OSC_F32, 1, 2), tg = t2(wg, OSC_F32, 2, 2), tu = t2(wu, OSC_F32, 2, 2);
    osc_tensor to = t2(o, OSC_F32, 1, 2), tup = t2(u, OSC_F32, 1, 2);
    CHECK(osc_op_matmul_glu(&to, &tup, &tx, &tg, &tu) == OSC_OK, "%s", osc_last_error());
    for (int i = 0; i < 2; i++) CHECK(near(o[i], want[i], 1e-6), "matmul_glu out[%d] %.9f vs %.9f", i, o[i], want[i]);
    /* out aliasing up, and weights of different shapes, are refused */
    CHECK(osc_op_matmul_glu(&to, &to, &tx, &tg, &tu) == OSC_ERR_INVALID_ARG, "alias out = up accepted");
    osc_tensor tu1 = t2(wu, OSC_F32, 1, 2);
    CHECK(osc_op_matmul_glu(&to, &tup, &tx, &tg, &tu1) == OSC_ERR_INVALID_ARG, "w_up [1,2] accepted");
}

int main(void) {
    osc_cpu_set_threads(0);
    CHECK(osc_cpu_get_threads() >= 1, "threads %d", osc_cpu_get_threads());
    test_matmul();
    test_embed();
    test_norms();
    test_add_rmsnorm();
    test_matmul_glu();
    test_rope();
    test_elementwise();
    test_attention();
    test_attention_varlen();
    osc_cpu_set_threads(1); /* single-threaded paths give the same answers */
    test_attention_case(67, 67, 4, 2, 32, 0, 1, 1);
    test_matmul_case(7, 13, 5, 1);
    osc_cpu_set_threads(0);
    return check_done("test_ops_cpu");
}
