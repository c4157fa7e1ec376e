/**
 * check — the minimal assertion kit for C unit tests. Each failed CHECK prints
 * file:line and the expression and counts a failure; CHECK_DONE() prints the totals
 * ("N passed, N failed") and returns the exit status for main().
 */
#ifndef PM_CHECK_H
#define PM_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(expr)                                                                           \
    do {                                                                                      \
        if (expr) {                                                                           \
            check_passed++;                                                                   \
        } else {                                                                              \
            check_failed++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr);         \
        }                                                                                     \
    } while (0)

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#define CHECK_DONE()                                                                          \
    (printf("%s: %d passed, %d failed\n", __FILE__, check_passed, check_failed),              \
     check_failed ? 1 : 0)

#endif
