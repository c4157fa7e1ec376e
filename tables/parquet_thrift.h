/**
 * parquet_thrift — an internal, decode-only Thrift compact-protocol parser for the
 * Parquet structures the reader needs (FileMetaData and PageHeader with what they
 * contain). Sibling-only: used by parquet_reader.c, not a public API.
 *
 * The parser never reads outside [data, data + size): every length and list size is
 * checked against the bytes left, nesting is bounded (PQ_THRIFT_MAX_DEPTH) and unknown
 * fields (including nested structs, lists and maps) are skipped. Fields the reader does
 * not use are skipped too. A decoded struct owns its heap memory; release it with the
 * matching *_release() (accepts NULL and partially decoded structs).
 */
#ifndef PM_PARQUET_THRIFT_H
#define PM_PARQUET_THRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Deepest struct/list/map nesting accepted. */
#define PQ_THRIFT_MAX_DEPTH 32

struct pq_schema_element {
    bool has_type;
    int32_t type; /* enum parquet_type */
    int32_t type_length;
    bool has_repetition;
    int32_t repetition; /* enum parquet_repetition */
    char *name;         /* NUL-terminated copy; "" if absent */
    bool has_num_children;
    int32_t num_children;
    bool has_converted_type;
    int32_t converted_type;
};

struct pq_column_meta {
    int32_t type;
    int32_t *encodings;
    size_t num_encodings;
    int32_t codec;
    int64_t num_values;
    int64_t total_uncompressed_size;
    int64_t total_compressed_size;
    int64_t data_page_offset;
    bool has_dictionary_page_offset;
    int64_t dictionary_page_offset;
};

struct pq_column_chunk {
    bool has_file_path;
    int64_t file_offset;
    bool has_meta;
    struct pq_column_meta meta;
};

struct pq_row_group {
    struct pq_column_chunk *columns;
    size_t num_columns;
    int64_t total_byte_size;
    int64_t num_rows;
};

struct pq_file_meta {
    int32_t version;
    struct pq_schema_element *schema;
    size_t num_schema;
    int64_t num_rows;
    struct pq_row_group *row_groups;
    size_t num_row_groups;
    bool encrypted; /* encryption_algorithm present */
};

struct pq_data_page_header {
    int32_t num_values;
    int32_t encoding;
    int32_t def_level_encoding;
    int32_t rep_level_encoding;
};

struct pq_dictionary_page_header {
    int32_t num_values;
    int32_t encoding;
};

struct pq_data_page_header_v2 {
    int32_t num_values;
    int32_t num_nulls;
    int32_t num_rows;
    int32_t encoding;
    int32_t def_levels_byte_length;
    int32_t rep_levels_byte_length;
    bool is_compressed; /* defaults to true */
};

struct pq_page_header {
    int32_t type; /* enum parquet_page_type */
    int32_t uncompressed_page_size;
    int32_t compressed_page_size;
    bool has_data;
    struct pq_data_page_header data;
    bool has_dict;
    struct pq_dictionary_page_header dict;
    bool has_data_v2;
    struct pq_data_page_header_v2 data_v2;
};

/** Result of a decode call. */
enum pq_thrift_status {
    PQ_THRIFT_OK = 0,
    PQ_THRIFT_TRUNCATED = 1, /* ran out of bytes (more input might help) */
    PQ_THRIFT_INVALID = 2,   /* bytes that are not a valid encoding, or too deep */
    PQ_THRIFT_NOMEM = 3,
};

/**
 * Decode a FileMetaData from data[0..size). Fills *out (zeroed first; release with
 * pq_file_meta_release even on failure). Returns a pq_thrift_status.
 */
int pq_file_meta_decode(struct pq_file_meta *out, const uint8_t *data, size_t size);

/** Free what a decoded FileMetaData owns. Accepts NULL. */
void pq_file_meta_release(struct pq_file_meta *m);

/**
 * Decode a PageHeader from data[0..size); sets *used to the header's length in bytes.
 * A PageHeader owns no heap memory. Returns a pq_thrift_status.
 */
int pq_page_header_decode(struct pq_page_header *out, const uint8_t *data, size_t size,
                          size_t *used);

#endif
