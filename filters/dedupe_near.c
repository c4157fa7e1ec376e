#include "dedupe_near.h"

#include "pm_bigmem.h"
#include "pm_mpi.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

// A cluster label: the best record's key. Smaller is better: kp = ~priority (so the
// highest priority has the smallest kp), then the lowest id.
struct label {
    uint64_t kp;
    uint64_t id;
};

static int label_less(struct label a, struct label b)
{
    return a.kp != b.kp ? a.kp < b.kp : a.id < b.id;
}

// A distinct hash on its owner rank.
struct node {
    uint64_t phash;
    struct label best;
};

struct coll_entry {
    uint64_t phash;
    uint64_t pos; // arrival index of the record in this round
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static unsigned scale(uint64_t m, unsigned range)
{
    return (unsigned)(((unsigned __int128)m * range) >> 64);
}

// Owner rank and collapse round of a hash; two independent mixes.
static int node_owner(uint64_t h, int size)
{
    return (int)scale(mix64(h), (unsigned)size);
}

static unsigned node_round(uint64_t h, unsigned rounds)
{
    return scale(mix64(h ^ 0x5851f42d4c957f2dULL), rounds);
}

static uint64_t band_mix(uint64_t value, unsigned band)
{
    return mix64(value + 0x9e3779b97f4a7c15ULL * (band + 1));
}

static uint64_t field_of(uint64_t h, unsigned lo, uint64_t wmask)
{
    return (h >> lo) & wmask;
}

static uint64_t width_mask(unsigned w)
{
    return w >= 64 ? ~0ULL : (1ULL << w) - 1;
}

// Stable LSD radix sort of v by the w-bit field at bit lo, 8-bit digits; passes in
// which every value has the same digit are skipped. tmp holds n values.
static void sort_by_field(uint64_t *v, size_t n, unsigned lo, unsigned w, uint64_t *tmp)
{
    uint64_t wmask = width_mask(w);
    if (n < 32) {
        for (size_t i = 1; i < n; i++) {
            uint64_t x = v[i], kx = field_of(x, lo, wmask);
            size_t j = i;
            while (j > 0 && field_of(v[j - 1], lo, wmask) > kx) {
                v[j] = v[j - 1];
                j--;
            }
            v[j] = x;
        }
        return;
    }
    uint64_t *src = v, *dst = tmp;
    for (unsigned shift = 0; shift < w; shift += 8) {
        size_t count[256] = {0};
        for (size_t i = 0; i < n; i++)
            count[(field_of(src[i], lo, wmask) >> shift) & 0xFF]++;
        if (count[(field_of(src[0], lo, wmask) >> shift) & 0xFF] == n)
            continue;
        size_t sum = 0;
        for (unsigned d = 0; d < 256; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(field_of(src[i], lo, wmask) >> shift) & 0xFF]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != v)
        memcpy(v, src, n * sizeof *v);
}

// Collapse-phase sort of (phash, pos) by phash, 16-bit digits.
static void sort_entries(struct coll_entry *v, size_t n, struct coll_entry *tmp, size_t *count)
{
    struct coll_entry *src = v, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 16) {
        memset(count, 0, 65536 * sizeof *count);
        for (size_t i = 0; i < n; i++)
            count[(src[i].phash >> shift) & 0xFFFF]++;
        size_t sum = 0;
        for (size_t d = 0; d < 65536; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i].phash >> shift) & 0xFFFF]++] = src[i];
        struct coll_entry *t = src;
        src = dst;
        dst = t;
    }
    // four passes: the result is back in v
}

// One all-to-all exchange: counts per destination in scount (filled by the caller);
// route_plan() fills the displacements and the receive side.
struct route {
    int *scount, *sdisp, *rcount, *rdisp;
    size_t nsend, nrecv;
};

static int route_init(struct route *rt, int size)
{
    rt->scount = calloc((size_t)size, sizeof(int));
    rt->sdisp = calloc((size_t)size, sizeof(int));
    rt->rcount = calloc((size_t)size, sizeof(int));
    rt->rdisp = calloc((size_t)size, sizeof(int));
    rt->nsend = rt->nrecv = 0;
    return rt->scount && rt->sdisp && rt->rcount && rt->rdisp ? PM_OK : PM_ERR_NOMEM;
}

static void route_release(struct route *rt)
{
    free(rt->scount);
    free(rt->sdisp);
    free(rt->rcount);
    free(rt->rdisp);
}

static int route_plan(struct route *rt, int size, MPI_Comm comm)
{
    MPI_CHECK(MPI_Alltoall(rt->scount, 1, MPI_INT, rt->rcount, 1, MPI_INT, comm));
    size_t s = 0, r = 0;
    for (int i = 0; i < size; i++) {
        rt->sdisp[i] = (int)s;
        rt->rdisp[i] = (int)r;
        s += (size_t)rt->scount[i];
        r += (size_t)rt->rcount[i];
    }
    rt->nsend = s;
    rt->nrecv = r;
    return s > INT_MAX || r > INT_MAX ? PM_ERR_LIMIT : PM_OK;
}

