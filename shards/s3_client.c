#include "s3_client.h"

#include "s3_xml.h"

#include <curl/curl.h>
#include <libxml/parser.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

// Error answers and XML listings are small; a bigger body is not S3 talking.
#define S3_XML_MAX (16u << 20)
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_client {
    struct s3_config cfg;
    CURL *easy;      // reused for the sequential requests (keeps the connection)
    char *userpwd;   // "key:secret" for libcurl only; never printed
    char sigv4[160]; // "aws:amz:REGION:s3"
    unsigned rng;    // backoff jitter
};

// ---------------------------------------------------------------- small helpers

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static int global_ok;

static void global_init(void)
{
    global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    xmlInitParser();
}

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

// Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
static double backoff_s(struct s3_client *c, int attempt)
{
    double cap = c->cfg.backoff_base_s;
    for (int i = 1; i < attempt && cap < c->cfg.backoff_max_s; i++)
        cap *= 2;
    if (cap > c->cfg.backoff_max_s)
        cap = c->cfg.backoff_max_s;
    return cap * ((double)(rand_r(&c->rng) % 10001) / 10000.0);
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, n, md, &mdlen, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

// Percent-encode as SigV4 canonical form wants; '/' kept when keep_slash.
static int uri_encode(struct bytebuf *b, const char *s, bool keep_slash)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int rc = (unreserved(*p) || (keep_slash && *p == '/')) ? bytebuf_append(b, p, 1)
                                                               : bytebuf_printf(b, "%%%02X", *p);
        if (rc != PM_OK)
            return rc;
    }
    return PM_OK;
}

// ---------------------------------------------------------------- configuration

static char *env_dup(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strdup(v) : NULL;
}

int s3_config_init_env(struct s3_config *cfg, const char *endpoint, struct pm_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->access_key = env_dup("AWS_ACCESS_KEY_ID");
    cfg->secret_key = env_dup("AWS_SECRET_ACCESS_KEY");
    cfg->session_token = env_dup("AWS_SESSION_TOKEN");
    cfg->region = env_dup("AWS_REGION");
    if (!cfg->region)
        cfg->region = env_dup("AWS_DEFAULT_REGION");
    if (!cfg->region)
        cfg->region = strdup("us-east-1");
    cfg->endpoint = endpoint && *endpoint ? strdup(endpoint) : env_dup("AWS_ENDPOINT_URL");
    cfg->path_style = -1;
    const char *ps = getenv("PIXELMILL_S3_PATH_STYLE");
    if (ps && *ps)
        cfg->path_style = atoi(ps) != 0;
    cfg->max_attempts = 5;
    cfg->backoff_base_s = 0.2;
    cfg->backoff_max_s = 10;
    cfg->part_size = 16u << 20;
    cfg->parts_in_flight = 4;
    cfg->connect_timeout_s = 10;
    cfg->low_speed_time_s = 30;
    if (!cfg->region || (endpoint && *endpoint && !cfg->endpoint)) {
        s3_config_release(cfg);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading the S3 settings");
    }
    if (cfg->endpoint && strncmp(cfg->endpoint, "http://", 7) != 0 &&
        strncmp(cfg->endpoint, "https://", 8) != 0) {
        int rc = pm_error_set(err, PM_ERR_USAGE,
                              "S3 endpoint '%s' is not an http:// or https:// URL", cfg->endpoint);
        s3_config_release(cfg);
        return rc;
    }
    if (!cfg->access_key != !cfg->secret_key) {
        s3_config_release(cfg);
        return pm_error_set(err, PM_ERR_USAGE,
                            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
    }
    return PM_OK;
}

static void wipe_free(char *s)
{
    if (s) {
        volatile char *p = s;
        while (*p)
            *p++ = 0;
        free(s);
    }
}

void s3_config_release(struct s3_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->access_key);
    wipe_free(cfg->secret_key);
    wipe_free(cfg->session_token);
    free(cfg->region);
    free(cfg->endpoint);
    memset(cfg, 0, sizeof *cfg);
}

int s3_url_split(const char *url, char **bucket, char **prefix, struct pm_error *err)
{
    *bucket = *prefix = NULL;
    if (strncmp(url, "s3://", 5) != 0)
        return pm_error_set(err, PM_ERR_USAGE, "'%s' is not an s3:// URL", url);
    const char *b = url + 5;
    const char *slash = strchr(b, '/');
    size_t blen = slash ? (size_t)(slash - b) : strlen(b);
    if (blen == 0)
        return pm_error_set(err, PM_ERR_USAGE, "S3 URL '%s' has no bucket", url);
    for (size_t i = 0; i < blen; i++)
        if (!(unreserved((unsigned char)b[i])))
            return pm_error_set(err, PM_ERR_USAGE, "S3 URL '%s' has an invalid bucket name", url);
    *bucket = strndup(b, blen);
    const char *p = slash ? slash + 1 : "";
    while (*p == '/')
        p++;
    *prefix = strdup(p);
    if (!*bucket || !*prefix) {
        free(*bucket);
        free(*prefix);
        *bucket = *prefix = NULL;
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    return PM_OK;
}

// ---------------------------------------------------------------- client

int s3_client_create(const struct s3_config *cfg, struct s3_client **out, struct pm_error *err)
{
    *out = NULL;
    pthread_once(&global_once, global_init);
    if (!global_ok)
        return pm_error_set(err, PM_ERR_INTERNAL, "curl_global_init failed");
    struct s3_client *c = calloc(1, sizeof *c);
    if (!c)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory creating an S3 client");
    c->cfg = *cfg;
    c->cfg.access_key = xstrdup(cfg->access_key);
    c->cfg.secret_key = xstrdup(cfg->secret_key);
    c->cfg.session_token = xstrdup(cfg->session_token);
    c->cfg.region = xstrdup(cfg->region ? cfg->region : "us-east-1");
    c->cfg.endpoint = xstrdup(cfg->endpoint);
    if (c->cfg.path_style < 0)
        c->cfg.path_style = c->cfg.endpoint != NULL;
    if (c->cfg.max_attempts < 1)
        c->cfg.max_attempts = 1;
    if (c->cfg.parts_in_flight < 1)
        c->cfg.parts_in_flight = 1;
    if (c->cfg.part_size == 0)
        c->cfg.part_size = 16u << 20;
    if (c->cfg.connect_timeout_s <= 0)
        c->cfg.connect_timeout_s = 10;
    if (c->cfg.low_speed_time_s <= 0)
        c->cfg.low_speed_time_s = 30;
    c->rng = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)c;
    snprintf(c->sigv4, sizeof c->sigv4, "aws:amz:%s:s3", c->cfg.region);
    if (c->cfg.access_key) {
        size_t n = strlen(c->cfg.access_key) + strlen(c->cfg.secret_key) + 2;
        c->userpwd = malloc(n);
        if (c->userpwd)
            snprintf(c->userpwd, n, "%s:%s", c->cfg.access_key, c->cfg.secret_key);
    }
    c->easy = curl_easy_init();
    if (!c->easy || !c->cfg.region || (cfg->access_key && !c->userpwd) ||
        (cfg->endpoint && !c->cfg.endpoint)) {
        s3_client_free(c);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory creating an S3 client");
    }
    *out = c;
    return PM_OK;
}

