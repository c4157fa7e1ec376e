// Unit tests of the doctor's building blocks: report verdicts and reasons, JSON and
// metrics rendering, nccl-tests' busbw factor, S3 URL mapping.
#include "check.h"
#include "health_report.h"
#include "metrics.h"
#include "nccl_check.h"
#include "pm_error.h"
#include "s3_check.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_verdicts(void)
{
    struct health_report r;
    health_report_init(&r);
    char buf[256];
    CHECK(health_report_healthy(&r, true));
    health_report_reasons(&r, false, buf, sizeof buf);
    CHECK_STR(buf, "");
    CHECK(health_report_add(&r, "gpu", HEALTH_SKIPPED, "no GPU: %s", "none") != NULL);
    CHECK(health_report_add(&r, "load", HEALTH_WARN, "high") != NULL);
    CHECK(health_report_healthy(&r, false)); // skipped and warn are not failures
    CHECK(!health_report_healthy(&r, true)); // unless warnings count
    health_report_reasons(&r, true, buf, sizeof buf);
    CHECK_STR(buf, "load: high");
    CHECK(health_report_add(&r, "s3", HEALTH_FAIL, "down") != NULL);
    CHECK(!health_report_healthy(&r, false));
    health_report_reasons(&r, false, buf, sizeof buf);
    CHECK_STR(buf, "s3: down");
    health_report_reasons(&r, true, buf, sizeof buf);
    CHECK_STR(buf, "load: high; s3: down");
    char small[8];
    health_report_reasons(&r, true, small, sizeof small);
    CHECK(strlen(small) == 7); // truncated, terminated
    // many rows: growth keeps earlier rows intact
    for (int i = 0; i < 100; i++)
        CHECK(health_report_add(&r, "x", HEALTH_OK, "%d", i) != NULL);
    CHECK_STR(r.results[0].name, "gpu");
    CHECK_STR(r.results[102].detail, "99");
    // over-long detail is truncated, not overflowed
    char longd[2000];
    memset(longd, 'a', sizeof longd - 1);
    longd[sizeof longd - 1] = '\0';
    struct health_result *res = health_report_add(&r, "long", HEALTH_OK, "%s", longd);
    CHECK(res && strlen(res->detail) == HEALTH_DETAIL_MAX - 1);
    health_report_release(&r);
    health_report_release(&r);
    health_report_release(NULL);
}

static void test_json_and_metrics(void)
{
    struct health_report r;
    health_report_init(&r);
    struct health_result *res = health_report_add(&r, "storage.write", HEALTH_OK, "100 MB/s");
    health_result_measure(res, 1e8, "pixelmill_doctor_storage_write_bytes_per_second", "rate");
    health_report_add(&r, "forced", HEALTH_FAIL, "say \"hi\"");
    char *s = health_report_json(&r, false);
    CHECK(s != NULL);
    json_error_t je;
    json_t *doc = json_loads(s, 0, &je);
    CHECK(doc != NULL);
    CHECK(json_is_false(json_object_get(doc, "healthy")));
    json_t *reasons = json_object_get(doc, "reasons");
    CHECK(json_array_size(reasons) == 1);
    CHECK_STR(json_string_value(json_array_get(reasons, 0)), "forced: say \"hi\"");
    json_t *c0 = json_array_get(json_object_get(doc, "checks"), 0);
    CHECK(json_real_value(json_object_get(c0, "value")) == 1e8);
    json_t *c1 = json_array_get(json_object_get(doc, "checks"), 1);
    CHECK(json_object_get(c1, "value") == NULL); // NaN is omitted
    CHECK_STR(json_string_value(json_object_get(c1, "status")), "fail");
    json_decref(doc);
    free(s);

    struct metrics m = METRICS_INIT;
    CHECK(health_report_to_metrics(&r, false, &m) == PM_OK);
    char *text = metrics_render(&m);
    CHECK(text && strstr(text, "pixelmill_doctor_healthy 0\n"));
    CHECK(text && strstr(text, "pixelmill_doctor_check_status{check=\"forced\"} 2\n"));
    CHECK(text && strstr(text, "pixelmill_doctor_check_status{check=\"storage.write\"} 0\n"));
    CHECK(text && strstr(text, "pixelmill_doctor_storage_write_bytes_per_second{check=\"storage."
                               "write\"} 100000000\n"));
    free(text);
    metrics_release(&m);
    health_report_release(&r);
}

static void test_busbw_factor(void)
{
    // nccl-tests all_reduce: busbw = algbw * 2 (n - 1) / n
    CHECK(nccl_check_allreduce_busbw_factor(1) == 0.0);
    CHECK(nccl_check_allreduce_busbw_factor(2) == 1.0);
    CHECK(nccl_check_allreduce_busbw_factor(8) == 1.75);
    CHECK(nccl_check_allreduce_busbw_factor(0) == 0.0);
}

static void test_s3_urls(void)
{
    char buf[256];
    unsetenv("AWS_ENDPOINT_URL");
    CHECK(s3_check_http_url("s3://bkt/a/b.tar", buf, sizeof buf) == PM_OK);
    CHECK_STR(buf, "https://bkt.s3.amazonaws.com/a/b.tar");
    CHECK(s3_check_http_url("s3://bkt", buf, sizeof buf) == PM_OK);
    CHECK_STR(buf, "https://bkt.s3.amazonaws.com/");
    setenv("AWS_ENDPOINT_URL", "http://minio:9000//", 1);
    CHECK(s3_check_http_url("s3://bkt/k", buf, sizeof buf) == PM_OK);
    CHECK_STR(buf, "http://minio:9000/bkt/k");
    unsetenv("AWS_ENDPOINT_URL");
    CHECK(s3_check_http_url("https://x.example/", buf, sizeof buf) == PM_OK);
    CHECK_STR(buf, "https://x.example/");
    CHECK(s3_check_http_url("s3:///k", buf, sizeof buf) == PM_ERR_USAGE);
    CHECK(s3_check_http_url("file:///etc/passwd", buf, sizeof buf) == PM_ERR_USAGE);
    char tiny[10];
    CHECK(s3_check_http_url("https://long.example/", tiny, sizeof tiny) == PM_ERR_USAGE);
}

int main(void)
{
    test_verdicts();
    test_json_and_metrics();
    test_busbw_factor();
    test_s3_urls();
    return CHECK_DONE();
}
