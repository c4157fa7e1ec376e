/**
 * optim — AdamW (decoupled weight decay, bias correction) and an exponential moving
 * average of the weights, over flat fp32 arrays. The update is written exactly as
 * torch.optim.AdamW (foreach=False) computes it, so the two agree to rounding:
 *   p -= lr * wd * p                      (only where the decay mask is set)
 *   m = m + (1 - b1) (g - m);  v = b2 v + (1 - b2) g^2
 *   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * Element-wise and deterministic; OpenMP over elements.
 */
#ifndef PM_OPTIM_H
#define PM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

/** AdamW hyper-parameters. */
struct adamw_config {
    float lr, beta1, beta2, eps, weight_decay;
};

/** Defaults: lr 2e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0.0. */
#define ADAMW_CONFIG_DEFAULT                                                                       \
    {                                                                                              \
        2e-4f, 0.9f, 0.999f, 1e-8f, 0.0f                                                           \
    }

/**
 * One AdamW step `step` (1-based, after this update) over n parameters. decay_mask[i]
 * (may be NULL: decay everywhere) selects where weight decay applies.
 */
void adamw_update(const struct adamw_config *c, float *params, const float *grads, float *m,
                  float *v, const unsigned char *decay_mask, size_t n, uint64_t step);

/** ema = decay * ema + (1 - decay) * params, n floats. */
void ema_update(float *ema, const float *params, float decay, size_t n);

#endif
