/*
 * download_plan — input slicing for `pixelmill download`; see download_plan.h.
 */
#include "download_plan.h"

#include "atomic_file.h"
#include "json_file.h"
#include "parquet_writer.h"
#include "pm_log.h"
#include "shard.h"
#include "table_reader.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define PLAN_FILE "plan.json"
#define PLAN_MAX_BYTES ((size_t)64 << 20)
#define PLAN_VERSION 1

void download_plan_release(struct download_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->ninputs; i++)
        free(p->inputs[i].path);
    free(p->inputs);
    for (size_t i = 0; i < p->ncolumns; i++)
        free(p->columns[i].name);
    free(p->columns);
    memset(p, 0, sizeof *p);
}

static int path_join(char *buf, size_t n, const char *a, const char *b)
{
    int k = snprintf(buf, n, "%s/%s", a, b);
    return k < 0 || (size_t)k >= n ? PM_ERR_LIMIT : PM_OK;
}

static int slice_path(char *buf, size_t n, const char *output, size_t input, uint64_t slice)
{
    int k = snprintf(buf, n, "%s/_work/input/%zu-%" PRIu64 ".parquet", output, input, slice);
    return k < 0 || (size_t)k >= n ? PM_ERR_LIMIT : PM_OK;
}

int download_plan_locate(const struct download_plan *p, uint64_t unit, size_t *input,
                         uint64_t *slice, uint64_t *rows)
{
    if (unit >= p->nunits)
        return PM_ERR_USAGE;
    // binary search over first_unit
    size_t lo = 0, hi = p->ninputs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->inputs[mid].first_unit <= unit)
            lo = mid;
        else
            hi = mid;
    }
    // skip empty inputs that share the same first_unit
    while (lo + 1 < p->ninputs && p->inputs[lo].slices == 0)
        lo++;
    const struct download_plan_input *in = &p->inputs[lo];
    if (unit < in->first_unit || unit - in->first_unit >= in->slices)
        return PM_ERR_INTERNAL;
    uint64_t j = unit - in->first_unit;
    *input = lo;
    *slice = j;
    uint64_t left = in->rows - j * p->samples_per_shard;
    *rows = left < p->samples_per_shard ? left : p->samples_per_shard;
    return PM_OK;
}

/* ---- prepass ------------------------------------------------------------------------ */

static int write_slice(const char *path, const struct table_batch *b,
                       const struct column_info *schema, size_t ncols, struct pm_error *err)
{
    struct atomic_file *af = NULL;
    int rc = atomic_file_open(path, &af, err);
    if (rc)
        return rc;
    struct parquet_writer *w = NULL;
    struct parquet_writer_options po = {PARQUET_CODEC_ZSTD, 0};
    rc = parquet_writer_open(&w, atomic_file_temp_path(af), schema, ncols, &po, err);
    if (!rc)
        rc = parquet_writer_write(w, b, err);
    if (!rc)
        rc = parquet_writer_close(w, err);
    parquet_writer_free(w);
    if (!rc)
        rc = atomic_file_commit(af, err);
    atomic_file_free(af);
    return rc;
}

