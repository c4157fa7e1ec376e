/* Unit tests for common/pm_array: growth by doubling, no-op with room, overflow. */
#include "check.h"
#include "pm_array.h"
#include "pm_error.h"

#include <stdint.h>
#include <stdlib.h>

int main(void)
{
    int *v = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < 1000; i++) {
        CHECK(pm_array_reserve_one(&v, &cap, n, sizeof *v, 4) == PM_OK);
        CHECK(cap > n);
        v[n++] = i;
    }
    CHECK(cap == 1024); // 4, 8, ..., 1024
    long sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    CHECK(sum == 999L * 1000 / 2);
    // Room left: nothing changes.
    int *before = v;
    CHECK(pm_array_reserve_one(&v, &cap, 10, sizeof *v, 4) == PM_OK && v == before && cap == 1024);
    // A size that cannot be doubled fails and leaves the array as it was.
    size_t huge = SIZE_MAX / 2 + 1;
    CHECK(pm_array_reserve_one(&v, &huge, huge, sizeof *v, 4) == PM_ERR_NOMEM);
    CHECK(v == before && huge == SIZE_MAX / 2 + 1);
    size_t big = SIZE_MAX / 4; // doubled: more than SIZE_MAX / sizeof *v elements
    CHECK(pm_array_reserve_one(&v, &big, big, sizeof *v, 4) == PM_ERR_NOMEM && v == before);
    free(v);
    return CHECK_DONE();
}
