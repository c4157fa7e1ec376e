// checkpoint — safetensors + state.bin, atomic, with a `latest` pointer and pruning.
#include "checkpoint.h"

#include "atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c assumes a little-endian host (safetensors and state.bin are little-endian)"
#endif

#define STATE_HEADER_BYTES 96u
#define STEP_DIR_FMT "step-%08" PRIu64

static uint32_t crc32_bytes(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return crc;
}

// Read a whole regular file of at most max bytes.
static int read_file(const char *path, size_t max, unsigned char **out, size_t *len,
                     struct pm_error *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pm_error_set(err, errno == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO,
                            "cannot open '%s': %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return pm_error_set(err, PM_ERR_IO, "'%s' is not a readable regular file", path);
    }
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': %lld bytes, more than the %zu expected",
                            path, (long long)st.st_size, max);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot read '%s': out of memory", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            free(buf);
            close(fd);
            return pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return PM_OK;
}

// ---------------------------------------------------------------------------------------
// safetensors

static int add_tensor_entry(json_t *root, const char *prefix, const struct unet_tensor *t,
                            size_t begin)
{
    char name[UNET_NAME_MAX + 8];
    snprintf(name, sizeof(name), "%s%s", prefix, t->name);
    json_t *shape = json_array();
    for (int d = 0; d < t->ndim; d++)
        json_array_append_new(shape, json_integer(t->shape[d]));
    json_t *offs = json_array();
    json_array_append_new(offs, json_integer((json_int_t)begin));
    json_array_append_new(offs, json_integer((json_int_t)(begin + t->numel * sizeof(float))));
    json_t *e = json_object();
    json_object_set_new(e, "dtype", json_string("F32"));
    json_object_set_new(e, "shape", shape);
    json_object_set_new(e, "data_offsets", offs);
    return json_object_set_new(root, name, e);
}

int checkpoint_write_safetensors(const char *path, const struct unet *m, const float *params,
                                 const float *ema, uint64_t step, struct pm_error *err)
{
    size_t nt;
    const struct unet_tensor *tab = unet_tensors(m, &nt);
    size_t np = unet_num_params(m);
    int copies = ema ? 2 : 1;
    size_t data_bytes = (size_t)copies * np * sizeof(float);
    uint32_t crc = crc32_bytes(0, params, np * sizeof(float));
    if (ema)
        crc = crc32_bytes(crc, ema, np * sizeof(float));

    json_t *root = json_object();
    json_t *meta = json_object();
    char buf[64];
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(meta, "producer", json_string("pixelmill-trainer"));
    json_object_set_new(meta, "config", json_string(unet_get_config(m)->name));
    snprintf(buf, sizeof(buf), "%" PRIu64, step);
    json_object_set_new(meta, "step", json_string(buf));
    snprintf(buf, sizeof(buf), "%08" PRIx32, crc);
    json_object_set_new(meta, "crc32", json_string(buf));
    json_object_set_new(root, "__metadata__", meta);
    int bad = 0;
    for (int c = 0; c < copies; c++)
        for (size_t i = 0; i < nt; i++)
            bad |= add_tensor_entry(root, c ? "ema." : "", &tab[i],
                                    (c * np + tab[i].offset) * sizeof(float));
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot build the header of '%s'", path);
    size_t hlen = strlen(text);
    size_t padded = (hlen + 7) / 8 * 8;
    unsigned char *head = malloc(8 + padded);
    if (!head) {
        free(text);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot build the header of '%s'", path);
    }
    uint64_t le = padded;
    memcpy(head, &le, 8);
    memcpy(head + 8, text, hlen);
    memset(head + 8 + hlen, ' ', padded - hlen);
    free(text);

    struct atomic_file *f = NULL;
    int rc = atomic_file_open(path, &f, err);
    if (!rc)
        rc = atomic_file_write(f, head, 8 + padded, err);
    if (!rc)
        rc = atomic_file_write(f, params, np * sizeof(float), err);
    if (!rc && ema)
        rc = atomic_file_write(f, ema, np * sizeof(float), err);
    if (!rc)
        rc = atomic_file_commit(f, err);
    atomic_file_free(f);
    free(head);
    (void)data_bytes;
    return rc;
}

