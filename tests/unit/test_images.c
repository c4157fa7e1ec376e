/* Unit tests for images/: error paths, bomb refusal, EXIF, resize geometry and filters,
 * encode/decode round trips, phash properties, context reuse. */
#include "check.h"
#include "image.h"
#include "image_decode.h"
#include "image_encode.h"
#include "image_phash.h"
#include "image_resize.h"

#include "bytebuf.h"
#include "pm_error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

static struct image_ctx *ctx;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

// A smooth test picture with distinct corners: red grows to the right, green downwards.
static void make_gradient(struct image *img, int w, int h)
{
    CHECK(image_reserve(img, w, h) == PM_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->pixels + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1));
            p[2] = (uint8_t)(128 + 100 * sin(x / 9.0) * cos(y / 7.0));
        }
}

static double psnr(const struct image *a, const struct image *b)
{
    if (a->width != b->width || a->height != b->height)
        return -1;
    double se = 0;
    size_t n = (size_t)a->width * a->height * 3;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a->pixels[i] - b->pixels[i];
        se += d * d;
    }
    if (se == 0)
        return 99;
    return 10 * log10(255.0 * 255.0 / (se / n));
}

static int encode(const struct image *img, enum image_encode_format f, int q, int lossless,
                  struct bytebuf *out)
{
    struct image_encode_opts o = IMAGE_ENCODE_OPTS_INIT;
    o.format = f, o.quality = q, o.lossless = lossless != 0;
    struct pm_error err = PM_ERROR_INIT;
    int rc = image_encode(ctx, img, &o, out, &err);
    if (rc)
        fprintf(stderr, "encode: %s\n", err.msg);
    return rc;
}

static int decode(const void *p, size_t n, struct image *out, struct image_info *info,
                  struct pm_error *err)
{
    struct image_decode_opts o = IMAGE_DECODE_OPTS_INIT;
    return image_decode(ctx, p, n, &o, out, info, err);
}

