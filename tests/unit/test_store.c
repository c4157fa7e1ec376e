// store (POSIX backend), the tar writer on a store, and the S3 client's parts that need
// no server: URL splitting, settings from the environment, and error messages for an
// unreachable endpoint (which must never contain the credentials).
#include "check.h"
#include "test_files.h"

#include "atomic_file.h"
#include "s3_client.h"
#include "store.h"
#include "tar_writer.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    if (d)
        closedir(d);
    return n;
}

struct listing {
    char names[16][64];
    uint64_t sizes[16];
    int n;
};

static int collect(void *ctx, const char *name, uint64_t size)
{
    struct listing *l = ctx;
    if (l->n < 16) {
        snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
        l->sizes[l->n++] = size;
    }
    return 0;
}

static int test_sink(void *ctx, const void *data, size_t n)
{
    return bytebuf_append(ctx, data, n) != PM_OK;
}

static void test_posix_write_read(void)
{
    char root[512];
    snprintf(root, sizeof root, "%s/ds/", tmpdir); // trailing '/' is dropped; dir created
    struct pm_error err = PM_ERROR_INIT;
    struct store *s;
    CHECK(store_open(root, NULL, &s, &err) == PM_OK);
    CHECK(!store_is_s3(s));
    CHECK(strcmp(store_location(s), root) != 0 &&
          strncmp(store_location(s), root, strlen(root) - 1) == 0);
    enum { N = 300000 };
    unsigned char *data = malloc(N);
    for (int i = 0; i < N; i++)
        data[i] = (unsigned char)(i * 31 + 7);

    struct store_writer *w;
    CHECK(store_writer_open(s, "00000.tar", &w, &err) == PM_OK);
    for (int off = 0; off < N; off += 7000)
        CHECK(store_writer_write(w, data + off, off + 7000 <= N ? 7000 : N - off, &err) == PM_OK);
    CHECK(store_writer_bytes(w) == N);
    char final[600];
    snprintf(final, sizeof final, "%s/ds/00000.tar", tmpdir);
    CHECK(!file_exists(final)); // not visible before the commit
    struct listing l = {0};
    CHECK(store_list(s, collect, &l, &err) == PM_OK);
    CHECK(l.n == 0); // the temporary file is not listed
    CHECK(strstr(store_writer_name(w), "00000.tar") != NULL);
    CHECK(store_writer_commit(w, &err) == PM_OK);
    CHECK(store_writer_commit(w, &err) == PM_ERR_USAGE);
    store_writer_free(w);
    size_t n = 0;
    unsigned char *back = file_slurp(final, &n);
    CHECK(back && n == N && memcmp(back, data, N) == 0);
    free(back);

    // nested names create directories; write_all
    CHECK(store_write_all(s, "_views/v1/view.json", "{}", 2, &err) == PM_OK);
    CHECK(store_write_all(s, "00000_stats.json", "{\"n\":1}", 7, &err) == PM_OK);

    // reads: whole, ranged, past the end
    struct bytebuf b;
    bytebuf_init(&b, 0);
    CHECK(store_read_all(s, "00000.tar", &b, &err) == PM_OK);
    CHECK(b.len == N && memcmp(b.data, data, N) == 0);
    bytebuf_clear(&b);
    struct bytebuf small;
    bytebuf_init(&small, 1000);
    CHECK(store_read_all(s, "00000.tar", &small, &err) == PM_ERR_LIMIT);
    bytebuf_release(&small);
    uint64_t got = 0;
    CHECK(store_read(s, "00000.tar", 12345, 100000, test_sink, &b, &got, &err) == PM_OK);
    CHECK(got == 100000 && b.len == 100000 && memcmp(b.data, data + 12345, 100000) == 0);
    bytebuf_clear(&b);
    CHECK(store_read(s, "00000.tar", N - 10, 100, test_sink, &b, &got, &err) == PM_OK);
    CHECK(got == 10 && memcmp(b.data, data + N - 10, 10) == 0);
    bytebuf_release(&b);
    CHECK(store_read(s, "nope.tar", 0, 10, test_sink, &b, &got, &err) == PM_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "nope.tar") != NULL);

    // size / exists
    uint64_t size = 0;
    bool ex = false;
    CHECK(store_size(s, "00000.tar", &size, &err) == PM_OK && size == N);
    CHECK(store_exists(s, "00000.tar", &ex, &err) == PM_OK && ex);
    CHECK(store_exists(s, "00001.tar", &ex, &err) == PM_OK && !ex);
    CHECK(store_size(s, "00001.tar", &size, &err) == PM_ERR_NOT_FOUND);

    // listing: recursive, sorted per directory, sizes
    memset(&l, 0, sizeof l);
    CHECK(store_list(s, collect, &l, &err) == PM_OK);
    CHECK(l.n == 3);
    if (l.n == 3) {
        CHECK_STR(l.names[0], "00000.tar");
        CHECK(l.sizes[0] == N);
        CHECK_STR(l.names[1], "00000_stats.json");
        CHECK_STR(l.names[2], "_views/v1/view.json");
        CHECK(l.sizes[2] == 2);
    }

    // abort: nothing under the final name, no temporary file
    CHECK(store_writer_open(s, "00001.tar", &w, &err) == PM_OK);
    CHECK(store_writer_write(w, data, 1000, &err) == PM_OK);
    store_writer_abort(w);
    CHECK(store_writer_write(w, data, 10, &err) == PM_ERR_USAGE);
    CHECK(store_writer_commit(w, &err) != PM_OK);
    store_writer_free(w);
    char dsdir[600];
    snprintf(dsdir, sizeof dsdir, "%s/ds", tmpdir);
    CHECK(count_entries(dsdir) == 3); // 00000.tar, 00000_stats.json, _views

    // a writer freed without commit is aborted too
    CHECK(store_writer_open(s, "_views/v1/x.bin", &w, &err) == PM_OK);
    CHECK(store_writer_write(w, data, 10, &err) == PM_OK);
    store_writer_free(w);
    char vdir[600];
    snprintf(vdir, sizeof vdir, "%s/ds/_views/v1", tmpdir);
    CHECK(count_entries(vdir) == 1);

    // sweep: temporary files left by killed writers, in subdirectories too
    char t1[700], t2[700];
    snprintf(t1, sizeof t1, "%s/.00009.tar.tmp.4242.0123456789abcdef", dsdir);
    snprintf(t2, sizeof t2, "%s/.x.json.tmp.4242.fedcba9876543210", vdir);
    for (int i = 0; i < 2; i++) {
        FILE *ff = fopen(i ? t2 : t1, "w");
        CHECK(ff != NULL);
        if (ff)
            fclose(ff);
    }
    CHECK(atomic_file_is_temp_name(strrchr(t1, '/') + 1));
    memset(&l, 0, sizeof l);
    CHECK(store_list(s, collect, &l, &err) == PM_OK && l.n == 3); // temporaries not listed
    size_t removed = 0;
    CHECK(store_sweep_incomplete(s, 3600, &removed, &err) == PM_OK && removed == 0);
    CHECK(store_sweep_incomplete(s, 0, &removed, &err) == PM_OK && removed == 2);
    CHECK(!file_exists(t1) && !file_exists(t2));
    CHECK(count_entries(vdir) == 1);

    // delete
    CHECK(store_delete(s, "00000_stats.json", &err) == PM_OK);
    CHECK(store_delete(s, "00000_stats.json", &err) == PM_OK); // already gone: fine
    CHECK(store_exists(s, "00000_stats.json", &ex, &err) == PM_OK && !ex);

    // names that escape the store or are malformed
    const char *bad[] = {"", "/abs", "../x", "a/../b", "a//b", "a/./b", "dir/", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(store_writer_open(s, bad[i], &w, &err) == PM_ERR_USAGE);
        CHECK(store_size(s, bad[i], &size, &err) == PM_ERR_USAGE);
        CHECK(store_delete(s, bad[i], &err) == PM_ERR_USAGE);
    }
    free(data);
    store_free(s);
    store_free(NULL);
    store_writer_free(NULL);
}

