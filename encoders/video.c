/* Video demux/decode and Qwen2.5-Omni frame sampling (see video.h). */
#include "video.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "encoders/vision_pre.h"

#ifdef OSC_HAVE_FFMPEG
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
#endif

void osc_video_default_params(osc_video_params *p) {
    memset(p, 0, sizeof *p);
    p->fps = OSC_VIDEO_FPS;
    p->min_frames = OSC_VIDEO_MIN_FRAMES;
    p->max_frames = 0;
    p->min_pixels = OSC_VIDEO_MIN_PIXELS;
    p->factor = 28;
    p->temporal_patch = 2;
    p->max_frame_pixels = 8192LL * 8192;
    p->max_seconds = 4 * 3600.0;
    p->max_bytes = 8LL << 30;
}

int osc_video_available(void) {
#ifdef OSC_HAVE_FFMPEG
    return 1;
#else
    return 0;
#endif
}

/* ---- sampling (pure) ------------------------------------------------------------------------ */

static int64_t round_half_even(double x) {
    double f = floor(x), d = x - f;
    if (d > 0.5) return (int64_t)f + 1;
    if (d < 0.5) return (int64_t)f;
    return ((int64_t)f % 2 == 0) ? (int64_t)f : (int64_t)f + 1;
}

osc_status osc_video_sample_indices(int64_t F, double r, const osc_video_params *p, int64_t *idx, int *n_out) {
    const int FF = OSC_VIDEO_FRAME_FACTOR;
    *n_out = 0;
    if (F <= 0) return osc_error(OSC_ERR_FORMAT, "the video has no frames");
    int64_t n;
    if (p->nframes > 0) {
        int64_t rn = round_half_even((double)p->nframes / FF) * FF;
        n = rn < F ? rn : F;
    } else {
        if (!(r > 0) || !isfinite(r)) return osc_error(OSC_ERR_FORMAT, "the video states no frame rate");
        if (!(p->fps > 0)) return osc_error(OSC_ERR_INVALID_ARG, "video: fps must be positive");
        int64_t min_f = (int64_t)ceil((double)(p->min_frames > 0 ? p->min_frames : OSC_VIDEO_MIN_FRAMES) / FF) * FF;
        int64_t mf = p->max_frames > 0 ? p->max_frames : (F < OSC_VIDEO_MAX_FRAMES ? F : OSC_VIDEO_MAX_FRAMES);
        int64_t max_f = (mf / FF) * FF;
        double x = (double)F / r * p->fps;
        if (x < (double)min_f) x = (double)min_f;
        if (x > (double)max_f) x = (double)max_f;
        if (x > (double)F) x = (double)F;
        n = (int64_t)floor(x / FF) * FF;
    }
    if (n < FF || n > F)
        return osc_error(OSC_ERR_FORMAT, "the video has %lld frame%s; frame sampling needs at least %d (got n = %lld)",
                         (long long)F, F == 1 ? "" : "s", FF, (long long)n);
    if (n > (1 << 20)) return osc_error(OSC_ERR_FORMAT, "video: %lld frames to sample is too many", (long long)n);
    if (idx) {
        /* torch.linspace(0, F-1, n) (float32 steps) then round half to even */
        float step = (float)(F - 1) / (float)(n - 1);
        for (int64_t i = 0; i < n; i++) {
            /* torch computes start + i*step for the first half and end - (n-1-i)*step for the rest */
            double v = i < n / 2 ? (double)((float)i * step) : (double)((float)(F - 1) - (float)(n - 1 - i) * step);
            idx[i] = round_half_even(v);
            if (idx[i] < 0) idx[i] = 0;
            if (idx[i] > F - 1) idx[i] = F - 1;
        }
    }
    *n_out = (int)n;
    return OSC_OK;
}

