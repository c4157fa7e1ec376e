#include "image_decode.h"

#include "image_internal.h"

#include <setjmp.h>
#include <stdio.h> // jpeglib.h needs FILE
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>
#include <jpeglib.h>

#include <jerror.h>
#include <png.h>
#include <webp/decode.h>
#include <webp/demux.h>

// ---------------------------------------------------------------------------------------
// Format detection and shared helpers

enum image_format image_format_detect(const void *data, size_t len)
{
    const uint8_t *p = data;
    if (len >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF)
        return IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(p, "\x89PNG\r\n\x1a\n", 8) == 0)
        return IMAGE_FORMAT_PNG;
    if (len >= 12 && memcmp(p, "RIFF", 4) == 0 && memcmp(p + 8, "WEBP", 4) == 0)
        return IMAGE_FORMAT_WEBP;
    if (len >= 6 && (memcmp(p, "GIF87a", 6) == 0 || memcmp(p, "GIF89a", 6) == 0))
        return IMAGE_FORMAT_GIF;
    return IMAGE_FORMAT_UNKNOWN;
}

const char *image_format_name(enum image_format format)
{
    switch (format) {
    case IMAGE_FORMAT_JPEG:
        return "jpeg";
    case IMAGE_FORMAT_PNG:
        return "png";
    case IMAGE_FORMAT_WEBP:
        return "webp";
    case IMAGE_FORMAT_GIF:
        return "gif";
    default:
        return "unknown";
    }
}

// A name for formats we recognise but do not decode, for a classifiable message.
static const char *other_format_name(const uint8_t *p, size_t len)
{
    if (len >= 2 && p[0] == 'B' && p[1] == 'M')
        return "bmp";
    if (len >= 4 && (memcmp(p, "II*\0", 4) == 0 || memcmp(p, "MM\0*", 4) == 0))
        return "tiff";
    if (len >= 12 && memcmp(p + 4, "ftyp", 4) == 0)
        return "heif/avif/mp4";
    if (len >= 4 && memcmp(p, "\0\0\1\0", 4) == 0)
        return "ico";
    size_t i = 0;
    while (i < len && i < 64 && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i < len && p[i] == '<')
        return "html/xml/svg";
    return NULL;
}

static int check_pixels(uint64_t w, uint64_t h, uint64_t max_pixels, const char *fmt,
                        struct pm_error *err)
{
    if (w == 0 || h == 0)
        return pm_error_set(err, PM_ERR_FORMAT, "corrupt %s: zero image size", fmt);
    if (w > IMAGE_MAX_DIM || h > IMAGE_MAX_DIM || w * h > max_pixels)
        return pm_error_set(err, PM_ERR_LIMIT, "too many pixels: %llux%llu", (unsigned long long)w,
                            (unsigned long long)h);
    return PM_OK;
}

// RGBA -> RGB on white, exactly img2dataset's rint(a/255*c + 255 - a) (no ties possible).
static void composite_row(const uint8_t *rgba, uint8_t *rgb, int w)
{
    for (int x = 0; x < w; x++) {
        unsigned a = rgba[3];
        if (a == 255) {
            rgb[0] = rgba[0], rgb[1] = rgba[1], rgb[2] = rgba[2];
        } else {
            unsigned bg = 255 * (255 - a) + 127;
            rgb[0] = (uint8_t)((rgba[0] * a + bg) / 255);
            rgb[1] = (uint8_t)((rgba[1] * a + bg) / 255);
            rgb[2] = (uint8_t)((rgba[2] * a + bg) / 255);
        }
        rgba += 4;
        rgb += 3;
    }
}

// Copy a w x h RGB image into dst applying EXIF orientation o (dst is (h, w) for o >= 5).
static void orient_copy(const uint8_t *src, int w, int h, int o, uint8_t *dst)
{
    int ow = o >= 5 ? h : w;
    for (int y = 0; y < h; y++) {
        const uint8_t *s = src + (size_t)y * w * 3;
        for (int x = 0; x < w; x++, s += 3) {
            int dx, dy;
            switch (o) {
            case 2:
                dx = w - 1 - x, dy = y;
                break;
            case 3:
                dx = w - 1 - x, dy = h - 1 - y;
                break;
            case 4:
                dx = x, dy = h - 1 - y;
                break;
            case 5:
                dx = y, dy = x;
                break;
            case 6:
                dx = h - 1 - y, dy = x;
                break;
            case 7:
                dx = h - 1 - y, dy = w - 1 - x;
                break;
            case 8:
                dx = y, dy = w - 1 - x;
                break;
            default:
                dx = x, dy = y;
                break;
            }
            uint8_t *d = dst + ((size_t)dy * ow + dx) * 3;
            d[0] = s[0], d[1] = s[1], d[2] = s[2];
        }
    }
}

