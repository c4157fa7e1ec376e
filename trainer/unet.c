// unet — model description, parameter table, activation layout, forward and backward.
#include "unet.h"

#include "layers.h"
#include "train_rng.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

// ---------------------------------------------------------------------------------------
// configurations

int unet_config_get(const char *name, struct unet_config *cfg, struct pm_error *err)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->in_channels = 3;
    cfg->channels = 64;
    cfg->num_res_blocks = 2;
    cfg->groups = 32;
    cfg->cap_buckets = 4096;
    cfg->cap_dim = 128;
    if (strcmp(name, "tiny-32") == 0) {
        cfg->image_size = 32;
        cfg->num_levels = 3;
        cfg->mult[0] = 1, cfg->mult[1] = 2, cfg->mult[2] = 2;
        cfg->attn_resolution = 16;
    } else if (strcmp(name, "small-64") == 0) {
        cfg->image_size = 64;
        cfg->num_levels = 4;
        cfg->mult[0] = 1, cfg->mult[1] = 2, cfg->mult[2] = 2, cfg->mult[3] = 2;
        cfg->attn_resolution = 16;
    } else if (strcmp(name, "test-16") == 0) {
        cfg->image_size = 16;
        cfg->channels = 32;
        cfg->num_levels = 2;
        cfg->mult[0] = 1, cfg->mult[1] = 2;
        cfg->attn_resolution = 8;
        cfg->groups = 8;
        cfg->cap_buckets = 256;
        cfg->cap_dim = 32;
    } else {
        return pm_error_set(err, PM_ERR_NOT_FOUND,
                            "unknown model config '%s' (tiny-32, small-64, test-16)", name);
    }
    snprintf(cfg->name, sizeof(cfg->name), "%s", name);
    cfg->temb_dim = 4 * cfg->channels;
    return PM_OK;
}

int unet_config_check(const struct unet_config *c, struct pm_error *err)
{
    if (c->in_channels < 1 || c->in_channels > 16 || c->channels < 1 || c->channels > 4096 ||
        c->num_levels < 1 || c->num_levels > UNET_MAX_LEVELS || c->num_res_blocks < 1 ||
        c->num_res_blocks > 8 || c->groups < 1 || c->temb_dim < 1 || c->temb_dim > 65536 ||
        c->cap_buckets < 1 || c->cap_dim < 1 || c->cap_dim > 65536 || c->image_size < 1 ||
        c->image_size > 4096 || c->channels % 2 != 0)
        return pm_error_set(err, PM_ERR_USAGE, "model config '%s': value out of range", c->name);
    if (c->image_size % (1 << (c->num_levels - 1)) != 0)
        return pm_error_set(err, PM_ERR_USAGE,
                            "model config '%s': image size %d not divisible by 2^%d", c->name,
                            c->image_size, c->num_levels - 1);
    for (int i = 0; i < c->num_levels; i++) {
        if (c->mult[i] < 1 || c->mult[i] > 64 || (c->channels * c->mult[i]) % c->groups != 0)
            return pm_error_set(err, PM_ERR_USAGE,
                                "model config '%s': level %d channels not divisible by %d "
                                "groups",
                                c->name, i, c->groups);
    }
    if (c->channels % c->groups != 0)
        return pm_error_set(err, PM_ERR_USAGE, "model config '%s': channels %% groups != 0",
                            c->name);
    return PM_OK;
}

// ---------------------------------------------------------------------------------------
// model structure

enum block_kind { BK_CONV, BK_UP, BK_RES, BK_ATTN, BK_OUT };

// Parameter slots per block kind (offsets into the parameter array).
enum { RP_N1W, RP_N1B, RP_C1W, RP_C1B, RP_EW, RP_EB, RP_N2W, RP_N2B, RP_C2W, RP_C2B, RP_SW, RP_SB };
enum { AP_NW, AP_NB, AP_QW, AP_QB, AP_PW, AP_PB };
enum { CP_W, CP_B };                 // BK_CONV and BK_UP
enum { OP_NW, OP_NB, OP_CW, OP_CB }; // BK_OUT

struct block {
    int kind;
    int cin, cout; // for BK_RES with a skip, cin = channels of input + skip
    int H, W;      // input resolution
    int Ho, Wo;    // output resolution
    int stride;    // BK_CONV
    int input;     // block index of the input, -1 = the image
    int skip;      // BK_RES on the up path: block index concatenated, else -1
    bool has_skip_conv;
    size_t p[12];
    // activations (forward) and their gradients
    float *out, *dout;
    float *cat;          // BK_RES with skip: [B, cin, H, W]
    float *y1, *m1, *r1; // first norm (BK_RES, BK_ATTN, BK_OUT); SiLU outputs are recomputed
    float *h1, *y2, *m2, *r2;
    float *eproj;       // [B, cout]
    float *qkv, *P, *o; // attention
    float *ups;         // upsampled input
};

// Global tensors other than blocks; their offsets are found by name at run time.
struct global_params {
    size_t l1w, l1b, l2w, l2b, table, null, cpw, cpb;
};

struct unet {
    struct global_params gp;
    struct unet_config cfg;
    int max_batch;
    struct unet_tensor *tensors;
    size_t ntensors, cap_tensors;
    size_t nparams;
    struct block *blocks;
    int nblocks, cap_blocks;
    // arena bookkeeping: pass 0 counts, pass 1 carves
    float *act, *dact;
    size_t act_n, dact_n, act_cur, dact_cur;
    bool carving;
    bool build_failed;
    // global activations
    float *x_in, *temb_in, *t1, *t1a, *t2, *capvec, *cproj, *emb, *emb_act;
    float *demb_act, *demb, *dt1a, *dt1, *dcapvec, *deproj;
    float *s1, *s2, *s3, *s4; // scratch of max_act floats (s4: recomputed SiLU outputs)
    size_t max_act;
    uint32_t *tok; // [max_batch * UNET_CAPTION_MAX_TOKENS]
    int *ntok;     // [max_batch], 0 = null embedding
    int B;         // batch of the last forward
    struct layer_scratch sc;
    float *scratch_mem;
};

