/**
 * fetcher — the download engine: many HTTP(S) transfers in flight on one thread.
 *
 * One `struct fetcher` per rank thread wraps a libcurl multi handle. The caller submits
 * requests (a URL and an opaque user pointer), drives the engine with fetcher_poll(), and
 * takes completed results with fetcher_next() in completion order, so it can decode one
 * image while the others are still downloading. Exactly one result comes back for each
 * submitted request, including those refused before any request is sent.
 *
 * What the engine does for the caller (docs/internals/net.md has the details):
 *  - up to `concurrency` transfers in flight; connection reuse; HTTP/2 multiplexing where
 *    a server offers it (CURLOPT_PIPEWAIT); per-host and total connection caps; a DNS
 *    cache shared by all transfers of the engine (and between engines through a
 *    `struct fetch_share`);
 *  - a total deadline per attempt (`timeout_ms`) and a low-speed abort; bodies capped at
 *    `max_bytes` (refused early from Content-Length, else as soon as more arrives);
 *  - at most `max_redirects` redirects, http/https only on every hop;
 *  - the address policy of url_policy.h on the socket address of every connection;
 *  - retries of retryable failures only (timeouts, connection errors, truncated bodies,
 *    408, 429, 5xx), with exponential backoff and jitter, honouring Retry-After on 429
 *    and 503 for the whole host; waiting requests sit in a per-host queue while other
 *    hosts go on (nothing ever sleeps except in fetcher_poll's bounded wait);
 *  - X-Robots-Tag opt-outs (status FETCH_DISALLOWED);
 *  - running out of file descriptors (EMFILE/ENFILE) is not the URL's fault: the engine
 *    lowers its in-flight limit and requeues the request without using up an attempt,
 *    then raises the limit again step by step as transfers complete.
 *
 * Memory is bounded: transfers in flight plus results not yet taken never exceed
 * `concurrency`, each body holds at most `max_bytes`, and request records and body
 * buffers are recycled, so a steady run allocates nothing per URL. Submitted requests
 * wait in a queue without bound: keep fetcher_pending() to a few times `concurrency`.
 *
 * Thread-safety: a fetcher is used by one thread at a time. A fetch_share may be used
 * by fetchers on several threads at once.
 */
#ifndef PM_FETCHER_H
#define PM_FETCHER_H

#include "bytebuf.h"
#include "pm_error.h"

#include <stddef.h>
#include <stdint.h>

/** What the user agent string tells site operators about the crawler. */
#define FETCHER_INFO "image-text dataset builder; honours X-Robots-Tag noai"

/** How a request ended. */
enum fetch_status {
    FETCH_SUCCESS = 0,    /* a 2xx response and its complete body */
    FETCH_FAILED = 1,     /* no usable response: see `error` and `error_class` */
    FETCH_DISALLOWED = 2, /* the response opted out (X-Robots-Tag); body dropped */
};

/**
 * Error classes. The result's `error` text starts with the class name (the names are
 * stable: they end up in stats and Parquet sidecars).
 */
enum fetch_error {
    FETCH_E_NONE = 0,
    FETCH_E_HTTP,            /* "http 404": a final non-2xx status */
    FETCH_E_TIMEOUT,         /* "timeout": total deadline or low-speed abort */
    FETCH_E_DNS,             /* "dns": the host name did not resolve */
    FETCH_E_TLS,             /* "tls": handshake or certificate failure */
    FETCH_E_CONNECT,         /* "connect": no TCP connection */
    FETCH_E_NETWORK,         /* "network": connection reset, empty reply, HTTP/2 error */
    FETCH_E_TOO_LARGE,       /* "too large": body over max_bytes */
    FETCH_E_TRUNCATED,       /* "truncated": body shorter than its Content-Length */
    FETCH_E_REDIRECT_LOOP,   /* "redirect loop": more than max_redirects redirects */
    FETCH_E_BLOCKED_ADDRESS, /* "blocked: private address": refused by the address policy */
    FETCH_E_BLOCKED_SCHEME,  /* "blocked: scheme": not http/https (also after a redirect) */
    FETCH_E_DISALLOWED,      /* "disallowed": X-Robots-Tag opt-out */
    FETCH_E_BAD_URL,         /* "bad url": not a parsable URL */
    FETCH_E_OTHER,           /* "error": anything else (out of memory, libcurl bug) */
};

/** The stable name of an error class ("timeout", "blocked: scheme", ...). Never NULL. */
const char *fetch_error_name(enum fetch_error e);

/** Engine settings. Fill with fetcher_config_init, then change what you need. */
struct fetcher_config {
    int concurrency;              /* transfers in flight + results not yet taken (256) */
    int max_host_connections;     /* connections per host (8); also the HTTP/1 in-flight cap */
    int max_host_streams;         /* in-flight transfers per host once it spoke HTTP/2 (64) */
    int max_total_connections;    /* 0: same as concurrency */
    long timeout_ms;              /* total deadline of one attempt, redirects included (20000) */
    long connect_timeout_ms;      /* DNS + TCP + TLS (10000) */
    long low_speed_bytes;         /* abort below this many bytes/s ... (1024) */
    long low_speed_time_s;        /* ... sustained for this long (10); 0 disables */
    size_t max_bytes;             /* body limit (32 MiB) */
    int max_redirects;            /* (5) */
    int retries;                  /* extra attempts for retryable failures (2) */
    long backoff_ms;              /* first retry delay; doubles per attempt, +-50% jitter (500) */
    long max_backoff_ms;          /* cap on one backoff delay (30000) */
    long max_retry_after_s;       /* a longer Retry-After fails the request instead (60) */
    int http2;                    /* offer HTTP/2 (1) */
    int allow_private_network;    /* see url_policy.h (0) */
    const char *allow_addresses;  /* comma-separated exact IPs allowed anyway (NULL) */
    int loopback_only;            /* tests: refuse every non-loopback address (0) */
    const char *user_agent_token; /* appended to the user agent, matched in X-Robots-Tag */
    const char *disallowed_directives; /* NULL: HTTP_ROBOTS_DEFAULT_DIRECTIVES; "": none */
    const char *ca_file;               /* PEM bundle of trusted CAs (NULL: system default) */
    uint64_t seed;                     /* jitter seed (0: from the clock) */
};