struct range {
    size_t begin, end;
};

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static bool all_digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool all_hex(const char *s, size_t len)
{
    if (strlen(s) != len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

// Validate one tensor entry against the model's table; returns its byte range.
static int check_entry(const char *path, json_t *root, const char *prefix,
                       const struct unet_tensor *t, size_t data_len, size_t *begin,
                       struct pm_error *err)
{
    char name[UNET_NAME_MAX + 8];
    snprintf(name, sizeof(name), "%s%s", prefix, t->name);
    json_t *e = json_object_get(root, name);
    if (!json_is_object(e))
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': tensor '%s' missing", path, name);
    json_t *dt = json_object_get(e, "dtype");
    if (!json_is_string(dt) || strcmp(json_string_value(dt), "F32") != 0)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': tensor '%s' is not dtype F32", path, name);
    json_t *shape = json_object_get(e, "shape");
    if (!json_is_array(shape) || json_array_size(shape) != (size_t)t->ndim)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': tensor '%s' has the wrong rank", path, name);
    for (int d = 0; d < t->ndim; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) != t->shape[d])
            return pm_error_set(err, PM_ERR_FORMAT,
                                "'%s': tensor '%s' dimension %d differs from the model", path, name,
                                d);
    }
    json_t *offs = json_object_get(e, "data_offsets");
    json_t *a = json_array_get(offs, 0), *b = json_array_get(offs, 1);
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(a) ||
        !json_is_integer(b))
        return pm_error_set(err, PM_ERR_FORMAT, "'%s': tensor '%s' has bad data_offsets", path,
                            name);
    json_int_t ia = json_integer_value(a), ib = json_integer_value(b);
    if (ia < 0 || ib < ia || (unsigned long long)ib > data_len ||
        (unsigned long long)(ib - ia) != t->numel * sizeof(float) || ia % 4 != 0)
        return pm_error_set(err, PM_ERR_FORMAT,
                            "'%s': tensor '%s' data_offsets [%lld, %lld] outside the %zu data "
                            "bytes or of the wrong size",
                            path, name, (long long)ia, (long long)ib, data_len);
    *begin = (size_t)ia;
    return PM_OK;
}