static float *act_take(struct unet *m, size_t n)
{
    if (!m->carving) {
        m->act_n += n;
        return NULL;
    }
    float *p = m->act + m->act_cur;
    m->act_cur += n;
    return p;
}

static float *dact_take(struct unet *m, size_t n)
{
    if (!m->carving) {
        m->dact_n += n;
        return NULL;
    }
    float *p = m->dact + m->dact_cur;
    m->dact_cur += n;
    return p;
}

static size_t add_param(struct unet *m, int ndim, const int *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static size_t add_param(struct unet *m, int ndim, const int *shape, const char *fmt, ...)
{
    if (m->carving) {
        // second pass: offsets were recorded in pass 0; recompute identically
        size_t n = 1;
        for (int i = 0; i < ndim; i++)
            n *= (size_t)shape[i];
        size_t off = m->nparams;
        m->nparams += n;
        return off;
    }
    if (m->ntensors == m->cap_tensors) {
        size_t cap = m->cap_tensors ? 2 * m->cap_tensors : 64;
        struct unet_tensor *t = realloc(m->tensors, cap * sizeof(*t));
        if (!t) {
            m->build_failed = true;
            return 0;
        }
        m->tensors = t;
        m->cap_tensors = cap;
    }
    struct unet_tensor *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof(*t));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof(t->name), fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->decay = ndim >= 2;
    t->offset = m->nparams;
    m->nparams += t->numel;
    return t->offset;
}

#define SHAPE(...) ((const int[]){__VA_ARGS__})

static struct block *new_block(struct unet *m)
{
    if (m->nblocks == m->cap_blocks) {
        if (m->carving) { // pass 1 rebuilds into the same array
            m->build_failed = true;
            return NULL;
        }
        int cap = m->cap_blocks ? 2 * m->cap_blocks : 32;
        struct block *b = realloc(m->blocks, (size_t)cap * sizeof(*b));
        if (!b) {
            m->build_failed = true;
            return NULL;
        }
        m->blocks = b;
        m->cap_blocks = cap;
    }
    struct block *b = &m->blocks[m->nblocks++];
    memset(b, 0, sizeof(*b));
    b->skip = -1;
    return b;
}

static void note_act(struct unet *m, size_t n)
{
    if (n > m->max_act)
        m->max_act = n;
}

static void add_out(struct unet *m, struct block *b)
{
    size_t n = (size_t)m->max_batch * b->cout * b->Ho * b->Wo;
    b->out = act_take(m, n);
    b->dout = dact_take(m, n);
    note_act(m, n);
}

static int add_conv(struct unet *m, int input, int cin, int cout, int H, int stride,
                    const char *name)
{
    struct block *b = new_block(m);
    if (!b)
        return -1;
    b->kind = BK_CONV;
    b->input = input;
    b->cin = cin, b->cout = cout, b->H = b->W = H, b->stride = stride;
    b->Ho = b->Wo = (H + 2 - 3) / stride + 1;
    b->p[CP_W] = add_param(m, 4, SHAPE(cout, cin, 3, 3), "%s.weight", name);
    b->p[CP_B] = add_param(m, 1, SHAPE(cout), "%s.bias", name);
    add_out(m, b);
    return m->nblocks - 1;
}

static int add_up(struct unet *m, int input, int c, int H, const char *name)
{
    struct block *b = new_block(m);
    if (!b)
        return -1;
    b->kind = BK_UP;
    b->input = input;
    b->cin = b->cout = c, b->H = b->W = H, b->Ho = b->Wo = 2 * H;
    b->p[CP_W] = add_param(m, 4, SHAPE(c, c, 3, 3), "%s.weight", name);
    b->p[CP_B] = add_param(m, 1, SHAPE(c), "%s.bias", name);
    size_t n = (size_t)m->max_batch * c * 4 * H * H;
    b->ups = act_take(m, n);
    add_out(m, b);
    return m->nblocks - 1;
}

