/**
 * npy — NumPy's .npy format (version 1.0) for decoded images: uint8, C order, shape
 * (height, width, 3), as `numpy.load` and Python webdataset's ".npy" decoder read it.
 *
 * Layout: magic "\x93NUMPY", version 1.0, a little-endian uint16 header length, then the
 * header dict `{'descr': '|u1', 'fortran_order': False, 'shape': (H, W, 3), }` padded
 * with spaces and ended by '\n' so that the data starts at a multiple of 64 bytes, then
 * H*W*3 bytes of pixels. Pure functions, thread-safe.
 */
#ifndef PM_NPY_H
#define PM_NPY_H

#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>

/** Largest header npy_header writes (bytes); ours is always 128. */
#define NPY_HEADER_MAX 256

/** What npy_parse found. */
struct npy_info {
    uint64_t shape[3];  /* height, width, channels */
    size_t data_offset; /* where the pixels start */
};

/**
 * Write the header of a uint8 (height, width, channels) array to buf (at least
 * NPY_HEADER_MAX bytes); *len receives its size (a multiple of 64). Returns PM_OK or
 * PM_ERR_USAGE for a zero or negative dimension.
 */
int npy_header(char *buf, int height, int width, int channels, size_t *len, struct pm_error *err);

/**
 * Check an .npy file of `size` bytes written as above (uint8, C order, 3 dimensions, data
 * length matching the shape). Returns PM_OK with *info filled, or PM_ERR_FORMAT /
 * PM_ERR_UNSUPPORTED with a message.
 */
int npy_parse(const void *data, size_t size, struct npy_info *info, struct pm_error *err);

#endif
