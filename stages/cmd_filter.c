/*
 * pixelmill filter — apply --where clauses (and exact dedupe) to a dataset's sidecars and
 * write a view (_views/NAME/), or to plain input metadata and write the kept rows as a
 * new Parquet file. Counts: rows, success, per clause (failed, missing), per dedupe
 * method, kept. See docs/data-scientists.md and docs/internals/views.md.
 */
#include "atomic_file.h"
#include "commands.h"
#include "dedupe_exact.h"
#include "filter_expr.h"
#include "json_file.h"
#include "meta_source.h"
#include "parquet_writer.h"
#include "pm_bigmem.h"
#include "pm_log.h"
#include "view.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static const char usage[] =
    "usage: pixelmill filter DATASET --where EXPR... [--dedupe url,content,phash] --view NAME\n"
    "                        [--json]\n"
    "       pixelmill filter INPUT... --where EXPR... --output FILE.parquet [--json]\n"
    "\n"
    "Keep the rows passing every --where clause (AND). On a dataset, writes the view\n"
    "DATASET/_views/NAME/ (a keep-bitmap per shard and view.json); only `success` rows can\n"
    "be kept. On input metadata (CSV/TSV/JSONL/Parquet), writes the kept rows to --output.\n"
    "\n"
    "  --where EXPR    'COL < 0.1', 'min(WIDTH,HEIGHT) >= 256', 'len(caption) > 5',\n"
    "                  \"LANGUAGE in ('en','de')\"; repeatable; missing values never pass\n"
    "  --dedupe LIST   url, content (exact; from _dedupe/ marks if present, else computed\n"
    "                  here, keeper = lowest key among the rows passing --where), phash\n"
    "                  (needs _dedupe/phash marks from pixelmill dedupe)\n"
    "  --view NAME     view name (datasets)\n"
    "  --output FILE   output Parquet file (input metadata)\n"
    "  --json          print the counts as JSON instead of a table\n";

enum {
    DEDUPE_URL = DEDUPE_BY_URL,
    DEDUPE_CONTENT = DEDUPE_BY_CONTENT,
    DEDUPE_PHASH = DEDUPE_BY_PHASH,
    DEDUPE_METHODS = DEDUPE_BY_COUNT
};
#define dedupe_names dedupe_method_names

struct filter_args {
    const char **where;
    size_t nwhere;
    char **inputs;
    size_t ninputs;
    int dedupe[DEDUPE_METHODS]; // methods in order of application
    size_t ndedupe;
    const char *view;
    const char *output;
    int json;
};

// Counts summed over ranks: a flat vector so one MPI_Reduce moves it.
struct fcounts {
    uint64_t rows, success, kept_where, missing, kept;
    uint64_t dedupe[DEDUPE_METHODS];
    uint64_t *clause; // [2 * nclauses]: failed, missing
};

static int parse_args(int argc, char **argv, struct filter_args *a)
{
    a->where = calloc((size_t)argc, sizeof *a->where);
    a->inputs = calloc((size_t)argc, sizeof *a->inputs);
    if (!a->where || !a->inputs)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(o, "--where") && has)
            a->where[a->nwhere++] = argv[++i];
        else if (!strcmp(o, "--dedupe") && has) {
            if (meta_option_methods("--dedupe", argv[++i], a->dedupe, &a->ndedupe))
                return -1;
        } else if (!strcmp(o, "--view") && has)
            a->view = argv[++i];
        else if ((!strcmp(o, "--output") || !strcmp(o, "-o")) && has)
            a->output = argv[++i];
        else if (!strcmp(o, "--json"))
            a->json = 1;
        else if (o[0] == '-' && o[1]) {
            pm_log_error("filter: unknown option or missing value: %s", o);
            return -1;
        } else
            a->inputs[a->ninputs++] = argv[i];
    }
    if (!a->ninputs) {
        pm_log_error("filter: no DATASET or INPUT given");
        return -1;
    }
    return 0;
}

static double pct(uint64_t a, uint64_t b)
{
    return b ? 100.0 * (double)a / (double)b : 0.0;
}