static int add_res(struct unet *m, int input, int skip, int cin, int cout, int H, const char *name)
{
    const struct unet_config *c = &m->cfg;
    struct block *b = new_block(m);
    if (!b)
        return -1;
    b->kind = BK_RES;
    b->input = input, b->skip = skip;
    b->cin = cin, b->cout = cout, b->H = b->W = b->Ho = b->Wo = H;
    b->has_skip_conv = cin != cout;
    b->p[RP_N1W] = add_param(m, 1, SHAPE(cin), "%s.norm1.weight", name);
    b->p[RP_N1B] = add_param(m, 1, SHAPE(cin), "%s.norm1.bias", name);
    b->p[RP_C1W] = add_param(m, 4, SHAPE(cout, cin, 3, 3), "%s.conv1.weight", name);
    b->p[RP_C1B] = add_param(m, 1, SHAPE(cout), "%s.conv1.bias", name);
    b->p[RP_EW] = add_param(m, 2, SHAPE(cout, c->temb_dim), "%s.emb.weight", name);
    b->p[RP_EB] = add_param(m, 1, SHAPE(cout), "%s.emb.bias", name);
    b->p[RP_N2W] = add_param(m, 1, SHAPE(cout), "%s.norm2.weight", name);
    b->p[RP_N2B] = add_param(m, 1, SHAPE(cout), "%s.norm2.bias", name);
    b->p[RP_C2W] = add_param(m, 4, SHAPE(cout, cout, 3, 3), "%s.conv2.weight", name);
    b->p[RP_C2B] = add_param(m, 1, SHAPE(cout), "%s.conv2.bias", name);
    if (b->has_skip_conv) {
        b->p[RP_SW] = add_param(m, 4, SHAPE(cout, cin, 1, 1), "%s.skip.weight", name);
        b->p[RP_SB] = add_param(m, 1, SHAPE(cout), "%s.skip.bias", name);
    }
    size_t B = (size_t)m->max_batch, HW = (size_t)H * H;
    if (skip >= 0)
        b->cat = act_take(m, B * cin * HW);
    b->y1 = act_take(m, B * cin * HW);
    b->m1 = act_take(m, B * c->groups);
    b->r1 = act_take(m, B * c->groups);
    b->h1 = act_take(m, B * cout * HW);
    b->y2 = act_take(m, B * cout * HW);
    b->m2 = act_take(m, B * c->groups);
    b->r2 = act_take(m, B * c->groups);
    b->eproj = act_take(m, B * cout);
    note_act(m, B * cin * HW);
    add_out(m, b);
    return m->nblocks - 1;
}

static int add_attn(struct unet *m, int input, int C, int H, const char *name)
{
    struct block *b = new_block(m);
    if (!b)
        return -1;
    b->kind = BK_ATTN;
    b->input = input;
    b->cin = b->cout = C, b->H = b->W = b->Ho = b->Wo = H;
    b->p[AP_NW] = add_param(m, 1, SHAPE(C), "%s.norm.weight", name);
    b->p[AP_NB] = add_param(m, 1, SHAPE(C), "%s.norm.bias", name);
    b->p[AP_QW] = add_param(m, 4, SHAPE(3 * C, C, 1, 1), "%s.qkv.weight", name);
    b->p[AP_QB] = add_param(m, 1, SHAPE(3 * C), "%s.qkv.bias", name);
    b->p[AP_PW] = add_param(m, 4, SHAPE(C, C, 1, 1), "%s.proj.weight", name);
    b->p[AP_PB] = add_param(m, 1, SHAPE(C), "%s.proj.bias", name);
    size_t B = (size_t)m->max_batch, N = (size_t)H * H;
    b->y1 = act_take(m, B * C * N);
    b->m1 = act_take(m, B * m->cfg.groups);
    b->r1 = act_take(m, B * m->cfg.groups);
    b->qkv = act_take(m, B * 3 * C * N);
    b->P = act_take(m, B * N * N);
    b->o = act_take(m, B * C * N);
    add_out(m, b);
    return m->nblocks - 1;
}

static int add_out_block(struct unet *m, int input, int cin, int H)
{
    struct block *b = new_block(m);
    if (!b)
        return -1;
    b->kind = BK_OUT;
    b->input = input;
    b->cin = cin, b->cout = m->cfg.in_channels, b->H = b->W = b->Ho = b->Wo = H;
    b->p[OP_NW] = add_param(m, 1, SHAPE(cin), "norm_out.weight");
    b->p[OP_NB] = add_param(m, 1, SHAPE(cin), "norm_out.bias");
    b->p[OP_CW] = add_param(m, 4, SHAPE(b->cout, cin, 3, 3), "conv_out.weight");
    b->p[OP_CB] = add_param(m, 1, SHAPE(b->cout), "conv_out.bias");
    size_t B = (size_t)m->max_batch, HW = (size_t)H * H;
    b->y1 = act_take(m, B * cin * HW);
    b->m1 = act_take(m, B * m->cfg.groups);
    b->r1 = act_take(m, B * m->cfg.groups);
    add_out(m, b);
    return m->nblocks - 1;
}

