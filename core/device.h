/* Host <-> device transfers for tensors, and device queries. On a build without CUDA every
 * CUDA request fails with OSC_ERR_UNSUPPORTED ("built without CUDA"). */
#ifndef OSC_CORE_DEVICE_H
#define OSC_CORE_DEVICE_H
#include "arena.h"

int osc_device_cuda_available(void);
/* Copy n bytes between any two of host/device memory. */
osc_status osc_copy_bytes(void *dst, osc_dev ddev, const void *src, osc_dev sdev, size_t n);
/* dst (host, float32) <- t (any device, F32/BF16/F16). n must equal t's element count. */
osc_status osc_tensor_download_f32(float *dst, const osc_tensor *t, int64_t n);
/* t (any device) <- src (host, float32), converted to t's dtype (F32 or BF16). */
osc_status osc_tensor_upload_f32(osc_tensor *t, const float *src, int64_t n);
/* t (any device, I32) <- src (host). */
osc_status osc_tensor_upload_i32(osc_tensor *t, const int32_t *src, int64_t n);
/* Wait for queued device work; no-op on CPU. */
osc_status osc_device_sync(osc_dev dev);
/* Time of the device work queued between start and stop, measured on the device (CUDA
 * events, so launch latency and the final wait are not counted); stop waits for that work.
 * CPU: OSC_ERR_UNSUPPORTED (time on the host there). */
osc_status osc_device_timer_start(osc_dev dev);
osc_status osc_device_timer_stop(osc_dev dev, double *seconds);
/* Keep the device busy for `us` microseconds of device time (1 .. 1e6) before the work queued
 * after this call: a device timer started after a hold that outlasts the host's launch work
 * times the device work alone. CPU: OSC_ERR_UNSUPPORTED. */
osc_status osc_device_hold(osc_dev dev, double us);
/* Free / total memory of the device (CPU: from /proc/meminfo). */
osc_status osc_device_mem_info(osc_dev dev, size_t *free_b, size_t *total_b);

#endif