osc_status osc_video_frame_budget(int n, int h, int w, const osc_video_params *p, int64_t *min_pixels,
                                  int64_t *max_pixels, int *rh, int *rw) {
    if (n <= 0 || h <= 0 || w <= 0) return osc_error(OSC_ERR_INVALID_ARG, "video: bad frame budget inputs");
    int64_t mn = p->min_pixels > 0 ? p->min_pixels : OSC_VIDEO_MIN_PIXELS;
    int64_t total = p->total_pixels;
    if (total <= 0) {
        const char *e = getenv("VIDEO_MAX_PIXELS");
        char *end = NULL;
        long long t = e ? strtoll(e, &end, 10) : 0;
        total = (e && end && *end == 0 && t > 0) ? (int64_t)t : OSC_VIDEO_TOTAL_PIXELS;
    }
    /* [U]: max(min(VIDEO_MAX_PIXELS, total / n * FRAME_FACTOR), int(min_pixels * 1.05)); the
     * fractional part is dropped (transformers' cap uses integer division; smart_resize compares
     * integer areas, so only the beta branch could see the difference) */
    double share = (double)total / n * OSC_VIDEO_FRAME_FACTOR;
    int64_t mx = share < (double)OSC_VIDEO_MAX_PIXELS ? (int64_t)floor(share) : OSC_VIDEO_MAX_PIXELS;
    int64_t lo = (int64_t)((double)mn * 1.05);
    if (mx < lo) mx = lo;
    if (p->max_pixels > 0 && p->max_pixels < mx) mx = p->max_pixels;
    if (mn > mx) mn = mx;
    *min_pixels = mn;
    *max_pixels = mx;
    return osc_smart_resize(h, w, p->factor > 0 ? p->factor : 28, mn, mx, rh, rw);
}

void osc_video_free(osc_video *v) {
    if (!v) return;
    if (v->frames)
        for (int i = 0; i < v->info.n_frames; i++) osc_image_free(&v->frames[i]);
    free(v->frames);
    free(v->indices);
    free(v->timestamps);
    memset(v, 0, sizeof *v);
}

/* ---- synthetic source ("synthetic:WxH:SECONDS[:FPS]") ------------------------------------- */

int osc_video_is_synthetic(const char *path) { return path && !strncmp(path, "synthetic:", 10); }

/* A moving colour pattern with the header of a WxH video of SECONDS at FPS (default 30), sampled
 * and sized exactly as a real file of that header would be; frames are made at the resized size. */
static osc_status synth_info(const char *path, const osc_video_params *p, osc_video_info *out) {
    int w = 0, h = 0;
    double sec = 0, fps = 30;
    char tail[8];
    int got = sscanf(path + 10, "%dx%d:%lf:%lf%7s", &w, &h, &sec, &fps, tail);
    if (got < 3 || got > 4 || w < 2 || h < 2 || w > 16384 || h > 16384 || !(sec > 0) || !(fps > 0) || fps > 1000)
        return osc_error(OSC_ERR_INVALID_ARG, "%s: want synthetic:WxH:SECONDS[:FPS]", path);
    if (sec > p->max_seconds) return osc_error(OSC_ERR_FORMAT, "%s: %.0f s is over the limit of %.0f s", path, sec, p->max_seconds);
    osc_video_info info;
    memset(&info, 0, sizeof info);
    info.width = w, info.height = h, info.fps = fps, info.duration = sec;
    info.total_frames = (int64_t)floor(sec * fps);
    snprintf(info.codec, sizeof info.codec, "synthetic");
    int n = 0;
    OSC_TRY(osc_video_sample_indices(info.total_frames, fps, p, NULL, &n));
    info.n_frames = n;
    info.sample_fps = (double)n / (double)info.total_frames * fps;
    info.second_per_grid = (float)((p->temporal_patch > 0 ? p->temporal_patch : 2) / (p->fps > 0 ? p->fps : OSC_VIDEO_FPS));
    osc_status s = osc_video_frame_budget(n, h, w, p, &info.min_pixels, &info.max_pixels, &info.resized_h, &info.resized_w);
    if (s != OSC_OK) return osc_error_prefix(s, "%s", path);
    *out = info;
    return OSC_OK;
}

