#include "tar_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_MEMBER ((size_t)256 << 20)
#define DEFAULT_MAX_FIELDS 64
#define NAME_MAX_BYTES 4096 // longest member path accepted (pax can carry any length)

struct field_slot {
    char *name;
    size_t name_cap;
    unsigned char *data;
    size_t cap; // bytes allocated for data (size + 1 for the NUL)
};

struct tar_reader {
    struct archive *ar;
    struct archive_entry *entry; // current header, owned by ar
    char *shard;
    size_t max_member;
    size_t max_fields;
    struct field_slot *slots; // max_fields
    struct tar_field *fields; // max_fields
    char *key;
    size_t key_cap;
    bool pending; // entry holds a header whose data has not been consumed
    bool eof;
    bool failed;
    uint64_t entry_offset;
    uint64_t data_end; // offset just after the last member consumed (padding included)
    uint64_t skipped;
    char last_member[256]; // for messages: the last member read completely
};

int tar_reader_split_name(const char *name, size_t *key_len, const char **field)
{
    // webdataset: ^((?:.*/|)[^.]+)[.]([^/]*)$
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    if (base[0] == '\0' || base[0] == '.')
        return 0;
    const char *dot = strchr(base, '.');
    if (!dot)
        return 0;
    *key_len = (size_t)(dot - name);
    *field = dot + 1;
    return 1;
}

static int reader_create(const char *name, const struct tar_reader_options *opts,
                         struct tar_reader **out, struct pm_error *err)
{
    *out = NULL;
    struct tar_reader *r = calloc(1, sizeof *r);
    if (!r)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening shard '%s'", name);
    r->max_member = opts && opts->max_member_size ? opts->max_member_size : DEFAULT_MAX_MEMBER;
    r->max_fields = opts && opts->max_fields ? opts->max_fields : DEFAULT_MAX_FIELDS;
    r->shard = strdup(name);
    r->slots = calloc(r->max_fields, sizeof *r->slots);
    r->fields = calloc(r->max_fields, sizeof *r->fields);
    r->ar = archive_read_new();
    if (!r->shard || !r->slots || !r->fields || !r->ar) {
        tar_reader_free(r);
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory opening shard '%s'", name);
    }
    // tar family only (ustar, pax, gnu, v7); no compression filters
    archive_read_support_format_tar(r->ar);
    *out = r;
    return PM_OK;
}

static int open_failed(struct tar_reader **out, struct pm_error *err)
{
    struct tar_reader *r = *out;
    const char *msg = archive_error_string(r->ar);
    // libarchive reports an unrecognised format with EILSEQ (ARCHIVE_ERRNO_FILE_FORMAT on
    // Linux) or ARCHIVE_ERRNO_MISC; anything else is the operating system's errno
    int e = archive_errno(r->ar);
    int rc;
    if (e == EILSEQ || e == -1 /* ARCHIVE_ERRNO_MISC */ || e == 0)
        rc = pm_error_set(err, PM_ERR_FORMAT, "shard '%s' at offset 0: not a tar file: %s",
                          r->shard, msg ? msg : "libarchive error");
    else
        rc = pm_error_set(err, PM_ERR_IO, "cannot open shard '%s': %s", r->shard,
                          msg ? msg : strerror(e));
    tar_reader_free(r);
    *out = NULL;
    return rc;
}

int tar_reader_open(const char *path, const struct tar_reader_options *opts,
                    struct tar_reader **out, struct pm_error *err)
{
    int rc = reader_create(path, opts, out, err);
    if (rc != PM_OK)
        return rc;
    if (archive_read_open_filename((*out)->ar, path, 1 << 16) != ARCHIVE_OK)
        return open_failed(out, err);
    return PM_OK;
}

int tar_reader_open_memory(const void *data, size_t size, const char *name,
                           const struct tar_reader_options *opts, struct tar_reader **out,
                           struct pm_error *err)
{
    int rc = reader_create(name, opts, out, err);
    if (rc != PM_OK)
        return rc;
    if (archive_read_open_memory((*out)->ar, data, size) != ARCHIVE_OK)
        return open_failed(out, err);
    return PM_OK;
}

