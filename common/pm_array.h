/**
 * pm_array — growth of a caller-owned array by doubling, the one idiom behind the
 * "items, n, cap" vectors of the libraries.
 *
 * The array is a `T *items` with `n` elements in use and room for `cap`; callers keep
 * the three fields themselves and call pm_array_reserve_one() before storing element n.
 * Not thread-safe; one owner at a time.
 */
#ifndef PM_ARRAY_H
#define PM_ARRAY_H

#include <stddef.h>

/**
 * Make room for one more element: when n == *cap, reallocate the array whose address
 * is `items` (a `T **`, passed as void *) to twice *cap elements of `size` bytes (`first`
 * when *cap is 0) and update *cap. Returns PM_OK, or PM_ERR_NOMEM with the array and
 * *cap unchanged.
 */
int pm_array_reserve_one(void *items, size_t *cap, size_t n, size_t size, size_t first);

#endif
