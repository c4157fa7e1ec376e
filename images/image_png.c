/*
 * image_png — PNG encoding with libpng's write callbacks into a bytebuf.
 */
#include "image_png.h"

#include <png.h>
#include <setjmp.h>

struct png_sink {
    struct bytebuf *out;
    int rc;
};

static void png_write_cb(png_structp png, png_bytep data, png_size_t n)
{
    struct png_sink *s = png_get_io_ptr(png);
    if (s->rc == PM_OK && bytebuf_append(s->out, data, n) != PM_OK) {
        s->rc = s->out->len + n > s->out->limit ? PM_ERR_LIMIT : PM_ERR_NOMEM;
        png_error(png, "write");
    }
}

static void png_flush_cb(png_structp png)
{
    (void)png;
}

static void png_quiet(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

int image_png_encode(const struct image *img, struct bytebuf *out, struct pm_error *err)
{
    if (!img->pixels || img->width <= 0 || img->height <= 0)
        return pm_error_set(err, PM_ERR_USAGE, "png: empty image");
    struct png_sink sink = {out, PM_OK};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return pm_error_set(err, PM_ERR_NOMEM, "png: out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        int rc = sink.rc != PM_OK ? sink.rc : PM_ERR_NOMEM;
        return pm_error_set(err, rc, "png: encoding a %dx%d image failed (%s)", img->width,
                            img->height, rc == PM_ERR_LIMIT ? "output limit" : "libpng error");
    }
    png_set_write_fn(png, &sink, png_write_cb, png_flush_cb);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 6);
    png_write_info(png, info);
    for (int y = 0; y < img->height; y++)
        png_write_row(png, img->pixels + (size_t)y * (size_t)img->width * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return PM_OK;
}
