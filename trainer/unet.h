/**
 * unet — the trainer's small pixel-space diffusion UNet (DDPM style), CPU reference.
 *
 * Architecture (docs/trainer.md has the full description and a diagram of names):
 * conv_in 3x3 -> per level i: num_res_blocks ResBlocks (+ self-attention at the
 * attention resolution), then a stride-2 3x3 conv except at the last level -> middle
 * ResBlock, attention, ResBlock -> per level in reverse: num_res_blocks+1 ResBlocks on
 * the concatenation with the matching down-path activation (+ attention), then nearest 2x
 * upsample + 3x3 conv except at level 0 -> GroupNorm, SiLU, conv_out 3x3 -> epsilon.
 *
 * ResBlock: GroupNorm -> SiLU -> conv3x3 -> + Linear(SiLU(emb)) -> GroupNorm -> SiLU ->
 * conv3x3, plus x (1x1 conv when channels change). Attention: single head, GroupNorm,
 * 1x1 qkv, softmax(q^T k / sqrt(C)), 1x1 proj, residual. emb = MLP(sinusoidal(t)) +
 * Linear(caption vector); the caption vector is the mean of a hashed token embedding bag
 * (lower-cased words and word bigrams, FNV-1a 64 hashed into cap_buckets rows), or the
 * learned null vector `cap.null` for an empty or dropped caption (classifier-free guidance).
 *
 * Parameters: one contiguous fp32 array, described by a table of named tensors (name,
 * shape, offset) whose names match the PyTorch reference (bench/train-ref/unet_ref.py)
 * and the safetensors checkpoint. The model struct itself holds no parameters: forward and
 * backward take the parameter (and gradient) array, so the same model evaluates weights
 * or their EMA. Activations for up to max_batch images are allocated once at creation.
 *
 * A model handle is used by one thread at a time (it parallelises internally with OpenMP,
 * bit-identically for any thread count). The number of threads the convolutions use is
 * omp_get_max_threads() at unet_create() (their per-thread scratch is sized for it).
 */
#ifndef PM_UNET_H
#define PM_UNET_H

#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>

#define UNET_MAX_LEVELS 4
#define UNET_NAME_MAX 64
/** Captions: at most this many words are used (plus their bigrams). */
#define UNET_CAPTION_MAX_WORDS 64
#define UNET_CAPTION_MAX_TOKENS (2 * UNET_CAPTION_MAX_WORDS - 1)

/** Architecture hyper-parameters. */
struct unet_config {
    char name[24];             /* at most 23 characters (stored in state.bin) */
    int image_size;            /* square input, pixels */
    int in_channels;           /* 3 (RGB) */
    int channels;              /* base channels */
    int num_levels;            /* length of mult */
    int mult[UNET_MAX_LEVELS]; /* channel multiplier per level */
    int num_res_blocks;        /* ResBlocks per level on the down path */
    int attn_resolution;       /* feature-map side with self-attention (and middle) */
    int groups;                /* GroupNorm groups */
    int temb_dim;              /* time/caption embedding width */
    int cap_buckets;           /* hashed caption vocabulary rows */
    int cap_dim;               /* caption embedding width */
};

/**
 * Fill *cfg with a named configuration: "tiny-32" (32x32, ch 64, mults 1,2,2, attention
 * at 16), "small-64" (64x64, ch 64, mults 1,2,2,2, attention at 16) or "test-16" (16x16,
 * ch 32, mults 1,2, 8 groups, attention at 8; only for the golden parity test). Returns
 * PM_OK or PM_ERR_NOT_FOUND.
 */
int unet_config_get(const char *name, struct unet_config *cfg, struct pm_error *err);

/** Check a configuration for consistency (divisibility etc.). PM_OK or PM_ERR_USAGE. */
int unet_config_check(const struct unet_config *cfg, struct pm_error *err);

/** One named parameter tensor inside the flat parameter array. */
struct unet_tensor {
    char name[UNET_NAME_MAX];
    int ndim;
    int shape[4];
    size_t offset; /* in floats */
    size_t numel;
    int decay; /* 1 if AdamW weight decay applies (tensors with ndim >= 2) */
};

struct unet;

/**
 * Create a model for `cfg` with activation memory for batches of up to max_batch images.
 * On success *out is the handle (free with unet_free). Returns PM_OK, PM_ERR_USAGE (bad
 * config or batch) or PM_ERR_NOMEM.
 */
int unet_create(const struct unet_config *cfg, int max_batch, struct unet **out,
                struct pm_error *err);

/** Free the model. Accepts NULL. */
void unet_free(struct unet *m);

/** The configuration the model was created with. */
const struct unet_config *unet_get_config(const struct unet *m);

/** Largest batch a forward pass accepts. */
int unet_max_batch(const struct unet *m);

/** Number of floats in the parameter array. */
size_t unet_num_params(const struct unet *m);

/** The tensor table (in array order); *count receives its length. Owned by the model. */
const struct unet_tensor *unet_tensors(const struct unet *m, size_t *count);

/** The tensor called `name`, or NULL. */
const struct unet_tensor *unet_find_tensor(const struct unet *m, const char *name);

/** Bytes of activation memory held by the model. */
size_t unet_activation_bytes(const struct unet *m);

/**
 * Initialise params (unet_num_params floats) from `seed`: conv/linear weights uniform in
 * +-1/sqrt(fan_in), biases 0, GroupNorm 1/0, caption rows and null N(0, 0.02^2), and (as in
 * DDPM) zero for each ResBlock's second conv, attention projections and conv_out.
 */
void unet_init_params(const struct unet *m, float *params, uint64_t seed);

/**
 * Token bucket ids of a caption: ASCII letters lower-cased; words are maximal runs of
 * ASCII letters/digits or bytes >= 0x80; the first UNET_CAPTION_MAX_WORDS words each give
 * fnv1a64(word) % buckets, then each adjacent pair gives fnv1a64(w1 " " w2) % buckets.
 * Writes at most UNET_CAPTION_MAX_TOKENS ids and returns their count (0: null caption).
 */
int unet_caption_tokens(const char *caption, int buckets, uint32_t *ids);

/**
 * Forward pass on B <= max_batch images x [B, in_channels, S, S] (float, CHW) at integer
 * timesteps t[B] in [0, 1000), with captions[B] (NULL or "" entries, or drop[b] != 0,
 * select the null embedding; drop may be NULL). Keeps the activations for backward.
 * Returns PM_OK or PM_ERR_USAGE (batch too large). The prediction is unet_output().
 */
int unet_forward(struct unet *m, const float *params, const float *x, const int *t,
                 const char *const *captions, const unsigned char *drop, int B,
                 struct pm_error *err);

/** The last forward's output [B, in_channels, S, S] (valid until the next forward). */
const float *unet_output(const struct unet *m);

/**
 * Backward of the last forward, given d(loss)/d(output) `dout` [B, in_channels, S, S]:
 * ADDS the parameter gradients into grads (unet_num_params floats; zero it first for a
 * fresh step). params must be the array the forward used.
 */
void unet_backward(struct unet *m, const float *params, float *grads, const float *dout);

#endif
