// layers — forward/backward of the UNet building blocks (see layers.h for the contract).
#include "layers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// ---------------------------------------------------------------------------------------
// matmul, blocked as in GotoBLAS / BLIS:
//
//   for each block of up to KC values of k (outermost: every element of C sees its k in order)
//     for each block of up to MC rows: pack op(A) into micro-panels of MR rows, k-major
//       for each block of up to NC columns: pack op(B) into panels of NR columns, k-major
//         for each panel of NR columns (16 KB at KC = 256: stays in L1)
//           for each micro-panel of A: the MR x NR register kernel, C += Ap * Bp
//
// The packed blocks (A: MC x KC, B: KC x NC) are per thread and together fit in L2. Panels are
// zero padded at the edges of A and B, and partial tiles of C go through a padded copy, so
// every element of C, wherever it falls in the tiling, is computed by the same kernel as
// c = c + a_k * b_k for k = 0..K-1 in order: the result does not depend on the blocking or on
// the shape around it. On x86-64 with GCC the function is also compiled for AVX2+FMA and
// picked at load time (the FMA build rounds differently from the SSE build, but one machine
// always runs the same one).

enum { MM_MR = 6, MM_NR = 16, MM_KC = 256, MM_MC = 24 * MM_MR, MM_NC = 12 * MM_NR };

typedef float v8f __attribute__((vector_size(32)));

/**
 * The register kernel: C[rows x 16] (leading dimension ldc) += Ap[kb x 6]^T * Bp[kb x 16] for
 * the first `rows` (<= 6) rows of the micro-panel, or = when `fresh` (the sums start from 0
 * instead of C's old values; same arithmetic, since 0 + a*b == a*b). Called with a constant
 * `rows`: 6 for whole panels, fewer for the last panel of an M that is not a multiple of 6
 * (each element's arithmetic is the same whatever `rows` is). Implicit im2col operands, read
 * straight from a zero-padded image instead of packed panels (constant non-NULL arguments):
 * with `boff`, row k of the B panel is the 8 floats at Bp + boff[k] then the 8 at
 * Bp + boff[k] + b8 (mm_gemm); with `xa`, element (r, k) of the A micro-panel is xa[r][aoff[k]]
 * (mm_gemm_xa).
 */
static inline __attribute__((always_inline)) void
mm_kernel(int kb, const float *Ap, const float *const *xa, const int *aoff, const float *Bp,
          const int *boff, int b8, float *C, int ldc, bool fresh, int rows)
{
    v8f c[MM_MR][2];
    for (int r = 0; r < rows; r++) {
        if (fresh) {
            c[r][0] = c[r][1] = (v8f){0};
            continue;
        }
        memcpy(&c[r][0], C + (size_t)r * ldc, sizeof(v8f));
        memcpy(&c[r][1], C + (size_t)r * ldc + 8, sizeof(v8f));
    }
    for (int k = 0; k < kb; k++) {
        v8f b0, b1;
        const float *bk = boff ? Bp + boff[k] : Bp + (size_t)k * MM_NR;
        memcpy(&b0, bk, sizeof(v8f));
        memcpy(&b1, bk + (boff ? b8 : 8), sizeof(v8f));
        for (int r = 0; r < rows; r++) {
            float a = xa ? xa[r][aoff[k]] : Ap[k * MM_MR + r];
            c[r][0] += a * b0;
            c[r][1] += a * b1;
        }
    }
    for (int r = 0; r < rows; r++) {
        memcpy(C + (size_t)r * ldc, &c[r][0], sizeof(v8f));
        memcpy(C + (size_t)r * ldc + 8, &c[r][1], sizeof(v8f));
    }
}

/** mm_kernel for the first `h` rows of the micro-panel (a constant `rows` in each case). */
static inline __attribute__((always_inline)) void
mm_kernel_h(int h, int kb, const float *Ap, const float *const *xa, const int *aoff,
            const float *Bp, const int *boff, int b8, float *C, int ldc, bool fresh)
{
    switch (h) {
    case 6: mm_kernel(kb, Ap, xa, aoff, Bp, boff, b8, C, ldc, fresh, 6); break;
    case 5: mm_kernel(kb, Ap, xa, aoff, Bp, boff, b8, C, ldc, fresh, 5); break;
    case 4: mm_kernel(kb, Ap, xa, aoff, Bp, boff, b8, C, ldc, fresh, 4); break;
    case 3: mm_kernel(kb, Ap, xa, aoff, Bp, boff, b8, C, ldc, fresh, 3); break;
    case 2: mm_kernel(kb, Ap, xa, aoff, Bp, boff, b8, C, ldc, fresh, 2); break;
    default: mm_kernel(kb, Ap, xa, aoff, Bp, boff, b8, C, ldc, fresh, 1); break;
    }
}

/**
 * One h x w tile of C (h <= 6, w <= 16) from a micro-panel of A and a packed B panel: whole
 * columns straight into C, edge columns through a zero-padded copy (same arithmetic per
 * element).
 */
static inline __attribute__((always_inline)) void mm_tile(int kb, const float *Ap,
                                                          const float *const *xa, const int *aoff,
                                                          const float *Bp, float *C, int ldc,
                                                          bool fresh, int h, int w)
{
    if (w == MM_NR) {
        mm_kernel_h(h, kb, Ap, xa, aoff, Bp, NULL, 8, C, ldc, fresh);
        return;
    }
    float tile[MM_MR * MM_NR] __attribute__((aligned(64)));
    for (int r = 0; r < MM_MR; r++)
        for (int c = 0; c < MM_NR; c++)
            tile[r * MM_NR + c] = (!fresh && r < h && c < w) ? C[(size_t)r * ldc + c] : 0;
    mm_kernel(kb, Ap, xa, aoff, Bp, NULL, 8, tile, MM_NR, fresh, MM_MR);
    for (int r = 0; r < h; r++)
        for (int c = 0; c < w; c++)
            C[(size_t)r * ldc + c] = tile[r * MM_NR + c];
}

