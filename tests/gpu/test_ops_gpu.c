/* tests/gpu/test_ops_gpu.c: every CUDA op against its CPU (float32) twin.
 *
 * Inputs are random (fixed seed, never all zero) and rounded to bf16 on the host first, so the
 * CPU reference and the GPU see the same values and only compute precision differs. GPU tensors
 * are BF16 (uploaded with osc_cuda_malloc + osc_cuda_memcpy_h2d), results come back and are
 * compared by relative L2 error: <= 2e-2 on bf16 paths; embed, convert and argmax are exact.
 * Shapes include sizes that are not multiples of any tile. Exits 77 (skipped) without a GPU. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/check.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "kernels/rope.h"
#ifdef OSC_HAVE_CUDA
#include "kernels/cuda/launch.h"
#endif

#define TOL 2e-2

#ifndef OSC_HAVE_CUDA
int main(void) {
    printf("no GPU: skipped (built without CUDA)\n");
    return OSC_TEST_SKIP;
}
#else

/* ---- host helpers ------------------------------------------------------------------------ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { /* uniform in [-1, 1) */
    return check_frand(&g_rng);
}
static uint32_t urand(uint32_t n) { frand(); return (uint32_t)((g_rng >> 11) % n); }

static float *hrand(int64_t n, float scale, float offset) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = osc_bf16_to_f32(osc_f32_to_bf16(offset + scale * frand()));
    return p;
}
static float *hzeros(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static float *hcopy(const float *a, int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(p, a, (size_t)n * sizeof(float));
    return p;
}

/* ---- device tensors ---------------------------------------------------------------------- */

static int g_dev_fail;
#define DEV_OK(call)                                                                  \
    do {                                                                              \
        osc_status s_ = (call);                                                       \
        if (s_ != OSC_OK) {                                                           \
            g_dev_fail = 1;                                                           \
            CHECK(s_ == OSC_OK, "%s -> %s", #call, osc_last_error());                 \
        }                                                                             \
    } while (0)

static osc_tensor gpu_empty(osc_dtype dt, int nd, const int64_t *ne) {
    osc_tensor t = osc_tensor_make(NULL, dt, OSC_DEV_CUDA, nd, ne);
    size_t nb = osc_tensor_nbytes(&t);
    void *p = NULL;
    DEV_OK(osc_cuda_malloc(&p, nb ? nb : 2));
    t.data = p;
    return t;
}
static osc_tensor gpu_from_f32(const float *h, osc_dtype dt, int nd, const int64_t *ne) {
    osc_tensor t = gpu_empty(dt, nd, ne);
    int64_t n = osc_tensor_nelem(&t);
    if (!t.data) return t;
    if (dt == OSC_BF16) {
        uint16_t *b = malloc((size_t)(n > 0 ? n : 1) * 2);
        for (int64_t i = 0; i < n; i++) b[i] = osc_f32_to_bf16(h[i]);
        DEV_OK(osc_cuda_memcpy_h2d(t.data, b, (size_t)n * 2));
        free(b);
    } else {
        DEV_OK(osc_cuda_memcpy_h2d(t.data, h, (size_t)n * 4));
    }
    return t;
}
static osc_tensor gpu_i32(const int32_t *h, int nd, const int64_t *ne) {
    osc_tensor t = gpu_empty(OSC_I32, nd, ne);
    if (t.data) DEV_OK(osc_cuda_memcpy_h2d(t.data, h, osc_tensor_nbytes(&t)));
    return t;
}
/* Download any F32/BF16 device tensor as float32. */
static void gpu_to_f32(const osc_tensor *t, float *h) {
    int64_t n = osc_tensor_nelem(t);
    if (!t->data) { memset(h, 0, (size_t)n * 4); return; }
    if (t->dt == OSC_BF16) {
        uint16_t *b = malloc((size_t)(n > 0 ? n : 1) * 2);
        DEV_OK(osc_cuda_memcpy_d2h(b, t->data, (size_t)n * 2));
        for (int64_t i = 0; i < n; i++) h[i] = osc_bf16_to_f32(b[i]);
        free(b);
    } else {
        DEV_OK(osc_cuda_memcpy_d2h(h, t->data, (size_t)n * 4));
    }
}
static void gpu_free(osc_tensor *t) {
    osc_cuda_free(t->data);
    t->data = NULL;
}
static osc_tensor cpu_t(float *h, int nd, const int64_t *ne) { return osc_tensor_make(h, OSC_F32, OSC_DEV_CPU, nd, ne); }

static void report(const char *what, double err, double tol) {
    printf("%-64s rel_l2 %.3e %s\n", what, err, err <= tol ? "ok" : "FAIL");
    CHECK(err <= tol, "%s: rel_l2 %.3e > %.1e", what, err, tol);
}

/* ---- matmul ------------------------------------------------------------------------------ */
static void test_matmul(void) {
    static const int64_t shapes[][3] = {{1, 7, 64},     {7, 129, 1000}, {64, 64, 64},     {129, 1000, 7},
                                        {1000, 129, 64}, {1, 1000, 1000}, {1000, 1000, 129}, {7, 1, 129},
                                        {1000, 7, 1000}, {1, 1, 1},       {129, 64, 1},
                                        /* the decode GEMV (M <= 4, K % 8 == 0), odd N */
                                        {2, 33, 3584},   {3, 17, 256},    {4, 1031, 520},  {1, 2050, 776}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        float *x = hrand(M * K, 1.f, 0.f), *w = hrand(N * K, 0.5f, 0.f), *b = hrand(N, 1.f, 0.f);
        int64_t xs[2] = {M, K}, ws[2] = {N, K}, os[2] = {M, N};
        osc_tensor gx = gpu_from_f32(x, OSC_BF16, 2, xs), gw = gpu_from_f32(w, OSC_BF16, 2, ws);
        osc_tensor gb = gpu_from_f32(b, OSC_BF16, 1, &N);
        for (int variant = 0; variant < 4; variant++) {
            int use_bias = variant & 1, out_f32 = variant >> 1;
            float *ref = hzeros(M * N), *got = hzeros(M * N);
            osc_tensor cx = cpu_t(x, 2, xs), cw = cpu_t(w, 2, ws), cb = cpu_t(b, 1, &N), co = cpu_t(ref, 2, os);
            CHECK(osc_op_matmul(&co, &cx, &cw, use_bias ? &cb : NULL) == OSC_OK, "cpu matmul: %s", osc_last_error());
            osc_tensor go = gpu_empty(out_f32 ? OSC_F32 : OSC_BF16, 2, os);
            DEV_OK(osc_op_matmul(&go, &gx, &gw, use_bias ? &gb : NULL));
            gpu_to_f32(&go, got);
            char name[128];
            snprintf(name, sizeof name, "matmul M=%lld N=%lld K=%lld bias=%d out=%s", (long long)M, (long long)N,
                     (long long)K, use_bias, out_f32 ? "F32" : "BF16");
            report(name, rel_l2(got, ref, M * N), TOL);
            gpu_free(&go);
            free(ref); free(got);
        }
        gpu_free(&gx); gpu_free(&gw); gpu_free(&gb);
        free(x); free(w); free(b);
    }
}

/* ---- norms ------------------------------------------------------------------------------- */
static void test_norms(void) {
    static const int64_t shapes[][2] = {{1, 64}, {7, 129}, {129, 1000}, {3, 3584}, {17, 1280}, {2, 7}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t R = shapes[si][0], D = shapes[si][1], n = R * D, xs[2] = {R, D};
        float *x = hrand(n, 2.f, 0.3f), *w = hrand(D, 0.5f, 1.f), *b = hrand(D, 0.5f, 0.f);
        osc_tensor gx = gpu_from_f32(x, OSC_BF16, 2, xs), gw = gpu_from_f32(w, OSC_BF16, 1, &D);
        osc_tensor gb = gpu_from_f32(b, OSC_BF16, 1, &D);
        for (int ln = 0; ln < 2; ln++) {
            for (int alias = 0; alias < 2; alias++) {
                float *ref = hzeros(n), *got = hzeros(n);
                osc_tensor cx = cpu_t(x, 2, xs), cw = cpu_t(w, 1, &D), cb = cpu_t(b, 1, &D), co = cpu_t(ref, 2, xs);
                osc_status cs = ln ? osc_op_layernorm(&co, &cx, &cw, &cb, 1e-5f) : osc_op_rmsnorm(&co, &cx, &cw, 1e-6f);
                CHECK(cs == OSC_OK, "cpu norm: %s", osc_last_error());
                osc_tensor gin = alias ? gpu_from_f32(x, OSC_BF16, 2, xs) : gx;
                osc_tensor go = alias ? gin : gpu_empty(OSC_BF16, 2, xs);
                if (ln) DEV_OK(osc_op_layernorm(&go, &gin, &gw, &gb, 1e-5f));
                else DEV_OK(osc_op_rmsnorm(&go, &gin, &gw, 1e-6f));
                gpu_to_f32(&go, got);
                char name[128];
                snprintf(name, sizeof name, "%s R=%lld D=%lld%s", ln ? "layernorm" : "rmsnorm", (long long)R,
                         (long long)D, alias ? " (in place)" : "");
                report(name, rel_l2(got, ref, n), TOL);
                gpu_free(&go);
                free(ref); free(got);
            }
        }
        gpu_free(&gx); gpu_free(&gw); gpu_free(&gb);
        free(x); free(w); free(b);
    }
}

/* ---- add + rmsnorm in one pass: vs the CPU reference, and bitwise vs the two GPU ops -------- */
static void test_add_rmsnorm(void) {
    static const int64_t shapes[][2] = {{1, 3584}, {7, 1000}, {3, 129}, {2, 7}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t R = shapes[si][0], D = shapes[si][1], n = R * D, xs[2] = {R, D};
        float *x = hrand(n, 2.f, 0.3f), *d = hrand(n, 1.f, 0.f), *w = hrand(D, 0.5f, 1.f);
        float *cx = malloc((size_t)n * 4), *ref = hzeros(n), *got = hzeros(n), *gotx = hzeros(n);
        float *sep = hzeros(n), *sepx = hzeros(n);
        memcpy(cx, x, (size_t)n * 4);
        osc_tensor tx = cpu_t(cx, 2, xs), td = cpu_t(d, 2, xs), tw = cpu_t(w, 1, &D), to = cpu_t(ref, 2, xs);
        CHECK(osc_op_add_rmsnorm(&tx, &td, &to, &tw, 1e-6f) == OSC_OK, "cpu add_rmsnorm: %s", osc_last_error());
        osc_tensor gx = gpu_from_f32(x, OSC_BF16, 2, xs), gd = gpu_from_f32(d, OSC_BF16, 2, xs);
        osc_tensor gw = gpu_from_f32(w, OSC_BF16, 1, &D), go = gpu_empty(OSC_BF16, 2, xs);
        DEV_OK(osc_op_add_rmsnorm(&gx, &gd, &go, &gw, 1e-6f));
        gpu_to_f32(&go, got);
        gpu_to_f32(&gx, gotx);
        osc_tensor sx = gpu_from_f32(x, OSC_BF16, 2, xs), so = gpu_empty(OSC_BF16, 2, xs);
        DEV_OK(osc_op_add(&sx, &sx, &gd));
        DEV_OK(osc_op_rmsnorm(&so, &sx, &gw, 1e-6f));
        gpu_to_f32(&so, sep);
        gpu_to_f32(&sx, sepx);
        long diff = 0;
        for (int64_t i = 0; i < n; i++) diff += got[i] != sep[i] || gotx[i] != sepx[i];
        char name[128];
        snprintf(name, sizeof name, "add_rmsnorm R=%lld D=%lld", (long long)R, (long long)D);
        report(name, rel_l2(got, ref, n), TOL);
        snprintf(name, sizeof name, "add_rmsnorm R=%lld D=%lld: x after", (long long)R, (long long)D);
        report(name, rel_l2(gotx, cx, n), TOL);
        printf("%-64s %ld values differ from add + rmsnorm %s\n", name, diff, diff ? "FAIL" : "ok");
        CHECK(diff == 0, "add_rmsnorm R=%lld D=%lld: %ld values differ from the two ops", (long long)R, (long long)D,
              diff);
        gpu_free(&gx); gpu_free(&gd); gpu_free(&gw); gpu_free(&go); gpu_free(&sx); gpu_free(&so);
        free(x); free(d); free(w); free(cx); free(ref); free(got); free(gotx); free(sep); free(sepx);
    }
}

/* ---- gate/up products + SwiGLU in one op: vs the CPU, and (GEMV rows kernel, F >= 1024)
 * bitwise vs the three GPU ops ------------------------------------------------------------- */
static void test_matmul_glu(void) {
    /* M, F, K, stacked weights (0: two allocations, the op falls back to the three ops) */
    static const int64_t shapes[][4] = {{1, 1100, 3584, 1}, {2, 1031, 520, 1}, {4, 17, 256, 1},
                                        {3, 7, 8, 1},       {5, 33, 64, 1},    {1, 1030, 256, 0}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t M = shapes[si][0], F = shapes[si][1], K = shapes[si][2], n = M * F;
        const int stacked = (int)shapes[si][3];
        float *x = hrand(M * K, 1.f, 0.f), *w = hrand(2 * F * K, 0.5f, 0.f);
        float *ref = hzeros(n), *rup = hzeros(n), *got = hzeros(n), *sep = hzeros(n);
        int64_t xs[2] = {M, K}, ws[2] = {F, K}, w2[2] = {2 * F, K}, os[2] = {M, F};
        osc_tensor cx = cpu_t(x, 2, xs), cg = cpu_t(w, 2, ws), cu = cpu_t(w + F * K, 2, ws);
        osc_tensor co = cpu_t(ref, 2, os), cup = cpu_t(rup, 2, os);
        CHECK(osc_op_matmul_glu(&co, &cup, &cx, &cg, &cu) == OSC_OK, "cpu matmul_glu: %s", osc_last_error());
        osc_tensor gx = gpu_from_f32(x, OSC_BF16, 2, xs), gw = gpu_from_f32(w, OSC_BF16, 2, w2), gw2 = {0};
        osc_tensor gg = osc_tensor_make(gw.data, OSC_BF16, OSC_DEV_CUDA, 2, ws);
        osc_tensor gu = osc_tensor_make((char *)gw.data + (size_t)F * K * 2, OSC_BF16, OSC_DEV_CUDA, 2, ws);
        if (!stacked) {
            gw2 = gpu_from_f32(w + F * K, OSC_BF16, 2, ws);
            gu = gw2;
        }
        osc_tensor go = gpu_empty(OSC_BF16, 2, os), gup = gpu_empty(OSC_BF16, 2, os);
        DEV_OK(osc_op_matmul_glu(&go, &gup, &gx, &gg, &gu));
        gpu_to_f32(&go, got);
        osc_tensor so = gpu_empty(OSC_BF16, 2, os);
        DEV_OK(osc_op_matmul(&so, &gx, &gg, NULL));
        DEV_OK(osc_op_matmul(&gup, &gx, &gu, NULL));
        DEV_OK(osc_op_silu_mul(&so, &so, &gup));
        gpu_to_f32(&so, sep);
        char name[128];
        snprintf(name, sizeof name, "matmul_glu M=%lld F=%lld K=%lld%s", (long long)M, (long long)F, (long long)K,
                 stacked ? "" : " (separate weights)");
        report(name, rel_l2(got, ref, n), TOL);
        if (F >= 1024 && M <= 4) {
            long diff = 0;
            for (int64_t i = 0; i < n; i++) diff += got[i] != sep[i];
            printf("%-64s %ld values differ from matmul x2 + silu_mul %s\n", name, diff, diff ? "FAIL" : "ok");
            CHECK(diff == 0, "%s: %ld values differ from the three ops", name, diff);
        }
        gpu_free(&gx);
        gpu_free(&gw);
        gpu_free(&go);
        gpu_free(&gup);
        gpu_free(&so);
        if (!stacked) gpu_free(&gw2);
        free(x);
        free(w);
        free(ref);
        free(rup);
        free(got);
        free(sep);
    }
}

/* ---- rope -------------------------------------------------------------------------------- */
static void test_rope(void) {
    static const int cases[][4] = {/* S, H, head_dim, mrope */
                                   {1, 28, 128, 1}, {7, 4, 128, 0}, {130, 28, 128, 1}, {17, 3, 64, 0},
                                   {130, 2, 64, 1},  {9, 16, 80, 0}, {33, 5, 80, 1}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int S = cases[ci][0], H = cases[ci][1], Dh = cases[ci][2], mr = cases[ci][3];
        int sec[3];
        if (Dh == 128) { sec[0] = 16; sec[1] = 24; sec[2] = 24; }
        else if (Dh == 64) { sec[0] = 8; sec[1] = 12; sec[2] = 12; }
        else { sec[0] = 8; sec[1] = 16; sec[2] = 16; }
        osc_rope rope;
        CHECK(osc_rope_init(&rope, Dh, 1e6, OSC_ROPE_DEFAULT, 1.f, 1.f, 1.f, 0, mr ? sec : NULL) == OSC_OK,
              "rope_init: %s", osc_last_error());
        int64_t n = (int64_t)S * H * Dh, xs[3] = {S, H, Dh};
        int np = mr ? 3 * S : S;
        int32_t *pos = malloc((size_t)np * sizeof(int32_t));
        int base = (int)urand(3000);
        for (int i = 0; i < np; i++) pos[i] = mr ? base + (int)urand(60) : base + i;
        float *x = hrand(n, 1.f, 0.f), *ref = hcopy(x, n), *got = hzeros(n);
        int64_t ps2[2] = {3, S}, ps1[1] = {S};
        osc_tensor cx = cpu_t(ref, 3, xs);
        osc_tensor cp = mr ? osc_tensor_make(pos, OSC_I32, OSC_DEV_CPU, 2, ps2) : osc_tensor_make(pos, OSC_I32, OSC_DEV_CPU, 1, ps1);
        CHECK(osc_op_rope(&cx, &cp, &rope) == OSC_OK, "cpu rope: %s", osc_last_error());
        osc_tensor gx = gpu_from_f32(x, OSC_BF16, 3, xs);
        osc_tensor gp = mr ? gpu_i32(pos, 2, ps2) : gpu_i32(pos, 1, ps1);
        DEV_OK(osc_op_rope(&gx, &gp, &rope));
        gpu_to_f32(&gx, got);
        char name[128];
        snprintf(name, sizeof name, "rope S=%d H=%d Dh=%d %s pos0=%d", S, H, Dh, mr ? "mrope" : "plain", base);
        report(name, rel_l2(got, ref, n), TOL);
        gpu_free(&gx); gpu_free(&gp);
        free(pos); free(x); free(ref); free(got);
    }
}

/* ---- the graph step's RoPE + cache append in one launch: bitwise equal to osc_op_rope +
 * osc_cuda_kv_append (q, k and both caches), and q within TOL of the CPU rope ------------- */
static void test_rope_kv_append(void) {
    static const int cases[][5] = {
        /* B, Hq, Hkv, head_dim, mrope */ {3, 4, 2, 128, 0}, {2, 7, 1, 64, 1}, {1, 28, 4, 128, 1}};
    enum { T = 16, TS = 4 };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int B = cases[ci][0], Hq = cases[ci][1], Hkv = cases[ci][2], D = cases[ci][3], mr = cases[ci][4];
        int sec[3] = {D / 8, D * 3 / 16, D * 3 / 16};
        osc_rope rope;
        CHECK(osc_rope_init(&rope, D, 1e6, OSC_ROPE_DEFAULT, 1.f, 1.f, 1.f, 0, mr ? sec : NULL) == OSC_OK,
              "rope_init: %s", osc_last_error());
        const int64_t nq = (int64_t)B * Hq * D, nk = (int64_t)B * Hkv * D, ncache = (int64_t)T * Hkv * D;
        int32_t pos[3 * 4], lens[4];
        for (int i = 0; i < 3 * B; i++) pos[i] = (int)urand(5000);
        for (int b = 0; b < B; b++) lens[b] = 1 + (int)urand(T);
        float *hq = hrand(nq, 1.f, 0.f), *hk = hrand(nk, 1.f, 0.f), *hv = hrand(nk, 1.f, 0.f);
        int64_t qs[3] = {B, Hq, D}, ks[3] = {B, Hkv, D}, ps2[2] = {3, B}, ps1[1] = {B}, cs[1] = {ncache};
        osc_tensor gp = mr ? gpu_i32(pos, 2, ps2) : gpu_i32(pos, 1, ps1), gl = gpu_i32(lens, 1, ps1);
        osc_tensor q[2], k[2], v = gpu_from_f32(hv, OSC_BF16, 3, ks), cache[2][2][4];
        void *tabs[2];
        for (int r = 0; r < 2; r++) { /* r 0: fused launch, 1: the two ops */
            void *htab[2 * TS] = {0};
            q[r] = gpu_from_f32(hq, OSC_BF16, 3, qs);
            k[r] = gpu_from_f32(hk, OSC_BF16, 3, ks);
            for (int kvs = 0; kvs < 2; kvs++)
                for (int b = 0; b < B; b++) {
                    float *z = hzeros(ncache);
                    cache[r][kvs][b] = gpu_from_f32(z, OSC_BF16, 1, cs);
                    htab[kvs * TS + b] = cache[r][kvs][b].data;
                    free(z);
                }
            DEV_OK(osc_cuda_malloc(&tabs[r], sizeof htab));
            DEV_OK(osc_cuda_memcpy_h2d(tabs[r], htab, sizeof htab));
        }
        DEV_OK(osc_cuda_rope_kv_append(q[0].data, k[0].data, v.data, (int64_t)Hq * D, (int64_t)Hkv * D,
                                       (int64_t)Hkv * D, gp.data, B, &rope, Hq, Hkv, tabs[0], TS, gl.data, B));
        DEV_OK(osc_op_rope(&q[1], &gp, &rope));
        DEV_OK(osc_op_rope(&k[1], &gp, &rope));
        DEV_OK(osc_cuda_kv_append(k[1].data, v.data, tabs[1], TS, gl.data, B, Hkv * D));
        long diff = 0;
        float *a = hzeros(nq > ncache ? nq : ncache), *c = hzeros(nq > ncache ? nq : ncache);
        gpu_to_f32(&q[0], a);
        gpu_to_f32(&q[1], c);
        for (int64_t i = 0; i < nq; i++) diff += a[i] != c[i];
        osc_tensor cq = cpu_t(hq, 3, qs);
        osc_tensor cp = mr ? osc_tensor_make(pos, OSC_I32, OSC_DEV_CPU, 2, ps2)
                           : osc_tensor_make(pos, OSC_I32, OSC_DEV_CPU, 1, ps1);
        CHECK(osc_op_rope(&cq, &cp, &rope) == OSC_OK, "cpu rope: %s", osc_last_error());
        char name[128];
        snprintf(name, sizeof name, "rope_kv_append B=%d Hq=%d Hkv=%d Dh=%d %s", B, Hq, Hkv, D, mr ? "mrope" : "plain");
        report(name, rel_l2(a, hq, nq), TOL);
        gpu_to_f32(&k[0], a);
        gpu_to_f32(&k[1], c);
        for (int64_t i = 0; i < nk; i++) diff += a[i] != c[i];
        for (int kvs = 0; kvs < 2; kvs++)
            for (int b = 0; b < B; b++) {
                gpu_to_f32(&cache[0][kvs][b], a);
                gpu_to_f32(&cache[1][kvs][b], c);
                for (int64_t i = 0; i < ncache; i++) diff += a[i] != c[i];
            }
        printf("%-64s %ld values differ from rope + kv_append %s\n", name, diff, diff ? "FAIL" : "ok");
        CHECK(diff == 0, "%s: %ld values differ from rope + kv_append", name, diff);
        for (int r = 0; r < 2; r++) {
            gpu_free(&q[r]);
            gpu_free(&k[r]);
            osc_cuda_free(tabs[r]);
            for (int kvs = 0; kvs < 2; kvs++)
                for (int b = 0; b < B; b++) gpu_free(&cache[r][kvs][b]);
        }
        gpu_free(&v);
        gpu_free(&gp);
        gpu_free(&gl);
        free(hq);
        free(hk);
        free(hv);
        free(a);
        free(c);
    }
}

/* ---- element-wise -------------------------------------------------------------------------- */
static void test_elementwise(void) {
    static const int64_t shapes[][2] = {{1, 1}, {1, 7}, {7, 129}, {3, 1000}, {5, 4864}, {1, 18944}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t R = shapes[si][0], F = shapes[si][1], n = R * F, xs[2] = {R, F};
        float *a = hrand(n, 4.f, 0.f), *b = hrand(n, 2.f, 0.f), *bias = hrand(F, 1.f, 0.f);
        osc_tensor ga = gpu_from_f32(a, OSC_BF16, 2, xs), gb = gpu_from_f32(b, OSC_BF16, 2, xs);
        osc_tensor gbias = gpu_from_f32(bias, OSC_BF16, 1, &F);
        for (int op = 0; op < 4; op++) {
            float *ref = op == 3 ? hcopy(a, n) : hzeros(n), *got = hzeros(n);
            osc_tensor ca = cpu_t(a, 2, xs), cb = cpu_t(b, 2, xs), co = cpu_t(ref, 2, xs), cbias = cpu_t(bias, 1, &F);
            osc_tensor go = op == 3 ? gpu_from_f32(a, OSC_BF16, 2, xs) : gpu_empty(OSC_BF16, 2, xs);
            const char *nm = "";
            osc_status cs = OSC_OK;
            switch (op) {
            case 0: nm = "silu_mul"; cs = osc_op_silu_mul(&co, &ca, &cb); DEV_OK(osc_op_silu_mul(&go, &ga, &gb)); break;
            case 1: nm = "gelu"; cs = osc_op_gelu(&co, &ca); DEV_OK(osc_op_gelu(&go, &ga)); break;
            case 2: nm = "add"; cs = osc_op_add(&co, &ca, &cb); DEV_OK(osc_op_add(&go, &ga, &gb)); break;
            case 3: nm = "add_bias"; cs = osc_op_add_bias(&co, &cbias); DEV_OK(osc_op_add_bias(&go, &gbias)); break;
            }
            CHECK(cs == OSC_OK, "cpu %s: %s", nm, osc_last_error());
            gpu_to_f32(&go, got);
            char name[128];
            snprintf(name, sizeof name, "%s R=%lld F=%lld", nm, (long long)R, (long long)F);
            report(name, rel_l2(got, ref, n), TOL);
            gpu_free(&go);
            free(ref); free(got);
        }
        /* in place (out aliases the first input) */
        {
            float *ref = hzeros(n), *got = hzeros(n);
            osc_tensor ca = cpu_t(a, 2, xs), cb = cpu_t(b, 2, xs), co = cpu_t(ref, 2, xs);
            CHECK(osc_op_silu_mul(&co, &ca, &cb) == OSC_OK, "cpu silu_mul: %s", osc_last_error());
            osc_tensor g2 = gpu_from_f32(a, OSC_BF16, 2, xs);
            DEV_OK(osc_op_silu_mul(&g2, &g2, &gb));
            gpu_to_f32(&g2, got);
            char name[128];
            snprintf(name, sizeof name, "silu_mul in place R=%lld F=%lld", (long long)R, (long long)F);
            report(name, rel_l2(got, ref, n), TOL);
            gpu_free(&g2);
            free(ref); free(got);
        }
        gpu_free(&ga); gpu_free(&gb); gpu_free(&gbias);
        free(a); free(b); free(bias);
    }
}

/* ---- softmax ----------------------------------------------------------------------------- */
static void test_softmax(void) {
    static const int64_t shapes[][2] = {{1, 1}, {7, 7}, {3, 1000}, {129, 130}, {2, 151936}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t R = shapes[si][0], N = shapes[si][1], n = R * N, xs[2] = {R, N};
        float *x = hrand(n, 6.f, 0.f);
        for (int f32 = 0; f32 < 2; f32++) {
            float *ref = hcopy(x, n), *got = hzeros(n);
            osc_tensor cx = cpu_t(ref, 2, xs);
            CHECK(osc_op_softmax(&cx) == OSC_OK, "cpu softmax: %s", osc_last_error());
            osc_tensor gx = gpu_from_f32(x, f32 ? OSC_F32 : OSC_BF16, 2, xs);
            DEV_OK(osc_op_softmax(&gx));
            gpu_to_f32(&gx, got);
            char name[128];
            snprintf(name, sizeof name, "softmax %s R=%lld N=%lld", f32 ? "F32" : "BF16", (long long)R, (long long)N);
            report(name, rel_l2(got, ref, n), f32 ? 1e-4 : TOL);
            gpu_free(&gx);
            free(ref); free(got);
        }
        free(x);
    }
}

/* ---- convert (exact) ---------------------------------------------------------------------- */
static void test_convert(void) {
    static const int64_t sizes[] = {1, 7, 1000, 65537};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int64_t n = sizes[si];
        /* raw f32 values (not bf16-representable): F32 -> BF16 must round like osc_f32_to_bf16 */
        float *raw = malloc((size_t)n * 4), *got = hzeros(n), *back = hzeros(n);
        for (int64_t i = 0; i < n; i++) raw[i] = 100.f * frand() * frand();
        osc_tensor gf = gpu_from_f32(raw, OSC_F32, 1, &n), gb = gpu_empty(OSC_BF16, 1, &n);
        osc_tensor gf2 = gpu_empty(OSC_F32, 1, &n), gb2 = gpu_empty(OSC_BF16, 1, &n);
        DEV_OK(osc_op_convert(&gb, &gf));   /* F32 -> BF16 */
        DEV_OK(osc_op_convert(&gf2, &gb));  /* BF16 -> F32 */
        DEV_OK(osc_op_convert(&gb2, &gb));  /* BF16 copy */
        gpu_to_f32(&gf2, got);
        gpu_to_f32(&gb2, back);
        long bad = 0, bad2 = 0;
        for (int64_t i = 0; i < n; i++) {
            float want = osc_bf16_to_f32(osc_f32_to_bf16(raw[i]));
            if (memcmp(&got[i], &want, 4)) bad++;
            if (memcmp(&back[i], &want, 4)) bad2++;
        }
        printf("%-64s mismatches %ld/%ld %s\n", "convert F32->BF16->F32 and BF16 copy", bad + bad2, (long)n,
               bad + bad2 ? "FAIL" : "ok");
        CHECK(bad == 0 && bad2 == 0, "convert n=%lld: %ld + %ld mismatches", (long long)n, bad, bad2);
        gpu_free(&gf); gpu_free(&gb); gpu_free(&gf2); gpu_free(&gb2);
        free(raw); free(got); free(back);
    }
}

