/**
 * pm_mpi — MPI set-up shared by every stage, and the checking macro for MPI calls.
 *
 * Every stage runs under `mpirun` or as one process (MPI singleton). The dispatcher
 * calls pm_mpi_init() once for commands that use MPI and passes the result on.
 */
#ifndef PM_MPI_H
#define PM_MPI_H

#include <mpi.h>

/** The calling process's place in the job. */
struct pm_mpi {
    int rank; /* 0 .. size-1 */
    int size; /* number of ranks; 1 without mpirun */
};

/** Check an MPI call; on failure print the library's message, file:line and rank, and
 * abort the job (an MPI failure leaves the collective state unusable). */
#define MPI_CHECK(call)                                                                       \
    do {                                                                                      \
        int mpi_check_rc_ = (call);                                                           \
        if (mpi_check_rc_ != MPI_SUCCESS)                                                     \
            pm_mpi_fail(mpi_check_rc_, #call, __FILE__, __LINE__);                            \
    } while (0)

/** Report a failed MPI call and abort all ranks. Used by MPI_CHECK. */
_Noreturn void pm_mpi_fail(int rc, const char *call, const char *file, int line);

/** Initialise MPI (thread level FUNNELED) and fill `m`. */
void pm_mpi_init(struct pm_mpi *m, int *argc, char ***argv);

/**
 * The largest of every rank's `status` over MPI_COMM_WORLD, so PM_OK (0) only when every
 * rank is fine. Collective: every rank calls it at the same point. Without MPI initialised
 * (one process), `status` itself.
 */
int pm_mpi_worst(int status);

/** The largest of every rank's `status` over `comm` (MPI initialised), waiting like
 * pm_mpi_wait_idle. Collective over `comm`. */
int pm_mpi_worst_in(int status, MPI_Comm comm);

/**
 * Complete `req` (from a nonblocking call) like MPI_Wait, but without keeping a core busy
 * while the other ranks are still working: after a few polls it sleeps ~20 us between
 * tests. For the long waits of collective steps (ranks out of step, a shared machine);
 * the added delay per wait is at most the sleep.
 */
void pm_mpi_wait_idle(MPI_Request *req);

/** Finalise MPI if it was initialised. */
void pm_mpi_finalize(void);

#endif
