#include "fabric_check.h"

#include "pm_error.h"

#include <stdio.h>
#include <string.h>

#ifndef PM_HAVE_FABRIC_HEADERS

int fabric_check_run(struct health_report *r, const char *expect)
{
    return health_report_add(r, "fabric", expect ? HEALTH_FAIL : HEALTH_SKIPPED,
                             "built without the libfabric headers%s%s%s",
                             expect ? "; cannot confirm provider '" : "", expect ? expect : "",
                             expect ? "'" : "")
               ? PM_OK
               : PM_ERR_NOMEM;
}

#else

#include <dlfcn.h>
#include <rdma/fabric.h>

#define MAX_PROVS 64

// Add each ';'-separated part of `name` to the list once.
static void add_parts(const char *name, char provs[][32], int *n)
{
    while (*name) {
        size_t len = strcspn(name, ";");
        if (len > 0 && len < 32) {
            int seen = 0;
            for (int i = 0; i < *n && !seen; i++)
                seen = strlen(provs[i]) == len && !strncmp(provs[i], name, len);
            if (!seen && *n < MAX_PROVS) {
                memcpy(provs[*n], name, len);
                provs[(*n)++][len] = '\0';
            }
        }
        name += len;
        if (*name == ';')
            name++;
    }
}

int fabric_check_run(struct health_report *r, const char *expect)
{
    enum health_status missing = expect ? HEALTH_FAIL : HEALTH_SKIPPED;
    void *h = dlopen("libfabric.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return health_report_add(r, "fabric", missing, "libfabric.so.1 not loadable (%s)",
                                 e ? e : "?")
                   ? PM_OK
                   : PM_ERR_NOMEM;
    }
    __typeof__(fi_getinfo) *getinfo;
    __typeof__(fi_freeinfo) *freeinfo;
    *(void **)&getinfo = dlsym(h, "fi_getinfo");
    *(void **)&freeinfo = dlsym(h, "fi_freeinfo");
    if (!getinfo || !freeinfo)
        return health_report_add(r, "fabric", missing, "libfabric.so.1 lacks fi_getinfo")
                   ? PM_OK
                   : PM_ERR_NOMEM;
    struct fi_info *info = NULL;
    // 1.9 is old enough for every provider we care about (EFA needs >= 1.5).
    int rc = getinfo(FI_VERSION(1, 9), NULL, NULL, 0, NULL, &info);
    char provs[MAX_PROVS][32];
    int n = 0;
    if (rc == 0) {
        for (struct fi_info *i = info; i; i = i->next)
            if (i->fabric_attr && i->fabric_attr->prov_name)
                add_parts(i->fabric_attr->prov_name, provs, &n);
        freeinfo(info);
    }
    char list[MAX_PROVS * 33] = "";
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        int k = snprintf(list + len, sizeof list - len, "%s%s", i ? "," : "", provs[i]);
        if (k > 0 && (size_t)k < sizeof list - len)
            len += (size_t)k;
    }
    int found = 0;
    for (int i = 0; expect && i < n; i++)
        found |= !strcmp(provs[i], expect);
    struct health_result *res;
    if (expect && !found)
        res = health_report_add(r, "fabric", HEALTH_FAIL, "provider '%s' not available; have: %s",
                                expect, n ? list : "none");
    else
        res = health_report_add(r, "fabric", n ? HEALTH_OK : missing, "providers: %s",
                                n ? list : "none");
    if (!res)
        return PM_ERR_NOMEM;
    health_result_measure(res, n, "pixelmill_doctor_fabric_providers",
                          "Distinct libfabric providers usable on the node");
    // libfabric is not closed: providers may have started threads (and dlclose of it is
    // known to crash in some providers).
    return PM_OK;
}

#endif
