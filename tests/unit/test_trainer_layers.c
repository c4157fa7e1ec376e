// test_trainer_layers — the trainer's math checked without PyTorch:
//  - every layer's backward against central finite differences of a scalar loss
//    L = sum_i y_i r_i (r fixed random, accumulated in double), on tiny shapes;
//  - the whole UNet's backward against finite differences of its MSE loss;
//  - RNG reference values, the DDPM schedule against PyTorch's, DDIM recovering x0;
//  - determinism: 1 vs 2 threads, straight vs interrupted+resumed training, sampling
//    independent of the batch split;
//  - checkpoint round trip bit-exact, `latest` and pruning; truncated or corrupted files
//    rejected with a message.
#include "check.h"
#include "checkpoint.h"
#include "diffusion.h"
#include "layers.h"
#include "train_rng.h"
#include "trainer.h"
#include "unet.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct train_rng rng;

static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(n * sizeof(float));
    train_rng_normal_fill(&rng, p, n);
    for (size_t i = 0; i < n; i++)
        p[i] *= scale;
    return p;
}

static float *zeros(size_t n)
{
    return calloc(n, sizeof(float));
}

// ---------------------------------------------------------------------------------------
// finite-difference harness

struct fd {
    void (*run)(struct fd *);
    float *y; // output of run()
    size_t ny;
    float *r; // loss weights
    void *ctx;
};

static double fd_loss(struct fd *f)
{
    f->run(f);
    double s = 0.0;
    for (size_t i = 0; i < f->ny; i++)
        s += (double)f->y[i] * f->r[i];
    return s;
}

// Compare analytic gradient g of the loss w.r.t. x[0..n) with central differences.
static int fd_check(struct fd *f, float *x, const float *g, size_t n, const char *what)
{
    const float h = 1e-2f;
    int bad = 0;
    double worst = 0.0;
    size_t stride = n > 48 ? n / 48 : 1;
    for (size_t i = 0; i < n; i += stride) {
        float orig = x[i];
        x[i] = orig + h;
        double lp = fd_loss(f);
        x[i] = orig - h;
        double lm = fd_loss(f);
        x[i] = orig;
        double num = (lp - lm) / (2.0 * (double)h);
        double err = fabs(num - g[i]);
        double tol = 1e-2 * fabs(num) + 2e-3;
        if (err / (fabs(num) + 1e-1) > worst)
            worst = err / (fabs(num) + 1e-1);
        if (!(err <= tol)) {
            if (bad < 3)
                fprintf(stderr, "  %s[%zu]: analytic %.6f numeric %.6f\n", what, i, g[i], num);
            bad++;
        }
    }
    printf("  fd %-28s n=%-6zu worst rel err %.2e%s\n", what, n, worst, bad ? "  FAIL" : "");
    return bad;
}

static struct layer_scratch make_scratch(size_t col, size_t part, int B)
{
    struct layer_scratch sc;
    sc.nthreads = omp_get_max_threads();
    sc.col_per_thread = col;
    sc.col = zeros(col * (size_t)sc.nthreads + 1);
    sc.partial_per_image = part;
    sc.partial = zeros(part * (size_t)B + 1);
    return sc;
}

// --- conv
struct conv_ctx {
    float *x, *w, *b;
    int B, Cin, H, Cout, k, s;
    struct layer_scratch *sc;
};

static void conv_run(struct fd *f)
{
    struct conv_ctx *c = f->ctx;
    layer_conv2d_forward(f->y, c->x, c->w, c->b, c->B, c->Cin, c->H, c->H, c->Cout, c->k, c->s,
                         c->sc);
}

static void test_conv(int k, int s)
{
    int B = 2, Cin = 3, H = 5, Cout = 4;
    int Ho = (H + 2 * (k / 2) - k) / s + 1;
    size_t nx = (size_t)B * Cin * H * H, nw = (size_t)Cout * Cin * k * k;
    size_t ny = (size_t)B * Cout * Ho * Ho;
    struct layer_scratch sc =
        make_scratch(layer_conv2d_backward_scratch_size(Cin, H, H, Cout, k, s), nw + Cout, B);
    struct conv_ctx c = {
        rand_buf(nx, 1), rand_buf(nw, 0.5f), rand_buf(Cout, 0.5f), B, Cin, H, Cout, k, s, &sc};
    struct fd f = {conv_run, zeros(ny), ny, rand_buf(ny, 1), &c};
    float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(Cout);
    conv_run(&f);
    layer_conv2d_backward(dx, dw, db, f.r, c.x, c.w, B, Cin, H, H, Cout, k, s, &sc);
    char name[64];
    snprintf(name, sizeof(name), "conv%dx%d/s%d dx", k, k, s);
    CHECK(fd_check(&f, c.x, dx, nx, name) == 0);
    snprintf(name, sizeof(name), "conv%dx%d/s%d dw", k, k, s);
    CHECK(fd_check(&f, c.w, dw, nw, name) == 0);
    snprintf(name, sizeof(name), "conv%dx%d/s%d db", k, k, s);
    CHECK(fd_check(&f, c.b, db, Cout, name) == 0);
    free(c.x), free(c.w), free(c.b), free(f.y), free(f.r), free(dx), free(dw), free(db);
    free(sc.col), free(sc.partial);
}