static void build(struct unet *m, struct global_params *gp)
{
    const struct unet_config *c = &m->cfg;
    int ch = c->channels, td = c->temb_dim;
    size_t B = (size_t)m->max_batch;
    m->nparams = 0;
    m->nblocks = 0;
    char name[UNET_NAME_MAX];

    gp->l1w = add_param(m, 2, SHAPE(td, ch), "temb.lin1.weight");
    gp->l1b = add_param(m, 1, SHAPE(td), "temb.lin1.bias");
    gp->l2w = add_param(m, 2, SHAPE(td, td), "temb.lin2.weight");
    gp->l2b = add_param(m, 1, SHAPE(td), "temb.lin2.bias");
    gp->table = add_param(m, 2, SHAPE(c->cap_buckets, c->cap_dim), "cap.table");
    gp->null = add_param(m, 1, SHAPE(c->cap_dim), "cap.null");
    gp->cpw = add_param(m, 2, SHAPE(td, c->cap_dim), "cap.proj.weight");
    gp->cpb = add_param(m, 1, SHAPE(td), "cap.proj.bias");

    m->x_in = act_take(m, B * c->in_channels * c->image_size * c->image_size);
    m->temb_in = act_take(m, B * ch);
    m->t1 = act_take(m, B * td);
    m->t1a = act_take(m, B * td);
    m->t2 = act_take(m, B * td);
    m->capvec = act_take(m, B * c->cap_dim);
    m->cproj = act_take(m, B * td);
    m->emb = act_take(m, B * td);
    m->emb_act = act_take(m, B * td);
    m->demb_act = act_take(m, B * td);
    m->demb = act_take(m, B * td);
    m->dt1a = act_take(m, B * td);
    m->dt1 = act_take(m, B * td);
    m->dcapvec = act_take(m, B * c->cap_dim);

    int H = c->image_size;
    int stack[64], nstack = 0;
    int last = add_conv(m, -1, c->in_channels, ch, H, 1, "conv_in");
    stack[nstack++] = last;
    int cur = ch;
    int max_c = ch;
    for (int i = 0; i < c->num_levels; i++) {
        int co = ch * c->mult[i];
        max_c = co > max_c ? co : max_c;
        for (int j = 0; j < c->num_res_blocks; j++) {
            snprintf(name, sizeof(name), "down.%d.res.%d", i, j);
            last = add_res(m, last, -1, cur, co, H, name);
            cur = co;
            if (H == c->attn_resolution) {
                snprintf(name, sizeof(name), "down.%d.attn.%d", i, j);
                last = add_attn(m, last, cur, H, name);
            }
            stack[nstack++] = last;
        }
        if (i != c->num_levels - 1) {
            snprintf(name, sizeof(name), "down.%d.down", i);
            last = add_conv(m, last, cur, cur, H, 2, name);
            H /= 2;
            stack[nstack++] = last;
        }
    }
    last = add_res(m, last, -1, cur, cur, H, "mid.res.0");
    last = add_attn(m, last, cur, H, "mid.attn.0");
    last = add_res(m, last, -1, cur, cur, H, "mid.res.1");
    for (int i = c->num_levels - 1; i >= 0; i--) {
        int co = ch * c->mult[i];
        for (int j = 0; j < c->num_res_blocks + 1; j++) {
            int skip = stack[--nstack];
            int cs = m->blocks[skip].cout;
            snprintf(name, sizeof(name), "up.%d.res.%d", i, j);
            last = add_res(m, last, skip, cur + cs, co, H, name);
            cur = co;
            if (H == c->attn_resolution) {
                snprintf(name, sizeof(name), "up.%d.attn.%d", i, j);
                last = add_attn(m, last, cur, H, name);
            }
        }
        if (i != 0) {
            snprintf(name, sizeof(name), "up.%d.up", i);
            last = add_up(m, last, cur, H, name);
            H *= 2;
        }
    }
    add_out_block(m, last, cur, H);
    m->deproj = act_take(m, B * max_c * 2);
    (void)max_c;
}

// Scratch sizes: per-thread convolution and attention buffers, per-image partials.
static void scratch_sizes(const struct unet *m, size_t *col, size_t *part)
{
    *col = 0, *part = 0;
    for (int i = 0; i < m->nblocks; i++) {
        const struct block *b = &m->blocks[i];
        size_t c = 0, p = 0;
        switch (b->kind) {
        case BK_CONV:
        case BK_UP: {
            int H = b->kind == BK_UP ? b->Ho : b->H, s = b->kind == BK_UP ? 1 : b->stride;
            c = layer_conv2d_backward_scratch_size(b->cin, H, H, b->cout, 3, s);
            p = (size_t)b->cout * b->cin * 9 + b->cout;
            break;
        }
        case BK_RES:
            c = layer_conv2d_backward_scratch_size(b->cin, b->H, b->W, b->cout, 3, 1);
            if (c < layer_conv2d_backward_scratch_size(b->cout, b->H, b->W, b->cout, 3, 1))
                c = layer_conv2d_backward_scratch_size(b->cout, b->H, b->W, b->cout, 3, 1);
            p = (size_t)b->cout * (b->cin > b->cout ? b->cin : b->cout) * 9 + b->cout;
            if (p < 2 * (size_t)b->cin)
                p = 2 * (size_t)b->cin;
            break;
        case BK_ATTN:
            c = layer_attention_scratch_size(b->cin, b->H * b->W);
            p = 4 * (size_t)b->cin * b->cin + 4 * (size_t)b->cin;
            break;
        case BK_OUT:
            c = layer_conv2d_backward_scratch_size(b->cin, b->H, b->W, b->cout, 3, 1);
            p = (size_t)b->cout * b->cin * 9 + b->cout;
            if (p < 2 * (size_t)b->cin)
                p = 2 * (size_t)b->cin;
            break;
        }
        *col = c > *col ? c : *col;
        *part = p > *part ? p : *part;
    }
}

static const struct global_params *gparams(const struct unet *m)
{
    return &m->gp;
}

int unet_create(const struct unet_config *cfg, int max_batch, struct unet **out,
                struct pm_error *err)
{
    *out = NULL;
    int rc = unet_config_check(cfg, err);
    if (rc)
        return rc;
    if (max_batch < 1 || max_batch > 65536)
        return pm_error_set(err, PM_ERR_USAGE, "max batch %d out of range", max_batch);
    struct unet *m = calloc(1, sizeof(*m));
    if (!m)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory creating model");
    m->cfg = *cfg;
    m->max_batch = max_batch;
    build(m, &m->gp); // pass 0: tensor table and sizes
    if (m->build_failed)
        goto nomem;
    m->act = malloc(m->act_n * sizeof(float));
    m->dact = malloc(m->dact_n * sizeof(float));
    size_t s = m->max_act;
    m->s1 = malloc(s * sizeof(float));
    m->s2 = malloc(s * sizeof(float));
    m->s3 = malloc(s * sizeof(float));
    m->s4 = malloc(s * sizeof(float));
    m->tok = malloc((size_t)max_batch * UNET_CAPTION_MAX_TOKENS * sizeof(uint32_t));
    m->ntok = calloc((size_t)max_batch, sizeof(int));
    if (!m->act || !m->dact || !m->s1 || !m->s2 || !m->s3 || !m->s4 || !m->tok || !m->ntok)
        goto nomem;
    m->carving = true;
    size_t np = m->nparams;
    build(m, &m->gp); // pass 1: pointers
    if (m->build_failed || m->nparams != np || m->act_cur != m->act_n || m->dact_cur != m->dact_n) {
        unet_free(m);
        return pm_error_set(err, PM_ERR_INTERNAL, "model layout mismatch between passes");
    }
    size_t col, part;
    scratch_sizes(m, &col, &part);
#ifdef _OPENMP
    m->sc.nthreads = omp_get_max_threads();
#else
    m->sc.nthreads = 1;
#endif
    m->sc.col_per_thread = col;
    m->sc.partial_per_image = part;
    m->sc.col = malloc((col * m->sc.nthreads + 1) * sizeof(float));
    m->sc.partial = malloc((part * (size_t)max_batch + 1) * sizeof(float));
    if (!m->sc.col || !m->sc.partial)
        goto nomem;
    *out = m;
    return PM_OK;
nomem:
    unet_free(m);
    return pm_error_set(err, PM_ERR_NOMEM, "out of memory creating model '%s' (batch %d)",
                        cfg->name, max_batch);
}