// MPI_Alltoallv of records of `words` uint64 each.
static void route_exchange(const struct route *rt, const void *send, void *recv, int words,
                           int reverse, MPI_Comm comm)
{
    MPI_Datatype t;
    MPI_CHECK(MPI_Type_contiguous(words, MPI_UINT64_T, &t));
    MPI_CHECK(MPI_Type_commit(&t));
    if (!reverse)
        MPI_CHECK(
            MPI_Alltoallv(send, rt->scount, rt->sdisp, t, recv, rt->rcount, rt->rdisp, t, comm));
    else
        MPI_CHECK(
            MPI_Alltoallv(send, rt->rcount, rt->rdisp, t, recv, rt->scount, rt->sdisp, t, comm));
    MPI_CHECK(MPI_Type_free(&t));
}

// The large per-record arrays of the collapse, the bands and the answers: mapped on their
// own (common/pm_bigmem.h), so memory freed goes back at once and the peak RSS is the
// arrays alive at once, not what the heap kept from earlier phases. Freed with big_free.
static void *big(size_t n, size_t sz)
{
    return pm_big_alloc((n ? n : 1) * sz);
}

static void big_free(void *p)
{
    pm_big_free(p);
}

// ---- edges ------------------------------------------------------------------------

struct edges {
    uint64_t *ab; // pairs (a, b)
    size_t n, cap;
};

static int edges_push(struct edges *e, uint64_t a, uint64_t b)
{
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 1024;
        uint64_t *p = pm_big_realloc(e->ab, 2 * e->n * sizeof *p, 2 * cap * sizeof *p);
        if (!p)
            return PM_ERR_NOMEM;
        e->ab = p;
        e->cap = cap;
    }
    e->ab[2 * e->n] = a;
    e->ab[2 * e->n + 1] = b;
    e->n++;
    return PM_OK;
}

static uint32_t uf_find(uint32_t *parent, uint32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

// Union by smaller index, so the root of a set is its smallest member.
static int uf_union(uint32_t *parent, uint32_t a, uint32_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b)
        return 0;
    if (a < b)
        parent[b] = a;
    else
        parent[a] = b;
    return 1;
}

static size_t find_u64(const uint64_t *v, size_t n, uint64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

// The edge holder's view: distinct endpoints (sorted) and each one's local root index.
struct forest {
    uint64_t *vert;
    uint32_t *root;
    size_t n;
};

// Replace e by a star forest with the same connected components; fill f.
static int forest_build(struct edges *e, struct forest *f)
{
    big_free(f->vert);
    big_free(f->root);
    f->vert = NULL;
    f->root = NULL;
    f->n = 0;
    size_t m = 2 * e->n;
    uint64_t *v = big(m, sizeof *v), *tmp = big(m, sizeof *tmp);
    if (!v || !tmp) {
        big_free(v);
        big_free(tmp);
        return PM_ERR_NOMEM;
    }
    memcpy(v, e->ab, m * sizeof *v);
    sort_by_field(v, m, 0, 64, tmp);
    size_t nv = 0;
    for (size_t i = 0; i < m; i++)
        if (nv == 0 || v[nv - 1] != v[i])
            v[nv++] = v[i];
    big_free(tmp);
    if (nv > UINT32_MAX) {
        big_free(v);
        return PM_ERR_LIMIT;
    }
    uint32_t *parent = big(nv, sizeof *parent);
    if (!parent) {
        big_free(v);
        return PM_ERR_NOMEM;
    }
    for (size_t i = 0; i < nv; i++)
        parent[i] = (uint32_t)i;
    for (size_t i = 0; i < e->n; i++)
        uf_union(parent, (uint32_t)find_u64(v, nv, e->ab[2 * i]),
                 (uint32_t)find_u64(v, nv, e->ab[2 * i + 1]));
    e->n = 0;
    int rc = PM_OK;
    for (size_t i = 0; i < nv && rc == PM_OK; i++) {
        parent[i] = uf_find(parent, (uint32_t)i);
        if (parent[i] != i)
            rc = edges_push(e, v[i], v[parent[i]]);
    }
    // The forest's vertices grouped by tree (a counting sort by root), so that propagate
    // finds each tree's minimum in one run instead of an array per vertex.
    uint64_t *vert = rc == PM_OK ? big(nv, sizeof *vert) : NULL;
    uint32_t *root = vert ? big(nv, sizeof *root) : NULL,
             *at = root ? big(nv + 1, sizeof *at) : NULL;
    if (rc == PM_OK && !at)
        rc = PM_ERR_NOMEM;
    if (rc == PM_OK) {
        memset(at, 0, (nv + 1) * sizeof *at);
        for (size_t i = 0; i < nv; i++)
            at[parent[i] + 1]++;
        for (size_t r = 0; r < nv; r++)
            at[r + 1] += at[r];
        for (size_t i = 0; i < nv; i++) {
            uint32_t k = at[parent[i]]++;
            vert[k] = v[i];
            root[k] = parent[i];
        }
        f->vert = vert;
        f->root = root;
        f->n = nv;
        vert = NULL;
        root = NULL;
    }
    big_free(v);
    big_free(parent);
    big_free(vert);
    big_free(root);
    big_free(at);
    return rc;
}

// ---- band search ------------------------------------------------------------------

struct search {
    unsigned k, nb;
    uint64_t prior[DEDUPE_NEAR_MAX_DEPTH + 1][DEDUPE_NEAR_MAX_RADIUS + 1];
    unsigned nprior[DEDUPE_NEAR_MAX_DEPTH + 1];
    uint64_t *tmp;    // sort scratch, one value per hash of the band round
    uint32_t *parent; // leaf union-find scratch, same size
    struct edges *edges;
    uint64_t pairs;
    int rc;
};

// Is `diff` (x ^ y) the pair's first agreeing (sub-)band at every level of the path?
static int first_agreeing(const struct search *s, uint64_t diff, unsigned depth)
{
    for (unsigned d = 0; d <= depth; d++)
        for (unsigned c = 0; c < s->nprior[d]; c++)
            if (!(diff & s->prior[d][c]))
                return 0;
    return 1;
}

static inline void leaf_body(struct search *s, const uint64_t *v, size_t n, unsigned depth)
{
    uint32_t *parent = s->parent;
    for (size_t i = 0; i < n; i++)
        parent[i] = (uint32_t)i;
    for (size_t i = 0; i + 1 < n; i++) {
        uint64_t x = v[i];
        for (size_t j = i + 1; j < n; j++) {
            uint64_t d = x ^ v[j];
            if ((unsigned)__builtin_popcountll(d) > s->k)
                continue;
            if (!first_agreeing(s, d, depth) || !uf_union(parent, (uint32_t)i, (uint32_t)j))
                continue;
            if (edges_push(s->edges, x, v[j]))
                s->rc = PM_ERR_NOMEM;
        }
    }
    s->pairs += (uint64_t)n * (n - 1) / 2;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("popcnt"))) static void leaf_popcnt(struct search *s, const uint64_t *v,
                                                          size_t n, unsigned depth)
{
    leaf_body(s, v, n, depth);
}
static int have_popcnt(void)
{
    return __builtin_cpu_supports("popcnt");
}
#else
static void leaf_popcnt(struct search *s, const uint64_t *v, size_t n, unsigned depth)
{
    leaf_body(s, v, n, depth);
}
static int have_popcnt(void)
{
    return 1;
}
#endif

