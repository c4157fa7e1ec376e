#include "pm_mpi.h"

#include "pm_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

_Noreturn void pm_mpi_fail(int rc, const char *call, const char *file, int line)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0, rank = -1, inited = 0;
    MPI_Error_string(rc, msg, &len);
    MPI_Initialized(&inited);
    if (inited)
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    fprintf(stderr, "pixelmill[%d]: MPI error at %s:%d: %s: %s\n", rank, file, line, call, msg);
    if (inited)
        MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void pm_mpi_init(struct pm_mpi *m, int *argc, char ***argv)
{
    int provided = 0;
    // Open MPI starts a process without mpirun (a singleton) by forking a helper daemon
    // (orted) and waiting for it: ~2.5 s of wall time on a 2-core machine, more than a
    // whole small pack. Its "isolated" mode skips the daemon; it only costs
    // MPI_Comm_spawn, which pixelmill never calls. Read by the singleton component
    // alone (ignored under mpirun/srun); an operator's own setting wins.
    setenv("OMPI_MCA_ess_singleton_isolated", "1", 0);
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &m->rank));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &m->size));
    if (m->size > 1)
        pm_log_set_rank(m->rank);
}

int pm_mpi_worst(int status)
{
    int inited = 0;
    MPI_Initialized(&inited);
    return inited ? pm_mpi_worst_in(status, MPI_COMM_WORLD) : status;
}

int pm_mpi_worst_in(int status, MPI_Comm comm)
{
    int worst = status;
    MPI_Request req;
    MPI_CHECK(MPI_Iallreduce(&status, &worst, 1, MPI_INT, MPI_MAX, comm, &req));
    pm_mpi_wait_idle(&req);
    return worst;
}

void pm_mpi_wait_idle(MPI_Request *req)
{
    for (unsigned polls = 0;; polls++) {
        int done = 0;
        MPI_CHECK(MPI_Test(req, &done, MPI_STATUS_IGNORE));
        if (done)
            return;
        if (polls >= 32) { // the others are not there yet: give the core away
            struct timespec ts = {0, 20000};
            nanosleep(&ts, NULL);
        }
    }
}

void pm_mpi_finalize(void)
{
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized)
        MPI_Finalize();
}
