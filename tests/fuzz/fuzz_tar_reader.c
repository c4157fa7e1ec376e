/* libFuzzer target: tar_reader over arbitrary bytes must never crash, leak or read out of
 * bounds; every sample it returns must satisfy the reader's documented invariants. */
#include "tar_reader.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tar_reader_options o = TAR_READER_OPTIONS_INIT;
    o.max_member_size = 1 << 20;
    o.max_fields = 8;
    struct pm_error err = PM_ERROR_INIT;
    struct tar_reader *r;
    if (tar_reader_open_memory(data, size, "fuzz.tar", &o, &r, &err) != 0)
        return 0;
    struct tar_sample s;
    while (tar_reader_next(r, &s, &err) == 0) {
        if (!s.key[0] || s.key[0] == '/' || s.nfields == 0 || s.nfields > 8)
            abort();
        for (size_t i = 0; i < s.nfields; i++) {
            if (s.fields[i].size > (1 << 20) || s.fields[i].data[s.fields[i].size] != 0)
                abort();
            for (size_t j = 0; j < i; j++)
                if (strcmp(s.fields[i].name, s.fields[j].name) == 0)
                    abort();
        }
    }
    tar_reader_free(r);
    return 0;
}