int checkpoint_read_safetensors(const char *path, const struct unet *m, float *params, float *ema,
                                uint64_t *step, struct pm_error *err)
{
    if (step)
        *step = 0;
    size_t np = unet_num_params(m), nt;
    const struct unet_tensor *tab = unet_tensors(m, &nt);
    size_t max = 8 + CHECKPOINT_HEADER_MAX + 2 * np * sizeof(float) + 4096;
    unsigned char *buf;
    size_t len;
    int rc = read_file(path, max, &buf, &len, err);
    if (rc)
        return rc;
    json_t *root = NULL;
    if (len < 8) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': %zu bytes, too short for safetensors", path,
                          len);
        goto out;
    }
    uint64_t hlen;
    memcpy(&hlen, buf, 8);
    if (hlen < 2 || hlen > CHECKPOINT_HEADER_MAX || hlen > len - 8) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': header length %" PRIu64 " invalid for a %zu-byte file", path, hlen,
                          len);
        goto out;
    }
    json_error_t je;
    root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(root)) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': header is not a JSON object (%s)", path,
                          root ? "wrong type" : je.text);
        goto out;
    }
    const unsigned char *data = buf + 8 + hlen;
    size_t data_len = len - 8 - (size_t)hlen;
    // Every entry other than __metadata__ must be well formed and the ranges must tile the
    // data section exactly (no holes, no overlaps, no trailing bytes), as the format says.
    size_t cap = json_object_size(root), nr = 0;
    struct range *ranges = malloc((cap ? cap : 1) * sizeof(*ranges));
    if (!ranges) {
        rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        json_t *offs = json_object_get(val, "data_offsets");
        json_t *a = json_array_get(offs, 0), *b = json_array_get(offs, 1);
        if (!json_is_object(val) || json_array_size(offs) != 2 || !json_is_integer(a) ||
            !json_is_integer(b) || json_integer_value(a) < 0 ||
            json_integer_value(b) < json_integer_value(a) ||
            (unsigned long long)json_integer_value(b) > data_len) {
            free(ranges);
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': tensor '%s' has bad data_offsets", path,
                              key);
            goto out;
        }
        ranges[nr].begin = (size_t)json_integer_value(a);
        ranges[nr].end = (size_t)json_integer_value(b);
        nr++;
    }
    qsort(ranges, nr, sizeof(*ranges), cmp_range);
    size_t covered = 0;
    for (size_t i = 0; i < nr; i++) {
        if (ranges[i].begin != covered)
            break;
        covered = ranges[i].end;
    }
    free(ranges);
    if (covered != data_len) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': tensor data ranges do not tile the %zu-byte data section", path,
                          data_len);
        goto out;
    }
    // Our metadata is required and checked entry by entry, so that any damage to the header
    // is caught (the CRC covers the data section only).
    json_t *meta = json_object_get(root, "__metadata__");
    const char *fmt = json_string_value(json_object_get(meta, "format"));
    const char *prod = json_string_value(json_object_get(meta, "producer"));
    const char *cfgname = json_string_value(json_object_get(meta, "config"));
    const char *stepstr = json_string_value(json_object_get(meta, "step"));
    const char *crcstr = json_string_value(json_object_get(meta, "crc32"));
    if (!json_is_object(meta) || json_object_size(meta) != 5 || !fmt || strcmp(fmt, "pt") != 0 ||
        !prod || strcmp(prod, "pixelmill-trainer") != 0 || !cfgname || !stepstr || !crcstr ||
        !all_digits(stepstr, 1, 20) || !all_hex(crcstr, 8)) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': __metadata__ missing or damaged (not a pixelmill checkpoint?)",
                          path);
        goto out;
    }
    if (crc32_bytes(0, data, data_len) != (uint32_t)strtoul(crcstr, NULL, 16)) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': data CRC-32 mismatch (corrupted file)", path);
        goto out;
    }
    if (strcmp(cfgname, unet_get_config(m)->name) != 0) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': checkpoint is for model '%s', not '%s'", path,
                          cfgname, unet_get_config(m)->name);
        goto out;
    }
    if (step)
        *step = strtoull(stepstr, NULL, 10);
    // validate every tensor first, copy only when all are good
    for (int pass = 0; pass < 2; pass++)
        for (int c = 0; c < (ema ? 2 : 1); c++) {
            float *dst = c ? ema : params;
            for (size_t i = 0; i < nt; i++) {
                size_t begin = 0;
                rc = check_entry(path, root, c ? "ema." : "", &tab[i], data_len, &begin, err);
                if (rc)
                    goto out;
                if (pass == 1)
                    memcpy(dst + tab[i].offset, data + begin, tab[i].numel * sizeof(float));
            }
        }
out:
    json_decref(root);
    free(buf);
    return rc;
}

// ---------------------------------------------------------------------------------------
// state.bin

static void put_u32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

int checkpoint_write_state(const char *path, const struct checkpoint_data *d, struct pm_error *err)
{
    if (d->loader_len > CHECKPOINT_LOADER_MAX)
        return pm_error_set(err, PM_ERR_USAGE, "'%s': loader state of %zu bytes is too large", path,
                            d->loader_len);
    size_t np = unet_num_params(d->model);
    unsigned char h[STATE_HEADER_BYTES] = {0};
    put_u32(h, CHECKPOINT_STATE_MAGIC);
    put_u32(h + 4, CHECKPOINT_STATE_VERSION);
    put_u64(h + 8, STATE_HEADER_BYTES);
    put_u64(h + 16, np);
    put_u64(h + 24, d->step);
    for (int i = 0; i < 4; i++)
        put_u64(h + 32 + 8 * i, d->rng.s[i]);
    put_u64(h + 64, d->loader_len);
    memcpy(h + 72, unet_get_config(d->model)->name, 24); // NUL padded by unet_config_get
    uint32_t crc = crc32_bytes(0, h, sizeof(h));
    crc = crc32_bytes(crc, d->adam_m, np * sizeof(float));
    crc = crc32_bytes(crc, d->adam_v, np * sizeof(float));
    if (d->loader_len)
        crc = crc32_bytes(crc, d->loader, d->loader_len);
    unsigned char tail[4];
    put_u32(tail, crc);
    struct atomic_file *f = NULL;
    int rc = atomic_file_open(path, &f, err);
    if (!rc)
        rc = atomic_file_write(f, h, sizeof(h), err);
    if (!rc)
        rc = atomic_file_write(f, d->adam_m, np * sizeof(float), err);
    if (!rc)
        rc = atomic_file_write(f, d->adam_v, np * sizeof(float), err);
    if (!rc && d->loader_len)
        rc = atomic_file_write(f, d->loader, d->loader_len, err);
    if (!rc)
        rc = atomic_file_write(f, tail, 4, err);
    if (!rc)
        rc = atomic_file_commit(f, err);
    atomic_file_free(f);
    return rc;
}

