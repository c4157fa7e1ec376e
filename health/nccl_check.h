/**
 * nccl_check — NCCL all-reduce bus bandwidth across the GPUs of this node for
 * `pixelmill doctor --nccl`, through NCCL and the CUDA runtime loaded with dlopen.
 *
 * One process drives every local GPU (ncclCommInitAll). It first checks correctness:
 * GPU d contributes d+1 to every element of a 1 MiB all-reduce and every result element
 * on every GPU must equal n(n+1)/2 (a wrong sum fails the row). Then it all-reduces
 * `bytes` of floats (sum, in place) 20 times after 5 warm-up runs, and reports
 * nccl-tests' figures: algbw =
 * bytes / time per all-reduce, busbw = algbw x 2(n-1)/n (the rate each link carries,
 * comparable across GPU counts). Row "nccl": fails below `min_busbw_gbps` (GB/s, 10^9);
 * skipped when NCCL or CUDA is missing or fewer than 2 GPUs are visible (busbw is 0
 * for one GPU), failed instead when `required` (the node is expected to have them).
 * Calibrate the threshold per software stack and node type (DESIGN §7).
 */
#ifndef PM_NCCL_CHECK_H
#define PM_NCCL_CHECK_H

#include "health_report.h"

#include <stdbool.h>
#include <stddef.h>

struct nccl_check_opts {
    double min_busbw_gbps; // 0 = no minimum
    size_t bytes;          // message size (default 256 MiB when 0)
    bool required;         // missing NCCL / < 2 GPUs fails instead of skipping
};

/** Append the "nccl" row. Returns PM_OK or PM_ERR_NOMEM. */
int nccl_check_run(struct health_report *r, const struct nccl_check_opts *opts);

/** nccl-tests' bus-bandwidth factor for all-reduce over n ranks: 2(n-1)/n (0 for n<1). */
double nccl_check_allreduce_busbw_factor(int n);

#endif