/** Transpose the 8x8 block r[row][col] in place (r[t] becomes column t). */
static inline __attribute__((always_inline)) void mm_transpose8(v8f r[8])
{
    v8f t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
        u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = __builtin_shufflevector(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        r[i + 4] = __builtin_shufflevector(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

/** Pack rows [i0, i0+h) x k [k0, k0+kb) of op(A) into micro-panels of MM_MR rows. */
static inline __attribute__((always_inline)) void mm_pack_a(float *Ap, const float *A, int lda,
                                                            bool ta, int i0, int h, int k0, int kb)
{
    for (int p = 0; p * MM_MR < h; p++) {
        float *dst = Ap + (size_t)p * kb * MM_MR;
        int rows = h - p * MM_MR < MM_MR ? h - p * MM_MR : MM_MR;
        int i = i0 + p * MM_MR;
        if (ta) { // op(A)[i, k] = A[k, i]: each k gives `rows` contiguous floats
            for (int kk = 0; kk < kb; kk++) {
                const float *src = A + (size_t)(k0 + kk) * lda + i;
                for (int r = 0; r < MM_MR; r++)
                    dst[kk * MM_MR + r] = r < rows ? src[r] : 0.0f;
            }
        } else {
            for (int r = 0; r < MM_MR; r++) {
                const float *src = A + (size_t)(i + r) * lda + k0;
                for (int kk = 0; kk < kb; kk++)
                    dst[kk * MM_MR + r] = r < rows ? src[kk] : 0.0f;
            }
        }
    }
}

/**
 * Pack columns [j0, j0+nb) x k [k0, k0+kb) of op(B) into panels of MM_NR columns, k-major
 * (panel p at Bp + p*ks*MM_NR, ks >= kb), zero padded to whole panels. Reads B along its rows.
 */
static inline __attribute__((always_inline)) void mm_pack_b(float *Bp, const float *B, int ldb,
                                                            bool tb, int j0, int nb, int k0, int kb,
                                                            int ks)
{
    int npanels = (nb + MM_NR - 1) / MM_NR;
    if (tb) { // op(B)[k, j] = B[j, k]: column j is row j of B, contiguous in k
        for (int p = 0; p < npanels; p++) {
            float *dst = Bp + (size_t)p * ks * MM_NR;
            for (int c0 = 0; c0 < MM_NR; c0 += 8) { // 8 columns: 8x8 transposes along k
                int j = p * MM_NR + c0, rows = nb - j < 8 ? (nb - j > 0 ? nb - j : 0) : 8;
                const float *src = B + (size_t)(j0 + j) * ldb + k0;
                int kk = 0;
                if (rows == 8)
                    for (; kk + 8 <= kb; kk += 8) {
                        v8f r[8];
                        for (int t = 0; t < 8; t++)
                            memcpy(&r[t], src + (size_t)t * ldb + kk, sizeof(v8f));
                        mm_transpose8(r);
                        for (int t = 0; t < 8; t++)
                            memcpy(dst + (size_t)(kk + t) * MM_NR + c0, &r[t], sizeof(v8f));
                    }
                for (int c = 0; c < 8; c++)
                    for (int q = kk; q < kb; q++)
                        dst[(size_t)q * MM_NR + c0 + c] =
                            c < rows ? src[(size_t)c * ldb + q] : 0.0f;
            }
        }
        return;
    }
    for (int kk = 0; kk < kb; kk++) {
        const float *src = B + (size_t)(k0 + kk) * ldb + j0;
        int p = 0;
        for (; (p + 1) * MM_NR <= nb; p++)
            memcpy(Bp + ((size_t)p * ks + kk) * MM_NR, src + p * MM_NR, sizeof(float) * MM_NR);
        if (p < npanels)
            for (int c = 0; c < MM_NR; c++)
                Bp[((size_t)p * ks + kk) * MM_NR + c] =
                    p * MM_NR + c < nb ? src[p * MM_NR + c] : 0.0f;
    }
}

/**
 * Where op(B) comes from: a matrix (`B`, `ldb`, transposed when `tb`), or, when `x` is set, the
 * im2col of one image x[C, H, W] for a stride-1 k x k convolution with zero padding k/2, read
 * straight from x while packing (no column buffer): op(B)[(c*k + ky)*k + kx, oy*W + ox] =
 * x[c, oy + ky - k/2, ox + kx - k/2] (not transposed). When `xp` is set instead (W a multiple of
 * 16 or W = 8), the same im2col is read by the register kernel
 * straight from xp, the image zero padded by k/2 on every side (conv_pad): no packing at all.
 */
struct mm_b {
    const float *B;
    int ldb;
    bool tb;
    const float *x, *xp;
    int C, H, W, k;
};

/**
 * dst[t] = x[oy + dy, ox + dx] for t < n, where (oy, ox) is pixel q0 + t of the image xc[H, W]
 * (q0 + n <= H*W), 0 where that falls outside the image.
 */
static inline __attribute__((always_inline)) void mm_shift_row(float *dst, const float *xc, int H,
                                                               int W, int q0, int n, int dy, int dx)
{
    int oy = q0 / W, ox = q0 % W;
    for (int t = 0; t < n; oy++, ox = 0) {
        int len = W - ox < n - t ? W - ox : n - t, iy = oy + dy;
        float *d = dst + t;
        t += len;
        if (iy < 0 || iy >= H) {
            for (int u = 0; u < len; u++)
                d[u] = 0.0f;
            continue;
        }
        // ix = ox + dx + u is inside the row for u in [lo, hi)
        int lo = -(ox + dx), hi = W - (ox + dx);
        lo = lo < 0 ? 0 : (lo > len ? len : lo);
        hi = hi > len ? len : (hi < lo ? lo : hi);
        const float *src = xc + ((size_t)iy * W + ox + dx + lo);
        for (int u = 0; u < lo; u++)
            d[u] = 0.0f;
        int u = 0, m = hi - lo; // whole vectors, then the rest (short: no libc call)
        for (; u + 8 <= m; u += 8) {
            v8f v;
            memcpy(&v, src + u, sizeof(v));
            memcpy(d + lo + u, &v, sizeof(v));
        }
        for (; u < m; u++)
            d[lo + u] = src[u];
        for (int u = hi; u < len; u++)
            d[u] = 0.0f;
    }
}

/** mm_pack_b for an implicit im2col source (struct mm_b with x set, not transposed). */
static inline __attribute__((always_inline)) void mm_pack_b_im2col(float *Bp, const struct mm_b *b,
                                                                   int j0, int nb, int k0, int kb)
{
    int H = b->H, W = b->W, k = b->k, pad = k / 2, kk2 = k * k;
    int npanels = (nb + MM_NR - 1) / MM_NR;
    // rows are (c, ky, kx), columns pixels: shifted copies of image rows
    float tmp[MM_NC] __attribute__((aligned(64)));
    for (int j = nb; j < npanels * MM_NR; j++)
        tmp[j] = 0.0f;
    for (int kk = 0; kk < kb; kk++) {
        int r = k0 + kk, c = r / kk2, ky = r / k % k, kx = r % k;
        mm_shift_row(tmp, b->x + (size_t)c * H * W, H, W, j0, nb, ky - pad, kx - pad);
        for (int p = 0; p < npanels; p++)
            memcpy(Bp + ((size_t)p * kb + kk) * MM_NR, tmp + p * MM_NR, sizeof(float) * MM_NR);
    }
}

// Per-thread packing buffers of mm_gemm and mm_gemm_xa (A: 144 KB, B: 192 KB, and the k offset
// table of an in-place im2col), shared by the two (neither calls the other).
static _Thread_local float mm_apack[MM_MC * MM_KC] __attribute__((aligned(64)));
static _Thread_local float mm_bpack[MM_KC * MM_NC] __attribute__((aligned(64)));
static _Thread_local int mm_koff[MM_KC];

/** Blocks of k and of rows for an M x K op(A): as few as fit, of even size. */
static void mm_blocking(int M, int K, int *kstep, int *mstep)
{
    int nkb = (K + MM_KC - 1) / MM_KC, nmb = (M + MM_MC - 1) / MM_MC;
    *kstep = (K + nkb - 1) / nkb;
    int ms = (M + nmb - 1) / nmb;
    *mstep = (ms + MM_MR - 1) / MM_MR * MM_MR;
}

size_t layer_matmul_packed_size(int M, int K)
{
    return (size_t)(M + MM_MR - 1) / MM_MR * MM_MR * K;
}

// Packed A of the whole matrix: k block k0 (of kb values) at Ap + k0 * Mpad, within it
// micro-panel q (rows q*MR..) at + q * kb * MR, as mm_pack_a lays out one block.
static float *mm_packed_block(float *Ap, int M, int k0, int kb, int i0)
{
    size_t mpad = (size_t)(M + MM_MR - 1) / MM_MR * MM_MR;
    return Ap + (size_t)k0 * mpad + (size_t)(i0 / MM_MR) * kb * MM_MR;
}

void layer_matmul_pack_a(float *Ap, int M, int K, const float *A, int lda, bool ta)
{
    int kstep, mstep;
    mm_blocking(M, K, &kstep, &mstep);
    for (int k0 = 0; k0 < K; k0 += kstep) {
        int kb = K - k0 < kstep ? K - k0 : kstep;
        for (int i0 = 0; i0 < M; i0 += mstep) {
            int mb = M - i0 < mstep ? M - i0 : mstep;
            mm_pack_a(mm_packed_block(Ap, M, k0, kb, i0), A, lda, ta, i0, mb, k0, kb);
        }
    }
}

/**
 * C = (or +=) op(A) * op(B). op(A) comes from A (lda, ta) or, when `Apk` is set, from its
 * layer_matmul_pack_a() form; op(B) as `b` says.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void
mm_gemm(int M, int N, int K, const float *A, int lda, bool ta, const float *Apk,
        const struct mm_b *b, float *C, int ldc, bool accumulate)
{
    if (K == 0 || M == 0 || N == 0) {
        for (int i = 0; i < M && !accumulate; i++)
            memset(C + (size_t)i * ldc, 0, sizeof(float) * N);
        return;
    }
    float *Ap = mm_apack, *Bp = mm_bpack;
    int *Boff = mm_koff;
    int kstep, mstep;
    mm_blocking(M, K, &kstep, &mstep);
    for (int k0 = 0; k0 < K; k0 += kstep) {
        int kb = K - k0 < kstep ? K - k0 : kstep;
        bool fresh = !accumulate && k0 == 0; // C's old values are not read
        if (b->xp) { // row k = (c, ky, kx) of op(B) starts at xp + Boff[k] + the pixel's offset
            int k = b->k, kk2 = k * k, wp = b->W + k - 1;
            size_t plane = (size_t)(b->H + k - 1) * wp;
            for (int kk = 0; kk < kb; kk++) {
                int r = k0 + kk;
                Boff[kk] = (int)((size_t)(r / kk2) * plane + (size_t)(r / k % k) * wp + r % k);
            }
        }
        for (int i0 = 0; i0 < M; i0 += mstep) {
            int mb = M - i0 < mstep ? M - i0 : mstep;
            const float *Ablk = Ap;
            if (Apk)
                Ablk = mm_packed_block((float *)Apk, M, k0, kb, i0);
            else
                mm_pack_a(Ap, A, lda, ta, i0, mb, k0, kb);
            if (b->xp) { // whole panels of 16 pixels (part of a row, or two rows of 8) in place
                int wp = b->W + b->k - 1, b8 = b->W == 8 ? wp : 8;
                for (int j = 0; j < N; j += MM_NR) {
                    const float *bp = b->xp + (size_t)(j / b->W) * wp + j % b->W;
                    for (int p = 0; p * MM_MR < mb; p++) {
                        int h = mb - p * MM_MR < MM_MR ? mb - p * MM_MR : MM_MR;
                        const float *ap = Ablk + (size_t)p * kb * MM_MR;
                        float *cptr = C + (size_t)(i0 + p * MM_MR) * ldc + j;
                        mm_kernel_h(h, kb, ap, NULL, NULL, bp, Boff, b8, cptr, ldc, fresh);
                    }
                }
                continue;
            }
            for (int j0 = 0; j0 < N; j0 += MM_NC) {
                int nb = N - j0 < MM_NC ? N - j0 : MM_NC;
                if (b->x)
                    mm_pack_b_im2col(Bp, b, j0, nb, k0, kb);
                else
                    mm_pack_b(Bp, b->B, b->ldb, b->tb, j0, nb, k0, kb, kb);
                for (int j = 0; j < nb; j += MM_NR) {
                    int w = nb - j < MM_NR ? nb - j : MM_NR;
                    const float *bp = Bp + (size_t)(j / MM_NR) * kb * MM_NR;
                    for (int p = 0; p * MM_MR < mb; p++) {
                        int h = mb - p * MM_MR < MM_MR ? mb - p * MM_MR : MM_MR;
                        const float *ap = Ablk + (size_t)p * kb * MM_MR;
                        float *cptr = C + (size_t)(i0 + p * MM_MR) * ldc + j0 + j;
                        mm_tile(kb, ap, NULL, NULL, bp, cptr, ldc, fresh, h, w);
                    }
                }
            }
        }
    }
}

void layer_matmul(int M, int N, int K, const float *A, int lda, bool ta, const float *B, int ldb,
                  bool tb, float *C, int ldc, bool accumulate)
{
    struct mm_b b = {.B = B, .ldb = ldb, .tb = tb};
    mm_gemm(M, N, K, A, lda, ta, NULL, &b, C, ldc, accumulate);
}

void layer_matmul_packed(int M, int N, int K, const float *Apk, const float *B, int ldb, bool tb,
                         float *C, int ldc, bool accumulate)
{
    struct mm_b b = {.B = B, .ldb = ldb, .tb = tb};
    mm_gemm(M, N, K, NULL, 0, false, Apk, &b, C, ldc, accumulate);
}

/**
 * C = op(A) * op(B) (C overwritten, M x N, leading dimension ldc) over the pixels of `nimg`
 * images, K = nimg * P with P = H*W: op(A)[r, g*P + q] is row r = (c*k + ky)*k + kx of the
 * im2col of image g at pixel q, xa->xp[g, c, qy + ky, qx + kx] of the images zero padded by k/2
 * (conv_pad, one after the other), read by the register kernel in place; op(B)[g*P + q, j] =
 * B[g*bstride + j*P + q] (B transposed, image by image), packed as mm_pack_b does. The k blocks
 * are mm_gemm's: for one image each element is the same sum, in the same order, as mm_gemm
 * with the operands swapped.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void
mm_gemm_xa(int M, int N, int nimg, const struct mm_b *xa, const float *B, size_t bstride, float *C,
           int ldc)
{
    float *Bp = mm_bpack;
    int *aoff = mm_koff;
    int k = xa->k, kk2 = k * k, W = xa->W, wp = W + k - 1, P = xa->H * W, K = nimg * P;
    int kstep, mstep;
    size_t plane = (size_t)(xa->H + k - 1) * wp, img = plane * xa->C;
    mm_blocking(M, K, &kstep, &mstep);
    for (int k0 = 0; k0 < K; k0 += kstep) {
        int kb = K - k0 < kstep ? K - k0 : kstep;
        bool fresh = k0 == 0;
        for (int kk = 0; kk < kb; kk++) { // pixel q of image g at its place in the padded images
            int g = (k0 + kk) / P, q = (k0 + kk) % P;
            aoff[kk] = (int)(g * img + (size_t)(q / W) * wp + q % W);
        }
        for (int j0 = 0; j0 < N; j0 += MM_NC) {
            int nb = N - j0 < MM_NC ? N - j0 : MM_NC;
            for (int kk = 0; kk < kb;) { // the k block image by image
                int g = (k0 + kk) / P, q = (k0 + kk) % P, len = P - q < kb - kk ? P - q : kb - kk;
                mm_pack_b(Bp + (size_t)kk * MM_NR, B + g * bstride, P, true, j0, nb, q, len, kb);
                kk += len;
            }
            for (int j = 0; j < nb; j += MM_NR) {
                int w = nb - j < MM_NR ? nb - j : MM_NR;
                const float *bp = Bp + (size_t)(j / MM_NR) * kb * MM_NR;
                for (int i = 0; i < M; i += MM_MR) {
                    int h = M - i < MM_MR ? M - i : MM_MR;
                    const float *xr[MM_MR];
                    for (int r = 0; r < MM_MR; r++) { // rows past M repeat row i (not stored)
                        int row = i + (r < h ? r : 0);
                        xr[r] = xa->xp + (size_t)(row / kk2) * plane + (size_t)(row / k % k) * wp +
                                row % k;
                    }
                    mm_tile(kb, NULL, xr, aoff, bp, C + (size_t)i * ldc + j0 + j, ldc, fresh, h, w);
                }
            }
        }
    }
}

// Below this much work a loop runs on the calling thread (a parallel region costs more than
// it saves). Results do not depend on it.
static size_t par_min = 32768;

void layer_set_parallel_threshold(size_t work)
{
    par_min = work;
}

void layer_reduce_partials(float *dst, const float *partials, int B, size_t n, size_t stride)
{
    // blocks of dst that stay in L1, each summed image by image (per element the same order:
    // dst, then images 0..B-1)
    enum { RB = 2048 };
    size_t nblocks = (n + RB - 1) / RB;
#pragma omp parallel for schedule(static) if (n * (size_t)B >= par_min)
    for (size_t blk = 0; blk < nblocks; blk++) {
        size_t i0 = blk * RB, i1 = n - i0 < RB ? n : i0 + RB;
        for (int b = 0; b < B; b++) {
            const float *src = partials + (size_t)b * stride;
            for (size_t i = i0; i < i1; i++)
                dst[i] += src[i];
        }
    }
}

/**
 * dst[o*n + j] += the B partials (stride `stride`) of m x n floats stored transposed
 * (partial[j*m + o]); per element in the order of layer_reduce_partials: dst, then images
 * 0..B-1.
 */
static void reduce_partials_t(float *dst, const float *partials, int B, int m, int n,
                              size_t stride)
{
    enum { TJ = 8, TO = 64 };
    int nblocks = (n + TJ - 1) / TJ;
#pragma omp parallel for schedule(static) if ((size_t)m * n * B >= par_min)
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * TJ, nj = n - j0 < TJ ? n - j0 : TJ;
        for (int o0 = 0; o0 < m; o0 += TO) {
            int no = m - o0 < TO ? m - o0 : TO;
            float acc[TJ][TO];
            for (int jj = 0; jj < nj; jj++)
                for (int o = 0; o < no; o++)
                    acc[jj][o] = dst[(size_t)(o0 + o) * n + j0 + jj];
            for (int b = 0; b < B; b++)
                for (int jj = 0; jj < nj; jj++) {
                    const float *row = partials + (size_t)b * stride + (size_t)(j0 + jj) * m + o0;
                    for (int o = 0; o < no; o++)
                        acc[jj][o] += row[o];
                }
            for (int jj = 0; jj < nj; jj++)
                for (int o = 0; o < no; o++)
                    dst[(size_t)(o0 + o) * n + j0 + jj] = acc[jj][o];
        }
    }
}

// ---------------------------------------------------------------------------------------
// convolution via im2col

static int conv_out_size(int H, int k, int s)
{
    return (H + 2 * (k / 2) - k) / s + 1;
}

size_t layer_conv2d_col_size(int Cin, int H, int W, int k, int s)
{
    return (size_t)Cin * k * k * conv_out_size(H, k, s) * conv_out_size(W, k, s);
}

// col[(c*k*k + ky*k + kx), oy*Wo + ox] = x[c, oy*s + ky - p, ox*s + kx - p] (0 outside).
// Stride 1: each output row is a shifted copy of an input row, zero filled at the ends.
static void im2col(float *col, const float *x, int Cin, int H, int W, int k, int s)
{
    int Ho = conv_out_size(H, k, s), Wo = conv_out_size(W, k, s), p = k / 2;
    for (int c = 0; c < Cin; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + ((size_t)(c * k + ky) * k + kx) * Ho * Wo;
                const float *src = x + (size_t)c * H * W;
                // output columns [lo, hi) read inside the input row (stride 1)
                int lo = p - kx > 0 ? p - kx : 0, hi = W + p - kx < Wo ? W + p - kx : Wo;
                for (int oy = 0; oy < Ho; oy++) {
                    int iy = oy * s + ky - p;
                    float *d = dst + (size_t)oy * Wo;
                    if (iy < 0 || iy >= H) {
                        memset(d, 0, sizeof(float) * Wo);
                    } else if (s == 1) {
                        for (int ox = 0; ox < lo; ox++)
                            d[ox] = 0.0f;
                        memcpy(d + lo, src + (size_t)iy * W + lo + kx - p,
                               sizeof(float) * (size_t)(hi - lo));
                        for (int ox = hi; ox < Wo; ox++)
                            d[ox] = 0.0f;
                    } else {
                        for (int ox = 0; ox < Wo; ox++) {
                            int ix = ox * s + kx - p;
                            d[ox] = (ix >= 0 && ix < W) ? src[(size_t)iy * W + ix] : 0.0f;
                        }
                    }
                }
            }
}

// dx += col2im(dcol), in a fixed order.
static void col2im_add(float *dx, const float *dcol, int Cin, int H, int W, int k, int s)
{
    int Ho = conv_out_size(H, k, s), Wo = conv_out_size(W, k, s), p = k / 2;
    for (int c = 0; c < Cin; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *src = dcol + ((size_t)(c * k + ky) * k + kx) * Ho * Wo;
                float *dst = dx + (size_t)c * H * W;
                for (int oy = 0; oy < Ho; oy++) {
                    int iy = oy * s + ky - p;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int ox = 0; ox < Wo; ox++) {
                        int ix = ox * s + kx - p;
                        if (ix >= 0 && ix < W)
                            dst[iy * W + ix] += src[(size_t)oy * Wo + ox];
                    }
                }
            }
}

// A stride-1 convolution whose 16-pixel panels are parts of output rows (W a multiple of 16) or
// two whole rows (W = 8) reads its im2col straight from a zero-padded copy of the image inside
// the GEMM's register kernel (struct mm_b, `xp`).
static bool conv_direct(int H, int W, int k, int s)
{
    return s == 1 && k > 1 && (W % MM_NR == 0 || (W == 8 && H % 2 == 0));
}

static size_t conv_pad_size(int C, int H, int W, int k)
{
    return (size_t)C * (H + k - 1) * (W + k - 1);
}

// A stride-1 k > 1 convolution sums its weight gradient over groups of this many images of P
// pixels in one GEMM (k = up to 1024 pixels, at most 4 images): fewer partials to add, longer
// sums in the register kernel. It depends on the shape only, so the order of the sums is the
// same for any thread count.
static int conv_dw_group(int P)
{
    int g = 1024 / P;
    return g < 1 ? 1 : (g > 4 ? 4 : g);
}

/** xp[c, y + k/2, x + k/2] = x[c, y, x], zero in the border of width k/2. */
static void conv_pad(float *xp, const float *x, int C, int H, int W, int k)
{
    int p = k / 2, wp = W + 2 * p, hp = H + 2 * p;
    for (int c = 0; c < C; c++) {
        float *dst = xp + (size_t)c * hp * wp;
        const float *src = x + (size_t)c * H * W;
        memset(dst, 0, sizeof(float) * (size_t)p * wp);
        for (int y = 0; y < H; y++) {
            float *d = dst + (size_t)(y + p) * wp;
            for (int i = 0; i < p; i++)
                d[i] = d[p + W + i] = 0.0f;
            memcpy(d + p, src + (size_t)y * W, sizeof(float) * W);
        }
        memset(dst + (size_t)(H + p) * wp, 0, sizeof(float) * (size_t)p * wp);
    }
}

// Per-thread scratch of a convolution (floats at sc->col + thread * col_per_thread):
//   forward:  packed weights (M = Cout, K = Cin*k*k) | im2col of x (stride 2 only) or padded x
//             (conv_direct)
//   backward: packed op(A) of the input gradient (stride 1, k > 1: flipped weights, M = Cin,
//             K = Cout*k*k; else w^T, M = Cin*k*k, K = Cout) | flipped weights, padded dy
//             (conv_direct) and padded x of a group of images (stride 1, k > 1) | im2col of x
//             and d(col) (stride 2)
// Stride-1 convolutions read their input straight from the image while packing the GEMM's B
// operand (struct mm_b), or with no packing from a padded copy, so they need no column buffer.
static size_t conv_fwd_scratch(int Cin, int H, int W, int Cout, int k, int s)
{
    size_t n = layer_matmul_packed_size(Cout, Cin * k * k);
    if (s != 1)
        n += layer_conv2d_col_size(Cin, H, W, k, s);
    else if (conv_direct(H, W, k, s))
        n += conv_pad_size(Cin, H, W, k);
    return n;
}

static size_t conv_bwd_scratch(int Cin, int H, int W, int Cout, int k, int s)
{
    if (s == 1 && k > 1)
        return layer_matmul_packed_size(Cin, Cout * k * k) + (size_t)Cin * Cout * k * k +
               (conv_direct(H, W, k, s) ? conv_pad_size(Cout, H, W, k) : 0) +
               conv_dw_group(H * W) * conv_pad_size(Cin, H, W, k);
    size_t n = layer_matmul_packed_size(Cin * k * k, Cout);
    if (s != 1)
        n += 2 * layer_conv2d_col_size(Cin, H, W, k, s);
    return n;
}

size_t layer_conv2d_backward_scratch_size(int Cin, int H, int W, int Cout, int k, int s)
{
    size_t f = conv_fwd_scratch(Cin, H, W, Cout, k, s), b = conv_bwd_scratch(Cin, H, W, Cout, k, s);
    return f > b ? f : b;
}

void layer_conv2d_forward(float *y, const float *x, const float *w, const float *bias, int B,
                          int Cin, int H, int W, int Cout, int k, int s, struct layer_scratch *sc)
{
    int Ho = conv_out_size(H, k, s), Wo = conv_out_size(W, k, s);
    int P = Ho * Wo, Kc = Cin * k * k;
    size_t work = (size_t)B * P * Kc * Cout;
#pragma omp parallel num_threads(sc->nthreads) if (B > 1 && work >= 8 * par_min)
    {
        float *wpk = sc->col + (size_t)thread_id() * sc->col_per_thread;
        float *col = wpk + layer_matmul_packed_size(Cout, Kc);
        layer_matmul_pack_a(wpk, Cout, Kc, w, Kc, false); // each thread its own: no barrier
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *xb = x + (size_t)b * Cin * H * W;
            float *yb = y + (size_t)b * Cout * P;
            struct mm_b src = {.B = xb, .ldb = P}; // 1x1: x itself
            if (conv_direct(H, W, k, s)) {
                conv_pad(col, xb, Cin, H, W, k);
                src = (struct mm_b){.xp = col, .C = Cin, .H = H, .W = W, .k = k};
            } else if (s == 1 && k > 1) {
                src = (struct mm_b){.x = xb, .C = Cin, .H = H, .W = W, .k = k};
            } else if (s != 1) {
                im2col(col, xb, Cin, H, W, k, s);
                src.B = col;
            }
            if (bias) {
                for (int o = 0; o < Cout; o++)
                    for (int p = 0; p < P; p++)
                        yb[(size_t)o * P + p] = bias[o];
            }
            mm_gemm(Cout, P, Kc, NULL, 0, false, wpk, &src, yb, P, bias != NULL);
        }
    }
}