void s3_client_free(struct s3_client *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    wipe_free(c->userpwd);
    s3_config_release(&c->cfg);
    free(c);
}

const struct s3_config *s3_client_config(const struct s3_client *c)
{
    return &c->cfg;
}

// ---------------------------------------------------------------- one request

struct s3_req {
    const char *method; // GET PUT POST HEAD DELETE
    const char *bucket;
    const char *key;   // NULL: the bucket itself
    const char *query; // canonical (sorted, encoded, "k=v&k=v") or NULL
    const void *body;
    size_t body_len;
    const char *content_type;
    // GET into a sink
    s3_sink_fn sink;
    void *sink_ctx;
    uint64_t want_start, want_end; // inclusive range wanted; want_end UINT64_MAX: to the end
    bool ranged;
    char if_match[160];
    uint64_t delivered; // bytes given to the sink (over all attempts)
    uint64_t pos;       // position in the object of the next body byte of this attempt
    bool sink_stopped;
    // response of the last attempt
    long status;
    struct bytebuf resp; // body of an answer that is not for the sink
    char etag[160];
    uint64_t total; // object size learnt from Content-Range / Content-Length (0 unknown)
    // transfer state
    size_t upload_pos;
    struct curl_slist *hdrs;
    char sha_hex[65];
    char errbuf[CURL_ERROR_SIZE];
    char *url;
};

static void req_release(struct s3_req *r)
{
    bytebuf_release(&r->resp);
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    free(r->url);
    r->url = NULL;
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct s3_req *r = ud;
    size_t want = size * nitems;
    size_t left = r->body_len - r->upload_pos;
    if (want > left)
        want = left;
    if (want)
        memcpy(buf, (const char *)r->body + r->upload_pos, want);
    r->upload_pos += want;
    return want;
}

static int seek_cb(void *ud, curl_off_t off, int origin)
{
    struct s3_req *r = ud;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
        return CURL_SEEKFUNC_FAIL;
    r->upload_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct s3_req *r = ud;
    size_t n = size * nmemb;
    if (!r->sink || r->status < 200 || r->status > 299) {
        if (bytebuf_append(&r->resp, data, n) != PM_OK)
            return 0; // CURLE_WRITE_ERROR: an error body this large is not S3
        return n;
    }
    // deliver the part of [pos, pos+n) that lies inside [want_start+delivered, want_end]
    uint64_t next = r->want_start + r->delivered;
    uint64_t lo = r->pos, hi = r->pos + n; // [lo, hi)
    r->pos = hi;
    if (hi <= next)
        return n;
    uint64_t from = lo > next ? lo : next;
    if (from > next) // a gap: the server skipped bytes we need
        return 0;
    uint64_t to = hi;
    if (r->want_end != UINT64_MAX && to > r->want_end + 1)
        to = r->want_end + 1;
    if (to > from) {
        if (r->sink(r->sink_ctx, data + (from - lo), (size_t)(to - from)) != 0) {
            r->sink_stopped = true;
            return 0;
        }
        r->delivered += to - from;
    }
    return n;
}

static bool hdr_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
    size_t k = strlen(name);
    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return false;
    const char *v = line + k + 1;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    *val = v;
    *vlen = (size_t)(end - v);
    return true;
}

static size_t header_cb(char *line, size_t size, size_t nitems, void *ud)
{
    struct s3_req *r = ud;
    size_t n = size * nitems;
    const char *v;
    size_t vl;
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        // a new response (after a 100 Continue or a redirect): parse its status
        const char *sp = memchr(line, ' ', n);
        r->status = sp && (size_t)(sp - line) + 4 <= n ? strtol(sp + 1, NULL, 10) : 0;
        if (r->status >= 200 && r->status <= 299 && r->sink) {
            r->pos = r->status == 206 ? r->want_start + r->delivered : 0;
        }
    } else if (hdr_is(line, n, "ETag", &v, &vl)) {
        if (vl < sizeof r->etag) {
            memcpy(r->etag, v, vl);
            r->etag[vl] = 0;
        }
    } else if (r->status == 200 && r->sink && hdr_is(line, n, "Content-Length", &v, &vl)) {
        // a whole-object answer: its length is the object's size
        char tmp[32];
        if (vl < sizeof tmp) {
            memcpy(tmp, v, vl);
            tmp[vl] = 0;
            r->total = strtoull(tmp, NULL, 10);
        }
    } else if (hdr_is(line, n, "Content-Range", &v, &vl)) {
        // "bytes a-b/total": the first byte and the size of the object
        char tmp[128];
        if (vl < sizeof tmp) {
            memcpy(tmp, v, vl);
            tmp[vl] = 0;
            unsigned long long a, b, t;
            if (sscanf(tmp, "bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
                r->pos = a;
                r->total = t;
            }
        }
    }
    return n;
}

