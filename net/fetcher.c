#include "fetcher.h"

#include "http_headers.h"
#include "url_policy.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <time.h>

#if LIBCURL_VERSION_NUM < 0x075500
#error "pixelmill needs libcurl >= 7.85 (CURLOPT_PROTOCOLS_STR, CURLOPT_PREREQFUNCTION)"
#endif

#ifndef PIXELMILL_VERSION
#define PIXELMILL_VERSION "0.0.0"
#endif

// Non-2xx bodies (error pages) are read and dropped up to this size so the connection
// can be reused; a longer one aborts the transfer.
#define DISCARD_MAX (64 * 1024)
// Request records and body buffers kept for reuse.
#define RECYCLE_BODY_MAX (1024 * 1024)
// Requests examined per host queue when looking for one whose backoff has passed.
#define QUEUE_SCAN_MAX 64
// A request requeued because this process ran out of descriptors waits this long (ms).
#define FD_REQUEUE_DELAY_MS 20

struct host;

/** A submitted request, in exactly one list at a time (pending, host queue, done, free). */
struct request {
    struct request *next;
    struct bytebuf url;
    void *user;
    struct host *host;
    char hostkey[272];
    int attempts;
    int https;
    int64_t not_before_ms;
    int64_t t_start_ms;
    // outcome
    enum fetch_status status;
    enum fetch_error eclass;
    char error[96];
    long http_code;
    char final_url[2048];
    char content_type[128];
    char primary_ip[48];
    int redirects;
    int http_version;
    double elapsed_s;
    struct bytebuf body;
};

/** One easy handle and the state of the attempt it runs. */
struct slot {
    CURL *easy;
    struct fetcher *f;
    struct request *req;
    struct slot *next_free;
    // state of the current response (reset at each status line)
    long code;
    int keep_body;
    int robots_block;
    unsigned long long content_length; // ULLONG_MAX if none
    char retry_after[64];
    char content_type[128];
    size_t discarded;
    // state of the attempt
    int blocked_addr, blocked_fence, too_large, disallowed, discard_abort, nomem;
    int no_fd;      /* socket() failed with EMFILE/ENFILE: a local limit, not the server */
    int connecting; /* counted in host->connecting until the request is sent */
    int nstatus;    /* status lines seen in this attempt */
};

struct host {
    struct host *hnext; // hash chain
    struct host *wnext; // waiting list
    int waiting;
    int inflight;
    int h2;         /* its first-hop responses came over HTTP/2 */
    int h1;         /* ... over HTTP/1.x: no multiplexing to wait for */
    int connecting; /* https attempts in flight, protocol unknown, request not yet sent */
    int64_t not_before_ms;
    struct request *qhead, *qtail;
    char key[272];
};

struct fetch_share {
    CURLSH *sh;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
};

struct fetcher {
    struct fetcher_config cfg;
    char *user_agent, *directives, *token, *ca_file;
    struct url_policy policy;
    CURLM *multi;
    struct fetch_share *share;
    struct curl_slist *headers;
    struct slot *slots;
    int nslots;
    struct slot *free_slots;
    int active;
    int limit;        /* transfers allowed in flight now: concurrency, lowered on EMFILE */
    int ceiling;      /* the limit never goes back above this once descriptors ran out */
    int limit_credit; /* completions since the limit last changed (additive increase) */
    size_t ndone;
    struct request *pend_head, *pend_tail;
    struct request *done_head, *done_tail;
    struct request *free_reqs;
    size_t nfree_reqs;
    struct host **htab;
    size_t hcap, hcount;
    struct host *waiting;
    size_t pending;
    struct fetcher_stats stats;
    uint64_t rng;
};

static const char *const error_names[] = {
    [FETCH_E_NONE] = "",
    [FETCH_E_HTTP] = "http",
    [FETCH_E_TIMEOUT] = "timeout",
    [FETCH_E_DNS] = "dns",
    [FETCH_E_TLS] = "tls",
    [FETCH_E_CONNECT] = "connect",
    [FETCH_E_NETWORK] = "network",
    [FETCH_E_TOO_LARGE] = "too large",
    [FETCH_E_TRUNCATED] = "truncated",
    [FETCH_E_REDIRECT_LOOP] = "redirect loop",
    [FETCH_E_BLOCKED_ADDRESS] = "blocked: private address",
    [FETCH_E_BLOCKED_SCHEME] = "blocked: scheme",
    [FETCH_E_DISALLOWED] = "disallowed",
    [FETCH_E_BAD_URL] = "bad url",
    [FETCH_E_OTHER] = "error",
};

