#include "shard.h"

#include <stdio.h>
#include <sys/stat.h>

int shard_digits(uint64_t nshards)
{
    int d = 1;
    for (uint64_t v = nshards > 0 ? nshards - 1 : 0; v >= 10; v /= 10)
        d++;
    return d < SHARD_MIN_DIGITS ? SHARD_MIN_DIGITS : d;
}

int shard_sample_digits(uint64_t samples_per_shard)
{
    // smallest s with 10^s >= n
    int s = 0;
    uint64_t p = 1;
    while (p < samples_per_shard && s < 20) {
        s++;
        if (p > UINT64_MAX / 10)
            break;
        p *= 10;
    }
    return s;
}

int shard_name(char *buf, size_t size, uint64_t index, int digits)
{
    int n = snprintf(buf, size, "%0*llu", digits, (unsigned long long)index);
    return n < 0 || (size_t)n >= size ? PM_ERR_LIMIT : PM_OK;
}

int shard_path(char *buf, size_t size, const char *dir, uint64_t index, int digits,
               const char *suffix)
{
    int n;
    if (dir && dir[0])
        n = snprintf(buf, size, "%s/%0*llu%s", dir, digits, (unsigned long long)index, suffix);
    else
        n = snprintf(buf, size, "%0*llu%s", digits, (unsigned long long)index, suffix);
    return n < 0 || (size_t)n >= size ? PM_ERR_LIMIT : PM_OK;
}

int shard_key(char *buf, size_t size, uint64_t shard, uint64_t row, uint64_t samples_per_shard,
              int digits, struct pm_error *err)
{
    if (samples_per_shard == 0 || row >= samples_per_shard)
        return pm_error_set(err, PM_ERR_USAGE, "row %llu is outside a shard of %llu samples",
                            (unsigned long long)row, (unsigned long long)samples_per_shard);
    int s = shard_sample_digits(samples_per_shard);
    uint64_t scale = 1;
    for (int i = 0; i < s; i++) {
        if (scale > UINT64_MAX / 10)
            return pm_error_set(err, PM_ERR_LIMIT, "key of shard %llu overflows 64 bits",
                                (unsigned long long)shard);
        scale *= 10;
    }
    if (shard > (UINT64_MAX - row) / scale)
        return pm_error_set(err, PM_ERR_LIMIT, "key of shard %llu row %llu overflows 64 bits",
                            (unsigned long long)shard, (unsigned long long)row);
    int n = snprintf(buf, size, "%0*llu", digits + s, (unsigned long long)(shard * scale + row));
    if (n < 0 || (size_t)n >= size)
        return pm_error_set(err, PM_ERR_LIMIT, "key buffer of %zu bytes is too small", size);
    return PM_OK;
}

bool shard_is_complete(const char *dir, uint64_t index, int digits)
{
    char path[4096];
    if (shard_path(path, sizeof path, dir, index, digits, "_stats.json") != PM_OK)
        return false;
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
