#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OSC_HAVE_CUDA
#include "../kernels/cuda/launch.h"
#endif

#ifndef OSC_HAVE_CUDA
static osc_status no_cuda(void) {
    return osc_error(OSC_ERR_UNSUPPORTED, "this oscar was built without CUDA (rebuild with nvcc present and -DOSC_CUDA=ON)");
}
#endif

int osc_device_cuda_available(void) {
#ifdef OSC_HAVE_CUDA
    return osc_cuda_available();
#else
    return 0;
#endif
}

osc_status osc_dev_malloc(osc_dev dev, size_t bytes, void **out) {
    *out = NULL;
    if (dev == OSC_DEV_CPU) {
        size_t n = (bytes + 255) & ~(size_t)255;
        void *p = aligned_alloc(256, n ? n : 256);
        if (!p) return osc_error(OSC_ERR_OOM, "cannot allocate %zu bytes of host memory", bytes);
        *out = p;
        return OSC_OK;
    }
#ifdef OSC_HAVE_CUDA
    return osc_cuda_malloc(out, bytes);
#else
    return no_cuda();
#endif
}

void osc_dev_free(osc_dev dev, void *p) {
    if (!p) return;
    if (dev == OSC_DEV_CPU) {
        free(p);
        return;
    }
#ifdef OSC_HAVE_CUDA
    osc_cuda_free(p);
#endif
}

osc_status osc_copy_bytes(void *dst, osc_dev ddev, const void *src, osc_dev sdev, size_t n) {
    if (n == 0) return OSC_OK;
    if (ddev == OSC_DEV_CPU && sdev == OSC_DEV_CPU) {
        memmove(dst, src, n);
        return OSC_OK;
    }
#ifdef OSC_HAVE_CUDA
    if (ddev == OSC_DEV_CUDA && sdev == OSC_DEV_CPU) return osc_cuda_memcpy_h2d(dst, src, n);
    if (ddev == OSC_DEV_CPU && sdev == OSC_DEV_CUDA) return osc_cuda_memcpy_d2h(dst, src, n);
    return osc_cuda_memcpy_d2d(dst, src, n);
#else
    return no_cuda();
#endif
}

osc_status osc_tensor_download_f32(float *dst, const osc_tensor *t, int64_t n) {
    if (osc_tensor_nelem(t) != n)
        return osc_error(OSC_ERR_INVALID_ARG, "download: tensor has %lld elements, asked for %lld",
                         (long long)osc_tensor_nelem(t), (long long)n);
    if (t->dt == OSC_F32) return osc_copy_bytes(dst, OSC_DEV_CPU, t->data, t->dev, (size_t)n * 4);
    if (t->dev == OSC_DEV_CPU) return osc_convert_to_f32(dst, t->data, t->dt, n);
    /* Stage through the tail of dst: 2-byte elements fit in the second half of the buffer. */
    size_t es = osc_dtype_size(t->dt);
    if (es != 2) return osc_error(OSC_ERR_UNSUPPORTED, "download: dtype %s", osc_dtype_name(t->dt));
    uint16_t *stage = (uint16_t *)(dst + n) - n;
    OSC_TRY(osc_copy_bytes(stage, OSC_DEV_CPU, t->data, t->dev, (size_t)n * 2));
    /* convert front to back is safe: element i reads stage[i] at byte offset 2n+2i >= 4i */
    if (t->dt == OSC_BF16) for (int64_t i = 0; i < n; i++) dst[i] = osc_bf16_to_f32(stage[i]);
    else for (int64_t i = 0; i < n; i++) dst[i] = osc_f16_to_f32(stage[i]);
    return OSC_OK;
}

osc_status osc_tensor_upload_f32(osc_tensor *t, const float *src, int64_t n) {
    if (osc_tensor_nelem(t) != n)
        return osc_error(OSC_ERR_INVALID_ARG, "upload: tensor has %lld elements, got %lld",
                         (long long)osc_tensor_nelem(t), (long long)n);
    if (t->dt == OSC_F32) return osc_copy_bytes(t->data, t->dev, src, OSC_DEV_CPU, (size_t)n * 4);
    if (t->dt != OSC_BF16) return osc_error(OSC_ERR_UNSUPPORTED, "upload: dtype %s", osc_dtype_name(t->dt));
    uint16_t *tmp = malloc((size_t)n * 2 + 1);
    if (!tmp) return osc_error(OSC_ERR_OOM, "upload: cannot allocate %lld bytes", (long long)n * 2);
    for (int64_t i = 0; i < n; i++) tmp[i] = osc_f32_to_bf16(src[i]);
    osc_status s = osc_copy_bytes(t->data, t->dev, tmp, OSC_DEV_CPU, (size_t)n * 2);
    free(tmp);
    return s;
}

osc_status osc_tensor_upload_i32(osc_tensor *t, const int32_t *src, int64_t n) {
    if (t->dt != OSC_I32 || osc_tensor_nelem(t) < n)
        return osc_error(OSC_ERR_INVALID_ARG, "upload_i32: bad target tensor");
    return osc_copy_bytes(t->data, t->dev, src, OSC_DEV_CPU, (size_t)n * 4);
}

osc_status osc_device_sync(osc_dev dev) {
    if (dev == OSC_DEV_CPU) return OSC_OK;
#ifdef OSC_HAVE_CUDA
    return osc_cuda_sync();
#else
    return no_cuda();
#endif
}

osc_status osc_device_timer_start(osc_dev dev) {
    if (dev == OSC_DEV_CPU) return osc_error(OSC_ERR_UNSUPPORTED, "device timer: CPU work is timed on the host");
#ifdef OSC_HAVE_CUDA
    return osc_cuda_timer_start();
#else
    return no_cuda();
#endif
}

osc_status osc_device_timer_stop(osc_dev dev, double *seconds) {
    if (dev == OSC_DEV_CPU) return osc_error(OSC_ERR_UNSUPPORTED, "device timer: CPU work is timed on the host");
#ifdef OSC_HAVE_CUDA
    return osc_cuda_timer_stop(seconds);
#else
    (void)seconds;
    return no_cuda();
#endif
}

osc_status osc_device_hold(osc_dev dev, double us) {
    if (dev == OSC_DEV_CPU) return osc_error(OSC_ERR_UNSUPPORTED, "device hold: not on the CPU");
#ifdef OSC_HAVE_CUDA
    return osc_cuda_hold(us);
#else
    (void)us;
    return no_cuda();
#endif
}

osc_status osc_device_mem_info(osc_dev dev, size_t *free_b, size_t *total_b) {
    if (dev == OSC_DEV_CUDA) {
#ifdef OSC_HAVE_CUDA
        return osc_cuda_mem_info(free_b, total_b);
#else
        return no_cuda();
#endif
    }
    *free_b = *total_b = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return osc_error(OSC_ERR_IO, "cannot read /proc/meminfo");
    char line[256];
    unsigned long long v;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %llu kB", &v) == 1) *total_b = (size_t)v * 1024;
        if (sscanf(line, "MemAvailable: %llu kB", &v) == 1) *free_b = (size_t)v * 1024;
    }
    fclose(f);
    return OSC_OK;
}