static void leaf_generic(struct search *s, const uint64_t *v, size_t n, unsigned depth)
{
    leaf_body(s, v, n, depth);
}

// Sum over the groups of equal w-bit field at lo (v sorted by it) of the pairs inside.
static double group_pairs(const uint64_t *v, size_t n, unsigned lo, uint64_t wmask)
{
    double pairs = 0;
    for (size_t a = 0; a < n;) {
        uint64_t key = field_of(v[a], lo, wmask);
        size_t b = a + 1;
        while (b < n && field_of(v[b], lo, wmask) == key)
            b++;
        pairs += (double)(b - a) * (double)(b - a - 1) / 2;
        a = b;
    }
    return pairs;
}

// v: n distinct hashes that agree on every bit outside `free_bits`; find the pairs within
// radius k among them. Reorders v.
static void search_group(struct search *s, uint64_t *v, size_t n, uint64_t free_bits,
                         unsigned depth)
{
    if (s->rc)
        return;
    // bits equal across the whole group cannot separate anything: drop them
    uint64_t all_and = ~0ULL, all_or = 0;
    for (size_t i = 0; i < n; i++) {
        all_and &= v[i];
        all_or |= v[i];
    }
    free_bits &= all_or & ~all_and;
    unsigned nfree = (unsigned)__builtin_popcountll(free_bits);
    if (nfree <= s->k) {
        // every pair differs in at most k bits: one clique, linked as a star
        for (size_t i = 1; i < n && !s->rc; i++)
            s->rc = edges_push(s->edges, v[0], v[i]);
        return;
    }
    // Cut the free bits into nb sub-bands of consecutive free bits; within radius k,
    // two of these hashes agree on at least one sub-band.
    uint64_t masks[DEDUPE_NEAR_MAX_RADIUS + 1];
    unsigned los[DEDUPE_NEAR_MAX_RADIUS + 1], ws[DEDUPE_NEAR_MAX_RADIUS + 1];
    uint64_t rest = free_bits;
    for (unsigned j = 0; j < s->nb; j++) {
        unsigned take = (j + 1) * nfree / s->nb - j * nfree / s->nb;
        masks[j] = 0;
        for (unsigned t = 0; t < take; t++) {
            uint64_t bit = rest & -rest;
            masks[j] |= bit;
            rest ^= bit;
        }
        los[j] = (unsigned)__builtin_ctzll(masks[j]);
        ws[j] = 64 - (unsigned)__builtin_clzll(masks[j]) - los[j];
    }
    // Split while it pays: sort by each sub-band and search its groups, counting the
    // work; once the sub-groups' pairs plus the sorting pass half of comparing the whole
    // group, compare the whole group instead (pairs already emitted are simply found
    // twice; the leaf's union-find and the forest keep the edges bounded).
    double all_pairs = (double)n * (double)(n - 1) / 2;
    int split = n > DEDUPE_NEAR_LEAF && depth < DEDUPE_NEAR_MAX_DEPTH;
    double cost = 0;
    for (unsigned j = 0; split && j < s->nb && !s->rc; j++) {
        unsigned lo = los[j];
        uint64_t wmask = width_mask(ws[j]);
        // bits inside [lo, lo+w) outside masks[j] are fixed in this group
        sort_by_field(v, n, lo, ws[j], s->tmp);
        cost += 3.0 * (double)n + 512 + group_pairs(v, n, lo, wmask);
        if (cost >= all_pairs) {
            split = 0;
            break;
        }
        memcpy(s->prior[depth + 1], masks, j * sizeof *masks);
        s->nprior[depth + 1] = j;
        for (size_t a = 0; a < n;) {
            uint64_t key = field_of(v[a], lo, wmask);
            size_t b = a + 1;
            while (b < n && field_of(v[b], lo, wmask) == key)
                b++;
            if (b - a > 1)
                search_group(s, v + a, b - a, free_bits & ~masks[j], depth + 1);
            a = b;
        }
    }
    if (!split) {
        static int popcnt = -1;
        if (popcnt < 0)
            popcnt = have_popcnt();
        (popcnt ? leaf_popcnt : leaf_generic)(s, v, n, depth);
    }
}