static json_t *counts_json(const struct fcounts *c, const struct filter_expr *f,
                           const struct filter_args *a, bool dataset)
{
    json_t *o = json_object();
    json_object_set_new(o, "rows", json_integer((json_int_t)c->rows));
    if (dataset)
        json_object_set_new(o, "success", json_integer((json_int_t)c->success));
    json_object_set_new(o, "kept", json_integer((json_int_t)c->kept));
    json_object_set_new(o, "dropped", json_integer((json_int_t)(c->success - c->kept)));
    json_object_set_new(o, "missing", json_integer((json_int_t)c->missing));
    json_t *cl = json_array();
    for (size_t i = 0; i < filter_expr_num_clauses(f); i++) {
        json_t *x = json_object();
        json_object_set_new(x, "clause", json_string(filter_expr_clause_text(f, i)));
        json_object_set_new(x, "dropped", json_integer((json_int_t)c->clause[2 * i]));
        json_object_set_new(x, "missing", json_integer((json_int_t)c->clause[2 * i + 1]));
        json_array_append_new(cl, x);
    }
    json_object_set_new(o, "clauses", cl);
    json_object_set_new(o, "kept_by_where", json_integer((json_int_t)c->kept_where));
    json_t *d = json_object();
    for (size_t i = 0; i < a->ndedupe; i++)
        json_object_set_new(d, dedupe_names[a->dedupe[i]],
                            json_integer((json_int_t)c->dedupe[a->dedupe[i]]));
    json_object_set_new(o, "dedupe", d);
    return o;
}

static void print_table(const struct fcounts *c, const struct filter_expr *f,
                        const struct filter_args *a, bool dataset)
{
    uint64_t base = dataset ? c->success : c->rows;
    int wd = 40;
    for (size_t i = 0; i < filter_expr_num_clauses(f); i++)
        if ((int)strlen(filter_expr_clause_text(f, i)) > wd)
            wd = (int)strlen(filter_expr_clause_text(f, i));
    printf("%-*s %14" PRIu64 "\n", wd, "rows", c->rows);
    if (dataset)
        printf("%-*s %14" PRIu64 "  (%.2f%% of rows)\n", wd, "success", c->success,
               pct(c->success, c->rows));
    printf("\n%-*s %14s %10s %14s\n", wd, "clause", "dropped", "%", "of which null");
    for (size_t i = 0; i < filter_expr_num_clauses(f); i++)
        printf("%-*s %14" PRIu64 " %9.2f%% %14" PRIu64 "\n", wd, filter_expr_clause_text(f, i),
               c->clause[2 * i], pct(c->clause[2 * i], base), c->clause[2 * i + 1]);
    printf("%-*s %14" PRIu64 " %9.2f%%\n", wd, "all clauses (kept)", c->kept_where,
           pct(c->kept_where, base));
    printf("%-*s %14" PRIu64 "\n", wd, "dropped for a missing value", c->missing);
    for (size_t i = 0; i < a->ndedupe; i++) {
        char label[64];
        snprintf(label, sizeof label, "dedupe %s (duplicates dropped)", dedupe_names[a->dedupe[i]]);
        printf("%-*s %14" PRIu64 "\n", wd, label, c->dedupe[a->dedupe[i]]);
    }
    printf("\n%-*s %14" PRIu64 "  (%.2f%% of %s)\n", wd, "kept", c->kept, pct(c->kept, base),
           dataset ? "success" : "rows");
}

// ---- input metadata -> Parquet (rank 0 writes; the output's row order is the input's) ----

