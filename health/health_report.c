#include "health_report.h"

#include "pm_array.h"
#include "pm_error.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void health_report_init(struct health_report *r)
{
    r->results = NULL;
    r->n = r->cap = 0;
}

void health_report_release(struct health_report *r)
{
    if (!r)
        return;
    free(r->results);
    health_report_init(r);
}

struct health_result *health_report_add(struct health_report *r, const char *name,
                                        enum health_status status, const char *fmt, ...)
{
    if (pm_array_reserve_one(&r->results, &r->cap, r->n, sizeof *r->results, 16))
        return NULL;
    struct health_result *res = &r->results[r->n++];
    memset(res, 0, sizeof *res);
    snprintf(res->name, sizeof res->name, "%s", name);
    res->status = status;
    res->value = NAN;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
    return res;
}

void health_result_measure(struct health_result *res, double value, const char *metric,
                           const char *help)
{
    if (!res)
        return;
    res->value = value;
    snprintf(res->metric, sizeof res->metric, "%s", metric ? metric : "");
    res->metric_help = metric ? help : NULL;
}

const char *health_status_name(enum health_status s)
{
    switch (s) {
    case HEALTH_OK:
        return "ok";
    case HEALTH_WARN:
        return "warn";
    case HEALTH_FAIL:
        return "fail";
    case HEALTH_SKIPPED:
        return "skipped";
    }
    return "?";
}

static bool counts_as_failure(enum health_status s, bool fail_on_warning)
{
    return s == HEALTH_FAIL || (fail_on_warning && s == HEALTH_WARN);
}

bool health_report_healthy(const struct health_report *r, bool fail_on_warning)
{
    for (size_t i = 0; i < r->n; i++)
        if (counts_as_failure(r->results[i].status, fail_on_warning))
            return false;
    return true;
}

void health_report_reasons(const struct health_report *r, bool fail_on_warning, char *buf,
                           size_t size)
{
    if (!size)
        return;
    buf[0] = '\0';
    size_t len = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct health_result *res = &r->results[i];
        if (!counts_as_failure(res->status, fail_on_warning))
            continue;
        int k =
            snprintf(buf + len, size - len, "%s%s: %s", len ? "; " : "", res->name, res->detail);
        if (k < 0 || (size_t)k >= size - len) {
            len = size - 1;
            break;
        }
        len += (size_t)k;
    }
}

void health_report_print_table(const struct health_report *r, bool fail_on_warning, FILE *out)
{
    int wname = 5;
    for (size_t i = 0; i < r->n; i++) {
        int l = (int)strlen(r->results[i].name);
        if (l > wname)
            wname = l;
    }
    fprintf(out, "%-*s  %-7s  %s\n", wname, "CHECK", "STATUS", "DETAIL");
    for (size_t i = 0; i < r->n; i++) {
        const struct health_result *res = &r->results[i];
        fprintf(out, "%-*s  %-7s  %s\n", wname, res->name, health_status_name(res->status),
                res->detail);
    }
    if (health_report_healthy(r, fail_on_warning)) {
        fprintf(out, "healthy\n");
    } else {
        char reasons[2048];
        health_report_reasons(r, fail_on_warning, reasons, sizeof reasons);
        fprintf(out, "unhealthy: %s\n", reasons);
    }
}

char *health_report_json(const struct health_report *r, bool fail_on_warning)
{
    json_t *root = json_object();
    json_t *checks = json_array();
    json_t *reasons = json_array();
    if (!root || !checks || !reasons)
        goto oom;
    bool ok = true;
    for (size_t i = 0; i < r->n; i++) {
        const struct health_result *res = &r->results[i];
        json_t *c = json_object();
        if (!c)
            goto oom;
        ok &= !json_object_set_new(c, "name", json_string(res->name));
        ok &= !json_object_set_new(c, "status", json_string(health_status_name(res->status)));
        ok &= !json_object_set_new(c, "detail", json_string(res->detail));
        if (!isnan(res->value))
            ok &= !json_object_set_new(c, "value", json_real(res->value));
        if (res->metric[0])
            ok &= !json_object_set_new(c, "metric", json_string(res->metric));
        ok &= !json_array_append_new(checks, c);
        if (counts_as_failure(res->status, fail_on_warning)) {
            char line[HEALTH_NAME_MAX + HEALTH_DETAIL_MAX + 2];
            snprintf(line, sizeof line, "%s: %s", res->name, res->detail);
            ok &= !json_array_append_new(reasons, json_string(line));
        }
    }
    ok &= !json_object_set_new(root, "healthy",
                               json_boolean(health_report_healthy(r, fail_on_warning)));
    ok &= !json_object_set_new(root, "reasons", reasons);
    reasons = NULL;
    ok &= !json_object_set_new(root, "checks", checks);
    checks = NULL;
    if (!ok)
        goto oom;
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return s;
oom:
    json_decref(root);
    json_decref(checks);
    json_decref(reasons);
    return NULL;
}

int health_report_to_metrics(const struct health_report *r, bool fail_on_warning, struct metrics *m)
{
    int rc = metrics_set(m, "pixelmill_doctor_healthy",
                         "1 when the last pixelmill doctor run found the node healthy",
                         METRIC_GAUGE, NULL, NULL, health_report_healthy(r, fail_on_warning));
    if (rc == PM_OK)
        rc = metrics_set(m, "pixelmill_doctor_last_run_timestamp_seconds",
                         "Unix time of the last pixelmill doctor run", METRIC_GAUGE, NULL, NULL,
                         (double)time(NULL));
    for (size_t i = 0; rc == PM_OK && i < r->n; i++) {
        const struct health_result *res = &r->results[i];
        rc = metrics_set(m, "pixelmill_doctor_check_status",
                         "Result of each doctor check: 0 ok, 1 warn, 2 fail, 3 skipped",
                         METRIC_GAUGE, "check", res->name, res->status);
        if (rc == PM_OK && res->metric[0] && !isnan(res->value))
            rc = metrics_set(m, res->metric, res->metric_help ? res->metric_help : res->metric,
                             METRIC_GAUGE, "check", res->name, res->value);
    }
    return rc;
}
