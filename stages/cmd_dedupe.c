/*
 * pixelmill dedupe — global exact (url, content) and near-duplicate (phash) marks for a
 * dataset, written to DATASET/_dedupe/METHOD/ (docs/internals/views.md, "Dedupe marks")
 * and consumed by `filter --dedupe`. Only rows whose status is `success` take part.
 */
#include "bytebuf.h"
#include "commands.h"
#include "dedupe_exact.h"
#include "dedupe_near.h"
#include "json_file.h"
#include "meta_source.h"
#include "pm_bigmem.h"
#include "pm_log.h"
#include "report_html.h"
#include "url_policy.h"
#include "view.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

// --keep largest for the exact methods: the id handed to dedupe_exact is
// (cap - min(area, cap)) << GID_BITS | global row, so the lowest id is the largest image.
#define GID_BITS 40
#define AREA_CAP (((uint64_t)1 << (64 - GID_BITS)) - 1)
#define KEEPER_MAGIC "PMDKEEP"
#define REPORT_GROUPS 12
#define REPORT_MEMBERS 6

static const char usage[] =
    "usage: pixelmill dedupe DATASET [--by url|content|phash]... [--hamming K]\n"
    "                        [--keep lowest-key|largest] [--memory-limit SIZE]\n"
    "                        [--report FILE.html] [--json]\n"
    "\n"
    "Find duplicate samples across the whole dataset (all MPI ranks) and write marks to\n"
    "DATASET/_dedupe/METHOD/ for `pixelmill filter --dedupe`. Only `success` rows take part.\n"
    "\n"
    "  --by METHOD       url (normalised URL), content (content_hash), phash (perceptual\n"
    "                    hash within --hamming K); repeatable or comma-separated;\n"
    "                    default: url, content and phash\n"
    "  --hamming K       phash radius, 0-31 (default 6)\n"
    "  --keep RULE       keeper of each group: lowest-key (default) or largest\n"
    "                    (original_width*original_height, ties: lowest key)\n"
    "  --memory-limit S  bytes per rank for the dedupe work (K/M/G suffixes); beyond it the\n"
    "                    work runs in hash-range rounds (same marks)\n"
    "  --report FILE     self-contained HTML page with counts and example groups\n"
    "  --json            print the summary as JSON\n";

enum {
    M_URL = DEDUPE_BY_URL,
    M_CONTENT = DEDUPE_BY_CONTENT,
    M_PHASH = DEDUPE_BY_PHASH,
    M_COUNT = DEDUPE_BY_COUNT
};
#define method_names dedupe_method_names

struct dedupe_args {
    const char *dataset;
    int by[M_COUNT];
    size_t nby;
    unsigned hamming;
    int largest;
    size_t memory_limit;
    const char *report;
    int json;
};

// One success row of this rank.
struct drow {
    uint32_t unit;
    uint8_t has[M_COUNT];
    uint64_t row;
    uint64_t gid; // global row index in dataset order
    uint64_t area;
    uint64_t h[2][2]; // url, content: (hi, lo)
    uint64_t phash;
};

struct drows {
    struct drow *v;
    size_t n, cap;
};

// What one method found (identical on every rank after the reductions).
struct method_result {
    bool skipped;
    unsigned rounds;
    json_t *marks; // marks.json document (rank 0)
    uint64_t *pairs; // rank 0: (keeper gid, member gid) of every duplicate, sorted
    size_t npairs;
};

