/*
 * pixelmill train — data-parallel diffusion training on the CPU (the reference trainer).
 *
 * Every rank runs the same model. Step i: the loader hands this rank its B/W samples of
 * the global batch (the same set for any rank count W, see loader.h); the trainer computes
 * the gradient of the mean loss over them; the gradients are summed over ranks in a fixed
 * order (reduce_grads: each rank sums one slice of the vector, contributions added in rank
 * order, then all slices are gathered) and scaled by 1/W, so the update is deterministic
 * for a given W; AdamW + EMA update the weights. After the update all ranks agree on
 * whether a stop signal arrived (all-reduce of the flag): if so, rank 0 writes a
 * checkpoint at the end of that step and every rank exits with status 75.
 */
#include "cmd_train.h"
#include "commands.h"
#include "loader.h"
#include "metrics.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "pm_signal.h"
#include "train_rng.h"
#include "trainer.h"

#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: pixelmill train --data DATASET --model CONFIG --steps N --batch-size B\n"
            "                       --checkpoint-dir DIR [options]\n"
            "\n"
            "Train the pixel-space diffusion UNet on a dataset's images and captions.\n"
            "\n"
            "Options:\n"
            "  --data DATASET        dataset directory or s3:// prefix holding dataset.json\n"
            "                        and its tar shards (jpg/png/webp or raw npy + txt)\n"
            "  --model CONFIG        tiny-32, small-64 or test-16 (16x16, the demo config)\n"
            "  --steps N             train until the optimizer step count is N\n"
            "  --batch-size B        global batch (over all ranks; the rank count divides it)\n"
            "  --lr LR               AdamW learning rate (default 2e-4)\n"
            "  --weight-decay WD     AdamW weight decay (default 0)\n"
            "  --ema-decay D         EMA decay (default 0.9999)\n"
            "  --seed S              weights, noise and data order seed (default 0)\n"
            "  --threads T           compute threads per rank (default: OpenMP's)\n"
            "  --loader-threads T    decoding threads per rank (default 2)\n"
            "  --device cpu|cuda     where to train (default cpu); cuda: one GPU per rank,\n"
            "                        NCCL between ranks (docs/trainer.md, GPU trainer)\n"
            "  --precision P         cuda only: bf16 (default; bf16 convolution GEMMs, TF32\n"
            "                        elsewhere, fp32 weights) or fp32 (matches the CPU)\n"
            "  --checkpoint-dir DIR  where checkpoints go (DIR/step-NNNNNNNN, DIR/latest)\n"
            "  --checkpoint-every N  also checkpoint every N steps (default: only at the end\n"
            "                        and when stopped)\n"
            "  --keep K              keep the newest K checkpoints (default 3)\n"
            "  --resume auto         continue from DIR/latest if there is one\n"
            "  --metrics-file F      Prometheus text file, rewritten atomically every step\n"
            "  --log-every N         print a metrics line every N steps (default 1)\n"
            "  --eval-data DATASET   after training, print the held-out denoising loss\n"
            "                        'eval_loss X' on this dataset (fixed timesteps, noise and\n"
            "                        captions, so runs and checkpoints compare)\n"
            "  --eval-batches K      global batches of --eval-data to evaluate (default 4)\n"
            "  --log-keys PREFIX     debug: append 'step position key' per sample to\n"
            "                        PREFIX.rankR\n"
            "  -h, --help            this help\n"
            "\n"
            "Signals: SIGTERM or SIGUSR1 (forwarded by mpirun) finish the current step, write\n"
            "a checkpoint and exit 75; `--resume auto` continues bit for bit as if never\n"
            "stopped (also on another rank count, the data order being unchanged).\n"
            "\n"
            "Exit status: 0 done, 1 failed, 2 usage error, 75 stopped by a signal (resumable).\n");
}

static int parse_ll(const char *name, const char *v, long long lo, long long *out)
{
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    if (errno || e == v || *e || x < lo) {
        pm_log_error("%s: expected an integer >= %lld, got '%s'", name, lo, v);
        return PM_ERR_USAGE;
    }
    *out = x;
    return PM_OK;
}

