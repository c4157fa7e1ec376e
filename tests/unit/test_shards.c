/* Unit tests for the shards module: atomic files, tar writer/reader, index and stats. */
#include "atomic_file.h"
#include "check.h"
#include "test_files.h"
#include "dataset_index.h"
#include "file_hash.h"
#include "shard.h"
#include "shard_stats.h"
#include "tar_reader.h"
#include "tar_writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[256];

static void path_in(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static void touch(const char *name, time_t mtime)
{
    char p[512];
    path_in(p, sizeof p, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0)
        close(fd);
    if (mtime) {
        struct timespec ts[2] = {{mtime, 0}, {mtime, 0}};
        utimensat(AT_FDCWD, p, ts, 0);
    }
}

static size_t count_temps(void)
{
    size_t n = 0;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -a '%s'", tmpdir);
    FILE *p = popen(cmd, "r");
    char line[512];
    while (p && fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        if (atomic_file_is_temp_name(line))
            n++;
    }
    if (p)
        pclose(p);
    return n;
}

static void test_atomic_commit(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char final[512];
    path_in(final, sizeof final, "a.bin");
    struct atomic_file *f;
    CHECK(atomic_file_open(final, &f, &err) == PM_OK);
    CHECK(atomic_file_write(f, "hello ", 6, &err) == PM_OK);
    CHECK(atomic_file_write(f, "world", 5, &err) == PM_OK);
    // before the commit: no final name, one temporary name in the same directory
    CHECK(!file_exists(final));
    CHECK(file_exists(atomic_file_temp_path(f)));
    const char *base = strrchr(atomic_file_temp_path(f), '/') + 1;
    CHECK(atomic_file_is_temp_name(base));
    CHECK(strncmp(base, ".a.bin.tmp.", 11) == 0);
    char tmp_copy[512];
    snprintf(tmp_copy, sizeof tmp_copy, "%s", atomic_file_temp_path(f));
    CHECK(atomic_file_commit(f, &err) == PM_OK);
    CHECK(file_exists(final));
    CHECK(!file_exists(tmp_copy));
    CHECK(atomic_file_write(f, "x", 1, &err) == PM_ERR_USAGE);
    atomic_file_free(f);
    size_t n;
    unsigned char *b = file_slurp(final, &n);
    CHECK(b && n == 11 && memcmp(b, "hello world", 11) == 0);
    free(b);

    // abort removes the temporary file and leaves the old final file alone
    CHECK(atomic_file_open(final, &f, &err) == PM_OK);
    CHECK(atomic_file_write(f, "new", 3, &err) == PM_OK);
    snprintf(tmp_copy, sizeof tmp_copy, "%s", atomic_file_temp_path(f));
    atomic_file_abort(f);
    CHECK(!file_exists(tmp_copy));
    atomic_file_free(f);
    b = file_slurp(final, &n);
    CHECK(b && n == 11);
    free(b);

    // without fsync (a staging copy): the same rename, the same bytes, no temporary left
    char staged[512];
    path_in(staged, sizeof staged, "s.bin");
    CHECK(atomic_file_open(staged, &f, &err) == PM_OK);
    atomic_file_set_sync(f, false);
    CHECK(atomic_file_write(f, "staged", 6, &err) == PM_OK);
    CHECK(!file_exists(staged));
    CHECK(atomic_file_commit(f, &err) == PM_OK);
    atomic_file_free(f);
    b = file_slurp(staged, &n);
    CHECK(b && n == 6 && memcmp(b, "staged", 6) == 0);
    free(b);
    unlink(staged);

    // free without commit aborts too
    char other[512];
    path_in(other, sizeof other, "b.bin");
    CHECK(atomic_file_open(other, &f, &err) == PM_OK);
    atomic_file_free(f);
    CHECK(!file_exists(other));
    CHECK(count_temps() == 0);
    atomic_file_free(NULL);

    // write_all
    CHECK(atomic_file_write_all(other, "xyz", 3, &err) == PM_OK);
    b = file_slurp(other, &n);
    CHECK(b && n == 3 && memcmp(b, "xyz", 3) == 0);
    free(b);

    // errors name the path
    char missing[512];
    path_in(missing, sizeof missing, "no-such-dir/c.bin");
    CHECK(atomic_file_write_all(missing, "x", 1, &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, "no-such-dir/c.bin") != NULL);
    CHECK(atomic_file_open("", &f, &err) == PM_ERR_USAGE && f == NULL);
    // ENOSPC-like failure: /dev/full accepts no data (cannot create a temp there as non-root
    // either way we get PM_ERR_IO)
    CHECK(atomic_file_write_all("/proc/no-such/x", "x", 1, &err) == PM_ERR_IO);
}

static void test_atomic_sweep(void)
{
    struct pm_error err = PM_ERROR_INIT;
    CHECK(atomic_file_is_temp_name(".00001.tar.tmp.4242.0123456789abcdef"));
    CHECK(!atomic_file_is_temp_name("00001.tar"));
    CHECK(!atomic_file_is_temp_name(".hidden"));
    CHECK(!atomic_file_is_temp_name(".x.tmp.12.0123456789abcdeg"));
    CHECK(!atomic_file_is_temp_name(".x.tmp..0123456789abcdef"));
    CHECK(!atomic_file_is_temp_name("..tmp.1.0123456789abcdef"));
    CHECK(!atomic_file_is_temp_name("x.tar.tmp.1.0123456789abcdef"));

    time_t old = time(NULL) - 7200;
    touch(".00001.tar.tmp.4242.0123456789abcdef", old); // stale, old
    touch(".00002.tar.tmp.99.fedcba9876543210", 0);     // stale, fresh
    touch(".hidden", old);
    touch("keep.tmp", old);
    touch(".x.tmp.12.zz", old);
    touch("00003.tar", old);
    // a live writer's temp file
    char live[512];
    path_in(live, sizeof live, "live.tar");
    struct atomic_file *f;
    CHECK(atomic_file_open(live, &f, &err) == PM_OK);

    size_t removed = 99;
    CHECK(atomic_file_sweep(tmpdir, 3600, &removed, &err) == PM_OK);
    CHECK(removed == 1);
    char p[512];
    path_in(p, sizeof p, ".00001.tar.tmp.4242.0123456789abcdef");
    CHECK(!file_exists(p));
    path_in(p, sizeof p, ".00002.tar.tmp.99.fedcba9876543210");
    CHECK(file_exists(p));
    CHECK(file_exists(atomic_file_temp_path(f)));
    CHECK(atomic_file_sweep(tmpdir, 0, &removed, &err) == PM_OK);
    CHECK(removed == 2); // the fresh stale one and the live one
    CHECK(!file_exists(p));
    const char *kept[] = {".hidden", "keep.tmp", ".x.tmp.12.zz", "00003.tar", "a.bin"};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        path_in(p, sizeof p, kept[i]);
        CHECK(file_exists(p));
    }
    CHECK(atomic_file_commit(f, &err) == PM_ERR_IO); // its temp file was swept away
    atomic_file_free(f);
    CHECK(atomic_file_sweep("/no/such/dir", 0, NULL, &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, "/no/such/dir") != NULL);
}