// ---- the run ----------------------------------------------------------------------

struct near_state {
    MPI_Comm comm;
    int size;
    unsigned k, nb, rounds;
    // collapse
    struct node *nodes;
    size_t nnodes;
    size_t *seg;       // nodes of collapse round r: [seg[r], seg[r+1])
    uint32_t *node_of; // per received record, arrival order, rounds concatenated
    size_t nowned;
    // bands
    struct edges edges;
    struct forest forest;
    uint64_t pairs;
    unsigned iterations;
};

static unsigned band_lo(const struct near_state *st, unsigned b)
{
    return b * 64 / st->nb;
}

static uint64_t band_mask(const struct near_state *st, unsigned b)
{
    unsigned lo = band_lo(st, b), hi = band_lo(st, b + 1);
    return width_mask(hi - lo) << lo;
}

static struct node *node_find(struct near_state *st, uint64_t h)
{
    unsigned r = node_round(h, st->rounds);
    struct node *v = st->nodes + st->seg[r];
    size_t lo = 0, hi = st->seg[r + 1] - st->seg[r];
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].phash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < st->seg[r + 1] - st->seg[r] && v[lo].phash == h ? &v[lo] : NULL;
}

// Count and order this round's records by owner (the same order every time it is
// called, so the answer phase can retrace it). slot_fill: if non-NULL, gets the local
// index per send slot.
static void collapse_route(const struct dedupe_near_record *recs, size_t n, unsigned round,
                           struct near_state *st, struct route *rt)
{
    memset(rt->scount, 0, (size_t)st->size * sizeof(int));
    for (size_t i = 0; i < n; i++)
        if (node_round(recs[i].phash, st->rounds) == round)
            rt->scount[node_owner(recs[i].phash, st->size)]++;
}

