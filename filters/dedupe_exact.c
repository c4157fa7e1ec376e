#include "dedupe_exact.h"

#include "pm_bigmem.h"
#include "pm_mpi.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

// How the work is laid out (docs/internals/dedupe.md, "Exact dedupe"):
//
// - Records are grouped into *buckets* of a few thousand by their hash: the owner rank is
//   mulhi(hash_lo, size) and the bucket inside it the top bits of hash_lo * size (hash_lo's
//   position inside the owner's range: the low half of the product whose high half chose
//   the owner). One bucket's hash table fits in L3. Nothing is sorted.
// - Per bucket, records go into an open-addressing table keyed by a 32-bit fingerprint of
//   the 128-bit hash. A record whose fingerprint is already there is a *candidate*; only
//   candidates (the duplicates, plus a rare fingerprint collision) are compared with full
//   records. A slot refers to its group's current keeper (lowest id); after the bucket,
//   each group member that is not the keeper gets the keeper's id. A hash that shares its
//   slot's fingerprint but not its hash forms an *extra group* of that slot.
// - Every record's keeper starts as its own id; only duplicates are answered.
// - One rank (single_round): the caller's array is the input and is only ever read in
//   sequence or one 64 Ki-record range at a time (random reads over all of it were TLB
//   misses). Each record gets an 8-byte entry (fingerprint, index) written into its bucket;
//   phase 1 scans each bucket's entries and *marks* the records whose fingerprint repeats;
//   phase 2 copies the marked records out of the input range by range into a spill,
//   bucket after bucket, compares them there with full hashes (the bucket scan above) and
//   queues the answers. With one round all of this lives in keeper[] itself (the arena),
//   which gets the ids and answers last: no fresh memory beyond the answers.
// - Several ranks (exchange_round): the same two phases with (owner, bucket) partitions.
//   Each rank writes its records' entries into the arena in partition order (one streaming
//   pass); phase 1 sends them in steps of bucket ranges straight from the arena (each
//   owner's part of a step is contiguous: no gather), the owner marks repeated
//   fingerprints in a bitmap that goes back to the sender, which keeps its marked positions
//   and moves them to the arena's start in partition order; the marked records are copied
//   out of the input in position order into the spill (one pass when it fits) and sent to
//   their owners in steps; the owner compares them in cache and the answers (the record's
//   place in the sender's marked records for that owner, and the keeper) go back at the end
//   of each step, into the spill's room. A rank's own part is never sent: it is read or
//   copied locally.
// Memory grows by 16 bytes per duplicate on one rank (8 more per record with rounds: the
// arena); on several ranks by fixed step buffers (a few tens of MiB at most) while the
// marked records fit in the arena in one pass, else 16 per marked record more; rounds by
// hash_hi range bound it.

// Most records per bucket aimed at: 48-96 Ki, a table of at most 128 Ki 8-byte slots (1
// MiB, in L3); 512 buckets at 50 M records (fewer write streams: measured faster than 1 Ki
// and 2 Ki buckets).
#define TARGET_BUCKET 98304u
#define MAX_BUCKET_BITS 16u
#define SLOT_FLAG 0x80000000u // table slot: the group has at least two records
#define SLOT_REF 0x7fffffffu  // table slot: 1 + the position of the group's keeper
#define EXTRA_REF 0x80000000u // group reference of a member: an extra group's index
#define PREFETCH_AHEAD 32u
#define WC_ENTRIES 8u // entries per 64-byte cache line

struct entry {
    uint32_t fp;  // fingerprint of the 128-bit hash
    uint32_t pos; // position of the record in the input
};

struct cand {
    uint32_t pos;   // the record
    uint32_t group; // the table slot of its group, or EXTRA_REF | extra group index
};

// A group whose hash shares its fingerprint (and bucket) with a table slot's group.
struct extra_group {
    uint32_t slot;     // the table slot
    uint32_t keep;     // position of the group's keeper so far
    uint32_t has_dups; // the first record is listed as a member
};

struct reply {
    uint64_t slot;   // position in the sender's partition order for this owner (the
                     // sender's rank in the top 32 bits until sorted by sender)
    uint64_t keeper; // id of the keeper
};

// Work arrays come from pm_big_alloc (common/pm_bigmem.h): large ones are mapped on their
// own with huge pages and go back to the system when freed, so repeated calls
// (dedupe_spill's parts) keep the peak RSS at one call's; pages never written are never
// resident, so a buffer may be reserved for its upper bound.
// Stores that bypass the cache (data written once and read much later); plain stores where
// SSE2 is missing. stream_line: dst and src 64-byte aligned.
static void stream_u64(uint64_t *dst, uint64_t v)
{
#ifdef __SSE2__
    _mm_stream_si64((long long *)dst, (long long)v);
#else
    *dst = v;
#endif
}

static void stream_line(void *dst, const void *src)
{
#ifdef __SSE2__
    const __m128i *s = src;
    __m128i *d = dst;
    _mm_stream_si128(d, _mm_load_si128(s));
    _mm_stream_si128(d + 1, _mm_load_si128(s + 1));
    _mm_stream_si128(d + 2, _mm_load_si128(s + 2));
    _mm_stream_si128(d + 3, _mm_load_si128(s + 3));
#else
    memcpy(dst, src, 64);
#endif
}

static void stream_fence(void)
{
#ifdef __SSE2__
    _mm_sfence();
#endif
}

// The one-rank arena holds entries, marks, spilled records and finally keeper values: keep
// the compiler from moving accesses of one phase's type across the next phase's.
static void arena_phase_barrier(void)
{
    __asm__ __volatile__("" ::: "memory");
}

static unsigned round_of(uint64_t hash_hi, unsigned rounds)
{
    return (unsigned)(((unsigned __int128)hash_hi * rounds) >> 64);
}

// (owner, bucket) as one number: owner * buckets + bucket = mulhi(hash_lo, size * buckets).
static size_t partition_of(uint64_t hash_lo, uint64_t partitions)
{
    return (size_t)(((unsigned __int128)hash_lo * partitions) >> 64);
}

// All four 32-bit words of the hash folded: equal hashes have equal fingerprints.
static uint32_t fingerprint(const struct dedupe_record *r)
{
    uint64_t x = r->hash_hi ^ r->hash_lo;
    return (uint32_t)(x ^ (x >> 32));
}

static int same_hash(const struct dedupe_record *x, const struct dedupe_record *y)
{
    return x->hash_lo == y->hash_lo && x->hash_hi == y->hash_hi;
}

static unsigned ceil_log2(uint64_t x)
{
    unsigned b = 0;
    while (b < 63 && ((uint64_t)1 << b) < x)
        b++;
    return b;
}

// Collectives that wait without spinning (pm_mpi_wait_idle): the ranks reach each step at
// different times on a shared machine, and a spinning wait costs a core.
static void alltoallv_idle(const void *sbuf, const int *scount, const int *sdisp, MPI_Datatype st,
                           void *rbuf, const int *rcount, const int *rdisp, MPI_Datatype rt,
                           MPI_Comm comm)
{
    MPI_Request req;
    MPI_CHECK(MPI_Ialltoallv(sbuf, scount, sdisp, st, rbuf, rcount, rdisp, rt, comm, &req));
    pm_mpi_wait_idle(&req);
}

static void alltoall_idle(const void *sbuf, int count, MPI_Datatype type, void *rbuf, MPI_Comm comm)
{
    MPI_Request req;
    MPI_CHECK(MPI_Ialltoall(sbuf, count, type, rbuf, count, type, comm, &req));
    pm_mpi_wait_idle(&req);
}

static void allreduce_idle(const void *sbuf, void *rbuf, int count, MPI_Datatype type, MPI_Op op,
                           MPI_Comm comm)
{
    MPI_Request req;
    MPI_CHECK(MPI_Iallreduce(sbuf, rbuf, count, type, op, comm, &req));
    pm_mpi_wait_idle(&req);
}

