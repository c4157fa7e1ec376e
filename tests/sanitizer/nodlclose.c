/* Preloaded in sanitizer test runs only: makes dlclose() a no-op so that LeakSanitizer
 * can still symbolise allocations made by MPI's plugins (which Open MPI unloads at
 * MPI_Finalize), and the lsan suppressions for libmpi/mca_* match them. */
int dlclose(void *handle)
{
    (void)handle;
    return 0;
}