/* ---- argmax (exact) ----------------------------------------------------------------------- */
static void test_argmax(void) {
    static const int64_t shapes[][2] = {{1, 1}, {7, 7}, {3, 1000}, {5, 151936}, {129, 130}, {2, 8193}, {300, 5000}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t R = shapes[si][0], N = shapes[si][1], n = R * N, xs[2] = {R, N};
        for (int f32 = 0; f32 < 2; f32++) {
            for (int ties = 0; ties < 2; ties++) {
                float *x = hrand(n, 1.f, 0.f);
                int32_t *want = malloc((size_t)R * 4), *got = malloc((size_t)R * 4);
                for (int64_t r = 0; r < R; r++) {
                    int64_t i1 = urand((uint32_t)N), i2 = urand((uint32_t)N);
                    if (ties && i2 < i1) { int64_t t = i1; i1 = i2; i2 = t; }
                    x[r * N + i1] = 10.f;
                    if (ties) x[r * N + i2] = 10.f; /* equal maxima: the first index wins */
                    want[r] = (int32_t)i1;
                }
                osc_tensor gx = gpu_from_f32(x, f32 ? OSC_F32 : OSC_BF16, 2, xs), go = gpu_empty(OSC_I32, 1, &R);
                DEV_OK(osc_op_argmax(&go, &gx));
                if (go.data) DEV_OK(osc_cuda_memcpy_d2h(got, go.data, (size_t)R * 4));
                int32_t *cref = malloc((size_t)R * 4);
                osc_tensor cx = cpu_t(x, 2, xs), co = osc_tensor_make(cref, OSC_I32, OSC_DEV_CPU, 1, &R);
                CHECK(osc_op_argmax(&co, &cx) == OSC_OK, "cpu argmax: %s", osc_last_error());
                long bad = 0;
                for (int64_t r = 0; r < R; r++) bad += got[r] != want[r] || cref[r] != want[r];
                char name[128];
                snprintf(name, sizeof name, "argmax %s R=%lld N=%lld%s", f32 ? "F32" : "BF16", (long long)R,
                         (long long)N, ties ? " (ties)" : "");
                printf("%-64s mismatches %ld %s\n", name, bad, bad ? "FAIL" : "ok");
                CHECK(bad == 0, "%s: %ld rows wrong", name, bad);
                gpu_free(&gx); gpu_free(&go);
                free(x); free(want); free(got); free(cref);
            }
        }
    }
}