static void test_file_hash(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char p[512];
    path_in(p, sizeof p, "h.bin");
    unsigned char buf[100000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 7 + (i >> 8));
    CHECK(atomic_file_write_all(p, buf, sizeof buf, &err) == PM_OK);
    char a[FILE_HASH_HEX_LEN + 1], b[FILE_HASH_HEX_LEN + 1], c[FILE_HASH_HEX_LEN + 1];
    uint64_t size = 0;
    CHECK(file_hash_path(p, a, &size, &err) == PM_OK);
    CHECK(size == sizeof buf);
    file_hash_hex_of(buf, sizeof buf, b);
    CHECK_STR(a, b);
    struct file_hash *h = file_hash_create();
    file_hash_update(h, buf, 333);
    file_hash_update(h, buf + 333, sizeof buf - 333);
    file_hash_hex(h, c);
    CHECK_STR(a, c);
    CHECK(file_hash_is_hex(a));
    file_hash_free(h);
    file_hash_hex_of(buf, sizeof buf - 1, c);
    CHECK(strcmp(a, c) != 0);
    CHECK(file_hash_path("/no/such/file", a, NULL, &err) == PM_ERR_IO);
}

static void test_shard_names(void)
{
    struct pm_error err = PM_ERROR_INIT;
    CHECK(shard_digits(0) == 5 && shard_digits(1) == 5 && shard_digits(100000) == 5);
    CHECK(shard_digits(100001) == 6 && shard_digits(10000000) == 7);
    CHECK(shard_sample_digits(1) == 0 && shard_sample_digits(10) == 1);
    CHECK(shard_sample_digits(11) == 2 && shard_sample_digits(10000) == 4);
    CHECK(shard_sample_digits(10001) == 5);
    char b[64];
    CHECK(shard_name(b, sizeof b, 12, 5) == PM_OK);
    CHECK_STR(b, "00012");
    CHECK(shard_name(b, sizeof b, 123456, 5) == PM_OK);
    CHECK_STR(b, "123456");
    CHECK(shard_name(b, 4, 12, 5) == PM_ERR_LIMIT);
    CHECK(shard_path(b, sizeof b, "d", 7, 6, "_stats.json") == PM_OK);
    CHECK_STR(b, "d/000007_stats.json");
    // img2dataset: 10000 per shard, shard 1, row 5 -> 000010005
    CHECK(shard_key(b, sizeof b, 1, 5, 10000, 5, &err) == PM_OK);
    CHECK_STR(b, "000010005");
    CHECK(shard_key(b, sizeof b, 0, 0, 10000, 5, &err) == PM_OK);
    CHECK_STR(b, "000000000");
    CHECK(shard_key(b, sizeof b, 3, 42, 1000, 5, &err) == PM_OK);
    CHECK_STR(b, "00003042");
    CHECK(shard_key(b, sizeof b, 3, 1000, 1000, 5, &err) == PM_ERR_USAGE);
    CHECK(shard_key(b, sizeof b, UINT64_MAX / 10, 0, 10000, 5, &err) == PM_ERR_LIMIT);
}

