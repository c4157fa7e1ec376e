// test_unet — the C trainer step against PyTorch (llm.c's test_gpt2.c, for our UNet).
//
// tests/golden/unet_test16.bin is written by bench/train-ref/unet_ref.py golden: the
// test-16 model's weights, a batch of 4 images + captions with fixed timesteps, noise and
// caption dropout, PyTorch's output, loss and every gradient, then the losses of 5 AdamW
// steps on that batch and the weights and EMA after them. We load the weights into the C
// model, run the same computation and compare, printing the error of every tensor.
//
// Tolerances (fp32; the two sides sum in different orders):
//   output, loss:        max |c - ref| <= 1e-4 * max(1, max |ref|)
//   each gradient:       max |c - ref| <= 1e-4 * max |ref| + 1e-8   (relative to the tensor)
//   losses of 5 steps:   |c - ref| <= 1e-4 * |ref|
//   weights, EMA after:  at most 1 in 10^4 weights differ by more than 1e-5, and none by more
//                        than 2 * steps * lr. Adam's update is lr * m / (sqrt(v) + eps), about
//                        lr * sign(g) where |g| is tiny, so a weight whose gradient is ~0 can
//                        move by up to lr per step on one side and not the other; the count
//                        catches systematic differences, the bound catches anything else.
#include "check.h"
#include "pm_error.h"
#include "trainer.h"
#include "unet.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GOLDEN_PATH "tests/golden/unet_test16.bin"
#define GOLDEN_MAGIC 0x504D4755
#define GOLDEN_VERSION 1

struct reader {
    const unsigned char *p;
    size_t len, off;
    int bad;
};

static const void *take(struct reader *r, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->p + r->off;
    r->off += n;
    return p;
}

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

// Max abs error and max |ref| over n floats.
static void compare(const float *a, const float *ref, size_t n, double *err, double *scale)
{
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - ref[i]);
        if (!(d <= e)) // NaN counts as infinitely wrong
            e = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > s)
            s = fabs(ref[i]);
    }
    *err = e;
    *scale = s;
}

// Number of elements farther apart than tol.
static size_t count_far(const float *a, const float *ref, size_t n, double tol)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += !(fabs((double)a[i] - ref[i]) <= tol);
    return k;
}