static uint32_t rd16(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : (uint32_t)p[0] << 8 | p[1];
}

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? rd16(p, 1) | rd16(p + 2, 1) << 16 : rd16(p, 0) << 16 | rd16(p + 2, 0);
}

int image_exif_orientation(const uint8_t *app1, size_t len)
{
    if (!app1 || len < 6 + 8 || memcmp(app1, "Exif\0\0", 6) != 0)
        return 1;
    const uint8_t *t = app1 + 6; // TIFF header; offsets are relative to it
    size_t n = len - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I')
        le = 1;
    else if (t[0] == 'M' && t[1] == 'M')
        le = 0;
    else
        return 1;
    if (rd16(t + 2, le) != 42)
        return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd < 8 || ifd > n || n - ifd < 2)
        return 1;
    uint32_t count = rd16(t + ifd, le);
    for (uint32_t i = 0; i < count; i++) {
        size_t off = (size_t)ifd + 2 + (size_t)i * 12;
        if (off > n || n - off < 12)
            break;
        if (rd16(t + off, le) != 0x0112)
            continue;
        uint32_t type = rd16(t + off + 2, le), cnt = rd32(t + off + 4, le);
        if (type != 3 || cnt < 1)
            return 1;
        uint32_t v = rd16(t + off + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

// Deliver a decoded RGB image (w x h, unrotated) at raw into out with orientation o.
// raw may already be out->pixels when o == 1.
static int finish_orient(const uint8_t *raw, int w, int h, int o, struct image *out,
                         struct pm_error *err)
{
    int ow = o >= 5 ? h : w, oh = o >= 5 ? w : h;
    if (raw == out->pixels)
        return PM_OK;
    if (image_reserve(out, ow, oh))
        return pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", ow, oh);
    orient_copy(raw, w, h, o, out->pixels);
    return PM_OK;
}

// ---------------------------------------------------------------------------------------
// JPEG (libjpeg-turbo, libjpeg API)

#define JPEG_MAX_SCANS 256     // progressive scan limit (CPU bomb guard, like tjDecompress)
#define JPEG_MAX_WARNINGS 1000 // corrupt-data warnings tolerated before giving up

struct jpeg_dec {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
};

static void jpeg_on_error(j_common_ptr ci)
{
    struct jpeg_dec *d = (struct jpeg_dec *)ci->client_data;
    ci->err->format_message(ci, d->msg);
    longjmp(d->jb, 1);
}

static void jpeg_on_message(j_common_ptr ci, int level)
{
    // (the message code of the last error_exit stays in err->msg_code for classification)
    // warnings (level -1) are counted, never printed; trace messages ignored.
    // A file that ends before its image does is refused, as PIL refuses it ("image file is
    // truncated"): libjpeg would pad the missing rows with grey and call it a success.
    if (level < 0 && ci->err->msg_code == JWRN_JPEG_EOF) {
        struct jpeg_dec *d = (struct jpeg_dec *)ci->client_data;
        snprintf(d->msg, sizeof d->msg, "premature end of data (truncated file)");
        longjmp(d->jb, 1);
    }
    if (level < 0 && ++ci->err->num_warnings > JPEG_MAX_WARNINGS) {
        struct jpeg_dec *d = (struct jpeg_dec *)ci->client_data;
        snprintf(d->msg, sizeof d->msg, "too many corrupt-data warnings");
        longjmp(d->jb, 1);
    }
}

static void jpeg_on_progress(j_common_ptr ci)
{
    j_decompress_ptr di = (j_decompress_ptr)ci;
    if (di->input_scan_number > JPEG_MAX_SCANS) {
        struct jpeg_dec *d = (struct jpeg_dec *)ci->client_data;
        snprintf(d->msg, sizeof d->msg, "more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(d->jb, 1);
    }
}

static struct jpeg_dec *jpeg_dec_get(struct image_ctx *ctx)
{
    if (ctx->jpeg_dec)
        return ctx->jpeg_dec;
    struct jpeg_dec *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->cinfo.err = jpeg_std_error(&d->jerr);
    d->jerr.error_exit = jpeg_on_error;
    d->jerr.emit_message = jpeg_on_message;
    d->cinfo.client_data = d;
    if (setjmp(d->jb)) { // jpeg_create_decompress fails only on out of memory
        free(d);
        return NULL;
    }
    jpeg_create_decompress(&d->cinfo);
    d->progress.progress_monitor = jpeg_on_progress;
    d->cinfo.progress = &d->progress;
    d->cinfo.mem->max_memory_to_use = 1024L * 1024 * 1024;
    ctx->jpeg_dec = d;
    return d;
}

void image_decode_ctx_release(struct image_ctx *ctx)
{
    struct jpeg_dec *d = ctx->jpeg_dec;
    if (!d)
        return;
    jpeg_destroy_decompress(&d->cinfo);
    free(d);
    ctx->jpeg_dec = NULL;
}

// PIL's CMYK -> RGB (Convert.c cmyk2rgb) on true (non-inverted) CMYK values.
static inline uint8_t muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static void cmyk_row(const uint8_t *in, uint8_t *out, int w, int inverted)
{
    for (int x = 0; x < w; x++, in += 4, out += 3) {
        unsigned c = in[0], m = in[1], y = in[2], k = in[3];
        if (inverted)
            c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        unsigned nk = 255 - k;
        out[0] = (uint8_t)(nk - muldiv255(c, nk));
        out[1] = (uint8_t)(nk - muldiv255(m, nk));
        out[2] = (uint8_t)(nk - muldiv255(y, nk));
    }
}

struct decode_req {
    uint64_t max_pixels;
    int min_w, min_h; // upright; 0 = full
    const struct image_resize_params *resize;
    bool orient;
};

// The minimum size (upright) the caller needs for an upright w x h image.
static void req_min_size(const struct decode_req *rq, int w, int h, int *mw, int *mh)
{
    *mw = rq->min_w, *mh = rq->min_h;
    if (rq->resize) {
        struct image_geometry g;
        if (image_geometry_compute(rq->resize, w, h, &g) == PM_OK && !g.identity &&
            g.scaled_width < w && g.scaled_height < h) {
            *mw = g.scaled_width, *mh = g.scaled_height;
        } else {
            *mw = w, *mh = h;
        }
    }
    if (*mw <= 0 || *mh <= 0 || *mw > w || *mh > h)
        *mw = w, *mh = h;
}

static int decode_jpeg(struct image_ctx *ctx, const uint8_t *data, size_t len,
                       const struct decode_req *rq, struct image *out, struct image_info *info,
                       struct pm_error *err)
{
    struct jpeg_dec *d = jpeg_dec_get(ctx);
    if (!d)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot create jpeg decoder");
    j_decompress_ptr ci = &d->cinfo;
    // volatile: read after a longjmp
    volatile int rc = PM_OK;
    if (setjmp(d->jb)) {
        jpeg_abort_decompress(ci);
        if (rc == PM_OK) {
            int code = d->jerr.msg_code;
            if (code == JERR_BAD_PRECISION || code == JERR_SOF_UNSUPPORTED ||
                code == JERR_ARITH_NOTIMPL || code == JERR_NOT_COMPILED)
                rc = pm_error_set(err, PM_ERR_UNSUPPORTED, "unsupported jpeg: %s", d->msg);
            else
                rc = pm_error_set(err, PM_ERR_FORMAT, "corrupt jpeg: %s", d->msg);
        }
        return rc;
    }
    d->jerr.num_warnings = 0;
    jpeg_mem_src(ci, data, (unsigned long)len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);

    int o = 1;
    for (jpeg_saved_marker_ptr m = ci->marker_list; m; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 &&
            memcmp(m->data, "Exif\0\0", 6) == 0) {
            o = image_exif_orientation(m->data, m->data_length);
            break;
        }
    }
    info->orientation = o;
    if (!rq->orient)
        o = 1;
    int w = (int)ci->image_width, h = (int)ci->image_height;
    info->width = o >= 5 ? h : w;
    info->height = o >= 5 ? w : h;
    rc = check_pixels(ci->image_width, ci->image_height, rq->max_pixels, "jpeg", err);
    if (rc) {
        jpeg_abort_decompress(ci);
        return rc;
    }

    int cmyk = 0;
    switch (ci->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        ci->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        ci->out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        jpeg_abort_decompress(ci);
        return rc = pm_error_set(err, PM_ERR_UNSUPPORTED, "unsupported jpeg colour space %d",
                                 (int)ci->jpeg_color_space);
    }

    // DCT-domain scaling: smallest M/8 keeping both (unrotated) sides >= the minimum
    int mw, mh;
    req_min_size(rq, info->width, info->height, &mw, &mh);
    if (o >= 5) {
        int t = mw;
        mw = mh, mh = t;
    }
    // only 1/8, 1/4, 1/2: libjpeg-turbo has SIMD IDCTs for those (the 3/8, 5/8... ones
    // are plain C and measured slower than decoding at 1/2 and averaging more)
    int num = 8;
    for (int m = 1; m < 8; m *= 2) {
        long sw = ((long)w * m + 7) / 8, sh = ((long)h * m + 7) / 8;
        if (sw >= mw && sh >= mh) {
            num = m;
            break;
        }
    }
    ci->scale_num = (unsigned)num;
    ci->scale_denom = 8;
    jpeg_start_decompress(ci);
    int ow = (int)ci->output_width, oh = (int)ci->output_height;
    info->reduced = ow != w || oh != h;

    // destination: straight into out when nothing else is needed
    uint8_t *raw;
    if (o == 1) {
        if (image_reserve(out, ow, oh)) {
            jpeg_abort_decompress(ci);
            return rc = pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", ow, oh);
        }
        raw = out->pixels;
    } else {
        raw = scratch_get(&ctx->dec_raw, (size_t)ow * oh * 3);
    }
    uint8_t *cmykrow = cmyk ? scratch_get(&ctx->dec_rgba, (size_t)ow * 4) : NULL;
    if (!raw || (cmyk && !cmykrow)) {
        jpeg_abort_decompress(ci);
        return rc = pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", ow, oh);
    }
    while (ci->output_scanline < ci->output_height) {
        uint8_t *row = raw + (size_t)ci->output_scanline * ow * 3;
        JSAMPROW rp = cmyk ? cmykrow : row;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1)
            break;
        if (cmyk)
            cmyk_row(cmykrow, row, ow, ci->saw_Adobe_marker);
    }
    jpeg_abort_decompress(ci); // skip whatever follows the last scanline
    return rc = finish_orient(raw, ow, oh, o, out, err);
}

// ---------------------------------------------------------------------------------------
// PNG (libpng)

struct png_state {
    const uint8_t *data;
    size_t len, pos;
    char msg[200];
};

static void png_on_error(png_structp png, png_const_charp msg)
{
    struct png_state *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png, (void)msg;
}

static void png_on_read(png_structp png, png_bytep buf, png_size_t n)
{
    struct png_state *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "unexpected end of data");
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
}

