/*
 * pm_image_tool — drives the images/ modules for the Python tests and benchmarks.
 *
 *   pm_image_tool resize IN OUT --size N --mode M [--format jpg|webp|ppm] [--quality Q]
 *                 [--lossless] [--only-if-bigger] [--no-reduce] [--max-pixels N]
 *   pm_image_tool decode IN OUT.ppm [--no-orientation] [--max-pixels N]
 *   pm_image_tool phash IN...                  (one hex hash per line)
 *   pm_image_tool grid IN --sizes N,N,...       (every mode x size x only-if-bigger:
 *                 one JSON line each with the resized output size; for geometry tests)
 *   pm_image_tool info IN
 *   pm_image_tool bench IN --size N --mode M [--format F] [--quality Q] [--iters N]
 *
 * IN is any image the decoder accepts, or a binary PPM (P6, maxval 255) read here, which
 * lets tests feed exact pixels to the resizer. resize/info print one JSON line.
 * Exit status: 0 ok, 1 library error (message on stderr), 2 usage.
 */
#include "image.h"
#include "image_decode.h"
#include "image_encode.h"
#include "image_phash.h"
#include "image_resize.h"

#include "bytebuf.h"
#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int read_file(const char *path, struct bytebuf *b)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (bytebuf_append(b, chunk, n)) {
            fclose(f);
            return -1;
        }
    fclose(f);
    return 0;
}

static int write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(p, 1, n, f) == n;
    return (fclose(f) == 0 && ok) ? 0 : -1;
}

// Parse a P6 PPM with maxval 255. Returns 1 if parsed, 0 if not a PPM, -1 if malformed.
static int ppm_parse(const struct bytebuf *b, struct image *img)
{
    if (b->len < 2 || b->data[0] != 'P' || b->data[1] != '6')
        return 0;
    size_t pos = 2;
    long v[3];
    for (int i = 0; i < 3; i++) {
        while (pos < b->len &&
               (b->data[pos] == ' ' || b->data[pos] == '\n' || b->data[pos] == '\r' ||
                b->data[pos] == '\t' || b->data[pos] == '#')) {
            if (b->data[pos] == '#')
                while (pos < b->len && b->data[pos] != '\n')
                    pos++;
            else
                pos++;
        }
        char *end;
        v[i] = strtol(b->data + pos, &end, 10);
        if (end == b->data + pos)
            return -1;
        pos = (size_t)(end - b->data);
    }
    pos++; // the single whitespace after maxval
    if (v[2] != 255 || v[0] <= 0 || v[1] <= 0 || v[0] > 65535 || v[1] > 65535)
        return -1;
    size_t n = (size_t)v[0] * (size_t)v[1] * 3;
    if (pos > b->len || b->len - pos < n || image_reserve(img, (int)v[0], (int)v[1]))
        return -1;
    memcpy(img->pixels, b->data + pos, n);
    return 1;
}

static int write_ppm(const char *path, const struct image *img)
{
    struct bytebuf b;
    bytebuf_init(&b, 0);
    bytebuf_printf(&b, "P6\n%d %d\n255\n", img->width, img->height);
    bytebuf_append(&b, img->pixels, (size_t)img->width * img->height * 3);
    int rc = write_file(path, b.data, b.len);
    bytebuf_release(&b);
    return rc;
}

struct args {
    const char *in, *out, *format, *mode, *sizes;
    int size, quality, iters;
    int lossless, only_if_bigger, no_reduce, no_orientation;
    unsigned long long max_pixels;
};

static int usage(void)
{
    fprintf(stderr, "usage: pm_image_tool resize|decode|phash|info|grid|bench IN [OUT] [options]\n"
                    "  --size N --sizes N,N --mode M --format jpg|webp|ppm --quality Q --lossless\n"
                    "  --only-if-bigger --no-reduce --no-orientation --max-pixels N --iters N\n");
    return 2;
}

static int parse_args(int argc, char **argv, int npos, struct args *a)
{
    memset(a, 0, sizeof *a);
    a->format = "jpg";
    a->mode = "no";
    a->quality = 95;
    a->iters = 100;
    int pos = 0;
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(s, "--lossless"))
            a->lossless = 1;
        else if (!strcmp(s, "--only-if-bigger"))
            a->only_if_bigger = 1;
        else if (!strcmp(s, "--no-reduce"))
            a->no_reduce = 1;
        else if (!strcmp(s, "--no-orientation"))
            a->no_orientation = 1;
        else if (s[0] == '-' && s[1] == '-') {
            if (!val)
                return -1;
            i++;
            if (!strcmp(s, "--size"))
                a->size = atoi(val);
            else if (!strcmp(s, "--mode"))
                a->mode = val;
            else if (!strcmp(s, "--format"))
                a->format = val;
            else if (!strcmp(s, "--quality"))
                a->quality = atoi(val);
            else if (!strcmp(s, "--sizes"))
                a->sizes = val;
            else if (!strcmp(s, "--iters"))
                a->iters = atoi(val);
            else if (!strcmp(s, "--max-pixels"))
                a->max_pixels = strtoull(val, NULL, 10);
            else
                return -1;
        } else if (pos == 0) {
            a->in = s, pos++;
        } else if (pos == 1) {
            a->out = s, pos++;
        } else {
            return -1;
        }
    }
    return pos == npos ? 0 : -1;
}

