/**
 * s3_client — a small S3 client on libcurl: object PUT/GET/HEAD/DELETE, ListObjectsV2,
 * multipart uploads with parts in parallel, and cleanup of stale multipart uploads.
 *
 * Signing is libcurl's own AWS Signature V4 (CURLOPT_AWS_SIGV4 "aws:amz:REGION:s3" with
 * the key pair as CURLOPT_USERPWD); every request carries `x-amz-content-sha256` with the
 * SHA-256 of its body (computed here, so S3 checks the payload), and
 * `x-amz-security-token` when a session token is configured. Keys are percent-encoded
 * as SigV4 wants (everything but A-Za-z0-9-._~ and '/'), query strings are built already
 * sorted and canonical, so the URL libcurl signs is the canonical one.
 *
 * Retries: a request that fails with a 5xx status (503 SlowDown included), 408, 429,
 * RequestTimeout, or a transport error (connection refused or reset, timeout, truncated
 * body) is retried up to `max_attempts` times in all, waiting a random time in
 * [0, min(backoff_max, backoff_base * 2^attempt)] before each retry ("full jitter").
 * Ranged GETs resume where the last attempt stopped; multipart parts are retried one by
 * one. 4xx answers other than those are final.
 *
 * Errors are PM_ERR_NETWORK (transport or 5xx after all attempts), PM_ERR_NOT_FOUND
 * (404/NoSuchKey/NoSuchBucket/NoSuchUpload), PM_ERR_IO (another error answer: 403,
 * 400...), PM_ERR_FORMAT (an answer we cannot parse), PM_ERR_NOMEM, PM_ERR_USAGE, with a
 * message naming the object and the S3 error code: "cannot put 's3://b/k/00012.tar': 503
 * SlowDown after 5 attempts". Credentials never appear in any message or log line.
 *
 * Threads: a client is used by one thread at a time (it keeps one reusable connection);
 * use one client per thread. An upload belongs to the thread that created it.
 */
#ifndef PM_S3_CLIENT_H
#define PM_S3_CLIENT_H

#include "bytebuf.h"
#include "pm_error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Settings of a client. Strings are owned by the struct (see s3_config_release). */
struct s3_config {
    char *access_key;       /* AWS_ACCESS_KEY_ID; NULL: unsigned (anonymous) requests */
    char *secret_key;       /* AWS_SECRET_ACCESS_KEY */
    char *session_token;    /* AWS_SESSION_TOKEN, or NULL */
    char *region;           /* AWS_REGION / AWS_DEFAULT_REGION, default "us-east-1" */
    char *endpoint;         /* "http://127.0.0.1:9000"; NULL: https://s3.REGION.amazonaws.com */
    int path_style;         /* 1 path-style, 0 virtual-hosted, -1 auto (path-style iff endpoint) */
    int max_attempts;       /* tries per request, >= 1 (default 5) */
    double backoff_base_s;  /* first backoff ceiling (default 0.2 s) */
    double backoff_max_s;   /* largest backoff ceiling (default 10 s) */
    size_t part_size;       /* multipart part size (default 16 MiB; S3 wants >= 5 MiB) */
    int parts_in_flight;    /* parts uploaded in parallel (default 4) */
    long connect_timeout_s; /* default 10 */
    long low_speed_time_s;  /* abort a transfer slower than 1 KiB/s for this long (default 30) */
};

/** Smallest part S3 accepts (except the last one). */
#define S3_PART_SIZE_MIN (5u << 20)
/** S3's limit on parts per upload. */
#define S3_PARTS_MAX 10000

/**
 * Fill `cfg` from the environment (see the field comments) and defaults; `endpoint`
 * (may be NULL) overrides AWS_ENDPOINT_URL. PIXELMILL_S3_PATH_STYLE=0/1 overrides the
 * addressing. Returns PM_OK or PM_ERR_NOMEM / PM_ERR_USAGE (an endpoint that is not
 * http(s)://, a secret without a key id). Release with s3_config_release.
 */
int s3_config_init_env(struct s3_config *cfg, const char *endpoint, struct pm_error *err);

/** Free the strings of `cfg` (accepts NULL) and zero it. */
void s3_config_release(struct s3_config *cfg);

/** Split "s3://bucket/prefix" into malloc'ed bucket and prefix ("" if none; no leading
 * '/'). Returns PM_OK, PM_ERR_USAGE (not an s3:// URL or empty bucket) or PM_ERR_NOMEM. */
int s3_url_split(const char *url, char **bucket, char **prefix, struct pm_error *err);

struct s3_client;

/** Create a client with a copy of `cfg`. Returns PM_OK with *out set, or an error. */
int s3_client_create(const struct s3_config *cfg, struct s3_client **out, struct pm_error *err);

