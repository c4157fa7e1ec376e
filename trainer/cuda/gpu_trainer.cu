// gpu_trainer — the UNet trainer on one CUDA GPU (see gpu_trainer.h for the contract).
//
// Reading guide: kernels first (each mirrors a function of layers.c / unet.c / optim.c /
// diffusion.c, named in its comment), then the GEMM helpers (row-major wrappers around
// cuBLAS), the model graph (built exactly as unet.c builds it, parameter offsets looked up
// by name in the CPU model), forward, backward, and the step API.
//
// Activation layout: [C, B, HW] ("channel-major"): element (b, c, p) of an NCHW tensor lives
// at (c * B + b) * HW + p. A convolution is then Y[Cout, B*HW] = W[Cout, Cin*k*k] x
// col[Cin*k*k, B*HW], one GEMM for the whole batch, and a channel concatenation is two
// contiguous copies.
extern "C" {
#include "gpu_trainer.h"

#include "checkpoint.h"
#include "diffusion.h"
#include "train_rng.h"
#include "unet.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#ifdef PM_HAVE_NCCL
#include <nccl.h>
#endif

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- run-time loaded libraries
// cuBLAS and NCCL are opened with dlopen when a GPU trainer is first made, not linked: every
// pixelmill command would otherwise map them at start-up (about 1 s and 200 MB of RSS per
// process for cuBLAS alone, on every rank of every stage). Only what this file calls is
// looked up; the names are the libraries' exported symbols (cublas_v2.h maps cublasCreate
// to cublasCreate_v2 and so on).
#define PM_STR2(x) #x
#define PM_STR(x) PM_STR2(x)

static struct {
    void *blas_so, *nccl_so;
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    const char *(*status_string)(cublasStatus_t);
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int,
                              int, const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
    cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t,
                                              cublasOperation_t, int, int, int, const void *,
                                              const void *, cudaDataType, int, long long int,
                                              const void *, cudaDataType, int, long long int,
                                              const void *, void *, cudaDataType, int,
                                              long long int, int, cublasComputeType_t,
                                              cublasGemmAlgo_t);
#ifdef PM_HAVE_NCCL
    ncclResult_t (*get_unique_id)(ncclUniqueId *);
    ncclResult_t (*comm_init_rank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                               ncclComm_t, cudaStream_t);
    ncclResult_t (*comm_destroy)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
#endif
} lib;

// The slots' types are the headers' own: a mismatch fails to compile (the cast picks the
// overload of that exact type, and there is none if the slot's type is wrong).
#define PM_SAME_TYPE(slot, fn)                                                                     \
    static_assert(sizeof(static_cast<decltype(lib.slot)>(&fn)) > 0, #fn)
PM_SAME_TYPE(create, cublasCreate_v2);
PM_SAME_TYPE(destroy, cublasDestroy_v2);
PM_SAME_TYPE(set_stream, cublasSetStream_v2);
PM_SAME_TYPE(status_string, cublasGetStatusString);
PM_SAME_TYPE(gemm_ex, cublasGemmEx);
PM_SAME_TYPE(gemm_strided_batched_ex, cublasGemmStridedBatchedEx);
#ifdef PM_HAVE_NCCL
PM_SAME_TYPE(get_unique_id, ncclGetUniqueId);
PM_SAME_TYPE(comm_init_rank, ncclCommInitRank);
PM_SAME_TYPE(all_reduce, ncclAllReduce);
PM_SAME_TYPE(comm_destroy, ncclCommDestroy);
PM_SAME_TYPE(error_string, ncclGetErrorString);
#endif

// Open `soname` and look up each of the n (name, slot) pairs; 0 on success, else a reason.
static int open_symbols(const char *soname, void **handle, const char *const *names,
                        void **const *slots, int n, char *why, size_t why_len)
{
    if (!*handle)
        *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
#ifdef PM_CUDA_LIBDIR
    if (!*handle) { // not in the loader's path: the toolkit it was built with
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", PM_CUDA_LIBDIR, soname);
        *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    }
#endif
    if (!*handle) {
        snprintf(why, why_len, "cannot load %s: %s", soname, dlerror());
        return -1;
    }
    for (int i = 0; i < n; i++) {
        *slots[i] = dlsym(*handle, names[i]);
        if (!*slots[i]) {
            snprintf(why, why_len, "%s has no %s", soname, names[i]);
            return -1;
        }
    }
    return 0;
}

static int load_cublas(char *why, size_t why_len)
{
    static const char *const names[] = {"cublasCreate_v2",      "cublasDestroy_v2",
                                        "cublasSetStream_v2",   "cublasGetStatusString",
                                        "cublasGemmEx",         "cublasGemmStridedBatchedEx"};
    void **const slots[] = {(void **)&lib.create,        (void **)&lib.destroy,
                            (void **)&lib.set_stream,    (void **)&lib.status_string,
                            (void **)&lib.gemm_ex,       (void **)&lib.gemm_strided_batched_ex};
    return open_symbols("libcublas.so." PM_STR(CUBLAS_VER_MAJOR), &lib.blas_so, names, slots, 6,
                        why, why_len);
}

#ifdef PM_HAVE_NCCL
static int load_nccl(struct pm_error *err)
{
    static const char *const names[] = {"ncclGetUniqueId", "ncclCommInitRank", "ncclAllReduce",
                                        "ncclCommDestroy", "ncclGetErrorString"};
    void **const slots[] = {(void **)&lib.get_unique_id, (void **)&lib.comm_init_rank,
                            (void **)&lib.all_reduce, (void **)&lib.comm_destroy,
                            (void **)&lib.error_string};
    char why[512];
    if (open_symbols("libnccl.so." PM_STR(NCCL_MAJOR), &lib.nccl_so, names, slots, 5, why,
                     sizeof why))
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "NCCL: %s", why);
    return PM_OK;
}
#endif

typedef __nv_bfloat16 bf16;

// ---------------------------------------------------------------------------------------
// error handling: the first failure of an enqueue sequence is kept in g->fail and reported
// by the next API call that returns a status.

#define CU_TRY(call)                                                                               \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return pm_error_set(err, PM_ERR_INTERNAL, "%s:%d: %s: %s", __FILE__, __LINE__, #call,  \
                                cudaGetErrorString(e_));                                           \
    } while (0)

static const int NTHREADS = 256;

static unsigned grid_for(size_t n)
{
    size_t g = (n + NTHREADS - 1) / NTHREADS;
    if (g > 65535u * 8u)
        g = 65535u * 8u;
    return g < 1 ? 1u : (unsigned)g;
}

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                       \
         i += (size_t)gridDim.x * blockDim.x)

// ---------------------------------------------------------------------------------------
// small device helpers

__device__ __forceinline__ float d_silu(float x)
{
    return x / (1.0f + expf(-x));
}

__device__ __forceinline__ float d_silu_grad(float x) // silu'(x), as layer_silu_backward
{
    float sg = 1.0f / (1.0f + expf(-x));
    return sg * (1.0f + x * (1.0f - sg));
}

__device__ __forceinline__ void store(float *p, float v)
{
    *p = v;
}

__device__ __forceinline__ void store(bf16 *p, float v)
{
    *p = __float2bfloat16(v);
}

// Sum of a double over the block (blockDim.x a multiple of 32, <= 1024); every thread gets it.
__device__ double block_sum(double v)
{
    __shared__ double sh[32];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh[wid] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    double t = 0.0;
    if (threadIdx.x < 32) {
        t = threadIdx.x < (unsigned)nw ? sh[threadIdx.x] : 0.0;
        for (int o = 16; o > 0; o >>= 1)
            t += __shfl_down_sync(0xffffffffu, t, o);
        if (threadIdx.x == 0)
            sh[0] = t;
    }
    __syncthreads();
    double r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// ---------------------------------------------------------------------------------------
// randomness: the per-sample streams of trainer_sample_draw (host), with train_rng.h's inline
// generator compiled for the device

// train_rng_normal_fill for each sample b from its stream state (after the timestep and
// dropout draws), written channel-major: CPU index i = c * HW + p.
__global__ void k_noise(float *noise, const uint64_t *states, int B, int C, int HW)
{
    int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B)
        return;
    struct train_rng r = {{states[4 * b], states[4 * b + 1], states[4 * b + 2], states[4 * b + 3]}};
    size_t n = (size_t)C * HW;
    for (size_t i = 0; i < n; i += 2) {
        double theta, rad = train_rng_box_muller(&r, &theta);
        size_t c = i / HW, p = i % HW;
        noise[(c * B + b) * HW + p] = (float)(rad * cos(theta));
        if (i + 1 < n) {
            c = (i + 1) / HW, p = (i + 1) % HW;
            noise[(c * B + b) * HW + p] = (float)(rad * sin(theta));
        }
    }
}

// ---------------------------------------------------------------------------------------
// layout conversions and the diffusion forward process

// uint8 HWC images -> x0 in [-1, 1], channel-major (trainer_compute_gradients).
__global__ void k_u8_to_x0(float *x0, const uint8_t *img, int B, int C, int S)
{
    size_t HW = (size_t)S * S, n = (size_t)B * C * HW;
    GRID_STRIDE(i, n)
    {
        size_t p = i % HW, cb = i / HW;
        size_t b = cb % B, c = cb / B;
        x0[i] = (float)img[(b * HW + p) * C + c] / 127.5f - 1.0f;
    }
}

// NCHW <-> channel-major.
__global__ void k_nchw_to_cm(float *dst, const float *src, int B, int C, int HW)
{
    size_t n = (size_t)B * C * HW;
    GRID_STRIDE(i, n)
    {
        size_t p = i % HW, cb = i / HW;
        size_t b = cb % B, c = cb / B;
        dst[i] = src[(b * C + c) * HW + p];
    }
}

__global__ void k_cm_to_nchw(float *dst, const float *src, int B, int C, int HW)
{
    size_t n = (size_t)B * C * HW;
    GRID_STRIDE(i, n)
    {
        size_t p = i % HW, bc = i / HW;
        size_t c = bc % C, b = bc / C;
        dst[i] = src[(c * B + b) * HW + p];
    }
}

// diffusion_q_sample with per-timestep coefficients (float, as the CPU rounds them).
__global__ void k_q_sample(float *xt, const float *x0, const float *noise, const int *ts,
                           const float *ca, const float *cb, int B, size_t HW, size_t n)
{
    GRID_STRIDE(i, n)
    {
        int b = (int)((i / HW) % B);
        int t = ts[b];
        xt[i] = ca[t] * x0[i] + cb[t] * noise[i];
    }
}

// diffusion_mse: grad = 2 (pred - target) / count; per-block partial sums (double) of the
// squared error, reduced in block order by k_mse_final.
__global__ void k_mse(float *grad, double *partial, const float *pred, const float *target,
                      size_t count)
{
    float scale = 2.0f / (float)count;
    double acc = 0.0;
    GRID_STRIDE(i, count)
    {
        float d = pred[i] - target[i];
        acc += (double)d * d;
        grad[i] = scale * d;
    }
    double s = block_sum(acc);
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s;
}

__global__ void k_mse_final(float *loss, const double *partial, int nblocks, size_t count)
{
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0.0;
        for (int i = 0; i < nblocks; i++)
            s += partial[i];
        *loss = (float)(s / (double)count);
    }
}

// ---------------------------------------------------------------------------------------
// embeddings (unet.c: timestep_embedding, caption bag)

__global__ void k_timestep_embedding(float *out, const int *t, int B, int dim)
{
    int half = dim / 2;
    size_t n = (size_t)B * half;
    GRID_STRIDE(k, n)
    {
        int b = (int)(k / half), i = (int)(k % half);
        float freq = (float)exp(-log(10000.0) * (double)i / (double)half);
        float arg = (float)t[b] * freq;
        out[(size_t)b * dim + i] = sinf(arg);
        out[(size_t)b * dim + half + i] = cosf(arg);
    }
}

// capvec[b] = mean of the token rows, or the null vector (ntok 0).
__global__ void k_caption_forward(float *capvec, const float *table, const float *null_vec,
                                  const uint32_t *ids, const int *ntok, int B, int D, int T)
{
    size_t n = (size_t)B * D;
    GRID_STRIDE(k, n)
    {
        int b = (int)(k / D), d = (int)(k % D);
        int nt = ntok[b];
        if (nt == 0) {
            capvec[k] = null_vec[d];
            continue;
        }
        float v = 0.0f;
        for (int j = 0; j < nt; j++)
            v += table[(size_t)ids[(size_t)b * T + j] * D + d];
        capvec[k] = v * (1.0f / (float)nt);
    }
}