static void test_errors(void)
{
    struct image img = IMAGE_INIT;
    struct pm_error err = PM_ERROR_INIT;
    struct image_info info;
    CHECK(decode(NULL, 0, &img, &info, &err) == PM_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "unsupported format") != NULL);
    CHECK(decode("hello world", 11, &img, &info, &err) == PM_ERR_UNSUPPORTED);
    CHECK(decode("BM\0\0\0\0\0\0", 8, &img, &info, &err) == PM_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "bmp") != NULL);
    CHECK(decode("  <html>", 8, &img, &info, &err) == PM_ERR_UNSUPPORTED);
    // magic only: each decoder reports corrupt data with its name
    CHECK(decode("\xff\xd8\xff", 3, &img, &info, &err) == PM_ERR_FORMAT);
    CHECK(strncmp(err.msg, "corrupt jpeg: ", 14) == 0);
    CHECK(info.format == IMAGE_FORMAT_JPEG);
    CHECK(decode("\x89PNG\r\n\x1a\n", 8, &img, &info, &err) == PM_ERR_FORMAT);
    CHECK(strncmp(err.msg, "corrupt png: ", 13) == 0);
    CHECK(decode("RIFF\0\0\0\0WEBPVP8 ", 16, &img, &info, &err) == PM_ERR_FORMAT);
    CHECK(strncmp(err.msg, "corrupt webp", 12) == 0);
    CHECK(decode("GIF89a\1\0\1\0", 10, &img, &info, &err) == PM_ERR_FORMAT);
    CHECK(strncmp(err.msg, "corrupt gif", 11) == 0);
    CHECK(image_format_detect("GIF87a", 6) == IMAGE_FORMAT_GIF);
    CHECK_STR(image_format_name(IMAGE_FORMAT_WEBP), "webp");

    // every truncation of a valid JPEG and WebP is an error or an image, never a crash
    struct image src = IMAGE_INIT;
    struct bytebuf b;
    bytebuf_init(&b, 0);
    make_gradient(&src, 40, 30);
    CHECK(encode(&src, IMAGE_ENCODE_JPEG, 90, 0, &b) == PM_OK);
    int ok = 0, bad = 0;
    for (size_t n = 0; n < b.len; n += 7) {
        int rc = decode(b.data, n, &img, &info, &err);
        if (rc == PM_OK) {
            ok++;
            CHECK(img.width == 40 && img.height == 30);
        } else {
            bad++;
            CHECK(rc == PM_ERR_FORMAT || rc == PM_ERR_UNSUPPORTED);
        }
    }
    CHECK(bad > 0);
    // bit flips
    for (size_t i = 0; i < b.len; i += 3) {
        char save = b.data[i];
        b.data[i] ^= 0x55;
        int rc = decode(b.data, b.len, &img, &info, &err);
        CHECK(rc == PM_OK || rc == PM_ERR_FORMAT || rc == PM_ERR_UNSUPPORTED || rc == PM_ERR_LIMIT);
        b.data[i] = save;
    }
    CHECK(encode(&src, IMAGE_ENCODE_WEBP, 80, 0, &b) == PM_OK);
    for (size_t n = 0; n < b.len; n += 5) {
        int rc = decode(b.data, n, &img, &info, &err);
        CHECK(rc != PM_OK || (img.width == 40 && img.height == 30));
    }
    (void)ok;
    // a bytebuf limit smaller than the encoded image
    struct bytebuf small;
    bytebuf_init(&small, 100);
    struct image_encode_opts eo = IMAGE_ENCODE_OPTS_INIT;
    CHECK(image_encode(ctx, &src, &eo, &small, &err) == PM_ERR_LIMIT);
    eo.format = IMAGE_ENCODE_WEBP;
    CHECK(image_encode(ctx, &src, &eo, &small, &err) == PM_ERR_LIMIT);
    eo.quality = 101;
    CHECK(image_encode(ctx, &src, &eo, &small, &err) == PM_ERR_USAGE);
    struct image empty = IMAGE_INIT;
    CHECK(image_encode(ctx, &empty, NULL, &small, &err) == PM_ERR_USAGE);
    bytebuf_release(&small);
    bytebuf_release(&b);
    image_release(&src);
    image_release(&img);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

// A PNG chunk with its CRC appended at p; returns the bytes written.
static size_t png_chunk(uint8_t *p, const char *type, const uint8_t *data, uint32_t n)
{
    put_be32(p, n);
    memcpy(p + 4, type, 4);
    if (n)
        memcpy(p + 8, data, n);
    put_be32(p + 8 + n, (uint32_t)crc32(0, p + 4, 4 + n));
    return 12 + n;
}

static void expect_bomb(const void *p, size_t n, const char *what)
{
    struct image img = IMAGE_INIT;
    struct pm_error err = PM_ERROR_INIT;
    double t0 = now_s();
    int rc = decode(p, n, &img, NULL, &err);
    double dt = now_s() - t0;
    CHECK(rc == PM_ERR_LIMIT);
    CHECK(strstr(err.msg, "too many pixels") != NULL);
    CHECK(img.pixels == NULL); // refused before allocating the image
    CHECK(dt < 0.05);
    if (rc != PM_ERR_LIMIT || dt >= 0.05)
        fprintf(stderr, "%s bomb: rc=%d %.3fs %s\n", what, rc, dt, err.msg);
    image_release(&img);
}