/* ---- embed (exact) ------------------------------------------------------------------------ */
static void test_embed(void) {
    static const int64_t cases[][3] = {{1000, 64, 1}, {1000, 129, 7}, {5000, 128, 130}, {300, 3584, 17}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int64_t V = cases[ci][0], D = cases[ci][1], S = cases[ci][2], ts[2] = {V, D}, os[2] = {S, D};
        float *tab = hrand(V * D, 1.f, 0.f), *ref = hzeros(S * D), *got = hzeros(S * D);
        int32_t *ids = malloc((size_t)S * 4);
        for (int64_t i = 0; i < S; i++) ids[i] = (int32_t)urand((uint32_t)V);
        ids[0] = (int32_t)(V - 1);
        osc_tensor ct = cpu_t(tab, 2, ts), co = cpu_t(ref, 2, os), ci_ = osc_tensor_make(ids, OSC_I32, OSC_DEV_CPU, 1, &S);
        CHECK(osc_op_embed(&co, &ct, &ci_) == OSC_OK, "cpu embed: %s", osc_last_error());
        osc_tensor gt = gpu_from_f32(tab, OSC_BF16, 2, ts), gi = gpu_i32(ids, 1, &S), go = gpu_empty(OSC_BF16, 2, os);
        DEV_OK(osc_op_embed(&go, &gt, &gi));
        gpu_to_f32(&go, got);
        long bad = 0;
        for (int64_t i = 0; i < S * D; i++) bad += got[i] != ref[i];
        char name[128];
        snprintf(name, sizeof name, "embed V=%lld D=%lld S=%lld", (long long)V, (long long)D, (long long)S);
        printf("%-64s mismatches %ld %s\n", name, bad, bad ? "FAIL" : "ok");
        CHECK(bad == 0, "%s: %ld mismatches", name, bad);
        gpu_free(&gt); gpu_free(&gi); gpu_free(&go);
        free(tab); free(ref); free(got); free(ids);
    }
}

