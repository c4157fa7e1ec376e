#include "work_counter.h"

#include "pm_error.h"
#include "pm_mpi.h"

#include <stdlib.h>

struct work_counter {
    MPI_Win win;
    int64_t *value; // exposed by rank 0 only
    MPI_Comm comm;
};

int work_counter_create(struct work_counter **out, MPI_Comm comm)
{
    struct work_counter *wc = calloc(1, sizeof *wc);
    if (!wc)
        return PM_ERR_NOMEM;
    int rank;
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    MPI_Aint size = rank == 0 ? (MPI_Aint)sizeof(int64_t) : 0;
    MPI_CHECK(MPI_Win_allocate(size, sizeof(int64_t), MPI_INFO_NULL, comm, &wc->value,
                               &wc->win));
    if (rank == 0) {
        MPI_CHECK(MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, wc->win));
        *wc->value = 0;
        MPI_CHECK(MPI_Win_unlock(0, wc->win));
    }
    MPI_CHECK(MPI_Barrier(comm));
    wc->comm = comm;
    *out = wc;
    return PM_OK;
}

int64_t work_counter_next(struct work_counter *wc)
{
    int64_t one = 1, previous = 0;
    MPI_CHECK(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, wc->win));
    MPI_CHECK(MPI_Fetch_and_op(&one, &previous, MPI_INT64_T, 0, 0, MPI_SUM, wc->win));
    MPI_CHECK(MPI_Win_unlock(0, wc->win));
    return previous;
}

void work_counter_free(struct work_counter *wc)
{
    if (!wc)
        return;
    MPI_CHECK(MPI_Win_free(&wc->win));
    free(wc);
}