// --- groupnorm
struct gn_ctx {
    float *x, *g, *b, *mean, *rstd;
    int B, C, HW, G;
};

static void gn_run(struct fd *f)
{
    struct gn_ctx *c = f->ctx;
    layer_groupnorm_forward(f->y, c->mean, c->rstd, c->x, c->g, c->b, c->B, c->C, c->HW, c->G);
}

static void test_groupnorm(void)
{
    int B = 2, C = 6, HW = 5, G = 3;
    size_t n = (size_t)B * C * HW;
    struct layer_scratch sc = make_scratch(1, 2 * (size_t)C, B);
    struct gn_ctx c = {
        rand_buf(n, 1), rand_buf(C, 1), rand_buf(C, 1), zeros(B * G), zeros(B * G), B, C, HW, G};
    struct fd f = {gn_run, zeros(n), n, rand_buf(n, 1), &c};
    float *dx = zeros(n), *dg = zeros(C), *db = zeros(C);
    gn_run(&f);
    layer_groupnorm_backward(dx, dg, db, f.r, c.x, c.mean, c.rstd, c.g, B, C, HW, G, &sc);
    CHECK(fd_check(&f, c.x, dx, n, "groupnorm dx") == 0);
    CHECK(fd_check(&f, c.g, dg, C, "groupnorm dgamma") == 0);
    CHECK(fd_check(&f, c.b, db, C, "groupnorm dbeta") == 0);
    free(c.x), free(c.g), free(c.b), free(c.mean), free(c.rstd), free(f.y), free(f.r);
    free(dx), free(dg), free(db), free(sc.col), free(sc.partial);
}

// --- silu, linear, upsample
struct simple_ctx {
    float *x, *w, *b;
    int B, in, out, C, H;
};

static void silu_run(struct fd *f)
{
    struct simple_ctx *c = f->ctx;
    layer_silu_forward(f->y, c->x, f->ny);
}

static void linear_run(struct fd *f)
{
    struct simple_ctx *c = f->ctx;
    layer_linear_forward(f->y, c->x, c->w, c->b, c->B, c->in, c->out);
}

static void up_run(struct fd *f)
{
    struct simple_ctx *c = f->ctx;
    layer_upsample_forward(f->y, c->x, c->B, c->C, c->H, c->H);
}

static void test_simple(void)
{
    size_t n = 40;
    struct simple_ctx c = {rand_buf(n, 2), NULL, NULL, 0, 0, 0, 0, 0};
    struct fd f = {silu_run, zeros(n), n, rand_buf(n, 1), &c};
    float *dx = zeros(n);
    silu_run(&f);
    layer_silu_backward(dx, f.r, c.x, n);
    CHECK(fd_check(&f, c.x, dx, n, "silu dx") == 0);
    free(c.x), free(f.y), free(f.r), free(dx);

    int B = 3, in = 5, out = 4;
    struct simple_ctx l = {rand_buf((size_t)B * in, 1),
                           rand_buf((size_t)in * out, 1),
                           rand_buf(out, 1),
                           B,
                           in,
                           out,
                           0,
                           0};
    struct fd g = {linear_run, zeros((size_t)B * out), (size_t)B * out,
                   rand_buf((size_t)B * out, 1), &l};
    float *ldx = zeros((size_t)B * in), *ldw = zeros((size_t)in * out), *ldb = zeros(out);
    linear_run(&g);
    layer_linear_backward(ldx, ldw, ldb, g.r, l.x, l.w, B, in, out);
    CHECK(fd_check(&g, l.x, ldx, (size_t)B * in, "linear dx") == 0);
    CHECK(fd_check(&g, l.w, ldw, (size_t)in * out, "linear dw") == 0);
    CHECK(fd_check(&g, l.b, ldb, out, "linear db") == 0);
    free(l.x), free(l.w), free(l.b), free(g.y), free(g.r), free(ldx), free(ldw), free(ldb);

    struct simple_ctx u = {rand_buf(2 * 2 * 3 * 3, 1), NULL, NULL, 2, 0, 0, 2, 3};
    size_t ny = 2 * 2 * 6 * 6;
    struct fd h = {up_run, zeros(ny), ny, rand_buf(ny, 1), &u};
    float *udx = zeros(36);
    up_run(&h);
    layer_upsample_backward(udx, h.r, 2, 2, 3, 3);
    CHECK(fd_check(&h, u.x, udx, 36, "upsample dx") == 0);
    free(u.x), free(h.y), free(h.r), free(udx);
}

