/*
 * upload_queue and the store helpers it relies on, on a POSIX store: jobs commit their
 * files in order and remove the local copies; an error stops later jobs; freeing cancels
 * what is queued. store_list_incomplete sees a killed writer's temporary file (nested),
 * store_sweep_incomplete removes it; store_local_path gives a POSIX object's own path.
 */
#include "check.h"
#include "store.h"
#include "upload_queue.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_temp(void *ctx, const char *name, const char *started)
{
    (void)started;
    CHECK(strstr(name, "sub/.x.tmp.") == name);
    ++*(int *)ctx;
    return 0;
}

int main(void)
{
    char root[] = "/tmp/pm-uq-XXXXXX";
    if (!mkdtemp(root))
        return 1;
    char out[64], loc[64], a[256], b[256], c[256], obj[512];
    snprintf(out, sizeof out, "%s/out", root);
    snprintf(loc, sizeof loc, "%s/local", root);
    mkdir(loc, 0777);
    struct pm_error err = PM_ERROR_INIT;

    // jobs: files committed under their names, local copies removed
    struct upload_queue *q = NULL;
    CHECK(upload_queue_create(out, NULL, 2, &q, &err) == PM_OK);
    for (int i = 0; i < 5; i++) {
        char n1[32], n2[32];
        snprintf(a, sizeof a, "%s/%d.tar", loc, i);
        snprintf(b, sizeof b, "%s/%d.json", loc, i);
        put(a, "tar bytes");
        put(b, "{}");
        snprintf(n1, sizeof n1, "%05d.tar", i);
        snprintf(n2, sizeof n2, "%05d_stats.json", i);
        const char *paths[2] = {a, b}, *names[2] = {n1, n2};
        CHECK(upload_queue_push(q, paths, names, 2, &err) == PM_OK);
    }
    CHECK(upload_queue_drain(q, &err) == PM_OK);
    upload_queue_free(q);
    for (int i = 0; i < 5; i++) {
        snprintf(obj, sizeof obj, "%s/%05d_stats.json", out, i);
        CHECK(exists(obj));
        snprintf(a, sizeof a, "%s/%d.tar", loc, i);
        CHECK(!exists(a));
    }

    // a failing job (missing local file): its error comes back, later jobs do not run
    CHECK(upload_queue_create(out, NULL, 1, &q, &err) == PM_OK);
    snprintf(a, sizeof a, "%s/missing", loc);
    const char *pa[1] = {a}, *na[1] = {"bad.tar"};
    CHECK(upload_queue_push(q, pa, na, 1, &err) == PM_OK);
    CHECK(upload_queue_drain(q, &err) == PM_ERR_IO && strstr(err.msg, "missing"));
    snprintf(c, sizeof c, "%s/late", loc);
    put(c, "late");
    const char *pc[1] = {c}, *nc[1] = {"late.tar"};
    CHECK(upload_queue_push(q, pc, nc, 1, &err) == PM_ERR_IO);
    upload_queue_free(q);
    snprintf(obj, sizeof obj, "%s/late.tar", out);
    CHECK(!exists(obj) && !exists(c)); // not uploaded, local file removed

    // unfinished writes: listed, then swept
    struct store *s = NULL;
    CHECK(store_open(out, NULL, &s, &err) == PM_OK);
    snprintf(obj, sizeof obj, "%s/sub", out);
    mkdir(obj, 0777);
    snprintf(obj, sizeof obj, "%s/sub/.x.tmp.42.0123456789abcdef", out);
    put(obj, "partial");
    int n = 0;
    CHECK(store_list_incomplete(s, count_temp, &n, &err) == PM_OK && n == 1);
    size_t removed = 0;
    CHECK(store_sweep_incomplete(s, 0, &removed, &err) == PM_OK && removed == 1);
    n = 0;
    CHECK(store_list_incomplete(s, count_temp, &n, &err) == PM_OK && n == 0);

    // store_local_path on POSIX: the object's own file, no copy
    bool temp = true;
    CHECK(store_local_path(s, "00001.tar", obj, sizeof obj, &temp, &err) == PM_OK && !temp);
    snprintf(a, sizeof a, "%s/00001.tar", out);
    CHECK_STR(obj, a);
    CHECK(store_local_path(s, "nope.tar", obj, sizeof obj, &temp, &err) == PM_ERR_NOT_FOUND);
    store_free(s);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0)
        return 1;
    return CHECK_DONE();
}
