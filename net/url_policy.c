#include "url_policy.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void url_policy_init(struct url_policy *p)
{
    memset(p, 0, sizeof *p);
}

const char *url_policy_class_name(enum addr_class c)
{
    switch (c) {
    case ADDR_PUBLIC:
        return "public";
    case ADDR_LOOPBACK:
        return "loopback";
    case ADDR_PRIVATE:
        return "private";
    case ADDR_LINK_LOCAL:
        return "link-local";
    case ADDR_CGNAT:
        return "cgnat";
    case ADDR_UNSPECIFIED:
        return "unspecified";
    case ADDR_MULTICAST:
        return "multicast";
    case ADDR_RESERVED:
        return "reserved";
    case ADDR_INVALID:
        break;
    }
    return "invalid";
}

static enum addr_class classify_v4(uint32_t a)
{
    uint32_t top = a >> 24;
    if (top == 0)
        return ADDR_UNSPECIFIED; // 0.0.0.0/8 "this network"
    if (top == 10)
        return ADDR_PRIVATE;
    if (top == 127)
        return ADDR_LOOPBACK;
    if (a == 0x646464c8u)
        return ADDR_LINK_LOCAL; // 100.100.100.200: a cloud metadata endpoint inside CGNAT
    if ((a & 0xffc00000u) == 0x64400000u)
        return ADDR_CGNAT; // 100.64.0.0/10
    if ((a & 0xffff0000u) == 0xa9fe0000u)
        return ADDR_LINK_LOCAL; // 169.254.0.0/16, incl. 169.254.169.254
    if ((a & 0xfff00000u) == 0xac100000u)
        return ADDR_PRIVATE; // 172.16.0.0/12
    if ((a & 0xffff0000u) == 0xc0a80000u)
        return ADDR_PRIVATE;                // 192.168.0.0/16
    if ((a & 0xffffff00u) == 0xc0000000u || // 192.0.0.0/24 IETF protocol assignments
        (a & 0xffffff00u) == 0xc0000200u || // 192.0.2.0/24 TEST-NET-1
        (a & 0xffffff00u) == 0xc6336400u || // 198.51.100.0/24 TEST-NET-2
        (a & 0xffffff00u) == 0xcb007100u || // 203.0.113.0/24 TEST-NET-3
        (a & 0xfffe0000u) == 0xc6120000u)   // 198.18.0.0/15 benchmarking
        return ADDR_RESERVED;
    if ((a & 0xf0000000u) == 0xe0000000u)
        return ADDR_MULTICAST; // 224.0.0.0/4
    if ((a & 0xf0000000u) == 0xf0000000u)
        return ADDR_RESERVED; // 240.0.0.0/4 and 255.255.255.255
    return ADDR_PUBLIC;
}

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static enum addr_class classify_v6(const uint8_t *b)
{
    static const uint8_t zero[16];
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    if (memcmp(b, zero, 16) == 0)
        return ADDR_UNSPECIFIED;
    if (memcmp(b, zero, 15) == 0 && b[15] == 1)
        return ADDR_LOOPBACK;
    if (memcmp(b, zero, 10) == 0 && b[10] == 0xff && b[11] == 0xff)
        return classify_v4(be32(b + 12)); // IPv4-mapped ::ffff:a.b.c.d
    if (memcmp(b, zero, 12) == 0)
        return ADDR_RESERVED; // deprecated IPv4-compatible ::a.b.c.d
    if (memcmp(b, nat64, 12) == 0)
        return classify_v4(be32(b + 12)); // NAT64 64:ff9b::/96 reaches the embedded v4
    if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1)
        return ADDR_PRIVATE; // 64:ff9b:1::/48 local-use NAT64
    if (b[0] == 0x20 && b[1] == 0x02)
        return classify_v4(be32(b + 2)); // 6to4 2002:V4ADDR::/48
    static const uint8_t ec2_metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, [14] = 0x02, [15] = 0x54};
    if (memcmp(b, ec2_metadata, 16) == 0)
        return ADDR_LINK_LOCAL; // fd00:ec2::254: a cloud metadata endpoint inside fc00::/7
    if ((b[0] & 0xfe) == 0xfc)
        return ADDR_PRIVATE; // fc00::/7 unique local
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return ADDR_LINK_LOCAL; // fe80::/10
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return ADDR_PRIVATE; // fec0::/10 deprecated site-local
    if (b[0] == 0xff)
        return ADDR_MULTICAST;
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return ADDR_RESERVED; // 2001:db8::/32 documentation
    if ((b[0] & 0xe0) != 0x20)
        return ADDR_RESERVED; // outside 2000::/3, the global unicast space
    return ADDR_PUBLIC;
}

// Convert a socket address to 16 bytes (IPv4 as ::ffff:a.b.c.d). Returns 0 or -1.
static int sockaddr_to_addr(const struct sockaddr *sa, size_t len, struct url_addr *out)
{
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof in);
        memset(out->b, 0, 10);
        out->b[10] = out->b[11] = 0xff;
        memcpy(out->b + 12, &in.sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof in6);
        memcpy(out->b, &in6.sin6_addr, 16);
        return 0;
    }
    return -1;
}

