// pm_store_tool — drive the store layer (POSIX path or S3) from the Python tests.
//
//   pm_store_tool [options] put URL FILE      stream FILE into object URL (atomic)
//   pm_store_tool [options] get URL FILE [--range A-B]   object (bytes A..B) into FILE
//   pm_store_tool [options] size URL          print the object's size
//   pm_store_tool [options] ls URL            list "NAME<TAB>SIZE" under the store URL
//   pm_store_tool [options] rm URL            delete the object
//   pm_store_tool [options] sweep URL [AGE]   remove unfinished writes under the store
//   pm_store_tool [options] tar URL N SIZE    write a shard of N samples (KEY.bin of SIZE
//                                             bytes, KEY.txt) with tar_writer_open_store
//
// Object URLs are "s3://bucket/prefix/name" or "dir/name": the store is everything up to
// the last '/'. Options: --endpoint URL, --part-size BYTES, --put-max BYTES (single-PUT
// limit), --parallel N, --attempts N, --backoff SECONDS, --low-speed-time SECONDS, --chunk
// BYTES (put: bytes per write call), --abort-after BYTES (put: abort the writer after that
// many bytes, exit 3, as a caller giving up would).
// Exit 0 ok, 1 error (message on stderr), 2 usage, 3 aborted on request.
#include "store.h"
#include "tar_writer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void)
{
    fprintf(stderr, "usage: pm_store_tool [--endpoint URL] [--part-size N] [--put-max N] "
                    "[--parallel N] [--attempts N] [--backoff S] [--low-speed-time S] [--chunk N] "
                    "[--abort-after N] "
                    "put|get|size|ls|rm|sweep|tar URL [FILE] [--range A-B]\n");
    return 2;
}

static int fail(const struct pm_error *err)
{
    fprintf(stderr, "pm_store_tool: %s\n", err->msg);
    return 1;
}

// Split an object URL into store location and name (both malloc'ed).
static int split_object(const char *url, char **loc, char **name)
{
    const char *slash = strrchr(url, '/');
    if (!slash || !slash[1] || (strncmp(url, "s3://", 5) == 0 && slash < url + 5 + 1))
        return -1;
    *loc = strndup(url, (size_t)(slash - url));
    *name = strdup(slash + 1);
    if (strncmp(url, "s3://", 5) == 0 && !strchr(url + 5, '/'))
        return -1;
    return 0;
}

static int file_sink(void *ctx, const void *data, size_t n)
{
    return fwrite(data, 1, n, ctx) != n;
}

static int list_print(void *ctx, const char *name, uint64_t size)
{
    (void)ctx;
    printf("%s\t%" PRIu64 "\n", name, size);
    return 0;
}

