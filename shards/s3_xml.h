/**
 * s3_xml — read the XML answers of S3 (libxml2), for s3_client.
 *
 * The answers come from the network and are untrusted: a document with a DTD is refused
 * (S3 never sends one; it could only declare entities for XXE or "billion laughs"), no
 * entity is substituted, nothing is fetched, and every function copes with any bytes
 * (tests/fuzz/fuzz_s3_xml.c). Element names are matched without namespace. Thread-safe
 * once libxml2 is initialised (s3_client_create does it; xmlInitParser otherwise).
 */
#ifndef PM_S3_XML_H
#define PM_S3_XML_H

#include "s3_client.h"

#include <stdbool.h>
#include <stddef.h>

/**
 * The Code of an <Error> document ("SlowDown") into `code` (cap >= 1 bytes; truncated,
 * non-printable bytes replaced by '?'); "" when the body is not an <Error>.
 */
void s3_xml_error_code(const char *data, size_t n, char *code, size_t cap);

/** The UploadId of an InitiateMultipartUploadResult (malloc'ed), or NULL if the body is
 * not one or the id is empty. */
char *s3_xml_upload_id(const char *data, size_t n);

/** True if the body is a CompleteMultipartUploadResult (moto: ...Response). */
bool s3_xml_is_complete_result(const char *data, size_t n);

/**
 * Pass each <Contents> (Key, Size) of a ListBucketResult page to `fn` (stopping when it
 * returns nonzero). *next (malloc'ed) receives NextContinuationToken when the page is
 * truncated and listing should go on, else NULL. Returns PM_OK, PM_ERR_NOMEM, or
 * PM_ERR_FORMAT with *why (a constant string) saying what is wrong.
 */
int s3_xml_list_objects(const char *data, size_t n, s3_list_fn fn, void *ctx, char **next,
                        const char **why);

/**
 * Pass each <Upload> (Key, UploadId, Initiated) of a ListMultipartUploadsResult page to
 * `fn`. When truncated (and not stopped), *next_key and *next_id (malloc'ed; *next_id
 * may be NULL) receive the markers of the next page, else both NULL. Returns as
 * s3_xml_list_objects.
 */
int s3_xml_list_uploads(const char *data, size_t n, s3_upload_list_fn fn, void *ctx,
                        char **next_key, char **next_id, const char **why);

#endif
