// pm_cuda_check — the GPU trainer (trainer/cuda) against the CPU reference (trainer.h).
//
//   pm_cuda_check status           exit 0 if a GPU is usable, 77 (skip) with the reason if not
//   pm_cuda_check grads CONFIG B PREC
//       random weights (init + noise, so no path is zero), explicit inputs: forward output,
//       loss and every parameter's gradient, CPU vs GPU, per tensor (names the layer)
//   pm_cuda_check step CONFIG B PREC
//       one full training step through the random streams (uint8 images, captions, timestep,
//       dropout and noise drawn from the step key): loss, weights, EMA, moments after AdamW
//   pm_cuda_check loss CONFIG B STEPS PREC
//       STEPS steps on the same synthetic data, CPU and GPU: the losses track
//   pm_cuda_check resume CONFIG B STEPS PREC DIR
//       GPU straight STEPS vs STEPS/2 + checkpoint + fresh trainer + resume: fp32 bitwise
//       (bf16 also bitwise: same GPU, deterministic kernels); the GPU checkpoint loads into
//       the CPU trainer and a CPU checkpoint into the GPU, bit for bit
//   pm_cuda_check ranks CONFIG B STEPS PREC
//       2 ranks x B/2 vs 1 rank x B, same global batch: NCCL over 2 GPUs when there are 2,
//       else the two halves on one GPU summed on the host (NCCL itself not exercised)
//   pm_cuda_check bench CONFIG B STEPS PREC
//       images/s of the training step (staging overlapped as in pixelmill train), JSON line
//
// PREC is fp32 or bf16. Every check prints one line "CHECK name PASS|FAIL detail" per item
// and exits 1 if any failed. Tolerances: fp32 relative (max |gpu - cpu| / max |cpu| per
// tensor) <= 1e-5 for outputs and the loss, 1e-4 for gradients (sums of up to 10^6 terms in
// another order); bf16 5e-2 / 1e-1.
#include "gpu_trainer.h"
#include "optim.h"
#include "pm_error.h"
#include "train_rng.h"
#include "trainer.h"
#include "unet.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures;

static void check(const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void check(const char *name, int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("CHECK %-40s %s ", name, ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (!ok)
        failures++;
}

static void die(const char *what, const struct pm_error *err)
{
    fprintf(stderr, "pm_cuda_check: %s: %s\n", what, err->msg);
    exit(2);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// max |a - b| / max |b| over n values (0 when both are all zero)
static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) // NaN counts as a failure
            md = d;
        if (fabs((double)b[i]) > mb)
            mb = fabs((double)b[i]);
    }
    if (md != md)
        return INFINITY;
    return mb > 0 ? md / mb : md;
}

// Weights of two runs that differ only by rounding: Adam moves a weight whose gradient is ~0
// by ~lr * sign(g), and rounding can flip that sign, so (as tests/test_train.py does for
// np 1 vs np 2) every difference must be <= 2 * steps * lr and at most 1 in 10^3 > 1e-5.
static int weights_close(const float *a, const float *b, size_t n, int steps, float lr,
                         double *maxd, double *frac)
{
    size_t off = 0;
    double md = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md))
            md = d;
        off += d > 1e-5;
    }
    *maxd = md;
    *frac = (double)off / (double)n;
    return md <= 2.0 * steps * lr && *frac <= 1e-3;
}

static enum gpu_precision parse_prec(const char *s)
{
    if (!strcmp(s, "fp32"))
        return GPU_PRECISION_FP32;
    if (!strcmp(s, "bf16"))
        return GPU_PRECISION_BF16;
    fprintf(stderr, "precision must be fp32 or bf16\n");
    exit(2);
}

static void options(struct trainer_options *o, const char *config, int B)
{
    trainer_options_init(o, config);
    o->max_batch = B;
    o->seed = 7;
    o->adamw.lr = 1e-3f;
    o->adamw.weight_decay = 0.01f;
    o->ema_decay = 0.99f;
    o->caption_dropout = 0.25f;
}

static const char *WORDS[] = {"red", "blue", "green", "circle", "square", "on", "a", "background",
                              "yellow", "triangle"};

