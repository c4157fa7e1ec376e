#include "gpu_check.h"

#include "cuda_api.h"
#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PM_HAVE_CUDA_HEADERS

int gpu_check_run(struct health_report *r, const struct gpu_check_opts *o)
{
    char why[256];
    cuda_api_load(why, sizeof why);
    enum health_status s = o->min_gpus > 0 ? HEALTH_FAIL : HEALTH_SKIPPED;
    return health_report_add(r, "gpu", s, "%s", why) ? PM_OK : PM_ERR_NOMEM;
}

#else

#include <cublas_v2.h>
#include <dlfcn.h>

#define STR2(x) #x
#define STR(x) STR2(x)

struct cublas_api {
    __typeof__(cublasCreate_v2) *Create;
    __typeof__(cublasDestroy_v2) *Destroy;
    __typeof__(cublasSgemm_v2) *Sgemm;
};

static const struct cublas_api *cublas_load(char *why, size_t size)
{
    static struct cublas_api api;
    static int state; // 0 untried, 1 ok, -1 failed
    static char err[256];
    if (state == 0) {
        const char *names[] = {"libcublas.so." STR(CUBLAS_VER_MAJOR), NULL};
        void *h = cuda_api_dlopen_first(names, err, sizeof err);
        state = -1;
        if (h) {
            *(void **)&api.Create = dlsym(h, "cublasCreate_v2");
            *(void **)&api.Destroy = dlsym(h, "cublasDestroy_v2");
            *(void **)&api.Sgemm = dlsym(h, "cublasSgemm_v2");
            if (api.Create && api.Destroy && api.Sgemm)
                state = 1;
            else
                snprintf(err, sizeof err, "%s lacks a cuBLAS v2 symbol", names[0]);
        }
    }
    if (state < 0) {
        snprintf(why, size, "%s", err);
        return NULL;
    }
    return &api;
}

struct gpu_ctx {
    struct health_report *r;
    const struct cuda_api *cu;
    char row[HEALTH_NAME_MAX];
    int oom;
};

// A failed CUDA call fails the row named ctx->row with the call and the runtime's message.
#define CU_TRY(ctx, call)                                                                          \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            if (!health_report_add((ctx)->r, (ctx)->row, HEALTH_FAIL, "%s: %s", #call,             \
                                   (ctx)->cu->GetErrorString(e_)))                                 \
                (ctx)->oom = 1;                                                                    \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

static void check_sgemm(struct gpu_ctx *c, int dev, const struct gpu_check_opts *o)
{
    const struct cuda_api *cu = c->cu;
    snprintf(c->row, sizeof c->row, "gpu%d.sgemm", dev);
    char why[256];
    const struct cublas_api *bl = cublas_load(why, sizeof why);
    if (!bl) {
        c->oom |= !health_report_add(c->r, c->row, HEALTH_SKIPPED, "%s", why);
        return;
    }
    int n = o->gemm_n > 0 ? o->gemm_n : 4096;
    size_t count = (size_t)n * n, bytes = count * sizeof(float);
    float *host = malloc(bytes);
    float *a = NULL, *b = NULL, *d = NULL;
    cublasHandle_t h = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    if (!host) {
        c->oom = 1;
        return;
    }
    CU_TRY(c, cu->Malloc((void **)&a, bytes));
    CU_TRY(c, cu->Malloc((void **)&b, bytes));
    CU_TRY(c, cu->Malloc((void **)&d, bytes));
    for (size_t i = 0; i < count; i++)
        host[i] = 1.0f;
    CU_TRY(c, cu->Memcpy(a, host, bytes, cudaMemcpyHostToDevice));
    for (size_t i = 0; i < count; i++)
        host[i] = 2.0f;
    CU_TRY(c, cu->Memcpy(b, host, bytes, cudaMemcpyHostToDevice));
    cublasStatus_t bs = bl->Create(&h);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        c->oom |= !health_report_add(c->r, c->row, HEALTH_FAIL, "cublasCreate: status %d", bs);
        h = NULL;
        goto out;
    }
    CU_TRY(c, cu->EventCreate(&t0));
    CU_TRY(c, cu->EventCreate(&t1));
    const float alpha = 1.0f, beta = 0.0f;
    const int repeats = 10;
    for (int i = 0; i <= repeats; i++) {
        if (i == 1)
            CU_TRY(c, cu->EventRecord(t0, 0)); // call 0 is the warm-up
        bs = bl->Sgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, n, b, n, &beta, d, n);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            c->oom |= !health_report_add(c->r, c->row, HEALTH_FAIL, "cublasSgemm: status %d", bs);
            goto out;
        }
    }
    CU_TRY(c, cu->EventRecord(t1, 0));
    CU_TRY(c, cu->EventSynchronize(t1));
    float ms = 0;
    CU_TRY(c, cu->EventElapsedTime(&ms, t0, t1));
    CU_TRY(c, cu->Memcpy(host, d, bytes, cudaMemcpyDeviceToHost));
    size_t wrong = 0, first = 0;
    for (size_t i = 0; i < count; i++)
        if (host[i] != 2.0f * (float)n && wrong++ == 0)
            first = i;
    if (wrong) {
        c->oom |= !health_report_add(c->r, c->row, HEALTH_FAIL,
                                     "%zu of %zu results wrong (element %zu = %g, want %d)", wrong,
                                     count, first, host[first], 2 * n);
        goto out;
    }
    double tflops = 2.0 * n * (double)n * n * repeats / (ms * 1e-3) / 1e12;
    enum health_status s = o->min_tflops > 0 && tflops < o->min_tflops ? HEALTH_FAIL : HEALTH_OK;
    struct health_result *res =
        health_report_add(c->r, c->row, s, "%.1f TFLOP/s FP32 (%dx%d, %d runs, results exact)%s",
                          tflops, n, n, repeats, s == HEALTH_FAIL ? " below the minimum" : "");
    if (!res)
        c->oom = 1;
    health_result_measure(res, tflops * 1e12, "pixelmill_doctor_gpu_sgemm_flops",
                          "SGEMM rate measured by the doctor, FLOP/s");
