/**
 * parquet_encode — Thrift compact-protocol encoder for the Parquet metadata structs the
 * writer emits: PageHeader (with DataPageHeader / DictionaryPageHeader), RowGroup (with
 * ColumnChunk, ColumnMetaData, Statistics, PageEncodingStats) and FileMetaData (with
 * SchemaElement, KeyValue, ColumnOrder). Internal to tables/ (used by parquet_writer).
 *
 * Only the fields pixelmill writes are modelled; field ids and types follow
 * parquet.thrift. Every function appends to a bytebuf and returns PM_OK, or
 * PM_ERR_NOMEM / PM_ERR_LIMIT from the buffer (the buffer may then hold a partial
 * struct and should be discarded). Stateless and thread-safe.
 */
#ifndef PM_PARQUET_ENCODE_H
#define PM_PARQUET_ENCODE_H

#include "bytebuf.h"
#include "parquet_format.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Append v as an unsigned LEB128 varint (Thrift compact protocol and the RLE hybrid's
 * run headers). */
int parquet_encode_varint(struct bytebuf *out, uint64_t v);

/** Statistics of a column chunk. `min`/`max` are PLAIN-encoded values without length
 * prefix (raw bytes for BYTE_ARRAY). Written as min_value/max_value (fields 6/5) and,
 * when `legacy_min_max` is set (signed-order types), also as the deprecated min/max. */
struct parquet_encode_stats {
    int64_t null_count;
    bool has_min_max;
    bool legacy_min_max;
    const void *min;
    size_t min_len;
    const void *max;
    size_t max_len;
};

/** A page header: a data page v1 (definition and repetition level encodings RLE) or a
 * dictionary page, according to `type`. */
struct parquet_encode_page_header {
    enum parquet_page_type type; /* PARQUET_PAGE_DATA or PARQUET_PAGE_DICTIONARY */
    int32_t uncompressed_size;   /* payload bytes before compression, header excluded */
    int32_t compressed_size;     /* payload bytes as stored */
    int32_t num_values;          /* data: values including nulls; dictionary: entries */
    enum parquet_encoding encoding;
};

/** One column chunk of a flat schema: ColumnChunk + ColumnMetaData + Statistics. */
struct parquet_encode_column_chunk {
    enum parquet_type type;
    const char *name; /* path_in_schema has this one element */
    const enum parquet_encoding *encodings;
    size_t num_encodings;
    enum parquet_compression codec;
    int64_t num_values;              /* including nulls */
    int64_t total_uncompressed_size; /* page headers included */
    int64_t total_compressed_size;   /* page headers included */
    int64_t data_page_offset;
    int64_t dictionary_page_offset; /* < 0: no dictionary page */
    int64_t file_offset;            /* ColumnChunk.file_offset: first byte of the chunk */
    struct parquet_encode_stats stats;
    /* PageEncodingStats, omitted when all three are 0 */
    int32_t dictionary_pages; /* dictionary pages (encoding PLAIN) */
    int32_t dict_data_pages;  /* data pages encoded RLE_DICTIONARY */
    int32_t plain_data_pages; /* data pages encoded PLAIN */
};

struct parquet_encode_row_group {
    const struct parquet_encode_column_chunk *columns;
    size_t num_columns;
    int64_t total_byte_size; /* uncompressed */
    int64_t num_rows;
    int64_t file_offset;
    int64_t total_compressed_size;
    int32_t ordinal; /* < 0 or > 32767: omitted */
};

/** A SchemaElement. Groups (the root) have `type` < 0 and `num_children` >= 0; leaves
 * have `num_children` < 0. `repetition` < 0 omits the field. `utf8_string` adds
 * converted_type UTF8 and logicalType STRING. */
struct parquet_encode_schema_element {
    const char *name;
    int type;
    int repetition;
    int num_children;
    bool utf8_string;
};

struct parquet_encode_key_value {
    const char *key;
    const char *value; /* NULL: omitted */
};

/** FileMetaData. The row groups are passed already encoded (the concatenation of
 * `num_row_groups` structs appended by parquet_encode_row_group), so a writer can keep
 * them compactly until close. `num_column_orders` TYPE_ORDER entries are written when
 * it is not 0 (one per leaf column). */
struct parquet_encode_file_metadata {
    int32_t version;
    const struct parquet_encode_schema_element *schema;
    size_t num_schema;
    int64_t num_rows;
    const void *row_groups;
    size_t row_groups_len;
    size_t num_row_groups;
    const struct parquet_encode_key_value *key_values;
    size_t num_key_values;
    const char *created_by; /* NULL: omitted */
    size_t num_column_orders;
};

/** Append a PageHeader struct. */
int parquet_encode_page_header(struct bytebuf *out, const struct parquet_encode_page_header *h);

/** Append a RowGroup struct with its column chunks. */
int parquet_encode_row_group(struct bytebuf *out, const struct parquet_encode_row_group *rg);

/** Append a FileMetaData struct (the footer, without its length and magic). */
int parquet_encode_file_metadata(struct bytebuf *out, const struct parquet_encode_file_metadata *m);

#endif
