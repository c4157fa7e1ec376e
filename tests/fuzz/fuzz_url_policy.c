// libFuzzer target for net/url_policy.h (URL parsing, normalisation, the address policy)
// and the small name checks of shards/ (dataset_index_check_url, view_name_check). The
// input is one URL or address text. Invariants checked besides "no crash":
//   - a URL accepted by url_policy_check whose host is an IP literal is one the policy
//     allows by url_policy_ip_allowed too (the two paths agree);
//   - the default policy never accepts a URL the private-network policy refuses;
//   - normalising a normalised URL gives it back unchanged (idempotent).
#include "dataset_index.h"
#include "url_policy.h"
#include "view.h"

#include "bytebuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    struct url_policy strict, lax;
    url_policy_init(&strict);
    url_policy_init(&lax);
    lax.allow_private_network = 1;

    enum addr_class cls;
    url_policy_classify_ip(s);
    url_policy_ip_allowed(&strict, s, &cls);
    url_policy_class_name(cls);

    struct url_info info;
    enum url_verdict v = url_policy_check(&strict, s, &info);
    if (v == URL_OK && info.host_is_ip && !url_policy_ip_allowed(&strict, info.host, NULL))
        abort();
    enum url_verdict vl = url_policy_check(&lax, s, NULL);
    if (v == URL_OK && vl != URL_OK)
        abort();

    struct bytebuf a, b;
    bytebuf_init(&a, 1 << 20);
    bytebuf_init(&b, 1 << 20);
    struct pm_error err = PM_ERROR_INIT;
    if (url_policy_normalize(s, &a, &err) == PM_OK && bytebuf_append(&a, "", 1) == PM_OK) {
        if (url_policy_normalize((const char *)a.data, &b, &err) != PM_OK)
            abort();
        if (b.len + 1 != a.len || memcmp(a.data, b.data, b.len) != 0)
            abort();
    }
    bytebuf_release(&a);
    bytebuf_release(&b);

    char red[256];
    url_policy_redact(s, red, sizeof red);
    url_policy_redact(s, red, 1);
    dataset_index_check_url(s);
    view_name_check(s);
    free(s);
    return 0;
}