static int parse_args(int argc, char **argv, struct dedupe_args *a)
{
    a->hamming = DEDUPE_NEAR_DEFAULT_RADIUS;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(o, "--by") && has) {
            if (meta_option_methods("--by", argv[++i], a->by, &a->nby))
                return -1;
        } else if (!strcmp(o, "--hamming") && has) {
            char *end;
            unsigned long k = strtoul(argv[++i], &end, 10);
            if (*end || end == argv[i] || k > DEDUPE_NEAR_MAX_RADIUS) {
                pm_log_error("--hamming: '%s' is not an integer 0-%u", argv[i],
                             DEDUPE_NEAR_MAX_RADIUS);
                return -1;
            }
            a->hamming = (unsigned)k;
        } else if (!strcmp(o, "--keep") && has) {
            const char *k = argv[++i];
            if (!strcmp(k, "largest"))
                a->largest = 1;
            else if (!strcmp(k, "lowest-key"))
                a->largest = 0;
            else {
                pm_log_error("--keep: '%s' is not lowest-key or largest", k);
                return -1;
            }
        } else if (!strcmp(o, "--memory-limit") && has) {
            if (meta_size_parse(argv[++i], &a->memory_limit)) {
                pm_log_error("--memory-limit: '%s' is not a size (e.g. 512M)", argv[i]);
                return -1;
            }
        } else if (!strcmp(o, "--report") && has)
            a->report = argv[++i];
        else if (!strcmp(o, "--json"))
            a->json = 1;
        else if (o[0] == '-' && o[1]) {
            pm_log_error("dedupe: unknown option or missing value: %s", o);
            return -1;
        } else if (a->dataset) {
            pm_log_error("dedupe: one DATASET only ('%s' and '%s')", a->dataset, o);
            return -1;
        } else
            a->dataset = o;
    }
    if (!a->dataset) {
        pm_log_error("dedupe: no DATASET given");
        return -1;
    }
    if (!a->nby)
        for (int m = 0; m < M_COUNT; m++)
            a->by[a->nby++] = m;
    return 0;
}

static bool col_int(const struct column *c, size_t i, int64_t *v)
{
    if (!c->valid[i])
        return false;
    if (c->type == COLUMN_FLOAT || c->type == COLUMN_DOUBLE) {
        double d = c->reals[i];
        if (!(d >= -9e18 && d <= 9e18))
            return false;
        *v = (int64_t)d;
        return true;
    }
    if (c->type == COLUMN_STRING)
        return false;
    *v = c->ints[i];
    return true;
}

// Read this rank's sidecars: every success row with the hashes the methods need.
static int read_rows(const struct dedupe_args *a, const struct meta_source *s,
                     const struct pm_mpi *mpi, const bool want[M_COUNT], struct drows *out,
                     uint64_t *success, struct pm_error *err)
{
    const char *cols[8];
    int ci[8] = {0}; // column index of: status, url, content_hash, phash, width, height
    size_t n = 0;
    cols[n++] = "status";
    ci[1] = ci[2] = ci[3] = ci[4] = ci[5] = -1;
    if (want[M_URL])
        ci[1] = (int)n, cols[n++] = "url";
    if (want[M_CONTENT])
        ci[2] = (int)n, cols[n++] = "content_hash";
    if (want[M_PHASH])
        ci[3] = (int)n, cols[n++] = "phash";
    if (a->largest) {
        ci[4] = (int)n, cols[n++] = "original_width";
        ci[5] = (int)n, cols[n++] = "original_height";
    }
    struct table_batch in = TABLE_BATCH_INIT;
    struct bytebuf nb;
    bytebuf_init(&nb, 1 << 20);
    struct pm_error uerr = PM_ERROR_INIT;
    int rc = PM_OK;
    for (size_t u = (size_t)mpi->rank; u < s->nunits && rc == PM_OK; u += (size_t)mpi->size) {
        struct table_reader *r = NULL;
        rc = meta_source_unit_open(s, u, cols, n, &r, err);
        if (rc != PM_OK)
            break;
        table_batch_release(&in);
        if (table_reader_batch_init(r, &in) != PM_OK)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        for (size_t j = 0; rc == PM_OK && j < n; j++) {
            enum column_type t = table_reader_column(r, j)->type;
            bool need_str = (int)j == 0 || (int)j == ci[1] || (int)j == ci[2];
            if (need_str != (t == COLUMN_STRING))
                rc = pm_error_set(err, PM_ERR_FORMAT, "sidecar '%s': column %s has type %s",
                                  s->files[u], cols[j], column_type_name(t));
        }
        uint64_t row = 0;
        while (rc == PM_OK) {
            rc = table_reader_next(r, &in, err);
            if (rc != PM_OK || in.nrows == 0)
                break;
            if ((rc = meta_unit_check_rows(s, u, row + in.nrows, false, err)) != PM_OK)
                break;
            for (size_t i = 0; i < in.nrows && rc == PM_OK; i++) {
                size_t len;
                const char *v = column_string(&in.cols[0], i, &len);
                if (!in.cols[0].valid[i] || len != 7 || memcmp(v, "success", 7))
                    continue;
                (*success)++;
                if (out->n == out->cap) {
                    size_t cap = out->cap ? out->cap * 2 : 4096;
                    struct drow *p = realloc(out->v, cap * sizeof *p);
                    if (!p) {
                        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                        break;
                    }
                    out->v = p, out->cap = cap;
                }
                struct drow *d = &out->v[out->n++];
                memset(d, 0, sizeof *d);
                d->unit = (uint32_t)u;
                d->row = row + i;
                d->gid = s->units[u].row_base + row + i;
                if (ci[1] >= 0 && in.cols[ci[1]].valid[i]) {
                    // Normalised URL; a URL libcurl cannot parse (or not http/https) is
                    // hashed as stored.
                    const char *p = column_string(&in.cols[ci[1]], i, &len);
                    char *z = strndup(p, len);
                    if (!z) {
                        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                        break;
                    }
                    bytebuf_clear(&nb);
                    if (url_policy_normalize(z, &nb, &uerr) == PM_OK)
                        p = nb.data, len = nb.len;
                    XXH128_hash_t h = XXH3_128bits(p, len);
                    free(z);
                    d->h[0][0] = h.high64, d->h[0][1] = h.low64, d->has[M_URL] = 1;
                }
                if (ci[2] >= 0 && in.cols[ci[2]].valid[i]) {
                    const char *p = column_string(&in.cols[ci[2]], i, &len);
                    d->has[M_CONTENT] = meta_content_hash(p, len, d->h[1]);
                }
                int64_t x, y;
                if (ci[3] >= 0 && col_int(&in.cols[ci[3]], i, &x))
                    d->phash = (uint64_t)x, d->has[M_PHASH] = 1;
                if (ci[4] >= 0 && col_int(&in.cols[ci[4]], i, &x) &&
                    col_int(&in.cols[ci[5]], i, &y) && x > 0 && y > 0 && x < (1 << 30) &&
                    y < (1 << 30))
                    d->area = (uint64_t)x * (uint64_t)y;
            }
            row += in.nrows;
        }
        if (rc == PM_OK)
            rc = meta_unit_check_rows(s, u, row, true, err);
        table_reader_free(r);
    }
    table_batch_release(&in);
    bytebuf_release(&nb);
    return rc;
}

