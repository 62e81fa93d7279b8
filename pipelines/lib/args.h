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

/* The sampling flags of chat, vqa, listen and caption: --temp [0, 100], --top-k [0, 2^24],
 * --top-p [0, 1], --min-p [0, 1], --repeat-penalty [0.01, 100], --seed. Only the flags given
 * override the model's defaults (generation_config.json) when applied. */
typedef struct osc_sampling_flags {
    float temp, top_p, min_p, rp;
    int top_k;
    uint64_t seed; /* 0 unless --seed */
    int set_temp, set_topk, set_topp, set_minp, set_rp, set_seed;
} osc_sampling_flags;
int osc_sampling_flag_is(const char *flag); /* 1 for one of the flags above (each takes a value) */
/* parse the value of such a flag into f: 0, or -1 with the message printed */
int osc_sampling_flag_parse(const char *flag, const char *v, osc_sampling_flags *f);
struct osc_sampler_params;
struct osc_sampling_params;
void osc_sampling_flags_apply(const osc_sampling_flags *f, struct osc_sampler_params *sp);        /* llm/sampler.h */
void osc_sampling_flags_apply_api(const osc_sampling_flags *f, struct osc_sampling_params *sp);   /* include/oscar.h */

#endif