int main(int argc, char **argv)
{
    struct store_options opts = STORE_OPTIONS_INIT;
    size_t chunk = 1 << 20;
    long long abort_after = -1;
    const char *range = NULL;
    const char *pos[4] = {0};
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--endpoint") == 0 && v)
            opts.s3_endpoint = v, i++;
        else if (strcmp(a, "--part-size") == 0 && v)
            opts.part_size = strtoull(v, NULL, 10), i++;
        else if (strcmp(a, "--put-max") == 0 && v)
            opts.put_max = strtoull(v, NULL, 10), i++;
        else if (strcmp(a, "--parallel") == 0 && v)
            opts.parts_in_flight = atoi(v), i++;
        else if (strcmp(a, "--attempts") == 0 && v)
            opts.max_attempts = atoi(v), i++;
        else if (strcmp(a, "--backoff") == 0 && v)
            opts.backoff_base_s = atof(v), i++;
        else if (strcmp(a, "--low-speed-time") == 0 && v)
            opts.low_speed_time_s = atol(v), i++;
        else if (strcmp(a, "--chunk") == 0 && v)
            chunk = strtoull(v, NULL, 10), i++;
        else if (strcmp(a, "--abort-after") == 0 && v)
            abort_after = strtoll(v, NULL, 10), i++;
        else if (strcmp(a, "--range") == 0 && v)
            range = v, i++;
        else if (a[0] == '-' && a[1] == '-')
            return usage();
        else if (npos < 4)
            pos[npos++] = a;
        else
            return usage();
    }
    if (npos < 2 || chunk == 0)
        return usage();
    const char *cmd = pos[0], *url = pos[1];
    struct pm_error err = PM_ERROR_INIT;
    struct store *s = NULL;
    char *loc = NULL, *name = NULL;
    int ret = 0;
    bool whole_store = strcmp(cmd, "ls") == 0 || strcmp(cmd, "sweep") == 0;
    if (whole_store) {
        if (store_open(url, &opts, &s, &err) != PM_OK)
            return fail(&err);
    } else {
        if (split_object(url, &loc, &name) != 0) {
            fprintf(stderr, "pm_store_tool: '%s' does not name an object\n", url);
            free(loc);
            free(name);
            return 2;
        }
        if (store_open(loc, &opts, &s, &err) != PM_OK) {
            free(loc);
            free(name);
            return fail(&err);
        }
    }

    if (strcmp(cmd, "put") == 0 && npos == 3) {
        FILE *f = fopen(pos[2], "rb");
        struct store_writer *w = NULL;
        char *buf = malloc(chunk);
        if (!f || !buf) {
            fprintf(stderr, "pm_store_tool: cannot open '%s'\n", pos[2]);
            ret = 1;
        } else if (store_writer_open(s, name, &w, &err) != PM_OK) {
            ret = fail(&err);
        } else {
            long long total = 0;
            size_t n;
            while (ret == 0 && (n = fread(buf, 1, chunk, f)) > 0) {
                if (store_writer_write(w, buf, n, &err) != PM_OK)
                    ret = fail(&err);
                total += (long long)n;
                if (ret == 0 && abort_after >= 0 && total >= abort_after) {
                    store_writer_abort(w);
                    ret = 3;
                }
            }
            if (ret == 0 && store_writer_commit(w, &err) != PM_OK)
                ret = fail(&err);
        }
        store_writer_free(w);
        free(buf);
        if (f)
            fclose(f);
    } else if (strcmp(cmd, "get") == 0 && npos == 3) {
        uint64_t off = 0, len = UINT64_MAX;
        if (range) {
            unsigned long long a, b;
            if (sscanf(range, "%llu-%llu", &a, &b) != 2 || b < a) {
                ret = usage();
                goto out;
            }
            off = a;
            len = b - a + 1;
        }
        FILE *f = fopen(pos[2], "wb");
        if (!f) {
            fprintf(stderr, "pm_store_tool: cannot create '%s'\n", pos[2]);
            ret = 1;
        } else {
            if (store_read(s, name, off, len, file_sink, f, NULL, &err) != PM_OK)
                ret = fail(&err);
            if (fclose(f) != 0 && ret == 0)
                ret = 1;
        }
    } else if (strcmp(cmd, "tar") == 0 && npos == 4) {
        long nsamples = atol(pos[2]);
        size_t size = strtoull(pos[3], NULL, 10);
        char *img = malloc(size ? size : 1);
        struct tar_writer *w = NULL;
        struct tar_writer_options o = TAR_WRITER_OPTIONS_INIT;
        o.mtime = 1700000000;
        if (!img) {
            ret = 1;
        } else if (tar_writer_open_store(s, name, &o, &w, &err) != PM_OK) {
            ret = fail(&err);
        } else {
            for (long k = 0; k < nsamples && ret == 0; k++) {
                for (size_t i = 0; i < size; i++)
                    img[i] = (char)(i * 7 + (size_t)k);
                char key[32], cap[64];
                snprintf(key, sizeof key, "%09ld", k);
                snprintf(cap, sizeof cap, "caption %ld", k);
                struct tar_member m[2] = {{"bin", img, size}, {"txt", cap, strlen(cap)}};
                if (tar_writer_add_sample(w, key, m, 2, &err) != PM_OK)
                    ret = fail(&err);
            }
            struct tar_writer_result r;
            if (ret == 0 && tar_writer_close(w, &r, &err) != PM_OK)
                ret = fail(&err);
            if (ret == 0)
                printf("%" PRIu64 " %s\n", r.bytes, r.xxh3);
        }
        tar_writer_free(w);
        free(img);
    } else if (strcmp(cmd, "size") == 0 && npos == 2) {
        uint64_t size;
        if (store_size(s, name, &size, &err) != PM_OK)
            ret = fail(&err);
        else
            printf("%" PRIu64 "\n", size);
    } else if (strcmp(cmd, "rm") == 0 && npos == 2) {
        if (store_delete(s, name, &err) != PM_OK)
            ret = fail(&err);
    } else if (strcmp(cmd, "ls") == 0 && npos == 2) {
        if (store_list(s, list_print, NULL, &err) != PM_OK)
            ret = fail(&err);
    } else if (strcmp(cmd, "sweep") == 0 && npos <= 3) {
        size_t removed = 0;
        if (store_sweep_incomplete(s, npos == 3 ? atof(pos[2]) : 0, &removed, &err) != PM_OK)
            ret = fail(&err);
        else
            printf("%zu\n", removed);
    } else {
        ret = usage();
    }
out:
    store_free(s);
    free(loc);
    free(name);
    return ret;
}