// --- attention (x is the residual input, xn the normalised one; both checked)
struct attn_ctx {
    float *x, *xn, *wq, *bq, *wp, *bp, *qkv, *P, *o;
    int B, C, N;
    struct layer_scratch *sc;
};

static void attn_run(struct fd *f)
{
    struct attn_ctx *c = f->ctx;
    layer_attention_forward(f->y, c->qkv, c->P, c->o, c->x, c->xn, c->wq, c->bq, c->wp, c->bp, c->B,
                            c->C, c->N, c->sc);
}

static void test_attention(void)
{
    int B = 2, C = 4, N = 6;
    size_t n = (size_t)B * C * N;
    struct layer_scratch sc =
        make_scratch(layer_attention_scratch_size(C, N), 4 * (size_t)C * C + 4 * (size_t)C, B);
    struct attn_ctx c = {rand_buf(n, 1),
                         rand_buf(n, 1),
                         rand_buf(3 * C * C, 0.7f),
                         rand_buf(3 * C, 0.3f),
                         rand_buf(C * C, 0.7f),
                         rand_buf(C, 0.3f),
                         zeros(3 * n),
                         zeros((size_t)B * N * N),
                         zeros(n),
                         B,
                         C,
                         N,
                         &sc};
    struct fd f = {attn_run, zeros(n), n, rand_buf(n, 1), &c};
    float *dx = zeros(n), *dxn = zeros(n), *dwq = zeros(3 * C * C), *dbq = zeros(3 * C);
    float *dwp = zeros(C * C), *dbp = zeros(C);
    attn_run(&f);
    layer_attention_backward(dx, dxn, dwq, dbq, dwp, dbp, f.r, c.xn, c.qkv, c.P, c.o, c.wq, c.wp, B,
                             C, N, &sc);
    CHECK(fd_check(&f, c.x, dx, n, "attention dx (residual)") == 0);
    CHECK(fd_check(&f, c.xn, dxn, n, "attention dxn") == 0);
    CHECK(fd_check(&f, c.wq, dwq, 3 * C * C, "attention dwqkv") == 0);
    CHECK(fd_check(&f, c.bq, dbq, 3 * C, "attention dbqkv") == 0);
    CHECK(fd_check(&f, c.wp, dwp, C * C, "attention dwproj") == 0);
    CHECK(fd_check(&f, c.bp, dbp, C, "attention dbproj") == 0);
    free(c.x), free(c.xn), free(c.wq), free(c.bq), free(c.wp), free(c.bp), free(c.qkv);
    free(c.P), free(c.o), free(f.y), free(f.r), free(dx), free(dxn), free(dwq), free(dbq);
    free(dwp), free(dbp), free(sc.col), free(sc.partial);
}

// matmul: every transpose combination against a naive double loop, odd sizes
static void test_matmul(void)
{
    int M = 7, N = 37, K = 131;
    float *A = rand_buf((size_t)M * K, 1), *B = rand_buf((size_t)K * N, 1);
    float *C = zeros((size_t)M * N);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++) {
                for (size_t i = 0; i < (size_t)M * N; i++)
                    C[i] = 0.5f;
                layer_matmul(M, N, K, A, ta ? M : K, ta, B, tb ? K : N, tb, C, N, acc);
                double worst = 0.0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double s = acc ? 0.5 : 0.0;
                        for (int k = 0; k < K; k++)
                            s += (double)(ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]) *
                                 (tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j]);
                        worst = fmax(worst, fabs(s - C[(size_t)i * N + j]));
                    }
                CHECK(worst < 1e-4);
            }
    free(A), free(B), free(C);
}

// matmul with op(A) packed once: bit-identical to layer_matmul, also over several k and row
// blocks (K > 256, M > 144)
static void test_matmul_packed(void)
{
    int M = 151, N = 45, K = 300;
    float *A = rand_buf((size_t)M * K, 1), *B = rand_buf((size_t)K * N, 1);
    float *C1 = zeros((size_t)M * N), *C2 = zeros((size_t)M * N);
    float *Ap = zeros(layer_matmul_packed_size(M, K));
    for (int ta = 0; ta < 2; ta++) {
        layer_matmul_pack_a(Ap, M, K, A, ta ? M : K, ta);
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++) {
                for (size_t i = 0; i < (size_t)M * N; i++)
                    C1[i] = C2[i] = 0.25f;
                layer_matmul(M, N, K, A, ta ? M : K, ta, B, tb ? K : N, tb, C1, N, acc);
                layer_matmul_packed(M, N, K, Ap, B, tb ? K : N, tb, C2, N, acc);
                CHECK(memcmp(C1, C2, sizeof(float) * M * N) == 0);
            }
    }
    free(A), free(B), free(C1), free(C2), free(Ap);
}

