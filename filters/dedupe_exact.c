#include "dedupe_exact.h"

#include "pm_mpi.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

// How the work is laid out (docs/internals/dedupe.md, "Exact dedupe"):
//
// - Each round's records go to their owner rank mulhi(hash_lo, size) (MPI_Alltoallv). On
//   one rank nothing is copied: the caller's array is the owner's input.
// - The owner cuts its records into buckets of a few thousand by the top bits of
//   hash_lo * size (hash_lo's position inside the owner's range), writing for each record
//   only an 8-byte entry: a 32-bit fingerprint of the 128-bit hash and the record's
//   position. One bucket's entries and its hash table stay in L2.
// - Per bucket, the entries go into an open-addressing table keyed by fingerprint. A
//   record whose fingerprint is already there is a *candidate*; only candidates (the
//   duplicates, plus a fingerprint collision once in a few hundred buckets) are checked
//   against the full records, with prefetching. A slot then refers to its group's current
//   keeper (lowest id); after the bucket, each group member that is not the keeper gets
//   the keeper's id. A bucket with a fingerprint collision is redone by sorting its
//   records by (hash, id).
// - Only duplicates' answers travel back (slot in the sender's segment, keeper); every
//   record's keeper starts as its own id. Answers for the owner's own records are written
//   directly.

#define TARGET_BUCKET 16384u // records per bucket aimed at
#define MAX_BUCKET_BITS 16u
#define SLOT_FLAG 0x80000000u // table slot: the group has at least two records
#define SLOT_REF 0x7fffffffu  // table slot: 1 + the position of the group's keeper
#define PREFETCH_AHEAD 16u
#define WC_ENTRIES 8u // entries per 64-byte cache line

struct entry {
    uint32_t fp;  // fingerprint of the 128-bit hash
    uint32_t pos; // position of the record in the owner's input
};

struct cand {
    uint32_t pos;  // the record
    uint32_t slot; // the table slot of its group (same fingerprint)
};

#define EXTRA_REF 0x80000000u // cand.slot of a member: an extra group's index

// A group whose hash shares its fingerprint (and bucket) with a table slot's group.
struct extra_group {
    uint32_t slot;     // the table slot
    uint32_t keep;     // position of the group's keeper so far
    uint32_t has_dups; // the first record is listed as a member
};

struct reply {
    uint64_t slot; // in the sender's send segment for this owner (the owner's input
                   // position until the replies are sorted by sender)
    uint64_t keeper;
};

// Work arrays: 64-byte aligned; large ones 2 MiB aligned and marked for transparent huge
// pages (fewer page faults and TLB misses in the scatter).
static void *big_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < 2 * huge)
        return aligned_alloc(64, bytes / 64 * 64 + 64);
    void *p = NULL;
    size_t rounded = (bytes + huge - 1) / huge * huge;
    if (posix_memalign(&p, huge, rounded))
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, rounded, MADV_HUGEPAGE); // advice only: failure changes nothing
#endif
    return p;
}

// Stores that bypass the cache (for data written once and read much later); plain stores
// where SSE2 is missing. stream_line: dst and src 64-byte aligned.
static void stream_u64(uint64_t *dst, uint64_t v)
{
#ifdef __SSE2__
    _mm_stream_si64((long long *)dst, (long long)v);
#else
    *dst = v;
#endif
}

static void stream_line(struct entry *dst, const struct entry *src)
{
#ifdef __SSE2__
    const __m128i *s = (const __m128i *)src;
    __m128i *d = (__m128i *)dst;
    _mm_stream_si128(d, _mm_load_si128(s));
    _mm_stream_si128(d + 1, _mm_load_si128(s + 1));
    _mm_stream_si128(d + 2, _mm_load_si128(s + 2));
    _mm_stream_si128(d + 3, _mm_load_si128(s + 3));
#else
    memcpy(dst, src, WC_ENTRIES * sizeof *dst);
#endif
}

static void stream_fence(void)
{
#ifdef __SSE2__
    _mm_sfence();
#endif
}

static unsigned round_of(uint64_t hash_hi, unsigned rounds)
{
    return (unsigned)(((unsigned __int128)hash_hi * rounds) >> 64);
}

