#include "dedupe_spill.h"

#include "pm_bigmem.h"
#include "pm_mpi.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// The part files are raw arrays in this machine's byte order (struct dedupe_record for
// *.rec, two u64 for *.dup): they live only for one run of one process, which checks their
// sizes against the counts it wrote.

struct dedupe_spill_part {
    FILE *rec;     // records added (parts > 1), until the part is run
    FILE *dup;     // duplicates found (id, keeper), written by run, read by next
    uint64_t nrec; // records written to rec
    uint64_t ndup; // duplicates written to dup
    uint64_t left; // duplicates not yet read
    uint64_t head[2];
    int has_head;
};

struct dedupe_spill {
    char dir[PATH_MAX];
    int rank;
    unsigned parts;
    uint64_t last_id;
    int any;
    int ran;
    // parts == 1: the records in memory
    struct dedupe_record *recs;
    size_t n, cap;
    uint64_t *keeper;
    size_t at;
    // parts > 1
    struct dedupe_spill_part *part;
};

unsigned dedupe_spill_parts(uint64_t records, size_t memory_limit)
{
    if (!memory_limit)
        return 1;
    double need = (double)records * DEDUPE_SPILL_RECORD_BYTES * 1.25;
    if (need <= (double)memory_limit)
        return 1;
    double p = need / (double)memory_limit + 1;
    return p >= DEDUPE_SPILL_MAX_PARTS ? DEDUPE_SPILL_MAX_PARTS : (unsigned)p;
}

static unsigned part_of(uint64_t hash_hi, unsigned parts)
{
    return (unsigned)(((unsigned __int128)hash_hi * parts) >> 64);
}

static int part_path(char *buf, size_t n, const struct dedupe_spill *s, unsigned p, const char *ext)
{
    int k = snprintf(buf, n, "%s/r%d-%u.%s", s->dir, s->rank, p, ext);
    return k < 0 || (size_t)k >= n ? PM_ERR_LIMIT : PM_OK;
}

static int part_open(struct dedupe_spill *s, unsigned p, const char *ext, FILE **f,
                     struct pm_error *err)
{
    char path[PATH_MAX];
    if (part_path(path, sizeof path, s, p, ext))
        return pm_error_set(err, PM_ERR_LIMIT, "dedupe spill: path too long under '%s'", s->dir);
    *f = fopen(path, "w+b");
    if (!*f)
        return pm_error_set(err, PM_ERR_IO, "cannot create '%s': %s", path, strerror(errno));
    return PM_OK;
}

static void part_remove(struct dedupe_spill *s, unsigned p, const char *ext, FILE **f)
{
    char path[PATH_MAX];
    if (*f)
        fclose(*f);
    *f = NULL;
    if (part_path(path, sizeof path, s, p, ext) == PM_OK)
        unlink(path);
}

int dedupe_spill_create(struct dedupe_spill **out, const char *dir, int rank, unsigned parts,
                        size_t expect, struct pm_error *err)
{
    *out = NULL;
    if (parts == 0 || parts > DEDUPE_SPILL_MAX_PARTS)
        return pm_error_set(err, PM_ERR_USAGE, "dedupe spill: %u parts (1 to %u)", parts,
                            DEDUPE_SPILL_MAX_PARTS);
    struct dedupe_spill *s = calloc(1, sizeof *s);
    if (!s)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    int k = snprintf(s->dir, sizeof s->dir, "%s", dir ? dir : "");
    s->rank = rank;
    s->parts = parts;
    int rc = PM_OK;
    if (parts == 1) {
        s->cap = expect ? expect : 4096;
        s->recs = pm_big_alloc(s->cap * sizeof *s->recs);
        if (!s->recs)
            rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory for %zu dedupe records", s->cap);
    } else if (!dir || k < 0 || (size_t)k >= sizeof s->dir) {
        rc = pm_error_set(err, PM_ERR_USAGE, "dedupe spill: no directory, or too long");
    } else if (mkdir(dir, 0777) && errno != EEXIST) {
        rc = pm_error_set(err, PM_ERR_IO, "cannot create '%s': %s", dir, strerror(errno));
    } else if (!(s->part = calloc(parts, sizeof *s->part))) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    } else {
        for (unsigned p = 0; rc == PM_OK && p < parts; p++)
            rc = part_open(s, p, "rec", &s->part[p].rec, err);
    }
    if (rc) {
        dedupe_spill_free(s);
        return rc;
    }
    *out = s;
    return PM_OK;
}

