// diffusion — DDPM schedule, q_sample, MSE, DDIM.
#include "diffusion.h"

#include <math.h>

void diffusion_schedule_init(struct diffusion_schedule *s)
{
    double ab = 1.0;
    for (int t = 0; t < DIFFUSION_STEPS; t++) {
        s->beta[t] = 1e-4 + (0.02 - 1e-4) * (double)t / (double)(DIFFUSION_STEPS - 1);
        ab *= 1.0 - s->beta[t];
        s->alpha_bar[t] = ab;
    }
}

void diffusion_q_sample(const struct diffusion_schedule *s, float *xt, const float *x0,
                        const float *noise, const int *t, int B, size_t n)
{
    for (int b = 0; b < B; b++) {
        float ca = (float)sqrt(s->alpha_bar[t[b]]);
        float cb = (float)sqrt(1.0 - s->alpha_bar[t[b]]);
        const float *x = x0 + (size_t)b * n, *e = noise + (size_t)b * n;
        float *y = xt + (size_t)b * n;
        for (size_t i = 0; i < n; i++)
            y[i] = ca * x[i] + cb * e[i];
    }
}

float diffusion_mse(const float *pred, const float *target, float *grad, size_t count)
{
    double sum = 0.0;
    float scale = 2.0f / (float)count;
    for (size_t i = 0; i < count; i++) {
        float d = pred[i] - target[i];
        sum += (double)d * d;
        if (grad)
            grad[i] = scale * d;
    }
    return (float)(sum / (double)count);
}

void diffusion_ddim_timesteps(int steps, int *ts)
{
    if (steps < 1)
        return;
    if (steps > DIFFUSION_STEPS)
        steps = DIFFUSION_STEPS;
    int stride = DIFFUSION_STEPS / steps;
    for (int i = 0; i < steps; i++)
        ts[i] = (steps - 1 - i) * stride;
}

void diffusion_ddim_step(const struct diffusion_schedule *s, float *x, const float *eps, int t,
                         int t_prev, size_t n)
{
    double ab = s->alpha_bar[t];
    double abp = t_prev >= 0 ? s->alpha_bar[t_prev] : 1.0;
    float sa = (float)sqrt(ab), sb = (float)sqrt(1.0 - ab);
    float spa = (float)sqrt(abp), spb = (float)sqrt(1.0 - abp);
    for (size_t i = 0; i < n; i++) {
        float x0 = (x[i] - sb * eps[i]) / sa;
        x0 = x0 < -1.0f ? -1.0f : (x0 > 1.0f ? 1.0f : x0);
        x[i] = spa * x0 + spb * eps[i];
    }
}

void diffusion_guide(float *out, const float *eps_c, const float *eps_u, float w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = eps_u[i] + w * (eps_c[i] - eps_u[i]);
}
