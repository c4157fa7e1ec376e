/**
 * image_png — write an RGB image as a PNG file (libpng; 8-bit RGB, no interlace, default
 * compression). For sample grids and debugging output, not for shards.
 */
#ifndef PM_IMAGE_PNG_H
#define PM_IMAGE_PNG_H

#include "image.h"
#include "pm_error.h"

/**
 * Write img to `path` (replaced if it exists; written to a temporary name and renamed).
 * Returns PM_OK, PM_ERR_USAGE (empty image), PM_ERR_IO or PM_ERR_INTERNAL (libpng
 * failed), with err naming the file.
 */
int image_png_write(const struct image *img, const char *path, struct pm_error *err);

#endif
