#include "s3_xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static xmlDocPtr xml_parse(const char *data, size_t n)
{
    if (!data || n == 0 || n > INT32_MAX)
        return NULL;
    // no network, no entity substitution, no DTD loading
    xmlDocPtr d = xmlReadMemory(data, (int)n, NULL, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (d && (d->intSubset || d->extSubset)) {
        xmlFreeDoc(d); // S3 never sends a DTD (see the header)
        return NULL;
    }
    return d;
}

// The root element if it is named `name` (or starts with it, when prefix).
static xmlNodePtr xml_root(xmlDocPtr d, const char *name, bool prefix)
{
    xmlNodePtr root = d ? xmlDocGetRootElement(d) : NULL;
    if (!root || !root->name)
        return NULL;
    const char *rn = (const char *)root->name;
    bool ok = prefix ? strncmp(rn, name, strlen(name)) == 0 : strcmp(rn, name) == 0;
    return ok ? root : NULL;
}

static bool is_element(xmlNodePtr k, const char *name)
{
    return k->type == XML_ELEMENT_NODE && k->name && strcmp((const char *)k->name, name) == 0;
}

static xmlNodePtr xml_child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr k = n ? n->children : NULL; k; k = k->next)
        if (is_element(k, name))
            return k;
    return NULL;
}

// Text of child `name`, malloc'ed; NULL if absent (or out of memory: *nomem set).
static char *xml_text_dup(xmlNodePtr n, const char *name, bool *nomem)
{
    xmlNodePtr k = xml_child(n, name);
    if (!k)
        return NULL;
    xmlChar *s = xmlNodeGetContent(k);
    char *r = strdup(s ? (const char *)s : "");
    xmlFree(s);
    if (!r)
        *nomem = true;
    return r;
}

// Text of child `name` into out (truncated); "" if absent.
static void xml_text(xmlNodePtr n, const char *name, char *out, size_t cap)
{
    out[0] = 0;
    xmlNodePtr k = xml_child(n, name);
    if (!k)
        return;
    xmlChar *s = xmlNodeGetContent(k);
    snprintf(out, cap, "%s", s ? (const char *)s : "");
    xmlFree(s);
}

void s3_xml_error_code(const char *data, size_t n, char *code, size_t cap)
{
    if (cap == 0)
        return;
    code[0] = 0;
    xmlDocPtr d = xml_parse(data, n);
    xmlNodePtr root = xml_root(d, "Error", false);
    if (root) {
        xml_text(root, "Code", code, cap);
        for (char *p = code; *p; p++)
            if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
                *p = '?';
    }
    xmlFreeDoc(d);
}

char *s3_xml_upload_id(const char *data, size_t n)
{
    xmlDocPtr d = xml_parse(data, n);
    xmlNodePtr root = xml_root(d, "InitiateMultipartUploadResult", false);
    bool nomem = false;
    char *id = root ? xml_text_dup(root, "UploadId", &nomem) : NULL;
    xmlFreeDoc(d);
    if (id && !*id) {
        free(id);
        id = NULL;
    }
    return id;
}

bool s3_xml_is_complete_result(const char *data, size_t n)
{
    xmlDocPtr d = xml_parse(data, n);
    bool ok = xml_root(d, "CompleteMultipartUpload", true) != NULL;
    xmlFreeDoc(d);
    return ok;
}

static bool is_true(xmlNodePtr root)
{
    char t[16];
    xml_text(root, "IsTruncated", t, sizeof t);
    return strcmp(t, "true") == 0;
}

int s3_xml_list_objects(const char *data, size_t n, s3_list_fn fn, void *ctx, char **next,
                        const char **why)
{
    *next = NULL;
    *why = "";
    xmlDocPtr d = xml_parse(data, n);
    xmlNodePtr root = xml_root(d, "ListBucketResult", false);
    int rc = PM_OK;
    bool stop = false, nomem = false;
    if (!root) {
        *why = "the answer is not a ListBucketResult";
        rc = PM_ERR_FORMAT;
    }
    for (xmlNodePtr k = root ? root->children : NULL; k && !stop && rc == PM_OK; k = k->next) {
        if (!is_element(k, "Contents"))
            continue;
        char *key = xml_text_dup(k, "Key", &nomem);
        char size[32];
        xml_text(k, "Size", size, sizeof size);
        char *end = NULL;
        unsigned long long sz = strtoull(size, &end, 10);
        if (nomem) {
            rc = PM_ERR_NOMEM;
            *why = "out of memory";
        } else if (!key || !*key || size[0] < '0' || size[0] > '9' || *end) {
            rc = PM_ERR_FORMAT;
            *why = "an entry has no valid Key or Size";
        } else {
            stop = fn(ctx, key, sz) != 0;
        }
        free(key);
    }
    if (rc == PM_OK && !stop && is_true(root)) {
        *next = xml_text_dup(root, "NextContinuationToken", &nomem);
        if (!*next || !**next) {
            free(*next);
            *next = NULL;
            rc = nomem ? PM_ERR_NOMEM : PM_ERR_FORMAT;
            *why = nomem ? "out of memory" : "truncated listing without a continuation token";
        }
    }
    xmlFreeDoc(d);
    return rc;
}

int s3_xml_list_uploads(const char *data, size_t n, s3_upload_list_fn fn, void *ctx,
                        char **next_key, char **next_id, const char **why)
{
    *next_key = *next_id = NULL;
    *why = "";
    xmlDocPtr d = xml_parse(data, n);
    xmlNodePtr root = xml_root(d, "ListMultipartUploadsResult", false);
    int rc = PM_OK;
    bool stop = false, nomem = false;
    if (!root) {
        *why = "the answer is not a ListMultipartUploadsResult";
        rc = PM_ERR_FORMAT;
    }
    for (xmlNodePtr k = root ? root->children : NULL; k && !stop && rc == PM_OK; k = k->next) {
        if (!is_element(k, "Upload"))
            continue;
        char *key = xml_text_dup(k, "Key", &nomem);
        char *id = xml_text_dup(k, "UploadId", &nomem);
        char init[64];
        xml_text(k, "Initiated", init, sizeof init);
        if (nomem) {
            rc = PM_ERR_NOMEM;
            *why = "out of memory";
        } else if (!key || !*key || !id || !*id) {
            rc = PM_ERR_FORMAT;
            *why = "an entry has no Key or UploadId";
        } else {
            stop = fn(ctx, key, id, init) != 0;
        }
        free(key);
        free(id);
    }
    if (rc == PM_OK && !stop && is_true(root)) {
        *next_key = xml_text_dup(root, "NextKeyMarker", &nomem);
        *next_id = xml_text_dup(root, "NextUploadIdMarker", &nomem);
        if (nomem || !*next_key || !**next_key) {
            free(*next_key);
            free(*next_id);
            *next_key = *next_id = NULL;
            rc = nomem ? PM_ERR_NOMEM : PM_ERR_FORMAT;
            *why = nomem ? "out of memory" : "truncated listing without a NextKeyMarker";
        }
    }
    xmlFreeDoc(d);
    return rc;
}