int dedupe_spill_add(struct dedupe_spill *s, const struct dedupe_record *rec, struct pm_error *err)
{
    if (s->ran || (s->any && rec->id <= s->last_id))
        return pm_error_set(err, PM_ERR_USAGE,
                            "dedupe spill: record id %llu added out of order or after the run",
                            (unsigned long long)rec->id);
    if (s->parts == 1) {
        if (s->n == s->cap) {
            size_t cap = 2 * s->cap;
            struct dedupe_record *t = pm_big_realloc(s->recs, s->n * sizeof *t, cap * sizeof *t);
            if (!t)
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory for %zu dedupe records", cap);
            s->recs = t;
            s->cap = cap;
        }
        s->recs[s->n++] = *rec;
    } else {
        unsigned p = part_of(rec->hash_hi, s->parts);
        if (fwrite(rec, sizeof *rec, 1, s->part[p].rec) != 1)
            return pm_error_set(err, PM_ERR_IO, "cannot write '%s/r%d-%u.rec': %s", s->dir, s->rank,
                                p, strerror(errno));
        s->part[p].nrec++;
    }
    s->last_id = rec->id;
    s->any = 1;
    return PM_OK;
}

static void add_stats(struct dedupe_exact_stats *sum, const struct dedupe_exact_stats *st)
{
    sum->records += st->records;
    sum->duplicates += st->duplicates;
    sum->groups += st->groups;
    sum->rounds += st->rounds;
}

// One part: load this rank's records, dedupe, write the duplicates, in the buffers of
// the largest part (allocated once: buffers freed and allocated again at growing sizes
// left freed pages resident, see common/pm_bigmem.h).
static int run_part(struct dedupe_spill *s, unsigned p, MPI_Comm comm, size_t memory_limit,
                    struct dedupe_exact_stats *sum, struct pm_error *err)
{
    struct dedupe_spill_part *pt = &s->part[p];
    size_t n = (size_t)pt->nrec;
    int rc = PM_OK;
    if (!s->recs || !s->keeper)
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory for %zu dedupe records", s->cap);
    if (!rc && (fflush(pt->rec) || fseek(pt->rec, 0, SEEK_SET) ||
                fread(s->recs, sizeof *s->recs, n, pt->rec) != n))
        rc = pm_error_set(err, PM_ERR_IO, "cannot read back '%s/r%d-%u.rec' (%zu records)", s->dir,
                          s->rank, p, n);
    part_remove(s, p, "rec", &pt->rec); // read or failed: the disk space goes back now
    if (!rc)
        rc = part_open(s, p, "dup", &pt->dup, err);
    if ((rc = pm_mpi_worst_in(rc, comm))) {
        if (!err->code)
            pm_error_set(err, rc, "dedupe spill: part %u failed on another rank", p);
        return rc;
    }
    struct dedupe_exact_stats st;
    if ((rc = dedupe_exact_run(s->recs, n, s->keeper, comm, memory_limit, &st, err)))
        return rc;
    add_stats(sum, &st);
    for (size_t i = 0; !rc && i < n; i++) {
        if (s->keeper[i] == s->recs[i].id)
            continue;
        uint64_t pair[2] = {s->recs[i].id, s->keeper[i]};
        if (fwrite(pair, sizeof pair, 1, pt->dup) != 1)
            rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s/r%d-%u.dup': %s", s->dir, s->rank,
                              p, strerror(errno));
        pt->ndup++;
    }
    if (!rc && (fflush(pt->dup) || fseek(pt->dup, 0, SEEK_SET)))
        rc = pm_error_set(err, PM_ERR_IO, "cannot write '%s/r%d-%u.dup': %s", s->dir, s->rank, p,
                          strerror(errno));
    pt->left = pt->ndup;
    if ((rc = pm_mpi_worst_in(rc, comm)) && !err->code)
        pm_error_set(err, rc, "dedupe spill: part %u failed on another rank", p);
    return rc;
}