static osc_status synth_load(const char *path, const osc_video_params *p, osc_video *out) {
    osc_video_info info;
    OSC_TRY(synth_info(path, p, &info));
    const int w = info.width, h = info.height;
    int n = info.n_frames;
    const double fps = info.fps;
    const int RW = p->keep_size ? w : info.resized_w, RH = p->keep_size ? h : info.resized_h;
    out->info = info;
    out->frames = calloc((size_t)n, sizeof *out->frames);
    out->indices = malloc((size_t)n * sizeof *out->indices);
    out->timestamps = malloc((size_t)n * sizeof *out->timestamps);
    if (!out->frames || !out->indices || !out->timestamps) {
        osc_video_free(out);
        return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    }
    osc_video_sample_indices(info.total_frames, fps, p, out->indices, &n);
    for (int i = 0; i < n; i++) {
        osc_image *im = &out->frames[i];
        im->w = RW, im->h = RH;
        im->rgb = malloc((size_t)RW * RH * 3);
        if (!im->rgb) {
            osc_video_free(out);
            return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        }
        const int64_t f = out->indices[i];
        out->timestamps[i] = (double)f / fps;
        for (int y = 0; y < RH; y++)
            for (int x = 0; x < RW; x++) {
                uint8_t *px = im->rgb + ((size_t)y * RW + x) * 3;
                px[0] = (uint8_t)(x + 3 * f);
                px[1] = (uint8_t)(y + 2 * f);
                px[2] = (uint8_t)((x ^ y) + f);
            }
    }
    return OSC_OK;
}

#ifndef OSC_HAVE_FFMPEG

osc_status osc_video_probe(const char *path, const osc_video_params *p, osc_video_info *info) {
    osc_video_params dp;
    if (!p) osc_video_default_params(&dp), p = &dp;
    memset(info, 0, sizeof *info);
    if (osc_video_is_synthetic(path)) return synth_info(path, p, info);
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: video input needs FFmpeg (built without it)", path ? path : "(null)");
}
osc_status osc_video_load(const char *path, const osc_video_params *p, osc_video *out) {
    osc_video_params dp;
    if (!p) osc_video_default_params(&dp), p = &dp;
    memset(out, 0, sizeof *out);
    if (osc_video_is_synthetic(path)) return synth_load(path, p, out);
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: video input needs FFmpeg (built without it)", path ? path : "(null)");
}

#else

/* FFmpeg's own messages go to the library log (debug level), never to stderr. */
static void av_to_osc_log(void *avcl, int level, const char *fmt, va_list vl) {
    (void)avcl;
    if (level > AV_LOG_WARNING) return;
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, vl);
    size_t k = strlen(buf);
    while (k && (buf[k - 1] == '\n' || buf[k - 1] == '\r')) buf[--k] = 0;
    if (k) osc_log(OSC_LOG_DEBUG, "ffmpeg: %s", buf);
}
static pthread_once_t av_once = PTHREAD_ONCE_INIT;
static void av_init(void) { av_log_set_callback(av_to_osc_log); }

typedef struct vin {
    AVFormatContext *fmt;
    AVCodecContext *dec;
    int stream;
} vin;

static void vin_close(vin *v) {
    avcodec_free_context(&v->dec);
    if (v->fmt) avformat_close_input(&v->fmt);
    v->stream = -1;
}

static const char *av_err(int r, char *b, size_t n) {
    av_strerror(r, b, n);
    return b;
}