const char *fetch_error_name(enum fetch_error e)
{
    if ((unsigned)e < sizeof error_names / sizeof error_names[0] && error_names[e])
        return error_names[e];
    return "error";
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_next(struct fetcher *f)
{
    // xorshift64*
    uint64_t x = f->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    f->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void fetcher_config_init(struct fetcher_config *c)
{
    memset(c, 0, sizeof *c);
    c->concurrency = 256;
    c->max_host_connections = 8;
    c->max_host_streams = 64;
    c->timeout_ms = 20000;
    c->connect_timeout_ms = 10000;
    c->low_speed_bytes = 1024;
    c->low_speed_time_s = 10;
    c->max_bytes = 32u << 20;
    c->max_redirects = 5;
    c->retries = 2;
    c->backoff_ms = 500;
    c->max_backoff_ms = 30000;
    c->max_retry_after_s = 60;
    c->http2 = 1;
}

int fetcher_allow_list_add(char *list, size_t size, const char *address)
{
    size_t l = strlen(list);
    if (l + strlen(address) + 2 > size)
        return PM_ERR_USAGE;
    snprintf(list + l, size - l, "%s%s", l ? "," : "", address);
    return PM_OK;
}

void fetch_result_init(struct fetch_result *r)
{
    memset(r, 0, sizeof *r);
    bytebuf_init(&r->body, 0);
}

void fetch_result_release(struct fetch_result *r)
{
    if (r)
        bytebuf_release(&r->body);
}

// ---- share ----------------------------------------------------------------------------

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u)
{
    (void)h;
    (void)a;
    struct fetch_share *s = u;
    pthread_mutex_lock(&s->locks[(unsigned)d < CURL_LOCK_DATA_LAST ? d : 0]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *u)
{
    (void)h;
    struct fetch_share *s = u;
    pthread_mutex_unlock(&s->locks[(unsigned)d < CURL_LOCK_DATA_LAST ? d : 0]);
}

int fetch_share_create(struct fetch_share **out, struct pm_error *err)
{
    *out = NULL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot initialise libcurl");
    struct fetch_share *s = calloc(1, sizeof *s);
    if (!s || !(s->sh = curl_share_init())) {
        free(s);
        curl_global_cleanup();
        return pm_error_set(err, PM_ERR_NOMEM, "cannot create the DNS cache share");
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->locks[i], NULL);
    curl_share_setopt(s->sh, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(s->sh, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(s->sh, CURLSHOPT_USERDATA, s);
    curl_share_setopt(s->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = s;
    return PM_OK;
}

void fetch_share_free(struct fetch_share *s)
{
    if (!s)
        return;
    curl_share_cleanup(s->sh);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&s->locks[i]);
    free(s);
    curl_global_cleanup();
}

// ---- hosts ----------------------------------------------------------------------------

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; // FNV-1a
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static int host_idle(const struct host *h, int64_t now)
{
    return h->inflight == 0 && !h->qhead && !h->waiting && h->not_before_ms <= now;
}

// Drop idle hosts whose backoff has passed. Returns how many were freed.
static size_t hosts_sweep(struct fetcher *f, int64_t now)
{
    size_t freed = 0;
    for (size_t i = 0; i < f->hcap; i++) {
        struct host **pp = &f->htab[i];
        while (*pp) {
            struct host *h = *pp;
            if (host_idle(h, now)) {
                *pp = h->hnext;
                free(h);
                f->hcount--;
                freed++;
            } else {
                pp = &h->hnext;
            }
        }
    }
    return freed;
}

static struct host *host_get(struct fetcher *f, const char *key, int64_t now)
{
    uint64_t hv = hash_str(key);
    for (struct host *h = f->htab[hv & (f->hcap - 1)]; h; h = h->hnext)
        if (strcmp(h->key, key) == 0)
            return h;
    if (f->hcount >= f->hcap && hosts_sweep(f, now) < f->hcap / 4) {
        size_t ncap = f->hcap * 2;
        struct host **nt = calloc(ncap, sizeof *nt);
        if (!nt)
            return NULL;
        for (size_t i = 0; i < f->hcap; i++) {
            struct host *h = f->htab[i];
            while (h) {
                struct host *next = h->hnext;
                size_t b = hash_str(h->key) & (ncap - 1);
                h->hnext = nt[b];
                nt[b] = h;
                h = next;
            }
        }
        free(f->htab);
        f->htab = nt;
        f->hcap = ncap;
    }
    struct host *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    snprintf(h->key, sizeof h->key, "%s", key);
    size_t b = hv & (f->hcap - 1);
    h->hnext = f->htab[b];
    f->htab[b] = h;
    f->hcount++;
    return h;
}

static void host_enqueue(struct fetcher *f, struct host *h, struct request *r)
{
    r->next = NULL;
    if (h->qtail)
        h->qtail->next = r;
    else
        h->qhead = r;
    h->qtail = r;
    if (!h->waiting) {
        h->waiting = 1;
        h->wnext = f->waiting;
        f->waiting = h;
    }
}

static void host_requeue_front(struct fetcher *f, struct host *h, struct request *r)
{
    r->next = h->qhead;
    h->qhead = r;
    if (!h->qtail)
        h->qtail = r;
    if (!h->waiting) {
        h->waiting = 1;
        h->wnext = f->waiting;
        f->waiting = h;
    }
}

static int host_cap(const struct fetcher *f, const struct host *h)
{
    return h->h2 ? f->cfg.max_host_streams : f->cfg.max_host_connections;
}

// Whether h may get another transfer now (its backoff aside). With CURLOPT_PIPEWAIT,
// libcurl parks a new transfer while a connection to the host whose multiplexing is not
// known yet is being set up, and the parked transfer's deadline runs meanwhile (a stalled
// handshake would time out every transfer queued behind it). So while such a connection
// is in progress the next transfer waits here, off the clock.
static int host_ready(const struct fetcher *f, const struct host *h)
{
    if (h->inflight >= host_cap(f, h))
        return 0;
    return h->connecting == 0 || h->h1 || h->h2;
}

// The first status line of an attempt comes from the request's own host: note whether it
// speaks HTTP/2 (multiplexed, its own cap) or HTTP/1.x (nothing to wait for).
static void host_note_version(struct host *h, const char *line, size_t len)
{
    if (len >= 6 && memcmp(line, "HTTP/2", 6) == 0) {
        h->h2 = 1;
        h->h1 = 0;
    } else if (len >= 7 && memcmp(line, "HTTP/1.", 7) == 0) {
        h->h1 = 1;
        h->h2 = 0;
    }
}

static void slot_connected(struct slot *s)
{
    if (s->connecting) {
        s->connecting = 0;
        s->req->host->connecting--;
    }
}

// ---- requests -------------------------------------------------------------------------

static struct request *request_get(struct fetcher *f)
{
    struct request *r = f->free_reqs;
    if (r) {
        f->free_reqs = r->next;
        f->nfree_reqs--;
    } else {
        r = malloc(sizeof *r);
        if (!r)
            return NULL;
        bytebuf_init(&r->url, URL_POLICY_MAX + 1);
        bytebuf_init(&r->body, 0);
    }
    struct bytebuf url = r->url, body = r->body;
    memset(r, 0, sizeof *r);
    r->url = url;
    r->body = body;
    bytebuf_clear(&r->url);
    bytebuf_clear(&r->body);
    r->body.limit = f->cfg.max_bytes;
    return r;
}

static void request_put(struct fetcher *f, struct request *r)
{
    if (f->nfree_reqs >= (size_t)f->cfg.concurrency * 2) {
        bytebuf_release(&r->url);
        bytebuf_release(&r->body);
        free(r);
        return;
    }
    if (r->body.cap > RECYCLE_BODY_MAX)
        bytebuf_release(&r->body);
    r->next = f->free_reqs;
    f->free_reqs = r;
    f->nfree_reqs++;
}

static void done_push(struct fetcher *f, struct request *r)
{
    r->next = NULL;
    if (f->done_tail)
        f->done_tail->next = r;
    else
        f->done_head = r;
    f->done_tail = r;
    f->ndone++;
    f->stats.completed++;
    if (r->status == FETCH_SUCCESS) {
        f->stats.succeeded++;
        f->stats.body_bytes += r->body.len;
    } else if (r->status == FETCH_DISALLOWED) {
        f->stats.disallowed++;
    } else {
        f->stats.failed++;
    }
}

static void request_fail(struct request *r, enum fetch_error e, const char *detail)
{
    r->status = e == FETCH_E_DISALLOWED ? FETCH_DISALLOWED : FETCH_FAILED;
    r->eclass = e;
    if (detail)
        snprintf(r->error, sizeof r->error, "%s", detail);
    else
        snprintf(r->error, sizeof r->error, "%s", fetch_error_name(e));
    bytebuf_clear(&r->body);
}

// ---- libcurl callbacks ----------------------------------------------------------------

static void copy_value(char *dst, size_t n, const char *v, size_t len)
{
    while (len && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
        len--;
    if (len >= n)
        len = n - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    struct slot *s = ud;
    size_t len = size * nitems;
    if (len >= 5 && strncasecmp(buf, "HTTP/", 5) == 0) {
        // A new response (after a redirect or a 1xx): forget the previous one.
        if (++s->nstatus == 1 && s->req->host)
            host_note_version(s->req->host, buf, len);
        s->code = 0;
        const char *sp = memchr(buf, ' ', len);
        if (sp)
            for (sp++; sp < buf + len && *sp >= '0' && *sp <= '9'; sp++)
                s->code = s->code * 10 + (*sp - '0');
        s->keep_body = 0;
        s->robots_block = 0;
        s->content_length = ~0ULL;
        s->retry_after[0] = '\0';
        s->content_type[0] = '\0';
        s->discarded = 0;
        bytebuf_clear(&s->req->body);
        return len;
    }
    if (len <= 2 && (len == 0 || buf[0] == '\r' || buf[0] == '\n')) {
        // End of this response's headers.
        if (s->code >= 200 && s->code < 300) {
            s->keep_body = 1;
            if (s->robots_block) {
                s->disallowed = 1;
                return 0; // abort: we may not use this response
            }
            if (s->content_length != ~0ULL && s->content_length > s->f->cfg.max_bytes) {
                s->too_large = 1;
                return 0;
            }
        }
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon)
        return len;
    size_t nlen = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vlen = len - nlen - 1;
    if (nlen == 12 && strncasecmp(buf, "x-robots-tag", 12) == 0) {
        if (http_robots_disallowed(v, vlen, s->f->directives, s->f->token))
            s->robots_block = 1;
    } else if (nlen == 11 && strncasecmp(buf, "retry-after", 11) == 0) {
        copy_value(s->retry_after, sizeof s->retry_after, v, vlen);
    } else if (nlen == 12 && strncasecmp(buf, "content-type", 12) == 0) {
        copy_value(s->content_type, sizeof s->content_type, v, vlen);
    } else if (nlen == 14 && strncasecmp(buf, "content-length", 14) == 0) {
        char tmp[32];
        copy_value(tmp, sizeof tmp, v, vlen);
        char *end;
        unsigned long long cl = strtoull(tmp, &end, 10);
        if (end != tmp && *end == '\0' && tmp[0] >= '0' && tmp[0] <= '9')
            s->content_length = cl;
    }
    return len;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    struct slot *s = ud;
    size_t len = size * nmemb;
    if (!s->keep_body) {
        s->discarded += len;
        if (s->discarded > DISCARD_MAX) {
            s->discard_abort = 1;
            return 0;
        }
        return len;
    }
    int rc = bytebuf_append(&s->req->body, p, len);
    if (rc == PM_ERR_LIMIT) {
        s->too_large = 1;
        return 0;
    }
    if (rc) {
        s->nomem = 1;
        return 0;
    }
    return len;
}

// Refuse addresses the policy does not allow; report 1 if allowed.
static int address_check(struct slot *s, int allowed, enum addr_class cls)
{
    if (!allowed) {
        s->blocked_addr = 1;
        s->f->stats.refused_sockets++;
        return 0;
    }
    if (s->f->cfg.loopback_only && cls != ADDR_LOOPBACK) {
        s->blocked_fence = 1;
        s->f->stats.refused_sockets++;
        return 0;
    }
    return 1;
}

static curl_socket_t opensocket_cb(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct slot *s = ud;
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    enum addr_class cls;
    int ok = url_policy_sockaddr_allowed(&s->f->policy, &a->addr, a->addrlen, &cls);
    if (!address_check(s, ok, cls))
        return CURL_SOCKET_BAD;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd != CURL_SOCKET_BAD)
        s->f->stats.connections++;
    else if (errno == EMFILE || errno == ENFILE)
        s->no_fd = errno;
    return fd;
}

// EMFILE/ENFILE if this process cannot open `n` (1 or 2) more descriptors now, else 0.
// Used where libcurl fails before our socket callback (its resolver's socket pair) or
// after it (reading the CA file for a new TLS connection, whose socket is closed by now:
// hence two).
static int fds_exhausted(int n)
{
    int fd[2] = {-1, -1}, e = 0;
    for (int i = 0; i < n && i < 2 && !e; i++)
        if ((fd[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
            e = errno == EMFILE || errno == ENFILE ? errno : 0;
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    return e;
}

// Second line of defence: the address of the connection a request is about to use
// (new or reused), checked just before the request is sent.
static int prereq_cb(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    struct slot *s = ud;
    slot_connected(s);
    enum addr_class cls;
    int ok = url_policy_ip_allowed(&s->f->policy, primary_ip, &cls);
    return address_check(s, ok, cls) ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
}

// ---- transfers ------------------------------------------------------------------------

static int easy_setup(struct fetcher *f, struct slot *s)
{
    CURL *e = curl_easy_init();
    if (!e)
        return PM_ERR_NOMEM;
    const struct fetcher_config *c = &f->cfg;
    int bad = 0;
#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK
    SET(CURLOPT_PRIVATE, s);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, s);
    SET(CURLOPT_HEADERFUNCTION, header_cb);
    SET(CURLOPT_HEADERDATA, s);
    SET(CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
    SET(CURLOPT_OPENSOCKETDATA, s);
    SET(CURLOPT_PREREQFUNCTION, prereq_cb);
    SET(CURLOPT_PREREQDATA, s);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, c->max_redirects > 0 ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, (long)c->max_redirects);
    SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    if (c->low_speed_time_s > 0) {
        SET(CURLOPT_LOW_SPEED_LIMIT, c->low_speed_bytes);
        SET(CURLOPT_LOW_SPEED_TIME, c->low_speed_time_s);
    }
    SET(CURLOPT_USERAGENT, f->user_agent);
    SET(CURLOPT_HTTPHEADER, f->headers);
    SET(CURLOPT_HTTP_VERSION,
        c->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    SET(CURLOPT_PROXY, ""); // never a proxy from the environment: it would bypass the policy
    SET(CURLOPT_DNS_CACHE_TIMEOUT, 300L);
    if (f->ca_file)
        SET(CURLOPT_CAINFO, f->ca_file);
    if (f->share)
        SET(CURLOPT_SHARE, f->share->sh);
#undef SET
    if (bad) {
        curl_easy_cleanup(e);
        return PM_ERR_UNSUPPORTED;
    }
    s->easy = e;
    return PM_OK;
}

static void slot_put(struct fetcher *f, struct slot *s)
{
    s->req = NULL;
    s->next_free = f->free_slots;
    f->free_slots = s;
    f->active--;
}

// Start an attempt of r. On failure r is completed with an error.
static void request_start(struct fetcher *f, struct request *r, int64_t now)
{
    struct slot *s = f->free_slots;
    f->free_slots = s->next_free;
    f->active++;
    if (!s->easy && easy_setup(f, s) != PM_OK) {
        request_fail(r, FETCH_E_OTHER, "error: cannot create a transfer");
        slot_put(f, s);
        done_push(f, r);
        return;
    }
    s->req = r;
    s->code = 0;
    s->keep_body = 0;
    s->robots_block = 0;
    s->content_length = ~0ULL;
    s->retry_after[0] = s->content_type[0] = '\0';
    s->discarded = 0;
    s->blocked_addr = s->blocked_fence = s->too_large = s->disallowed = 0;
    s->discard_abort = s->nomem = s->no_fd = 0;
    s->nstatus = 0;
    bytebuf_clear(&r->body);
    r->body.limit = f->cfg.max_bytes;
    r->attempts++;
    if (!r->t_start_ms)
        r->t_start_ms = now;
    r->host->inflight++;
    f->stats.attempts++;
    // Waiting for a connection to multiplex on only makes sense where HTTP/2 may come
    // (https, protocol not known to be HTTP/1); such a connection in progress holds the
    // host's next transfers in our queue (host_ready).
    int pipewait = r->https && !r->host->h1;
    s->connecting = pipewait && !r->host->h2;
    r->host->connecting += s->connecting;
    if (curl_easy_setopt(s->easy, CURLOPT_URL, r->url.data) != CURLE_OK ||
        curl_easy_setopt(s->easy, CURLOPT_PIPEWAIT, (long)pipewait) != CURLE_OK ||
        curl_multi_add_handle(f->multi, s->easy) != CURLM_OK) {
        slot_connected(s);
        r->host->inflight--;
        request_fail(r, FETCH_E_BAD_URL, NULL);
        r->host = NULL;
        slot_put(f, s);
        done_push(f, r);
    }
}

static int capacity(const struct fetcher *f)
{
    return f->free_slots && f->active < f->limit &&
           (size_t)f->active + f->ndone < (size_t)f->cfg.concurrency;
}

// Remove and return the first request of h's queue whose backoff has passed.
static struct request *host_take_ready(struct host *h, int64_t now)
{
    struct request *prev = NULL;
    int n = 0;
    for (struct request *r = h->qhead; r && n < QUEUE_SCAN_MAX; prev = r, r = r->next, n++) {
        if (r->not_before_ms > now)
            continue;
        if (prev)
            prev->next = r->next;
        else
            h->qhead = r->next;
        if (h->qtail == r)
            h->qtail = prev;
        r->next = NULL;
        return r;
    }
    return NULL;
}

// Start what may start now: first the hosts' queues, then newly submitted requests.
static void schedule(struct fetcher *f, int64_t now)
{
    struct host **pp = &f->waiting;
    while (*pp) {
        struct host *h = *pp;
        while (capacity(f) && h->qhead && h->not_before_ms <= now && host_ready(f, h)) {
            struct request *r = host_take_ready(h, now);
            if (!r)
                break;
            request_start(f, r, now);
        }
        if (!h->qhead) {
            *pp = h->wnext;
            h->waiting = 0;
            h->wnext = NULL;
        } else {
            pp = &h->wnext;
        }
    }
    while (capacity(f) && f->pend_head) {
        struct request *r = f->pend_head;
        f->pend_head = r->next;
        if (!f->pend_head)
            f->pend_tail = NULL;
        r->next = NULL;
        struct host *h = host_get(f, r->hostkey, now);
        if (!h) {
            request_fail(r, FETCH_E_OTHER, "error: out of memory");
            done_push(f, r);
            continue;
        }
        r->host = h;
        if (h->qhead || h->not_before_ms > now || !host_ready(f, h))
            host_enqueue(f, h, r);
        else
            request_start(f, r, now);
    }
}

// Earliest time (ms) a waiting request could start, or -1 when none waits on a timer.
static int64_t next_due(const struct fetcher *f, int64_t now)
{
    int64_t best = -1;
    for (const struct host *h = f->waiting; h; h = h->wnext) {
        if (!host_ready(f, h))
            continue; // starts when one of its transfers ends or gets connected
        int64_t req_due = -1;
        int n = 0;
        for (const struct request *r = h->qhead; r && n < QUEUE_SCAN_MAX; r = r->next, n++)
            if (req_due < 0 || r->not_before_ms < req_due)
                req_due = r->not_before_ms;
        if (req_due < 0)
            continue;
        int64_t due = req_due > h->not_before_ms ? req_due : h->not_before_ms;
        if (due < now)
            due = now;
        if (best < 0 || due < best)
            best = due;
    }
    return best;
}

static int code_retryable(long code)
{
    return code == 408 || code == 429 || (code >= 500 && code <= 599 && code != 501 && code != 505);
}

// Map a libcurl result to an error class; *retry says whether another attempt may help.
static enum fetch_error classify_curl(CURLcode cc, int *retry)
{
    *retry = 0;
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        *retry = 1;
        return FETCH_E_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return FETCH_E_DNS;
    case CURLE_COULDNT_CONNECT:
        *retry = 1;
        return FETCH_E_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_USE_SSL_FAILED:
        return FETCH_E_TLS;
    case CURLE_PARTIAL_FILE:
        *retry = 1;
        return FETCH_E_TRUNCATED;
    case CURLE_TOO_MANY_REDIRECTS:
        return FETCH_E_REDIRECT_LOOP;
    case CURLE_UNSUPPORTED_PROTOCOL:
        return FETCH_E_BLOCKED_SCHEME;
    case CURLE_URL_MALFORMAT:
        return FETCH_E_BAD_URL;
    case CURLE_FILESIZE_EXCEEDED:
        return FETCH_E_TOO_LARGE;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        *retry = 1;
        return FETCH_E_NETWORK;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
        return FETCH_E_NETWORK;
    default:
        return FETCH_E_OTHER;
    }
}

static int64_t backoff_delay(struct fetcher *f, int attempt)
{
    double d = (double)f->cfg.backoff_ms;
    for (int i = 1; i < attempt && d < (double)f->cfg.max_backoff_ms; i++)
        d *= 2;
    if (d > (double)f->cfg.max_backoff_ms)
        d = (double)f->cfg.max_backoff_ms;
    double jitter = 0.5 + (double)(rng_next(f) >> 11) / (double)(1ULL << 53); // [0.5, 1.5)
    return (int64_t)(d * jitter);
}

static void set_maxconnects(struct fetcher *f)
{
    long total =
        f->cfg.max_total_connections > 0 ? f->cfg.max_total_connections : f->cfg.concurrency;
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, total < f->limit ? total : (long)f->limit);
}

// Out of descriptors with `others` other transfers in flight: allow three quarters of
// them from now on (idle cached connections go too), at least one. The limit never
// climbs back over that, so a quarter of those descriptors stays free for the rest of
// the process (output files, other threads): the descriptor limit does not change
// during a run.
static void limit_lower(struct fetcher *f, int others)
{
    int target = others * 3 / 4;
    if (target < 1)
        target = 1;
    if (target < f->ceiling)
        f->ceiling = target;
    if (target < f->limit) {
        f->limit = target;
        f->limit_credit = 0;
        set_maxconnects(f);
        if ((uint64_t)target < f->stats.min_concurrency)
            f->stats.min_concurrency = (uint64_t)target;
    }
}

// A completion that needed no more descriptors than were there: after `limit` of them,
// one more transfer in flight (additive increase back towards the ceiling, after a burst
// of failures lowered the limit further).
static void limit_raise(struct fetcher *f)
{
    if (f->limit >= f->ceiling || ++f->limit_credit < f->limit)
        return;
    f->limit++;
    f->limit_credit = 0;
    set_maxconnects(f);
}

// Put the slot's request back in its host's queue (at the head or the tail), not to
// start before `at`, and free the slot.
static void request_requeue(struct fetcher *f, struct slot *s, int64_t at, int front)
{
    struct request *r = s->req;
    r->not_before_ms = at;
    bytebuf_clear(&r->body);
    slot_put(f, s);
    if (front)
        host_requeue_front(f, r->host, r);
    else
        host_enqueue(f, r->host, r);
}

static void request_finish(struct fetcher *f, struct slot *s, CURLcode cc, int64_t now)
{
    struct request *r = s->req;
    CURL *e = s->easy;
    curl_multi_remove_handle(f->multi, e);
    slot_connected(s);

    long code = 0, redirects = 0, version = 0;
    char *eff = NULL, *ip = NULL;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_getinfo(e, CURLINFO_REDIRECT_COUNT, &redirects);
    curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
    curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &eff);
    curl_easy_getinfo(e, CURLINFO_PRIMARY_IP, &ip);
    r->http_code = code;
    r->redirects = (int)redirects;
    r->http_version = version == CURL_HTTP_VERSION_2_0 ? 2 : version ? 1 : 0;
    url_policy_redact(eff ? eff : r->url.data, r->final_url, sizeof r->final_url);
    snprintf(r->primary_ip, sizeof r->primary_ip, "%s", ip ? ip : "");
    snprintf(r->content_type, sizeof r->content_type, "%s", s->content_type);

    struct host *h = r->host;
    h->inflight--;

    // Out of descriptors in this process: the URL is not at fault. While other transfers
    // of ours hold descriptors (or the limit can still go down), run fewer at once and try
    // this one again soon without using up an attempt. Each such requeue lowers the limit
    // or follows completions that raised it, so this ends; at a limit of one with nothing
    // else in flight, it counts as a failed attempt (retried, then reported).
    int no_fd = 0;
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST)
        no_fd = s->no_fd ? s->no_fd : fds_exhausted(1);
    else if (cc == CURLE_SSL_CACERT_BADFILE)
        no_fd = fds_exhausted(2);
    if (no_fd && !s->blocked_addr && !s->blocked_fence && (f->active > 1 || f->limit > 1)) {
        limit_lower(f, f->active - 1);
        r->attempts--;
        f->stats.fd_requeues++;
        request_requeue(f, s, now + FD_REQUEUE_DELAY_MS, 1);
        return;
    }
    if (!no_fd)
        limit_raise(f);

    enum fetch_error ec = FETCH_E_NONE;
    int retry = 0;
    int64_t retry_after_s = -1;
    char detail[96] = "";
    if (s->disallowed) {
        ec = FETCH_E_DISALLOWED;
    } else if (s->too_large) {
        ec = FETCH_E_TOO_LARGE;
    } else if (s->nomem) {
        ec = FETCH_E_OTHER;
        snprintf(detail, sizeof detail, "error: out of memory");
    } else if (cc == CURLE_OK || s->discard_abort) {
        if (code >= 200 && code < 300) {
            ec = FETCH_E_NONE;
        } else {
            ec = FETCH_E_HTTP;
            snprintf(detail, sizeof detail, "http %ld", code);
            retry = code_retryable(code);
            if ((code == 429 || code == 503) && s->retry_after[0]) {
                int64_t d;
                if (http_retry_after_parse(s->retry_after, strlen(s->retry_after), time(NULL),
                                           &d) == 0)
                    retry_after_s = d;
            }
        }
    } else if (s->blocked_addr) {
        ec = FETCH_E_BLOCKED_ADDRESS;
    } else if (s->blocked_fence) {
        ec = FETCH_E_OTHER;
        snprintf(detail, sizeof detail, "error: non-loopback address refused (loopback_only)");
    } else if (no_fd) {
        // Out of descriptors with nothing else of ours in flight: say so (the URL is not
        // at fault); retried like a connect failure (tests/test_hostile_inputs.py).
        ec = FETCH_E_CONNECT;
        retry = 1;
        snprintf(detail, sizeof detail, "error: no file descriptor for a socket (%s)",
                 strerror(no_fd));
    } else {
        ec = classify_curl(cc, &retry);
        // libcurl also says "unsupported protocol" for a reply that is not HTTP at all
        // (HTTP/0.9, garbage): no status line was seen, so no redirect was refused.
        if (ec == FETCH_E_BLOCKED_SCHEME && code == 0 && redirects == 0)
            ec = FETCH_E_NETWORK;
        // The CA file was readable when the engine started: a failure to read it for a
        // new connection is local (descriptors, memory), so the URL gets another try.
        if (cc == CURLE_SSL_CACERT_BADFILE) {
            retry = 1;
            snprintf(detail, sizeof detail, "tls: cannot load the CA certificates");
        }
        if (ec == FETCH_E_OTHER)
            snprintf(detail, sizeof detail, "error: %s", curl_easy_strerror(cc));
    }

    // A 429, or a 503 with Retry-After, pauses the whole host (capped), whether or not
    // this request is retried, so that its other queued requests do not hammer it.
    int64_t hold = -1;
    if (retry_after_s >= 0)
        hold =
            (retry_after_s < f->cfg.max_retry_after_s ? retry_after_s : f->cfg.max_retry_after_s) *
            1000;
    else if (ec == FETCH_E_HTTP && code == 429)
        hold = backoff_delay(f, r->attempts);
    if (hold > 0 && h->not_before_ms < now + hold)
        h->not_before_ms = now + hold;

    if (retry && retry_after_s > f->cfg.max_retry_after_s)
        retry = 0; // the server asks for a longer pause than we are willing to wait
    if (retry && r->attempts <= f->cfg.retries) {
        int64_t delay = hold > 0 ? hold : backoff_delay(f, r->attempts);
        f->stats.retries++;
        request_requeue(f, s, now + delay, 0);
        return;
    }

    if (ec == FETCH_E_NONE) {
        r->status = FETCH_SUCCESS;
        r->eclass = FETCH_E_NONE;
        r->error[0] = '\0';
    } else {
        request_fail(r, ec, detail[0] ? detail : NULL);
    }
    r->elapsed_s = (double)(now - r->t_start_ms) / 1000.0;
    r->host = NULL;
    slot_put(f, s);
    done_push(f, r);
}

// ---- public API -----------------------------------------------------------------------

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int fetcher_create(const struct fetcher_config *cfg, struct fetch_share *share,
                   struct fetcher **out, struct pm_error *err)
{
    *out = NULL;
    const struct fetcher_config *c = cfg;
    if (c->concurrency < 1 || c->concurrency > 65536)
        return pm_error_set(err, PM_ERR_USAGE, "concurrency %d is not in 1..65536", c->concurrency);
    if (c->max_host_connections < 1 || c->max_host_streams < 1)
        return pm_error_set(err, PM_ERR_USAGE, "per-host limits must be at least 1");
    if (c->max_bytes < 1 || c->timeout_ms < 1 || c->retries < 0 || c->max_redirects < 0 ||
        c->backoff_ms < 0)
        return pm_error_set(err, PM_ERR_USAGE, "invalid fetcher limits");
    if (c->max_redirects > 50)
        return pm_error_set(err, PM_ERR_USAGE, "max_redirects %d is over 50", c->max_redirects);
    const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    if (!vi || vi->version_num < 0x075500)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "libcurl %s is older than 7.85",
                            vi ? vi->version : "?");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot initialise libcurl");

    struct fetcher *f = calloc(1, sizeof *f);
    if (!f) {
        curl_global_cleanup();
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory creating the fetcher");
    }
    f->cfg = *c;
    f->cfg.allow_addresses = f->cfg.user_agent_token = NULL;
    f->cfg.disallowed_directives = f->cfg.ca_file = NULL;
    f->share = share;
    f->rng = c->seed ? c->seed : (uint64_t)now_ms() ^ (uint64_t)(uintptr_t)f;
    if (!f->rng)
        f->rng = 1;
    url_policy_init(&f->policy);
    f->policy.allow_private_network = c->allow_private_network;
    int rc = PM_OK;
    if (c->allow_addresses) {
        char *list = strdup(c->allow_addresses), *save = NULL;
        if (!list) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        for (char *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
            if ((rc = url_policy_allow_address(&f->policy, t, err)) != PM_OK)
                break;
        free(list);
        if (rc)
            goto fail;
    }
    f->token =
        dup_or_null(c->user_agent_token && *c->user_agent_token ? c->user_agent_token : NULL);
    f->directives = strdup(c->disallowed_directives ? c->disallowed_directives
                                                    : HTTP_ROBOTS_DEFAULT_DIRECTIVES);
    f->ca_file = dup_or_null(c->ca_file);
    if (c->ca_file) {
        FILE *cf = fopen(c->ca_file, "rb");
        if (!cf) {
            rc = pm_error_set(err, PM_ERR_USAGE, "cannot read the CA file %s: %s", c->ca_file,
                              strerror(errno));
            goto fail;
        }
        fclose(cf);
    }
    size_t ualen = 64 + strlen(FETCHER_INFO) + (f->token ? strlen(f->token) : 0);
    f->user_agent = malloc(ualen);
    f->headers = curl_slist_append(NULL, "Accept: image/*,*/*;q=0.8");
    f->slots = calloc((size_t)c->concurrency, sizeof *f->slots);
    f->hcap = 256;
    f->htab = calloc(f->hcap, sizeof *f->htab);
    f->multi = curl_multi_init();
    if (!f->directives || (c->ca_file && !f->ca_file) || !f->user_agent || !f->headers ||
        !f->slots || !f->htab || !f->multi ||
        (c->user_agent_token && *c->user_agent_token && !f->token)) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory creating the fetcher");
        goto fail;
    }
    snprintf(f->user_agent, ualen, "pixelmill/%s (%s)%s%s", PIXELMILL_VERSION, FETCHER_INFO,
             f->token ? " " : "", f->token ? f->token : "");
    f->nslots = c->concurrency;
    f->limit = f->ceiling = c->concurrency;
    f->stats.min_concurrency = (uint64_t)c->concurrency;
    for (int i = f->nslots - 1; i >= 0; i--) {
        f->slots[i].f = f;
        f->slots[i].next_free = f->free_slots;
        f->free_slots = &f->slots[i];
    }
    long total = c->max_total_connections > 0 ? c->max_total_connections : c->concurrency;
    curl_multi_setopt(f->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->max_host_connections);
    curl_multi_setopt(f->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, total);
    curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, total);
    curl_multi_setopt(f->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)c->max_host_streams);
    *out = f;
    return PM_OK;
fail:
    fetcher_free(f);
    return rc;
}