static int owner_of(uint64_t hash_lo, int size)
{
    return (int)(((unsigned __int128)hash_lo * (unsigned)size) >> 64);
}

// The bucket of a record on its owner: the top bits of hash_lo's position inside the
// owner's range (the low half of the product whose high half chose the owner; hash_lo's
// own top bits are nearly constant on one owner).
static size_t bucket_of(uint64_t hash_lo, uint64_t size, unsigned bits)
{
    return bits ? (size_t)((hash_lo * size) >> (64 - bits)) : 0;
}

// All four 32-bit words of the hash folded: equal hashes have equal fingerprints.
static uint32_t fingerprint(const struct dedupe_record *r)
{
    uint64_t x = r->hash_hi ^ r->hash_lo;
    return (uint32_t)(x ^ (x >> 32));
}

static unsigned ceil_log2(uint64_t x)
{
    unsigned b = 0;
    while (b < 63 && ((uint64_t)1 << b) < x)
        b++;
    return b;
}

// Agree on an error across ranks: returns the max code seen.
static int all_agree(int rc, MPI_Comm comm)
{
    int global = rc;
    MPI_CHECK(MPI_Allreduce(&rc, &global, 1, MPI_INT, MPI_MAX, comm));
    return global;
}

// The state of one call; buffers are sized once and reused by every round.
struct exact_work {
    MPI_Comm comm;
    int size, rank;
    unsigned rounds, bucket_bits;
    size_t buckets;
    uint64_t *keeper;
    // sender (more than one rank)
    struct dedupe_record *sendbuf;
    uint32_t *slot_of; // send slot -> local record index
    int *scount, *sdisp, *rcount, *rdisp, *ecount, *edisp, *bcount, *bdisp;
    // owner
    const struct dedupe_record *in; // the owner's input: recvbuf, or the caller's records
    size_t nin;
    struct dedupe_record *recvbuf;
    size_t recv_cap;
    size_t *bucket_off; // buckets + 1
    size_t *bucket_start;
    struct entry *wc_buf; // buckets x WC_ENTRIES, 64-byte aligned
    struct entry *entries;
    size_t entries_cap;
    uint64_t *table;
    size_t table_cap;
    struct cand *cands, *members;
    size_t cands_cap;
    struct extra_group *extra;
    size_t extra_n, extra_cap;
    struct reply *emit;
    size_t emit_n, emit_cap;
    uint64_t ndups, ngroups;
};

static void exact_work_release(struct exact_work *w)
{
    free(w->sendbuf);
    free(w->slot_of);
    free(w->scount);
    free(w->sdisp);
    free(w->rcount);
    free(w->rdisp);
    free(w->ecount);
    free(w->edisp);
    free(w->bcount);
    free(w->bdisp);
    free(w->recvbuf);
    free(w->bucket_off);
    free(w->bucket_start);
    free(w->wc_buf);
    free(w->entries);
    free(w->table);
    free(w->cands);
    free(w->members);
    free(w->extra);
    free(w->emit);
}

// Make *buf hold `want` elements of `elem` bytes (contents are not kept).
static int ensure_cap(void **buf, size_t *have, size_t want, size_t elem)
{
    if (*have >= want && *buf)
        return PM_OK;
    free(*buf);
    *buf = big_alloc((want ? want : 1) * elem);
    *have = *buf ? want : 0;
    return *buf ? PM_OK : PM_ERR_NOMEM;
}

// Owner: the record at input position pos is a duplicate whose keeper has id `id`. Own
// records are answered directly, the others queued for their sender.
static int emit_answer(struct exact_work *w, size_t pos, uint64_t id)
{
    int me = w->rank;
    if (w->size == 1) {
        w->keeper[pos] = id;
        return PM_OK;
    }
    if (pos - (size_t)w->rdisp[me] < (size_t)w->rcount[me]) {
        w->keeper[w->slot_of[(size_t)w->sdisp[me] + pos - (size_t)w->rdisp[me]]] = id;
        return PM_OK;
    }
    if (w->emit_n == w->emit_cap) {
        size_t cap = w->emit_cap ? 2 * w->emit_cap : 4096;
        struct reply *e = realloc(w->emit, cap * sizeof *e);
        if (!e)
            return PM_ERR_NOMEM;
        w->emit = e;
        w->emit_cap = cap;
    }
    w->emit[w->emit_n++] = (struct reply){pos, id};
    return PM_OK;
}