static int decode_png(struct image_ctx *ctx, const uint8_t *data, size_t len,
                      const struct decode_req *rq, struct image *out, struct image_info *info,
                      struct pm_error *err)
{
    struct png_state st = {data, len, 0, {0}};
    png_structp png =
        png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_on_error, png_on_warning);
    png_infop pi = png ? png_create_info_struct(png) : NULL;
    if (!pi) {
        png_destroy_read_struct(&png, NULL, NULL);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot create png decoder");
    }
    volatile int rc = PM_OK;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &pi, NULL);
        if (rc == PM_OK)
            rc = pm_error_set(err, PM_ERR_FORMAT, "corrupt png: %s", st.msg);
        return rc;
    }
    png_set_read_fn(png, &st, png_on_read);
    png_set_chunk_malloc_max(png, 16u << 20);
    png_read_info(png, pi);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, pi, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    info->width = (int)w, info->height = (int)h;
    rc = check_pixels(w, h, rq->max_pixels, "png", err);
    if (rc) {
        png_destroy_read_struct(&png, &pi, NULL);
        return rc;
    }
    png_set_expand(png);   // palette -> RGB, grey < 8 bits -> 8 bits, tRNS -> alpha
    png_set_strip_16(png); // keep the high byte, like PIL
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, pi);
    int channels = png_get_channels(png, pi);
    if ((channels != 3 && channels != 4) ||
        png_get_rowbytes(png, pi) != (size_t)w * (size_t)channels) {
        png_destroy_read_struct(&png, &pi, NULL);
        return rc = pm_error_set(err, PM_ERR_UNSUPPORTED, "unsupported png layout");
    }
    info->has_alpha = channels == 4;
    uint8_t *buf;
    if (channels == 3) {
        buf = image_reserve(out, (int)w, (int)h) ? NULL : out->pixels;
    } else {
        buf = scratch_get(&ctx->dec_rgba, (size_t)w * h * 4);
    }
    png_bytep *rows = scratch_get(&ctx->dec_raw, (size_t)h * sizeof(png_bytep));
    if (!buf || !rows) {
        png_destroy_read_struct(&png, &pi, NULL);
        return rc = pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %ux%u image", w, h);
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = buf + (size_t)y * w * channels;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &pi, NULL);
    if (channels == 4) {
        if (image_reserve(out, (int)w, (int)h))
            return rc = pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %ux%u image", w, h);
        for (png_uint_32 y = 0; y < h; y++)
            composite_row(buf + (size_t)y * w * 4, out->pixels + (size_t)y * w * 3, (int)w);
    }
    return rc;
}