// Gradient of the caption rows, deterministic: block u owns one distinct row (urow[u];
// row == buckets is the null vector) and adds its contributions in (sample, token) order,
// as the CPU loop does.
__global__ void k_caption_backward(float *g_table, float *g_null, const float *dcap,
                                   const int *urow, const int *uoff, const int *eb,
                                   const float *ew, int buckets, int D)
{
    int u = blockIdx.x;
    int row = urow[u];
    float *g = row == buckets ? g_null : g_table + (size_t)row * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = g[d];
        for (int e = uoff[u]; e < uoff[u + 1]; e++)
            acc += dcap[(size_t)eb[e] * D + d] * ew[e];
        g[d] = acc;
    }
}

// ---------------------------------------------------------------------------------------
// elementwise

__global__ void k_silu(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] = d_silu(x[i]);
}

// dx = dy * silu'(x)  (the CPU zeroes dx and accumulates)
__global__ void k_silu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    GRID_STRIDE(i, n) dx[i] = 0.0f + dy[i] * d_silu_grad(x[i]);
}

__global__ void k_add(float *y, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void k_accumulate(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] += x[i];
}

// rows of a [B, out] matrix start at bias[o] (linear layers before their GEMM)
__global__ void k_fill_rows(float *y, const float *bias, int B, int out)
{
    size_t n = (size_t)B * out;
    GRID_STRIDE(i, n) y[i] = bias[i % out];
}

// channel-major [C, B, HW]: y = bias[c] (+ bias2[c]) (+ e[b, c]) (+ res), the value a
// convolution GEMM then accumulates onto.
__global__ void k_fill_cm(float *y, const float *bias, const float *bias2, const float *e,
                          const float *res, int C, int B, size_t HW)
{
    size_t n = (size_t)C * B * HW;
    GRID_STRIDE(i, n)
    {
        size_t cb = i / HW;
        int c = (int)(cb / B), b = (int)(cb % B);
        float v = bias[c];
        if (bias2)
            v += bias2[c];
        if (e)
            v += e[(size_t)b * C + c];
        if (res)
            v += res[i];
        y[i] = v;
    }
}

// Sum of each row of a [rows, len] matrix. mode 0: out[r] += s. mode 1 (per-image sums of a
// channel-major tensor, rows = C * B): out[b * C + c] = s.
__global__ void k_rowsum(float *out, const float *in, int rows, size_t len, int mode, int B)
{
    int r = blockIdx.x;
    if (r >= rows)
        return;
    const float *x = in + (size_t)r * len;
    double acc = 0.0;
    for (size_t i = threadIdx.x; i < len; i += blockDim.x)
        acc += x[i];
    double s = block_sum(acc);
    if (threadIdx.x == 0) {
        if (mode == 0)
            out[r] += (float)s;
        else {
            int C = rows / B;
            out[(size_t)(r % B) * C + r / B] = (float)s;
        }
    }
}

// dbias[o] += sum over the B rows of dy[B, out] (linear layers).
__global__ void k_colsum(float *dbias, const float *dy, int B, int out)
{
    int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= out)
        return;
    float s = dbias[o];
    for (int b = 0; b < B; b++)
        s += dy[(size_t)b * out + o];
    dbias[o] = s;
}

__global__ void k_to_bf16(bf16 *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] = __float2bfloat16(x[i]);
}

// ---------------------------------------------------------------------------------------
// convolution helpers (layers.c: im2col, col2im_add), channel-major

// col[(c*k + ky)*k + kx, b*Ho*Wo + oy*Wo + ox] = act(x[c, b, oy*s + ky - p, ox*s + kx - p]),
// act = SiLU when `silu` (the GroupNorm -> SiLU -> conv pattern, SiLU fused here).
template <typename T>
__global__ void k_im2col(T *col, const float *x, int Cin, int B, int H, int W, int k, int s,
                         int silu)
{
    int p = k / 2;
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    size_t Ncol = (size_t)B * Ho * Wo, n = (size_t)Cin * k * k * Ncol;
    GRID_STRIDE(i, n)
    {
        size_t row = i / Ncol, q = i % Ncol;
        int kx = (int)(row % k), ky = (int)((row / k) % k), c = (int)(row / (k * k));
        int ox = (int)(q % Wo), oy = (int)((q / Wo) % Ho), b = (int)(q / ((size_t)Ho * Wo));
        int iy = oy * s + ky - p, ix = ox * s + kx - p;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
            v = x[(((size_t)c * B + b) * H + iy) * W + ix];
            if (silu)
                v = d_silu(v);
        }
        store(col + i, v);
    }
}

// dx (=, or += when accumulate) col2im(dcol): each input element gathers its k*k taps in
// (ky, kx) order, so no atomics.
__global__ void k_col2im(float *dx, const float *dcol, int Cin, int B, int H, int W, int k, int s,
                         int accumulate)
{
    int p = k / 2;
    int Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    size_t Ncol = (size_t)B * Ho * Wo, n = (size_t)Cin * B * H * W;
    GRID_STRIDE(i, n)
    {
        int ix = (int)(i % W), iy = (int)((i / W) % H);
        size_t cb = i / ((size_t)H * W);
        int b = (int)(cb % B), c = (int)(cb / B);
        float acc = accumulate ? dx[i] : 0.0f;
        for (int ky = 0; ky < k; ky++) {
            int ty = iy + p - ky;
            if (ty < 0 || ty % s != 0 || ty / s >= Ho)
                continue;
            int oy = ty / s;
            for (int kx = 0; kx < k; kx++) {
                int tx = ix + p - kx;
                if (tx < 0 || tx % s != 0 || tx / s >= Wo)
                    continue;
                int ox = tx / s;
                size_t row = ((size_t)c * k + ky) * k + kx;
                acc += dcol[row * Ncol + ((size_t)b * Ho + oy) * Wo + ox];
            }
        }
        dx[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------
// GroupNorm (layers.c), channel-major; one block per (image, group)

__global__ void k_groupnorm_forward(float *y, float *mean, float *rstd, const float *x,
                                    const float *gamma, const float *beta, int B, int C,
                                    size_t HW, int G)
{
    int bg = blockIdx.x, b = bg / G, g = bg % G, cpg = C / G;
    size_t n = (size_t)cpg * HW;
    double acc = 0.0;
    for (size_t j = threadIdx.x; j < n; j += blockDim.x) {
        size_t c = g * cpg + j / HW;
        acc += x[(c * B + b) * HW + j % HW];
    }
    double m = block_sum(acc) / (double)n;
    acc = 0.0;
    for (size_t j = threadIdx.x; j < n; j += blockDim.x) {
        size_t c = g * cpg + j / HW;
        double d = x[(c * B + b) * HW + j % HW] - m;
        acc += d * d;
    }
    double var = block_sum(acc) / (double)n;
    float mf = (float)m;
    float rs = (float)(1.0 / sqrt(var + (double)1e-5f));
    if (threadIdx.x == 0) {
        mean[bg] = mf;
        rstd[bg] = rs;
    }
    for (size_t j = threadIdx.x; j < n; j += blockDim.x) {
        int ch = g * cpg + (int)(j / HW);
        float ga = gamma[ch] * rs, be = beta[ch] - mf * ga;
        size_t idx = ((size_t)ch * B + b) * HW + j % HW;
        y[idx] = x[idx] * ga + be;
    }
}

// Backward; the incoming gradient is dA * silu'(y) when `silu` (y = this norm's output),
// else dA. dx += ...; per-image dgamma/dbeta partials go to part[b * 2C + ch] and
// part[b * 2C + C + ch] (summed in image order by k_reduce_partials).
__global__ void k_groupnorm_backward(float *dx, float *part, const float *dA, const float *yact,
                                     int silu, const float *x, const float *mean,
                                     const float *rstd, const float *gamma, int B, int C,
                                     size_t HW, int G)
{
    int bg = blockIdx.x, b = bg / G, g = bg % G, cpg = C / G;
    float m = mean[bg], rs = rstd[bg];
    double s1 = 0.0, s2 = 0.0;
    for (int c = 0; c < cpg; c++) {
        int ch = g * cpg + c;
        size_t base = ((size_t)ch * B + b) * HW;
        double dg = 0.0, db = 0.0;
        for (size_t i = threadIdx.x; i < HW; i += blockDim.x) {
            float dy = dA[base + i];
            if (silu)
                dy *= d_silu_grad(yact[base + i]);
            float xh = (x[base + i] - m) * rs;
            dg += (double)dy * xh;
            db += dy;
        }
        dg = block_sum(dg);
        db = block_sum(db);
        if (threadIdx.x == 0) {
            part[(size_t)b * 2 * C + ch] = (float)dg;
            part[(size_t)b * 2 * C + C + ch] = (float)db;
        }
        s1 += db * gamma[ch];
        s2 += dg * gamma[ch];
    }
    double n = (double)cpg * HW;
    float m1 = (float)(s1 / n), m2 = (float)(s2 / n);
    for (int c = 0; c < cpg; c++) {
        int ch = g * cpg + c;
        size_t base = ((size_t)ch * B + b) * HW;
        for (size_t i = threadIdx.x; i < HW; i += blockDim.x) {
            float dy = dA[base + i];
            if (silu)
                dy *= d_silu_grad(yact[base + i]);
            float xh = (x[base + i] - m) * rs;
            dx[base + i] += rs * (dy * gamma[ch] - m1 - xh * m2);
        }
    }
}

// dst[i] += sum over b of part[b * stride + i], in image order.
__global__ void k_reduce_partials(float *dst, const float *part, int B, int n, size_t stride)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float s = dst[i];
    for (int b = 0; b < B; b++)
        s += part[(size_t)b * stride + i];
    dst[i] = s;
}

// ---------------------------------------------------------------------------------------
// upsample (layers.c), per (channel, image) plane

__global__ void k_upsample(float *y, const float *x, size_t planes, int H, int W)
{
    size_t n = planes * 4 * H * W;
    GRID_STRIDE(i, n)
    {
        size_t pl = i / (4 * (size_t)H * W);
        int q = (int)(i % (4 * (size_t)H * W)), oy = q / (2 * W), ox = q % (2 * W);
        y[i] = x[pl * H * W + (oy / 2) * W + ox / 2];
    }
}

__global__ void k_upsample_backward(float *dx, const float *dy, size_t planes, int H, int W)
{
    size_t n = planes * H * W;
    GRID_STRIDE(i, n)
    {
        size_t pl = i / ((size_t)H * W);
        int q = (int)(i % ((size_t)H * W)), iy = q / W, ix = q % W;
        const float *r = dy + pl * 4 * H * W + (2 * iy) * 2 * W + 2 * ix;
        dx[i] += (r[0] + r[1]) + (r[2 * W] + r[2 * W + 1]);
    }
}

// ---------------------------------------------------------------------------------------
// attention softmax (layers.c), one warp per row of N scores

__global__ void k_softmax(float *P, size_t rows, int N, float scale)
{
    size_t r = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    float *row = P + r * N;
    float mx = -INFINITY;
    for (int j = lane; j < N; j += 32) {
        float v = row[j] * scale;
        row[j] = v;
        mx = fmaxf(mx, v);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < N; j += 32) {
        float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < N; j += 32)
        row[j] *= inv;
}

// dS = P * (dP - sum_j dP * P) * scale, in place on dP
__global__ void k_softmax_backward(float *dP, const float *P, size_t rows, int N, float scale)
{
    size_t r = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows)
        return;
    float *row = dP + r * N;
    const float *pr = P + r * N;
    float dot = 0.0f;
    for (int j = lane; j < N; j += 32)
        dot += row[j] * pr[j];
    dot = warp_sum(dot);
    for (int j = lane; j < N; j += 32)
        row[j] = pr[j] * (row[j] - dot) * scale;
}

// ---------------------------------------------------------------------------------------
// optimizer (optim.c)

__global__ void k_adamw(float *params, const float *grads, float *m, float *v,
                        const unsigned char *decay_mask, size_t n, float gscale, float b1,
                        float b2, float eps, float wd, float decay, float step_size,
                        float bc2_sqrt)
{
    GRID_STRIDE(i, n)
    {
        float p = params[i], g = grads[i] * gscale;
        if (wd != 0.0f && decay_mask[i])
            p *= decay;
        float mi = m[i] + (1.0f - b1) * (g - m[i]);
        float vi = v[i] * b2 + (1.0f - b2) * (g * g);
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        params[i] = p - step_size * (mi / denom);
    }
}

__global__ void k_ema(float *ema, const float *params, float decay, size_t n)
{
    GRID_STRIDE(i, n) ema[i] = decay * ema[i] + (1.0f - decay) * params[i];
}

// ---------------------------------------------------------------------------------------
// the model graph (mirrors unet.c's build())

enum { BK_CONV, BK_UP, BK_RES, BK_ATTN, BK_OUT };
enum { RP_N1W, RP_N1B, RP_C1W, RP_C1B, RP_EW, RP_EB, RP_N2W, RP_N2B, RP_C2W, RP_C2B, RP_SW, RP_SB };
enum { AP_NW, AP_NB, AP_QW, AP_QB, AP_PW, AP_PB };
enum { CP_W, CP_B };
enum { OP_NW, OP_NB, OP_CW, OP_CB };

struct gblock {
    int kind, cin, cout, H, Ho, stride, input, skip;
    bool has_skip_conv;
    size_t p[12];
    float *out, *dout, *cat, *y1, *m1, *r1, *h1, *y2, *m2, *r2, *eproj, *qkv, *P, *o, *ups;
};

enum { RING = 3 };

// A staged batch: host (pinned) and device copies of the same layout.
struct slot {
    unsigned char *host, *dev;
    cudaEvent_t copied, consumed;
    int B, f32, explicit_noise, nu;
};

struct gpu_trainer {
    struct trainer_options opt;
    enum gpu_precision prec;
    int device;
    char devname[256];
    struct unet *host_model; // tensor table, config, init (activations for 1 image)
    struct unet_config cfg;
    size_t n;         // parameters
    int B;            // max batch
    cudaStream_t stream, copy_stream;
    cublasHandle_t blas;
    size_t dev_bytes;
    // parameters and optimizer state
    float *params, *grads, *ema, *adam_m, *adam_v;
    bf16 *params_bf;
    unsigned char *decay_mask;
    uint64_t step;
    struct train_rng rng;
    struct diffusion_schedule sched;
    float *ca, *cb; // [1000] sqrt(ab), sqrt(1 - ab) as floats
    // graph
    struct gblock *blocks;
    int nblocks;
    size_t l1w, l1b, l2w, l2b, table, null_v, cpw, cpb;
    bool build_failed;
    char build_msg[256];
    // activation arenas (pass 0 counts)
    bool carving;
    float *act, *dact;
    size_t act_n, dact_n, act_cur, dact_cur, max_act, max_col, max_nn, max_part;
    float *x0, *xt, *noise, *dout_img, *temb_in, *t1, *t1a, *t2, *capvec, *cproj, *emb, *emb_act;
    float *demb_act, *demb, *dt1a, *dt1, *dcapvec, *deproj;
    float *s1, *s2, *s3, *dO, *dqkv, *dP, *part;
    float *col, *dcol;
    bf16 *dybf;
    double *mse_partial;
    float *loss_dev, *loss_host;
    int mse_blocks;
    int cur_B; // batch of the last forward
    // staging
    struct slot ring[RING];
    int staged_head, staged_count; // next slot to consume, slots staged
    int pending_keys;              // staged batches whose key is drawn, not yet applied
    size_t slot_bytes, off_ts, off_ntok, off_ids, off_state, off_urow, off_uoff, off_eb, off_ew,
        off_x, off_noise;
    int cur_slot; // slot of the last compute
    // multi-GPU
    int world, rank;
#ifdef PM_HAVE_NCCL
    ncclComm_t comm;
#endif
    // PM_GPU_SYNC_DEBUG=1: wait after every kernel and GEMM, so an asynchronous fault is
    // reported at the launch that caused it (gpu_trainer.cu:LINE)
    int sync_debug;
    // the first failure while enqueueing
    int failed;
    char fail_msg[512];
};

static void note_fail(struct gpu_trainer *g, const char *what, int line, const char *msg)
{
    if (g->failed)
        return;
    g->failed = 1;
    snprintf(g->fail_msg, sizeof g->fail_msg, "gpu_trainer.cu:%d: %s: %s", line, what, msg);
}

#define KCHECK(g) kcheck((g), __LINE__)
static void kcheck(struct gpu_trainer *g, int line)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && g->sync_debug)
        e = cudaStreamSynchronize(g->stream);
    if (e != cudaSuccess)
        note_fail(g, "kernel", line, cudaGetErrorString(e));
}