// Load IN: a PPM directly, anything else through image_decode.
static int load(struct image_ctx *ctx, const struct args *a, const struct bytebuf *data,
                const struct image_resize_params *rp, struct image *img, struct image_info *info,
                struct pm_error *err)
{
    int p = ppm_parse(data, img);
    if (p < 0)
        return pm_error_set(err, PM_ERR_FORMAT, "malformed ppm");
    if (p > 0) {
        memset(info, 0, sizeof *info);
        info->width = img->width, info->height = img->height, info->orientation = 1;
        return PM_OK;
    }
    struct image_decode_opts o = IMAGE_DECODE_OPTS_INIT;
    if (a->max_pixels)
        o.max_pixels = a->max_pixels;
    o.resize = a->no_reduce ? NULL : rp;
    o.no_orientation = a->no_orientation;
    return image_decode(ctx, data->data, data->len, &o, img, info, err);
}

static int encode_to(struct image_ctx *ctx, const struct args *a, const struct image *img,
                     struct bytebuf *out, struct pm_error *err)
{
    struct image_encode_opts eo = IMAGE_ENCODE_OPTS_INIT;
    eo.quality = a->quality;
    eo.lossless = a->lossless;
    if (!strcmp(a->format, "jpg") || !strcmp(a->format, "jpeg"))
        eo.format = IMAGE_ENCODE_JPEG;
    else if (!strcmp(a->format, "webp"))
        eo.format = IMAGE_ENCODE_WEBP;
    else
        return pm_error_set(err, PM_ERR_USAGE, "unknown format '%s'", a->format);
    return image_encode(ctx, img, &eo, out, err);
}

static int cmd_phash(int argc, char **argv)
{
    struct image_ctx *ctx = image_ctx_create();
    struct image img = IMAGE_INIT;
    struct bytebuf data;
    bytebuf_init(&data, 0);
    int rc = 0;
    for (int i = 2; i < argc && !rc; i++) {
        struct args a;
        memset(&a, 0, sizeof a);
        a.in = argv[i];
        struct pm_error err = PM_ERROR_INIT;
        struct image_info info;
        uint64_t h = 0;
        bytebuf_clear(&data);
        if (read_file(a.in, &data)) {
            fprintf(stderr, "pm_image_tool: cannot read '%s'\n", a.in);
            rc = 1;
        } else if (load(ctx, &a, &data, NULL, &img, &info, &err) ||
                   image_phash(ctx, &img, &h, &err)) {
            fprintf(stderr, "pm_image_tool: %s: %s\n", a.in, err.msg);
            rc = 1;
        } else {
            char hex[17];
            image_phash_format(h, hex);
            printf("%s\n", hex);
        }
    }
    image_release(&img);
    image_ctx_free(ctx);
    bytebuf_release(&data);
    return rc;
}