static int parse_d(const char *name, const char *v, double *out)
{
    char *e;
    errno = 0;
    double x = strtod(v, &e);
    if (errno || e == v || *e || !(x >= 0)) {
        pm_log_error("%s: expected a non-negative number, got '%s'", name, v);
        return PM_ERR_USAGE;
    }
    *out = x;
    return PM_OK;
}

// PM_OK, PM_ERR_USAGE (printed) or 1 for --help.
static int parse_args(int argc, char **argv, struct train_args *a)
{
    memset(a, 0, sizeof *a);
    a->keep = 3;
    a->loader_threads = 2;
    a->lr = 2e-4;
    a->ema = 0.9999;
    a->log_every = 1;
    a->device = "cpu";
    a->steps = -1;
    a->batch = -1;
    a->eval_batches = 4;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help"))
            return 1;
        if (i + 1 >= argc) {
            pm_log_error("%s: unknown option or missing value; see --help", s);
            return PM_ERR_USAGE;
        }
        const char *v = argv[++i];
        long long x = 0;
        int rc = PM_OK;
        if (!strcmp(s, "--data"))
            a->data = v;
        else if (!strcmp(s, "--model"))
            a->model = v;
        else if (!strcmp(s, "--checkpoint-dir"))
            a->ckdir = v;
        else if (!strcmp(s, "--metrics-file"))
            a->metrics_file = v;
        else if (!strcmp(s, "--log-keys"))
            a->log_keys = v;
        else if (!strcmp(s, "--eval-data"))
            a->eval_data = v;
        else if (!strcmp(s, "--eval-batches"))
            rc = parse_ll(s, v, 1, &a->eval_batches);
        else if (!strcmp(s, "--device"))
            a->device = v;
        else if (!strcmp(s, "--precision"))
            a->precision = v;
        else if (!strcmp(s, "--steps"))
            rc = parse_ll(s, v, 0, &a->steps);
        else if (!strcmp(s, "--batch-size"))
            rc = parse_ll(s, v, 1, &a->batch);
        else if (!strcmp(s, "--checkpoint-every"))
            rc = parse_ll(s, v, 0, &a->every);
        else if (!strcmp(s, "--log-every"))
            rc = parse_ll(s, v, 1, &a->log_every);
        else if (!strcmp(s, "--keep"))
            rc = parse_ll(s, v, 1, &x), a->keep = (int)(x > 1000000 ? 1000000 : x);
        else if (!strcmp(s, "--threads"))
            rc = parse_ll(s, v, 1, &x), a->threads = (int)(x > 1024 ? 1024 : x);
        else if (!strcmp(s, "--loader-threads"))
            rc = parse_ll(s, v, 1, &x), a->loader_threads = (int)(x > 256 ? 256 : x);
        else if (!strcmp(s, "--seed"))
            rc = parse_ll(s, v, 0, &x), a->seed = (unsigned long long)x;
        else if (!strcmp(s, "--lr"))
            rc = parse_d(s, v, &a->lr);
        else if (!strcmp(s, "--weight-decay"))
            rc = parse_d(s, v, &a->wd);
        else if (!strcmp(s, "--ema-decay"))
            rc = parse_d(s, v, &a->ema);
        else if (!strcmp(s, "--resume")) {
            if (strcmp(v, "auto") != 0) {
                pm_log_error("--resume: only 'auto' is supported");
                return PM_ERR_USAGE;
            }
            a->resume = true;
        } else {
            pm_log_error("unknown option '%s'; see --help", s);
            return PM_ERR_USAGE;
        }
        if (rc != PM_OK)
            return rc;
    }
    if (!a->data || !a->model || a->steps < 0 || a->batch < 0 || !a->ckdir) {
        pm_log_error("--data, --model, --steps, --batch-size and --checkpoint-dir are required");
        return PM_ERR_USAGE;
    }
    if (a->ema > 1) {
        pm_log_error("--ema-decay must be in [0, 1]");
        return PM_ERR_USAGE;
    }
    return PM_OK;
}

