#include "pm_array.h"

#include "pm_error.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int pm_array_reserve_one(void *items, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return PM_OK;
    size_t want = *cap ? *cap * 2 : first;
    if (want < *cap || want > SIZE_MAX / size)
        return PM_ERR_NOMEM;
    void *p;
    memcpy(&p, items, sizeof p);
    p = realloc(p, want * size);
    if (!p)
        return PM_ERR_NOMEM;
    memcpy(items, &p, sizeof p);
    *cap = want;
    return PM_OK;
}