static int cmd_grid(const struct args *a)
{
    struct image_ctx *ctx = image_ctx_create();
    struct image img = IMAGE_INIT, out = IMAGE_INIT;
    struct bytebuf data;
    bytebuf_init(&data, 0);
    struct pm_error err = PM_ERROR_INIT;
    struct image_info info;
    int rc = 1;
    if (!a->sizes || read_file(a->in, &data) || load(ctx, a, &data, NULL, &img, &info, &err)) {
        fprintf(stderr, "pm_image_tool: cannot load '%s' %s\n", a->in, err.msg);
        goto done;
    }
    for (int m = IMAGE_RESIZE_NO; m <= IMAGE_RESIZE_FIXED; m++) {
        for (const char *p = a->sizes; *p;) {
            char *end;
            long size = strtol(p, &end, 10);
            if (end == p)
                goto done;
            for (int bigger = 0; bigger < 2; bigger++) {
                struct image_resize_params rp = {(enum image_resize_mode)m, (int)size, bigger != 0};
                struct image_geometry g;
                if (image_geometry_compute(&rp, img.width, img.height, &g) ||
                    image_resize(ctx, &img, &g, &out, &err)) {
                    fprintf(stderr, "pm_image_tool: grid failed: %s\n", err.msg);
                    goto done;
                }
                printf("{\"mode\": \"%s\", \"size\": %ld, \"only_if_bigger\": %s, "
                       "\"width\": %d, \"height\": %d, \"pad_x\": %d, \"pad_y\": %d}\n",
                       image_resize_mode_name(rp.mode), size, bigger ? "true" : "false", out.width,
                       out.height, g.pad_x, g.pad_y);
            }
            p = *end == ',' ? end + 1 : end;
        }
    }
    rc = 0;
done:
    image_release(&img);
    image_release(&out);
    image_ctx_free(ctx);
    bytebuf_release(&data);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *cmd = argv[1];
    if (!strcmp(cmd, "phash"))
        return cmd_phash(argc, argv);
    int npos = (!strcmp(cmd, "resize") || !strcmp(cmd, "decode")) ? 2 : 1;
    struct args a;
    if (parse_args(argc, argv, npos, &a))
        return usage();
    if (!strcmp(cmd, "grid"))
        return cmd_grid(&a);
    struct image_resize_params rp = {IMAGE_RESIZE_NO, a.size, a.only_if_bigger != 0};
    if (image_resize_mode_parse(a.mode, &rp.mode)) {
        fprintf(stderr, "pm_image_tool: unknown mode '%s'\n", a.mode);
        return 2;
    }

    struct bytebuf data, enc;
    bytebuf_init(&data, 0);
    bytebuf_init(&enc, 0);
    struct image img = IMAGE_INIT, out = IMAGE_INIT;
    struct image_ctx *ctx = image_ctx_create();
    struct pm_error err = PM_ERROR_INIT;
    struct image_info info;
    int rc = PM_OK;
    if (!ctx || read_file(a.in, &data)) {
        fprintf(stderr, "pm_image_tool: cannot read '%s'\n", a.in);
        rc = PM_ERR_IO;
        goto done;
    }

    if (!strcmp(cmd, "info") || !strcmp(cmd, "decode")) {
        rc = load(ctx, &a, &data, NULL, &img, &info, &err);
        if (rc)
            goto done;
        if (!strcmp(cmd, "info")) {
            printf("{\"format\": \"%s\", \"width\": %d, \"height\": %d, \"orientation\": %d, "
                   "\"has_alpha\": %s}\n",
                   image_format_name(info.format), info.width, info.height, info.orientation,
                   info.has_alpha ? "true" : "false");
        } else if (write_ppm(a.out, &img)) {
            rc = pm_error_set(&err, PM_ERR_IO, "cannot write '%s'", a.out);
        }
    } else if (!strcmp(cmd, "resize") || !strcmp(cmd, "bench")) {
        int iters = !strcmp(cmd, "bench") ? (a.iters > 0 ? a.iters : 1) : 1;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct image_geometry g;
        for (int it = 0; it < iters && !rc; it++) {
            rc = load(ctx, &a, &data, &rp, &img, &info, &err);
            if (!rc && image_geometry_compute(&rp, info.width, info.height, &g))
                rc = pm_error_set(&err, PM_ERR_USAGE, "bad resize parameters");
            if (!rc)
                rc = image_resize(ctx, &img, &g, &out, &err);
            if (!rc && strcmp(a.format, "ppm") != 0)
                rc = encode_to(ctx, &a, &out, &enc, &err);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (rc)
            goto done;
        if (!strcmp(cmd, "bench")) {
            double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
            printf("{\"iters\": %d, \"seconds\": %.4f, \"images_per_s\": %.1f, "
                   "\"bytes\": %zu}\n",
                   iters, s, iters / s, enc.len);
            goto done;
        }
        if (!strcmp(a.format, "ppm") ? write_ppm(a.out, &out)
                                     : write_file(a.out, enc.data, enc.len)) {
            rc = pm_error_set(&err, PM_ERR_IO, "cannot write '%s'", a.out);
            goto done;
        }
        printf("{\"width\": %d, \"height\": %d, \"original_width\": %d, "
               "\"original_height\": %d, \"decoded_width\": %d, \"decoded_height\": %d}\n",
               out.width, out.height, info.width, info.height, img.width, img.height);
    } else {
        rc = usage();
        goto done_noerr;
    }
done:
    if (rc && rc != PM_ERR_IO)
        fprintf(stderr, "pm_image_tool: %s (%s)\n", err.msg, pm_strerror(rc));
    rc = rc ? 1 : 0;
done_noerr:
    image_release(&img);
    image_release(&out);
    image_ctx_free(ctx);
    bytebuf_release(&data);
    bytebuf_release(&enc);
    return rc;
}
