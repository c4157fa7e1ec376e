/* Unit tests for parquet_writer's error paths: bad schemas and batches, unwritable
 * paths, a full disk, a file-size limit hit while writing a row group, misuse after
 * close. (Values and file contents are checked against pyarrow in
 * tests/test_parquet_writer.py.) */
#include "check.h"
#include "column.h"
#include "parquet_writer.h"
#include "pm_error.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static char dir[] = "/tmp/pm_test_pqw_XXXXXX";

static struct column_info schema[] = {
    {"id", COLUMN_INT32, false},
    {"name", COLUMN_STRING, true},
    {"score", COLUMN_DOUBLE, true},
};
enum { NCOLS = 3 };

static char *path_in_dir(const char *name)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

// A batch of n valid rows (row i: id i, name "n<i>", score i / 2).
static void fill(struct table_batch *b, size_t n, uint64_t first_row)
{
    table_batch_clear(b);
    b->first_row = first_row;
    for (size_t i = 0; i < n; i++) {
        char s[32];
        int len = snprintf(s, sizeof s, "n%zu", i);
        CHECK(column_append_int(&b->cols[0], (int64_t)i) == PM_OK);
        CHECK(column_append_string(&b->cols[1], s, (size_t)len) == PM_OK);
        CHECK(column_append_real(&b->cols[2], (double)i / 2) == PM_OK);
    }
    b->nrows = n;
}

// The file starts and ends with PAR1 and its footer length fits inside it.
static bool looks_like_parquet(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return false;
    char head[4], tail[8];
    bool ok = fread(head, 1, 4, f) == 4 && fseek(f, -8, SEEK_END) == 0 && fread(tail, 1, 8, f) == 8;
    long size = ftell(f);
    fclose(f);
    uint32_t footer;
    memcpy(&footer, tail, 4);
    return ok && memcmp(head, "PAR1", 4) == 0 && memcmp(tail + 4, "PAR1", 4) == 0 && footer > 0 &&
           (long)footer + 12 <= size;
}

static void test_codec_parse(void)
{
    enum parquet_codec c = PARQUET_CODEC_NONE;
    CHECK(parquet_codec_parse("zstd", &c) == PM_OK && c == PARQUET_CODEC_ZSTD);
    CHECK(parquet_codec_parse("snappy", &c) == PM_OK && c == PARQUET_CODEC_SNAPPY);
    CHECK(parquet_codec_parse("GZIP", &c) == PM_OK && c == PARQUET_CODEC_GZIP);
    CHECK(parquet_codec_parse("none", &c) == PM_OK && c == PARQUET_CODEC_NONE);
    c = PARQUET_CODEC_GZIP;
    CHECK(parquet_codec_parse("lz4", &c) == PM_ERR_USAGE && c == PARQUET_CODEC_GZIP);
    CHECK(parquet_codec_parse("", &c) == PM_ERR_USAGE);
    CHECK(parquet_codec_parse(NULL, &c) == PM_ERR_USAGE);
}

static void test_open_errors(void)
{
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_writer *w = (struct parquet_writer *)1;

    CHECK(parquet_writer_open(&w, "/nonexistent-pm-dir/x.parquet", schema, NCOLS, NULL, &err) ==
          PM_ERR_IO);
    CHECK(w == NULL);
    CHECK(err.code == PM_ERR_IO);
    CHECK(strstr(err.msg, "/nonexistent-pm-dir/x.parquet") != NULL);
    CHECK(strstr(err.msg, "No such file or directory") != NULL);

    CHECK(parquet_writer_open(&w, dir, schema, NCOLS, NULL, &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, dir) != NULL);

    CHECK(parquet_writer_open(&w, path_in_dir("none.parquet"), schema, 0, NULL, &err) ==
          PM_ERR_USAGE);
    CHECK(strstr(err.msg, "no columns") != NULL);
    struct column_info unnamed[] = {{NULL, COLUMN_INT32, false}};
    CHECK(parquet_writer_open(&w, path_in_dir("none.parquet"), unnamed, 1, NULL, &err) ==
          PM_ERR_USAGE);
    struct column_info badtype[] = {{"x", (enum column_type)42, false}};
    CHECK(parquet_writer_open(&w, path_in_dir("none.parquet"), badtype, 1, NULL, &err) ==
          PM_ERR_USAGE);
    CHECK(strstr(err.msg, "'x'") != NULL);
    struct parquet_writer_options opt = {(enum parquet_codec)9, 0};
    CHECK(parquet_writer_open(&w, path_in_dir("none.parquet"), schema, NCOLS, &opt, &err) ==
          PM_ERR_USAGE);
    CHECK(access(path_in_dir("none.parquet"), F_OK) != 0); // nothing created
}

static void test_disk_full(void)
{
    if (access("/dev/full", W_OK) != 0) {
        printf("skipping ENOSPC test: no writable /dev/full\n");
        return;
    }
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_writer *w = NULL;
    CHECK(parquet_writer_open(&w, "/dev/full", schema, NCOLS, NULL, &err) == PM_ERR_IO);
    CHECK(w == NULL);
    CHECK(strstr(err.msg, "'/dev/full'") != NULL);
    CHECK(strstr(err.msg, "No space left on device") != NULL);
}