out:
    if (h)
        bl->Destroy(h);
    if (t0)
        cu->EventDestroy(t0);
    if (t1)
        cu->EventDestroy(t1);
    cu->Free(a);
    cu->Free(b);
    cu->Free(d);
    free(host);
}

static void check_membw(struct gpu_ctx *c, int dev, const struct gpu_check_opts *o)
{
    const struct cuda_api *cu = c->cu;
    snprintf(c->row, sizeof c->row, "gpu%d.membw", dev);
    const unsigned mib = o->membw_mib ? o->membw_mib : 512;
    const size_t bytes = (size_t)mib << 20;
    const int repeats = 10;
    void *src = NULL, *dst = NULL;
    cudaEvent_t t0 = NULL, t1 = NULL;
    CU_TRY(c, cu->Malloc(&src, bytes));
    CU_TRY(c, cu->Malloc(&dst, bytes));
    CU_TRY(c, cu->Memset(src, 0x5a, bytes));
    CU_TRY(c, cu->EventCreate(&t0));
    CU_TRY(c, cu->EventCreate(&t1));
    CU_TRY(c, cu->Memcpy(dst, src, bytes, cudaMemcpyDeviceToDevice)); // warm-up
    CU_TRY(c, cu->EventRecord(t0, 0));
    for (int i = 0; i < repeats; i++)
        CU_TRY(c, cu->Memcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    CU_TRY(c, cu->EventRecord(t1, 0));
    CU_TRY(c, cu->EventSynchronize(t1));
    float ms = 0;
    CU_TRY(c, cu->EventElapsedTime(&ms, t0, t1));
    double gbps = 2.0 * (double)bytes * repeats / (ms * 1e-3) / 1e9;
    enum health_status s =
        o->min_membw_gbps > 0 && gbps < o->min_membw_gbps ? HEALTH_FAIL : HEALTH_OK;
    struct health_result *res =
        health_report_add(c->r, c->row, s, "%.0f GB/s device-to-device (read+write, %d x %u MiB)%s",
                          gbps, repeats, mib, s == HEALTH_FAIL ? " below the minimum" : "");
    if (!res)
        c->oom = 1;
    health_result_measure(res, gbps * 1e9, "pixelmill_doctor_gpu_memory_bandwidth_bytes_per_second",
                          "cudaMemcpy device-to-device rate, bytes read + written per second");
out:
    if (t0)
        cu->EventDestroy(t0);
    if (t1)
        cu->EventDestroy(t1);
    cu->Free(src);
    cu->Free(dst);
}

int gpu_check_run(struct health_report *r, const struct gpu_check_opts *o)
{
    char why[512];
    enum health_status missing = o->min_gpus > 0 ? HEALTH_FAIL : HEALTH_SKIPPED;
    const struct cuda_api *cu = cuda_api_load(why, sizeof why);
    if (!cu)
        return health_report_add(r, "gpu", missing, "%s", why) ? PM_OK : PM_ERR_NOMEM;
    int n = 0;
    cudaError_t e = cu->GetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cuda_api_no_device_reason(cu, e, why, sizeof why);
        return health_report_add(r, "gpu", missing, "no GPU: %s%s", why,
                                 o->min_gpus > 0 ? " (GPUs expected)" : "")
                   ? PM_OK
                   : PM_ERR_NOMEM;
    }
    int rt = 0, drv = 0;
    cu->RuntimeGetVersion(&rt);
    cu->DriverGetVersion(&drv);
    enum health_status s = n < o->min_gpus ? HEALTH_FAIL : HEALTH_OK;
    struct health_result *res =
        health_report_add(r, "gpu", s, "%d device%s%s (driver CUDA %d.%d, runtime %d.%d)", n,
                          n == 1 ? "" : "s", s == HEALTH_FAIL ? ", fewer than expected" : "",
                          drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    if (!res)
        return PM_ERR_NOMEM;
    health_result_measure(res, n, "pixelmill_doctor_gpus", "GPUs visible to the doctor");
    struct gpu_ctx c = {r, cu, "", 0};
    for (int d = 0; d < n && !c.oom; d++) {
        snprintf(c.row, sizeof c.row, "gpu%d", d);
        CU_TRY(&c, cu->SetDevice(d));
        char name[256] = "?";
        cu->GetDevicePropertiesName(d, name, sizeof name);
        size_t free_b = 0, total_b = 0;
        CU_TRY(&c, cu->MemGetInfo(&free_b, &total_b));
        const double gib = 1024.0 * 1024 * 1024;
        res = health_report_add(r, c.row, HEALTH_OK, "%s, %.1f GiB, %.1f GiB free", name,
                                total_b / gib, free_b / gib);
        if (!res)
            return PM_ERR_NOMEM;
        health_result_measure(res, (double)total_b, "pixelmill_doctor_gpu_memory_bytes",
                              "Total memory of each GPU");
        check_sgemm(&c, d, o);
        check_membw(&c, d, o);
        cu->DeviceSynchronize();
        continue;
    out:
        continue;
    }
    return c.oom ? PM_ERR_NOMEM : PM_OK;
}

#endif
