/**
 * loader — training batches from a webdataset dataset, in a deterministic order that does
 * not depend on the number of ranks, decoded on background threads.
 *
 * Sample index: the dataset's `dataset.json` lists the shards; at open every shard is
 * scanned once (tar_reader) for its samples' keys and byte ranges, so the global index
 * 0..N-1 is the shards' samples in shard order. Samples are then read by ranged reads of
 * their byte range through the `store` API (POSIX path or s3://).
 *
 * Order: the samples of epoch e are visited in the order of a pseudo-random permutation
 * of 0..N-1 keyed by (seed, e) (loader_order_index: a 4-round Feistel network with
 * cycle walking; O(1) memory, stateless). Positions are counted across epochs: position
 * p is sample perm(seed, p / N)[p % N]. The global batch of a step with batch size B
 * starting at position P is positions [P, P+B); rank r of W (W divides B) takes
 * [P + r*B/W, P + (r+1)*B/W). So the set of samples of a step is the same for any W,
 * and the resume state (seed, epoch, offset in epoch) = the next position is all that
 * a checkpoint needs (loader_state_encode) — resuming on another rank count neither
 * repeats nor skips a sample.
 *
 * Samples: the image field `jpg`, `jpeg`, `png`, `webp` (decoded by image_decode) or `npy`
 * (a raw uint8 H x W x 3 array, NPY format v1/v2, C order) is centre-cropped and resized
 * to the model's size (image_resize, center_crop mode); the caption is the `txt` field
 * (empty if absent). A sample that cannot be read or decoded is counted
 * (loader_stats) and replaced by the next position's sample (deterministically, so the
 * batch stays full and the same on every rank count); more than LOADER_MAX_REPLACE
 * consecutive bad samples is an error.
 *
 * Threads: `threads` workers decode the next `prefetch` batches while the caller trains;
 * loader_next() blocks only when the next batch is not ready (the time is in
 * loader_stats.wait_s). The handle itself is used by one thread.
 */
#ifndef PM_LOADER_H
#define PM_LOADER_H

#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Most consecutive corrupt samples replaced before loader_next fails. */
#define LOADER_MAX_REPLACE 64

/** Size of the encoded loader state (bytes). */
#define LOADER_STATE_BYTES 48

struct loader_options {
    const char *data; /* dataset directory or s3:// prefix, optionally ":VIEW" */
    int image_size;   /* output side S (images are S x S x 3 uint8) */
    int global_batch; /* B, samples per step over all ranks */
    int rank, world;  /* this rank; world must divide global_batch */
    int threads;      /* decoding threads (>= 1) */
    int prefetch;     /* batches decoded ahead (>= 1) */
    uint64_t seed;    /* order seed */
};

/** Defaults: batch 8, rank 0 of 1, 2 threads, prefetch 2, seed 0 (data and size unset). */
void loader_options_init(struct loader_options *o);

/** Where the loader is: the position of the next sample it hands out. */
struct loader_state {
    uint64_t seed;
    uint64_t epoch;
    uint64_t offset; /* samples of the epoch consumed, 0 .. N-1 */
    uint64_t nsamples;
};

/** A local batch, valid until the next loader_next() or loader_free(). */
struct loader_batch {
    int B;                       /* local samples (global_batch / world) */
    const uint8_t *images;       /* [B, S, S, 3] uint8 */
    const char *const *captions; /* B captions (never NULL, may be "") */
    const char *const *keys;     /* B sample keys ("00003/000017": shard url stem / key) */
    uint64_t first_index;        /* this rank's first index within the global batch */
    uint64_t position;           /* global position (across epochs) of the step's first sample */
};

struct loader_stats {
    uint64_t corrupt; /* samples skipped (replaced) by this rank */
    double wait_s;    /* seconds loader_next() waited for data */
    uint64_t batches; /* batches handed out */
};

struct loader;

/**
 * Open the dataset, build the sample index and start the workers at position 0 of epoch 0.
 * Returns PM_OK, PM_ERR_USAGE (bad options, view requested), PM_ERR_NOT_FOUND,
 * PM_ERR_IO, PM_ERR_FORMAT (a shard or the index; message names it) or PM_ERR_NOMEM.
 */
int loader_open(const struct loader_options *o, struct loader **out, struct pm_error *err);

/** Stop the workers and free. Accepts NULL. */
void loader_free(struct loader *l);

/** Number of samples N in the dataset (after any view). */
uint64_t loader_num_samples(const struct loader *l);

/**
 * Continue from a saved state (seed and nsamples must match the open dataset, else
 * PM_ERR_USAGE). Prefetched batches are dropped.
 */
int loader_seek(struct loader *l, const struct loader_state *st, struct pm_error *err);

/** The state after the last batch handed out (before the first: where it starts). */
void loader_get_state(const struct loader *l, struct loader_state *st);

/**
 * The next local batch (blocks until decoded). Returns PM_OK, or an error when too many
 * consecutive samples were bad or a worker failed (message names the sample).
 */
int loader_next(struct loader *l, struct loader_batch *b, struct pm_error *err);

/** Counters of this rank. */
void loader_get_stats(const struct loader *l, struct loader_stats *s);

/** Serialise a state into out[LOADER_STATE_BYTES] (little-endian, with magic/version). */
void loader_state_encode(const struct loader_state *st, unsigned char *out);

/** Parse a state; PM_ERR_FORMAT if the blob is not one. */
int loader_state_decode(const void *blob, size_t len, struct loader_state *st,
                        struct pm_error *err);

/** The sample at position `offset` of epoch `epoch` in an N-sample dataset with seed. */
uint64_t loader_order_index(uint64_t seed, uint64_t epoch, uint64_t n, uint64_t offset);

/**
 * Parse a raw `.npy` image: uint8 ('|u1' or '<u1'), C order, shape (H, W, 3) or (H, W)
 * (grey, replicated). Sets *pixels (points into data), *h, *w, *c. Returns PM_OK or
 * PM_ERR_FORMAT.
 */
int loader_parse_npy(const void *data, size_t len, const uint8_t **pixels, int *h, int *w, int *c,
                     struct pm_error *err);

#endif