int dedupe_spill_run(struct dedupe_spill *s, MPI_Comm comm, size_t memory_limit,
                     struct dedupe_exact_stats *stats, struct pm_error *err)
{
    struct dedupe_exact_stats sum = {0, 0, 0, 0};
    int rc = PM_OK;
    if (s->ran)
        rc = pm_error_set(err, PM_ERR_USAGE, "dedupe spill: run twice");
    else if (s->parts == 1 && !(s->keeper = pm_big_alloc((s->n ? s->n : 1) * sizeof *s->keeper)))
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory for %zu dedupe records", s->n);
    s->ran = 1;
    if ((rc = pm_mpi_worst_in(rc, comm))) {
        if (!err->code)
            pm_error_set(err, rc, "dedupe spill: failed on another rank");
        return rc;
    }
    if (s->parts == 1) {
        rc = dedupe_exact_run(s->recs, s->n, s->keeper, comm, memory_limit, &sum, err);
    } else {
        s->cap = 1;
        for (unsigned p = 0; p < s->parts; p++)
            s->cap = s->part[p].nrec > s->cap ? (size_t)s->part[p].nrec : s->cap;
        s->recs = pm_big_alloc(s->cap * sizeof *s->recs);
        s->keeper = pm_big_alloc(s->cap * sizeof *s->keeper);
        for (unsigned p = 0; rc == PM_OK && p < s->parts; p++)
            rc = run_part(s, p, comm, memory_limit, &sum, err);
        // the largest part's buffers are not needed for reading
        pm_big_free(s->recs);
        pm_big_free(s->keeper);
        s->recs = NULL;
        s->keeper = NULL;
        s->cap = 0;
    }
    if (rc == PM_OK && stats)
        *stats = sum;
    return rc;
}

static int part_head(struct dedupe_spill *s, unsigned p, struct pm_error *err)
{
    struct dedupe_spill_part *pt = &s->part[p];
    if (pt->has_head || !pt->left)
        return PM_OK;
    if (fread(pt->head, sizeof pt->head, 1, pt->dup) != 1)
        return pm_error_set(err, PM_ERR_IO, "cannot read '%s/r%d-%u.dup'", s->dir, s->rank, p);
    if (pt->head[1] >= pt->head[0])
        return pm_error_set(err, PM_ERR_FORMAT, "'%s/r%d-%u.dup': keeper after its record", s->dir,
                            s->rank, p);
    pt->left--;
    pt->has_head = 1;
    return PM_OK;
}

int dedupe_spill_next(struct dedupe_spill *s, uint64_t *id, uint64_t *keeper, struct pm_error *err)
{
    if (!s->ran)
        return -pm_error_set(err, PM_ERR_USAGE, "dedupe spill: read before the run");
    if (s->parts == 1) {
        while (s->at < s->n && s->keeper[s->at] == s->recs[s->at].id)
            s->at++;
        if (s->at == s->n)
            return 0;
        *id = s->recs[s->at].id;
        *keeper = s->keeper[s->at];
        s->at++;
        return 1;
    }
    // merge the parts (each in id order): the smallest head; parts are few
    unsigned best = s->parts;
    for (unsigned p = 0; p < s->parts; p++) {
        int rc = part_head(s, p, err);
        if (rc)
            return -rc;
        if (s->part[p].has_head && (best == s->parts || s->part[p].head[0] < s->part[best].head[0]))
            best = p;
    }
    if (best == s->parts)
        return 0;
    *id = s->part[best].head[0];
    *keeper = s->part[best].head[1];
    s->part[best].has_head = 0;
    return 1;
}

void dedupe_spill_free(struct dedupe_spill *s)
{
    if (!s)
        return;
    if (s->part) {
        for (unsigned p = 0; p < s->parts; p++) {
            part_remove(s, p, "rec", &s->part[p].rec);
            part_remove(s, p, "dup", &s->part[p].dup);
        }
        rmdir(s->dir); // the last rank's free removes it; others find it not empty
        free(s->part);
    }
    pm_big_free(s->recs);
    pm_big_free(s->keeper);
    free(s);
}

static int is_part_file(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && (!strcmp(name + n - 4, ".rec") || !strcmp(name + n - 4, ".dup"));
}

int dedupe_spill_clear(const char *dir, struct pm_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT
                   ? PM_OK
                   : pm_error_set(err, PM_ERR_IO, "cannot open '%s': %s", dir, strerror(errno));
    int rc = PM_OK;
    struct dirent *e;
    char path[PATH_MAX];
    while (rc == PM_OK && (e = readdir(d))) {
        if (!is_part_file(e->d_name))
            continue;
        int k = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (k < 0 || (size_t)k >= sizeof path)
            rc = pm_error_set(err, PM_ERR_LIMIT, "path too long under '%s'", dir);
        else if (unlink(path) && errno != ENOENT)
            rc = pm_error_set(err, PM_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
    }
    closedir(d);
    if (rc == PM_OK && rmdir(dir) && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST)
        rc = pm_error_set(err, PM_ERR_IO, "cannot remove '%s': %s", dir, strerror(errno));
    return rc;
}
