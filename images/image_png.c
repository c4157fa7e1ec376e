/*
 * image_png — see image_png.h. libpng reports errors by longjmp; everything allocated
 * before setjmp is released on that path.
 */
#include "image_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int image_png_write(const struct image *img, const char *path, struct pm_error *err)
{
    if (!img->pixels || img->width <= 0 || img->height <= 0)
        return pm_error_set(err, PM_ERR_USAGE, "%s: empty image", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    snprintf(tmp, plen + 16, "%s.tmp%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(tmp);
        return pm_error_set(err, PM_ERR_IO, "cannot create '%s'", path);
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    volatile int rc = PM_OK;
    if (!png || !info) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    } else if (setjmp(png_jmpbuf(png))) {
        rc = pm_error_set(err, PM_ERR_INTERNAL, "%s: libpng failed", path);
    } else {
        png_init_io(png, f);
        png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8,
                     PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                     PNG_FILTER_TYPE_DEFAULT);
        png_write_info(png, info);
        for (int y = 0; y < img->height; y++)
            png_write_row(png, img->pixels + (size_t)y * img->width * 3);
        png_write_end(png, NULL);
    }
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    if (fclose(f) != 0 && rc == PM_OK)
        rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s'", path);
    if (rc == PM_OK && rename(tmp, path) != 0)
        rc = pm_error_set(err, PM_ERR_IO, "cannot rename to '%s'", path);
    if (rc != PM_OK)
        unlink(tmp);
    free(tmp);
    return rc;
}
