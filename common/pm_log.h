/**
 * pm_log — diagnostics on stderr, prefixed with the program name and, under MPI, the
 * rank ("pixelmill[2]: warning: ..."). Thread-safe (one fprintf per message).
 * Messages must never contain credentials.
 */
#ifndef PM_LOG_H
#define PM_LOG_H

/** Set the rank shown in messages (-1: not under MPI, no rank shown). */
void pm_log_set_rank(int rank);

/** Suppress info messages (warnings and errors still print). */
void pm_log_set_quiet(int quiet);

void pm_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pm_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pm_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
