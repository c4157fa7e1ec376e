/**
 * fabric_check — the libfabric providers usable on this node (`pixelmill doctor
 * --fabric [PROV]`), as `fi_info` lists them: fi_getinfo() with no hints, through
 * libfabric loaded with dlopen (nodes without it report "skipped").
 *
 * Row "fabric": the distinct provider names found (layered names such as
 * "tcp;ofi_rxm" count as each of their parts). With `expect` (e.g. "efa" on an EFA
 * node) the row fails when that provider is not among them — the usual cause is a
 * missing EFA driver or a security group that blocks the device, and NCCL would then
 * fall back to TCP sockets at a fraction of the bandwidth.
 */
#ifndef PM_FABRIC_CHECK_H
#define PM_FABRIC_CHECK_H

#include "health_report.h"

/** Append the "fabric" row. `expect` may be NULL. Returns PM_OK or PM_ERR_NOMEM. */
int fabric_check_run(struct health_report *r, const char *expect);

#endif
