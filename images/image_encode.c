#include "image_encode.h"

#include "image_internal.h"

#include <setjmp.h>
#include <stdio.h> // jpeglib.h needs FILE
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <webp/encode.h>

#define ENC_CHUNK 16384 // bytes handed to libjpeg at a time

struct jpeg_enc {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_destination_mgr dest;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    struct bytebuf *out;
    int status;       // PM_ERR_LIMIT / PM_ERR_NOMEM from the destination
    size_t chunk_end; // out->len once libjpeg has filled the space it was given
};

static void enc_on_error(j_common_ptr ci)
{
    struct jpeg_enc *e = (struct jpeg_enc *)ci->client_data;
    ci->err->format_message(ci, e->msg);
    longjmp(e->jb, 1);
}

static void enc_on_message(j_common_ptr ci, int level)
{
    (void)ci, (void)level;
}

// Destination manager writing straight into the caller's bytebuf: libjpeg fills the
// spare capacity; when it is full the buffer grows (bounded by its limit).
static int dest_grow(struct jpeg_enc *e)
{
    struct bytebuf *b = e->out;
    size_t want = ENC_CHUNK;
    if (b->limit && b->limit - b->len < want)
        want = b->limit > b->len ? b->limit - b->len : 0;
    int rc = want ? bytebuf_reserve(b, want) : PM_ERR_LIMIT;
    if (rc) {
        e->status = rc;
        snprintf(e->msg, sizeof e->msg, "output buffer full");
        longjmp(e->jb, 1);
    }
    size_t room = b->cap - 1 - b->len; // one byte stays reserved for the NUL
    if (b->limit && room > b->limit - b->len)
        room = b->limit - b->len;
    e->dest.next_output_byte = (JOCTET *)b->data + b->len;
    e->dest.free_in_buffer = room;
    e->chunk_end = b->len + room;
    return 1;
}

static void dest_init(j_compress_ptr ci)
{
    struct jpeg_enc *e = (struct jpeg_enc *)ci->client_data;
    dest_grow(e);
}

static boolean dest_empty(j_compress_ptr ci)
{
    struct jpeg_enc *e = (struct jpeg_enc *)ci->client_data;
    // libjpeg wants the whole buffer flushed: it was entirely filled
    e->out->len = e->chunk_end;
    return (boolean)dest_grow(e);
}

static void dest_term(j_compress_ptr ci)
{
    struct jpeg_enc *e = (struct jpeg_enc *)ci->client_data;
    e->out->len = (size_t)(e->dest.next_output_byte - (JOCTET *)e->out->data);
    e->out->data[e->out->len] = '\0';
}

static struct jpeg_enc *jpeg_enc_get(struct image_ctx *ctx)
{
    if (ctx->jpeg_enc)
        return ctx->jpeg_enc;
    struct jpeg_enc *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->cinfo.err = jpeg_std_error(&e->jerr);
    e->jerr.error_exit = enc_on_error;
    e->jerr.emit_message = enc_on_message;
    e->cinfo.client_data = e;
    if (setjmp(e->jb)) {
        free(e);
        return NULL;
    }
    jpeg_create_compress(&e->cinfo);
    e->dest.init_destination = dest_init;
    e->dest.empty_output_buffer = dest_empty;
    e->dest.term_destination = dest_term;
    e->cinfo.dest = &e->dest;
    ctx->jpeg_enc = e;
    return e;
}

void image_encode_ctx_release(struct image_ctx *ctx)
{
    struct jpeg_enc *e = ctx->jpeg_enc;
    if (!e)
        return;
    jpeg_destroy_compress(&e->cinfo);
    free(e);
    ctx->jpeg_enc = NULL;
}

