#include "s3_check.h"

#include "pm_error.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int s3_check_http_url(const char *url, char *buf, size_t size)
{
    int k;
    if (!strncmp(url, "s3://", 5)) {
        const char *bucket = url + 5;
        size_t blen = strcspn(bucket, "/");
        if (blen == 0)
            return PM_ERR_USAGE;
        const char *key = bucket[blen] == '/' ? bucket + blen + 1 : "";
        const char *ep = getenv("AWS_ENDPOINT_URL");
        if (ep && *ep) {
            size_t elen = strlen(ep);
            while (elen && ep[elen - 1] == '/')
                elen--;
            k = snprintf(buf, size, "%.*s/%.*s/%s", (int)elen, ep, (int)blen, bucket, key);
        } else {
            k = snprintf(buf, size, "https://%.*s.s3.amazonaws.com/%s", (int)blen, bucket, key);
        }
    } else if (!strncmp(url, "http://", 7) || !strncmp(url, "https://", 8)) {
        k = snprintf(buf, size, "%s", url);
    } else {
        return PM_ERR_USAGE;
    }
    return k < 0 || (size_t)k >= size ? PM_ERR_USAGE : PM_OK;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

int s3_check_run(struct health_report *r, const char *url, long timeout_s)
{
    char http[4096];
    if (s3_check_http_url(url, http, sizeof http) != PM_OK)
        return health_report_add(r, "s3", HEALTH_FAIL, "'%s' is not an s3:// or http(s):// URL",
                                 url)
                   ? PM_OK
                   : PM_ERR_NOMEM;
    CURL *c = curl_easy_init();
    if (!c)
        return PM_ERR_NOMEM;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_URL, http);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s > 0 ? timeout_s : 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    long code = 0;
    double secs = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &secs);
    curl_easy_cleanup(c);
    struct health_result *res;
    if (cc != CURLE_OK)
        res = health_report_add(r, "s3", HEALTH_FAIL, "%s unreachable: %s", http,
                                errbuf[0] ? errbuf : curl_easy_strerror(cc));
    else
        res = health_report_add(r, "s3", code >= 500 ? HEALTH_WARN : HEALTH_OK,
                                "%s answered HTTP %ld in %.0f ms", http, code, secs * 1e3);
    if (!res)
        return PM_ERR_NOMEM;
    if (cc == CURLE_OK)
        health_result_measure(res, secs, "pixelmill_doctor_s3_head_seconds",
                              "Time of the doctor's HEAD request to the S3 endpoint");
    return PM_OK;
}