int checkpoint_read_state(const char *path, struct checkpoint_data *d, struct pm_error *err)
{
    size_t np = unet_num_params(d->model);
    size_t max = STATE_HEADER_BYTES + 2 * np * sizeof(float) + CHECKPOINT_LOADER_MAX + 4;
    unsigned char *buf;
    size_t len;
    int rc = read_file(path, max, &buf, &len, err);
    if (rc)
        return rc;
    char cfgname[25] = {0};
    if (len < STATE_HEADER_BYTES + 4) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': %zu bytes, too short for a state file", path,
                          len);
        goto out;
    }
    if (get_u32(buf) != CHECKPOINT_STATE_MAGIC) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': bad magic (not a trainer state file)", path);
        goto out;
    }
    if (get_u32(buf + 4) != CHECKPOINT_STATE_VERSION) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': state version %" PRIu32 ", this build reads version %u", path,
                          get_u32(buf + 4), CHECKPOINT_STATE_VERSION);
        goto out;
    }
    if (get_u64(buf + 8) != STATE_HEADER_BYTES) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': bad header size", path);
        goto out;
    }
    if (get_u64(buf + 16) != np) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': state for %" PRIu64 " parameters, the model has %zu", path,
                          get_u64(buf + 16), np);
        goto out;
    }
    uint64_t ll = get_u64(buf + 64);
    if (ll > CHECKPOINT_LOADER_MAX || len != STATE_HEADER_BYTES + 2 * np * 4 + ll + 4) {
        rc = pm_error_set(err, PM_ERR_FORMAT,
                          "'%s': %zu bytes, sizes in the header say otherwise (truncated?)", path,
                          len);
        goto out;
    }
    memcpy(cfgname, buf + 72, 24);
    if (strcmp(cfgname, unet_get_config(d->model)->name) != 0) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': state for model '%s', not '%s'", path, cfgname,
                          unet_get_config(d->model)->name);
        goto out;
    }
    if (crc32_bytes(0, buf, len - 4) != get_u32(buf + len - 4)) {
        rc = pm_error_set(err, PM_ERR_FORMAT, "'%s': CRC-32 mismatch (corrupted file)", path);
        goto out;
    }
    unsigned char *loader = NULL;
    if (ll) {
        loader = malloc(ll);
        if (!loader) {
            rc = pm_error_set(err, PM_ERR_NOMEM, "'%s': out of memory", path);
            goto out;
        }
        memcpy(loader, buf + STATE_HEADER_BYTES + 2 * np * 4, ll);
    }
    d->step = get_u64(buf + 24);
    for (int i = 0; i < 4; i++)
        d->rng.s[i] = get_u64(buf + 32 + 8 * i);
    memcpy(d->adam_m, buf + STATE_HEADER_BYTES, np * 4);
    memcpy(d->adam_v, buf + STATE_HEADER_BYTES + np * 4, np * 4);
    d->loader = loader;
    d->loader_len = ll;
out:
    free(buf);
    return rc;
}

// ---------------------------------------------------------------------------------------
// directories

static int fsync_dir(const char *dir, struct pm_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return pm_error_set(err, PM_ERR_IO, "cannot open directory '%s': %s", dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0)
        return pm_error_set(err, PM_ERR_IO, "cannot fsync '%s': %s", dir, strerror(e));
    return PM_OK;
}

static int make_dir(const char *dir, struct pm_error *err)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return pm_error_set(err, PM_ERR_IO, "cannot create directory '%s': %s", dir,
                            strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return pm_error_set(err, PM_ERR_IO, "'%s' is not a directory", dir);
    return PM_OK;
}