// a stride-1 3x3 convolution large enough for several k blocks (Cin*9 > 256): forward, input
// and weight gradients against direct double loops. W = 12: panels of 16 pixels spanning image
// rows and partial panels (packed implicit im2col); W = 16: whole rows read in place from the
// padded image by the register kernel; W = 8: two rows per panel, also in place.
static void test_conv_direct(int H)
{
    int B = 2, Cin = 30, Cout = 7, k = 3, P = H * H;
    size_t nx = (size_t)B * Cin * P, nw = (size_t)Cout * Cin * 9, ny = (size_t)B * Cout * P;
    struct layer_scratch sc =
        make_scratch(layer_conv2d_backward_scratch_size(Cin, H, H, Cout, k, 1), nw + Cout, B);
    float *x = rand_buf(nx, 1), *w = rand_buf(nw, 0.5f), *bias = rand_buf(Cout, 0.5f);
    float *y = zeros(ny), *dy = rand_buf(ny, 1), *dx = zeros(nx), *dw = zeros(nw);
    float *db = zeros(Cout);
    layer_conv2d_forward(y, x, w, bias, B, Cin, H, H, Cout, k, 1, &sc);
    layer_conv2d_backward(dx, dw, db, dy, x, w, B, Cin, H, H, Cout, k, 1, &sc);
    double *rx = calloc(nx, sizeof(double)), *rw = calloc(nw, sizeof(double));
    double wy = 0.0, wx = 0.0, ww = 0.0;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < Cout; o++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < H; ox++) {
                    double s = bias[o];
                    float g = dy[(((size_t)b * Cout + o) * H + oy) * H + ox];
                    for (int i = 0; i < Cin; i++)
                        for (int ky = 0; ky < 3; ky++)
                            for (int kx = 0; kx < 3; kx++) {
                                int iy = oy + ky - 1, ix = ox + kx - 1;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= H)
                                    continue;
                                size_t xi = (((size_t)b * Cin + i) * H + iy) * H + ix;
                                size_t wi = (((size_t)o * Cin + i) * 3 + ky) * 3 + kx;
                                s += (double)x[xi] * w[wi];
                                rx[xi] += (double)g * w[wi];
                                rw[wi] += (double)g * x[xi];
                            }
                    wy = fmax(wy, fabs(s - y[(((size_t)b * Cout + o) * H + oy) * H + ox]));
                }
    for (size_t i = 0; i < nx; i++)
        wx = fmax(wx, fabs(rx[i] - dx[i]));
    for (size_t i = 0; i < nw; i++)
        ww = fmax(ww, fabs(rw[i] - dw[i]));
    printf("  conv 30->7 @%dx%d vs direct: max err y %.1e dx %.1e dw %.1e\n", H, H, wy, wx, ww);
    CHECK(wy < 1e-4 && wx < 1e-4 && ww < 1e-4);
    free(x), free(w), free(bias), free(y), free(dy), free(dx), free(dw), free(db), free(rx);
    free(rw), free(sc.col), free(sc.partial);
}

// ---------------------------------------------------------------------------------------
// the whole model

static struct unet_config tiny_config(void)
{
    struct unet_config c = {0};
    snprintf(c.name, sizeof(c.name), "fd-8");
    c.image_size = 8, c.in_channels = 3, c.channels = 8, c.num_levels = 2;
    c.mult[0] = 1, c.mult[1] = 2;
    c.num_res_blocks = 1, c.attn_resolution = 4, c.groups = 4, c.temb_dim = 16;
    c.cap_buckets = 16, c.cap_dim = 4;
    return c;
}

struct model_ctx {
    struct unet *m;
    float *params, *x, *target;
    int *t;
    const char **caps;
    unsigned char *drop;
    int B;
    size_t n;
};

static double model_loss(struct model_ctx *c, float *dout)
{
    struct pm_error err = PM_ERROR_INIT;
    unet_forward(c->m, c->params, c->x, c->t, c->caps, c->drop, c->B, &err);
    const float *o = unet_output(c->m);
    double s = 0.0;
    for (size_t i = 0; i < c->n; i++) {
        double d = (double)o[i] - c->target[i];
        s += d * d;
        if (dout)
            dout[i] = (float)(2.0 * d / (double)c->n);
    }
    return s / (double)c->n;
}