// The state of one call; buffers are sized once and reused by every round and step.
struct exact_work {
    MPI_Comm comm;
    int size, rank;
    unsigned scale; // bucket and step sizes divided by this (1; tests: PIXELMILL_DEDUPE_SCALE)
    unsigned rounds, bucket_bits;
    size_t buckets;
    uint64_t *keeper;
    struct dedupe_record *in; // records the table's positions refer to (answers on one
                              // rank are written into their id fields)
    // bucket scan
    uint64_t *table;
    size_t table_cap;
    unsigned tbits;
    struct cand *cands, *members;
    size_t nc, cands_cap;
    struct extra_group *extra;
    size_t extra_n, extra_cap;
    uint64_t ndups, ngroups;
    // one rank: bucket offsets and entries, then the records to compare
    size_t *off, *start;  // buckets + 1 each
    size_t *need_off;     // buckets + 1: marked records per bucket, then spill offsets
    struct entry *wc_buf; // buckets x WC_ENTRIES, 64-byte aligned
    struct entry *entries;
    size_t entries_cap;
    uint32_t *marks;  // in the arena: positions of the marked records, then spill indices
    uint32_t *sorted; // in the arena: the marked positions by position range
    size_t nmarks;
    size_t *range_off; // position ranges + 1: marks per range, then offsets
    size_t range_cap;
    struct dedupe_record *spill_own; // the spill when the entries' memory is too small
    size_t spill_own_cap;
    // several ranks (off, start and need_off above are per (owner, bucket) partition)
    int *part_count;     // partitions: this rank's records, then its marked records, per partition
    int *bucket_count;   // size x buckets: records, then marked records, from sender s in bucket b
    uint64_t *step_need; // buckets: the most marked records any rank sends or receives
    size_t *step_work;   // 2 x buckets: per phase-2 step, records to send and its spill pass
    struct entry *recv_ent;
    size_t recv_ent_cap;
    uint64_t *bits, *bits_back; // marks of the received entries; this rank's entries' marks
    size_t bits_cap, bits_back_cap;
    struct dedupe_record *spill_send, *recv_chunk; // own arrays, when needed
    size_t spill_send_cap, recv_cap;
    struct dedupe_record *chunk; // phase 2's receive chunk: recv_chunk or room in the arena
    int *scount, *sdisp, *rcount, *rdisp; // one step
    int *xcount, *xdisp, *ycount, *ydisp; // one step's marks going back
    size_t *recv_done;                    // per sender: records received in earlier steps
    size_t *run_pos;                      // per sender: next position while scanning
    struct reply *emit; // the answers: queued (one rank; several: one step's, per sender),
                        // then this rank's own for keeper_finish
    size_t emit_n, emit_cap;
    size_t *emit_base, *emit_fill; // several ranks: per sender, its part of emit[]
    struct reply *back; // several ranks: the answers for this rank's records, back_n of them
    size_t back_n;
    struct reply *emit_buf, *back_buf; // the answers' own arrays, when they need one
    size_t emit_buf_cap, back_buf_cap;
};

static void exact_work_release(struct exact_work *w)
{
    pm_big_free(w->table);
    free(w->cands);
    free(w->members);
    free(w->extra);
    free(w->off);
    free(w->start);
    free(w->wc_buf);
    pm_big_free(w->entries);
    free(w->need_off);
    pm_big_free(w->range_off);
    pm_big_free(w->spill_own);
    free(w->part_count);
    free(w->bucket_count);
    free(w->step_need);
    free(w->step_work);
    pm_big_free(w->recv_ent);
    pm_big_free(w->bits);
    pm_big_free(w->bits_back);
    pm_big_free(w->spill_send);
    pm_big_free(w->recv_chunk);
    free(w->scount);
    free(w->sdisp);
    free(w->rcount);
    free(w->rdisp);
    free(w->xcount);
    free(w->xdisp);
    free(w->ycount);
    free(w->ydisp);
    free(w->recv_done);
    free(w->run_pos);
    pm_big_free(w->emit_buf);
    pm_big_free(w->back_buf);
    free(w->emit_base);
    free(w->emit_fill);
}

// Make *buf hold `want` elements of `elem` bytes (contents are not kept).
static int ensure_cap(void **buf, size_t *have, size_t want, size_t elem)
{
    if (*have >= want && *buf)
        return PM_OK;
    pm_big_free(*buf);
    *buf = pm_big_alloc((want ? want : 1) * elem);
    *have = *buf ? want : 0;
    return *buf ? PM_OK : PM_ERR_NOMEM;
}

// Room for the table and candidate lists of buckets of up to max_bucket records.
static int ensure_scan_cap(struct exact_work *w, size_t max_bucket)
{
    int rc = ensure_cap((void **)&w->table, &w->table_cap,
                        (size_t)1 << ceil_log2(2 * max_bucket + 16), sizeof *w->table);
    if (rc == PM_OK && w->cands_cap < max_bucket) {
        free(w->cands);
        free(w->members);
        w->cands = malloc((max_bucket + 1) * sizeof *w->cands);
        w->members = malloc((max_bucket + 1) * sizeof *w->members);
        w->cands_cap = w->cands && w->members ? max_bucket : 0;
        rc = w->cands_cap ? PM_OK : PM_ERR_NOMEM;
    }
    return rc;
}

// ---- answers ----------------------------------------------------------------------------

// The sender of receive position pos in the current step (rdisp ascending).
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

// The record at position pos of the bucket scan's input is a duplicate whose keeper has id
// `id`. On one rank the answer is written into the spilled record; on several it is queued
// for its sender (also when that is this rank).
static int emit_answer(struct exact_work *w, size_t pos, uint64_t id)
{
    if (w->size == 1) { // the spill: the record's id becomes its answer, its hash 0 (flag)
        w->in[pos] = (struct dedupe_record){0, 0, id};
        return PM_OK;
    }
    // several ranks: into sender s's part of the queue (room reserved by exchange_round;
    // answers for this rank's own records take the same way)
    int s = sender_of(w, pos);
    w->emit[w->emit_fill[s]++] = (struct reply){w->recv_done[s] + pos - (size_t)w->rdisp[s], id};
    return PM_OK;
}

// ---- one bucket -------------------------------------------------------------------------

// Start a bucket: an empty table of at least `slots` slots (a power of two, at least 16;
// ensure_scan_cap allocated 2 * the largest bucket).
static void table_begin(struct exact_work *w, size_t slots)
{
    unsigned tbits = ceil_log2(slots);
    w->tbits = tbits < 4 ? 4 : tbits;
    memset(w->table, 0, ((size_t)1 << w->tbits) * sizeof *w->table);
    w->nc = 0;
}

// Start a bucket of `count` full records: a table of at least 4/3 * count slots (filled at
// most to 3/4).
static void bucket_begin(struct exact_work *w, size_t count)
{
    table_begin(w, count + count / 3);
}

#define TABLE_AHEAD 16u // entries whose table slot is prefetched ahead of the insert

// Fetch the table slot where fingerprint fp's probe starts into the cache.
static inline void table_prefetch(const struct exact_work *w, uint32_t fp)
{
    __builtin_prefetch(&w->table[(uint32_t)(((uint64_t)(fp * 0x9e3779b1u) << w->tbits) >> 32)]);
}

// Insert the record at input position pos with fingerprint fp and return 0, or, when the
// fingerprint is already in the table, return that slot's value (nonzero) and its index.
static inline uint64_t bucket_probe(struct exact_work *w, uint32_t fp, uint32_t pos,
                                    uint32_t *slot_out)
{
    uint64_t *table = w->table;
    uint32_t mask = (uint32_t)(((uint64_t)1 << w->tbits) - 1);
    uint32_t slot = (uint32_t)(((uint64_t)(fp * 0x9e3779b1u) << w->tbits) >> 32);
    for (;;) {
        uint64_t t = table[slot];
        if (!t) {
            table[slot] = (uint64_t)fp << 32 | (pos + 1u);
            return 0;
        }
        if ((uint32_t)(t >> 32) == fp) {
            *slot_out = slot;
            return t;
        }
        slot = (slot + 1) & mask;
    }
}