// The parameters a method's marks depend on: a rerun with equal params skips the method.
static json_t *method_params(const struct dedupe_args *a, int m, const struct meta_source *s)
{
    json_t *p = json_object();
    json_object_set_new(p, "method", json_string(method_names[m]));
    if (m == M_PHASH)
        json_object_set_new(p, "hamming", json_integer(a->hamming));
    json_object_set_new(p, "keep", json_string(a->largest ? "largest" : "lowest-key"));
    json_t *sh = json_array();
    for (size_t u = 0; u < s->nunits; u++) {
        char name[64];
        json_t *x = json_object();
        json_object_set_new(x, "name", json_string(meta_source_shard_name(s, u, name, sizeof name)));
        json_object_set_new(x, "xxh3", json_string(s->idx.shards[s->units[u].file].xxh3));
        json_object_set_new(x, "rows", json_integer((json_int_t)s->units[u].rows));
        json_array_append_new(sh, x);
    }
    json_object_set_new(p, "shards", sh);
    return p;
}

// The method's marks directory, relative to the dataset's store.
static void method_dir(char *buf, size_t size, int m)
{
    snprintf(buf, size, "_dedupe/%s", method_names[m]);
}

// Remove what killed writers left under `rel` (a directory of the dataset): temporary
// files on POSIX, multipart uploads on S3. Only while no rank writes there.
static int sweep_under(struct store *st, const char *rel, struct pm_error *err)
{
    char loc[4096];
    snprintf(loc, sizeof loc, "%s/%s", store_location(st), rel);
    struct store *sub = NULL;
    int rc = store_open(loc, NULL, &sub, err);
    if (rc == PM_OK)
        rc = store_sweep_incomplete(sub, 0, NULL, err);
    store_free(sub);
    return rc;
}

