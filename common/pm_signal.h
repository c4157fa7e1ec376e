/**
 * pm_signal — preemption signals as a flag.
 *
 * Slurm warns a job with SIGUSR1 (`--signal=B:USR1@120`) or SIGTERM before it kills it.
 * Stages install these handlers once; the handler only records the signal (no I/O in a
 * signal handler), and the work loops poll pm_signal_pending() between units, stop
 * claiming work, clean up and exit with status 75 (resumable). A second SIGINT or
 * SIGTERM while stopping is honoured immediately by the default action.
 */
#ifndef PM_SIGNAL_H
#define PM_SIGNAL_H

/** Install the handlers for SIGTERM, SIGUSR1, SIGUSR2 and SIGINT. Idempotent. */
void pm_signal_install(void);

/** The first stop signal received since install, or 0. Async-signal-safe to read. */
int pm_signal_pending(void);

#endif
