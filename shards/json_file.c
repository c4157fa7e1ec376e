#include "json_file.h"

#include "atomic_file.h"
#include "bytebuf.h"
#include "store.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *json_file_dumps(const json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl) {
        free(text);
        return NULL;
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    return withnl;
}

int json_file_write(const char *path, const json_t *doc, struct pm_error *err)
{
    char *text = json_file_dumps(doc);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot serialise '%s'", path);
    int rc = atomic_file_write_all(path, text, strlen(text), err);
    free(text);
    return rc;
}

int json_file_write_store(struct store *s, const char *name, const json_t *doc,
                          struct pm_error *err)
{
    char *text = json_file_dumps(doc);
    if (!text)
        return pm_error_set(err, PM_ERR_NOMEM, "cannot serialise '%s/%s'", store_location(s),
                            name);
    int rc = store_write_all(s, name, text, strlen(text), err);
    free(text);
    return rc;
}

int json_file_read_store(struct store *s, const char *name, size_t max_bytes, json_t **out,
                         struct pm_error *err)
{
    *out = NULL;
    struct bytebuf b;
    bytebuf_init(&b, max_bytes);
    int rc = store_read_all(s, name, &b, err);
    if (rc == PM_ERR_LIMIT)
        rc = pm_error_set(err, PM_ERR_LIMIT, "'%s/%s' is more than the %zu bytes allowed",
                          store_location(s), name, max_bytes);
    if (rc == PM_OK) {
        json_error_t je;
        *out = json_loadb(b.data ? b.data : "", b.len, JSON_REJECT_DUPLICATES, &je);
        if (!*out)
            rc = pm_error_set(err, PM_ERR_FORMAT, "'%s/%s' line %d column %d: %s",
                              store_location(s), name, je.line, je.column, je.text);
    }
    bytebuf_release(&b);
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
