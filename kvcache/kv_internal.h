/* kvcache/kv_internal.h: the osc_kv struct shared by kvcache.c (modes, sizes, the CPU
 * reference) and kv_gpu.c (the quantised modes on CUDA). Not a public header. */
#ifndef OSC_KV_INTERNAL_H
#define OSC_KV_INTERNAL_H
#include "kvcache.h"

enum { KV_PLAIN = 0, KV_INT8, KV_BLOCK };

typedef struct kv_mode {
    const char *name;
    int kind, bits, rotate, norm;
} kv_mode;

static const kv_mode k_modes[] = {
    {"bf16", KV_PLAIN, 16, 0, 0},  {"int8", KV_INT8, 8, 0, 0},    {"kivi2", KV_BLOCK, 2, 0, 0},
    {"kivi4", KV_BLOCK, 4, 0, 0},  {"rot2", KV_BLOCK, 2, 1, 0},   {"oscar2", KV_BLOCK, 2, 1, 1},
    {"oscar4", KV_BLOCK, 4, 1, 1},
};
#define N_MODES ((int)(sizeof k_modes / sizeof k_modes[0]))

/* The KV page pool (block modes). A page holds the packed part of R = r_evict tokens of EVERY
 * layer; per layer, at l * layer_bytes inside the page, at these byte offsets:
 *   kq u32 [R/32][Hkv][bits][hd]  kp fp16 [R/32][Hkv][hd][2]   (kv_quant.h K blocks)
 *   vq u32 [R][Hkv][hd*bits/32]   vp fp16 [R][Hkv][hd/32][2]   (kv_quant.h V rows)
 *   kn f32 [R]                    OScaR norms (1.0 for the modes without norm on CUDA)
 * i.e. kvquant_launch.h's layout for R tokens, on the CPU too. Each array size is a multiple of
 * 128 bytes (hd % 32 == 0, R % 32 == 0); layer_bytes is rounded up to 256. */
typedef struct kv_page_layout {
    size_t kq, kp, vq, vp, kn; /* byte offsets inside one layer of a page */
    size_t layer_bytes, page_bytes;
} kv_page_layout;

struct osc_kv_pool {
    osc_kv_params p; /* n_ctx unused */
    kv_mode m;
    int R;
    kv_page_layout lay;
    int n_pages, n_free;
    int *free_list; /* stack of free page indices: pop from the top */
    void *mem;      /* n_pages * page_bytes on p.dev */
    int n_caches;   /* live caches of this pool */
};

struct osc_kv {
    osc_kv_params p;
    kv_mode m;
    int len;     /* committed tokens */
    int pending; /* tokens stored by the current forward (same for every layer) */
    /* plain ("bf16") */
    void *k, *v; /* [n_layers][n_ctx][n_kv_heads][head_dim] in act_dt */
    size_t layer_elems;
    /* quantised modes (CPU, float32) */
    int R;          /* residual window (tokens); flush when full */
    int R_alloc;    /* rows allocated for it: min(R, n_ctx) */
    int n_groups;   /* ceil(n_ctx / 32) */
    int *nq, *nres; /* per layer: packed tokens [0, nq), residual tokens [nq, nq + nres) */
    uint32_t *kw;   /* block: [L][Hkv][n_groups][bits][hd] packed K (kv_quant.h) */
    uint16_t *kp;   /* block: [L][Hkv][n_groups][hd][2] fp16 (scale, zero) */
    uint32_t *vw;   /* block: [L][Hkv][n_ctx][hd*bits/32] packed V */
    uint16_t *vp;   /* block: [L][Hkv][n_ctx][hd/32][2] */
    int8_t *k8, *v8;     /* int8: [L][Hkv][n_ctx][hd] */
    uint16_t *k8s, *v8s; /* int8: [L][Hkv][n_ctx] fp16 scales */
    float *norms;   /* oscar: [L][n_ctx] n_t, fp32 */
    float *rk, *rv; /* block: [L][R_alloc][Hkv][hd]; rk rotated (and / n_t for oscar) */
    /* the k, v of the last store (full precision, for the current-token rule) */
    const void *cur_k, *cur_v; /* [cur_S][Hkv][hd] in act_dt on the cache's device */
    int cur_layer, cur_S;
    /* CUDA (kv_gpu.c): device arrays, per layer back to back; nq/nres/R as above. The residual
     * window holds RAW keys (after RoPE, not rotated or normalised) in bf16. */
    struct kv_gpu *g;
    /* pooled caches (osc_kv_new_in_pool): the packed part lives in pool pages; page i of the
     * sequence holds tokens [i*R, (i+1)*R) of every layer. kw/kp/vw/vp/norms are NULL then. */
    osc_kv_pool *pool;
    int *bt;       /* host block table [bt_cap]: pool page of each sequence page */
    int n_bt, bt_cap;
    float *rnorm;  /* CPU oscar: [L][R_alloc] norms of the residual window tokens */
};

kv_page_layout osc_kv_page_layout(const osc_kv_params *p, const kv_mode *m, int R);

/* kv_gpu.c; only with OSC_HAVE_CUDA (kvcache.c refuses quantised CUDA caches otherwise). */
osc_status osc_kvg_new(osc_kv *kv);
void osc_kvg_free(osc_kv *kv);
size_t osc_kvg_bytes(const osc_kv_params *p, int kind, int bits, int norm);
osc_status osc_kvg_store(osc_kv *kv, int l, const osc_tensor *k, const osc_tensor *v);
osc_status osc_kvg_attend(osc_kv *kv, int l, const osc_tensor *q, osc_tensor *out, float scale);
osc_status osc_kvg_store_rows(osc_kv **kvs, int B, int l, const osc_tensor *k, const osc_tensor *v);
osc_status osc_kvg_attend_batch(osc_kv **kvs, int B, int l, const osc_tensor *q, osc_tensor *out, float scale,
                                int *done);
osc_status osc_kvg_truncate_layer(osc_kv *kv, int l, int n);
struct osc_kvq_seq;
/* kv_batch.h's osc_kv_graph_layer for a GPU block cache (mode and shape checked by the caller) */
int osc_kvg_graph_layer(const osc_kv *kv, int l, void **win_k, void **win_v, struct osc_kvq_seq *seq);
osc_status osc_kvg_debug_dequant(const osc_kv *kv, int l, int t0, int n, float *k, float *v);
float osc_kvg_debug_norm(const osc_kv *kv, int l, int t);
/* pooled caches: bytes of the per-sequence part (window + device block table); entry i of the
 * device block table <- page (queued on the stream, no host sync) */
size_t osc_kvg_seq_bytes(const osc_kv_params *p);
osc_status osc_kvg_bt_set(osc_kv *kv, int i, int page);


#endif
