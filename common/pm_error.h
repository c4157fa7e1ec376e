/**
 * pm_error — the project-wide error codes and a caller-owned error message.
 *
 * Every library function that can fail returns an `int` status: PM_OK (0) on success
 * or one of the PM_ERR_* codes below. Values are never renumbered. When a function
 * also takes a `struct pm_error *`, it fills it with the same code and a message that
 * names the failing object ("cannot open 'x.parquet': No such file or directory").
 * Only the CLI layer (stages/) prints messages and exits.
 */
#ifndef PM_ERROR_H
#define PM_ERROR_H

#include <stddef.h>

enum pm_status {
    PM_OK = 0,
    PM_ERR_IO = 1,          /* an operating-system I/O call failed */
    PM_ERR_NOMEM = 2,       /* allocation failed */
    PM_ERR_FORMAT = 3,      /* malformed input: a file or message that breaks its format */
    PM_ERR_UNSUPPORTED = 4, /* valid input using a feature we do not implement */
    PM_ERR_USAGE = 5,       /* bad arguments from the caller or the user */
    PM_ERR_LIMIT = 6,       /* a size, count or pixel limit was exceeded */
    PM_ERR_NOT_FOUND = 7,   /* a named file, column or key does not exist */
    PM_ERR_NETWORK = 8,     /* a network transfer failed */
    PM_ERR_INTERRUPTED = 9, /* stopped by a signal; state is clean and resumable */
    PM_ERR_INTERNAL = 10,   /* a bug: an invariant of ours does not hold */
};

/** Message buffer size, including the terminating NUL. */
#define PM_ERROR_MSG_MAX 1024

/** A status code and a message naming what failed. Caller-owned; no heap. */
struct pm_error {
    int code;
    char msg[PM_ERROR_MSG_MAX];
};

#define PM_ERROR_INIT {0, {0}}

/** A short constant description of a status code ("malformed input"). Never NULL. */
const char *pm_strerror(int code);

/**
 * Set err (if not NULL) to `code` and a printf-style message. Returns `code`, so
 * callers can write `return pm_error_set(err, PM_ERR_IO, "cannot open '%s'", path);`.
 */
int pm_error_set(struct pm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Prefix err's message with more context ("row group 3: " + old message). Returns
 * err->code. Does nothing to the code.
 */
int pm_error_prefix(struct pm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Reset err to PM_OK with an empty message. */
void pm_error_clear(struct pm_error *err);

#endif
