/*
 * pixelmill sheet — a contact sheet of a dataset's (or view's) samples: the rows passing
 * --where (success only, and kept by the view if one is named), either the --n with the
 * largest/smallest --sort value or a seeded random --n. The choice keeps the best n per
 * rank by (value, key order) and merges on rank 0, so it is the same for any rank count.
 * Output: HTML (thumbnails inline, captions, scores) or a PNG/JPEG grid of thumbnails.
 */
#include "commands.h"
#include "filter_expr.h"
#include "image.h"
#include "image_decode.h"
#include "image_encode.h"
#include "image_png.h"
#include "image_resize.h"
#include "meta_source.h"
#include "pm_log.h"
#include "report_html.h"
#include "view.h"

#include <errno.h>
#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <xxhash.h>

static const char usage[] =
    "usage: pixelmill sheet DATASET[:VIEW] [--where EXPR...] [--n 64] [--sort [-]COL]\n"
    "                       [--seed S] -o FILE.html|FILE.png|FILE.jpg\n"
    "\n"
    "A contact sheet of the samples passing --where (and kept by VIEW): with --sort COL\n"
    "the n smallest values (-COL: largest), otherwise n chosen at random (seeded; the same\n"
    "for any number of ranks). HTML: each thumbnail with its key, caption and score.\n"
    "PNG/JPEG: a grid of 128x128 center-cropped thumbnails in the same order (row-major).\n";

struct pick {
    double v; // sort key (smaller = better)
    double shown;
    uint64_t id; // global row id; UINT64_MAX = empty
    uint64_t unit, row;
};

static int pick_better(const struct pick *a, const struct pick *b)
{
    if (b->id == UINT64_MAX)
        return 1;
    if (a->v != b->v)
        return a->v < b->v;
    return a->id < b->id;
}

static void pick_insert(struct pick *set, size_t n, const struct pick *c)
{
    if (!n || c->id == UINT64_MAX || !pick_better(c, &set[n - 1]))
        return;
    size_t i = n - 1;
    while (i > 0 && pick_better(c, &set[i - 1])) {
        set[i] = set[i - 1];
        i--;
    }
    set[i] = *c;
}

#define THUMB 128
#define GAP 4

