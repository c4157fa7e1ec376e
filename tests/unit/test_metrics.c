/* Unit tests for the Prometheus text renderer and the atomic metrics file. */
#include "check.h"
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
    struct metrics m = METRICS_INIT;
    CHECK(metrics_set(&m, "pm_rows_total", "Rows done.", METRIC_COUNTER, NULL, NULL, 5) == 0);
    CHECK(metrics_set(&m, "pm_errors_total", "Errors by class.", METRIC_COUNTER, "class",
                      "http 404", 2) == 0);
    CHECK(metrics_set(&m, "pm_errors_total", "Errors by class.", METRIC_COUNTER, "class",
                      "say \"hi\"\n", 1) == 0);
    CHECK(metrics_set(&m, "pm_rows_total", "Rows done.", METRIC_COUNTER, NULL, NULL, 7) == 0);
    CHECK(metrics_set(&m, "pm_rate", "Rate.", METRIC_GAUGE, NULL, NULL, NAN) == 0);
    char *text = metrics_render(&m);
    CHECK_STR(text, "# HELP pm_rows_total Rows done.\n# TYPE pm_rows_total counter\n"
                    "pm_rows_total 7\n"
                    "# HELP pm_errors_total Errors by class.\n"
                    "# TYPE pm_errors_total counter\n"
                    "pm_errors_total{class=\"http 404\"} 2\n"
                    "pm_errors_total{class=\"say \\\"hi\\\"\\n\"} 1\n"
                    "# HELP pm_rate Rate.\n# TYPE pm_rate gauge\npm_rate NaN\n");
    free(text);
    char path[] = "/tmp/pm_metrics_testXXXXXX";
    int fd = mkstemp(path);
    close(fd);
    struct pm_error err = PM_ERROR_INIT;
    CHECK(metrics_write_file(&m, path, &err) == PM_OK);
    FILE *f = fopen(path, "r");
    char line[128] = "";
    CHECK(f && fgets(line, sizeof line, f));
    CHECK_STR(line, "# HELP pm_rows_total Rows done.\n");
    if (f)
        fclose(f);
    unlink(path);
    CHECK(metrics_write_file(&m, "/nonexistent-dir/x.prom", &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent-dir") != NULL);
    metrics_release(&m);
    return CHECK_DONE();
}