static int filter_inputs(const struct filter_args *a, struct filter_expr *f,
                         const struct pm_mpi *mpi, struct fcounts *c, struct pm_error *err)
{
    if (mpi->rank != 0)
        return PM_OK;
    struct table_reader *r = NULL;
    struct parquet_writer *w = NULL;
    struct table_batch in = TABLE_BATCH_INIT, out = TABLE_BATCH_INIT;
    uint8_t *keep = NULL;
    size_t nclauses = filter_expr_num_clauses(f);
    struct filter_counts fc = {0};
    fc.clause_failed = calloc(nclauses + 1, sizeof(uint64_t));
    fc.clause_missing = calloc(nclauses + 1, sizeof(uint64_t));
    struct column_info *schema = NULL;
    size_t ncols = 0;
    int rc = PM_OK;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", a->output, (int)getpid());
    for (size_t i = 0; i < a->ninputs && rc == PM_OK; i++) {
        struct table_reader_options opt = {0};
        rc = table_reader_open(&r, a->inputs[i], &opt, err);
        if (rc != PM_OK)
            break;
        size_t n = table_reader_num_columns(r);
        if (!schema) {
            ncols = n;
            schema = calloc(n, sizeof *schema);
            for (size_t j = 0; j < n; j++) {
                schema[j] = *table_reader_column(r, j);
                schema[j].name = strdup(schema[j].name);
                schema[j].nullable = true;
            }
            rc = parquet_writer_open(&w, tmp, schema, ncols, NULL, err);
        } else {
            int same = n == ncols;
            for (size_t j = 0; same && j < n; j++)
                same = !strcmp(schema[j].name, table_reader_column(r, j)->name) &&
                       schema[j].type == table_reader_column(r, j)->type;
            if (!same)
                rc =
                    pm_error_set(err, PM_ERR_USAGE,
                                 "input '%s': columns differ from the first input's", a->inputs[i]);
        }
        if (rc == PM_OK)
            rc = filter_expr_bind(f, schema, ncols, err);
        table_batch_release(&in);
        table_batch_release(&out);
        if (rc == PM_OK &&
            (table_reader_batch_init(r, &in) != PM_OK || table_reader_batch_init(r, &out) != PM_OK))
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        while (rc == PM_OK) {
            rc = table_reader_next(r, &in, err);
            if (rc != PM_OK || in.nrows == 0)
                break;
            uint8_t *k = realloc(keep, in.nrows);
            if (!k) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                break;
            }
            keep = k;
            filter_expr_eval(f, &in, keep, &fc);
            table_batch_clear(&out);
            rc = table_batch_append_kept(&out, &in, keep);
            if (rc == PM_OK && out.nrows)
                rc = parquet_writer_write(w, &out, err);
        }
        table_reader_free(r);
        r = NULL;
    }
    if (rc == PM_OK)
        rc = parquet_writer_close(w, err);
    if (rc == PM_OK && rename(tmp, a->output) != 0)
        rc = pm_error_set(err, PM_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, a->output,
                          strerror(errno));
    if (rc != PM_OK)
        unlink(tmp);
    c->rows = c->success = fc.rows;
    c->kept = c->kept_where = fc.kept;
    c->missing = fc.missing;
    for (size_t i = 0; i < nclauses; i++) {
        c->clause[2 * i] = fc.clause_failed[i];
        c->clause[2 * i + 1] = fc.clause_missing[i];
    }
    parquet_writer_free(w);
    table_batch_release(&in);
    table_batch_release(&out);
    free(keep);
    free(fc.clause_failed);
    free(fc.clause_missing);
    for (size_t j = 0; schema && j < ncols; j++)
        free(schema[j].name);
    free(schema);
    return rc;
}

// ---- datasets -> view ------------------------------------------------------------------

struct kept_row {
    size_t unit;
    uint64_t row;
    uint64_t hash[2][2]; // url, content: (hi, lo)
    uint8_t has[2];
};

struct rowvec {
    struct kept_row *v;
    size_t n, cap;
};

static bool marks_exist(const struct meta_source *s, const char *method)
{
    char p[256];
    snprintf(p, sizeof p, "_dedupe/%s/marks.json", method);
    return meta_source_has(s, p);
}

