/* pipelines/lib/plot.h: a tiny raster plotter for analysis figures (oscar kvstat --png).
 *
 * An osc_plot is an RGB canvas (8 bits per channel, row-major, origin top left). Primitives:
 * pixels, filled rectangles, lines (Bresenham), square markers and text in a built-in 5x7
 * bitmap font (ASCII 32..126; lower case is drawn as upper case; other bytes as '?'), scaled by
 * an integer factor. On top of them, osc_plot_axes maps data coordinates into a pixel box and
 * draws a frame with "nice" ticks (1, 2, 5 x 10^k) and their labels.
 * Colours are 0xRRGGBB. Everything outside the canvas is clipped, so no call can write out of
 * bounds. The PNG writer needs libpng (OSC_HAVE_PNG); without it osc_plot_write_png returns
 * OSC_ERR_UNSUPPORTED. Not thread-safe per canvas; separate canvases are independent.
 * Errors: OSC_ERR_INVALID_ARG for sizes outside [1, 16384], OSC_ERR_OOM, OSC_ERR_IO. */
#ifndef OSC_PIPELINES_PLOT_H
#define OSC_PIPELINES_PLOT_H
#include <stdint.h>

#include "core/status.h"

typedef struct osc_plot {
    int w, h;
    uint8_t *rgb; /* [h][w][3] */
} osc_plot;

#define OSC_FONT_W 5 /* glyph cell without spacing; text advances 6 * scale per char */
#define OSC_FONT_H 7

osc_status osc_plot_new(int w, int h, uint32_t bg, osc_plot **out);
void osc_plot_free(osc_plot *p); /* NULL is fine */

void osc_plot_pixel(osc_plot *p, int x, int y, uint32_t c);
/* 0xRRGGBB at (x, y); 0 outside the canvas. */
uint32_t osc_plot_get(const osc_plot *p, int x, int y);
/* Inclusive corners, in any order. */
void osc_plot_fill_rect(osc_plot *p, int x0, int y0, int x1, int y1, uint32_t c);
void osc_plot_line(osc_plot *p, int x0, int y0, int x1, int y1, uint32_t c);
/* A filled square of side 2r+1 centred on (x, y). */
void osc_plot_marker(osc_plot *p, int x, int y, int r, uint32_t c);
/* Text with its top-left corner at (x, y); returns the width drawn in pixels. '\n' is not
 * special. vertical != 0 draws bottom-to-top (rotated 90 degrees left), (x, y) the bottom left. */
int osc_plot_text(osc_plot *p, int x, int y, const char *s, uint32_t c, int scale);
int osc_plot_text_vertical(osc_plot *p, int x, int y, const char *s, uint32_t c, int scale);
int osc_plot_text_width(const char *s, int scale);
/* The 7 row bitmaps (bit 4 = leftmost column) of character ch, for tests. */
const uint8_t *osc_plot_glyph(unsigned char ch);

/* Data-to-pixel mapping of one panel: the data rectangle [xmin,xmax] x [ymin,ymax] fills the
 * pixel box [px0, px1] x [py0, py1] (py0 top). Degenerate ranges are widened on draw. */
typedef struct osc_plot_axes {
    int px0, py0, px1, py1;
    double xmin, xmax, ymin, ymax;
    int x_integer; /* x ticks at whole numbers only (step >= 1) */
} osc_plot_axes;
int osc_plot_px(const osc_plot_axes *a, double x);
int osc_plot_py(const osc_plot_axes *a, double y);
/* Frame, ticks and tick labels (about 6 per axis), title above, x label below, y label
 * vertical on the left. Widens a degenerate range first (hence non-const a). */
void osc_plot_draw_axes(osc_plot *p, osc_plot_axes *a, const char *title, const char *xlabel, const char *ylabel);
/* n points (x[i], y[i]); lines != 0 joins consecutive points; marker_r >= 0 draws markers.
 * Points with a non-finite coordinate are skipped (and break the line). */
void osc_plot_series(osc_plot *p, const osc_plot_axes *a, const double *x, const double *y, int n, uint32_t c,
                     int lines, int marker_r);
/* A legend box with its top-left corner at (x, y): one row per name with a colour swatch. */
void osc_plot_legend(osc_plot *p, int x, int y, const char *const *names, const uint32_t *colors, int n, int scale);

/* Write the canvas as an 8-bit RGB PNG. */
osc_status osc_plot_write_png(const osc_plot *p, const char *path);

#endif
