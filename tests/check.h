/* Minimal test helpers: CHECK records a failure and continues; check_done() prints the
 * "N passed, N failed" line that CI reads and returns the exit code. */
#ifndef OSC_TESTS_CHECK_H
#define OSC_TESTS_CHECK_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int g_pass, g_fail;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) g_pass++;                                                     \
        else {                                                                  \
            g_fail++;                                                           \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* ||a - b|| / ||b||; NaN anywhere gives +inf so it never passes. */
static inline double rel_l2(const float *a, const float *b, long n) {
    double num = 0, den = 0;
    for (long i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

static inline int check_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, g_pass, g_fail);
    return g_fail ? 1 : 0;
}

/* xorshift64 test inputs, uniform in [-1, 1): fixed seeds, no zeros, no libc rand state. */
static inline float check_frand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((*s >> 40) * (1.0 / 16777216.0)) * 2.f - 1.f;
}

/* A GPU test exits with this when no GPU is present; ctest maps it to "skipped". */
#define OSC_TEST_SKIP 77

#endif
