/* Audio input through libsndfile and FFmpeg; see audio_io.h. */
#include "encoders/audio_io.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/status.h"

#ifdef OSC_HAVE_SNDFILE
#include <sndfile.h>
#endif
#ifdef OSC_HAVE_FFMPEG
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
#include <libswresample/swresample.h>
#endif

#define MIN_RATE 1000
#define MAX_RATE 768000
#define MAX_CHANNELS 64
#define BLOCK 4096 /* frames per read */
/* Helpers that a build with neither decoder does not call. */
#if defined(__GNUC__)
#define MAYBE_UNUSED __attribute__((unused))
#else
#define MAYBE_UNUSED
#endif

int osc_audio_backends(void) {
    int b = 0;
#ifdef OSC_HAVE_SNDFILE
    b |= 1;
#endif
#ifdef OSC_HAVE_FFMPEG
    b |= 2;
#endif
    return b;
}

/* ---- the sink: mono blocks at the file's rate in, mono at the target rate out ---- */
typedef struct sink {
    const char *path;
    int in_rate, target;
    int64_t in_frames, max_in_frames;
    float *out;
    int64_t n_out, cap_out;
#ifdef OSC_HAVE_FFMPEG
    struct SwrContext *swr; /* NULL when in_rate == target */
#endif
} sink;

MAYBE_UNUSED static osc_status check_rate_channels(const char *path, int rate, int channels) {
    if (rate < MIN_RATE || rate > MAX_RATE)
        return osc_error(OSC_ERR_FORMAT, "%s: sample rate %d Hz not in [%d, %d]", path, rate, MIN_RATE, MAX_RATE);
    if (channels < 1 || channels > MAX_CHANNELS)
        return osc_error(OSC_ERR_FORMAT, "%s: %d channels not in [1, %d]", path, channels, MAX_CHANNELS);
    return OSC_OK;
}

MAYBE_UNUSED static osc_status too_long(const char *path, double seconds, double max_seconds) {
    return osc_error(OSC_ERR_FORMAT, "%s: audio is %.1f s long, more than the limit of %.1f s", path,
                     seconds, max_seconds);
}

MAYBE_UNUSED static osc_status sink_init(sink *s, const char *path, int in_rate, int target, double max_seconds) {
    memset(s, 0, sizeof *s);
    s->path = path;
    s->in_rate = in_rate;
    s->target = target;
    s->max_in_frames = (int64_t)ceil(max_seconds * in_rate);
    if (in_rate == target) return OSC_OK;
#ifdef OSC_HAVE_FFMPEG
    struct SwrContext *swr = swr_alloc();
    if (!swr) return osc_error(OSC_ERR_OOM, "%s: cannot allocate a resampler", path);
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;
    int r = 0;
    r |= av_opt_set_chlayout(swr, "in_chlayout", &mono, 0);
    r |= av_opt_set_chlayout(swr, "out_chlayout", &mono, 0);
    r |= av_opt_set_int(swr, "in_sample_rate", in_rate, 0);
    r |= av_opt_set_int(swr, "out_sample_rate", target, 0);
    r |= av_opt_set_sample_fmt(swr, "in_sample_fmt", AV_SAMPLE_FMT_FLT, 0);
    r |= av_opt_set_sample_fmt(swr, "out_sample_fmt", AV_SAMPLE_FMT_FLT, 0);
    if (r < 0) {
        swr_free(&swr);
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: cannot configure the resampler", path);
    }
    /* librosa's default is soxr "HQ" (20-bit precision); libswresample can drive libsoxr. */
    av_opt_set_int(swr, "resampler", SWR_ENGINE_SOXR, 0);
    av_opt_set_double(swr, "precision", 20.0, 0);
    if (swr_init(swr) < 0) {
        /* FFmpeg built without libsoxr: its own polyphase filter, at a high quality setting. */
        osc_log(OSC_LOG_WARN, "%s: libswresample has no soxr engine; using its own resampler", path);
        av_opt_set_int(swr, "resampler", SWR_ENGINE_SWR, 0);
        av_opt_set_int(swr, "filter_size", 64, 0);
        av_opt_set_int(swr, "phase_shift", 12, 0);
        if (swr_init(swr) < 0) {
            swr_free(&swr);
            return osc_error(OSC_ERR_UNSUPPORTED, "%s: cannot resample %d Hz to %d Hz", path, in_rate, target);
        }
    }
    s->swr = swr;
    return OSC_OK;
#else
    return osc_error(OSC_ERR_UNSUPPORTED,
                     "%s: the audio is at %d Hz; resampling to %d Hz needs FFmpeg's libswresample, "
                     "which this build lacks",
                     path, in_rate, target);
#endif
}

