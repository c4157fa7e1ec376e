#include "npy.h"

#include <stdio.h>
#include <string.h>

int npy_header(char *buf, int height, int width, int channels, size_t *len, struct pm_error *err)
{
    if (height <= 0 || width <= 0 || channels <= 0)
        return pm_error_set(err, PM_ERR_USAGE, "npy: bad shape (%d, %d, %d)", height, width,
                            channels);
    char dict[160];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '|u1', 'fortran_order': False, 'shape': (%d, %d, %d), }", height,
                     width, channels);
    size_t total = 10 + (size_t)n + 1; // magic+version+len, dict, '\n'
    size_t padded = (total + 63) / 64 * 64;
    size_t hlen = padded - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', padded - 10 - (size_t)n - 1);
    buf[padded - 1] = '\n';
    *len = padded;
    return PM_OK;
}

// Find `'name': ` in the header and return what follows, or NULL.
static const char *field(const char *h, size_t n, const char *name)
{
    size_t k = strlen(name);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(h + i, name, k)) {
            i += k;
            while (i < n && (h[i] == ' ' || h[i] == ':'))
                i++;
            return i < n ? h + i : NULL;
        }
    return NULL;
}

int npy_parse(const void *data, size_t size, struct npy_info *info, struct pm_error *err)
{
    const unsigned char *p = data;
    if (size < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: no magic");
    if (p[6] != 1 || p[7] != 0)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "npy: version %u.%u (only 1.0)", p[6], p[7]);
    size_t hlen = (size_t)p[8] | (size_t)p[9] << 8;
    if (10 + hlen > size)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: header runs past the end");
    char h[65536 + 1];
    memcpy(h, p + 10, hlen);
    h[hlen] = 0;
    const char *d = field(h, hlen, "'descr'");
    if (!d || strncmp(d, "'|u1'", 5) != 0)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "npy: dtype is not '|u1'");
    const char *f = field(h, hlen, "'fortran_order'");
    if (!f || strncmp(f, "False", 5) != 0)
        return pm_error_set(err, PM_ERR_UNSUPPORTED, "npy: not C order");
    const char *s = field(h, hlen, "'shape'");
    unsigned long long a, b, c;
    if (!s || sscanf(s, "(%llu, %llu, %llu)", &a, &b, &c) != 3)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: shape is not (H, W, C)");
    if (a > (1u << 20) || b > (1u << 20) || c > 4)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: shape (%llu, %llu, %llu) too large", a, b, c);
    if (10 + hlen + a * b * c != size)
        return pm_error_set(err, PM_ERR_FORMAT, "npy: %zu data bytes for shape (%llu, %llu, %llu)",
                            size - 10 - hlen, a, b, c);
    info->shape[0] = a;
    info->shape[1] = b;
    info->shape[2] = c;
    info->data_offset = 10 + hlen;
    return PM_OK;
}