// Insert the record at input position pos with fingerprint fp; a fingerprint already in the
// table makes it a candidate of that slot.
static inline void bucket_insert(struct exact_work *w, uint32_t fp, uint32_t pos)
{
    uint32_t slot;
    if (bucket_probe(w, fp, pos, &slot))
        w->cands[w->nc++] = (struct cand){pos, slot};
}

// Candidate pos shares its fingerprint with table slot `slot` but not its hash. Join the
// matching group among the slot's extra groups, or start one. Returns the extra group's
// index, or -1 when it started one (no duplicate yet), -2 when out of memory.
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

// Finish a bucket: check the candidates against the full records (read at random on one
// rank: prefetched ahead), form the groups and answer every member that is not its
// group's keeper.
static int bucket_end(struct exact_work *w)
{
    const struct dedupe_record *in = w->in;
    uint64_t *table = w->table;
    const struct cand *cand = w->cands;
    size_t nc = w->nc, nm = 0;
    struct cand *mem = w->members;
    uint64_t groups = 0, dups = 0;
    if (!nc)
        return PM_OK;
    w->extra_n = 0;
    for (size_t c = 0; c < nc + PREFETCH_AHEAD; c++) {
        if (c + PREFETCH_AHEAD < nc) {
            const struct cand *p = &cand[c + PREFETCH_AHEAD];
            __builtin_prefetch(&in[p->pos]);
            __builtin_prefetch(&in[((uint32_t)table[p->group] & SLOT_REF) - 1]);
        }
        if (c < PREFETCH_AHEAD) // the first rounds only prefetch
            continue;
        const struct cand *cd = &cand[c - PREFETCH_AHEAD];
        uint64_t t = table[cd->group];
        uint32_t ref = (uint32_t)t, pos = cd->pos, k = (ref & SLOT_REF) - 1;
        if (same_hash(&in[k], &in[pos])) {
            if (!(ref & SLOT_FLAG)) {
                mem[nm++] = (struct cand){k, cd->group};
                groups++;
            }
            mem[nm++] = *cd;
            dups++;
            uint32_t best = in[pos].id < in[k].id ? pos : k;
            table[cd->group] = (t & 0xffffffff00000000ULL) | SLOT_FLAG | (best + 1);
            continue;
        }
        long x = join_extra(w, pos, cd->group);
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
        uint32_t g = mem[m].group;
        size_t k =
            g & EXTRA_REF ? w->extra[g & ~EXTRA_REF].keep : ((uint32_t)table[g] & SLOT_REF) - 1;
        if (mem[m].pos != k && emit_answer(w, mem[m].pos, in[k].id))
            return PM_ERR_NOMEM;
    }
    return PM_OK;
}

// ---- one rank ---------------------------------------------------------------------------