// The tar writer on a POSIX store writes the same bytes as on a path.
static void test_tar_writer_on_store(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char root[512], direct[600], viastore[600];
    snprintf(root, sizeof root, "%s/tars", tmpdir);
    struct store *s;
    CHECK(store_open(root, NULL, &s, &err) == PM_OK);
    snprintf(direct, sizeof direct, "%s/direct.tar", root);
    snprintf(viastore, sizeof viastore, "%s/sub/00000.tar", root);
    struct tar_writer_options o = TAR_WRITER_OPTIONS_INIT;
    o.mtime = 1700000000;
    struct tar_writer *w1, *w2;
    CHECK(tar_writer_open(direct, &o, &w1, &err) == PM_OK);
    CHECK(tar_writer_open_store(s, "sub/00000.tar", &o, &w2, &err) == PM_OK);
    static char img[50000];
    for (size_t i = 0; i < sizeof img; i++)
        img[i] = (char)(i * 13);
    for (int k = 0; k < 20; k++) {
        char key[32];
        snprintf(key, sizeof key, "0000%05d", k);
        struct tar_member m[2] = {{"jpg", img, sizeof img - (size_t)k * 100}, {"txt", "cap", 3}};
        CHECK(tar_writer_add_sample(w1, key, m, 2, &err) == PM_OK);
        CHECK(tar_writer_add_sample(w2, key, m, 2, &err) == PM_OK);
    }
    CHECK(!file_exists(viastore));
    struct tar_writer_result r1, r2;
    CHECK(tar_writer_close(w1, &r1, &err) == PM_OK);
    CHECK(tar_writer_close(w2, &r2, &err) == PM_OK);
    tar_writer_free(w1);
    tar_writer_free(w2);
    CHECK(r1.bytes == r2.bytes && strcmp(r1.xxh3, r2.xxh3) == 0 && r2.nsamples == 20);
    size_t n1 = 0, n2 = 0;
    unsigned char *a = file_slurp(direct, &n1), *b = file_slurp(viastore, &n2);
    CHECK(a && b && n1 == n2 && n1 == r1.bytes && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
    // an abandoned writer leaves nothing
    CHECK(tar_writer_open_store(s, "sub/00001.tar", &o, &w2, &err) == PM_OK);
    struct tar_member m[1] = {{"txt", "x", 1}};
    CHECK(tar_writer_add_sample(w2, "k", m, 1, &err) == PM_OK);
    tar_writer_free(w2);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sub", root);
    CHECK(count_entries(sub) == 1);
    store_free(s);
}

static void test_s3_url_and_config(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char *b, *p;
    CHECK(s3_url_split("s3://bkt/a/b/", &b, &p, &err) == PM_OK);
    CHECK_STR(b, "bkt");
    CHECK_STR(p, "a/b/");
    free(b);
    free(p);
    CHECK(s3_url_split("s3://bkt", &b, &p, &err) == PM_OK);
    CHECK_STR(p, "");
    free(b);
    free(p);
    CHECK(s3_url_split("s3:///x", &b, &p, &err) == PM_ERR_USAGE && !b && !p);
    CHECK(s3_url_split("http://x/y", &b, &p, &err) == PM_ERR_USAGE);
    CHECK(s3_url_split("s3://bad bucket/x", &b, &p, &err) == PM_ERR_USAGE);

    setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "unit/Secret+Key=NeverPrinted", 1);
    setenv("AWS_SESSION_TOKEN", "unit-token-NeverPrinted", 1);
    unsetenv("AWS_REGION");
    setenv("AWS_DEFAULT_REGION", "ap-south-2", 1);
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1", 1);
    unsetenv("PIXELMILL_S3_PATH_STYLE");
    struct s3_config cfg;
    CHECK(s3_config_init_env(&cfg, NULL, &err) == PM_OK);
    CHECK_STR(cfg.region, "ap-south-2");
    CHECK_STR(cfg.endpoint, "http://127.0.0.1:1");
    CHECK(cfg.path_style == -1 && cfg.max_attempts == 5);
    s3_config_release(&cfg);
    CHECK(s3_config_init_env(&cfg, "ftp://x", &err) == PM_ERR_USAGE);
    unsetenv("AWS_ACCESS_KEY_ID");
    CHECK(s3_config_init_env(&cfg, NULL, &err) == PM_ERR_USAGE);
    setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST", 1);

    // nothing listens on port 1: a transport error, retried, named, without credentials
    CHECK(s3_config_init_env(&cfg, NULL, &err) == PM_OK);
    cfg.max_attempts = 2;
    cfg.backoff_base_s = 0.001;
    struct s3_client *c;
    CHECK(s3_client_create(&cfg, &c, &err) == PM_OK);
    CHECK(s3_client_config(c)->path_style == 1); // an endpoint: path-style
    s3_config_release(&cfg);
    CHECK(s3_client_put(c, "bkt", "k/00012.tar", "x", 1, &err) == PM_ERR_NETWORK);
    CHECK(strstr(err.msg, "cannot put 's3://bkt/k/00012.tar': ") == err.msg);
    CHECK(strstr(err.msg, "after 2 attempts") != NULL);
    CHECK(strstr(err.msg, "NeverPrinted") == NULL && strstr(err.msg, "Secret") == NULL);
    struct s3_upload *u;
    CHECK(s3_upload_create(c, "bkt", "k", &u, &err) == PM_ERR_NETWORK && u == NULL);
    CHECK(strstr(err.msg, "NeverPrinted") == NULL);
    s3_client_free(c);
    s3_client_free(NULL);
    s3_upload_free(NULL);

    // store on S3: the writer reports the object's URL
    struct store *s;
    struct store_options so = STORE_OPTIONS_INIT;
    so.max_attempts = 1;
    CHECK(store_open("s3://bkt/pre/", &so, &s, &err) == PM_OK);
    CHECK(store_is_s3(s));
    CHECK_STR(store_location(s), "s3://bkt/pre");
    struct store_writer *w;
    CHECK(store_writer_open(s, "00001.tar", &w, &err) == PM_OK);
    CHECK_STR(store_writer_name(w), "s3://bkt/pre/00001.tar");
    CHECK(store_writer_write(w, "abc", 3, &err) == PM_OK); // buffered: no request yet
    CHECK(store_writer_commit(w, &err) == PM_ERR_NETWORK);
    CHECK(strstr(err.msg, "'s3://bkt/pre/00001.tar'") != NULL);
    store_writer_free(w);
    store_free(s);
    CHECK(store_open("s3://", NULL, &s, &err) == PM_ERR_USAGE);
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_ENDPOINT_URL");
}

int main(void)
{
    if (test_dir_create(tmpdir, sizeof tmpdir, "store"))
        return 1;
    test_posix_write_read();
    test_tar_writer_on_store();
    test_s3_url_and_config();
    test_dir_remove(tmpdir);
    return CHECK_DONE();
}
