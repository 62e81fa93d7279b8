/* Numeric values of command-line flags, shared by the oscar subcommands (the .c files of pipelines/).
 * The whole string must parse and lie in [lo, hi]; otherwise one line on stderr,
 * "oscar: FLAG expects an integer in [lo, hi], got 'V'" (or "a number", or "a non-negative
 * integer" for seeds), and -1 with *out untouched. 0 on success. */
#ifndef OSC_PIPELINES_LIB_ARGS_H
#define OSC_PIPELINES_LIB_ARGS_H
#include <stdint.h>

int osc_arg_ll(const char *flag, const char *v, long long lo, long long hi, long long *out);
int osc_arg_int(const char *flag, const char *v, long long lo, long long hi, int *out);
int osc_arg_double(const char *flag, const char *v, double lo, double hi, double *out);
int osc_arg_float(const char *flag, const char *v, double lo, double hi, float *out);
/* a seed: any non-negative integer that fits 64 bits */
int osc_arg_u64(const char *flag, const char *v, uint64_t *out);

#endif