// Existing complete marks with the same parameters (rank 0), else NULL.
static json_t *marks_current(struct store *st, int m, const json_t *params)
{
    char p[256];
    method_dir(p, sizeof p, m);
    strncat(p, "/marks.json", sizeof p - strlen(p) - 1);
    json_t *doc = NULL;
    struct pm_error e = PM_ERROR_INIT;
    if (json_file_read_store(st, p, 64 << 20, &doc, &e) != PM_OK)
        return NULL;
    json_t *old = json_object_get(doc, "params");
    if (json_integer_value(json_object_get(doc, "marks_version")) != 1 || !old ||
        !json_equal(old, params)) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

static int cmp_u64pair(const void *x, const void *y)
{
    const uint64_t *a = x, *b = y;
    if (a[0] != b[0])
        return a[0] < b[0] ? -1 : 1;
    return a[1] < b[1] ? -1 : a[1] > b[1];
}

static int write_keepers(struct store *st, const char *name, const struct view_bitmap *bm,
                         const uint64_t *kp, size_t nk, struct pm_error *err)
{
    size_t size = VIEW_BITMAP_HEADER_BYTES + nk * 8;
    unsigned char *buf = calloc(1, size);
    if (!buf)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    memcpy(buf, KEEPER_MAGIC, 8);
    uint32_t ver = 1;
    uint64_t rows = bm->rows, cnt = nk;
    // little-endian host assumed (as view.c does for the bitmaps)
    memcpy(buf + 8, &ver, 4);
    memcpy(buf + 16, &rows, 8);
    memcpy(buf + 24, &cnt, 8);
    memcpy(buf + VIEW_BITMAP_HEADER_BYTES, kp, nk * 8);
    int rc = store_write_all(st, name, buf, size, err);
    free(buf);
    return rc;
}

struct dup_entry {
    uint64_t row;
    uint64_t keeper;
};

static int cmp_dup_row(const void *x, const void *y)
{
    const struct dup_entry *a = x, *b = y;
    return a->row < b->row ? -1 : a->row > b->row;
}

// Cluster size histogram and group count from the sorted (keeper, member) pairs.
static json_t *cluster_sizes(const uint64_t *pairs, size_t np, uint64_t *groups, uint64_t *largest)
{
    uint64_t bucket[64] = {0};
    *groups = 0, *largest = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i;
        while (j < np && pairs[2 * j] == pairs[2 * i])
            j++;
        uint64_t size = (uint64_t)(j - i) + 1; // + the keeper
        (*groups)++;
        if (size > *largest)
            *largest = size;
        int b = 63 - __builtin_clzll(size - 1); // size 2 -> 0, 3-4 -> 1, 5-8 -> 2, ...
        bucket[b]++;
        i = j;
    }
    json_t *o = json_object();
    for (int b = 0; b < 64; b++) {
        if (!bucket[b])
            continue;
        char label[48];
        uint64_t lo = ((uint64_t)1 << b) + 1, hi = (uint64_t)1 << (b + 1);
        if (b == 0)
            snprintf(label, sizeof label, "2");
        else
            snprintf(label, sizeof label, "%" PRIu64 "-%" PRIu64, lo, hi);
        json_object_set_new(o, label, json_integer((json_int_t)bucket[b]));
    }
    return o;
}