// The input gradient of a stride-1 convolution with zero padding k/2 is itself such a
// convolution: dx[i, y, x] = sum_{o, ky, kx} dy[o, y - ky + p, x - kx + p] w[o, i, ky, kx],
// i.e. dy convolved with the flipped kernel wf[i, o, ky', kx'] = w[o, i, k-1-ky', k-1-kx'].
// Computing it that way (one GEMM straight into dx, dy read as an implicit im2col) avoids the
// d(col) buffer and the scatter of col2im; stride 2 uses d(col) and col2im.
static void conv_flip_weights(float *wf, const float *w, int Cin, int Cout, int k)
{
    int kk = k * k;
    for (int i = 0; i < Cin; i++)
        for (int o = 0; o < Cout; o++)
            for (int t = 0; t < kk; t++)
                wf[((size_t)i * Cout + o) * kk + t] = w[((size_t)o * Cin + i) * kk + (kk - 1 - t)];
}

// Sums of x[0..n) in 8 interleaved lanes of type T (element i in lane i % 8, each lane in
// order) added in a fixed tree at the end: independent chains instead of one dependent add
// per element (vectorisable), and one order whatever the thread count. The bias gradients
// sum in float, GroupNorm's statistics in double.
#define LANE_SUM(name, T)                                                                  \
    static T name(const float *x, size_t n)                                                \
    {                                                                                      \
        T a[8] = {0};                                                                      \
        size_t i = 0;                                                                      \
        for (; i + 8 <= n; i += 8)                                                         \
            for (int l = 0; l < 8; l++)                                                    \
                a[l] += x[i + l];                                                          \
        for (int l = 0; i < n; i++, l++)                                                   \
            a[l] += x[i];                                                                  \
        return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));          \
    }

