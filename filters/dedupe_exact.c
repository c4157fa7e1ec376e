#include "dedupe_exact.h"

#include "pm_mpi.h"

#include <stdlib.h>
#include <string.h>

struct owned_record {
    uint64_t hash_hi;
    uint64_t hash_lo;
    uint64_t id;
    uint64_t pos; // index in the arrival order; the keeper goes back to this slot
};

static int owner_of(const struct dedupe_record *r, int size)
{
    return (int)(((unsigned __int128)r->hash_lo * (unsigned)size) >> 64);
}

static unsigned round_of(const struct dedupe_record *r, unsigned rounds)
{
    return (unsigned)(((unsigned __int128)r->hash_hi * rounds) >> 64);
}

static int owned_cmp(const void *a, const void *b)
{
    const struct owned_record *x = a, *y = b;
    if (x->hash_lo != y->hash_lo)
        return x->hash_lo < y->hash_lo ? -1 : 1;
    if (x->hash_hi != y->hash_hi)
        return x->hash_hi < y->hash_hi ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

// LSD radix sort on hash_lo (16-bit digits), then order equal hash_lo runs (rare beyond
// true duplicates) by (hash_hi, id). Stable passes keep it deterministic.
static int sort_owned(struct owned_record *v, size_t n)
{
    if (n < 4096) {
        qsort(v, n, sizeof *v, owned_cmp);
        return PM_OK;
    }
    struct owned_record *tmp = malloc(n * sizeof *tmp);
    size_t *count = malloc(65536 * sizeof *count);
    if (!tmp || !count) {
        free(tmp);
        free(count);
        return PM_ERR_NOMEM;
    }
    struct owned_record *src = v, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 16) {
        memset(count, 0, 65536 * sizeof *count);
        for (size_t i = 0; i < n; i++)
            count[(src[i].hash_lo >> shift) & 0xFFFF]++;
        size_t sum = 0;
        for (size_t d = 0; d < 65536; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i].hash_lo >> shift) & 0xFFFF]++] = src[i];
        struct owned_record *t = src;
        src = dst;
        dst = t;
    }
    // four passes: the result is back in v
    free(tmp);
    free(count);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && v[j].hash_lo == v[i].hash_lo)
            j++;
        if (j - i > 1)
            qsort(v + i, j - i, sizeof *v, owned_cmp);
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
    double per_rank = (double)total / size * 1.25 * (2 * sizeof(struct owned_record) + 8);
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
        struct owned_record *owned = malloc((nrecv ? nrecv : 1) * sizeof *owned);
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
                owned[i] = (struct owned_record){recvbuf[i].hash_hi, recvbuf[i].hash_lo,
                                                 recvbuf[i].id, i};
            rc = sort_owned(owned, nrecv);
        }
        rc = all_agree(rc, comm);
        if (rc == PM_OK) {
            for (size_t i = 0; i < nrecv;) {
                size_t j = i + 1;
                while (j < nrecv && owned[j].hash_lo == owned[i].hash_lo &&
                       owned[j].hash_hi == owned[i].hash_hi)
                    j++;
                if (j - i > 1) {
                    groups++;
                    dups += j - i - 1;
                }
                for (size_t k = i; k < j; k++)
                    answer[owned[k].pos] = owned[i].id; // sorted by id within the group
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
