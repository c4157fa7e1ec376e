/*
 * A CPU stand-in for libcudart.so.13, libcublas.so.13 and libnccl.so.2, for testing the
 * doctor's GPU and NCCL code paths (row logic, result verification, error handling) on
 * machines without a GPU. It is never used by pixelmill itself: tests/test_doctor.py
 * builds it into a temporary directory and puts that first on LD_LIBRARY_PATH. Its
 * numbers are CPU numbers and say nothing about any GPU.
 *
 * Built three times from this file with -DSTUB_CUDART, -DSTUB_CUBLAS or -DSTUB_NCCL.
 * Environment: STUB_GPUS (device count, default 2), STUB_CORRUPT_SGEMM=1 (one wrong
 * GEMM element), STUB_CORRUPT_NCCL=1 (one wrong all-reduce sum), STUB_FAIL_MALLOC=1.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int env_int(const char *name, int def)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : def;
}

#ifdef STUB_CUDART
#include <cuda_runtime_api.h>

static int current;

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = env_int("STUB_GPUS", 2);
    return *n ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaSetDevice(int d)
{
    current = d;
    return d < env_int("STUB_GPUS", 2) ? cudaSuccess : cudaErrorInvalidDevice;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    (void)d;
    strcpy(p->name, "CPU stand-in GPU");
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t)
{
    *t = (size_t)80 << 30;
    *f = (size_t)79 << 30;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d)
{
    (void)a;
    (void)d;
    *v = 0;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n)
{
    if (env_int("STUB_FAIL_MALLOC", 0))
        return cudaErrorMemoryAllocation;
    *p = malloc(n);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p)
{
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k)
{
    (void)k;
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n)
{
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    *s = (cudaStream_t)malloc(1);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = (cudaEvent_t)calloc(1, sizeof(double));
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *(double *)e = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    (void)e;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)((*(double *)b - *(double *)a) * 1e3);
    if (*ms <= 0)
        *ms = 1e-3f;
    return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaErrorMemoryAllocation ? "out of memory (stub)" : "stub error";
}
cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v)
{
    *v = CUDART_VERSION;
    return cudaSuccess;
}
#endif

#ifdef STUB_CUBLAS
#include <cublas_v2.h>

cublasStatus_t cublasCreate_v2(cublasHandle_t *h)
{
    *h = (cublasHandle_t)malloc(1);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h)
{
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
// Column-major C = alpha A B + beta C, no transposes (all the doctor uses).
cublasStatus_t cublasSgemm_v2(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                              int n, int k, const float *alpha, const float *A, int lda,
                              const float *B, int ldb, const float *beta, float *C, int ldc)
{
    (void)h;
    if (ta != CUBLAS_OP_N || tb != CUBLAS_OP_N)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int p = 0; p < k; p++)
                s += A[i + (size_t)p * lda] * B[p + (size_t)j * ldb];
            C[i + (size_t)j * ldc] = *alpha * s + (*beta != 0 ? *beta * C[i + (size_t)j * ldc] : 0);
        }
    if (env_int("STUB_CORRUPT_SGEMM", 0))
        C[(size_t)(n - 1) * ldc + 3] += 1.0f;
    return CUBLAS_STATUS_SUCCESS;
}
#endif

#ifdef STUB_NCCL
#include <nccl.h>

// Communicators remember their rank; all-reduces queue until ncclGroupEnd, which sums.
struct ncclComm {
    int rank, n;
};
#define MAXQ 64
static struct {
    float *buf;
    size_t count;
} queued[MAXQ];
static int nqueued;

ncclResult_t ncclCommInitAll(ncclComm_t *comms, int n, const int *devs)
{
    (void)devs;
    for (int i = 0; i < n; i++) {
        comms[i] = malloc(sizeof(struct ncclComm));
        comms[i]->rank = i;
        comms[i]->n = n;
    }
    return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t c)
{
    free(c);
    return ncclSuccess;
}
ncclResult_t ncclGroupStart(void)
{
    nqueued = 0;
    return ncclSuccess;
}
ncclResult_t ncclAllReduce(const void *s, void *r, size_t count, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t c, cudaStream_t st)
{
    (void)st;
    if (s != r || t != ncclFloat || op != ncclSum || c->rank >= MAXQ)
        return ncclInvalidArgument;
    queued[c->rank].buf = r;
    queued[c->rank].count = count;
    if (c->rank + 1 > nqueued)
        nqueued = c->rank + 1;
    return ncclSuccess;
}
ncclResult_t ncclGroupEnd(void)
{
    size_t count = queued[0].count;
    for (size_t i = 0; i < count; i++) {
        float sum = 0;
        for (int d = 0; d < nqueued; d++)
            sum += queued[d].buf[i];
        for (int d = 0; d < nqueued; d++)
            queued[d].buf[i] = sum;
    }
    if (env_int("STUB_CORRUPT_NCCL", 0) && nqueued > 1)
        queued[1].buf[count / 2] = -1;
    return ncclSuccess;
}
const char *ncclGetErrorString(ncclResult_t r)
{
    return r == ncclSuccess ? "no error" : "stub error";
}
ncclResult_t ncclGetVersion(int *v)
{
    *v = NCCL_VERSION_CODE;
    return ncclSuccess;
}
#endif