/** The bias gradient of one image and channel: sum of dy over its n pixels. */
LANE_SUM(conv_bias_sum, float)

void layer_conv2d_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                           const float *w, int B, int Cin, int H, int W, int Cout, int k, int s,
                           struct layer_scratch *sc)
{
    int Ho = conv_out_size(H, k, s), Wo = conv_out_size(W, k, s);
    int P = Ho * Wo, Kc = Cin * k * k;
    size_t nw = (size_t)Cout * Kc;
    bool direct = (k == 1 && s == 1), flip = (s == 1 && k > 1);
    size_t work = (size_t)B * P * Kc * Cout;
    int grp = flip ? conv_dw_group(P) : 1, ngroups = (B + grp - 1) / grp;
#pragma omp parallel num_threads(sc->nthreads) if (B > 1 && work >= 8 * par_min)
    {
        // packed op(A) of the input gradient, then (flip) the flipped weights or (stride 2)
        // the im2col of x and d(col)
        float *apk = sc->col + (size_t)thread_id() * sc->col_per_thread;
        float *rest = apk + (flip ? layer_matmul_packed_size(Cin, Cout * k * k)
                                  : layer_matmul_packed_size(Kc, Cout));
        float *col = rest, *dcol = rest + (s != 1 ? (size_t)Kc * P : 0);
        if (dx && flip) { // each thread its own copy: no barrier, a small cost
            conv_flip_weights(rest, w, Cin, Cout, k);
            layer_matmul_pack_a(apk, Cin, Cout * k * k, rest, Cout * k * k, false);
        } else if (dx) {
            layer_matmul_pack_a(apk, Kc, Cout, w, Kc, true);
        }
        // weight and bias gradients, one partial per group of `grp` images (fixed by the shape,
        // not by the thread count)
#pragma omp for schedule(static)
        for (int gi = 0; gi < ngroups; gi++) {
            int b0 = gi * grp, nimg = B - b0 < grp ? B - b0 : grp;
            const float *xb = x + (size_t)b0 * Cin * H * W;
            const float *dyb = dy + (size_t)b0 * Cout * P;
            float *part = sc->partial + (size_t)gi * sc->partial_per_image;
            // dW = dy_b * col_b^T, or (flip) its transpose, the sum over the group's images of
            // col_b * dy_b^T with col read in place from the padded images
            struct mm_b src = {.B = xb, .ldb = P, .tb = true}; // 1x1: x itself
            if (flip) {
                float *xpad = rest + (size_t)Cin * Cout * k * k +
                              (conv_direct(H, W, k, s) ? conv_pad_size(Cout, H, W, k) : 0);
                for (int g = 0; g < nimg; g++)
                    conv_pad(xpad + g * conv_pad_size(Cin, H, W, k), xb + (size_t)g * Cin * H * W,
                             Cin, H, W, k);
                src = (struct mm_b){.xp = xpad, .C = Cin, .H = H, .W = W, .k = k};
                mm_gemm_xa(Kc, Cout, nimg, &src, dyb, (size_t)Cout * P, part, Cout);
            } else {
                if (!direct) {
                    im2col(col, xb, Cin, H, W, k, s);
                    src.B = col;
                }
                mm_gemm(Cout, Kc, P, dyb, P, false, NULL, &src, part, Kc, false);
            }
            for (int o = 0; o < Cout; o++) {
                float sum = conv_bias_sum(dyb + (size_t)o * P, P);
                for (int g = 1; g < nimg; g++)
                    sum += conv_bias_sum(dyb + ((size_t)g * Cout + o) * P, P);
                part[nw + o] = sum;
            }
        }
        if (!dx)
            goto done;
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *dyb = dy + (size_t)b * Cout * P;
            float *dxb = dx + (size_t)b * Cin * H * W;
            if (direct) {
                layer_matmul_packed(Kc, P, Cout, apk, dyb, P, false, dxb, P, true);
            } else if (flip) {
                struct mm_b dsrc = {.x = dyb, .C = Cout, .H = H, .W = W, .k = k};
                if (conv_direct(H, W, k, s)) {
                    float *pad = rest + (size_t)Cin * Cout * k * k;
                    conv_pad(pad, dyb, Cout, H, W, k);
                    dsrc = (struct mm_b){.xp = pad, .C = Cout, .H = H, .W = W, .k = k};
                }
                mm_gemm(Cin, P, Cout * k * k, NULL, 0, false, apk, &dsrc, dxb, P, true);
            } else {
                layer_matmul_packed(Kc, P, Cout, apk, dyb, P, false, dcol, P, false);
                col2im_add(dxb, dcol, Cin, H, W, k, s);
            }
        }
    done:;
    }
    if (flip) // partials of dW^T
        reduce_partials_t(dw, sc->partial, ngroups, Cout, Kc, sc->partial_per_image);
    else
        layer_reduce_partials(dw, sc->partial, ngroups, nw, sc->partial_per_image);
    if (dbias)
        layer_reduce_partials(dbias, sc->partial + nw, ngroups, Cout, sc->partial_per_image);
}

