/*
 * pixelmill sample — images from a training checkpoint (DDIM with classifier-free
 * guidance), written as one PNG grid.
 */
#include "commands.h"
#include "image.h"
#include "atomic_file.h"
#include "bytebuf.h"
#include "image_png.h"
#include "pm_error.h"
#include "pm_log.h"
#include "trainer.h"

#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: pixelmill sample --checkpoint DIR [--prompt TEXT]... -o GRID.png [options]\n"
            "\n"
            "Generate images with the model of DIR/latest (a `pixelmill train` checkpoint\n"
            "directory) and write them as a PNG grid, row by row. Image i uses prompt\n"
            "i mod (number of prompts); no prompt: unconditional.\n"
            "\n"
            "Options:\n"
            "  --checkpoint DIR  the --checkpoint-dir of a training run\n"
            "  --prompt TEXT     a caption (repeatable)\n"
            "  --n N             images (default 16)\n"
            "  --guidance W      classifier-free guidance scale (default 3; 1 = none)\n"
            "  --steps N         DDIM steps (default 50)\n"
            "  --seed S          noise seed (default 0)\n"
            "  --ema             use the EMA weights (default: the raw weights)\n"
            "  --cols C          images per grid row (default: ceil(sqrt(n)))\n"
            "  --threads T       compute threads\n"
            "  -o, --output F    the PNG to write\n"
            "  -h, --help        this help\n");
}