/* Open, find the video stream, fill the header part of info, and optionally open the decoder. */
static osc_status vin_open(const char *path, const osc_video_params *p, vin *v, osc_video_info *info, int decoder) {
    pthread_once(&av_once, av_init);
    memset(v, 0, sizeof *v);
    v->stream = -1;
    char eb[AV_ERROR_MAX_STRING_SIZE];
    FILE *f = fopen(path, "rb");
    if (!f) return osc_error(OSC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int c0 = fgetc(f);
    fclose(f);
    if (c0 == EOF) return osc_error(OSC_ERR_FORMAT, "%s: empty file", path);
    size_t n = strlen(path);
    char *url = malloc(n + 6);
    if (!url) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    memcpy(url, "file:", 5);
    memcpy(url + 5, path, n + 1); /* never another protocol */
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "protocol_whitelist", "file", 0);
    int r = avformat_open_input(&v->fmt, url, NULL, &opts);
    av_dict_free(&opts);
    free(url);
    if (r < 0) {
        v->fmt = NULL;
        return osc_error(r == AVERROR(ENOENT) || r == AVERROR(EACCES) ? OSC_ERR_IO : OSC_ERR_FORMAT,
                         "%s: not a video FFmpeg can open (%s)", path, av_err(r, eb, sizeof eb));
    }
    if ((r = avformat_find_stream_info(v->fmt, NULL)) < 0) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: cannot read the streams (%s)", path, av_err(r, eb, sizeof eb));
    }
    int has_audio = 0;
    for (unsigned i = 0; i < v->fmt->nb_streams; i++) {
        const AVStream *s = v->fmt->streams[i];
        if (s->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) has_audio = 1;
        if (v->stream < 0 && s->codecpar->codec_type == AVMEDIA_TYPE_VIDEO && !(s->disposition & AV_DISPOSITION_ATTACHED_PIC))
            v->stream = (int)i;
    }
    if (v->stream < 0) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: no video stream", path);
    }
    AVStream *st = v->fmt->streams[v->stream];
    const AVCodecParameters *par = st->codecpar;
    memset(info, 0, sizeof *info);
    info->has_audio = has_audio;
    info->width = par->width;
    info->height = par->height;
    snprintf(info->codec, sizeof info->codec, "%s", avcodec_get_name(par->codec_id));
    if (par->width <= 0 || par->height <= 0) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: the video stream states no frame size", path);
    }
    if ((int64_t)par->width * par->height > p->max_frame_pixels) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: %dx%d frames exceed the limit of %lld pixels", path, par->width, par->height,
                         (long long)p->max_frame_pixels);
    }
    AVRational fr = st->avg_frame_rate;
    if (fr.num <= 0 || fr.den <= 0) fr = st->r_frame_rate;
    info->fps = (fr.num > 0 && fr.den > 0) ? av_q2d(fr) : 0.0;
    if (!(info->fps > 0 && info->fps < 100000)) info->fps = 0.0;
    info->duration = -1;
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0 && st->time_base.num > 0 && st->time_base.den > 0)
        info->duration = (double)st->duration * av_q2d(st->time_base);
    else if (v->fmt->duration != AV_NOPTS_VALUE && v->fmt->duration > 0)
        info->duration = (double)v->fmt->duration / AV_TIME_BASE;
    if (info->duration > p->max_seconds) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: %.0f s long, over the limit of %.0f s", path, info->duration, p->max_seconds);
    }
    info->total_frames = st->nb_frames > 0 ? st->nb_frames : -1;
    if (!decoder) return OSC_OK;
    const AVCodec *codec = avcodec_find_decoder(par->codec_id);
    if (!codec) {
        vin_close(v);
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: no decoder for the video codec %s in this FFmpeg build", path, info->codec);
    }
    v->dec = avcodec_alloc_context3(codec);
    if (!v->dec) {
        vin_close(v);
        return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    }
    if ((r = avcodec_parameters_to_context(v->dec, par)) < 0) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: bad codec parameters (%s)", path, av_err(r, eb, sizeof eb));
    }
    v->dec->thread_count = p->threads > 0 ? p->threads : 0;
    v->dec->pkt_timebase = st->time_base;
    if ((r = avcodec_open2(v->dec, codec, NULL)) < 0) {
        vin_close(v);
        return osc_error(OSC_ERR_FORMAT, "%s: cannot open the %s decoder (%s)", path, info->codec, av_err(r, eb, sizeof eb));
    }
    return OSC_OK;
}

