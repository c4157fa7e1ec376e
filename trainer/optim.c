// optim — AdamW and EMA.
#include "optim.h"

#include <math.h>

void adamw_update(const struct adamw_config *c, float *params, const float *grads, float *m,
                  float *v, const unsigned char *decay_mask, size_t n, uint64_t step)
{
    // the scalar factors in double, as PyTorch computes them in Python floats
    double bc1 = 1.0 - pow((double)c->beta1, (double)step);
    double bc2 = 1.0 - pow((double)c->beta2, (double)step);
    float step_size = (float)((double)c->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = 1.0f - c->lr * c->weight_decay;
    float b1 = c->beta1, b2 = c->beta2;
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (size_t i = 0; i < n; i++) {
        float p = params[i], g = grads[i];
        if (c->weight_decay != 0.0f && (!decay_mask || decay_mask[i]))
            p *= decay;
        float mi = m[i] + (1.0f - b1) * (g - m[i]); // torch: exp_avg.lerp_(grad, 1 - b1)
        float vi = v[i] * b2 + (1.0f - b2) * (g * g);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + c->eps;
        params[i] = p - step_size * (mi / denom);
    }
}

void ema_update(float *ema, const float *params, float decay, size_t n)
{
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (size_t i = 0; i < n; i++)
        ema[i] = decay * ema[i] + (1.0f - decay) * params[i];
}
