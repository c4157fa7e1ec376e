/**
 * diffusion — the DDPM noise schedule, the training objective and DDIM sampling.
 *
 * Schedule: T = 1000 steps, beta_t linear from 1e-4 to 0.02 (t = 0..999), alpha_bar_t =
 * prod_{s<=t} (1 - beta_s), computed in double. Training (epsilon prediction):
 * x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, loss = mean((eps_theta(x_t, t,
 * c) - eps)^2) over every element. Sampling: DDIM with eta = 0 on an evenly spaced subset
 * of timesteps, classifier-free guidance eps = eps_u + w (eps_c - eps_u), x_0 prediction
 * clipped to [-1, 1]. All functions are pure (no hidden state) and thread-safe.
 */
#ifndef PM_DIFFUSION_H
#define PM_DIFFUSION_H

#include <stddef.h>

#define DIFFUSION_STEPS 1000

/** The schedule tables (double precision). */
struct diffusion_schedule {
    double beta[DIFFUSION_STEPS];
    double alpha_bar[DIFFUSION_STEPS];
};

/** Fill the linear schedule: beta_t = 1e-4 + (0.02 - 1e-4) * t / 999. */
void diffusion_schedule_init(struct diffusion_schedule *s);

/**
 * q_sample: xt[b, i] = sqrt(ab[t_b]) * x0[b, i] + sqrt(1 - ab[t_b]) * noise[b, i] for B
 * samples of n floats each (coefficients rounded to float, products in float).
 */
void diffusion_q_sample(const struct diffusion_schedule *s, float *xt, const float *x0,
                        const float *noise, const int *t, int B, size_t n);

/**
 * Mean squared error between pred and target (count floats); the sum is accumulated in
 * double in index order. If grad is not NULL it receives d(loss)/d(pred) =
 * 2 (pred - target) / count.
 */
float diffusion_mse(const float *pred, const float *target, float *grad, size_t count);

/**
 * The DDIM timestep sequence for `steps` sampling steps (1..1000): t_i = (steps-1-i) *
 * (1000 / steps), i = 0..steps-1 (descending, ends at 0). Writes `steps` ints to ts.
 */
void diffusion_ddim_timesteps(int steps, int *ts);

/**
 * One DDIM (eta 0) update for B samples of n floats, in place on x: with eps the
 * (guided) noise prediction at timestep t, x0 = clip((x - sqrt(1-ab_t) eps) / sqrt(ab_t),
 * -1, 1) and x <- sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps, where ab_prev =
 * alpha_bar[t_prev] (t_prev < 0: 1).
 */
void diffusion_ddim_step(const struct diffusion_schedule *s, float *x, const float *eps, int t,
                         int t_prev, size_t n);

/** eps = eps_u + w (eps_c - eps_u), n floats, written into out (may alias either input). */
void diffusion_guide(float *out, const float *eps_c, const float *eps_u, float w, size_t n);

#endif