/* Demux-only count of the video stream's packets (one frame each for the codecs of video files). */
static osc_status count_packets(const char *path, vin *v, int64_t limit, int64_t *F) {
    AVPacket *pkt = av_packet_alloc();
    if (!pkt) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    int64_t n = 0;
    int r;
    while ((r = av_read_frame(v->fmt, pkt)) >= 0) {
        if (pkt->stream_index == v->stream) n++;
        av_packet_unref(pkt);
        if (n > limit) break;
    }
    av_packet_free(&pkt);
    if (n > limit) return osc_error(OSC_ERR_FORMAT, "%s: more than %lld video frames", path, (long long)limit);
    *F = n;
    return OSC_OK;
}

static osc_status probe_frames(const char *path, const osc_video_params *p, vin *v, osc_video_info *info) {
    if (info->total_frames > 0) return OSC_OK;
    double lim = p->max_seconds * (info->fps > 0 ? info->fps : 240.0) * 2 + 1000;
    if (lim > 1e9) lim = 1e9;
    int64_t F = 0;
    OSC_TRY(count_packets(path, v, (int64_t)lim, &F));
    info->total_frames = F;
    return OSC_OK;
}

static osc_status fill_sampling(const char *path, const osc_video_params *p, int64_t F, osc_video_info *info, int64_t **idx) {
    int n = 0;
    osc_status s = osc_video_sample_indices(F, info->fps, p, NULL, &n);
    if (s != OSC_OK) return osc_error_prefix(s, "%s", path);
    if (idx) {
        *idx = malloc((size_t)n * sizeof **idx);
        if (!*idx) return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        osc_video_sample_indices(F, info->fps, p, *idx, &n);
    }
    info->n_frames = n;
    info->sample_fps = info->fps > 0 ? (double)n / (double)F * info->fps : 0.0;
    info->second_per_grid = (float)((p->temporal_patch > 0 ? p->temporal_patch : 2) / (p->fps > 0 ? p->fps : OSC_VIDEO_FPS));
    s = osc_video_frame_budget(n, info->height, info->width, p, &info->min_pixels, &info->max_pixels, &info->resized_h,
                               &info->resized_w);
    if (s != OSC_OK) return osc_error_prefix(s, "%s", path);
    const double fw = p->keep_size ? info->width : info->resized_w, fh = p->keep_size ? info->height : info->resized_h;
    if ((double)n * fw * fh * 3 > (double)p->max_bytes)
        return osc_error(OSC_ERR_FORMAT, "%s: %d frames of %.0fx%.0f need %.2f GiB, over the limit of %.2f GiB (lower the frame count)",
                         path, n, fw, fh, (double)n * fw * fh * 3 / (1 << 30), (double)p->max_bytes / (1 << 30));
    return OSC_OK;
}

osc_status osc_video_probe(const char *path, const osc_video_params *pp, osc_video_info *info) {
    osc_video_params dp;
    if (!pp) osc_video_default_params(&dp), pp = &dp;
    memset(info, 0, sizeof *info);
    if (!path) return osc_error(OSC_ERR_INVALID_ARG, "video: NULL path");
    if (osc_video_is_synthetic(path)) return synth_info(path, pp, info);
    vin v;
    OSC_TRY(vin_open(path, pp, &v, info, 0));
    osc_status s = probe_frames(path, pp, &v, info);
    vin_close(&v);
    if (s == OSC_OK) s = fill_sampling(path, pp, info->total_frames, info, NULL);
    return s;
}