// ---------------------------------------------------------------------------------------
// WebP (libwebp, libwebpdemux for animations)

static int decode_webp_anim(const uint8_t *data, size_t len, struct image *out,
                            struct pm_error *err)
{
    WebPAnimDecoderOptions ao;
    if (!WebPAnimDecoderOptionsInit(&ao))
        return pm_error_set(err, PM_ERR_INTERNAL, "libwebp version mismatch");
    ao.color_mode = MODE_RGBA;
    ao.use_threads = 0;
    WebPData wd = {data, len};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&wd, &ao);
    if (!dec)
        return pm_error_set(err, PM_ERR_FORMAT, "corrupt webp: bad animation");
    WebPAnimInfo ai;
    uint8_t *rgba = NULL;
    int ts;
    if (!WebPAnimDecoderGetInfo(dec, &ai) || !WebPAnimDecoderGetNext(dec, &rgba, &ts) || !rgba) {
        WebPAnimDecoderDelete(dec);
        return pm_error_set(err, PM_ERR_FORMAT, "corrupt webp: bad first frame");
    }
    int w = (int)ai.canvas_width, h = (int)ai.canvas_height;
    if (image_reserve(out, w, h)) {
        WebPAnimDecoderDelete(dec);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", w, h);
    }
    for (int y = 0; y < h; y++)
        composite_row(rgba + (size_t)y * w * 4, out->pixels + (size_t)y * w * 3, w);
    WebPAnimDecoderDelete(dec);
    return PM_OK;
}

