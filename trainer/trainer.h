/**
 * trainer — one diffusion-model training process's state and its step API (CPU
 * reference). Owns the model, parameters, gradients, AdamW moments, EMA weights, the step
 * counter and the RNG; the caller owns data loading and any cross-process reduction:
 *
 *     trainer_create(&opts, &t, &err);
 *     trainer_load(t, dir, &blob, &len, &err);           // resume if a checkpoint exists
 *     for (;;) {
 *         trainer_compute_gradients(t, &batch, &loss, &err);  // grads = d(loss)/d(params)
 *         MPI_Allreduce(MPI_IN_PLACE, trainer_grads(t), n, MPI_FLOAT, MPI_SUM, comm);
 *         scale by 1/world (trainer_scale_grads)
 *         trainer_apply_update(t);                           // AdamW, EMA, step++
 *         if (...) trainer_save(t, dir, keep, blob, len, &err);
 *     }
 *
 * Randomness: each step draws one 64-bit key from the checkpointed RNG; sample i of the
 * global batch (i = batch.first_index + local index) gets its timestep, caption-dropout
 * decision and noise from a stream seeded by (key, i). So the random draws of a sample do
 * not depend on how the global batch is split across ranks, and a resumed run continues
 * the exact sequence. Every computation is bit-for-bit deterministic for any thread count
 * (see layers.h), so a straight run equals an interrupted + resumed run exactly.
 *
 * A handle is used by one thread at a time.
 */
#ifndef PM_TRAINER_H
#define PM_TRAINER_H

#include "optim.h"
#include "pm_error.h"
#include "train_rng.h"
#include "unet.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Training options. */
struct trainer_options {
    const char *config;              /* model config name ("tiny-32", "small-64", "test-16") */
    const struct unet_config *model; /* if not NULL, this architecture instead of config */
    int max_batch;                   /* largest local batch (and sampling chunk) */
    uint64_t seed;                   /* weights init and the training RNG */
    struct adamw_config adamw;
    float ema_decay;       /* e.g. 0.9999; 0 keeps ema == weights */
    float caption_dropout; /* probability of training a sample with the null caption */
};

/** Defaults: max_batch 32, seed 0, AdamW defaults, ema 0.9999, caption dropout 0.1. */
void trainer_options_init(struct trainer_options *o, const char *config);

/**
 * A local batch. Exactly one of images_u8 ([B, S, S, C] uint8 HWC, mapped to x/127.5 - 1)
 * or images_f32 ([B, C, S, S] float CHW, already in [-1, 1]) is set, S and C being the
 * model's image size and channels. captions[b] may be NULL or "" (null caption).
 */
struct trainer_batch {
    int B;
    const uint8_t *images_u8;
    const float *images_f32;
    const char *const *captions;
    uint64_t first_index; /* global index of this batch's first sample within the step */
};

struct trainer;

/**
 * The model config `o` names (o->model, else the config o->config) in *cfg, and the
 * options' ranges (caption dropout and EMA decay in [0, 1]): PM_OK or an error naming
 * the option. trainer_create and the CUDA trainer's create start with it.
 */
int trainer_options_check(const struct trainer_options *o, struct unet_config *cfg,
                          struct pm_error *err);

/** Create a trainer: model, weights initialised from the seed, EMA = weights, step 0. */
int trainer_create(const struct trainer_options *o, struct trainer **out, struct pm_error *err);

/** Free. Accepts NULL. */
void trainer_free(struct trainer *t);

/** The model (tensor table, config). */
const struct unet *trainer_model(const struct trainer *t);

/** Number of parameters (length of the params, grads and EMA arrays). */
size_t trainer_num_params(const struct trainer *t);

/** The parameter, gradient and EMA arrays (owned by the trainer). */
float *trainer_params(struct trainer *t);
float *trainer_grads(struct trainer *t);
float *trainer_ema(struct trainer *t);

/** Number of optimizer updates applied so far. */
uint64_t trainer_step(const struct trainer *t);

/**
 * Forward + backward for the batch with this step's random timesteps, noise and caption
 * dropout (see the header comment); grads is overwritten with d(loss)/d(params) where loss
 * = mean squared error over the B local samples. *loss receives it. Returns PM_OK or
 * PM_ERR_USAGE (bad batch).
 */
int trainer_compute_gradients(struct trainer *t, const struct trainer_batch *batch, float *loss,
                              struct pm_error *err);

/**
 * The same with explicit randomness (for tests and parity): x0 [B, C, S, S] in [-1, 1],
 * timesteps ts[B], noise [B, C, S, S], drop[B] (may be NULL). grads is overwritten.
 */
int trainer_compute_gradients_explicit(struct trainer *t, const float *x0,
                                       const char *const *captions, const int *ts,
                                       const float *noise, const unsigned char *drop, int B,
                                       float *loss, struct pm_error *err);

/** Multiply the gradients by s (e.g. 1/world size after an all-reduce sum). */
void trainer_scale_grads(struct trainer *t, float s);

/** Apply AdamW with the current gradients, then update the EMA; step += 1. */
void trainer_apply_update(struct trainer *t);

/*
 * The randomness of a step (see the header comment), shared with the CUDA trainer so both
 * draw the same stream: trainer_create seeds the step-key generator with trainer_rng_init;
 * trainer_step_key gives a step's key; trainer_sample_draw a sample's draws from it.
 */

/** Seed the step-key generator for `seed` (--seed; independent of the parameter init). */
void trainer_rng_init(struct train_rng *rng, uint64_t seed);

/** The key of the step `ahead` steps after the next one (0: the next step), without
 * advancing *rng (trainer_apply_update consumes one key per step). */
uint64_t trainer_step_key(const struct train_rng *rng, int ahead);

/**
 * The draws of the sample with global index `index` in the step of `key`: seeds *r with
 * the sample's stream, draws its timestep *t in [0, DIFFUSION_STEPS) and its caption
 * dropout *drop (uniform < caption_dropout), and leaves *r where its noise starts
 * (train_rng_normal_fill of C * S * S values gives it, in [C, S, S] order).
 */
void trainer_sample_draw(uint64_t key, uint64_t index, float caption_dropout, struct train_rng *r,
                         int *t, unsigned char *drop);

/**
 * Generate n images for prompts[n] (NULL/"" = unconditional) with DDIM (eta 0, `steps`
 * steps) and classifier-free guidance scale `guidance` (1: no guidance, conditional only),
 * from noise seeded by (seed, image index); with the EMA weights when use_ema. out
 * receives n images [S, S, C] uint8. Uses the training activation memory (call between
 * steps). Returns PM_OK or PM_ERR_USAGE.
 */
int trainer_sample(struct trainer *t, const char *const *prompts, int n, float guidance, int steps,
                   uint64_t seed, bool use_ema, uint8_t *out, struct pm_error *err);

/**
 * Save a checkpoint under dir (see checkpoint.h) with the caller's opaque loader state,
 * keeping the newest `keep`.
 */
int trainer_save(struct trainer *t, const char *dir, int keep, const void *loader,
                 size_t loader_len, struct pm_error *err);

/**
 * Resume from dir's latest checkpoint. On success the trainer holds its weights, EMA,
 * moments, step and RNG, and *loader / *loader_len the saved loader state (malloc'ed,
 * caller frees; NULL/0 when empty). Returns PM_ERR_NOT_FOUND when there is no checkpoint
 * (the trainer is unchanged), or a reader's error (the trainer is unchanged).
 */
int trainer_load(struct trainer *t, const char *dir, unsigned char **loader, size_t *loader_len,
                 struct pm_error *err);

#endif
