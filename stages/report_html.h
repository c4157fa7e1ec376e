/**
 * report_html — pieces of the self-contained HTML reports of `sweep` and `sheet`: text
 * escaping, base64, and fetching chosen samples (image bytes + caption) from shard tars.
 * Output goes to a FILE*; no external resources are referenced (images are inline
 * data: URIs), so a report can be mailed or opened offline.
 */
#ifndef PM_REPORT_HTML_H
#define PM_REPORT_HTML_H

#include "pm_error.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/** Write s (n bytes) HTML-escaped (& < > " ') to out. */
void html_escape(FILE *out, const char *s, size_t n);

/** Write the base64 encoding of n bytes to out. */
void html_base64(FILE *out, const unsigned char *data, size_t n);

/** A sample to show: which shard row it is, and what was fetched for it. */
struct sheet_item {
    size_t shard;       /* dataset unit (shard index in dataset.json order) */
    uint64_t row;       /* row within the shard (= in-shard part of the key) */
    double score;       /* the value shown under the image */
    unsigned char *img; /* image bytes as stored in the tar (owned), NULL if not found */
    size_t img_size;
    char mime[16]; /* "image/jpeg", "image/webp", "image/png" */
    char *caption; /* owned, NUL-terminated; NULL if none */
    char key[32];
};

/**
 * Fill img/caption/key of each item from the tars of the dataset in `store` (a directory
 * or an S3 prefix; shard names from `shard_name(shard)`), reading each needed shard once.
 * Items whose sample is not in the tar keep img NULL. Returns PM_OK or the tar reader's
 * error.
 */
int sheet_items_fetch(struct sheet_item *items, size_t n, struct store *store,
                      const char *(*shard_name)(void *ctx, size_t shard, char *buf, size_t size),
                      void *ctx, struct pm_error *err);

/** Free what sheet_items_fetch allocated. */
void sheet_items_release(struct sheet_item *items, size_t n);

/** Write one thumbnail figure (image, score label, caption) as HTML. */
void html_figure(FILE *out, const struct sheet_item *it, const char *score_label);

/** The shared <head> with inline CSS, and <body> opening with an <h1>. */
void html_begin(FILE *out, const char *title);

/** Close body and html. */
void html_end(FILE *out);

#endif