// Owner: prefetch (for writing) where emit_answer will store pos's answer, when that is
// the caller's keeper array (one rank).
static void prefetch_answer(const struct exact_work *w, size_t pos)
{
    if (w->size == 1)
        __builtin_prefetch(&w->keeper[pos], 1);
}

static int same_hash(const struct dedupe_record *x, const struct dedupe_record *y)
{
    return x->hash_lo == y->hash_lo && x->hash_hi == y->hash_hi;
}

// Owner: candidate `pos` shares its fingerprint with table slot `slot` but not its hash.
// Join the matching group among the slot's extra groups, or start one. Returns the extra
// group's index, or -1 when it started one (no duplicate yet), -2 when out of memory.
static long join_extra(struct exact_work *w, uint32_t pos, uint32_t slot)
{
    const struct dedupe_record *in = w->in;
    for (size_t x = 0; x < w->extra_n; x++)
        if (w->extra[x].slot == slot && same_hash(&in[w->extra[x].keep], &in[pos]))
            return (long)x;
    if (w->extra_n == w->extra_cap) {
        size_t cap = w->extra_cap ? 2 * w->extra_cap : 16;
        struct extra_group *e = realloc(w->extra, cap * sizeof *e);
        if (!e)
            return -2;
        w->extra = e;
        w->extra_cap = cap;
    }
    w->extra[w->extra_n++] = (struct extra_group){slot, pos, 0};
    return -1;
}

// Owner: find the groups of one bucket and answer its duplicates.
static int scan_bucket(struct exact_work *w, const struct entry *ent, size_t count)
{
    const struct dedupe_record *in = w->in;
    unsigned tbits = ceil_log2(2 * count);
    if (tbits < 4)
        tbits = 4;
    uint32_t tmask = (uint32_t)(((uint64_t)1 << tbits) - 1);
    uint64_t *table = w->table;
    memset(table, 0, ((size_t)tmask + 1) * sizeof *table);
    struct cand *cand = w->cands;
    size_t nc = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t fp = ent[i].fp;
        uint32_t slot = (uint32_t)(((uint64_t)(fp * 0x9e3779b1u) << tbits) >> 32);
        for (;;) {
            uint64_t t = table[slot];
            if (!t) {
                table[slot] = (uint64_t)fp << 32 | (ent[i].pos + 1u);
                break;
            }
            if ((uint32_t)(t >> 32) == fp) {
                cand[nc++] = (struct cand){ent[i].pos, slot};
                break;
            }
            slot = (slot + 1) & tmask;
        }
    }
    if (!nc)
        return PM_OK;
    // Resolve the candidates against the full records (read at random: prefetch ahead).
    // A member refers to its group: a table slot, or EXTRA_REF | index of an extra group
    // (a hash that shares its fingerprint with the slot's group but differs: rare).
    struct cand *mem = w->members;
    size_t nm = 0;
    uint64_t groups = 0, dups = 0;
    w->extra_n = 0;
    for (size_t c = 0; c < nc && c < PREFETCH_AHEAD; c++) {
        __builtin_prefetch(&in[cand[c].pos]);
        __builtin_prefetch(&in[((uint32_t)table[cand[c].slot] & SLOT_REF) - 1]);
    }
    for (size_t c = 0; c < nc; c++) {
        if (c + PREFETCH_AHEAD < nc) {
            const struct cand *p = &cand[c + PREFETCH_AHEAD];
            __builtin_prefetch(&in[p->pos]);
            __builtin_prefetch(&in[((uint32_t)table[p->slot] & SLOT_REF) - 1]);
        }
        uint64_t t = table[cand[c].slot];
        uint32_t ref = (uint32_t)t, pos = cand[c].pos, k = (ref & SLOT_REF) - 1;
        if (same_hash(&in[k], &in[pos])) {
            if (!(ref & SLOT_FLAG)) {
                mem[nm++] = (struct cand){k, cand[c].slot};
                groups++;
            }
            mem[nm++] = cand[c];
            dups++;
            uint32_t best = in[pos].id < in[k].id ? pos : k;
            table[cand[c].slot] = (t & 0xffffffff00000000ULL) | SLOT_FLAG | (best + 1);
            continue;
        }
        long x = join_extra(w, pos, cand[c].slot);
        if (x == -2)
            return PM_ERR_NOMEM;
        if (x < 0)
            continue;
        struct extra_group *g = &w->extra[x];
        if (!g->has_dups) {
            mem[nm++] = (struct cand){g->keep, EXTRA_REF | (uint32_t)x};
            g->has_dups = 1;
            groups++;
        }
        mem[nm++] = (struct cand){pos, EXTRA_REF | (uint32_t)x};
        dups++;
        g->keep = in[pos].id < in[g->keep].id ? pos : g->keep;
    }
    w->ngroups += groups;
    w->ndups += dups;
    for (size_t m = 0; m < nm; m++) {
        if (m + PREFETCH_AHEAD < nm)
            prefetch_answer(w, mem[m + PREFETCH_AHEAD].pos);
        uint32_t g = mem[m].slot;
        size_t k = g & EXTRA_REF ? w->extra[g & ~EXTRA_REF].keep
                                 : ((uint32_t)table[g] & SLOT_REF) - 1;
        if (mem[m].pos != k && emit_answer(w, mem[m].pos, in[k].id))
            return PM_ERR_NOMEM;
    }
    return PM_OK;
}