static void test_writer_rejects(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char p[512];
    path_in(p, sizeof p, "rej.tar");
    struct tar_writer *w;
    CHECK(tar_writer_open(p, NULL, &w, &err) == PM_OK);
    char key[128];
    memset(key, 'k', 95);
    key[95] = 0; // 95 + ".jpg" = 99: allowed
    struct tar_member m[2] = {{"jpg", "x", 1}, {"txt", "y", 1}};
    CHECK(tar_writer_add_sample(w, key, m, 1, &err) == PM_OK);
    strcat(key, "k"); // 100 bytes: refused
    CHECK(tar_writer_add_sample(w, key, m, 1, &err) == PM_ERR_LIMIT);
    CHECK(strstr(err.msg, "99") != NULL);
    const char *bad[] = {"", "a.b", "../x", "/x", "a//b", "a/./b", "d/..", "a\nb", "x/"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(tar_writer_add_sample(w, bad[i], m, 1, &err) == PM_ERR_USAGE);
    struct tar_member dup[2] = {{"jpg", "x", 1}, {"JPG", "y", 1}};
    CHECK(tar_writer_add_sample(w, "dup", dup, 2, &err) == PM_ERR_USAGE);
    struct tar_member slash[1] = {{"a/b", "x", 1}};
    CHECK(tar_writer_add_sample(w, "s", slash, 1, &err) == PM_ERR_USAGE);
    struct tar_member empty[1] = {{"", "x", 1}};
    CHECK(tar_writer_add_sample(w, "s", empty, 1, &err) == PM_ERR_USAGE);
    CHECK(tar_writer_add_sample(w, "s", m, 0, &err) == PM_ERR_USAGE);
    CHECK(tar_writer_add_sample(w, "dir/s1", m, 2, &err) == PM_OK);
    CHECK(tar_writer_add_sample(w, "dir/s1", m, 2, &err) == PM_ERR_USAGE); // same key again
    CHECK(!file_exists(p)); // nothing under the final name before close
    struct tar_writer_result res;
    CHECK(tar_writer_close(w, &res, &err) == PM_OK);
    CHECK(res.nsamples == 2 && res.nmembers == 3);
    tar_writer_free(w);
    CHECK(file_exists(p));
    // an aborted writer leaves nothing
    char q[512];
    path_in(q, sizeof q, "aborted.tar");
    CHECK(tar_writer_open(q, NULL, &w, &err) == PM_OK);
    CHECK(tar_writer_add_sample(w, "a", m, 2, &err) == PM_OK);
    tar_writer_free(w);
    CHECK(!file_exists(q));
    CHECK(count_temps() == 0);
}

// A write error in the middle of a shard (here EFBIG from a file size limit, standing in
// for ENOSPC): PM_ERR_IO naming the shard, close fails, nothing left under any name.
static int io_error_child(void)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {30000, 30000};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 10;
    struct pm_error err = PM_ERROR_INIT;
    char p[512];
    path_in(p, sizeof p, "full.tar");
    struct tar_writer *w;
    if (tar_writer_open(p, NULL, &w, &err) != PM_OK)
        return 11;
    static char big[20000];
    struct tar_member m[1] = {{"bin", big, sizeof big}};
    int rc = PM_OK;
    char key[16];
    int i;
    for (i = 0; i < 10 && rc == PM_OK; i++) {
        snprintf(key, sizeof key, "k%d", i);
        rc = tar_writer_add_sample(w, key, m, 1, &err);
    }
    if (rc != PM_ERR_IO || !strstr(err.msg, "full.tar"))
        return 12;
    if (tar_writer_add_sample(w, "later", m, 1, &err) == PM_OK)
        return 13;
    if (tar_writer_close(w, NULL, &err) == PM_OK)
        return 14;
    tar_writer_free(w);
    if (file_exists(p) || count_temps() != 0)
        return 15;
    // atomic_file_write_all reports it too, and leaves nothing
    path_in(p, sizeof p, "full.bin");
    if (atomic_file_write_all(p, big, sizeof big, &err) != PM_OK)
        return 16; // 20000 < limit: fits
    static char bigger[40000];
    if (atomic_file_write_all(p, bigger, sizeof bigger, &err) != PM_ERR_IO ||
        !strstr(err.msg, "full.bin"))
        return 17;
    if (count_temps() != 0)
        return 18;
    return 0;
}