static void test_model_fd(void)
{
    struct unet_config cfg = tiny_config();
    struct unet *m = NULL;
    struct pm_error err = PM_ERROR_INIT;
    CHECK(unet_create(&cfg, 3, &m, &err) == PM_OK);
    if (!m)
        return;
    size_t np = unet_num_params(m);
    float *params = zeros(np), *grads = zeros(np);
    // random everywhere (no zero-initialised layers) so every path carries gradient
    train_rng_normal_fill(&rng, params, np);
    size_t nt;
    const struct unet_tensor *tab = unet_tensors(m, &nt);
    for (size_t i = 0; i < nt; i++) {
        float sc = tab[i].ndim >= 2 ? 1.0f / sqrtf((float)(tab[i].numel / tab[i].shape[0])) : 0.2f;
        for (size_t k = 0; k < tab[i].numel; k++)
            params[tab[i].offset + k] *= sc;
        if (strstr(tab[i].name, "norm") && strstr(tab[i].name, "weight"))
            for (size_t k = 0; k < tab[i].numel; k++)
                params[tab[i].offset + k] += 1.0f;
    }
    int B = 3;
    size_t n = (size_t)B * 3 * 8 * 8;
    int t[3] = {3, 500, 999};
    const char *caps[3] = {"a cat", "", "Blue sky over the hills"};
    unsigned char drop[3] = {0, 0, 1};
    struct model_ctx c = {m, params, rand_buf(n, 1), rand_buf(n, 1), t, caps, drop, B, n};
    float *dout = zeros(n);
    model_loss(&c, dout);
    unet_backward(m, params, grads, dout);

    // central differences on a few elements of every tensor (h relative to the loss scale)
    const double h = 3e-3;
    int bad = 0, checked = 0;
    uint32_t ids[UNET_CAPTION_MAX_TOKENS];
    unet_caption_tokens(caps[0], cfg.cap_buckets, ids);
    for (size_t i = 0; i < nt; i++) {
        size_t count = tab[i].numel < 3 ? tab[i].numel : 3;
        for (size_t k = 0; k < count; k++) {
            size_t idx = tab[i].offset + (k * 7919) % tab[i].numel;
            if (strcmp(tab[i].name, "cap.table") == 0) // a row the batch uses
                idx = tab[i].offset + (size_t)ids[0] * cfg.cap_dim + k;
            float orig = params[idx];
            params[idx] = orig + (float)h;
            double lp = model_loss(&c, NULL);
            params[idx] = orig - (float)h;
            double lm = model_loss(&c, NULL);
            params[idx] = orig;
            double num = (lp - lm) / (2.0 * h);
            double err = fabs(num - grads[idx]);
            checked++;
            if (!(err <= 3e-2 * fabs(num) + 1e-4)) {
                fprintf(stderr, "  model fd %s[%zu]: analytic %.6g numeric %.6g\n", tab[i].name,
                        idx - tab[i].offset, grads[idx], num);
                bad++;
            }
        }
    }
    printf("  fd whole model: %d elements of %zu tensors, %d outside tolerance\n", checked, nt,
           bad);
    CHECK(bad == 0);
    // the dropped caption's (index 2) and the empty one's gradient go to cap.null
    const struct unet_tensor *nul = unet_find_tensor(m, "cap.null");
    double s = 0.0;
    for (size_t k = 0; k < nul->numel; k++)
        s += fabs(grads[nul->offset + k]);
    CHECK(s > 0.0);
    free(params), free(grads), free(c.x), free(c.target), free(dout);
    unet_free(m);
}

// ---------------------------------------------------------------------------------------
// RNG, schedule, DDIM

static void test_rng_and_schedule(void)
{
    struct train_rng r;
    train_rng_seed(&r, 0);
    CHECK(r.s[0] == 0xe220a8397b1dcdafULL); // splitmix64's first output from state 0
    r.s[0] = 1, r.s[1] = 2, r.s[2] = 3, r.s[3] = 4;
    CHECK(train_rng_next(&r) == 11520); // xoshiro256**: rotl(2 * 5, 7) * 9
    train_rng_seed(&r, 42);
    enum { NS = 20000 };
    float *z = zeros(NS);
    train_rng_normal_fill(&r, z, NS);
    double mean = 0, var = 0;
    for (int i = 0; i < NS; i++)
        mean += z[i];
    mean /= NS;
    for (int i = 0; i < NS; i++)
        var += (z[i] - mean) * (z[i] - mean);
    var /= NS;
    CHECK(fabs(mean) < 0.03 && fabs(var - 1.0) < 0.05);
    free(z);
    for (int i = 0; i < 1000; i++)
        CHECK(train_rng_below(&r, 7) < 7);

    struct diffusion_schedule s;
    diffusion_schedule_init(&s);
    // torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    CHECK(fabs(s.alpha_bar[0] - 0.9999) < 1e-12);
    CHECK(fabs(s.alpha_bar[999] / 4.0358297653756754e-05 - 1.0) < 1e-9);
    CHECK(fabs(s.alpha_bar[499] / 0.07858724288177824 - 1.0) < 1e-9);

    int ts[50];
    diffusion_ddim_timesteps(50, ts);
    CHECK(ts[0] == 980 && ts[49] == 0 && ts[48] == 20);
    // DDIM from x_t with the true noise lands exactly on x0 (one step to t = -1)
    size_t n = 64;
    float *x0 = rand_buf(n, 0.4f), *eps = rand_buf(n, 1), *x = zeros(n);
    int t = 700;
    diffusion_q_sample(&s, x, x0, eps, &t, 1, n);
    diffusion_ddim_step(&s, x, eps, t, -1, n);
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(x[i] - x0[i]));
    CHECK(worst < 1e-4);
    // guidance: w = 1 gives the conditional prediction, w = 0 the unconditional
    float out[4], ec[4] = {1, 2, 3, 4}, eu[4] = {0, 0, 1, 1};
    diffusion_guide(out, ec, eu, 1.0f, 4);
    CHECK(memcmp(out, ec, sizeof(out)) == 0);
    diffusion_guide(out, ec, eu, 3.0f, 4);
    CHECK(out[3] == 10.0f);
    float pred[3] = {1, 2, 3}, tgt[3] = {1, 0, 0}, g[3];
    CHECK(fabsf(diffusion_mse(pred, tgt, g, 3) - 13.0f / 3.0f) < 1e-6f);
    CHECK(fabsf(g[1] - 4.0f / 3.0f) < 1e-6f);
    free(x0), free(eps), free(x);
}

