/* Log-mel features (WhisperFeatureExtractor as used by Qwen2.5-Omni); see mel.h. */
#include "encoders/mel.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#ifdef OSC_HAVE_FFTW
#include <fftw3.h>
#endif

osc_mel_params osc_mel_default_params(void) {
    osc_mel_params p = {OSC_MEL_N_MELS, OSC_MEL_MAX_SAMPLES};
    return p;
}

/* ---- slaney mel scale (librosa / transformers "slaney"): linear below 1 kHz, log above ---- */
static const double k_min_log_hz = 1000.0, k_min_log_mel = 15.0;

static double hz_to_mel(double f) {
    if (f < k_min_log_hz) return 3.0 * f / 200.0;
    return k_min_log_mel + log(f / k_min_log_hz) * (27.0 / log(6.4));
}

static double mel_to_hz(double m) {
    if (m < k_min_log_mel) return 200.0 * m / 3.0;
    return k_min_log_hz * exp((log(6.4) / 27.0) * (m - k_min_log_mel));
}

osc_status osc_mel_filters(int n_mels, float **filters) {
    if (!filters) return osc_error(OSC_ERR_INVALID_ARG, "mel filters: NULL output");
    *filters = NULL;
    if (n_mels < 1 || n_mels > 512)
        return osc_error(OSC_ERR_INVALID_ARG, "mel filters: n_mels %d not in [1, 512]", n_mels);
    const int nb = OSC_MEL_N_BINS;
    double *edges = malloc(sizeof(double) * (size_t)(n_mels + 2));
    float *w = calloc((size_t)nb * (size_t)n_mels, sizeof(float));
    if (!edges || !w) {
        free(edges);
        free(w);
        return osc_error(OSC_ERR_OOM, "mel filters: out of memory");
    }
    /* n_mels + 2 edge frequencies equally spaced in mel between 0 Hz and 8 kHz. */
    const double mel_lo = hz_to_mel(0.0), mel_hi = hz_to_mel(8000.0);
    for (int i = 0; i < n_mels + 2; i++) {
        double m = mel_lo + (mel_hi - mel_lo) * i / (double)(n_mels + 1);
        edges[i] = mel_to_hz(m);
    }
    int empty = -1;
    for (int m = 0; m < n_mels; m++) {
        const double lo = edges[m], mid = edges[m + 1], hi = edges[m + 2];
        const double enorm = 2.0 / (hi - lo); /* slaney area normalisation */
        double peak = 0;
        for (int k = 0; k < nb; k++) {
            const double f = 8000.0 * k / (double)(nb - 1); /* bin frequency, linspace(0, sr/2) */
            const double down = (f - lo) / (mid - lo), up = (hi - f) / (hi - mid);
            double v = down < up ? down : up;
            if (v < 0) v = 0;
            w[(size_t)k * n_mels + m] = (float)(v * enorm);
            if (v > peak) peak = v;
        }
        if (peak == 0 && empty < 0) empty = m;
    }
    free(edges);
    if (empty >= 0) {
        free(w);
        return osc_error(OSC_ERR_INVALID_ARG,
                         "mel filters: filter %d of %d is empty (too many mels for n_fft %d)", empty,
                         n_mels, OSC_MEL_N_FFT);
    }
    *filters = w;
    return OSC_OK;
}

int osc_mel_n_frames(int64_t n_samples, int64_t max_samples) {
    if (n_samples <= 0 || max_samples <= 0) return 0;
    int64_t n = n_samples < max_samples ? n_samples : max_samples;
    int64_t l = (n + OSC_MEL_HOP - 1) / OSC_MEL_HOP;
    int64_t total = max_samples / OSC_MEL_HOP; /* frames left after dropping the last one */
    return (int)(l < total ? l : total);
}

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

int osc_audio_n_tokens(int n_frames) {
    int64_t l1 = floor_div((int64_t)n_frames - 1, 2) + 1;
    int64_t n = floor_div(l1 - 2, 2) + 1;
    return n > 0 ? (int)n : 0;
}