static void test_writer_io_error(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(io_error_child());
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "  io_error_child: status %d\n", status);
    char p[512];
    path_in(p, sizeof p, "full.bin");
    unlink(p);
}

static int write_sample_shard_opt(const char *path, int nsamples, int64_t mtime, bool no_sync,
                                  struct tar_writer_result *res)
{
    struct pm_error err = PM_ERROR_INIT;
    struct tar_writer_options o = TAR_WRITER_OPTIONS_INIT;
    o.mtime = mtime;
    o.no_sync = no_sync;
    struct tar_writer *w;
    if (tar_writer_open(path, &o, &w, &err) != PM_OK)
        return -1;
    int rc = PM_OK;
    for (int i = 0; i < nsamples && rc == PM_OK; i++) {
        char key[32], txt[64], img[700];
        shard_key(key, sizeof key, 0, (uint64_t)i, 10000, 5, &err);
        int tn = snprintf(txt, sizeof txt, "caption %d", i);
        size_t in = (size_t)(i * 37 % 700);
        for (size_t j = 0; j < in; j++)
            img[j] = (char)(i + j);
        struct tar_member m[3] = {{"jpg", img, in}, {"txt", txt, (size_t)tn}, {"json", "{}", 2}};
        rc = tar_writer_add_sample(w, key, m, 3, &err);
    }
    if (rc == PM_OK)
        rc = tar_writer_close(w, res, &err);
    tar_writer_free(w);
    return rc;
}

static int write_sample_shard(const char *path, int nsamples, int64_t mtime,
                              struct tar_writer_result *res)
{
    return write_sample_shard_opt(path, nsamples, mtime, false, res);
}

