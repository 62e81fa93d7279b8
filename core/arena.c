#include "arena.h"

#include <stdlib.h>
#include <string.h>

#define OSC_ALIGN 256

osc_status osc_dev_malloc(osc_dev dev, size_t bytes, void **out);

osc_status osc_arena_init(osc_arena *a, size_t cap, osc_dev dev) {
    memset(a, 0, sizeof *a);
    a->dev = dev;
    cap = (cap + OSC_ALIGN - 1) & ~(size_t)(OSC_ALIGN - 1);
    if (cap == 0) cap = OSC_ALIGN;
    OSC_TRY(osc_dev_malloc(dev, cap, (void **)&a->base));
    a->cap = cap;
    return OSC_OK;
}

void osc_arena_free(osc_arena *a) {
    if (a->base) osc_dev_free(a->dev, a->base);
    memset(a, 0, sizeof *a);
}

void *osc_arena_alloc(osc_arena *a, size_t bytes) {
    size_t off = (a->used + OSC_ALIGN - 1) & ~(size_t)(OSC_ALIGN - 1);
    if (bytes > a->cap || off > a->cap - bytes) {
        osc_error(OSC_ERR_OOM, "scratch arena exhausted: need %zu more bytes, %zu of %zu used",
                  bytes, a->used, a->cap);
        return NULL;
    }
    a->used = off + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + off;
}

osc_tensor osc_arena_tensor(osc_arena *a, osc_dtype dt, int nd, const int64_t *ne) {
    osc_tensor t = osc_tensor_make(NULL, dt, a->dev, nd, ne);
    t.data = osc_arena_alloc(a, osc_tensor_nbytes(&t));
    return t;
}

osc_tensor osc_arena_2d(osc_arena *a, osc_dtype dt, int64_t n0, int64_t n1) {
    int64_t ne[2] = {n0, n1};
    return osc_arena_tensor(a, dt, 2, ne);
}