/* ---- attention ----------------------------------------------------------------------------- */
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_attention(void) {
    static const int cases[][7] = {
        /* S, T, Hq, Hkv, D, q_pos0, causal */
        {17, 17, 4, 4, 64, 0, 1},       {130, 130, 28, 4, 128, 0, 1},  {600, 600, 8, 8, 80, 0, 1},
        {130, 300, 14, 2, 128, 170, 1}, {17, 40, 4, 2, 36, 23, 1},     {33, 33, 2, 1, 256, 0, 1},
        {130, 130, 4, 4, 32, 0, 1},     {17, 17, 4, 1, 64, 0, 0},      {600, 600, 16, 16, 80, 0, 0},
        {64, 64, 2, 2, 128, 0, 1},      {4, 64, 28, 1, 64, 60, 1},     {3, 50, 7, 1, 64, 47, 1},
        /* decode (S <= 4): split-K */
        {1, 4096, 28, 4, 128, 4095, 1}, {1, 4096, 32, 8, 128, 4095, 1}, {1, 1000, 4, 4, 64, 999, 1},
        {4, 4096, 28, 4, 128, 4092, 1}, {1, 77, 7, 1, 80, 76, 1},       {1, 300, 16, 16, 64, 0, 0},
        {2, 129, 8, 2, 128, 100, 1},    {1, 1, 2, 1, 128, 0, 1},        {3, 17, 4, 2, 36, 14, 1},
        {1, 2000, 16, 2, 256, 1999, 1}, {1, 33000, 32, 8, 128, 32999, 1}, {1, 5, 8, 1, 64, 2, 1},
        {1, 777, 12, 4, 128, 776, 1},   {1, 130, 6, 6, 256, 0, 0},
        /* D not a multiple of 8 (scalar loads); one KV head over 40K keys: 500 splits to combine */
        {2, 50, 4, 2, 18, 48, 1},       {1, 40000, 8, 1, 64, 39999, 1},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int S = cases[ci][0], T = cases[ci][1], Hq = cases[ci][2], Hkv = cases[ci][3], D = cases[ci][4];
        int64_t q_pos0 = cases[ci][5];
        int causal = cases[ci][6];
        int64_t qs[3] = {S, Hq, D}, ks[3] = {T, Hkv, D};
        int64_t nq = (int64_t)S * Hq * D, nk = (int64_t)T * Hkv * D;
        float *q = hrand(nq, 4.f, 0.f), *k = hrand(nk, 1.f, 0.f), *v = hrand(nk, 1.f, 0.2f);
        float *ref = hzeros(nq), *got = hzeros(nq);
        float scale = 1.f / sqrtf((float)D);
        osc_tensor cq = cpu_t(q, 3, qs), ck = cpu_t(k, 3, ks), cv = cpu_t(v, 3, ks), co = cpu_t(ref, 3, qs);
        CHECK(osc_op_attention(&co, &cq, &ck, &cv, q_pos0, scale, causal) == OSC_OK, "cpu attention: %s",
              osc_last_error());
        osc_tensor gq = gpu_from_f32(q, OSC_BF16, 3, qs), gk = gpu_from_f32(k, OSC_BF16, 3, ks);
        osc_tensor gv = gpu_from_f32(v, OSC_BF16, 3, ks), go = gpu_empty(OSC_BF16, 3, qs);
        DEV_OK(osc_op_attention(&go, &gq, &gk, &gv, q_pos0, scale, causal));
        gpu_to_f32(&go, got);
        char name[160];
        snprintf(name, sizeof name, "attention S=%d T=%d Hq=%d Hkv=%d D=%d q_pos0=%lld %s%s", S, T, Hq, Hkv, D,
                 (long long)q_pos0, causal ? "causal" : "full", S <= 4 ? " [decode]" : "");
        report(name, rel_l2(got, ref, nq), TOL);
        /* a rough timing of the bigger cases (not a benchmark: see oscar bench) */
        if (!g_dev_fail && !getenv("OSC_GPU_TEST_NOTIME") && ((int64_t)S * T >= 4096 * 1 && (S <= 4 || S >= 600))) {
            int iters = 20;
            DEV_OK(osc_op_attention(&go, &gq, &gk, &gv, q_pos0, scale, causal));
            DEV_OK(osc_cuda_sync());
            double t0 = now_s();
            for (int i = 0; i < iters; i++) osc_op_attention(&go, &gq, &gk, &gv, q_pos0, scale, causal);
            DEV_OK(osc_cuda_sync());
            printf("    time %.1f us/call\n", (now_s() - t0) / iters * 1e6);
        }
        gpu_free(&gq); gpu_free(&gk); gpu_free(&gv); gpu_free(&go);
        free(q); free(k); free(v); free(ref); free(got);
    }
}

