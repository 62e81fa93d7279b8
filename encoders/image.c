/* Image decoding: libpng for PNG, FFmpeg for the rest. See image.h for the colour rules. */
#include "image.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OSC_HAVE_PNG
#include <png.h>
#endif
#ifdef OSC_HAVE_FFMPEG
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#endif

void osc_image_free(osc_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

osc_status osc_image_from_rgb(const uint8_t *rgb, int w, int h, int stride, osc_image *out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_image_from_rgb: out is NULL");
    memset(out, 0, sizeof *out);
    if (!rgb || w <= 0 || h <= 0 || stride < 3 * (int64_t)w)
        return osc_error(OSC_ERR_INVALID_ARG, "osc_image_from_rgb: bad image %dx%d stride %d", w, h, stride);
    size_t row = (size_t)w * 3;
    uint8_t *p = malloc(row * (size_t)h);
    if (!p) return osc_error(OSC_ERR_OOM, "osc_image_from_rgb: no memory for %dx%d", w, h);
    for (int y = 0; y < h; y++) memcpy(p + row * y, rgb + (size_t)stride * y, row);
    out->w = w, out->h = h, out->rgb = p;
    return OSC_OK;
}

/* round(v / 255) for 0 <= v <= 255*255, exact (the PIL/libimaging blend rounding). */
static inline uint8_t div255(unsigned v) {
    v += 128;
    return (uint8_t)((v + (v >> 8)) >> 8);
}

/* RGBA (4 bytes/pixel, rows of src_stride) -> RGB: over white when `composite`, else alpha dropped. */
static void rgba_to_rgb(const uint8_t *src, size_t src_stride, int w, int h, int composite, uint8_t *dst) {
    for (int y = 0; y < h; y++) {
        const uint8_t *s = src + src_stride * y;
        uint8_t *d = dst + (size_t)w * 3 * y;
        for (int x = 0; x < w; x++, s += 4, d += 3) {
            unsigned a = s[3];
            for (int c = 0; c < 3; c++)
                d[c] = composite ? div255(s[c] * a + 255u * (255u - a)) : s[c];
        }
    }
}

/* ---- PNG via libpng ---- */
#ifdef OSC_HAVE_PNG
typedef struct png_ctx {
    jmp_buf jb;
    char msg[200];
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    longjmp(c->jb, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* benign (bad ancillary chunk CRCs, unknown chunks): ignore like PIL */
}

static osc_status load_png(FILE *f, const char *path, int64_t max_pixels, osc_image *out) {
    png_ctx ctx;
    ctx.msg[0] = 0;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return osc_error(OSC_ERR_OOM, "%s: cannot create a libpng reader", path);
    }
    /* Changed after setjmp and read after longjmp: volatile. */
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    volatile osc_status st = OSC_ERR_FORMAT;
    volatile int limit_hit = 0;
    if (setjmp(ctx.jb)) {
        free(buf);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        if (limit_hit) return st;
        return osc_error(OSC_ERR_FORMAT, "%s: corrupt or truncated PNG (%s)", path, ctx.msg);
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
    if ((int64_t)w * h > max_pixels) {
        limit_hit = 1;
        st = osc_error(OSC_ERR_FORMAT, "%s: image is %ux%u = %lld pixels, which exceeds the limit of %lld pixels",
                       path, (unsigned)w, (unsigned)h, (long long)w * h, (long long)max_pixels);
        longjmp(ctx.jb, 1);
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png); /* high byte, as PIL's ";16B" unpackers */
    if (!(ctype & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((ch != 3 && ch != 4) || png_get_bit_depth(png, info) != 8 || rowbytes != (size_t)w * ch)
        png_error(png, "unexpected layout after conversion");
    buf = malloc(rowbytes * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!buf || !rows) {
        limit_hit = 1;
        st = osc_error(OSC_ERR_OOM, "%s: no memory for a %ux%u image", path, (unsigned)w, (unsigned)h);
        longjmp(ctx.jb, 1);
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = buf + rowbytes * y;
    png_read_image(png, rows);
    /* IEND and trailing chunks are not needed (PIL does not read them either). */
    uint8_t *rgb = buf;
    if (ch == 4) {
        /* Only a true RGBA image is composited (qwen-omni-utils `to_rgb`); gray+alpha and tRNS
         * transparency are dropped as PIL's convert("RGB") does. */
        rgb = malloc((size_t)w * h * 3);
        if (!rgb) {
            limit_hit = 1;
            st = osc_error(OSC_ERR_OOM, "%s: no memory for a %ux%u image", path, (unsigned)w, (unsigned)h);
            longjmp(ctx.jb, 1);
        }
        rgba_to_rgb(buf, rowbytes, (int)w, (int)h, ctype == PNG_COLOR_TYPE_RGB_ALPHA, rgb);
        free(buf);
        buf = NULL;
    }
    free(rows);
    rows = NULL;
    png_destroy_read_struct(&png, &info, NULL);
    out->w = (int)w, out->h = (int)h, out->rgb = rgb;
    return OSC_OK;
}
#endif

/* ---- everything else via FFmpeg ---- */
#ifdef OSC_HAVE_FFMPEG
/* Demuxers for still images and GIF: by content (*_pipe), or image2 by file extension when the
 * content probe is unsure (progressive or truncated JPEG), with file name patterns off. */
static const char *const k_image_demuxers =
    "image2,png_pipe,jpeg_pipe,jpegls_pipe,jpegxl_pipe,webp_pipe,bmp_pipe,tiff_pipe,gif,gif_pipe,"
    "ppm_pipe,pgm_pipe,pbm_pipe,pam_pipe,pfm_pipe,qoi_pipe,sgi_pipe,sunrast_pipe,xbm_pipe,"
    "xpm_pipe,xwd_pipe,pcx_pipe,psd_pipe,dds_pipe,j2k_pipe,exr_pipe,hdr_pipe,pictor_pipe,"
    "photocd_pipe,dpx_pipe,qdraw_pipe,gem_pipe,vbn_pipe,apng";

static osc_status av_fail(const char *path, int r, const char *what) {
    char e[AV_ERROR_MAX_STRING_SIZE];
    av_strerror(r, e, sizeof e);
    return osc_error(OSC_ERR_FORMAT, "%s: %s (%s)", path, what, e);
}

static osc_status ff_to_rgb(const AVFrame *fr, const char *path, osc_image *out) {
    const AVPixFmtDescriptor *d = av_pix_fmt_desc_get(fr->format);
    if (!d) return osc_error(OSC_ERR_FORMAT, "%s: decoder returned an unknown pixel format", path);
    int alpha = (d->flags & AV_PIX_FMT_FLAG_ALPHA) != 0;
    enum AVPixelFormat dst_fmt = alpha ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
    int w = fr->width, h = fr->height, bpp = alpha ? 4 : 3;
    struct SwsContext *sws = sws_alloc_context();
    uint8_t *tmp = malloc((size_t)w * h * bpp);
    uint8_t *rgb = alpha ? malloc((size_t)w * h * 3) : tmp;
    if (!sws || !tmp || !rgb) {
        sws_freeContext(sws);
        free(tmp);
        if (alpha) free(rgb);
        return osc_error(OSC_ERR_OOM, "%s: no memory for a %dx%d image", path, w, h);
    }
    /* Accurate rounding, full-resolution chroma interpolation; chroma siting from the decoder. */
    av_opt_set_int(sws, "srcw", w, 0);
    av_opt_set_int(sws, "srch", h, 0);
    /* The deprecated full-range yuvj* formats: their plain twins plus full range (set below). */
    enum AVPixelFormat src_fmt = fr->format;
    int full = fr->color_range == AVCOL_RANGE_JPEG;
    static const enum AVPixelFormat jfmt[][2] = {
        {AV_PIX_FMT_YUVJ420P, AV_PIX_FMT_YUV420P}, {AV_PIX_FMT_YUVJ422P, AV_PIX_FMT_YUV422P},
        {AV_PIX_FMT_YUVJ444P, AV_PIX_FMT_YUV444P}, {AV_PIX_FMT_YUVJ440P, AV_PIX_FMT_YUV440P},
        {AV_PIX_FMT_YUVJ411P, AV_PIX_FMT_YUV411P}};
    for (size_t i = 0; i < sizeof jfmt / sizeof jfmt[0]; i++)
        if (src_fmt == jfmt[i][0]) src_fmt = jfmt[i][1], full = 1;
    av_opt_set_int(sws, "src_format", src_fmt, 0);
    av_opt_set_int(sws, "dstw", w, 0);
    av_opt_set_int(sws, "dsth", h, 0);
    av_opt_set_int(sws, "dst_format", dst_fmt, 0);
    av_opt_set_int(sws, "sws_flags", SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT | SWS_FULL_CHR_H_INP, 0);
    int xpos, ypos;
    if ((d->log2_chroma_w || d->log2_chroma_h) && fr->chroma_location != AVCHROMA_LOC_UNSPECIFIED &&
        avcodec_enum_to_chroma_pos(&xpos, &ypos, fr->chroma_location) == 0) {
        av_opt_set_int(sws, "src_h_chr_pos", xpos, 0);
        av_opt_set_int(sws, "src_v_chr_pos", ypos, 0);
    }
    int r = sws_init_context(sws, NULL, NULL);
    if (r >= 0) {
        int cs = fr->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_ITU601;
        const int *coef = sws_getCoefficients(cs);
        sws_setColorspaceDetails(sws, coef, full, sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
        uint8_t *dst[4] = {tmp, NULL, NULL, NULL};
        int dst_stride[4] = {w * bpp, 0, 0, 0};
        r = sws_scale(sws, (const uint8_t *const *)fr->data, fr->linesize, 0, h, dst, dst_stride);
        if (r != h) r = r < 0 ? r : AVERROR_BUG;
    }
    sws_freeContext(sws);
    if (r < 0) {
        free(tmp);
        if (alpha) free(rgb);
        return av_fail(path, r, "cannot convert the decoded image to RGB");
    }
    if (alpha) {
        rgba_to_rgb(tmp, (size_t)w * 4, w, h, 1, rgb);
        free(tmp);
    }
    out->w = w, out->h = h, out->rgb = rgb;
    return OSC_OK;
}

static osc_status load_ffmpeg(const char *path, int64_t max_pixels, osc_image *out) {
    AVFormatContext *fmt = NULL;
    AVCodecContext *dec = NULL;
    AVPacket *pkt = NULL;
    AVFrame *fr = NULL;
    osc_status st = OSC_OK;
    size_t n = strlen(path);
    char *url = malloc(n + 6);
    if (!url) return osc_error(OSC_ERR_OOM, "%s: no memory", path);
    memcpy(url, "file:", 5), memcpy(url + 5, path, n + 1); /* never another protocol */
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    av_dict_set(&opts, "format_whitelist", k_image_demuxers, 0);
    av_dict_set(&opts, "pattern_type", "none", 0); /* image2: the name is a file, not a sequence */
    int r = avformat_open_input(&fmt, url, NULL, &opts);
    av_dict_free(&opts);
    free(url);
    if (r < 0) {
        if (r == AVERROR_INVALIDDATA || r == AVERROR(EINVAL) || r == AVERROR_DEMUXER_NOT_FOUND)
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: not an image format this build can read", path);
        return av_fail(path, r, "cannot open the image");
    }
    int si = -1;
    for (unsigned i = 0; i < fmt->nb_streams; i++)
        if (fmt->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
            si = (int)i;
            break;
        }
    if (si < 0) {
        st = osc_error(OSC_ERR_FORMAT, "%s: no image in the file", path);
        goto done;
    }
    const AVCodecParameters *par = fmt->streams[si]->codecpar;
    if ((int64_t)par->width * par->height > max_pixels) {
        st = osc_error(OSC_ERR_FORMAT, "%s: image is %dx%d = %lld pixels, which exceeds the limit of %lld pixels",
                       path, par->width, par->height, (long long)par->width * par->height, (long long)max_pixels);
        goto done;
    }
    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec) {
        st = osc_error(OSC_ERR_UNSUPPORTED, "%s: no decoder for %s in this FFmpeg build", path,
                       avcodec_get_name(par->codec_id));
        goto done;
    }
    dec = avcodec_alloc_context3(codec);
    pkt = av_packet_alloc();
    fr = av_frame_alloc();
    if (!dec || !pkt || !fr) {
        st = osc_error(OSC_ERR_OOM, "%s: no memory for the decoder", path);
        goto done;
    }
    if ((r = avcodec_parameters_to_context(dec, par)) < 0) {
        st = av_fail(path, r, "bad codec parameters");
        goto done;
    }
    /* The decoder refuses any frame whose header says more pixels than this, before allocating.
     * FFmpeg counts the width rounded up to its stride alignment, hence a little slack here and
     * the exact check on the decoded frame below. */
    dec->max_pixels = max_pixels + max_pixels / 16 + 64;
    dec->thread_count = 1;
    dec->err_recognition |= AV_EF_EXPLODE; /* a truncated or damaged image is an error, as in PIL */
    if ((r = avcodec_open2(dec, codec, NULL)) < 0) {
        st = av_fail(path, r, "cannot open the decoder");
        goto done;
    }
    int got = 0, flushing = 0, last_err = 0;
    while (!got) {
        if (!flushing) {
            r = av_read_frame(fmt, pkt);
            if (r == AVERROR_EOF) {
                flushing = 1;
                r = avcodec_send_packet(dec, NULL);
            } else if (r < 0) {
                st = av_fail(path, r, "cannot read the image data");
                goto done;
            } else if (pkt->stream_index != si) {
                av_packet_unref(pkt);
                continue;
            } else {
                r = avcodec_send_packet(dec, pkt);
                av_packet_unref(pkt);
            }
            if (r < 0 && r != AVERROR(EAGAIN) && r != AVERROR_EOF) last_err = r;
        }
        r = avcodec_receive_frame(dec, fr);
        if (r == 0) {
            got = 1;
        } else if (r == AVERROR(EAGAIN) && !flushing) {
            continue;
        } else if (r == AVERROR_EOF || r == AVERROR(EAGAIN)) {
            break;
        } else {
            last_err = r;
            if (flushing) break;
        }
    }
    if (!got) {
        if (last_err == AVERROR(EINVAL) && dec->width > 0 && (int64_t)dec->width * dec->height > max_pixels)
            st = osc_error(OSC_ERR_FORMAT, "%s: image is %dx%d, which exceeds the limit of %lld pixels", path,
                           dec->width, dec->height, (long long)max_pixels);
        else if (last_err == AVERROR(EINVAL))
            st = osc_error(OSC_ERR_FORMAT,
                           "%s: the decoder refused the image: its size exceeds the limit of %lld pixels "
                           "or is invalid", path, (long long)max_pixels);
        else if (last_err)
            st = av_fail(path, last_err, "corrupt or truncated image");
        else
            st = osc_error(OSC_ERR_FORMAT, "%s: corrupt or truncated image (no picture decoded)", path);
        goto done;
    }
    if (fr->width <= 0 || fr->height <= 0 || (int64_t)fr->width * fr->height > max_pixels) {
        st = osc_error(OSC_ERR_FORMAT, "%s: image is %dx%d, which exceeds the limit of %lld pixels", path,
                       fr->width, fr->height, (long long)max_pixels);
        goto done;
    }
    st = ff_to_rgb(fr, path, out);
done:
    av_frame_free(&fr);
    av_packet_free(&pkt);
    avcodec_free_context(&dec);
    avformat_close_input(&fmt);
    return st;
}
#endif

osc_status osc_image_load(const char *path, int64_t max_pixels, osc_image *out) {
    if (!out) return osc_error(OSC_ERR_INVALID_ARG, "osc_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path || !*path) return osc_error(OSC_ERR_INVALID_ARG, "osc_image_load: empty path");
    if (max_pixels <= 0) max_pixels = OSC_IMAGE_MAX_PIXELS_DEFAULT;
    FILE *f = fopen(path, "rb");
    if (!f) return osc_error(OSC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    size_t got = fread(sig, 1, sizeof sig, f);
    if (got == 0 && ferror(f)) {
        int e = errno;
        fclose(f);
        return osc_error(OSC_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    if (got == 0) {
        fclose(f);
        return osc_error(OSC_ERR_FORMAT, "%s: empty file", path);
    }
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int is_png = got == 8 && memcmp(sig, png_sig, 8) == 0;
#ifdef OSC_HAVE_PNG
    if (is_png) {
        osc_status s = load_png(f, path, max_pixels, out);
        fclose(f);
        return s;
    }
#endif
    fclose(f);
#ifdef OSC_HAVE_FFMPEG
    return load_ffmpeg(path, max_pixels, out);
#else
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: %s", path,
                     is_png ? "PNG support is not built in (libpng missing)"
                            : "only PNG is built in (FFmpeg libraries missing); cannot read this image");
#endif
}
