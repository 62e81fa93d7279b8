/* The smallest program that uses oscar: load a model, ask one question, stream the answer.
 * Uses only include/oscar.h.   usage: oscar_sample MODEL_DIR "question" */
#include <stdio.h>

#include "oscar.h"

static int print_piece(const char *text, int32_t token, void *user) {
    (void)token;
    int *count = user;
    fputs(text, stdout);
    fflush(stdout);
    ++*count;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR \"question\"\n", argv[0]);
        return 2;
    }
    osc_model *model;
    osc_model_params mp = osc_model_default_params();
    mp.device = OSC_DEVICE_AUTO;
    if (osc_model_load(argv[1], &mp, &model) != OSC_OK) {
        fprintf(stderr, "load failed: %s\n", osc_last_error());
        return 1;
    }
    osc_session *session;
    osc_session_params params = osc_session_default_params();
    if (osc_session_new(model, &params, &session) != OSC_OK || osc_session_add_message(session, "user", argv[2]) != OSC_OK) {
        fprintf(stderr, "session failed: %s\n", osc_last_error());
        osc_model_free(model);
        return 1;
    }
    osc_sampling_params sp = osc_sampling_default_params(model);
    sp.max_tokens = 16;
    int count = 0;
    osc_gen_stats stats;
    osc_status s = osc_session_generate(session, &sp, print_piece, &count, &stats);
    printf("\n");
    if (s != OSC_OK) fprintf(stderr, "generate failed: %s\n", osc_last_error());
    else fprintf(stderr, "%d tokens generated\n", stats.gen_tokens);
    osc_session_free(session);
    osc_model_free(model);
    return s == OSC_OK && stats.gen_tokens > 0 ? 0 : 1;
}