MAYBE_UNUSED static void sink_free(sink *s) {
    free(s->out);
    s->out = NULL;
#ifdef OSC_HAVE_FFMPEG
    if (s->swr) swr_free(&s->swr);
#endif
}

MAYBE_UNUSED static osc_status sink_reserve(sink *s, int64_t extra) {
    if (s->n_out + extra <= s->cap_out) return OSC_OK;
    int64_t cap = s->cap_out ? s->cap_out : 16384;
    while (cap < s->n_out + extra) cap *= 2;
    float *p = realloc(s->out, sizeof(float) * (size_t)cap);
    if (!p) return osc_error(OSC_ERR_OOM, "%s: out of memory for %lld samples", s->path, (long long)cap);
    s->out = p;
    s->cap_out = cap;
    return OSC_OK;
}

/* Append n mono frames at the input rate. */
MAYBE_UNUSED static osc_status sink_push(sink *s, const float *mono, int64_t n) {
    if (n <= 0) return OSC_OK;
    if (s->in_frames + n > s->max_in_frames)
        return too_long(s->path, (double)(s->in_frames + n) / s->in_rate, (double)s->max_in_frames / s->in_rate);
    s->in_frames += n;
#ifdef OSC_HAVE_FFMPEG
    if (s->swr) {
        int want = swr_get_out_samples(s->swr, (int)n);
        if (want < 0) return osc_error(OSC_ERR_FORMAT, "%s: resampler error", s->path);
        OSC_TRY(sink_reserve(s, want));
        uint8_t *op = (uint8_t *)(s->out + s->n_out);
        const uint8_t *ip = (const uint8_t *)mono;
        int got = swr_convert(s->swr, &op, want, &ip, (int)n);
        if (got < 0) return osc_error(OSC_ERR_FORMAT, "%s: resampler error %d", s->path, got);
        s->n_out += got;
        return OSC_OK;
    }
#endif
    OSC_TRY(sink_reserve(s, n));
    memcpy(s->out + s->n_out, mono, sizeof(float) * (size_t)n);
    s->n_out += n;
    return OSC_OK;
}

/* Drain the resampler, fix the length like librosa.resample, hand over the buffer. */
MAYBE_UNUSED static osc_status sink_finish(sink *s, float **pcm, int64_t *n_samples) {
    if (s->in_frames == 0) return osc_error(OSC_ERR_FORMAT, "%s: the audio has no samples", s->path);
#ifdef OSC_HAVE_FFMPEG
    if (s->swr) {
        for (;;) {
            OSC_TRY(sink_reserve(s, 4096));
            uint8_t *op = (uint8_t *)(s->out + s->n_out);
            int got = swr_convert(s->swr, &op, 4096, NULL, 0);
            if (got < 0) return osc_error(OSC_ERR_FORMAT, "%s: resampler error %d", s->path, got);
            if (got == 0) break;
            s->n_out += got;
        }
    }
#endif
    /* librosa: n = int(np.ceil(len * (float(target) / orig))), computed in double. */
    int64_t n = s->in_frames;
    if (s->in_rate != s->target) n = (int64_t)ceil((double)s->in_frames * ((double)s->target / (double)s->in_rate));
    if (n < 1) n = 1;
    OSC_TRY(sink_reserve(s, n - s->n_out > 0 ? n - s->n_out : 0));
    for (int64_t i = s->n_out; i < n; i++) s->out[i] = 0.f;
    s->n_out = n;
    *pcm = s->out;
    *n_samples = n;
    s->out = NULL;
    return OSC_OK;
}

