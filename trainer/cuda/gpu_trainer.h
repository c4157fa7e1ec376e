/**
 * gpu_trainer — the trainer's CUDA implementation: the same UNet, loss, AdamW and EMA as
 * the CPU reference (unet.h, trainer.h), on one NVIDIA GPU per process, with NCCL for
 * data-parallel gradient sums. The CPU trainer is the ground truth; pm_cuda_check compares
 * the two (docs/trainer.md, "GPU trainer").
 *
 * Layout and numerics:
 * - Parameters, gradients, AdamW moments and EMA are fp32 arrays on the device with
 *   exactly the CPU layout (the offsets are taken BY NAME from the CPU model's tensor
 *   table, so a checkpoint written here loads on the CPU and back, bit for bit).
 * - Activations are fp32, stored channel-major [C, B, H, W] so that every convolution is
 *   one GEMM (im2col + cuBLAS) over the whole batch.
 * - GPU_PRECISION_FP32: every GEMM in fp32 (CUBLAS_COMPUTE_32F), for checking against the
 *   CPU. GPU_PRECISION_BF16: convolution GEMMs take bf16 operands (im2col writes bf16,
 *   weights are cast each step; fp32 accumulation and outputs), the other GEMMs use TF32.
 * - Every kernel is deterministic (fixed reduction orders, no atomics), and cuBLAS is
 *   deterministic on one GPU model, so a run is reproducible bit for bit on the same GPU
 *   and a resumed run equals an uninterrupted one.
 *
 * Randomness is the CPU trainer's (trainer.h): one key per step from the checkpointed RNG,
 * per-sample streams seeded by (key, global sample index); timestep and caption dropout are
 * drawn on the host, the noise from the same stream on the device.
 *
 * Asynchrony: gpu_trainer_submit() stages a batch (pinned host ring, copy stream) ahead of
 * the step that consumes it; gpu_trainer_compute_gradients(), _allreduce_grads() and
 * _apply_update() only enqueue work; gpu_trainer_finish_step() waits and returns the
 * loss. A handle is used by one thread at a time.
 *
 * When the project is built without CUDA every function exists and fails with
 * PM_ERR_UNSUPPORTED and a message saying why (gpu_trainer_stub.c).
 */
#ifndef PM_GPU_TRAINER_H
#define PM_GPU_TRAINER_H

#include "pm_error.h"
#include "trainer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gpu_precision { GPU_PRECISION_FP32 = 0, GPU_PRECISION_BF16 = 1 };

/** Size of an NCCL unique id (ncclUniqueId), passed between ranks by the caller. */
#define GPU_TRAINER_NCCL_ID_BYTES 128

struct gpu_trainer;

/** Number of visible CUDA devices (0 without CUDA or without a device). */
int gpu_trainer_device_count(void);

/**
 * Whether this build has CUDA and a device is visible: 1 yes, 0 no (why[] says why; it
 * may be NULL). Never fails otherwise.
 */
int gpu_trainer_available(char *why, size_t why_len);

/**
 * Create a trainer on CUDA device `device` (ordinal): weights initialised from o->seed
 * exactly as trainer_create() does (same values), EMA = weights, step 0. Staging ring
 * for batches of up to o->max_batch. Returns PM_OK, PM_ERR_UNSUPPORTED (no CUDA, no
 * device), PM_ERR_NOMEM (device memory), PM_ERR_USAGE or PM_ERR_INTERNAL (CUDA error).
 */
int gpu_trainer_create(const struct trainer_options *o, enum gpu_precision prec, int device,
                       struct gpu_trainer **out, struct pm_error *err);

/** Free (waits for queued work). Accepts NULL. */
void gpu_trainer_free(struct gpu_trainer *g);

/** The host copy of the model description (tensor table, config). */
const struct unet *gpu_trainer_model(const struct gpu_trainer *g);

/** Number of parameters. */
size_t gpu_trainer_num_params(const struct gpu_trainer *g);