// Run one method over all ranks and write its marks. Collective.
static int run_method(const struct dedupe_args *a, int m, const struct meta_source *s,
                      const struct pm_mpi *mpi, const struct drows *rows, uint64_t success,
                      struct method_result *res, struct pm_error *err)
{
    char dir[256], p[512];
    method_dir(dir, sizeof dir, m);
    json_t *params = method_params(a, m, s);
    int rc = PM_OK, skip = 0;
    if (mpi->rank == 0) {
        res->marks = marks_current(s->store, m, params);
        skip = res->marks != NULL;
    }
    MPI_CHECK(MPI_Bcast(&skip, 1, MPI_INT, 0, MPI_COMM_WORLD));
    if (skip) {
        res->skipped = true;
        json_decref(params);
        return PM_OK;
    }
    if (mpi->rank == 0) {
        // Incomplete from here until marks.json is written again.
        snprintf(p, sizeof p, "%s/marks.json", dir);
        rc = store_delete(s->store, p, err);
        // What a killed run left (no rank writes here before the barrier below; one
        // dedupe run per dataset at a time).
        if (rc == PM_OK)
            rc = sweep_under(s->store, dir, err);
    }
    if (pm_mpi_worst(rc) != PM_OK) {
        json_decref(params);
        return rc == PM_OK ? META_RC_ELSEWHERE : rc;
    }
    // Records of this method: success rows that have the hash.
    size_t n = 0;
    for (size_t i = 0; i < rows->n; i++)
        n += rows->v[i].has[m];
    size_t *which = malloc((n ? n : 1) * sizeof *which);
    uint64_t *keeper = pm_big_alloc((n ? n : 1) * sizeof *keeper);
    struct dedupe_record *er = NULL;
    struct dedupe_near_record *nr = NULL;
    uint64_t *prio = NULL;
    if (m == M_PHASH) {
        nr = malloc((n ? n : 1) * sizeof *nr);
        prio = a->largest ? malloc((n ? n : 1) * sizeof *prio) : NULL;
    } else
        er = pm_big_alloc((n ? n : 1) * sizeof *er);
    int nomem = !which || !keeper || (m == M_PHASH ? !nr || (a->largest && !prio) : !er);
    uint64_t gid_max = 0;
    for (size_t i = 0, k = 0; !nomem && i < rows->n; i++) {
        const struct drow *d = &rows->v[i];
        if (!d->has[m])
            continue;
        which[k] = i;
        if (d->gid > gid_max)
            gid_max = d->gid;
        if (m == M_PHASH) {
            nr[k] = (struct dedupe_near_record){d->phash, d->gid};
            if (prio)
                prio[k] = d->area;
        } else {
            uint64_t id = d->gid;
            if (a->largest)
                id |= (AREA_CAP - (d->area < AREA_CAP ? d->area : AREA_CAP)) << GID_BITS;
            er[k] = (struct dedupe_record){d->h[m][0], d->h[m][1], id};
        }
        k++;
    }
    if (nomem)
        rc = pm_error_set(err, PM_ERR_NOMEM, "dedupe %s: out of memory", method_names[m]);
    else if (gid_max >> GID_BITS)
        rc = pm_error_set(err, PM_ERR_LIMIT, "dedupe: more than 2^%d rows", GID_BITS);
    if (pm_mpi_worst(rc) != PM_OK)
        goto out_free;
    uint64_t total = 0, dups = 0;
    if (m == M_PHASH) {
        struct dedupe_near_stats st;
        rc = dedupe_near_run(nr, prio, n, keeper, a->hamming, MPI_COMM_WORLD, a->memory_limit,
                             &st, err);
        res->rounds = st.rounds;
        total = st.records, dups = st.duplicates;
    } else {
        struct dedupe_exact_stats st;
        rc = dedupe_exact_run(er, n, keeper, MPI_COMM_WORLD, a->memory_limit, &st, err);
        for (size_t k = 0; rc == PM_OK && k < n; k++)
            keeper[k] &= ((uint64_t)1 << GID_BITS) - 1;
        res->rounds = st.rounds;
        total = st.records, dups = st.duplicates;
    }
    if (pm_mpi_worst(rc) != PM_OK) {
        rc = rc == PM_OK ? META_RC_ELSEWHERE : rc;
        goto out_free;
    }
    // Duplicates of this rank as (keeper, member) pairs; per unit as (row, keeper).
    size_t nd = 0;
    for (size_t k = 0; k < n; k++)
        nd += keeper[k] != rows->v[which[k]].gid;
    uint64_t *mine = malloc((nd ? nd : 1) * 2 * sizeof *mine);
    struct dup_entry *de = malloc((nd ? nd : 1) * sizeof *de);
    uint32_t *de_unit = malloc((nd ? nd : 1) * sizeof *de_unit);
    if (!mine || !de || !de_unit)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t k = 0, j = 0; rc == PM_OK && k < n; k++) {
        const struct drow *d = &rows->v[which[k]];
        if (keeper[k] == d->gid)
            continue;
        mine[2 * j] = keeper[k], mine[2 * j + 1] = d->gid;
        de[j] = (struct dup_entry){d->row, keeper[k]};
        de_unit[j] = d->unit;
        j++;
    }
    // Marks of this rank's shards: the rows were read in unit order, so each unit's
    // duplicates are a contiguous run of de[].
    for (size_t u = (size_t)mpi->rank, j = 0; rc == PM_OK && u < s->nunits;
         u += (size_t)mpi->size) {
        size_t j0 = j;
        while (j < nd && de_unit[j] == u)
            j++;
        qsort(de + j0, j - j0, sizeof *de, cmp_dup_row);
        struct view_bitmap bm;
        rc = view_bitmap_init(&bm, s->units[u].rows);
        if (rc != PM_OK)
            break;
        uint64_t *kp = malloc((j - j0 + 1) * sizeof *kp);
        if (!kp)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        for (size_t t = j0; rc == PM_OK && t < j; t++) {
            view_bitmap_set(&bm, de[t].row);
            kp[t - j0] = de[t].keeper;
        }
        char shard[64];
        meta_source_shard_name(s, u, shard, sizeof shard);
        snprintf(p, sizeof p, "%s/%s.dup", dir, shard);
        if (rc == PM_OK)
            rc = view_bitmap_write_store(&bm, s->store, p, err);
        snprintf(p, sizeof p, "%s/%s.keeper", dir, shard);
        if (rc == PM_OK)
            rc = write_keepers(s->store, p, &bm, kp, j - j0, err);
        free(kp);
        view_bitmap_release(&bm);
    }
    free(de);
    free(de_unit);
    // Rank 0 gathers every (keeper, member) pair for the summary and the report
    // (16 bytes per duplicate on rank 0).
    int cnt = (int)(2 * nd), *cnts = NULL, *displ = NULL;
    if (rc == PM_OK && 2 * nd > (size_t)1 << 30)
        rc = pm_error_set(err, PM_ERR_LIMIT, "dedupe: too many duplicates on one rank");
    if (pm_mpi_worst(rc) != PM_OK) {
        free(mine);
        rc = rc == PM_OK ? META_RC_ELSEWHERE : rc;
        goto out_free;
    }
    if (mpi->rank == 0) {
        cnts = calloc((size_t)mpi->size, sizeof *cnts);
        displ = calloc((size_t)mpi->size, sizeof *displ);
    }
    MPI_CHECK(MPI_Gather(&cnt, 1, MPI_INT, cnts, 1, MPI_INT, 0, MPI_COMM_WORLD));
    size_t tot = 0;
    if (mpi->rank == 0) {
        for (int r = 0; r < mpi->size; r++)
            displ[r] = (int)tot, tot += (size_t)cnts[r];
        res->pairs = malloc((tot ? tot : 1) * sizeof *res->pairs);
        if (!res->pairs)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    if (pm_mpi_worst(rc) != PM_OK) {
        free(mine), free(cnts), free(displ);
        rc = rc == PM_OK ? META_RC_ELSEWHERE : rc;
        goto out_free;
    }
    MPI_CHECK(MPI_Gatherv(mine, cnt, MPI_UINT64_T, res->pairs, cnts, displ, MPI_UINT64_T, 0,
                          MPI_COMM_WORLD));
    free(mine), free(cnts), free(displ);
    if (mpi->rank == 0) {
        res->npairs = tot / 2;
        qsort(res->pairs, res->npairs, 2 * sizeof *res->pairs, cmp_u64pair);
        uint64_t groups, largest;
        json_t *doc = json_object();
        json_object_set_new(doc, "marks_version", json_integer(1));
        json_object_set_new(doc, "method", json_string(method_names[m]));
        json_object_set(doc, "params", params);
        json_object_set_new(doc, "success", json_integer((json_int_t)success));
        json_object_set_new(doc, "records", json_integer((json_int_t)total));
        json_object_set_new(doc, "duplicates", json_integer((json_int_t)dups));
        json_t *cs = cluster_sizes(res->pairs, res->npairs, &groups, &largest);
        json_object_set_new(doc, "groups", json_integer((json_int_t)groups));
        json_object_set_new(doc, "largest_group", json_integer((json_int_t)largest));
        json_object_set_new(doc, "cluster_sizes", cs);
        res->marks = doc;
    }
    // Every shard's marks are on disk before marks.json says so.
    if (pm_mpi_worst(rc) != PM_OK) {
        rc = rc == PM_OK ? META_RC_ELSEWHERE : rc;
        goto out_free;
    }
    if (mpi->rank == 0) {
        snprintf(p, sizeof p, "%s/marks.json", dir);
        rc = json_file_write_store(s->store, p, res->marks, err);
    }
    if (pm_mpi_worst(rc) != PM_OK && rc == PM_OK)
        rc = META_RC_ELSEWHERE;
out_free:
    free(which), pm_big_free(keeper), pm_big_free(er), free(nr), free(prio);
    json_decref(params);
    return rc;
}