// Synthetic captions (some empty) and uint8 images, deterministic in (seed, i).
static void synth(const struct unet_config *c, int B, uint64_t seed, uint8_t *img, char **caps)
{
    size_t n = (size_t)c->image_size * c->image_size * c->in_channels;
    struct train_rng r;
    train_rng_seed(&r, seed);
    for (int b = 0; b < B; b++) {
        for (size_t i = 0; i < n; i++)
            img[(size_t)b * n + i] = (uint8_t)(train_rng_next(&r) >> 56);
        int nw = (int)train_rng_below(&r, 6);
        caps[b][0] = 0;
        for (int w = 0; w < nw; w++) {
            strcat(caps[b], WORDS[train_rng_below(&r, 10)]);
            strcat(caps[b], " ");
        }
    }
}

// B uint8 images of img bytes and B caption buffers (filled by synth)
static void alloc_batch(int B, size_t img, uint8_t **u8, char ***caps)
{
    *u8 = malloc((size_t)B * img + 1);
    *caps = malloc((size_t)B * sizeof **caps);
    if (!*u8 || !*caps)
        exit(2);
    for (int b = 0; b < B; b++)
        if (!((*caps)[b] = calloc(1, 256)))
            exit(2);
}

static void free_batch(int B, uint8_t *u8, char **caps)
{
    for (int b = 0; b < B; b++)
        free(caps[b]);
    free(caps);
    free(u8);
}

struct pair {
    struct trainer *cpu;
    struct gpu_trainer *gpu;
    size_t n;
};

static struct pair make_pair(const char *config, int B, enum gpu_precision prec, int perturb)
{
    struct trainer_options o;
    options(&o, config, B);
    struct pair p;
    struct pm_error err = PM_ERROR_INIT;
    if (trainer_create(&o, &p.cpu, &err) != PM_OK)
        die("trainer_create", &err);
    if (gpu_trainer_create(&o, prec, 0, &p.gpu, &err) != PM_OK)
        die("gpu_trainer_create", &err);
    p.n = trainer_num_params(p.cpu);
    float *w = trainer_params(p.cpu);
    float *gw = malloc(p.n * sizeof *gw);
    if (gpu_trainer_download(p.gpu, gw, NULL, NULL, NULL, NULL, &err) != PM_OK)
        die("download", &err);
    check("init weights identical", memcmp(w, gw, p.n * sizeof *w) == 0, "(%zu params)", p.n);
    if (perturb) {
        // random weights everywhere (the DDPM init zeroes several layers, hiding their paths)
        struct train_rng r;
        train_rng_seed(&r, 99);
        float *noise = malloc(p.n * sizeof *noise);
        train_rng_normal_fill(&r, noise, p.n);
        for (size_t i = 0; i < p.n; i++)
            w[i] += 0.05f * noise[i];
        free(noise);
        memcpy(trainer_ema(p.cpu), w, p.n * sizeof *w);
        if (gpu_trainer_upload_params(p.gpu, w, NULL, &err) != PM_OK)
            die("upload", &err);
    }
    free(gw);
    return p;
}

static void free_pair(struct pair *p)
{
    trainer_free(p->cpu);
    gpu_trainer_free(p->gpu);
}

static int cmd_status(void)
{
    char why[256];
    if (!gpu_trainer_available(why, sizeof why)) {
        printf("SKIP no usable GPU: %s\n", why);
        return 77;
    }
    printf("GPU available: %s\n", why);
    return 0;
}

