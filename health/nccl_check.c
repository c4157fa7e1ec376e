#include "nccl_check.h"

#include "cuda_api.h"
#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double nccl_check_allreduce_busbw_factor(int n)
{
    return n < 1 ? 0.0 : 2.0 * (n - 1) / n;
}

#if !defined(PM_HAVE_CUDA_HEADERS) || !defined(PM_HAVE_NCCL_HEADERS)

int nccl_check_run(struct health_report *r, const struct nccl_check_opts *o)
{
    return health_report_add(r, "nccl", o->required ? HEALTH_FAIL : HEALTH_SKIPPED,
                             "built without the CUDA/NCCL headers")
               ? PM_OK
               : PM_ERR_NOMEM;
}

#else

#include <dlfcn.h>
#include <nccl.h>

#define STR2(x) #x
#define STR(x) STR2(x)
#define MAX_GPUS 64

struct nccl_api {
    __typeof__(ncclCommInitAll) *CommInitAll;
    __typeof__(ncclCommDestroy) *CommDestroy;
    __typeof__(ncclAllReduce) *AllReduce;
    __typeof__(ncclGroupStart) *GroupStart;
    __typeof__(ncclGroupEnd) *GroupEnd;
    __typeof__(ncclGetErrorString) *GetErrorString;
    __typeof__(ncclGetVersion) *GetVersion;
};

