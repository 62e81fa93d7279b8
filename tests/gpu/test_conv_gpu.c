/* tests/gpu/test_conv_gpu.c: the CUDA 1-D convolution helpers (im2col1d, avgpool2_rows) against
 * their CPU twins on random bf16-representable inputs of several sizes (none a multiple of a
 * tile), plus the whole Conv1d (im2col + cuBLAS GEMM) against the CPU. im2col is a gather, so it
 * must be exact; the pair average is exact up to one bf16 rounding; the conv <= 2e-2 rel. L2.
 * Skipped (77) without a GPU. */
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/device.h"
#include "kernels/ops.h"
#include "tests/check.h"

static uint64_t g_rng = 0x5DEECE66Dull;

static float *hrand(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; i++) p[i] = osc_bf16_to_f32(osc_f32_to_bf16(check_frand(&g_rng)));
    return p;
}

/* A device BF16 tensor holding host values (already bf16-representable). */
static osc_tensor gpu_t(const float *h, int64_t n0, int64_t n1) {
    osc_tensor t = osc_tensor_2d(NULL, OSC_BF16, OSC_DEV_CUDA, n0, n1);
    void *p = NULL;
    osc_status s = osc_dev_malloc(OSC_DEV_CUDA, osc_tensor_nbytes(&t) ? osc_tensor_nbytes(&t) : 16, &p);
    CHECK(s == OSC_OK, "cuda malloc: %s", osc_last_error());
    t.data = p;
    if (h && s == OSC_OK) CHECK(osc_tensor_upload_f32(&t, h, n0 * n1) == OSC_OK, "upload: %s", osc_last_error());
    return t;
}

static float *down(const osc_tensor *t) {
    int64_t n = osc_tensor_nelem(t);
    float *h = malloc((size_t)(n ? n : 1) * sizeof(float));
    CHECK(osc_tensor_download_f32(h, t, n) == OSC_OK, "download: %s", osc_last_error());
    return h;
}

static void test_im2col(int64_t T, int64_t C, int K, int stride, int pad) {
    int64_t To = (T + 2 * pad - K) / stride + 1;
    float *x = hrand(T * C), *ref = malloc((size_t)To * C * K * sizeof(float));
    osc_tensor xc = osc_tensor_2d(x, OSC_F32, OSC_DEV_CPU, T, C), rc = osc_tensor_2d(ref, OSC_F32, OSC_DEV_CPU, To, C * K);
    CHECK(osc_op_im2col1d(&rc, &xc, K, stride, pad) == OSC_OK, "cpu im2col: %s", osc_last_error());
    osc_tensor xg = gpu_t(x, T, C), og = gpu_t(NULL, To, C * K);
    CHECK(osc_op_im2col1d(&og, &xg, K, stride, pad) == OSC_OK, "cuda im2col: %s", osc_last_error());
    float *got = down(&og);
    CHECK(memcmp(got, ref, (size_t)To * C * K * sizeof(float)) == 0, "im2col T=%lld C=%lld K=%d s=%d p=%d differs",
          (long long)T, (long long)C, K, stride, pad);
    printf("im2col1d T=%lld C=%lld k%d s%d p%d: exact\n", (long long)T, (long long)C, K, stride, pad);
    free(got);
    free(x);
    free(ref);
    osc_dev_free(OSC_DEV_CUDA, xg.data);
    osc_dev_free(OSC_DEV_CUDA, og.data);
}

static void test_pool(int64_t R, int64_t D) {
    float *x = hrand(R * D), *ref = malloc((size_t)(R / 2 * D + 1) * sizeof(float));
    osc_tensor xc = osc_tensor_2d(x, OSC_F32, OSC_DEV_CPU, R, D), rc = osc_tensor_2d(ref, OSC_F32, OSC_DEV_CPU, R / 2, D);
    CHECK(osc_op_avgpool2_rows(&rc, &xc) == OSC_OK, "cpu pool: %s", osc_last_error());
    osc_tensor xg = gpu_t(x, R, D), og = gpu_t(NULL, R / 2, D);
    CHECK(osc_op_avgpool2_rows(&og, &xg) == OSC_OK, "cuda pool: %s", osc_last_error());
    float *got = down(&og);
    int exact = 1;
    for (int64_t i = 0; i < R / 2 * D; i++) exact &= got[i] == osc_bf16_to_f32(osc_f32_to_bf16(ref[i]));
    CHECK(exact, "avgpool2_rows R=%lld D=%lld differs from the rounded CPU result", (long long)R, (long long)D);
    printf("avgpool2_rows R=%lld D=%lld: %s\n", (long long)R, (long long)D, exact ? "exact (bf16)" : "DIFFERS");
    free(got);
    free(x);
    free(ref);
    osc_dev_free(OSC_DEV_CUDA, xg.data);
    osc_dev_free(OSC_DEV_CUDA, og.data);
}