static int cmd_grads(const char *config, int B, enum gpu_precision prec)
{
    struct pair p = make_pair(config, B, prec, 1);
    const struct unet_config *c = unet_get_config(trainer_model(p.cpu));
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    float *x0 = malloc((size_t)B * img * 4), *noise = malloc((size_t)B * img * 4);
    int *ts = malloc((size_t)B * sizeof *ts);
    unsigned char *drop = calloc((size_t)B, 1);
    uint8_t *u8;
    char **caps;
    alloc_batch(B, img, &u8, &caps);
    synth(c, B, 5, u8, caps);
    struct train_rng r;
    train_rng_seed(&r, 11);
    train_rng_normal_fill(&r, x0, (size_t)B * img);
    train_rng_normal_fill(&r, noise, (size_t)B * img);
    for (int b = 0; b < B; b++) {
        x0[b] = x0[b] * 0.5f;
        ts[b] = (int)((b * 397 + 13) % 1000);
        drop[b] = b % 5 == 4;
    }
    ts[0] = 0, ts[B - 1] = 999;
    struct pm_error err = PM_ERROR_INIT;
    float lc = 0, lg = 0;
    if (trainer_compute_gradients_explicit(p.cpu, x0, (const char *const *)caps, ts, noise, drop,
                                           B, &lc, &err) != PM_OK)
        die("cpu gradients", &err);
    if (gpu_trainer_submit_explicit(p.gpu, x0, (const char *const *)caps, ts, noise, drop, B,
                                    &err) != PM_OK ||
        gpu_trainer_compute_gradients(p.gpu, &err) != PM_OK ||
        gpu_trainer_finish_step(p.gpu, &lg, &err) != PM_OK)
        die("gpu gradients", &err);
    double tol_out = prec == GPU_PRECISION_FP32 ? 1e-5 : 5e-2;
    double tol_g = prec == GPU_PRECISION_FP32 ? 1e-4 : 1e-1;
    float *out = malloc((size_t)B * img * 4);
    if (gpu_trainer_download_output(p.gpu, out, &err) != PM_OK)
        die("download output", &err);
    // the CPU model's output is the last forward's (trainer keeps it)
    const float *cout = unet_output(trainer_model(p.cpu));
    double e = rel_err(out, cout, (size_t)B * img);
    check("forward output", e <= tol_out, "rel %.3g (tol %.0e)", e, tol_out);
    double el = fabs((double)lg - lc) / fabs((double)lc);
    check("loss", el <= tol_out, "cpu %.7f gpu %.7f rel %.3g", lc, lg, el);
    float *gg = malloc(p.n * sizeof *gg);
    if (gpu_trainer_download(p.gpu, NULL, gg, NULL, NULL, NULL, &err) != PM_OK)
        die("download grads", &err);
    const float *gc = trainer_grads(p.cpu);
    size_t nt;
    const struct unet_tensor *tab = unet_tensors(trainer_model(p.cpu), &nt);
    double worst = 0;
    const char *worst_name = "";
    int bad = 0;
    for (size_t i = 0; i < nt; i++) {
        double et = rel_err(gg + tab[i].offset, gc + tab[i].offset, tab[i].numel);
        if (!(et <= tol_g)) {
            bad++;
            printf("  gradient %-32s rel %.3g\n", tab[i].name, et);
        }
        if (!(et <= worst)) {
            worst = et;
            worst_name = tab[i].name;
        }
    }
    check("gradients, every tensor", bad == 0, "%d of %zu tensors over %.0e; worst %s %.3g", bad,
          nt, tol_g, worst_name, worst);
    free_batch(B, u8, caps);
    free(x0), free(noise), free(ts), free(drop), free(out), free(gg);
    free_pair(&p);
    return failures ? 1 : 0;
}

// One step on both through the random streams; returns the two losses.
static void both_step(struct pair *p, const uint8_t *u8, char **caps, int B, float *lc, float *lg)
{
    struct pm_error err = PM_ERROR_INIT;
    struct trainer_batch tb = {B, u8, NULL, (const char *const *)caps, 0};
    if (trainer_compute_gradients(p->cpu, &tb, lc, &err) != PM_OK)
        die("cpu step", &err);
    trainer_apply_update(p->cpu);
    if (gpu_trainer_submit(p->gpu, &tb, &err) != PM_OK ||
        gpu_trainer_compute_gradients(p->gpu, &err) != PM_OK ||
        gpu_trainer_apply_update(p->gpu, 1.0f, &err) != PM_OK ||
        gpu_trainer_finish_step(p->gpu, lg, &err) != PM_OK)
        die("gpu step", &err);
}