// Read the config name from DIR/latest's state.bin (char[24] at offset 72, see
// docs/trainer.md).
static int checkpoint_config(const char *dir, char name[24], struct pm_error *err)
{
    char path[4096], step[256];
    snprintf(path, sizeof path, "%s/latest", dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return pm_error_set(err, PM_ERR_NOT_FOUND, "%s: no checkpoint (no 'latest')", dir);
    size_t k = fread(step, 1, sizeof step - 1, f);
    fclose(f);
    step[k] = 0;
    step[strcspn(step, "\r\n")] = 0;
    if (!step[0] || strchr(step, '/'))
        return pm_error_set(err, PM_ERR_FORMAT, "%s: bad contents", path);
    snprintf(path, sizeof path, "%s/%s/state.bin", dir, step);
    if (!(f = fopen(path, "rb")))
        return pm_error_set(err, PM_ERR_NOT_FOUND, "cannot open '%s'", path);
    unsigned char hdr[96];
    k = fread(hdr, 1, sizeof hdr, f);
    fclose(f);
    if (k != sizeof hdr)
        return pm_error_set(err, PM_ERR_FORMAT, "%s: truncated", path);
    memcpy(name, hdr + 72, 24);
    name[23] = 0;
    return PM_OK;
}

int cmd_sample(int argc, char **argv, const struct pm_mpi *mpi)
{
    (void)mpi;
    const char *dir = NULL, *outp = NULL;
    const char **prompts = calloc((size_t)argc + 1, sizeof *prompts);
    int nprompts = 0, n = 16, steps = 50, cols = 0, threads = 0;
    double guidance = 3;
    unsigned long long seed = 0;
    bool ema = false;
    if (!prompts)
        return PM_EXIT_FAILED;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            print_help(stdout);
            free(prompts);
            return PM_EXIT_OK;
        }
        if (!strcmp(s, "--ema")) {
            ema = true;
            continue;
        }
        if (i + 1 >= argc) {
            pm_log_error("%s: unknown option or missing value; see --help", s);
            free(prompts);
            return PM_EXIT_USAGE;
        }
        const char *v = argv[++i];
        char *e = NULL;
        errno = 0;
        if (!strcmp(s, "--checkpoint"))
            dir = v;
        else if (!strcmp(s, "-o") || !strcmp(s, "--output"))
            outp = v;
        else if (!strcmp(s, "--prompt"))
            prompts[nprompts++] = v;
        else if (!strcmp(s, "--n"))
            n = (int)strtol(v, &e, 10);
        else if (!strcmp(s, "--steps"))
            steps = (int)strtol(v, &e, 10);
        else if (!strcmp(s, "--cols"))
            cols = (int)strtol(v, &e, 10);
        else if (!strcmp(s, "--threads"))
            threads = (int)strtol(v, &e, 10);
        else if (!strcmp(s, "--seed"))
            seed = strtoull(v, &e, 10);
        else if (!strcmp(s, "--guidance"))
            guidance = strtod(v, &e);
        else {
            pm_log_error("unknown option '%s'; see --help", s);
            free(prompts);
            return PM_EXIT_USAGE;
        }
        if (e && (*e || e == v || errno)) {
            pm_log_error("%s: bad value '%s'", s, v);
            free(prompts);
            return PM_EXIT_USAGE;
        }
    }
    if (!dir || !outp || n < 1 || n > 4096 || steps < 1 || steps > 1000 || cols < 0 ||
        threads < 0 || !(guidance >= 0 && guidance <= 100)) {
        pm_log_error("--checkpoint and -o are required; --n 1..4096, --steps 1..1000, "
                     "--guidance 0..100");
        free(prompts);
        return PM_EXIT_USAGE;
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    struct pm_error err = PM_ERROR_INIT;
    char config[24];
    struct trainer *t = NULL;
    uint8_t *out = NULL;
    const char **per = NULL;
    struct image grid = IMAGE_INIT;
    int rc = checkpoint_config(dir, config, &err);
    struct trainer_options o;
    if (rc == PM_OK) {
        trainer_options_init(&o, config);
        o.max_batch = n < 8 ? n : 8;
        rc = trainer_create(&o, &t, &err);
    }
    if (rc == PM_OK) {
        unsigned char *blob = NULL;
        size_t blen = 0;
        rc = trainer_load(t, dir, &blob, &blen, &err);
        free(blob);
    }
    int S = 0;
    if (rc == PM_OK) {
        S = unet_get_config(trainer_model(t))->image_size;
        out = malloc((size_t)n * S * S * 3);
        per = calloc((size_t)n, sizeof *per);
        if (!out || !per)
            rc = pm_error_set(&err, PM_ERR_NOMEM, "out of memory");
    }
    if (rc == PM_OK) {
        for (int i = 0; i < n; i++)
            per[i] = nprompts ? prompts[i % nprompts] : "";
        rc = trainer_sample(t, per, n, (float)guidance, steps, seed, ema, out, &err);
    }
    if (rc == PM_OK) {
        int c = cols ? cols : 1;
        while (!cols && c * c < n)
            c++;
        int rows = (n + c - 1) / c, gap = 2;
        rc = image_reserve(&grid, c * S + (c - 1) * gap, rows * S + (rows - 1) * gap);
        if (rc == PM_OK) {
            memset(grid.pixels, 0, (size_t)grid.width * grid.height * 3);
            for (int i = 0; i < n; i++) {
                int x0 = (i % c) * (S + gap), y0 = (i / c) * (S + gap);
                for (int y = 0; y < S; y++)
                    memcpy(grid.pixels + ((size_t)(y0 + y) * grid.width + x0) * 3,
                           out + ((size_t)i * S * S + (size_t)y * S) * 3, (size_t)S * 3);
            }
            struct bytebuf png;
            bytebuf_init(&png, 0);
            rc = image_png_encode(&grid, &png, &err);
            if (rc == PM_OK)
                rc = atomic_file_write_all(outp, png.data, png.len, &err);
            bytebuf_release(&png);
        } else {
            pm_error_set(&err, rc, "grid too large");
        }
    }
    if (rc == PM_OK)
        pm_log_info("wrote %d samples (%dx%d, %d steps, guidance %g, %s weights) to %s", n, S, S,
                    steps, guidance, ema ? "EMA" : "raw", outp);
    else
        pm_log_error("%s", err.msg);
    image_release(&grid);
    free(per);
    free(out);
    free(prompts);
    trainer_free(t);
    return rc == PM_OK ? PM_EXIT_OK : pm_exit_from_status(rc);
}
