/* libFuzzer target: image_decode on arbitrary bytes, with and without a resize request
 * (which exercises the reduced JPEG/WebP decode paths), then resize the result. The pixel
 * limit is small so that the fuzzer explores parsers instead of allocating. */
#include "image.h"
#include "image_decode.h"
#include "image_phash.h"
#include "image_resize.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct image_ctx *ctx;
    static struct image img, out;
    if (!ctx)
        ctx = image_ctx_create(); // reused across inputs, as a worker thread would
    struct image_decode_opts o = IMAGE_DECODE_OPTS_INIT;
    o.max_pixels = 1u << 18;
    struct image_resize_params rp = {IMAGE_RESIZE_BORDER, 16, false};
    if (size > 0 && (data[size - 1] & 1)) {
        rp.mode = (enum image_resize_mode)(data[size - 1] >> 1) % 6;
        o.resize = &rp;
    }
    struct pm_error err = PM_ERROR_INIT;
    struct image_info info;
    if (image_decode(ctx, data, size, &o, &img, &info, &err) == PM_OK) {
        struct image_geometry g;
        if (image_geometry_compute(&rp, info.width, info.height, &g) == PM_OK)
            image_resize(ctx, &img, &g, &out, &err);
        uint64_t h;
        image_phash(ctx, &img, &h, &err);
    }
    return 0;
}
