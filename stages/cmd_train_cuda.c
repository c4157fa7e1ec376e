/*
 * pixelmill train --device cuda — the training loop of cmd_train.c on GPUs (gpu_trainer.h).
 *
 * One GPU per rank (the node-local rank picks the device). Step i: the GPU computes the
 * gradients of batch i while the host fetches batch i+1 from the loader and stages it
 * (pinned ring buffer, copy stream); NCCL sums the gradients over ranks; AdamW + EMA run on
 * the GPU; then the host waits for the step, gathers the loss and agrees on stop signals
 * exactly as the CPU loop does. Checkpoints are the CPU format, with the loader state of
 * the batches the saved steps consumed (a staged, unconsumed batch is not counted), so a
 * resume on the CPU or the GPU continues the same data order.
 */
#include "cmd_train.h"
#include "commands.h"
#include "gpu_trainer.h"
#include "loader.h"
#include "metrics.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "pm_signal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cuda_loop {
    const struct train_args *a;
    const struct pm_mpi *mpi;
    struct loader *l;
    struct gpu_trainer *g;
    FILE *keys;
    double fetch_s; // seconds the loop spent in loader_next + staging
    // --log-keys lines of the staged batch and of the batch in flight: written only once
    // its step is done, so a stop never logs a batch that was staged but not trained on
    char *staged_keys, *current_keys;
    size_t staged_len, current_len, staged_cap, current_cap;
};

static void keys_append(struct cuda_loop *c, const char *line)
{
    size_t n = strlen(line);
    if (c->staged_len + n + 1 > c->staged_cap) {
        size_t cap = 2 * (c->staged_len + n + 1) + 4096;
        char *p = realloc(c->staged_keys, cap);
        if (!p) {
            pm_log_error("--log-keys: out of memory");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        c->staged_keys = p;
        c->staged_cap = cap;
    }
    memcpy(c->staged_keys + c->staged_len, line, n + 1);
    c->staged_len += n;
}

// The staged batch becomes the one in flight.
static void keys_rotate(struct cuda_loop *c)
{
    char *p = c->current_keys;
    size_t cap = c->current_cap;
    c->current_keys = c->staged_keys, c->current_len = c->staged_len;
    c->current_cap = c->staged_cap;
    c->staged_keys = p, c->staged_cap = cap, c->staged_len = 0;
}

static void keys_write_current(struct cuda_loop *c)
{
    if (!c->keys || !c->current_len)
        return;
    fwrite(c->current_keys, 1, c->current_len, c->keys);
    fflush(c->keys);
    c->current_len = 0;
}

// Fetch the next local batch and stage it for step `step` (1-based, for --log-keys).
static int fetch_and_stage(struct cuda_loop *c, uint64_t step, struct pm_error *err)
{
    double t0 = train_now_s();
    struct loader_batch b;
    int rc = loader_next(c->l, &b, err);
    if (rc == PM_OK) {
        struct trainer_batch tb = {b.B, b.images, NULL, b.captions, b.first_index};
        rc = gpu_trainer_submit(c->g, &tb, err);
    }
    if (rc == PM_OK && c->keys) {
        char line[4200];
        for (int j = 0; j < b.B; j++) {
            snprintf(line, sizeof line, "%llu %llu %.4000s\n", (unsigned long long)step,
                     (unsigned long long)(b.position + b.first_index + (uint64_t)j), b.keys[j]);
            keys_append(c, line);
        }
    }
    c->fetch_s += train_now_s() - t0;
    return rc;
}

static int save(struct cuda_loop *c, const struct loader_state *st)
{
    struct pm_error err = PM_ERROR_INIT;
    int rc = PM_OK;
    if (c->mpi->rank == 0) {
        unsigned char blob[LOADER_STATE_BYTES];
        loader_state_encode(st, blob);
        rc = gpu_trainer_save(c->g, c->a->ckdir, c->a->keep, blob, sizeof blob, &err);
        if (rc != PM_OK)
            pm_log_error("checkpoint: %s", err.msg);
    }
    return pm_mpi_worst(rc);
}

// Node-local rank (ranks sharing this machine), for the choice of GPU.
static int local_rank(int *local_size)
{
    MPI_Comm node;
    int r = 0, n = 1;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(node, &r);
        MPI_Comm_size(node, &n);
        MPI_Comm_free(&node);
    }
    *local_size = n;
    return r;
}