static int collapse_round(const struct dedupe_near_record *recs, const uint64_t *priority, size_t n,
                          unsigned round, struct near_state *st, struct route *rt)
{
    collapse_route(recs, n, round, st, rt);
    int rc = pm_mpi_worst_in(route_plan(rt, st->size, st->comm), st->comm);
    if (rc)
        return rc;
    uint64_t *send = big(rt->nsend, 3 * sizeof *send);
    int *fill = calloc((size_t)st->size, sizeof *fill);
    if ((rc = pm_mpi_worst_in(send && fill ? PM_OK : PM_ERR_NOMEM, st->comm))) {
        big_free(send);
        free(fill);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (node_round(recs[i].phash, st->rounds) != round)
            continue;
        int o = node_owner(recs[i].phash, st->size);
        uint64_t *slot = send + 3 * ((size_t)rt->sdisp[o] + (size_t)fill[o]++);
        slot[0] = recs[i].phash;
        slot[1] = ~(priority ? priority[i] : 0);
        slot[2] = recs[i].id;
    }
    free(fill);
    uint64_t *recv = big(rt->nrecv, 3 * sizeof *recv);
    if ((rc = pm_mpi_worst_in(recv ? PM_OK : PM_ERR_NOMEM, st->comm))) {
        big_free(send);
        big_free(recv);
        return rc;
    }
    route_exchange(rt, send, recv, 3, 0, st->comm);
    big_free(send);
    size_t m = rt->nrecv;
    struct coll_entry *ent = big(m, sizeof *ent), *tmp = big(m, sizeof *tmp);
    size_t *count = malloc(65536 * sizeof *count);
    rc = ent && tmp && count ? PM_OK : PM_ERR_NOMEM;
    if ((rc = pm_mpi_worst_in(rc, st->comm))) {
        big_free(recv);
        big_free(ent);
        big_free(tmp);
        free(count);
        return rc;
    }
    for (size_t i = 0; i < m; i++)
        ent[i] = (struct coll_entry){recv[3 * i], i};
    if (m < 4096) {
        // small: insertion-free path through the same radix code would cost 4x64K clears
        for (size_t i = 1; i < m; i++) {
            struct coll_entry x = ent[i];
            size_t j = i;
            while (j > 0 && ent[j - 1].phash > x.phash) {
                ent[j] = ent[j - 1];
                j--;
            }
            ent[j] = x;
        }
    } else {
        sort_entries(ent, m, tmp, count);
    }
    big_free(tmp);
    free(count);
    // Each run of equal hashes becomes a node. Its best label is written over the label of
    // the run's first record in recv, node_of gets the run's node for each record, firsts
    // the position of each run's first record; ent goes before the nodes grow. Peak: 56
    // bytes per record (recv 24 + ent 16 + the sort's scratch 16, or recv 24 + nodes 24 +
    // node_of 4 + firsts 4).
    size_t distinct = 0;
    for (size_t i = 0; i < m; i++)
        distinct += i == 0 || ent[i].phash != ent[i - 1].phash;
    uint32_t *node_of = pm_big_realloc(st->node_of, st->nowned * sizeof *node_of,
                                       (st->nowned + m + 1) * sizeof *node_of);
    if (node_of)
        st->node_of = node_of;
    uint32_t *firsts = big(distinct, sizeof *firsts);
    rc = node_of && firsts ? PM_OK : PM_ERR_NOMEM;
    if (rc == PM_OK && (st->nnodes + distinct > UINT32_MAX || m > UINT32_MAX))
        rc = PM_ERR_LIMIT;
    if ((rc = pm_mpi_worst_in(rc, st->comm))) {
        big_free(recv);
        big_free(ent);
        big_free(firsts);
        return rc;
    }
    for (size_t i = 0, k = 0; i < m; k++) {
        size_t j = i;
        struct label best = {recv[3 * ent[i].pos + 1], recv[3 * ent[i].pos + 2]};
        for (; j < m && ent[j].phash == ent[i].phash; j++) {
            struct label l = {recv[3 * ent[j].pos + 1], recv[3 * ent[j].pos + 2]};
            if (label_less(l, best))
                best = l;
            st->node_of[st->nowned + ent[j].pos] = (uint32_t)(st->nnodes + k);
        }
        recv[3 * ent[i].pos + 1] = best.kp;
        recv[3 * ent[i].pos + 2] = best.id;
        firsts[k] = (uint32_t)ent[i].pos;
        i = j;
    }
    big_free(ent);
    struct node *nodes = pm_big_realloc(st->nodes, st->nnodes * sizeof *nodes,
                                        (st->nnodes + distinct + 1) * sizeof *nodes);
    if (nodes)
        st->nodes = nodes;
    if ((rc = pm_mpi_worst_in(nodes ? PM_OK : PM_ERR_NOMEM, st->comm))) {
        big_free(recv);
        big_free(firsts);
        return rc;
    }
    for (size_t k = 0; k < distinct; k++) {
        const uint64_t *r = recv + 3 * (size_t)firsts[k];
        st->nodes[st->nnodes + k] = (struct node){r[0], {r[1], r[2]}};
    }
    st->nnodes += distinct;
    st->nowned += m;
    big_free(firsts);
    big_free(recv);
    return PM_OK;
}

static unsigned band_round_of(uint64_t m, unsigned rounds)
{
    return scale(m << 32 | m >> 32, rounds);
}

