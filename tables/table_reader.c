#include "table_reader.h"

#include "csv_reader.h"
#include "jsonl_reader.h"
#include "parquet_reader.h"
#include "text_stream.h"
#include "text_value.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TABLE_DEFAULT_BATCH 65536

enum table_kind { KIND_CSV, KIND_TSV, KIND_JSONL, KIND_PARQUET };

struct table_reader {
    enum table_kind kind;
    char *path;
    struct table_reader_options opt; /* columns pointer not kept (see reopen) */
    char **want;                     /* owned copy of the selected names, or NULL */
    size_t nwant;
    size_t batch_rows;
    struct csv_reader *csv;
    struct jsonl_reader *jsonl;
    struct parquet_reader *pq;
    /* parquet: selected schema, owned copies */
    struct column_info *pq_info;
    size_t pq_ncols;
    /* text: part selection */
    bool text_done;    /* text: nothing more to read (part 0 not selected) */
    bool text_started; /* text: rows were read since opening */
};

static const char *kind_name(enum table_kind k)
{
    switch (k) {
    case KIND_CSV:
        return "csv";
    case KIND_TSV:
        return "tsv";
    case KIND_JSONL:
        return "jsonl";
    case KIND_PARQUET:
        return "parquet";
    }
    return "unknown";
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && strncasecmp(s + n - m, suffix, m) == 0;
}

const char *table_format_from_name(const char *path)
{
    if (!path)
        return NULL;
    size_t n = strlen(path);
    if (ends_with(path, n, ".gz"))
        n -= 3;
    else if (ends_with(path, n, ".zst"))
        n -= 4;
    else if (ends_with(path, n, ".zstd"))
        n -= 5;
    if (ends_with(path, n, ".csv"))
        return "csv";
    if (ends_with(path, n, ".tsv"))
        return "tsv";
    if (ends_with(path, n, ".jsonl") || ends_with(path, n, ".json") ||
        ends_with(path, n, ".ndjson"))
        return "jsonl";
    if (ends_with(path, n, ".parquet"))
        return "parquet";
    return NULL;
}

static int text_open(struct table_reader *r, struct pm_error *err)
{
    struct text_stream *s;
    int rc = text_stream_open(&s, r->path, err);
    if (rc)
        return rc;
    struct table_reader_options o = r->opt;
    o.columns = (const char *const *)r->want;
    o.ncolumns = r->nwant;
    if (r->kind == KIND_JSONL)
        return jsonl_reader_open(&r->jsonl, s, &o, err);
    return csv_reader_open(&r->csv, s, r->kind == KIND_TSV ? '\t' : ',', &o, err);
}

static int parquet_open(struct table_reader *r, struct pm_error *err)
{
    int rc = parquet_reader_open(&r->pq, r->path, err);
    if (rc)
        return rc;
    size_t n = parquet_reader_num_columns(r->pq);
    size_t nsel = r->want ? r->nwant : n;
    size_t *idx = calloc(nsel > n ? nsel : (n ? n : 1), sizeof *idx);
    char **names = calloc(n ? n : 1, sizeof *names);
    if (!idx || !names) {
        free(idx);
        free(names);
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->path);
    }
    for (size_t i = 0; i < n; i++)
        names[i] = parquet_reader_column(r->pq, i)->name;
    rc = text_select_columns(r->path, names, n, (const char *const *)r->want, r->nwant, idx, &nsel,
                             err);
    free(names);
    if (rc == PM_OK) // fails at open, naming the column, if one cannot be read
        rc = parquet_reader_select_columns(r->pq, idx, nsel, err);
    if (rc == PM_OK) {
        r->pq_info = calloc(nsel ? nsel : 1, sizeof *r->pq_info);
        if (!r->pq_info)
            rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->path);
        for (size_t j = 0; rc == PM_OK && j < nsel; j++) {
            r->pq_info[j] = *parquet_reader_column(r->pq, idx[j]);
            r->pq_info[j].name = strdup(r->pq_info[j].name);
            if (!r->pq_info[j].name)
                rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->path);
            r->pq_ncols = j + 1;
        }
    }
    free(idx);
    return rc;
}

