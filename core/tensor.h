/* Tensors: a typed view of contiguous row-major memory on the CPU or a CUDA device.
 * A tensor never owns its data: weights own theirs (osc_weights), scratch lives in arenas.
 * ne[0] is the OUTERMOST dimension (row-major, like numpy shape). */
#ifndef OSC_CORE_TENSOR_H
#define OSC_CORE_TENSOR_H
#include <stddef.h>
#include <stdint.h>
#include "status.h"

typedef enum osc_dtype { OSC_F32 = 0, OSC_F16, OSC_BF16, OSC_I32, OSC_U8, OSC_I64 } osc_dtype;
typedef enum osc_dev { OSC_DEV_CPU = 0, OSC_DEV_CUDA = 1 } osc_dev;

#define OSC_MAX_DIMS 4

typedef struct osc_tensor {
    void *data;
    osc_dtype dt;
    osc_dev dev;
    int nd;
    int64_t ne[OSC_MAX_DIMS];
} osc_tensor;

size_t osc_dtype_size(osc_dtype dt);
const char *osc_dtype_name(osc_dtype dt);
int64_t osc_tensor_nelem(const osc_tensor *t);
size_t osc_tensor_nbytes(const osc_tensor *t);
/* A tensor header for existing memory; ne has nd entries. */
osc_tensor osc_tensor_make(void *data, osc_dtype dt, osc_dev dev, int nd, const int64_t *ne);
osc_tensor osc_tensor_2d(void *data, osc_dtype dt, osc_dev dev, int64_t n0, int64_t n1);
osc_tensor osc_tensor_1d(void *data, osc_dtype dt, osc_dev dev, int64_t n0);
/* Rows [r0, r0+n) of the outermost dimension. */
osc_tensor osc_tensor_rows(const osc_tensor *t, int64_t r0, int64_t n);

/* Scalar conversions (round to nearest even; NaN stays NaN). */
static inline float osc_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}
static inline uint16_t osc_f32_to_bf16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40u);
    uint32_t r = v.u + 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}
float osc_f16_to_f32(uint16_t h);
uint16_t osc_f32_to_f16(float f);

/* Convert n elements from src (dtype sdt, host memory) to float32. */
osc_status osc_convert_to_f32(float *dst, const void *src, osc_dtype sdt, int64_t n);

#endif