int main(void)
{
    size_t len;
    unsigned char *buf = read_all(GOLDEN_PATH, &len);
    if (!buf) {
        fprintf(stderr,
                "cannot read %s (run from the repository root; regenerate with "
                "bench/train-ref/unet_ref.py golden)\n",
                GOLDEN_PATH);
        return 1;
    }
    struct reader r = {buf, len, 0, 0};
    const int32_t *hdr = take(&r, 64 * 4);
    const float *fh = take(&r, 8 * 4);
    const char *cfgname = take(&r, 24);
    if (!hdr || hdr[0] != GOLDEN_MAGIC || hdr[1] != GOLDEN_VERSION) {
        fprintf(stderr, "%s: bad magic or version (regenerate the golden file)\n", GOLDEN_PATH);
        return 1;
    }
    char name[25] = {0};
    memcpy(name, cfgname, 24);
    struct unet_config cfg;
    struct pm_error err = PM_ERROR_INIT;
    CHECK(unet_config_get(name, &cfg, &err) == PM_OK);
    // the golden file states the architecture; it must be the one we build
    CHECK(hdr[2] == cfg.image_size && hdr[3] == cfg.in_channels && hdr[4] == cfg.channels);
    CHECK(hdr[5] == cfg.num_levels && hdr[10] == cfg.num_res_blocks);
    CHECK(hdr[11] == cfg.attn_resolution && hdr[12] == cfg.groups);
    CHECK(hdr[13] == cfg.cap_buckets && hdr[14] == cfg.cap_dim);
    for (int i = 0; i < cfg.num_levels; i++)
        CHECK(hdr[6 + i] == cfg.mult[i]);
    int B = hdr[15], ntensors = hdr[16], nsteps = hdr[18];
    size_t np = (size_t)hdr[17];
    if (check_failed || B < 1 || B > 64 || nsteps < 1 || nsteps > 100) {
        fprintf(stderr, "golden header does not match the test-16 config\n");
        return CHECK_DONE();
    }

    struct trainer_options opt;
    trainer_options_init(&opt, name);
    opt.max_batch = B;
    opt.adamw.lr = fh[0], opt.adamw.beta1 = fh[1], opt.adamw.beta2 = fh[2];
    opt.adamw.eps = fh[3], opt.adamw.weight_decay = fh[4];
    opt.ema_decay = fh[5];
    float ref_loss = fh[6];
    struct trainer *t = NULL;
    if (trainer_create(&opt, &t, &err) != PM_OK) {
        fprintf(stderr, "trainer_create: %s\n", err.msg);
        return 1;
    }
    const struct unet *m = trainer_model(t);
    CHECK(unet_num_params(m) == np);
    size_t nt;
    const struct unet_tensor *tab = unet_tensors(m, &nt);
    CHECK(nt == (size_t)ntensors);

    // golden tensor order -> C offsets
    size_t *goff = calloc((size_t)ntensors, sizeof(size_t));
    const struct unet_tensor **ct = calloc((size_t)ntensors, sizeof(*ct));
    size_t pos = 0;
    for (int i = 0; i < ntensors; i++) {
        const char *gname = take(&r, 64);
        const int64_t *numel = take(&r, 8);
        if (!gname || !numel)
            break;
        char nm[65] = {0};
        memcpy(nm, gname, 64);
        ct[i] = unet_find_tensor(m, nm);
        if (!ct[i] || (int64_t)ct[i]->numel != *numel) {
            fprintf(stderr, "golden tensor '%s' (%lld) has no C counterpart of that size\n", nm,
                    (long long)*numel);
            check_failed++;
        }
        goff[i] = pos;
        pos += (size_t)*numel;
    }
    CHECK(pos == np);
    const float *g_init = take(&r, np * 4);
    const uint8_t *g_images = take(&r, (size_t)B * cfg.image_size * cfg.image_size * 3);
    const char *g_caps = take(&r, (size_t)B * 128);
    const int32_t *g_ts = take(&r, (size_t)B * 4);
    const int32_t *g_drop = take(&r, (size_t)B * 4);
    size_t nimg = (size_t)cfg.in_channels * cfg.image_size * cfg.image_size;
    const float *g_noise = take(&r, (size_t)B * nimg * 4);
    const float *g_out = take(&r, (size_t)B * nimg * 4);
    const float *g_grads = take(&r, np * 4);
    const float *g_losses = take(&r, (size_t)nsteps * 4);
    const float *g_after = take(&r, np * 4);
    const float *g_ema = take(&r, np * 4);
    if (r.bad || r.off != r.len || check_failed) {
        fprintf(stderr, "%s: truncated or inconsistent golden file\n", GOLDEN_PATH);
        return CHECK_DONE();
    }

    // reorder golden arrays into the C layout
    float *init = malloc(np * 4), *ref_grads = malloc(np * 4), *ref_after = malloc(np * 4),
          *ref_ema = malloc(np * 4);
    for (int i = 0; i < ntensors; i++) {
        size_t n = ct[i]->numel * 4;
        memcpy(init + ct[i]->offset, g_init + goff[i], n);
        memcpy(ref_grads + ct[i]->offset, g_grads + goff[i], n);
        memcpy(ref_after + ct[i]->offset, g_after + goff[i], n);
        memcpy(ref_ema + ct[i]->offset, g_ema + goff[i], n);
    }
    memcpy(trainer_params(t), init, np * 4);
    memcpy(trainer_ema(t), init, np * 4);

    // inputs: uint8 HWC -> float CHW in [-1, 1]
    int S = cfg.image_size, C = cfg.in_channels;
    float *x0 = malloc((size_t)B * nimg * 4);
    for (int b = 0; b < B; b++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < C; c++)
                    x0[(size_t)b * nimg + ((size_t)c * S + y) * S + x] =
                        (float)g_images[(((size_t)b * S + y) * S + x) * C + c] / 127.5f - 1.0f;
    char caps_buf[64][129];
    const char *caps[64];
    int ts[64];
    unsigned char drop[64];
    for (int b = 0; b < B; b++) {
        memcpy(caps_buf[b], g_caps + (size_t)b * 128, 128);
        caps_buf[b][128] = 0;
        caps[b] = caps_buf[b];
        ts[b] = g_ts[b];
        drop[b] = (unsigned char)g_drop[b];
    }

    // 1. forward output and loss
    float loss;
    CHECK(trainer_compute_gradients_explicit(t, x0, caps, ts, g_noise, drop, B, &loss, &err) ==
          PM_OK);
    double e, s;
    compare(unet_output(m), g_out, (size_t)B * nimg, &e, &s);
    printf("output: max abs err %.3e (max |ref| %.3e)\n", e, s);
    CHECK(e <= 1e-4 * fmax(1.0, s));
    printf("loss: C %.7f  PyTorch %.7f  (abs err %.3e)\n", loss, ref_loss,
           fabs((double)loss - ref_loss));
    CHECK(fabs((double)loss - ref_loss) <= 1e-4 * fmax(1.0, fabs(ref_loss)));

    // 2. every gradient tensor
    int bad_grads = 0;
    double worst = 0.0;
    for (size_t i = 0; i < nt; i++) {
        compare(trainer_grads(t) + tab[i].offset, ref_grads + tab[i].offset, tab[i].numel, &e, &s);
        double rel = e / fmax(s, 1e-30);
        bool ok = e <= 1e-4 * s + 1e-8;
        worst = rel > worst && s > 1e-6 ? rel : worst;
        printf("  grad %-32s max abs err %.3e  max |ref| %.3e  rel %.3e%s\n", tab[i].name, e, s,
               rel, ok ? "" : "  <-- FAIL");
        bad_grads += !ok;
    }
    printf("gradients: %zu tensors, %d outside tolerance, worst rel err %.3e\n", nt, bad_grads,
           worst);
    CHECK(bad_grads == 0);

    // 3. five AdamW steps on the same batch
    for (int k = 0; k < nsteps; k++) {
        if (k > 0)
            CHECK(trainer_compute_gradients_explicit(t, x0, caps, ts, g_noise, drop, B, &loss,
                                                     &err) == PM_OK);
        printf("step %d: loss C %.7f  PyTorch %.7f\n", k, loss, g_losses[k]);
        CHECK(fabs((double)loss - g_losses[k]) <= 1e-4 * fabs(g_losses[k]));
        trainer_apply_update(t);
    }
    CHECK(trainer_step(t) == (uint64_t)nsteps);
    int bad_w = 0;
    size_t far = 0;
    double worst_w = 0.0, worst_e = 0.0;
    for (size_t i = 0; i < nt; i++) {
        compare(trainer_params(t) + tab[i].offset, ref_after + tab[i].offset, tab[i].numel, &e, &s);
        size_t nfar = count_far(trainer_params(t) + tab[i].offset, ref_after + tab[i].offset,
                                tab[i].numel, 1e-5);
        far += nfar;
        bool ok = e <= 2.0 * nsteps * opt.adamw.lr;
        worst_w = e > worst_w ? e : worst_w;
        if (!ok)
            printf("  weights %-32s max abs err %.3e (max |ref| %.3e)  <-- FAIL\n", tab[i].name, e,
                   s);
        bad_w += !ok;
        compare(trainer_ema(t) + tab[i].offset, ref_ema + tab[i].offset, tab[i].numel, &e, &s);
        ok = e <= 2.0 * nsteps * opt.adamw.lr;
        worst_e = e > worst_e ? e : worst_e;
        if (!ok)
            printf("  ema %-32s max abs err %.3e (max |ref| %.3e)  <-- FAIL\n", tab[i].name, e, s);
        bad_w += !ok;
    }
    printf("after %d steps: weights max abs err %.3e, EMA max abs err %.3e; %zu of %zu weights "
           "differ by more than 1e-5\n",
           nsteps, worst_w, worst_e, far, np);
    CHECK(bad_w == 0);
    CHECK(far <= np / 10000);

    free(x0);
    free(init);
    free(ref_grads);
    free(ref_after);
    free(ref_ema);
    free(goff);
    free(ct);
    free(buf);
    trainer_free(t);
    return CHECK_DONE();
}