// ---------------------------------------------------------------------------------------
// GroupNorm
//
// The statistics are sums in double over GN_LANES interleaved lanes, as LANE_SUM above.

enum { GN_LANES = 8 };

static inline double gn_lanes_total(const double a[GN_LANES])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/** Sum of x[0..n). */
LANE_SUM(gn_sum, double)

/** Sum of (x[i] - m)^2 over [0, n). */
static double gn_sum_sq_dev(const float *x, size_t n, double m)
{
    double a[GN_LANES] = {0};
    size_t i = 0;
    for (; i + GN_LANES <= n; i += GN_LANES)
        for (int l = 0; l < GN_LANES; l++) {
            double d = x[i + l] - m;
            a[l] += d * d;
        }
    for (int l = 0; i < n; i++, l++) {
        double d = x[i] - m;
        a[l] += d * d;
    }
    return gn_lanes_total(a);
}

/** One channel's sums: *dg = sum dy * xhat, *db = sum dy, xhat = (x - m) * rs in float. */
static void gn_channel_sums(double *dg, double *db, const float *x, const float *dy, int n,
                            float m, float rs)
{
    double g[GN_LANES] = {0}, d[GN_LANES] = {0};
    int i = 0;
    for (; i + GN_LANES <= n; i += GN_LANES)
        for (int l = 0; l < GN_LANES; l++) {
            float xh = (x[i + l] - m) * rs;
            g[l] += (double)dy[i + l] * xh;
            d[l] += dy[i + l];
        }
    for (int l = 0; i < n; i++, l++) {
        float xh = (x[i] - m) * rs;
        g[l] += (double)dy[i] * xh;
        d[l] += dy[i];
    }
    *dg = gn_lanes_total(g);
    *db = gn_lanes_total(d);
}

