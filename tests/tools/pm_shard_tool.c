/*
 * pm_shard_tool — drive the shards module from the Python tests.
 *
 *   pm_shard_tool write DIR --samples N --seed S [--shards M] [--per-shard P]
 *                 [--fail-every K] [--mtime T]
 *       Write M shards (default 1) of N input rows each into DIR: for each row that does
 *       not "fail" (every K-th row fails when K > 0) a sample KEY.jpg (pseudo-random bytes),
 *       KEY.txt (caption), KEY.json (metadata); then NNNNN_stats.json per shard, then
 *       dataset.json. Keys use img2dataset's rule with P samples per shard (default N).
 *   pm_shard_tool list SHARD.tar [--max-member BYTES]
 *       One line per sample: KEY, then per field "NAME:SIZE:XXH3" (tab-separated).
 *   pm_shard_tool hash FILE          XXH3-128 of the file (hex) and its size
 *   pm_shard_tool key SHARD ROW PER_SHARD DIGITS
 *   pm_shard_tool index DATASET.json  shard list as read back: URL NSAMPLES FILESIZE XXH3 ROWS
 *   pm_shard_tool sweep DIR           remove stale temporary files; print how many
 * Exit status 0 on success, 1 on failure (message on stderr), 2 on usage errors.
 */
#include "atomic_file.h"
#include "dataset_index.h"
#include "file_hash.h"
#include "shard.h"
#include "shard_stats.h"
#include "tar_reader.h"
#include "tar_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int usage(void)
{
    fprintf(stderr, "usage: pm_shard_tool write|list|hash|key|index|sweep ... (see source)\n");
    return 2;
}

static int fail(const struct pm_error *err)
{
    fprintf(stderr, "pm_shard_tool: %s (%s)\n", err->msg, pm_strerror(err->code));
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmd_write(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    const char *dir = argv[0];
    uint64_t nrows = 10, seed = 0, nshards = 1, per_shard = 0, fail_every = 0;
    int64_t mtime = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        uint64_t v = strtoull(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--samples"))
            nrows = v;
        else if (!strcmp(argv[i], "--seed"))
            seed = v;
        else if (!strcmp(argv[i], "--shards"))
            nshards = v;
        else if (!strcmp(argv[i], "--per-shard"))
            per_shard = v;
        else if (!strcmp(argv[i], "--fail-every"))
            fail_every = v;
        else if (!strcmp(argv[i], "--mtime"))
            mtime = (int64_t)v;
        else
            return usage();
    }
    if (per_shard == 0)
        per_shard = nrows ? nrows : 1;
    if (nrows > per_shard)
        return usage();
    rng_state = seed;
    int digits = shard_digits(nshards);
    struct pm_error err = PM_ERROR_INIT;
    struct dataset_index idx;
    if (dataset_index_init(&idx) != PM_OK)
        return 1;
    dataset_index_set_info(&idx, "synthetic", "test", "pixelmill test");
    json_t *cfg = json_pack("{s:I, s:I, s:I}", "samples", (json_int_t)nrows, "seed",
                            (json_int_t)seed, "per_shard", (json_int_t)per_shard);
    dataset_index_set_config(&idx, cfg);
    json_decref(cfg);
    int rc = PM_OK;
    for (uint64_t sh = 0; sh < nshards && rc == PM_OK; sh++) {
        char path[4096];
        shard_path(path, sizeof path, dir, sh, digits, ".tar");
        struct tar_writer_options o = TAR_WRITER_OPTIONS_INIT;
        o.mtime = mtime;
        struct tar_writer *w;
        struct shard_stats st;
        shard_stats_init(&st, sh, digits);
        st.start_time = now();
        rc = tar_writer_open(path, &o, &w, &err);
        for (uint64_t row = 0; row < nrows && rc == PM_OK; row++) {
            st.rows++;
            if (fail_every && row % fail_every == fail_every - 1) {
                stat_map_add(&st.status, "failed_to_download", 1);
                stat_map_add(&st.errors, "synthetic", 1);
                continue;
            }
            char key[32];
            rc = shard_key(key, sizeof key, sh, row, per_shard, digits, &err);
            if (rc != PM_OK)
                break;
            size_t len = 1 + rng_next() % 3000;
            unsigned char *img = malloc(len);
            for (size_t j = 0; j < len; j++)
                img[j] = (unsigned char)rng_next();
            img[0] = 0xff; // looks a little like a JPEG start
            char txt[128], meta[256];
            int tl =
                snprintf(txt, sizeof txt, "a synthetic caption %llu/%llu seed %llu",
                         (unsigned long long)sh, (unsigned long long)row, (unsigned long long)seed);
            int ml = snprintf(meta, sizeof meta, "{\"key\": \"%s\", \"row\": %llu}", key,
                              (unsigned long long)row);
            struct tar_member m[3] = {
                {"jpg", img, len}, {"txt", txt, (size_t)tl}, {"json", meta, (size_t)ml}};
            rc = tar_writer_add_sample(w, key, m, 3, &err);
            free(img);
            stat_map_add(&st.status, "success", 1);
            stat_map_add(&st.bytes, "image", (double)len);
        }
        struct tar_writer_result res;
        if (rc == PM_OK)
            rc = tar_writer_close(w, &res, &err);
        tar_writer_free(w);
        if (rc == PM_OK) {
            st.nsamples = res.nsamples;
            st.tar_bytes = res.bytes;
            memcpy(st.xxh3, res.xxh3, sizeof st.xxh3);
            st.end_time = now();
            stat_map_add(&st.durations, "total", st.end_time - st.start_time);
            snprintf(st.tool_version, sizeof st.tool_version, "pixelmill test");
            rc = shard_stats_write(dir, &st, &err); // last: marks the shard complete
        }
        if (rc == PM_OK) {
            // dataset.json is built from the stats files as written
            char sp[4096];
            shard_path(sp, sizeof sp, dir, sh, digits, "_stats.json");
            struct shard_stats back;
            rc = shard_stats_read(sp, &back, &err);
            if (rc == PM_OK)
                rc = dataset_index_add_stats(&idx, &back, &err);
            shard_stats_release(&back);
        }
        shard_stats_release(&st);
    }
    if (rc == PM_OK) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, DATASET_INDEX_FILE);
        rc = dataset_index_write(&idx, path, &err);
    }
    dataset_index_release(&idx);
    return rc == PM_OK ? 0 : fail(&err);
}

