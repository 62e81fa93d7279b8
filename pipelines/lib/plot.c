/* pipelines/lib/plot.c: see plot.h. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef OSC_HAVE_PNG
#include <png.h>
#endif

/* 5x7 glyphs for ASCII 32..95 (space .. underscore); bit 4 is the leftmost column. */
static const uint8_t k_font[64][7] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* ' ' */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04}, /* ! */
    {0x0A, 0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00}, /* " */
    {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}, /* # */
    {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04}, /* $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}, /* % */
    {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D}, /* & */
    {0x0C, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}, /* ' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}, /* ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}, /* ) */
    {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00}, /* * */
    {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}, /* + */
    {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}, /* , */
    {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}, /* - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}, /* . */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}, /* / */
    {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}, /* 0 */
    {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}, /* 1 */
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}, /* 2 */
    {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}, /* 3 */
    {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}, /* 4 */
    {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}, /* 5 */
    {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}, /* 6 */
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}, /* 7 */
    {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}, /* 8 */
    {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}, /* 9 */
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}, /* : */
    {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08}, /* ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}, /* < */
    {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}, /* = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}, /* > */
    {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}, /* ? */
    {0x0E, 0x11, 0x01, 0x0D, 0x15, 0x15, 0x0E}, /* @ */
    {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}, /* A */
    {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}, /* B */
    {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}, /* C */
    {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}, /* D */
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}, /* E */
    {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}, /* F */
    {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}, /* G */
    {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}, /* H */
    {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}, /* I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}, /* J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}, /* K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}, /* L */
    {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}, /* M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}, /* N */
    {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, /* O */
    {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}, /* P */
    {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}, /* Q */
    {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}, /* R */
    {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}, /* S */
    {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}, /* T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}, /* U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}, /* V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}, /* W */
    {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}, /* X */
    {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}, /* Y */
    {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}, /* Z */
    {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}, /* [ */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00}, /* \ */
    {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}, /* ] */
    {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00}, /* ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}, /* _ */
};
static const uint8_t k_backtick[7] = {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00};
static const uint8_t k_lbrace[7] = {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02};
static const uint8_t k_bar[7] = {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04};
static const uint8_t k_rbrace[7] = {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08};
static const uint8_t k_tilde[7] = {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00};

const uint8_t *osc_plot_glyph(unsigned char ch) {
    if (ch >= 'a' && ch <= 'z') ch = (unsigned char)(ch - 'a' + 'A');
    if (ch >= 32 && ch <= 95) return k_font[ch - 32];
    switch (ch) {
    case '`': return k_backtick;
    case '{': return k_lbrace;
    case '|': return k_bar;
    case '}': return k_rbrace;
    case '~': return k_tilde;
    default: return k_font['?' - 32];
    }
}

osc_status osc_plot_new(int w, int h, uint32_t bg, osc_plot **out) {
    *out = NULL;
    if (w < 1 || h < 1 || w > 16384 || h > 16384) return osc_error(OSC_ERR_INVALID_ARG, "plot: size %dx%d", w, h);
    osc_plot *p = calloc(1, sizeof *p);
    if (!p) return osc_error(OSC_ERR_OOM, "plot: out of memory");
    p->rgb = malloc((size_t)w * h * 3);
    if (!p->rgb) {
        free(p);
        return osc_error(OSC_ERR_OOM, "plot: out of memory for %dx%d", w, h);
    }
    p->w = w;
    p->h = h;
    osc_plot_fill_rect(p, 0, 0, w - 1, h - 1, bg);
    *out = p;
    return OSC_OK;
}

void osc_plot_free(osc_plot *p) {
    if (!p) return;
    free(p->rgb);
    free(p);
}

void osc_plot_pixel(osc_plot *p, int x, int y, uint32_t c) {
    if (x < 0 || y < 0 || x >= p->w || y >= p->h) return;
    uint8_t *q = p->rgb + ((size_t)y * p->w + x) * 3;
    q[0] = (uint8_t)(c >> 16);
    q[1] = (uint8_t)(c >> 8);
    q[2] = (uint8_t)c;
}

uint32_t osc_plot_get(const osc_plot *p, int x, int y) {
    if (x < 0 || y < 0 || x >= p->w || y >= p->h) return 0;
    const uint8_t *q = p->rgb + ((size_t)y * p->w + x) * 3;
    return (uint32_t)q[0] << 16 | (uint32_t)q[1] << 8 | q[2];
}

