/**
 * image_internal — definitions shared by the image modules only (not a public API).
 *
 * The context's scratch buffers are plain grow-only allocations; each one has a single
 * user so that one module's call never invalidates memory another is still reading.
 */
#ifndef PM_IMAGE_INTERNAL_H
#define PM_IMAGE_INTERNAL_H

#include "image.h"

#include <stddef.h>

/** A grow-only scratch allocation owned by a context. */
struct scratch {
    void *p;
    size_t cap;
};

/** Return at least n bytes (contents undefined), or NULL when out of memory. */
void *scratch_get(struct scratch *s, size_t n);

void scratch_release(struct scratch *s);

struct image_ctx {
    void *jpeg_dec;          /* struct jpeg_dec (image_decode.c), created on first use */
    void *jpeg_enc;          /* struct jpeg_enc (image_encode.c), created on first use */
    struct scratch dec_rgba; /* decoder: RGBA / CMYK / palette rows before conversion */
    struct scratch dec_raw;  /* decoder: the unrotated image before EXIF orientation */
    struct scratch rs_tabx;  /* resize: horizontal tap tables */
    struct scratch rs_taby;  /* resize: vertical tap tables */
    struct scratch rs_tmp;   /* resize: horizontally filtered rows (float) */
    struct scratch ph_tmp;   /* phash: grey image and horizontal pass */
    struct scratch enc_row;  /* encoder: one converted row */
    void *ph_cache;          /* struct ph_cache (image_phash.c): coefficient tables by size */
};

/** Release the decoder's libjpeg object (image_decode.c). */
void image_decode_ctx_release(struct image_ctx *ctx);

/** Release the phash coefficient cache (image_phash.c). */
void image_phash_ctx_release(struct image_ctx *ctx);

/** Release the encoder's libjpeg object (image_encode.c). */
void image_encode_ctx_release(struct image_ctx *ctx);

/** Largest image dimension accepted anywhere (libjpeg's own limit is 65500). */
#define IMAGE_MAX_DIM 65535

#endif