// Owner: write each of this round's records' entry into its bucket (w->bucket_off[b] is
// the start of bucket b; afterwards it is the end). On one rank, also set each record's
// keeper to its own id.
//
// The entries are written through a 64-byte buffer per bucket (kept in L2) and go out a
// whole cache line at a time with non-temporal stores: no read-for-ownership of the
// destination, and one store stream at a time instead of thousands of partial lines.
static void scatter_entries(struct exact_work *w, unsigned round, unsigned rounds)
{
    const struct dedupe_record *in = w->in;
    size_t nin = w->nin, nb = w->buckets, *off = w->bucket_off, *start = w->bucket_start;
    unsigned bits = w->bucket_bits;
    uint64_t size = (uint64_t)w->size;
    struct entry *ent = w->entries, *buf = w->wc_buf;
    uint64_t *keeper = w->keeper;
    memcpy(start, off, nb * sizeof *start);
    for (size_t i = 0; i < nin; i++) {
        const struct dedupe_record *r = &in[i];
        if (rounds > 1 && round_of(r->hash_hi, rounds) != round)
            continue;
        if (size == 1)
            stream_u64(&keeper[i], r->id);
        size_t b = bucket_of(r->hash_lo, size, bits), o = off[b]++;
        struct entry *line = buf + b * WC_ENTRIES;
        line[o % WC_ENTRIES] = (struct entry){fingerprint(r), (uint32_t)i};
        if (o % WC_ENTRIES == WC_ENTRIES - 1) {
            size_t first = o + 1 - WC_ENTRIES;
            if (first >= start[b])
                stream_line(ent + first, line);
            else // the line begins in the previous bucket: write only this bucket's part
                for (size_t k = start[b]; k <= o; k++)
                    ent[k] = line[k % WC_ENTRIES];
        }
    }
    for (size_t b = 0; b < nb; b++) { // the partly filled last lines
        size_t end = off[b], first = end - end % WC_ENTRIES;
        const struct entry *line = buf + b * WC_ENTRIES;
        for (size_t k = first > start[b] ? first : start[b]; k < end; k++)
            ent[k] = line[k % WC_ENTRIES];
    }
    stream_fence();
}

