/**
 * test_files — file helpers for C unit tests: a scratch directory under /tmp, existence
 * checks and whole-file reads. Header-only (static inline), like check.h.
 */
#ifndef PM_TEST_FILES_H
#define PM_TEST_FILES_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/** Create a fresh directory /tmp/pm_test_NAME.XXXXXX into dir (size bytes). Returns 0,
 * or -1 after printing why. */
static inline int test_dir_create(char *dir, size_t size, const char *name)
{
    snprintf(dir, size, "/tmp/pm_test_%s.XXXXXX", name);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

/** Remove dir and everything below it (a message on failure). */
static inline void test_dir_remove(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/** Whether path p exists. */
static inline int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/** The whole file p in a malloc'd buffer (one spare byte at the end), *n its length;
 * NULL if it cannot be opened. */
static inline unsigned char *file_slurp(const char *p, size_t *n)
{
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

#endif
