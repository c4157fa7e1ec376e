/*
 * pm_fetch_tool — drive the fetcher (net/fetcher.h) from the command line, for tests.
 *
 *   pm_fetch_tool [options] URL...     or URLs one per line on stdin
 *
 * Prints one JSON line per URL in completion order: index (position in the input),
 * url, status, http, error, bytes, elapsed, attempts, redirects, final_url,
 * content_type, http_version. At the end prints the engine's counters as one JSON line
 * on stderr. With --threads N, N fetchers run in N threads sharing one fetch_share (URL i
 * goes to thread i % N). Exit status: 0 (whatever the URLs' outcomes), 2 usage error, 1
 * engine error.
 */
#include "fetcher.h"
#include "pm_error.h"
#include "url_policy.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: pm_fetch_tool [--allow-private-network] [--allow-address IP]...\n"
                 "       [--loopback-only] [--concurrency N] [--retries N] [--timeout S]\n"
                 "       [--connect-timeout S] [--max-bytes N] [--max-host-connections N]\n"
                 "       [--backoff-ms N] [--low-speed BYTES SECS] [--token T]\n"
                 "       [--directives LIST] [--ca-file F] [--no-http2] [--threads N]\n"
                 "       URL... (or URLs on stdin)\n");
}

static const char *status_name(enum fetch_status s)
{
    return s == FETCH_SUCCESS ? "success" : s == FETCH_DISALLOWED ? "disallowed" : "failed";
}

static void print_result(const struct fetch_result *r, char **urls)
{
    size_t idx = (size_t)(uintptr_t)r->user;
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer((json_int_t)idx));
    char shown[2048];
    url_policy_redact(urls[idx], shown, sizeof shown); // never print credentials
    json_object_set_new(o, "url", json_string(shown));
    json_object_set_new(o, "status", json_string(status_name(r->status)));
    json_object_set_new(o, "http", json_integer(r->http_code));
    json_object_set_new(o, "error", r->error[0] ? json_string(r->error) : json_null());
    json_object_set_new(o, "bytes", json_integer((json_int_t)r->body.len));
    json_object_set_new(o, "elapsed", json_real(r->elapsed_s));
    json_object_set_new(o, "attempts", json_integer(r->attempts));
    json_object_set_new(o, "redirects", json_integer(r->redirects));
    json_object_set_new(o, "final_url", json_string(r->final_url));
    json_object_set_new(o, "content_type", json_string(r->content_type));
    json_object_set_new(o, "http_version", json_integer(r->http_version));
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_REAL_PRECISION(6));
    if (s) {
        puts(s);
        free(s);
    }
    json_decref(o);
}

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

struct worker {
    const struct fetcher_config *cfg;
    struct fetch_share *share;
    char **urls;
    size_t n, first, step;
    pthread_t tid;
    int rc;
    struct pm_error err;
    struct fetcher_stats st;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    struct fetcher *f;
    w->rc = fetcher_create(w->cfg, w->share, &f, &w->err);
    if (w->rc)
        return NULL;
    struct fetch_result res;
    fetch_result_init(&res);
    size_t todo = w->first < w->n ? (w->n - w->first + w->step - 1) / w->step : 0;
    size_t next = w->first, done = 0;
    size_t window = (size_t)w->cfg->concurrency * 4;
    while (done < todo) {
        while (next < w->n && fetcher_pending(f) < window) {
            if ((w->rc = fetcher_submit(f, w->urls[next], (void *)(uintptr_t)next, &w->err)))
                goto out;
            next += w->step;
        }
        if ((w->rc = fetcher_poll(f, 100, &w->err)))
            goto out;
        pthread_mutex_lock(&out_lock);
        while (fetcher_next(f, &res)) {
            print_result(&res, w->urls);
            done++;
        }
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
    }
out:
    fetcher_stats_get(f, &w->st);
    fetch_result_release(&res);
    fetcher_free(f);
    return NULL;
}

