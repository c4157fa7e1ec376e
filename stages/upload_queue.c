/*
 * upload_queue — background uploads of finished local files (see upload_queue.h).
 */
#include "upload_queue.h"

#include "dataset_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct job {
    struct job *next;
    size_t n;
    char *paths[UPLOAD_QUEUE_MAX_FILES];
    char *names[UPLOAD_QUEUE_MAX_FILES];
};

struct upload_queue {
    char *location;
    struct store_options opts;
    char *endpoint; // owned copy of opts.s3_endpoint
    pthread_t *threads;
    int nthreads, started;
    pthread_mutex_t mu;
    pthread_cond_t cond_job;  // a job was queued, or stop
    pthread_cond_t cond_done; // a job ended
    struct job *head, *tail;
    int pending; // queued + running
    bool stop;
    atomic_bool cancel;
    int rc; // first error
    struct pm_error err;
};

static void job_free(struct job *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++) {
        if (j->paths[i])
            unlink(j->paths[i]);
        free(j->paths[i]);
        free(j->names[i]);
    }
    free(j);
}

static void *thread_main(void *arg)
{
    struct upload_queue *q = arg;
    struct pm_error err = PM_ERROR_INIT;
    struct store *s = NULL;
    int orc = store_open(q->location, &q->opts, &s, &err);
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->stop)
            pthread_cond_wait(&q->cond_job, &q->mu);
        struct job *j = q->head;
        if (!j) { // stop, nothing left
            pthread_mutex_unlock(&q->mu);
            break;
        }
        q->head = j->next;
        if (!q->head)
            q->tail = NULL;
        bool skip = q->rc != PM_OK || atomic_load(&q->cancel);
        pthread_mutex_unlock(&q->mu);
        int rc = orc;
        for (size_t i = 0; rc == PM_OK && !skip && i < j->n; i++)
            rc = dataset_store_put_file_until(s, j->names[i], j->paths[i], &q->cancel, &err);
        job_free(j);
        pthread_mutex_lock(&q->mu);
        if (rc != PM_OK && !skip && q->rc == PM_OK) {
            q->rc = rc;
            q->err = err;
        }
        q->pending--;
        pthread_cond_broadcast(&q->cond_done);
        pthread_mutex_unlock(&q->mu);
    }
    store_free(s);
    return NULL;
}

int upload_queue_create(const char *location, const struct store_options *opts, int threads,
                        struct upload_queue **out, struct pm_error *err)
{
    *out = NULL;
    if (threads < 1)
        return pm_error_set(err, PM_ERR_USAGE, "upload_queue: threads must be >= 1");
    struct upload_queue *q = calloc(1, sizeof *q);
    if (!q)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (opts)
        q->opts = *opts;
    q->location = strdup(location);
    q->endpoint = q->opts.s3_endpoint ? strdup(q->opts.s3_endpoint) : NULL;
    q->opts.s3_endpoint = q->endpoint;
    q->threads = calloc((size_t)threads, sizeof *q->threads);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cond_job, NULL);
    pthread_cond_init(&q->cond_done, NULL);
    atomic_init(&q->cancel, false);
    q->nthreads = threads;
    if (!q->location || !q->threads || (opts && opts->s3_endpoint && !q->endpoint)) {
        upload_queue_free(q);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < threads; i++) {
        if (pthread_create(&q->threads[i], NULL, thread_main, q) != 0) {
            upload_queue_free(q);
            return pm_error_set(err, PM_ERR_IO, "cannot start an upload thread");
        }
        q->started++;
    }
    *out = q;
    return PM_OK;
}

int upload_queue_push(struct upload_queue *q, const char *const *paths, const char *const *names,
                      size_t n, struct pm_error *err)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j || n > UPLOAD_QUEUE_MAX_FILES) {
        for (size_t i = 0; i < n; i++)
            unlink(paths[i]);
        free(j);
        return pm_error_set(err, n > UPLOAD_QUEUE_MAX_FILES ? PM_ERR_USAGE : PM_ERR_NOMEM,
                            "upload_queue: cannot queue %zu files", n);
    }
    bool nomem = false;
    for (size_t i = 0; i < n; i++) {
        j->paths[i] = strdup(paths[i]);
        j->names[i] = strdup(names[i]);
        nomem |= !j->paths[i] || !j->names[i];
        j->n = i + 1;
        if (!j->paths[i])
            unlink(paths[i]);
    }
    if (nomem) {
        job_free(j);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    pthread_mutex_lock(&q->mu);
    while (q->rc == PM_OK && q->pending >= q->nthreads)
        pthread_cond_wait(&q->cond_done, &q->mu);
    int rc = q->rc;
    if (rc != PM_OK) {
        *err = q->err;
    } else {
        if (q->tail)
            q->tail->next = j;
        else
            q->head = j;
        q->tail = j;
        q->pending++;
        pthread_cond_signal(&q->cond_job);
        j = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    job_free(j);
    return rc;
}

int upload_queue_drain(struct upload_queue *q, struct pm_error *err)
{
    pthread_mutex_lock(&q->mu);
    while (q->pending > 0)
        pthread_cond_wait(&q->cond_done, &q->mu);
    int rc = q->rc;
    if (rc != PM_OK)
        *err = q->err;
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void upload_queue_free(struct upload_queue *q)
{
    if (!q)
        return;
    atomic_store(&q->cancel, true);
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cond_job);
    pthread_mutex_unlock(&q->mu);
    for (int i = 0; i < q->started; i++)
        pthread_join(q->threads[i], NULL);
    for (struct job *j = q->head; j;) {
        struct job *next = j->next;
        job_free(j);
        j = next;
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cond_job);
    pthread_cond_destroy(&q->cond_done);
    free(q->threads);
    free(q->location);
    free(q->endpoint);
    free(q);
}