/* batched decode attention: B sequences of different lengths in one call vs the CPU, one
 * osc_op_attention per row */
static void test_attention_batch(void) {
    static const int cases[][5] = {/* B, Hq, Hkv, D, base length */ {5, 28, 4, 128, 0}, {3, 8, 2, 64, 3},
                                   {4, 16, 2, 256, 40}, {3, 7, 1, 80, 9}};
    static const int lens0[5] = {1, 17, 300, 4096, 777};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int B = cases[ci][0], Hq = cases[ci][1], Hkv = cases[ci][2], D = cases[ci][3];
        int lens[5];
        float *kh[5], *vh[5];
        osc_tensor ck[5], cv[5], gk[5], gv[5];
        const osc_tensor *ckp[5], *cvp[5], *gkp[5], *gvp[5];
        for (int b = 0; b < B; b++) {
            lens[b] = lens0[b] + cases[ci][4];
            int T = lens[b] + 3; /* buffers longer than the lengths */
            int64_t ks[3] = {T, Hkv, D};
            kh[b] = hrand((int64_t)T * Hkv * D, 1.f, 0.f);
            vh[b] = hrand((int64_t)T * Hkv * D, 1.f, 0.2f);
            ck[b] = cpu_t(kh[b], 3, ks), cv[b] = cpu_t(vh[b], 3, ks);
            gk[b] = gpu_from_f32(kh[b], OSC_BF16, 3, ks), gv[b] = gpu_from_f32(vh[b], OSC_BF16, 3, ks);
            ckp[b] = &ck[b], cvp[b] = &cv[b], gkp[b] = &gk[b], gvp[b] = &gv[b];
        }
        int64_t qs[3] = {B, Hq, D}, nq = (int64_t)B * Hq * D;
        float *q = hrand(nq, 4.f, 0.f), *ref = hzeros(nq), *got = hzeros(nq);
        osc_tensor cq = cpu_t(q, 3, qs), co = cpu_t(ref, 3, qs);
        osc_tensor gq = gpu_from_f32(q, OSC_BF16, 3, qs), go = gpu_empty(OSC_BF16, 3, qs);
        float scale = 1.f / sqrtf((float)D);
        CHECK(osc_op_attention_decode_batch(&co, &cq, ckp, cvp, lens, B, scale) == OSC_OK, "cpu: %s", osc_last_error());
        DEV_OK(osc_op_attention_decode_batch(&go, &gq, gkp, gvp, lens, B, scale));
        gpu_to_f32(&go, got);
        char name[128];
        snprintf(name, sizeof name, "attention_decode_batch B=%d Hq=%d Hkv=%d D=%d", B, Hq, Hkv, D);
        report(name, rel_l2(got, ref, nq), TOL);
        for (int b = 0; b < B; b++) {
            gpu_free(&gk[b]), gpu_free(&gv[b]);
            free(kh[b]), free(vh[b]);
        }
        gpu_free(&gq), gpu_free(&go);
        free(q), free(ref), free(got);
    }
}

