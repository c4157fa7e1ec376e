/**
 * parquet_format — constants of the Parquet file format (parquet.thrift), shared by
 * parquet_reader and parquet_writer. Values are the on-disk enum values of the
 * Apache Parquet specification; never renumber them.
 */
#ifndef PM_PARQUET_FORMAT_H
#define PM_PARQUET_FORMAT_H

/** "PAR1": the 4-byte magic at the start and end of every file. */
#define PARQUET_MAGIC "PAR1"

enum parquet_type {
    PARQUET_BOOLEAN = 0,
    PARQUET_INT32 = 1,
    PARQUET_INT64 = 2,
    PARQUET_INT96 = 3,
    PARQUET_FLOAT = 4,
    PARQUET_DOUBLE = 5,
    PARQUET_BYTE_ARRAY = 6,
    PARQUET_FIXED_LEN_BYTE_ARRAY = 7,
};

enum parquet_repetition {
    PARQUET_REQUIRED = 0,
    PARQUET_OPTIONAL = 1,
    PARQUET_REPEATED = 2,
};

enum parquet_converted_type {
    PARQUET_CONVERTED_UTF8 = 0,
};

enum parquet_encoding {
    PARQUET_ENC_PLAIN = 0,
    PARQUET_ENC_PLAIN_DICTIONARY = 2,
    PARQUET_ENC_RLE = 3,
    PARQUET_ENC_BIT_PACKED = 4,
    PARQUET_ENC_DELTA_BINARY_PACKED = 5,
    PARQUET_ENC_DELTA_LENGTH_BYTE_ARRAY = 6,
    PARQUET_ENC_DELTA_BYTE_ARRAY = 7,
    PARQUET_ENC_RLE_DICTIONARY = 8,
    PARQUET_ENC_BYTE_STREAM_SPLIT = 9,
};

enum parquet_compression {
    PARQUET_COMP_UNCOMPRESSED = 0,
    PARQUET_COMP_SNAPPY = 1,
    PARQUET_COMP_GZIP = 2,
    PARQUET_COMP_LZO = 3,
    PARQUET_COMP_BROTLI = 4,
    PARQUET_COMP_LZ4 = 5,
    PARQUET_COMP_ZSTD = 6,
    PARQUET_COMP_LZ4_RAW = 7,
};

enum parquet_page_type {
    PARQUET_PAGE_DATA = 0,
    PARQUET_PAGE_INDEX = 1,
    PARQUET_PAGE_DICTIONARY = 2,
    PARQUET_PAGE_DATA_V2 = 3,
};

/** Thrift compact protocol field types (used by both directions). */
enum thrift_compact_type {
    THRIFT_STOP = 0,
    THRIFT_BOOL_TRUE = 1,
    THRIFT_BOOL_FALSE = 2,
    THRIFT_I8 = 3,
    THRIFT_I16 = 4,
    THRIFT_I32 = 5,
    THRIFT_I64 = 6,
    THRIFT_DOUBLE = 7,
    THRIFT_BINARY = 8,
    THRIFT_LIST = 9,
    THRIFT_SET = 10,
    THRIFT_MAP = 11,
    THRIFT_STRUCT = 12,
};

#endif
