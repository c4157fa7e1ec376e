/*
 * pixelmill sweep — kept counts for many thresholds of one column in one pass.
 *
 * One pass over the data: per batch, the fixed --where clauses (and, on a dataset, status
 * success) give a mask; the column values of the rows passing it are compacted into a
 * per-batch array, and while they are in cache every threshold is counted over them with
 * one tight comparison loop each (vectorised by the compiler) and their min/max is taken.
 *
 * Memory does not grow with the input. The histogram's bins are fixed by --range, or else by
 * the min/max of all passing values, known only after the pass. With --range the values are
 * binned during the pass. Without, a rank keeps up to --buffer-values values (default
 * 2^18, 2 MiB) and bins them after the pass; a rank that passes more drops its buffer and
 * bins its units in a second pass (reading the swept column and the clauses' columns again)
 * once the global range is known. Either way every bin count is exact and the output is
 * that of binning every value at once. Every sum is over units dealt to ranks, so results
 * are identical for any number of ranks.
 */
#include "commands.h"
#include "filter_expr.h"
#include "meta_source.h"
#include "pm_log.h"
#include "report_html.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Up to this many thresholds, count with one loop per threshold; above, bucket by search.
#define SWEEP_LOOP_MAX 16
// Default values a rank holds for the histogram before it bins in a second pass (2 MiB).
#define SWEEP_BUFFER_VALUES ((size_t)1 << 18)

static const char usage[] =
    "usage: pixelmill sweep DATASET|INPUT... --column COL --thresholds T1,T2,...\n"
    "                       [--op '<'|'<='|'>'|'>='] [--where EXPR...] [--bins N]\n"
    "                       [--range LO,HI] [--html FILE] [--per-side N] [--json]\n"
    "                       [--buffer-values N]\n"
    "\n"
    "For each threshold T: rows passing the fixed --where clauses and `COL op T` (default\n"
    "op '<'), as a count and a fraction; a histogram of COL over the rows passing the fixed\n"
    "clauses. On a dataset only `success` rows count. --html writes one self-contained\n"
    "page: histogram and kept-fraction curve (SVG) and, for a dataset, the --per-side N\n"
    "(default 6) samples just below and just above each threshold. Without --range, each\n"
    "process holds up to --buffer-values (default 262144) values for the histogram, whose\n"
    "range is known only at the end; past that it reads its part again to bin it (memory\n"
    "stays bounded, the output is the same).\n";

enum sweep_op { OP_LT, OP_LE, OP_GT, OP_GE };
static const char *const op_text[] = {"<", "<=", ">", ">="};

struct sweep_args {
    const char **where;
    size_t nwhere;
    char **inputs;
    size_t ninputs;
    const char *column;
    const char *thresholds;
    enum sweep_op op;
    size_t bins;
    int have_range;
    double range[2];
    const char *html;
    size_t per_side;
    int json;
    size_t buffer_values;
};

struct cand {
    double v;
    uint64_t id; // global row id (dataset order); UINT64_MAX = empty slot
    uint64_t unit;
    uint64_t row;
};

struct sweep_state {
    size_t k;         // thresholds
    double *ts;       // sorted ascending
    const double *tv; // user order
    enum sweep_op op;
    uint64_t *kept;   // [k]: values v with `v op tv[t]`
    uint64_t *bucket; // [k+1] (many thresholds): values with #(t <= v) (or #(t < v)) == i
    uint64_t rows, base, col_null, col_nan;
    double vmin, negmax; // over the passing values (DBL_MAX, DBL_MAX: none yet)
    double *vals;        // held values for the histogram (at most buffer_values)
    size_t nvals, capvals, maxvals;
    int spilled;    // more than maxvals passed: the histogram needs a second pass
    int bin_now;    // histogram range known before the pass (--range): bin as we go
    uint64_t *hist; // [bins + 2]: bins, then below lo and above hi
    size_t bins;
    double lo, hi;
    struct cand *below, *above; // [k * per_side] each, best first
    size_t per_side;
};

