#include "commands.h"
#include "pm_error.h"

int pm_exit_from_status(int status)
{
    switch (status) {
    case PM_OK: return PM_EXIT_OK;
    case PM_ERR_USAGE: return PM_EXIT_USAGE;
    case PM_ERR_INTERRUPTED: return PM_EXIT_RESUMABLE;
    default: return PM_EXIT_FAILED;
    }
}