int main(int argc, char **argv)
{
    struct fetcher_config cfg;
    fetcher_config_init(&cfg);
    char allow[1024] = "";
    int first_url = argc, nthreads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--allow-private-network")) {
            cfg.allow_private_network = 1;
        } else if (!strcmp(a, "--loopback-only")) {
            cfg.loopback_only = 1;
        } else if (!strcmp(a, "--no-http2")) {
            cfg.http2 = 0;
        } else if (!strcmp(a, "--allow-address") && more) {
            if (fetcher_allow_list_add(allow, sizeof allow, argv[++i])) {
                fprintf(stderr, "pm_fetch_tool: --allow-address: too many addresses\n");
                return 2;
            }
        } else if (!strcmp(a, "--concurrency") && more) {
            cfg.concurrency = atoi(argv[++i]);
        } else if (!strcmp(a, "--threads") && more) {
            nthreads = atoi(argv[++i]);
            if (nthreads < 1 || nthreads > 64) {
                fprintf(stderr, "pm_fetch_tool: --threads must be 1..64\n");
                return 2;
            }
        } else if (!strcmp(a, "--retries") && more) {
            cfg.retries = atoi(argv[++i]);
        } else if (!strcmp(a, "--timeout") && more) {
            cfg.timeout_ms = (long)(atof(argv[++i]) * 1000);
        } else if (!strcmp(a, "--connect-timeout") && more) {
            cfg.connect_timeout_ms = (long)(atof(argv[++i]) * 1000);
        } else if (!strcmp(a, "--max-bytes") && more) {
            cfg.max_bytes = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(a, "--max-host-connections") && more) {
            cfg.max_host_connections = atoi(argv[++i]);
        } else if (!strcmp(a, "--backoff-ms") && more) {
            cfg.backoff_ms = atol(argv[++i]);
        } else if (!strcmp(a, "--low-speed") && i + 2 < argc) {
            cfg.low_speed_bytes = atol(argv[++i]);
            cfg.low_speed_time_s = atol(argv[++i]);
        } else if (!strcmp(a, "--token") && more) {
            cfg.user_agent_token = argv[++i];
        } else if (!strcmp(a, "--directives") && more) {
            cfg.disallowed_directives = argv[++i];
        } else if (!strcmp(a, "--ca-file") && more) {
            cfg.ca_file = argv[++i];
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "pm_fetch_tool: unknown option or missing value: %s\n", a);
            usage(stderr);
            return 2;
        } else {
            first_url = i;
            break;
        }
    }
    if (allow[0])
        cfg.allow_addresses = allow;

    // Collect the URLs (arguments, else stdin lines).
    size_t n = 0, cap = 64;
    char **urls = malloc(cap * sizeof *urls);
    if (!urls)
        return 1;
    if (first_url < argc) {
        for (int i = first_url; i < argc; i++) {
            if (n == cap && !(urls = realloc(urls, (cap *= 2) * sizeof *urls)))
                return 1;
            urls[n++] = strdup(argv[i]);
        }
    } else {
        char *line = NULL;
        size_t lcap = 0;
        ssize_t len;
        while ((len = getline(&line, &lcap, stdin)) >= 0) {
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            if (len == 0)
                continue;
            if (n == cap && !(urls = realloc(urls, (cap *= 2) * sizeof *urls)))
                return 1;
            urls[n++] = strdup(line);
        }
        free(line);
    }

    struct pm_error err = PM_ERROR_INIT;
    // One fetcher per thread (URL i goes to thread i % nthreads), all sharing one DNS
    // and TLS session cache, as the download stage's rank threads will.
    struct fetch_share *share = NULL;
    if (nthreads > 1 && fetch_share_create(&share, &err)) {
        fprintf(stderr, "pm_fetch_tool: %s\n", err.msg);
        return 1;
    }
    struct worker *w = calloc((size_t)nthreads, sizeof *w);
    if (!w)
        return 1;
    for (int t = 0; t < nthreads; t++) {
        w[t] = (struct worker){.cfg = &cfg,
                               .share = share,
                               .urls = urls,
                               .n = n,
                               .first = (size_t)t,
                               .step = (size_t)nthreads};
        if (t > 0 && pthread_create(&w[t].tid, NULL, worker_run, &w[t]) != 0) {
            fprintf(stderr, "pm_fetch_tool: cannot start a thread\n");
            return 1;
        }
    }
    worker_run(&w[0]);
    struct fetcher_stats st;
    memset(&st, 0, sizeof st);
    st.min_concurrency = (uint64_t)cfg.concurrency;
    int rc = 0;
    for (int t = 0; t < nthreads; t++) {
        if (t > 0)
            pthread_join(w[t].tid, NULL);
        if (w[t].rc) {
            fprintf(stderr, "pm_fetch_tool: %s\n", w[t].err.msg);
            rc = w[t].rc == PM_ERR_USAGE ? 2 : 1;
        }
        st.submitted += w[t].st.submitted;
        st.completed += w[t].st.completed;
        st.succeeded += w[t].st.succeeded;
        st.failed += w[t].st.failed;
        st.disallowed += w[t].st.disallowed;
        st.attempts += w[t].st.attempts;
        st.retries += w[t].st.retries;
        st.connections += w[t].st.connections;
        st.refused_sockets += w[t].st.refused_sockets;
        st.body_bytes += w[t].st.body_bytes;
        st.fd_requeues += w[t].st.fd_requeues;
        if (w[t].st.min_concurrency < st.min_concurrency)
            st.min_concurrency = w[t].st.min_concurrency;
    }
    free(w);
    fetch_share_free(share);
    if (rc)
        return rc;
    fprintf(stderr,
            "{\"submitted\":%llu,\"completed\":%llu,\"succeeded\":%llu,\"failed\":%llu,"
            "\"disallowed\":%llu,\"attempts\":%llu,\"retries\":%llu,\"connections\":%llu,"
            "\"refused_sockets\":%llu,\"body_bytes\":%llu,\"fd_requeues\":%llu,"
            "\"min_concurrency\":%llu}\n",
            (unsigned long long)st.submitted, (unsigned long long)st.completed,
            (unsigned long long)st.succeeded, (unsigned long long)st.failed,
            (unsigned long long)st.disallowed, (unsigned long long)st.attempts,
            (unsigned long long)st.retries, (unsigned long long)st.connections,
            (unsigned long long)st.refused_sockets, (unsigned long long)st.body_bytes,
            (unsigned long long)st.fd_requeues, (unsigned long long)st.min_concurrency);
    for (size_t i = 0; i < n; i++)
        free(urls[i]);
    free(urls);
    return 0;
}
