#include "image.h"

#include "image_internal.h"
#include "pm_error.h"

#include <stdlib.h>
#include <string.h>

void image_init(struct image *img)
{
    memset(img, 0, sizeof *img);
}

void image_release(struct image *img)
{
    if (!img)
        return;
    free(img->pixels);
    image_init(img);
}

int image_reserve(struct image *img, int width, int height)
{
    if (width <= 0 || height <= 0 || width > IMAGE_MAX_DIM * 4 || height > IMAGE_MAX_DIM * 4)
        return PM_ERR_USAGE;
    size_t need = (size_t)width * (size_t)height * 3;
    if (need > img->cap) {
        uint8_t *p = malloc(need);
        if (!p)
            return PM_ERR_NOMEM;
        free(img->pixels);
        img->pixels = p;
        img->cap = need;
    }
    img->width = width;
    img->height = height;
    return PM_OK;
}

void *scratch_get(struct scratch *s, size_t n)
{
    if (n == 0)
        n = 1;
    if (n > s->cap) {
        // grow by 1.5x so slowly rising sizes do not reallocate every call
        size_t want = s->cap + s->cap / 2;
        if (want < n)
            want = n;
        void *p = malloc(want);
        if (!p) {
            p = malloc(n);
            if (!p)
                return NULL;
            want = n;
        }
        free(s->p);
        s->p = p;
        s->cap = want;
    }
    return s->p;
}

void scratch_release(struct scratch *s)
{
    free(s->p);
    s->p = NULL;
    s->cap = 0;
}

struct image_ctx *image_ctx_create(void)
{
    return calloc(1, sizeof(struct image_ctx));
}

void image_ctx_free(struct image_ctx *ctx)
{
    if (!ctx)
        return;
    image_decode_ctx_release(ctx);
    image_encode_ctx_release(ctx);
    image_phash_ctx_release(ctx);
    scratch_release(&ctx->dec_rgba);
    scratch_release(&ctx->dec_raw);
    scratch_release(&ctx->rs_tabx);
    scratch_release(&ctx->rs_taby);
    scratch_release(&ctx->rs_tmp);
    scratch_release(&ctx->ph_tmp);
    scratch_release(&ctx->enc_row);
    free(ctx);
}