static int build_url(struct s3_client *c, struct s3_req *r, struct pm_error *err)
{
    struct bytebuf u;
    bytebuf_init(&u, 0);
    const char *ep = c->cfg.endpoint;
    char defep[256];
    if (!ep) {
        snprintf(defep, sizeof defep, "https://s3.%s.amazonaws.com", c->cfg.region);
        ep = defep;
    }
    size_t eplen = strlen(ep);
    while (eplen > 0 && ep[eplen - 1] == '/')
        eplen--;
    int rc = PM_OK;
    // a bucket name with dots does not fit the TLS wildcard of virtual-hosted names
    if (c->cfg.path_style || strchr(r->bucket, '.')) {
        rc = bytebuf_append(&u, ep, eplen);
        if (rc == PM_OK)
            rc = bytebuf_printf(&u, "/%s", r->bucket);
    } else {
        const char *host = strstr(ep, "://");
        host = host ? host + 3 : ep;
        rc = bytebuf_append(&u, ep, (size_t)(host - ep));
        if (rc == PM_OK)
            rc = bytebuf_printf(&u, "%s.", r->bucket);
        if (rc == PM_OK)
            rc = bytebuf_append(&u, host, eplen - (size_t)(host - ep));
    }
    if (rc == PM_OK && (r->key || !(c->cfg.path_style || strchr(r->bucket, '.'))))
        rc = bytebuf_append(&u, "/", 1);
    if (rc == PM_OK && r->key)
        rc = uri_encode(&u, r->key, true);
    if (rc == PM_OK && r->query)
        rc = bytebuf_printf(&u, "?%s", r->query);
    if (rc != PM_OK) {
        bytebuf_release(&u);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    free(r->url);
    r->url = u.data;
    return PM_OK;
}

// Prepare `easy` for one attempt of `r` (the response fields are reset).
static int req_setup(struct s3_client *c, CURL *easy, struct s3_req *r, struct pm_error *err)
{
    curl_easy_reset(easy);
    curl_slist_free_all(r->hdrs);
    r->hdrs = NULL;
    bytebuf_release(&r->resp);
    bytebuf_init(&r->resp, S3_XML_MAX);
    r->status = 0;
    r->upload_pos = 0;
    r->errbuf[0] = 0;
    r->pos = 0;
    if (!r->url) {
        int brc = build_url(c, r, err);
        if (brc != PM_OK)
            return brc;
    }
    if (!r->sha_hex[0]) {
        if (r->body_len)
            sha256_hex(r->body, r->body_len, r->sha_hex);
        else
            snprintf(r->sha_hex, sizeof r->sha_hex, "%s", S3_EMPTY_SHA256);
    }
    char h[320];
    struct curl_slist *l = NULL, *t;
#define ADD_HDR(s)                                                                                 \
    do {                                                                                           \
        t = curl_slist_append(l, (s));                                                             \
        if (!t)                                                                                    \
            goto nomem;                                                                            \
        l = t;                                                                                     \
    } while (0)
    snprintf(h, sizeof h, "x-amz-content-sha256: %s", r->sha_hex);
    ADD_HDR(h);
    if (c->cfg.session_token) {
        struct bytebuf tok;
        bytebuf_init(&tok, 0);
        if (bytebuf_printf(&tok, "x-amz-security-token: %s", c->cfg.session_token) != PM_OK) {
            bytebuf_release(&tok);
            goto nomem;
        }
        t = curl_slist_append(l, tok.data);
        // wipe our copy; libcurl has its own
        memset(tok.data, 0, tok.len);
        bytebuf_release(&tok);
        if (!t)
            goto nomem;
        l = t;
    }
    if (r->content_type) {
        snprintf(h, sizeof h, "Content-Type: %s", r->content_type);
        ADD_HDR(h);
    }
    if (r->if_match[0]) {
        snprintf(h, sizeof h, "If-Match: %s", r->if_match);
        ADD_HDR(h);
    }
#undef ADD_HDR
    r->hdrs = l;

    curl_easy_setopt(easy, CURLOPT_URL, r->url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "pixelmill-s3");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, c->cfg.connect_timeout_s);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, c->cfg.low_speed_time_s);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, r);
    if (c->userpwd) {
        curl_easy_setopt(easy, CURLOPT_USERPWD, c->userpwd);
        curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, c->sigv4);
    }
    if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(easy, CURLOPT_READFUNCTION, read_cb);
        curl_easy_setopt(easy, CURLOPT_READDATA, r);
        curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, seek_cb);
        curl_easy_setopt(easy, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
        // no "Expect: 100-continue" round trip
        curl_easy_setopt(easy, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "DELETE") == 0) {
        curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else if (r->sink) {
        uint64_t start = r->want_start + r->delivered;
        if (r->ranged || start > 0) {
            char range[80];
            if (r->want_end == UINT64_MAX)
                snprintf(range, sizeof range, "%llu-", (unsigned long long)start);
            else
                snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)start,
                         (unsigned long long)r->want_end);
            curl_easy_setopt(easy, CURLOPT_RANGE, range);
        }
    }
    return PM_OK;
