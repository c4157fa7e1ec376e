// libFuzzer target for shards/s3_xml.h: every reader of S3's XML answers on the same bytes.
#include "s3_xml.h"

#include <libxml/parser.h>
#include <stdint.h>
#include <stdlib.h>

static int count_object(void *ctx, const char *key, uint64_t size)
{
    (void)key;
    (void)size;
    return ++*(int *)ctx > 1000; // also exercise stopping early
}

static int count_upload(void *ctx, const char *key, const char *id, const char *initiated)
{
    (void)key;
    (void)id;
    (void)initiated;
    return ++*(int *)ctx > 1000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        xmlInitParser();
        init = 1;
    }
    const char *d = (const char *)data;
    char code[64];
    s3_xml_error_code(d, size, code, sizeof code);
    free(s3_xml_upload_id(d, size));
    s3_xml_is_complete_result(d, size);
    int n = 0;
    char *next = NULL, *next_id = NULL;
    const char *why;
    s3_xml_list_objects(d, size, count_object, &n, &next, &why);
    free(next);
    n = 0;
    s3_xml_list_uploads(d, size, count_upload, &n, &next, &next_id, &why);
    free(next);
    free(next_id);
    return 0;
}