// ---------------------------------------------------------------------------------------
// training determinism, checkpoints

static struct trainer *make_trainer(const struct unet_config *cfg, int max_batch)
{
    struct trainer_options o;
    trainer_options_init(&o, NULL);
    o.model = cfg;
    o.max_batch = max_batch;
    o.seed = 7;
    o.adamw.lr = 1e-3f;
    o.adamw.weight_decay = 0.01f;
    o.ema_decay = 0.9f;
    o.caption_dropout = 0.3f;
    struct trainer *t = NULL;
    struct pm_error err = PM_ERROR_INIT;
    if (trainer_create(&o, &t, &err) != PM_OK)
        fprintf(stderr, "trainer_create: %s\n", err.msg);
    return t;
}

static uint8_t images[4 * 8 * 8 * 3];
static const char *captions[4] = {"a red fox", "two cats", NULL, "A RED FOX"};

static void train_steps(struct trainer *t, int n, float *last_loss)
{
    struct pm_error err = PM_ERROR_INIT;
    for (int i = 0; i < n; i++) {
        struct trainer_batch b = {.B = 4, .images_u8 = images, .captions = captions};
        CHECK(trainer_compute_gradients(t, &b, last_loss, &err) == PM_OK);
        trainer_apply_update(t);
    }
}

static bool same_state(struct trainer *a, struct trainer *b)
{
    size_t n = trainer_num_params(a) * sizeof(float);
    return trainer_step(a) == trainer_step(b) &&
           memcmp(trainer_params(a), trainer_params(b), n) == 0 &&
           memcmp(trainer_ema(a), trainer_ema(b), n) == 0;
}

static void rm_tree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