nomem:
    curl_slist_free_all(l);
    return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
}

// ---------------------------------------------------------------- outcome of an attempt

enum outcome { OUT_OK, OUT_RETRY, OUT_FAIL };

static const char *reason_phrase(long status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 416:
        return "Range Not Satisfiable";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "error";
    }
}

/*
 * Classify a finished attempt and describe it in `why` ("503 SlowDown", "Connection
 * reset by peer"). `pmcode` gets the error code to report if this is final.
 */
static enum outcome classify(CURLcode cc, struct s3_req *r, char *why, size_t cap, int *pmcode)
{
    *pmcode = PM_ERR_NETWORK;
    if (cc != CURLE_OK) {
        if (r->sink_stopped) {
            snprintf(why, cap, "stopped by the reader");
            *pmcode = PM_ERR_INTERRUPTED;
            return OUT_FAIL;
        }
        if (cc == CURLE_WRITE_ERROR && (!r->sink || r->status < 200 || r->status > 299)) {
            snprintf(why, cap, "answer body larger than %u bytes", S3_XML_MAX);
            *pmcode = PM_ERR_FORMAT;
            return OUT_FAIL;
        }
        snprintf(why, cap, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
        switch (cc) {
        case CURLE_OUT_OF_MEMORY:
            *pmcode = PM_ERR_NOMEM;
            return OUT_FAIL;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_NOT_BUILT_IN:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_PEER_FAILED_VERIFICATION:
            *pmcode = PM_ERR_USAGE;
            return OUT_FAIL;
        default:
            return OUT_RETRY; // resets, timeouts, refused, truncated bodies...
        }
    }
    char code[96] = "";
    if (r->resp.len)
        s3_xml_error_code(r->resp.data, r->resp.len, code, sizeof code);
    if (r->status >= 200 && r->status <= 299) {
        if (code[0] && r->resp.len && !r->sink) {
            // CompleteMultipartUpload can answer 200 with an <Error> body
            snprintf(why, cap, "%ld %s", r->status, code);
            return OUT_RETRY;
        }
        return OUT_OK;
    }
    snprintf(why, cap, "%ld %s", r->status, code[0] ? code : reason_phrase(r->status));
    if (r->status >= 500 || r->status == 408 || r->status == 429 ||
        strcmp(code, "RequestTimeout") == 0 || strcmp(code, "SlowDown") == 0)
        return OUT_RETRY;
    if (r->status == 404 || strcmp(code, "NoSuchKey") == 0 || strcmp(code, "NoSuchBucket") == 0 ||
        strcmp(code, "NoSuchUpload") == 0)
        *pmcode = PM_ERR_NOT_FOUND;
    else
        *pmcode = PM_ERR_IO;
    return OUT_FAIL;
}

/*
 * Run `r` on the client's easy handle with retries. `verb` and the object name go into
 * the error message: "cannot VERB 's3://b/k': WHY after N attempts".
 */
static int req_run(struct s3_client *c, struct s3_req *r, const char *verb, struct pm_error *err)
{
    char why[CURL_ERROR_SIZE + 128] = "";
    int pmcode = PM_ERR_NETWORK;
    int attempt;
    for (attempt = 1; attempt <= c->cfg.max_attempts; attempt++) {
        if (r->sink && r->want_end != UINT64_MAX && r->want_start + r->delivered > r->want_end)
            return PM_OK; // everything arrived before the connection broke
        if (r->sink && r->total && r->want_start + r->delivered >= r->total && r->delivered)
            return PM_OK;
        int src = req_setup(c, c->easy, r, err);
        if (src != PM_OK)
            return src;
        CURLcode cc = curl_easy_perform(c->easy);
        if (cc == CURLE_OK && r->status == 0) {
            long st = 0;
            curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &st);
            r->status = st;
        }
        enum outcome o = classify(cc, r, why, sizeof why, &pmcode);
        if (o == OUT_OK)
            return PM_OK;
        if (o == OUT_FAIL)
            break;
        if (r->sink && r->delivered && !r->if_match[0] && r->etag[0])
            snprintf(r->if_match, sizeof r->if_match, "%s", r->etag); // resume the same object
        if (attempt < c->cfg.max_attempts)
            sleep_s(backoff_s(c, attempt));
    }
    if (attempt > c->cfg.max_attempts)
        attempt = c->cfg.max_attempts;
    return pm_error_set(err, pmcode, "cannot %s 's3://%s/%s': %s after %d attempt%s", verb,
                        r->bucket, r->key ? r->key : "", why, attempt, attempt == 1 ? "" : "s");
}

// ---------------------------------------------------------------- simple operations

int s3_client_put(struct s3_client *c, const char *bucket, const char *key, const void *data,
                  size_t n, struct pm_error *err)
{
    struct s3_req r = {.method = "PUT", .bucket = bucket, .key = key, .body = data, .body_len = n};
    int rc = req_run(c, &r, "put", err);
    req_release(&r);
    return rc;
}

int s3_client_get(struct s3_client *c, const char *bucket, const char *key, uint64_t off,
                  uint64_t len, s3_sink_fn sink, void *ctx, uint64_t *got, struct pm_error *err)
{
    if (got)
        *got = 0;
    if (len == 0)
        return PM_OK;
    struct s3_req r = {.method = "GET",
                       .bucket = bucket,
                       .key = key,
                       .sink = sink,
                       .sink_ctx = ctx,
                       .want_start = off};
    r.want_end = len == UINT64_MAX || off + len < off ? UINT64_MAX : off + len - 1;
    r.ranged = off > 0 || r.want_end != UINT64_MAX;
    int rc = req_run(c, &r, "get", err);
    if (got)
        *got = r.delivered;
    req_release(&r);
    return rc;
}