static int parse_args(int argc, char **argv, struct sweep_args *a)
{
    a->where = calloc((size_t)argc, sizeof *a->where);
    a->inputs = calloc((size_t)argc, sizeof *a->inputs);
    a->bins = 40;
    a->per_side = 6;
    a->buffer_values = SWEEP_BUFFER_VALUES;
    if (!a->where || !a->inputs)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(o, "--where") && has)
            a->where[a->nwhere++] = argv[++i];
        else if (!strcmp(o, "--column") && has)
            a->column = argv[++i];
        else if (!strcmp(o, "--thresholds") && has)
            a->thresholds = argv[++i];
        else if (!strcmp(o, "--op") && has) {
            const char *v = argv[++i];
            int found = 0;
            for (int j = 0; j < 4; j++)
                if (!strcmp(v, op_text[j])) {
                    a->op = (enum sweep_op)j;
                    found = 1;
                }
            if (!found) {
                pm_log_error("sweep: --op must be one of < <= > >=");
                return -1;
            }
        } else if (!strcmp(o, "--bins") && has) {
            long b = strtol(argv[++i], NULL, 10);
            if (b < 1 || b > 10000) {
                pm_log_error("sweep: --bins must be 1..10000");
                return -1;
            }
            a->bins = (size_t)b;
        } else if (!strcmp(o, "--per-side") && has) {
            long b = strtol(argv[++i], NULL, 10);
            if (b < 0 || b > 100) {
                pm_log_error("sweep: --per-side must be 0..100");
                return -1;
            }
            a->per_side = (size_t)b;
        } else if (!strcmp(o, "--buffer-values") && has) {
            char *end;
            errno = 0;
            unsigned long long b = strtoull(argv[++i], &end, 10);
            if (*end || errno || b > ((size_t)1 << 30)) {
                pm_log_error("sweep: --buffer-values must be 0..%zu", (size_t)1 << 30);
                return -1;
            }
            a->buffer_values = (size_t)b;
        } else if (!strcmp(o, "--range") && has) {
            char *end;
            const char *v = argv[++i];
            a->range[0] = strtod(v, &end);
            if (*end != ',' || (a->range[1] = strtod(end + 1, &end), *end) ||
                !(a->range[0] < a->range[1])) {
                pm_log_error("sweep: --range must be LO,HI with LO < HI");
                return -1;
            }
            a->have_range = 1;
        } else if (!strcmp(o, "--html") && has)
            a->html = argv[++i];
        else if (!strcmp(o, "--json"))
            a->json = 1;
        else if (o[0] == '-' && o[1]) {
            pm_log_error("sweep: unknown option or missing value: %s", o);
            return -1;
        } else
            a->inputs[a->ninputs++] = argv[i];
    }
    if (!a->ninputs || !a->column || !a->thresholds) {
        pm_log_error("sweep: DATASET|INPUT, --column and --thresholds are required");
        return -1;
    }
    return 0;
}

// Parse "T1,T2,..." into user order (texts kept for display).
static int parse_thresholds(const char *s, double **out, char ***texts, size_t *n)
{
    *out = NULL;
    *texts = NULL;
    *n = 0;
    char *copy = strdup(s), *save = NULL;
    if (!copy)
        return -1;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        char *end;
        errno = 0;
        double v = strtod(t, &end);
        while (*end == ' ')
            end++;
        if (end == t || *end || isnan(v)) {
            pm_log_error("sweep: threshold '%s' is not a number", t);
            free(copy);
            return -1;
        }
        double *d = realloc(*out, (*n + 1) * sizeof *d);
        char **x = realloc(*texts, (*n + 1) * sizeof *x);
        if (d)
            *out = d;
        if (x)
            *texts = x;
        if (!d || !x) {
            free(copy);
            return -1;
        }
        d[*n] = v;
        x[*n] = strdup(t);
        (*n)++;
    }
    free(copy);
    return *n ? 0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Candidate order: "better" first. below: larger v, then lower id; above: smaller v, lower id.
static int cand_better(const struct cand *a, const struct cand *b, int above)
{
    if (b->id == UINT64_MAX)
        return 1;
    if (a->v != b->v)
        return above ? a->v < b->v : a->v > b->v;
    return a->id < b->id;
}

static void cand_insert(struct cand *set, size_t n, const struct cand *c, int above)
{
    if (!n || c->id == UINT64_MAX || !cand_better(c, &set[n - 1], above))
        return;
    size_t i = n - 1;
    while (i > 0 && cand_better(c, &set[i - 1], above)) {
        set[i] = set[i - 1];
        i--;
    }
    set[i] = *c;
}

// Count values outside [lo, hi] apart; bin the others into bins equal-width bins.
static void hist_add(uint64_t *hist, size_t bins, double lo, double hi, const double *v, size_t m)
{
    double span = hi - lo;
    for (size_t i = 0; i < m; i++) {
        double x = v[i];
        if (x < lo || x > hi) {
            hist[bins + (x > hi)]++; // outside the range: counted apart
            continue;
        }
        size_t bin = span > 0 ? (size_t)((x - lo) / span * (double)bins) : 0;
        hist[bin < bins ? bin : bins - 1]++;
    }
}

