/* Numeric values of command-line flags (args.h). */
#include "args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/sampler.h"
#include "oscar.h"

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

int osc_sampling_flag_is(const char *a) {
    return !strcmp(a, "--temp") || !strcmp(a, "--top-k") || !strcmp(a, "--top-p") || !strcmp(a, "--min-p") ||
           !strcmp(a, "--repeat-penalty") || !strcmp(a, "--seed");
}

int osc_sampling_flag_parse(const char *a, const char *v, osc_sampling_flags *f) {
    if (!strcmp(a, "--temp")) return osc_arg_float(a, v, 0, 100, &f->temp) ? -1 : (f->set_temp = 1, 0);
    if (!strcmp(a, "--top-k")) return osc_arg_int(a, v, 0, 1 << 24, &f->top_k) ? -1 : (f->set_topk = 1, 0);
    if (!strcmp(a, "--top-p")) return osc_arg_float(a, v, 0, 1, &f->top_p) ? -1 : (f->set_topp = 1, 0);
    if (!strcmp(a, "--min-p")) return osc_arg_float(a, v, 0, 1, &f->min_p) ? -1 : (f->set_minp = 1, 0);
    if (!strcmp(a, "--repeat-penalty")) return osc_arg_float(a, v, 0.01, 100, &f->rp) ? -1 : (f->set_rp = 1, 0);
    if (!strcmp(a, "--seed")) return osc_arg_u64(a, v, &f->seed) ? -1 : (f->set_seed = 1, 0);
    fprintf(stderr, "oscar: %s is not a sampling flag\n", a);
    return -1;
}

#define OSC_APPLY_SAMPLING(f, sp)                             \
    do {                                                      \
        if ((f)->set_temp) (sp)->temperature = (f)->temp;     \
        if ((f)->set_topk) (sp)->top_k = (f)->top_k;          \
        if ((f)->set_topp) (sp)->top_p = (f)->top_p;          \
        if ((f)->set_minp) (sp)->min_p = (f)->min_p;          \
        if ((f)->set_rp) (sp)->repeat_penalty = (f)->rp;      \
        if ((f)->set_seed) (sp)->seed = (f)->seed;            \
    } while (0)

void osc_sampling_flags_apply(const osc_sampling_flags *f, osc_sampler_params *sp) { OSC_APPLY_SAMPLING(f, sp); }
void osc_sampling_flags_apply_api(const osc_sampling_flags *f, osc_sampling_params *sp) { OSC_APPLY_SAMPLING(f, sp); }