static const char *unit_shard_name(void *ctx, size_t unit, char *buf, size_t size)
{
    return meta_source_shard_name(ctx, unit, buf, size);
}

// Global row index -> (unit, row).
static void gid_locate(const struct meta_source *s, uint64_t gid, size_t *unit, uint64_t *row)
{
    size_t lo = 0, hi = s->nunits;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (s->units[mid].row_base <= gid)
            lo = mid;
        else
            hi = mid;
    }
    *unit = lo;
    *row = gid - s->units[lo].row_base;
}

struct group_ref {
    size_t first; // index of its first pair
    size_t size;  // members besides the keeper
};

static int cmp_group(const void *x, const void *y)
{
    const struct group_ref *a = x, *b = y;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    return a->first < b->first ? -1 : a->first > b->first;
}

// Rank 0: the HTML report. Groups shown: the largest first, then by keeper key.
static int write_report(const struct dedupe_args *a, const struct meta_source *s,
                        struct method_result *res, struct pm_error *err)
{
    FILE *out = fopen(a->report, "w");
    if (!out)
        return pm_error_set(err, PM_ERR_IO, "cannot create '%s': %s", a->report, strerror(errno));
    char title[512];
    snprintf(title, sizeof title, "dedupe: %s", s->dataset);
    html_begin(out, title);
    int rc = PM_OK;
    fputs("<table><tr><th>method</th><th>parameters</th><th>records</th><th>duplicates</th>"
          "<th>groups</th><th>largest group</th></tr>\n",
          out);
    for (size_t i = 0; i < a->nby; i++) {
        int m = a->by[i];
        json_t *d = res[m].marks;
        fprintf(out, "<tr><td>%s</td><td>keep %s", method_names[m],
                a->largest ? "largest" : "lowest key");
        if (m == M_PHASH)
            fprintf(out, ", Hamming &le; %u", a->hamming);
        fprintf(out, "</td><td>%" JSON_INTEGER_FORMAT "</td><td>%" JSON_INTEGER_FORMAT
                     "</td><td>%" JSON_INTEGER_FORMAT "</td><td>%" JSON_INTEGER_FORMAT
                     "</td></tr>\n",
                json_integer_value(json_object_get(d, "records")),
                json_integer_value(json_object_get(d, "duplicates")),
                json_integer_value(json_object_get(d, "groups")),
                json_integer_value(json_object_get(d, "largest_group")));
    }
    fputs("</table>\n", out);
    for (size_t i = 0; i < a->nby && rc == PM_OK; i++) {
        int m = a->by[i];
        fprintf(out, "<h2>%s duplicate groups</h2>\n", method_names[m]);
        if (res[m].skipped) {
            fputs("<p>Marks were up to date (not recomputed); no examples.</p>\n", out);
            continue;
        }
        const uint64_t *pr = res[m].pairs;
        size_t np = res[m].npairs, ng = 0;
        struct group_ref *g = malloc((np ? np : 1) * sizeof *g);
        if (!g) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        for (size_t k = 0; k < np;) {
            size_t j = k;
            while (j < np && pr[2 * j] == pr[2 * k])
                j++;
            g[ng++] = (struct group_ref){k, j - k};
            k = j;
        }
        qsort(g, ng, sizeof *g, cmp_group);
        size_t show = ng < REPORT_GROUPS ? ng : REPORT_GROUPS;
        if (!show)
            fputs("<p>No duplicates.</p>\n", out);
        for (size_t k = 0; k < show && rc == PM_OK; k++) {
            size_t nm = g[k].size < REPORT_MEMBERS - 1 ? g[k].size : REPORT_MEMBERS - 1;
            struct sheet_item items[REPORT_MEMBERS];
            memset(items, 0, sizeof items);
            for (size_t t = 0; t <= nm; t++) {
                uint64_t gid = t == 0 ? pr[2 * g[k].first] : pr[2 * (g[k].first + t - 1) + 1];
                gid_locate(s, gid, &items[t].shard, &items[t].row);
            }
            rc = sheet_items_fetch(items, nm + 1, s->store, unit_shard_name, (void *)s, err);
            if (rc == PM_OK) {
                fprintf(out, "<h3>group of %zu (%zu shown)</h3>\n<div class=\"sheet\">\n",
                        g[k].size + 1, nm + 1);
                for (size_t t = 0; t <= nm; t++)
                    html_figure(out, &items[t], t == 0 ? "keeper" : "duplicate");
                fputs("</div>\n", out);
            }
            sheet_items_release(items, nm + 1);
        }
        free(g);
    }
    html_end(out);
    if (fclose(out) != 0 && rc == PM_OK)
        rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s'", a->report);
    return rc;
}

