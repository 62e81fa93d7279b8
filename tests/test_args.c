/* tests/test_args.c: the flag-number parsers every oscar command uses (pipelines/lib/args.h),
 * on hand-written cases: in range, out of range, trailing junk, empty, overflow, NaN/inf,
 * signs on seeds, and the exact message of a rejected value. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tests/check.h"
#include "pipelines/lib/args.h"
#include "llm/sampler.h"

/* run f with stderr sent to a temporary file; return what was written there */
static const char *captured(char *buf, size_t n, int (*f)(void)) {
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(fileno(stderr));
    dup2(fileno(tmp), fileno(stderr));
    f();
    fflush(stderr);
    dup2(saved, fileno(stderr));
    close(saved);
    rewind(tmp);
    size_t got = fread(buf, 1, n - 1, tmp);
    buf[got] = 0;
    fclose(tmp);
    return buf;
}
static int bad_int(void) {
    int x = 7;
    return osc_arg_int("-n", "12abc", 1, 100, &x);
}
static int bad_num(void) {
    double x = 0;
    return osc_arg_double("--top-p", "2", 0, 1, &x);
}
static int bad_seed(void) {
    uint64_t x = 0;
    return osc_arg_u64("--seed", "-1", &x);
}

int main(void) {
    int i = -5;
    CHECK(osc_arg_int("-n", "42", 1, 100, &i) == 0 && i == 42, "42 -> %d", i);
    CHECK(osc_arg_int("-n", "1", 1, 100, &i) == 0 && i == 1, "lower bound");
    CHECK(osc_arg_int("-n", "100", 1, 100, &i) == 0 && i == 100, "upper bound");
    i = 9;
    /* the rejections below print; keep the test output clean */
    fflush(stderr);
    int saved = dup(fileno(stderr));
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) dup2(fileno(devnull), fileno(stderr));
    CHECK(osc_arg_int("-n", "0", 1, 100, &i) == -1 && i == 9, "below range rejected, value untouched");
    CHECK(osc_arg_int("-n", "101", 1, 100, &i) == -1 && i == 9, "above range rejected");
    CHECK(osc_arg_int("-n", "12abc", 1, 100, &i) == -1, "trailing junk rejected");
    CHECK(osc_arg_int("-n", "", 1, 100, &i) == -1, "empty rejected");
    CHECK(osc_arg_int("-n", "99999999999999999999", 1, 100, &i) == -1, "overflow rejected");
    long long ll = 0;
    CHECK(osc_arg_ll("--ctx", "-3", -5, 5, &ll) == 0 && ll == -3, "negative in range");
    CHECK(osc_arg_ll("--ctx", "9223372036854775807", 0, 9223372036854775807LL, &ll) == 0 &&
              ll == 9223372036854775807LL, "int64 max");
    double d = 0;
    CHECK(osc_arg_double("--temp", "0.5", 0, 2, &d) == 0 && d == 0.5, "0.5");
    CHECK(osc_arg_double("--temp", "1e-3", 0, 2, &d) == 0 && d == 1e-3, "1e-3");
    CHECK(osc_arg_double("--temp", "nan", 0, 2, &d) == -1, "nan rejected");
    CHECK(osc_arg_double("--temp", "inf", 0, 2, &d) == -1, "inf rejected");
    CHECK(osc_arg_double("--temp", "2.0001", 0, 2, &d) == -1, "above range rejected");
    float f = 0;
    CHECK(osc_arg_float("--top-p", "0.25", 0, 1, &f) == 0 && f == 0.25f, "float 0.25");
    CHECK(osc_arg_float("--top-p", "x", 0, 1, &f) == -1, "float junk rejected");
    uint64_t u = 0;
    CHECK(osc_arg_u64("--seed", "123", &u) == 0 && u == 123, "seed 123");
    CHECK(osc_arg_u64("--seed", "18446744073709551615", &u) == 0 && u == UINT64_MAX, "seed u64 max");
    CHECK(osc_arg_u64("--seed", "18446744073709551616", &u) == -1, "seed overflow rejected");
    CHECK(osc_arg_u64("--seed", "-1", &u) == -1, "negative seed rejected");
    CHECK(osc_arg_u64("--seed", "+1", &u) == -1, "signed seed rejected");
    CHECK(osc_arg_u64("--seed", "", &u) == -1, "empty seed rejected");
    /* sampling flags: only what was given overrides the defaults */
    osc_sampling_flags sf;
    memset(&sf, 0, sizeof sf);
    CHECK(osc_sampling_flag_is("--top-p") && osc_sampling_flag_is("--seed") && !osc_sampling_flag_is("-n") &&
              !osc_sampling_flag_is("--temperature"), "sampling flag names");
    CHECK(osc_sampling_flag_parse("--top-p", "0.8", &sf) == 0 && osc_sampling_flag_parse("--seed", "7", &sf) == 0,
          "parse top-p, seed");
    CHECK(osc_sampling_flag_parse("--repeat-penalty", "0", &sf) == -1 && !sf.set_rp, "repeat penalty 0 rejected");
    osc_sampler_params sp = osc_sampler_default_params();
    sp.temperature = 0.6f, sp.top_k = 20, sp.top_p = 0.95f, sp.min_p = 0.05f, sp.repeat_penalty = 1.1f, sp.seed = 3;
    osc_sampling_flags_apply(&sf, &sp);
    CHECK(sp.top_p == 0.8f && sp.seed == 7 && sp.temperature == 0.6f && sp.top_k == 20 && sp.min_p == 0.05f &&
              sp.repeat_penalty == 1.1f, "apply: top-p %g seed %llu temp %g top-k %d", sp.top_p,
          (unsigned long long)sp.seed, sp.temperature, sp.top_k);
    fflush(stderr);
    dup2(saved, fileno(stderr));
    close(saved);
    if (devnull) fclose(devnull);
    char buf[256];
    CHECK(!strcmp(captured(buf, sizeof buf, bad_int), "oscar: -n expects an integer in [1, 100], got '12abc'\n"), "message: %s", buf);
    CHECK(!strcmp(captured(buf, sizeof buf, bad_num), "oscar: --top-p expects a number in [0, 1], got '2'\n"), "message: %s", buf);
    CHECK(!strcmp(captured(buf, sizeof buf, bad_seed), "oscar: --seed expects a non-negative integer, got '-1'\n"), "message: %s", buf);
    return check_done("test_args");
}
