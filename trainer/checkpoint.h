/**
 * checkpoint — the trainer's on-disk checkpoints: weights in safetensors (so Python can
 * load them), optimizer/RNG/loader state in a small binary file, committed atomically.
 *
 * Layout of a checkpoint directory DIR:
 *   DIR/step-NNNNNNNN/model.safetensors  weights under their tensor names, EMA weights
 *                                        under "ema." + name; __metadata__ holds
 *                                        format "pt", config name, step and a CRC-32 of the
 *                                        data section
 *   DIR/step-NNNNNNNN/state.bin          see below
 *   DIR/latest                           "step-NNNNNNNN\n", replaced atomically only after
 *                                        both files of that step are durable
 * Each file is written under a temporary name, fsynced and renamed (atomic_file), so a
 * crash leaves either the previous checkpoint or the new one. Older step directories
 * beyond `keep` are removed after `latest` moves.
 *
 * state.bin (little-endian):
 *   0  u32 magic 0x53544d50 ("PMTS")   4  u32 version (1)
 *   8  u64 header bytes (96)           16 u64 parameter count n
 *   24 u64 step                        32 u64[4] RNG state
 *   64 u64 loader blob bytes L         72 char[24] model config name (NUL padded)
 *   96 f32[n] Adam first moments, f32[n] second moments, L bytes of loader blob,
 *      u32 CRC-32 (zlib) of every preceding byte.
 *
 * Readers check everything (magic, version, sizes against the model and the file size,
 * the header JSON field by field, the CRC) before using any of it, and fail with
 * PM_ERR_FORMAT naming the file and the problem. Functions are thread-safe for distinct
 * paths.
 */
#ifndef PM_CHECKPOINT_H
#define PM_CHECKPOINT_H

#include "pm_error.h"
#include "train_rng.h"
#include "unet.h"

#include <stddef.h>
#include <stdint.h>

#define CHECKPOINT_STATE_MAGIC 0x53544d50u
#define CHECKPOINT_STATE_VERSION 1u
/** Largest loader blob accepted (bytes). */
#define CHECKPOINT_LOADER_MAX (64u << 20)
/** Largest safetensors JSON header accepted (bytes). */
#define CHECKPOINT_HEADER_MAX (16u << 20)

/** Everything a checkpoint holds; arrays have unet_num_params(model) floats. */
struct checkpoint_data {
    const struct unet *model; /* tensor table and config name */
    float *params;
    float *ema; /* may be NULL: not written / not read */
    float *adam_m, *adam_v;
    uint64_t step;
    struct train_rng rng;
    unsigned char *loader; /* write: caller's bytes; read: malloc'ed, caller frees */
    size_t loader_len;
};

/**
 * Write a safetensors file: every tensor of the model from params, then (if ema is not
 * NULL) each as "ema." + name from ema; metadata as described above. Atomic. Returns PM_OK,
 * PM_ERR_IO or PM_ERR_NOMEM.
 */
int checkpoint_write_safetensors(const char *path, const struct unet *m, const float *params,
                                 const float *ema, uint64_t step, struct pm_error *err);

/**
 * Read a safetensors file written for this model: fills params (and ema unless NULL)
 * from the tensors of the same names, after validating the header (JSON, dtype F32, shapes
 * equal to the model's, offsets inside the data and non-overlapping, CRC when present). If
 * step is not NULL it receives the metadata step (0 if absent). Returns PM_OK,
 * PM_ERR_NOT_FOUND, PM_ERR_IO or PM_ERR_FORMAT (message names file and tensor).
 */
int checkpoint_read_safetensors(const char *path, const struct unet *m, float *params, float *ema,
                                uint64_t *step, struct pm_error *err);

/** Write state.bin from d (atomic). PM_OK, PM_ERR_IO or PM_ERR_USAGE (blob too large). */
int checkpoint_write_state(const char *path, const struct checkpoint_data *d, struct pm_error *err);

/**
 * Read state.bin into d (adam_m, adam_v must be allocated; d->loader is replaced by a
 * malloc'ed copy owned by the caller, NULL when empty). PM_OK, PM_ERR_NOT_FOUND,
 * PM_ERR_IO, PM_ERR_FORMAT.
 */
int checkpoint_read_state(const char *path, struct checkpoint_data *d, struct pm_error *err);

/**
 * Save d as DIR/step-NNNNNNNN/ (creating DIR if needed), then point DIR/latest at it, then
 * remove the oldest step directories so that at most `keep` (>= 1) remain.
 */
int checkpoint_save(const char *dir, const struct checkpoint_data *d, int keep,
                    struct pm_error *err);

/**
 * Load the checkpoint DIR/latest names into d. PM_ERR_NOT_FOUND when DIR/latest does not
 * exist (no checkpoint yet), else as the readers above.
 */
int checkpoint_load(const char *dir, struct checkpoint_data *d, struct pm_error *err);

#endif
