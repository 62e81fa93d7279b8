/* KV-cache slots for continuous batching in `oscar caption`: one cache per active sequence.
 *
 * Block modes (kivi2, kivi4, rot2, oscar2, oscar4): every slot is a cache in ONE paged pool
 * (kvcache.h osc_kv_pool); a sequence holds pages only for the tokens it has, and a finished
 * sequence's pages go straight to the next. Other modes (bf16, int8): one osc_kv of n_ctx
 * tokens per slot, made once at start.
 * Admission: acquire(n) takes a free slot and RESERVES the pages of n tokens (n = the most
 * tokens that sequence will ever hold); it returns NULL when no slot is free, n exceeds the
 * slot size, or the unreserved pages do not cover n. A sequence that stays within its n never
 * meets a full pool. osc_kv_slots_new sizes the pool for every slot at n_ctx tokens (nothing
 * can run out: the same guarantee as one cache per slot, in one allocation);
 * osc_kv_slots_new_pooled takes the page count, so more slots than full-size caches fit and
 * admission decides by the reservations.
 * Thread-safety: one thread (the consumer). Errors: OSC_ERR_OOM / the cache's own errors at
 * creation. */
#ifndef OSC_PIPELINES_LIB_CAPTION_SLOTS_H
#define OSC_PIPELINES_LIB_CAPTION_SLOTS_H
#include <stddef.h>

#include "kvcache/kvcache.h"
#include "llm/model.h"

typedef struct osc_kv_slots osc_kv_slots;

/* Bytes one slot of n_ctx tokens takes on the model's device for this mode (0 on a bad mode):
 * for the block modes its window plus the pool pages of n_ctx tokens. */
size_t osc_kv_slots_bytes_per_slot(const osc_llm *m, const char *mode, int n_ctx);
/* Block modes, for planning a pooled set: bytes of one pool page (0 for the other modes) and of
 * one slot outside the pool (its residual window and block table); tokens per page. */
size_t osc_kv_slots_page_bytes(const osc_llm *m, const char *mode);
size_t osc_kv_slots_seq_bytes(const osc_llm *m, const char *mode, int n_ctx);
int osc_kv_slots_page_tokens(const osc_llm *m, const char *mode);

osc_status osc_kv_slots_new(const osc_llm *m, const char *mode, int n_slots, int n_ctx, osc_kv_slots **out);
/* Block modes only: n_slots caches of at most n_ctx tokens sharing a pool of n_pages pages. */
osc_status osc_kv_slots_new_pooled(const osc_llm *m, const char *mode, int n_slots, int n_ctx, int n_pages,
                                   osc_kv_slots **out);
void osc_kv_slots_free(osc_kv_slots *s);
int osc_kv_slots_count(const osc_kv_slots *s);
int osc_kv_slots_ctx(const osc_kv_slots *s);
/* An empty cache for a sequence that will hold at most n tokens, or NULL (see above). */
osc_kv *osc_kv_slots_acquire(osc_kv_slots *s, int n);
void osc_kv_slots_release(osc_kv_slots *s, osc_kv *kv);
/* Pool pages not reserved by an acquired slot (-1 without a pool). */
int osc_kv_slots_pages_unreserved(const osc_kv_slots *s);

#endif
