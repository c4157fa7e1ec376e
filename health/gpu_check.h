/**
 * gpu_check — GPU presence, memory, a short compute check and memory bandwidth for
 * `pixelmill doctor --gpu`, through the CUDA runtime and cuBLAS loaded with dlopen.
 *
 * Rows: "gpu" (device count, driver and runtime versions; fails when fewer than
 * `min_gpus`; skipped with the reason when the runtime or a device is missing and no
 * minimum was asked), then per device d: "gpuD" (name, total and free memory),
 * "gpuD.sgemm" (an N x N single-precision GEMM of all-ones by all-twos, repeated;
 * TFLOP/s = 2 N^3 x repeats / time; every element of the result is checked to equal
 * 2N exactly, so a device that computes wrongly fails), "gpuD.membw" (cudaMemcpy
 * device-to-device of a `membw_mib` MiB buffer (512), repeated; GB/s counts bytes read +
 * written, as CUDA's bandwidthTest does). Times come from CUDA events after one warm-up call.
 */
#ifndef PM_GPU_CHECK_H
#define PM_GPU_CHECK_H

#include "health_report.h"

struct gpu_check_opts {
    int min_gpus;          // fail when fewer devices (0: a missing GPU is "skipped")
    double min_tflops;     // fail below this SGEMM rate (0 = no minimum)
    double min_membw_gbps; // fail below this device-to-device rate (0 = no minimum)
    int gemm_n;            // GEMM size (default 4096 when 0)
    unsigned membw_mib;    // copy size of the bandwidth check in MiB (default 512 when 0)
};

/** Append the GPU rows. Returns PM_OK or PM_ERR_NOMEM. */
int gpu_check_run(struct health_report *r, const struct gpu_check_opts *opts);

#endif
