#include "http_headers.h"

#include <curl/curl.h>
#include <string.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

// Trim whitespace on both sides of [*p, *p + *n).
static void trim(const char **p, size_t *n)
{
    while (*n && is_space(**p)) {
        (*p)++;
        (*n)--;
    }
    while (*n && is_space((*p)[*n - 1]))
        (*n)--;
}

static int eq_nocase(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return 0;
    for (size_t i = 0; i < an; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

int http_retry_after_parse(const char *value, size_t len, time_t now, int64_t *delay_s)
{
    if (!value)
        return -1;
    const char *p = value;
    size_t n = len;
    trim(&p, &n);
    if (n == 0)
        return -1;

    size_t digits = 0;
    while (digits < n && p[digits] >= '0' && p[digits] <= '9')
        digits++;
    if (digits == n) {
        int64_t v = 0;
        for (size_t i = 0; i < n; i++) {
            v = v * 10 + (p[i] - '0');
            if (v > INT32_MAX) {
                v = INT32_MAX;
                break;
            }
        }
        *delay_s = v;
        return 0;
    }

    // An HTTP-date is at most 29 characters in its longest (RFC 850) form; allow slack
    // for odd spacing but refuse anything long or with embedded NULs.
    char buf[64];
    if (n >= sizeof buf || memchr(p, '\0', n))
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    time_t t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    int64_t d = (int64_t)t - (int64_t)now;
    if (d < 0)
        d = 0;
    if (d > INT32_MAX)
        d = INT32_MAX;
    *delay_s = d;
    return 0;
}

// Is [name, name + n) one of the comma-separated names in list?
static int in_list(const char *name, size_t n, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *item = p;
        size_t ilen = len;
        trim(&item, &ilen);
        if (ilen && eq_nocase(item, ilen, name, n))
            return 1;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

static int is_valued_directive(const char *name, size_t n)
{
    static const char *const valued[] = {"max-snippet", "max-image-preview", "max-video-preview",
                                         "unavailable_after"};
    for (size_t i = 0; i < sizeof valued / sizeof valued[0]; i++)
        if (eq_nocase(name, n, valued[i], strlen(valued[i])))
            return 1;
    return 0;
}

static int has_space(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (is_space(p[i]))
            return 1;
    return 0;
}

int http_robots_disallowed(const char *value, size_t len, const char *disallowed,
                           const char *ua_token)
{
    if (!value)
        return 0;
    if (!disallowed)
        disallowed = HTTP_ROBOTS_DEFAULT_DIRECTIVES;
    if (!*disallowed)
        return 0;

    int applies = 1; // directives before any "TOKEN:" apply to every user agent
    size_t pos = 0;
    while (pos <= len) {
        const char *item = value + pos;
        const char *comma = memchr(item, ',', len - pos);
        size_t ilen = comma ? (size_t)(comma - item) : len - pos;
        pos += ilen + 1;
        trim(&item, &ilen);
        if (ilen == 0)
            continue;

        const char *dir = item;
        size_t dlen = ilen;
        const char *colon = memchr(item, ':', ilen);
        if (colon) {
            const char *name = item;
            size_t nlen = (size_t)(colon - item);
            trim(&name, &nlen);
            if (nlen && !has_space(name, nlen) && !is_valued_directive(name, nlen)) {
                // "TOKEN: directive": a user-agent scope for the rest of this value.
                applies =
                    (ua_token && *ua_token && eq_nocase(name, nlen, ua_token, strlen(ua_token))) ||
                    eq_nocase(name, nlen, "pixelmill", 9);
                dir = colon + 1;
                dlen = (size_t)(item + ilen - dir);
                trim(&dir, &dlen);
                // The directive after the token may itself carry a value.
                const char *c2 = memchr(dir, ':', dlen);
                if (c2)
                    dlen = (size_t)(c2 - dir);
                trim(&dir, &dlen);
            } else if (nlen == 0) {
                // ": noai": no name at all; honour the directive after the colon.
                dir = colon + 1;
                dlen = (size_t)(item + ilen - dir);
                const char *c2 = memchr(dir, ':', dlen);
                if (c2)
                    dlen = (size_t)(c2 - dir);
                trim(&dir, &dlen);
            } else {
                // "max-snippet: 20" or garbage: the directive is the part before ':'.
                dir = name;
                dlen = nlen;
            }
        }
        if (dlen && applies && in_list(dir, dlen, disallowed))
            return 1;
    }
    return 0;
}