/** A completed request. Caller-owned; fetcher_next fills it. */
struct fetch_result {
    void *user; /* the pointer given to fetcher_submit */
    enum fetch_status status;
    enum fetch_error error_class;
    char error[96];         /* "" on success, else "http 404", "timeout", ... */
    long http_code;         /* last HTTP status seen (0 if none) */
    struct bytebuf body;    /* the body on success (empty otherwise) */
    char final_url[2048];   /* URL of the last hop, user-info removed (may be cut) */
    char content_type[128]; /* Content-Type of the final response ("" if none) */
    char primary_ip[48];    /* address of the last connection ("" if none) */
    int attempts;           /* requests made (1 + retries used; 0 if refused early) */
    int redirects;          /* redirects followed in the last attempt */
    int http_version;       /* 1 or 2 (0 if no response) */
    double elapsed_s;       /* first attempt's start to completion, waits included */
};

/** Counters over the engine's life. */
struct fetcher_stats {
    uint64_t submitted, completed, succeeded, failed, disallowed;
    uint64_t attempts;        /* requests started, retries included */
    uint64_t retries;         /* attempts scheduled after a retryable failure */
    uint64_t connections;     /* TCP connections opened */
    uint64_t refused_sockets; /* connections refused by the address policy */
    uint64_t body_bytes;      /* bytes of successful bodies */
    uint64_t fd_requeues;     /* attempts requeued because this process ran out of fds */
    uint64_t min_concurrency; /* lowest in-flight limit reached (concurrency if never lowered) */
};

/** The engine (opaque). */
struct fetcher;

/** A cache of DNS answers and TLS sessions shared by fetchers on several threads. */
struct fetch_share;

/** Set cfg to the defaults shown in the struct's comments. */
void fetcher_config_init(struct fetcher_config *cfg);

/**
 * Append `address` to list[0..size), the NUL-terminated comma-separated list (initially "")
 * that `allow_addresses` points at; for a repeatable --allow-address option. PM_OK, or
 * PM_ERR_USAGE (list unchanged) if it does not fit.
 */
int fetcher_allow_list_add(char *list, size_t size, const char *address);

/**
 * Create a share (DNS cache and TLS session cache, with its own locks). Pass it to the
 * fetchers of one process; free it after all of them. Returns PM_OK or PM_ERR_NOMEM.
 */
int fetch_share_create(struct fetch_share **out, struct pm_error *err);

/** Free a share. Accepts NULL. Every fetcher using it must be freed first. */
void fetch_share_free(struct fetch_share *s);

/**
 * Create an engine with a copy of cfg (strings are copied). `share` may be NULL.
 * Returns PM_OK, PM_ERR_USAGE (bad setting, unreadable ca_file: message names it),
 * PM_ERR_UNSUPPORTED (libcurl too old or without http/https) or PM_ERR_NOMEM.
 */
int fetcher_create(const struct fetcher_config *cfg, struct fetch_share *share,
                   struct fetcher **out, struct pm_error *err);

/** Abort every transfer and free the engine; results not taken are lost. Accepts NULL. */
void fetcher_free(struct fetcher *f);

/**
 * Queue a request for url (copied). A URL refused by policy (bad syntax, scheme, IP
 * literal in a refused range) becomes an immediate FETCH_FAILED result. Returns PM_OK or
 * PM_ERR_NOMEM.
 */
int fetcher_submit(struct fetcher *f, const char *url, void *user, struct pm_error *err);

/**
 * Drive the transfers: start queued requests, move data, collect completions. Waits at
 * most timeout_ms for network activity (returns at once when a result is ready or
 * nothing is left to do). Returns PM_OK or PM_ERR_NETWORK/PM_ERR_NOMEM for an engine
 * failure (not for a failed request: those are results).
 */
int fetcher_poll(struct fetcher *f, int timeout_ms, struct pm_error *err);

/**
 * Take the next completed result, if any. Returns 1 and fills *out, or 0 when none is
 * ready. `out` must have been initialised with fetch_result_init (or filled by an
 * earlier fetcher_next): its body buffer is swapped with the engine's, so buffers are
 * recycled rather than allocated per URL. The result owns its body until the next call
 * with the same `out` or fetch_result_release.
 */
int fetcher_next(struct fetcher *f, struct fetch_result *out);

/** Requests submitted whose results have not been taken yet. */
size_t fetcher_pending(const struct fetcher *f);

/** Copy the counters. */
void fetcher_stats_get(const struct fetcher *f, struct fetcher_stats *out);

/** Initialise an empty result (no heap until it holds a body). */
void fetch_result_init(struct fetch_result *r);

/** Free a result's body. Accepts NULL. */
void fetch_result_release(struct fetch_result *r);

#endif