// Write each of this round's records' entry into its bucket in ent[] (one of nb; on several
// ranks the (owner, bucket) partitions; w->off[b]: the start of bucket b, afterwards its end;
// w->start keeps the starts; ent 64-byte aligned) and, with write_keeper, set its keeper to its own
// id. The entries go through a 64-byte buffer per bucket (in L2) and out a whole cache line at a
// time with non-temporal stores: no read-for-ownership of the destination and one store stream at a
// time instead of thousands of partial lines.
static void scatter_entries(struct exact_work *w, const struct dedupe_record *in, size_t n,
                            unsigned round, struct entry *ent, int write_keeper, size_t nb)
{
    size_t *off = w->off, *start = w->start;
    struct entry *buf = w->wc_buf;
    unsigned rounds = w->rounds;
    memcpy(start, off, (nb + 1) * sizeof *start);
    for (size_t i = 0; i < n; i++) {
        const struct dedupe_record *r = &in[i];
        if (rounds > 1 && round_of(r->hash_hi, rounds) != round)
            continue;
        if (write_keeper)
            stream_u64(&w->keeper[i], r->id);
        size_t b = partition_of(r->hash_lo, nb), o = off[b]++;
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

// Phase 1 of a bucket on one rank: insert the record at input position pos with
// fingerprint fp. A fingerprint already in the table *marks* the record, and the first
// record that had it, as to be compared: their positions are appended to w->marks. Returns
// the records newly marked.
static inline size_t bucket_mark(struct exact_work *w, uint32_t fp, uint32_t pos)
{
    uint32_t slot;
    uint64_t t = bucket_probe(w, fp, pos, &slot);
    if (!t)
        return 0;
    w->marks[w->nmarks++] = pos;
    if (t & SLOT_FLAG)
        return 1;
    w->marks[w->nmarks++] = ((uint32_t)t & SLOT_REF) - 1;
    w->table[slot] = t | SLOT_FLAG;
    return 2;
}

// Room for `more` queued answers (one rank), the queued ones kept.
static int reserve_answers(struct exact_work *w, size_t more)
{
    if (w->emit_n + more <= w->emit_cap)
        return PM_OK;
    size_t cap = w->emit_n + more;
    struct reply *e = pm_big_alloc(cap * sizeof *e);
    if (!e)
        return PM_ERR_NOMEM;
    if (w->emit_n)
        memcpy(e, w->emit, w->emit_n * sizeof *e);
    pm_big_free(w->emit_buf);
    w->emit = w->emit_buf = e;
    w->emit_cap = w->emit_buf_cap = cap;
    return PM_OK;
}

// Phase 2 on one rank, for buckets [b0, b1): copy their marked records from the input into
// the spill, bucket after bucket (need_off: each bucket's start in the spill, relative to
// this pass), compare them bucket by bucket with the full hashes (answers land in the
// spilled records, see emit_answer), and queue the answers (w->emit). The input is visited
// one position range at a time (w->sorted), so its pages stay in the TLB.
static int spill_pass(struct exact_work *w, const struct dedupe_record *recs,
                      struct dedupe_record *spill, size_t b0, size_t b1)
{
    size_t nb = w->buckets, *cur = w->off, nm = w->nmarks;
    const size_t *soff = w->need_off;
    const uint32_t *pos = w->sorted;
    uint32_t *sidx = w->marks;
    memcpy(cur + b0, soff + b0, (b1 - b0) * sizeof *cur);
    for (size_t k = 0; k < nm; k++) {
        if (k + PREFETCH_AHEAD < nm)
            __builtin_prefetch(&recs[pos[k + PREFETCH_AHEAD]]);
        const struct dedupe_record *r = &recs[pos[k]];
        size_t b = partition_of(r->hash_lo, nb);
        sidx[k] = UINT32_MAX;
        if (b >= b0 && b < b1) {
            sidx[k] = (uint32_t)cur[b]++;
            spill[sidx[k]] = *r;
        }
    }
    int rc = PM_OK;
    uint64_t dups_before = w->ndups;
    for (size_t b = b0; b < b1 && rc == PM_OK; b++) {
        size_t count = soff[b + 1] - soff[b];
        if (count < 2)
            continue;
        w->in = spill + soff[b];
        bucket_begin(w, count);
        for (size_t e = 0; e < count; e++)
            bucket_insert(w, fingerprint(&w->in[e]), (uint32_t)e);
        rc = bucket_end(w);
    }
    // Answered records have hash 0; a real zero hash may answer its own id (no change), so
    // the count of answers is bounded by the marked records, not by the duplicates.
    if (rc == PM_OK)
        rc = reserve_answers(w, (size_t)(w->ndups - dups_before));
    for (size_t k = 0; k < nm && rc == PM_OK; k++) {
        if (k + PREFETCH_AHEAD < nm && sidx[k + PREFETCH_AHEAD] != UINT32_MAX)
            __builtin_prefetch(&spill[sidx[k + PREFETCH_AHEAD]]);
        const struct dedupe_record *r = sidx[k] != UINT32_MAX ? &spill[sidx[k]] : NULL;
        if (!r || r->hash_hi || r->hash_lo)
            continue;
        if (w->emit_n == w->emit_cap && (rc = reserve_answers(w, nm - k)))
            break;
        w->emit[w->emit_n++] = (struct reply){pos[k], r->id};
    }
    return rc;
}

// The end of a round: with own_ids (the arena was keeper[]) every record's own id, then the
// queued answers (emit[]: input position, keeper id). On several ranks the answers may lie
// in keeper[] itself (the arena's dead spill room): own ids go everywhere else first, then
// the answers are applied, those whose record lies under the answers themselves moved to
// the front, the words they freed get their own ids, and again until none are left (or, when
// every answer left lands under the answers, they are copied out). PM_ERR_NOMEM: that copy
// failed.
static int keeper_finish(struct exact_work *w, const struct dedupe_record *recs, size_t n,
                         int own_ids)
{
    uint64_t *keeper = w->keeper;
    struct reply *a = w->emit, *copy = NULL;
    size_t m = w->emit_n, lo = 0, hi = 0; // the answers occupy keeper words [lo, hi)
    if (own_ids && m && (uintptr_t)a >= (uintptr_t)keeper &&
        (uintptr_t)a < (uintptr_t)(keeper + n)) {
        lo = (size_t)((uint64_t *)(void *)a - keeper);
        hi = lo + 2 * m;
    }
    if (own_ids) {
        for (size_t i = 0; i < lo; i++)
            stream_u64(&keeper[i], recs[i].id);
        for (size_t i = hi; i < n; i++)
            stream_u64(&keeper[i], recs[i].id);
        stream_fence();
    }
    while (m) {
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            struct reply r = a[i];
            if (r.slot >= lo && r.slot < hi)
                a[k++] = r;
            else
                keeper[r.slot] = r.keeper;
        }
        if (k == m) { // every answer left lands under the answers: copy them out
            if (!(copy = malloc(m * sizeof *copy)))
                return PM_ERR_NOMEM;
            memcpy(copy, a, m * sizeof *copy);
            a = copy;
            k = 0; // all their words get own ids; the next pass applies every answer
        }
        arena_phase_barrier();
        for (size_t i = lo + 2 * k; i < hi; i++)
            keeper[i] = recs[i].id;
        arena_phase_barrier();
        if (a == copy && lo != hi)
            lo = hi = 0; // m unchanged
        else
            m = k;
        hi = lo + 2 * k;
    }
    free(copy);
    return PM_OK;
}

#define RANGE_BITS 16u // position range of the spill's input reads: 64 Ki records, 1.5 MiB

// Count this round's records per partition (nparts: the buckets on one rank, (owner,
// bucket) on several) and turn w->off into the partitions' starts (off[nparts]: the
// total); the arena for the round: keeper[] with one round, else w->entries.
static int count_round(struct exact_work *w, const struct dedupe_record *recs, size_t n,
                       unsigned round, size_t nparts, uint64_t **arena, size_t *words)
{
    size_t *off = w->off, sum = 0;
    memset(off, 0, (nparts + 1) * sizeof *off);
    for (size_t i = 0; i < n; i++)
        if (w->rounds == 1 || round_of(recs[i].hash_hi, w->rounds) == round)
            off[partition_of(recs[i].hash_lo, nparts)]++;
    for (size_t p = 0; p < nparts; p++) {
        size_t c = off[p];
        off[p] = sum;
        sum += c;
    }
    off[nparts] = sum;
    *arena = w->keeper;
    *words = n;
    if (w->rounds == 1)
        return PM_OK;
    int rc = ensure_cap((void **)&w->entries, &w->entries_cap, sum, sizeof *w->entries);
    *arena = (uint64_t *)w->entries;
    *words = w->entries_cap;
    return rc;
}

// One round on one rank. Phase 1 marks, bucket by bucket, the records whose fingerprint
// repeats inside their bucket (from the 8-byte entries alone); phase 2 copies just those
// records out of the input, one position range after another (no random reads over the
// whole of the caller's array), and compares them with full hashes in cache.
//
// Memory: one *arena* of 8 bytes per record holds the entries, then the marks (4 bytes per
// marked record, written behind the entries being read), the marks by range (4 more) and
// the spill (24 per marked record, when it fits; else passes over bucket ranges). With one
// round the arena is keeper[] itself (fresh memory is the dearest thing here: no page of
// it is touched twice), and keeper[] gets its ids after the spill; with rounds it is a
// separate array (keeper[] holds earlier rounds' answers).
static int single_round(struct exact_work *w, const struct dedupe_record *recs, size_t n,
                        unsigned round)
{
    size_t nb = w->buckets, *off = w->off, words, max_bucket = 0;
    size_t ranges = (n >> RANGE_BITS) + 1;
    uint64_t *arena;
    int in_keeper = w->rounds == 1, rc = count_round(w, recs, n, round, nb, &arena, &words);
    for (size_t b = 0; b < nb; b++)
        max_bucket = off[b + 1] - off[b] > max_bucket ? off[b + 1] - off[b] : max_bucket;
    if (rc == PM_OK)
        rc = ensure_scan_cap(w, max_bucket);
    if (rc == PM_OK)
        rc = ensure_cap((void **)&w->range_off, &w->range_cap, ranges + 1, sizeof *w->range_off);
    if (rc)
        return rc;
    // Entries are numbered from `shift` so that their 64-byte lines are aligned: entry e is
    // at arena + e - shift (the numbers below shift are never used).
    size_t shift = (8 - (uintptr_t)arena / 8 % 8) % 8;
    for (size_t b = 0; b <= nb; b++)
        off[b] += shift;
    struct entry *ent = (struct entry *)(uintptr_t)((uintptr_t)arena - shift * sizeof *ent);
    scatter_entries(w, recs, n, round, ent, !in_keeper, nb);
    arena_phase_barrier();
    // Phase 1. The marks go to the arena's start: a record is marked at most once and after
    // its entry was read, so they never reach an entry not yet read.
    size_t *soff = w->need_off, max_need = 0;
    w->marks = (uint32_t *)arena;
    w->nmarks = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t first = w->start[b], count = off[b] - first, marked = 0;
        if (count >= 2) {
            // Only 8-byte entries are read here, so the table may be sparser (filled to at
            // most 1/2): fewer probes and mispredicted branches (phase 1 ~15% faster).
            table_begin(w, 2 * count);
            for (size_t e = first; e < off[b]; e++) {
                if (e + TABLE_AHEAD < off[b])
                    table_prefetch(w, ent[e + TABLE_AHEAD].fp);
                marked += bucket_mark(w, ent[e].fp, ent[e].pos);
            }
        }
        soff[b] = w->nmarks - marked;
        max_need = marked > max_need ? marked : max_need;
    }
    size_t nm = w->nmarks;
    soff[nb] = nm;
    arena_phase_barrier();
    // Room for every marked record's answer (the upper bound, reserved once: only the pages
    // written become resident, and no queue is copied while it grows).
    w->emit_n = 0;
    if (nm && (rc = reserve_answers(w, nm)))
        return rc;
    if (nm) { // the marks by position range (a stable counting pass)
        size_t *roff = w->range_off;
        memset(roff, 0, (ranges + 1) * sizeof *roff);
        for (size_t k = 0; k < nm; k++)
            roff[w->marks[k] >> RANGE_BITS]++;
        for (size_t r = 0, acc = 0; r <= ranges; r++) {
            size_t c = roff[r];
            roff[r] = acc;
            acc += c;
        }
        w->sorted = w->marks + nm;
        for (size_t k = 0; k < nm; k++)
            w->sorted[roff[w->marks[k] >> RANGE_BITS]++] = w->marks[k];
    }
    // The spill follows in the arena when a bucket's marked records fit there.
    struct dedupe_record *spill = (struct dedupe_record *)(arena + nm);
    size_t cap = (words - nm) / 3;
    if (nm && cap < max_need) {
        rc = ensure_cap((void **)&w->spill_own, &w->spill_own_cap, max_need, sizeof *spill);
        spill = w->spill_own;
        cap = max_need;
    }
    // passes over ranges of buckets whose marked records fit in the spill
    for (size_t b0 = 0, b1; nm && rc == PM_OK && b0 < nb; b0 = b1) {
        for (b1 = b0 + 1; b1 < nb && soff[b1 + 1] - soff[b0] <= cap; b1++)
            ;
        size_t base = soff[b0];
        for (size_t b = b0; b <= b1; b++) // spill positions relative to this pass
            soff[b] -= base;
        arena_phase_barrier();
        rc = spill_pass(w, recs, spill, b0, b1);
        arena_phase_barrier();
        for (size_t b = b0; b <= b1; b++)
            soff[b] += base;
    }
    w->marks = w->sorted = NULL;
    if (rc)
        return rc;
    return keeper_finish(w, recs, n, in_keeper);
}

