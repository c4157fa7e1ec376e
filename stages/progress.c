/*
 * progress — cross-rank counters, live line, metrics; see progress.h.
 */
#include "progress.h"

#include "metrics.h"
#include "pm_log.h"
#include "pm_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

struct progress {
    MPI_Comm comm;
    int rank;
    MPI_Win win;
    int64_t *win_mem; // rank 0: the job-wide totals
    int64_t *local;   // not yet pushed
    int64_t *totals;  // rank 0: last read
    size_t n;
    struct progress_layout lay;
    struct progress_options opt;
    uint64_t rows_total, units_total;
    double t0, last_push, last_render, last_log, last_metrics;
    int tty, line_shown;
    struct metrics metrics;
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

int progress_create(struct progress **out, MPI_Comm comm, const struct progress_layout *layout,
                    const struct progress_options *opt, uint64_t rows_total, uint64_t units_total,
                    struct pm_error *err)
{
    struct progress *p = calloc(1, sizeof *p);
    if (!p)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    p->comm = comm;
    MPI_CHECK(MPI_Comm_rank(comm, &p->rank));
    p->n = layout->nslots;
    p->lay = *layout;
    if (opt)
        p->opt = *opt;
    if (p->opt.push_interval_s <= 0)
        p->opt.push_interval_s = 2;
    if (p->opt.log_interval_s <= 0)
        p->opt.log_interval_s = 10;
    p->rows_total = rows_total;
    p->units_total = units_total;
    p->local = calloc(p->n, sizeof *p->local);
    p->totals = calloc(p->n, sizeof *p->totals);
    MPI_Aint size = p->rank == 0 ? (MPI_Aint)(p->n * sizeof(int64_t)) : 0;
    MPI_CHECK(MPI_Win_allocate(size, sizeof(int64_t), MPI_INFO_NULL, comm, &p->win_mem, &p->win));
    if (p->rank == 0) {
        MPI_CHECK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, p->win));
        memset(p->win_mem, 0, p->n * sizeof(int64_t));
        MPI_CHECK(MPI_Win_unlock(0, p->win));
    }
    MPI_CHECK(MPI_Barrier(comm));
    p->t0 = now_s();
    p->last_push = p->last_render = p->last_log = p->last_metrics = p->t0;
    p->tty = p->opt.force_tty > 0 || (p->opt.force_tty == 0 && isatty(2));
    if (!p->local || !p->totals) {
        progress_free(p); // collective; every rank fails alike only on OOM, acceptable
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    *out = p;
    return PM_OK;
}

void progress_add(struct progress *p, size_t slot, int64_t delta)
{
    if (p && slot < p->n)
        p->local[slot] += delta;
}

double progress_elapsed(const struct progress *p)
{
    return p ? now_s() - p->t0 : 0;
}

static void push(struct progress *p)
{
    int any = 0;
    for (size_t i = 0; i < p->n && !any; i++)
        any = p->local[i] != 0;
    if (!any)
        return;
    MPI_CHECK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, p->win));
    MPI_CHECK(MPI_Accumulate(p->local, (int)p->n, MPI_INT64_T, 0, 0, (int)p->n, MPI_INT64_T,
                             MPI_SUM, p->win));
    MPI_CHECK(MPI_Win_unlock(0, p->win));
    memset(p->local, 0, p->n * sizeof *p->local);
}

static void read_totals(struct progress *p)
{
    MPI_CHECK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, p->win));
    MPI_CHECK(MPI_Get_accumulate(NULL, 0, MPI_INT64_T, p->totals, (int)p->n, MPI_INT64_T, 0, 0,
                                 (int)p->n, MPI_INT64_T, MPI_NO_OP, p->win));
    MPI_CHECK(MPI_Win_unlock(0, p->win));
}

static void fmt_duration(char *buf, size_t n, double s)
{
    if (s < 0 || s > 1e8)
        snprintf(buf, n, "?");
    else if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
}