// Process this rank's shards: evaluate, set bits, remember kept rows for dedupe.
static int filter_shards(const struct filter_args *a, struct filter_expr *f,
                         const struct meta_source *s, const struct pm_mpi *mpi,
                         struct view_bitmap *bm, struct rowvec *kept, struct fcounts *c,
                         struct pm_error *err)
{
    size_t nclauses = filter_expr_num_clauses(f);
    size_t nfcols = filter_expr_num_columns(f);
    const char **cols = calloc(nfcols + 4, sizeof *cols);
    struct filter_counts fc = {0};
    fc.clause_failed = calloc(nclauses + 1, sizeof(uint64_t));
    fc.clause_missing = calloc(nclauses + 1, sizeof(uint64_t));
    if (!cols || !fc.clause_failed || !fc.clause_missing)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    size_t ncols = 0;
    cols[ncols++] = "status";
    bool want_url = false, want_content = false;
    for (size_t i = 0; i < a->ndedupe; i++) {
        want_url |= a->dedupe[i] == DEDUPE_URL && !marks_exist(s, "url");
        want_content |= a->dedupe[i] == DEDUPE_CONTENT && !marks_exist(s, "content");
    }
    if (want_url)
        cols[ncols++] = "url";
    if (want_content)
        cols[ncols++] = "content_hash";
    meta_columns_add_expr(cols, &ncols, f);
    struct table_batch in = TABLE_BATCH_INIT, ok = TABLE_BATCH_INIT;
    uint8_t *succ = NULL, *keep = NULL;
    int rc = PM_OK;
    for (size_t u = (size_t)mpi->rank; u < s->nunits && rc == PM_OK; u += (size_t)mpi->size) {
        struct table_reader *r = NULL;
        rc = meta_source_unit_open(s, u, cols, ncols, &r, err);
        if (rc != PM_OK)
            break;
        rc = meta_reader_bind(r, f, err);
        if (rc == PM_OK && table_reader_column(r, 0)->type != COLUMN_STRING)
            rc = pm_error_set(err, PM_ERR_FORMAT, "sidecar '%s': status is not a string",
                              s->files[u]);
        table_batch_release(&in);
        table_batch_release(&ok);
        if (rc == PM_OK && (table_reader_batch_init(r, &in) || table_reader_batch_init(r, &ok)))
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        if (rc == PM_OK)
            rc = view_bitmap_init(&bm[u], s->units[u].rows);
        uint64_t row = 0;
        while (rc == PM_OK) {
            rc = table_reader_next(r, &in, err);
            if (rc != PM_OK || in.nrows == 0)
                break;
            if ((rc = meta_unit_check_rows(s, u, row + in.nrows, false, err)) != PM_OK)
                break;
            uint8_t *p1 = realloc(succ, in.nrows), *p2 = p1 ? realloc(keep, in.nrows) : NULL;
            if (p1)
                succ = p1;
            if (!p1 || !p2) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                break;
            }
            keep = p2;
            meta_status_success(&in.cols[0], in.nrows, succ);
            table_batch_clear(&ok);
            rc = table_batch_append_kept(&ok, &in, succ);
            if (rc != PM_OK)
                break;
            filter_expr_eval(f, &ok, keep, &fc);
            size_t k = 0;
            for (size_t i = 0; i < in.nrows; i++) {
                if (!succ[i])
                    continue;
                if (keep[k++]) {
                    view_bitmap_set(&bm[u], row + i);
                    if (kept->n == kept->cap) {
                        size_t cap = kept->cap ? kept->cap * 2 : 4096;
                        struct kept_row *v = realloc(kept->v, cap * sizeof *v);
                        if (!v) {
                            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                            break;
                        }
                        kept->v = v;
                        kept->cap = cap;
                    }
                    struct kept_row *kr = &kept->v[kept->n++];
                    memset(kr, 0, sizeof *kr);
                    kr->unit = u;
                    kr->row = row + i;
                    size_t ci = 1;
                    if (want_url) {
                        const struct column *x = &in.cols[ci++];
                        if (x->valid[i]) {
                            size_t len;
                            const char *p = column_string(x, i, &len);
                            XXH128_hash_t h = XXH3_128bits(p, len);
                            kr->hash[0][0] = h.high64;
                            kr->hash[0][1] = h.low64;
                            kr->has[0] = 1;
                        }
                    }
                    if (want_content) {
                        const struct column *x = &in.cols[ci++];
                        size_t len = 0;
                        const char *p = x->valid[i] ? column_string(x, i, &len) : "";
                        kr->has[1] = x->type == COLUMN_STRING && meta_content_hash(p, len, kr->hash[1]);
                    }
                }
            }
            c->success += ok.nrows;
            c->rows += in.nrows;
            row += in.nrows;
        }
        if (rc == PM_OK)
            rc = meta_unit_check_rows(s, u, row, true, err);
        table_reader_free(r);
    }
    c->kept_where = fc.kept;
    c->missing = fc.missing;
    for (size_t i = 0; i < nclauses; i++) {
        c->clause[2 * i] = fc.clause_failed[i];
        c->clause[2 * i + 1] = fc.clause_missing[i];
    }
    table_batch_release(&in);
    table_batch_release(&ok);
    free(succ);
    free(keep);
    free(cols);
    free(fc.clause_failed);
    free(fc.clause_missing);
    return rc;
}