/* ---- the STFT of one frame: power spectrum of 400 windowed samples ---- */
#ifdef OSC_HAVE_FFTW
static pthread_once_t g_plan_once = PTHREAD_ONCE_INIT;
static fftwf_plan g_plan;

static void make_plan(void) {
    float *in = fftwf_malloc(sizeof(float) * OSC_MEL_N_FFT);
    fftwf_complex *out = fftwf_malloc(sizeof(fftwf_complex) * OSC_MEL_N_BINS);
    if (in && out)
        g_plan = fftwf_plan_dft_r2c_1d(OSC_MEL_N_FFT, in, out, FFTW_ESTIMATE | FFTW_UNALIGNED);
    fftwf_free(in);
    fftwf_free(out);
}
#else
static pthread_once_t g_twiddle_once = PTHREAD_ONCE_INIT;
static double g_cos[OSC_MEL_N_FFT], g_sin[OSC_MEL_N_FFT];

static void make_twiddles(void) {
    for (int i = 0; i < OSC_MEL_N_FFT; i++) {
        g_cos[i] = cos(2.0 * M_PI * i / OSC_MEL_N_FFT);
        g_sin[i] = sin(2.0 * M_PI * i / OSC_MEL_N_FFT);
    }
}
#endif

/* frame[400] -> power[201]. work: 2 * 201 floats of scratch. */
static void frame_power(const float *frame, float *work, float *power) {
#ifdef OSC_HAVE_FFTW
    fftwf_complex *c = (fftwf_complex *)work;
    fftwf_execute_dft_r2c(g_plan, (float *)frame, c);
    for (int k = 0; k < OSC_MEL_N_BINS; k++) power[k] = c[k][0] * c[k][0] + c[k][1] * c[k][1];
#else
    (void)work;
    for (int k = 0; k < OSC_MEL_N_BINS; k++) {
        double re = 0, im = 0;
        int idx = 0;
        for (int i = 0; i < OSC_MEL_N_FFT; i++) {
            re += frame[i] * g_cos[idx];
            im -= frame[i] * g_sin[idx];
            idx += k;
            if (idx >= OSC_MEL_N_FFT) idx -= OSC_MEL_N_FFT;
        }
        power[k] = (float)(re * re + im * im);
    }
#endif
}

/* log10(max(mel, 1e-10)) of frame t of the centre-padded signal. The padded signal is x[0..nv)
 * followed by zeros up to P samples; frame t covers padded samples [t*hop - 200, t*hop + 200)
 * with reflection at both ends of [0, P). Out: n_mels values. */
static void frame_logmel(const float *x, int64_t nv, int64_t P, int64_t t, const float *win,
                         const float *filt, int n_mels, float *frame, float *work, float *power,
                         float *out) {
    const int64_t start = t * OSC_MEL_HOP - OSC_MEL_N_FFT / 2;
    for (int i = 0; i < OSC_MEL_N_FFT; i++) {
        int64_t j = start + i;
        if (j < 0) j = -j;
        if (j >= P) j = 2 * (P - 1) - j;
        frame[i] = (j < nv ? x[j] : 0.f) * win[i];
    }
    frame_power(frame, work, power);
    /* mel = filtersᵀ · power, accumulated in double. */
    double acc[512];
    for (int m = 0; m < n_mels; m++) acc[m] = 0;
    for (int k = 0; k < OSC_MEL_N_BINS; k++) {
        const double pk = power[k];
        if (pk == 0) continue;
        const float *fr = filt + (size_t)k * n_mels;
        for (int m = 0; m < n_mels; m++) acc[m] += fr[m] * pk;
    }
    for (int m = 0; m < n_mels; m++) {
        float v = (float)acc[m];
        if (!(v > 1e-10f)) v = 1e-10f;
        out[m] = (float)log10((double)v);
    }
}

osc_status osc_mel_features(const float *pcm, int64_t n, float **feat, int *n_frames) {
    osc_mel_params p = osc_mel_default_params();
    return osc_mel_features_ex(&p, pcm, n, feat, n_frames);
}

