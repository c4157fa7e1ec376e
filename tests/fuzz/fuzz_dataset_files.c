// libFuzzer target for the dataset metadata readers of shards/: dataset.json
// (dataset_index_read), NNNNN_stats.json (shard_stats_read) and a view's view.json
// (view_open, then view_shard_keep for each shard). The readers take paths, so the input
// is written to files in a scratch directory under /dev/shm (or $TMPDIR). Input layout:
//   byte 0 % 3 == 0: the rest is a dataset.json
//   byte 0 % 3 == 1: the rest is a stats file
//   byte 0 % 3 == 2: the rest is "DATASET_JSON \0 VIEW_JSON" (view.json of view "v")
#include "dataset_index.h"
#include "shard_stats.h"
#include "view.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[512];

static int put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return (fclose(f) != 0 || w != n) ? -1 : 0;
}

static int setup(void)
{
    if (dir[0])
        return 0;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/pm_fuzz_ds_XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir))
        return -1;
    char p[600];
    snprintf(p, sizeof p, "%s/_views", dir);
    mkdir(p, 0700);
    snprintf(p, sizeof p, "%s/_views/v", dir);
    return mkdir(p, 0700);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || setup() != 0)
        return 0;
    int mode = data[0] % 3;
    data++;
    size--;
    struct pm_error err = PM_ERROR_INIT;
    char ds[600], vj[600], st[600];
    snprintf(ds, sizeof ds, "%s/dataset.json", dir);
    snprintf(vj, sizeof vj, "%s/_views/v/view.json", dir);
    snprintf(st, sizeof st, "%s/00000_stats.json", dir);
    if (mode == 0) {
        if (put(ds, data, size) != 0)
            return 0;
        struct dataset_index x;
        dataset_index_read(&x, ds, &err);
        dataset_index_release(&x);
    } else if (mode == 1) {
        if (put(st, data, size) != 0)
            return 0;
        struct shard_stats s;
        shard_stats_read(st, &s, &err);
        shard_stats_release(&s);
    } else {
        const uint8_t *nul = memchr(data, 0, size);
        size_t a = nul ? (size_t)(nul - data) : size;
        size_t b = nul ? size - a - 1 : 0;
        if (put(ds, data, a) != 0 || put(vj, nul ? nul + 1 : data, b) != 0)
            return 0;
        struct view *v = NULL;
        if (view_open(&v, dir, "v", &err) == PM_OK) {
            for (size_t i = 0; i < view_num_shards(v); i++) {
                struct view_bitmap bm;
                if (!view_shard_name(v, i))
                    abort();
                if (view_shard_keep(v, i, &bm, &err) == PM_OK)
                    view_bitmap_release(&bm);
            }
        }
        view_free(v);
    }
    return 0;
}
