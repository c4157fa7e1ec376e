/**
 * image_decode — JPEG, PNG, WebP and GIF to upright 8-bit RGB, safely.
 *
 * The format is detected from the magic bytes, never from a name. Every decoder:
 *  - checks width x height against `max_pixels` from the header, before any allocation
 *    proportional to the image (a header claiming 60000x60000 is refused at once with
 *    PM_ERR_LIMIT, "too many pixels");
 *  - returns, for any byte sequence, a status instead of crashing: libjpeg's and libpng's
 *    fatal errors longjmp back here; giflib and libwebp report errors by value;
 *  - outputs RGB: greyscale is replicated, palettes expanded, 16-bit samples keep their
 *    high byte, CMYK/YCCK JPEG is converted like PIL (Adobe APP14 files store inverted
 *    CMYK; R = (255-K) * (255-C) / 255 on the true values), and alpha (RGBA, grey+alpha,
 *    tRNS, GIF transparency, WebP alpha) is composited on white exactly like img2dataset:
 *    round(c * a / 255 + 255 - a).
 *  - JPEG only: applies the EXIF orientation (APP1 "Exif", IFD0 tag 0x0112, all 8 values,
 *    parsed here with bounds checks on every read) so the output is upright, like PIL's
 *    ImageOps.exif_transpose(). (img2dataset's cv2.IMREAD_UNCHANGED does not rotate; we
 *    do, since an upright image is what training needs.) Orientation in PNG/WebP
 *    metadata is not applied.
 *  - GIF: the first frame, drawn on a white canvas of the logical screen size.
 *  - Animated WebP: the first frame (via libwebpdemux's animation decoder).
 *
 * Reduced-size decoding: when the caller says how small the output may be (min_width /
 * min_height, or a resize request from which they are computed), JPEG is decoded with
 * libjpeg's DCT-domain scaling at the smallest of 1/8, 1/4, 1/2 that keeps both sides >=
 * the minimum (the scales libjpeg-turbo has SIMD code for; 3/8, 5/8... are plain C and
 * no faster than 1/2 followed by a wider area average), and WebP with libwebp's built-in
 * area rescaler straight to that size.
 * image_resize() then maps the smaller image onto the same geometry.
 *
 * Thread-safety: reentrant; a context is used by one thread at a time.
 */
#ifndef PM_IMAGE_DECODE_H
#define PM_IMAGE_DECODE_H

#include "image.h"
#include "image_resize.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum image_format {
    IMAGE_FORMAT_UNKNOWN = 0,
    IMAGE_FORMAT_JPEG = 1,
    IMAGE_FORMAT_PNG = 2,
    IMAGE_FORMAT_WEBP = 3,
    IMAGE_FORMAT_GIF = 4,
};

/** Default pixel limit: 178956970, PIL's MAX_IMAGE_PIXELS (above it PIL refuses too). */
#define IMAGE_DEFAULT_MAX_PIXELS 178956970ULL

struct image_decode_opts {
    uint64_t max_pixels; /* refuse images with more pixels (0: the default above) */
    int min_width;       /* the output may be reduced down to this size (upright) ... */
    int min_height;      /* ... (0, 0: full resolution) */
    const struct image_resize_params *resize; /* if set, min size computed from it */
    bool no_orientation;                      /* do not apply the EXIF orientation */
};

#define IMAGE_DECODE_OPTS_INIT {IMAGE_DEFAULT_MAX_PIXELS, 0, 0, NULL, false}

/** What the decoder found. */
struct image_info {
    enum image_format format;
    int width; /* original size, upright (after the EXIF orientation) */
    int height;
    int orientation; /* EXIF orientation 1..8 found (1 when none); applied unless told not */
    bool has_alpha;  /* alpha or transparency was composited on white */
    bool reduced;    /* the output is smaller than width x height (scaled decode) */
};

/** Detect the format from the first bytes. IMAGE_FORMAT_UNKNOWN if none of ours. */
enum image_format image_format_detect(const void *data, size_t len);

/** "jpeg", "png", "webp", "gif" or "unknown". */
const char *image_format_name(enum image_format format);

/**
 * Decode data[0..len) into out (resized with image_reserve; RGB, upright) and describe
 * the image in info (may be NULL). opts may be NULL (defaults).
 *
 * Returns PM_OK; PM_ERR_UNSUPPORTED for an unknown format ("unsupported format") or an
 * unsupported feature of a known one; PM_ERR_FORMAT for corrupt data ("corrupt jpeg:
 * ...", "corrupt png: ...", ...); PM_ERR_LIMIT for too many pixels ("too many pixels:
 * 60000x60000"); PM_ERR_NOMEM. err gets the message. On error out's contents are
 * undefined but it stays valid (release it as usual); info->format is still set.
 */
int image_decode(struct image_ctx *ctx, const void *data, size_t len,
                 const struct image_decode_opts *opts, struct image *out, struct image_info *info,
                 struct pm_error *err);

/**
 * Parse the EXIF orientation from an APP1 payload (starting with "Exif\0\0"). Returns
 * 1..8, or 1 when absent or malformed. Exposed for tests.
 */
int image_exif_orientation(const uint8_t *app1, size_t len);

#endif