static void test_bombs(void)
{
    // JPEG: a real 16x16 file whose SOF0 claims 60000x60000
    struct image src = IMAGE_INIT;
    struct bytebuf b;
    bytebuf_init(&b, 0);
    make_gradient(&src, 16, 16);
    CHECK(encode(&src, IMAGE_ENCODE_JPEG, 90, 0, &b) == PM_OK);
    uint8_t *d = (uint8_t *)b.data;
    int patched = 0;
    for (size_t i = 0; i + 9 < b.len; i++)
        if (d[i] == 0xFF && d[i + 1] == 0xC0) { // SOF0: len(2) prec(1) h(2) w(2)
            d[i + 5] = 60000 >> 8, d[i + 6] = 60000 & 255;
            d[i + 7] = 60000 >> 8, d[i + 8] = 60000 & 255;
            patched = 1;
            break;
        }
    CHECK(patched);
    expect_bomb(b.data, b.len, "jpeg");
    // the same file claiming 12-bit samples: a known but unsupported feature
    for (size_t i = 0; i + 9 < b.len; i++)
        if (d[i] == 0xFF && d[i + 1] == 0xC0) {
            d[i + 4] = 12;
            d[i + 5] = 0, d[i + 6] = 16, d[i + 7] = 0, d[i + 8] = 16;
            break;
        }
    struct pm_error e12 = PM_ERROR_INIT;
    struct image i12 = IMAGE_INIT;
    CHECK(decode(b.data, b.len, &i12, NULL, &e12) == PM_ERR_UNSUPPORTED);
    CHECK(strstr(e12.msg, "unsupported jpeg") != NULL);
    image_release(&i12);

    // PNG: IHDR 60000x60000 RGB followed by a tiny IDAT
    uint8_t png[128];
    size_t n = 0;
    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, 60000);
    put_be32(ihdr + 4, 60000);
    ihdr[8] = 8, ihdr[9] = 2;
    n += png_chunk(png + n, "IHDR", ihdr, 13);
    uint8_t idat[] = {0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01};
    n += png_chunk(png + n, "IDAT", idat, sizeof idat);
    n += png_chunk(png + n, "IEND", NULL, 0);
    expect_bomb(png, n, "png");

    // GIF: 60000x60000 logical screen
    uint8_t gif[] = {'G',  'I',  'F',  '8',  '9', 'a', 0x60, 0xEA, 0x60, 0xEA, 0x80, 0,
                     0,    0,    0,    0,    255, 255, 255,  ',',  0,    0,    0,    0,
                     0x60, 0xEA, 0x60, 0xEA, 0,   2,   2,    0x4C, 0x01, 0,    ';'};
    expect_bomb(gif, sizeof gif, "gif");

    // WebP lossless: 16383x16383 > the default limit
    uint8_t webp[] = {'R',  'I', 'F', 'F', 26, 0, 0, 0, 'W',  'E',  'B',  'P',
                      'V',  'P', '8', 'L', 14, 0, 0, 0, 0x2f, 0xfe, 0xbf, 0xff,
                      0x0f, 0,   0,   0,   0,  0, 0, 0, 0,    0};
    expect_bomb(webp, sizeof webp, "webp");

    // an explicit small limit on a valid image
    struct image img = IMAGE_INIT;
    struct pm_error err = PM_ERROR_INIT;
    CHECK(encode(&src, IMAGE_ENCODE_JPEG, 90, 0, &b) == PM_OK);
    struct image_decode_opts o = IMAGE_DECODE_OPTS_INIT;
    o.max_pixels = 255;
    CHECK(image_decode(ctx, b.data, b.len, &o, &img, NULL, &err) == PM_ERR_LIMIT);
    o.max_pixels = 256;
    CHECK(image_decode(ctx, b.data, b.len, &o, &img, NULL, &err) == PM_OK);
    image_release(&img);
    image_release(&src);
    bytebuf_release(&b);
}