static void test_batch_errors(void)
{
    const char *path = path_in_dir("batch.parquet");
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_writer *w = NULL;
    struct parquet_writer_options opt = {PARQUET_CODEC_SNAPPY, 4};
    CHECK(parquet_writer_open(&w, path, schema, NCOLS, &opt, &err) == PM_OK);
    struct table_batch b;
    CHECK(table_batch_init(&b, schema, NCOLS) == PM_OK);

    // type mismatch: an int64 column where the schema has int32
    struct column_info wrong[NCOLS] = {schema[0], schema[1], schema[2]};
    wrong[0].type = COLUMN_INT64;
    struct table_batch bw;
    CHECK(table_batch_init(&bw, wrong, NCOLS) == PM_OK);
    fill(&bw, 3, 0);
    CHECK(parquet_writer_write(w, &bw, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "'id'") && strstr(err.msg, "int64") && strstr(err.msg, "int32"));
    CHECK(strstr(err.msg, path) != NULL);
    table_batch_release(&bw);

    // wrong column count
    CHECK(table_batch_init(&bw, schema, 2) == PM_OK);
    CHECK(parquet_writer_write(w, &bw, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "2 columns") != NULL);
    table_batch_release(&bw);

    // a null in the REQUIRED column, reported with its input row number
    fill(&b, 5, 1000);
    b.cols[0].valid[3] = 0;
    b.cols[0].null_count = 1;
    CHECK(parquet_writer_write(w, &b, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "null in required column 'id' at row 1003") != NULL);

    // nulls in nullable columns are fine, but not an int32 value out of range
    fill(&b, 5, 0);
    b.cols[0].ints[2] = (int64_t)INT32_MAX + 1;
    CHECK(parquet_writer_write(w, &b, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "2147483648") && strstr(err.msg, "'id'"));

    // columns shorter than the batch says
    fill(&b, 5, 0);
    b.nrows = 6;
    CHECK(parquet_writer_write(w, &b, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "'id' has 5 rows") != NULL);

    // the rejected batches left the writer usable: 10 good rows, 3 row groups
    fill(&b, 5, 0);
    CHECK(column_append_null(&b.cols[1]) == PM_OK);
    CHECK(column_append_null(&b.cols[2]) == PM_OK);
    CHECK(column_append_int(&b.cols[0], -7) == PM_OK);
    b.nrows = 6;
    CHECK(parquet_writer_write(w, &b, &err) == PM_OK);
    fill(&b, 4, 6);
    CHECK(parquet_writer_write(w, &b, &err) == PM_OK);
    pm_error_clear(&err);
    CHECK(parquet_writer_close(w, &err) == PM_OK);
    CHECK(err.code == PM_OK);
    CHECK(looks_like_parquet(path));

    // misuse after close
    CHECK(parquet_writer_write(w, &b, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "closed") != NULL);
    CHECK(parquet_writer_close(w, &err) == PM_ERR_USAGE);
    parquet_writer_free(w);
    parquet_writer_free(NULL);
    table_batch_release(&b);
    unlink(path);
}

// A file-size limit makes write() fail with EFBIG when the first row group is written:
// the error names the file and the writer stays failed.
static void test_write_failure(void)
{
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 2048;
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
        printf("skipping EFBIG test: setrlimit failed\n");
        signal(SIGXFSZ, oldsig);
        return;
    }
    const char *path = path_in_dir("big.parquet");
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_writer *w = NULL;
    struct parquet_writer_options opt = {PARQUET_CODEC_NONE, 1000};
    CHECK(parquet_writer_open(&w, path, schema, NCOLS, &opt, &err) == PM_OK);
    struct table_batch b;
    CHECK(table_batch_init(&b, schema, NCOLS) == PM_OK);
    fill(&b, 1500, 0); // one full row group of 1000 rows is written here
    int rc = parquet_writer_write(w, &b, &err);
    CHECK(rc == PM_ERR_IO);
    CHECK(strstr(err.msg, path) != NULL);
    CHECK(strstr(err.msg, "File too large") != NULL);
    fill(&b, 1, 0);
    CHECK(parquet_writer_write(w, &b, &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, "earlier") != NULL);
    CHECK(parquet_writer_close(w, &err) == PM_ERR_IO);
    parquet_writer_free(w);
    table_batch_release(&b);

    // the same with the failure at close: the rows fit in one row group
    CHECK(parquet_writer_open(&w, path, schema, NCOLS, &opt, &err) == PM_OK);
    CHECK(table_batch_init(&b, schema, NCOLS) == PM_OK);
    fill(&b, 900, 0);
    CHECK(parquet_writer_write(w, &b, &err) == PM_OK);
    CHECK(parquet_writer_close(w, &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, path) && strstr(err.msg, "File too large"));
    parquet_writer_free(w);
    table_batch_release(&b);

    CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
    signal(SIGXFSZ, oldsig);
    unlink(path);
}

// Freeing an open writer closes it without a footer; an empty table is valid.
static void test_free_and_empty(void)
{
    const char *path = path_in_dir("abandoned.parquet");
    struct pm_error err = PM_ERROR_INIT;
    struct parquet_writer *w = NULL;
    CHECK(parquet_writer_open(&w, path, schema, NCOLS, NULL, &err) == PM_OK);
    struct table_batch b;
    CHECK(table_batch_init(&b, schema, NCOLS) == PM_OK);
    fill(&b, 10, 0);
    CHECK(parquet_writer_write(w, &b, &err) == PM_OK);
    parquet_writer_free(w);
    CHECK(!looks_like_parquet(path));
    unlink(path);

    path = path_in_dir("empty.parquet");
    CHECK(parquet_writer_open(&w, path, schema, NCOLS, NULL, &err) == PM_OK);
    table_batch_clear(&b);
    CHECK(parquet_writer_write(w, &b, &err) == PM_OK); // zero rows
    CHECK(parquet_writer_close(w, &err) == PM_OK);
    CHECK(looks_like_parquet(path));
    parquet_writer_free(w);
    table_batch_release(&b);
    unlink(path);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_codec_parse();
    test_open_errors();
    test_disk_full();
    test_batch_errors();
    test_write_failure();
    test_free_and_empty();
    rmdir(dir);
    return CHECK_DONE();
}