/* Slice one input file. types[ncols] receives type + 1 of each column. */
static int slice_input(const struct download_plan_options *o, size_t idx, uint64_t *rows_out,
                       uint64_t *slices_out, int *types, struct pm_error *err)
{
    struct table_reader_options ro = {0};
    ro.format = o->input_format;
    ro.columns = o->columns;
    ro.ncolumns = o->ncolumns;
    struct table_reader *r = NULL;
    struct table_batch in = TABLE_BATCH_INIT, slice = TABLE_BATCH_INIT;
    struct column_info *schema = NULL;
    uint64_t rows = 0, slices = 0;
    int rc = table_reader_open(&r, o->inputs[idx], &ro, err);
    if (rc)
        goto out;
    size_t ncols = table_reader_num_columns(r);
    if (ncols != o->ncolumns) {
        rc = pm_error_set(err, PM_ERR_INTERNAL, "'%s': reader returned %zu columns, asked %zu",
                          o->inputs[idx], ncols, o->ncolumns);
        goto out;
    }
    schema = calloc(ncols, sizeof *schema);
    if (!schema) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t j = 0; j < ncols; j++) {
        schema[j] = *table_reader_column(r, j);
        schema[j].nullable = true;
        types[j] = (int)schema[j].type + 1;
    }
    if ((rc = table_reader_batch_init(r, &in)) || (rc = table_batch_init(&slice, schema, ncols))) {
        pm_error_set(err, rc, "out of memory");
        goto out;
    }
    for (;;) {
        rc = table_reader_next(r, &in, err);
        if (rc)
            goto out;
        if (in.nrows == 0)
            break;
        size_t at = 0;
        while (at < in.nrows) {
            size_t room = (size_t)(o->samples_per_shard - slice.nrows);
            size_t take = in.nrows - at < room ? in.nrows - at : room;
            rc = table_batch_append_range(&slice, &in, at, take);
            if (rc) {
                pm_error_set(err, rc, "'%s': cannot buffer rows", o->inputs[idx]);
                goto out;
            }
            at += take;
            rows += take;
            if (slice.nrows == o->samples_per_shard) {
                char path[PATH_MAX];
                if ((rc = slice_path(path, sizeof path, o->output, idx, slices))) {
                    pm_error_set(err, rc, "output path too long");
                    goto out;
                }
                if ((rc = write_slice(path, &slice, schema, ncols, err)))
                    goto out;
                slices++;
                table_batch_clear(&slice);
                slice.nrows = 0;
            }
        }
    }
    if (slice.nrows > 0) {
        char path[PATH_MAX];
        if ((rc = slice_path(path, sizeof path, o->output, idx, slices))) {
            pm_error_set(err, rc, "output path too long");
            goto out;
        }
        if ((rc = write_slice(path, &slice, schema, ncols, err)))
            goto out;
        slices++;
    }
    *rows_out = rows;
    *slices_out = slices;
out:
    table_batch_release(&in);
    table_batch_release(&slice);
    free(schema);
    table_reader_free(r);
    return rc;
}

/* ---- plan.json ---------------------------------------------------------------------- */

static json_t *plan_to_json(const struct download_plan *p, const json_t *config)
{
    json_t *o = json_object(), *ins = json_array(), *cols = json_array();
    if (!o || !ins || !cols) {
        json_decref(o);
        json_decref(ins);
        json_decref(cols);
        return NULL;
    }
    json_object_set_new(o, "plan_version", json_integer(PLAN_VERSION));
    json_object_set_new(o, "created", json_integer(p->created));
    json_object_set_new(o, "samples_per_shard", json_integer((json_int_t)p->samples_per_shard));
    json_object_set_new(o, "units", json_integer((json_int_t)p->nunits));
    json_object_set_new(o, "rows", json_integer((json_int_t)p->total_rows));
    for (size_t i = 0; i < p->ncolumns; i++)
        json_array_append_new(cols, json_pack("{s:s,s:s}", "name", p->columns[i].name, "type",
                                              column_type_name(p->columns[i].type)));
    json_object_set_new(o, "columns", cols);
    for (size_t i = 0; i < p->ninputs; i++) {
        const struct download_plan_input *in = &p->inputs[i];
        json_array_append_new(ins, json_pack("{s:s,s:I,s:I,s:I,s:I}", "path", in->path, "size",
                                             (json_int_t)in->size, "mtime_ns",
                                             (json_int_t)in->mtime_ns, "rows", (json_int_t)in->rows,
                                             "slices", (json_int_t)in->slices));
    }
    json_object_set_new(o, "inputs", ins);
    json_object_set(o, "config", (json_t *)config);
    return o;
}

static int type_from_name(const char *s, enum column_type *t)
{
    for (int k = COLUMN_BOOL; k <= COLUMN_STRING; k++)
        if (!strcmp(column_type_name((enum column_type)k), s)) {
            *t = (enum column_type)k;
            return PM_OK;
        }
    return PM_ERR_FORMAT;
}

/* Compare an existing plan.json with this run and load it into p. Returns PM_OK (loaded),
 * PM_ERR_USAGE (another run's plan) or PM_ERR_FORMAT. */
