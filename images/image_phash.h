/**
 * image_phash — 64-bit perceptual hash, the definition of Python imagehash.phash().
 *
 * Algorithm (imagehash.phash(image, hash_size=8, highfreq_factor=4)):
 *  1. Grey: L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16 — PIL's convert('L'), the
 *     ITU-R 601-2 luma 0.299 R + 0.587 G + 0.114 B in PIL's fixed point.
 *  2. Resize to 32 x 32 with PIL's Image.resize(..., LANCZOS) (imagehash's ANTIALIAS),
 *     reproduced exactly: Lanczos-3 kernel whose support is stretched by the downscale
 *     factor (antialiasing), per-output normalised weights converted to 22-bit fixed point
 *     with PIL's rounding, horizontal pass first with 8-bit clipped intermediate, then the
 *     vertical pass (the same fixed point).
 *  3. 2-D DCT-II (scipy.fftpack.dct type 2, unnormalised, along axis 0 then axis 1) of
 *     the 32 x 32 grey values; only the top-left 8 x 8 block, DC included, is computed.
 *  4. Median of those 64 coefficients (mean of the 32nd and 33rd smallest); bit =
 *     coefficient > median.
 *
 * Bit order: the 8 x 8 block is read row-major (row = vertical frequency v, column =
 * horizontal frequency u); coefficient i = 8 v + u is bit 63 - i of the value (the first
 * coefficient, DC, is the most significant bit). This is the order of imagehash's hex
 * string: image_phash_format() prints the same 16 hex digits as str(imagehash.phash(img)).
 *
 * Given the same RGB pixels the result is bit-identical to imagehash except where a
 * coefficient ties with the median to within floating-point noise (scipy computes the DCT
 * by FFT, we directly, both in double). Pixels differ when the codecs differ (see
 * docs/internals/images.md for the measured agreement).
 *
 * Thread-safety: reentrant; a context is used by one thread at a time.
 */
#ifndef PM_IMAGE_PHASH_H
#define PM_IMAGE_PHASH_H

#include "image.h"
#include "pm_error.h"

#include <stdint.h>

/**
 * Compute the perceptual hash of img into *hash. Uses ctx's scratch (no allocation once
 * warm). Returns PM_OK, PM_ERR_USAGE (empty image) or PM_ERR_NOMEM.
 */
int image_phash(struct image_ctx *ctx, const struct image *img, uint64_t *hash,
                struct pm_error *err);

/** Number of differing bits between two hashes (Hamming distance, 0..64). */
int image_phash_distance(uint64_t a, uint64_t b);

/** Write hash as 16 lowercase hex digits plus NUL into buf (imagehash's str()). */
void image_phash_format(uint64_t hash, char buf[17]);

#endif