// Drop the rows a dedupe method marks as duplicates. Collective.
static int apply_dedupe(int method, const struct meta_source *s, const struct pm_mpi *mpi,
                        struct view_bitmap *bm, struct rowvec *kept, uint64_t *dropped,
                        struct pm_error *err)
{
    const char *name = dedupe_names[method];
    uint64_t count = 0;
    int rc = PM_OK;
    if (marks_exist(s, name)) {
        // Marks from pixelmill dedupe: _dedupe/METHOD/NAME.dup, bit set = duplicate.
        for (size_t u = (size_t)mpi->rank; u < s->nunits && rc == PM_OK; u += (size_t)mpi->size) {
            char shard[64], p[256];
            meta_source_shard_name(s, u, shard, sizeof shard);
            snprintf(p, sizeof p, "_dedupe/%s/%s.dup", name, shard);
            struct view_bitmap dup;
            rc = view_bitmap_read_store(&dup, s->store, p, err);
            if (rc == PM_OK && dup.rows != bm[u].rows)
                rc = pm_error_set(err, PM_ERR_FORMAT,
                                  "dedupe marks '%s': %" PRIu64 " rows, the "
                                  "shard has %" PRIu64,
                                  p, dup.rows, bm[u].rows);
            for (uint64_t r = 0; rc == PM_OK && r < dup.rows; r++)
                if (view_bitmap_get(&dup, r) && view_bitmap_get(&bm[u], r)) {
                    bm[u].bits[r >> 3] &= (uint8_t) ~(1u << (r & 7));
                    bm[u].kept--;
                    count++;
                }
            view_bitmap_release(&dup);
        }
    } else if (method == DEDUPE_PHASH) {
        rc = pm_error_set(err, PM_ERR_USAGE,
                          "--dedupe phash needs near-duplicate marks "
                          "(%s/_dedupe/phash/marks.json): run pixelmill dedupe first",
                          s->dataset);
    } else {
        int h = method == DEDUPE_URL ? 0 : 1;
        struct dedupe_record *recs = pm_big_alloc((kept->n ? kept->n : 1) * sizeof *recs);
        uint64_t *keeper = pm_big_alloc((kept->n ? kept->n : 1) * sizeof *keeper);
        size_t *which = malloc((kept->n ? kept->n : 1) * sizeof *which);
        size_t n = 0;
        int nomem = !recs || !keeper || !which, any_nomem = 0;
        MPI_CHECK(MPI_Allreduce(&nomem, &any_nomem, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
        if (any_nomem) {
            pm_big_free(recs), pm_big_free(keeper), free(which);
            return pm_error_set(err, PM_ERR_NOMEM, "dedupe %s: out of memory", name);
        }
        for (size_t i = 0; i < kept->n; i++) {
            const struct kept_row *kr = &kept->v[i];
            if (!kr->has[h] || !view_bitmap_get(&bm[kr->unit], kr->row))
                continue;
            recs[n] = (struct dedupe_record){kr->hash[h][0], kr->hash[h][1],
                                             s->units[kr->unit].row_base + kr->row};
            which[n++] = i;
        }
        struct dedupe_exact_stats st;
        rc = dedupe_exact_run(recs, n, keeper, MPI_COMM_WORLD, 0, &st, err);
        for (size_t j = 0; rc == PM_OK && j < n; j++) {
            if (keeper[j] == recs[j].id)
                continue;
            const struct kept_row *kr = &kept->v[which[j]];
            bm[kr->unit].bits[kr->row >> 3] &= (uint8_t) ~(1u << (kr->row & 7));
            bm[kr->unit].kept--;
            count++;
        }
        pm_big_free(recs), pm_big_free(keeper), free(which);
    }
    *dropped = count;
    return rc;
}

static int filter_dataset(const struct filter_args *a, struct filter_expr *f,
                          const struct meta_source *s, const struct pm_mpi *mpi, struct fcounts *c,
                          json_t **shards_out, struct pm_error *err)
{
    // object names relative to the dataset's store: _views/NAME/...
    char vdir[256], p[512];
    int rc = view_path(vdir, sizeof vdir, NULL, a->view, NULL, err);
    if (rc != PM_OK)
        return rc;
    struct view_bitmap *bm = calloc(s->nunits ? s->nunits : 1, sizeof *bm);
    struct rowvec kept = {0};
    if (!bm)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    if (mpi->rank == 0) {
        // The view is incomplete from now until view.json is written again.
        // temporaries of a killed earlier run (no rank writes here before the barrier
        // below); on S3 an unfinished write leaves no object under its name
        if (!store_is_s3(s->store)) {
            char local[PATH_MAX];
            struct stat st;
            snprintf(local, sizeof local, "%s/%s", store_location(s->store), vdir);
            if (stat(local, &st) == 0)
                rc = atomic_file_sweep(local, 0, NULL, err);
        }
        snprintf(p, sizeof p, "%s/%s", vdir, VIEW_INDEX_FILE);
        if (rc == PM_OK)
            rc = store_delete(s->store, p, err);
    }
    if (pm_mpi_worst(rc) != PM_OK) {
        if (rc == PM_OK)
            rc = META_RC_ELSEWHERE;
        goto out;
    }
    rc = filter_shards(a, f, s, mpi, bm, &kept, c, err);
    if (pm_mpi_worst(rc) != PM_OK) {
        if (rc == PM_OK)
            rc = META_RC_ELSEWHERE;
        goto out;
    }
    for (size_t i = 0; i < a->ndedupe && rc == PM_OK; i++) {
        rc = apply_dedupe(a->dedupe[i], s, mpi, bm, &kept, &c->dedupe[a->dedupe[i]], err);
        if (pm_mpi_worst(rc) != PM_OK && rc == PM_OK)
            rc = META_RC_ELSEWHERE;
    }
    for (size_t u = (size_t)mpi->rank; u < s->nunits && rc == PM_OK; u += (size_t)mpi->size) {
        char shard[64];
        meta_source_shard_name(s, u, shard, sizeof shard);
        snprintf(p, sizeof p, "%s/%s.keep", vdir, shard);
        rc = view_bitmap_write_store(&bm[u], s->store, p, err);
        c->kept += bm[u].kept;
    }
    if (pm_mpi_worst(rc) != PM_OK) {
        if (rc == PM_OK)
            rc = META_RC_ELSEWHERE;
        goto out;
    }
out:
    // Per-shard kept counts for view.json: each shard's owner contributes, the rest 0.
    if (rc == PM_OK) {
        uint64_t *sk = calloc(s->nunits + 1, sizeof *sk), *all = calloc(s->nunits + 1, sizeof *all);
        for (size_t u = (size_t)mpi->rank; sk && u < s->nunits; u += (size_t)mpi->size)
            sk[u] = bm[u].kept;
        MPI_CHECK(MPI_Reduce(sk, all, (int)s->nunits, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
        if (mpi->rank == 0) {
            json_t *shards = json_array();
            for (size_t u = 0; u < s->nunits; u++) {
                char shard[64];
                json_t *x = json_object();
                json_object_set_new(x, "name",
                                    json_string(meta_source_shard_name(s, u, shard, sizeof shard)));
                json_object_set_new(x, "xxh3", json_string(s->idx.shards[u].xxh3));
                json_object_set_new(x, "rows", json_integer((json_int_t)s->units[u].rows));
                json_object_set_new(x, "kept", json_integer((json_int_t)all[u]));
                json_array_append_new(shards, x);
            }
            *shards_out = shards;
        }
        free(sk);
        free(all);
    }
    for (size_t u = 0; u < s->nunits; u++)
        view_bitmap_release(&bm[u]);
    free(bm);
    free(kept.v);
    return rc;
}

static int write_view_json(const struct filter_args *a, const struct filter_expr *f,
                           const struct meta_source *s, json_t *shards, json_t *counts,
                           struct pm_error *err)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "view_version", json_integer(1));
    json_object_set_new(doc, "name", json_string(a->view));
    json_t *w = json_array();
    for (size_t i = 0; i < filter_expr_num_clauses(f); i++)
        json_array_append_new(w, json_string(filter_expr_clause_text(f, i)));
    json_object_set_new(doc, "where", w);
    json_t *d = json_array(), *src = json_object();
    for (size_t i = 0; i < a->ndedupe; i++) {
        const char *m = dedupe_names[a->dedupe[i]];
        json_array_append_new(d, json_string(m));
        json_object_set_new(src, m,
                            json_string(marks_exist(s, m) ? "_dedupe" : "computed"));
    }
    json_object_set_new(doc, "dedupe", d);
    json_object_set_new(doc, "dedupe_source", src);
    json_object_set_new(doc, "dataset", json_object());
    json_object_set_new(json_object_get(doc, "dataset"), "name",
                        json_string(s->idx.name ? s->idx.name : ""));
    json_object_set_new(json_object_get(doc, "dataset"), "stage",
                        json_string(s->idx.stage ? s->idx.stage : ""));
    json_object_set(doc, "counts", counts);
    json_object_set(doc, "shards", shards);
    char p[256];
    int rc = view_path(p, sizeof p, NULL, a->view, "/" VIEW_INDEX_FILE, err);
    if (rc == PM_OK)
        rc = json_file_write_store(s->store, p, doc, err);
    json_decref(doc);
    return rc;
}

int cmd_filter(int argc, char **argv, const struct pm_mpi *mpi)
{
    if (meta_command_help(argc, argv, usage, mpi))
        return PM_EXIT_OK;
    struct filter_args a = {0};
    struct pm_error err = PM_ERROR_INIT;
    struct filter_expr *f = NULL;
    struct meta_source s;
    memset(&s, 0, sizeof s);
    int exit_status = PM_EXIT_OK;
    if (parse_args(argc, argv, &a) != 0) {
        if (mpi->rank == 0)
            fputs(usage, stderr);
        exit_status = PM_EXIT_USAGE;
        goto out;
    }
    int rc = meta_source_open_with_expr(&s, a.inputs, a.ninputs, &f, a.where, a.nwhere, &err);
    if (rc == PM_OK && s.is_dataset && !a.view)
        rc = pm_error_set(&err, PM_ERR_USAGE, "filter: a dataset needs --view NAME");
    if (rc == PM_OK && !s.is_dataset && !a.output)
        rc = pm_error_set(&err, PM_ERR_USAGE,
                          "filter: input metadata needs --output FILE.parquet (or give one "
                          "dataset directory and --view NAME)");
    if (rc == PM_OK && !s.is_dataset && a.ndedupe)
        rc = pm_error_set(&err, PM_ERR_USAGE, "filter: --dedupe works on datasets only");
    if (rc != PM_OK) {
        if (mpi->rank == 0)
            pm_log_error("%s", err.msg);
        exit_status = pm_exit_from_status(rc);
        goto out;
    }
    size_t nclauses = filter_expr_num_clauses(f);
    struct fcounts c = {0}, tot = {0};
    c.clause = calloc(2 * nclauses + 1, sizeof(uint64_t));
    tot.clause = calloc(2 * nclauses + 1, sizeof(uint64_t));
    json_t *shards = NULL;
    rc = s.is_dataset ? filter_dataset(&a, f, &s, mpi, &c, &shards, &err)
                      : filter_inputs(&a, f, mpi, &c, &err);
    rc = pm_mpi_worst(rc) != PM_OK && rc == PM_OK ? META_RC_ELSEWHERE : rc;
    if (rc == PM_OK) {
        uint64_t v[5 + DEDUPE_METHODS], w[5 + DEDUPE_METHODS];
        uint64_t fixed[] = {c.rows, c.success, c.kept_where, c.missing, c.kept};
        memcpy(v, fixed, sizeof fixed);
        memcpy(v + 5, c.dedupe, sizeof c.dedupe);
        MPI_CHECK(MPI_Reduce(v, w, 5 + DEDUPE_METHODS, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
        if (nclauses)
            MPI_CHECK(MPI_Reduce(c.clause, tot.clause, (int)(2 * nclauses), MPI_UINT64_T, MPI_SUM,
                                 0, MPI_COMM_WORLD));
        tot.rows = w[0], tot.success = w[1], tot.kept_where = w[2], tot.missing = w[3];
        tot.kept = w[4];
        memcpy(tot.dedupe, w + 5, sizeof tot.dedupe);
        if (mpi->rank == 0) {
            json_t *cj = counts_json(&tot, f, &a, s.is_dataset);
            if (s.is_dataset)
                rc = write_view_json(&a, f, &s, shards, cj, &err);
            if (rc == PM_OK && a.json) {
                char *txt = json_dumps(cj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                if (txt)
                    puts(txt);
                free(txt);
            } else if (rc == PM_OK)
                print_table(&tot, f, &a, s.is_dataset);
            json_decref(cj);
        }
    }
    json_decref(shards);
    if (rc != PM_OK && rc != META_RC_ELSEWHERE)
        pm_log_error("%s", err.msg);
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
    exit_status = pm_exit_from_status(rc);
    free(c.clause);
    free(tot.clause);
out:
    filter_expr_free(f);
    meta_source_release(&s);
    free(a.where);
    free(a.inputs);
    return exit_status;
}