static int plan_from_json(struct download_plan *p, const json_t *o,
                          const struct download_plan_options *opt, const char *path,
                          struct pm_error *err)
{
    json_int_t ver = 0, created = 0, sps = 0;
    json_t *cols = NULL, *ins = NULL, *config = NULL;
    if (json_unpack((json_t *)o, "{s:I,s:I,s:I,s:o,s:o,s:o}", "plan_version", &ver, "created",
                    &created, "samples_per_shard", &sps, "columns", &cols, "inputs", &ins, "config",
                    &config) ||
        ver != PLAN_VERSION || !json_is_array(cols) || !json_is_array(ins))
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': not a plan of this version", path);
    const char *why = NULL;
    if ((uint64_t)sps != opt->samples_per_shard)
        why = "--samples-per-shard";
    else if (json_array_size(ins) != opt->ninputs)
        why = "number of inputs";
    else if (json_array_size(cols) != opt->ncolumns)
        why = "columns";
    else if (!json_equal(config, (json_t *)opt->config))
        why = "options";
    for (size_t i = 0; !why && i < opt->ncolumns; i++) {
        const char *name = json_string_value(json_object_get(json_array_get(cols, i), "name"));
        if (!name || strcmp(name, opt->columns[i]))
            why = "columns";
    }
    for (size_t i = 0; !why && i < opt->ninputs; i++) {
        json_t *e = json_array_get(ins, i);
        const char *ip = json_string_value(json_object_get(e, "path"));
        json_int_t size = json_integer_value(json_object_get(e, "size"));
        json_int_t mt = json_integer_value(json_object_get(e, "mtime_ns"));
        struct stat st;
        if (!ip || strcmp(ip, opt->inputs[i]))
            why = "input paths";
        else if (stat(ip, &st) != 0 || (json_int_t)st.st_size != size ||
                 (json_int_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec != mt)
            why = "an input file changed";
    }
    if (why)
        return pm_error_set(err, PM_ERR_USAGE,
                            "output directory '%s' belongs to another run (%s differ from "
                            "its _work/plan.json); use another --output or remove it",
                            opt->output, why);
    p->samples_per_shard = (uint64_t)sps;
    p->created = created;
    p->ncolumns = opt->ncolumns;
    p->columns = calloc(p->ncolumns ? p->ncolumns : 1, sizeof *p->columns);
    p->ninputs = opt->ninputs;
    p->inputs = calloc(p->ninputs ? p->ninputs : 1, sizeof *p->inputs);
    if (!p->columns || !p->inputs)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->ncolumns; i++) {
        const char *t = json_string_value(json_object_get(json_array_get(cols, i), "type"));
        p->columns[i].name = strdup(opt->columns[i]);
        p->columns[i].nullable = true;
        if (!p->columns[i].name)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        if (!t || type_from_name(t, &p->columns[i].type))
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': bad column type", path);
    }
    uint64_t unit = 0, rows = 0;
    for (size_t i = 0; i < p->ninputs; i++) {
        json_t *e = json_array_get(ins, i);
        struct download_plan_input *in = &p->inputs[i];
        json_t *r = json_object_get(e, "rows"), *s = json_object_get(e, "slices");
        if (!json_is_integer(r) || !json_is_integer(s) || json_integer_value(r) < 0 ||
            json_integer_value(s) < 0)
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': bad input entry %zu", path, i);
        in->path = strdup(opt->inputs[i]);
        if (!in->path)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        in->size = (uint64_t)json_integer_value(json_object_get(e, "size"));
        in->mtime_ns = json_integer_value(json_object_get(e, "mtime_ns"));
        in->rows = (uint64_t)json_integer_value(r);
        in->slices = (uint64_t)json_integer_value(s);
        if (in->slices != (in->rows + p->samples_per_shard - 1) / p->samples_per_shard)
            return pm_error_set(err, PM_ERR_FORMAT, "'%s': inconsistent input entry %zu", path, i);
        in->first_unit = unit;
        unit += in->slices;
        rows += in->rows;
    }
    p->nunits = unit;
    p->total_rows = rows;
    p->digits = shard_digits(unit);
    p->reused = 1;
    return PM_OK;
}