// "step-" followed by 8 or more digits, nothing else; *step receives the number.
static bool parse_step_name(const char *s, size_t n, uint64_t *step)
{
    if (n < 13 || n > 25 || strncmp(s, "step-", 5) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = 5; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *step = v;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void remove_step_dir(const char *dir, uint64_t step)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/" STEP_DIR_FMT, dir, step);
    atomic_file_sweep(path, 0, NULL, NULL);
    char f[4200];
    snprintf(f, sizeof(f), "%s/model.safetensors", path);
    unlink(f);
    snprintf(f, sizeof(f), "%s/state.bin", path);
    unlink(f);
    rmdir(path); // fails harmlessly if someone put other files there
}

static int prune(const char *dir, uint64_t current, int keep, struct pm_error *err)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return pm_error_set(err, PM_ERR_IO, "cannot list '%s': %s", dir, strerror(errno));
    uint64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dp)) != NULL) {
        uint64_t s;
        if (!parse_step_name(de->d_name, strlen(de->d_name), &s))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            uint64_t *t = realloc(steps, cap * sizeof(*t));
            if (!t) {
                free(steps);
                closedir(dp);
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory listing '%s'", dir);
            }
            steps = t;
        }
        steps[n++] = s;
    }
    closedir(dp);
    if (n > (size_t)keep) {
        qsort(steps, n, sizeof(*steps), cmp_u64);
        for (size_t i = 0; i + (size_t)keep < n; i++)
            if (steps[i] != current)
                remove_step_dir(dir, steps[i]);
    }
    free(steps);
    return PM_OK;
}

int checkpoint_save(const char *dir, const struct checkpoint_data *d, int keep,
                    struct pm_error *err)
{
    if (keep < 1)
        return pm_error_set(err, PM_ERR_USAGE, "keep must be at least 1 (got %d)", keep);
    char sub[4096], path[4200];
    if (snprintf(sub, sizeof(sub), "%s/" STEP_DIR_FMT, dir, d->step) >= (int)sizeof(sub))
        return pm_error_set(err, PM_ERR_USAGE, "checkpoint directory name too long");
    int rc = make_dir(dir, err);
    if (!rc)
        rc = make_dir(sub, err);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "%s/model.safetensors", sub);
    rc = checkpoint_write_safetensors(path, d->model, d->params, d->ema, d->step, err);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "%s/state.bin", sub);
    rc = checkpoint_write_state(path, d, err);
    if (!rc)
        rc = fsync_dir(dir, err); // the new step directory's entry is durable
    if (rc)
        return rc;
    char latest[64];
    int n = snprintf(latest, sizeof(latest), STEP_DIR_FMT "\n", d->step);
    snprintf(path, sizeof(path), "%s/latest", dir);
    rc = atomic_file_write_all(path, latest, (size_t)n, err);
    if (rc)
        return rc;
    return prune(dir, d->step, keep, err);
}

int checkpoint_load(const char *dir, struct checkpoint_data *d, struct pm_error *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/latest", dir);
    unsigned char *buf;
    size_t len;
    int rc = read_file(path, 64, &buf, &len, err);
    if (rc)
        return rc;
    size_t n = len;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    uint64_t step;
    bool ok = parse_step_name((const char *)buf, n, &step);
    free(buf);
    if (!ok)
        return pm_error_set(err, PM_ERR_FORMAT, "'%s' does not name a step directory", path);
    snprintf(path, sizeof(path), "%s/" STEP_DIR_FMT "/model.safetensors", dir, step);
    uint64_t st_step;
    rc = checkpoint_read_safetensors(path, d->model, d->params, d->ema, &st_step, err);
    if (rc)
        return rc;
    snprintf(path, sizeof(path), "%s/" STEP_DIR_FMT "/state.bin", dir, step);
    rc = checkpoint_read_state(path, d, err);
    if (rc)
        return rc;
    if (d->step != step || st_step != step) {
        free(d->loader);
        d->loader = NULL;
        d->loader_len = 0;
        return pm_error_set(err, PM_ERR_FORMAT,
                            "'%s/latest' names step %" PRIu64 " but its files hold step %" PRIu64,
                            dir, step, d->step);
    }
    return PM_OK;
}
