/* Unit tests for common/pm_bigmem: alignment, contents kept by realloc, sizes that cannot
 * be had, and that a large array's memory is resident only where written and goes back
 * to the system when freed (read from /proc/self/statm). */
#include "check.h"
#include "pm_bigmem.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static long resident_mib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    if (f)
        fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE) / (1 << 20);
}

int main(void)
{
    // Small arrays (malloc) and large ones (a mapping) are 64-byte aligned; large ones start
    // on a 2 MiB boundary.
    unsigned char *small = pm_big_alloc(100);
    CHECK(small && (uintptr_t)small % 64 == 0);
    memset(small, 7, 100);
    size_t big_bytes = (size_t)5 << 20;
    unsigned char *big = pm_big_alloc(big_bytes);
    CHECK(big && (uintptr_t)big % ((size_t)2 << 20) == 0);
    memset(big, 9, big_bytes);

    // realloc keeps the first `keep` bytes, from small to large and back.
    unsigned char *grown = pm_big_realloc(small, 100, big_bytes);
    CHECK(grown && grown[0] == 7 && grown[99] == 7);
    unsigned char *shrunk = pm_big_realloc(grown, big_bytes, 50);
    CHECK(shrunk && shrunk[0] == 7 && shrunk[49] == 7);
    pm_big_free(shrunk);
    pm_big_free(big);
    pm_big_free(NULL);

    // Sizes that cannot be mapped fail cleanly.
    CHECK(pm_big_alloc(SIZE_MAX) == NULL);
    CHECK(pm_big_alloc(SIZE_MAX - ((size_t)3 << 20)) == NULL);

    // A 256 MiB reservation costs nothing until written; written, it is resident; freed, it
    // is gone again (from malloc's heap a freed block this size could stay resident).
    long before = resident_mib();
    CHECK(before >= 0);
    size_t reserve = (size_t)256 << 20;
    unsigned char *r = pm_big_alloc(reserve);
    CHECK(r != NULL);
    CHECK(resident_mib() < before + 16);
    memset(r, 1, (size_t)128 << 20); // half of it
    long written = resident_mib();
    CHECK(written >= before + 120 && written < before + 200);
    pm_big_free(r);
    CHECK(resident_mib() < before + 16);
    return CHECK_DONE();
}
