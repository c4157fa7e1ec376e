/**
 * host_check — CPU, memory and load checks of `pixelmill doctor` (Linux /proc).
 *
 * Each function appends one row to a health_report and returns PM_OK, or PM_ERR_NOMEM
 * when the row could not be added. What the rows mean:
 *   cpu     online CPUs and the model name; fails when fewer than `min_cpus` are online.
 *   memory  MemTotal and MemAvailable; warns when less than 5% is available.
 *   load    the 1-minute load average; warns when above `max_load_per_cpu` x CPUs.
 */
#ifndef PM_HOST_CHECK_H
#define PM_HOST_CHECK_H

#include "health_report.h"

/** The cpu row. `min_cpus` 0 = no minimum. */
int host_check_cpu(struct health_report *r, long min_cpus);

/** The memory row. */
int host_check_memory(struct health_report *r);

/** The load row. */
int host_check_load(struct health_report *r, double max_load_per_cpu);

#endif
