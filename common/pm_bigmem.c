#include "pm_bigmem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

// Each array is preceded by where its memory came from.
struct big_header {
    void *base;    // what malloc or mmap returned
    size_t length; // the mapping's length; 0: from malloc
};

#define BIG_MAP_MIN ((size_t)4 << 20) // smaller arrays come from malloc
#define HUGE_PAGE ((size_t)2 << 20)

void *pm_big_alloc(size_t bytes)
{
    const size_t head = sizeof(struct big_header);
    struct big_header h = {NULL, 0};
    uintptr_t p;
    if (bytes < BIG_MAP_MIN) {
        if (!(h.base = malloc(bytes + head + 64)))
            return NULL;
        p = ((uintptr_t)h.base + head + 63) / 64 * 64;
    } else {
        if (bytes > SIZE_MAX - 2 * HUGE_PAGE)
            return NULL;
        size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
        h.length = rounded + HUGE_PAGE; // room to align the start to 2 MiB
        h.base = mmap(NULL, h.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (h.base == MAP_FAILED)
            return NULL;
        p = ((uintptr_t)h.base + head + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
#ifdef MADV_HUGEPAGE
        madvise((void *)p, rounded, MADV_HUGEPAGE); // advice only: failure changes nothing
#endif
    }
    memcpy((void *)(p - head), &h, head);
    return (void *)p;
}

void *pm_big_realloc(void *p, size_t keep, size_t bytes)
{
    void *q = pm_big_alloc(bytes);
    if (!q)
        return NULL;
    if (p && keep)
        memcpy(q, p, keep < bytes ? keep : bytes);
    pm_big_free(p);
    return q;
}

void pm_big_free(void *p)
{
    if (!p)
        return;
    struct big_header h;
    memcpy(&h, (char *)p - sizeof h, sizeof h);
    if (h.length)
        munmap(h.base, h.length);
    else
        free(h.base);
}
