/**
 * image_resize — img2dataset's resize modes, with the same output geometry.
 *
 * Geometry (identical to img2dataset's Resizer, which calls albumentations; `round` is
 * Python's round-half-to-even, computed here in double precision exactly as Python does):
 *
 *   no                  output = input.
 *   keep_ratio          s = size / min(w, h); if s != 1: (w, h) = (round(w*s), round(h*s)).
 *   keep_ratio_largest  s = size / max(w, h); same rounding.
 *   center_crop         keep_ratio, then a size x size crop at x0 = (w'-size) // 2,
 *                       y0 = (h'-size) // 2 (a side already <= size is not cropped).
 *   border              keep_ratio_largest, then pad with white to size x size; the image
 *                       is placed at left = (size-w') // 2, top = (size-h') // 2.
 *   fixed               resized to exactly size x size (aspect ratio not kept).
 *
 *   only_if_bigger      (img2dataset's resize_only_if_bigger) for keep_ratio/center_crop,
 *                       nothing at all happens (no resize, no crop) unless min(w, h) > size;
 *                       for keep_ratio_largest/border/fixed unless max(w, h) > size.
 *
 * Filters: an axis that shrinks uses area averaging — an exact box filter with
 * fractional edge weights, the definition of OpenCV's INTER_AREA (each output pixel is
 * the mean of the source area it covers). An axis that grows uses Lanczos-4 (8 taps,
 * a = 4), like img2dataset's default upscale interpolation (cv2.INTER_LANCZOS4): pixel
 * centres map as src = (dst + 0.5) / scale - 0.5, edge pixels are replicated. An axis
 * whose size is unchanged is copied. Both passes (horizontal, then vertical) run in
 * float; the result is rounded to nearest and clamped to 0..255 once at the end.
 *
 * The source given to image_resize() may be smaller than the size the geometry was
 * computed for (the decoder's DCT-domain downscaling): the filters map the actual
 * source onto the geometry's scaled size, so the output geometry is unchanged.
 *
 * Thread-safety: the functions are reentrant; a context is used by one thread at a time.
 */
#ifndef PM_IMAGE_RESIZE_H
#define PM_IMAGE_RESIZE_H

#include "image.h"
#include "pm_error.h"

#include <stdbool.h>

enum image_resize_mode {
    IMAGE_RESIZE_NO = 0,
    IMAGE_RESIZE_KEEP_RATIO = 1,
    IMAGE_RESIZE_CENTER_CROP = 2,
    IMAGE_RESIZE_BORDER = 3,
    IMAGE_RESIZE_KEEP_RATIO_LARGEST = 4,
    IMAGE_RESIZE_FIXED = 5,
};

/** What to do to every image: img2dataset's resize_mode, image_size, resize_only_if_bigger. */
struct image_resize_params {
    enum image_resize_mode mode;
    int size;
    bool only_if_bigger;
};

/** The geometry of one resize, computed from the source size by image_geometry_compute(). */
struct image_geometry {
    bool identity; /* nothing to do: output = input */
    bool upscale;  /* img2dataset would use its upscale interpolation (informative) */
    int src_width; /* the (upright) source size the geometry was computed for */
    int src_height;
    int scaled_width; /* size after scaling, before crop or pad */
    int scaled_height;
    int crop_x; /* top-left of the part of the scaled image that is kept */
    int crop_y;
    int copy_width; /* size of the kept part */
    int copy_height;
    int pad_x; /* where the kept part goes in the output (border mode) */
    int pad_y;
    int out_width; /* final output size */
    int out_height;
};

/**
 * Parse a mode name ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border",
 * "fixed"). Returns PM_OK or PM_ERR_USAGE.
 */
int image_resize_mode_parse(const char *name, enum image_resize_mode *mode);

/** The name of a mode ("keep_ratio"); "unknown" for an invalid value. */
const char *image_resize_mode_name(enum image_resize_mode mode);

/**
 * Compute the geometry of resizing a width x height image with params p into g.
 * Returns PM_OK, or PM_ERR_USAGE for a size <= 0 (with a mode other than `no`), a
 * non-positive width/height or an unknown mode.
 */
int image_geometry_compute(const struct image_resize_params *p, int width, int height,
                           struct image_geometry *g);

/**
 * Largest output image_resize() produces (pixels): keep_ratio on a 1 x 10000 strip would
 * otherwise ask for 256 x 2560000. img2dataset users bound this with max_aspect_ratio.
 */
#define IMAGE_RESIZE_MAX_PIXELS (1ULL << 27)

/**
 * Resize src according to g into dst (dst is resized with image_reserve; it must not be
 * src). src may be any size (see the module comment); when g->identity it is copied.
 * Uses ctx's resize scratch (no allocation once warm). Returns PM_OK, PM_ERR_USAGE
 * (empty src, dst == src, bad geometry), PM_ERR_LIMIT (output larger than
 * IMAGE_RESIZE_MAX_PIXELS) or PM_ERR_NOMEM, with err filled.
 */
int image_resize(struct image_ctx *ctx, const struct image *src, const struct image_geometry *g,
                 struct image *dst, struct pm_error *err);

#endif