static void test_writer_deterministic(void)
{
    char a[512], b[512];
    path_in(a, sizeof a, "det1.tar");
    path_in(b, sizeof b, "det2.tar");
    struct tar_writer_result ra, rb;
    CHECK(write_sample_shard(a, 50, 1700000000, &ra) == PM_OK);
    // a staging copy (no fsync) holds the same bytes
    CHECK(write_sample_shard_opt(b, 50, 1700000000, true, &rb) == PM_OK);
    size_t na, nb;
    unsigned char *da = file_slurp(a, &na), *db = file_slurp(b, &nb);
    CHECK(da && db && na == nb && memcmp(da, db, na) == 0);
    CHECK(ra.bytes == na && ra.nsamples == 50 && ra.nmembers == 150);
    CHECK(na % 10240 == 0);
    CHECK_STR(ra.xxh3, rb.xxh3);
    char h[FILE_HASH_HEX_LEN + 1];
    struct pm_error err = PM_ERROR_INIT;
    CHECK(file_hash_path(a, h, NULL, &err) == PM_OK);
    CHECK_STR(h, ra.xxh3);
    // walk the headers: every one plain ustar, regular file, name within the name field
    size_t off = 0, members = 0;
    int plain = 1;
    while (da && off + 512 <= na && da[off] != 0) {
        const unsigned char *hd = da + off;
        if (memcmp(hd + 257,
                   "ustar\0"
                   "00",
                   8) != 0 ||
            hd[156] != '0' || hd[99] != 0 || hd[345] != 0 /* prefix unused */)
            plain = 0;
        char sz[13] = {0};
        memcpy(sz, hd + 124, 12);
        size_t s = (size_t)strtoull(sz, NULL, 8);
        char mode[9] = {0};
        memcpy(mode, hd + 100, 8);
        if (strtol(mode, NULL, 8) != 0644)
            plain = 0;
        off += 512 + (s + 511) / 512 * 512;
        members++;
    }
    CHECK(plain);
    CHECK(members == 150);
    free(da);
    free(db);
    // another mtime changes the bytes
    CHECK(write_sample_shard(b, 50, 1700000001, &rb) == PM_OK);
    CHECK(strcmp(ra.xxh3, rb.xxh3) != 0);
}

static void test_reader_roundtrip(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char a[512];
    path_in(a, sizeof a, "det1.tar");
    struct tar_reader *r;
    CHECK(tar_reader_open(a, NULL, &r, &err) == PM_OK);
    struct tar_sample s;
    int i = 0, rc;
    while ((rc = tar_reader_next(r, &s, &err)) == PM_OK) {
        char key[32], txt[64];
        shard_key(key, sizeof key, 0, (uint64_t)i, 10000, 5, &err);
        snprintf(txt, sizeof txt, "caption %d", i);
        CHECK_STR(s.key, key);
        CHECK(s.nfields == 3);
        if (s.nfields == 3) {
            CHECK_STR(s.fields[0].name, "jpg");
            CHECK_STR(s.fields[1].name, "txt");
            CHECK_STR(s.fields[2].name, "json");
            CHECK(s.fields[0].size == (size_t)(i * 37 % 700));
            CHECK(s.fields[0].size == 0 || s.fields[0].data[s.fields[0].size - 1] ==
                                               (unsigned char)(i + s.fields[0].size - 1));
            CHECK_STR((const char *)s.fields[1].data, txt);
        }
        i++;
    }
    CHECK(rc == PM_ERR_NOT_FOUND);
    CHECK(i == 50);
    tar_reader_free(r);
    CHECK(tar_reader_open("/no/such.tar", NULL, &r, &err) == PM_ERR_IO);
    CHECK(strstr(err.msg, "/no/such.tar") != NULL);
}

// Build a tar in memory with libarchive (pax, so any name is representable).
struct raw_member {
    const char *name;
    int type; // AE_IFREG, AE_IFLNK, AE_IFDIR
    const char *data;
    const char *link;
};

static size_t make_tar(unsigned char *buf, size_t cap, const struct raw_member *m, size_t n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_set_bytes_in_last_block(a, 1);
    size_t used = 0;
    archive_write_open_memory(a, buf, cap, &used);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, m[i].name);
        archive_entry_set_filetype(e, (unsigned)m[i].type);
        archive_entry_set_perm(e, 0644);
        size_t len = m[i].data ? strlen(m[i].data) : 0;
        archive_entry_set_size(e, (la_int64_t)len);
        if (m[i].link && m[i].type == AE_IFLNK)
            archive_entry_set_symlink(e, m[i].link);
        if (m[i].link && m[i].type == AE_IFREG)
            archive_entry_set_hardlink(e, m[i].link);
        archive_write_header(a, e);
        if (len)
            archive_write_data(a, m[i].data, len);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    return used;
}