/* numpy's mean over channels of float32: a float32 sum in channel order, then one division. */
MAYBE_UNUSED static void downmix_interleaved(const float *x, int64_t frames, int ch, float *mono) {
    if (ch == 1) {
        memcpy(mono, x, sizeof(float) * (size_t)frames);
        return;
    }
    for (int64_t i = 0; i < frames; i++) {
        float acc = 0.f;
        for (int c = 0; c < ch; c++) acc += x[i * ch + c];
        mono[i] = acc / (float)ch;
    }
}

/* ---------------------------------- libsndfile ---------------------------------- */
#ifdef OSC_HAVE_SNDFILE
/* Returns OSC_ERR_UNSUPPORTED with *not_mine = 1 when libsndfile cannot open the file at all, so
 * that the caller may try FFmpeg. */
static osc_status load_sndfile(const char *path, int target, double max_seconds, float **pcm,
                               int64_t *n_samples, int *not_mine) {
    *not_mine = 0;
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *f = sf_open(path, SFM_READ, &info);
    if (!f) {
        *not_mine = 1;
        return osc_error(OSC_ERR_FORMAT, "%s: libsndfile: %s", path, sf_strerror(NULL));
    }
    osc_status st = check_rate_channels(path, info.samplerate, info.channels);
    if (st == OSC_OK && info.frames == 0) st = osc_error(OSC_ERR_FORMAT, "%s: the audio has no samples", path);
    if (st == OSC_OK && info.frames > 0 && info.frames != SF_COUNT_MAX &&
        (double)info.frames > ceil(max_seconds * info.samplerate))
        st = too_long(path, (double)info.frames / info.samplerate, max_seconds);
    if (st != OSC_OK) {
        sf_close(f);
        return st;
    }
    sink s;
    st = sink_init(&s, path, info.samplerate, target, max_seconds);
    if (st != OSC_OK) {
        sf_close(f);
        return st;
    }
    const int ch = info.channels;
    float *buf = malloc(sizeof(float) * (size_t)BLOCK * (size_t)ch);
    float *mono = malloc(sizeof(float) * BLOCK);
    if (!buf || !mono) st = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    while (st == OSC_OK) {
        sf_count_t got = sf_readf_float(f, buf, BLOCK);
        if (got <= 0) break;
        downmix_interleaved(buf, got, ch, mono);
        st = sink_push(&s, mono, got);
    }
    if (st == OSC_OK && sf_error(f) != SF_ERR_NO_ERROR)
        st = osc_error(OSC_ERR_FORMAT, "%s: libsndfile: %s", path, sf_strerror(f));
    if (st == OSC_OK) st = sink_finish(&s, pcm, n_samples);
    free(buf);
    free(mono);
    sink_free(&s);
    sf_close(f);
    return st;
}
#endif

/* ------------------------------------ FFmpeg ------------------------------------ */
#ifdef OSC_HAVE_FFMPEG
static const char *av_err(int e, char *buf, size_t n) {
    av_strerror(e, buf, n);
    return buf;
}

typedef struct av_in {
    AVFormatContext *fmt;
    AVCodecContext *dec;
    int stream;
    double seconds; /* -1 when unknown */
} av_in;

static void av_in_close(av_in *a) {
    if (a->dec) avcodec_free_context(&a->dec);
    if (a->fmt) avformat_close_input(&a->fmt);
}

