/* KV-cache slots for continuous batching in `oscar caption`: one cache per active sequence.
 *
 * A small interface on purpose: today every slot is its own osc_kv of n_ctx tokens, made once at
 * start; a paged pool can replace the implementation (acquire = reserve pages for a sequence of
 * up to n tokens, release = return them) without touching the caller.
 * Thread-safety: one thread (the consumer). Errors: OSC_ERR_OOM / the cache's own errors at
 * creation; acquire returns NULL when no slot is free or n exceeds the slot size. */
#ifndef OSC_PIPELINES_LIB_CAPTION_SLOTS_H
#define OSC_PIPELINES_LIB_CAPTION_SLOTS_H
#include <stddef.h>

#include "kvcache/kvcache.h"
#include "llm/model.h"

typedef struct osc_kv_slots osc_kv_slots;

/* Bytes one slot of n_ctx tokens takes on the model's device for this mode (0 on a bad mode). */
size_t osc_kv_slots_bytes_per_slot(const osc_llm *m, const char *mode, int n_ctx);

osc_status osc_kv_slots_new(const osc_llm *m, const char *mode, int n_slots, int n_ctx, osc_kv_slots **out);
void osc_kv_slots_free(osc_kv_slots *s);
int osc_kv_slots_count(const osc_kv_slots *s);
int osc_kv_slots_ctx(const osc_kv_slots *s);
/* An empty cache for a sequence that will hold at most n tokens, or NULL. */
osc_kv *osc_kv_slots_acquire(osc_kv_slots *s, int n);
void osc_kv_slots_release(osc_kv_slots *s, osc_kv *kv);

#endif