int cmd_train_cuda(const struct train_args *a, const struct pm_mpi *mpi)
{
    struct pm_error err = PM_ERROR_INIT;
    enum gpu_precision prec = GPU_PRECISION_BF16;
    if (a->precision && !strcmp(a->precision, "fp32"))
        prec = GPU_PRECISION_FP32;
    else if (a->precision && strcmp(a->precision, "bf16") != 0) {
        pm_log_error("--precision: expected bf16 or fp32, got '%s'", a->precision);
        return PM_EXIT_USAGE;
    }
    char why[256];
    if (!gpu_trainer_available(why, sizeof why)) {
        pm_log_error("--device cuda: %s (CUDA trainer unavailable; use --device cpu)", why);
        return PM_EXIT_USAGE;
    }
    if (a->eval_data) {
        pm_log_error("--eval-data is not available with --device cuda yet; evaluate the "
                     "checkpoint with --device cpu --steps <same> --resume auto");
        return PM_EXIT_USAGE;
    }
    if (a->batch % mpi->size != 0) {
        pm_log_error("--batch-size %lld is not divisible by the %d ranks", a->batch, mpi->size);
        return PM_EXIT_USAGE;
    }
    struct unet_config cfg;
    if (unet_config_get(a->model, &cfg, &err) != PM_OK) {
        pm_log_error("--model: %s", err.msg);
        return PM_EXIT_USAGE;
    }
    int nlocal = 1, lr = local_rank(&nlocal);
    int ndev = gpu_trainer_device_count();
    int rc = PM_OK;
    if (ndev > 0 && nlocal > ndev)
        rc = pm_error_set(&err, PM_ERR_USAGE,
                          "%d ranks on this node but %d GPU(s): --device cuda needs one GPU "
                          "per rank (NCCL refuses two ranks on one device)",
                          nlocal, ndev);

    struct trainer_options to;
    trainer_options_init(&to, a->model);
    to.max_batch = (int)(a->batch / mpi->size);
    to.seed = a->seed;
    to.adamw.lr = (float)a->lr;
    to.adamw.weight_decay = (float)a->wd;
    to.ema_decay = (float)a->ema;
    struct loader_options lo;
    loader_options_init(&lo);
    lo.data = a->data;
    lo.image_size = cfg.image_size;
    lo.global_batch = (int)a->batch;
    lo.rank = mpi->rank;
    lo.world = mpi->size;
    lo.threads = a->loader_threads;
    lo.seed = a->seed;

    struct cuda_loop c;
    memset(&c, 0, sizeof c);
    c.a = a;
    c.mpi = mpi;
    struct metrics m = METRICS_INIT;
    int exit_code = PM_EXIT_FAILED;
    if (rc == PM_OK)
        rc = gpu_trainer_create(&to, prec, ndev > 0 ? lr % ndev : 0, &c.g, &err);
    if (rc == PM_OK)
        rc = loader_open(&lo, &c.l, &err);
    if (pm_mpi_worst(rc) != 0) {
        if (rc != PM_OK)
            pm_log_error("%s", err.msg);
        exit_code = pm_exit_from_status(rc != PM_OK ? rc : PM_ERR_IO);
        goto done;
    }
    if (mpi->size > 1) {
        unsigned char id[GPU_TRAINER_NCCL_ID_BYTES] = {0};
        if (mpi->rank == 0)
            rc = gpu_trainer_nccl_id(id, &err);
        if (pm_mpi_worst(rc) == 0) {
            MPI_CHECK(MPI_Bcast(id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
            rc = gpu_trainer_join(c.g, id, mpi->rank, mpi->size, &err);
        }
        if (pm_mpi_worst(rc) != 0) {
            if (rc != PM_OK)
                pm_log_error("NCCL: %s", err.msg);
            goto done;
        }
    }
    if (a->resume) {
        unsigned char *blob = NULL;
        size_t blen = 0;
        rc = gpu_trainer_load(c.g, a->ckdir, &blob, &blen, &err);
        if (rc == PM_ERR_NOT_FOUND) {
            rc = PM_OK;
        } else if (rc == PM_OK) {
            struct loader_state st;
            rc = loader_state_decode(blob, blen, &st, &err);
            if (rc == PM_OK)
                rc = loader_seek(c.l, &st, &err);
            if (rc == PM_OK && mpi->rank == 0)
                pm_log_info("resumed from %s at step %llu", a->ckdir,
                            (unsigned long long)gpu_trainer_step(c.g));
        }
        free(blob);
        if (pm_mpi_worst(rc) != 0) {
            if (rc != PM_OK)
                pm_log_error("resume: %s", err.msg);
            goto done;
        }
    }
    if (a->log_keys) {
        char path[4096];
        snprintf(path, sizeof path, "%s.rank%d", a->log_keys, mpi->rank);
        if (!(c.keys = fopen(path, "a"))) {
            pm_log_error("--log-keys: cannot open %s", path);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    if (mpi->rank == 0)
        pm_log_info("train %s on %s with --device cuda (%s, %s): %llu samples, %zu parameters, "
                    "global batch %lld on %d ranks, %.2f GiB of GPU memory, steps %llu -> %lld",
                    a->model, a->data, gpu_trainer_device_name(c.g),
                    prec == GPU_PRECISION_FP32 ? "fp32" : "bf16",
                    (unsigned long long)loader_num_samples(c.l), gpu_trainer_num_params(c.g),
                    a->batch, mpi->size, (double)gpu_trainer_device_bytes(c.g) / (1u << 30),
                    (unsigned long long)gpu_trainer_step(c.g), a->steps);

    uint64_t images = 0;
    bool stopped = false;
    float *losses = malloc((size_t)mpi->size * sizeof *losses);
    if (!losses) {
        pm_log_error("out of memory");
        goto done;
    }
    // the state to checkpoint after a step: the loader as it was before the next fetch
    struct loader_state st_step;
    loader_get_state(c.l, &st_step);
    if ((long long)gpu_trainer_step(c.g) < a->steps)
        rc = fetch_and_stage(&c, gpu_trainer_step(c.g) + 1, &err);
    double wait_total = 0;
    while ((long long)gpu_trainer_step(c.g) < a->steps) {
        double t0 = train_now_s();
        struct loader_stats ls0, ls1;
        loader_get_stats(c.l, &ls0);
        double fetch0 = c.fetch_s;
        float loss = 0;
        keys_rotate(&c);
        if (rc == PM_OK)
            rc = gpu_trainer_compute_gradients(c.g, &err);
        if (rc == PM_OK)
            rc = gpu_trainer_allreduce_grads(c.g, &err);
        if (rc == PM_OK)
            rc = gpu_trainer_apply_update(c.g, 1.0f / (float)mpi->size, &err);
        uint64_t step = gpu_trainer_step(c.g);
        loader_get_state(c.l, &st_step);
        // the next batch is fetched and staged while the GPU works on this step
        if (rc == PM_OK && (long long)step < a->steps)
            rc = fetch_and_stage(&c, step + 1, &err);
        double gpu_wait0 = train_now_s();
        if (rc == PM_OK)
            rc = gpu_trainer_finish_step(c.g, &loss, &err);
        double gpu_wait = train_now_s() - gpu_wait0;
        if (pm_mpi_worst(rc) != 0) {
            if (rc != PM_OK)
                pm_log_error("step %llu: %s", (unsigned long long)step, err.msg);
            goto done_losses;
        }
        keys_write_current(&c);
        // data_wait as on the CPU: the fraction of the step loader_next() blocked for
        // decoded data. Here that happens while the GPU computes, so it costs GPU time only
        // when host_fetch exceeds the GPU's step (then gpu_wait is ~0).
        loader_get_stats(c.l, &ls1);
        double loader_wait = ls1.wait_s - ls0.wait_s;
        wait_total += loader_wait;
        char extra[96];
        snprintf(extra, sizeof extra, " host_fetch_ms %.2f gpu_wait_ms %.2f",
                 1e3 * (c.fetch_s - fetch0), 1e3 * gpu_wait);
        struct train_step s = {.step = step,
                               .loss = loss,
                               .t0 = t0,
                               .wait_s = loader_wait,
                               .wait_total = wait_total,
                               .corrupt = ls1.corrupt,
                               .extra = extra};
        enum train_next next = train_step_end(a, mpi, &s, losses, &m, &images);
        if (next != TRAIN_GO && save(&c, &st_step) != 0)
            goto done_losses;
        if (next == TRAIN_SAVE_STOP) {
            stopped = true;
            break;
        }
    }
    exit_code = stopped ? train_stopped(mpi, gpu_trainer_step(c.g)) : PM_EXIT_OK;
done_losses:
    free(losses);
done:
    if (c.keys)
        fclose(c.keys);
    free(c.staged_keys);
    free(c.current_keys);
    metrics_release(&m);
    loader_free(c.l);
    gpu_trainer_free(c.g);
    return exit_code;
}