/** Optimizer steps applied (counting queued ones). */
uint64_t gpu_trainer_step(const struct gpu_trainer *g);

/** Bytes of device memory the trainer holds. */
size_t gpu_trainer_device_bytes(const struct gpu_trainer *g);

/**
 * Stage a local batch (as trainer_compute_gradients() takes it) for the next step not yet
 * staged: tokenises captions, draws timesteps and dropout, copies to the device on the copy
 * stream. Up to 3 batches may be staged ahead. Returns PM_OK, PM_ERR_USAGE, PM_ERR_INTERNAL.
 */
int gpu_trainer_submit(struct gpu_trainer *g, const struct trainer_batch *b, struct pm_error *err);

/**
 * Stage a batch with explicit randomness (as trainer_compute_gradients_explicit()):
 * x0 and noise [B, C, S, S] fp32, ts[B], drop[B] (may be NULL).
 */
int gpu_trainer_submit_explicit(struct gpu_trainer *g, const float *x0,
                                const char *const *captions, const int *ts, const float *noise,
                                const unsigned char *drop, int B, struct pm_error *err);

/**
 * Enqueue forward + backward of the oldest staged batch: gradients = d(mean loss)/d(params)
 * (overwritten). PM_ERR_USAGE if nothing is staged.
 */
int gpu_trainer_compute_gradients(struct gpu_trainer *g, struct pm_error *err);

/**
 * Join `world` ranks (one process per GPU) into an NCCL communicator. Rank 0 creates the id
 * with gpu_trainer_nccl_id(), the caller broadcasts it (MPI_Bcast). world 1: no-op.
 */
int gpu_trainer_nccl_id(unsigned char id[GPU_TRAINER_NCCL_ID_BYTES], struct pm_error *err);
int gpu_trainer_join(struct gpu_trainer *g, const unsigned char id[GPU_TRAINER_NCCL_ID_BYTES],
                     int rank, int world, struct pm_error *err);

/** Enqueue the NCCL sum of the gradients over the communicator (no-op for one rank). */
int gpu_trainer_allreduce_grads(struct gpu_trainer *g, struct pm_error *err);

/**
 * Enqueue AdamW on grads * grad_scale (1/world after an all-reduce sum), then the EMA;
 * step += 1 and the RNG advances as on the CPU.
 */
int gpu_trainer_apply_update(struct gpu_trainer *g, float grad_scale, struct pm_error *err);

/** Wait for queued work; *loss (may be NULL) gets the last computed local loss. */
int gpu_trainer_finish_step(struct gpu_trainer *g, float *loss, struct pm_error *err);

/**
 * Copy device state to host arrays (each NULL or unet_num_params floats): weights,
 * gradients, EMA, Adam moments. Waits for queued work.
 */
int gpu_trainer_download(struct gpu_trainer *g, float *params, float *grads, float *ema,
                         float *adam_m, float *adam_v, struct pm_error *err);

/** Replace device weights (and EMA = weights when ema is NULL); moments unchanged. */
int gpu_trainer_upload_params(struct gpu_trainer *g, const float *params, const float *ema,
                              struct pm_error *err);

/** The last forward's output [B, C, S, S] (NCHW, as unet_output()) into out. Waits. */
int gpu_trainer_download_output(struct gpu_trainer *g, float *out, struct pm_error *err);

/** Checkpoint exactly as trainer_save() (same files; resumable by the CPU trainer). */
int gpu_trainer_save(struct gpu_trainer *g, const char *dir, int keep, const void *loader,
                     size_t loader_len, struct pm_error *err);

/** Resume as trainer_load() (a CPU checkpoint loads here). Nothing may be staged. */
int gpu_trainer_load(struct gpu_trainer *g, const char *dir, unsigned char **loader,
                     size_t *loader_len, struct pm_error *err);

/** Device name of the trainer's GPU (static string owned by g). */
const char *gpu_trainer_device_name(const struct gpu_trainer *g);

#endif