double train_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/*
 * Sum g over all ranks in a fixed order: rank r owns slice r of the vector; it receives
 * that slice from every rank (MPI_Alltoallv), adds the contributions in rank order 0, 1,
 * ..., and the summed slices are gathered back to everyone (MPI_Allgatherv).
 */
static int reduce_grads(float *g, size_t n, const struct pm_mpi *mpi, float *recv, int *counts,
                        int *displs)
{
    int W = mpi->size;
    size_t chunk = (n + (size_t)W - 1) / (size_t)W;
    for (int r = 0; r < W; r++) {
        size_t lo = (size_t)r * chunk < n ? (size_t)r * chunk : n;
        size_t hi = lo + chunk < n ? lo + chunk : n;
        counts[r] = (int)(hi - lo);
        displs[r] = (int)lo;
    }
    int mine = counts[mpi->rank];
    int *rcounts = counts + W, *rdispls = displs + W;
    for (int r = 0; r < W; r++) {
        rcounts[r] = mine;
        rdispls[r] = r * mine;
    }
    MPI_CHECK(MPI_Alltoallv(g, counts, displs, MPI_FLOAT, recv, rcounts, rdispls, MPI_FLOAT,
                            MPI_COMM_WORLD));
    float *dst = g + displs[mpi->rank];
    for (int i = 0; i < mine; i++) {
        float s = recv[i];
        for (int r = 1; r < W; r++)
            s += recv[(size_t)r * mine + i];
        dst[i] = s;
    }
    MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, g, counts, displs, MPI_FLOAT,
                             MPI_COMM_WORLD));
    return PM_OK;
}

static void set_metrics(struct metrics *m, uint64_t step, double loss, double ips, double waitf,
                        uint64_t images, uint64_t corrupt, double wait_total)
{
    metrics_set(m, "pixelmill_train_step", "optimizer steps done", METRIC_GAUGE, NULL, NULL,
                (double)step);
    metrics_set(m, "pixelmill_train_loss", "mean training loss of the last step", METRIC_GAUGE,
                NULL, NULL, loss);
    metrics_set(m, "pixelmill_train_images_per_second", "images per second, last step",
                METRIC_GAUGE, NULL, NULL, ips);
    metrics_set(m, "pixelmill_train_data_wait_fraction",
                "fraction of the last step rank 0 waited for data", METRIC_GAUGE, NULL, NULL,
                waitf);
    metrics_set(m, "pixelmill_train_images_total", "images trained on by this run", METRIC_COUNTER,
                NULL, NULL, (double)images);
    metrics_set(m, "pixelmill_train_corrupt_samples_total",
                "samples skipped as unreadable, all ranks", METRIC_COUNTER, NULL, NULL,
                (double)corrupt);
    metrics_set(m, "pixelmill_train_data_wait_seconds_total", "seconds rank 0 waited for data",
                METRIC_COUNTER, NULL, NULL, wait_total);
}