static int band_round(unsigned b, unsigned round, struct near_state *st, struct route *rt)
{
    unsigned lo = band_lo(st, b), w = band_lo(st, b + 1) - lo;
    uint64_t wmask = width_mask(w);
    memset(rt->scount, 0, (size_t)st->size * sizeof(int));
    for (size_t i = 0; i < st->nnodes; i++) {
        uint64_t m = band_mix(field_of(st->nodes[i].phash, lo, wmask), b);
        if (band_round_of(m, st->rounds) == round)
            rt->scount[scale(m, (unsigned)st->size)]++;
    }
    int rc = pm_mpi_worst_in(route_plan(rt, st->size, st->comm), st->comm);
    if (rc)
        return rc;
    uint64_t *send = big(rt->nsend, sizeof *send);
    int *fill = calloc((size_t)st->size, sizeof *fill);
    if ((rc = pm_mpi_worst_in(send && fill ? PM_OK : PM_ERR_NOMEM, st->comm))) {
        big_free(send);
        free(fill);
        return rc;
    }
    for (size_t i = 0; i < st->nnodes; i++) {
        uint64_t m = band_mix(field_of(st->nodes[i].phash, lo, wmask), b);
        if (band_round_of(m, st->rounds) != round)
            continue;
        int o = (int)scale(m, (unsigned)st->size);
        send[(size_t)rt->sdisp[o] + (size_t)fill[o]++] = st->nodes[i].phash;
    }
    free(fill);
    size_t m = rt->nrecv;
    uint64_t *recv = big(m, sizeof *recv);
    if ((rc = pm_mpi_worst_in(recv ? PM_OK : PM_ERR_NOMEM, st->comm))) {
        big_free(send);
        big_free(recv);
        return rc;
    }
    route_exchange(rt, send, recv, 1, 0, st->comm);
    big_free(send);
    // The forest is rebuilt from the edges after the search: its memory is free meanwhile.
    big_free(st->forest.vert);
    big_free(st->forest.root);
    st->forest = (struct forest){NULL, NULL, 0};
    struct search s = {.k = st->k, .nb = st->nb, .edges = &st->edges};
    s.tmp = big(m, sizeof *s.tmp);
    s.parent = big(m, sizeof *s.parent);
    rc = s.tmp && s.parent ? PM_OK : PM_ERR_NOMEM;
    if (rc == PM_OK) {
        sort_by_field(recv, m, lo, w, s.tmp);
        for (unsigned c = 0; c < b; c++)
            s.prior[0][c] = band_mask(st, c);
        s.nprior[0] = b;
        for (size_t a = 0; a < m && !s.rc;) {
            uint64_t key = field_of(recv[a], lo, wmask);
            size_t e = a + 1;
            while (e < m && field_of(recv[e], lo, wmask) == key)
                e++;
            if (e - a > 1)
                search_group(&s, recv + a, e - a, ~band_mask(st, b), 0);
            a = e;
        }
        rc = s.rc;
    }
    st->pairs += s.pairs;
    big_free(s.tmp);
    big_free(s.parent);
    big_free(recv);
    if (rc == PM_OK && st->edges.n)
        rc = forest_build(&st->edges, &st->forest);
    return pm_mpi_worst_in(rc, st->comm);
}

// Min-label propagation over the holders' forests until no label changes.
// The tree of forest vertices [a, *b) (the run of equal roots from a): each vertex's place
// in the ask route's send buffer goes to (*run_at)[i - a] (places in vertex order from each
// owner's displacement, fill advancing), and the smallest label got for them to *min.
static int tree_min(const struct forest *f, size_t a, size_t *b, const uint64_t *got,
                    struct label *min, const int *disp, int *fill, int size, size_t **run_at,
                    size_t *run_cap)
{
    size_t e = a + 1;
    while (e < f->n && f->root[e] == f->root[a])
        e++;
    if (e - a > *run_cap) {
        size_t cap = 2 * (e - a);
        size_t *p = realloc(*run_at, cap * sizeof *p);
        if (!p)
            return PM_ERR_NOMEM;
        *run_at = p;
        *run_cap = cap;
    }
    *min = (struct label){~0ULL, ~0ULL};
    for (size_t i = a; i < e; i++) {
        int o = node_owner(f->vert[i], size);
        size_t at = (size_t)disp[o] + (size_t)fill[o]++;
        (*run_at)[i - a] = at;
        struct label l = {got[2 * at], got[2 * at + 1]};
        if (label_less(l, *min))
            *min = l;
    }
    *b = e;
    return PM_OK;
}

// The proposals of one propagation step: every forest vertex whose label (got, at its ask
// place: ask_disp, fill) is worse than its tree's best. Each is counted per owner in
// counts[] and, with upd, written there as (vertex, best label) at the owner's place
// upd_disp[o] + counts[o].
static int propose(const struct forest *f, const uint64_t *got, const int *ask_disp, int *fill,
                   int size, size_t **run_at, size_t *run_cap, int *counts, uint64_t *upd,
                   const int *upd_disp)
{
    memset(fill, 0, (size_t)size * sizeof *fill);
    for (size_t a = 0, b; a < f->n; a = b) {
        struct label c;
        int rc = tree_min(f, a, &b, got, &c, ask_disp, fill, size, run_at, run_cap);
        if (rc)
            return rc;
        for (size_t i = a; i < b; i++) {
            struct label l = {got[2 * (*run_at)[i - a]], got[2 * (*run_at)[i - a] + 1]};
            if (!label_less(c, l))
                continue;
            int o = node_owner(f->vert[i], size);
            if (upd) {
                uint64_t *u = upd + 3 * ((size_t)upd_disp[o] + (size_t)counts[o]);
                u[0] = f->vert[i];
                u[1] = c.kp;
                u[2] = c.id;
            }
            counts[o]++;
        }
    }
    return PM_OK;
}

