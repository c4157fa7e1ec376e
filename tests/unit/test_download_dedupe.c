/* Unit tests for the url-dedupe files of `pixelmill download` (download_unit.h): round
 * trip, and every header field and entry validated on read. */
#include "check.h"
#include "download_unit.h"
#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void path_of(char *buf, size_t n, unsigned unit)
{
    snprintf(buf, n, "%s/_work/dedupe-urls/%05u.bin", dir, unit);
}

static void poke(unsigned unit, long off, unsigned char v)
{
    char p[512];
    path_of(p, sizeof p, unit);
    FILE *f = fopen(p, "r+b");
    CHECK(f != NULL);
    fseek(f, off, SEEK_SET);
    fputc(v, f);
    fclose(f);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/pm_dedupe_test.%d", (int)getpid());
    char sub[512];
    mkdir(dir, 0777);
    snprintf(sub, sizeof sub, "%s/_work", dir);
    mkdir(sub, 0777);
    snprintf(sub, sizeof sub, "%s/_work/dedupe-urls", dir);
    mkdir(sub, 0777);
    struct pm_error err = PM_ERROR_INIT;
    // unit 3: row 2 duplicates unit 1 row 7, row 5 duplicates unit 3 row 4
    uint64_t e[] = {2, 1, 7, 5, 3, 4};
    CHECK(download_dedupe_write(dir, 3, 5, e, 2, &err) == PM_OK);
    uint64_t *got = NULL;
    size_t n = 0;
    CHECK(download_dedupe_read(dir, 3, 5, 10, 10, &got, &n, &err) == PM_OK);
    CHECK(n == 2 && got && !memcmp(got, e, sizeof e));
    free(got);
    // empty file
    CHECK(download_dedupe_write(dir, 4, 5, NULL, 0, &err) == PM_OK);
    CHECK(download_dedupe_read(dir, 4, 5, 10, 10, &got, &n, &err) == PM_OK && n == 0);
    free(got);
    // missing
    CHECK(download_dedupe_read(dir, 9, 5, 10, 10, &got, &n, &err) == PM_ERR_NOT_FOUND);
    // wrong unit asked, rows too few for the entries
    CHECK(download_dedupe_read(dir, 4, 5, 10, 10, &got, &n, &err) == PM_OK);
    free(got);
    CHECK(download_dedupe_read(dir, 3, 5, 5, 10, &got, &n, &err) == PM_ERR_FORMAT); // row 5 >= 5
    // damaged header fields and entries
    long offs[] = {0, 8, 16, 24, 32 + 8 * 3, 32 + 8 * 4, 32 + 8 * 5};
    unsigned char vals[] = {'X', 2, 9, 3, 2, 9, 9};
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        CHECK(download_dedupe_write(dir, 3, 5, e, 2, &err) == PM_OK);
        poke(3, offs[k], vals[k]);
        got = NULL;
        int rc = download_dedupe_read(dir, 3, 5, 10, 10, &got, &n, &err);
        CHECK(rc == PM_ERR_FORMAT);
        CHECK(got == NULL);
    }
    // truncated file
    CHECK(download_dedupe_write(dir, 3, 5, e, 2, &err) == PM_OK);
    char p[512];
    path_of(p, sizeof p, 3);
    CHECK(truncate(p, 40) == 0);
    CHECK(download_dedupe_read(dir, 3, 5, 10, 10, &got, &n, &err) == PM_ERR_FORMAT);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return CHECK_DONE();
}
