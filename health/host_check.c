#include "host_check.h"

#include "pm_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// The first "model name" line of /proc/cpuinfo (x86), or "Model"/"CPU part" elsewhere.
static void cpu_model(char *buf, size_t size)
{
    snprintf(buf, size, "unknown model");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) && strncmp(line, "Model", 5))
            continue;
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        v[strcspn(v, "\n")] = '\0';
        snprintf(buf, size, "%s", v);
        break;
    }
    fclose(f);
}

int host_check_cpu(struct health_report *r, long min_cpus)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    char model[256];
    cpu_model(model, sizeof model);
    struct health_result *res;
    if (min_cpus > 0 && n < min_cpus)
        res = health_report_add(r, "cpu", HEALTH_FAIL, "%ld CPUs online, expected at least %ld", n,
                                min_cpus);
    else
        res = health_report_add(r, "cpu", HEALTH_OK, "%ld x %s", n, model);
    if (!res)
        return PM_ERR_NOMEM;
    health_result_measure(res, (double)n, "pixelmill_doctor_cpus", "Online CPUs");
    return PM_OK;
}

// A "Key:   123 kB" value of /proc/meminfo in bytes, or -1.
static double meminfo_bytes(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    char line[256];
    double v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) || line[klen] != ':')
            continue;
        v = strtod(line + klen + 1, NULL) * 1024.0;
        break;
    }
    fclose(f);
    return v;
}

int host_check_memory(struct health_report *r)
{
    double total = meminfo_bytes("MemTotal"), avail = meminfo_bytes("MemAvailable");
    struct health_result *res;
    if (total <= 0 || avail < 0)
        return health_report_add(r, "memory", HEALTH_SKIPPED, "/proc/meminfo not readable")
                   ? PM_OK
                   : PM_ERR_NOMEM;
    const double gib = 1024.0 * 1024 * 1024;
    enum health_status s = avail < 0.05 * total ? HEALTH_WARN : HEALTH_OK;
    res = health_report_add(r, "memory", s, "%.1f GiB total, %.1f GiB available%s", total / gib,
                            avail / gib, s == HEALTH_WARN ? " (under 5%)" : "");
    if (!res)
        return PM_ERR_NOMEM;
    health_result_measure(res, avail, "pixelmill_doctor_memory_available_bytes",
                          "MemAvailable at the last doctor run");
    return PM_OK;
}

int host_check_load(struct health_report *r, double max_load_per_cpu)
{
    double load[3];
    if (getloadavg(load, 3) != 3)
        return health_report_add(r, "load", HEALTH_SKIPPED, "getloadavg failed") ? PM_OK
                                                                                 : PM_ERR_NOMEM;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    double limit = max_load_per_cpu * (double)n;
    enum health_status s = load[0] > limit ? HEALTH_WARN : HEALTH_OK;
    struct health_result *res =
        health_report_add(r, "load", s, "%.2f %.2f %.2f (1/5/15 min)%s", load[0], load[1], load[2],
                          s == HEALTH_WARN ? "; above the limit" : "");
    if (!res)
        return PM_ERR_NOMEM;
    if (s == HEALTH_WARN) {
        size_t l = strlen(res->detail);
        snprintf(res->detail + l, sizeof res->detail - l, " of %.2f", limit);
    }
    health_result_measure(res, load[0], "pixelmill_doctor_load1", "1-minute load average");
    return PM_OK;
}
