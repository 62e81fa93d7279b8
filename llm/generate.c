#include "generate.h"

#include <stdlib.h>
#include <string.h>

static int is_stop(int32_t t, const int32_t *stop, int n_stop) {
    for (int i = 0; i < n_stop; i++)
        if (stop[i] == t) return 1;
    return 0;
}

static int32_t pick(osc_sampler *s, float *logits, int V, const int32_t *hist, int n_hist) {
    if (s) return osc_sampler_sample(s, logits, hist, n_hist);
    int32_t best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

osc_status osc_generate_batch(osc_llm *m, osc_llm_ctx *c, osc_gen_request *r, int n,
                              const int32_t *stop, int n_stop) {
    const int V = osc_llm_config_of(m)->vocab_size;
    float *logits = malloc((size_t)n * V * sizeof(float));
    int *start = malloc((size_t)(n + 1) * sizeof(int));
    int32_t *tok = malloc((size_t)n * sizeof(int32_t));
    osc_kv **kv = malloc((size_t)n * sizeof(osc_kv *));
    int *idx = malloc((size_t)n * sizeof(int));
    int32_t *picked = malloc((size_t)n * sizeof(int32_t));
    /* history for the repetition penalty: prompt + generated, per request */
    int32_t **hist = calloc((size_t)n, sizeof(int32_t *));
    osc_status s = OSC_OK;
    if (!logits || !start || !tok || !kv || !idx || !hist || !picked) {
        s = osc_error(OSC_ERR_OOM, "generate: out of host memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        r[i].n_out = 0;
        r[i].stopped = 0;
        hist[i] = malloc((size_t)(r[i].n_prompt + r[i].max_new + 1) * sizeof(int32_t));
        if (!hist[i]) {
            s = osc_error(OSC_ERR_OOM, "generate: out of host memory");
            goto done;
        }
        memcpy(hist[i], r[i].prompt, (size_t)r[i].n_prompt * sizeof(int32_t));
    }
    /* prefill each prompt, sample its first token */
    for (int i = 0; i < n; i++) {
        if (r[i].max_new <= 0) continue;
        int st[2] = {0, r[i].n_prompt};
        osc_llm_batch b = {.n_seq = 1, .seq_start = st, .tokens = r[i].prompt, .kv = &r[i].kv, .all_logits = 0};
        s = osc_llm_forward(m, c, &b, logits);
        if (s != OSC_OK) goto done;
        int32_t t = pick(r[i].sampler, logits, V, hist[i], r[i].n_prompt);
        r[i].out[r[i].n_out++] = t;
        hist[i][r[i].n_prompt] = t;
        if (is_stop(t, stop, n_stop)) r[i].stopped = 1;
    }
    /* decode the unfinished ones together */
    for (;;) {
        int na = 0;
        for (int i = 0; i < n; i++) {
            if (r[i].stopped || r[i].n_out >= r[i].max_new) continue;
            if (osc_kv_len(r[i].kv) + 1 > osc_kv_capacity(r[i].kv)) {
                r[i].stopped = 2;
                continue;
            }
            idx[na] = i;
            start[na] = na;
            tok[na] = r[i].out[r[i].n_out - 1];
            kv[na] = r[i].kv;
            na++;
        }
        if (!na) break;
        start[na] = na;
        /* a batch larger than the scratch goes in pieces; start[] is 0..na, so its head
         * serves as the row table of every piece */
        /* all greedy: the pick is made on the device and only ids come back */
        int greedy = 1;
        for (int j = 0; j < na; j++) greedy &= r[idx[j]].sampler == NULL;
        int cap = osc_llm_ctx_max_tokens(c);
        for (int off = 0; off < na; off += cap) {
            int step = na - off < cap ? na - off : cap;
            osc_llm_batch b = {.n_seq = step, .seq_start = start, .tokens = tok + off, .kv = kv + off, .all_logits = 0};
            s = greedy ? osc_llm_forward_greedy(m, c, &b, picked + off) : osc_llm_forward(m, c, &b, logits + (size_t)off * V);
            if (s != OSC_OK) goto done;
        }
        for (int j = 0; j < na; j++) {
            osc_gen_request *q = &r[idx[j]];
            int nh = q->n_prompt + q->n_out;
            int32_t t = greedy ? picked[j] : pick(q->sampler, logits + (size_t)j * V, V, hist[idx[j]], nh);
            q->out[q->n_out++] = t;
            hist[idx[j]][nh] = t;
            if (is_stop(t, stop, n_stop)) q->stopped = 1;
        }
    }
done:
    if (hist)
        for (int i = 0; i < n; i++) free(hist[i]);
    free(hist);
    free(logits);
    free(start);
    free(tok);
    free(kv);
    free(idx);
    free(picked);
    return s;
}
