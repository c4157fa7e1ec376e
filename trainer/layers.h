/**
 * layers — forward and backward of the UNet's building blocks, as plain C functions on
 * fp32 NCHW tensors (the trainer's CPU reference math).
 *
 * Conventions (every function below):
 * - Tensors are contiguous fp32, activations laid out [B, C, H, W]; weights as in
 *   PyTorch (conv [Cout, Cin, kh, kw], linear [out, in]).
 * - Backward functions ACCUMULATE (+=) into every gradient they produce (dx, dweight,
 *   dbias), so a tensor used by several consumers sums their contributions; callers
 *   zero gradient buffers first.
 * - Determinism: every output element is computed by one thread with a fixed order of
 *   summation, and reductions over the batch are done per image into separate partial
 *   buffers, then summed in image order. Results are therefore bit-identical for any
 *   thread count and from run to run.
 * - Parallelism: OpenMP over images (or groups); the functions themselves are
 *   thread-safe only with distinct output buffers.
 * - Scratch memory is passed by the caller (`struct layer_scratch`), sized up front by
 *   layer_scratch_size() so the hot path never allocates.
 */
#ifndef PM_LAYERS_H
#define PM_LAYERS_H

#include <stdbool.h>
#include <stddef.h>

/**
 * C[M,N] (=, or += when `accumulate`) op(A)[M,K] * op(B)[K,N], single-threaded, where
 * op(A) = A (row-major, leading dimension lda) or its transpose when `ta`. Each element
 * sums over k in increasing order, starting from its old value (accumulate) or 0.
 */
void layer_matmul(int M, int N, int K, const float *A, int lda, bool ta, const float *B, int ldb,
                  bool tb, float *C, int ldc, bool accumulate);

/** Floats that layer_matmul_pack_a() writes for an M x K op(A). */
size_t layer_matmul_packed_size(int M, int K);

/**
 * Packs op(A) [M, K] (A row-major with leading dimension lda, transposed when `ta`) into
 * Ap (layer_matmul_packed_size(M, K) floats), the form layer_matmul_packed() reads: pack a
 * matrix used by many products once (convolution weights, shared by every image).
 */
void layer_matmul_pack_a(float *Ap, int M, int K, const float *A, int lda, bool ta);

/**
 * layer_matmul() with op(A) given packed by layer_matmul_pack_a(); the same result bit for bit.
 */
void layer_matmul_packed(int M, int N, int K, const float *Apk, const float *B, int ldb, bool tb,
                         float *C, int ldc, bool accumulate);

/**
 * Loops with less work than about `work` floats run on the calling thread instead of an
 * OpenMP team (default 32768). Results are the same either way; tests set 0 to exercise the
 * threaded paths on tiny shapes. Not thread-safe: set it before computing.
 */
void layer_set_parallel_threshold(size_t work);

/** Scratch for the batched layers: per-thread im2col buffers and per-image partials. */
struct layer_scratch {
    float *col; /* nthreads * col_per_thread floats */
    size_t col_per_thread;
    float *partial; /* max_batch * partial_per_image floats (per-image weight grads) */
    size_t partial_per_image;
    int nthreads;
};

/** Sum `B` per-image partials (stride `stride`) of n floats into dst (+=), in image order. */
void layer_reduce_partials(float *dst, const float *partials, int B, size_t n, size_t stride);

/**
 * 2-D convolution, square kernel k (1 or 3), stride s (1 or 2), zero padding k/2.
 * x [B,Cin,H,W] -> y [B,Cout,Ho,Wo] with Ho = (H + 2*(k/2) - k)/s + 1; y is overwritten.
 * bias may be NULL.
 */
void layer_conv2d_forward(float *y, const float *x, const float *w, const float *bias, int B,
                          int Cin, int H, int W, int Cout, int k, int s, struct layer_scratch *sc);

/**
 * Backward of layer_conv2d_forward; dx may be NULL (input needs no gradient). Each thread
 * needs layer_conv2d_backward_scratch_size() floats of sc->col; sc->partial holds one
 * image's weight and bias gradients (Cout*Cin*k*k + Cout floats) per image.
 */
void layer_conv2d_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                           const float *w, int B, int Cin, int H, int W, int Cout, int k, int s,
                           struct layer_scratch *sc);

/** Floats of im2col scratch one thread needs for this convolution's forward. */
size_t layer_conv2d_col_size(int Cin, int H, int W, int k, int s);

/** Floats of scratch one thread needs for this convolution's forward and backward. */
size_t layer_conv2d_backward_scratch_size(int Cin, int H, int W, int Cout, int k, int s);

/**
 * GroupNorm over G groups of C/G channels with affine gamma/beta, eps 1e-5.
 * y = (x - mean) * rstd * gamma + beta; mean and rstd [B*G] are saved for backward.
 */
void layer_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, int B, int C, int HW, int G);

/** Backward of GroupNorm. Needs x, the saved mean/rstd; partial scratch for dgamma/dbeta. */
void layer_groupnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *rstd,
                              const float *gamma, int B, int C, int HW, int G,
                              struct layer_scratch *sc);

/** GroupNorm epsilon (same as PyTorch's default). */
#define LAYER_GN_EPS 1e-5f

/** y = x * sigmoid(x), n elements (y may equal x). */
void layer_silu_forward(float *y, const float *x, size_t n);

/** dx += dy * silu'(x). */
void layer_silu_backward(float *dx, const float *dy, const float *x, size_t n);

/** y[b,o] = sum_i x[b,i] w[o,i] + bias[o], for B rows; bias may be NULL. */
void layer_linear_forward(float *y, const float *x, const float *w, const float *bias, int B,
                          int in, int out);

/** Backward of linear; dx may be NULL. */
void layer_linear_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                           const float *w, int B, int in, int out);

/**
 * Single-head self-attention over the N = HW positions of each image, on the already
 * normalised input xn [B,C,N]: qkv = Wqkv xn + bqkv ([3C, N]: q, k, v), P = softmax(q^T k /
 * sqrt(C)) row-wise, o = v P^T, y = x + Wproj o + bproj (the residual input x).
 * Saves qkv [B,3C,N], P [B,N,N] and o [B,C,N] for backward.
 */
void layer_attention_forward(float *y, float *qkv, float *P, float *o, const float *x,
                             const float *xn, const float *wqkv, const float *bqkv,
                             const float *wproj, const float *bproj, int B, int C, int N,
                             struct layer_scratch *sc);

/**
 * Backward of attention: dx += dy (residual), dxn += d(normalised input). Scratch: each
 * thread needs layer_attention_scratch_size(C, N) floats of sc->col.
 */
void layer_attention_backward(float *dx, float *dxn, float *dwqkv, float *dbqkv, float *dwproj,
                              float *dbproj, const float *dy, const float *xn, const float *qkv,
                              const float *P, const float *o, const float *wqkv, const float *wproj,
                              int B, int C, int N, struct layer_scratch *sc);

/** Per-thread scratch floats for attention forward and backward. */
size_t layer_attention_scratch_size(int C, int N);

/** Nearest-neighbour 2x upsampling: x [B,C,H,W] -> y [B,C,2H,2W]. */
void layer_upsample_forward(float *y, const float *x, int B, int C, int H, int W);

/** dx += sum of dy over each 2x2 block. */
void layer_upsample_backward(float *dx, const float *dy, int B, int C, int H, int W);

#endif
