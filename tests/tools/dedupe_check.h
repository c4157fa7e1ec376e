/**
 * dedupe_check — the output side shared by pm_dedupe_exact_check and pm_dedupe_near_check:
 * each rank writes its records' "id keeper" lines into FILE.out.RANK (separate files, so
 * ranks' lines never interleave). Header-only.
 */
#ifndef PM_DEDUPE_CHECK_H
#define PM_DEDUPE_CHECK_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/** Create FILE.out.RANK and write "id keeper" for n records: record i's id is the
 * uint64_t at (char *)first_id + i * stride. Returns the open file for more lines (the
 * caller closes it), or NULL if it cannot be created. */
static inline FILE *dedupe_check_write(const char *file, int rank, const uint64_t *first_id,
                                       size_t stride, const uint64_t *keeper, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s.out.%d", file, rank);
    FILE *out = fopen(path, "w");
    for (size_t i = 0; out && i < n; i++) {
        uint64_t id;
        memcpy(&id, (const char *)first_id + i * stride, sizeof id);
        fprintf(out, "%" PRIu64 " %" PRIu64 "\n", id, keeper[i]);
    }
    return out;
}

#endif