// Hold a batch's passing values for the histogram, up to st->maxvals in all; past that,
// drop them all (the histogram is then binned in a second pass).
static int hold_values(struct sweep_state *st, const double *v, size_t m)
{
    if (st->spilled || m == 0)
        return PM_OK;
    if (st->nvals + m > st->maxvals) {
        st->spilled = 1;
        free(st->vals);
        st->vals = NULL;
        st->nvals = st->capvals = 0;
        return PM_OK;
    }
    if (st->nvals + m > st->capvals) {
        size_t cap = st->capvals ? st->capvals : 65536;
        while (cap < st->nvals + m)
            cap *= 2;
        cap = cap < st->maxvals ? cap : st->maxvals;
        double *x = realloc(st->vals, cap * sizeof *x);
        if (!x)
            return PM_ERR_NOMEM;
        st->vals = x;
        st->capvals = cap;
    }
    memcpy(st->vals + st->nvals, v, m * sizeof *v);
    st->nvals += m;
    return PM_OK;
}

// One pass over this rank's units. hist_pass 0: counts, thresholds, min/max, candidates and
// the histogram (binned or held); hist_pass 1: only bin the passing values into st->hist
// (st->lo, st->hi known).
static int sweep_units(const struct sweep_args *a, struct filter_expr *f,
                       const struct meta_source *s, const struct pm_mpi *mpi,
                       struct sweep_state *st, int want_cands, int hist_pass, struct pm_error *err)
{
    size_t nf = filter_expr_num_columns(f);
    const char **cols = calloc(nf + 2, sizeof *cols);
    if (!cols)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    size_t ncols = 0;
    cols[ncols++] = a->column;
    if (s->is_dataset && strcmp(a->column, "status") != 0)
        cols[ncols++] = "status";
    meta_columns_add_expr(cols, &ncols, f);
    struct table_batch b = TABLE_BATCH_INIT;
    uint8_t *keep = NULL;
    double *vals = NULL; // this batch's passing values
    size_t keepcap = 0;
    int rc = PM_OK;
    int have_clauses = filter_expr_num_clauses(f) > 0;
    if (hist_pass)
        want_cands = 0;
    for (size_t u = (size_t)mpi->rank; u < s->nunits && rc == PM_OK; u += (size_t)mpi->size) {
        struct table_reader *r = NULL;
        rc = meta_source_unit_open(s, u, cols, ncols, &r, err);
        if (rc != PM_OK)
            break;
        rc = meta_reader_bind(r, f, err);
        enum column_type t0 = table_reader_column(r, 0)->type;
        if (rc == PM_OK && !column_type_is_numeric(t0))
            rc = pm_error_set(err, PM_ERR_USAGE, "sweep: column '%s' of '%s' is %s, not a number",
                              a->column, s->files[s->units[u].file], column_type_name(t0));
        int status_col = s->is_dataset ? (strcmp(a->column, "status") ? 1 : 0) : -1;
        if (rc == PM_OK && status_col >= 0 &&
            table_reader_column(r, (size_t)status_col)->type != COLUMN_STRING)
            rc = pm_error_set(err, PM_ERR_FORMAT, "sidecar '%s': status is not a string",
                              s->files[u]);
        table_batch_release(&b);
        if (rc == PM_OK && table_reader_batch_init(r, &b) != PM_OK)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        uint64_t row = 0;
        while (rc == PM_OK) {
            rc = table_reader_next(r, &b, err);
            if (rc != PM_OK || b.nrows == 0)
                break;
            if (b.nrows > keepcap) {
                uint8_t *k = realloc(keep, b.nrows);
                if (k)
                    keep = k;
                double *v = realloc(vals, b.nrows * sizeof *v);
                if (v)
                    vals = v;
                if (!k || !v) {
                    rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                    break;
                }
                keepcap = b.nrows;
            }
            if (have_clauses)
                filter_expr_eval(f, &b, keep, NULL);
            else
                memset(keep, 1, b.nrows);
            size_t nr = b.nrows;
            uint64_t ok = nr;
            if (status_col >= 0) {
                const struct column *sc = &b.cols[status_col];
                ok = 0;
                for (size_t i = 0; i < nr; i++) {
                    size_t len;
                    const char *v = column_string(sc, i, &len);
                    int succ = sc->valid[i] && len == 7 && !memcmp(v, "success", 7);
                    ok += (uint64_t)succ;
                    keep[i] &= (uint8_t)succ;
                }
            }
            const struct column *c = &b.cols[0];
            const double *reals = c->reals;
            const int64_t *ints = c->ints;
            const uint8_t *valid = c->valid;
            size_t m = 0;
            uint64_t base = 0, nul = 0, nan = 0;
            if (!want_cands) {
                // Branch-free compaction: write every value, advance only past the kept.
                for (size_t i = 0; i < nr; i++) {
                    double v = reals ? reals[i] : (double)ints[i];
                    unsigned k1 = keep[i] != 0, vok = k1 & (valid[i] != 0), num = v == v;
                    vals[m] = v;
                    m += vok & num;
                    base += k1;
                    nul += k1 & !vok;
                    nan += vok & !num;
                }
            } else {
                for (size_t i = 0; i < nr; i++) {
                    if (!keep[i])
                        continue;
                    base++;
                    if (!valid[i]) {
                        nul++;
                        continue;
                    }
                    double v = reals ? reals[i] : (double)ints[i];
                    if (v != v) {
                        nan++;
                        continue;
                    }
                    vals[m++] = v;
                    struct cand cd = {v, s->units[u].row_base + row + i, u, row + i};
                    for (size_t t = 0; t < st->k; t++)
                        cand_insert((v < st->ts[t] ? st->below : st->above) + t * st->per_side,
                                    st->per_side, &cd, v >= st->ts[t]);
                }
            }
            row += nr;
            if (hist_pass) {
                hist_add(st->hist, st->bins, st->lo, st->hi, vals, m);
                continue;
            }
            // All thresholds over this batch's values, while they are in cache. Few
            // thresholds: one tight (vectorisable) counting loop each. Many: each value is
            // placed among the sorted thresholds by binary search (bucket counts, summed
            // into per-threshold counts after the pass).
            const double *bv = vals;
            if (st->k > SWEEP_LOOP_MAX) {
                int le = st->op == OP_LT || st->op == OP_GE; // bucket by #(t <= v)
                for (size_t i = 0; i < m; i++) {
                    size_t lo = 0, hi = st->k;
                    while (lo < hi) {
                        size_t mid = (lo + hi) / 2;
                        if (le ? st->ts[mid] <= bv[i] : st->ts[mid] < bv[i])
                            lo = mid + 1;
                        else
                            hi = mid;
                    }
                    st->bucket[lo]++;
                }
            } else {
                for (size_t t = 0; t < st->k; t++) {
                    const double th = st->tv[t];
                    uint64_t cnt = 0;
                    switch (st->op) {
                    case OP_LT:
                        for (size_t i = 0; i < m; i++)
                            cnt += bv[i] < th;
                        break;
                    case OP_LE:
                        for (size_t i = 0; i < m; i++)
                            cnt += bv[i] <= th;
                        break;
                    case OP_GT:
                        for (size_t i = 0; i < m; i++)
                            cnt += bv[i] > th;
                        break;
                    case OP_GE:
                        for (size_t i = 0; i < m; i++)
                            cnt += bv[i] >= th;
                        break;
                    }
                    st->kept[t] += cnt;
                }
            }
            double vmin = st->vmin, negmax = st->negmax;
            for (size_t i = 0; i < m; i++) {
                vmin = bv[i] < vmin ? bv[i] : vmin;
                negmax = -bv[i] < negmax ? -bv[i] : negmax;
            }
            st->vmin = vmin;
            st->negmax = negmax;
            if (st->bin_now)
                hist_add(st->hist, st->bins, st->lo, st->hi, bv, m);
            else if (hold_values(st, bv, m) != PM_OK)
                rc = pm_error_set(err, PM_ERR_NOMEM, "sweep: out of memory for %zu values",
                                  st->maxvals);
            st->rows += ok;
            st->base += base;
            st->col_null += nul;
            st->col_nan += nan;
        }
        table_reader_free(r);
    }
    table_batch_release(&b);
    free(keep);
    free(vals);
    free(cols);
    return rc;
}