enum train_next train_step_end(const struct train_args *a, const struct pm_mpi *mpi,
                               const struct train_step *s, float *losses, struct metrics *m,
                               uint64_t *images)
{
    // global loss: the per-rank means gathered and summed in rank order
    float one = s->loss;
    if (mpi->size > 1)
        MPI_CHECK(MPI_Allgather(&s->loss, 1, MPI_FLOAT, losses, 1, MPI_FLOAT, MPI_COMM_WORLD));
    else
        losses = &one;
    double gl = 0;
    for (int r = 0; r < mpi->size; r++)
        gl += losses[r];
    gl /= mpi->size;
    unsigned long long c = s->corrupt, call = 0;
    MPI_CHECK(MPI_Allreduce(&c, &call, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD));
    int flag = pm_signal_pending() != 0, any = 0;
    MPI_CHECK(MPI_Allreduce(&flag, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    double dt = train_now_s() - s->t0;
    *images += (uint64_t)a->batch;
    double waitf = dt > 0 ? s->wait_s / dt : 0;
    double ips = dt > 0 ? (double)a->batch / dt : 0;
    bool last = (long long)s->step == a->steps;
    if (mpi->rank == 0) {
        if (s->step % (uint64_t)a->log_every == 0 || last || any) {
            printf("step %llu/%lld loss %.6f img/s %.2f data_wait %.3f corrupt %llu%s\n",
                   (unsigned long long)s->step, a->steps, gl, ips, waitf, call, s->extra);
            fflush(stdout);
        }
        if (a->metrics_file) {
            set_metrics(m, s->step, gl, ips, waitf, *images, call, s->wait_total);
            struct pm_error merr = PM_ERROR_INIT;
            if (metrics_write_file(m, a->metrics_file, &merr) != PM_OK)
                pm_log_warn("metrics: %s", merr.msg);
        }
    }
    if (any && !last)
        return TRAIN_SAVE_STOP;
    return last || (a->every > 0 && s->step % (uint64_t)a->every == 0) || any ? TRAIN_SAVE
                                                                              : TRAIN_GO;
}

int train_stopped(const struct pm_mpi *mpi, uint64_t step)
{
    if (mpi->rank == 0)
        pm_log_info("stopped by a signal after step %llu; checkpoint written, exit 75",
                    (unsigned long long)step);
    return PM_EXIT_RESUMABLE;
}

static int save(struct trainer *t, const struct train_args *a, const struct loader *l,
                const struct pm_mpi *mpi)
{
    struct pm_error err = PM_ERROR_INIT;
    int rc = PM_OK;
    if (mpi->rank == 0) {
        struct loader_state st;
        unsigned char blob[LOADER_STATE_BYTES];
        loader_get_state(l, &st);
        loader_state_encode(&st, blob);
        rc = trainer_save(t, a->ckdir, a->keep, blob, sizeof blob, &err);
        if (rc != PM_OK)
            pm_log_error("checkpoint: %s", err.msg);
    }
    return pm_mpi_worst(rc);
}

/*
 * The held-out loss: K global batches of `data` in a fixed order (seed 0), sample at
 * position p with timestep and noise from a stream seeded by p, no caption dropout.
 * Rank-order sum of the per-rank means. Returns PM_OK with *out set on every rank.
 */
static int evaluate(struct trainer *t, const struct train_args *a, const struct pm_mpi *mpi, int S,
                    double *out, struct pm_error *err)
{
    struct loader_options lo;
    loader_options_init(&lo);
    lo.data = a->eval_data;
    lo.image_size = S;
    lo.global_batch = (int)a->batch;
    lo.rank = mpi->rank;
    lo.world = mpi->size;
    lo.threads = 1;
    struct loader *l = NULL;
    int rc = loader_open(&lo, &l, err);
    int Bl = (int)a->batch / mpi->size;
    size_t px = (size_t)S * S * 3;
    float *x0 = malloc((size_t)Bl * px * sizeof *x0), *noise = malloc((size_t)Bl * px * 4);
    int *ts = malloc((size_t)Bl * sizeof *ts);
    float *all = malloc((size_t)mpi->size * sizeof *all);
    if (rc == PM_OK && (!x0 || !noise || !ts || !all))
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    double sum = 0;
    for (long long k = 0; k < a->eval_batches; k++) {
        struct loader_batch b;
        float loss = 0;
        if (rc == PM_OK)
            rc = loader_next(l, &b, err);
        if (rc == PM_OK) {
            for (int j = 0; j < Bl; j++) {
                struct train_rng r;
                train_rng_seed(&r, 0x6576616cull ^ (b.position + b.first_index + (uint64_t)j));
                ts[j] = (int)train_rng_below(&r, 1000);
                train_rng_normal_fill(&r, noise + (size_t)j * px, px);
                const uint8_t *src = b.images + (size_t)j * px;
                for (int c = 0; c < 3; c++)
                    for (int i = 0; i < S * S; i++)
                        x0[(size_t)j * px + (size_t)c * S * S + i] =
                            (float)src[(size_t)i * 3 + c] / 127.5f - 1.0f;
            }
            rc = trainer_compute_gradients_explicit(t, x0, b.captions, ts, noise, NULL, Bl, &loss,
                                                    err);
        }
        if (pm_mpi_worst(rc) != 0) {
            if (rc == PM_OK)
                rc = pm_error_set(err, PM_ERR_IO, "evaluation failed on another rank");
            break;
        }
        MPI_CHECK(MPI_Allgather(&loss, 1, MPI_FLOAT, all, 1, MPI_FLOAT, MPI_COMM_WORLD));
        double g = 0;
        for (int r = 0; r < mpi->size; r++)
            g += all[r];
        sum += g / mpi->size;
    }
    *out = sum / (double)a->eval_batches;
    free(x0);
    free(noise);
    free(ts);
    free(all);
    loader_free(l);
    return rc;
}

int cmd_train(int argc, char **argv, const struct pm_mpi *mpi)
{
    struct train_args a;
    int prc = parse_args(argc, argv, &a);
    if (prc == 1) {
        if (mpi->rank == 0)
            print_help(stdout);
        return PM_EXIT_OK;
    }
    if (prc != PM_OK)
        return PM_EXIT_USAGE;
    if (!strcmp(a.device, "cuda"))
        return cmd_train_cuda(&a, mpi);
    if (a.precision) {
        pm_log_error("--precision applies to --device cuda only");
        return PM_EXIT_USAGE;
    }
    if (strcmp(a.device, "cpu") != 0) {
        pm_log_error("--device: unknown device '%s' (cpu, cuda)", a.device);
        return PM_EXIT_USAGE;
    }
    if (a.batch % mpi->size != 0) {
        pm_log_error("--batch-size %lld is not divisible by the %d ranks", a.batch, mpi->size);
        return PM_EXIT_USAGE;
    }
    if (a.threads > 0)
        omp_set_num_threads(a.threads);

    struct pm_error err = PM_ERROR_INIT;
    struct unet_config cfg;
    if (unet_config_get(a.model, &cfg, &err) != PM_OK) {
        pm_log_error("--model: %s", err.msg);
        return PM_EXIT_USAGE;
    }
    int Bl = (int)(a.batch / mpi->size);
    struct trainer_options to;
    trainer_options_init(&to, a.model);
    to.max_batch = Bl;
    to.seed = a.seed;
    to.adamw.lr = (float)a.lr;
    to.adamw.weight_decay = (float)a.wd;
    to.ema_decay = (float)a.ema;

    struct loader_options lo;
    loader_options_init(&lo);
    lo.data = a.data;
    lo.image_size = cfg.image_size;
    lo.global_batch = (int)a.batch;
    lo.rank = mpi->rank;
    lo.world = mpi->size;
    lo.threads = a.loader_threads;
    lo.seed = a.seed;

    struct trainer *t = NULL;
    struct loader *l = NULL;
    struct metrics m = METRICS_INIT;
    float *recv = NULL;
    int *counts = NULL, *displs = NULL;
    FILE *keys = NULL;
    int exit_code = PM_EXIT_FAILED;
    int rc = trainer_create(&to, &t, &err);
    if (rc == PM_OK)
        rc = loader_open(&lo, &l, &err);
    if (pm_mpi_worst(rc) != 0) {
        if (rc != PM_OK)
            pm_log_error("%s", err.msg);
        exit_code = pm_exit_from_status(rc != PM_OK ? rc : PM_ERR_IO);
        goto done;
    }
    if (a.resume) {
        unsigned char *blob = NULL;
        size_t blen = 0;
        rc = trainer_load(t, a.ckdir, &blob, &blen, &err);
        if (rc == PM_ERR_NOT_FOUND) {
            rc = PM_OK;
        } else if (rc == PM_OK) {
            struct loader_state st;
            rc = loader_state_decode(blob, blen, &st, &err);
            if (rc == PM_OK)
                rc = loader_seek(l, &st, &err);
            if (rc == PM_OK && mpi->rank == 0)
                pm_log_info("resumed from %s at step %llu (epoch %llu, sample %llu of %llu)",
                            a.ckdir, (unsigned long long)trainer_step(t),
                            (unsigned long long)st.epoch, (unsigned long long)st.offset,
                            (unsigned long long)st.nsamples);
        }
        free(blob);
        if (pm_mpi_worst(rc) != 0) {
            if (rc != PM_OK)
                pm_log_error("resume: %s", err.msg);
            goto done;
        }
    }
    size_t n = trainer_num_params(t);
    if (mpi->size > 1) {
        size_t chunk = (n + (size_t)mpi->size - 1) / (size_t)mpi->size;
        recv = malloc(chunk * (size_t)mpi->size * sizeof *recv);
        counts = malloc(2 * (size_t)mpi->size * sizeof *counts);
        displs = malloc(2 * (size_t)mpi->size * sizeof *displs);
        if (!recv || !counts || !displs) {
            pm_log_error("out of memory");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    if (a.log_keys) {
        char path[4096];
        snprintf(path, sizeof path, "%s.rank%d", a.log_keys, mpi->rank);
        if (!(keys = fopen(path, "a"))) {
            pm_log_error("--log-keys: cannot open %s", path);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    if (mpi->rank == 0)
        pm_log_info("train %s on %s: %llu samples, %zu parameters, global batch %lld on %d "
                    "ranks, steps %llu -> %lld",
                    a.model, a.data, (unsigned long long)loader_num_samples(l), n, a.batch,
                    mpi->size, (unsigned long long)trainer_step(t), a.steps);

    uint64_t images = 0;
    bool stopped = false;
    while ((long long)trainer_step(t) < a.steps) {
        double t0 = train_now_s();
        struct loader_stats ls0, ls1;
        loader_get_stats(l, &ls0);
        struct loader_batch b;
        rc = loader_next(l, &b, &err);
        float loss = 0;
        if (rc == PM_OK) {
            struct trainer_batch tb = {b.B, b.images, NULL, b.captions, b.first_index};
            rc = trainer_compute_gradients(t, &tb, &loss, &err);
        }
        if (pm_mpi_worst(rc) != 0) {
            if (rc != PM_OK)
                pm_log_error("step %llu: %s", (unsigned long long)trainer_step(t) + 1, err.msg);
            goto done;
        }
        if (keys) {
            for (int j = 0; j < b.B; j++)
                fprintf(keys, "%llu %llu %s\n", (unsigned long long)trainer_step(t) + 1,
                        (unsigned long long)(b.position + b.first_index + (uint64_t)j), b.keys[j]);
            fflush(keys);
        }
        if (mpi->size > 1)
            reduce_grads(trainer_grads(t), n, mpi, recv, counts, displs);
        trainer_scale_grads(t, 1.0f / (float)mpi->size);
        trainer_apply_update(t);
        loader_get_stats(l, &ls1);
        struct train_step s = {.step = trainer_step(t),
                               .loss = loss,
                               .t0 = t0,
                               .wait_s = ls1.wait_s - ls0.wait_s,
                               .wait_total = ls1.wait_s,
                               .corrupt = ls1.corrupt,
                               .extra = ""};
        enum train_next next = train_step_end(&a, mpi, &s, recv, &m, &images);
        if (next != TRAIN_GO && save(t, &a, l, mpi) != 0)
            goto done;
        if (next == TRAIN_SAVE_STOP) {
            stopped = true;
            break;
        }
    }
    if (stopped) {
        exit_code = train_stopped(mpi, trainer_step(t));
    } else {
        exit_code = PM_EXIT_OK;
        if (a.eval_data) {
            double el = 0;
            rc = evaluate(t, &a, mpi, cfg.image_size, &el, &err);
            if (rc != PM_OK) {
                pm_log_error("--eval-data: %s", err.msg);
                exit_code = pm_exit_from_status(rc);
            } else if (mpi->rank == 0) {
                printf("eval_loss %.6f step %llu\n", el, (unsigned long long)trainer_step(t));
                fflush(stdout);
            }
        }
    }
done:
    if (keys)
        fclose(keys);
    free(recv);
    free(counts);
    free(displs);
    metrics_release(&m);
    loader_free(l);
    trainer_free(t);
    return exit_code;
}
