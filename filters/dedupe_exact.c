#include "dedupe_exact.h"

#include "pm_mpi.h"

#include <stdlib.h>
#include <string.h>

// Owner-side sort entry: the record's hash_lo mapped into the owner's range (see
// owner_key) and its index in the arrival order. 16 bytes; the 24-byte received record
// is only read again for the rare entries whose key prefix is shared.
struct sort_entry {
    uint64_t key;
    uint64_t pos;
};

static int owner_of(const struct dedupe_record *r, int size)
{
    return (int)(((unsigned __int128)r->hash_lo * (unsigned)size) >> 64);
}

static unsigned round_of(const struct dedupe_record *r, unsigned rounds)
{
    return (unsigned)(((unsigned __int128)r->hash_hi * rounds) >> 64);
}

// The owner of hash_lo is mulhi(hash_lo, size); the low half of the same product is the
// position of hash_lo inside that owner's range, uniform over 64 bits and monotone in
// hash_lo. Its top bits are therefore a good radix key on every owner (hash_lo's own top
// bits are nearly constant there).
static uint64_t owner_key(uint64_t hash_lo, int size)
{
    return hash_lo * (uint64_t)size;
}

#define KEY_SHIFT 31u    // the radix sorts key bits 31..63
#define DIGIT_BITS 11u   // three passes of 11 bits (2048 counters each: fits L1)
#define DIGITS (1u << DIGIT_BITS)

static int record_cmp(const struct dedupe_record *x, const struct dedupe_record *y)
{
    if (x->hash_lo != y->hash_lo)
        return x->hash_lo < y->hash_lo ? -1 : 1;
    if (x->hash_hi != y->hash_hi)
        return x->hash_hi < y->hash_hi ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static const struct dedupe_record *cmp_base; // qsort context (one sort at a time per rank)

static int pos_cmp(const void *a, const void *b)
{
    const struct sort_entry *x = a, *y = b;
    return record_cmp(&cmp_base[x->pos], &cmp_base[y->pos]);
}

// Sort entries by the top 33 bits of key (LSD radix, 3 passes of 11-bit digits, the three
// histograms built in one read), then order each run of equal 33-bit prefixes by the full
// (hash_lo, hash_hi, id) of its records. Runs longer than one are true duplicates or
// prefix collisions (about n^2 / 2^34 of them for n entries): both are rare and short.
static int sort_entries(struct sort_entry *v, size_t n, const struct dedupe_record *recs)
{
    cmp_base = recs;
    if (n < 2048) {
        qsort(v, n, sizeof *v, pos_cmp);
        return PM_OK;
    }
    struct sort_entry *tmp = malloc(n * sizeof *tmp);
    size_t *count = calloc(3 * DIGITS, sizeof *count);
    if (!tmp || !count) {
        free(tmp);
        free(count);
        return PM_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t k = v[i].key >> KEY_SHIFT;
        count[k & (DIGITS - 1)]++;
        count[DIGITS + ((k >> DIGIT_BITS) & (DIGITS - 1))]++;
        count[2 * DIGITS + (k >> (2 * DIGIT_BITS))]++;
    }
    for (unsigned p = 0; p < 3; p++) {
        size_t sum = 0, *c = count + p * DIGITS;
        for (size_t d = 0; d < DIGITS; d++) {
            size_t x = c[d];
            c[d] = sum;
            sum += x;
        }
    }
    struct sort_entry *src = v, *dst = tmp;
    for (unsigned p = 0; p < 3; p++) {
        size_t *c = count + p * DIGITS;
        unsigned shift = KEY_SHIFT + p * DIGIT_BITS;
        for (size_t i = 0; i < n; i++) {
            struct sort_entry e = src[i];
            dst[c[(e.key >> shift) & (DIGITS - 1)]++] = e;
        }
        struct sort_entry *t = src;
        src = dst;
        dst = t;
    }
    // three passes: the result is in tmp; copy back
    memcpy(v, src, n * sizeof *v);
    free(tmp);
    free(count);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        uint64_t k = v[i].key >> KEY_SHIFT;
        while (j < n && v[j].key >> KEY_SHIFT == k)
            j++;
        if (j - i == 2) { // the common case: one pair (a duplicate or a collision)
            if (pos_cmp(&v[i], &v[i + 1]) > 0) {
                struct sort_entry t = v[i];
                v[i] = v[i + 1];
                v[i + 1] = t;
            }
        } else if (j - i > 2)
            qsort(v + i, j - i, sizeof *v, pos_cmp);
        i = j;
    }
    return PM_OK;
}

// Agree on an error across ranks: returns the max code seen.
static int all_agree(int rc, MPI_Comm comm)
{
    int global = rc;
    MPI_CHECK(MPI_Allreduce(&rc, &global, 1, MPI_INT, MPI_MAX, comm));
    return global;
}

int dedupe_exact_run(const struct dedupe_record *recs, size_t n, uint64_t *keeper,
                     MPI_Comm comm, size_t memory_limit, struct dedupe_exact_stats *stats,
                     struct pm_error *err)
{
    int size, rank;
    MPI_CHECK(MPI_Comm_size(comm, &size));
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    uint64_t local = n, total = 0;
    MPI_CHECK(MPI_Allreduce(&local, &total, 1, MPI_UINT64_T, MPI_SUM, comm));

    // Owner-side bytes per rank for one round: received records, sort scratch, send-back.
    // Owner-side bytes per rank for one round: received record (24), sort entry and its
    // radix scratch (2 x 16), answer (8).
    double per_rank = (double)total / size * 1.25 *
                      (sizeof(struct dedupe_record) + 2 * sizeof(struct sort_entry) + 8);
    unsigned rounds = 1;
    if (memory_limit && per_rank > (double)memory_limit)
        rounds = (unsigned)(per_rank / (double)memory_limit) + 1;