/* varlen attention (one launch over segments of packed rows: vision windows, audio chunks) vs
 * one CPU osc_op_attention per segment; rows outside every segment must stay as they were */
static void test_attention_varlen(void) {
    static const int seg_a[] = {1, 63, 64, 65, 200, 0, 7, 130};
    static const int cases[][5] = {/* Hq, Hkv, D, causal, n_repeat of seg_a (0: 1350 windows of 64) */
                                   {16, 16, 80, 0, 1}, {8, 2, 64, 1, 1}, {4, 4, 128, 0, 2}, {16, 16, 80, 0, 0},
                                   {20, 20, 64, 0, 1}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int Hq = cases[ci][0], Hkv = cases[ci][1], D = cases[ci][2], causal = cases[ci][3], rep = cases[ci][4];
        int nseg = rep ? rep * (int)(sizeof seg_a / sizeof seg_a[0]) : 1350;
        int32_t *cu = malloc((size_t)(nseg + 1) * sizeof *cu);
        cu[0] = 3; /* rows [0, 3) and the last 5 rows lie outside every segment */
        for (int i = 0; i < nseg; i++) cu[i + 1] = cu[i] + (rep ? seg_a[i % (int)(sizeof seg_a / sizeof seg_a[0])] : 64);
        int N = cu[nseg] + 5;
        int64_t qs[3] = {N, Hq, D}, ks[3] = {N, Hkv, D};
        int64_t nq = (int64_t)N * Hq * D, nk = (int64_t)N * Hkv * D;
        float *q = hrand(nq, 4.f, 0.f), *k = hrand(nk, 1.f, 0.f), *v = hrand(nk, 1.f, 0.2f);
        float *ref = hrand(nq, 1.f, 3.f), *got = hzeros(nq);
        osc_tensor gq = gpu_from_f32(q, OSC_BF16, 3, qs), gk = gpu_from_f32(k, OSC_BF16, 3, ks);
        osc_tensor gv = gpu_from_f32(v, OSC_BF16, 3, ks), go = gpu_from_f32(ref, OSC_BF16, 3, qs);
        float scale = 1.f / sqrtf((float)D);
        for (int i = 0; i < nseg; i++) {
            int64_t a = cu[i], n = cu[i + 1] - cu[i];
            if (!n) continue;
            int64_t sq[3] = {n, Hq, D}, sk[3] = {n, Hkv, D};
            osc_tensor cq = cpu_t(q + a * Hq * D, 3, sq), ck = cpu_t(k + a * Hkv * D, 3, sk);
            osc_tensor cv = cpu_t(v + a * Hkv * D, 3, sk), co = cpu_t(ref + a * Hq * D, 3, sq);
            CHECK(osc_op_attention(&co, &cq, &ck, &cv, 0, scale, causal) == OSC_OK, "cpu: %s", osc_last_error());
        }
        DEV_OK(osc_op_attention_varlen(&go, &gq, &gk, &gv, cu, nseg, scale, causal));
        gpu_to_f32(&go, got);
        char name[128];
        snprintf(name, sizeof name, "attention_varlen %d segments N=%d Hq=%d Hkv=%d D=%d %s", nseg, N, Hq, Hkv, D,
                 causal ? "causal" : "full");
        report(name, rel_l2(got, ref, nq), TOL);
        int64_t outside = 0;
        for (int64_t i = 0; i < 3 * Hq * D; i++) outside += got[i] != ref[i];
        for (int64_t i = (int64_t)cu[nseg] * Hq * D; i < nq; i++) outside += got[i] != ref[i];
        CHECK(outside == 0, "%s: %lld values outside the segments changed", name, (long long)outside);
        if (!rep && !g_dev_fail && !getenv("OSC_GPU_TEST_NOTIME")) {
            int iters = 20;
            DEV_OK(osc_cuda_sync());
            double t0 = now_s();
            for (int i = 0; i < iters; i++) osc_op_attention_varlen(&go, &gq, &gk, &gv, cu, nseg, scale, causal);
            DEV_OK(osc_cuda_sync());
            double t1 = now_s();
            for (int i = 0; i < iters; i++)
                for (int j = 0; j < nseg; j++) {
                    osc_tensor o1 = osc_tensor_rows(&go, cu[j], 64), q1 = osc_tensor_rows(&gq, cu[j], 64);
                    osc_tensor k1 = osc_tensor_rows(&gk, cu[j], 64), v1 = osc_tensor_rows(&gv, cu[j], 64);
                    osc_op_attention(&o1, &q1, &k1, &v1, 0, scale, causal);
                }
            DEV_OK(osc_cuda_sync());
            printf("    time %.1f us/call varlen vs %.1f us as %d calls\n", (t1 - t0) / iters * 1e6,
                   (now_s() - t1) / iters * 1e6, nseg);
        }
        gpu_free(&gq); gpu_free(&gk); gpu_free(&gv); gpu_free(&go);
        free(q); free(k); free(v); free(ref); free(got); free(cu);
    }
}