static int read_all(const unsigned char *buf, size_t n, const struct tar_reader_options *o,
                    size_t *nsamples, struct pm_error *err)
{
    struct tar_reader *r;
    int rc = tar_reader_open_memory(buf, n, "mem.tar", o, &r, err);
    if (rc != PM_OK)
        return rc;
    struct tar_sample s;
    *nsamples = 0;
    while ((rc = tar_reader_next(r, &s, err)) == PM_OK)
        (*nsamples)++;
    tar_reader_free(r);
    return rc == PM_ERR_NOT_FOUND ? PM_OK : rc;
}

static void test_reader_refuses(void)
{
    static unsigned char buf[1 << 16];
    struct pm_error err = PM_ERROR_INIT;
    size_t ns;
    struct {
        struct raw_member m[2];
        int expect;
        const char *msg;
    } cases[] = {
        {{{"a.jpg", AE_IFREG, "x", NULL}, {"../x.jpg", AE_IFREG, "y", NULL}},
         PM_ERR_FORMAT,
         "'..'"},
        {{{"a.jpg", AE_IFREG, "x", NULL}, {"/etc/passwd", AE_IFREG, "y", NULL}},
         PM_ERR_FORMAT,
         "absolute"},
        {{{"a.jpg", AE_IFREG, "x", NULL}, {"a.txt", AE_IFLNK, NULL, "/etc/passwd"}},
         PM_ERR_FORMAT,
         "symbolic link"},
        {{{"a.jpg", AE_IFREG, "x", NULL}, {"b.txt", AE_IFREG, NULL, "a.jpg"}},
         PM_ERR_FORMAT,
         "hard link"},
        {{{"d", AE_IFDIR, NULL, NULL}, {"d/a.txt", AE_IFREG, "x", NULL}}, PM_ERR_FORMAT, "regular"},
        {{{"x/../../a.jpg", AE_IFREG, "x", NULL}, {"b.txt", AE_IFREG, "x", NULL}},
         PM_ERR_FORMAT,
         "'..'"},
        {{{"a.jpg", AE_IFREG, "x", NULL}, {"a.JPG", AE_IFREG, "y", NULL}},
         PM_ERR_FORMAT,
         "repeated"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n = make_tar(buf, sizeof buf, cases[i].m, 2);
        CHECK(n > 0);
        int rc = read_all(buf, n, NULL, &ns, &err);
        CHECK(rc == cases[i].expect);
        CHECK(strstr(err.msg, cases[i].msg) != NULL && strstr(err.msg, "mem.tar") != NULL);
        if (rc != cases[i].expect || !strstr(err.msg, cases[i].msg))
            fprintf(stderr, "  case %zu: rc %d: %s\n", i, rc, err.msg);
    }
    // grouping: same key non-adjacent = two samples; no-dot names skipped; case folded
    struct raw_member g[] = {{"a.jpg", AE_IFREG, "1", NULL},  {"a.TXT", AE_IFREG, "2", NULL},
                             {"README", AE_IFREG, "3", NULL}, {"b.jpg", AE_IFREG, "4", NULL},
                             {"a.jpg", AE_IFREG, "5", NULL},  {"d/c.seg.PNG", AE_IFREG, "6", NULL},
                             {"d/.hid", AE_IFREG, "7", NULL}};
    size_t n = make_tar(buf, sizeof buf, g, sizeof g / sizeof *g);
    struct tar_reader *r;
    CHECK(tar_reader_open_memory(buf, n, "g.tar", NULL, &r, &err) == PM_OK);
    struct tar_sample s;
    const char *keys[] = {"a", "b", "a", "d/c"};
    size_t nf[] = {2, 1, 1, 1};
    for (int i = 0; i < 4; i++) {
        CHECK(tar_reader_next(r, &s, &err) == PM_OK);
        CHECK_STR(s.key, keys[i]);
        CHECK(s.nfields == nf[i]);
    }
    CHECK_STR(s.fields[0].name, "seg.png");
    CHECK(tar_reader_next(r, &s, &err) == PM_ERR_NOT_FOUND);
    CHECK(tar_reader_skipped(r) == 2);
    tar_reader_free(r);
    // size limit
    struct tar_reader_options o = TAR_READER_OPTIONS_INIT;
    o.max_member_size = 3;
    struct raw_member big[] = {{"a.txt", AE_IFREG, "abc", NULL}, {"b.txt", AE_IFREG, "abcd", NULL}};
    n = make_tar(buf, sizeof buf, big, 2);
    CHECK(read_all(buf, n, &o, &ns, &err) == PM_ERR_LIMIT);
    CHECK(strstr(err.msg, "b.txt") != NULL);
}

static void test_reader_truncated(void)
{
    struct pm_error err = PM_ERROR_INIT;
    char a[512];
    path_in(a, sizeof a, "det1.tar");
    size_t n;
    unsigned char *d = file_slurp(a, &n);
    size_t ns;
    // header of member 0 at 0, its data 512..; cut inside the first member's data
    // 512 and 2048 are member boundaries: libarchive stops there quietly, we must not
    size_t cuts[] = {600, 512 + 1024 + 100, 1030, 512, 2048};
    for (size_t i = 0; d && i < sizeof cuts / sizeof *cuts; i++) {
        int rc = read_all(d, cuts[i], NULL, &ns, &err);
        CHECK(rc == PM_ERR_FORMAT);
        CHECK(strstr(err.msg, "mem.tar") != NULL && strstr(err.msg, "offset") != NULL);
    }
    CHECK(read_all(d, n, NULL, &ns, &err) == PM_OK && ns == 50);
    // garbage is not a tar
    unsigned char junk[2048];
    memset(junk, 'z', sizeof junk);
    CHECK(read_all(junk, sizeof junk, NULL, &ns, &err) == PM_ERR_FORMAT);
    free(d);
}

static void test_stats_and_index(void)
{
    struct pm_error err = PM_ERROR_INIT;
    CHECK(!shard_is_complete(tmpdir, 3, 5));
    struct shard_stats st;
    shard_stats_init(&st, 3, 5);
    st.rows = 100;
    st.nsamples = 90;
    st.tar_bytes = 123456;
    file_hash_hex_of("abc", 3, st.xxh3);
    stat_map_add(&st.status, "success", 90);
    stat_map_add(&st.status, "failed_to_download", 10);
    stat_map_add(&st.errors, "timeout", 7);
    stat_map_add(&st.errors, "http_404", 3);
    stat_map_add(&st.bytes, "downloaded", 5e6);
    stat_map_add(&st.durations, "total", 12.5);
    st.start_time = 1700000000.25;
    st.end_time = 1700000012.75;
    snprintf(st.tool_version, sizeof st.tool_version, "pixelmill 0.1.0");
    CHECK(shard_stats_write(tmpdir, &st, &err) == PM_OK);
    CHECK(shard_is_complete(tmpdir, 3, 5));
    CHECK(!shard_is_complete(tmpdir, 3, 6));
    char p[512];
    path_in(p, sizeof p, "00003_stats.json");
    struct shard_stats st2;
    CHECK(shard_stats_read(p, &st2, &err) == PM_OK);
    CHECK(st2.shard == 3 && st2.rows == 100 && st2.nsamples == 90 && st2.tar_bytes == 123456);
    CHECK_STR(st2.name, "00003");
    CHECK_STR(st2.xxh3, st.xxh3);
    CHECK(stat_map_get(&st2.status, "failed_to_download") == 10);
    CHECK(stat_map_get(&st2.errors, "timeout") == 7);
    CHECK(stat_map_get(&st2.bytes, "downloaded") == 5e6);
    CHECK(stat_map_get(&st2.durations, "total") == 12.5);
    CHECK(st2.end_time == 1700000012.75);
    CHECK_STR(st2.tool_version, "pixelmill 0.1.0");

    struct dataset_index x;
    CHECK(dataset_index_init(&x) == PM_OK);
    CHECK(dataset_index_set_info(&x, "demo", "download", "pixelmill 0.1.0") == PM_OK);
    json_t *cfg = json_pack("{s:s, s:i, s:[s,s]}", "url_col", "URL", "image_size", 256, "where",
                            "punsafe<0.1", "AESTHETIC_SCORE>=4.5");
    CHECK(dataset_index_set_config(&x, cfg) == PM_OK);
    json_decref(cfg);
    CHECK(dataset_index_add_stats(&x, &st2, &err) == PM_OK);
    st2.shard = 4;
    snprintf(st2.name, sizeof st2.name, "00004");
    CHECK(dataset_index_add_stats(&x, &st2, &err) == PM_OK);
    struct dataset_shard bad = {"../evil.tar", 1, 1, {0}, 1};
    file_hash_hex_of("", 0, bad.xxh3);
    CHECK(dataset_index_add_shard(&x, &bad, &err) == PM_ERR_USAGE);
    path_in(p, sizeof p, "dataset.json");
    CHECK(dataset_index_write(&x, p, &err) == PM_OK);
    struct dataset_index y;
    CHECK(dataset_index_read(&y, p, &err) == PM_OK);
    CHECK(y.nshards == 2);
    if (y.nshards == 2) {
        CHECK_STR(y.shards[0].url, "00003.tar");
        CHECK_STR(y.shards[1].url, "00004.tar");
        CHECK(y.shards[1].nsamples == 90 && y.shards[1].filesize == 123456);
        CHECK(y.shards[1].rows == 100);
        CHECK_STR(y.shards[1].xxh3, st.xxh3);
    }
    CHECK_STR(y.name, "demo");
    CHECK_STR(y.stage, "download");
    CHECK_STR(y.tool_version, "pixelmill 0.1.0");
    CHECK(json_equal(x.config, y.config));
    CHECK(stat_map_get(&y.status, "success") == 180);
    CHECK(dataset_index_total_samples(&y) == 180 && dataset_index_total_rows(&y) == 200);
    dataset_index_release(&y);
    dataset_index_release(&x);

    // malformed indexes
    const char *bad_docs[] = {
        "{\"wids_version\": 2, \"shardlist\": []}",
        "{\"wids_version\": 1}",
        "{\"wids_version\": 1, \"shardlist\": [{\"url\": \"../x.tar\", \"nsamples\": 1, "
        "\"filesize\": 1, \"xxh3\": \"00000000000000000000000000000000\"}]}",
        "{\"wids_version\": 1, \"shardlist\": [{\"url\": \"/x.tar\", \"nsamples\": 1, "
        "\"filesize\": 1, \"xxh3\": \"00000000000000000000000000000000\"}]}",
        "{\"wids_version\": 1, \"shardlist\": [{\"url\": \"x.tar\", \"nsamples\": -1, "
        "\"filesize\": 1, \"xxh3\": \"00000000000000000000000000000000\"}]}",
        "{\"wids_version\": 1, \"shardlist\": [{\"url\": \"x.tar\", \"nsamples\": 1, "
        "\"filesize\": 1, \"xxh3\": \"0000\"}]}",
        "{\"wids_version\": 1, \"wids_version\": 1, \"shardlist\": []}",
        "[1, 2",
    };
    for (size_t i = 0; i < sizeof bad_docs / sizeof *bad_docs; i++) {
        CHECK(atomic_file_write_all(p, bad_docs[i], strlen(bad_docs[i]), &err) == PM_OK);
        CHECK(dataset_index_read(&y, p, &err) == PM_ERR_FORMAT);
        CHECK(strstr(err.msg, "dataset.json") != NULL);
        dataset_index_release(&y);
    }
    path_in(p, sizeof p, "nope.json");
    CHECK(dataset_index_read(&y, p, &err) == PM_ERR_NOT_FOUND);
    dataset_index_release(&y);
    shard_stats_release(&st);
    shard_stats_release(&st2);
}

int main(void)
{
    if (test_dir_create(tmpdir, sizeof tmpdir, "shards"))
        return 1;
    test_atomic_commit();
    test_atomic_sweep();
    test_file_hash();
    test_shard_names();
    test_writer_rejects();
    test_writer_deterministic();
    test_writer_io_error();
    test_reader_roundtrip();
    test_reader_refuses();
    test_reader_truncated();
    test_stats_and_index();
    test_dir_remove(tmpdir);
    return CHECK_DONE();
}