static int cmd_step(const char *config, int B, enum gpu_precision prec)
{
    struct pair p = make_pair(config, B, prec, 1);
    const struct unet_config *c = unet_get_config(trainer_model(p.cpu));
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    uint8_t *u8;
    char **caps;
    alloc_batch(B, img, &u8, &caps);
    synth(c, B, 3, u8, caps);
    float lc, lg;
    both_step(&p, u8, caps, B, &lc, &lg);
    double tol = prec == GPU_PRECISION_FP32 ? 1e-5 : 5e-2;
    double el = fabs((double)lg - lc) / fabs((double)lc);
    check("step loss (random streams, uint8 input)", el <= tol, "cpu %.7f gpu %.7f rel %.3g", lc,
          lg, el);
    size_t n = p.n;
    float *w = malloc(n * 4), *e = malloc(n * 4), *m = malloc(n * 4), *v = malloc(n * 4);
    struct pm_error err = PM_ERROR_INIT;
    if (gpu_trainer_download(p.gpu, w, NULL, e, m, v, &err) != PM_OK)
        die("download", &err);
    // AdamW and EMA kernels: the CPU's adamw_update/ema_update applied to the GPU's own
    // gradients from the same starting weights must give the GPU's result (comparing with
    // the CPU run's update instead would amplify rounding: Adam's first step is about
    // lr * sign(g), and g ~ 0 can flip sign)
    struct trainer_options o;
    options(&o, config, B);
    struct trainer *ref = NULL;
    if (trainer_create(&o, &ref, &err) != PM_OK)
        die("trainer_create", &err);
    struct train_rng r;
    train_rng_seed(&r, 99);
    float *w0 = trainer_params(ref); // the perturbed init, rebuilt as make_pair does
    float *noise = malloc(n * 4), *gg = malloc(n * 4);
    train_rng_normal_fill(&r, noise, n);
    for (size_t i = 0; i < n; i++)
        w0[i] += 0.05f * noise[i];
    if (gpu_trainer_download(p.gpu, NULL, gg, NULL, NULL, NULL, &err) != PM_OK)
        die("download", &err);
    const float *gc = trainer_grads(p.cpu);
    double eg = rel_err(gg, gc, n);
    check("step gradients (whole vector)", eg <= (prec == GPU_PRECISION_FP32 ? 1e-4 : 1e-1),
          "rel %.3g", eg);
    unsigned char *mask = calloc(n, 1);
    float *wr = malloc(n * 4), *mr = calloc(n, 4), *vr = calloc(n, 4), *er = malloc(n * 4);
    size_t nt;
    const struct unet_tensor *tab = unet_tensors(trainer_model(p.cpu), &nt);
    for (size_t i = 0; i < nt; i++)
        if (tab[i].decay)
            memset(mask + tab[i].offset, 1, tab[i].numel);
    memcpy(wr, w0, n * 4);
    memcpy(er, w0, n * 4);
    adamw_update(&o.adamw, wr, gg, mr, vr, mask, n, 1);
    ema_update(er, wr, o.ema_decay, n);
    // (a few ulps apart at most: nvcc contracts a * b + c into FMAs)
    double eu = rel_err(w, wr, n);
    check("AdamW kernel (weights after the GPU's gradients)", eu <= 1e-6, "rel %.3g", eu);
    double em = rel_err(m, mr, n), ev = rel_err(v, vr, n);
    check("Adam moments", em <= 1e-5 && ev <= 1e-5, "m rel %.3g, v rel %.3g", em, ev);
    double ee = rel_err(e, er, n);
    check("EMA kernel", ee <= 1e-6, "rel %.3g", ee);
    double md, frac;
    weights_close(w, trainer_params(p.cpu), n, 1, o.adamw.lr, &md, &frac);
    printf("  (info) weights vs the CPU step: max diff %.3g, %.2e of them > 1e-5\n", md, frac);
    free(mask), free(wr), free(mr), free(vr), free(er);
    trainer_free(ref);
    free_batch(B, u8, caps);
    free(w), free(e), free(m), free(v), free(noise), free(gg);
    free_pair(&p);
    return failures ? 1 : 0;
}

