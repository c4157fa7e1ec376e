// Unit test for shards/view.h: keep-bitmap round trip and validation of every header
// field, view names and paths.
#include "check.h"
#include "view.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse(const unsigned char *d, size_t n)
{
    struct view_bitmap b;
    struct pm_error err = PM_ERROR_INIT;
    int rc = view_bitmap_parse(&b, d, n, "t", &err);
    view_bitmap_release(&b);
    return rc;
}

int main(void)
{
    char dir[] = "/tmp/pm_test_view_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct pm_error err = PM_ERROR_INIT;
    for (uint64_t rows = 0; rows < 20; rows++) {
        struct view_bitmap b;
        CHECK(view_bitmap_init(&b, rows) == PM_OK);
        for (uint64_t r = 0; r < rows; r += 3)
            view_bitmap_set(&b, r);
        if (rows)
            view_bitmap_set(&b, 0); // setting twice does not count twice
        char path[256];
        snprintf(path, sizeof path, "%s/%llu.keep", dir, (unsigned long long)rows);
        CHECK(view_bitmap_write(&b, path, &err) == PM_OK);
        struct view_bitmap c;
        CHECK(view_bitmap_read(&c, path, &err) == PM_OK);
        CHECK(c.rows == rows && c.kept == (rows + 2) / 3);
        for (uint64_t r = 0; r < rows; r++)
            CHECK(view_bitmap_get(&c, r) == (r % 3 == 0));
        // damage each way
        FILE *f = fopen(path, "rb");
        unsigned char buf[64];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        CHECK(n == 32 + (rows + 7) / 8);
        CHECK(parse(buf, n) == PM_OK);
        CHECK(parse(buf, n - 1) == PM_ERR_FORMAT);
        buf[n] = 0;
        CHECK(parse(buf, n + 1) == PM_ERR_FORMAT);
        unsigned char d[64];
        memcpy(d, buf, n);
        d[0] ^= 1;
        CHECK(parse(d, n) == PM_ERR_FORMAT);
        memcpy(d, buf, n);
        d[8] = 2;
        CHECK(parse(d, n) == PM_ERR_FORMAT);
        memcpy(d, buf, n);
        d[12] = 1;
        CHECK(parse(d, n) == PM_ERR_FORMAT);
        memcpy(d, buf, n);
        d[24] ^= 1; // kept off by one
        CHECK(parse(d, n) == PM_ERR_FORMAT);
        if (rows % 8) {
            memcpy(d, buf, n);
            d[n - 1] |= 0x80; // padding bit
            CHECK(parse(d, n) == PM_ERR_FORMAT);
        }
        memcpy(d, buf, n);
        memset(d + 16, 0xff, 8); // absurd row count
        CHECK(parse(d, n) == PM_ERR_FORMAT);
        view_bitmap_release(&b);
        view_bitmap_release(&c);
        unlink(path);
    }
    struct view_bitmap m;
    CHECK(view_bitmap_read(&m, "/nonexistent/x.keep", &err) == PM_ERR_NOT_FOUND);
    CHECK(view_name_check("sd2") && view_name_check("a.b-c_d"));
    CHECK(!view_name_check("") && !view_name_check(".hidden") && !view_name_check("a/b") &&
          !view_name_check("../x"));
    char p[32];
    CHECK(view_path(p, sizeof p, "/d", "v", "/view.json", &err) == PM_OK);
    CHECK_STR(p, "/d/_views/v/view.json");
    CHECK(view_path(p, 8, "/d", "v", "/view.json", &err) == PM_ERR_LIMIT);
    CHECK(view_path(p, sizeof p, "/d", "a/b", NULL, &err) == PM_ERR_USAGE);
    rmdir(dir);
    return CHECK_DONE();
}
