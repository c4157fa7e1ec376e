/**
 * image_encode — RGB images to JPEG (libjpeg-turbo) or WebP (libwebp).
 *
 * JPEG: baseline, 4:2:0 chroma subsampling (libjpeg's jpeg_set_defaults, which is also
 * what PIL's save() and cv2.imencode() produce by default), quality 1..100 with the
 * standard IJG tables scaled like PIL/OpenCV, the accurate integer DCT, standard
 * (non-optimised) Huffman tables, JFIF header, no EXIF (pixels are already upright).
 * With `progressive`, a progressive JPEG (optimised Huffman tables) instead.
 * WebP: lossy with `quality` (0..100, method 4 = libwebp's default, like cv2) or
 * lossless (`lossless`; quality then sets the compression effort, as in libwebp).
 *
 * The output goes into a caller-owned bytebuf that is cleared first and reused across
 * calls (its limit, if any, applies: PM_ERR_LIMIT when the encoded image is larger).
 * Thread-safety: reentrant; a context is used by one thread at a time.
 */
#ifndef PM_IMAGE_ENCODE_H
#define PM_IMAGE_ENCODE_H

#include "bytebuf.h"
#include "image.h"
#include "pm_error.h"

#include <stdbool.h>

enum image_encode_format {
    IMAGE_ENCODE_JPEG = 0,
    IMAGE_ENCODE_WEBP = 1,
};

struct image_encode_opts {
    enum image_encode_format format;
    int quality;      /* 1..100 (img2dataset's default: 95) */
    bool lossless;    /* WebP only */
    bool progressive; /* JPEG only */
};

#define IMAGE_ENCODE_OPTS_INIT {IMAGE_ENCODE_JPEG, 95, false, false}

/**
 * Encode img into out (cleared first). Returns PM_OK, PM_ERR_USAGE (empty image, quality
 * out of range), PM_ERR_LIMIT (out's limit), PM_ERR_NOMEM or PM_ERR_INTERNAL (the codec
 * failed), with err filled.
 */
int image_encode(struct image_ctx *ctx, const struct image *img,
                 const struct image_encode_opts *opts, struct bytebuf *out, struct pm_error *err);

#endif
