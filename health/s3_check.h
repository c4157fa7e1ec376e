/**
 * s3_check — reachability of an S3 (or S3-compatible) endpoint for `pixelmill doctor
 * --s3 URL`: one unsigned HTTP HEAD request through libcurl.
 *
 * URL forms: `s3://BUCKET[/KEY]` — sent to $AWS_ENDPOINT_URL/BUCKET/KEY (path style)
 * when that variable is set, else to https://BUCKET.s3.amazonaws.com/KEY; or a plain
 * http(s) URL, used as it is. Any HTTP answer below 500 counts as reachable (403 is the
 * usual answer to an unsigned request: DNS, routing, TLS and the service all worked);
 * 5xx warns; no answer (DNS failure, refused, timeout, TLS error) fails. This checks
 * the network path, not credentials or permissions.
 */
#ifndef PM_S3_CHECK_H
#define PM_S3_CHECK_H

#include "health_report.h"

/** Append the "s3" row. `timeout_s` bounds the whole request. Returns PM_OK or NOMEM. */
int s3_check_run(struct health_report *r, const char *url, long timeout_s);

/**
 * The HTTP URL that s3_check_run() requests for `url` (rules above), written into buf.
 * Returns PM_OK, or PM_ERR_USAGE for an unsupported scheme or an empty bucket.
 */
int s3_check_http_url(const char *url, char *buf, size_t size);

#endif