static osc_status av_in_open(const char *path, av_in *a) {
    memset(a, 0, sizeof *a);
    a->stream = -1;
    a->seconds = -1;
    char eb[128];
    AVDictionary *opts = NULL;
    av_dict_set(&opts, "protocol_whitelist", "file", 0); /* local files only, never the network */
    int r = avformat_open_input(&a->fmt, path, NULL, &opts);
    av_dict_free(&opts);
    if (r < 0) {
        a->fmt = NULL;
        return osc_error(r == AVERROR(ENOENT) || r == AVERROR(EACCES) ? OSC_ERR_IO : OSC_ERR_FORMAT,
                         "%s: FFmpeg cannot open it: %s", path, av_err(r, eb, sizeof eb));
    }
    if ((r = avformat_find_stream_info(a->fmt, NULL)) < 0) {
        av_in_close(a);
        return osc_error(OSC_ERR_FORMAT, "%s: FFmpeg: %s", path, av_err(r, eb, sizeof eb));
    }
    const AVCodec *codec = NULL;
    r = av_find_best_stream(a->fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
    if (r == AVERROR_STREAM_NOT_FOUND) {
        av_in_close(a);
        return osc_error(OSC_ERR_FORMAT, "%s: no audio stream", path);
    }
    if (r < 0 || !codec) {
        av_in_close(a);
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: no decoder for its audio stream", path);
    }
    a->stream = r;
    AVStream *st = a->fmt->streams[r];
    if (st->duration != AV_NOPTS_VALUE && st->duration > 0 && st->time_base.den > 0)
        a->seconds = (double)st->duration * av_q2d(st->time_base);
    else if (a->fmt->duration != AV_NOPTS_VALUE && a->fmt->duration > 0)
        a->seconds = (double)a->fmt->duration / AV_TIME_BASE;
    a->dec = avcodec_alloc_context3(codec);
    if (!a->dec) {
        av_in_close(a);
        return osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    }
    if ((r = avcodec_parameters_to_context(a->dec, st->codecpar)) < 0 ||
        (r = avcodec_open2(a->dec, codec, NULL)) < 0) {
        av_in_close(a);
        return osc_error(OSC_ERR_FORMAT, "%s: cannot open the %s decoder: %s", path, codec->name,
                         av_err(r, eb, sizeof eb));
    }
    return OSC_OK;
}

/* Sample i of channel c of a decoded frame as float, scaled like libsndfile. */
static inline float av_sample(const AVFrame *fr, enum AVSampleFormat fmt, int planar, int ch, int c, int i) {
    const int idx = planar ? i : i * ch + c;
    const uint8_t *p = planar ? fr->extended_data[c] : fr->extended_data[0];
    switch (fmt) {
    case AV_SAMPLE_FMT_U8: return ((int)p[idx] - 128) * (1.0f / 128.0f);
    case AV_SAMPLE_FMT_S16: return ((const int16_t *)p)[idx] * (1.0f / 32768.0f);
    case AV_SAMPLE_FMT_S32: return (float)(((const int32_t *)p)[idx] * (1.0 / 2147483648.0));
    case AV_SAMPLE_FMT_S64: return (float)(((const int64_t *)p)[idx] * (1.0 / 9223372036854775808.0));
    case AV_SAMPLE_FMT_FLT: return ((const float *)p)[idx];
    case AV_SAMPLE_FMT_DBL: return (float)((const double *)p)[idx];
    default: return 0.f;
    }
}

static osc_status push_frame(sink *s, const AVFrame *fr, int rate, float **mono, int *mono_cap) {
    const int ch = fr->ch_layout.nb_channels, n = fr->nb_samples;
    OSC_TRY(check_rate_channels(s->path, fr->sample_rate, ch));
    if (fr->sample_rate != rate)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: the sample rate changes inside the stream (%d -> %d Hz)",
                         s->path, rate, fr->sample_rate);
    if (n <= 0) return OSC_OK;
    const enum AVSampleFormat fmt = av_get_packed_sample_fmt((enum AVSampleFormat)fr->format);
    const int planar = av_sample_fmt_is_planar((enum AVSampleFormat)fr->format);
    if (fmt != AV_SAMPLE_FMT_U8 && fmt != AV_SAMPLE_FMT_S16 && fmt != AV_SAMPLE_FMT_S32 &&
        fmt != AV_SAMPLE_FMT_S64 && fmt != AV_SAMPLE_FMT_FLT && fmt != AV_SAMPLE_FMT_DBL)
        return osc_error(OSC_ERR_UNSUPPORTED, "%s: decoder gave sample format %d", s->path, fr->format);
    if (n > *mono_cap) {
        float *p = realloc(*mono, sizeof(float) * (size_t)n);
        if (!p) return osc_error(OSC_ERR_OOM, "%s: out of memory", s->path);
        *mono = p;
        *mono_cap = n;
    }
    float *m = *mono;
    for (int i = 0; i < n; i++) {
        float acc = 0.f;
        for (int c = 0; c < ch; c++) acc += av_sample(fr, fmt, planar, ch, c, i);
        m[i] = ch == 1 ? acc : acc / (float)ch;
    }
    return sink_push(s, m, n);
}

