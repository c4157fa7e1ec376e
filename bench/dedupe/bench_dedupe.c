/* Benchmark of the global dedupe modules on synthetic hashes generated in memory.
 *
 *   bench_dedupe exact N            N 128-bit hashes, about 10% exact duplicates
 *   bench_dedupe near N [K [LIMIT]] N 64-bit hashes in groups of 5: a random base, and
 *                                   each other member either a copy of the base with
 *                                   1..K random bit flips (20%) or a fresh random hash
 *
 * N is the total over all ranks; rank r generates items r, r+size, ... (global ids).
 * Rank 0 prints one line: items, ranks, seconds of the collective run (barrier to
 * barrier), items/s per rank, CPU seconds of the slowest rank (on a loaded machine the
 * CPU rate is the more stable figure), and the peak-RSS growth during the run per item held by a
 * rank (max over ranks), plus the module's statistics, and a second line with a checksum of
 * every item's keeper (independent of the rank count; computed after the timed part) to
 * compare the marks of two versions of the code.
 *
 * Timed (between two barriers): the module's call alone. The input arrays and keeper[] are
 * allocated as the stages allocate them (pm_big_alloc: mapped with transparent huge pages)
 * and written before the first barrier. */
#include "dedupe_exact.h"
#include "dedupe_near.h"
#include "pm_bigmem.h"
#include "pm_mpi.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

// 64-bit hash of item i: groups of 5, see the file comment.
static uint64_t near_hash(uint64_t i, unsigned k)
{
    uint64_t g = i / 5, base = mix64(2 * g); // even inputs: bases, odd: fresh
    if (i % 5 == 0)
        return base;
    uint64_t r = mix64(i * 13 + 5);
    if (r % 5 != 0 || k == 0)
        return mix64(2 * i + 1);
    unsigned flips = 1 + (unsigned)((r >> 8) % k);
    uint64_t h = base;
    for (unsigned f = 0; f < flips; f++)
        h ^= 1ULL << (mix64(r + f) & 63); // a repeated bit flips back: still within k
    return h;
}

int main(int argc, char **argv)
{
    struct pm_mpi m;
    pm_mpi_init(&m, &argc, &argv);
    if (argc < 3 || (strcmp(argv[1], "exact") && strcmp(argv[1], "near"))) {
        if (m.rank == 0)
            fprintf(stderr, "usage: %s exact|near N [K [MEMORY_LIMIT]]\n", argv[0]);
        pm_mpi_finalize();
        return 2;
    }
    int exact = !strcmp(argv[1], "exact");
    uint64_t total = strtoull(argv[2], NULL, 10);
    unsigned k = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : DEDUPE_NEAR_DEFAULT_RADIUS;
    size_t limit = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    size_t n = 0;
    for (uint64_t i = (uint64_t)m.rank; i < total; i += (uint64_t)m.size)
        n++;
    uint64_t *keeper = pm_big_alloc((n ? n : 1) * sizeof *keeper);
    struct dedupe_record *er = NULL;
    struct dedupe_near_record *nr = NULL;
    if (exact)
        er = pm_big_alloc((n ? n : 1) * sizeof *er);
    else
        nr = malloc((n ? n : 1) * sizeof *nr);
    size_t j = 0;
    for (uint64_t i = (uint64_t)m.rank; i < total; i += (uint64_t)m.size, j++) {
        if (exact) {
            // about 10% of the items repeat an earlier item's hash
            uint64_t src = mix64(i) % 10 == 0 ? mix64(i + 17) % (i + 1) : i;
            er[j] = (struct dedupe_record){mix64(src * 2 + 1), mix64(src * 2 + 2), i};
        } else {
            nr[j] = (struct dedupe_near_record){near_hash(i, k), i};
        }
        keeper[j] = 0; // touch: the input's pages are counted before the run
    }
    struct pm_error err = PM_ERROR_INIT;
    long rss0 = peak_rss_kib();
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double t0 = MPI_Wtime(), c0 = cpu_seconds();
    int rc;
    char detail[256];
    if (exact) {
        struct dedupe_exact_stats st;
        rc = dedupe_exact_run(er, n, keeper, MPI_COMM_WORLD, limit, &st, &err);
        snprintf(detail, sizeof detail, "duplicates %" PRIu64 " groups %" PRIu64 " rounds %u",
                 st.duplicates, st.groups, st.rounds);
    } else {
        struct dedupe_near_stats st;
        rc = dedupe_near_run(nr, NULL, n, keeper, k, MPI_COMM_WORLD, limit, &st, &err);
        snprintf(detail, sizeof detail,
                 "K %u duplicates %" PRIu64 " distinct %" PRIu64 " edges %" PRIu64
                 " pairs_tested %" PRIu64 " rounds %u iterations %u",
                 k, st.duplicates, st.distinct, st.edges, st.pairs_tested, st.rounds,
                 st.iterations);
    }
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    double secs = MPI_Wtime() - t0, cpu = cpu_seconds() - c0, cpu_max = 0;
    MPI_CHECK(MPI_Reduce(&cpu, &cpu_max, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD));
    if (rc) {
        fprintf(stderr, "rank %d: %s\n", m.rank, err.msg);
        pm_mpi_finalize();
        return 1;
    }
    uint64_t cs = 0, gcs = 0;
    size_t jj = 0;
    for (uint64_t i = (uint64_t)m.rank; i < total; i += (uint64_t)m.size, jj++)
        cs += mix64(i * 0x9e3779b97f4a7c15ULL ^ mix64(keeper[jj]));
    MPI_CHECK(MPI_Reduce(&cs, &gcs, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD));
    double grow = (double)(peak_rss_kib() - rss0) * 1024.0 / (double)(n ? n : 1), gmax = 0;
    MPI_CHECK(MPI_Reduce(&grow, &gmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD));
    if (m.rank == 0)
        printf("%s items %" PRIu64 " ranks %d seconds %.3f items/s/rank %.3g "
               "cpu_seconds/rank(max) %.3f items/cpu-s/rank %.3g rss_growth_bytes/item %.1f %s\n",
               argv[1], total, m.size, secs, (double)total / secs / m.size, cpu_max,
               (double)total / m.size / cpu_max, gmax, detail);
    if (m.rank == 0)
        printf("keeper_checksum %016" PRIx64 "\n", gcs);
    pm_big_free(er);
    free(nr);
    pm_big_free(keeper);
    pm_mpi_finalize();
    return 0;
}
