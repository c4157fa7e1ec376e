#include "json_file.h"

#include "atomic_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int json_file_write(const char *path, const json_t *doc, struct pm_error *err)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot serialise '%s'", path);
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl) {
        free(text);
        return pm_error_set(err, PM_ERR_NOMEM, "cannot serialise '%s'", path);
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    int rc = atomic_file_write_all(path, withnl, n + 1, err);
    free(withnl);
    return rc;
}

int json_file_read(const char *path, size_t max_bytes, json_t **out, struct pm_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return pm_error_set(err, errno == ENOENT ? PM_ERR_NOT_FOUND : PM_ERR_IO,
                            "cannot open '%s': %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return pm_error_set(err, PM_ERR_IO, "'%s' is not a regular file", path);
    if ((unsigned long long)st.st_size > max_bytes)
        return pm_error_set(err, PM_ERR_LIMIT, "'%s' is %lld bytes, more than the %zu allowed",
                            path, (long long)st.st_size, max_bytes);
    json_error_t je;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        if (je.line <= 0 && je.position <= 0)
            return pm_error_set(err, PM_ERR_IO, "cannot read '%s': %s", path, je.text);
        return pm_error_set(err, PM_ERR_FORMAT, "'%s' line %d column %d: %s", path, je.line,
                            je.column, je.text);
    }
    *out = doc;
    return PM_OK;
}
