/* Qwen2-VL / Qwen2.5-VL / Qwen2.5-Omni image preprocessing: RGB8 frames -> pixel_values.
 *
 * The reference is qwen-omni-utils `fetch_image` followed by transformers' Qwen2VLImageProcessor
 * (docs/qwen2_5_omni.md section 2):
 *   1. (h, w) -> smart_resize(h, w, factor = patch_size*merge_size = 28, min_pixels, max_pixels);
 *   2. resize with PIL's bicubic (a = -0.5, antialiased: the kernel is widened by the downscale
 *      factor), horizontal pass then vertical pass, each rounded and clamped to uint8. This is
 *      bit-exact with Pillow's Image.resize (tests/test_image.c checks it);
 *   3. x/255, (x - mean)/std in float32, computed as (x - mean*255)/(std*255) exactly like the
 *      transformers torchvision backend does (bit-exact for uint8 input);
 *   4. frames padded to a multiple of temporal_patch_size by repeating the last one (an image is
 *      2 identical frames), grid = [T/tp, H/ps, W/ps];
 *   5. patch flattening: row ((t*(gh/m) + bh)*(gw/m) + bw)*m*m + mh*m + mw for patch row
 *      bh*m+mh, column bw*m+mw (every m*m consecutive rows are one merge window, raster order);
 *      column ((c*tp + tt)*ps + py)*ps + px.
 * With resize_float = 1 step 2 keeps float values (no rounding, no clamping), for a video path
 * that follows torchvision's float resize instead.
 *
 * Errors: OSC_ERR_INVALID_ARG for bad parameters, frames of different sizes, an aspect ratio
 * over 200 (the reference refuses it too); OSC_ERR_OOM when the output cannot be allocated.
 * Thread-safety: reentrant; the work inside is split over OpenMP threads.
 */
#ifndef OSC_ENCODERS_VISION_PRE_H
#define OSC_ENCODERS_VISION_PRE_H
#include <stdint.h>
#include "core/status.h"
#include "encoders/image.h"

typedef struct osc_vision_pre_params {
    int64_t min_pixels, max_pixels; /* resized area bounds; defaults 4*28*28 and 16384*28*28 */
    int patch_size;                 /* 14 */
    int merge_size;                 /* 2 */
    int temporal_patch_size;        /* 2 */
    float mean[3], std[3];          /* OpenAI CLIP */
    int resize_float;               /* 0: PIL uint8 resize (images); 1: float resize (video) */
} osc_vision_pre_params;

void osc_vision_pre_defaults(osc_vision_pre_params *p);

/* The reference's smart_resize: both sides multiples of `factor`, area within [min, max] as
 * closely as the aspect ratio allows. Python round() (half to even) for the first guess, which
 * is at least `factor`; floor/ceil after rescaling by beta. */
osc_status osc_smart_resize(int64_t h, int64_t w, int factor, int64_t min_pixels, int64_t max_pixels,
                            int *out_h, int *out_w);

/* PIL-exact antialiased bicubic resize of an RGB8 image (a copy when the size is unchanged). */
osc_status osc_image_resize_bicubic(const osc_image *in, int out_w, int out_h, osc_image *out);

/* Float variant: no rounding or clamping; out is [3][out_h][out_w] (planar), out_w*out_h*3 floats. */
osc_status osc_image_resize_bicubic_f32(const osc_image *in, int out_w, int out_h, float *out);

/* frames: n_frames images of one size (1 for a still image). On success *pixel_values is a
 * malloc'd float32 [n_patches][3*tp*ps*ps] (caller frees), n_patches = grid_thw[0]*[1]*[2]. */
osc_status osc_vision_preprocess(const osc_image *frames, int n_frames, const osc_vision_pre_params *p,
                                 float **pixel_values, int64_t *n_patches, int grid_thw[3]);

#endif
