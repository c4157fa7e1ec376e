/*
 * pm_addr_tool — classify addresses with net/url_policy.h, for the parity test against
 * Python's ipaddress module. Reads one numeric address per line on stdin and prints
 * "ADDRESS CLASS ALLOWED" (ALLOWED is 1 or 0 under the default policy).
 */
#include "url_policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    struct url_policy p;
    url_policy_init(&p);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        enum addr_class c;
        int ok = url_policy_ip_allowed(&p, line, &c);
        printf("%s %s %d\n", line, url_policy_class_name(c), ok);
    }
    free(line);
    return 0;
}
