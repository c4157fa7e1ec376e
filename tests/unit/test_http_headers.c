// Unit tests for net/http_headers.h: Retry-After (seconds and the three HTTP-date forms)
// and X-Robots-Tag directives, including user-agent scoped ones.
#include "check.h"
#include "http_headers.h"

#include <string.h>

static int ra(const char *v, time_t now, int64_t *d)
{
    return http_retry_after_parse(v, strlen(v), now, d);
}

static void test_retry_after(void)
{
    int64_t d = -7;
    CHECK(ra("120", 0, &d) == 0 && d == 120);
    CHECK(ra("  1 \r\n", 0, &d) == 0 && d == 1);
    CHECK(ra("0", 0, &d) == 0 && d == 0);
    CHECK(ra("99999999999999999999", 0, &d) == 0 && d == INT32_MAX);
    // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example)
    time_t t = 784111777;
    CHECK(ra("Sun, 06 Nov 1994 08:49:37 GMT", t - 30, &d) == 0 && d == 30);
    CHECK(ra("Sunday, 06-Nov-94 08:49:37 GMT", t - 30, &d) == 0 && d == 30);
    CHECK(ra("Sun Nov  6 08:49:37 1994", t - 30, &d) == 0 && d == 30);
    CHECK(ra("Sun, 06 Nov 1994 08:49:37 GMT", t + 100, &d) == 0 && d == 0); // past
    d = -7;
    CHECK(ra("", 0, &d) == -1 && d == -7);
    CHECK(ra("   ", 0, &d) == -1);
    CHECK(ra("-5", 0, &d) == -1);
    CHECK(ra("1.5", 0, &d) == -1);
    CHECK(ra("soon", 0, &d) == -1);
    CHECK(http_retry_after_parse("12\0"
                                 "3",
                                 4, 0, &d) == -1);
    char longv[200];
    memset(longv, 'x', sizeof longv);
    CHECK(http_retry_after_parse(longv, sizeof longv, 0, &d) == -1);
    CHECK(http_retry_after_parse("5", 1, 0, &d) == 0 && d == 5); // not NUL-terminated use
    CHECK(http_retry_after_parse("57", 1, 0, &d) == 0 && d == 5);
    CHECK(http_retry_after_parse(NULL, 0, 0, &d) == -1);
}

static int rb(const char *v, const char *list, const char *token)
{
    return http_robots_disallowed(v, strlen(v), list, token);
}

static void test_robots(void)
{
    CHECK(rb("noai", NULL, NULL) == 1);
    CHECK(rb("NoImageAI", NULL, NULL) == 1);
    CHECK(rb("noindex, nofollow", NULL, NULL) == 1);
    CHECK(rb("nofollow,  noimageindex ", NULL, NULL) == 1);
    CHECK(rb("nofollow", NULL, NULL) == 0);
    CHECK(rb("all", NULL, NULL) == 0);
    CHECK(rb("", NULL, NULL) == 0);
    CHECK(rb("noai", "", NULL) == 0);                  // empty list forbids nothing
    CHECK(rb("noindex", "noai,noimageai", NULL) == 0); // custom list
    CHECK(rb("noai", " noai , noimageai ", NULL) == 1);
    CHECK(rb("noaix", NULL, NULL) == 0);
    // user-agent scopes
    CHECK(rb("googlebot: noindex", NULL, NULL) == 0);
    CHECK(rb("otherbot: noindex, nofollow", NULL, NULL) == 0);
    CHECK(rb("pixelmill: noai", NULL, NULL) == 1);
    CHECK(rb("PixelMill: noindex", NULL, NULL) == 1);
    CHECK(rb("mybot: noai", NULL, "mybot") == 1);
    CHECK(rb("mybot: noai", NULL, "otherbot") == 0);
    CHECK(rb("noai, googlebot: nofollow", NULL, NULL) == 1); // before the scope: everyone
    CHECK(rb("googlebot: nofollow, noai", NULL, NULL) == 0); // still googlebot's
    CHECK(rb("googlebot: nofollow, pixelmill: noai", NULL, NULL) == 1);
    // valued directives are not user agents
    CHECK(rb("max-snippet: 20, noindex", NULL, NULL) == 1);
    CHECK(rb("unavailable_after: 25 Jun 2010 15:00:00 PST", NULL, NULL) == 0);
    CHECK(rb("noindex, unavailable_after: 25 Jun 2010 15:00:00 PST", NULL, NULL) == 1);
    CHECK(rb("max-image-preview: large", "max-image-preview", NULL) == 1);
    // odd input
    CHECK(rb(":::,,,", NULL, NULL) == 0);
    CHECK(rb("pixelmill:", NULL, NULL) == 0);
    CHECK(rb(": noai", NULL, NULL) == 1);                          // empty name: not a scope
    CHECK(http_robots_disallowed("noaiXXXX", 4, NULL, NULL) == 1); // length respected
    CHECK(http_robots_disallowed("noa", 3, NULL, NULL) == 0);
    CHECK(http_robots_disallowed(NULL, 0, NULL, NULL) == 0);
}

int main(void)
{
    test_retry_after();
    test_robots();
    return CHECK_DONE();
}
