/* kernels/cpu/cpu_conv.h: CPU (float32) backend of the 1-D convolution helpers of kernels/ops.h
 * (osc_op_im2col1d, osc_op_avgpool2_rows). Same contract as cpu.h: arguments already validated
 * by kernels/ops.c, all tensors OSC_F32 on the CPU, no allocation. */
#ifndef OSC_KERNELS_CPU_CONV_H
#define OSC_KERNELS_CPU_CONV_H
#include "../ops.h"

osc_status osc_cpu_im2col1d(osc_tensor *out, const osc_tensor *x, int kernel, int stride, int pad);
osc_status osc_cpu_avgpool2_rows(osc_tensor *out, const osc_tensor *x);

#endif