static const char *unit_shard_name(void *ctx, size_t unit, char *buf, size_t size)
{
    return meta_source_shard_name(ctx, unit, buf, size);
}

// ---- the report -------------------------------------------------------------------------

static void svg_histogram(FILE *out, const uint64_t *hist, size_t bins, double lo, double hi,
                          const double *ts, char **tt, size_t k, const char *col)
{
    const double W = 720, H = 260, L = 60, R = 20, T = 20, B = 40;
    uint64_t mx = 1;
    for (size_t i = 0; i < bins; i++)
        mx = hist[i] > mx ? hist[i] : mx;
    fprintf(out,
            "<svg class=\"chart\" id=\"histogram\" xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
            W, H, W, H);
    double pw = W - L - R, ph = H - T - B;
    for (size_t i = 0; i < bins; i++) {
        double h = ph * (double)hist[i] / (double)mx;
        fprintf(out,
                "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#4a7ab5\">"
                "<title>%" PRIu64 "</title></rect>\n",
                L + pw * (double)i / (double)bins, T + ph - h, pw / (double)bins * 0.95, h,
                hist[i]);
    }
    double span = hi > lo ? hi - lo : 1;
    for (size_t t = 0; t < k; t++) {
        if (ts[t] < lo || ts[t] > hi)
            continue;
        double x = L + pw * (ts[t] - lo) / span;
        fprintf(out,
                "<line x1=\"%.2f\" y1=\"%.0f\" x2=\"%.2f\" y2=\"%.0f\" stroke=\"#d33\" "
                "stroke-dasharray=\"4 3\"/><text x=\"%.2f\" y=\"%.0f\" font-size=\"10\" "
                "fill=\"#d33\" text-anchor=\"middle\">",
                x, T, x, T + ph, x, T - 6);
        html_escape(out, tt[t], strlen(tt[t]));
        fputs("</text>\n", out);
    }
    fprintf(out, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#333\"/>\n", L,
            T + ph, L + pw, T + ph);
    fprintf(out,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">%.6g</text>"
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\">%.6g</text>\n",
            L, H - B + 16, lo, L + pw, H - B + 16, hi);
    fprintf(out, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">", L + pw / 2,
            H - 6);
    html_escape(out, col, strlen(col));
    fprintf(out, "</text><text x=\"4\" y=\"%.0f\" font-size=\"11\">%" PRIu64 "</text>\n</svg>\n",
            T + 10, mx);
}