int s3_client_head(struct s3_client *c, const char *bucket, const char *key, uint64_t *size,
                   struct pm_error *err)
{
    struct s3_req r = {.method = "HEAD", .bucket = bucket, .key = key};
    int rc = req_run(c, &r, "stat", err);
    if (rc == PM_OK && size) {
        curl_off_t cl = -1;
        curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (cl < 0)
            rc = pm_error_set(err, PM_ERR_FORMAT, "cannot stat 's3://%s/%s': no Content-Length",
                              bucket, key);
        *size = cl < 0 ? 0 : (uint64_t)cl;
    }
    req_release(&r);
    return rc;
}

int s3_client_delete(struct s3_client *c, const char *bucket, const char *key, struct pm_error *err)
{
    struct s3_req r = {.method = "DELETE", .bucket = bucket, .key = key};
    int rc = req_run(c, &r, "delete", err);
    req_release(&r);
    return rc;
}

// Build "name=encoded(value)" pairs into a canonical query; pairs must come sorted.
static int query_add(struct bytebuf *q, const char *name, const char *value)
{
    if (q->len && bytebuf_append(q, "&", 1) != PM_OK)
        return PM_ERR_NOMEM;
    if (bytebuf_printf(q, "%s=", name) != PM_OK)
        return PM_ERR_NOMEM;
    return uri_encode(q, value, false);
}

static int parse_fail(struct pm_error *err, int code, const char *verb, const char *bucket,
                      const char *prefix, const char *what)
{
    return pm_error_set(err, code, "cannot %s 's3://%s/%s': %s", verb, bucket, prefix, what);
}