// Decode each item, center-crop it to THUMB x THUMB and paste it into a grid; write the
// grid as PNG or JPEG. Items without an image (or that fail to decode) stay grey.
static int write_grid(const char *path, int png, const struct sheet_item *items, size_t n,
                      struct pm_error *err)
{
    int cols = (int)ceil(sqrt((double)(n ? n : 1)));
    int rows = (int)((n + (size_t)cols - 1) / (size_t)cols);
    if (rows < 1)
        rows = 1;
    struct image grid = IMAGE_INIT, dec = IMAGE_INIT, th = IMAGE_INIT;
    struct image_ctx *ctx = image_ctx_create();
    int W = GAP + cols * (THUMB + GAP), H = GAP + rows * (THUMB + GAP);
    int rc = ctx ? image_reserve(&grid, W, H) : PM_ERR_NOMEM;
    if (rc != PM_OK) {
        image_ctx_free(ctx);
        return pm_error_set(err, PM_ERR_NOMEM, "sheet: out of memory for a %dx%d grid", W, H);
    }
    grid.width = W;
    grid.height = H;
    memset(grid.pixels, 255, (size_t)W * (size_t)H * 3);
    struct image_resize_params rp = {IMAGE_RESIZE_CENTER_CROP, THUMB, false};
    for (size_t i = 0; i < n; i++) {
        int x0 = GAP + (int)(i % (size_t)cols) * (THUMB + GAP);
        int y0 = GAP + (int)(i / (size_t)cols) * (THUMB + GAP);
        struct pm_error e2 = PM_ERROR_INIT;
        struct image_decode_opts dopt = IMAGE_DECODE_OPTS_INIT;
        dopt.resize = &rp;
        struct image_info info;
        struct image_geometry g;
        const struct image *src = NULL;
        if (items[i].img &&
            image_decode(ctx, items[i].img, items[i].img_size, &dopt, &dec, &info, &e2) == PM_OK &&
            image_geometry_compute(&rp, dec.width, dec.height, &g) == PM_OK)
            src = g.identity ? &dec : (image_resize(ctx, &dec, &g, &th, &e2) == PM_OK ? &th : NULL);
        for (int y = 0; y < THUMB; y++) {
            uint8_t *dst = grid.pixels + ((size_t)(y0 + y) * (size_t)W + (size_t)x0) * 3;
            if (!src) {
                memset(dst, 200, THUMB * 3);
                continue;
            }
            int sy = y < src->height ? y : src->height - 1;
            int w = src->width < THUMB ? src->width : THUMB;
            memcpy(dst, src->pixels + (size_t)sy * (size_t)src->width * 3, (size_t)w * 3);
        }
    }
    struct bytebuf out;
    bytebuf_init(&out, (size_t)1 << 30);
    if (png)
        rc = image_png_encode(&grid, &out, err);
    else {
        struct image_encode_opts eo = IMAGE_ENCODE_OPTS_INIT;
        eo.quality = 90;
        rc = image_encode(ctx, &grid, &eo, &out, err);
    }
    if (rc == PM_OK) {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(out.data, 1, out.len, f) != out.len)
            rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        if (f && fclose(f) != 0 && rc == PM_OK)
            rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    }
    bytebuf_release(&out);
    image_release(&grid);
    image_release(&dec);
    image_release(&th);
    image_ctx_free(ctx);
    return rc;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && !strcasecmp(s + n - m, suffix);
}

static const char *unit_shard_name(void *ctx, size_t unit, char *buf, size_t size)
{
    return meta_source_shard_name(ctx, unit, buf, size);
}