// ---- several ranks ----------------------------------------------------------------------

#define MARK_RANGE_BITS 10u   // phase 2 reads the input in position ranges of 1 Ki records
#define STEP_ENTRIES 1048576u // phase 1: entries per owner per exchange step aimed at (8 MiB)
#define STEP_RECORDS 1048576u // phase 2: marked records a rank sends or receives per step

// Phase 1 on an owner: insert received entry pos; a repeated fingerprint marks the entry and
// the first one that had it in the bitmap.
static inline void bucket_mark_bit(struct exact_work *w, uint32_t fp, uint32_t pos, uint64_t *bits)
{
    uint32_t slot;
    uint64_t t = bucket_probe(w, fp, pos, &slot);
    if (!t)
        return;
    bits[pos >> 6] |= (uint64_t)1 << (pos & 63);
    if (t & SLOT_FLAG)
        return;
    uint32_t first = ((uint32_t)t & SLOT_REF) - 1;
    bits[first >> 6] |= (uint64_t)1 << (first & 63);
    w->table[slot] = t | SLOT_FLAG;
}

// Records (counts[s * buckets + b]) sender s has in buckets [b0, b1) of this owner.
static size_t recv_range(const struct exact_work *w, const int *counts, int s, size_t b0, size_t b1)
{
    size_t c = 0;
    for (size_t b = b0; b < b1; b++)
        c += (size_t)counts[(size_t)s * w->buckets + b];
    return c;
}

// Partition [e0, e1) of the arena's entries, whose owner's marks for entries from `seg` on
// are the bits `bits`: the positions of its marked entries go to the partition's start, 4
// bytes each (only over entries already read). Returns how many.
static size_t keep_marked(struct entry *ent, size_t seg, size_t e0, size_t e1, const uint64_t *bits)
{
    uint32_t *out = (uint32_t *)(void *)(ent + e0);
    size_t kept = 0, k0 = e0 - seg, k1 = e1 - seg;
    for (size_t word = k0 / 64; word * 64 < k1; word++) {
        uint64_t x = bits[word];
        if (word == k0 / 64)
            x &= ~0ULL << (k0 % 64);
        if ((word + 1) * 64 > k1)
            x &= ~0ULL >> (64 - k1 % 64);
        for (; x; x &= x - 1)
            out[kept++] = ent[seg + word * 64 + (size_t)__builtin_ctzll(x)].pos;
    }
    return kept;
}

// Phase 1, one exchange step: buckets [b0, b1) of every owner. The entries travel straight
// from the arena (each owner's buckets are contiguous there), the owner marks repeated
// fingerprints bucket by bucket in a bitmap of what it received (each sender's part starts
// at a multiple of 64), the bitmap's parts go back to their senders, which keep the
// positions of their marked entries at each partition's start (keep_marked; part_count:
// how many). A rank's own part never travels: it is read from the arena and its marks taken
// from the bitmap in place.
static void mark_step(struct exact_work *w, struct entry *ent, size_t b0, size_t b1,
                      MPI_Datatype ent_type)
{
    int size = w->size, me = w->rank;
    size_t nb = w->buckets, nr = 0, nback = 0;
    for (int o = 0; o < size; o++) {
        w->sdisp[o] = (int)w->start[(size_t)o * nb + b0];
        w->scount[o] = (int)(w->start[(size_t)o * nb + b1] - w->start[(size_t)o * nb + b0]);
        w->ycount[o] = o == me ? 0 : (w->scount[o] + 63) / 64;
        w->ydisp[o] = (int)nback;
        nback += (size_t)w->ycount[o];
    }
    for (int s = 0; s < size; s++) {
        w->rdisp[s] = (int)nr;
        w->rcount[s] = (int)recv_range(w, w->bucket_count, s, b0, b1);
        w->xcount[s] = s == me ? 0 : (w->rcount[s] + 63) / 64;
        w->xdisp[s] = (int)(nr / 64);
        nr += ((size_t)w->rcount[s] + 63) / 64 * 64;
    }
    int own_count = w->scount[me];
    w->scount[me] = w->rcount[me] = 0;
    alltoallv_idle(ent, w->scount, w->sdisp, ent_type, w->recv_ent, w->rcount, w->rdisp, ent_type,
                   w->comm);
    w->scount[me] = w->rcount[me] = own_count;
    uint64_t *bits = w->bits;
    memset(bits, 0, nr / 64 * sizeof *bits);
    for (int s = 0; s < size; s++)
        w->run_pos[s] = (size_t)w->rdisp[s];
    // entry at bitmap position pos of sender s: in[s][pos]
    const struct entry *own = ent + w->sdisp[me] - w->rdisp[me];
    for (size_t b = b0; b < b1; b++) {
        size_t count = 0;
        for (int s = 0; s < size; s++)
            count += (size_t)w->bucket_count[(size_t)s * nb + b];
        if (count >= 2)
            table_begin(w, 2 * count); // at most 1/2 full, as on one rank
        for (int s = 0; s < size; s++) {
            const struct entry *in = s == me ? own : w->recv_ent;
            size_t pos = w->run_pos[s];
            size_t end = pos + (size_t)w->bucket_count[(size_t)s * nb + b];
            w->run_pos[s] = end;
            for (; count >= 2 && pos < end; pos++) {
                if (pos + TABLE_AHEAD < end)
                    table_prefetch(w, in[pos + TABLE_AHEAD].fp);
                bucket_mark_bit(w, in[pos].fp, (uint32_t)pos, bits);
            }
        }
    }
    alltoallv_idle(bits, w->xcount, w->xdisp, MPI_UINT64_T, w->bits_back, w->ycount, w->ydisp,
                   MPI_UINT64_T, w->comm);
    for (int o = 0; o < size; o++) {
        const uint64_t *word = o == me ? bits + w->xdisp[me] : w->bits_back + w->ydisp[o];
        for (size_t b = b0, p = (size_t)o * nb + b0; b < b1; b++, p++)
            w->part_count[p] =
                (int)keep_marked(ent, (size_t)w->sdisp[o], w->start[p], w->off[p], word);
    }
}

// Phase 2: copy marked records from the input into the spill (sorted: their positions, nm
// of them, in ascending order of 1 Ki-record ranges; each goes to cur[its partition]++).
static void fill_spill(struct exact_work *w, const struct dedupe_record *recs,
                       const uint32_t *sorted, size_t nm, struct dedupe_record *spill)
{
    size_t parts = (size_t)w->size * w->buckets, *cur = w->off;
    for (size_t k = 0; k < nm; k++) {
        if (k + PREFETCH_AHEAD < nm)
            __builtin_prefetch(&recs[sorted[k + PREFETCH_AHEAD]]);
        const struct dedupe_record *r = &recs[sorted[k]];
        spill[cur[partition_of(r->hash_lo, parts)]++] = *r;
    }
}