static int fail(struct tar_reader *r, struct pm_error *err, int code, const char *what,
                const char *member)
{
    r->failed = true;
    const char *msg = archive_error_string(r->ar);
    if (member)
        return pm_error_set(err, code, "shard '%s': %s at offset %llu (member '%s')%s%s", r->shard,
                            what, (unsigned long long)r->entry_offset, member, msg ? ": " : "",
                            msg ? msg : "");
    return pm_error_set(err, code, "shard '%s': %s at offset %llu (after member '%s')%s%s",
                        r->shard, what, (unsigned long long)r->entry_offset,
                        r->last_member[0] ? r->last_member : "(none)", msg ? ": " : "",
                        msg ? msg : "");
}

static int refuse(struct tar_reader *r, struct pm_error *err, int code, const char *member,
                  const char *why)
{
    r->failed = true;
    return pm_error_set(err, code, "shard '%s': member '%s' at offset %llu refused: %s", r->shard,
                        member, (unsigned long long)r->entry_offset, why);
}

static bool has_dotdot(const char *p)
{
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return true;
        if (!slash)
            return false;
        p = slash + 1;
    }
}

// Check the current header; returns PM_OK or an error. Sets *name.
static int check_entry(struct tar_reader *r, const char **name, struct pm_error *err)
{
    struct archive_entry *e = r->entry;
    // names as UTF-8 whatever the locale; raw bytes when they are not valid UTF-8
    const char *p = archive_entry_pathname_utf8(e);
    if (!p)
        p = archive_entry_pathname(e);
    if (!p || !p[0])
        return refuse(r, err, PM_ERR_FORMAT, p ? p : "?", "empty or unreadable name");
    *name = p;
    if (strlen(p) > NAME_MAX_BYTES)
        return refuse(r, err, PM_ERR_FORMAT, p, "name longer than 4096 bytes");
    if (p[0] == '/')
        return refuse(r, err, PM_ERR_FORMAT, p, "absolute path");
    if (has_dotdot(p))
        return refuse(r, err, PM_ERR_FORMAT, p, "'..' path component");
    if (archive_entry_hardlink(e))
        return refuse(r, err, PM_ERR_FORMAT, p, "hard link (only regular files are read)");
    if (archive_entry_symlink(e) || archive_entry_filetype(e) == AE_IFLNK)
        return refuse(r, err, PM_ERR_FORMAT, p, "symbolic link (only regular files are read)");
    if (archive_entry_filetype(e) != AE_IFREG)
        return refuse(r, err, PM_ERR_FORMAT, p, "not a regular file");
    if (archive_entry_sparse_count(e) > 0)
        return refuse(r, err, PM_ERR_FORMAT, p, "sparse file (only plain files are read)");
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
        return refuse(r, err, PM_ERR_FORMAT, p, "no size");
    return PM_OK;
}

static int grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return PM_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    void *q = realloc(*p, n);
    if (!q)
        return PM_ERR_NOMEM;
    *p = q;
    *cap = n;
    return PM_OK;
}