// Owner: bucket this round's input (entries), then scan every bucket. On one rank the
// input is the caller's whole array and the round's records are picked here; each of
// them starts as its own keeper.
static int owner_work(struct exact_work *w, unsigned round)
{
    const struct dedupe_record *in = w->in;
    size_t nin = w->nin, nb = w->buckets, *off = w->bucket_off;
    unsigned bits = w->bucket_bits, rounds = w->size == 1 ? w->rounds : 1;
    uint64_t size = (uint64_t)w->size;
    memset(off, 0, (nb + 1) * sizeof *off);
    if (rounds == 1) {
        for (size_t i = 0; i < nin; i++)
            off[bucket_of(in[i].hash_lo, size, bits)]++;
    } else {
        for (size_t i = 0; i < nin; i++)
            if (round_of(in[i].hash_hi, rounds) == round)
                off[bucket_of(in[i].hash_lo, size, bits)]++;
    }
    size_t sum = 0, max_bucket = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t c = off[b];
        off[b] = sum;
        sum += c;
        max_bucket = c > max_bucket ? c : max_bucket;
    }
    off[nb] = sum;
    int rc = ensure_cap((void **)&w->entries, &w->entries_cap, sum, sizeof *w->entries);
    if (rc == PM_OK)
        rc = ensure_cap((void **)&w->table, &w->table_cap,
                        (size_t)1 << ceil_log2(2 * max_bucket + 16), sizeof *w->table);
    if (rc == PM_OK && w->cands_cap < max_bucket) {
        free(w->cands);
        free(w->members);
        w->cands = malloc((max_bucket + 1) * sizeof *w->cands);
        w->members = malloc((max_bucket + 1) * sizeof *w->members);
        w->cands_cap = w->cands && w->members ? max_bucket : 0;
        rc = w->cands_cap ? PM_OK : PM_ERR_NOMEM;
    }
    if (rc)
        return rc;
    scatter_entries(w, round, rounds);
    for (size_t b = 0; b < nb && rc == PM_OK; b++) {
        size_t first = w->bucket_start[b], count = off[b] - first;
        if (count > 1)
            rc = scan_bucket(w, w->entries + first, count);
    }
    return rc;
}