/* Conv1d = im2col + matmul, CUDA vs CPU. */
static void test_conv(int64_t T, int64_t C, int64_t O, int stride) {
    int64_t To = (T + 2 - 3) / stride + 1;
    float *x = hrand(T * C), *w = hrand(O * C * 3), *b = hrand(O);
    float *col = malloc((size_t)To * C * 3 * sizeof(float)), *y = malloc((size_t)To * O * sizeof(float));
    osc_tensor xc = osc_tensor_2d(x, OSC_F32, OSC_DEV_CPU, T, C), cc = osc_tensor_2d(col, OSC_F32, OSC_DEV_CPU, To, C * 3);
    osc_tensor wc = osc_tensor_2d(w, OSC_F32, OSC_DEV_CPU, O, C * 3), bc = osc_tensor_1d(b, OSC_F32, OSC_DEV_CPU, O);
    osc_tensor yc = osc_tensor_2d(y, OSC_F32, OSC_DEV_CPU, To, O);
    CHECK(osc_op_im2col1d(&cc, &xc, 3, stride, 1) == OSC_OK && osc_op_matmul(&yc, &cc, &wc, &bc) == OSC_OK, "cpu conv: %s",
          osc_last_error());
    osc_tensor xg = gpu_t(x, T, C), cg = gpu_t(NULL, To, C * 3), wg = gpu_t(w, O, C * 3), yg = gpu_t(NULL, To, O);
    osc_tensor bg = gpu_t(b, 1, O);
    bg = osc_tensor_1d(bg.data, OSC_BF16, OSC_DEV_CUDA, O);
    CHECK(osc_op_im2col1d(&cg, &xg, 3, stride, 1) == OSC_OK && osc_op_matmul(&yg, &cg, &wg, &bg) == OSC_OK,
          "cuda conv: %s", osc_last_error());
    float *got = down(&yg);
    double e = rel_l2(got, y, (long)(To * O));
    CHECK(e <= 2e-2, "conv1d T=%lld C=%lld O=%lld s%d: rel L2 %g", (long long)T, (long long)C, (long long)O, stride, e);
    printf("conv1d T=%lld C=%lld O=%lld stride %d: rel L2 %.2e\n", (long long)T, (long long)C, (long long)O, stride, e);
    free(got);
    free(x);
    free(w);
    free(b);
    free(col);
    free(y);
    osc_dev_free(OSC_DEV_CUDA, xg.data);
    osc_dev_free(OSC_DEV_CUDA, cg.data);
    osc_dev_free(OSC_DEV_CUDA, wg.data);
    osc_dev_free(OSC_DEV_CUDA, yg.data);
    osc_dev_free(OSC_DEV_CUDA, bg.data);
}

int main(void) {
    if (!osc_device_cuda_available()) {
        printf("no GPU: skipped\n");
        return OSC_TEST_SKIP;
    }
    test_im2col(1, 3, 3, 1, 1);
    test_im2col(2, 128, 3, 2, 1);
    test_im2col(200, 128, 3, 1, 1);
    test_im2col(199, 37, 3, 2, 1);
    test_im2col(57, 1280, 3, 2, 1);
    test_im2col(13, 7, 5, 3, 2);
    test_pool(2, 8);
    test_pool(7, 33);
    test_pool(301, 1280);
    test_conv(200, 128, 96, 1);
    test_conv(199, 96, 80, 2);
    test_conv(1, 40, 24, 2);
    return check_done("test_conv_gpu");
}
