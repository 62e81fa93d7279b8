/* One osc_kv per slot (see caption_slots.h). */
#include "caption_slots.h"

#include <stdlib.h>
#include <string.h>

struct osc_kv_slots {
    osc_kv **kv;
    int *busy;
    int n, n_ctx;
};

size_t osc_kv_slots_bytes_per_slot(const osc_llm *m, const char *mode, int n_ctx) {
    const osc_llm_config *c = osc_llm_config_of(m);
    osc_kv_params p;
    memset(&p, 0, sizeof p);
    p.mode = mode;
    p.n_layers = c->n_layers;
    p.n_kv_heads = c->n_kv_heads;
    p.head_dim = c->head_dim;
    p.n_ctx = n_ctx;
    p.dev = osc_llm_device(m);
    p.act_dt = osc_llm_act_dtype(m);
    return osc_kv_bytes_for(&p);
}

osc_status osc_kv_slots_new(const osc_llm *m, const char *mode, int n_slots, int n_ctx, osc_kv_slots **out) {
    *out = NULL;
    if (n_slots < 1 || n_ctx < 1) return osc_error(OSC_ERR_INVALID_ARG, "kv slots: %d slots of %d tokens", n_slots, n_ctx);
    osc_kv_slots *s = calloc(1, sizeof *s);
    if (!s) return osc_error(OSC_ERR_OOM, "out of host memory");
    s->kv = calloc((size_t)n_slots, sizeof *s->kv);
    s->busy = calloc((size_t)n_slots, sizeof *s->busy);
    if (!s->kv || !s->busy) {
        osc_kv_slots_free(s);
        return osc_error(OSC_ERR_OOM, "out of host memory");
    }
    s->n_ctx = n_ctx;
    for (int i = 0; i < n_slots; i++) {
        osc_status st = osc_llm_kv_new(m, mode, n_ctx, &s->kv[i]);
        if (st != OSC_OK) {
            osc_kv_slots_free(s);
            return osc_error_prefix(st, "KV cache slot %d of %d (%d tokens)", i + 1, n_slots, n_ctx);
        }
        s->n++;
    }
    *out = s;
    return OSC_OK;
}

void osc_kv_slots_free(osc_kv_slots *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) osc_kv_free(s->kv[i]);
    free(s->kv);
    free(s->busy);
    free(s);
}

int osc_kv_slots_count(const osc_kv_slots *s) { return s->n; }
int osc_kv_slots_ctx(const osc_kv_slots *s) { return s->n_ctx; }

osc_kv *osc_kv_slots_acquire(osc_kv_slots *s, int n) {
    if (n > s->n_ctx) return NULL;
    for (int i = 0; i < s->n; i++)
        if (!s->busy[i]) {
            s->busy[i] = 1;
            osc_kv_truncate(s->kv[i], 0);
            return s->kv[i];
        }
    return NULL;
}

void osc_kv_slots_release(osc_kv_slots *s, osc_kv *kv) {
    for (int i = 0; i < s->n; i++)
        if (s->kv[i] == kv) s->busy[i] = 0;
}