int s3_client_list(struct s3_client *c, const char *bucket, const char *prefix, s3_list_fn fn,
                   void *ctx, struct pm_error *err)
{
    char *token = NULL;
    int rc = PM_OK;
    for (;;) {
        struct bytebuf q;
        bytebuf_init(&q, 0);
        if ((token && query_add(&q, "continuation-token", token) != PM_OK) ||
            query_add(&q, "list-type", "2") != PM_OK || query_add(&q, "prefix", prefix) != PM_OK) {
            bytebuf_release(&q);
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        struct s3_req r = {.method = "GET", .bucket = bucket, .query = q.data};
        rc = req_run(c, &r, "list", err);
        free(token);
        token = NULL;
        if (rc == PM_OK) {
            const char *why;
            rc = s3_xml_list_objects(r.resp.data, r.resp.len, fn, ctx, &token, &why);
            if (rc != PM_OK)
                rc = parse_fail(err, rc, "list", bucket, prefix, why);
        }
        req_release(&r);
        bytebuf_release(&q);
        if (rc != PM_OK || !token)
            break;
    }
    free(token);
    return rc;
}

int s3_client_list_uploads(struct s3_client *c, const char *bucket, const char *prefix,
                           s3_upload_list_fn fn, void *ctx, struct pm_error *err)
{
    char *key_marker = NULL, *id_marker = NULL;
    int rc = PM_OK;
    for (;;) {
        struct bytebuf q;
        bytebuf_init(&q, 0);
        if ((key_marker && query_add(&q, "key-marker", key_marker) != PM_OK) ||
            query_add(&q, "prefix", prefix) != PM_OK ||
            (id_marker && query_add(&q, "upload-id-marker", id_marker) != PM_OK) ||
            query_add(&q, "uploads", "") != PM_OK) {
            bytebuf_release(&q);
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        free(key_marker);
        free(id_marker);
        key_marker = id_marker = NULL;
        struct s3_req r = {.method = "GET", .bucket = bucket, .query = q.data};
        rc = req_run(c, &r, "list uploads of", err);
        if (rc == PM_OK) {
            const char *why;
            rc = s3_xml_list_uploads(r.resp.data, r.resp.len, fn, ctx, &key_marker, &id_marker,
                                     &why);
            if (rc != PM_OK)
                rc = parse_fail(err, rc, "list uploads of", bucket, prefix, why);
        }
        req_release(&r);
        bytebuf_release(&q);
        if (rc != PM_OK || !key_marker)
            break;
    }
    free(key_marker);
    free(id_marker);
    return rc;
}

int s3_client_abort_upload(struct s3_client *c, const char *bucket, const char *key,
                           const char *upload_id, struct pm_error *err)
{
    struct bytebuf q;
    bytebuf_init(&q, 0);
    if (query_add(&q, "uploadId", upload_id) != PM_OK) {
        bytebuf_release(&q);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    struct s3_req r = {.method = "DELETE", .bucket = bucket, .key = key, .query = q.data};
    int rc = req_run(c, &r, "abort the upload of", err);
    if (rc == PM_ERR_NOT_FOUND)
        rc = PM_OK;
    req_release(&r);
    bytebuf_release(&q);
    return rc;
}

struct sweep_ctx {
    char **keys, **ids;
    size_t n, cap;
    double min_age_s;
    bool nomem;
};

static double iso8601_age_s(const char *s)
{
    struct tm tm = {0};
    int y, mo, d, h, mi;
    double sec;
    if (sscanf(s, "%d-%d-%dT%d:%d:%lf", &y, &mo, &d, &h, &mi, &sec) != 6)
        return 1e18; // unknown: old enough
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = (int)sec;
    return difftime(time(NULL), timegm(&tm));
}

static int sweep_collect(void *ctx, const char *key, const char *id, const char *initiated)
{
    struct sweep_ctx *s = ctx;
    if (s->min_age_s > 0 && iso8601_age_s(initiated) < s->min_age_s)
        return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        char **k = realloc(s->keys, cap * sizeof *k);
        if (k)
            s->keys = k;
        char **i = realloc(s->ids, cap * sizeof *i);
        if (i)
            s->ids = i;
        if (!k || !i) {
            s->nomem = true;
            return 1;
        }
        s->cap = cap;
    }
    s->keys[s->n] = strdup(key);
    s->ids[s->n] = strdup(id);
    if (!s->keys[s->n] || !s->ids[s->n]) {
        free(s->keys[s->n]);
        free(s->ids[s->n]);
        s->nomem = true;
        return 1;
    }
    s->n++;
    return 0;
}

int s3_client_sweep_uploads(struct s3_client *c, const char *bucket, const char *prefix,
                            double min_age_s, size_t *aborted, struct pm_error *err)
{
    if (aborted)
        *aborted = 0;
    struct sweep_ctx s = {.min_age_s = min_age_s};
    int rc = s3_client_list_uploads(c, bucket, prefix, sweep_collect, &s, err);
    if (rc == PM_OK && s.nomem)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < s.n; i++) {
        if (rc == PM_OK) {
            rc = s3_client_abort_upload(c, bucket, s.keys[i], s.ids[i], err);
            if (rc == PM_OK && aborted)
                (*aborted)++;
        }
        free(s.keys[i]);
        free(s.ids[i]);
    }
    free(s.keys);
    free(s.ids);
    return rc;
}

// ---------------------------------------------------------------- multipart upload

struct part_slot {
    CURL *easy;
    char *buf;
    size_t cap;
    struct s3_req req;
    int part_no;
    int attempt;
    bool busy;            // holds a part not yet uploaded
    bool running;         // in the multi handle
    struct bytebuf query; // "partNumber=N&uploadId=..."
    double retry_at;      // when not running: start at this time
};

struct s3_upload {
    struct s3_client *c;
    char *bucket, *key, *upload_id;
    CURLM *multi;
    struct part_slot *slots;
    int nslots;
    char *cur; // the part being filled
    size_t cur_len;
    int nparts;   // parts handed to slots so far
    char **etags; // etags[i]: part i+1
    uint64_t bytes;
    uint64_t since_pump; // bytes written since the last non-blocking drive
    bool failed, completed, aborted;
    struct pm_error fail;
};

static int upload_fail(struct s3_upload *u, struct pm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int upload_fail(struct s3_upload *u, struct pm_error *err, int code, const char *fmt, ...)
{
    if (!u->failed) {
        u->failed = true;
        va_list ap;
        va_start(ap, fmt);
        char msg[PM_ERROR_MSG_MAX];
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        pm_error_set(&u->fail, code, "%s", msg);
    }
    s3_upload_abort(u);
    return pm_error_set(err, u->fail.code, "%s", u->fail.msg);
}

int s3_upload_create(struct s3_client *c, const char *bucket, const char *key,
                     struct s3_upload **out, struct pm_error *err)
{
    *out = NULL;
    if (c->cfg.part_size < S3_PART_SIZE_MIN)
        return pm_error_set(err, PM_ERR_USAGE, "S3 part size %zu is below the minimum of %u",
                            c->cfg.part_size, S3_PART_SIZE_MIN);
    struct s3_upload *u = calloc(1, sizeof *u);
    if (!u)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    u->c = c;
    u->bucket = strdup(bucket);
    u->key = strdup(key);
    u->nslots = c->cfg.parts_in_flight;
    u->slots = calloc((size_t)u->nslots, sizeof *u->slots);
    u->etags = calloc(S3_PARTS_MAX, sizeof *u->etags);
    u->multi = curl_multi_init();
    if (!u->bucket || !u->key || !u->slots || !u->etags || !u->multi) {
        u->aborted = true;
        s3_upload_free(u);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    struct s3_req r = {.method = "POST", .bucket = bucket, .key = key, .query = "uploads="};
    int rc = req_run(c, &r, "start an upload of", err);
    if (rc == PM_OK) {
        u->upload_id = s3_xml_upload_id(r.resp.data, r.resp.len);
        if (!u->upload_id)
            rc = pm_error_set(err, PM_ERR_FORMAT,
                              "cannot start an upload of 's3://%s/%s': no UploadId in the answer",
                              bucket, key);
    }
    req_release(&r);
    if (rc != PM_OK) {
        if (u->upload_id)
            s3_client_abort_upload(c, bucket, key, u->upload_id, NULL);
        u->aborted = true;
        s3_upload_free(u);
        return rc;
    }
    *out = u;
    return PM_OK;
}

static int slot_start(struct s3_upload *u, struct part_slot *s, struct pm_error *err)
{
    if (!s->easy && !(s->easy = curl_easy_init()))
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    int rc = req_setup(u->c, s->easy, &s->req, err);
    if (rc != PM_OK)
        return rc;
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    if (curl_multi_add_handle(u->multi, s->easy) != CURLM_OK)
        return pm_error_set(err, PM_ERR_INTERNAL, "curl_multi_add_handle failed");
    s->attempt++;
    s->running = true;
    return PM_OK;
}

enum drive_mode {
    DRIVE_POLL, // one pass without waiting
    DRIVE_SLOT, // until a slot is free
    DRIVE_ALL,  // until no slot is busy
};

/*
 * Drive the transfers (see enum drive_mode). Retries parts after their backoff. Returns
 * PM_OK or the first final failure (the caller aborts).
 */
static int upload_drive(struct s3_upload *u, enum drive_mode mode, struct pm_error *err)
{
    for (;;) {
        int busy = 0;
        double next_retry = 0;
        double now = now_mono();
        for (int i = 0; i < u->nslots; i++) {
            struct part_slot *s = &u->slots[i];
            if (!s->busy)
                continue;
            busy++;
            if (!s->running) {
                if (s->retry_at <= now) {
                    int rc = slot_start(u, s, err);
                    if (rc != PM_OK)
                        return rc;
                } else if (next_retry == 0 || s->retry_at < next_retry) {
                    next_retry = s->retry_at;
                }
            }
        }
        if ((mode == DRIVE_ALL && busy == 0) || (mode == DRIVE_SLOT && busy < u->nslots))
            return PM_OK;
        int running = 0;
        if (curl_multi_perform(u->multi, &running) != CURLM_OK)
            return pm_error_set(err, PM_ERR_INTERNAL, "curl_multi_perform failed");
        CURLMsg *m;
        int left;
        bool progressed = false;
        while ((m = curl_multi_info_read(u->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct part_slot *s = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            CURLcode cc = m->data.result;
            curl_multi_remove_handle(u->multi, m->easy_handle);
            s->running = false;
            progressed = true;
            if (cc == CURLE_OK && s->req.status == 0) {
                long st = 0;
                curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &st);
                s->req.status = st;
            }
            char why[CURL_ERROR_SIZE + 128];
            int pmcode;
            enum outcome o = classify(cc, &s->req, why, sizeof why, &pmcode);
            if (o == OUT_OK && !s->req.etag[0]) {
                o = OUT_FAIL;
                pmcode = PM_ERR_FORMAT;
                snprintf(why, sizeof why, "no ETag in the answer");
            }
            if (o == OUT_OK) {
                u->etags[s->part_no - 1] = strdup(s->req.etag);
                if (!u->etags[s->part_no - 1])
                    return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                s->busy = false;
                req_release(&s->req);
                continue;
            }
            if (o == OUT_RETRY && s->attempt < u->c->cfg.max_attempts) {
                s->retry_at = now_mono() + backoff_s(u->c, s->attempt);
                continue;
            }
            return pm_error_set(
                err, pmcode, "cannot put 's3://%s/%s' (part %d): %s after %d attempt%s", u->bucket,
                u->key, s->part_no, why, s->attempt, s->attempt == 1 ? "" : "s");
        }
        if (mode == DRIVE_POLL)
            return PM_OK;
        if (!progressed) {
            int ms = 100;
            if (next_retry > 0) {
                int w = (int)((next_retry - now_mono()) * 1000) + 1;
                if (w < ms)
                    ms = w < 1 ? 1 : w;
            }
            if (running == 0)
                sleep_s(ms / 1000.0);
            else
                curl_multi_poll(u->multi, NULL, 0, ms, NULL);
        }
    }
}

// Hand the current buffer to a free slot as the next part and start it.
static int upload_submit(struct s3_upload *u, struct pm_error *err)
{
    int rc = upload_drive(u, DRIVE_SLOT, err);
    if (rc != PM_OK)
        return rc;
    if (u->nparts >= S3_PARTS_MAX)
        return pm_error_set(err, PM_ERR_LIMIT,
                            "cannot put 's3://%s/%s': more than %d parts of %zu bytes", u->bucket,
                            u->key, S3_PARTS_MAX, u->c->cfg.part_size);
    struct part_slot *s = NULL;
    for (int i = 0; i < u->nslots && !s; i++)
        if (!u->slots[i].busy)
            s = &u->slots[i];
    if (!s)
        return pm_error_set(err, PM_ERR_INTERNAL, "no free upload slot");
    // swap buffers: the slot uploads `cur`, its old buffer becomes the one to fill
    char *tmp = s->buf;
    s->buf = u->cur;
    u->cur = tmp;
    size_t len = u->cur_len;
    u->cur_len = 0;
    s->part_no = ++u->nparts;
    s->attempt = 0;
    s->busy = true;
    s->running = false;
    s->retry_at = 0;
    req_release(&s->req);
    memset(&s->req, 0, sizeof s->req);
    // canonical order: partNumber < uploadId
    char num[16];
    snprintf(num, sizeof num, "%d", s->part_no);
    bytebuf_clear(&s->query);
    if (query_add(&s->query, "partNumber", num) != PM_OK ||
        query_add(&s->query, "uploadId", u->upload_id) != PM_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    s->req.method = "PUT";
    s->req.bucket = u->bucket;
    s->req.key = u->key;
    s->req.query = s->query.data;
    s->req.body = s->buf;
    s->req.body_len = len;
    return slot_start(u, s, err);
}

int s3_upload_write(struct s3_upload *u, const void *data, size_t n, struct pm_error *err)
{
    if (u->failed || u->aborted || u->completed)
        return pm_error_set(err, PM_ERR_USAGE, "upload of 's3://%s/%s' is %s", u->bucket, u->key,
                            u->completed ? "complete" : "aborted");
    size_t ps = u->c->cfg.part_size;
    const char *p = data;
    while (n > 0) {
        if (!u->cur) {
            u->cur = malloc(ps);
            if (!u->cur)
                return upload_fail(u, err, PM_ERR_NOMEM, "out of memory for a part of %zu bytes",
                                   ps);
        }
        size_t k = ps - u->cur_len < n ? ps - u->cur_len : n;
        memcpy(u->cur + u->cur_len, p, k);
        u->cur_len += k;
        u->bytes += k;
        p += k;
        n -= k;
        if (u->cur_len == ps) {
            struct pm_error e = PM_ERROR_INIT;
            if (upload_submit(u, &e) != PM_OK)
                return upload_fail(u, err, e.code, "%s", e.msg);
        }
    }
    // keep the parts in flight moving while the caller fills the next one
    u->since_pump += (uint64_t)(p - (const char *)data);
    if (u->since_pump >= (256u << 10)) {
        u->since_pump = 0;
        struct pm_error e = PM_ERROR_INIT;
        if (upload_drive(u, DRIVE_POLL, &e) != PM_OK)
            return upload_fail(u, err, e.code, "%s", e.msg);
    }
    return PM_OK;
}

/*
 * After NoSuchUpload on a retried complete: true if the object now exists with a
 * multipart ETag of our part count ("...-N"), i.e. our earlier attempt completed it.
 */
static bool complete_landed(struct s3_upload *u)
{
    struct s3_req r = {.method = "HEAD", .bucket = u->bucket, .key = u->key};
    bool ok = false;
    if (req_run(u->c, &r, "stat", NULL) == PM_OK) {
        char suffix[24];
        snprintf(suffix, sizeof suffix, "-%d\"", u->nparts);
        size_t el = strlen(r.etag), sl = strlen(suffix);
        ok = el > sl && strcmp(r.etag + el - sl, suffix) == 0;
    }
    req_release(&r);
    return ok;
}

int s3_upload_complete(struct s3_upload *u, struct pm_error *err)
{
    if (u->failed || u->aborted || u->completed)
        return pm_error_set(err, PM_ERR_USAGE, "upload of 's3://%s/%s' is %s", u->bucket, u->key,
                            u->completed ? "complete" : "aborted");
    struct pm_error e = PM_ERROR_INIT;
    if ((u->cur_len > 0 || u->nparts == 0) && upload_submit(u, &e) != PM_OK)
        return upload_fail(u, err, e.code, "%s", e.msg);
    if (upload_drive(u, DRIVE_ALL, &e) != PM_OK)
        return upload_fail(u, err, e.code, "%s", e.msg);
    struct bytebuf x;
    bytebuf_init(&x, 0);
    int rc = bytebuf_append_str(&x, "<CompleteMultipartUpload>");
    for (int i = 0; i < u->nparts && rc == PM_OK; i++) {
        rc = bytebuf_printf(&x, "<Part><PartNumber>%d</PartNumber><ETag>", i + 1);
        for (const char *p = u->etags[i]; *p && rc == PM_OK; p++)
            rc = *p == '&'   ? bytebuf_append_str(&x, "&amp;")
                 : *p == '<' ? bytebuf_append_str(&x, "&lt;")
                 : *p == '>' ? bytebuf_append_str(&x, "&gt;")
                             : bytebuf_append(&x, p, 1);
        if (rc == PM_OK)
            rc = bytebuf_append_str(&x, "</ETag></Part>");
    }
    if (rc == PM_OK)
        rc = bytebuf_append_str(&x, "</CompleteMultipartUpload>");
    struct bytebuf q;
    bytebuf_init(&q, 0);
    if (rc == PM_OK)
        rc = query_add(&q, "uploadId", u->upload_id);
    if (rc != PM_OK) {
        bytebuf_release(&x);
        bytebuf_release(&q);
        return upload_fail(u, err, PM_ERR_NOMEM, "out of memory");
    }
    struct s3_req r = {.method = "POST",
                       .bucket = u->bucket,
                       .key = u->key,
                       .query = q.data,
                       .body = x.data,
                       .body_len = x.len,
                       .content_type = "application/xml"};
    rc = req_run(u->c, &r, "complete the upload of", &e);
    if (rc == PM_OK) {
        // CompleteMultipartUploadResult (moto: ...Response); an <Error> was retried above
        if (!s3_xml_is_complete_result(r.resp.data, r.resp.len))
            rc = pm_error_set(&e, PM_ERR_FORMAT,
                              "cannot complete the upload of 's3://%s/%s': unexpected answer",
                              u->bucket, u->key);
    } else if (rc == PM_ERR_NOT_FOUND && complete_landed(u)) {
        // an earlier attempt completed it but its answer was lost
        rc = PM_OK;
    }
    req_release(&r);
    bytebuf_release(&x);
    bytebuf_release(&q);
    if (rc != PM_OK)
        return upload_fail(u, err, e.code, "%s", e.msg);
    u->completed = true;
    return PM_OK;
}

void s3_upload_abort(struct s3_upload *u)
{
    if (!u || u->completed || u->aborted)
        return;
    u->aborted = true;
    // stop our in-flight parts first, so none lands after the abort
    for (int i = 0; i < u->nslots; i++) {
        struct part_slot *s = &u->slots[i];
        if (s->running)
            curl_multi_remove_handle(u->multi, s->easy);
        s->running = s->busy = false;
    }
    if (u->upload_id)
        s3_client_abort_upload(u->c, u->bucket, u->key, u->upload_id, NULL);
}

uint64_t s3_upload_bytes(const struct s3_upload *u)
{
    return u->bytes;
}

void s3_upload_free(struct s3_upload *u)
{
    if (!u)
        return;
    s3_upload_abort(u);
    for (int i = 0; u->slots && i < u->nslots; i++) {
        struct part_slot *s = &u->slots[i];
        if (s->easy)
            curl_easy_cleanup(s->easy);
        req_release(&s->req);
        bytebuf_release(&s->query);
        free(s->buf);
    }
    if (u->multi)
        curl_multi_cleanup(u->multi);
    for (int i = 0; u->etags && i < S3_PARTS_MAX; i++)
        free(u->etags[i]);
    free(u->etags);
    free(u->slots);
    free(u->cur);
    free(u->bucket);
    free(u->key);
    free(u->upload_id);
    free(u);
}