static int cmd_list(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    struct tar_reader_options o = TAR_READER_OPTIONS_INIT;
    if (argc >= 3 && !strcmp(argv[1], "--max-member"))
        o.max_member_size = strtoull(argv[2], NULL, 10);
    struct pm_error err = PM_ERROR_INIT;
    struct tar_reader *r;
    int rc = tar_reader_open(argv[0], &o, &r, &err);
    if (rc != PM_OK)
        return fail(&err);
    struct tar_sample s;
    while ((rc = tar_reader_next(r, &s, &err)) == PM_OK) {
        printf("%s", s.key);
        for (size_t i = 0; i < s.nfields; i++) {
            char h[FILE_HASH_HEX_LEN + 1];
            file_hash_hex_of(s.fields[i].data, s.fields[i].size, h);
            printf("\t%s:%zu:%s", s.fields[i].name, s.fields[i].size, h);
        }
        printf("\n");
    }
    tar_reader_free(r);
    fflush(stdout);
    return rc == PM_ERR_NOT_FOUND ? 0 : fail(&err);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    struct pm_error err = PM_ERROR_INIT;
    if (!strcmp(cmd, "write"))
        return cmd_write(argc - 2, argv + 2);
    if (!strcmp(cmd, "list"))
        return cmd_list(argc - 2, argv + 2);
    if (!strcmp(cmd, "hash") && argc == 3) {
        char h[FILE_HASH_HEX_LEN + 1];
        uint64_t size;
        if (file_hash_path(argv[2], h, &size, &err) != PM_OK)
            return fail(&err);
        printf("%s %llu\n", h, (unsigned long long)size);
        return 0;
    }
    if (!strcmp(cmd, "key") && argc == 6) {
        char k[64];
        if (shard_key(k, sizeof k, strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                      strtoull(argv[4], NULL, 10), atoi(argv[5]), &err) != PM_OK)
            return fail(&err);
        printf("%s\n", k);
        return 0;
    }
    if (!strcmp(cmd, "index") && argc == 3) {
        struct dataset_index x;
        int rc = dataset_index_read(&x, argv[2], &err);
        for (size_t i = 0; rc == PM_OK && i < x.nshards; i++)
            printf("%s %llu %llu %s %llu\n", x.shards[i].url,
                   (unsigned long long)x.shards[i].nsamples,
                   (unsigned long long)x.shards[i].filesize, x.shards[i].xxh3,
                   (unsigned long long)x.shards[i].rows);
        dataset_index_release(&x);
        return rc == PM_OK ? 0 : fail(&err);
    }
    if (!strcmp(cmd, "sweep") && argc == 3) {
        size_t n;
        if (atomic_file_sweep(argv[2], 0, &n, &err) != PM_OK)
            return fail(&err);
        printf("%zu\n", n);
        return 0;
    }
    return usage();
}