// APP1 Exif payload with one orientation entry, little or big endian.
static size_t make_exif(uint8_t *p, int orientation, int le)
{
    memcpy(p, "Exif\0\0", 6);
    uint8_t *t = p + 6;
    memset(t, 0, 26);
    memcpy(t, le ? "II" : "MM", 2);
#define W16(q, v)                                                                                  \
    (le ? ((q)[0] = (uint8_t)(v), (q)[1] = (uint8_t)((v) >> 8))                                    \
        : ((q)[1] = (uint8_t)(v), (q)[0] = (uint8_t)((v) >> 8)))
    W16(t + 2, 42);
    if (le)
        t[4] = 8; // IFD0 at offset 8
    else
        t[7] = 8;
    W16(t + 8, 1);
    W16(t + 10, 0x0112);
    W16(t + 12, 3);
    W16(t + 14, 1); // count 1 (LE low half; BE needs it in the low bytes of 32 bits)
    if (!le)
        t[14] = 0, t[15] = 0, t[16] = 0, t[17] = 1;
    W16(t + 18, orientation);
#undef W16
    return 6 + 26;
}

static void test_exif(void)
{
    uint8_t e[64];
    for (int o = 1; o <= 8; o++) {
        size_t n = make_exif(e, o, 1);
        CHECK(image_exif_orientation(e, n) == o);
        n = make_exif(e, o, 0);
        CHECK(image_exif_orientation(e, n) == o);
        for (size_t k = 0; k < n; k++) // every truncation is safe
            CHECK(image_exif_orientation(e, k) == (k >= 28 ? o : 1));
    }
    size_t n = make_exif(e, 9, 1);
    CHECK(image_exif_orientation(e, n) == 1);
    n = make_exif(e, 6, 1);
    e[6 + 4] = 0xF0; // IFD offset far outside
    CHECK(image_exif_orientation(e, n) == 1);
    CHECK(image_exif_orientation(NULL, 0) == 1);
}

// Decode a JPEG of src with orientation tag o inserted and check the output is src
// transformed as EXIF says (checked at the four corners' colours).
static void test_orientation(void)
{
    struct image src = IMAGE_INIT, img = IMAGE_INIT;
    struct bytebuf b, j;
    bytebuf_init(&b, 0);
    bytebuf_init(&j, 0);
    make_gradient(&src, 64, 32);
    CHECK(encode(&src, IMAGE_ENCODE_JPEG, 95, 0, &b) == PM_OK);
    for (int o = 1; o <= 8; o++) {
        uint8_t e[64];
        size_t n = make_exif(e, o, o % 2);
        bytebuf_clear(&j);
        bytebuf_append(&j, b.data, 2);
        uint8_t hdr[4] = {0xFF, 0xE1, (uint8_t)((n + 2) >> 8), (uint8_t)(n + 2)};
        bytebuf_append(&j, hdr, 4);
        bytebuf_append(&j, e, n);
        bytebuf_append(&j, b.data + 2, b.len - 2);
        struct pm_error err = PM_ERROR_INIT;
        struct image_info info;
        CHECK(decode(j.data, j.len, &img, &info, &err) == PM_OK);
        CHECK(info.orientation == o);
        int sw = o >= 5;
        CHECK(img.width == (sw ? 32 : 64) && img.height == (sw ? 64 : 32));
        CHECK(info.width == img.width && info.height == img.height);
        // where does the source's top-left (red 0, green 0) land, and its top-right?
        // src(x, y) -> display position per EXIF: find the darkest-red & darkest-green pixel
        int W = img.width, H = img.height;
        int tlx = -1, tly = -1, trx = -1, try_ = -1;
        const int cx[4] = {0, W - 1, 0, W - 1}, cy[4] = {0, 0, H - 1, H - 1};
        for (int c = 0; c < 4; c++) {
            const uint8_t *p = img.pixels + ((size_t)cy[c] * W + cx[c]) * 3;
            if (p[0] < 40 && p[1] < 40)
                tlx = cx[c], tly = cy[c];
            if (p[0] > 215 && p[1] < 40)
                trx = cx[c], try_ = cy[c];
        }
        // expected display positions of source top-left and top-right corners
        static const int exp_tl[9][2] = {{0},    {0, 0}, {1, 0}, {1, 1}, {0, 1},
                                         {0, 0}, {1, 0}, {1, 1}, {0, 1}};
        static const int exp_tr[9][2] = {{0},    {1, 0}, {0, 0}, {0, 1}, {1, 1},
                                         {0, 1}, {1, 1}, {1, 0}, {0, 0}};
        CHECK(tlx == exp_tl[o][0] * (W - 1) && tly == exp_tl[o][1] * (H - 1));
        CHECK(trx == exp_tr[o][0] * (W - 1) && try_ == exp_tr[o][1] * (H - 1));
        struct image_decode_opts opt = IMAGE_DECODE_OPTS_INIT;
        opt.no_orientation = true;
        CHECK(image_decode(ctx, j.data, j.len, &opt, &img, &info, &err) == PM_OK);
        CHECK(img.width == 64 && info.orientation == o);
    }
    image_release(&src);
    image_release(&img);
    bytebuf_release(&b);
    bytebuf_release(&j);
}