static int propagate(struct near_state *st, struct route *rt)
{
    struct forest *f = &st->forest;
    int rc = PM_OK, size = st->size;
    // Per owner: the next place of a vertex in the ask route's send buffer (vertices go in
    // order, each owner's from its displacement; recomputed on every pass instead of kept
    // per vertex), the ask route's displacements, the next place in the update route.
    int *fill = calloc((size_t)size, sizeof *fill), *ask_disp = calloc((size_t)size, sizeof(int));
    int *ufill = calloc((size_t)size, sizeof *ufill);
    size_t *run_at = NULL, run_cap = 0; // the ask places of one tree's vertices
    if ((rc = pm_mpi_worst_in(fill && ask_disp && ufill ? PM_OK : PM_ERR_NOMEM, st->comm))) {
        free(fill), free(ask_disp), free(ufill);
        return rc;
    }
#define ASK_PLACE(i)                                                                               \
    ((size_t)ask_disp[node_owner(f->vert[i], size)] + (size_t)fill[node_owner(f->vert[i], size)]++)
    // Each array is freed as soon as its step is done: at most about 40 bytes per forest
    // vertex are alive at once (labels got, proposals); the forest's vertices come grouped
    // by tree (forest_build), so a tree's minimum is found in one run.
    for (;;) {
        st->iterations++;
        // 1. ask the owners for the labels of our endpoints
        memset(rt->scount, 0, (size_t)size * sizeof(int));
        for (size_t i = 0; i < f->n; i++)
            rt->scount[node_owner(f->vert[i], size)]++;
        rc = route_plan(rt, size, st->comm);
        uint64_t *req = NULL, *ask = NULL, *ans = NULL, *got = NULL, *upd = NULL, *in = NULL;
        if ((rc = pm_mpi_worst_in(rc, st->comm)) == PM_OK) {
            memcpy(ask_disp, rt->sdisp, (size_t)size * sizeof(int));
            req = big(rt->nsend, sizeof *req);
            ask = big(rt->nrecv, sizeof *ask);
            rc = pm_mpi_worst_in(req && ask ? PM_OK : PM_ERR_NOMEM, st->comm);
        }
        if (rc == PM_OK) {
            memset(fill, 0, (size_t)size * sizeof *fill);
            for (size_t i = 0; i < f->n; i++)
                req[ASK_PLACE(i)] = f->vert[i];
            route_exchange(rt, req, ask, 1, 0, st->comm);
            big_free(req);
            req = NULL;
            ans = big(rt->nrecv, 2 * sizeof *ans);
            rc = ans ? PM_OK : PM_ERR_NOMEM;
            for (size_t i = 0; i < rt->nrecv && rc == PM_OK; i++) {
                struct node *nd = node_find(st, ask[i]);
                if (!nd)
                    rc = PM_ERR_INTERNAL;
                else {
                    ans[2 * i] = nd->best.kp;
                    ans[2 * i + 1] = nd->best.id;
                }
            }
            big_free(ask);
            ask = NULL;
            if (rc == PM_OK)
                got = big(f->n, 2 * sizeof *got);
            rc = pm_mpi_worst_in(rc == PM_OK && !got ? PM_ERR_NOMEM : rc, st->comm);
        }
        if (rc == PM_OK) {
            route_exchange(rt, ans, got, 2, 1, st->comm);
            big_free(ans);
            ans = NULL;
            // 2. the best label of each local tree, proposed to every member that lacks it
            memset(rt->scount, 0, (size_t)size * sizeof(int));
            rc = propose(f, got, ask_disp, fill, size, &run_at, &run_cap, rt->scount, NULL, NULL);
            if (rc == PM_OK)
                rc = route_plan(rt, size, st->comm);
        }
        if ((rc = pm_mpi_worst_in(rc, st->comm)) == PM_OK) {
            upd = big(rt->nsend, 3 * sizeof *upd);
            rc = pm_mpi_worst_in(upd ? PM_OK : PM_ERR_NOMEM, st->comm);
        }
        if (rc == PM_OK) {
            memset(ufill, 0, (size_t)size * sizeof *ufill);
            rc = propose(f, got, ask_disp, fill, size, &run_at, &run_cap, ufill, upd, rt->sdisp);
            rc = pm_mpi_worst_in(rc, st->comm);
        }
        big_free(got);
        got = NULL;
        if (rc == PM_OK) {
            in = big(rt->nrecv, 3 * sizeof *in);
            rc = pm_mpi_worst_in(in ? PM_OK : PM_ERR_NOMEM, st->comm);
        }
        uint64_t changed = 0, gchanged = 0;
        if (rc == PM_OK) {
            route_exchange(rt, upd, in, 3, 0, st->comm);
            big_free(upd);
            upd = NULL;
            // 3. owners keep the smaller label
            for (size_t i = 0; i < rt->nrecv; i++) {
                struct node *nd = node_find(st, in[3 * i]);
                struct label l = {in[3 * i + 1], in[3 * i + 2]};
                if (nd && label_less(l, nd->best)) {
                    nd->best = l;
                    changed++;
                }
            }
        }
        big_free(req);
        big_free(ask);
        big_free(ans);
        big_free(upd);
        big_free(in);
        if (rc)
            break;
        MPI_CHECK(MPI_Allreduce(&changed, &gchanged, 1, MPI_UINT64_T, MPI_SUM, st->comm));
        if (!gchanged)
            break;
    }
#undef ASK_PLACE
    free(run_at);
    free(fill);
    free(ask_disp);
    free(ufill);
    return rc;
}