// The end of a phase-2 step: the answers queued in it (w->emit, per sender from
// emit_base) go back to their senders, which append them to w->back as (input position,
// keeper) pairs (marks: this rank's marked positions, each owner's from
// need_off[owner * buckets]).
static void answers_back(struct exact_work *w, const uint32_t *marks, MPI_Datatype reply_type)
{
    int size = w->size;
    int *ecount = w->xcount, *edisp = w->xdisp, *bcount = w->ycount, *bdisp = w->ydisp;
    for (int s = 0; s < size; s++) {
        edisp[s] = (int)w->emit_base[s];
        ecount[s] = (int)(w->emit_fill[s] - w->emit_base[s]);
    }
    alltoall_idle(ecount, 1, MPI_INT, bcount, w->comm);
    size_t nback = 0;
    for (int o = 0; o < size; o++) {
        bdisp[o] = (int)nback;
        nback += (size_t)bcount[o];
    }
    struct reply *back = w->back + w->back_n;
    alltoallv_idle(w->emit, ecount, edisp, reply_type, back, bcount, bdisp, reply_type, w->comm);
    for (int o = 0; o < size; o++) {
        const uint32_t *seg = marks + w->need_off[(size_t)o * w->buckets];
        for (size_t i = (size_t)bdisp[o]; i < (size_t)bdisp[o] + (size_t)bcount[o]; i++)
            back[i].slot = seg[back[i].slot];
    }
    w->back_n += nback;
}

// fill_spill for all marked records, from a bitmap of their positions (`words` 64-bit
// words): the input is read in position order, each record prefetched PREFETCH_AHEAD
// records ahead.
static void fill_spill_bitmap(struct exact_work *w, const struct dedupe_record *recs,
                              const uint64_t *marked, size_t words, struct dedupe_record *spill)
{
    size_t parts = (size_t)w->size * w->buckets, *cur = w->off, head = 0, tail = 0;
    uint32_t ahead[2 * PREFETCH_AHEAD]; // positions found, not yet copied
    for (size_t word = 0; word <= words; word++) {
        uint64_t x = word < words ? marked[word] : 0;
        for (; x || (word == words && head < tail); x &= x - 1) {
            if (x) {
                uint32_t pos = (uint32_t)(word * 64 + (size_t)__builtin_ctzll(x));
                __builtin_prefetch(&recs[pos]);
                ahead[tail++ % (2 * PREFETCH_AHEAD)] = pos;
                if (tail - head <= PREFETCH_AHEAD)
                    continue;
            }
            const struct dedupe_record *r = &recs[ahead[head++ % (2 * PREFETCH_AHEAD)]];
            spill[cur[partition_of(r->hash_lo, parts)]++] = *r;
        }
    }
}

// Phase 2, one exchange step: buckets [b0, b1) of every owner. The spill holds this step's
// marked records (owner after owner, bucket after bucket, each partition in input order;
// w->off: each partition's end there); they go to their owners (a rank's own part is
// copied), which compare them bucket by bucket with full hashes and send the answers back
// (each record's position in the sender's marked records for this owner, and its keeper).
static int compare_step(struct exact_work *w, const struct dedupe_record *spill, size_t b0,
                        size_t b1, const uint32_t *marks, MPI_Datatype rec_type,
                        MPI_Datatype reply_type)
{
    int size = w->size, me = w->rank;
    size_t nb = w->buckets, nr = 0;
    const int *pc = w->part_count;
    size_t first = w->off[b0] - (size_t)pc[b0]; // the step's start in the spill
    for (int s = 0; s < size; s++) {
        w->rdisp[s] = (int)nr;
        w->rcount[s] = (int)recv_range(w, w->bucket_count, s, b0, b1);
        nr += (size_t)w->rcount[s];
        size_t p0 = (size_t)s * nb + b0;
        w->sdisp[s] = (int)(w->off[p0] - (size_t)pc[p0] - first);
        w->scount[s] = (int)recv_range(w, pc, s, b0, b1);
    }
    memcpy(w->chunk + w->rdisp[me], spill + first + w->sdisp[me],
           (size_t)w->rcount[me] * sizeof *spill);
    int own_count = w->rcount[me];
    w->rcount[me] = w->scount[me] = 0;
    alltoallv_idle(spill + first, w->scount, w->sdisp, rec_type, w->chunk, w->rcount, w->rdisp,
                   rec_type, w->comm);
    w->rcount[me] = w->scount[me] = own_count;
    for (int s = 0; s < size; s++) // a sender's answers: at most one per record it sent
        w->emit_base[s] = w->emit_fill[s] = (size_t)w->rdisp[s];
    const struct dedupe_record *in = w->chunk;
    w->in = w->chunk;
    for (int s = 0; s < size; s++)
        w->run_pos[s] = (size_t)w->rdisp[s];
    int rc = PM_OK;
    for (size_t b = b0; b < b1 && rc == PM_OK; b++) {
        size_t count = 0;
        for (int s = 0; s < size; s++)
            count += (size_t)w->bucket_count[(size_t)s * nb + b];
        if (count > 1)
            bucket_begin(w, count);
        for (int s = 0; s < size; s++) {
            size_t pos = w->run_pos[s];
            size_t end = pos + (size_t)w->bucket_count[(size_t)s * nb + b];
            w->run_pos[s] = end;
            for (; count > 1 && pos < end; pos++) {
                if (pos + TABLE_AHEAD < end)
                    table_prefetch(w, fingerprint(&in[pos + TABLE_AHEAD]));
                bucket_insert(w, fingerprint(&in[pos]), (uint32_t)pos);
            }
        }
        if (count > 1)
            rc = bucket_end(w);
    }
    answers_back(w, marks, reply_type);
    for (int s = 0; s < size; s++)
        w->recv_done[s] += (size_t)w->rcount[s];
    return rc;
}

// Make room for the exchange buffers of one round (the same code on every rank).
static int exchange_buffers(struct exact_work *w, size_t step1)
{
    int size = w->size;
    size_t nb = w->buckets, max_bucket = 0, max_send = 0, max_recv = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t c = 0;
        for (int s = 0; s < size; s++)
            c += (size_t)w->bucket_count[(size_t)s * nb + b];
        max_bucket = c > max_bucket ? c : max_bucket;
    }
    for (size_t b0 = 0; b0 < nb; b0 += step1) {
        size_t b1 = b0 + step1 < nb ? b0 + step1 : nb, ns = 0, nr = 0;
        for (int o = 0; o < size; o++) {
            ns += w->start[(size_t)o * nb + b1] - w->start[(size_t)o * nb + b0];
            nr += (recv_range(w, w->bucket_count, o, b0, b1) + 63) / 64 * 64;
        }
        max_send = ns > max_send ? ns : max_send;
        max_recv = nr > max_recv ? nr : max_recv;
    }
    if (max_recv > SLOT_REF - 1 || w->start[(size_t)size * nb] > INT_MAX)
        return PM_ERR_LIMIT; // int displacements of MPI, 31-bit positions in the table
    int rc = ensure_cap((void **)&w->recv_ent, &w->recv_ent_cap, max_recv, sizeof *w->recv_ent);
    if (rc == PM_OK)
        rc = ensure_cap((void **)&w->bits, &w->bits_cap, max_recv / 64 + 1, sizeof *w->bits);
    if (rc == PM_OK)
        rc = ensure_cap((void **)&w->bits_back, &w->bits_back_cap, max_send / 64 + size,
                        sizeof *w->bits_back);
    if (rc == PM_OK)
        rc = ensure_scan_cap(w, max_bucket);
    return rc;
}