static void geom(enum image_resize_mode m, int size, int bigger, int w, int h, int ew, int eh,
                 int ow, int oh)
{
    struct image_resize_params p = {m, size, bigger != 0};
    struct image_geometry g;
    CHECK(image_geometry_compute(&p, w, h, &g) == PM_OK);
    CHECK(g.scaled_width == ew && g.scaled_height == eh);
    CHECK(g.out_width == ow && g.out_height == oh);
    if (g.scaled_width != ew || g.scaled_height != eh || g.out_width != ow || g.out_height != oh)
        fprintf(stderr, "  %s %d %dx%d: scaled %dx%d out %dx%d\n", image_resize_mode_name(m), size,
                w, h, g.scaled_width, g.scaled_height, g.out_width, g.out_height);
}

static void test_geometry(void)
{
    // expected values worked out by hand from img2dataset's formulas (see image_resize.h)
    geom(IMAGE_RESIZE_NO, 256, 0, 1000, 800, 1000, 800, 1000, 800);
    geom(IMAGE_RESIZE_KEEP_RATIO, 256, 0, 1000, 800, 320, 256, 320, 256);
    geom(IMAGE_RESIZE_KEEP_RATIO, 256, 0, 100, 50, 512, 256, 512, 256); // upscale
    geom(IMAGE_RESIZE_KEEP_RATIO, 256, 1, 100, 50, 100, 50, 100, 50);   // only bigger
    geom(IMAGE_RESIZE_KEEP_RATIO, 3, 0, 5, 2, 8, 3, 8, 3);              // 7.5 -> 8 (half to even)
    geom(IMAGE_RESIZE_KEEP_RATIO, 1, 0, 5, 2, 2, 1, 2, 1);              // 2.5 -> 2 (half to even)
    geom(IMAGE_RESIZE_KEEP_RATIO, 1, 0, 7, 2, 4, 1, 4, 1);              // 3.5 -> 4
    geom(IMAGE_RESIZE_KEEP_RATIO_LARGEST, 256, 0, 1000, 800, 256, 205, 256, 205); // 204.8
    geom(IMAGE_RESIZE_KEEP_RATIO_LARGEST, 256, 1, 200, 100, 200, 100, 200, 100);
    geom(IMAGE_RESIZE_CENTER_CROP, 256, 0, 1000, 800, 320, 256, 256, 256);
    geom(IMAGE_RESIZE_CENTER_CROP, 256, 0, 300, 256, 300, 256, 256, 256); // scale 1: crop only
    geom(IMAGE_RESIZE_CENTER_CROP, 256, 1, 300, 256, 300, 256, 300, 256); // not bigger
    geom(IMAGE_RESIZE_BORDER, 256, 0, 1000, 800, 256, 205, 256, 256);
    geom(IMAGE_RESIZE_BORDER, 256, 0, 100, 300, 85, 256, 256, 256); // 85.33
    geom(IMAGE_RESIZE_BORDER, 256, 1, 100, 300, 85, 256, 256, 256); // 300 > 256
    geom(IMAGE_RESIZE_BORDER, 256, 1, 100, 200, 100, 200, 100, 200);
    geom(IMAGE_RESIZE_FIXED, 64, 0, 1000, 800, 64, 64, 64, 64);

    struct image_resize_params p = {IMAGE_RESIZE_CENTER_CROP, 256, false};
    struct image_geometry g;
    CHECK(image_geometry_compute(&p, 1000, 800, &g) == PM_OK);
    CHECK(g.crop_x == 32 && g.crop_y == 0); // (320 - 256) // 2
    CHECK(image_geometry_compute(&p, 801, 1000, &g) == PM_OK);
    // 1000 * (256/801) = 319.6 -> 320; crop y = (320 - 256) // 2 = 32
    CHECK(g.scaled_height == 320 && g.crop_y == 32 && g.crop_x == 0);
    p.mode = IMAGE_RESIZE_BORDER;
    CHECK(image_geometry_compute(&p, 1000, 800, &g) == PM_OK);
    CHECK(g.pad_x == 0 && g.pad_y == 25); // (256 - 205) // 2
    CHECK(image_geometry_compute(&p, 300, 100, &g) == PM_OK);
    CHECK(g.scaled_height == 85 && g.pad_y == 85); // (256 - 85) // 2
    p.size = 0;
    CHECK(image_geometry_compute(&p, 300, 100, &g) == PM_ERR_USAGE);
    CHECK(image_geometry_compute(&p, 0, 100, &g) == PM_ERR_USAGE);

    enum image_resize_mode m;
    CHECK(image_resize_mode_parse("keep_ratio_largest", &m) == PM_OK &&
          m == IMAGE_RESIZE_KEEP_RATIO_LARGEST);
    CHECK(image_resize_mode_parse("bogus", &m) == PM_ERR_USAGE);
    CHECK_STR(image_resize_mode_name(IMAGE_RESIZE_BORDER), "border");
}