osc_status osc_mel_features_ex(const osc_mel_params *p, const float *pcm, int64_t n, float **feat,
                               int *n_frames) {
    if (feat) *feat = NULL;
    if (n_frames) *n_frames = 0;
    if (!p || !pcm || !feat || !n_frames) return osc_error(OSC_ERR_INVALID_ARG, "mel: NULL argument");
    if (n <= 0) return osc_error(OSC_ERR_INVALID_ARG, "mel: no samples (n = %lld)", (long long)n);
    if (p->max_samples <= OSC_MEL_N_FFT || p->max_samples > (int64_t)OSC_MEL_HOP * (1 << 30))
        return osc_error(OSC_ERR_INVALID_ARG, "mel: max_samples %lld out of range",
                         (long long)p->max_samples);
    const int64_t P = p->max_samples;
    const int64_t nv = n < P ? n : P;
    for (int64_t i = 0; i < nv; i++)
        if (!isfinite(pcm[i]))
            return osc_error(OSC_ERR_INVALID_ARG, "mel: sample %lld is not finite", (long long)i);

    float *filt = NULL;
    OSC_TRY(osc_mel_filters(p->n_mels, &filt));
    const int n_mels = p->n_mels;
#ifdef OSC_HAVE_FFTW
    pthread_once(&g_plan_once, make_plan);
    if (!g_plan) {
        free(filt);
        return osc_error(OSC_ERR_UNSUPPORTED, "mel: FFTW could not make a plan for n_fft %d", OSC_MEL_N_FFT);
    }
#else
    pthread_once(&g_twiddle_once, make_twiddles);
#endif
    float win[OSC_MEL_N_FFT]; /* periodic Hann */
    for (int i = 0; i < OSC_MEL_N_FFT; i++)
        win[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / OSC_MEL_N_FFT));

    const int64_t T = P / OSC_MEL_HOP; /* frames of the padded signal after dropping the last */
    const int L = osc_mel_n_frames(n, P);
    /* Frames at or past t_zero that do not reach the right edge see only padding zeros: their
     * log-mel is log10(1e-10) everywhere. Frames [0, t_zero) and the last two (which reflect
     * at the right edge) are computed; those >= L only feed the global max. */
    int64_t t_zero = (nv + OSC_MEL_N_FFT / 2 + OSC_MEL_HOP - 1) / OSC_MEL_HOP + 1;
    if (t_zero > T) t_zero = T;
    int64_t t_edge = T - 2;
    if (t_edge < t_zero) t_edge = t_zero;

    float *out = malloc(sizeof(float) * (size_t)n_mels * (size_t)L);
    float *lm = malloc(sizeof(float) * (size_t)n_mels * (size_t)L); /* [L][n_mels] */
    if (!out || !lm) {
        free(out);
        free(lm);
        free(filt);
        return osc_error(OSC_ERR_OOM, "mel: out of memory for %d frames", L);
    }
    const int64_t n_comp = t_zero + (T - t_edge);
    float gmax = -INFINITY;
    if (t_zero < T - 2) gmax = (float)log10((double)1e-10f); /* some frames see only zeros */
#pragma omp parallel reduction(max : gmax)
    {
        float frame[OSC_MEL_N_FFT], work[2 * OSC_MEL_N_BINS + 2], power[OSC_MEL_N_BINS];
        float tmp[512];
#pragma omp for schedule(static)
        for (int64_t c = 0; c < n_comp; c++) {
            const int64_t t = c < t_zero ? c : t_edge + (c - t_zero);
            float *dst = t < L ? lm + (size_t)t * n_mels : tmp;
            frame_logmel(pcm, nv, P, t, win, filt, n_mels, frame, work, power, dst);
            for (int m = 0; m < n_mels; m++)
                if (dst[m] > gmax) gmax = dst[m];
        }
    }
    const float floor_v = gmax - 8.0f;
    for (int t = 0; t < L; t++)
        for (int m = 0; m < n_mels; m++) {
            float v = lm[(size_t)t * n_mels + m];
            if (v < floor_v) v = floor_v;
            out[(size_t)m * L + t] = (v + 4.0f) / 4.0f;
        }
    free(lm);
    free(filt);
    *feat = out;
    *n_frames = L;
    return OSC_OK;
}
