#include "tensor.h"

#include <math.h>
#include <string.h>

size_t osc_dtype_size(osc_dtype dt) {
    switch (dt) {
    case OSC_F32: case OSC_I32: return 4;
    case OSC_F16: case OSC_BF16: return 2;
    case OSC_U8: return 1;
    case OSC_I64: return 8;
    }
    return 0;
}

const char *osc_dtype_name(osc_dtype dt) {
    switch (dt) {
    case OSC_F32: return "F32";
    case OSC_F16: return "F16";
    case OSC_BF16: return "BF16";
    case OSC_I32: return "I32";
    case OSC_U8: return "U8";
    case OSC_I64: return "I64";
    }
    return "?";
}

int64_t osc_tensor_nelem(const osc_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->nd; i++) n *= t->ne[i];
    return n;
}

size_t osc_tensor_nbytes(const osc_tensor *t) { return (size_t)osc_tensor_nelem(t) * osc_dtype_size(t->dt); }

osc_tensor osc_tensor_make(void *data, osc_dtype dt, osc_dev dev, int nd, const int64_t *ne) {
    osc_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dt = dt;
    t.dev = dev;
    t.nd = nd;
    for (int i = 0; i < nd && i < OSC_MAX_DIMS; i++) t.ne[i] = ne[i];
    return t;
}

osc_tensor osc_tensor_2d(void *data, osc_dtype dt, osc_dev dev, int64_t n0, int64_t n1) {
    int64_t ne[2] = {n0, n1};
    return osc_tensor_make(data, dt, dev, 2, ne);
}

osc_tensor osc_tensor_1d(void *data, osc_dtype dt, osc_dev dev, int64_t n0) {
    return osc_tensor_make(data, dt, dev, 1, &n0);
}

osc_tensor osc_tensor_rows(const osc_tensor *t, int64_t r0, int64_t n) {
    osc_tensor v = *t;
    int64_t row = osc_tensor_nelem(t) / (t->ne[0] ? t->ne[0] : 1);
    v.data = (char *)t->data + (size_t)(r0 * row) * osc_dtype_size(t->dt);
    v.ne[0] = n;
    return v;
}

float osc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    int exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        float f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) {
        v.u = sign | 0x7f800000u | (man << 13);
        return v.f;
    }
    v.u = sign | ((uint32_t)(exp - 15 + 127) << 23) | (man << 13);
    return v.f;
}

uint16_t osc_f32_to_f16(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t sign = (v.u >> 16) & 0x8000u;
    uint32_t a = v.u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (a < 0x38800000u) { /* subnormal or zero in f16 */
        float af = fabsf(f);
        int m = (int)lrintf(af * 16777216.0f); /* 2^24, ties to even */
        return (uint16_t)(sign | (uint32_t)m);
    }
    uint32_t r = a + 0x0fffu + ((a >> 13) & 1u); /* round to nearest even on 13 dropped bits */
    uint32_t e = ((r >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(sign | (e << 10) | ((r >> 13) & 0x3ff));
}

osc_status osc_convert_to_f32(float *dst, const void *src, osc_dtype sdt, int64_t n) {
    switch (sdt) {
    case OSC_F32: memcpy(dst, src, (size_t)n * 4); return OSC_OK;
    case OSC_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = osc_bf16_to_f32(s[i]);
        return OSC_OK;
    }
    case OSC_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = osc_f16_to_f32(s[i]);
        return OSC_OK;
    }
    default:
        return osc_error(OSC_ERR_UNSUPPORTED, "cannot convert %s to F32", osc_dtype_name(sdt));
    }
}
