#include "file_hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

struct file_hash {
    XXH3_state_t *state;
    uint64_t bytes;
};

static void hash_to_hex(XXH128_hash_t h, char out[FILE_HASH_HEX_LEN + 1])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = digits[c.digest[i] >> 4];
        out[2 * i + 1] = digits[c.digest[i] & 15];
    }
    out[FILE_HASH_HEX_LEN] = '\0';
}

struct file_hash *file_hash_create(void)
{
    struct file_hash *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->state = XXH3_createState();
    if (!h->state) {
        free(h);
        return NULL;
    }
    file_hash_reset(h);
    return h;
}

void file_hash_reset(struct file_hash *h)
{
    XXH3_128bits_reset(h->state);
    h->bytes = 0;
}

void file_hash_update(struct file_hash *h, const void *data, size_t n)
{
    if (n == 0)
        return;
    XXH3_128bits_update(h->state, data, n);
    h->bytes += n;
}

uint64_t file_hash_bytes(const struct file_hash *h)
{
    return h->bytes;
}

void file_hash_hex(const struct file_hash *h, char out[FILE_HASH_HEX_LEN + 1])
{
    hash_to_hex(XXH3_128bits_digest(h->state), out);
}

void file_hash_free(struct file_hash *h)
{
    if (!h)
        return;
    XXH3_freeState(h->state);
    free(h);
}

void file_hash_hex_of(const void *data, size_t n, char out[FILE_HASH_HEX_LEN + 1])
{
    hash_to_hex(XXH3_128bits(data, n), out);
}

int file_hash_path(const char *path, char out[FILE_HASH_HEX_LEN + 1], uint64_t *size,
                   struct pm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pm_error_set(err, PM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    struct file_hash *h = file_hash_create();
    enum { BUF = 1 << 20 };
    char *buf = malloc(BUF);
    int rc = PM_OK;
    if (!h || !buf) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory hashing '%s'", path);
        goto done;
    }
    for (;;) {
        ssize_t r = read(fd, buf, BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        file_hash_update(h, buf, (size_t)r);
    }
    file_hash_hex(h, out);
    if (size)
        *size = file_hash_bytes(h);
done:
    free(buf);
    file_hash_free(h);
    close(fd);
    return rc;
}

bool file_hash_is_hex(const char *s)
{
    for (int i = 0; i < FILE_HASH_HEX_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[FILE_HASH_HEX_LEN] == '\0';
}
