// trainer — training state and the step API.
#include "trainer.h"

#include "checkpoint.h"
#include "diffusion.h"
#include "train_rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct trainer {
    struct trainer_options opt;
    struct unet *model;
    size_t n;
    float *params, *grads, *ema, *adam_m, *adam_v;
    unsigned char *decay_mask;
    uint64_t step;
    struct train_rng rng;
    struct diffusion_schedule sched;
    // per-batch buffers (max_batch samples)
    float *x0, *xt, *noise, *dout;
    int *ts;
    unsigned char *drop;
};

void trainer_options_init(struct trainer_options *o, const char *config)
{
    memset(o, 0, sizeof(*o));
    o->config = config;
    o->max_batch = 32;
    o->adamw = (struct adamw_config)ADAMW_CONFIG_DEFAULT;
    o->ema_decay = 0.9999f;
    o->caption_dropout = 0.1f;
}

static size_t image_floats(const struct trainer *t)
{
    const struct unet_config *c = unet_get_config(t->model);
    return (size_t)c->in_channels * c->image_size * c->image_size;
}

int trainer_options_check(const struct trainer_options *o, struct unet_config *cfg,
                          struct pm_error *err)
{
    int rc = PM_OK;
    if (o->model)
        *cfg = *o->model;
    else
        rc = unet_config_get(o->config ? o->config : "", cfg, err);
    if (rc)
        return rc;
    if (!(o->caption_dropout >= 0.0f && o->caption_dropout <= 1.0f) ||
        !(o->ema_decay >= 0.0f && o->ema_decay <= 1.0f))
        return pm_error_set(err, PM_ERR_USAGE, "caption dropout and EMA decay must be in [0,1]");
    return PM_OK;
}

int trainer_create(const struct trainer_options *o, struct trainer **out, struct pm_error *err)
{
    *out = NULL;
    struct unet_config cfg;
    int rc = trainer_options_check(o, &cfg, err);
    if (rc)
        return rc;
    struct trainer *t = calloc(1, sizeof(*t));
    if (!t)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    t->opt = *o;
    rc = unet_create(&cfg, o->max_batch, &t->model, err);
    if (rc) {
        free(t);
        return rc;
    }
    t->n = unet_num_params(t->model);
    size_t bytes = t->n * sizeof(float), per = image_floats(t) * (size_t)o->max_batch;
    t->params = malloc(bytes);
    t->grads = calloc(t->n, sizeof(float));
    t->ema = malloc(bytes);
    t->adam_m = calloc(t->n, sizeof(float));
    t->adam_v = calloc(t->n, sizeof(float));
    t->decay_mask = calloc(t->n, 1);
    t->x0 = malloc(per * sizeof(float));
    t->xt = malloc(per * sizeof(float));
    t->noise = malloc(per * sizeof(float));
    t->dout = malloc(per * sizeof(float));
    t->ts = malloc((size_t)o->max_batch * sizeof(int));
    t->drop = malloc((size_t)o->max_batch);
    if (!t->params || !t->grads || !t->ema || !t->adam_m || !t->adam_v || !t->decay_mask ||
        !t->x0 || !t->xt || !t->noise || !t->dout || !t->ts || !t->drop) {
        trainer_free(t);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory for %zu parameters", t->n);
    }
    size_t nt;
    const struct unet_tensor *tab = unet_tensors(t->model, &nt);
    for (size_t i = 0; i < nt; i++)
        if (tab[i].decay)
            memset(t->decay_mask + tab[i].offset, 1, tab[i].numel);
    unet_init_params(t->model, t->params, o->seed);
    memcpy(t->ema, t->params, bytes);
    trainer_rng_init(&t->rng, o->seed);
    diffusion_schedule_init(&t->sched);
    *out = t;
    return PM_OK;
}

void trainer_free(struct trainer *t)
{
    if (!t)
        return;
    unet_free(t->model);
    free(t->params);
    free(t->grads);
    free(t->ema);
    free(t->adam_m);
    free(t->adam_v);
    free(t->decay_mask);
    free(t->x0);
    free(t->xt);
    free(t->noise);
    free(t->dout);
    free(t->ts);
    free(t->drop);
    free(t);
}

const struct unet *trainer_model(const struct trainer *t)
{
    return t->model;
}

size_t trainer_num_params(const struct trainer *t)
{
    return t->n;
}

float *trainer_params(struct trainer *t)
{
    return t->params;
}

float *trainer_grads(struct trainer *t)
{
    return t->grads;
}

float *trainer_ema(struct trainer *t)
{
    return t->ema;
}

uint64_t trainer_step(const struct trainer *t)
{
    return t->step;
}