static void test_determinism_and_checkpoints(const char *tmp)
{
    struct unet_config cfg = tiny_config();
    for (size_t i = 0; i < sizeof(images); i++)
        images[i] = (uint8_t)((i * 37 + i / 11) & 255);
    float loss_a, loss_b;

    // 1 thread vs 2 threads: identical bits (threaded paths forced on for tiny shapes)
    layer_set_parallel_threshold(0);
    omp_set_num_threads(1);
    struct trainer *one = make_trainer(&cfg, 4);
    omp_set_num_threads(2);
    struct trainer *two = make_trainer(&cfg, 4);
    train_steps(one, 3, &loss_a);
    train_steps(two, 3, &loss_b);
    CHECK(same_state(one, two));
    CHECK(loss_a == loss_b);
    trainer_free(one);
    layer_set_parallel_threshold(32768);

    // straight 6 steps vs 3 + checkpoint + fresh process state + 3
    struct trainer *straight = make_trainer(&cfg, 4);
    train_steps(straight, 6, &loss_a);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/ckpt", tmp);
    struct pm_error err = PM_ERROR_INIT;
    const char blob[] = "loader: epoch 1, consumed 12";
    CHECK(trainer_save(two, dir, 2, blob, sizeof(blob), &err) == PM_OK);
    trainer_free(two);
    struct trainer *resumed = make_trainer(&cfg, 4);
    unsigned char *lb = NULL;
    size_t ll = 0;
    CHECK(trainer_load(resumed, dir, &lb, &ll, &err) == PM_OK);
    CHECK(ll == sizeof(blob) && lb && memcmp(lb, blob, ll) == 0);
    free(lb);
    CHECK(trainer_step(resumed) == 3);
    train_steps(resumed, 3, &loss_b);
    CHECK(same_state(straight, resumed));
    CHECK(loss_a == loss_b);

    // round trip of everything, bit-exact, through a second save/load
    CHECK(trainer_save(resumed, dir, 2, NULL, 0, &err) == PM_OK);
    struct trainer *copy = make_trainer(&cfg, 4);
    CHECK(trainer_load(copy, dir, &lb, &ll, &err) == PM_OK);
    CHECK(lb == NULL && ll == 0);
    CHECK(same_state(resumed, copy));
    train_steps(copy, 1, &loss_a);
    train_steps(resumed, 1, &loss_b);
    CHECK(same_state(resumed, copy)); // moments and RNG came back too
    // keep = 2: step-3 was pruned when step-7 was written, step-6 and step-7 remain
    CHECK(trainer_save(resumed, dir, 2, NULL, 0, &err) == PM_OK);
    char p[4300];
    struct stat st;
    snprintf(p, sizeof(p), "%s/step-00000003", dir);
    CHECK(stat(p, &st) != 0);
    snprintf(p, sizeof(p), "%s/step-00000006/state.bin", dir);
    CHECK(stat(p, &st) == 0);
    snprintf(p, sizeof(p), "%s/step-00000007/model.safetensors", dir);
    CHECK(stat(p, &st) == 0);
    snprintf(p, sizeof(p), "%s/latest", dir);
    FILE *f = fopen(p, "r");
    char latest[64] = {0};
    CHECK(f && fgets(latest, sizeof(latest), f));
    if (f)
        fclose(f);
    CHECK_STR(latest, "step-00000007\n");

    // sampling: deterministic, independent of the split into chunks
    const char *prompts[3] = {"a red fox", "", "two cats"};
    uint8_t s1[3 * 192], s2[3 * 192];
    struct trainer *big = make_trainer(&cfg, 8);
    struct trainer *small = make_trainer(&cfg, 2); // guidance chunks of 1 prompt
    CHECK(trainer_sample(big, prompts, 3, 2.5f, 4, 99, true, s1, &err) == PM_OK);
    CHECK(trainer_sample(small, prompts, 3, 2.5f, 4, 99, true, s2, &err) == PM_OK);
    CHECK(memcmp(s1, s2, sizeof(s1)) == 0);
    CHECK(trainer_sample(small, prompts, 3, 1.0f, 3, 5, false, s2, &err) == PM_OK);
    trainer_free(big), trainer_free(small);

    // a missing checkpoint is PM_ERR_NOT_FOUND and leaves the trainer alone
    snprintf(p, sizeof(p), "%s/none", tmp);
    CHECK(trainer_load(copy, p, &lb, &ll, &err) == PM_ERR_NOT_FOUND);
    trainer_free(copy);
    trainer_free(straight);
    trainer_free(resumed);
}

// Copy src to dst with `len` bytes and byte `flip` (if >= 0) xor-ed with `mask`.
static void write_variant(const unsigned char *src, size_t len, long flip, unsigned char mask,
                          const char *dst)
{
    FILE *f = fopen(dst, "wb");
    if (!f)
        return;
    if (flip >= 0 && (size_t)flip < len) {
        fwrite(src, 1, (size_t)flip, f);
        unsigned char b = src[flip] ^ mask;
        fwrite(&b, 1, 1, f);
        fwrite(src + flip + 1, 1, len - (size_t)flip - 1, f);
    } else {
        fwrite(src, 1, len, f);
    }
    fclose(f);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*len + 1);
    if (fread(b, 1, *len, f) != *len)
        *len = 0;
    fclose(f);
    return b;
}

