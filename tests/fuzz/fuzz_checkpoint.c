/* libFuzzer target: the checkpoint readers (safetensors header + data, state.bin) over
 * arbitrary bytes must never crash, leak or read out of bounds, and must leave the caller's
 * arrays untouched when they fail. The first input byte picks the reader. */
#include "checkpoint.h"
#include "unet.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct unet *model;
static float *a, *b, *m, *v;
static size_t np;
static char path[64];

static void setup(void)
{
    struct unet_config c = {0};
    snprintf(c.name, sizeof(c.name), "fuzz");
    c.image_size = 4, c.in_channels = 1, c.channels = 2, c.num_levels = 1, c.mult[0] = 1;
    c.num_res_blocks = 1, c.attn_resolution = 4, c.groups = 1, c.temb_dim = 2;
    c.cap_buckets = 2, c.cap_dim = 1;
    struct pm_error err = PM_ERROR_INIT;
    if (unet_create(&c, 1, &model, &err) != PM_OK)
        abort();
    np = unet_num_params(model);
    a = calloc(np, 4), b = calloc(np, 4), m = calloc(np, 4), v = calloc(np, 4);
    snprintf(path, sizeof(path), "/tmp/fuzz_checkpoint.%d", (int)getpid());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!model)
        setup();
    if (size < 1)
        return 0;
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    struct pm_error err = PM_ERROR_INIT;
    memset(a, 0, np * 4);
    if (data[0] & 1) {
        struct checkpoint_data d = {.model = model, .params = a, .adam_m = m, .adam_v = v};
        if (checkpoint_read_state(path, &d, &err) == PM_OK)
            free(d.loader);
        else if (!err.msg[0])
            abort();
    } else {
        uint64_t step;
        if (checkpoint_read_safetensors(path, model, a, (data[0] & 2) ? b : NULL, &step, &err) !=
            PM_OK) {
            for (size_t i = 0; i < np; i++)
                if (a[i] != 0.0f)
                    abort(); // a failed read must not have written
            if (!err.msg[0])
                abort();
        }
    }
    unlink(path);
    return 0;
}