/* Receive every frame the decoder has ready. */
static osc_status drain(av_in *a, AVFrame *fr, sink *s, int rate, float **mono, int *mono_cap) {
    for (;;) {
        int r = avcodec_receive_frame(a->dec, fr);
        if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return OSC_OK;
        if (r < 0) {
            char eb[128];
            return osc_error(OSC_ERR_FORMAT, "%s: decoding failed: %s", s->path, av_err(r, eb, sizeof eb));
        }
        osc_status st = push_frame(s, fr, rate, mono, mono_cap);
        av_frame_unref(fr);
        if (st != OSC_OK) return st;
    }
}

static osc_status load_ffmpeg(const char *path, int target, double max_seconds, float **pcm, int64_t *n_samples) {
    av_in a;
    OSC_TRY(av_in_open(path, &a));
    const int rate = a.dec->sample_rate, ch = a.dec->ch_layout.nb_channels;
    osc_status st = check_rate_channels(path, rate, ch);
    if (st == OSC_OK && a.seconds > max_seconds) st = too_long(path, a.seconds, max_seconds);
    sink s;
    memset(&s, 0, sizeof s);
    if (st == OSC_OK) st = sink_init(&s, path, rate, target, max_seconds);
    if (st != OSC_OK) {
        av_in_close(&a);
        return st;
    }
    AVPacket *pkt = av_packet_alloc();
    AVFrame *fr = av_frame_alloc();
    float *mono = NULL;
    int mono_cap = 0, bad_packets = 0;
    if (!pkt || !fr) st = osc_error(OSC_ERR_OOM, "%s: out of memory", path);
    while (st == OSC_OK) {
        int r = av_read_frame(a.fmt, pkt);
        if (r < 0) break; /* end of file, or a read error after which nothing more comes */
        if (pkt->stream_index == a.stream) {
            r = avcodec_send_packet(a.dec, pkt);
            if (r == AVERROR_INVALIDDATA) bad_packets++; /* skipped, as ffmpeg itself does */
            else if (r < 0 && r != AVERROR(EAGAIN)) {
                char eb[128];
                st = osc_error(OSC_ERR_FORMAT, "%s: decoding failed: %s", path, av_err(r, eb, sizeof eb));
            }
            if (st == OSC_OK) st = drain(&a, fr, &s, rate, &mono, &mono_cap);
        }
        av_packet_unref(pkt);
    }
    if (st == OSC_OK && avcodec_send_packet(a.dec, NULL) >= 0) st = drain(&a, fr, &s, rate, &mono, &mono_cap);
    if (st == OSC_OK && s.in_frames == 0 && bad_packets)
        st = osc_error(OSC_ERR_FORMAT, "%s: corrupt audio: %d packets could not be decoded", path, bad_packets);
    if (st == OSC_OK) st = sink_finish(&s, pcm, n_samples);
    if (st == OSC_OK && bad_packets)
        osc_log(OSC_LOG_WARN, "%s: %d corrupt audio packets skipped", path, bad_packets);
    free(mono);
    av_frame_free(&fr);
    av_packet_free(&pkt);
    sink_free(&s);
    av_in_close(&a);
    return st;
}
#endif

