/**
 * image_png — encode an RGB image as PNG (libpng), for contact sheets and sample grids.
 * Thread-safe (no shared state).
 */
#ifndef PM_IMAGE_PNG_H
#define PM_IMAGE_PNG_H

#include "bytebuf.h"
#include "image.h"
#include "pm_error.h"

/**
 * Append the PNG encoding (8-bit RGB, zlib level 6, no interlace) of `img` to `out`.
 * Returns PM_OK, PM_ERR_USAGE (empty image), PM_ERR_LIMIT (out's limit reached) or
 * PM_ERR_NOMEM; on failure out may hold a partial encoding.
 */
int image_png_encode(const struct image *img, struct bytebuf *out, struct pm_error *err);

#endif