/* Broadcast a status from rank 0 (code only) and the message as text. */
static int bcast_status(int rc, struct pm_error *err, int rank)
{
    int buf[1] = {rc};
    MPI_CHECK(MPI_Bcast(buf, 1, MPI_INT, 0, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Bcast(err->msg, PM_ERROR_MSG_MAX, MPI_CHAR, 0, MPI_COMM_WORLD));
    if (rank != 0)
        err->code = buf[0];
    return buf[0];
}

/* Combine a status over all ranks: the largest code wins; ranks without it get a note. */
static int agree(int rc, struct pm_error *err)
{
    int all = pm_mpi_worst(rc);
    if (all && !rc)
        pm_error_set(err, all, "the input prepass failed on another rank");
    return all;
}

int download_plan_make(struct download_plan *p, const struct download_plan_options *o,
                       const struct pm_mpi *mpi, struct pm_error *err)
{
    memset(p, 0, sizeof *p);
    char dir[PATH_MAX], plan_path[PATH_MAX];
    if (path_join(dir, sizeof dir, o->output, "_work/input") ||
        path_join(plan_path, sizeof plan_path, o->output, "_work/" PLAN_FILE))
        return pm_error_set(err, PM_ERR_LIMIT, "output path too long");
    if (o->samples_per_shard == 0 || o->ncolumns == 0)
        return pm_error_set(err, PM_ERR_USAGE, "empty plan request");

    // 1. An existing plan: rank 0 decides, everyone loads the same text.
    int rc = PM_OK;
    char *text = NULL;
    long len = -1; // -1: no plan file
    if (mpi->rank == 0) {
        json_t *doc = NULL;
        rc = json_file_read(plan_path, PLAN_MAX_BYTES, &doc, err);
        if (rc == PM_ERR_NOT_FOUND) {
            rc = PM_OK;
            pm_error_clear(err);
        } else if (!rc) {
            struct download_plan tmp;
            memset(&tmp, 0, sizeof tmp);
            rc = plan_from_json(&tmp, doc, o, plan_path, err);
            download_plan_release(&tmp);
            if (!rc) {
                text = json_dumps(doc, JSON_COMPACT);
                len = text ? (long)strlen(text) : -1;
                if (!text)
                    rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            }
        }
        json_decref(doc);
    }
    if ((rc = bcast_status(rc, err, mpi->rank))) {
        free(text);
        return rc;
    }
    MPI_CHECK(MPI_Bcast(&len, 1, MPI_LONG, 0, MPI_COMM_WORLD));
    if (len >= 0) {
        if (mpi->rank != 0 && !(text = malloc((size_t)len + 1)))
            MPI_CHECK(MPI_Abort(MPI_COMM_WORLD, 1));
        MPI_CHECK(MPI_Bcast(text, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD));
        text[len] = 0;
        json_error_t je;
        json_t *doc = json_loads(text, 0, &je);
        free(text);
        rc = doc ? plan_from_json(p, doc, o, plan_path, err)
                 : pm_error_set(err, PM_ERR_NOMEM, "cannot parse the broadcast plan");
        json_decref(doc);
        if (rc)
            download_plan_release(p);
        return agree(rc, err);
    }

    // 2. The prepass.
    if (mpi->rank == 0) {
        char work[PATH_MAX];
        path_join(work, sizeof work, o->output, "_work");
        if ((mkdir(work, 0777) && errno != EEXIST) || (mkdir(dir, 0777) && errno != EEXIST))
            rc = pm_error_set(err, PM_ERR_IO, "cannot create '%s': %s", dir, strerror(errno));
    }
    if ((rc = bcast_status(rc, err, mpi->rank)))
        return rc;
    size_t n = o->ninputs, nc = o->ncolumns;
    uint64_t *counts = calloc(2 * n + 1, sizeof *counts); // rows[n], slices[n]
    int *types = calloc(n * nc + 1, sizeof *types);
    if (!counts || !types) {
        free(counts);
        free(types);
        return agree(pm_error_set(err, PM_ERR_NOMEM, "out of memory"), err);
    }
    for (size_t i = (size_t)mpi->rank; !rc && i < n; i += (size_t)mpi->size)
        rc = slice_input(o, i, &counts[i], &counts[n + i], &types[i * nc], err);
    if ((rc = agree(rc, err)))
        goto out;
    MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, counts, (int)(2 * n), MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, types, (int)(n * nc), MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    p->samples_per_shard = o->samples_per_shard;
    p->ncolumns = nc;
    p->columns = calloc(nc, sizeof *p->columns);
    p->ninputs = n;
    p->inputs = calloc(n ? n : 1, sizeof *p->inputs);
    if (!p->columns || !p->inputs) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t j = 0; j < nc; j++) {
        p->columns[j].name = strdup(o->columns[j]);
        p->columns[j].nullable = true;
        int t = 0;
        for (size_t i = 0; i < n; i++) {
            int ti = types[i * nc + j];
            if (counts[i] == 0 && n > 1)
                continue; // an empty file's inferred types do not count
            if (t && ti && ti != t) {
                rc = pm_error_set(err, PM_ERR_USAGE,
                                  "column '%s' is %s in '%s' but %s in an earlier input",
                                  o->columns[j], column_type_name((enum column_type)(ti - 1)),
                                  o->inputs[i], column_type_name((enum column_type)(t - 1)));
                break;
            }
            if (!t)
                t = ti;
        }
        p->columns[j].type = t ? (enum column_type)(t - 1) : COLUMN_STRING;
        if (!p->columns[j].name && !rc)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    uint64_t unit = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        struct download_plan_input *in = &p->inputs[i];
        struct stat st;
        in->path = strdup(o->inputs[i]);
        if (!in->path) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            break;
        }
        if (stat(in->path, &st) == 0) {
            in->size = (uint64_t)st.st_size;
            in->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        }
        in->rows = counts[i];
        in->slices = counts[n + i];
        in->first_unit = unit;
        unit += in->slices;
        p->total_rows += in->rows;
    }
    p->nunits = unit;
    p->digits = shard_digits(unit);
    int64_t now = (int64_t)time(NULL);
    MPI_CHECK(MPI_Bcast(&now, 1, MPI_INT64_T, 0, MPI_COMM_WORLD));
    p->created = now;
    if (!rc && mpi->rank == 0) {
        json_t *doc = plan_to_json(p, o->config);
        rc = doc ? json_file_write(plan_path, doc, err)
                 : pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        json_decref(doc);
    }
    rc = agree(rc, err);
