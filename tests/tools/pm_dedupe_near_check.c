/* Reads "phash id [priority]" lines (hex, decimal, decimal) from a file; rank r takes
 * lines r, r+size, ...; runs dedupe_near_run and writes "id keeper" for its records, then
 * on rank 0 "stats records duplicates distinct rounds", into FILE.out.RANK (separate
 * files, so ranks' lines never interleave). Edges, pairs tested and iterations (which
 * may depend on the rank count) and the run's seconds go to stderr on rank 0.
 * Usage: FILE RADIUS [MEMORY_LIMIT]. */
#include "dedupe_check.h"
#include "dedupe_near.h"
#include "pm_mpi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    struct pm_mpi m;
    pm_mpi_init(&m, &argc, &argv);
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILE RADIUS [MEMORY_LIMIT]\n", argv[0]);
        return 2;
    }
    unsigned radius = (unsigned)strtoul(argv[2], NULL, 10);
    size_t limit = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
    FILE *f = fopen(argv[1], "r");
    if (!f)
        return 1;
    size_t n = 0, cap = 1024, line = 0;
    struct dedupe_near_record *recs = malloc(cap * sizeof *recs);
    uint64_t *prio = malloc(cap * sizeof *prio);
    int have_prio = 0;
    char buf[256];
    while (fgets(buf, sizeof buf, f)) {
        uint64_t h, id, p = 0;
        int got = sscanf(buf, "%" SCNx64 " %" SCNu64 " %" SCNu64, &h, &id, &p);
        if (got < 2)
            continue;
        if (got == 3)
            have_prio = 1;
        if ((int)(line++ % (size_t)m.size) != m.rank)
            continue;
        if (n == cap) {
            cap *= 2;
            recs = realloc(recs, cap * sizeof *recs);
            prio = realloc(prio, cap * sizeof *prio);
        }
        prio[n] = p;
        recs[n++] = (struct dedupe_near_record){h, id};
    }
    fclose(f);
    uint64_t *keeper = malloc((n ? n : 1) * sizeof *keeper);
    struct dedupe_near_stats st;
    struct pm_error err = PM_ERROR_INIT;
    double t0 = MPI_Wtime();
    if (dedupe_near_run(recs, have_prio ? prio : NULL, n, keeper, radius, MPI_COMM_WORLD, limit,
                        &st, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        pm_mpi_finalize();
        return 1;
    }
    double secs = MPI_Wtime() - t0;
    FILE *out = dedupe_check_write(argv[1], m.rank, &recs[0].id, sizeof recs[0], keeper, n);
    if (!out)
        return 1;
    if (m.rank == 0) {
        fprintf(out, "stats %" PRIu64 " %" PRIu64 " %" PRIu64 " %u\n", st.records, st.duplicates,
                st.distinct, st.rounds);
        fprintf(stderr, "edges %" PRIu64 " pairs_tested %" PRIu64 " iterations %u seconds %.6f\n",
                st.edges, st.pairs_tested, st.iterations, secs);
    }
    fclose(out);
    free(recs);
    free(prio);
    free(keeper);
    pm_mpi_finalize();
    return 0;
}