int trainer_compute_gradients_explicit(struct trainer *t, const float *x0,
                                       const char *const *captions, const int *ts,
                                       const float *noise, const unsigned char *drop, int B,
                                       float *loss, struct pm_error *err)
{
    if (B < 1 || B > t->opt.max_batch)
        return pm_error_set(err, PM_ERR_USAGE, "batch of %d outside 1..%d", B, t->opt.max_batch);
    for (int b = 0; b < B; b++)
        if (ts[b] < 0 || ts[b] >= DIFFUSION_STEPS)
            return pm_error_set(err, PM_ERR_USAGE, "timestep %d out of range", ts[b]);
    size_t n = image_floats(t);
    diffusion_q_sample(&t->sched, t->xt, x0, noise, ts, B, n);
    int rc = unet_forward(t->model, t->params, t->xt, ts, captions, drop, B, err);
    if (rc)
        return rc;
    float l = diffusion_mse(unet_output(t->model), noise, t->dout, (size_t)B * n);
    memset(t->grads, 0, t->n * sizeof(float));
    unet_backward(t->model, t->params, t->grads, t->dout);
    if (loss)
        *loss = l;
    return PM_OK;
}

// Per-sample stream from a key (a step's, or sampling's seed) and the sample's index.
static void sample_stream(struct train_rng *r, uint64_t key, uint64_t index)
{
    train_rng_seed(r, key ^ (index * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL));
}

void trainer_rng_init(struct train_rng *rng, uint64_t seed)
{
    // the training stream is independent of the init stream
    train_rng_seed(rng, seed ^ 0x747261696e696e67ULL);
}

uint64_t trainer_step_key(const struct train_rng *rng, int ahead)
{
    struct train_rng k = *rng;
    for (int i = 0; i < ahead; i++)
        train_rng_next(&k);
    return train_rng_next(&k);
}

void trainer_sample_draw(uint64_t key, uint64_t index, float caption_dropout, struct train_rng *r,
                         int *t, unsigned char *drop)
{
    sample_stream(r, key, index);
    *t = (int)train_rng_below(r, DIFFUSION_STEPS);
    *drop = train_rng_uniform(r) < (double)caption_dropout;
}

int trainer_compute_gradients(struct trainer *t, const struct trainer_batch *batch, float *loss,
                              struct pm_error *err)
{
    int B = batch->B;
    if (B < 1 || B > t->opt.max_batch)
        return pm_error_set(err, PM_ERR_USAGE, "batch of %d outside 1..%d", B, t->opt.max_batch);
    if ((batch->images_u8 == NULL) == (batch->images_f32 == NULL))
        return pm_error_set(err, PM_ERR_USAGE, "batch needs exactly one of uint8 or float images");
    const struct unet_config *c = unet_get_config(t->model);
    size_t n = image_floats(t), S = (size_t)c->image_size, C = (size_t)c->in_channels;
    if (batch->images_u8) {
        for (int b = 0; b < B; b++)
            for (size_t y = 0; y < S; y++)
                for (size_t x = 0; x < S; x++)
                    for (size_t ch = 0; ch < C; ch++)
                        t->x0[b * n + (ch * S + y) * S + x] =
                            (float)batch->images_u8[b * n + (y * S + x) * C + ch] / 127.5f - 1.0f;
    } else {
        memcpy(t->x0, batch->images_f32, (size_t)B * n * sizeof(float));
    }
    // one key per step from the checkpointed RNG (advanced once per step on every rank)
    uint64_t key = trainer_step_key(&t->rng, 0);
    for (int b = 0; b < B; b++) {
        struct train_rng r;
        trainer_sample_draw(key, batch->first_index + (uint64_t)b, t->opt.caption_dropout, &r,
                            &t->ts[b], &t->drop[b]);
        train_rng_normal_fill(&r, t->noise + (size_t)b * n, n);
    }
    return trainer_compute_gradients_explicit(t, t->x0, batch->captions, t->ts, t->noise, t->drop,
                                              B, loss, err);
}

void trainer_scale_grads(struct trainer *t, float s)
{
    for (size_t i = 0; i < t->n; i++)
        t->grads[i] *= s;
}

void trainer_apply_update(struct trainer *t)
{
    t->step++;
    adamw_update(&t->opt.adamw, t->params, t->grads, t->adam_m, t->adam_v, t->decay_mask, t->n,
                 t->step);
    ema_update(t->ema, t->params, t->opt.ema_decay, t->n);
    train_rng_next(&t->rng); // the key of the step just taken is consumed
}