static int decode_webp(struct image_ctx *ctx, const uint8_t *data, size_t len,
                       const struct decode_req *rq, struct image *out, struct image_info *info,
                       struct pm_error *err)
{
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg))
        return pm_error_set(err, PM_ERR_INTERNAL, "libwebp version mismatch");
    VP8StatusCode st = WebPGetFeatures(data, len, &cfg.input);
    if (st != VP8_STATUS_OK)
        return pm_error_set(
            err, st == VP8_STATUS_UNSUPPORTED_FEATURE ? PM_ERR_UNSUPPORTED : PM_ERR_FORMAT,
            "corrupt webp: bad header (status %d)", (int)st);
    int w = cfg.input.width, h = cfg.input.height;
    info->width = w, info->height = h;
    info->has_alpha = cfg.input.has_alpha != 0;
    int rc = check_pixels((uint64_t)(w > 0 ? w : 0), (uint64_t)(h > 0 ? h : 0), rq->max_pixels,
                          "webp", err);
    if (rc)
        return rc;
    if (cfg.input.has_animation)
        return decode_webp_anim(data, len, out, err);

    int mw, mh;
    req_min_size(rq, w, h, &mw, &mh);
    int ow = w, oh = h;
    if (mw < w && mh < h) {
        cfg.options.use_scaling = 1;
        cfg.options.scaled_width = ow = mw;
        cfg.options.scaled_height = oh = mh;
        info->reduced = true;
    }
    uint8_t *buf;
    size_t stride;
    if (info->has_alpha) {
        cfg.output.colorspace = MODE_RGBA;
        stride = (size_t)ow * 4;
        buf = scratch_get(&ctx->dec_rgba, stride * oh);
    } else {
        cfg.output.colorspace = MODE_RGB;
        stride = (size_t)ow * 3;
        buf = image_reserve(out, ow, oh) ? NULL : out->pixels;
    }
    if (!buf)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", ow, oh);
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = buf;
    cfg.output.u.RGBA.stride = (int)stride;
    cfg.output.u.RGBA.size = stride * oh;
    st = WebPDecode(data, len, &cfg);
    WebPFreeDecBuffer(&cfg.output);
    if (st != VP8_STATUS_OK)
        return pm_error_set(err, PM_ERR_FORMAT, "corrupt webp: decoding failed (status %d)",
                            (int)st);
    if (info->has_alpha) {
        if (image_reserve(out, ow, oh))
            return pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", ow, oh);
        for (int y = 0; y < oh; y++)
            composite_row(buf + (size_t)y * stride, out->pixels + (size_t)y * ow * 3, ow);
    }
    return PM_OK;
}