static void free_list(struct request *r)
{
    while (r) {
        struct request *next = r->next;
        bytebuf_release(&r->url);
        bytebuf_release(&r->body);
        free(r);
        r = next;
    }
}

void fetcher_free(struct fetcher *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->nslots; i++) {
        struct slot *s = &f->slots[i];
        if (s->req) {
            curl_multi_remove_handle(f->multi, s->easy);
            s->req->next = NULL;
            free_list(s->req);
        }
        if (s->easy)
            curl_easy_cleanup(s->easy);
    }
    if (f->multi)
        curl_multi_cleanup(f->multi);
    free_list(f->pend_head);
    free_list(f->done_head);
    free_list(f->free_reqs);
    for (size_t i = 0; f->htab && i < f->hcap; i++) {
        struct host *h = f->htab[i];
        while (h) {
            struct host *next = h->hnext;
            free_list(h->qhead);
            free(h);
            h = next;
        }
    }
    free(f->htab);
    free(f->slots);
    curl_slist_free_all(f->headers);
    free(f->user_agent);
    free(f->directives);
    free(f->token);
    free(f->ca_file);
    free(f);
    curl_global_cleanup();
}

int fetcher_submit(struct fetcher *f, const char *url, void *user, struct pm_error *err)
{
    struct request *r = request_get(f);
    if (!r)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory queueing a request");
    r->user = user;
    f->pending++;
    f->stats.submitted++;
    struct url_info info;
    enum url_verdict v = URL_BAD;
    if (url && bytebuf_append_str(&r->url, url) == PM_OK)
        v = url_policy_check(&f->policy, url, &info);
    url_policy_redact(url ? url : "", r->final_url, sizeof r->final_url);
    if (v == URL_OK && f->cfg.loopback_only && info.host_is_ip &&
        url_policy_classify_ip(info.host) != ADDR_LOOPBACK) {
        request_fail(r, FETCH_E_OTHER, "error: non-loopback address refused (loopback_only)");
        done_push(f, r);
        return PM_OK;
    }
    switch (v) {
    case URL_OK:
        snprintf(r->hostkey, sizeof r->hostkey, "%s:%d", info.host, info.port);
        r->https = info.https;
        r->next = NULL;
        if (f->pend_tail)
            f->pend_tail->next = r;
        else
            f->pend_head = r;
        f->pend_tail = r;
        return PM_OK;
    case URL_BLOCKED_SCHEME:
        request_fail(r, FETCH_E_BLOCKED_SCHEME, NULL);
        break;
    case URL_BLOCKED_ADDRESS:
        request_fail(r, FETCH_E_BLOCKED_ADDRESS, NULL);
        break;
    case URL_BAD:
    default:
        request_fail(r, FETCH_E_BAD_URL, NULL);
        break;
    }
    done_push(f, r);
    return PM_OK;
}