static int encode_jpeg(struct image_ctx *ctx, const struct image *img,
                       const struct image_encode_opts *o, struct bytebuf *out, struct pm_error *err)
{
    struct jpeg_enc *e = jpeg_enc_get(ctx);
    if (!e)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot create jpeg encoder");
    j_compress_ptr ci = &e->cinfo;
    e->out = out;
    e->status = PM_OK;
    if (setjmp(e->jb)) {
        jpeg_abort_compress(ci);
        return pm_error_set(err, e->status ? e->status : PM_ERR_INTERNAL,
                            "jpeg encoding failed: %s", e->msg);
    }
    ci->image_width = (JDIMENSION)img->width;
    ci->image_height = (JDIMENSION)img->height;
    ci->input_components = 3;
    ci->in_color_space = JCS_RGB;
    jpeg_set_defaults(ci); // YCbCr, 2x2 luma sampling (4:2:0), ISLOW DCT
    jpeg_set_quality(ci, o->quality, TRUE);
    if (o->progressive)
        jpeg_simple_progression(ci);
    jpeg_start_compress(ci, TRUE);
    size_t stride = (size_t)img->width * 3;
    while (ci->next_scanline < ci->image_height) {
        JSAMPROW row = (JSAMPROW)(img->pixels + (size_t)ci->next_scanline * stride);
        jpeg_write_scanlines(ci, &row, 1);
    }
    jpeg_finish_compress(ci);
    return PM_OK;
}

struct webp_sink {
    struct bytebuf *out;
    int status;
};

static int webp_on_write(const uint8_t *data, size_t n, const WebPPicture *pic)
{
    struct webp_sink *s = pic->custom_ptr;
    int rc = bytebuf_append(s->out, data, n);
    if (rc) {
        s->status = rc;
        return 0;
    }
    return 1;
}

static int encode_webp(const struct image *img, const struct image_encode_opts *o,
                       struct bytebuf *out, struct pm_error *err)
{
    WebPConfig cfg;
    WebPPicture pic;
    if (!WebPConfigInit(&cfg) || !WebPPictureInit(&pic))
        return pm_error_set(err, PM_ERR_INTERNAL, "libwebp version mismatch");
    cfg.quality = (float)o->quality;
    cfg.lossless = o->lossless ? 1 : 0;
    cfg.method = 4;
    if (!WebPValidateConfig(&cfg))
        return pm_error_set(err, PM_ERR_USAGE, "invalid webp settings");
    pic.use_argb = cfg.lossless;
    pic.width = img->width;
    pic.height = img->height;
    if (!WebPPictureImportRGB(&pic, img->pixels, img->width * 3)) {
        WebPPictureFree(&pic);
        return pm_error_set(err, PM_ERR_NOMEM, "webp: cannot import %dx%d picture", img->width,
                            img->height);
    }
    struct webp_sink sink = {out, PM_OK};
    pic.writer = webp_on_write;
    pic.custom_ptr = &sink;
    int ok = WebPEncode(&cfg, &pic);
    int code = pic.error_code;
    WebPPictureFree(&pic);
    if (!ok) {
        if (sink.status)
            return pm_error_set(err, sink.status, "webp encoding failed: output buffer full");
        return pm_error_set(err,
                            code == VP8_ENC_ERROR_OUT_OF_MEMORY ? PM_ERR_NOMEM : PM_ERR_INTERNAL,
                            "webp encoding failed (error %d)", code);
    }
    return PM_OK;
}

int image_encode(struct image_ctx *ctx, const struct image *img,
                 const struct image_encode_opts *opts, struct bytebuf *out, struct pm_error *err)
{
    struct image_encode_opts def = IMAGE_ENCODE_OPTS_INIT;
    if (!opts)
        opts = &def;
    if (!img || !img->pixels || img->width <= 0 || img->height <= 0)
        return pm_error_set(err, PM_ERR_USAGE, "encode: empty image");
    if (opts->quality < (opts->format == IMAGE_ENCODE_WEBP ? 0 : 1) || opts->quality > 100)
        return pm_error_set(err, PM_ERR_USAGE, "encode: quality %d out of range", opts->quality);
    bytebuf_clear(out);
    switch (opts->format) {
    case IMAGE_ENCODE_JPEG:
        if (img->width > 65500 || img->height > 65500)
            return pm_error_set(err, PM_ERR_LIMIT, "jpeg: %dx%d is too large", img->width,
                                img->height);
        return encode_jpeg(ctx, img, opts, out, err);
    case IMAGE_ENCODE_WEBP:
        if (img->width > 16383 || img->height > 16383)
            return pm_error_set(err, PM_ERR_LIMIT, "webp: %dx%d is too large", img->width,
                                img->height);
        return encode_webp(img, opts, out, err);
    }
    return pm_error_set(err, PM_ERR_USAGE, "encode: unknown format %d", (int)opts->format);
}