/* "rows 123/1000 (12.3%), 45.6 ok/s, 1.2 MB/s, errors: timeout 3, http 404 2; ETA 1m02s" */
static void render(struct progress *p, char *line, size_t size)
{
    const int64_t *t = p->totals;
    double el = now_s() - p->t0;
    if (el < 1e-3)
        el = 1e-3;
    int64_t rows = t[p->lay.rows_slot], skipped = t[p->lay.skipped_rows_slot];
    double rate_rows = (double)(rows - skipped) / el;
    double ok_s = (double)t[p->lay.success_slot] / el;
    double mb_s = (double)t[p->lay.bytes_slot] / el / 1e6;
    double pct = p->rows_total ? 100.0 * (double)rows / (double)p->rows_total : 100.0;
    int k = snprintf(line, size, "rows %lld/%llu (%.1f%%), %.1f ok/s, %.2f MB/s", (long long)rows,
                     (unsigned long long)p->rows_total, pct, ok_s, mb_s);
    // top 3 error classes
    size_t top[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    for (size_t e = 0; e < p->lay.nerror; e++) {
        int64_t v = t[p->lay.first_error + e];
        if (v <= 0)
            continue;
        for (int s = 0; s < 3; s++)
            if (top[s] == SIZE_MAX || v > t[p->lay.first_error + top[s]]) {
                for (int q = 2; q > s; q--)
                    top[q] = top[q - 1];
                top[s] = e;
                break;
            }
    }
    for (int s = 0; s < 3 && top[s] != SIZE_MAX && k > 0 && (size_t)k < size; s++)
        k += snprintf(line + k, size - (size_t)k, "%s%s %lld",
                      s ? ", " : ", errors: ", p->lay.error_names[top[s]],
                      (long long)t[p->lay.first_error + top[s]]);
    char eta[32];
    double left = (double)p->rows_total - (double)rows;
    fmt_duration(eta, sizeof eta, rate_rows > 0 ? left / rate_rows : -1);
    if (k > 0 && (size_t)k < size)
        snprintf(line + k, size - (size_t)k, "; ETA %s", eta);
}

static void write_metrics(struct progress *p)
{
    if (!p->opt.metrics_file)
        return;
    const int64_t *t = p->totals;
    char name[256];
    const char *pre = p->lay.metric_prefix;
    struct metrics *m = &p->metrics;
    snprintf(name, sizeof name, "%s_rows_total", pre);
    metrics_set(m, name, "Input rows finished (all statuses)", METRIC_COUNTER, NULL, NULL,
                (double)t[p->lay.rows_slot]);
    snprintf(name, sizeof name, "%s_samples_total", pre);
    for (size_t s = 0; s < p->lay.nstatus; s++)
        metrics_set(m, name, "Rows by status", METRIC_COUNTER, "status", p->lay.status_names[s],
                    (double)t[p->lay.first_status + s]);
    snprintf(name, sizeof name, "%s_errors_total", pre);
    for (size_t e = 0; e < p->lay.nerror; e++)
        metrics_set(m, name, "Rows by error class", METRIC_COUNTER, "class", p->lay.error_names[e],
                    (double)t[p->lay.first_error + e]);
    snprintf(name, sizeof name, "%s_images_total", pre);
    metrics_set(m, name, "Images written to shards (successful samples)", METRIC_COUNTER, NULL,
                NULL, (double)t[p->lay.success_slot]);
    snprintf(name, sizeof name, "%s_bytes_total", pre);
    metrics_set(m, name, "Bytes downloaded", METRIC_COUNTER, NULL, NULL,
                (double)t[p->lay.bytes_slot]);
    snprintf(name, sizeof name, "%s_units_done", pre);
    metrics_set(m, name, "Units (shards) finished", METRIC_GAUGE, NULL, NULL,
                (double)t[p->lay.units_slot]);
    snprintf(name, sizeof name, "%s_units_total", pre);
    metrics_set(m, name, "Units (shards) planned", METRIC_GAUGE, NULL, NULL,
                (double)p->units_total);
    snprintf(name, sizeof name, "%s_rows_per_second", pre);
    double el = now_s() - p->t0;
    metrics_set(m, name, "Rows finished per second by this run", METRIC_GAUGE, NULL, NULL,
                el > 0 ? (double)(t[p->lay.rows_slot] - t[p->lay.skipped_rows_slot]) / el : 0);
    struct pm_error err = PM_ERROR_INIT;
    if (metrics_write_file(m, p->opt.metrics_file, &err))
        pm_log_warn("%s", err.msg);
}

void progress_tick(struct progress *p)
{
    if (!p)
        return;
    double now = now_s();
    if (p->rank == 0) {
        int flag;
        MPI_Status st;
        MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, p->comm, &flag, &st));
    }
    if (now - p->last_push < (p->rank == 0 ? 1.0 : p->opt.push_interval_s))
        return;
    p->last_push = now;
    push(p);
    if (p->rank != 0)
        return;
    read_totals(p);
    char line[512];
    if (!p->opt.quiet && p->tty && now - p->last_render >= 1.0) {
        render(p, line, sizeof line);
        fprintf(stderr, "\r\033[K%s", line);
        fflush(stderr);
        p->line_shown = 1;
        p->last_render = now;
    } else if (!p->opt.quiet && !p->tty && now - p->last_log >= p->opt.log_interval_s) {
        render(p, line, sizeof line);
        pm_log_info("%s", line);
        p->last_log = now;
    }
    if (now - p->last_metrics >= 5.0) {
        write_metrics(p);
        p->last_metrics = now;
    }
}

void progress_finish(struct progress *p)
{
    if (!p)
        return;
    push(p);
    MPI_CHECK(MPI_Barrier(p->comm));
    if (p->rank != 0)
        return;
    read_totals(p);
    if (p->line_shown) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
        p->line_shown = 0;
    }
    write_metrics(p);
}

int64_t progress_total(const struct progress *p, size_t slot)
{
    return p && p->rank == 0 && slot < p->n ? p->totals[slot] : 0;
}

void progress_free(struct progress *p)
{
    if (!p)
        return;
    MPI_CHECK(MPI_Win_free(&p->win));
    free(p->local);
    free(p->totals);
    metrics_release(&p->metrics);
    free(p);
}
