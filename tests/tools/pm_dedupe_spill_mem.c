/* Runs dedupe_spill (dedupe_spill.h) over synthetic records, for memory measurements: N
 * records with ids 0..N-1 whose hashes are drawn from DISTINCT values (a fixed mix of the
 * id), parts from dedupe_spill_parts(N, LIMIT), files under DIR. Prints "parts P records N
 * duplicates D read R" (R: duplicates read back, in increasing id order, checked). One
 * process. Usage: N DISTINCT LIMIT_BYTES DIR. */
#include "dedupe_spill.h"
#include "pm_mpi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s N DISTINCT LIMIT_BYTES DIR\n", argv[0]);
        return 2;
    }
    struct pm_mpi m;
    pm_mpi_init(&m, &argc, &argv);
    uint64_t n = strtoull(argv[1], NULL, 10), distinct = strtoull(argv[2], NULL, 10);
    size_t limit = (size_t)strtoull(argv[3], NULL, 10);
    unsigned parts = dedupe_spill_parts(n, limit);
    struct pm_error err = PM_ERROR_INIT;
    struct dedupe_spill *s = NULL;
    struct dedupe_exact_stats st = {0, 0, 0, 0};
    int rc = distinct ? dedupe_spill_create(&s, argv[4], 0, parts, 0, &err) : PM_ERR_USAGE;
    for (uint64_t i = 0; rc == PM_OK && i < n; i++) {
        uint64_t k = mix(i) % distinct;
        struct dedupe_record r = {mix(k ^ 0x1234), mix(k + 77), i};
        rc = dedupe_spill_add(s, &r, &err);
    }
    if (rc == PM_OK)
        rc = dedupe_spill_run(s, MPI_COMM_WORLD, limit, &st, &err);
    uint64_t id, keeper, last = 0, got = 0;
    int more;
    while (rc == PM_OK && (more = dedupe_spill_next(s, &id, &keeper, &err)) != 0) {
        if (more < 0 || (got && id <= last) || keeper >= id ||
            mix(id) % distinct != mix(keeper) % distinct) {
            rc = more < 0 ? -more
                          : pm_error_set(&err, PM_ERR_INTERNAL, "bad duplicate %" PRIu64, id);
            break;
        }
        last = id;
        got++;
    }
    if (rc == PM_OK)
        printf("parts %u records %" PRIu64 " duplicates %" PRIu64 " read %" PRIu64 "\n", parts,
               st.records, st.duplicates, got);
    else
        fprintf(stderr, "pm_dedupe_spill_mem: %s\n", err.msg);
    dedupe_spill_free(s);
    pm_mpi_finalize();
    return rc == PM_OK ? 0 : 1;
}