int tar_reader_next(struct tar_reader *r, struct tar_sample *sample, struct pm_error *err)
{
    if (r->failed)
        return pm_error_set(err, PM_ERR_USAGE, "shard '%s': reader used after an error", r->shard);
    size_t n = 0;
    bool have_key = false;
    size_t key_len = 0;
    uint64_t sample_offset = 0;
    while (!r->eof) {
        if (!r->pending) {
            int st = archive_read_next_header(r->ar, &r->entry);
            if (st == ARCHIVE_EOF) {
                // libarchive also stops cleanly at a member boundary without the two zero
                // blocks that end a tar: that is a shard cut short (e.g. a killed writer)
                la_int64_t end = archive_filter_bytes(r->ar, 0);
                if (end < 0 || (uint64_t)end < r->data_end + 1024) {
                    r->entry_offset = r->data_end;
                    r->failed = true;
                    return pm_error_set(err, PM_ERR_FORMAT,
                                        "shard '%s': truncated: no end-of-archive blocks at "
                                        "offset %llu (after member '%s')",
                                        r->shard, (unsigned long long)r->data_end,
                                        r->last_member[0] ? r->last_member : "(none)");
                }
                r->eof = true;
                break;
            }
            la_int64_t pos = archive_read_header_position(r->ar);
            r->entry_offset = pos >= 0 ? (uint64_t)pos : 0;
            // ARCHIVE_WARN: the header was read but e.g. a UTF-8 name has no form in the
            // current locale; check_entry() below decides whether the entry is usable
            if (st != ARCHIVE_OK && st != ARCHIVE_WARN)
                return fail(r, err, PM_ERR_FORMAT, "truncated or corrupt tar header", NULL);
            r->pending = true;
        }
        const char *name = "?";
        int rc = check_entry(r, &name, err);
        if (rc != PM_OK)
            return rc;
        size_t klen;
        const char *field;
        if (!tar_reader_split_name(name, &klen, &field)) {
            // no key: webdataset skips such members
            if (archive_read_data_skip(r->ar) != ARCHIVE_OK)
                return fail(r, err, PM_ERR_FORMAT, "truncated tar", name);
            r->data_end = (uint64_t)archive_filter_bytes(r->ar, 0);
            r->pending = false;
            r->skipped++;
            continue;
        }
        if (have_key && (klen != key_len || memcmp(name, r->key, klen) != 0))
            break; // the next sample starts here; keep the header pending
        if (!have_key) {
            if (grow((void **)&r->key, &r->key_cap, klen + 1) != PM_OK)
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", r->shard);
            memcpy(r->key, name, klen);
            r->key[klen] = '\0';
            key_len = klen;
            have_key = true;
            sample_offset = r->entry_offset;
        }
        if (n == r->max_fields)
            return refuse(r, err, PM_ERR_LIMIT, name, "too many members in one sample");
        struct field_slot *s = &r->slots[n];
        size_t flen = strlen(field);
        if (grow((void **)&s->name, &s->name_cap, flen + 1) != PM_OK)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s'", r->shard);
        for (size_t i = 0; i <= flen; i++) {
            char c = field[i];
            s->name[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(r->slots[i].name, s->name) == 0)
                return refuse(r, err, PM_ERR_FORMAT, name, "field repeated within a sample");
        la_int64_t size64 = archive_entry_size(r->entry);
        if ((uint64_t)size64 > r->max_member)
            return refuse(r, err, PM_ERR_LIMIT, name, "member larger than the size limit");
        size_t size = (size_t)size64;
        if (grow((void **)&s->data, &s->cap, size + 1) != PM_OK)
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory reading '%s' (%zu bytes)", name,
                                size);
        size_t got = 0;
        while (got < size) {
            la_ssize_t rd = archive_read_data(r->ar, s->data + got, size - got);
            if (rd < 0)
                return fail(r, err, PM_ERR_FORMAT, "truncated or corrupt member data", name);
            if (rd == 0)
                return fail(r, err, PM_ERR_FORMAT, "member data ends early", name);
            got += (size_t)rd;
        }
        s->data[size] = '\0';
        // consume the padding to the next 512-byte block, so data_end is exact
        if (archive_read_data_skip(r->ar) != ARCHIVE_OK)
            return fail(r, err, PM_ERR_FORMAT, "truncated member padding", name);
        r->data_end = (uint64_t)archive_filter_bytes(r->ar, 0);
        r->fields[n].name = s->name;
        r->fields[n].data = s->data;
        r->fields[n].size = size;
        n++;
        r->pending = false;
        size_t nl = strlen(name);
        if (nl >= sizeof r->last_member)
            nl = sizeof r->last_member - 1;
        memcpy(r->last_member, name, nl);
        r->last_member[nl] = '\0';
    }
    if (!have_key)
        return PM_ERR_NOT_FOUND;
    sample->key = r->key;
    sample->fields = r->fields;
    sample->nfields = n;
    sample->offset = sample_offset;
    return PM_OK;
}

uint64_t tar_reader_skipped(const struct tar_reader *r)
{
    return r->skipped;
}

void tar_reader_free(struct tar_reader *r)
{
    if (!r)
        return;
    if (r->ar)
        archive_read_free(r->ar);
    if (r->slots)
        for (size_t i = 0; i < r->max_fields; i++) {
            free(r->slots[i].name);
            free(r->slots[i].data);
        }
    free(r->slots);
    free(r->fields);
    free(r->key);
    free(r->shard);
    free(r);
}