void layer_groupnorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                             const float *beta, int B, int C, int HW, int G)
{
    int cpg = C / G;
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW >= par_min)
    for (int bg = 0; bg < B * G; bg++) {
        int b = bg / G, g = bg % G;
        size_t n = (size_t)cpg * HW;
        const float *xs = x + ((size_t)b * C + (size_t)g * cpg) * HW;
        float *ys = y + ((size_t)b * C + (size_t)g * cpg) * HW;
        double m = gn_sum(xs, n) / (double)n;
        double var = gn_sum_sq_dev(xs, n, m) / (double)n;
        float mf = (float)m;
        float rs = (float)(1.0 / sqrt(var + (double)LAYER_GN_EPS));
        mean[bg] = mf;
        rstd[bg] = rs;
        for (int c = 0; c < cpg; c++) {
            int ch = g * cpg + c;
            float ga = gamma[ch] * rs, be = beta[ch] - mf * ga;
            const float *xc = xs + (size_t)c * HW;
            float *yc = ys + (size_t)c * HW;
            for (int i = 0; i < HW; i++)
                yc[i] = xc[i] * ga + be;
        }
    }
}

void layer_groupnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *rstd,
                              const float *gamma, int B, int C, int HW, int G,
                              struct layer_scratch *sc)
{
    int cpg = C / G;
#pragma omp parallel for schedule(static) if (B > 1 && (size_t)B * C * HW >= par_min)
    for (int b = 0; b < B; b++) {
        float *part = sc->partial + (size_t)b * sc->partial_per_image; // [dgamma C | dbeta C]
        for (int g = 0; g < G; g++) {
            float m = mean[b * G + g], rs = rstd[b * G + g];
            // xhat = (x - m) * rs; dxhat = dy * gamma
            // dx = rs * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
            double s1 = 0.0, s2 = 0.0;
            for (int c = 0; c < cpg; c++) {
                int ch = g * cpg + c;
                const float *xc = x + ((size_t)b * C + ch) * HW;
                const float *dyc = dy + ((size_t)b * C + ch) * HW;
                double dg, db;
                gn_channel_sums(&dg, &db, xc, dyc, HW, m, rs);
                part[ch] = (float)dg;
                part[C + ch] = (float)db;
                s1 += db * gamma[ch];
                s2 += dg * gamma[ch];
            }
            double n = (double)cpg * HW;
            float m1 = (float)(s1 / n), m2 = (float)(s2 / n);
            for (int c = 0; c < cpg; c++) {
                int ch = g * cpg + c;
                const float *xc = x + ((size_t)b * C + ch) * HW;
                const float *dyc = dy + ((size_t)b * C + ch) * HW;
                float *dxc = dx + ((size_t)b * C + ch) * HW;
                for (int i = 0; i < HW; i++) {
                    float xh = (xc[i] - m) * rs;
                    dxc[i] += rs * (dyc[i] * gamma[ch] - m1 - xh * m2);
                }
            }
        }
    }
    layer_reduce_partials(dgamma, sc->partial, B, C, sc->partial_per_image);
    layer_reduce_partials(dbeta, sc->partial + C, B, C, sc->partial_per_image);
}