static void test_resize_values(void)
{
    struct image src = IMAGE_INIT, dst = IMAGE_INIT;
    struct pm_error err = PM_ERROR_INIT;
    // 2x downscale of a random image = exact 2x2 box means
    CHECK(image_reserve(&src, 64, 48) == PM_OK);
    srand(7);
    for (size_t i = 0; i < 64 * 48 * 3; i++)
        src.pixels[i] = (uint8_t)(rand() & 255);
    struct image_resize_params p = {IMAGE_RESIZE_KEEP_RATIO, 24, false};
    struct image_geometry g;
    CHECK(image_geometry_compute(&p, 64, 48, &g) == PM_OK);
    CHECK(image_resize(ctx, &src, &g, &dst, &err) == PM_OK);
    CHECK(dst.width == 32 && dst.height == 24);
    int maxd = 0;
    for (int y = 0; y < 24; y++)
        for (int x = 0; x < 32; x++)
            for (int c = 0; c < 3; c++) {
                int s = 0;
                for (int k = 0; k < 4; k++)
                    s += src.pixels[((size_t)(2 * y + k / 2) * 64 + 2 * x + k % 2) * 3 + c];
                int e = (s + 2) / 4, v = dst.pixels[((size_t)y * 32 + x) * 3 + c];
                if (abs(e - v) > maxd)
                    maxd = abs(e - v);
            }
    CHECK(maxd <= 1); // .5 ties may round either way in float
    // 3 -> 2 uses fractional weights: out0 = (a + b/2) / 1.5
    struct image s3 = IMAGE_INIT;
    CHECK(image_reserve(&s3, 3, 1) == PM_OK);
    uint8_t vals[9] = {30, 30, 30, 90, 90, 90, 240, 240, 240};
    memcpy(s3.pixels, vals, 9);
    p.mode = IMAGE_RESIZE_FIXED, p.size = 2;
    CHECK(image_geometry_compute(&p, 3, 1, &g) == PM_OK);
    g.scaled_height = g.out_height = g.copy_height = 1; // 3x1 -> 2x1
    CHECK(image_resize(ctx, &s3, &g, &dst, &err) == PM_OK);
    CHECK(dst.width == 2 && dst.height == 1);
    CHECK(dst.pixels[0] == 50 && dst.pixels[3] == 190); // (30+45)/1.5, (45+240)/1.5
    image_release(&s3);

    // constant images stay constant in every mode, up or down; border pads white
    CHECK(image_reserve(&src, 37, 23) == PM_OK);
    memset(src.pixels, 77, 37 * 23 * 3);
    enum image_resize_mode modes[] = {IMAGE_RESIZE_KEEP_RATIO, IMAGE_RESIZE_KEEP_RATIO_LARGEST,
                                      IMAGE_RESIZE_CENTER_CROP, IMAGE_RESIZE_BORDER,
                                      IMAGE_RESIZE_FIXED};
    int sizes[] = {7, 23, 50, 101};
    for (int mi = 0; mi < 5; mi++)
        for (int si = 0; si < 4; si++) {
            struct image_resize_params q = {modes[mi], sizes[si], false};
            CHECK(image_geometry_compute(&q, 37, 23, &g) == PM_OK);
            CHECK(image_resize(ctx, &src, &g, &dst, &err) == PM_OK);
            CHECK(dst.width == g.out_width && dst.height == g.out_height);
            int bad = 0;
            for (int y = 0; y < dst.height; y++)
                for (int x = 0; x < dst.width; x++) {
                    int inside = x >= g.pad_x && x < g.pad_x + g.copy_width && y >= g.pad_y &&
                                 y < g.pad_y + g.copy_height;
                    const uint8_t *px = dst.pixels + ((size_t)y * dst.width + x) * 3;
                    if (px[0] != (inside ? 77 : 255))
                        bad++;
                }
            CHECK(bad == 0);
        }
    // upscale is smooth: a gradient stays monotonic-ish and close to the linear ramp
    make_gradient(&src, 20, 10);
    p.mode = IMAGE_RESIZE_KEEP_RATIO, p.size = 40;
    CHECK(image_geometry_compute(&p, 20, 10, &g) == PM_OK);
    CHECK(g.upscale);
    CHECK(image_resize(ctx, &src, &g, &dst, &err) == PM_OK);
    CHECK(dst.width == 80 && dst.height == 40);
    int worst = 0;
    for (int x = 0; x < 80; x++) {
        double sx = (x + 0.5) / 4 - 0.5;
        sx = sx < 0 ? 0 : sx > 19 ? 19 : sx;
        int e = (int)lround(sx * 255 / 19), v = dst.pixels[((size_t)20 * 80 + x) * 3];
        if (abs(e - v) > worst)
            worst = abs(e - v);
    }
    CHECK(worst <= 3);
    CHECK(image_resize(ctx, &src, &g, &src, &err) == PM_ERR_USAGE);
    // a thin strip with keep_ratio would explode: refused, not allocated
    CHECK(image_reserve(&src, 1, 20000) == PM_OK);
    memset(src.pixels, 0, 20000 * 3);
    p.mode = IMAGE_RESIZE_KEEP_RATIO, p.size = 256;
    CHECK(image_geometry_compute(&p, 1, 20000, &g) == PM_OK);
    CHECK(g.out_width == 256 && g.out_height == 5120000);
    CHECK(image_resize(ctx, &src, &g, &dst, &err) == PM_ERR_LIMIT);
    CHECK(strstr(err.msg, "too large") != NULL);
    image_release(&src);
    image_release(&dst);
}

