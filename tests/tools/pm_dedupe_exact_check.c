/* Reads "hash_hi hash_lo id" lines (hex, hex, decimal) from a file; rank r takes lines
 * r, r+size, ...; runs dedupe_exact_run and prints "id keeper" for its records, then
 * rank 0 prints "stats records duplicates groups rounds", into FILE.out.RANK (separate
 * files, so ranks' lines never interleave). Usage: FILE [MEMORY_LIMIT]. */
#include "dedupe_check.h"
#include "dedupe_exact.h"
#include "pm_mpi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    struct pm_mpi m;
    pm_mpi_init(&m, &argc, &argv);
    if (argc < 2)
        return 2;
    size_t limit = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    FILE *f = fopen(argv[1], "r");
    if (!f)
        return 1;
    size_t n = 0, cap = 1024, line = 0;
    struct dedupe_record *recs = malloc(cap * sizeof *recs);
    uint64_t hi, lo, id;
    while (fscanf(f, "%" SCNx64 " %" SCNx64 " %" SCNu64, &hi, &lo, &id) == 3) {
        if ((int)(line++ % (size_t)m.size) != m.rank)
            continue;
        if (n == cap)
            recs = realloc(recs, (cap *= 2) * sizeof *recs);
        recs[n++] = (struct dedupe_record){hi, lo, id};
    }
    fclose(f);
    uint64_t *keeper = malloc((n ? n : 1) * sizeof *keeper);
    struct dedupe_exact_stats st;
    struct pm_error err = PM_ERROR_INIT;
    if (dedupe_exact_run(recs, n, keeper, MPI_COMM_WORLD, limit, &st, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    FILE *out = dedupe_check_write(argv[1], m.rank, &recs[0].id, sizeof recs[0], keeper, n);
    if (!out)
        return 1;
    if (m.rank == 0)
        fprintf(out, "stats %" PRIu64 " %" PRIu64 " %" PRIu64 " %u\n", st.records, st.duplicates,
                st.groups, st.rounds);
    fclose(out);
    free(recs);
    free(keeper);
    pm_mpi_finalize();
    return 0;
}