void osc_plot_fill_rect(osc_plot *p, int x0, int y0, int x1, int y1, uint32_t c) {
    if (x0 > x1) { int t = x0; x0 = x1; x1 = t; }
    if (y0 > y1) { int t = y0; y0 = y1; y1 = t; }
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 >= p->w) x1 = p->w - 1;
    if (y1 >= p->h) y1 = p->h - 1;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) osc_plot_pixel(p, x, y, c);
}

void osc_plot_line(osc_plot *p, int x0, int y0, int x1, int y1, uint32_t c) {
    /* Bresenham; long lines far outside the canvas are clipped per pixel, so bound them first */
    const int lim = 1 << 20;
    if (abs(x0) > lim || abs(x1) > lim || abs(y0) > lim || abs(y1) > lim) return;
    int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
        osc_plot_pixel(p, x0, y0, c);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

void osc_plot_marker(osc_plot *p, int x, int y, int r, uint32_t c) {
    if (r < 0) return;
    osc_plot_fill_rect(p, x - r, y - r, x + r, y + r, c);
}

int osc_plot_text_width(const char *s, int scale) {
    size_t n = strlen(s);
    return n ? (int)(n * 6 - 1) * scale : 0;
}

int osc_plot_text(osc_plot *p, int x, int y, const char *s, uint32_t c, int scale) {
    if (scale < 1) scale = 1;
    int x0 = x;
    for (; *s; s++, x += 6 * scale) {
        const uint8_t *g = osc_plot_glyph((unsigned char)*s);
        for (int r = 0; r < OSC_FONT_H; r++)
            for (int col = 0; col < OSC_FONT_W; col++)
                if (g[r] & (0x10 >> col))
                    osc_plot_fill_rect(p, x + col * scale, y + r * scale, x + col * scale + scale - 1,
                                       y + r * scale + scale - 1, c);
    }
    return x - x0 - (x > x0 ? scale : 0);
}

int osc_plot_text_vertical(osc_plot *p, int x, int y, const char *s, uint32_t c, int scale) {
    if (scale < 1) scale = 1;
    int y0 = y;
    /* glyph row r maps to column x + r, glyph column col to row y - col (reading upwards) */
    for (; *s; s++, y -= 6 * scale) {
        const uint8_t *g = osc_plot_glyph((unsigned char)*s);
        for (int r = 0; r < OSC_FONT_H; r++)
            for (int col = 0; col < OSC_FONT_W; col++)
                if (g[r] & (0x10 >> col))
                    osc_plot_fill_rect(p, x + r * scale, y - col * scale - scale + 1, x + r * scale + scale - 1,
                                       y - col * scale, c);
    }
    return y0 - y - (y < y0 ? scale : 0);
}

/* ---- axes ---------------------------------------------------------------------------------- */

int osc_plot_px(const osc_plot_axes *a, double x) {
    double f = (x - a->xmin) / (a->xmax - a->xmin);
    if (!isfinite(f)) f = 0.5;
    if (f < -4) f = -4;
    if (f > 5) f = 5;
    return a->px0 + (int)lround(f * (a->px1 - a->px0));
}

int osc_plot_py(const osc_plot_axes *a, double y) {
    double f = (y - a->ymin) / (a->ymax - a->ymin);
    if (!isfinite(f)) f = 0.5;
    if (f < -4) f = -4;
    if (f > 5) f = 5;
    return a->py1 - (int)lround(f * (a->py1 - a->py0));
}

static void widen(double *lo, double *hi) {
    if (!isfinite(*lo) || !isfinite(*hi)) { *lo = 0; *hi = 1; }
    if (*hi < *lo) { double t = *lo; *lo = *hi; *hi = t; }
    if (*hi - *lo <= 1e-12 * (fabs(*lo) + fabs(*hi)) || *hi == *lo) {
        double d = *lo != 0 ? fabs(*lo) * 0.5 : 0.5;
        *lo -= d;
        *hi += d;
    }
}

static double nice_step(double range) {
    double raw = range / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

static void fmt_tick(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0; /* no "-0" or 1e-17 */
    snprintf(buf, n, "%.4g", v);
}

void osc_plot_draw_axes(osc_plot *p, osc_plot_axes *a, const char *title, const char *xlabel, const char *ylabel) {
    const uint32_t ink = 0x000000, grid = 0xe6e6e6;
    widen(&a->xmin, &a->xmax);
    widen(&a->ymin, &a->ymax);
    char buf[64];
    double sx = nice_step(a->xmax - a->xmin), sy = nice_step(a->ymax - a->ymin);
    if (a->x_integer && sx < 1) sx = 1;
    for (double v = ceil(a->xmin / sx) * sx; v <= a->xmax + sx * 1e-9; v += sx) {
        int x = osc_plot_px(a, v);
        osc_plot_line(p, x, a->py0, x, a->py1, grid);
        osc_plot_line(p, x, a->py1, x, a->py1 + 4, ink);
        fmt_tick(buf, sizeof buf, v, sx);
        osc_plot_text(p, x - osc_plot_text_width(buf, 1) / 2, a->py1 + 7, buf, ink, 1);
    }
    for (double v = ceil(a->ymin / sy) * sy; v <= a->ymax + sy * 1e-9; v += sy) {
        int y = osc_plot_py(a, v);
        osc_plot_line(p, a->px0, y, a->px1, y, grid);
        osc_plot_line(p, a->px0 - 4, y, a->px0, y, ink);
        fmt_tick(buf, sizeof buf, v, sy);
        osc_plot_text(p, a->px0 - 7 - osc_plot_text_width(buf, 1), y - 3, buf, ink, 1);
    }
    osc_plot_line(p, a->px0, a->py0, a->px1, a->py0, ink);
    osc_plot_line(p, a->px0, a->py1, a->px1, a->py1, ink);
    osc_plot_line(p, a->px0, a->py0, a->px0, a->py1, ink);
    osc_plot_line(p, a->px1, a->py0, a->px1, a->py1, ink);
    if (title) osc_plot_text(p, a->px0, a->py0 - 20, title, ink, 2);
    if (xlabel)
        osc_plot_text(p, (a->px0 + a->px1 - osc_plot_text_width(xlabel, 2)) / 2, a->py1 + 20, xlabel, ink, 2);
    if (ylabel)
        osc_plot_text_vertical(p, a->px0 - 62, (a->py0 + a->py1 + osc_plot_text_width(ylabel, 2)) / 2, ylabel, ink, 2);
}

void osc_plot_series(osc_plot *p, const osc_plot_axes *a, const double *x, const double *y, int n, uint32_t c,
                     int lines, int marker_r) {
    int have = 0, lx = 0, ly = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]) || !isfinite(y[i])) {
            have = 0;
            continue;
        }
        int px = osc_plot_px(a, x[i]), py = osc_plot_py(a, y[i]);
        if (lines && have) osc_plot_line(p, lx, ly, px, py, c);
        if (marker_r >= 0) osc_plot_marker(p, px, py, marker_r, c);
        have = 1;
        lx = px;
        ly = py;
    }
}