static int nccl_load(struct nccl_api *a, char *why, size_t size)
{
    const char *names[] = {"libnccl.so." STR(NCCL_MAJOR), NULL};
    void *h = cuda_api_dlopen_first(names, why, size);
    if (!h)
        return -1;
    *(void **)&a->CommInitAll = dlsym(h, "ncclCommInitAll");
    *(void **)&a->CommDestroy = dlsym(h, "ncclCommDestroy");
    *(void **)&a->AllReduce = dlsym(h, "ncclAllReduce");
    *(void **)&a->GroupStart = dlsym(h, "ncclGroupStart");
    *(void **)&a->GroupEnd = dlsym(h, "ncclGroupEnd");
    *(void **)&a->GetErrorString = dlsym(h, "ncclGetErrorString");
    *(void **)&a->GetVersion = dlsym(h, "ncclGetVersion");
    if (!a->CommInitAll || !a->CommDestroy || !a->AllReduce || !a->GroupStart || !a->GroupEnd ||
        !a->GetErrorString || !a->GetVersion) {
        snprintf(why, size, "%s lacks an NCCL symbol", names[0]);
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define VERIFY_COUNT (256 * 1024)

static void verify_allreduce(const struct nccl_api *nc, const struct cuda_api *cu, int n,
                             ncclComm_t *comms, cudaStream_t *streams, float **buf, char *err,
                             size_t err_size)
{
    float *host = malloc(VERIFY_COUNT * sizeof(float));
    if (!host) {
        snprintf(err, err_size, "out of memory");
        return;
    }
    cudaError_t ce;
    for (int d = 0; d < n && !err[0]; d++) {
        for (size_t i = 0; i < VERIFY_COUNT; i++)
            host[i] = (float)(d + 1);
        if ((ce = cu->SetDevice(d)) ||
            (ce = cu->Memcpy(buf[d], host, VERIFY_COUNT * sizeof(float), cudaMemcpyHostToDevice)))
            snprintf(err, err_size, "GPU %d: %s", d, cu->GetErrorString(ce));
    }
    if (!err[0]) {
        nc->GroupStart();
        for (int d = 0; d < n; d++) {
            ncclResult_t nr = nc->AllReduce(buf[d], buf[d], VERIFY_COUNT, ncclFloat, ncclSum,
                                            comms[d], streams[d]);
            if (nr != ncclSuccess && !err[0])
                snprintf(err, err_size, "ncclAllReduce: %s", nc->GetErrorString(nr));
        }
        ncclResult_t nr = nc->GroupEnd();
        if (nr != ncclSuccess && !err[0])
            snprintf(err, err_size, "ncclGroupEnd: %s", nc->GetErrorString(nr));
    }
    const float want = (float)n * (float)(n + 1) / 2.0f;
    for (int d = 0; d < n && !err[0]; d++) {
        if ((ce = cu->SetDevice(d)) || (ce = cu->StreamSynchronize(streams[d])) ||
            (ce = cu->Memcpy(host, buf[d], VERIFY_COUNT * sizeof(float), cudaMemcpyDeviceToHost))) {
            snprintf(err, err_size, "GPU %d: %s", d, cu->GetErrorString(ce));
            break;
        }
        for (size_t i = 0; i < VERIFY_COUNT; i++) {
            if (host[i] != want) {
                snprintf(err, err_size,
                         "all-reduce result wrong on GPU %d: element %zu = %g, want %g", d, i,
                         host[i], want);
                break;
            }
        }
    }
    free(host);
}

int nccl_check_run(struct health_report *r, const struct nccl_check_opts *o)
{
    enum health_status missing = o->required ? HEALTH_FAIL : HEALTH_SKIPPED;
    char why[512];
    const struct cuda_api *cu = cuda_api_load(why, sizeof why);
    if (!cu)
        return health_report_add(r, "nccl", missing, "%s", why) ? PM_OK : PM_ERR_NOMEM;
    int n = 0;
    cudaError_t ce = cu->GetDeviceCount(&n);
    if (ce != cudaSuccess || n < 2) {
        if (ce != cudaSuccess)
            cuda_api_no_device_reason(cu, ce, why, sizeof why);
        else
            snprintf(why, sizeof why, "%d visible", n);
        return health_report_add(r, "nccl", missing, "needs at least 2 GPUs: %s", why)
                   ? PM_OK
                   : PM_ERR_NOMEM;
    }
    if (n > MAX_GPUS)
        n = MAX_GPUS;
    struct nccl_api nc;
    if (nccl_load(&nc, why, sizeof why))
        return health_report_add(r, "nccl", missing, "%s", why) ? PM_OK : PM_ERR_NOMEM;

    size_t bytes = o->bytes ? o->bytes : (size_t)256 << 20;
    if (bytes < VERIFY_COUNT * sizeof(float))
        bytes = VERIFY_COUNT * sizeof(float);
    size_t count = bytes / sizeof(float);
    bytes = count * sizeof(float);
    ncclComm_t comms[MAX_GPUS] = {0};
    cudaStream_t streams[MAX_GPUS] = {0};
    float *buf[MAX_GPUS] = {0};
    int devs[MAX_GPUS];
    for (int d = 0; d < n; d++)
        devs[d] = d;
    char err[512] = "";
    const int warmup = 5, iters = 20;
    double t = 0;
    ncclResult_t nr = nc.CommInitAll(comms, n, devs);
    if (nr != ncclSuccess) {
        snprintf(err, sizeof err, "ncclCommInitAll: %s", nc.GetErrorString(nr));
        memset(comms, 0, sizeof comms);
        goto out;
    }
    for (int d = 0; d < n && !err[0]; d++) {
        if ((ce = cu->SetDevice(d)) != cudaSuccess || (ce = cu->StreamCreate(&streams[d])) ||
            (ce = cu->Malloc((void **)&buf[d], bytes)) || (ce = cu->Memset(buf[d], 0, bytes)))
            snprintf(err, sizeof err, "GPU %d: %s", d, cu->GetErrorString(ce));
    }
    // Correctness first: GPU d contributes d+1 in every element of a 1 MiB message; each
    // result element must be n(n+1)/2 exactly (small integers are exact in float).
    if (!err[0])
        verify_allreduce(&nc, cu, n, comms, streams, buf, err, sizeof err);
    double t0 = 0;
    for (int it = 0; it < warmup + iters && !err[0]; it++) {
        if (it == warmup) {
            for (int d = 0; d < n; d++) {
                cu->SetDevice(d);
                cu->StreamSynchronize(streams[d]);
            }
            t0 = now_s();
        }
        nc.GroupStart();
        for (int d = 0; d < n && !err[0]; d++) {
            nr = nc.AllReduce(buf[d], buf[d], count, ncclFloat, ncclSum, comms[d], streams[d]);
            if (nr != ncclSuccess)
                snprintf(err, sizeof err, "ncclAllReduce: %s", nc.GetErrorString(nr));
        }
        nr = nc.GroupEnd();
        if (nr != ncclSuccess && !err[0])
            snprintf(err, sizeof err, "ncclGroupEnd: %s", nc.GetErrorString(nr));
    }
    for (int d = 0; d < n && !err[0]; d++) {
        cu->SetDevice(d);
        if ((ce = cu->StreamSynchronize(streams[d])) != cudaSuccess)
            snprintf(err, sizeof err, "GPU %d: %s", d, cu->GetErrorString(ce));
    }
    t = (now_s() - t0) / iters;
out:;
    int rc = PM_OK;
    if (err[0]) {
        rc = health_report_add(r, "nccl", HEALTH_FAIL, "%s", err) ? PM_OK : PM_ERR_NOMEM;
    } else {
        int ver = 0;
        nc.GetVersion(&ver);
        double algbw = (double)bytes / t / 1e9;
        double busbw = algbw * nccl_check_allreduce_busbw_factor(n);
        enum health_status s =
            o->min_busbw_gbps > 0 && busbw < o->min_busbw_gbps ? HEALTH_FAIL : HEALTH_OK;
        struct health_result *res = health_report_add(
            r, "nccl", s,
            "all-reduce busbw %.1f GB/s, algbw %.1f GB/s (%d GPUs, %zu MiB, NCCL %d, sums "
            "verified)%s",
            busbw, algbw, n, bytes >> 20, ver, s == HEALTH_FAIL ? " below the minimum" : "");
        if (!res)
            rc = PM_ERR_NOMEM;
        health_result_measure(res, busbw * 1e9,
                              "pixelmill_doctor_nccl_allreduce_busbw_bytes_per_second",
                              "NCCL all-reduce bus bandwidth across local GPUs (nccl-tests busbw)");
    }
    for (int d = 0; d < n; d++) {
        cu->SetDevice(d);
        if (buf[d])
            cu->Free(buf[d]);
        if (streams[d])
            cu->StreamDestroy(streams[d]);
        if (comms[d])
            nc.CommDestroy(comms[d]);
    }
    return rc;
}

#endif