static int answer_round(const struct dedupe_near_record *recs, size_t n, uint64_t *keeper,
                        unsigned round, size_t base, struct near_state *st, struct route *rt)
{
    collapse_route(recs, n, round, st, rt);
    int rc = pm_mpi_worst_in(route_plan(rt, st->size, st->comm), st->comm);
    if (rc)
        return rc;
    uint64_t *ans = big(rt->nrecv, sizeof *ans), *back = big(rt->nsend, sizeof *back);
    int *fill = calloc((size_t)st->size, sizeof *fill);
    if ((rc = pm_mpi_worst_in(ans && back && fill ? PM_OK : PM_ERR_NOMEM, st->comm)) == PM_OK) {
        for (size_t i = 0; i < rt->nrecv; i++)
            ans[i] = st->nodes[st->node_of[base + i]].best.id;
        route_exchange(rt, ans, back, 1, 1, st->comm);
        for (size_t i = 0; i < n; i++) {
            if (node_round(recs[i].phash, st->rounds) != round)
                continue;
            int o = node_owner(recs[i].phash, st->size);
            keeper[i] = back[(size_t)rt->sdisp[o] + (size_t)fill[o]++];
        }
    }
    big_free(ans);
    big_free(back);
    free(fill);
    return rc;
}

int dedupe_near_run(const struct dedupe_near_record *recs, const uint64_t *priority, size_t n,
                    uint64_t *keeper, unsigned radius, MPI_Comm comm, size_t memory_limit,
                    struct dedupe_near_stats *stats, struct pm_error *err)
{
    struct near_state st = {.comm = comm, .k = radius, .nb = radius + 1};
    MPI_CHECK(MPI_Comm_size(comm, &st.size));
    if (radius > DEDUPE_NEAR_MAX_RADIUS)
        return pm_error_set(err, PM_ERR_USAGE, "near dedupe: radius %u exceeds %u", radius,
                            DEDUPE_NEAR_MAX_RADIUS);
    uint64_t local = n, total = 0;
    MPI_CHECK(MPI_Allreduce(&local, &total, 1, MPI_UINT64_T, MPI_SUM, comm));

    // Owner-side peak per record: 56 bytes in the collapse, 24 per band round (+slack
    // for uneven owners); the estimate keeps 64.
    double per_rank = (double)total / st.size * 1.25 * 64;
    st.rounds = 1;
    if (memory_limit && per_rank > (double)memory_limit)
        st.rounds = (unsigned)(per_rank / (double)memory_limit) + 1;

    struct route rt;
    int rc = pm_mpi_worst_in(route_init(&rt, st.size), comm);
    st.seg = calloc(st.rounds + 1, sizeof *st.seg);
    size_t *base = calloc(st.rounds + 1, sizeof *base);
    if (rc == PM_OK)
        rc = pm_mpi_worst_in(st.seg && base ? PM_OK : PM_ERR_NOMEM, comm);
    for (unsigned r = 0; rc == PM_OK && r < st.rounds; r++) {
        st.seg[r] = st.nnodes;
        base[r] = st.nowned;
        rc = collapse_round(recs, priority, n, r, &st, &rt);
    }
    if (rc == PM_OK) {
        st.seg[st.rounds] = st.nnodes;
        base[st.rounds] = st.nowned;
    }
    for (unsigned b = 0; rc == PM_OK && b < st.nb; b++)
        for (unsigned r = 0; rc == PM_OK && r < st.rounds; r++)
            rc = band_round(b, r, &st, &rt);
    uint64_t gedges = 0, edges = st.edges.n;
    MPI_CHECK(MPI_Allreduce(&edges, &gedges, 1, MPI_UINT64_T, MPI_SUM, comm));
    big_free(st.edges.ab); // the forest holds the components from here on
    st.edges = (struct edges){NULL, 0, 0};
    if (rc == PM_OK && gedges)
        rc = propagate(&st, &rt);
    for (unsigned r = 0; rc == PM_OK && r < st.rounds; r++)
        rc = answer_round(recs, n, keeper, r, base[r], &st, &rt);

    uint64_t sums[3] = {0, st.nnodes, st.pairs}, gsums[3];
    for (size_t i = 0; rc == PM_OK && i < n; i++)
        sums[0] += keeper[i] != recs[i].id;
    MPI_CHECK(MPI_Allreduce(sums, gsums, 3, MPI_UINT64_T, MPI_SUM, comm));
    route_release(&rt);
    pm_big_free(st.nodes);
    free(st.seg);
    pm_big_free(st.node_of);
    big_free(st.edges.ab);
    big_free(st.forest.vert);
    big_free(st.forest.root);
    free(base);
    if (rc)
        return pm_error_set(err, rc, "near dedupe: %s for %llu records (radius %u)",
                            rc == PM_ERR_NOMEM   ? "out of memory"
                            : rc == PM_ERR_LIMIT ? "per-rank count limit exceeded"
                                                 : "internal error",
                            (unsigned long long)total, radius);
    if (stats)
        *stats = (struct dedupe_near_stats){total,    gsums[0],  gsums[1],     gedges,
                                            gsums[2], st.rounds, st.iterations};
    return PM_OK;
}
