/* Claims units from a work_counter on every rank until N are handed out, sleeping a
 * little on even ranks; prints "rank unit" lines so a test can check each unit was
 * claimed exactly once and that fast ranks claimed more. */
#include "pm_mpi.h"
#include "work_counter.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct pm_mpi m;
    pm_mpi_init(&m, &argc, &argv);
    long n = argc > 1 ? atol(argv[1]) : 100;
    struct work_counter *wc;
    if (work_counter_create(&wc, MPI_COMM_WORLD))
        return 1;
    for (;;) {
        int64_t u = work_counter_next(wc);
        if (u >= n)
            break;
        printf("%d %lld\n", m.rank, (long long)u);
        fflush(stdout);
        if (m.rank % 2 == 0)
            usleep(20000);
    }
    work_counter_free(wc);
    pm_mpi_finalize();
    return 0;
}