// ---------------------------------------------------------------------------------------
// GIF (giflib): the first frame on a white canvas

struct gif_src {
    const uint8_t *data;
    size_t len, pos;
};

static int gif_on_read(GifFileType *g, GifByteType *buf, int n)
{
    struct gif_src *s = g->UserData;
    size_t k = n < 0 ? 0 : (size_t)n;
    if (k > s->len - s->pos)
        k = s->len - s->pos;
    memcpy(buf, s->data + s->pos, k);
    s->pos += k;
    return (int)k;
}

static int gif_fail(GifFileType *g, int code, const char *what, struct pm_error *err)
{
    int e = g ? g->Error : 0;
    const char *s = e ? GifErrorString(e) : NULL;
    if (g)
        DGifCloseFile(g, NULL);
    return pm_error_set(err, code, "corrupt gif: %s%s%s", what, s ? ": " : "", s ? s : "");
}

static int decode_gif(struct image_ctx *ctx, const uint8_t *data, size_t len,
                      const struct decode_req *rq, struct image *out, struct image_info *info,
                      struct pm_error *err)
{
    struct gif_src src = {data, len, 0};
    int e = 0;
    GifFileType *g = DGifOpen(&src, gif_on_read, &e);
    if (!g) {
        const char *s = GifErrorString(e);
        return pm_error_set(err, PM_ERR_FORMAT, "corrupt gif: %s", s ? s : "cannot open");
    }
    int transparent = -1;
    for (;;) {
        GifRecordType rt;
        if (DGifGetRecordType(g, &rt) != GIF_OK)
            return gif_fail(g, PM_ERR_FORMAT, "bad record", err);
        if (rt == TERMINATE_RECORD_TYPE)
            return gif_fail(g, PM_ERR_FORMAT, "no image", err);
        if (rt == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext = NULL;
            if (DGifGetExtension(g, &code, &ext) != GIF_OK)
                return gif_fail(g, PM_ERR_FORMAT, "bad extension", err);
            if (code == GRAPHICS_EXT_FUNC_CODE && ext && ext[0] >= 4)
                transparent = (ext[1] & 1) ? ext[4] : -1;
            while (ext) {
                if (DGifGetExtensionNext(g, &ext) != GIF_OK)
                    return gif_fail(g, PM_ERR_FORMAT, "bad extension", err);
            }
            continue;
        }
        if (rt != IMAGE_DESC_RECORD_TYPE)
            continue;
        if (DGifGetImageDesc(g) != GIF_OK)
            return gif_fail(g, PM_ERR_FORMAT, "bad image descriptor", err);
        break;
    }
    GifImageDesc *fd = &g->Image;
    int fw = fd->Width, fh = fd->Height, fl = fd->Left, ft = fd->Top;
    int cw = g->SWidth, ch = g->SHeight;
    if (cw <= 0 || ch <= 0) // no logical screen: use the frame's extent
        cw = fl + fw, ch = ft + fh;
    info->width = cw, info->height = ch;
    int rc = check_pixels((uint64_t)(cw > 0 ? cw : 0), (uint64_t)(ch > 0 ? ch : 0), rq->max_pixels,
                          "gif", err);
    if (!rc)
        rc = check_pixels((uint64_t)(fw > 0 ? fw : 0), (uint64_t)(fh > 0 ? fh : 0), rq->max_pixels,
                          "gif", err);
    if (rc) {
        DGifCloseFile(g, NULL);
        return rc;
    }
    ColorMapObject *cm = fd->ColorMap ? fd->ColorMap : g->SColorMap;
    if (!cm || !cm->Colors || cm->ColorCount <= 0)
        return gif_fail(g, PM_ERR_FORMAT, "no colour map", err);
    info->has_alpha = transparent >= 0;
    uint8_t *line = scratch_get(&ctx->dec_rgba, (size_t)fw);
    if (!line || image_reserve(out, cw, ch)) {
        DGifCloseFile(g, NULL);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot allocate %dx%d image", cw, ch);
    }
    memset(out->pixels, 255, (size_t)cw * ch * 3);
    static const int ioff[4] = {0, 4, 2, 1}, istep[4] = {8, 8, 4, 2};
    int passes = fd->Interlace ? 4 : 1;
    for (int p = 0; p < passes; p++) {
        int y0 = fd->Interlace ? ioff[p] : 0, dy = fd->Interlace ? istep[p] : 1;
        for (int y = y0; y < fh; y += dy) {
            if (DGifGetLine(g, line, fw) != GIF_OK)
                return gif_fail(g, PM_ERR_FORMAT, "truncated image data", err);
            int cy = ft + y;
            if (cy < 0 || cy >= ch)
                continue;
            uint8_t *row = out->pixels + (size_t)cy * cw * 3;
            for (int x = 0; x < fw; x++) {
                int cx = fl + x, idx = line[x];
                if (cx >= cw || idx == transparent)
                    continue;
                uint8_t *px = row + (size_t)cx * 3;
                if (idx < cm->ColorCount) {
                    px[0] = cm->Colors[idx].Red;
                    px[1] = cm->Colors[idx].Green;
                    px[2] = cm->Colors[idx].Blue;
                } else {
                    px[0] = px[1] = px[2] = 0;
                }
            }
        }
    }
    DGifCloseFile(g, NULL);
    return PM_OK;
}

