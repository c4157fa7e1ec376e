/**
 * http_headers — pure parsers for the response headers the fetcher acts on.
 *
 * Every function here reads only its arguments (no globals, no I/O, no allocation), takes
 * header values as (pointer, length) pairs that need not be NUL-terminated, and accepts
 * any byte sequence: malformed input is reported, never trusted. Thread-safe.
 */
#ifndef PM_HTTP_HEADERS_H
#define PM_HTTP_HEADERS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/** The directives refused by default (img2dataset's `disallowed_header_directives`). */
#define HTTP_ROBOTS_DEFAULT_DIRECTIVES "noai,noimageai,noindex,noimageindex"

/**
 * Parse a Retry-After value: either delay-seconds ("120") or an HTTP-date in any of the
 * three forms of RFC 9110 §5.6.7 ("Sun, 06 Nov 1994 08:49:37 GMT", the RFC 850 and the
 * asctime forms; parsed with libcurl's curl_getdate()). `now` is the current wall-clock
 * time, used to turn a date into a delay. Surrounding whitespace is ignored.
 *
 * Returns 0 and stores the delay in seconds in *delay_s (a date in the past gives 0;
 * huge values saturate at INT32_MAX), or -1 when the value is not valid (*delay_s is
 * left unchanged).
 */
int http_retry_after_parse(const char *value, size_t len, time_t now, int64_t *delay_s);

/**
 * Does one X-Robots-Tag header value forbid our use of the response?
 *
 * The value is a comma-separated list of directives ("noindex, nofollow"). A directive
 * may carry a value after a colon ("max-snippet: 20", "unavailable_after: 25 Jun 2010
 * 15:00:00 PST"), and an item of the form "TOKEN: directive" names the user agent that
 * the directive and the ones after it in the same header value apply to ("googlebot:
 * noindex, nofollow"). Directives with no user agent apply to everyone; a user-agent
 * scope applies to us when TOKEN equals (case-insensitively) `ua_token` or "pixelmill".
 * A known valued directive name (max-snippet, max-image-preview, max-video-preview,
 * unavailable_after) before a colon is a directive, not a user agent.
 *
 * `disallowed` is a comma-separated list of directive names that forbid use (NULL means
 * HTTP_ROBOTS_DEFAULT_DIRECTIVES; "" forbids nothing); matching is case-insensitive and
 * ignores surrounding whitespace. `ua_token` may be NULL.
 *
 * Returns 1 when a directive that applies to us is in `disallowed`, else 0.
 */
int http_robots_disallowed(const char *value, size_t len, const char *disallowed,
                           const char *ua_token);

#endif