static int cmd_loss(const char *config, int B, int steps, enum gpu_precision prec)
{
    struct pair p = make_pair(config, B, prec, 0);
    const struct unet_config *c = unet_get_config(trainer_model(p.cpu));
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    uint8_t *u8;
    char **caps;
    alloc_batch(B, img, &u8, &caps);
    double tol = prec == GPU_PRECISION_FP32 ? 2e-3 : 5e-2, worst = 0;
    int worst_step = 0;
    for (int s = 0; s < steps; s++) {
        synth(c, B, 1000 + (uint64_t)(s % 4), u8, caps); // 4 batches, cycled: it can learn
        float lc, lg;
        both_step(&p, u8, caps, B, &lc, &lg);
        double e = fabs((double)lg - lc) / fabs((double)lc);
        if (s < 3 || s == steps - 1 || s % 10 == 9)
            printf("  step %3d cpu %.6f gpu %.6f rel %.2e\n", s + 1, lc, lg, e);
        if (!(e <= worst))
            worst = e, worst_step = s + 1;
    }
    check("loss tracks the CPU", worst <= tol, "%d steps, worst rel %.3g at step %d (tol %.0e)",
          steps, worst, worst_step, tol);
    float *w = malloc(p.n * 4);
    struct pm_error err = PM_ERROR_INIT;
    if (gpu_trainer_download(p.gpu, w, NULL, NULL, NULL, NULL, &err) != PM_OK)
        die("download", &err);
    double md, frac;
    weights_close(w, trainer_params(p.cpu), p.n, steps, 1e-3f, &md, &frac);
    printf("  (info) weights after %d steps vs the CPU: max diff %.3g, %.2e of them > 1e-5\n",
           steps, md, frac);
    free_batch(B, u8, caps);
    free(w);
    free_pair(&p);
    return failures ? 1 : 0;
}

static void gpu_steps(struct gpu_trainer *g, const struct unet_config *c, int B, int from, int to)
{
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    uint8_t *u8;
    char **caps;
    alloc_batch(B, img, &u8, &caps);
    struct pm_error err = PM_ERROR_INIT;
    for (int s = from; s < to; s++) {
        synth(c, B, 2000 + (uint64_t)s, u8, caps);
        struct trainer_batch tb = {B, u8, NULL, (const char *const *)caps, 0};
        if (gpu_trainer_submit(g, &tb, &err) != PM_OK ||
            gpu_trainer_compute_gradients(g, &err) != PM_OK ||
            gpu_trainer_apply_update(g, 1.0f, &err) != PM_OK ||
            gpu_trainer_finish_step(g, NULL, &err) != PM_OK)
            die("gpu step", &err);
    }
    free_batch(B, u8, caps);
}

static int cmd_resume(const char *config, int B, int steps, enum gpu_precision prec,
                      const char *dir)
{
    struct trainer_options o;
    options(&o, config, B);
    struct pm_error err = PM_ERROR_INIT;
    struct gpu_trainer *a = NULL, *b = NULL;
    if (gpu_trainer_create(&o, prec, 0, &a, &err) != PM_OK)
        die("create", &err);
    const struct unet_config *c = unet_get_config(gpu_trainer_model(a));
    size_t n = gpu_trainer_num_params(a);
    gpu_steps(a, c, B, 0, steps);
    // interrupted: half, checkpoint, a fresh trainer ("after the kill") resumes
    if (gpu_trainer_create(&o, prec, 0, &b, &err) != PM_OK)
        die("create", &err);
    gpu_steps(b, c, B, 0, steps / 2);
    unsigned char blob[8] = "loader!";
    if (gpu_trainer_save(b, dir, 2, blob, sizeof blob, &err) != PM_OK)
        die("save", &err);
    gpu_trainer_free(b);
    if (gpu_trainer_create(&o, prec, 0, &b, &err) != PM_OK)
        die("create", &err);
    unsigned char *lb = NULL;
    size_t ll = 0;
    if (gpu_trainer_load(b, dir, &lb, &ll, &err) != PM_OK)
        die("load", &err);
    check("loader blob round trip", ll == sizeof blob && !memcmp(lb, blob, ll), "%zu bytes", ll);
    free(lb);
    gpu_steps(b, c, B, steps / 2, steps);
    float *wa = malloc(n * 4), *wb = malloc(n * 4), *ea = malloc(n * 4), *eb = malloc(n * 4);
    float *ma = malloc(n * 4), *mb = malloc(n * 4);
    if (gpu_trainer_download(a, wa, NULL, ea, ma, NULL, &err) != PM_OK ||
        gpu_trainer_download(b, wb, NULL, eb, mb, NULL, &err) != PM_OK)
        die("download", &err);
    int same = !memcmp(wa, wb, n * 4) && !memcmp(ea, eb, n * 4) && !memcmp(ma, mb, n * 4);
    check("GPU resume == straight run, bitwise", same,
          "%d steps, interrupted at %d (weights rel %.3g)", steps, steps / 2, rel_err(wb, wa, n));
    // the GPU checkpoint on the CPU trainer, and a CPU checkpoint on the GPU
    struct trainer *t = NULL;
    if (trainer_create(&o, &t, &err) != PM_OK)
        die("trainer_create", &err);
    if (trainer_load(t, dir, &lb, &ll, &err) != PM_OK)
        die("cpu load of the GPU checkpoint", &err);
    free(lb);
    float *wmid = malloc(n * 4);
    struct gpu_trainer *h = NULL;
    if (gpu_trainer_create(&o, prec, 0, &h, &err) != PM_OK)
        die("create", &err);
    if (gpu_trainer_load(h, dir, &lb, &ll, &err) != PM_OK)
        die("load", &err);
    free(lb);
    if (gpu_trainer_download(h, wmid, NULL, NULL, NULL, NULL, &err) != PM_OK)
        die("download", &err);
    check("GPU checkpoint loads on the CPU", !memcmp(trainer_params(t), wmid, n * 4) &&
          trainer_step(t) == (uint64_t)(steps / 2), "step %llu",
          (unsigned long long)trainer_step(t));
    char cdir[4096];
    snprintf(cdir, sizeof cdir, "%s/cpu", dir);
    trainer_apply_update(t); // any change, so the two files differ
    if (trainer_save(t, cdir, 1, NULL, 0, &err) != PM_OK)
        die("cpu save", &err);
    if (gpu_trainer_load(h, cdir, &lb, &ll, &err) != PM_OK)
        die("gpu load of the CPU checkpoint", &err);
    free(lb);
    if (gpu_trainer_download(h, wmid, NULL, NULL, NULL, NULL, &err) != PM_OK)
        die("download", &err);
    check("CPU checkpoint loads on the GPU", !memcmp(trainer_params(t), wmid, n * 4) &&
          gpu_trainer_step(h) == trainer_step(t), "step %llu",
          (unsigned long long)gpu_trainer_step(h));
    trainer_free(t);
    gpu_trainer_free(h);
    gpu_trainer_free(a);
    gpu_trainer_free(b);
    free(wa), free(wb), free(ea), free(eb), free(ma), free(mb), free(wmid);
    return failures ? 1 : 0;
}