out:
    free(counts);
    free(types);
    if (rc)
        download_plan_release(p);
    return rc;
}

int download_plan_read_unit(const struct download_plan *p, const char *output, uint64_t unit,
                            struct table_batch *batch, struct pm_error *err)
{
    memset(batch, 0, sizeof *batch);
    size_t input;
    uint64_t slice, rows;
    int rc = download_plan_locate(p, unit, &input, &slice, &rows);
    if (rc)
        return pm_error_set(err, PM_ERR_INTERNAL, "unit %" PRIu64 " is not in the plan", unit);
    char path[PATH_MAX];
    if (slice_path(path, sizeof path, output, input, slice))
        return pm_error_set(err, PM_ERR_LIMIT, "output path too long");
    if ((rc = table_batch_init(batch, p->columns, p->ncolumns)))
        return pm_error_set(err, rc, "out of memory");
    struct table_reader_options ro = {0};
    ro.format = "parquet";
    struct table_reader *r = NULL;
    struct table_batch tmp = TABLE_BATCH_INIT;
    if ((rc = table_reader_open(&r, path, &ro, err)))
        return rc;
    if (table_reader_num_columns(r) != p->ncolumns) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': %zu columns, the plan has %zu", path,
                          table_reader_num_columns(r), p->ncolumns);
        goto out;
    }
    for (size_t j = 0; j < p->ncolumns; j++)
        if (table_reader_column(r, j)->type != p->columns[j].type) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': column %zu has another type", path, j);
            goto out;
        }
    if ((rc = table_reader_batch_init(r, &tmp))) {
        pm_error_set(err, rc, "out of memory");
        goto out;
    }
    for (;;) {
        if ((rc = table_reader_next(r, &tmp, err)))
            goto out;
        if (tmp.nrows == 0)
            break;
        if (batch->nrows + tmp.nrows > rows) {
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': more rows than planned", path);
            goto out;
        }
        if ((rc = table_batch_append_range(batch, &tmp, 0, tmp.nrows))) {
            pm_error_set(err, rc, "'%s': cannot buffer rows", path);
            goto out;
        }
    }
    if (batch->nrows != rows)
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': %zu rows, planned %" PRIu64, path,
                          batch->nrows, rows);
out:
    table_batch_release(&tmp);
    table_reader_free(r);
    return rc;
}