static void test_roundtrip(void)
{
    struct image src = IMAGE_INIT, img = IMAGE_INIT;
    struct bytebuf b;
    bytebuf_init(&b, 0);
    struct pm_error err = PM_ERROR_INIT;
    struct image_info info;
    make_gradient(&src, 123, 77);
    CHECK(encode(&src, IMAGE_ENCODE_JPEG, 95, 0, &b) == PM_OK);
    CHECK(decode(b.data, b.len, &img, &info, &err) == PM_OK);
    CHECK(info.format == IMAGE_FORMAT_JPEG && !info.has_alpha);
    CHECK(psnr(&src, &img) > 35);
    CHECK(encode(&src, IMAGE_ENCODE_WEBP, 90, 0, &b) == PM_OK);
    CHECK(decode(b.data, b.len, &img, &info, &err) == PM_OK);
    CHECK(info.format == IMAGE_FORMAT_WEBP);
    CHECK(psnr(&src, &img) > 30);
    CHECK(encode(&src, IMAGE_ENCODE_WEBP, 90, 1, &b) == PM_OK);
    CHECK(decode(b.data, b.len, &img, &info, &err) == PM_OK);
    CHECK(psnr(&src, &img) == 99); // lossless
    // reduced decode: the JPEG decoder scales in the DCT domain, at least as large as asked
    make_gradient(&src, 800, 600);
    CHECK(encode(&src, IMAGE_ENCODE_JPEG, 90, 0, &b) == PM_OK);
    struct image_decode_opts o = IMAGE_DECODE_OPTS_INIT;
    o.min_width = 150, o.min_height = 100;
    CHECK(image_decode(ctx, b.data, b.len, &o, &img, &info, &err) == PM_OK);
    CHECK(img.width == 200 && img.height == 150 && info.reduced); // 2/8
    CHECK(info.width == 800 && info.height == 600);
    struct image_resize_params rp = {IMAGE_RESIZE_BORDER, 256, false};
    o.min_width = o.min_height = 0;
    o.resize = &rp; // needs 256x192 -> 1/2 = 400x300 (1/4 would be 200x150)
    CHECK(image_decode(ctx, b.data, b.len, &o, &img, &info, &err) == PM_OK);
    CHECK(img.width == 400 && img.height == 300);
    struct image_geometry g;
    struct image full = IMAGE_INIT, r1 = IMAGE_INIT, r2 = IMAGE_INIT;
    CHECK(image_geometry_compute(&rp, info.width, info.height, &g) == PM_OK);
    CHECK(image_resize(ctx, &img, &g, &r1, &err) == PM_OK);
    CHECK(decode(b.data, b.len, &full, &info, &err) == PM_OK);
    CHECK(image_resize(ctx, &full, &g, &r2, &err) == PM_OK);
    CHECK(r1.width == 256 && r1.height == 256 && psnr(&r1, &r2) > 35);
    // phash: same image decoded both ways hashes alike; an unrelated image does not
    uint64_t h1, h2, h3;
    CHECK(image_phash(ctx, &r1, &h1, &err) == PM_OK);
    CHECK(image_phash(ctx, &r2, &h2, &err) == PM_OK);
    // (a synthetic image has many DCT coefficients near the median, so a looser bound
    // than the <= 6 that tests/test_images.py checks on photographs)
    CHECK(image_phash_distance(h1, h2) <= 12);
    for (size_t i = 0; i < (size_t)r1.width * r1.height * 3; i++)
        r1.pixels[i] = (uint8_t)(((i / 3) % 256 / 32 * 37 + (i / 3 / 256) / 16 * 71) & 255);
    CHECK(image_phash(ctx, &r1, &h3, &err) == PM_OK);
    CHECK(image_phash_distance(h1, h3) > 16);
    char hex[17];
    image_phash_format(0x0123456789abcdefULL, hex);
    CHECK_STR(hex, "0123456789abcdef");
    image_release(&full);
    image_release(&r1);
    image_release(&r2);
    image_release(&src);
    image_release(&img);
    bytebuf_release(&b);
}

int main(void)
{
    ctx = image_ctx_create();
    CHECK(ctx != NULL);
    test_errors();
    test_bombs();
    test_exif();
    test_orientation();
    test_geometry();
    test_resize_values();
    test_roundtrip();
    image_ctx_free(ctx);
    image_ctx_free(NULL);
    image_release(NULL);
    return CHECK_DONE();
}