// ---------------------------------------------------------------------------------------
// SiLU, linear, upsample

// exp(x) for the sigmoid, written so that loops over it vectorise (no libm call, no branch):
// x = n ln2 + r with |r| <= ln2/2, e^r by Cephes' degree-6 polynomial (expf's accuracy, about
// 1 ulp), times 2^n built in the exponent bits. x is clamped to [-87, 88] (2^n stays a normal
// float), which only changes results where the sigmoid is within 1e-38 of 0 or 1 anyway.
static inline float sigmoid_exp(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float magic = 12582912.0f; // 1.5 * 2^23: adding and subtracting rounds to an integer
    float n = (x * 1.44269504088896341f + magic) - magic;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f; // ln2 in two parts (Cephes C1, C2)
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return e * scale;
}

// The element loops run in fixed chunks through functions compiled for AVX2+FMA as well (picked
// at load time, as the matmul): each element's arithmetic does not depend on the chunking.
enum { SILU_CHUNK = 4096 };

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void
silu_forward_range(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] / (1.0f + sigmoid_exp(-x[i]));
}

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void
silu_backward_range(float *dx, const float *dy, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + sigmoid_exp(-x[i]));
        dx[i] += dy[i] * sg * (1.0f + x[i] * (1.0f - sg));
    }
}

void layer_silu_forward(float *y, const float *x, size_t n)
{
    size_t nchunks = (n + SILU_CHUNK - 1) / SILU_CHUNK;
#pragma omp parallel for schedule(static) if (n >= par_min)
    for (size_t c = 0; c < nchunks; c++) {
        size_t i = c * SILU_CHUNK;
        silu_forward_range(y + i, x + i, n - i < SILU_CHUNK ? n - i : SILU_CHUNK);
    }
}

void layer_silu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    size_t nchunks = (n + SILU_CHUNK - 1) / SILU_CHUNK;
#pragma omp parallel for schedule(static) if (n >= par_min)
    for (size_t c = 0; c < nchunks; c++) {
        size_t i = c * SILU_CHUNK;
        silu_backward_range(dx + i, dy + i, x + i, n - i < SILU_CHUNK ? n - i : SILU_CHUNK);
    }
}

void layer_linear_forward(float *y, const float *x, const float *w, const float *bias, int B,
                          int in, int out)
{
    for (int b = 0; b < B; b++)
        for (int o = 0; o < out; o++)
            y[(size_t)b * out + o] = bias ? bias[o] : 0.0f;
    layer_matmul(B, out, in, x, in, false, w, in, true, y, out, true);
}

void layer_linear_backward(float *dx, float *dw, float *dbias, const float *dy, const float *x,
                           const float *w, int B, int in, int out)
{
    if (dx)
        layer_matmul(B, in, out, dy, out, false, w, in, false, dx, in, true);
    layer_matmul(out, in, B, dy, out, true, x, in, false, dw, in, true);
    if (dbias) {
        for (int o = 0; o < out; o++) {
            float s = dbias[o];
            for (int b = 0; b < B; b++)
                s += dy[(size_t)b * out + o];
            dbias[o] = s;
        }
    }
}

void layer_upsample_forward(float *y, const float *x, int B, int C, int H, int W)
{
#pragma omp parallel for schedule(static) if ((size_t)B * C * H * W >= par_min)
    for (int bc = 0; bc < B * C; bc++) {
        const float *xs = x + (size_t)bc * H * W;
        float *ys = y + (size_t)bc * 4 * H * W;
        for (int oy = 0; oy < 2 * H; oy++)
            for (int ox = 0; ox < 2 * W; ox++)
                ys[oy * 2 * W + ox] = xs[(oy / 2) * W + ox / 2];
    }
}

void layer_upsample_backward(float *dx, const float *dy, int B, int C, int H, int W)
{
#pragma omp parallel for schedule(static) if ((size_t)B * C * H * W >= par_min)
    for (int bc = 0; bc < B * C; bc++) {
        float *xs = dx + (size_t)bc * H * W;
        const float *ys = dy + (size_t)bc * 4 * H * W;
        for (int iy = 0; iy < H; iy++)
            for (int ix = 0; ix < W; ix++) {
                const float *q = ys + (2 * iy) * 2 * W + 2 * ix;
                xs[iy * W + ix] += (q[0] + q[1]) + (q[2 * W] + q[2 * W + 1]);
            }
    }
}

// ---------------------------------------------------------------------------------------
// attention

