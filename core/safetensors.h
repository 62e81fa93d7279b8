/* safetensors reader (and a small writer for tests and tools).
 *
 * A checkpoint is one .safetensors file or a directory holding model.safetensors or a sharded
 * model.safetensors.index.json. Files are memory-mapped read-only; tensor data pointers point
 * into the mappings and stay valid until osc_st_close().
 *
 * Files are untrusted: the header length, the JSON header, every dtype, shape and data offset
 * are checked before use. Any problem gives OSC_ERR_FORMAT (OSC_ERR_IO when a file cannot be
 * opened, OSC_ERR_UNSUPPORTED for a dtype we do not handle) with a message that starts with the
 * offending file's path.
 *
 * Ownership: osc_st owns its mappings and all strings (tensor names, file paths) it hands out.
 * Thread-safety: after osc_st_open() returns, all read-only calls may be made from any thread.
 */
#ifndef OSC_CORE_SAFETENSORS_H
#define OSC_CORE_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "tensor.h"

/* Tensors in a file may have more dims than osc_tensor (Conv3d weights are 5-D). */
#define OSC_ST_MAX_DIMS 6

typedef struct osc_st_tensor {
    const char *name;
    osc_dtype dt;
    int nd;
    int64_t shape[OSC_ST_MAX_DIMS]; /* shape[0] outermost; unused entries are 0 */
    const void *data;            /* inside the mapped file; may be unaligned */
    size_t nbytes;
    const char *file;            /* path of the file holding it */
} osc_st_tensor;

typedef struct osc_st osc_st;

/* path: a .safetensors file, or a directory holding model.safetensors.index.json (preferred)
 * or model.safetensors. With an index, every shard named in weight_map is opened once and each
 * tensor must be in the shard the index names. Tensor names are unique across all shards. */
osc_status osc_st_open(const char *path, osc_st **out);
void osc_st_close(osc_st *st);

/* NULL when absent (no error is set). O(log n). */
const osc_st_tensor *osc_st_get(const osc_st *st, const char *name);
int osc_st_count(const osc_st *st);
/* Tensors are in name order; i in [0, count). NULL when out of range. */
const osc_st_tensor *osc_st_at(const osc_st *st, int i);
/* The path given to osc_st_open. */
const char *osc_st_path(const osc_st *st);

/* Look up `name` and check it has exactly this shape (nd dims) and a float dtype (F32/F16/BF16).
 * Errors: "PATH: missing tensor NAME" or
 *         "FILE: tensor NAME has shape [a,b] but the config implies [c,d]". */
osc_status osc_st_expect(const osc_st *st, const char *name, int nd, const int64_t *shape,
                         const osc_st_tensor **out);

/* Convert the tensor to float32 into dst; n must equal its element count. F32/F16/BF16 only. */
osc_status osc_st_read_f32(const osc_st_tensor *t, float *dst, int64_t n);

/* Write a safetensors file: n tensors given as names, dtypes, shapes (nds[i] dims each) and host
 * data (nelem * dtype size bytes each). Names must be unique. */
osc_status osc_st_write(const char *path, int n, const char *const *names, const osc_dtype *dts,
                        const int *nds, const int64_t (*shapes)[OSC_MAX_DIMS],
                        const void *const *datas);

#endif
