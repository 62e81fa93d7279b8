/* Image input: decode a file into 8-bit RGB.
 *
 * Formats: PNG through libpng (when built with OSC_HAVE_PNG); JPEG, WebP, BMP, GIF (first frame),
 * TIFF and anything else FFmpeg's image decoders read, through libavformat/libavcodec/libswscale
 * (when built with OSC_HAVE_FFMPEG). PNG goes to FFmpeg too when libpng is missing.
 *
 * Colour conversion follows the Qwen reference (qwen-omni-utils `to_rgb` after PIL's decoder):
 *   - images with a real alpha channel (PNG RGBA 8/16-bit, WebP/other RGBA) are composited over
 *     a WHITE background: out = round((c*a + 255*(255-a)) / 255);
 *   - gray+alpha PNGs and palette/gray/RGB PNGs with a tRNS chunk keep their colour and lose the
 *     alpha (PIL opens them as LA / P / RGB and convert("RGB") drops it);
 *   - 16-bit samples keep their high byte (PIL does this for RGB/RGBA; for 16-bit GRAY PIL clips
 *     the value to 255 instead, which whitens the image: we deliberately keep the high byte);
 *   - gray, 1/2/4-bit and palette images are expanded to RGB; no gamma or ICC handling (PIL
 *     applies none either).
 *
 * Untrusted input: the dimensions are read from the header and the image is refused
 * (OSC_ERR_FORMAT, "... exceeds the limit of N pixels") when w*h > max_pixels BEFORE pixel
 * memory is allocated or pixels are decoded. Empty, truncated, corrupt files give OSC_ERR_FORMAT,
 * a file that cannot be opened OSC_ERR_IO, a format no built-in decoder reads OSC_ERR_UNSUPPORTED.
 * Every message starts with the path.
 *
 * Ownership: osc_image owns rgb (malloc'd); release it with osc_image_free (safe on a zeroed or
 * already-freed image). Thread-safety: all functions are reentrant (no shared state).
 */
#ifndef OSC_ENCODERS_IMAGE_H
#define OSC_ENCODERS_IMAGE_H
#include <stdint.h>
#include "core/status.h"

/* 64 Mpx: far above any model's budget (Qwen2.5-Omni caps at 12.8 Mpx after resizing). */
#define OSC_IMAGE_MAX_PIXELS_DEFAULT (64LL * 1024 * 1024)

typedef struct osc_image {
    int w, h;
    uint8_t *rgb; /* [h][w][3], row-major, no padding */
} osc_image;

/* Decode `path`. max_pixels <= 0 means OSC_IMAGE_MAX_PIXELS_DEFAULT. On failure *out is zeroed. */
osc_status osc_image_load(const char *path, int64_t max_pixels, osc_image *out);

/* Copy an RGB8 buffer with `stride` bytes per row (>= 3*w) into a new image (video frames). */
osc_status osc_image_from_rgb(const uint8_t *rgb, int w, int h, int stride, osc_image *out);

void osc_image_free(osc_image *img);

#endif