void layer_attention_forward(float *y, float *qkv, float *P, float *o, const float *x,
                             const float *xn, const float *wqkv, const float *bqkv,
                             const float *wproj, const float *bproj, int B, int C, int N,
                             struct layer_scratch *sc)
{
    float scale = 1.0f / sqrtf((float)C);
#pragma omp parallel num_threads(sc->nthreads) if (B > 1 && (size_t)B * N * N * C >= 8 * par_min)
    {
    // the two weight matrices packed once per thread (as the convolutions do)
    float *wq = sc->col + (size_t)thread_id() * sc->col_per_thread;
    float *wp = wq + layer_matmul_packed_size(3 * C, C);
    layer_matmul_pack_a(wq, 3 * C, C, wqkv, C, false);
    layer_matmul_pack_a(wp, C, C, wproj, C, false);
#pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *xnb = xn + (size_t)b * C * N;
        float *qkvb = qkv + (size_t)b * 3 * C * N;
        float *Pb = P + (size_t)b * N * N;
        float *ob = o + (size_t)b * C * N;
        float *yb = y + (size_t)b * C * N;
        for (int r = 0; r < 3 * C; r++)
            for (int n = 0; n < N; n++)
                qkvb[(size_t)r * N + n] = bqkv[r];
        layer_matmul_packed(3 * C, N, C, wq, xnb, N, false, qkvb, N, true);
        const float *q = qkvb, *k = qkvb + (size_t)C * N, *v = qkvb + (size_t)2 * C * N;
        // S[i,j] = sum_c q[c,i] k[c,j]
        layer_matmul(N, N, C, q, N, true, k, N, false, Pb, N, false);
        for (int i = 0; i < N; i++) {
            float *row = Pb + (size_t)i * N;
            float mx = -INFINITY;
            for (int j = 0; j < N; j++) {
                row[j] *= scale;
                mx = row[j] > mx ? row[j] : mx;
            }
            float sum = 0.0f;
            for (int j = 0; j < N; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (int j = 0; j < N; j++)
                row[j] *= inv;
        }
        // o[c,i] = sum_j v[c,j] P[i,j]
        layer_matmul(C, N, N, v, N, false, Pb, N, true, ob, N, false);
        const float *xb = x + (size_t)b * C * N;
        for (int c = 0; c < C; c++)
            for (int n = 0; n < N; n++)
                yb[(size_t)c * N + n] = bproj[c];
        layer_matmul_packed(C, N, C, wp, ob, N, false, yb, N, true);
        for (size_t i = 0; i < (size_t)C * N; i++)
            yb[i] += xb[i];
    }
    }
}

// Per thread: backward dO [C, N] | dP [N, N] | dqkv [3C, N] | packed wproj^T | packed wqkv^T;
// forward packed wqkv | packed wproj (fewer floats).
size_t layer_attention_scratch_size(int C, int N)
{
    return (size_t)C * N + (size_t)N * N + (size_t)3 * C * N + layer_matmul_packed_size(C, C) +
           layer_matmul_packed_size(C, 3 * C);
}

void layer_attention_backward(float *dx, float *dxn, float *dwqkv, float *dbqkv, float *dwproj,
                              float *dbproj, const float *dy, const float *xn, const float *qkv,
                              const float *P, const float *o, const float *wqkv, const float *wproj,
                              int B, int C, int N, struct layer_scratch *sc)
{
    float scale = 1.0f / sqrtf((float)C);
    size_t nqkv = (size_t)3 * C * C, nproj = (size_t)C * C;
    // partial layout per image: [dwqkv | dbqkv (3C) | dwproj | dbproj (C)]
    size_t off_bqkv = nqkv, off_wproj = nqkv + 3 * (size_t)C, off_bproj = off_wproj + nproj;
#pragma omp parallel num_threads(sc->nthreads) if (B > 1 && (size_t)B * N * N * C >= 8 * par_min)
    {
    float *dO = sc->col + (size_t)thread_id() * sc->col_per_thread;
    float *dP = dO + (size_t)C * N;
    float *dqkv = dP + (size_t)N * N;
    float *wpt = dqkv + (size_t)3 * C * N, *wqt = wpt + layer_matmul_packed_size(C, C);
    layer_matmul_pack_a(wpt, C, C, wproj, C, true);
    layer_matmul_pack_a(wqt, C, 3 * C, wqkv, C, true);
#pragma omp for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *dyb = dy + (size_t)b * C * N;
        const float *xnb = xn + (size_t)b * C * N;
        const float *qkvb = qkv + (size_t)b * 3 * C * N;
        const float *q = qkvb, *k = qkvb + (size_t)C * N, *v = qkvb + (size_t)2 * C * N;
        const float *Pb = P + (size_t)b * N * N;
        const float *ob = o + (size_t)b * C * N;
        float *part = sc->partial + (size_t)b * sc->partial_per_image;
        float *dq = dqkv, *dk = dqkv + (size_t)C * N, *dv = dqkv + (size_t)2 * C * N;
        float *dxb = dx + (size_t)b * C * N;
        for (size_t i = 0; i < (size_t)C * N; i++)
            dxb[i] += dyb[i];
        // proj
        layer_matmul(C, C, N, dyb, N, false, ob, N, true, part + off_wproj, C, false);
        for (int c = 0; c < C; c++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++)
                s += dyb[(size_t)c * N + n];
            part[off_bproj + c] = s;
        }
        layer_matmul_packed(C, N, C, wpt, dyb, N, false, dO, N, false);
        // dv[c,j] = sum_i dO[c,i] P[i,j]; dP[i,j] = sum_c dO[c,i] v[c,j]
        layer_matmul(C, N, N, dO, N, false, Pb, N, false, dv, N, false);
        layer_matmul(N, N, C, dO, N, true, v, N, false, dP, N, false);
        // softmax backward, times the scale: dS = P * (dP - sum_j dP*P) * scale
        for (int i = 0; i < N; i++) {
            float *row = dP + (size_t)i * N;
            const float *prow = Pb + (size_t)i * N;
            float dot = 0.0f;
            for (int j = 0; j < N; j++)
                dot += row[j] * prow[j];
            for (int j = 0; j < N; j++)
                row[j] = prow[j] * (row[j] - dot) * scale;
        }
        // dq[c,i] = sum_j k[c,j] dS[i,j]; dk[c,j] = sum_i q[c,i] dS[i,j]
        layer_matmul(C, N, N, k, N, false, dP, N, true, dq, N, false);
        layer_matmul(C, N, N, q, N, false, dP, N, false, dk, N, false);
        // qkv projection
        layer_matmul(3 * C, C, N, dqkv, N, false, xnb, N, true, part, C, false);
        for (int r = 0; r < 3 * C; r++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++)
                s += dqkv[(size_t)r * N + n];
            part[off_bqkv + r] = s;
        }
        layer_matmul_packed(C, N, 3 * C, wqt, dqkv, N, false, dxn + (size_t)b * C * N, N, true);
    }
    }
    layer_reduce_partials(dwqkv, sc->partial, B, nqkv, sc->partial_per_image);
    layer_reduce_partials(dbqkv, sc->partial + off_bqkv, B, 3 * (size_t)C, sc->partial_per_image);
    layer_reduce_partials(dwproj, sc->partial + off_wproj, B, nproj, sc->partial_per_image);
    layer_reduce_partials(dbproj, sc->partial + off_bproj, B, C, sc->partial_per_image);
}
