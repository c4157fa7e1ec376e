/**
 * image — the pixel buffer and the per-thread context shared by the image modules
 * (image_decode, image_resize, image_encode, image_phash).
 *
 * `struct image` is a caller-owned 8-bit RGB buffer (3 bytes per pixel, rows packed:
 * stride = 3 * width). Its memory is reused: functions that write an image grow `pixels`
 * only when `cap` is too small, so a caller that keeps one `struct image` per thread and
 * passes it again for every sample allocates only while the largest image seen so far
 * grows.
 *
 * `struct image_ctx` is an opaque per-thread context holding everything the codecs and
 * the resizer need besides the output: libjpeg decompressor/compressor objects, decode
 * scratch (RGBA rows, the unrotated image before EXIF orientation), resize weight tables
 * and intermediate rows. It is created once per thread and passed to every call; after
 * warm-up the hot path (decode -> resize -> encode) performs no allocation besides the
 * growth of the caller's output buffers. (Exceptions, all rare inputs: GIF decoding uses
 * giflib's own allocations, animated WebP uses libwebpdemux's decoder, progressive JPEG
 * coefficient buffers come from libjpeg's pool, which is freed per image.)
 *
 * Thread-safety: a context and an image belong to one thread at a time; different
 * threads may use different contexts concurrently (the libraries used are reentrant).
 */
#ifndef PM_IMAGE_H
#define PM_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/** An 8-bit RGB image, rows top to bottom, 3 bytes per pixel, no row padding. */
struct image {
    uint8_t *pixels; /* width * height * 3 bytes (NULL while empty) */
    int width;
    int height;
    size_t cap; /* allocated bytes at `pixels` */
};

#define IMAGE_INIT {NULL, 0, 0, 0}

/** Initialise an empty image (no allocation). */
void image_init(struct image *img);

/** Free the pixels and reset to empty. Accepts NULL. */
void image_release(struct image *img);

/**
 * Set the image size to width x height, growing `pixels` if needed (contents are then
 * undefined). Returns PM_OK, PM_ERR_USAGE for a non-positive or overflowing size, or
 * PM_ERR_NOMEM (the image is left unchanged).
 */
int image_reserve(struct image *img, int width, int height);

/** Opaque per-thread context; see the module comment. */
struct image_ctx;

/** Create a context. Returns NULL on allocation failure. */
struct image_ctx *image_ctx_create(void);

/** Free a context and everything it holds. Accepts NULL. */
void image_ctx_free(struct image_ctx *ctx);

#endif