// One round on several ranks. Like one rank, but the partitions are (owner, bucket): each
// rank writes its records' 8-byte entries into the arena in partition order (one streaming
// pass), phase 1 sends them (no gather: each owner's part of a step is contiguous) and
// returns the owner's marks as bitmaps, phase 2 sends only the marked records (copied out
// of the input in position order) and the owner compares them; the answers return at the
// end. Memory: the arena as on one rank (keeper[] with one round, else 8 bytes per record),
// the marks (8 bytes per marked record) and the spill in its spare room, fixed step
// buffers, and room for the answers (16 bytes per marked record received; 32 per answer
// while they travel).
static int exchange_round(struct exact_work *w, const struct dedupe_record *recs, size_t n,
                          unsigned round, size_t step1)
{
    int size = w->size;
    size_t nb = w->buckets, parts = (size_t)size * nb, *off = w->off, words;
    uint64_t *arena;
    int in_keeper = w->rounds == 1, rc = count_round(w, recs, n, round, parts, &arena, &words);
    for (size_t p = 0; p < parts; p++)
        w->part_count[p] = (int)(off[p + 1] - off[p]);
    alltoall_idle(w->part_count, (int)nb, MPI_INT, w->bucket_count, w->comm);
    size_t shift = rc ? 0 : (8 - (uintptr_t)arena / 8 % 8) % 8; // as on one rank
    for (size_t p = 0; p <= parts; p++)
        off[p] += shift;
    memcpy(w->start, off, (parts + 1) * sizeof *off);
    if (rc == PM_OK)
        rc = exchange_buffers(w, step1);
    if ((rc = pm_mpi_worst_in(rc, w->comm)))
        return rc;
    struct entry *ent = (struct entry *)(uintptr_t)((uintptr_t)arena - shift * sizeof *ent);
    scatter_entries(w, recs, n, round, ent, !in_keeper, parts);
    arena_phase_barrier();

    MPI_Datatype ent_type, rec_type;
    MPI_CHECK(MPI_Type_contiguous(2, MPI_UINT32_T, &ent_type));
    MPI_CHECK(MPI_Type_commit(&ent_type));
    for (size_t b0 = 0; b0 < nb; b0 += step1)
        mark_step(w, ent, b0, b0 + step1 < nb ? b0 + step1 : nb, ent_type);
    MPI_CHECK(MPI_Type_free(&ent_type));
    arena_phase_barrier();

    // The marked positions to the arena's start, in partition order (each partition's from
    // its start, never ahead of it); need_off: each partition's first mark.
    uint32_t *marks = (uint32_t *)arena;
    size_t nm = 0, *need = w->need_off;
    for (size_t p = 0; p < parts; p++) {
        need[p] = nm;
        memmove(marks + nm, ent + w->start[p], (size_t)w->part_count[p] * sizeof *marks);
        nm += (size_t)w->part_count[p];
    }
    need[parts] = nm;
    arena_phase_barrier();
    alltoall_idle(w->part_count, (int)nb, MPI_INT, w->bucket_count, w->comm);
    // Phase 2 steps: bucket ranges in which no rank sends or receives much more than
    // STEP_RECORDS marked records (the same ranges on every rank); step_of: each bucket's.
    uint64_t *need_b = w->step_need;
    for (size_t b = 0; b < nb; b++) {
        size_t sent = 0, got = 0;
        for (int s = 0; s < size; s++) {
            sent += (size_t)w->part_count[(size_t)s * nb + b];
            got += (size_t)w->bucket_count[(size_t)s * nb + b];
        }
        need_b[b] = sent > got ? sent : got;
    }
    allreduce_idle(MPI_IN_PLACE, need_b, (int)nb, MPI_UINT64_T, MPI_MAX, w->comm);
    size_t steps = 0, max_send = 0, max_recv = 0;
    for (size_t b0 = 0, b1; b0 < nb; b0 = b1, steps++) {
        uint64_t acc = need_b[b0];
        for (b1 = b0 + 1; b1 < nb && acc + need_b[b1] <= STEP_RECORDS / w->scale; b1++)
            acc += need_b[b1];
        size_t ns = 0, nr = 0;
        for (int s = 0; s < size; s++) {
            nr += recv_range(w, w->bucket_count, s, b0, b1);
            ns += recv_range(w, w->part_count, s, b0, b1);
        }
        max_send = ns > max_send ? ns : max_send;
        max_recv = nr > max_recv ? nr : max_recv;
        for (size_t b = b0; b < b1; b++)
            need_b[b] = steps; // need_b is step_of from here on
    }
    // The arena from here on: the marks, the spill (else its own array for the largest
    // step) and the marks sorted (below). The spill is filled in passes over the steps whose
    // records fit together (one pass when there is room).
    size_t mark_words = (nm + 1) / 2;
    struct dedupe_record *spill = (struct dedupe_record *)(arena + mark_words);
    size_t cap = words > 2 * mark_words ? (words - 2 * mark_words) / 3 : 0;
    size_t *step_send = w->step_work;
    size_t *pass_of = w->step_work + nb;
    int spill_in_arena = 1;
    memset(step_send, 0, steps * sizeof *step_send);
    for (size_t p = 0; p < parts; p++)
        step_send[need_b[p & (nb - 1)]] += (size_t)w->part_count[p];
    if (cap < max_send) {
        rc = ensure_cap((void **)&w->spill_send, &w->spill_send_cap, max_send, sizeof *spill);
        spill = w->spill_send;
        cap = max_send;
        spill_in_arena = 0;
    }
    size_t passes = 0;
    for (size_t t = 0, acc = 0; t < steps; t++) {
        if (t && acc + step_send[t] > cap) {
            passes++;
            acc = 0;
        }
        pass_of[t] = passes;
        acc += step_send[t];
    }
    passes++;
    // The marks by (pass, position range) (a stable counting pass), after the spill's room
    // in the arena: each pass reads only its own records, in position order.
    size_t spill_used = passes == 1 ? nm : cap; // records of the spill's room in use
    uint32_t *sorted = spill_in_arena ? (uint32_t *)(void *)(spill + spill_used) : marks + nm;
    // With one pass and room after the spill, a bitmap of the marked positions there instead:
    // the spill is filled in position order from it (no sort).
    size_t ranges = (n >> MARK_RANGE_BITS) + 1, keys = passes * ranges, map_words = n / 64 + 1;
    uint64_t *marked = (uint64_t *)(void *)sorted;
    int by_bitmap =
        spill_in_arena && passes == 1 && words - mark_words - 3 * spill_used >= map_words;
    if (rc == PM_OK && by_bitmap) {
        memset(marked, 0, map_words * sizeof *marked);
        for (size_t k = 0; k < nm; k++)
            marked[marks[k] >> 6] |= (uint64_t)1 << (marks[k] & 63);
    }
    if (rc == PM_OK && !by_bitmap)
        rc = ensure_cap((void **)&w->range_off, &w->range_cap, keys + 1, sizeof *w->range_off);
    size_t *roff = w->range_off;
    if (rc == PM_OK && !by_bitmap) {
        memset(roff, 0, (keys + 1) * sizeof *roff);
        for (size_t p = 0; p < parts; p++) {
            size_t base = pass_of[need_b[p & (nb - 1)]] * ranges;
            for (size_t k = need[p]; k < need[p + 1]; k++)
                roff[base + (marks[k] >> MARK_RANGE_BITS)]++;
        }
        for (size_t r = 0, acc = 0; r <= keys; r++) {
            size_t c = roff[r];
            roff[r] = acc;
            acc += c;
        }
        for (size_t p = 0; p < parts; p++) {
            size_t base = pass_of[need_b[p & (nb - 1)]] * ranges;
            for (size_t k = need[p]; k < need[p + 1]; k++)
                sorted[roff[base + (marks[k] >> MARK_RANGE_BITS)]++] = marks[k];
        }
    }
    if (rc == PM_OK && max_recv > SLOT_REF - 1)
        rc = PM_ERR_LIMIT;
    // A step's answers are queued per sender (at most one per record received), go back at
    // the step's end and gather in w->back: with one pass in the spill's room (each step's
    // records take 24 bytes there and are no longer needed; their answers take at most 16),
    // else their own array. With one pass the arena after the spill (the sorted marks) is
    // free once the spill is filled: the queue and the receive chunk go there when they fit
    // (memory already resident instead of fresh pages; else their own arrays).
    uint64_t *room = (uint64_t *)(void *)(spill + spill_used);
    size_t room_words = spill_in_arena && passes == 1 ? words - mark_words - 3 * spill_used : 0;
    w->emit = (struct reply *)(void *)room;
    w->chunk = (struct dedupe_record *)(void *)(room + 2 * max_recv);
    if (rc == PM_OK && (5 * max_recv > room_words || !nm || !max_recv)) {
        rc = ensure_cap((void **)&w->emit_buf, &w->emit_buf_cap, max_recv, sizeof *w->emit);
        if (rc == PM_OK)
            rc = ensure_cap((void **)&w->recv_chunk, &w->recv_cap, max_recv, sizeof *w->chunk);
        w->emit = w->emit_buf;
        w->chunk = w->recv_chunk;
    }
    w->back = (struct reply *)(void *)spill;
    w->back_n = 0;
    if (rc == PM_OK && (passes > 1 || !nm)) {
        rc = ensure_cap((void **)&w->back_buf, &w->back_buf_cap, nm, sizeof *w->back);
        w->back = w->back_buf;
    }
    if ((rc = pm_mpi_worst_in(rc, w->comm)))
        return rc;
    MPI_Datatype reply_type;
    MPI_CHECK(MPI_Type_contiguous(3, MPI_UINT64_T, &rec_type));
    MPI_CHECK(MPI_Type_commit(&rec_type));
    MPI_CHECK(MPI_Type_contiguous(2, MPI_UINT64_T, &reply_type));
    MPI_CHECK(MPI_Type_commit(&reply_type));
    memset(w->recv_done, 0, (size_t)size * sizeof *w->recv_done);
    size_t *cur = w->off, done = 0;
    for (size_t b0 = 0, b1, step = 0, pass = 0; b0 < nb; b0 = b1, step++) { // all ranks, all steps
        for (b1 = b0 + 1; b1 < nb && need_b[b1] == step; b1++)
            ;
        if (step == 0 || pass_of[step] != pass) { // the next pass: lay out its steps, fill
            pass = pass_of[step];
            size_t at = 0;
            for (size_t c0 = b0, c1; c0 < nb && pass_of[need_b[c0]] == pass; c0 = c1) {
                for (c1 = c0 + 1; c1 < nb && need_b[c1] == need_b[c0]; c1++)
                    ;
                for (int o = 0; o < size; o++)
                    for (size_t b = c0; b < c1; b++) {
                        cur[(size_t)o * nb + b] = at;
                        at += (size_t)w->part_count[(size_t)o * nb + b];
                    }
            }
            arena_phase_barrier();
            if (by_bitmap) {
                fill_spill_bitmap(w, recs, marked, map_words, spill);
            } else {
                size_t end = roff[(pass + 1) * ranges - 1]; // after the sort: each key's end
                fill_spill(w, recs, sorted + done, end - done, spill);
                done = end;
            }
        }
        arena_phase_barrier();
        int step_rc = compare_step(w, spill, b0, b1, marks, rec_type, reply_type);
        rc = rc ? rc : step_rc;
    }
    MPI_CHECK(MPI_Type_free(&rec_type));
    MPI_CHECK(MPI_Type_free(&reply_type));
    arena_phase_barrier();
    if ((rc = pm_mpi_worst_in(rc, w->comm)))
        return rc;
    w->emit = w->back;
    w->emit_n = w->back_n;
    return pm_mpi_worst_in(keeper_finish(w, recs, n, in_keeper), w->comm);
}

