/**
 * metrics — Prometheus text exposition for long-running commands.
 *
 * A command keeps a `struct metrics` of named samples (counters and gauges, optionally
 * with one label), updates values as it goes, and calls metrics_write_file() every few
 * seconds: the file is written under a temporary name and renamed, so node_exporter's
 * textfile collector never reads a partial file. Names follow Prometheus conventions
 * (`pixelmill_download_rows_total`). Not thread-safe: update from one thread.
 */
#ifndef PM_METRICS_H
#define PM_METRICS_H

#include "pm_error.h"

#include <stddef.h>

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE };

struct metric_sample {
    char *name;
    char *help;
    enum metric_kind kind;
    char *label_name;  // NULL: no label
    char *label_value; // NULL: no label
    double value;
};

struct metrics {
    struct metric_sample *samples;
    size_t n, cap;
};

#define METRICS_INIT {NULL, 0, 0}

/** Free every sample. Accepts NULL. */
void metrics_release(struct metrics *m);

/**
 * Set the value of sample (name, label) — created on first use with `help` and `kind`.
 * `label_name`/`label_value` may be NULL for an unlabelled sample. Returns PM_OK or
 * PM_ERR_NOMEM.
 */
int metrics_set(struct metrics *m, const char *name, const char *help, enum metric_kind kind,
                const char *label_name, const char *label_value, double value);

/** Render all samples in Prometheus text format (one HELP/TYPE block per name, in the
 * order names were first set). The caller frees the returned string; NULL on OOM. */
char *metrics_render(const struct metrics *m);

/** Render and write to `path` atomically (temp file in the same directory + rename). */
int metrics_write_file(const struct metrics *m, const char *path, struct pm_error *err);

#endif
