/*
 * pm_codec_floor — the codec floor of `pixelmill download` for bench/download: decode
 * (reduced decode for the target, as the downloader does) + resize + encode of a list of
 * image files already in memory, one thread, no network, no hashing. Prints images,
 * successes and CPU seconds as one JSON line.
 *
 *   pm_codec_floor --size 256 --mode border --quality 95 [--iters N] [--phash 1] FILE...
 *
 * --phash 1 also computes the 64-bit pHash of each decoded image, as the downloader does
 * (the same work per image, minus network, XXH3 and output files).
 */
#include "bytebuf.h"
#include "image.h"
#include "image_decode.h"
#include "image_encode.h"
#include "image_phash.h"
#include "image_resize.h"
#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    struct image_resize_params rp = {IMAGE_RESIZE_BORDER, 256, false};
    struct image_encode_opts eo = IMAGE_ENCODE_OPTS_INIT;
    int iters = 1, first = 1, phash = 0;
    for (; first < argc && !strncmp(argv[first], "--", 2); first += 2) {
        if (first + 1 >= argc)
            return 2;
        if (!strcmp(argv[first], "--size"))
            rp.size = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--mode")) {
            if (image_resize_mode_parse(argv[first + 1], &rp.mode))
                return 2;
        } else if (!strcmp(argv[first], "--quality"))
            eo.quality = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--phash"))
            phash = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "--iters"))
            iters = atoi(argv[first + 1]);
        else
            return 2;
    }
    size_t n = (size_t)(argc - first);
    struct bytebuf *files = calloc(n ? n : 1, sizeof *files);
    if (!files)
        return 1;
    for (size_t i = 0; i < n; i++) {
        FILE *f = fopen(argv[first + (int)i], "rb");
        if (!f) {
            perror(argv[first + (int)i]);
            return 1;
        }
        bytebuf_init(&files[i], 0);
        char buf[65536];
        size_t k;
        while ((k = fread(buf, 1, sizeof buf, f)) > 0)
            bytebuf_append(&files[i], buf, k);
        fclose(f);
    }
    struct image_ctx *ctx = image_ctx_create();
    struct image dec = IMAGE_INIT, out = IMAGE_INIT;
    struct bytebuf enc = BYTEBUF_INIT;
    struct image_decode_opts dopts = IMAGE_DECODE_OPTS_INIT;
    dopts.resize = &rp;
    long ok = 0, total = 0;
    double t0 = cpu_s();
    for (int it = 0; it < iters; it++)
        for (size_t i = 0; i < n; i++) {
            struct pm_error err = PM_ERROR_INIT;
            struct image_info info;
            struct image_geometry g;
            total++;
            if (image_decode(ctx, files[i].data, files[i].len, &dopts, &dec, &info, &err) ||
                image_geometry_compute(&rp, info.width, info.height, &g))
                continue;
            uint64_t h;
            if (phash && image_phash(ctx, &dec, &h, &err))
                continue;
            const struct image *src = &dec;
            if (!(g.identity && !info.reduced)) {
                if (image_resize(ctx, &dec, &g, &out, &err))
                    continue;
                src = &out;
            }
            if (image_encode(ctx, src, &eo, &enc, &err) == PM_OK)
                ok++;
        }
    double cpu = cpu_s() - t0;
    printf("{\"images\": %ld, \"successes\": %ld, \"cpu_s\": %.3f, \"per_cpu_s\": %.1f}\n", total,
           ok, cpu, cpu > 0 ? ok / cpu : 0.0);
    for (size_t i = 0; i < n; i++)
        bytebuf_release(&files[i]);
    free(files);
    bytebuf_release(&enc);
    image_release(&dec);
    image_release(&out);
    image_ctx_free(ctx);
    return 0;
}