static int take_fail(struct gpu_trainer *g, struct pm_error *err)
{
    if (!g->failed)
        return PM_OK;
    return pm_error_set(err, PM_ERR_INTERNAL, "%s", g->fail_msg);
}

// ---------------------------------------------------------------------------------------
// GEMMs: row-major C[M,N] = op(A)[M,K] op(B)[K,N] (+ beta C), as layer_matmul's arguments.
// cuBLAS is column-major, so it computes C^T = op(B)^T op(A)^T.

enum gemm_kind { GK_F32, GK_TF32, GK_BF16 };

static void gemm_at(int line, struct gpu_trainer *g, enum gemm_kind kind, bool ta, bool tb, int M,
                    int N, int K, const void *A, int lda, const void *Bm, int ldb, float *C,
                    int ldc, float beta)
{
    const float alpha = 1.0f;
    cudaDataType_t ty = kind == GK_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t ct = kind == GK_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasStatus_t st =
        lib.gemm_ex(g->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                     K, &alpha, Bm, ty, ldb, A, ty, lda, &beta, C, CUDA_R_32F, ldc, ct,
                     CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        note_fail(g, "cublasGemmEx", line, lib.status_string(st));
    kcheck(g, line);
}
#define gemm(...) gemm_at(__LINE__, __VA_ARGS__)

static void gemm_batched_at(int line, struct gpu_trainer *g, enum gemm_kind kind, bool ta, bool tb,
                            int M, int N, int K, const float *A, int lda, long long sA,
                            const float *Bm, int ldb, long long sB, float *C, int ldc,
                            long long sC, int batch)
{
    const float alpha = 1.0f, beta = 0.0f;
    cublasComputeType_t ct = kind == GK_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasStatus_t st = lib.gemm_strided_batched_ex(
        g->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
        Bm, CUDA_R_32F, ldb, sB, A, CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch, ct,
        CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        note_fail(g, "cublasGemmStridedBatchedEx", line, lib.status_string(st));
    kcheck(g, line);
}
#define gemm_batched(...) gemm_batched_at(__LINE__, __VA_ARGS__)

// GEMM kind for the non-convolution matrices (attention, 1x1 projections, linears).
static enum gemm_kind other_kind(const struct gpu_trainer *g)
{
    return g->prec == GPU_PRECISION_BF16 ? GK_TF32 : GK_F32;
}

// ---------------------------------------------------------------------------------------
// building the graph

static float *act_take(struct gpu_trainer *g, size_t n)
{
    n = (n + 63) & ~(size_t)63; // 256-byte alignment for every buffer
    if (!g->carving) {
        g->act_n += n;
        return NULL;
    }
    float *p = g->act + g->act_cur;
    g->act_cur += n;
    return p;
}

static float *dact_take(struct gpu_trainer *g, size_t n)
{
    n = (n + 63) & ~(size_t)63;
    if (!g->carving) {
        g->dact_n += n;
        return NULL;
    }
    float *p = g->dact + g->dact_cur;
    g->dact_cur += n;
    return p;
}

// Offset of the CPU model's tensor `name`, checked against the expected element count.
static size_t pofs(struct gpu_trainer *g, size_t numel, const char *fmt, const char *prefix)
{
    char name[2 * UNET_NAME_MAX + 16]; // longer than any tensor name: no match, reported
    snprintf(name, sizeof name, fmt, prefix);
    const struct unet_tensor *t = unet_find_tensor(g->host_model, name);
    if (!t || t->numel != numel) {
        if (!g->build_failed)
            snprintf(g->build_msg, sizeof g->build_msg,
                     "tensor '%s' %s in the CPU model (expected %zu values)", name,
                     t ? "has another size" : "missing", numel);
        g->build_failed = true;
        return 0;
    }
    return t->offset;
}

static void note_max(size_t *m, size_t v)
{
    if (v > *m)
        *m = v;
}

static struct gblock *new_block(struct gpu_trainer *g)
{
    struct gblock *b = &g->blocks[g->nblocks++];
    memset(b, 0, sizeof *b);
    b->skip = -1;
    return b;
}

static void add_out(struct gpu_trainer *g, struct gblock *b)
{
    size_t n = (size_t)g->B * b->cout * b->Ho * b->Ho;
    b->out = act_take(g, n);
    b->dout = dact_take(g, n);
    note_max(&g->max_act, n);
}

static void conv_col(struct gpu_trainer *g, int cin, int Ho, int k)
{
    note_max(&g->max_col, (size_t)cin * k * k * g->B * Ho * Ho);
}

static int add_conv(struct gpu_trainer *g, int input, int cin, int cout, int H, int stride,
                    const char *name)
{
    struct gblock *b = new_block(g);
    b->kind = BK_CONV;
    b->input = input;
    b->cin = cin, b->cout = cout, b->H = H, b->stride = stride;
    b->Ho = (H + 2 - 3) / stride + 1;
    b->p[CP_W] = pofs(g, (size_t)cout * cin * 9, "%s.weight", name);
    b->p[CP_B] = pofs(g, (size_t)cout, "%s.bias", name);
    conv_col(g, cin, b->Ho, 3);
    add_out(g, b);
    return g->nblocks - 1;
}

static int add_up(struct gpu_trainer *g, int input, int c, int H, const char *name)
{
    struct gblock *b = new_block(g);
    b->kind = BK_UP;
    b->input = input;
    b->cin = b->cout = c, b->H = H, b->Ho = 2 * H;
    b->p[CP_W] = pofs(g, (size_t)c * c * 9, "%s.weight", name);
    b->p[CP_B] = pofs(g, (size_t)c, "%s.bias", name);
    size_t n = (size_t)g->B * c * 4 * H * H;
    b->ups = act_take(g, n);
    note_max(&g->max_act, n);
    conv_col(g, c, 2 * H, 3);
    add_out(g, b);
    return g->nblocks - 1;
}

static int add_res(struct gpu_trainer *g, int input, int skip, int cin, int cout, int H,
                   const char *name)
{
    struct gblock *b = new_block(g);
    size_t B = (size_t)g->B, HW = (size_t)H * H, G = (size_t)g->cfg.groups;
    int td = g->cfg.temb_dim;
    b->kind = BK_RES;
    b->input = input, b->skip = skip;
    b->cin = cin, b->cout = cout, b->H = b->Ho = H;
    b->has_skip_conv = cin != cout;
    b->p[RP_N1W] = pofs(g, cin, "%s.norm1.weight", name);
    b->p[RP_N1B] = pofs(g, cin, "%s.norm1.bias", name);
    b->p[RP_C1W] = pofs(g, (size_t)cout * cin * 9, "%s.conv1.weight", name);
    b->p[RP_C1B] = pofs(g, cout, "%s.conv1.bias", name);
    b->p[RP_EW] = pofs(g, (size_t)cout * td, "%s.emb.weight", name);
    b->p[RP_EB] = pofs(g, cout, "%s.emb.bias", name);
    b->p[RP_N2W] = pofs(g, cout, "%s.norm2.weight", name);
    b->p[RP_N2B] = pofs(g, cout, "%s.norm2.bias", name);
    b->p[RP_C2W] = pofs(g, (size_t)cout * cout * 9, "%s.conv2.weight", name);
    b->p[RP_C2B] = pofs(g, cout, "%s.conv2.bias", name);
    if (b->has_skip_conv) {
        b->p[RP_SW] = pofs(g, (size_t)cout * cin, "%s.skip.weight", name);
        b->p[RP_SB] = pofs(g, cout, "%s.skip.bias", name);
    }
    if (skip >= 0)
        b->cat = act_take(g, B * cin * HW);
    b->y1 = act_take(g, B * cin * HW);
    b->m1 = act_take(g, B * G);
    b->r1 = act_take(g, B * G);
    b->h1 = act_take(g, B * cout * HW);
    b->y2 = act_take(g, B * cout * HW);
    b->m2 = act_take(g, B * G);
    b->r2 = act_take(g, B * G);
    b->eproj = act_take(g, B * cout);
    note_max(&g->max_act, B * cin * HW);
    note_max(&g->max_part, 2 * B * (size_t)(cin > cout ? cin : cout));
    conv_col(g, cin > cout ? cin : cout, H, 3);
    add_out(g, b);
    return g->nblocks - 1;
}

static int add_attn(struct gpu_trainer *g, int input, int C, int H, const char *name)
{
    struct gblock *b = new_block(g);
    size_t B = (size_t)g->B, N = (size_t)H * H;
    b->kind = BK_ATTN;
    b->input = input;
    b->cin = b->cout = C, b->H = b->Ho = H;
    b->p[AP_NW] = pofs(g, C, "%s.norm.weight", name);
    b->p[AP_NB] = pofs(g, C, "%s.norm.bias", name);
    b->p[AP_QW] = pofs(g, (size_t)3 * C * C, "%s.qkv.weight", name);
    b->p[AP_QB] = pofs(g, (size_t)3 * C, "%s.qkv.bias", name);
    b->p[AP_PW] = pofs(g, (size_t)C * C, "%s.proj.weight", name);
    b->p[AP_PB] = pofs(g, C, "%s.proj.bias", name);
    b->y1 = act_take(g, B * C * N);
    b->m1 = act_take(g, B * g->cfg.groups);
    b->r1 = act_take(g, B * g->cfg.groups);
    b->qkv = act_take(g, B * 3 * C * N);
    b->P = act_take(g, B * N * N);
    b->o = act_take(g, B * C * N);
    note_max(&g->max_nn, B * N * N);
    note_max(&g->max_act, B * 3 * C * N);
    note_max(&g->max_part, 2 * B * (size_t)C);
    add_out(g, b);
    return g->nblocks - 1;
}

static int add_out_block(struct gpu_trainer *g, int input, int cin, int H)
{
    struct gblock *b = new_block(g);
    size_t B = (size_t)g->B, HW = (size_t)H * H;
    b->kind = BK_OUT;
    b->input = input;
    b->cin = cin, b->cout = g->cfg.in_channels, b->H = b->Ho = H;
    b->p[OP_NW] = pofs(g, cin, "norm_out.weight%s", "");
    b->p[OP_NB] = pofs(g, cin, "norm_out.bias%s", "");
    b->p[OP_CW] = pofs(g, (size_t)b->cout * cin * 9, "conv_out.weight%s", "");
    b->p[OP_CB] = pofs(g, b->cout, "conv_out.bias%s", "");
    b->y1 = act_take(g, B * cin * HW);
    b->m1 = act_take(g, B * g->cfg.groups);
    b->r1 = act_take(g, B * g->cfg.groups);
    note_max(&g->max_part, 2 * B * (size_t)cin);
    conv_col(g, cin, H, 3);
    add_out(g, b);
    return g->nblocks - 1;
}

static void build(struct gpu_trainer *g)
{
    const struct unet_config *c = &g->cfg;
    int ch = c->channels, td = c->temb_dim;
    size_t B = (size_t)g->B, img = (size_t)c->in_channels * c->image_size * c->image_size;
    g->nblocks = 0;
    char name[UNET_NAME_MAX];
    g->l1w = pofs(g, (size_t)td * ch, "temb.lin1.weight%s", "");
    g->l1b = pofs(g, td, "temb.lin1.bias%s", "");
    g->l2w = pofs(g, (size_t)td * td, "temb.lin2.weight%s", "");
    g->l2b = pofs(g, td, "temb.lin2.bias%s", "");
    g->table = pofs(g, (size_t)c->cap_buckets * c->cap_dim, "cap.table%s", "");
    g->null_v = pofs(g, c->cap_dim, "cap.null%s", "");
    g->cpw = pofs(g, (size_t)td * c->cap_dim, "cap.proj.weight%s", "");
    g->cpb = pofs(g, td, "cap.proj.bias%s", "");

    g->x0 = act_take(g, B * img);
    g->xt = act_take(g, B * img);
    g->noise = act_take(g, B * img);
    g->dout_img = act_take(g, B * img);
    g->temb_in = act_take(g, B * ch);
    g->t1 = act_take(g, B * td);
    g->t1a = act_take(g, B * td);
    g->t2 = act_take(g, B * td);
    g->capvec = act_take(g, B * c->cap_dim);
    g->cproj = act_take(g, B * td);
    g->emb = act_take(g, B * td);
    g->emb_act = act_take(g, B * td);
    g->demb_act = act_take(g, B * td);
    g->demb = act_take(g, B * td);
    g->dt1a = act_take(g, B * td);
    g->dt1 = act_take(g, B * td);
    g->dcapvec = act_take(g, B * c->cap_dim);

    int H = c->image_size;
    int stack[64], nstack = 0;
    int last = add_conv(g, -1, c->in_channels, ch, H, 1, "conv_in");
    stack[nstack++] = last;
    int cur = ch, max_c = ch;
    for (int i = 0; i < c->num_levels; i++) {
        int co = ch * c->mult[i];
        max_c = co > max_c ? co : max_c;
        for (int j = 0; j < c->num_res_blocks; j++) {
            snprintf(name, sizeof name, "down.%d.res.%d", i, j);
            last = add_res(g, last, -1, cur, co, H, name);
            cur = co;
            if (H == c->attn_resolution) {
                snprintf(name, sizeof name, "down.%d.attn.%d", i, j);
                last = add_attn(g, last, cur, H, name);
            }
            stack[nstack++] = last;
        }
        if (i != c->num_levels - 1) {
            snprintf(name, sizeof name, "down.%d.down", i);
            last = add_conv(g, last, cur, cur, H, 2, name);
            H /= 2;
            stack[nstack++] = last;
        }
    }
    last = add_res(g, last, -1, cur, cur, H, "mid.res.0");
    last = add_attn(g, last, cur, H, "mid.attn.0");
    last = add_res(g, last, -1, cur, cur, H, "mid.res.1");
    for (int i = c->num_levels - 1; i >= 0; i--) {
        int co = ch * c->mult[i];
        for (int j = 0; j < c->num_res_blocks + 1; j++) {
            int skip = stack[--nstack];
            int cs = g->blocks[skip].cout;
            snprintf(name, sizeof name, "up.%d.res.%d", i, j);
            last = add_res(g, last, skip, cur + cs, co, H, name);
            cur = co;
            if (H == c->attn_resolution) {
                snprintf(name, sizeof name, "up.%d.attn.%d", i, j);
                last = add_attn(g, last, cur, H, name);
            }
        }
        if (i != 0) {
            snprintf(name, sizeof name, "up.%d.up", i);
            last = add_up(g, last, cur, H, name);
            H *= 2;
        }
    }
    add_out_block(g, last, cur, H);
    g->deproj = act_take(g, B * max_c * 2);
}

// Upper bound on blocks: conv_in + per level (res + attn) * nrb + down, mid 3, per level
// (res + attn) * (nrb + 1) + up, out.
static int max_blocks(const struct unet_config *c)
{
    return 8 + c->num_levels * (2 * c->num_res_blocks + 1) +
           c->num_levels * (2 * (c->num_res_blocks + 1) + 1);
}

// ---------------------------------------------------------------------------------------
// forward

static const float *block_input(const struct gpu_trainer *g, const struct gblock *b)
{
    return b->input < 0 ? g->xt : g->blocks[b->input].out;
}

static float *block_dinput(const struct gpu_trainer *g, const struct gblock *b)
{
    return b->input < 0 ? NULL : g->blocks[b->input].dout;
}

static const float *P32(const struct gpu_trainer *g, size_t off)
{
    return g->params + off;
}

// y (prefilled by the caller) += conv(act(x)) with W at params offset `w`.
static void conv_forward(struct gpu_trainer *g, float *y, const float *x, size_t w, int Cin,
                         int H, int Cout, int k, int s, int silu)
{
    int B = g->cur_B;
    int Ho = (H + 2 * (k / 2) - k) / s + 1;
    int N = B * Ho * Ho, K = Cin * k * k;
    size_t ncol = (size_t)K * N;
    if (g->prec == GPU_PRECISION_BF16) {
        bf16 *col = (bf16 *)g->col;
        k_im2col<bf16><<<grid_for(ncol), NTHREADS, 0, g->stream>>>(col, x, Cin, B, H, H, k, s,
                                                                    silu);
        KCHECK(g);
        gemm(g, GK_BF16, false, false, Cout, N, K, g->params_bf + w, K, col, N, y, N, 1.0f);
        return;
    }
    const float *col = x;
    if (k != 1 || s != 1 || silu) {
        k_im2col<float><<<grid_for(ncol), NTHREADS, 0, g->stream>>>(g->col, x, Cin, B, H, H, k, s,
                                                                     silu);
        KCHECK(g);
        col = g->col;
    }
    gemm(g, GK_F32, false, false, Cout, N, K, P32(g, w), K, col, N, y, N, 1.0f);
}

static void fill_cm(struct gpu_trainer *g, float *y, const float *bias, const float *bias2,
                    const float *e, const float *res, int C, size_t HW)
{
    size_t n = (size_t)C * g->cur_B * HW;
    k_fill_cm<<<grid_for(n), NTHREADS, 0, g->stream>>>(y, bias, bias2, e, res, C, g->cur_B, HW);
    KCHECK(g);
}

static void groupnorm_forward(struct gpu_trainer *g, float *y, float *m, float *r, const float *x,
                              size_t gw, size_t gb, int C, size_t HW)
{
    int G = g->cfg.groups;
    k_groupnorm_forward<<<g->cur_B * G, NTHREADS, 0, g->stream>>>(
        y, m, r, x, P32(g, gw), P32(g, gb), g->cur_B, C, HW, G);
    KCHECK(g);
}

static void linear_forward(struct gpu_trainer *g, float *y, const float *x, size_t w, size_t bias,
                           int in, int out)
{
    int B = g->cur_B;
    k_fill_rows<<<grid_for((size_t)B * out), NTHREADS, 0, g->stream>>>(y, P32(g, bias), B, out);
    KCHECK(g);
    gemm(g, GK_F32, false, true, B, out, in, x, in, P32(g, w), in, y, out, 1.0f);
}

static void res_forward(struct gpu_trainer *g, struct gblock *b)
{
    int B = g->cur_B;
    size_t HW = (size_t)b->H * b->H;
    const float *x = block_input(g, b);
    if (b->skip >= 0) {
        const struct gblock *in = &g->blocks[b->input], *sk = &g->blocks[b->skip];
        size_t nh = (size_t)in->cout * B * HW, ns = (size_t)sk->cout * B * HW;
        cudaMemcpyAsync(b->cat, in->out, nh * sizeof(float), cudaMemcpyDeviceToDevice, g->stream);
        cudaMemcpyAsync(b->cat + nh, sk->out, ns * sizeof(float), cudaMemcpyDeviceToDevice,
                        g->stream);
        x = b->cat;
    }
    const float *P = g->params;
    groupnorm_forward(g, b->y1, b->m1, b->r1, x, b->p[RP_N1W], b->p[RP_N1B], b->cin, HW);
    linear_forward(g, b->eproj, g->emb_act, b->p[RP_EW], b->p[RP_EB], g->cfg.temb_dim, b->cout);
    fill_cm(g, b->h1, P + b->p[RP_C1B], NULL, b->eproj, NULL, b->cout, HW);
    conv_forward(g, b->h1, b->y1, b->p[RP_C1W], b->cin, b->H, b->cout, 3, 1, 1);
    groupnorm_forward(g, b->y2, b->m2, b->r2, b->h1, b->p[RP_N2W], b->p[RP_N2B], b->cout, HW);
    if (b->has_skip_conv) {
        fill_cm(g, b->out, P + b->p[RP_C2B], P + b->p[RP_SB], NULL, NULL, b->cout, HW);
        if (g->prec == GPU_PRECISION_BF16)
            conv_forward(g, b->out, x, b->p[RP_SW], b->cin, b->H, b->cout, 1, 1, 0);
        else
            gemm(g, GK_F32, false, false, b->cout, B * (int)HW, b->cin, P32(g, b->p[RP_SW]),
                 b->cin, x, B * (int)HW, b->out, B * (int)HW, 1.0f);
    } else {
        fill_cm(g, b->out, P + b->p[RP_C2B], NULL, NULL, x, b->cout, HW);
    }
    conv_forward(g, b->out, b->y2, b->p[RP_C2W], b->cout, b->H, b->cout, 3, 1, 1);
}

static void attn_forward(struct gpu_trainer *g, struct gblock *b)
{
    int B = g->cur_B, C = b->cin, N = b->H * b->H, BN = B * N;
    enum gemm_kind gk = other_kind(g);
    const float *x = block_input(g, b);
    const float *P = g->params;
    groupnorm_forward(g, b->y1, b->m1, b->r1, x, b->p[AP_NW], b->p[AP_NB], C, N);
    fill_cm(g, b->qkv, P + b->p[AP_QB], NULL, NULL, NULL, 3 * C, N);
    gemm(g, gk, false, false, 3 * C, BN, C, P + b->p[AP_QW], C, b->y1, BN, b->qkv, BN, 1.0f);
    const float *q = b->qkv, *k = b->qkv + (size_t)C * BN, *v = b->qkv + (size_t)2 * C * BN;
    // S_b = q_b^T k_b, then softmax(S * scale) row-wise
    gemm_batched(g, gk, true, false, N, N, C, q, BN, N, k, BN, N, b->P, N, (long long)N * N, B);
    size_t rows = (size_t)B * N;
    k_softmax<<<grid_for(rows * 32), NTHREADS, 0, g->stream>>>(b->P, rows, N,
                                                               1.0f / sqrtf((float)C));
    KCHECK(g);
    // o_b = v_b P_b^T
    gemm_batched(g, gk, false, true, C, N, N, v, BN, N, b->P, N, (long long)N * N, b->o, BN, N, B);
    fill_cm(g, b->out, P + b->p[AP_PB], NULL, NULL, x, C, N);
    gemm(g, gk, false, false, C, BN, C, P + b->p[AP_PW], C, b->o, BN, b->out, BN, 1.0f);
}

static void model_forward(struct gpu_trainer *g, const int *ts_dev, const uint32_t *ids,
                          const int *ntok)
{
    const struct unet_config *c = &g->cfg;
    int B = g->cur_B, td = c->temb_dim;
    const float *P = g->params;
    k_timestep_embedding<<<grid_for((size_t)B * c->channels / 2), NTHREADS, 0, g->stream>>>(
        g->temb_in, ts_dev, B, c->channels);
    KCHECK(g);
    linear_forward(g, g->t1, g->temb_in, g->l1w, g->l1b, c->channels, td);
    k_silu<<<grid_for((size_t)B * td), NTHREADS, 0, g->stream>>>(g->t1a, g->t1, (size_t)B * td);
    linear_forward(g, g->t2, g->t1a, g->l2w, g->l2b, td, td);
    k_caption_forward<<<grid_for((size_t)B * c->cap_dim), NTHREADS, 0, g->stream>>>(
        g->capvec, P + g->table, P + g->null_v, ids, ntok, B, c->cap_dim,
        UNET_CAPTION_MAX_TOKENS);
    KCHECK(g);
    linear_forward(g, g->cproj, g->capvec, g->cpw, g->cpb, c->cap_dim, td);
    k_add<<<grid_for((size_t)B * td), NTHREADS, 0, g->stream>>>(g->emb, g->t2, g->cproj,
                                                               (size_t)B * td);
    k_silu<<<grid_for((size_t)B * td), NTHREADS, 0, g->stream>>>(g->emb_act, g->emb,
                                                                (size_t)B * td);
    KCHECK(g);
    for (int i = 0; i < g->nblocks; i++) {
        struct gblock *b = &g->blocks[i];
        size_t HW = (size_t)b->H * b->H;
        switch (b->kind) {
        case BK_CONV:
            fill_cm(g, b->out, P + b->p[CP_B], NULL, NULL, NULL, b->cout, (size_t)b->Ho * b->Ho);
            conv_forward(g, b->out, block_input(g, b), b->p[CP_W], b->cin, b->H, b->cout, 3,
                         b->stride, 0);
            break;
        case BK_UP:
            k_upsample<<<grid_for((size_t)b->cin * B * 4 * HW), NTHREADS, 0, g->stream>>>(
                b->ups, block_input(g, b), (size_t)b->cin * B, b->H, b->H);
            KCHECK(g);
            fill_cm(g, b->out, P + b->p[CP_B], NULL, NULL, NULL, b->cout, (size_t)b->Ho * b->Ho);
            conv_forward(g, b->out, b->ups, b->p[CP_W], b->cin, b->Ho, b->cout, 3, 1, 0);
            break;
        case BK_RES:
            res_forward(g, b);
            break;
        case BK_ATTN:
            attn_forward(g, b);
            break;
        case BK_OUT:
            groupnorm_forward(g, b->y1, b->m1, b->r1, block_input(g, b), b->p[OP_NW],
                              b->p[OP_NB], b->cin, HW);
            fill_cm(g, b->out, P + b->p[OP_CB], NULL, NULL, NULL, b->cout, HW);
            conv_forward(g, b->out, b->y1, b->p[OP_CW], b->cin, b->H, b->cout, 3, 1, 1);
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// backward

// dW += dy col^T, dbias += rowsum(dy), and (dx != NULL) dx (=, or += when acc) col2im(W^T dy),
// for y = conv(act(x)).
static void conv_backward(struct gpu_trainer *g, float *dx, int acc, size_t w, size_t bias,
                          const float *dy, const float *x, int Cin, int H, int Cout, int k, int s,
                          int silu)
{
    int B = g->cur_B;
    int Ho = (H + 2 * (k / 2) - k) / s + 1;
    int N = B * Ho * Ho, K = Cin * k * k;
    size_t ncol = (size_t)K * N;
    float *G = g->grads;
    k_rowsum<<<Cout, NTHREADS, 0, g->stream>>>(G + bias, dy, Cout, (size_t)N, 0, B);
    KCHECK(g);
    bool direct = k == 1 && s == 1 && !silu;
    if (g->prec == GPU_PRECISION_BF16) {
        bf16 *col = (bf16 *)g->col;
        k_im2col<bf16><<<grid_for(ncol), NTHREADS, 0, g->stream>>>(col, x, Cin, B, H, H, k, s,
                                                                    silu);
        k_to_bf16<<<grid_for((size_t)Cout * N), NTHREADS, 0, g->stream>>>(g->dybf, dy,
                                                                           (size_t)Cout * N);
        KCHECK(g);
        gemm(g, GK_BF16, false, true, Cout, K, N, g->dybf, N, col, N, G + w, K, 1.0f);
        if (!dx)
            return;
        if (direct) {
            if (!acc)
                note_fail(g, "conv_backward", __LINE__, "1x1 backward must accumulate");
            gemm(g, GK_BF16, true, false, K, N, Cout, g->params_bf + w, K, g->dybf, N, dx, N,
                 1.0f);
            return;
        }
        gemm(g, GK_BF16, true, false, K, N, Cout, g->params_bf + w, K, g->dybf, N, g->dcol, N,
             0.0f);
    } else {
        const float *col = x;
        if (!direct) {
            k_im2col<float><<<grid_for(ncol), NTHREADS, 0, g->stream>>>(g->col, x, Cin, B, H, H,
                                                                         k, s, silu);
            KCHECK(g);
            col = g->col;
        }
        gemm(g, GK_F32, false, true, Cout, K, N, dy, N, col, N, G + w, K, 1.0f);
        if (!dx)
            return;
        if (direct) {
            gemm(g, GK_F32, true, false, K, N, Cout, P32(g, w), K, dy, N, dx, N, acc ? 1.0f : 0.0f);
            return;
        }
        gemm(g, GK_F32, true, false, K, N, Cout, P32(g, w), K, dy, N, g->dcol, N, 0.0f);
    }
    k_col2im<<<grid_for((size_t)Cin * B * H * H), NTHREADS, 0, g->stream>>>(dx, g->dcol, Cin, B, H,
                                                                             H, k, s, acc);
    KCHECK(g);
}

static void groupnorm_backward(struct gpu_trainer *g, float *dx, size_t gw, size_t gb,
                               const float *dA, const float *yact, int silu, const float *x,
                               const float *m, const float *r, int C, size_t HW)
{
    int B = g->cur_B, G = g->cfg.groups;
    k_groupnorm_backward<<<B * G, NTHREADS, 0, g->stream>>>(dx, g->part, dA, yact, silu, x, m, r,
                                                            P32(g, gw), B, C, HW, G);
    KCHECK(g);
    k_reduce_partials<<<(C + 127) / 128, 128, 0, g->stream>>>(g->grads + gw, g->part, B, C,
                                                              2 * (size_t)C);
    k_reduce_partials<<<(C + 127) / 128, 128, 0, g->stream>>>(g->grads + gb, g->part + C, B, C,
                                                              2 * (size_t)C);
    KCHECK(g);
}

// dx (+=) dy W, dW += dy^T x, db += colsum(dy) for y[B, out] = x[B, in] W^T + b.
static void linear_backward(struct gpu_trainer *g, float *dx, size_t w, size_t bias,
                            const float *dy, const float *x, int in, int out)
{
    int B = g->cur_B;
    if (dx)
        gemm(g, GK_F32, false, false, B, in, out, dy, out, P32(g, w), in, dx, in, 1.0f);
    gemm(g, GK_F32, true, false, out, in, B, dy, out, x, in, g->grads + w, in, 1.0f);
    k_colsum<<<(out + 127) / 128, 128, 0, g->stream>>>(g->grads + bias, dy, B, out);
    KCHECK(g);
}

static void res_backward(struct gpu_trainer *g, struct gblock *b)
{
    int B = g->cur_B;
    size_t HW = (size_t)b->H * b->H;
    size_t nin = (size_t)B * b->cin * HW, nout = (size_t)B * b->cout * HW;
    const float *x = b->skip >= 0 ? b->cat : block_input(g, b);
    float *dx = b->skip >= 0 ? g->s3 : block_dinput(g, b);
    if (b->skip >= 0)
        cudaMemsetAsync(dx, 0, nin * sizeof(float), g->stream);
    const float *dout = b->dout;
    if (b->has_skip_conv)
        conv_backward(g, dx, 1, b->p[RP_SW], b->p[RP_SB], dout, x, b->cin, b->H, b->cout, 1, 1, 0);
    else {
        k_accumulate<<<grid_for(nout), NTHREADS, 0, g->stream>>>(dx, dout, nout);
        KCHECK(g);
    }
    // conv2 on silu(y2): d(silu(y2)) -> s1
    conv_backward(g, g->s1, 0, b->p[RP_C2W], b->p[RP_C2B], dout, b->y2, b->cout, b->H, b->cout, 3,
                  1, 1);
    // GroupNorm 2 with the SiLU backward fused: dh1 -> s2
    cudaMemsetAsync(g->s2, 0, nout * sizeof(float), g->stream);
    groupnorm_backward(g, g->s2, b->p[RP_N2W], b->p[RP_N2B], g->s1, b->y2, 1, b->h1, b->m2, b->r2,
                       b->cout, HW);
    // emb projection: d(eproj)[b, o] = sum over pixels of dh1
    k_rowsum<<<b->cout * B, NTHREADS, 0, g->stream>>>(g->deproj, g->s2, b->cout * B, HW, 1, B);
    KCHECK(g);
    linear_backward(g, g->demb_act, b->p[RP_EW], b->p[RP_EB], g->deproj, g->emb_act,
                    g->cfg.temb_dim, b->cout);
    // conv1 on silu(y1): d(silu(y1)) -> s1
    conv_backward(g, g->s1, 0, b->p[RP_C1W], b->p[RP_C1B], g->s2, b->y1, b->cin, b->H, b->cout, 3,
                  1, 1);
    groupnorm_backward(g, dx, b->p[RP_N1W], b->p[RP_N1B], g->s1, b->y1, 1, x, b->m1, b->r1, b->cin,
                       HW);
    if (b->skip >= 0) {
        struct gblock *in = &g->blocks[b->input], *sk = &g->blocks[b->skip];
        size_t nh = (size_t)in->cout * B * HW, ns = (size_t)sk->cout * B * HW;
        k_accumulate<<<grid_for(nh), NTHREADS, 0, g->stream>>>(in->dout, dx, nh);
        k_accumulate<<<grid_for(ns), NTHREADS, 0, g->stream>>>(sk->dout, dx + nh, ns);
        KCHECK(g);
    }
}

static void attn_backward(struct gpu_trainer *g, struct gblock *b)
{
    int B = g->cur_B, C = b->cin, N = b->H * b->H, BN = B * N;
    enum gemm_kind gk = other_kind(g);
    float scale = 1.0f / sqrtf((float)C);
    const float *P = g->params;
    float *G = g->grads;
    const float *dy = b->dout;
    float *dxin = block_dinput(g, b);
    size_t n = (size_t)C * BN;
    k_accumulate<<<grid_for(n), NTHREADS, 0, g->stream>>>(dxin, dy, n); // residual
    KCHECK(g);
    // proj
    gemm(g, gk, false, true, C, C, BN, dy, BN, b->o, BN, G + b->p[AP_PW], C, 1.0f);
    k_rowsum<<<C, NTHREADS, 0, g->stream>>>(G + b->p[AP_PB], dy, C, (size_t)BN, 0, B);
    KCHECK(g);
    gemm(g, gk, true, false, C, BN, C, P + b->p[AP_PW], C, dy, BN, g->dO, BN, 0.0f);
    const float *q = b->qkv, *k = b->qkv + (size_t)C * BN, *v = b->qkv + (size_t)2 * C * BN;
    float *dq = g->dqkv, *dk = g->dqkv + (size_t)C * BN, *dv = g->dqkv + (size_t)2 * C * BN;
    long long NN = (long long)N * N;
    // dv_b = dO_b P_b;  dP_b = dO_b^T v_b
    gemm_batched(g, gk, false, false, C, N, N, g->dO, BN, N, b->P, N, NN, dv, BN, N, B);
    gemm_batched(g, gk, true, false, N, N, C, g->dO, BN, N, v, BN, N, g->dP, N, NN, B);
    size_t rows = (size_t)B * N;
    k_softmax_backward<<<grid_for(rows * 32), NTHREADS, 0, g->stream>>>(g->dP, b->P, rows, N,
                                                                        scale);
    KCHECK(g);
    // dq_b = k_b dS_b^T;  dk_b = q_b dS_b
    gemm_batched(g, gk, false, true, C, N, N, k, BN, N, g->dP, N, NN, dq, BN, N, B);
    gemm_batched(g, gk, false, false, C, N, N, q, BN, N, g->dP, N, NN, dk, BN, N, B);
    // qkv projection
    gemm(g, gk, false, true, 3 * C, C, BN, g->dqkv, BN, b->y1, BN, G + b->p[AP_QW], C, 1.0f);
    k_rowsum<<<3 * C, NTHREADS, 0, g->stream>>>(G + b->p[AP_QB], g->dqkv, 3 * C, (size_t)BN, 0, B);
    KCHECK(g);
    gemm(g, gk, true, false, C, BN, 3 * C, P + b->p[AP_QW], C, g->dqkv, BN, g->s1, BN, 0.0f);
    groupnorm_backward(g, dxin, b->p[AP_NW], b->p[AP_NB], g->s1, NULL, 0, block_input(g, b), b->m1,
                       b->r1, C, N);
}

static void model_backward(struct gpu_trainer *g, const int *urow, const int *uoff, const int *eb,
                           const float *ew, int nu)
{
    const struct unet_config *c = &g->cfg;
    int B = g->cur_B, td = c->temb_dim;
    cudaMemsetAsync(g->dact, 0, g->dact_n * sizeof(float), g->stream);
    cudaMemsetAsync(g->demb_act, 0, (size_t)B * td * sizeof(float), g->stream);
    struct gblock *last = &g->blocks[g->nblocks - 1];
    size_t nimg = (size_t)B * last->cout * last->Ho * last->Ho;
    cudaMemcpyAsync(last->dout, g->dout_img, nimg * sizeof(float), cudaMemcpyDeviceToDevice,
                    g->stream);
    for (int i = g->nblocks - 1; i >= 0; i--) {
        struct gblock *b = &g->blocks[i];
        size_t HW = (size_t)b->H * b->H;
        switch (b->kind) {
        case BK_CONV:
            conv_backward(g, block_dinput(g, b), 1, b->p[CP_W], b->p[CP_B], b->dout,
                          block_input(g, b), b->cin, b->H, b->cout, 3, b->stride, 0);
            break;
        case BK_UP:
            conv_backward(g, g->s1, 0, b->p[CP_W], b->p[CP_B], b->dout, b->ups, b->cin, b->Ho,
                          b->cout, 3, 1, 0);
            k_upsample_backward<<<grid_for((size_t)b->cin * B * HW), NTHREADS, 0, g->stream>>>(
                block_dinput(g, b), g->s1, (size_t)b->cin * B, b->H, b->H);
            KCHECK(g);
            break;
        case BK_RES:
            res_backward(g, b);
            break;
        case BK_ATTN:
            attn_backward(g, b);
            break;
        case BK_OUT:
            conv_backward(g, g->s1, 0, b->p[OP_CW], b->p[OP_CB], b->dout, b->y1, b->cin, b->H,
                          b->cout, 3, 1, 1);
            groupnorm_backward(g, block_dinput(g, b), b->p[OP_NW], b->p[OP_NB], g->s1, b->y1, 1,
                               block_input(g, b), b->m1, b->r1, b->cin, HW);
            break;
        }
    }
    // embeddings
    size_t ne = (size_t)B * td;
    k_silu_backward<<<grid_for(ne), NTHREADS, 0, g->stream>>>(g->demb, g->demb_act, g->emb, ne);
    cudaMemsetAsync(g->dt1a, 0, ne * sizeof(float), g->stream);
    linear_backward(g, g->dt1a, g->l2w, g->l2b, g->demb, g->t1a, td, td);
    k_silu_backward<<<grid_for(ne), NTHREADS, 0, g->stream>>>(g->dt1, g->dt1a, g->t1, ne);
    linear_backward(g, NULL, g->l1w, g->l1b, g->dt1, g->temb_in, c->channels, td);
    cudaMemsetAsync(g->dcapvec, 0, (size_t)B * c->cap_dim * sizeof(float), g->stream);
    linear_backward(g, g->dcapvec, g->cpw, g->cpb, g->demb, g->capvec, c->cap_dim, td);
    if (nu > 0)
        k_caption_backward<<<nu, 128, 0, g->stream>>>(g->grads + g->table, g->grads + g->null_v,
                                                      g->dcapvec, urow, uoff, eb, ew,
                                                      c->cap_buckets, c->cap_dim);
    KCHECK(g);
}

// ---------------------------------------------------------------------------------------
// creation

extern "C" int gpu_trainer_device_count(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

extern "C" int gpu_trainer_available(char *why, size_t why_len)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        if (why && why_len)
            snprintf(why, why_len, "no CUDA device: %s",
                     e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount() is 0");
        return 0;
    }
    char lib_why[512];
    if (load_cublas(lib_why, sizeof lib_why)) {
        if (why && why_len)
            snprintf(why, why_len, "%s", lib_why);
        return 0;
    }
    if (why && why_len)
        snprintf(why, why_len, "%d CUDA device(s)", count);
    return 1;
}

static int dmalloc(struct gpu_trainer *g, void **p, size_t bytes, struct pm_error *err)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        cudaGetLastError();
        return pm_error_set(err, PM_ERR_NOMEM, "cudaMalloc of %zu bytes failed (%s; %zu held)",
                            bytes, cudaGetErrorString(e), g->dev_bytes);
    }
    g->dev_bytes += bytes;
    return PM_OK;
}

// Staging slot layout (byte offsets, each 256-aligned).
static void slot_layout(struct gpu_trainer *g)
{
    size_t B = (size_t)g->B, T = UNET_CAPTION_MAX_TOKENS;
    size_t img = (size_t)g->cfg.in_channels * g->cfg.image_size * g->cfg.image_size;
    size_t o = 0;
#define SLOT_FIELD(field, bytes)                                                                   \
    do {                                                                                           \
        g->field = o;                                                                              \
        o += ((bytes) + 255) & ~(size_t)255;                                                       \
    } while (0)
    SLOT_FIELD(off_ts, B * sizeof(int));
    SLOT_FIELD(off_ntok, B * sizeof(int));
    SLOT_FIELD(off_ids, B * T * sizeof(uint32_t));
    SLOT_FIELD(off_state, B * 4 * sizeof(uint64_t));
    SLOT_FIELD(off_urow, (B * T + B) * sizeof(int));
    SLOT_FIELD(off_uoff, (B * T + B + 1) * sizeof(int));
    SLOT_FIELD(off_eb, (B * T + B) * sizeof(int));
    SLOT_FIELD(off_ew, (B * T + B) * sizeof(float));
    SLOT_FIELD(off_x, B * img * sizeof(float)); // u8 images use the first quarter
    SLOT_FIELD(off_noise, B * img * sizeof(float));
#undef SLOT_FIELD
    g->slot_bytes = o;
}

extern "C" void gpu_trainer_free(struct gpu_trainer *g)
{
    if (!g)
        return;
    cudaSetDevice(g->device);
    if (g->stream)
        cudaStreamSynchronize(g->stream);
    if (g->copy_stream)
        cudaStreamSynchronize(g->copy_stream);
#ifdef PM_HAVE_NCCL
    if (g->comm)
        lib.comm_destroy(g->comm);
#endif
    for (int i = 0; i < RING; i++) {
        cudaFreeHost(g->ring[i].host);
        cudaFree(g->ring[i].dev);
        if (g->ring[i].copied)
            cudaEventDestroy(g->ring[i].copied);
        if (g->ring[i].consumed)
            cudaEventDestroy(g->ring[i].consumed);
    }
    void *dev[] = {g->params, g->grads, g->ema,  g->adam_m,      g->adam_v,  g->params_bf,
                   g->decay_mask, g->ca, g->cb, g->act, g->dact, g->s1, g->s2, g->s3, g->dO,
                   g->dqkv, g->dP, g->part, g->col, g->dcol, g->dybf, g->mse_partial,
                   g->loss_dev};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    cudaFreeHost(g->loss_host);
    if (g->blas)
        lib.destroy(g->blas);
    if (g->stream)
        cudaStreamDestroy(g->stream);
    if (g->copy_stream)
        cudaStreamDestroy(g->copy_stream);
    unet_free(g->host_model);
    free(g->blocks);
    free(g);
}

extern "C" int gpu_trainer_create(const struct trainer_options *o, enum gpu_precision prec,
                                  int device, struct gpu_trainer **out, struct pm_error *err)
{
    *out = NULL;
    char why[256];
    if (!gpu_trainer_available(why, sizeof why))
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "--device cuda: %s", why);
    struct unet_config cfg;
    int rc = trainer_options_check(o, &cfg, err);
    if (rc)
        return rc;
    if (o->max_batch < 1 || o->max_batch > 4096)
        return pm_error_set(err, PM_ERR_USAGE, "max batch %d outside 1..4096", o->max_batch);
    struct gpu_trainer *g = (struct gpu_trainer *)calloc(1, sizeof *g);
    if (!g)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    g->opt = *o;
    g->prec = prec;
    g->device = device;
    g->B = o->max_batch;
    g->world = 1;
    g->sync_debug = getenv("PM_GPU_SYNC_DEBUG") && strcmp(getenv("PM_GPU_SYNC_DEBUG"), "0") != 0;
    rc = unet_create(&cfg, 1, &g->host_model, err);
    if (rc) {
        free(g);
        return rc;
    }
    g->cfg = *unet_get_config(g->host_model);
    g->n = unet_num_params(g->host_model);
#define TRY(call)                                                                                  \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rc = pm_error_set(err, PM_ERR_INTERNAL, "%s: %s", #call, cudaGetErrorString(e_));      \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
#define ALLOC(ptr, bytes)                                                                          \
    do {                                                                                           \
        if ((rc = dmalloc(g, (void **)&(ptr), (bytes), err)) != PM_OK)                             \
            goto fail;                                                                             \
    } while (0)
    {
        TRY(cudaSetDevice(device));
        cudaDeviceProp prop;
        TRY(cudaGetDeviceProperties(&prop, device));
        snprintf(g->devname, sizeof g->devname, "%.200s (sm_%d%d, %d SMs, %.1f GiB)", prop.name,
                 prop.major, prop.minor, prop.multiProcessorCount,
                 (double)prop.totalGlobalMem / (1u << 30));
        TRY(cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking));
        TRY(cudaStreamCreateWithFlags(&g->copy_stream, cudaStreamNonBlocking));
        if (lib.create(&g->blas) != CUBLAS_STATUS_SUCCESS) {
            g->blas = NULL;
            rc = pm_error_set(err, PM_ERR_INTERNAL, "cublasCreate failed");
            goto fail;
        }
        lib.set_stream(g->blas, g->stream);

        // graph: pass 0 sizes, pass 1 carves
        g->blocks = (struct gblock *)calloc((size_t)max_blocks(&g->cfg), sizeof *g->blocks);
        if (!g->blocks) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        build(g);
        if (g->build_failed) {
            rc = pm_error_set(err, PM_ERR_INTERNAL, "GPU model layout: %s", g->build_msg);
            goto fail;
        }
        ALLOC(g->act, g->act_n * sizeof(float));
        ALLOC(g->dact, g->dact_n * sizeof(float));
        g->carving = true;
        size_t act_n = g->act_n, dact_n = g->dact_n;
        build(g);
        if (g->act_cur != act_n || g->dact_cur != dact_n) {
            rc = pm_error_set(err, PM_ERR_INTERNAL, "GPU model layout differs between passes");
            goto fail;
        }
        size_t B = (size_t)g->B;
        size_t maxc = 0;
        for (int i = 0; i < g->cfg.num_levels; i++)
            note_max(&maxc, (size_t)g->cfg.channels * g->cfg.mult[i]);
        ALLOC(g->s1, g->max_act * sizeof(float));
        ALLOC(g->s2, g->max_act * sizeof(float));
        ALLOC(g->s3, g->max_act * sizeof(float));
        ALLOC(g->dO, g->max_act * sizeof(float));
        ALLOC(g->dqkv, g->max_act * sizeof(float));
        ALLOC(g->dP, (g->max_nn ? g->max_nn : 1) * sizeof(float));
        ALLOC(g->part, (g->max_part + 2 * B * 4 * maxc) * sizeof(float));
        ALLOC(g->col, g->max_col * sizeof(float));
        ALLOC(g->dcol, g->max_col * sizeof(float));
        ALLOC(g->dybf, g->max_act * sizeof(bf16));
        g->mse_blocks = 1024;
        ALLOC(g->mse_partial, (size_t)g->mse_blocks * sizeof(double));
        ALLOC(g->loss_dev, sizeof(float));
        TRY(cudaMallocHost((void **)&g->loss_host, sizeof(float)));
        *g->loss_host = 0.0f;

        // parameters and optimizer state
        size_t bytes = g->n * sizeof(float);
        ALLOC(g->params, bytes);
        ALLOC(g->grads, bytes);
        ALLOC(g->ema, bytes);
        ALLOC(g->adam_m, bytes);
        ALLOC(g->adam_v, bytes);
        ALLOC(g->params_bf, g->n * sizeof(bf16));
        ALLOC(g->decay_mask, g->n);
        ALLOC(g->ca, DIFFUSION_STEPS * sizeof(float));
        ALLOC(g->cb, DIFFUSION_STEPS * sizeof(float));
        TRY(cudaMemset(g->grads, 0, bytes));
        TRY(cudaMemset(g->adam_m, 0, bytes));
        TRY(cudaMemset(g->adam_v, 0, bytes));
        float *host = (float *)malloc(bytes);
        unsigned char *mask = (unsigned char *)calloc(g->n, 1);
        if (!host || !mask) {
            free(host);
            free(mask);
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            goto fail;
        }
        unet_init_params(g->host_model, host, o->seed);
        size_t nt;
        const struct unet_tensor *tab = unet_tensors(g->host_model, &nt);
        for (size_t i = 0; i < nt; i++)
            if (tab[i].decay)
                memset(mask + tab[i].offset, 1, tab[i].numel);
        cudaError_t e1 = cudaMemcpy(g->params, host, bytes, cudaMemcpyHostToDevice);
        cudaError_t e2 = cudaMemcpy(g->ema, host, bytes, cudaMemcpyHostToDevice);
        cudaError_t e3 = cudaMemcpy(g->decay_mask, mask, g->n, cudaMemcpyHostToDevice);
        free(host);
        free(mask);
        TRY(e1);
        TRY(e2);
        TRY(e3);
        trainer_rng_init(&g->rng, o->seed);
        diffusion_schedule_init(&g->sched);
        float ca[DIFFUSION_STEPS], cb[DIFFUSION_STEPS];
        for (int t = 0; t < DIFFUSION_STEPS; t++) {
            ca[t] = (float)sqrt(g->sched.alpha_bar[t]);
            cb[t] = (float)sqrt(1.0 - g->sched.alpha_bar[t]);
        }
        TRY(cudaMemcpy(g->ca, ca, sizeof ca, cudaMemcpyHostToDevice));
        TRY(cudaMemcpy(g->cb, cb, sizeof cb, cudaMemcpyHostToDevice));

        slot_layout(g);
        for (int i = 0; i < RING; i++) {
            TRY(cudaMallocHost((void **)&g->ring[i].host, g->slot_bytes));
            ALLOC(g->ring[i].dev, g->slot_bytes);
            TRY(cudaEventCreateWithFlags(&g->ring[i].copied, cudaEventDisableTiming));
            TRY(cudaEventCreateWithFlags(&g->ring[i].consumed, cudaEventDisableTiming));
        }
        TRY(cudaDeviceSynchronize());
    }
#undef TRY
#undef ALLOC
    *out = g;
    return PM_OK;
fail:
    gpu_trainer_free(g);
    return rc;
}

extern "C" const struct unet *gpu_trainer_model(const struct gpu_trainer *g)
{
    return g->host_model;
}

extern "C" size_t gpu_trainer_num_params(const struct gpu_trainer *g)
{
    return g->n;
}

extern "C" uint64_t gpu_trainer_step(const struct gpu_trainer *g)
{
    return g->step;
}

extern "C" size_t gpu_trainer_device_bytes(const struct gpu_trainer *g)
{
    return g->dev_bytes + (size_t)RING * g->slot_bytes;
}

extern "C" const char *gpu_trainer_device_name(const struct gpu_trainer *g)
{
    return g->devname;
}

// ---------------------------------------------------------------------------------------
// staging

// Fill the host side of the next slot from captions, ts/drop (explicit) or the RNG, and copy
// it to the device. x_u8 / x_f32 / noise: the image data (exactly one of x_u8, x_f32).
static int stage(struct gpu_trainer *g, int B, const uint8_t *x_u8, const float *x_f32,
                 const float *noise, const char *const *captions, const int *ts_in,
                 const unsigned char *drop_in, uint64_t first_index, struct pm_error *err)
{
    if (B < 1 || B > g->B)
        return pm_error_set(err, PM_ERR_USAGE, "batch of %d outside 1..%d", B, g->B);
    if (g->staged_count == RING)
        return pm_error_set(err, PM_ERR_USAGE, "%d batches already staged", RING);
    if (cudaSetDevice(g->device) != cudaSuccess)
        return pm_error_set(err, PM_ERR_INTERNAL, "cudaSetDevice failed");
    int k = (g->staged_head + g->staged_count) % RING;
    struct slot *s = &g->ring[k];
    CU_TRY(cudaEventSynchronize(s->copied)); // the pinned buffer's previous copy is done
    unsigned char *h = s->host;
    int *ts = (int *)(h + g->off_ts), *ntok = (int *)(h + g->off_ntok);
    uint32_t *ids = (uint32_t *)(h + g->off_ids);
    uint64_t *st = (uint64_t *)(h + g->off_state);
    int *urow = (int *)(h + g->off_urow), *uoff = (int *)(h + g->off_uoff);
    int *eb = (int *)(h + g->off_eb);
    float *ew = (float *)(h + g->off_ew);
    const int T = UNET_CAPTION_MAX_TOKENS, buckets = g->cfg.cap_buckets;
    // randomness: the key of this step (staged steps ahead of the applied ones draw later keys)
    unsigned char drop[4096];
    if (!ts_in) {
        uint64_t key = trainer_step_key(&g->rng, g->pending_keys);
        for (int b = 0; b < B; b++) {
            struct train_rng r;
            trainer_sample_draw(key, first_index + (uint64_t)b, g->opt.caption_dropout, &r, &ts[b],
                                &drop[b]);
            memcpy(st + 4 * b, r.s, sizeof r.s);
        }
    } else {
        for (int b = 0; b < B; b++) {
            if (ts_in[b] < 0 || ts_in[b] >= DIFFUSION_STEPS)
                return pm_error_set(err, PM_ERR_USAGE, "timestep %d out of range", ts_in[b]);
            ts[b] = ts_in[b];
            drop[b] = drop_in ? drop_in[b] : 0;
        }
    }
    // captions: token ids, then the distinct rows with their contributions in (b, k) order
    int total = 0;
    for (int b = 0; b < B; b++) {
        ntok[b] = drop[b] ? 0
                          : unet_caption_tokens(captions ? captions[b] : NULL, buckets,
                                                ids + (size_t)b * T);
        total += ntok[b] ? ntok[b] : 1;
    }
    // counting sort by row (row `buckets` = null vector), stable in (b, k)
    static __thread int *count = NULL;
    static __thread int count_n = 0;
    if (count_n < buckets + 2) {
        free(count);
        count = (int *)malloc((size_t)(buckets + 2) * sizeof(int));
        count_n = count ? buckets + 2 : 0;
        if (!count)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    }
    memset(count, 0, (size_t)(buckets + 2) * sizeof(int));
    for (int b = 0; b < B; b++) {
        if (ntok[b] == 0)
            count[buckets + 1]++;
        for (int j = 0; j < ntok[b]; j++)
            count[ids[(size_t)b * T + j] + 1]++;
    }
    // count[r + 1] is row r's number of contributions; make count[r] the start of row r
    int nu = 0;
    for (int r = 0; r <= buckets; r++) {
        if (count[r + 1] > 0)
            urow[nu++] = r;
        count[r + 1] += count[r];
    }
    for (int u = 0; u < nu; u++)
        uoff[u] = count[urow[u]];
    uoff[nu] = total;
    for (int b = 0; b < B; b++) {
        if (ntok[b] == 0) {
            int pos = count[buckets]++;
            eb[pos] = b;
            ew[pos] = 1.0f;
            continue;
        }
        float inv = 1.0f / (float)ntok[b];
        for (int j = 0; j < ntok[b]; j++) {
            int pos = count[ids[(size_t)b * T + j]]++;
            eb[pos] = b;
            ew[pos] = inv;
        }
    }
    size_t img = (size_t)g->cfg.in_channels * g->cfg.image_size * g->cfg.image_size;
    size_t xbytes;
    if (x_u8) {
        xbytes = (size_t)B * img;
        memcpy(h + g->off_x, x_u8, xbytes);
    } else {
        xbytes = (size_t)B * img * sizeof(float);
        memcpy(h + g->off_x, x_f32, xbytes);
    }
    if (noise)
        memcpy(h + g->off_noise, noise, (size_t)B * img * sizeof(float));
    s->B = B;
    s->f32 = x_u8 == NULL;
    s->explicit_noise = noise != NULL;
    s->nu = nu;
    // the device copy may be overwritten once the step that read it is done
    CU_TRY(cudaStreamWaitEvent(g->copy_stream, s->consumed, 0));
    CU_TRY(cudaMemcpyAsync(s->dev, h, g->off_x, cudaMemcpyHostToDevice, g->copy_stream));
    CU_TRY(cudaMemcpyAsync(s->dev + g->off_x, h + g->off_x, xbytes, cudaMemcpyHostToDevice,
                           g->copy_stream));
    if (noise)
        CU_TRY(cudaMemcpyAsync(s->dev + g->off_noise, h + g->off_noise,
                               (size_t)B * img * sizeof(float), cudaMemcpyHostToDevice,
                               g->copy_stream));
    CU_TRY(cudaEventRecord(s->copied, g->copy_stream));
    g->staged_count++;
    if (!ts_in)
        g->pending_keys++;
    return PM_OK;
}

extern "C" int gpu_trainer_submit(struct gpu_trainer *g, const struct trainer_batch *b,
                                  struct pm_error *err)
{
    if ((b->images_u8 == NULL) == (b->images_f32 == NULL))
        return pm_error_set(err, PM_ERR_USAGE, "batch needs exactly one of uint8 or float images");
    if (b->B > 4096)
        return pm_error_set(err, PM_ERR_USAGE, "batch of %d too large", b->B);
    return stage(g, b->B, b->images_u8, b->images_f32, NULL, b->captions, NULL, NULL,
                 b->first_index, err);
}

extern "C" int gpu_trainer_submit_explicit(struct gpu_trainer *g, const float *x0,
                                           const char *const *captions, const int *ts,
                                           const float *noise, const unsigned char *drop, int B,
                                           struct pm_error *err)
{
    if (!x0 || !ts || !noise)
        return pm_error_set(err, PM_ERR_USAGE, "explicit batch needs x0, ts and noise");
    return stage(g, B, NULL, x0, noise, captions, ts, drop, 0, err);
}

// ---------------------------------------------------------------------------------------
// the step

extern "C" int gpu_trainer_compute_gradients(struct gpu_trainer *g, struct pm_error *err)
{
    if (g->staged_count == 0)
        return pm_error_set(err, PM_ERR_USAGE, "no batch staged (gpu_trainer_submit first)");
    int rc = take_fail(g, err);
    if (rc)
        return rc;
    CU_TRY(cudaSetDevice(g->device));
    int k = g->staged_head;
    struct slot *s = &g->ring[k];
    g->staged_head = (g->staged_head + 1) % RING;
    g->staged_count--;
    g->cur_slot = k;
    CU_TRY(cudaStreamWaitEvent(g->stream, s->copied, 0));
    const struct unet_config *c = &g->cfg;
    int B = s->B;
    g->cur_B = B;
    int C = c->in_channels, S = c->image_size;
    size_t HW = (size_t)S * S, n = (size_t)B * C * HW;
    unsigned char *d = s->dev;
    const int *ts = (const int *)(d + g->off_ts);
    if (s->f32)
        k_nchw_to_cm<<<grid_for(n), NTHREADS, 0, g->stream>>>(g->x0, (const float *)(d + g->off_x),
                                                               B, C, (int)HW);
    else
        k_u8_to_x0<<<grid_for(n), NTHREADS, 0, g->stream>>>(g->x0, d + g->off_x, B, C, S);
    if (s->explicit_noise)
        k_nchw_to_cm<<<grid_for(n), NTHREADS, 0, g->stream>>>(
            g->noise, (const float *)(d + g->off_noise), B, C, (int)HW);
    else
        k_noise<<<(B + 63) / 64, 64, 0, g->stream>>>(g->noise, (const uint64_t *)(d + g->off_state),
                                                      B, C, (int)HW);
    k_q_sample<<<grid_for(n), NTHREADS, 0, g->stream>>>(g->xt, g->x0, g->noise, ts, g->ca, g->cb,
                                                         B, HW, n);
    KCHECK(g);
    if (g->prec == GPU_PRECISION_BF16) {
        k_to_bf16<<<grid_for(g->n), NTHREADS, 0, g->stream>>>(g->params_bf, g->params, g->n);
        KCHECK(g);
    }
    model_forward(g, ts, (const uint32_t *)(d + g->off_ids), (const int *)(d + g->off_ntok));
    const float *pred = g->blocks[g->nblocks - 1].out;
    k_mse<<<g->mse_blocks, NTHREADS, 0, g->stream>>>(g->dout_img, g->mse_partial, pred, g->noise,
                                                     n);
    k_mse_final<<<1, 32, 0, g->stream>>>(g->loss_dev, g->mse_partial, g->mse_blocks, n);
    KCHECK(g);
    cudaMemsetAsync(g->grads, 0, g->n * sizeof(float), g->stream);
    model_backward(g, (const int *)(d + g->off_urow), (const int *)(d + g->off_uoff),
                   (const int *)(d + g->off_eb), (const float *)(d + g->off_ew), s->nu);
    CU_TRY(cudaMemcpyAsync(g->loss_host, g->loss_dev, sizeof(float), cudaMemcpyDeviceToHost,
                           g->stream));
    CU_TRY(cudaEventRecord(s->consumed, g->stream));
    return take_fail(g, err);
}

extern "C" int gpu_trainer_nccl_id(unsigned char id[GPU_TRAINER_NCCL_ID_BYTES],
                                   struct pm_error *err)
{
#ifdef PM_HAVE_NCCL
    int rc = load_nccl(err);
    if (rc)
        return rc;
    ncclUniqueId u;
    ncclResult_t r = lib.get_unique_id(&u);
    if (r != ncclSuccess)
        return pm_error_set(err, PM_ERR_INTERNAL, "ncclGetUniqueId: %s", lib.error_string(r));
    memcpy(id, u.internal, GPU_TRAINER_NCCL_ID_BYTES);
    return PM_OK;
#else
    (void)id;
    return pm_error_set(err, PM_ERR_UNSUPPORTED, "built without NCCL: one GPU rank only");
#endif
}

extern "C" int gpu_trainer_join(struct gpu_trainer *g,
                                const unsigned char id[GPU_TRAINER_NCCL_ID_BYTES], int rank,
                                int world, struct pm_error *err)
{
    if (world <= 1)
        return PM_OK;
#ifdef PM_HAVE_NCCL
    int rc = load_nccl(err);
    if (rc)
        return rc;
    ncclUniqueId u;
    memcpy(u.internal, id, GPU_TRAINER_NCCL_ID_BYTES);
    CU_TRY(cudaSetDevice(g->device));
    ncclResult_t r = lib.comm_init_rank(&g->comm, world, u, rank);
    if (r != ncclSuccess) {
        g->comm = NULL;
        return pm_error_set(err, PM_ERR_INTERNAL, "ncclCommInitRank (rank %d of %d): %s", rank,
                            world, lib.error_string(r));
    }
    g->world = world;
    g->rank = rank;
    return PM_OK;
#else
    (void)g, (void)id, (void)rank;
    return pm_error_set(err, PM_ERR_UNSUPPORTED, "built without NCCL: one GPU rank only");
#endif
}

extern "C" int gpu_trainer_allreduce_grads(struct gpu_trainer *g, struct pm_error *err)
{
    if (g->world <= 1)
        return PM_OK;
#ifdef PM_HAVE_NCCL
    ncclResult_t r = lib.all_reduce(g->grads, g->grads, g->n, ncclFloat, ncclSum, g->comm,
                                   g->stream);
    if (r != ncclSuccess)
        return pm_error_set(err, PM_ERR_INTERNAL, "ncclAllReduce: %s", lib.error_string(r));
    return PM_OK;
#else
    return pm_error_set(err, PM_ERR_UNSUPPORTED, "built without NCCL");
#endif
}

extern "C" int gpu_trainer_apply_update(struct gpu_trainer *g, float grad_scale,
                                        struct pm_error *err)
{
    CU_TRY(cudaSetDevice(g->device));
    const struct adamw_config *c = &g->opt.adamw;
    g->step++;
    double bc1 = 1.0 - pow((double)c->beta1, (double)g->step);
    double bc2 = 1.0 - pow((double)c->beta2, (double)g->step);
    float step_size = (float)((double)c->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float decay = 1.0f - c->lr * c->weight_decay;
    k_adamw<<<grid_for(g->n), NTHREADS, 0, g->stream>>>(
        g->params, g->grads, g->adam_m, g->adam_v, g->decay_mask, g->n, grad_scale, c->beta1,
        c->beta2, c->eps, c->weight_decay, decay, step_size, bc2_sqrt);
    k_ema<<<grid_for(g->n), NTHREADS, 0, g->stream>>>(g->ema, g->params, g->opt.ema_decay, g->n);
    KCHECK(g);
    train_rng_next(&g->rng);
    if (g->pending_keys > 0)
        g->pending_keys--;
    return take_fail(g, err);
}

extern "C" int gpu_trainer_finish_step(struct gpu_trainer *g, float *loss, struct pm_error *err)
{
    CU_TRY(cudaSetDevice(g->device));
    CU_TRY(cudaStreamSynchronize(g->stream));
    int rc = take_fail(g, err);
    if (rc)
        return rc;
    if (loss)
        *loss = *g->loss_host;
    return PM_OK;
}

extern "C" int gpu_trainer_download(struct gpu_trainer *g, float *params, float *grads,
                                    float *ema, float *adam_m, float *adam_v,
                                    struct pm_error *err)
{
    CU_TRY(cudaSetDevice(g->device));
    CU_TRY(cudaStreamSynchronize(g->stream));
    size_t bytes = g->n * sizeof(float);
    float *dst[] = {params, grads, ema, adam_m, adam_v};
    const float *src[] = {g->params, g->grads, g->ema, g->adam_m, g->adam_v};
    for (int i = 0; i < 5; i++)
        if (dst[i])
            CU_TRY(cudaMemcpy(dst[i], src[i], bytes, cudaMemcpyDeviceToHost));
    return take_fail(g, err);
}

extern "C" int gpu_trainer_upload_params(struct gpu_trainer *g, const float *params,
                                         const float *ema, struct pm_error *err)
{
    CU_TRY(cudaSetDevice(g->device));
    CU_TRY(cudaStreamSynchronize(g->stream));
    size_t bytes = g->n * sizeof(float);
    CU_TRY(cudaMemcpy(g->params, params, bytes, cudaMemcpyHostToDevice));
    CU_TRY(cudaMemcpy(g->ema, ema ? ema : params, bytes, cudaMemcpyHostToDevice));
    // a pageable copy may return before its DMA ends, and our streams do not wait for the
    // legacy stream: wait for the device
    CU_TRY(cudaDeviceSynchronize());
    return PM_OK;
}

extern "C" int gpu_trainer_download_output(struct gpu_trainer *g, float *out, struct pm_error *err)
{
    CU_TRY(cudaSetDevice(g->device));
    const struct unet_config *c = &g->cfg;
    int B = g->cur_B, C = c->in_channels, HW = c->image_size * c->image_size;
    size_t n = (size_t)B * C * HW;
    k_cm_to_nchw<<<grid_for(n), NTHREADS, 0, g->stream>>>(g->s1, g->blocks[g->nblocks - 1].out,
                                                           B, C, HW);
    KCHECK(g);
    CU_TRY(cudaStreamSynchronize(g->stream));
    CU_TRY(cudaMemcpy(out, g->s1, n * sizeof(float), cudaMemcpyDeviceToHost));
    return take_fail(g, err);
}

// ---------------------------------------------------------------------------------------
// checkpoints (the CPU format; the arrays travel through host memory)

extern "C" int gpu_trainer_save(struct gpu_trainer *g, const char *dir, int keep,
                                const void *loader, size_t loader_len, struct pm_error *err)
{
    size_t bytes = g->n * sizeof(float);
    float *p = (float *)malloc(bytes), *e = (float *)malloc(bytes);
    float *m = (float *)malloc(bytes), *v = (float *)malloc(bytes);
    int rc;
    if (!p || !e || !m || !v)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory saving '%s'", dir);
    else
        rc = gpu_trainer_download(g, p, NULL, e, m, v, err);
    if (rc == PM_OK) {
        struct checkpoint_data d;
        memset(&d, 0, sizeof d);
        d.model = g->host_model;
        d.params = p, d.ema = e, d.adam_m = m, d.adam_v = v;
        d.step = g->step;
        d.rng = g->rng;
        d.loader = (unsigned char *)loader;
        d.loader_len = loader_len;
        rc = checkpoint_save(dir, &d, keep, err);
    }
    free(p);
    free(e);
    free(m);
    free(v);
    return rc;
}

extern "C" int gpu_trainer_load(struct gpu_trainer *g, const char *dir, unsigned char **loader,
                                size_t *loader_len, struct pm_error *err)
{
    *loader = NULL;
    *loader_len = 0;
    if (g->staged_count || g->pending_keys)
        return pm_error_set(err, PM_ERR_USAGE, "load with batches staged");
    size_t bytes = g->n * sizeof(float);
    struct checkpoint_data d;
    memset(&d, 0, sizeof d);
    d.model = g->host_model;
    d.params = (float *)malloc(bytes);
    d.ema = (float *)malloc(bytes);
    d.adam_m = (float *)malloc(bytes);
    d.adam_v = (float *)malloc(bytes);
    int rc;
    if (!d.params || !d.ema || !d.adam_m || !d.adam_v)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory loading '%s'", dir);
    else
        rc = checkpoint_load(dir, &d, err);
    if (rc == PM_OK) {
        cudaError_t e = cudaSetDevice(g->device);
        if (e == cudaSuccess)
            e = cudaStreamSynchronize(g->stream);
        const float *src[] = {d.params, d.ema, d.adam_m, d.adam_v};
        float *dst[] = {g->params, g->ema, g->adam_m, g->adam_v};
        for (int i = 0; i < 4 && e == cudaSuccess; i++)
            e = cudaMemcpy(dst[i], src[i], bytes, cudaMemcpyHostToDevice);
        if (e == cudaSuccess) // (see gpu_trainer_upload_params)
            e = cudaDeviceSynchronize();
        if (e != cudaSuccess) {
            rc = pm_error_set(err, PM_ERR_INTERNAL, "loading '%s' to the GPU: %s", dir,
                              cudaGetErrorString(e));
            free(d.loader);
        } else {
            g->step = d.step;
            g->rng = d.rng;
            *loader = d.loader;
            *loader_len = d.loader_len;
        }
    }
    free(d.params);
    free(d.ema);
    free(d.adam_m);
    free(d.adam_v);
    return rc;
}