/** Free a client. Accepts NULL. */
void s3_client_free(struct s3_client *c);

/** The client's settings (after defaults were applied). */
const struct s3_config *s3_client_config(const struct s3_client *c);

/** Store `n` bytes as one object with a single PUT (for objects up to a few GiB; the
 * data stays the caller's). */
int s3_client_put(struct s3_client *c, const char *bucket, const char *key, const void *data,
                  size_t n, struct pm_error *err);

/** Receives the bytes of a GET in order; return nonzero to stop (the GET then fails with
 * PM_ERR_INTERRUPTED). */
typedef int (*s3_sink_fn)(void *ctx, const void *data, size_t n);

/**
 * GET bytes [off, off+len) of an object (len UINT64_MAX: to the end; off 0 and len
 * UINT64_MAX: the whole object) and pass them to `sink` in order. A retry resumes after
 * the bytes already delivered, pinned to the object's ETag (If-Match), so the sink sees
 * each byte once. A range past the end gives what exists (PM_ERR_IO for a start past
 * the end, as S3 answers 416). `*got` (may be NULL) receives the bytes delivered.
 */
int s3_client_get(struct s3_client *c, const char *bucket, const char *key, uint64_t off,
                  uint64_t len, s3_sink_fn sink, void *ctx, uint64_t *got, struct pm_error *err);

/** HEAD an object: *size (may be NULL) receives its size. PM_ERR_NOT_FOUND if absent. */
int s3_client_head(struct s3_client *c, const char *bucket, const char *key, uint64_t *size,
                   struct pm_error *err);

/** DELETE an object (PM_OK also when it did not exist, as S3 answers). */
int s3_client_delete(struct s3_client *c, const char *bucket, const char *key,
                     struct pm_error *err);

/** One listed object; return nonzero from the callback to stop listing (PM_OK). */
typedef int (*s3_list_fn)(void *ctx, const char *key, uint64_t size);

/** List every object whose key starts with `prefix` (ListObjectsV2, following
 * continuation tokens), in S3's (byte) order. */
int s3_client_list(struct s3_client *c, const char *bucket, const char *prefix, s3_list_fn fn,
                   void *ctx, struct pm_error *err);

/** One multipart upload in progress; `initiated` is S3's ISO-8601 time stamp. */
typedef int (*s3_upload_list_fn)(void *ctx, const char *key, const char *upload_id,
                                 const char *initiated);

/** List the multipart uploads in progress under `prefix` (ListMultipartUploads, paged). */
int s3_client_list_uploads(struct s3_client *c, const char *bucket, const char *prefix,
                           s3_upload_list_fn fn, void *ctx, struct pm_error *err);

/** Abort one multipart upload (PM_OK also if it no longer exists). */
int s3_client_abort_upload(struct s3_client *c, const char *bucket, const char *key,
                           const char *upload_id, struct pm_error *err);

/**
 * Abort the multipart uploads under `prefix` initiated at least `min_age_s` seconds ago
 * (0: all). `aborted` (may be NULL) receives their number.
 */
int s3_client_sweep_uploads(struct s3_client *c, const char *bucket, const char *prefix,
                            double min_age_s, size_t *aborted, struct pm_error *err);

/**
 * A multipart upload being streamed. Bytes written are cut into parts of
 * cfg.part_size; up to cfg.parts_in_flight parts upload in parallel (curl multi) while
 * the caller fills the next one, so memory stays at (parts_in_flight + 1) * part_size.
 * The object appears under its key only when s3_upload_complete succeeds. Any failure
 * aborts the upload on S3 (after the in-flight parts have stopped) and makes the handle
 * unusable; so does s3_upload_abort.
 */
struct s3_upload;

/** Start a multipart upload (CreateMultipartUpload). The client must outlive it. */
int s3_upload_create(struct s3_client *c, const char *bucket, const char *key,
                     struct s3_upload **out, struct pm_error *err);

/** Append bytes; blocks while all in-flight slots are busy. */
int s3_upload_write(struct s3_upload *u, const void *data, size_t n, struct pm_error *err);

/** Upload the last part, wait for all parts and complete the upload. On failure the
 * upload is aborted. */
int s3_upload_complete(struct s3_upload *u, struct pm_error *err);

/** Stop in-flight parts and abort the upload on S3 (best effort, retried). Idempotent;
 * does nothing after a successful complete. */
void s3_upload_abort(struct s3_upload *u);

/** Bytes written so far. */
uint64_t s3_upload_bytes(const struct s3_upload *u);

/** Abort (unless completed) and free. Accepts NULL. */
void s3_upload_free(struct s3_upload *u);

#endif