/* RGB24 of a decoded frame at the stream's size, converted like PyAV's frame.to_ndarray("rgb24")
 * (the reference's torchvision/PyAV reader): swscale with its default colour handling. */
static osc_status frame_to_rgb(const char *path, struct SwsContext **sws, const AVFrame *fr, int W, int H, int RH, int RW,
                               osc_image *out) {
    enum AVPixelFormat sf = fr->format;
    *sws = sws_getCachedContext(*sws, fr->width, fr->height, sf, W, H, AV_PIX_FMT_RGB24, SWS_BILINEAR, NULL, NULL, NULL);
    if (!*sws) return osc_error(OSC_ERR_FORMAT, "%s: cannot convert %s frames to RGB", path, av_get_pix_fmt_name(sf) ? av_get_pix_fmt_name(sf) : "?");
    uint8_t *rgb = malloc((size_t)W * H * 3);
    if (!rgb) return osc_error(OSC_ERR_OOM, "%s: no memory for a %dx%d frame", path, W, H);
    uint8_t *dst[4] = {rgb, NULL, NULL, NULL};
    int ds[4] = {W * 3, 0, 0, 0};
    int r = sws_scale(*sws, (const uint8_t *const *)fr->data, fr->linesize, 0, fr->height, dst, ds);
    if (r != H) {
        free(rgb);
        return osc_error(OSC_ERR_FORMAT, "%s: frame conversion to RGB failed", path);
    }
    out->w = W;
    out->h = H;
    out->rgb = rgb;
    if (RH <= 0 || (RH == H && RW == W)) return OSC_OK;
    /* torchvision resize(uint8, BICUBIC, antialias=True): float math, round half to even, clamp */
    float *pl = malloc((size_t)RW * RH * 3 * sizeof(float));
    uint8_t *dst8 = malloc((size_t)RW * RH * 3);
    osc_status s = pl && dst8 ? osc_image_resize_bicubic_f32(out, RW, RH, pl) : osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    if (s == OSC_OK) {
        const size_t plane = (size_t)RW * RH;
        for (size_t i = 0; i < plane; i++)
            for (int c = 0; c < 3; c++) {
                float x = nearbyintf(pl[c * plane + i]);
                dst8[i * 3 + c] = (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
            }
        free(out->rgb);
        out->w = RW;
        out->h = RH;
        out->rgb = dst8;
        dst8 = NULL;
    }
    free(pl);
    free(dst8);
    return s;
}

/* One decode pass keeping the frames idx[0..n). *got: frames decoded in all (stops early once
 * every sampled frame is in). */
static osc_status decode_pass(const char *path, vin *v, const osc_video_info *info, const int64_t *idx, int n, osc_video *out,
                              int keep, int64_t *got, int *complete) {
    AVPacket *pkt = av_packet_alloc();
    AVFrame *fr = av_frame_alloc();
    struct SwsContext *sws = NULL;
    osc_status s = OSC_OK;
    char eb[AV_ERROR_MAX_STRING_SIZE];
    int64_t k = 0;
    int j = 0, eof = 0, bad_run = 0, last_err = 0;
    const AVStream *st = v->fmt->streams[v->stream];
    int64_t start = st->start_time != AV_NOPTS_VALUE ? st->start_time : 0;
    if (!pkt || !fr) {
        s = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        goto done;
    }
    while (j < n) {
        int r = avcodec_receive_frame(v->dec, fr);
        if (r == 0) {
            bad_run = 0;
            while (j < n && idx[j] == k) {
                s = frame_to_rgb(path, &sws, fr, info->width, info->height, keep ? 0 : info->resized_h, info->resized_w,
                                 &out->frames[j]);
                if (s != OSC_OK) goto done;
                int64_t ts = fr->best_effort_timestamp;
                out->timestamps[j] = ts != AV_NOPTS_VALUE ? (double)(ts - start) * av_q2d(st->time_base) : -1.0;
                out->indices[j] = k;
                j++;
            }
            k++;
            av_frame_unref(fr);
            continue;
        }
        if (r == AVERROR_EOF) break;
        if (r != AVERROR(EAGAIN)) { /* a broken frame: skip it, like the reference readers */
            last_err = r;
            if (++bad_run > 64) break;
            continue;
        }
        if (eof) break;
        r = av_read_frame(v->fmt, pkt);
        if (r < 0) {
            if (r != AVERROR_EOF) last_err = r;
            eof = 1;
            avcodec_send_packet(v->dec, NULL); /* drain */
            continue;
        }
        if (pkt->stream_index == v->stream) {
            r = avcodec_send_packet(v->dec, pkt);
            if (r < 0 && r != AVERROR(EAGAIN)) {
                last_err = r;
                if (++bad_run > 64) {
                    av_packet_unref(pkt);
                    break;
                }
            }
        }
        av_packet_unref(pkt);
    }
    *got = k;
    if (j < n && k == 0)
        s = osc_error(OSC_ERR_FORMAT, "%s: no video frame could be decoded%s%s", path, last_err ? ": " : "",
                      last_err ? av_err(last_err, eb, sizeof eb) : "");
done:
    sws_freeContext(sws);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    *complete = j == n;
    return s;
}

osc_status osc_video_load(const char *path, const osc_video_params *pp, osc_video *out) {
    osc_video_params dp;
    if (!pp) osc_video_default_params(&dp), pp = &dp;
    memset(out, 0, sizeof *out);
    if (!path) return osc_error(OSC_ERR_INVALID_ARG, "video: NULL path");
    if (osc_video_is_synthetic(path)) return synth_load(path, pp, out);
    osc_video_info info;
    vin v;
    OSC_TRY(vin_open(path, pp, &v, &info, 0));
    osc_status s = probe_frames(path, pp, &v, &info);
    vin_close(&v);
    if (s != OSC_OK) return s;
    int64_t F = info.total_frames;
    for (int pass = 0; pass < 2; pass++) {
        int64_t *idx = NULL;
        s = fill_sampling(path, pp, F, &info, &idx);
        if (s == OSC_OK) {
            out->info = info;
            out->frames = calloc((size_t)info.n_frames, sizeof *out->frames);
            out->indices = idx;
            out->timestamps = calloc((size_t)info.n_frames, sizeof *out->timestamps);
            idx = NULL;
            if (!out->frames || !out->timestamps) s = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
        }
        free(idx);
        if (s == OSC_OK) s = vin_open(path, pp, &v, &info, 1);
        if (s == OSC_OK) {
            out->info.has_audio = info.has_audio;
            int64_t got = 0;
            int complete = 0;
            /* the indices array doubles as the wanted list while decoding */
            int64_t *want = malloc((size_t)out->info.n_frames * sizeof *want);
            if (!want) s = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
            else {
                memcpy(want, out->indices, (size_t)out->info.n_frames * sizeof *want);
                s = decode_pass(path, &v, &out->info, want, out->info.n_frames, out, pp->keep_size, &got, &complete);
                free(want);
            }
            vin_close(&v);
            if (s == OSC_OK && !complete) {
                /* the stream ended before F frames: sample again from the frames that exist */
                osc_video_free(out);
                if (pass == 0 && got >= 2 && got < F) {
                    osc_log(OSC_LOG_WARN, "%s: only %lld of %lld frames decode; sampling from those", path, (long long)got,
                            (long long)F);
                    F = got;
                    info.total_frames = F;
                    continue;
                }
                return osc_error(OSC_ERR_FORMAT, "%s: corrupt or truncated video (%lld of %lld frames decode)", path,
                                 (long long)got, (long long)F);
            }
        }
        if (s != OSC_OK) osc_video_free(out);
        return s;
    }
    return osc_error(OSC_ERR_FORMAT, "%s: corrupt or truncated video", path);
}

#endif