void unet_free(struct unet *m)
{
    if (!m)
        return;
    free(m->tensors);
    free(m->blocks);
    free(m->act);
    free(m->dact);
    free(m->s1);
    free(m->s2);
    free(m->s3);
    free(m->s4);
    free(m->tok);
    free(m->ntok);
    free(m->sc.col);
    free(m->sc.partial);
    free(m);
}

const struct unet_config *unet_get_config(const struct unet *m)
{
    return &m->cfg;
}

int unet_max_batch(const struct unet *m)
{
    return m->max_batch;
}

size_t unet_num_params(const struct unet *m)
{
    return m->nparams;
}

const struct unet_tensor *unet_tensors(const struct unet *m, size_t *count)
{
    *count = m->ntensors;
    return m->tensors;
}

const struct unet_tensor *unet_find_tensor(const struct unet *m, const char *name)
{
    for (size_t i = 0; i < m->ntensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

size_t unet_activation_bytes(const struct unet *m)
{
    return (m->act_n + m->dact_n + 4 * m->max_act) * sizeof(float) +
           (m->sc.col_per_thread * m->sc.nthreads + m->sc.partial_per_image * m->max_batch) *
               sizeof(float);
}

static bool name_ends(const char *name, const char *suffix)
{
    size_t n = strlen(name), s = strlen(suffix);
    return n >= s && strcmp(name + n - s, suffix) == 0;
}

void unet_init_params(const struct unet *m, float *params, uint64_t seed)
{
    struct train_rng rng;
    train_rng_seed(&rng, seed);
    for (size_t i = 0; i < m->ntensors; i++) {
        const struct unet_tensor *t = &m->tensors[i];
        float *p = params + t->offset;
        if (strcmp(t->name, "cap.table") == 0 || strcmp(t->name, "cap.null") == 0) {
            train_rng_normal_fill(&rng, p, t->numel);
            for (size_t k = 0; k < t->numel; k++)
                p[k] *= 0.02f;
        } else if (t->ndim == 1) {
            float v = (name_ends(t->name, "norm1.weight") || name_ends(t->name, "norm2.weight") ||
                       name_ends(t->name, "norm.weight") || strcmp(t->name, "norm_out.weight") == 0)
                          ? 1.0f
                          : 0.0f;
            for (size_t k = 0; k < t->numel; k++)
                p[k] = v;
        } else if ((name_ends(t->name, "conv2.weight") || name_ends(t->name, ".proj.weight") ||
                    strcmp(t->name, "conv_out.weight") == 0) &&
                   strcmp(t->name, "cap.proj.weight") != 0) {
            memset(p, 0, t->numel * sizeof(float));
        } else {
            size_t fan_in = t->numel / (size_t)t->shape[0];
            double bound = 1.0 / sqrt((double)fan_in);
            for (size_t k = 0; k < t->numel; k++)
                p[k] = (float)((2.0 * train_rng_uniform(&rng) - 1.0) * bound);
        }
    }
}

// ---------------------------------------------------------------------------------------
// captions

static uint64_t fnv1a_update(uint64_t h, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#define FNV_OFFSET 0xcbf29ce484222325ULL

static bool is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

static unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static uint64_t hash_word(const unsigned char *s, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = lower(s[i]);
        h = fnv1a_update(h, &c, 1);
    }
    return h;
}

int unet_caption_tokens(const char *caption, int buckets, uint32_t *ids)
{
    if (!caption || buckets < 1)
        return 0;
    const unsigned char *s = (const unsigned char *)caption;
    size_t start[UNET_CAPTION_MAX_WORDS], len[UNET_CAPTION_MAX_WORDS];
    int nw = 0;
    size_t i = 0;
    while (s[i] && nw < UNET_CAPTION_MAX_WORDS) {
        while (s[i] && !is_word_byte(s[i]))
            i++;
        if (!s[i])
            break;
        size_t b = i;
        while (s[i] && is_word_byte(s[i]))
            i++;
        start[nw] = b;
        len[nw] = i - b;
        nw++;
    }
    int n = 0;
    for (int w = 0; w < nw; w++)
        ids[n++] = (uint32_t)(hash_word(s + start[w], len[w], FNV_OFFSET) % (uint64_t)buckets);
    for (int w = 0; w + 1 < nw; w++) {
        uint64_t h = hash_word(s + start[w], len[w], FNV_OFFSET);
        unsigned char sp = ' ';
        h = fnv1a_update(h, &sp, 1);
        h = hash_word(s + start[w + 1], len[w + 1], h);
        ids[n++] = (uint32_t)(h % (uint64_t)buckets);
    }
    return n;
}

// ---------------------------------------------------------------------------------------
// forward

static void timestep_embedding(float *out, const int *t, int B, int dim)
{
    int half = dim / 2;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < half; i++) {
            float freq = (float)exp(-log(10000.0) * (double)i / (double)half);
            float arg = (float)t[b] * freq;
            out[(size_t)b * dim + i] = sinf(arg);
            out[(size_t)b * dim + half + i] = cosf(arg);
        }
}

static const float *block_input(const struct unet *m, const struct block *b)
{
    return b->input < 0 ? m->x_in : m->blocks[b->input].out;
}

static float *block_dinput(const struct unet *m, const struct block *b)
{
    return b->input < 0 ? NULL : m->blocks[b->input].dout;
}

static void res_forward(struct unet *m, const float *P, struct block *b, int B)
{
    const struct unet_config *c = &m->cfg;
    int HW = b->H * b->W, G = c->groups;
    const float *x = block_input(m, b);
    if (b->skip >= 0) {
        const struct block *in = &m->blocks[b->input], *sk = &m->blocks[b->skip];
        size_t nh = (size_t)in->cout * HW, ns = (size_t)sk->cout * HW;
        for (int i = 0; i < B; i++) {
            memcpy(b->cat + i * (nh + ns), in->out + i * nh, nh * sizeof(float));
            memcpy(b->cat + i * (nh + ns) + nh, sk->out + i * ns, ns * sizeof(float));
        }
        x = b->cat;
    }
    size_t nin = (size_t)B * b->cin * HW, nout = (size_t)B * b->cout * HW;
    layer_groupnorm_forward(b->y1, b->m1, b->r1, x, P + b->p[RP_N1W], P + b->p[RP_N1B], B, b->cin,
                            HW, G);
    layer_silu_forward(m->s4, b->y1, nin);
    layer_conv2d_forward(b->h1, m->s4, P + b->p[RP_C1W], P + b->p[RP_C1B], B, b->cin, b->H, b->W,
                         b->cout, 3, 1, &m->sc);
    layer_linear_forward(b->eproj, m->emb_act, P + b->p[RP_EW], P + b->p[RP_EB], B, c->temb_dim,
                         b->cout);
    for (int i = 0; i < B; i++)
        for (int o = 0; o < b->cout; o++) {
            float e = b->eproj[(size_t)i * b->cout + o];
            float *h = b->h1 + ((size_t)i * b->cout + o) * HW;
            for (int k = 0; k < HW; k++)
                h[k] += e;
        }
    layer_groupnorm_forward(b->y2, b->m2, b->r2, b->h1, P + b->p[RP_N2W], P + b->p[RP_N2B], B,
                            b->cout, HW, G);
    layer_silu_forward(m->s4, b->y2, nout);
    layer_conv2d_forward(b->out, m->s4, P + b->p[RP_C2W], P + b->p[RP_C2B], B, b->cout, b->H, b->W,
                         b->cout, 3, 1, &m->sc);
    if (b->has_skip_conv) {
        layer_conv2d_forward(m->s1, x, P + b->p[RP_SW], P + b->p[RP_SB], B, b->cin, b->H, b->W,
                             b->cout, 1, 1, &m->sc);
        for (size_t i = 0; i < nout; i++)
            b->out[i] += m->s1[i];
    } else {
        for (size_t i = 0; i < nout; i++)
            b->out[i] += x[i];
    }
}

static void attn_forward(struct unet *m, const float *P, struct block *b, int B)
{
    int N = b->H * b->W;
    const float *x = block_input(m, b);
    layer_groupnorm_forward(b->y1, b->m1, b->r1, x, P + b->p[AP_NW], P + b->p[AP_NB], B, b->cin, N,
                            m->cfg.groups);
    layer_attention_forward(b->out, b->qkv, b->P, b->o, x, b->y1, P + b->p[AP_QW], P + b->p[AP_QB],
                            P + b->p[AP_PW], P + b->p[AP_PB], B, b->cin, N, &m->sc);
}

int unet_forward(struct unet *m, const float *params, const float *x, const int *t,
                 const char *const *captions, const unsigned char *drop, int B,
                 struct pm_error *err)
{
    const struct unet_config *c = &m->cfg;
    if (B < 1 || B > m->max_batch)
        return pm_error_set(err, PM_ERR_USAGE, "batch %d outside 1..%d", B, m->max_batch);
    const struct global_params *gp = gparams(m);
    const float *P = params;
    int td = c->temb_dim;
    m->B = B;
    memcpy(m->x_in, x, (size_t)B * c->in_channels * c->image_size * c->image_size * sizeof(float));

    // embeddings
    timestep_embedding(m->temb_in, t, B, c->channels);
    layer_linear_forward(m->t1, m->temb_in, P + gp->l1w, P + gp->l1b, B, c->channels, td);
    layer_silu_forward(m->t1a, m->t1, (size_t)B * td);
    layer_linear_forward(m->t2, m->t1a, P + gp->l2w, P + gp->l2b, B, td, td);
    for (int i = 0; i < B; i++) {
        uint32_t *ids = m->tok + (size_t)i * UNET_CAPTION_MAX_TOKENS;
        bool dropped = drop && drop[i];
        m->ntok[i] =
            dropped ? 0 : unet_caption_tokens(captions ? captions[i] : NULL, c->cap_buckets, ids);
        float *v = m->capvec + (size_t)i * c->cap_dim;
        if (m->ntok[i] == 0) {
            memcpy(v, P + gp->null, (size_t)c->cap_dim * sizeof(float));
            continue;
        }
        memset(v, 0, (size_t)c->cap_dim * sizeof(float));
        for (int k = 0; k < m->ntok[i]; k++) {
            const float *row = P + gp->table + (size_t)ids[k] * c->cap_dim;
            for (int d = 0; d < c->cap_dim; d++)
                v[d] += row[d];
        }
        float inv = 1.0f / (float)m->ntok[i];
        for (int d = 0; d < c->cap_dim; d++)
            v[d] *= inv;
    }
    layer_linear_forward(m->cproj, m->capvec, P + gp->cpw, P + gp->cpb, B, c->cap_dim, td);
    for (size_t i = 0; i < (size_t)B * td; i++)
        m->emb[i] = m->t2[i] + m->cproj[i];
    layer_silu_forward(m->emb_act, m->emb, (size_t)B * td);

    for (int i = 0; i < m->nblocks; i++) {
        struct block *b = &m->blocks[i];
        switch (b->kind) {
        case BK_CONV:
            layer_conv2d_forward(b->out, block_input(m, b), P + b->p[CP_W], P + b->p[CP_B], B,
                                 b->cin, b->H, b->W, b->cout, 3, b->stride, &m->sc);
            break;
        case BK_UP:
            layer_upsample_forward(b->ups, block_input(m, b), B, b->cin, b->H, b->W);
            layer_conv2d_forward(b->out, b->ups, P + b->p[CP_W], P + b->p[CP_B], B, b->cin, b->Ho,
                                 b->Wo, b->cout, 3, 1, &m->sc);
            break;
        case BK_RES:
            res_forward(m, P, b, B);
            break;
        case BK_ATTN:
            attn_forward(m, P, b, B);
            break;
        case BK_OUT: {
            int HW = b->H * b->W;
            layer_groupnorm_forward(b->y1, b->m1, b->r1, block_input(m, b), P + b->p[OP_NW],
                                    P + b->p[OP_NB], B, b->cin, HW, c->groups);
            layer_silu_forward(m->s4, b->y1, (size_t)B * b->cin * HW);
            layer_conv2d_forward(b->out, m->s4, P + b->p[OP_CW], P + b->p[OP_CB], B, b->cin, b->H,
                                 b->W, b->cout, 3, 1, &m->sc);
            break;
        }
        }
    }
    return PM_OK;
}

const float *unet_output(const struct unet *m)
{
    return m->blocks[m->nblocks - 1].out;
}

// ---------------------------------------------------------------------------------------
// backward

static void zero(float *p, size_t n)
{
    memset(p, 0, n * sizeof(float));
}

static void res_backward(struct unet *m, const float *P, float *G, struct block *b, int B)
{
    const struct unet_config *c = &m->cfg;
    int HW = b->H * b->W, NG = c->groups;
    size_t nin = (size_t)B * b->cin * HW, nout = (size_t)B * b->cout * HW;
    const float *x = b->skip >= 0 ? b->cat : block_input(m, b);
    float *dx = b->skip >= 0 ? m->s3 : block_dinput(m, b);
    if (b->skip >= 0)
        zero(dx, nin);
    const float *dout = b->dout;
    if (b->has_skip_conv) {
        layer_conv2d_backward(dx, G + b->p[RP_SW], G + b->p[RP_SB], dout, x, P + b->p[RP_SW], B,
                              b->cin, b->H, b->W, b->cout, 1, 1, &m->sc);
    } else {
        for (size_t i = 0; i < nout; i++)
            dx[i] += dout[i];
    }
    zero(m->s1, nout);
    layer_silu_forward(m->s4, b->y2, nout); // conv2's input, recomputed
    layer_conv2d_backward(m->s1, G + b->p[RP_C2W], G + b->p[RP_C2B], dout, m->s4, P + b->p[RP_C2W],
                          B, b->cout, b->H, b->W, b->cout, 3, 1, &m->sc);
    zero(m->s2, nout);
    layer_silu_backward(m->s2, m->s1, b->y2, nout);
    zero(m->s1, nout);
    layer_groupnorm_backward(m->s1, G + b->p[RP_N2W], G + b->p[RP_N2B], m->s2, b->h1, b->m2, b->r2,
                             P + b->p[RP_N2W], B, b->cout, HW, NG, &m->sc);
    // d(eproj)[b, o] = sum over pixels of dh1
    for (int i = 0; i < B; i++)
        for (int o = 0; o < b->cout; o++) {
            const float *d = m->s1 + ((size_t)i * b->cout + o) * HW;
            float s = 0.0f;
            for (int k = 0; k < HW; k++)
                s += d[k];
            m->deproj[(size_t)i * b->cout + o] = s;
        }
    layer_linear_backward(m->demb_act, G + b->p[RP_EW], G + b->p[RP_EB], m->deproj, m->emb_act,
                          P + b->p[RP_EW], B, c->temb_dim, b->cout);
    zero(m->s2, nin);
    layer_silu_forward(m->s4, b->y1, nin); // conv1's input, recomputed
    layer_conv2d_backward(m->s2, G + b->p[RP_C1W], G + b->p[RP_C1B], m->s1, m->s4, P + b->p[RP_C1W],
                          B, b->cin, b->H, b->W, b->cout, 3, 1, &m->sc);
    zero(m->s1, nin);
    layer_silu_backward(m->s1, m->s2, b->y1, nin);
    layer_groupnorm_backward(dx, G + b->p[RP_N1W], G + b->p[RP_N1B], m->s1, x, b->m1, b->r1,
                             P + b->p[RP_N1W], B, b->cin, HW, NG, &m->sc);
    if (b->skip >= 0) {
        struct block *in = &m->blocks[b->input], *sk = &m->blocks[b->skip];
        size_t nh = (size_t)in->cout * HW, ns = (size_t)sk->cout * HW;
        for (int i = 0; i < B; i++) {
            const float *src = dx + i * (nh + ns);
            float *dh = in->dout + i * nh, *ds = sk->dout + i * ns;
            for (size_t k = 0; k < nh; k++)
                dh[k] += src[k];
            for (size_t k = 0; k < ns; k++)
                ds[k] += src[nh + k];
        }
    }
}

void unet_backward(struct unet *m, const float *params, float *grads, const float *dout)
{
    const struct unet_config *c = &m->cfg;
    const struct global_params *gp = gparams(m);
    const float *P = params;
    float *G = grads;
    int B = m->B, td = c->temb_dim;
    zero(m->dact, m->dact_n);
    zero(m->demb_act, (size_t)B * td);
    struct block *last = &m->blocks[m->nblocks - 1];
    memcpy(last->dout, dout, (size_t)B * last->cout * last->Ho * last->Wo * sizeof(float));

    for (int i = m->nblocks - 1; i >= 0; i--) {
        struct block *b = &m->blocks[i];
        int HW = b->H * b->W;
        switch (b->kind) {
        case BK_CONV:
            layer_conv2d_backward(block_dinput(m, b), G + b->p[CP_W], G + b->p[CP_B], b->dout,
                                  block_input(m, b), P + b->p[CP_W], B, b->cin, b->H, b->W, b->cout,
                                  3, b->stride, &m->sc);
            break;
        case BK_UP: {
            size_t n = (size_t)B * b->cin * b->Ho * b->Wo;
            zero(m->s1, n);
            layer_conv2d_backward(m->s1, G + b->p[CP_W], G + b->p[CP_B], b->dout, b->ups,
                                  P + b->p[CP_W], B, b->cin, b->Ho, b->Wo, b->cout, 3, 1, &m->sc);
            layer_upsample_backward(block_dinput(m, b), m->s1, B, b->cin, b->H, b->W);
            break;
        }
        case BK_RES:
            res_backward(m, P, G, b, B);
            break;
        case BK_ATTN: {
            size_t n = (size_t)B * b->cin * HW;
            zero(m->s1, n);
            layer_attention_backward(block_dinput(m, b), m->s1, G + b->p[AP_QW], G + b->p[AP_QB],
                                     G + b->p[AP_PW], G + b->p[AP_PB], b->dout, b->y1, b->qkv, b->P,
                                     b->o, P + b->p[AP_QW], P + b->p[AP_PW], B, b->cin, HW, &m->sc);
            layer_groupnorm_backward(block_dinput(m, b), G + b->p[AP_NW], G + b->p[AP_NB], m->s1,
                                     block_input(m, b), b->m1, b->r1, P + b->p[AP_NW], B, b->cin,
                                     HW, c->groups, &m->sc);
            break;
        }
        case BK_OUT: {
            size_t n = (size_t)B * b->cin * HW;
            zero(m->s1, n);
            layer_silu_forward(m->s4, b->y1, n);
            layer_conv2d_backward(m->s1, G + b->p[OP_CW], G + b->p[OP_CB], b->dout, m->s4,
                                  P + b->p[OP_CW], B, b->cin, b->H, b->W, b->cout, 3, 1, &m->sc);
            zero(m->s2, n);
            layer_silu_backward(m->s2, m->s1, b->y1, n);
            layer_groupnorm_backward(block_dinput(m, b), G + b->p[OP_NW], G + b->p[OP_NB], m->s2,
                                     block_input(m, b), b->m1, b->r1, P + b->p[OP_NW], B, b->cin,
                                     HW, c->groups, &m->sc);
            break;
        }
        }
    }

    // embeddings
    size_t ne = (size_t)B * td;
    zero(m->demb, ne);
    layer_silu_backward(m->demb, m->demb_act, m->emb, ne);
    zero(m->dt1a, ne);
    layer_linear_backward(m->dt1a, G + gp->l2w, G + gp->l2b, m->demb, m->t1a, P + gp->l2w, B, td,
                          td);
    zero(m->dt1, ne);
    layer_silu_backward(m->dt1, m->dt1a, m->t1, ne);
    layer_linear_backward(NULL, G + gp->l1w, G + gp->l1b, m->dt1, m->temb_in, P + gp->l1w, B,
                          c->channels, td);
    zero(m->dcapvec, (size_t)B * c->cap_dim);
    layer_linear_backward(m->dcapvec, G + gp->cpw, G + gp->cpb, m->demb, m->capvec, P + gp->cpw, B,
                          c->cap_dim, td);
    for (int i = 0; i < B; i++) {
        const float *dv = m->dcapvec + (size_t)i * c->cap_dim;
        if (m->ntok[i] == 0) {
            float *g = G + gp->null;
            for (int d = 0; d < c->cap_dim; d++)
                g[d] += dv[d];
            continue;
        }
        float inv = 1.0f / (float)m->ntok[i];
        const uint32_t *ids = m->tok + (size_t)i * UNET_CAPTION_MAX_TOKENS;
        for (int k = 0; k < m->ntok[i]; k++) {
            float *g = G + gp->table + (size_t)ids[k] * c->cap_dim;
            for (int d = 0; d < c->cap_dim; d++)
                g[d] += dv[d] * inv;
        }
    }
}