enum addr_class url_policy_classify_sockaddr(const struct sockaddr *sa, size_t len)
{
    struct url_addr a;
    if (sockaddr_to_addr(sa, len, &a))
        return ADDR_INVALID;
    return classify_v6(a.b); // mapped IPv4 is classified as IPv4
}

// Parse numeric text the way getaddrinfo(AI_NUMERICHOST) does. Returns 0 or -1.
static int text_to_addr(const char *text, struct url_addr *out)
{
    char buf[128];
    size_t n = text ? strlen(text) : 0;
    if (n == 0 || n >= sizeof buf)
        return -1;
    if (text[0] == '[') {
        if (n < 3 || text[n - 1] != ']')
            return -1;
        memcpy(buf, text + 1, n - 2);
        buf[n - 2] = '\0';
    } else {
        memcpy(buf, text, n + 1);
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_flags = AI_NUMERICHOST;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(buf, NULL, &hints, &res) != 0 || !res)
        return -1;
    int rc = sockaddr_to_addr(res->ai_addr, res->ai_addrlen, out);
    freeaddrinfo(res);
    return rc;
}

enum addr_class url_policy_classify_ip(const char *text)
{
    struct url_addr a;
    if (text_to_addr(text, &a))
        return ADDR_INVALID;
    return classify_v6(a.b);
}

int url_policy_allow_address(struct url_policy *p, const char *ip, struct pm_error *err)
{
    struct url_addr a;
    if (text_to_addr(ip, &a))
        return pm_error_set(err, PM_ERR_USAGE, "'%s' is not a numeric IP address", ip);
    if (p->nallow >= URL_POLICY_ALLOW_MAX)
        return pm_error_set(err, PM_ERR_LIMIT, "more than %d allowed addresses",
                            URL_POLICY_ALLOW_MAX);
    p->allow[p->nallow++] = a;
    return PM_OK;
}

static int addr_allowed(const struct url_policy *p, const struct url_addr *a, enum addr_class *cls)
{
    enum addr_class c = classify_v6(a->b);
    if (cls)
        *cls = c;
    if (c == ADDR_PUBLIC)
        return 1;
    // allow_private_network opens the ranges a self-hosted image server can live in;
    // link-local (cloud metadata endpoints), multicast, unspecified and reserved
    // addresses stay refused unless named one by one on the allow list.
    if (p->allow_private_network && (c == ADDR_LOOPBACK || c == ADDR_PRIVATE || c == ADDR_CGNAT))
        return 1;
    for (size_t i = 0; i < p->nallow; i++)
        if (memcmp(p->allow[i].b, a->b, 16) == 0)
            return 1;
    return 0;
}

int url_policy_sockaddr_allowed(const struct url_policy *p, const struct sockaddr *sa, size_t len,
                                enum addr_class *cls)
{
    struct url_addr a;
    if (sockaddr_to_addr(sa, len, &a)) {
        if (cls)
            *cls = ADDR_INVALID;
        return 0; // never connect to a family we cannot classify
    }
    return addr_allowed(p, &a, cls);
}

int url_policy_ip_allowed(const struct url_policy *p, const char *text, enum addr_class *cls)
{
    struct url_addr a;
    if (text_to_addr(text, &a)) {
        if (cls)
            *cls = ADDR_INVALID;
        return 0;
    }
    return addr_allowed(p, &a, cls);
}

// Length of the RFC 3986 scheme at the start of s (0 if none), not counting ':'.
static size_t scheme_len(const char *s)
{
    size_t i = 0;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
        return 0;
    for (i = 1; s[i]; i++) {
        char c = s[i];
        if (c == ':')
            return i;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '-' || c == '.'))
            return 0;
    }
    return 0;
}

// 1 = http, 2 = https, 0 = another scheme, -1 = no scheme.
static int scheme_kind(const char *url)
{
    size_t n = scheme_len(url);
    if (n == 0)
        return -1;
    if (n == 4 && strncasecmp(url, "http", 4) == 0)
        return 1;
    if (n == 5 && strncasecmp(url, "https", 5) == 0)
        return 2;
    return 0;
}

static void lower_ascii(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s += 32;
}

// Parse an http/https URL into a new CURLU handle. Returns URL_OK or a verdict.
static enum url_verdict parse(const char *url, CURLU **out)
{
    *out = NULL;
    if (!url || strlen(url) > URL_POLICY_MAX)
        return URL_BAD;
    int kind = scheme_kind(url);
    if (kind == 0)
        return URL_BLOCKED_SCHEME;
    if (kind < 0)
        return URL_BAD;
    CURLU *h = curl_url();
    if (!h)
        return URL_BAD;
    if (curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(h);
        return URL_BAD;
    }
    *out = h;
    return URL_OK;
}

