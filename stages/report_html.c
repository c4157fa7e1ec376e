/*
 * report_html — HTML helpers and sample fetching for sweep and sheet reports.
 */
#include "report_html.h"

#include "tar_reader.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void html_escape(FILE *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        switch (c) {
        case '&':
            fputs("&amp;", out);
            break;
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        case '\'':
            fputs("&#39;", out);
            break;
        default:
            if ((unsigned char)c < 0x20 && c != '\n' && c != '\t')
                fputc(' ', out);
            else
                fputc(c, out);
        }
    }
}

void html_base64(FILE *out, const unsigned char *d, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char buf[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n)
            v |= d[i + 2];
        buf[0] = tab[(v >> 18) & 63];
        buf[1] = tab[(v >> 12) & 63];
        buf[2] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        buf[3] = i + 2 < n ? tab[v & 63] : '=';
        fwrite(buf, 1, 4, out);
    }
}

static int cmp_item_ptr(const void *a, const void *b)
{
    const struct sheet_item *x = *(struct sheet_item *const *)a,
                            *y = *(struct sheet_item *const *)b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    return (x->row > y->row) - (x->row < y->row);
}

int sheet_items_fetch(struct sheet_item *items, size_t n, struct store *store,
                      const char *(*shard_name)(void *ctx, size_t shard, char *buf, size_t size),
                      void *ctx, struct pm_error *err)
{
    struct sheet_item **order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        order[i] = &items[i];
    qsort(order, n, sizeof *order, cmp_item_ptr);
    int rc = PM_OK;
    for (size_t i = 0; i < n && rc == PM_OK;) {
        size_t j = i;
        while (j < n && order[j]->shard == order[i]->shard)
            j++;
        char name[64], obj[80], path[4096];
        shard_name(ctx, order[i]->shard, name, sizeof name);
        snprintf(obj, sizeof obj, "%s.tar", name);
        size_t nl = strlen(name);
        struct tar_reader *r = NULL;
        bool temp = false;
        rc = store_local_path(store, obj, path, sizeof path, &temp, err);
        if (rc == PM_OK)
            rc = tar_reader_open(path, NULL, &r, err);
        if (temp)
            unlink(path); // the reader keeps the file open
        struct tar_sample smp;
        while (rc == PM_OK && (rc = tar_reader_next(r, &smp, err)) == PM_OK) {
            if (strncmp(smp.key, name, nl) != 0)
                continue;
            char *end = NULL;
            unsigned long long row = strtoull(smp.key + nl, &end, 10);
            if (!end || *end || end == smp.key + nl)
                continue;
            for (size_t k = i; k < j; k++) {
                struct sheet_item *it = order[k];
                if (it->row != row || it->img)
                    continue;
                snprintf(it->key, sizeof it->key, "%s", smp.key);
                for (size_t f = 0; f < smp.nfields; f++) {
                    const struct tar_field *fd = &smp.fields[f];
                    const char *mime = !strcmp(fd->name, "jpg") || !strcmp(fd->name, "jpeg")
                                           ? "image/jpeg"
                                       : !strcmp(fd->name, "webp") ? "image/webp"
                                       : !strcmp(fd->name, "png")  ? "image/png"
                                                                   : NULL;
                    if (mime && !it->img) {
                        it->img = malloc(fd->size ? fd->size : 1);
                        if (it->img) {
                            memcpy(it->img, fd->data, fd->size);
                            it->img_size = fd->size;
                            snprintf(it->mime, sizeof it->mime, "%s", mime);
                        }
                    } else if (!strcmp(fd->name, "txt") && !it->caption) {
                        it->caption = malloc(fd->size + 1);
                        if (it->caption) {
                            memcpy(it->caption, fd->data, fd->size);
                            it->caption[fd->size] = 0;
                        }
                    }
                }
            }
        }
        if (rc == PM_ERR_NOT_FOUND)
            rc = PM_OK;
        tar_reader_free(r);
        i = j;
    }
    free(order);
    return rc;
}

void sheet_items_release(struct sheet_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(items[i].img);
        free(items[i].caption);
        items[i].img = NULL;
        items[i].caption = NULL;
    }
}

void html_figure(FILE *out, const struct sheet_item *it, const char *score_label)
{
    fputs("<figure class=\"thumb\">", out);
    if (it->img) {
        fprintf(out, "<img alt=\"%s\" src=\"data:%s;base64,", it->key, it->mime);
        html_base64(out, it->img, it->img_size);
        fputs("\">", out);
    } else {
        fputs("<div class=\"noimg\">no image</div>", out);
    }
    fprintf(out, "<figcaption><b>");
    html_escape(out, score_label, strlen(score_label));
    fprintf(out, "</b> <span class=\"key\">%s</span><br>", it->key);
    if (it->caption) {
        size_t n = strlen(it->caption);
        html_escape(out, it->caption, n > 160 ? 160 : n);
        if (n > 160)
            fputs("&hellip;", out);
    }
    fputs("</figcaption></figure>\n", out);
}

void html_begin(FILE *out, const char *title)
{
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>", out);
    html_escape(out, title, strlen(title));
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;margin:1.5em;color:#222;background:#fff}\n"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
          "text-align:right}\n"
          "figure.thumb{display:inline-block;width:140px;margin:4px;vertical-align:top;"
          "font-size:11px}\n"
          "figure.thumb img{width:128px;height:128px;object-fit:cover;display:block;"
          "background:#eee}\n"
          ".noimg{width:128px;height:128px;background:#eee}\n"
          ".key{color:#888}.side{margin:.3em 0 .8em 0}\n"
          "svg{background:#fafafa;border:1px solid #ddd}\n"
          "</style></head><body>\n<h1>",
          out);
    html_escape(out, title, strlen(title));
    fputs("</h1>\n", out);
}

void html_end(FILE *out)
{
    fputs("</body></html>\n", out);
}