    int *scount = calloc((size_t)size, sizeof *scount), *sdisp = calloc((size_t)size, sizeof *sdisp);
    int *rcount = calloc((size_t)size, sizeof *rcount), *rdisp = calloc((size_t)size, sizeof *rdisp);
    size_t *slot_of = malloc((n ? n : 1) * sizeof *slot_of); // send slot -> local index
    struct dedupe_record *sendbuf = malloc((n ? n : 1) * sizeof *sendbuf);
    int rc = (scount && sdisp && rcount && rdisp && slot_of && sendbuf) ? PM_OK : PM_ERR_NOMEM;
    rc = all_agree(rc, comm);
    uint64_t dups = 0, groups = 0;

    for (unsigned round = 0; rc == PM_OK && round < rounds; round++) {
        // Bucket this round's records by owner.
        memset(scount, 0, (size_t)size * sizeof *scount);
        for (size_t i = 0; i < n; i++)
            if (round_of(&recs[i], rounds) == round)
                scount[owner_of(&recs[i], size)]++;
        for (int r = 0, off = 0; r < size; r++) {
            sdisp[r] = off;
            off += scount[r];
        }
        int *fill = calloc((size_t)size, sizeof *fill);
        if (!fill) {
            rc = PM_ERR_NOMEM;
        } else {
            size_t nsend = 0;
            for (size_t i = 0; i < n; i++) {
                if (round_of(&recs[i], rounds) != round)
                    continue;
                int o = owner_of(&recs[i], size);
                size_t slot = (size_t)sdisp[o] + (size_t)fill[o]++;
                sendbuf[slot] = recs[i];
                slot_of[slot] = i;
                nsend++;
            }
            (void)nsend;
            free(fill);
        }
        if ((rc = all_agree(rc, comm)))
            break;
        MPI_CHECK(MPI_Alltoall(scount, 1, MPI_INT, rcount, 1, MPI_INT, comm));
        size_t nrecv = 0;
        for (int r = 0; r < size; r++) {
            rdisp[r] = (int)nrecv;
            nrecv += (size_t)rcount[r];
        }
        struct dedupe_record *recvbuf = malloc((nrecv ? nrecv : 1) * sizeof *recvbuf);
        struct sort_entry *owned = malloc((nrecv ? nrecv : 1) * sizeof *owned);
        uint64_t *answer = malloc((nrecv ? nrecv : 1) * sizeof *answer);
        rc = all_agree(recvbuf && owned && answer ? PM_OK : PM_ERR_NOMEM, comm);
        if (rc == PM_OK) {
            MPI_Datatype rec_type;
            MPI_CHECK(MPI_Type_contiguous(3, MPI_UINT64_T, &rec_type));
            MPI_CHECK(MPI_Type_commit(&rec_type));
            MPI_CHECK(MPI_Alltoallv(sendbuf, scount, sdisp, rec_type, recvbuf, rcount, rdisp,
                                    rec_type, comm));
            MPI_CHECK(MPI_Type_free(&rec_type));
            for (size_t i = 0; i < nrecv; i++)
                owned[i] = (struct sort_entry){owner_key(recvbuf[i].hash_lo, size), i};
            rc = sort_entries(owned, nrecv, recvbuf);
        }
        rc = all_agree(rc, comm);
        if (rc == PM_OK) {
            // Every record keeps itself unless a group says otherwise (sequential pass;
            // the scan below touches received records only inside runs of equal keys).
            for (size_t i = 0; i < nrecv; i++)
                answer[i] = recvbuf[i].id;
            for (size_t i = 0; i < nrecv;) {
                if (i + 1 == nrecv || owned[i + 1].key != owned[i].key) {
                    i++;
                    continue;
                }
                const struct dedupe_record *first = &recvbuf[owned[i].pos];
                size_t j = i + 1;
                // equal full hash implies equal key: only compare inside a key run
                while (j < nrecv && owned[j].key == owned[i].key &&
                       recvbuf[owned[j].pos].hash_lo == first->hash_lo &&
                       recvbuf[owned[j].pos].hash_hi == first->hash_hi)
                    j++;
                if (j - i > 1) {
                    groups++;
                    dups += j - i - 1;
                }
                for (size_t k = i + 1; k < j; k++)
                    answer[owned[k].pos] = first->id; // sorted by id within the group
                i = j;
            }
            uint64_t *back = malloc((n ? n : 1) * sizeof *back);
            rc = all_agree(back ? PM_OK : PM_ERR_NOMEM, comm);
            if (rc == PM_OK) {
                MPI_CHECK(MPI_Alltoallv(answer, rcount, rdisp, MPI_UINT64_T, back, scount,
                                        sdisp, MPI_UINT64_T, comm));
                size_t nsent = (size_t)sdisp[size - 1] + (size_t)scount[size - 1];
                for (size_t s = 0; s < nsent; s++)
                    keeper[slot_of[s]] = back[s];
            }
            free(back);
        }
        free(recvbuf);
        free(owned);
        free(answer);
    }
    free(scount);
    free(sdisp);
    free(rcount);
    free(rdisp);
    free(slot_of);
    free(sendbuf);
    if (rc)
        return pm_error_set(err, rc, "exact dedupe: out of memory for %llu records",
                            (unsigned long long)total);
    uint64_t sums[2] = {dups, groups}, gsums[2];
    MPI_CHECK(MPI_Allreduce(sums, gsums, 2, MPI_UINT64_T, MPI_SUM, comm));
    if (stats)
        *stats = (struct dedupe_exact_stats){total, gsums[0], gsums[1], rounds};
    (void)rank;
    return PM_OK;
}