enum url_verdict url_policy_check(const struct url_policy *p, const char *url,
                                  struct url_info *info)
{
    CURLU *h;
    enum url_verdict v = parse(url, &h);
    if (v != URL_OK)
        return v;
    char *host = NULL, *port = NULL, *scheme = NULL;
    if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || !host[0]) {
        v = URL_BAD;
        goto done;
    }
    struct url_info tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.https = strcasecmp(scheme, "https") == 0;
    tmp.port = atoi(port);
    const char *hp = host;
    size_t hn = strlen(host);
    if (hp[0] == '[' && hn >= 2 && hp[hn - 1] == ']') {
        hp++;
        hn -= 2;
    }
    if (hn >= sizeof tmp.host) {
        v = URL_BAD;
        goto done;
    }
    memcpy(tmp.host, hp, hn);
    tmp.host[hn] = '\0';
    lower_ascii(tmp.host);
    if (url_policy_classify_ip(tmp.host) != ADDR_INVALID) {
        tmp.host_is_ip = 1;
        if (!url_policy_ip_allowed(p, tmp.host, NULL))
            v = URL_BLOCKED_ADDRESS;
    }
    if (info)
        *info = tmp;
done:
    curl_free(host);
    curl_free(port);
    curl_free(scheme);
    curl_url_cleanup(h);
    return v;
}

// One normalisation pass; *res_out (curl_free) receives the result. `shown` names the
// original URL in messages.
static int normalize_once(const char *url, const char *shown, char **res_out, struct pm_error *err)
{
    *res_out = NULL;
    CURLU *h;
    enum url_verdict v = parse(url, &h);
    if (v == URL_BLOCKED_SCHEME)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "'%s': blocked: scheme", shown);
    if (v != URL_OK)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': not a valid http(s) URL", shown);
    int rc = PM_OK;
    char *host = NULL, *scheme = NULL, *res = NULL;
    curl_url_set(h, CURLUPART_FRAGMENT, NULL, 0);
    curl_url_set(h, CURLUPART_USER, NULL, 0);
    curl_url_set(h, CURLUPART_PASSWORD, NULL, 0);
    curl_url_set(h, CURLUPART_OPTIONS, NULL, 0);
    if (curl_url_get(h, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': not a valid http(s) URL", shown);
        goto done;
    }
    lower_ascii(host);
    lower_ascii(scheme);
    // libcurl percent-decodes the host: "0x%7f.1" becomes "0x<DEL>.1", which it accepts
    // but which is no URL once written out. Refuse control bytes in the decoded host.
    for (const unsigned char *c = (const unsigned char *)host; *c; c++) {
        if (*c <= 0x20 || *c == 0x7f) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': control character in the host", shown);
            goto done;
        }
    }
    if (curl_url_set(h, CURLUPART_HOST, host, 0) != CURLUE_OK ||
        curl_url_set(h, CURLUPART_SCHEME, scheme, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_URL, &res, CURLU_NO_DEFAULT_PORT) != CURLUE_OK) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': not a valid http(s) URL", shown);
        goto done;
    }
    *res_out = res;
    res = NULL;
done:
    curl_free(host);
    curl_free(scheme);
    curl_free(res);
    curl_url_cleanup(h);
    return rc;
}

int url_policy_normalize(const char *url, struct bytebuf *out, struct pm_error *err)
{
    char shown[256];
    url_policy_redact(url ? url : "", shown, sizeof shown);
    // libcurl decodes a percent-encoded host after its numeric-IPv4 rewrite, so
    // "http://0%78f" gives "http://0xf/", which a second pass turns into
    // "http://0.0.0.15/". Normalising must be idempotent (it makes dedupe keys): run
    // passes until the result is stable (at most 3), else refuse. Found by fuzz_url_policy.
    char *cur = NULL, *next = NULL;
    int rc = normalize_once(url, shown, &cur, err);
    for (int pass = 1; rc == PM_OK; pass++) {
        rc = normalize_once(cur, shown, &next, err);
        if (rc != PM_OK) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': not a valid http(s) URL once normalised",
                              shown);
            break;
        }
        if (strcmp(cur, next) == 0)
            break;
        curl_free(cur);
        cur = next;
        next = NULL;
        if (pass == 2) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': normalisation does not settle", shown);
            break;
        }
    }
    if (rc == PM_OK) {
        bytebuf_clear(out);
        rc = bytebuf_append_str(out, cur);
        if (rc)
            pm_error_set(err, rc, "'%s': normalised URL does not fit", shown);
    }
    curl_free(cur);
    curl_free(next);
    return rc;
}

char *url_policy_redact(const char *url, char *out, size_t n)
{
    if (!out || n == 0)
        return out;
    out[0] = '\0';
    if (!url)
        return out;
    const char *auth = strstr(url, "://");
    size_t skip_from = 0, skip_to = 0;
    if (auth) {
        auth += 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = NULL;
        for (size_t i = 0; i < alen; i++)
            if (auth[i] == '@')
                at = auth + i;
        if (at) {
            skip_from = (size_t)(auth - url);
            skip_to = (size_t)(at + 1 - url);
        }
    }
    size_t o = 0;
    for (size_t i = 0; url[i] && o + 1 < n; i++) {
        if (i >= skip_from && i < skip_to)
            continue;
        out[o++] = url[i];
    }
    out[o] = '\0';
    return out;
}