/* prefill attention at a long causal shape: time and TFLOP/s of the kernel in use (run again with
 * OSC_ATTN_WMMA=1 to time the older WMMA kernel), and 24 random rows checked against the CPU. */
static void test_attention_prefill_speed(void) {
    if (getenv("OSC_GPU_TEST_NOTIME")) return;
    const int S = 8192, Hq = 28, Hkv = 4, D = 128;
    int64_t qs[3] = {S, Hq, D}, ks[3] = {S, Hkv, D};
    float *q = hrand((int64_t)S * Hq * D, 4.f, 0.f), *k = hrand((int64_t)S * Hkv * D, 1.f, 0.f);
    float *v = hrand((int64_t)S * Hkv * D, 1.f, 0.2f);
    osc_tensor gq = gpu_from_f32(q, OSC_BF16, 3, qs), gk = gpu_from_f32(k, OSC_BF16, 3, ks);
    osc_tensor gv = gpu_from_f32(v, OSC_BF16, 3, ks), go = gpu_empty(OSC_BF16, 3, qs);
    float scale = 1.f / sqrtf((float)D);
    DEV_OK(osc_op_attention(&go, &gq, &gk, &gv, 0, scale, 1));
    DEV_OK(osc_cuda_sync());
    int iters = 10;
    double t0 = now_s();
    for (int i = 0; i < iters; i++) osc_op_attention(&go, &gq, &gk, &gv, 0, scale, 1);
    DEV_OK(osc_cuda_sync());
    double sec = (now_s() - t0) / iters, flop = 4.0 * Hq * D * ((double)S * (S + 1) / 2);
    printf("    prefill attention S=T=%d Hq=%d Hkv=%d D=%d causal: %.2f ms, %.1f TFLOP/s%s\n", S, Hq, Hkv, D, sec * 1e3,
           flop / sec / 1e12, getenv("OSC_ATTN_WMMA") ? " (WMMA kernel)" : "");
    /* spot check: 24 rows against the CPU on the full key range they see */
    int bad = 0;
    float *got = hzeros((int64_t)S * Hq * D);
    gpu_to_f32(&go, got);
    double worst = 0;
    for (int i = 0; i < 24; i++) {
        int r = (int)((i * 2654435761u) % (unsigned)S);
        int64_t q1[3] = {1, Hq, D}, k1[3] = {r + 1, Hkv, D};
        float *ref = hzeros((int64_t)Hq * D);
        osc_tensor cq = cpu_t(q + (int64_t)r * Hq * D, 3, q1), ck = cpu_t(k, 3, k1), cv = cpu_t(v, 3, k1);
        osc_tensor co = cpu_t(ref, 3, q1);
        bad |= osc_op_attention(&co, &cq, &ck, &cv, r, scale, 1) != OSC_OK;
        double e = rel_l2(got + (int64_t)r * Hq * D, ref, (int64_t)Hq * D);
        if (e > worst) worst = e;
        free(ref);
    }
    CHECK(!bad, "cpu attention rows");
    report("attention prefill S=T=8192 Hq=28 Hkv=4 D=128 causal (24 rows vs cpu)", worst, TOL);
    gpu_free(&gq); gpu_free(&gk); gpu_free(&gv); gpu_free(&go);
    free(q); free(k); free(v); free(got);
}

int main(void) {
    if (!osc_cuda_available()) {
        printf("no GPU: skipped\n");
        return OSC_TEST_SKIP;
    }
    size_t fb = 0, tb = 0;
    if (osc_cuda_mem_info(&fb, &tb) == OSC_OK)
        printf("GPU memory: %.1f GiB free of %.1f GiB\n", fb / 1073741824.0, tb / 1073741824.0);
    /* OSC_GPU_TEST_ONLY=name[,name...] runs a subset (e.g. under compute-sanitizer) */
    const char *only = getenv("OSC_GPU_TEST_ONLY");
#define RUN(name) if (!only || strstr(only, #name)) test_##name()
    RUN(convert);
    RUN(embed);
    RUN(argmax);
    RUN(elementwise);
    RUN(softmax);
    RUN(norms);
    RUN(add_rmsnorm);
    RUN(matmul_glu);
    RUN(rope_kv_append);
    RUN(rope);
    RUN(matmul);
    RUN(attention);
    RUN(attention_batch);
    RUN(attention_varlen);
    RUN(attention_prefill_speed);
#undef RUN
    return check_done("test_ops_gpu");
}
#endif