// ---- ranks

struct rank_arg {
    const char *config;
    int B, steps, rank, world, device;
    enum gpu_precision prec;
    unsigned char id[GPU_TRAINER_NCCL_ID_BYTES];
    float *weights; // out: after all steps
    float *grads;   // out: step 1's gradients after the all-reduce, scaled by 1/world
    int rc;
    char msg[PM_ERROR_MSG_MAX];
};

// One rank: local batch = its half of the same global batch (first_index = rank * B).
static void *rank_main(void *p)
{
    struct rank_arg *ra = p;
    struct trainer_options o;
    options(&o, ra->config, ra->B);
    struct pm_error err = PM_ERROR_INIT;
    struct gpu_trainer *g = NULL;
    int rc = gpu_trainer_create(&o, ra->prec, ra->device, &g, &err);
    if (rc == PM_OK && ra->world > 1)
        rc = gpu_trainer_join(g, ra->id, ra->rank, ra->world, &err);
    int Bg = ra->B * ra->world;
    const struct unet_config *c = rc == PM_OK ? unet_get_config(gpu_trainer_model(g)) : NULL;
    size_t img = c ? (size_t)c->in_channels * c->image_size * c->image_size : 0;
    uint8_t *u8;
    char **caps;
    alloc_batch(Bg, img, &u8, &caps);
    for (int s = 0; rc == PM_OK && s < ra->steps; s++) {
        synth(c, Bg, 3000 + (uint64_t)s, u8, caps);
        size_t off = (size_t)ra->rank * ra->B;
        struct trainer_batch tb = {ra->B, u8 + off * img, NULL,
                                   (const char *const *)caps + off, off};
        rc = gpu_trainer_submit(g, &tb, &err);
        if (rc == PM_OK)
            rc = gpu_trainer_compute_gradients(g, &err);
        if (rc == PM_OK)
            rc = gpu_trainer_allreduce_grads(g, &err);
        if (rc == PM_OK)
            rc = gpu_trainer_apply_update(g, 1.0f / (float)ra->world, &err);
        if (rc == PM_OK)
            rc = gpu_trainer_finish_step(g, NULL, &err);
        if (rc == PM_OK && s == 0) {
            rc = gpu_trainer_download(g, NULL, ra->grads, NULL, NULL, NULL, &err);
            for (size_t i = 0; rc == PM_OK && i < gpu_trainer_num_params(g); i++)
                ra->grads[i] /= (float)ra->world;
        }
    }
    if (rc == PM_OK)
        rc = gpu_trainer_download(g, ra->weights, NULL, NULL, NULL, NULL, &err);
    ra->rc = rc;
    snprintf(ra->msg, sizeof ra->msg, "%s", err.msg);
    free_batch(Bg, u8, caps);
    gpu_trainer_free(g);
    return NULL;
}