int trainer_sample(struct trainer *t, const char *const *prompts, int n, float guidance, int steps,
                   uint64_t seed, bool use_ema, uint8_t *out, struct pm_error *err)
{
    if (n < 0 || steps < 1 || steps > DIFFUSION_STEPS)
        return pm_error_set(err, PM_ERR_USAGE, "sample: bad count %d or steps %d", n, steps);
    const struct unet_config *c = unet_get_config(t->model);
    size_t nf = image_floats(t), S = (size_t)c->image_size, C = (size_t)c->in_channels;
    const float *P = use_ema ? t->ema : t->params;
    bool cfg = guidance != 1.0f;
    int per = cfg ? t->opt.max_batch / 2 : t->opt.max_batch;
    if (per < 1)
        return pm_error_set(err, PM_ERR_USAGE, "sample: guidance needs max_batch >= 2");
    int *ts = malloc((size_t)steps * sizeof(int));
    float *x = malloc((size_t)per * nf * sizeof(float));
    float *xin = malloc((size_t)2 * per * nf * sizeof(float));
    float *eps = malloc((size_t)per * nf * sizeof(float));
    int *tb = malloc((size_t)2 * per * sizeof(int));
    const char **caps = malloc((size_t)2 * per * sizeof(char *));
    int rc = PM_OK;
    if (!ts || !x || !xin || !eps || !tb || !caps) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "sample: out of memory");
        goto out;
    }
    diffusion_ddim_timesteps(steps, ts);
    for (int i0 = 0; i0 < n; i0 += per) {
        int k = n - i0 < per ? n - i0 : per;
        for (int i = 0; i < k; i++) {
            struct train_rng r;
            sample_stream(&r, seed, (uint64_t)(i0 + i));
            train_rng_normal_fill(&r, x + (size_t)i * nf, nf);
            caps[i] = prompts ? prompts[i0 + i] : NULL;
            caps[k + i] = NULL;
        }
        int nb = cfg ? 2 * k : k;
        for (int s = 0; s < steps; s++) {
            for (int i = 0; i < nb; i++)
                tb[i] = ts[s];
            memcpy(xin, x, (size_t)k * nf * sizeof(float));
            if (cfg)
                memcpy(xin + (size_t)k * nf, x, (size_t)k * nf * sizeof(float));
            rc = unet_forward(t->model, P, xin, tb, caps, NULL, nb, err);
            if (rc)
                goto out;
            const float *o = unet_output(t->model);
            if (cfg)
                diffusion_guide(eps, o, o + (size_t)k * nf, guidance, (size_t)k * nf);
            else
                memcpy(eps, o, (size_t)k * nf * sizeof(float));
            diffusion_ddim_step(&t->sched, x, eps, ts[s], s + 1 < steps ? ts[s + 1] : -1,
                                (size_t)k * nf);
        }
        for (int i = 0; i < k; i++)
            for (size_t y = 0; y < S; y++)
                for (size_t xx = 0; xx < S; xx++)
                    for (size_t ch = 0; ch < C; ch++) {
                        float v = (x[(size_t)i * nf + (ch * S + y) * S + xx] + 1.0f) * 127.5f;
                        v = v < 0.0f ? 0.0f : (v > 255.0f ? 255.0f : v);
                        out[(size_t)(i0 + i) * nf + (y * S + xx) * C + ch] = (uint8_t)lrintf(v);
                    }
    }
out:
    free(ts);
    free(x);
    free(xin);
    free(eps);
    free(tb);
    free(caps);
    return rc;
}

int trainer_save(struct trainer *t, const char *dir, int keep, const void *loader,
                 size_t loader_len, struct pm_error *err)
{
    struct checkpoint_data d = {
        .model = t->model,
        .params = t->params,
        .ema = t->ema,
        .adam_m = t->adam_m,
        .adam_v = t->adam_v,
        .step = t->step,
        .rng = t->rng,
        .loader = (unsigned char *)loader,
        .loader_len = loader_len,
    };
    return checkpoint_save(dir, &d, keep, err);
}

int trainer_load(struct trainer *t, const char *dir, unsigned char **loader, size_t *loader_len,
                 struct pm_error *err)
{
    *loader = NULL;
    *loader_len = 0;
    size_t bytes = t->n * sizeof(float);
    // load into fresh arrays so that a failure leaves the trainer unchanged
    struct checkpoint_data d = {.model = t->model};
    d.params = malloc(bytes);
    d.ema = malloc(bytes);
    d.adam_m = malloc(bytes);
    d.adam_v = malloc(bytes);
    int rc;
    if (!d.params || !d.ema || !d.adam_m || !d.adam_v)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory loading '%s'", dir);
    else
        rc = checkpoint_load(dir, &d, err);
    if (rc) {
        free(d.params);
        free(d.ema);
        free(d.adam_m);
        free(d.adam_v);
        return rc;
    }
    free(t->params);
    free(t->ema);
    free(t->adam_m);
    free(t->adam_v);
    t->params = d.params;
    t->ema = d.ema;
    t->adam_m = d.adam_m;
    t->adam_v = d.adam_v;
    t->step = d.step;
    t->rng = d.rng;
    *loader = d.loader;
    *loader_len = d.loader_len;
    return PM_OK;
}
