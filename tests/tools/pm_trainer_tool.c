// pm_trainer_tool — helpers around the trainer library for parity checks and benchmarks.
//
//   pm_trainer_tool params
//       prints the parameter count of each config
//   pm_trainer_tool ckpt-forward OUTDIR [CONFIG [STEPS]]
//       trains STEPS (default 2) steps of CONFIG (default tiny-32) on a synthetic batch,
//       saves a checkpoint to OUTDIR/ckpt, runs one forward pass on a fixed input and writes
//       input and output to OUTDIR/forward.bin, for bench/train-ref/unet_ref.py
//       check-checkpoint OUTDIR (PyTorch loads the safetensors and must give the same output)
//   pm_trainer_tool bench CONFIG BATCH STEPS
//       times STEPS training steps (forward, backward, AdamW, EMA) after one warm-up step and
//       prints one JSON line with images per second
#include "pm_error.h"
#include "train_rng.h"
#include "trainer.h"
#include "unet.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define FORWARD_MAGIC 0x46444D50
static const char *CAPTIONS[4] = {"a photo of a red fox in the snow", "", "Two CATS, sleeping.",
                                  "night sky over the mountains"};

static double clock_s(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static struct trainer *make(const char *config, int batch, struct pm_error *err)
{
    struct trainer_options o;
    trainer_options_init(&o, config);
    o.max_batch = batch;
    o.seed = 1;
    o.adamw.lr = 1e-3f;
    struct trainer *t = NULL;
    if (trainer_create(&o, &t, err) != PM_OK)
        return NULL;
    return t;
}

static uint8_t *synthetic_images(const struct unet_config *c, int B)
{
    size_t n = (size_t)B * c->image_size * c->image_size * c->in_channels;
    uint8_t *img = malloc(n);
    for (size_t i = 0; i < n; i++)
        img[i] = (uint8_t)((i * 2654435761u) >> 24);
    return img;
}

static int ckpt_forward(int argc, char **argv)
{
    const char *out = argv[2];
    const char *config = argc > 3 ? argv[3] : "tiny-32";
    int steps = argc > 4 ? atoi(argv[4]) : 2;
    struct pm_error err = PM_ERROR_INIT;
    int B = 4;
    struct trainer *t = make(config, B, &err);
    if (!t) {
        fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
        return 1;
    }
    const struct unet_config *c = unet_get_config(trainer_model(t));
    uint8_t *img = synthetic_images(c, B);
    for (int s = 0; s < steps; s++) {
        struct trainer_batch b = {.B = B, .images_u8 = img, .captions = CAPTIONS};
        float loss;
        if (trainer_compute_gradients(t, &b, &loss, &err) != PM_OK) {
            fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
            return 1;
        }
        trainer_apply_update(t);
        printf("step %d loss %.6f\n", s + 1, loss);
    }
    char path[4096];
    mkdir(out, 0777);
    snprintf(path, sizeof(path), "%s/ckpt", out);
    if (trainer_save(t, path, 1, NULL, 0, &err) != PM_OK) {
        fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
        return 1;
    }
    size_t n = (size_t)B * c->in_channels * c->image_size * c->image_size;
    float *x = malloc(n * sizeof(float));
    struct train_rng r;
    train_rng_seed(&r, 77);
    train_rng_normal_fill(&r, x, n);
    int ts[4] = {5, 250, 600, 999};
    struct unet *m = (struct unet *)trainer_model(t);
    if (unet_forward(m, trainer_params(t), x, ts, CAPTIONS, NULL, B, &err) != PM_OK) {
        fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/forward.bin", out);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    int32_t hdr[5] = {FORWARD_MAGIC, 1, B, c->in_channels, c->image_size};
    fwrite(hdr, 4, 5, f);
    char name[24] = {0};
    memcpy(name, c->name, sizeof(name));
    fwrite(name, 1, 24, f);
    fwrite(ts, 4, (size_t)B, f);
    for (int b = 0; b < B; b++) {
        char cap[128] = {0};
        snprintf(cap, sizeof(cap), "%s", CAPTIONS[b]);
        fwrite(cap, 1, 128, f);
    }
    fwrite(x, 4, n, f);
    fwrite(unet_output(m), 4, n, f);
    if (fclose(f) != 0) {
        perror(path);
        return 1;
    }
    printf("wrote %s/ckpt and %s (config %s, step %llu)\n", out, path, c->name,
           (unsigned long long)trainer_step(t));
    free(x);
    free(img);
    trainer_free(t);
    return 0;
}

static int bench(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    const char *config = argv[2];
    int B = atoi(argv[3]), steps = atoi(argv[4]);
    struct pm_error err = PM_ERROR_INIT;
    struct trainer *t = make(config, B, &err);
    if (!t) {
        fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
        return 1;
    }
    const struct unet_config *c = unet_get_config(trainer_model(t));
    uint8_t *img = synthetic_images(c, B);
    const char **caps = malloc((size_t)B * sizeof(char *));
    for (int b = 0; b < B; b++)
        caps[b] = CAPTIONS[b % 4];
    double t0 = 0, c0 = 0;
    float loss = 0;
    for (int s = 0; s <= steps; s++) {
        if (s == 1) { // step 0 is warm-up
            t0 = now();
            c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        }
        struct trainer_batch b = {.B = B, .images_u8 = img, .captions = caps};
        if (trainer_compute_gradients(t, &b, &loss, &err) != PM_OK) {
            fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
            return 1;
        }
        trainer_apply_update(t);
    }
    double dt = now() - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("{\"impl\": \"c\", \"config\": \"%s\", \"batch\": %d, \"steps\": %d, \"threads\": %d, "
           "\"params\": %zu, \"sec_per_step\": %.4f, \"img_per_s\": %.3f, "
           "\"cpu_sec_per_step\": %.4f, \"img_per_cpu_s\": %.3f, \"loss\": %.5f}\n",
           config, B, steps, omp_get_max_threads(), trainer_num_params(t), dt / steps,
           B * steps / dt, dc / steps, B * steps / dc, loss);
    free(img);
    free(caps);
    trainer_free(t);
    return 0;
}

static int params(void)
{
    const char *names[] = {"tiny-32", "small-64", "test-16"};
    for (int i = 0; i < 3; i++) {
        struct unet_config c;
        struct unet *m = NULL;
        struct pm_error err = PM_ERROR_INIT;
        if (unet_config_get(names[i], &c, &err) != PM_OK || unet_create(&c, 1, &m, &err) != PM_OK) {
            fprintf(stderr, "pm_trainer_tool: %s\n", err.msg);
            return 1;
        }
        const struct unet_tensor *t = unet_find_tensor(m, "cap.table");
        printf("%-9s %10zu parameters (%zu without the caption table), %.1f MB activations per "
               "image\n",
               names[i], unet_num_params(m), unet_num_params(m) - t->numel,
               unet_activation_bytes(m) / 1e6);
        unet_free(m);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "params") == 0)
        return params();
    if (argc >= 3 && strcmp(argv[1], "ckpt-forward") == 0)
        return ckpt_forward(argc, argv);
    if (argc >= 5 && strcmp(argv[1], "bench") == 0)
        return bench(argc, argv);
    fprintf(stderr, "usage: pm_trainer_tool params\n"
                    "       pm_trainer_tool ckpt-forward OUTDIR [CONFIG [STEPS]]\n"
                    "       pm_trainer_tool bench CONFIG BATCH STEPS\n");
    return 2;
}
