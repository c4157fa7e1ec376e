// gpu_trainer_stub — the GPU trainer's API in a build without CUDA: every entry point fails
// with PM_ERR_UNSUPPORTED and says why (see gpu_trainer.h and CMakeLists.txt).
#include "gpu_trainer.h"

#include <stdio.h>

#ifndef PM_CUDA_DISABLED_REASON
#define PM_CUDA_DISABLED_REASON "built without CUDA"
#endif

static int unsupported(struct pm_error *err)
{
    return pm_error_set(err, PM_ERR_UNSUPPORTED,
                        "--device cuda: this pixelmill was %s; rebuild on a machine with the "
                        "CUDA toolkit (nvcc) or use --device cpu",
                        PM_CUDA_DISABLED_REASON);
}

int gpu_trainer_device_count(void)
{
    return 0;
}

int gpu_trainer_available(char *why, size_t why_len)
{
    if (why && why_len)
        snprintf(why, why_len, "%s", PM_CUDA_DISABLED_REASON);
    return 0;
}

int gpu_trainer_create(const struct trainer_options *o, enum gpu_precision prec, int device,
                       struct gpu_trainer **out, struct pm_error *err)
{
    (void)o, (void)prec, (void)device;
    *out = NULL;
    return unsupported(err);
}

void gpu_trainer_free(struct gpu_trainer *g)
{
    (void)g;
}

const struct unet *gpu_trainer_model(const struct gpu_trainer *g)
{
    (void)g;
    return NULL;
}

size_t gpu_trainer_num_params(const struct gpu_trainer *g)
{
    (void)g;
    return 0;
}

uint64_t gpu_trainer_step(const struct gpu_trainer *g)
{
    (void)g;
    return 0;
}

size_t gpu_trainer_device_bytes(const struct gpu_trainer *g)
{
    (void)g;
    return 0;
}

const char *gpu_trainer_device_name(const struct gpu_trainer *g)
{
    (void)g;
    return "none";
}

int gpu_trainer_submit(struct gpu_trainer *g, const struct trainer_batch *b, struct pm_error *err)
{
    (void)g, (void)b;
    return unsupported(err);
}

int gpu_trainer_submit_explicit(struct gpu_trainer *g, const float *x0,
                                const char *const *captions, const int *ts, const float *noise,
                                const unsigned char *drop, int B, struct pm_error *err)
{
    (void)g, (void)x0, (void)captions, (void)ts, (void)noise, (void)drop, (void)B;
    return unsupported(err);
}

int gpu_trainer_compute_gradients(struct gpu_trainer *g, struct pm_error *err)
{
    (void)g;
    return unsupported(err);
}

int gpu_trainer_nccl_id(unsigned char id[GPU_TRAINER_NCCL_ID_BYTES], struct pm_error *err)
{
    (void)id;
    return unsupported(err);
}

int gpu_trainer_join(struct gpu_trainer *g, const unsigned char id[GPU_TRAINER_NCCL_ID_BYTES],
                     int rank, int world, struct pm_error *err)
{
    (void)g, (void)id, (void)rank, (void)world;
    return unsupported(err);
}

int gpu_trainer_allreduce_grads(struct gpu_trainer *g, struct pm_error *err)
{
    (void)g;
    return unsupported(err);
}

int gpu_trainer_apply_update(struct gpu_trainer *g, float grad_scale, struct pm_error *err)
{
    (void)g, (void)grad_scale;
    return unsupported(err);
}

int gpu_trainer_finish_step(struct gpu_trainer *g, float *loss, struct pm_error *err)
{
    (void)g, (void)loss;
    return unsupported(err);
}

int gpu_trainer_download(struct gpu_trainer *g, float *params, float *grads, float *ema,
                         float *adam_m, float *adam_v, struct pm_error *err)
{
    (void)g, (void)params, (void)grads, (void)ema, (void)adam_m, (void)adam_v;
    return unsupported(err);
}

int gpu_trainer_upload_params(struct gpu_trainer *g, const float *params, const float *ema,
                              struct pm_error *err)
{
    (void)g, (void)params, (void)ema;
    return unsupported(err);
}

int gpu_trainer_download_output(struct gpu_trainer *g, float *out, struct pm_error *err)
{
    (void)g, (void)out;
    return unsupported(err);
}

int gpu_trainer_save(struct gpu_trainer *g, const char *dir, int keep, const void *loader,
                     size_t loader_len, struct pm_error *err)
{
    (void)g, (void)dir, (void)keep, (void)loader, (void)loader_len;
    return unsupported(err);
}

int gpu_trainer_load(struct gpu_trainer *g, const char *dir, unsigned char **loader,
                     size_t *loader_len, struct pm_error *err)
{
    (void)g, (void)dir;
    *loader = NULL;
    *loader_len = 0;
    return unsupported(err);
}