// ---------------------------------------------------------------------------------------

int image_decode(struct image_ctx *ctx, const void *data, size_t len,
                 const struct image_decode_opts *opts, struct image *out, struct image_info *info,
                 struct pm_error *err)
{
    struct image_info dummy;
    if (!info)
        info = &dummy;
    memset(info, 0, sizeof *info);
    info->orientation = 1;
    struct decode_req rq = {IMAGE_DEFAULT_MAX_PIXELS, 0, 0, NULL, true};
    if (opts) {
        if (opts->max_pixels)
            rq.max_pixels = opts->max_pixels;
        rq.min_w = opts->min_width, rq.min_h = opts->min_height;
        rq.resize = opts->resize;
        rq.orient = !opts->no_orientation;
    }
    if (!data)
        len = 0;
    info->format = image_format_detect(data, len);
    int rc;
    switch (info->format) {
    case IMAGE_FORMAT_JPEG:
        rc = decode_jpeg(ctx, data, len, &rq, out, info, err);
        break;
    case IMAGE_FORMAT_PNG:
        rc = decode_png(ctx, data, len, &rq, out, info, err);
        break;
    case IMAGE_FORMAT_WEBP:
        rc = decode_webp(ctx, data, len, &rq, out, info, err);
        break;
    case IMAGE_FORMAT_GIF:
        rc = decode_gif(ctx, data, len, &rq, out, info, err);
        break;
    default: {
        const char *other = len ? other_format_name(data, len) : NULL;
        if (other)
            return pm_error_set(err, PM_ERR_UNSUPPORTED, "unsupported format (%s)", other);
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "unsupported format");
    }
    }
    return rc;
}