/* ------------------------------------ public ------------------------------------ */
/* A readable, non-empty regular file (not a pipe or a device that never ends). */
static osc_status check_file(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return osc_error(OSC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return osc_error(OSC_ERR_IO, "%s: not a regular file", path);
    if (sb.st_size == 0) return osc_error(OSC_ERR_FORMAT, "%s: the file is empty", path);
    FILE *f = fopen(path, "rb");
    if (!f) return osc_error(OSC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    fclose(f);
    return OSC_OK;
}

osc_status osc_audio_load(const char *path, int target_rate, double max_seconds, float **pcm, int64_t *n_samples) {
    if (pcm) *pcm = NULL;
    if (n_samples) *n_samples = 0;
    if (!path || !pcm || !n_samples) return osc_error(OSC_ERR_INVALID_ARG, "audio load: NULL argument");
    if (target_rate < MIN_RATE || target_rate > MAX_RATE)
        return osc_error(OSC_ERR_INVALID_ARG, "audio load: target rate %d not in [%d, %d]", target_rate, MIN_RATE, MAX_RATE);
    if (isnan(max_seconds)) return osc_error(OSC_ERR_INVALID_ARG, "audio load: max_seconds is NaN");
    if (max_seconds <= 0) max_seconds = OSC_AUDIO_DEFAULT_MAX_SECONDS;
    if (max_seconds > OSC_AUDIO_MAX_SECONDS_CAP) max_seconds = OSC_AUDIO_MAX_SECONDS_CAP;
    OSC_TRY(check_file(path));
#if defined(OSC_HAVE_SNDFILE)
    int not_mine = 0;
    osc_status st = load_sndfile(path, target_rate, max_seconds, pcm, n_samples, &not_mine);
    if (!not_mine) return st;
#if defined(OSC_HAVE_FFMPEG)
    return load_ffmpeg(path, target_rate, max_seconds, pcm, n_samples);
#else
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: not a format libsndfile reads (%s), and this build has no FFmpeg",
                     path, sf_strerror(NULL));
#endif
#elif defined(OSC_HAVE_FFMPEG)
    return load_ffmpeg(path, target_rate, max_seconds, pcm, n_samples);
#else
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: this build has no audio decoder (libsndfile or FFmpeg)", path);
#endif
}

osc_status osc_audio_probe(const char *path, osc_audio_info *info) {
    if (!path || !info) return osc_error(OSC_ERR_INVALID_ARG, "audio probe: NULL argument");
    memset(info, 0, sizeof *info);
    info->frames = -1;
    info->seconds = -1;
    OSC_TRY(check_file(path));
#ifdef OSC_HAVE_SNDFILE
    SF_INFO si;
    memset(&si, 0, sizeof si);
    SNDFILE *f = sf_open(path, SFM_READ, &si);
    if (f) {
        sf_close(f);
        OSC_TRY(check_rate_channels(path, si.samplerate, si.channels));
        info->sample_rate = si.samplerate;
        info->channels = si.channels;
        if (si.frames != SF_COUNT_MAX) {
            info->frames = si.frames;
            info->seconds = (double)si.frames / si.samplerate;
        }
        snprintf(info->codec, sizeof info->codec, "sndfile:0x%06x", (unsigned)si.format);
        return OSC_OK;
    }
#endif
#ifdef OSC_HAVE_FFMPEG
    av_in a;
    OSC_TRY(av_in_open(path, &a));
    info->sample_rate = a.dec->sample_rate;
    info->channels = a.dec->ch_layout.nb_channels;
    info->seconds = a.seconds;
    if (a.seconds >= 0) info->frames = (int64_t)llround(a.seconds * info->sample_rate);
    info->via_ffmpeg = 1;
    snprintf(info->codec, sizeof info->codec, "%s", a.dec->codec ? a.dec->codec->name : "?");
    av_in_close(&a);
    return check_rate_channels(path, info->sample_rate, info->channels);
#else
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: not a format this build can read", path);
#endif
}
