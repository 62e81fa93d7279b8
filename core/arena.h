/* Arenas: one allocation made up front, carved into aligned pieces, released all at once.
 * Per-forward scratch comes from an arena so the decode loop never calls malloc.
 * osc_arena_alloc returns NULL (and sets the error) when the arena is exhausted: that is a
 * sizing bug, reported as OSC_ERR_OOM. */
#ifndef OSC_CORE_ARENA_H
#define OSC_CORE_ARENA_H
#include <stddef.h>
#include "tensor.h"

typedef struct osc_arena {
    char *base;
    size_t cap, used, peak;
    osc_dev dev;
} osc_arena;

osc_status osc_arena_init(osc_arena *a, size_t cap, osc_dev dev);
void osc_arena_free(osc_arena *a);
void *osc_arena_alloc(osc_arena *a, size_t bytes);
static inline void osc_arena_reset(osc_arena *a) { a->used = 0; }
/* A tensor of the given shape in the arena; .data is NULL when it does not fit. */
osc_tensor osc_arena_tensor(osc_arena *a, osc_dtype dt, int nd, const int64_t *ne);
osc_tensor osc_arena_2d(osc_arena *a, osc_dtype dt, int64_t n0, int64_t n1);

/* Device memory hooks (implemented in core/device.c: cudaMalloc when built with CUDA). */
osc_status osc_dev_malloc(osc_dev dev, size_t bytes, void **out);
void osc_dev_free(osc_dev dev, void *p);

#endif
