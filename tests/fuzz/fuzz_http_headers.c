// libFuzzer target for net/http_headers.h. The input is a header value; when it holds a
// newline, the part after it is used as the disallowed-directives list and the user-agent
// token (split at a second newline), so the list parser is fuzzed too.
#include "http_headers.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *v = (const char *)data;
    int64_t d = 0;
    http_retry_after_parse(v, size, 1700000000, &d);
    http_robots_disallowed(v, size, NULL, NULL);

    const char *nl = memchr(v, '\n', size);
    if (nl) {
        size_t vlen = (size_t)(nl - v);
        size_t rest = size - vlen - 1;
        char *tail = malloc(rest + 1);
        if (!tail)
            return 0;
        memcpy(tail, nl + 1, rest);
        tail[rest] = '\0';
        char *token = strchr(tail, '\n');
        if (token)
            *token++ = '\0';
        http_robots_disallowed(v, vlen, tail, token);
        http_retry_after_parse(v, vlen, 0, &d);
        free(tail);
    }
    return 0;
}
