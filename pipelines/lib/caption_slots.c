/* Caption KV slots (see caption_slots.h): a paged pool for the block modes, one osc_kv per slot
 * otherwise. */
#include "caption_slots.h"

#include <stdlib.h>
#include <string.h>

struct osc_kv_slots {
    osc_kv **kv;
    int *busy;
    int *resv;          /* pages reserved by each busy slot (pooled) */
    int n, n_ctx;
    osc_kv_pool *pool;  /* block modes */
    int reserved;       /* sum of resv */
};

static osc_kv_params params_of(const osc_llm *m, const char *mode, int n_ctx) {
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
    return p; /* r_evict 0: the default, as osc_llm_kv_new */
}

size_t osc_kv_slots_page_bytes(const osc_llm *m, const char *mode) {
    osc_kv_params p = params_of(m, mode, 0);
    return osc_kv_pool_page_bytes(&p);
}

size_t osc_kv_slots_seq_bytes(const osc_llm *m, const char *mode, int n_ctx) {
    osc_kv_params p = params_of(m, mode, n_ctx);
    return osc_kv_pool_seq_bytes(&p);
}

int osc_kv_slots_page_tokens(const osc_llm *m, const char *mode) {
    osc_kv_params p = params_of(m, mode, 0);
    return osc_kv_pool_page_bytes(&p) ? (p.r_evict > 0 ? p.r_evict : 256) : 0;
}

/* pages a cache holding n tokens has (lazy flush: (n - 1) / R) */
static int pages_for(int n, int R) { return n > 0 ? (n - 1) / R : 0; }

size_t osc_kv_slots_bytes_per_slot(const osc_llm *m, const char *mode, int n_ctx) {
    osc_kv_params p = params_of(m, mode, n_ctx);
    size_t pg = osc_kv_pool_page_bytes(&p);
    if (pg) return osc_kv_pool_seq_bytes(&p) + (size_t)pages_for(n_ctx, osc_kv_slots_page_tokens(m, mode)) * pg;
    return osc_kv_bytes_for(&p);
}

static osc_status slots_alloc(int n_slots, int n_ctx, osc_kv_slots **out) {
    *out = NULL;
    if (n_slots < 1 || n_ctx < 1) return osc_error(OSC_ERR_INVALID_ARG, "kv slots: %d slots of %d tokens", n_slots, n_ctx);
    osc_kv_slots *s = calloc(1, sizeof *s);
    if (!s) return osc_error(OSC_ERR_OOM, "out of host memory");
    s->kv = calloc((size_t)n_slots, sizeof *s->kv);
    s->busy = calloc((size_t)n_slots, sizeof *s->busy);
    s->resv = calloc((size_t)n_slots, sizeof *s->resv);
    if (!s->kv || !s->busy || !s->resv) {
        osc_kv_slots_free(s);
        return osc_error(OSC_ERR_OOM, "out of host memory");
    }
    s->n_ctx = n_ctx;
    *out = s;
    return OSC_OK;
}

osc_status osc_kv_slots_new_pooled(const osc_llm *m, const char *mode, int n_slots, int n_ctx, int n_pages,
                                   osc_kv_slots **out) {
    osc_kv_slots *s;
    OSC_TRY(slots_alloc(n_slots, n_ctx, &s));
    osc_kv_params p = params_of(m, mode, 0);
    osc_status st = osc_kv_pool_new(&p, n_pages < 1 ? 1 : n_pages, &s->pool);
    if (st != OSC_OK) {
        osc_kv_slots_free(s);
        return osc_error_prefix(st, "KV slots: pool of %d pages", n_pages);
    }
    for (int i = 0; i < n_slots; i++) {
        st = osc_kv_new_in_pool(s->pool, n_ctx, &s->kv[i]);
        if (st != OSC_OK) {
            osc_kv_slots_free(s);
            return osc_error_prefix(st, "KV cache slot %d of %d (%d tokens)", i + 1, n_slots, n_ctx);
        }
        s->n++;
    }
    *out = s;
    return OSC_OK;
}

osc_status osc_kv_slots_new(const osc_llm *m, const char *mode, int n_slots, int n_ctx, osc_kv_slots **out) {
    *out = NULL;
    if (osc_kv_slots_page_bytes(m, mode) && n_slots >= 1 && n_ctx >= 1) {
        /* room for every slot at n_ctx tokens: no admission can ever be refused for pages */
        int per = pages_for(n_ctx, osc_kv_slots_page_tokens(m, mode));
        return osc_kv_slots_new_pooled(m, mode, n_slots, n_ctx, n_slots * per, out);
    }
    osc_kv_slots *s;
    OSC_TRY(slots_alloc(n_slots, n_ctx, &s));
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
    for (int i = 0; i < s->n; i++) osc_kv_free(s->kv[i]); /* the caches before their pool */
    osc_kv_pool_free(s->pool);
    free(s->kv);
    free(s->busy);
    free(s->resv);
    free(s);
}

int osc_kv_slots_count(const osc_kv_slots *s) { return s->n; }
int osc_kv_slots_ctx(const osc_kv_slots *s) { return s->n_ctx; }

int osc_kv_slots_pages_unreserved(const osc_kv_slots *s) {
    return s->pool ? osc_kv_pool_pages(s->pool) - s->reserved : -1;
}

osc_kv *osc_kv_slots_acquire(osc_kv_slots *s, int n) {
    if (n > s->n_ctx) return NULL;
    int need = s->pool ? pages_for(n, osc_kv_pool_page_tokens(s->pool)) : 0;
    if (s->pool && need > osc_kv_pool_pages(s->pool) - s->reserved) return NULL;
    for (int i = 0; i < s->n; i++)
        if (!s->busy[i]) {
            s->busy[i] = 1;
            osc_kv_truncate(s->kv[i], 0); /* pooled: gives back any page it still held */
            s->resv[i] = need;
            s->reserved += need;
            return s->kv[i];
        }
    return NULL;
}

void osc_kv_slots_release(osc_kv_slots *s, osc_kv *kv) {
    for (int i = 0; i < s->n; i++)
        if (s->kv[i] == kv && s->busy[i]) {
            s->busy[i] = 0;
            if (s->pool) osc_kv_truncate(kv, 0); /* its pages go back to the pool now */
            s->reserved -= s->resv[i];
            s->resv[i] = 0;
        }
}
