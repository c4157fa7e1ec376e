#include "pm_log.h"

#include <stdarg.h>
#include <stdio.h>

static int log_rank = -1;
static int log_quiet;

void pm_log_set_rank(int rank)
{
    log_rank = rank;
}

void pm_log_set_quiet(int quiet)
{
    log_quiet = quiet;
}

static void pm_log_v(const char *level, const char *fmt, va_list ap)
{
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (log_rank >= 0)
        fprintf(stderr, "pixelmill[%d]: %s%s\n", log_rank, level, msg);
    else
        fprintf(stderr, "pixelmill: %s%s\n", level, msg);
}

void pm_log_info(const char *fmt, ...)
{
    if (log_quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    pm_log_v("", fmt, ap);
    va_end(ap);
}

void pm_log_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pm_log_v("warning: ", fmt, ap);
    va_end(ap);
}

void pm_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pm_log_v("error: ", fmt, ap);
    va_end(ap);
}