static void collect(struct fetcher *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct slot *s = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
        if (s && s->req)
            request_finish(f, s, m->data.result, now_ms());
    }
}

int fetcher_poll(struct fetcher *f, int timeout_ms, struct pm_error *err)
{
    if (timeout_ms < 0)
        timeout_ms = 0;
    int64_t now = now_ms();
    schedule(f, now);
    if (f->active == 0) {
        if (f->ndone || timeout_ms == 0)
            return PM_OK;
        int64_t due = next_due(f, now);
        if (due < 0)
            return PM_OK; // nothing left that a wait could start
        int64_t wait = due - now;
        if (wait > timeout_ms)
            wait = timeout_ms;
        if (wait > 0)
            curl_multi_poll(f->multi, NULL, 0, (int)wait, NULL);
        now = now_ms();
        schedule(f, now);
        if (f->active == 0)
            return PM_OK;
    }
    int64_t wait = f->ndone ? 0 : timeout_ms;
    // A due retry can only start when a slot is free; while all are busy, the end of a
    // transfer (socket activity) is what wakes us, so do not spin on the timer.
    int64_t due = capacity(f) ? next_due(f, now) : -1;
    if (due >= 0 && due - now < wait)
        wait = due - now;
    CURLMcode mc = curl_multi_poll(f->multi, NULL, 0, (int)wait, NULL);
    if (mc != CURLM_OK)
        return pm_error_set(err, mc == CURLM_OUT_OF_MEMORY ? PM_ERR_NOMEM : PM_ERR_NETWORK,
                            "fetcher: %s", curl_multi_strerror(mc));
    int running = 0;
    mc = curl_multi_perform(f->multi, &running);
    if (mc != CURLM_OK)
        return pm_error_set(err, mc == CURLM_OUT_OF_MEMORY ? PM_ERR_NOMEM : PM_ERR_NETWORK,
                            "fetcher: %s", curl_multi_strerror(mc));
    collect(f);
    schedule(f, now_ms());
    return PM_OK;
}

int fetcher_next(struct fetcher *f, struct fetch_result *out)
{
    struct request *r = f->done_head;
    if (!r)
        return 0;
    f->done_head = r->next;
    if (!f->done_head)
        f->done_tail = NULL;
    f->ndone--;
    f->pending--;

    struct bytebuf old = out->body;
    out->user = r->user;
    out->status = r->status;
    out->error_class = r->eclass;
    memcpy(out->error, r->error, sizeof out->error);
    out->http_code = r->http_code;
    out->body = r->body;
    memcpy(out->final_url, r->final_url, sizeof out->final_url);
    memcpy(out->content_type, r->content_type, sizeof out->content_type);
    memcpy(out->primary_ip, r->primary_ip, sizeof out->primary_ip);
    out->attempts = r->attempts;
    out->redirects = r->redirects;
    out->http_version = r->http_version;
    out->elapsed_s = r->elapsed_s;

    r->body = old; // the caller's previous buffer goes back into circulation
    bytebuf_clear(&r->body);
    request_put(f, r);
    return 1;
}

size_t fetcher_pending(const struct fetcher *f)
{
    return f->pending;
}

void fetcher_stats_get(const struct fetcher *f, struct fetcher_stats *out)
{
    *out = f->stats;
}