void osc_plot_legend(osc_plot *p, int x, int y, const char *const *names, const uint32_t *colors, int n, int scale) {
    int wmax = 0;
    for (int i = 0; i < n; i++) {
        int w = osc_plot_text_width(names[i], scale);
        if (w > wmax) wmax = w;
    }
    int row = 10 * scale, bw = wmax + 18 * scale, bh = n * row + 4 * scale;
    osc_plot_fill_rect(p, x, y, x + bw, y + bh, 0xffffff);
    osc_plot_line(p, x, y, x + bw, y, 0x808080);
    osc_plot_line(p, x, y + bh, x + bw, y + bh, 0x808080);
    osc_plot_line(p, x, y, x, y + bh, 0x808080);
    osc_plot_line(p, x + bw, y, x + bw, y + bh, 0x808080);
    for (int i = 0; i < n; i++) {
        int yy = y + 3 * scale + i * row;
        osc_plot_fill_rect(p, x + 3 * scale, yy, x + 10 * scale, yy + 6 * scale, colors[i]);
        osc_plot_text(p, x + 14 * scale, yy, names[i], 0x000000, scale);
    }
}

/* ---- PNG ----------------------------------------------------------------------------------- */

#ifdef OSC_HAVE_PNG
osc_status osc_plot_write_png(const osc_plot *p, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return osc_error(OSC_ERR_IO, "%s: cannot create the file", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = malloc((size_t)p->h * sizeof *rows);
    if (!png || !info || !rows) {
        if (png) png_destroy_write_struct(&png, info ? &info : NULL);
        free(rows);
        fclose(f);
        return osc_error(OSC_ERR_OOM, "%s: PNG writer: out of memory", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        fclose(f);
        return osc_error(OSC_ERR_IO, "%s: libpng failed to write the image", path);
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)p->w, (png_uint_32)p->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < p->h; y++) rows[y] = p->rgb + (size_t)y * p->w * 3;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    if (fclose(f) != 0) return osc_error(OSC_ERR_IO, "%s: write error", path);
    return OSC_OK;
}
#else
osc_status osc_plot_write_png(const osc_plot *p, const char *path) {
    (void)p;
    return osc_error(OSC_ERR_UNSUPPORTED, "%s: this build has no libpng (PNG output off)", path);
}
#endif
