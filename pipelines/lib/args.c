/* Numeric values of command-line flags (args.h). */
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int osc_arg_ll(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "oscar: %s expects an integer in [%lld, %lld], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int osc_arg_int(const char *flag, const char *v, long long lo, long long hi, int *out) {
    long long x;
    if (osc_arg_ll(flag, v, lo, hi, &x)) return -1;
    *out = (int)x; /* callers pass bounds inside the int range */
    return 0;
}

int osc_arg_double(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi)) {
        fprintf(stderr, "oscar: %s expects a number in [%g, %g], got '%s'\n", flag, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int osc_arg_float(const char *flag, const char *v, double lo, double hi, float *out) {
    double x;
    if (osc_arg_double(flag, v, lo, hi, &x)) return -1;
    *out = (float)x;
    return 0;
}

int osc_arg_u64(const char *flag, const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-' || v[0] == '+' || v[0] == ' ') {
        fprintf(stderr, "oscar: %s expects a non-negative integer, got '%s'\n", flag, v);
        return -1;
    }
    *out = (uint64_t)x;
    return 0;
}
