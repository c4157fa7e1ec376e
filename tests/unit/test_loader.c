/* loader: the order is a permutation per epoch, the state blob round-trips and rejects
 * damage, the NPY parser accepts numpy's output and rejects malformed headers. */
#include "check.h"
#include "loader.h"

#include <stdlib.h>
#include <string.h>

static void test_order(void)
{
    const uint64_t ns[] = {1, 2, 3, 5, 16, 17, 100, 1000, 4097};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        uint64_t n = ns[k];
        unsigned char *seen = calloc(n, 1);
        uint64_t same = 0;
        for (uint64_t e = 0; e < 3; e++) {
            memset(seen, 0, n);
            for (uint64_t i = 0; i < n; i++) {
                uint64_t x = loader_order_index(42, e, n, i);
                CHECK(x < n);
                CHECK(!seen[x]);
                seen[x] = 1;
                if (e == 1)
                    same += x == loader_order_index(42, 0, n, i);
                CHECK(x == loader_order_index(42, e, n, i)); // stateless
            }
        }
        if (n >= 100) // another epoch (and another seed) gives another order
            CHECK(same < n / 4);
        if (n >= 100) {
            uint64_t s2 = 0;
            for (uint64_t i = 0; i < n; i++)
                s2 += loader_order_index(42, 0, n, i) == loader_order_index(43, 0, n, i);
            CHECK(s2 < n / 4);
        }
        free(seen);
    }
}

static void test_state(void)
{
    struct loader_state st = {7, 3, 11, 40}, back;
    unsigned char b[LOADER_STATE_BYTES];
    loader_state_encode(&st, b);
    struct pm_error err = PM_ERROR_INIT;
    CHECK(loader_state_decode(b, sizeof b, &back, &err) == PM_OK);
    CHECK(back.seed == 7 && back.epoch == 3 && back.offset == 11 && back.nsamples == 40);
    CHECK(loader_state_decode(b, sizeof b - 1, &back, &err) == PM_ERR_FORMAT);
    CHECK(loader_state_decode(NULL, 0, &back, &err) == PM_ERR_FORMAT);
    for (size_t i = 0; i < sizeof b; i++)
        for (int bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1 << bit);
            CHECK(loader_state_decode(b, sizeof b, &back, &err) == PM_ERR_FORMAT);
            b[i] ^= (unsigned char)(1 << bit);
        }
    struct loader_state bad = {7, 0, 40, 40}; // offset must be < nsamples
    loader_state_encode(&bad, b);
    CHECK(loader_state_decode(b, sizeof b, &back, &err) == PM_ERR_FORMAT);
}

static void test_npy(void)
{
    // what numpy.save writes for np.zeros((2, 3, 3), np.uint8) (header padded to 64 bytes)
    const char *hdr = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 3), }";
    unsigned char f[128 + 18];
    memset(f, 0, sizeof f);
    memcpy(f, "\x93NUMPY\x01\x00", 8);
    size_t hl = 118;
    f[8] = (unsigned char)hl;
    memset(f + 10, ' ', hl);
    memcpy(f + 10, hdr, strlen(hdr));
    f[10 + hl - 1] = '\n';
    for (int i = 0; i < 18; i++)
        f[128 + i] = (unsigned char)i;
    const uint8_t *px;
    int h, w, c;
    struct pm_error err = PM_ERROR_INIT;
    CHECK(loader_parse_npy(f, sizeof f, &px, &h, &w, &c, &err) == PM_OK);
    CHECK(h == 2 && w == 3 && c == 3 && px == f + 128 && px[17] == 17);
    for (size_t n = 0; n < sizeof f; n++) // every truncation is refused
        CHECK(loader_parse_npy(f, n, &px, &h, &w, &c, &err) == PM_ERR_FORMAT);
    unsigned char g[sizeof f];
    memcpy(g, f, sizeof f);
    memcpy(g + 10 + strlen("{'descr': "), "'<f4'", 5); // float32
    CHECK(loader_parse_npy(g, sizeof g, &px, &h, &w, &c, &err) == PM_ERR_FORMAT);
    memcpy(g, f, sizeof f);
    memcpy(g + 10 + strlen("{'descr': '|u1', 'fortran_order': "), "True ", 5);
    CHECK(loader_parse_npy(g, sizeof g, &px, &h, &w, &c, &err) == PM_ERR_FORMAT);
    memcpy(g, f, sizeof f);
    g[10 + strlen("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, ")] = '4';
    CHECK(loader_parse_npy(g, sizeof g, &px, &h, &w, &c, &err) == PM_ERR_FORMAT);
    // arbitrary bytes after the magic never crash
    srand(1);
    for (int t = 0; t < 2000; t++) {
        memcpy(g, f, sizeof f);
        for (int k = 0; k < 4; k++)
            g[8 + rand() % (int)(sizeof g - 8)] = (unsigned char)rand();
        (void)loader_parse_npy(g, sizeof g, &px, &h, &w, &c, &err);
    }
}

int main(void)
{
    test_order();
    test_state();
    test_npy();
    return CHECK_DONE();
}