int cmd_dedupe(int argc, char **argv, const struct pm_mpi *mpi)
{
    if (meta_command_help(argc, argv, usage, mpi))
        return PM_EXIT_OK;
    struct dedupe_args a;
    memset(&a, 0, sizeof a);
    if (parse_args(argc, argv, &a) != 0) {
        if (mpi->rank == 0)
            fputs(usage, stderr);
        return PM_EXIT_USAGE;
    }
    struct pm_error err = PM_ERROR_INIT;
    struct meta_source s;
    memset(&s, 0, sizeof s);
    struct drows rows = {0};
    struct method_result res[M_COUNT];
    memset(res, 0, sizeof res);
    char *dpath = (char *)a.dataset;
    int rc = meta_source_open(&s, &dpath, 1, &err);
    if (rc == PM_OK && !s.is_dataset)
        rc = pm_error_set(&err, PM_ERR_USAGE, "dedupe: '%s' is not a dataset", a.dataset);
    bool want[M_COUNT] = {false};
    for (size_t i = 0; i < a.nby; i++)
        want[a.by[i]] = true;
    uint64_t success = 0, all_success = 0;
    if (rc == PM_OK)
        rc = read_rows(&a, &s, mpi, want, &rows, &success, &err);
    int worst = pm_mpi_worst(rc);
    if (worst == PM_OK)
        MPI_CHECK(MPI_Allreduce(&success, &all_success, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    for (size_t i = 0; i < a.nby && worst == PM_OK; i++) {
        rc = run_method(&a, a.by[i], &s, mpi, &rows, all_success, &res[a.by[i]], &err);
        worst = pm_mpi_worst(rc);
    }
    if (worst == PM_OK && mpi->rank == 0) {
        // Summary: the marks.json documents of the methods run, in the order given.
        json_t *sum = json_object(), *ms = json_object();
        json_object_set_new(sum, "dedupe_version", json_integer(1));
        json_object_set_new(sum, "dataset", json_string(s.idx.name ? s.idx.name : ""));
        json_object_set_new(sum, "success", json_integer((json_int_t)all_success));
        for (size_t i = 0; i < a.nby; i++)
            json_object_set(ms, method_names[a.by[i]], res[a.by[i]].marks);
        json_object_set_new(sum, "methods", ms);
        // a killed run may have left a temporary summary behind
        rc = sweep_under(s.store, "_dedupe", &err);
        if (rc == PM_OK)
            rc = json_file_write_store(s.store, "_dedupe/summary.json", sum, &err);
        if (rc == PM_OK && a.report)
            rc = write_report(&a, &s, res, &err);
        if (rc == PM_OK && a.json) {
            json_t *runs = json_object();
            for (size_t i = 0; i < a.nby; i++) {
                json_t *x = json_object();
                json_object_set_new(x, "skipped", json_boolean(res[a.by[i]].skipped));
                json_object_set_new(x, "rounds", json_integer(res[a.by[i]].rounds));
                json_object_set_new(runs, method_names[a.by[i]], x);
            }
            json_object_set_new(sum, "runs", runs);
            char *txt = json_dumps(sum, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (txt)
                puts(txt);
            free(txt);
        } else if (rc == PM_OK) {
            printf("%-10s %12s %12s %10s %8s  %s\n", "method", "records", "duplicates", "groups",
                   "largest", "");
            for (size_t i = 0; i < a.nby; i++) {
                json_t *d = res[a.by[i]].marks;
                printf("%-10s %12" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT
                       " %10" JSON_INTEGER_FORMAT " %8" JSON_INTEGER_FORMAT "  %s\n",
                       method_names[a.by[i]], json_integer_value(json_object_get(d, "records")),
                       json_integer_value(json_object_get(d, "duplicates")),
                       json_integer_value(json_object_get(d, "groups")),
                       json_integer_value(json_object_get(d, "largest_group")),
                       res[a.by[i]].skipped ? "(up to date, skipped)" : "");
            }
            if (a.report)
                printf("wrote %s\n", a.report);
        }
        json_decref(sum);
    }
    if (rc != PM_OK && rc != META_RC_ELSEWHERE)
        pm_log_error("%s", err.msg);
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
    if (worst != PM_OK && rc == PM_OK)
        rc = worst;
    for (int m = 0; m < M_COUNT; m++) {
        json_decref(res[m].marks);
        free(res[m].pairs);
    }
    free(rows.v);
    meta_source_release(&s);
    return pm_exit_from_status(rc == META_RC_ELSEWHERE ? PM_ERR_IO : rc);
}