int cmd_sheet(int argc, char **argv, const struct pm_mpi *mpi)
{
    if (meta_command_help(argc, argv, usage, mpi))
        return PM_EXIT_OK;
    const char **where = calloc((size_t)argc + 1, sizeof *where);
    size_t nwhere = 0, n = 64;
    const char *target = NULL, *sort = NULL, *outpath = NULL;
    uint64_t seed = 0;
    int desc = 0, exit_status = PM_EXIT_OK;
    struct pm_error err = PM_ERROR_INIT;
    struct filter_expr *f = NULL;
    struct view *view = NULL;
    struct meta_source s;
    memset(&s, 0, sizeof s);
    struct pick *picks = NULL, *all = NULL;
    char *dataset = NULL;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(o, "--where") && has)
            where[nwhere++] = argv[++i];
        else if (!strcmp(o, "--n") && has) {
            long v = strtol(argv[++i], NULL, 10);
            if (v < 1 || v > 10000) {
                pm_log_error("sheet: --n must be 1..10000");
                exit_status = PM_EXIT_USAGE;
            }
            n = (size_t)v;
        } else if (!strcmp(o, "--sort") && has) {
            sort = argv[++i];
            if (sort[0] == '-') {
                desc = 1;
                sort++;
            }
        } else if (!strcmp(o, "--seed") && has)
            seed = strtoull(argv[++i], NULL, 10);
        else if ((!strcmp(o, "-o") || !strcmp(o, "--output")) && has)
            outpath = argv[++i];
        else if (o[0] == '-' && o[1]) {
            pm_log_error("sheet: unknown option or missing value: %s", o);
            exit_status = PM_EXIT_USAGE;
        } else if (!target)
            target = o;
        else {
            pm_log_error("sheet: one DATASET[:VIEW] only");
            exit_status = PM_EXIT_USAGE;
        }
    }
    if (exit_status == PM_EXIT_OK && (!target || !outpath)) {
        pm_log_error("sheet: DATASET[:VIEW] and -o FILE.html are required");
        exit_status = PM_EXIT_USAGE;
    }
    int as_png = outpath && ends_with(outpath, ".png");
    int as_jpg = outpath && (ends_with(outpath, ".jpg") || ends_with(outpath, ".jpeg"));
    if (exit_status == PM_EXIT_OK && !as_png && !as_jpg && !ends_with(outpath, ".html")) {
        pm_log_error("sheet: -o must name a .html, .png or .jpg file");
        exit_status = PM_EXIT_USAGE;
    }
    if (exit_status != PM_EXIT_OK) {
        if (mpi->rank == 0)
            fputs(usage, stderr);
        free(where);
        return exit_status;
    }
    // DATASET:VIEW (a directory or an S3 prefix)
    dataset = strdup(target);
    const char *vname = dataset ? view_spec_split(dataset) : NULL;
    char *paths[1] = {dataset};
    int rc = meta_source_open_with_expr(&s, paths, 1, &f, where, nwhere, &err);
    if (rc == PM_OK && !s.is_dataset)
        rc = pm_error_set(&err, PM_ERR_USAGE, "sheet: '%s' is not a dataset", dataset);
    if (rc == PM_OK && vname)
        rc = view_open_store(&view, s.store, vname, &err);
    picks = malloc(n * sizeof *picks);
    if (rc == PM_OK && !picks)
        rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; picks && i < n; i++)
        picks[i] = (struct pick){0, 0, UINT64_MAX, 0, 0};
    // Each rank scans its shards.
    size_t nf = f ? filter_expr_num_columns(f) : 0;
    const char **cols = calloc(nf + 3, sizeof *cols);
    size_t ncols = 0;
    if (cols) {
        cols[ncols++] = "status";
        if (sort && strcmp(sort, "status"))
            cols[ncols++] = sort;
        meta_columns_add_expr(cols, &ncols, f);
    }
    struct table_batch b = TABLE_BATCH_INIT;
    uint8_t *keep = NULL;
    for (size_t u = (size_t)mpi->rank; rc == PM_OK && u < s.nunits; u += (size_t)mpi->size) {
        struct view_bitmap bm = VIEW_BITMAP_INIT;
        if (view)
            rc = view_shard_keep(view, u, &bm, &err);
        struct table_reader *r = NULL;
        if (rc == PM_OK)
            rc = meta_source_unit_open(&s, u, cols, ncols, &r, &err);
        if (rc == PM_OK)
            rc = meta_reader_bind(r, f, &err);
        if (rc == PM_OK && sort && !column_type_is_numeric(table_reader_column(r, 1)->type))
            rc = pm_error_set(&err, PM_ERR_USAGE, "sheet: --sort column '%s' is not numeric", sort);
        table_batch_release(&b);
        if (rc == PM_OK && table_reader_batch_init(r, &b) != PM_OK)
            rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        uint64_t row = 0;
        while (rc == PM_OK && (rc = table_reader_next(r, &b, &err)) == PM_OK && b.nrows) {
            uint8_t *k = realloc(keep, b.nrows);
            if (!k) {
                rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
                break;
            }
            keep = k;
            filter_expr_eval(f, &b, keep, NULL);
            for (size_t i = 0; i < b.nrows; i++) {
                size_t len;
                const char *st = column_string(&b.cols[0], i, &len);
                if (!keep[i] || !b.cols[0].valid[i] || len != 7 || memcmp(st, "success", 7))
                    continue;
                if (view && (row + i >= bm.rows || !view_bitmap_get(&bm, row + i)))
                    continue;
                uint64_t id = s.units[u].row_base + row + i;
                struct pick p = {0, 0, id, u, row + i};
                if (sort) {
                    const struct column *c = &b.cols[1];
                    if (!c->valid[i])
                        continue;
                    p.shown = c->reals ? c->reals[i] : (double)c->ints[i];
                    if (p.shown != p.shown)
                        continue;
                    p.v = desc ? -p.shown : p.shown;
                } else {
                    uint64_t h[2] = {seed, id};
                    p.v = (double)(XXH3_64bits(h, sizeof h) >> 11);
                }
                pick_insert(picks, n, &p);
            }
            row += b.nrows;
        }
        table_reader_free(r);
        view_bitmap_release(&bm);
    }
    table_batch_release(&b);
    free(keep);
    free(cols);
    if (pm_mpi_worst(rc) != PM_OK) {
        if (rc != PM_OK)
            pm_log_error("%s", err.msg);
        exit_status = pm_exit_from_status(rc == PM_OK ? PM_ERR_IO : rc);
        goto out;
    }
    if (mpi->rank == 0)
        all = malloc(n * (size_t)mpi->size * sizeof *all);
    MPI_CHECK(MPI_Gather(picks, (int)(n * sizeof *picks), MPI_BYTE, all, (int)(n * sizeof *picks),
                         MPI_BYTE, 0, MPI_COMM_WORLD));
    if (mpi->rank == 0) {
        for (int r = 1; r < mpi->size; r++)
            for (size_t j = 0; j < n; j++)
                pick_insert(picks, n, &all[(size_t)r * n + j]);
        struct sheet_item *items = calloc(n, sizeof *items);
        size_t ni = 0;
        for (size_t j = 0; items && j < n; j++)
            if (picks[j].id != UINT64_MAX) {
                items[ni].shard = (size_t)picks[j].unit;
                items[ni].row = picks[j].row;
                items[ni].score = picks[j].shown;
                ni++;
            }
        rc = items ? sheet_items_fetch(items, ni, s.store, unit_shard_name, &s, &err)
                   : pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
        if (rc == PM_OK && (as_png || as_jpg)) {
            rc = write_grid(outpath, as_png, items, ni, &err);
            if (rc == PM_OK)
                printf("wrote %s: %zu samples\n", outpath, ni);
        }
        FILE *out = rc == PM_OK && !as_png && !as_jpg ? fopen(outpath, "w") : NULL;
        if (rc == PM_OK && !out && !as_png && !as_jpg)
            rc = pm_error_set(&err, PM_ERR_IO, "cannot create '%s': %s", outpath, strerror(errno));
        if (out) {
            char title[512];
            snprintf(title, sizeof title, "sheet: %s", target);
            html_begin(out, title);
            fprintf(out, "<p>%zu samples", ni);
            if (sort)
                fprintf(out, " with the %s %s", desc ? "largest" : "smallest", sort);
            else
                fprintf(out, " at random (seed %" PRIu64 ")", seed);
            for (size_t i = 0; i < filter_expr_num_clauses(f); i++) {
                const char *c = filter_expr_clause_text(f, i);
                fputs(i ? " AND <code>" : " where <code>", out);
                html_escape(out, c, strlen(c));
                fputs("</code>", out);
            }
            fputs(".</p>\n<div class=\"sheet\">\n", out);
            for (size_t j = 0; j < ni; j++) {
                char label[64];
                if (sort)
                    snprintf(label, sizeof label, "%s %.6g", sort, items[j].score);
                else
                    label[0] = 0;
                html_figure(out, &items[j], label);
            }
            fputs("</div>\n", out);
            html_end(out);
            if (fclose(out) != 0)
                rc = pm_error_set(&err, PM_ERR_IO, "cannot write '%s'", outpath);
            else
                printf("wrote %s: %zu samples\n", outpath, ni);
        }
        if (rc != PM_OK)
            pm_log_error("%s", err.msg);
        sheet_items_release(items, ni);
        free(items);
    }
    MPI_CHECK(MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD));
    exit_status = pm_exit_from_status(rc);
out:
    free(all);
    free(picks);
    view_free(view);
    filter_expr_free(f);
    meta_source_release(&s);
    free(dataset);
    free(where);
    return exit_status;
}
