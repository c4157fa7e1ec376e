#include "pm_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *pm_strerror(int code)
{
    switch (code) {
    case PM_OK: return "success";
    case PM_ERR_IO: return "I/O error";
    case PM_ERR_NOMEM: return "out of memory";
    case PM_ERR_FORMAT: return "malformed input";
    case PM_ERR_UNSUPPORTED: return "unsupported feature";
    case PM_ERR_USAGE: return "usage error";
    case PM_ERR_LIMIT: return "limit exceeded";
    case PM_ERR_NOT_FOUND: return "not found";
    case PM_ERR_NETWORK: return "network error";
    case PM_ERR_INTERRUPTED: return "interrupted";
    case PM_ERR_INTERNAL: return "internal error";
    default: return "unknown error";
    }
}

int pm_error_set(struct pm_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

int pm_error_prefix(struct pm_error *err, const char *fmt, ...)
{
    if (!err)
        return PM_ERR_INTERNAL;
    char prefix[PM_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t plen = strlen(prefix);
    if (plen >= sizeof err->msg - 1)
        plen = sizeof err->msg - 1;
    size_t olen = strnlen(err->msg, sizeof err->msg - 1);
    if (plen + olen > sizeof err->msg - 1)
        olen = sizeof err->msg - 1 - plen;
    memmove(err->msg + plen, err->msg, olen);
    memcpy(err->msg, prefix, plen);
    err->msg[plen + olen] = '\0';
    return err->code;
}

void pm_error_clear(struct pm_error *err)
{
    if (!err)
        return;
    err->code = PM_OK;
    err->msg[0] = '\0';
}