static void test_corruption(const char *tmp)
{
    struct unet_config cfg = tiny_config();
    struct trainer *t = make_trainer(&cfg, 4);
    train_steps(t, 1, &(float){0});
    char dir[4096], model[4300], state[4300];
    snprintf(dir, sizeof(dir), "%s/corrupt", tmp);
    struct pm_error err = PM_ERROR_INIT;
    CHECK(trainer_save(t, dir, 1, "blob", 4, &err) == PM_OK);
    snprintf(model, sizeof(model), "%s/step-00000001/model.safetensors", dir);
    snprintf(state, sizeof(state), "%s/step-00000001/state.bin", dir);
    size_t mlen = 0, slen = 0;
    unsigned char *morig = slurp(model, &mlen), *sorig = slurp(state, &slen);
    CHECK(morig && sorig && mlen > 100 && slen > 100);
    if (!morig || !sorig)
        return;
    uint64_t hlen;
    memcpy(&hlen, morig, 8);

    struct trainer *u = make_trainer(&cfg, 4);
    size_t np = trainer_num_params(u);
    float *before = malloc(np * sizeof(float));
    memcpy(before, trainer_params(u), np * sizeof(float));
    unsigned char *lb;
    size_t ll;
    int accepted = 0, tried = 0;
    bool messages_ok = true;
    // truncations of each file
    size_t mcuts[] = {0, 4, 8, 9, 8 + (size_t)hlen / 2, 8 + (size_t)hlen, mlen / 2, mlen - 1};
    for (size_t i = 0; i < sizeof(mcuts) / sizeof(mcuts[0]); i++) {
        write_variant(morig, mcuts[i], -1, 0, model);
        tried++;
        if (trainer_load(u, dir, &lb, &ll, &err) == PM_OK) {
            accepted++;
            free(lb);
        } else if (!strstr(err.msg, "model.safetensors")) {
            messages_ok = false;
        }
    }
    write_variant(morig, mlen, -1, 0, model);
    size_t scuts[] = {0, 3, 50, 96, slen / 2, slen - 4, slen - 1};
    for (size_t i = 0; i < sizeof(scuts) / sizeof(scuts[0]); i++) {
        write_variant(sorig, scuts[i], -1, 0, state);
        tried++;
        if (trainer_load(u, dir, &lb, &ll, &err) == PM_OK) {
            accepted++;
            free(lb);
        } else if (!strstr(err.msg, "state.bin")) {
            messages_ok = false;
        }
    }
    // flipped bytes: the length prefix and the first 300 header bytes one by one (metadata,
    // first tensor entries), then every 53rd header byte (two masks in turn), a spread of
    // data bytes; every byte of the state header and a spread of the rest
    for (long i = 0; i < (long)(8 + hlen); i += (i < 300 ? 1 : 53))
        for (int k = (int)(i % 2); k < 2; k += 2) {
            write_variant(morig, mlen, i, k ? 0x80 : 0x01, model);
            tried++;
            if (trainer_load(u, dir, &lb, &ll, &err) == PM_OK) {
                accepted++;
                free(lb);
                if (accepted < 4)
                    fprintf(stderr, "  accepted model.safetensors with byte %ld ^ %#x\n", i,
                            k ? 0x80 : 1);
            }
        }
    for (long i = (long)(8 + hlen); i < (long)mlen; i += 997) {
        write_variant(morig, mlen, i, 0x10, model);
        tried++;
        if (trainer_load(u, dir, &lb, &ll, &err) == PM_OK) {
            accepted++;
            free(lb);
        }
    }
    write_variant(morig, mlen, -1, 0, model);
    for (long i = 0; i < (long)slen; i += (i < 100 ? 1 : 331)) {
        write_variant(sorig, slen, i, 0x04, state);
        tried++;
        if (trainer_load(u, dir, &lb, &ll, &err) == PM_OK) {
            accepted++;
            free(lb);
            if (accepted < 4)
                fprintf(stderr, "  accepted state.bin with byte %ld ^ 0x04\n", i);
        }
    }
    write_variant(sorig, slen, -1, 0, state);
    printf("  corruption: %d damaged checkpoints tried, %d accepted\n", tried, accepted);
    CHECK(accepted == 0);
    CHECK(messages_ok);
    // none of the failed loads touched the trainer
    CHECK(memcmp(before, trainer_params(u), np * sizeof(float)) == 0);
    CHECK(trainer_step(u) == 0);
    // and the restored files load again
    CHECK(trainer_load(u, dir, &lb, &ll, &err) == PM_OK);
    CHECK(ll == 4 && lb && memcmp(lb, "blob", 4) == 0);
    free(lb);
    CHECK(same_state(t, u));
    // `latest` naming garbage or a missing step
    char lp[4300];
    snprintf(lp, sizeof(lp), "%s/latest", dir);
    write_variant((const unsigned char *)"step-x\n", 7, -1, 0, lp);
    CHECK(trainer_load(u, dir, &lb, &ll, &err) == PM_ERR_FORMAT);
    write_variant((const unsigned char *)"step-00000009\n", 14, -1, 0, lp);
    CHECK(trainer_load(u, dir, &lb, &ll, &err) == PM_ERR_NOT_FOUND);
    // a checkpoint of another architecture is refused by name
    struct unet_config other = cfg;
    snprintf(other.name, sizeof(other.name), "fd-8b");
    other.cap_dim = 8;
    struct trainer *o = make_trainer(&other, 4);
    write_variant((const unsigned char *)"step-00000001\n", 14, -1, 0, lp);
    CHECK(trainer_load(o, dir, &lb, &ll, &err) == PM_ERR_FORMAT);
    CHECK(strstr(err.msg, "fd-8") != NULL);
    trainer_free(o);
    free(before), free(morig), free(sorig);
    trainer_free(t);
    trainer_free(u);
}

int main(void)
{
    train_rng_seed(&rng, 2024);
    char tmp[] = "/tmp/test_trainer_layers.XXXXXX";
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    printf("layers vs finite differences:\n");
    test_matmul();
    test_matmul_packed();
    test_conv_direct(12);
    test_conv_direct(16);
    test_conv_direct(8);
    test_conv(3, 1);
    test_conv(3, 2);
    test_conv(1, 1);
    test_groupnorm();
    test_simple();
    test_attention();
    test_model_fd();
    printf("rng, schedule, ddim\n");
    test_rng_and_schedule();
    printf("determinism and checkpoints\n");
    test_determinism_and_checkpoints(tmp);
    test_corruption(tmp);
    rm_tree(tmp);
    return CHECK_DONE();
}
