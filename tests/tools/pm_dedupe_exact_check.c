/* Reads "hash_hi hash_lo id" lines (hex, hex, decimal) from a file; rank r takes lines
 * r, r+size, ...; runs dedupe_exact_run and prints "id keeper" for its records, then
 * rank 0 prints "stats records duplicates groups rounds", into FILE.out.RANK (separate
 * files, so ranks' lines never interleave). Usage: FILE [MEMORY_LIMIT [PARTS DIR]]: with
 * PARTS, through dedupe_spill (dedupe_spill.h) with PARTS parts, files under DIR (the
 * records sorted by id first, as it wants them). */
#include "dedupe_check.h"
#include "dedupe_exact.h"
#include "dedupe_spill.h"
#include "pm_mpi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static int by_id(const void *a, const void *b)
{
    const struct dedupe_record *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int spill_run(struct dedupe_record *recs, size_t n, uint64_t *keeper, unsigned parts,
                     const char *dir, int rank, size_t limit, struct dedupe_exact_stats *st,
                     struct pm_error *err)
{
    qsort(recs, n, sizeof *recs, by_id);
    struct dedupe_spill *s = NULL;
    int rc = dedupe_spill_create(&s, dir, rank, parts, 0, err);
    for (size_t i = 0; !rc && i < n; i++)
        rc = dedupe_spill_add(s, &recs[i], err);
    if (rc) // the tests give every rank good input: a failure here ends the job
        return rc;
    rc = dedupe_spill_run(s, MPI_COMM_WORLD, limit, st, err);
    for (size_t i = 0; i < n; i++)
        keeper[i] = recs[i].id;
    uint64_t id, k;
    size_t at = 0;
    int more;
    while (!rc && (more = dedupe_spill_next(s, &id, &k, err)) != 0) {
        if (more < 0)
            return -more;
        while (at < n && recs[at].id < id)
            at++;
        if (at == n || recs[at].id != id)
            return pm_error_set(err, PM_ERR_INTERNAL, "duplicate %llu is not a record",
                                (unsigned long long)id);
        keeper[at] = k;
    }
    dedupe_spill_free(s);
    return rc;
}

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
    if (argc > 4
            ? spill_run(recs, n, keeper, (unsigned)atoi(argv[3]), argv[4], m.rank, limit, &st, &err)
            : dedupe_exact_run(recs, n, keeper, MPI_COMM_WORLD, limit, &st, &err)) {
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