// Sender of input position pos (rdisp is ascending).
static int sender_of(const struct exact_work *w, size_t pos)
{
    int lo = 0, hi = w->size - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((size_t)w->rdisp[mid] <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// Owner: the queued answers go to their senders, which write them into keeper.
static int return_answers(struct exact_work *w)
{
    int size = w->size;
    memset(w->ecount, 0, (size_t)size * sizeof *w->ecount);
    for (size_t i = 0; i < w->emit_n; i++)
        w->ecount[sender_of(w, w->emit[i].slot)]++;
    for (int s = 0, off = 0; s < size; s++) {
        w->edisp[s] = off;
        off += w->ecount[s];
    }
    int rc = PM_OK;
    struct reply *sorted = malloc((w->emit_n ? w->emit_n : 1) * sizeof *sorted);
    if (!sorted)
        rc = PM_ERR_NOMEM;
    else {
        int *fill = w->bcount; // scratch until the counts exchange below
        memcpy(fill, w->edisp, (size_t)size * sizeof *fill);
        for (size_t i = 0; i < w->emit_n; i++) {
            int s = sender_of(w, w->emit[i].slot);
            sorted[fill[s]++] =
                (struct reply){w->emit[i].slot - (size_t)w->rdisp[s], w->emit[i].keeper};
        }
    }
    if ((rc = all_agree(rc, w->comm))) {
        free(sorted);
        return rc;
    }
    MPI_CHECK(MPI_Alltoall(w->ecount, 1, MPI_INT, w->bcount, 1, MPI_INT, w->comm));
    size_t nback = 0;
    for (int o = 0; o < size; o++) {
        w->bdisp[o] = (int)nback;
        nback += (size_t)w->bcount[o];
    }
    struct reply *back = malloc((nback ? nback : 1) * sizeof *back);
    if ((rc = all_agree(back ? PM_OK : PM_ERR_NOMEM, w->comm))) {
        free(sorted);
        free(back);
        return rc;
    }
    MPI_Datatype reply_type;
    MPI_CHECK(MPI_Type_contiguous(2, MPI_UINT64_T, &reply_type));
    MPI_CHECK(MPI_Type_commit(&reply_type));
    MPI_CHECK(MPI_Alltoallv(sorted, w->ecount, w->edisp, reply_type, back, w->bcount, w->bdisp,
                            reply_type, w->comm));
    MPI_CHECK(MPI_Type_free(&reply_type));
    for (int o = 0; o < size; o++)
        for (size_t i = (size_t)w->bdisp[o]; i < (size_t)w->bdisp[o] + (size_t)w->bcount[o]; i++)
            w->keeper[w->slot_of[(size_t)w->sdisp[o] + back[i].slot]] = back[i].keeper;
    free(sorted);
    free(back);
    return PM_OK;
}

// More than one rank, one round: scatter this round's records by owner (each starts as
// its own keeper), exchange, do the owner's work, return the answers.
static int exchange_round(struct exact_work *w, const struct dedupe_record *recs, size_t n,
                          unsigned round)
{
    int size = w->size;
    unsigned rounds = w->rounds;
    memset(w->scount, 0, (size_t)size * sizeof *w->scount);
    for (size_t i = 0; i < n; i++)
        if (rounds == 1 || round_of(recs[i].hash_hi, rounds) == round)
            w->scount[owner_of(recs[i].hash_lo, size)]++;
    for (int o = 0, off = 0; o < size; o++) {
        w->sdisp[o] = off;
        off += w->scount[o];
    }
    int *fill = w->ecount; // scratch
    memcpy(fill, w->sdisp, (size_t)size * sizeof *fill);
    for (size_t i = 0; i < n; i++) {
        if (rounds > 1 && round_of(recs[i].hash_hi, rounds) != round)
            continue;
        size_t s = (size_t)fill[owner_of(recs[i].hash_lo, size)]++;
        w->sendbuf[s] = recs[i];
        w->slot_of[s] = (uint32_t)i;
        stream_u64(&w->keeper[i], recs[i].id);
    }
    stream_fence();
    MPI_CHECK(MPI_Alltoall(w->scount, 1, MPI_INT, w->rcount, 1, MPI_INT, w->comm));
    size_t nrecv = 0;
    for (int s = 0; s < size; s++) {
        w->rdisp[s] = (int)nrecv;
        nrecv += (size_t)w->rcount[s];
    }
    int rc = nrecv > SLOT_REF - 1 ? PM_ERR_LIMIT : PM_OK; // positions must fit a slot
    if (rc == PM_OK)
        rc = ensure_cap((void **)&w->recvbuf, &w->recv_cap, nrecv, sizeof *w->recvbuf);
    if ((rc = all_agree(rc, w->comm)))
        return rc;
    MPI_Datatype rec_type;
    MPI_CHECK(MPI_Type_contiguous(3, MPI_UINT64_T, &rec_type));
    MPI_CHECK(MPI_Type_commit(&rec_type));
    MPI_CHECK(MPI_Alltoallv(w->sendbuf, w->scount, w->sdisp, rec_type, w->recvbuf, w->rcount,
                            w->rdisp, rec_type, w->comm));
    MPI_CHECK(MPI_Type_free(&rec_type));
    w->in = w->recvbuf;
    w->nin = nrecv;
    w->emit_n = 0;
    rc = owner_work(w, round);
    if ((rc = all_agree(rc, w->comm)))
        return rc;
    return return_answers(w);
}

int dedupe_exact_run(const struct dedupe_record *recs, size_t n, uint64_t *keeper,
                     MPI_Comm comm, size_t memory_limit, struct dedupe_exact_stats *stats,
                     struct pm_error *err)
{
    struct exact_work w;
    memset(&w, 0, sizeof w);
    w.comm = comm;
    w.keeper = keeper;
    MPI_CHECK(MPI_Comm_size(comm, &w.size));
    MPI_CHECK(MPI_Comm_rank(comm, &w.rank));
    uint64_t local = n, total = 0, most = 0;
    MPI_CHECK(MPI_Allreduce(&local, &total, 1, MPI_UINT64_T, MPI_SUM, comm));
    MPI_CHECK(MPI_Allreduce(&local, &most, 1, MPI_UINT64_T, MPI_MAX, comm));
    if (most > SLOT_REF - 1)
        return pm_error_set(err, PM_ERR_LIMIT,
                            "exact dedupe: %llu records on one rank (at most 2^31 - 2)",
                            (unsigned long long)most);

    // Owner-side bytes per record for one round: the received record (24, none on one
    // rank), its 8-byte bucket entry, and its share of the answers travelling back (16 per
    // duplicate; at most one per record, counted as 8).
    double per_record = w.size == 1 ? 16.0 : 40.0;
    double per_rank = (double)total / w.size * 1.25 * per_record;
    w.rounds = 1;
    if (memory_limit && per_rank > (double)memory_limit)
        w.rounds = (unsigned)(per_rank / (double)memory_limit) + 1;
    uint64_t per_owner = total / (uint64_t)w.size / w.rounds;
    w.bucket_bits = per_owner > TARGET_BUCKET ? ceil_log2(per_owner / TARGET_BUCKET) : 0;
    if (w.bucket_bits > MAX_BUCKET_BITS)
        w.bucket_bits = MAX_BUCKET_BITS;
    w.buckets = (size_t)1 << w.bucket_bits;

    int rc = PM_OK;
    size_t sz = (size_t)w.size;
    w.bucket_off = malloc((w.buckets + 1) * sizeof *w.bucket_off);
    w.bucket_start = malloc((w.buckets + 1) * sizeof *w.bucket_start);
    w.wc_buf = aligned_alloc(64, w.buckets * WC_ENTRIES * sizeof *w.wc_buf);
    if (!w.bucket_off || !w.bucket_start || !w.wc_buf)
        rc = PM_ERR_NOMEM;
    if (w.size > 1) {
        // The send buffer holds the largest round.
        size_t send_cap = n;
        if (w.rounds > 1 && rc == PM_OK) {
            size_t *per = calloc(w.rounds, sizeof *per);
            if (!per)
                rc = PM_ERR_NOMEM;
            else {
                for (size_t i = 0; i < n; i++)
                    per[round_of(recs[i].hash_hi, w.rounds)]++;
                send_cap = 0;
                for (unsigned r = 0; r < w.rounds; r++)
                    send_cap = per[r] > send_cap ? per[r] : send_cap;
                free(per);
            }
        }
        w.sendbuf = big_alloc((send_cap ? send_cap : 1) * sizeof *w.sendbuf);
        w.slot_of = big_alloc((send_cap ? send_cap : 1) * sizeof *w.slot_of);
        w.scount = calloc(sz, sizeof(int));
        w.sdisp = calloc(sz, sizeof(int));
        w.rcount = calloc(sz, sizeof(int));
        w.rdisp = calloc(sz, sizeof(int));
        w.ecount = calloc(sz, sizeof(int));
        w.edisp = calloc(sz, sizeof(int));
        w.bcount = calloc(sz, sizeof(int));
        w.bdisp = calloc(sz, sizeof(int));
        if (rc == PM_OK && !(w.sendbuf && w.slot_of && w.scount && w.sdisp && w.rcount &&
                             w.rdisp && w.ecount && w.edisp && w.bcount && w.bdisp))
            rc = PM_ERR_NOMEM;
    }
    rc = all_agree(rc, comm);
    if (w.size == 1) {
        w.in = recs;
        w.nin = n;
        for (unsigned round = 0; rc == PM_OK && round < w.rounds; round++)
            rc = owner_work(&w, round);
    } else {
        for (unsigned round = 0; rc == PM_OK && round < w.rounds; round++)
            rc = exchange_round(&w, recs, n, round);
    }
    uint64_t sums[2] = {w.ndups, w.ngroups}, gsums[2] = {0, 0};
    if (rc == PM_OK)
        MPI_CHECK(MPI_Allreduce(sums, gsums, 2, MPI_UINT64_T, MPI_SUM, comm));
    exact_work_release(&w);
    if (rc == PM_ERR_LIMIT)
        return pm_error_set(err, rc,
                            "exact dedupe: %llu records: one rank's share of a round exceeds "
                            "2^31 - 2 records; lower the memory limit",
                            (unsigned long long)total);
    if (rc)
        return pm_error_set(err, rc, "exact dedupe: out of memory for %llu records",
                            (unsigned long long)total);
    if (stats)
        *stats = (struct dedupe_exact_stats){total, gsums[0], gsums[1], w.rounds};
    return PM_OK;
}