int dedupe_exact_run(const struct dedupe_record *recs, size_t n, uint64_t *keeper, MPI_Comm comm,
                     size_t memory_limit, struct dedupe_exact_stats *stats, struct pm_error *err)
{
    struct exact_work w;
    memset(&w, 0, sizeof w);
    w.comm = comm;
    w.keeper = keeper;
    MPI_CHECK(MPI_Comm_size(comm, &w.size));
    MPI_CHECK(MPI_Comm_rank(comm, &w.rank));
    uint64_t local = n, total = 0, most = 0;
    allreduce_idle(&local, &total, 1, MPI_UINT64_T, MPI_SUM, comm);
    allreduce_idle(&local, &most, 1, MPI_UINT64_T, MPI_MAX, comm);
    if (most > SLOT_REF - 1)
        return pm_error_set(err, PM_ERR_LIMIT,
                            "exact dedupe: %llu records on one rank (at most 2^31 - 2)",
                            (unsigned long long)most);

    // Bytes per record for one round: its bucket entry (8), and its share of the marks and
    // answers, counted as 16 in all.
    double per_rank = (double)total / w.size * 1.25 * 16.0;
    w.rounds = 1;
    if (memory_limit && per_rank > (double)memory_limit)
        w.rounds = (unsigned)(per_rank / (double)memory_limit) + 1;
    uint64_t per_owner = total / (uint64_t)w.size / w.rounds;
    // Tests shrink buckets and steps to reach several steps and spill passes with few
    // records; the answer is the same for any scale.
    const char *scale = getenv("PIXELMILL_DEDUPE_SCALE");
    w.scale = scale && atoi(scale) >= 1 && atoi(scale) <= 65536 ? (unsigned)atoi(scale) : 1;
    uint64_t target = TARGET_BUCKET / w.scale;
    w.bucket_bits = per_owner > target ? ceil_log2(per_owner / target) : 0;
    if (w.bucket_bits > MAX_BUCKET_BITS)
        w.bucket_bits = MAX_BUCKET_BITS;
    w.buckets = (size_t)1 << w.bucket_bits;
    // phase-1 buckets per exchange step on several ranks: about STEP_ENTRIES per owner
    uint64_t per_bucket = per_owner / w.buckets + 1;
    uint64_t step_entries = STEP_ENTRIES / w.scale;
    size_t step1 = per_bucket >= step_entries ? 1 : (size_t)(step_entries / per_bucket);

    int rc = PM_OK;
    size_t sz = (size_t)w.size, nb = w.buckets, parts = sz * nb;
    w.off = malloc((parts + 1) * sizeof *w.off);
    w.start = malloc((parts + 1) * sizeof *w.start);
    w.need_off = malloc((parts + 1) * sizeof *w.need_off);
    w.wc_buf = aligned_alloc(64, parts * WC_ENTRIES * sizeof *w.wc_buf);
    rc = w.off && w.start && w.need_off && w.wc_buf ? PM_OK : PM_ERR_NOMEM;
    if (w.size > 1) {
        w.part_count = malloc(parts * sizeof *w.part_count);
        w.bucket_count = malloc(parts * sizeof *w.bucket_count);
        w.step_need = malloc(nb * sizeof *w.step_need);
        w.step_work = malloc(2 * nb * sizeof *w.step_work);
        int **ints[] = {&w.scount, &w.sdisp, &w.rcount, &w.rdisp,
                        &w.xcount, &w.xdisp, &w.ycount, &w.ydisp};
        for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
            if (!(*ints[i] = calloc(sz, sizeof(int))))
                rc = PM_ERR_NOMEM;
        w.recv_done = calloc(sz, sizeof *w.recv_done);
        w.run_pos = calloc(sz, sizeof *w.run_pos);
        w.emit_base = calloc(sz, sizeof *w.emit_base);
        w.emit_fill = calloc(sz, sizeof *w.emit_fill);
        if (!w.part_count || !w.bucket_count || !w.step_need || !w.step_work || !w.recv_done ||
            !w.run_pos || !w.emit_base || !w.emit_fill)
            rc = PM_ERR_NOMEM;
    }
    rc = pm_mpi_worst_in(rc, comm);
    for (unsigned round = 0; rc == PM_OK && round < w.rounds; round++)
        rc = w.size == 1 ? single_round(&w, recs, n, round)
                         : exchange_round(&w, recs, n, round, step1);
    uint64_t sums[2] = {w.ndups, w.ngroups}, gsums[2] = {0, 0};
    if (rc == PM_OK)
        allreduce_idle(sums, gsums, 2, MPI_UINT64_T, MPI_SUM, comm);
    exact_work_release(&w);
    if (rc == PM_ERR_LIMIT)
        return pm_error_set(err, rc,
                            "exact dedupe: %llu records: one round's work on a rank exceeds "
                            "2^31 - 2 records; lower the memory limit",
                            (unsigned long long)total);
    if (rc)
        return pm_error_set(err, rc, "exact dedupe: out of memory for %llu records",
                            (unsigned long long)total);
    if (stats)
        *stats = (struct dedupe_exact_stats){total, gsums[0], gsums[1], w.rounds};
    return PM_OK;
}