int table_reader_open(struct table_reader **out, const char *path,
                      const struct table_reader_options *opt, struct pm_error *err)
{
    *out = NULL;
    const char *fmt = opt && opt->format ? opt->format : table_format_from_name(path);
    enum table_kind kind;
    if (!fmt)
        return pm_error_set(err, PM_ERR_USAGE,
                            "'%s': cannot tell the format from the name (expected .csv, "
                            ".tsv, .jsonl, .json or .parquet, optionally .gz/.zst)",
                            path);
    if (strcmp(fmt, "csv") == 0)
        kind = KIND_CSV;
    else if (strcmp(fmt, "tsv") == 0)
        kind = KIND_TSV;
    else if (strcmp(fmt, "jsonl") == 0 || strcmp(fmt, "json") == 0)
        kind = KIND_JSONL;
    else if (strcmp(fmt, "parquet") == 0)
        kind = KIND_PARQUET;
    else
        return pm_error_set(err, PM_ERR_USAGE,
                            "'%s': unknown format '%s' (csv, tsv, jsonl or parquet)", path, fmt);
    struct table_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", path);
    }
    r->kind = kind;
    if (opt)
        r->opt = *opt;
    r->opt.columns = NULL;
    r->batch_rows = opt && opt->batch_rows ? opt->batch_rows : TABLE_DEFAULT_BATCH;
    int rc = PM_OK;
    if (opt && opt->columns) {
        r->want = calloc(opt->ncolumns ? opt->ncolumns : 1, sizeof *r->want);
        r->nwant = opt->ncolumns;
        if (!r->want)
            rc = PM_ERR_NOMEM;
        for (size_t i = 0; rc == PM_OK && i < opt->ncolumns; i++)
            if (!(r->want[i] = strdup(opt->columns[i] ? opt->columns[i] : "")))
                rc = PM_ERR_NOMEM;
        if (rc)
            pm_error_set(err, rc, "'%s': out of memory", path);
    }
    if (rc == PM_OK)
        rc = kind == KIND_PARQUET ? parquet_open(r, err) : text_open(r, err);
    if (rc) {
        table_reader_free(r);
        return rc;
    }
    *out = r;
    return PM_OK;
}

void table_reader_free(struct table_reader *r)
{
    if (!r)
        return;
    csv_reader_free(r->csv);
    jsonl_reader_free(r->jsonl);
    parquet_reader_free(r->pq);
    for (size_t i = 0; i < r->pq_ncols; i++)
        free(r->pq_info[i].name);
    free(r->pq_info);
    for (size_t i = 0; r->want && i < r->nwant; i++)
        free(r->want[i]);
    free(r->want);
    free(r->path);
    free(r);
}

const char *table_reader_format(const struct table_reader *r)
{
    return kind_name(r->kind);
}

size_t table_reader_num_columns(const struct table_reader *r)
{
    if (r->pq)
        return r->pq_ncols;
    return r->csv ? csv_reader_num_columns(r->csv) : jsonl_reader_num_columns(r->jsonl);
}

const struct column_info *table_reader_column(const struct table_reader *r, size_t i)
{
    if (r->pq)
        return i < r->pq_ncols ? &r->pq_info[i] : NULL;
    return r->csv ? csv_reader_column(r->csv, i) : jsonl_reader_column(r->jsonl, i);
}

size_t table_reader_num_parts(const struct table_reader *r)
{
    return r->pq ? parquet_reader_num_row_groups(r->pq) : 1;
}

int table_reader_select_parts(struct table_reader *r, size_t first, size_t count,
                              struct pm_error *err)
{
    size_t parts = table_reader_num_parts(r);
    if (first > parts || count > parts - first)
        return pm_error_set(err, PM_ERR_USAGE, "'%s': parts [%zu, %zu) out of range (%zu parts)",
                            r->path, first, first + count, parts);
    if (r->pq)
        return parquet_reader_set_row_groups(r->pq, first, count, err);
    if (count == 0) {
        r->text_done = true;
        return PM_OK;
    }
    r->text_done = false;
    if (!r->text_started)
        return PM_OK;
    // Rewind a text file: reopen it. The schema must come out the same.
    struct csv_reader *old_csv = r->csv;
    struct jsonl_reader *old_jsonl = r->jsonl;
    size_t n = table_reader_num_columns(r);
    enum column_type *types = calloc(n ? n : 1, sizeof *types);
    if (!types)
        return pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", r->path);
    for (size_t i = 0; i < n; i++)
        types[i] = table_reader_column(r, i)->type;
    r->csv = NULL;
    r->jsonl = NULL;
    int rc = text_open(r, err);
    if (rc == PM_OK && table_reader_num_columns(r) != n)
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': changed while reading", r->path);
    for (size_t i = 0; rc == PM_OK && i < n; i++)
        if (table_reader_column(r, i)->type != types[i])
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': changed while reading", r->path);
    free(types);
    if (rc) {
        csv_reader_free(r->csv);
        jsonl_reader_free(r->jsonl);
        r->csv = old_csv;
        r->jsonl = old_jsonl;
        return rc;
    }
    csv_reader_free(old_csv);
    jsonl_reader_free(old_jsonl);
    r->text_started = false;
    return PM_OK;
}

int table_reader_batch_init(const struct table_reader *r, struct table_batch *batch)
{
    size_t n = table_reader_num_columns(r);
    struct column_info *schema = calloc(n ? n : 1, sizeof *schema);
    if (!schema)
        return PM_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        schema[i] = *table_reader_column(r, i);
    int rc = table_batch_init(batch, schema, n);
    free(schema);
    return rc;
}

int table_reader_next(struct table_reader *r, struct table_batch *batch, struct pm_error *err)
{
    if (r->pq)
        return parquet_reader_next(r->pq, batch, r->batch_rows, err);
    if (r->text_done) {
        table_batch_clear(batch);
        return PM_OK;
    }
    r->text_started = true;
    if (r->csv)
        return csv_reader_next(r->csv, batch, r->batch_rows, err);
    return jsonl_reader_next(r->jsonl, batch, r->batch_rows, err);
}