static void svg_curve(FILE *out, const double *tv, char **tt, const double *frac, size_t k,
                      const char *col, const char *op)
{
    const double W = 720, H = 260, L = 60, R = 20, T = 20, B = 40;
    double pw = W - L - R, ph = H - T - B;
    double lo = tv[0], hi = tv[0];
    for (size_t i = 1; i < k; i++) {
        lo = tv[i] < lo ? tv[i] : lo;
        hi = tv[i] > hi ? tv[i] : hi;
    }
    double span = hi > lo ? hi - lo : 1;
    fprintf(out,
            "<svg class=\"chart\" id=\"curve\" xmlns=\"http://www.w3.org/2000/svg\" "
            "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n",
            W, H, W, H);
    for (int g = 0; g <= 4; g++) {
        double y = T + ph * (1 - g / 4.0);
        fprintf(out,
                "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"%.0f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%d%%</text>\n",
                L, y, L + pw, y, L - 4, y + 3, g * 25);
    }
    // thresholds in ascending order for the polyline
    size_t *ord = malloc(k * sizeof *ord);
    for (size_t i = 0; ord && i < k; i++)
        ord[i] = i;
    for (size_t i = 1; ord && i < k; i++)
        for (size_t j = i; j > 0 && tv[ord[j]] < tv[ord[j - 1]]; j--) {
            size_t x = ord[j];
            ord[j] = ord[j - 1];
            ord[j - 1] = x;
        }
    fputs("<polyline fill=\"none\" stroke=\"#d33\" stroke-width=\"2\" points=\"", out);
    for (size_t i = 0; ord && i < k; i++) {
        size_t t = ord[i];
        fprintf(out, "%.2f,%.2f ", L + pw * (tv[t] - lo) / span, T + ph * (1 - frac[t]));
    }
    fputs("\"/>\n", out);
    for (size_t t = 0; t < k; t++) {
        double x = L + pw * (tv[t] - lo) / span, y = T + ph * (1 - frac[t]);
        fprintf(out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"4\" fill=\"#d33\"><title>", x, y);
        html_escape(out, tt[t], strlen(tt[t]));
        fprintf(out, ": %.4f%%</title></circle>\n", 100 * frac[t]);
    }
    fprintf(out,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\" text-anchor=\"middle\">kept fraction "
            "vs threshold (",
            L + pw / 2, H - 6);
    html_escape(out, col, strlen(col));
    fprintf(out, " %s T)</text>\n", op);
    fprintf(out,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">%.6g</text>"
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"end\">%.6g</text>\n",
            L, H - B + 16, lo, L + pw, H - B + 16, hi);
    fputs("</svg>\n", out);
    free(ord);
}

