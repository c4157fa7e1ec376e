/**
 * health_report — the results of a node's health checks (`pixelmill doctor`): one row per
 * check with a status, a one-line detail and an optional measurement, rendered as an
 * aligned table, as JSON, or as Prometheus metrics.
 *
 * Statuses: HEALTH_OK (passed), HEALTH_WARN (passed but suspicious; fatal only with
 * --fail-on-warning), HEALTH_FAIL (the node should not run jobs: the detail is the
 * reason a prolog puts on the drained node), HEALTH_SKIPPED (could not run here — no
 * GPU, library missing — with the reason; never counted as passed or failed).
 *
 * A report is a caller-owned struct (`health_report_init/_release`). Not thread-safe.
 */
#ifndef PM_HEALTH_REPORT_H
#define PM_HEALTH_REPORT_H

#include "metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum health_status { HEALTH_OK = 0, HEALTH_WARN = 1, HEALTH_FAIL = 2, HEALTH_SKIPPED = 3 };

#define HEALTH_NAME_MAX 32
#define HEALTH_DETAIL_MAX 512
#define HEALTH_METRIC_MAX 96

/** One check's result. `value` is NaN when the check measured nothing numeric. */
struct health_result {
    char name[HEALTH_NAME_MAX]; // "cpu", "storage", "gpu0", "nccl", ...
    enum health_status status;
    char detail[HEALTH_DETAIL_MAX]; // the measurement in words, or the reason
    double value;                   // the main measurement, in `metric`'s unit
    char metric[HEALTH_METRIC_MAX]; // Prometheus name for `value` ("" = not exported)
    const char *metric_help;        // static string; NULL when metric is ""
};

struct health_report {
    struct health_result *results;
    size_t n, cap;
};

#define HEALTH_REPORT_INIT {NULL, 0, 0}

/** Initialise an empty report. */
void health_report_init(struct health_report *r);

/** Free the results. Accepts NULL. */
void health_report_release(struct health_report *r);

/**
 * Append a result with a printf-style detail (truncated to HEALTH_DETAIL_MAX - 1 bytes)
 * and no measurement. Returns the new row (owned by the report, valid until the next add)
 * so the caller can set `value` and `metric`, or NULL when out of memory.
 */
struct health_result *health_report_add(struct health_report *r, const char *name,
                                        enum health_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** Set a row's measurement and the Prometheus metric it is exported as. */
void health_result_measure(struct health_result *res, double value, const char *metric,
                           const char *help);

/** "ok", "warn", "fail" or "skipped". */
const char *health_status_name(enum health_status s);

/**
 * True when no row failed (and, with `fail_on_warning`, none warned). Skipped rows
 * never make a report unhealthy.
 */
bool health_report_healthy(const struct health_report *r, bool fail_on_warning);

/**
 * The reasons a report is unhealthy, "; "-joined as "name: detail" (the string a prolog
 * puts on a drained node), written into buf (truncated, always NUL-terminated).
 * Empty when healthy.
 */
void health_report_reasons(const struct health_report *r, bool fail_on_warning, char *buf,
                           size_t size);

/** Print the aligned table (CHECK STATUS DETAIL) and a closing verdict line. */
void health_report_print_table(const struct health_report *r, bool fail_on_warning, FILE *out);

/**
 * Render the report as one JSON document: {"healthy", "reasons", "checks": [{"name",
 * "status", "detail", "value" (omitted when NaN), "metric"}]}. The caller frees the
 * string; NULL when out of memory.
 */
char *health_report_json(const struct health_report *r, bool fail_on_warning);

/**
 * Add the report to `m` as Prometheus samples: pixelmill_doctor_healthy (1/0),
 * pixelmill_doctor_check_status{check} (0 ok, 1 warn, 2 fail, 3 skipped),
 * pixelmill_doctor_last_run_timestamp_seconds, and each row's measurement under its own
 * metric name with label check=name. Returns PM_OK or PM_ERR_NOMEM.
 */
int health_report_to_metrics(const struct health_report *r, bool fail_on_warning,
                             struct metrics *m);

#endif