static int cmd_ranks(const char *config, int B, int steps, enum gpu_precision prec)
{
    struct trainer_options o;
    options(&o, config, B);
    struct pm_error err = PM_ERROR_INIT;
    struct trainer *t = NULL;
    if (trainer_create(&o, &t, &err) != PM_OK) // only for the parameter count
        die("trainer_create", &err);
    size_t n = trainer_num_params(t);
    trainer_free(t);
    struct rank_arg one = {config, B, steps, 0, 1, 0, prec, {0}, malloc(n * 4), malloc(n * 4),
                           0, ""};
    rank_main(&one);
    if (one.rc != PM_OK) {
        fprintf(stderr, "1 rank: %s\n", one.msg);
        return 2;
    }
    double tol = prec == GPU_PRECISION_FP32 ? 1e-4 : 5e-2;
    if (gpu_trainer_device_count() >= 2) {
        struct rank_arg r[2];
        if (gpu_trainer_nccl_id(r[0].id, &err) != PM_OK)
            die("nccl id", &err);
        pthread_t th[2];
        for (int i = 0; i < 2; i++) {
            struct rank_arg a = {config, B / 2, steps, i, 2, i, prec, {0}, malloc(n * 4),
                                 malloc(n * 4), 0, ""};
            memcpy(a.id, r[0].id, sizeof a.id);
            r[i] = a;
        }
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, rank_main, &r[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        if (r[0].rc || r[1].rc) {
            fprintf(stderr, "2 ranks: %s / %s\n", r[0].msg, r[1].msg);
            return 2;
        }
        double e = rel_err(r[0].grads, one.grads, n);
        check("NCCL 2 ranks (2 GPUs) == 1 rank: gradients", e <= tol, "step 1, rel %.3g", e);
        double md, frac;
        int ok = weights_close(r[0].weights, one.weights, n, steps, 1e-3f, &md, &frac);
        check("NCCL 2 ranks == 1 rank: weights", ok, "%d steps, max diff %.3g, %.2e > 1e-5",
              steps, md, frac);
        check("NCCL ranks agree bitwise", !memcmp(r[0].weights, r[1].weights, n * 4), "%s", "");
        for (int i = 0; i < 2; i++)
            free(r[i].weights), free(r[i].grads);
    } else {
        printf("SKIP NCCL 2 ranks: one GPU (NCCL refuses two ranks on one device); checking the "
               "data-parallel split with host sums instead\n");
        // 2 trainers on one GPU, gradients of the two halves summed on the host, 1 step
        struct trainer_options oh;
        options(&oh, config, B / 2);
        struct gpu_trainer *g[3];
        for (int i = 0; i < 3; i++)
            if (gpu_trainer_create(i == 2 ? &o : &oh, prec, 0, &g[i], &err) != PM_OK)
                die("create", &err);
        const struct unet_config *c = unet_get_config(gpu_trainer_model(g[0]));
        size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
        uint8_t *u8;
        char **caps;
        alloc_batch(B, img, &u8, &caps);
        synth(c, B, 3000, u8, caps);
        float *gs[3];
        for (int i = 0; i < 3; i++) {
            size_t off = i == 2 ? 0 : (size_t)i * (B / 2);
            struct trainer_batch tb = {i == 2 ? B : B / 2, u8 + off * img, NULL,
                                       (const char *const *)caps + off, off};
            gs[i] = malloc(n * 4);
            if (gpu_trainer_submit(g[i], &tb, &err) != PM_OK ||
                gpu_trainer_compute_gradients(g[i], &err) != PM_OK ||
                gpu_trainer_download(g[i], NULL, gs[i], NULL, NULL, NULL, &err) != PM_OK)
                die("gpu step", &err);
        }
        for (size_t k = 0; k < n; k++)
            gs[0][k] = (gs[0][k] + gs[1][k]) * 0.5f;
        double e = rel_err(gs[0], gs[2], n);
        check("2 halves (host sum) == 1 rank gradients", e <= tol, "rel %.3g", e);
        for (int i = 0; i < 3; i++)
            gpu_trainer_free(g[i]), free(gs[i]);
        free_batch(B, u8, caps);
    }
    free(one.weights), free(one.grads);
    return failures ? 1 : 0;
}

static int cmd_bench(const char *config, int B, int steps, enum gpu_precision prec)
{
    struct trainer_options o;
    options(&o, config, B);
    struct pm_error err = PM_ERROR_INIT;
    struct gpu_trainer *g = NULL;
    if (gpu_trainer_create(&o, prec, 0, &g, &err) != PM_OK)
        die("create", &err);
    const struct unet_config *c = unet_get_config(gpu_trainer_model(g));
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    enum { NB = 4 };
    uint8_t *u8[NB];
    char **caps[NB];
    for (int k = 0; k < NB; k++) {
        alloc_batch(B, img, &u8[k], &caps[k]);
        synth(c, B, 4000 + (uint64_t)k, u8[k], caps[k]);
    }
    int warm = 3;
    double t0 = 0;
    struct trainer_batch tb = {B, u8[0], NULL, (const char *const *)caps[0], 0};
    if (gpu_trainer_submit(g, &tb, &err) != PM_OK)
        die("submit", &err);
    float loss = 0;
    for (int s = 0; s < warm + steps; s++) {
        if (s == warm)
            t0 = now();
        if (gpu_trainer_compute_gradients(g, &err) != PM_OK ||
            gpu_trainer_apply_update(g, 1.0f, &err) != PM_OK)
            die("step", &err);
        if (s + 1 < warm + steps) { // staging of the next batch overlaps the step
            struct trainer_batch nb = {B, u8[(s + 1) % NB], NULL,
                                       (const char *const *)caps[(s + 1) % NB], 0};
            if (gpu_trainer_submit(g, &nb, &err) != PM_OK)
                die("submit", &err);
        }
        if (gpu_trainer_finish_step(g, &loss, &err) != PM_OK)
            die("finish", &err);
    }
    double dt = now() - t0;
    printf("{\"config\": \"%s\", \"batch\": %d, \"precision\": \"%s\", \"steps\": %d, "
           "\"seconds\": %.4f, \"images_per_second\": %.1f, \"loss\": %.5f, \"gpu\": \"%s\", "
           "\"device_bytes\": %zu}\n",
           config, B, prec == GPU_PRECISION_FP32 ? "fp32" : "bf16", steps, dt,
           (double)B * steps / dt, loss, gpu_trainer_device_name(g), gpu_trainer_device_bytes(g));
    for (int k = 0; k < NB; k++)
        free_batch(B, u8[k], caps[k]);
    gpu_trainer_free(g);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: pm_cuda_check status|grads|step|loss|resume|ranks|bench ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "status"))
        return cmd_status();
    if (cmd_status() != 0)
        return 77;
    if (!strcmp(cmd, "grads") && argc == 5)
        return cmd_grads(argv[2], atoi(argv[3]), parse_prec(argv[4]));
    if (!strcmp(cmd, "step") && argc == 5)
        return cmd_step(argv[2], atoi(argv[3]), parse_prec(argv[4]));
    if (!strcmp(cmd, "loss") && argc == 6)
        return cmd_loss(argv[2], atoi(argv[3]), atoi(argv[4]), parse_prec(argv[5]));
    if (!strcmp(cmd, "resume") && argc == 7)
        return cmd_resume(argv[2], atoi(argv[3]), atoi(argv[4]), parse_prec(argv[5]), argv[6]);
    if (!strcmp(cmd, "ranks") && argc == 6)
        return cmd_ranks(argv[2], atoi(argv[3]), atoi(argv[4]), parse_prec(argv[5]));
    if (!strcmp(cmd, "bench") && argc == 6)
        return cmd_bench(argv[2], atoi(argv[3]), atoi(argv[4]), parse_prec(argv[5]));
    fprintf(stderr, "pm_cuda_check: bad arguments (see the comment at the top of the source)\n");
    return 2;
}