int cmd_sweep(int argc, char **argv, const struct pm_mpi *mpi)
{
    if (meta_command_help(argc, argv, usage, mpi))
        return PM_EXIT_OK;
    struct sweep_args a = {0};
    struct pm_error err = PM_ERROR_INIT;
    struct filter_expr *f = NULL;
    struct meta_source s;
    memset(&s, 0, sizeof s);
    struct sweep_state st;
    memset(&st, 0, sizeof st);
    double *tv = NULL; // user order
    char **tt = NULL;
    size_t k = 0;
    uint64_t *v = NULL, *w = NULL; // counts: this rank's, all ranks'
    int exit_status = PM_EXIT_OK;
    if (parse_args(argc, argv, &a) != 0 || parse_thresholds(a.thresholds, &tv, &tt, &k) != 0) {
        if (mpi->rank == 0)
            fputs(usage, stderr);
        exit_status = PM_EXIT_USAGE;
        goto out;
    }
    int rc = meta_source_open_with_expr(&s, a.inputs, a.ninputs, &f, a.where, a.nwhere, &err);
    if (rc != PM_OK) {
        if (mpi->rank == 0)
            pm_log_error("%s", err.msg);
        exit_status = pm_exit_from_status(rc);
        goto out;
    }
    int want_cands = a.html && s.is_dataset && a.per_side > 0;
    st.k = k;
    st.per_side = want_cands ? a.per_side : 0;
    st.ts = malloc(k * sizeof *st.ts);
    st.kept = calloc(k + 1, sizeof *st.kept);
    st.bucket = calloc(k + 1, sizeof *st.bucket);
    st.tv = tv;
    st.op = a.op;
    st.below = malloc((k * st.per_side + 1) * sizeof *st.below);
    st.above = malloc((k * st.per_side + 1) * sizeof *st.above);
    st.vmin = st.negmax = DBL_MAX;
    st.maxvals = a.buffer_values;
    st.bins = a.bins;
    st.hist = calloc(a.bins + 2, sizeof *st.hist);
    if (a.have_range) {
        st.bin_now = 1;
        st.lo = a.range[0];
        st.hi = a.range[1];
    }
    if (!st.ts || !st.kept || !st.bucket || !st.below || !st.above || !st.hist) {
        pm_log_error("out of memory");
        exit_status = PM_EXIT_FAILED;
        goto out;
    }
    memcpy(st.ts, tv, k * sizeof *tv);
    qsort(st.ts, k, sizeof *st.ts, cmp_double);
    for (size_t i = 0; i < k * st.per_side; i++)
        st.below[i] = st.above[i] = (struct cand){0, UINT64_MAX, 0, 0};
    rc = sweep_units(&a, f, &s, mpi, &st, want_cands, 0, &err);
    if (k > SWEEP_LOOP_MAX) {
        // bucket i holds values v with #(t <= v) == i (ops < and >=) or #(t < v) == i
        // (<= and >). v < t_j  <=>  #(t <= v) <= j', j' = index of the first threshold
        // equal to t_j; likewise for <=. > and >= are the complements of <= and <.
        uint64_t total = 0;
        for (size_t i = 0; i <= k; i++)
            total += st.bucket[i];
        for (size_t t = 0; t < k; t++) {
            size_t j = 0;
            while (j < k && st.ts[j] < tv[t])
                j++; // first sorted index equal to tv[t]
            if (a.op == OP_LE || a.op == OP_GT)
                while (j + 1 < k && st.ts[j + 1] == tv[t])
                    j++; // last equal index
            uint64_t below = 0;
            for (size_t i = 0; i <= j; i++)
                below += st.bucket[i];
            st.kept[t] = a.op == OP_LT || a.op == OP_LE ? below : total - below;
        }
    }
    if (pm_mpi_worst(rc) != PM_OK) {
        if (rc != PM_OK)
            pm_log_error("%s", err.msg);
        exit_status = pm_exit_from_status(rc == PM_OK ? META_RC_ELSEWHERE : rc);
        goto out;
    }
    // Reduce counts.
    size_t nc = 4 + k;
    v = calloc(nc, sizeof *v);
    w = calloc(nc, sizeof *w);
    v[0] = st.rows, v[1] = st.base, v[2] = st.col_null, v[3] = st.col_nan;
    memcpy(v + 4, st.kept, k * sizeof *v);
    MPI_CHECK(MPI_Allreduce(v, w, (int)nc, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD));
    // Histogram range: --range, or the min/max of every passing value.
    double mm[2] = {st.vmin, st.negmax}, gmm[2];
    MPI_CHECK(MPI_Allreduce(mm, gmm, 2, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD));
    if (gmm[0] > -gmm[1]) // no values anywhere
        gmm[0] = 0, gmm[1] = -0.0;
    double lo = a.have_range ? a.range[0] : gmm[0], hi = a.have_range ? a.range[1] : -gmm[1];
    if (!st.bin_now) {
        st.lo = lo;
        st.hi = hi;
        if (!st.spilled) {
            hist_add(st.hist, st.bins, lo, hi, st.vals, st.nvals);
        } else {
            // This rank passed more values than it holds: bin them in a second pass.
            rc = sweep_units(&a, f, &s, mpi, &st, 0, 1, &err);
        }
        if (pm_mpi_worst(rc) != PM_OK) {
            if (rc != PM_OK)
                pm_log_error("%s", err.msg);
            exit_status = pm_exit_from_status(rc == PM_OK ? META_RC_ELSEWHERE : rc);
            goto out;
        }
    }
    uint64_t *ghist = calloc(a.bins + 2, sizeof *ghist);
    MPI_CHECK(
        MPI_Reduce(st.hist, ghist, (int)(a.bins + 2), MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
    // Contact-sheet candidates: gather every rank's best to rank 0.
    size_t ncand = k * st.per_side;
    struct cand *allb = NULL, *alla = NULL;
    if (want_cands) {
        size_t tot = ncand * (size_t)mpi->size;
        if (mpi->rank == 0) {
            allb = malloc(tot * sizeof *allb);
            alla = malloc(tot * sizeof *alla);
        }
        MPI_CHECK(MPI_Gather(st.below, (int)(ncand * sizeof *st.below), MPI_BYTE, allb,
                             (int)(ncand * sizeof *st.below), MPI_BYTE, 0, MPI_COMM_WORLD));
        MPI_CHECK(MPI_Gather(st.above, (int)(ncand * sizeof *st.above), MPI_BYTE, alla,
                             (int)(ncand * sizeof *st.above), MPI_BYTE, 0, MPI_COMM_WORLD));
        if (mpi->rank == 0)
            for (int r = 1; r < mpi->size; r++)
                for (size_t t = 0; t < k; t++)
                    for (size_t j = 0; j < st.per_side; j++) {
                        cand_insert(st.below + t * st.per_side, st.per_side,
                                    &allb[(size_t)r * ncand + t * st.per_side + j], 0);
                        cand_insert(st.above + t * st.per_side, st.per_side,
                                    &alla[(size_t)r * ncand + t * st.per_side + j], 1);
                    }
    }
    if (mpi->rank == 0) {
        uint64_t rows = w[0], base = w[1], nul = w[2], nan = w[3];
        uint64_t *kept = calloc(k, sizeof *kept);
        double *frac = calloc(k, sizeof *frac);
        for (size_t t = 0; t < k; t++) {
            kept[t] = w[4 + t];
            frac[t] = rows ? (double)kept[t] / (double)rows : 0;
        }
        if (a.json) {
            json_t *doc = json_object(), *wh = json_array(), *th = json_array();
            json_object_set_new(doc, "column", json_string(a.column));
            json_object_set_new(doc, "op", json_string(op_text[a.op]));
            for (size_t i = 0; i < filter_expr_num_clauses(f); i++)
                json_array_append_new(wh, json_string(filter_expr_clause_text(f, i)));
            json_object_set_new(doc, "where", wh);
            json_object_set_new(doc, "rows", json_integer((json_int_t)rows));
            json_object_set_new(doc, "base", json_integer((json_int_t)base));
            json_object_set_new(doc, "column_null", json_integer((json_int_t)nul));
            json_object_set_new(doc, "column_nan", json_integer((json_int_t)nan));
            for (size_t t = 0; t < k; t++) {
                json_t *x = json_object();
                json_object_set_new(x, "threshold", json_real(tv[t]));
                json_object_set_new(x, "text", json_string(tt[t]));
                json_object_set_new(x, "kept", json_integer((json_int_t)kept[t]));
                json_object_set_new(x, "fraction", json_real(frac[t]));
                json_array_append_new(th, x);
            }
            json_object_set_new(doc, "thresholds", th);
            json_t *h = json_object(), *hc = json_array();
            json_object_set_new(h, "lo", json_real(lo));
            json_object_set_new(h, "hi", json_real(hi));
            json_object_set_new(h, "below", json_integer((json_int_t)ghist[a.bins]));
            json_object_set_new(h, "above", json_integer((json_int_t)ghist[a.bins + 1]));
            for (size_t i = 0; i < a.bins; i++)
                json_array_append_new(hc, json_integer((json_int_t)ghist[i]));
            json_object_set_new(h, "counts", hc);
            json_object_set_new(doc, "histogram", h);
            char *txt =
                json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
            if (txt)
                puts(txt);
            free(txt);
            json_decref(doc);
        } else {
            printf("sweep %s %s T", a.column, op_text[a.op]);
            for (size_t i = 0; i < filter_expr_num_clauses(f); i++)
                printf("%s%s", i ? " AND " : "  with fixed: ", filter_expr_clause_text(f, i));
            printf("\n%-28s %14" PRIu64 "\n%-28s %14" PRIu64 "\n%-28s %14" PRIu64 "\n\n",
                   s.is_dataset ? "rows (success)" : "rows", rows, "passing fixed clauses", base,
                   "of which column null/NaN", nul + nan);
            printf("%-16s %14s %12s %16s\n", "threshold", "kept", "% of rows", "% of fixed-kept");
            for (size_t t = 0; t < k; t++)
                printf("%-16s %14" PRIu64 " %11.4f%% %15.4f%%\n", tt[t], kept[t], 100 * frac[t],
                       base ? 100.0 * (double)kept[t] / (double)base : 0.0);
        }
        if (a.html) {
            FILE *out = fopen(a.html, "w");
            if (!out) {
                pm_log_error("cannot create '%s': %s", a.html, strerror(errno));
                rc = PM_ERR_IO;
            } else {
                char title[512];
                snprintf(title, sizeof title, "sweep: %s %s T", a.column, op_text[a.op]);
                html_begin(out, title);
                fputs("<p>Fixed clauses: ", out);
                for (size_t i = 0; i < filter_expr_num_clauses(f); i++) {
                    const char *c = filter_expr_clause_text(f, i);
                    fputs(i ? " AND <code>" : "<code>", out);
                    html_escape(out, c, strlen(c));
                    fputs("</code>", out);
                }
                fprintf(out,
                        "%s. Rows%s: %" PRIu64 "; passing the fixed clauses: %" PRIu64
                        "; of which %s is null or NaN: %" PRIu64 ".</p>\n",
                        filter_expr_num_clauses(f) ? "" : "none", s.is_dataset ? " (success)" : "",
                        rows, base, a.column, nul + nan);
                fputs("<table id=\"sweep\"><tr><th>threshold</th><th>kept</th><th>% of rows</th>"
                      "<th>% of fixed-kept</th></tr>\n",
                      out);
                for (size_t t = 0; t < k; t++) {
                    fputs("<tr><td>", out);
                    html_escape(out, tt[t], strlen(tt[t]));
                    fprintf(out, "</td><td>%" PRIu64 "</td><td>%.4f</td><td>%.4f</td></tr>\n",
                            kept[t], 100 * frac[t],
                            base ? 100.0 * (double)kept[t] / (double)base : 0.0);
                }
                fputs("</table>\n<h2>Histogram</h2>\n", out);
                svg_histogram(out, ghist, a.bins, lo, hi, tv, tt, k, a.column);
                // thresholds marked: pass the sorted values with matching texts
                fputs("<h2>Kept fraction</h2>\n", out);
                svg_curve(out, tv, tt, frac, k, a.column, op_text[a.op]);
                if (want_cands) {
                    struct sheet_item *items = calloc(2 * ncand + 1, sizeof *items);
                    size_t ni = 0;
                    for (size_t i = 0; i < 2 * ncand; i++) {
                        const struct cand *c = i < ncand ? &st.below[i] : &st.above[i - ncand];
                        if (c->id == UINT64_MAX)
                            continue;
                        items[ni].shard = (size_t)c->unit;
                        items[ni].row = c->row;
                        items[ni].score = c->v;
                        ni++;
                    }
                    // Items follow the candidate arrays' order: below[t][*], then above[t][*].
                    rc = sheet_items_fetch(items, ni, s.store, unit_shard_name, &s, &err);
                    if (rc != PM_OK)
                        pm_log_error("%s", err.msg);
                    fputs("<h2>Contact sheets</h2>\n", out);
                    size_t idx = 0;
                    for (size_t t = 0; t < k; t++)
                        for (int side = 0; side < 2; side++) {
                            // find this threshold's items: sorted thresholds index t
                            if (side == 0) {
                                fputs("<section class=\"threshold\"><h3>", out);
                                html_escape(out, a.column, strlen(a.column));
                                fprintf(out, " = %.6g</h3>\n", st.ts[t]);
                            }
                            fprintf(out, "<div class=\"side %s\"><b>just %s</b> (%s %s %.6g)<br>\n",
                                    side ? "above" : "below", side ? "above" : "below", a.column,
                                    side ? ">=" : "<", st.ts[t]);
                            const struct cand *set = (side ? st.above : st.below) + t * st.per_side;
                            for (size_t j = 0; j < st.per_side; j++) {
                                if (set[j].id == UINT64_MAX)
                                    continue;
                                size_t m = 0;
                                for (m = 0; m < ni; m++)
                                    if (items[m].shard == set[j].unit && items[m].row == set[j].row)
                                        break;
                                char label[64];
                                snprintf(label, sizeof label, "%.9g", set[j].v);
                                if (m < ni)
                                    html_figure(out, &items[m], label);
                                idx++;
                            }
                            fputs("</div>\n", out);
                            if (side == 1)
                                fputs("</section>\n", out);
                        }
                    sheet_items_release(items, ni);
                    free(items);
                }
                html_end(out);
                if (fclose(out) != 0) {
                    pm_log_error("cannot write '%s'", a.html);
                    rc = PM_ERR_IO;
                }
            }
        }
        free(kept);
        free(frac);
    }
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
    exit_status = pm_exit_from_status(rc);
    free(ghist);
    free(allb);
    free(alla);
out:
    filter_expr_free(f);
    meta_source_release(&s);
    for (size_t i = 0; i < k; i++)
        free(tt[i]);
    free(tt);
    free(tv);
    free(st.ts);
    free(st.kept);
    free(st.bucket);
    free(st.vals);
    free(st.hist);
    free(v);
    free(w);
    free(st.below);
    free(st.above);
    free(a.where);
    free(a.inputs);
    return exit_status;
}
