#include "parquet_encode.h"

#include "pm_error.h"

#include <string.h>

// Thrift compact protocol: field headers carry the id delta in the high nibble when it
// is 1..15, integers are zigzag varints, binaries are varint length + bytes, lists are
// a size/element-type header followed by the elements, structs end with a STOP byte.

#define TC_MAX_DEPTH 8

struct tc {
    struct bytebuf *out;
    int rc;
    int depth;
    int16_t last_id[TC_MAX_DEPTH];
};

static void tc_init(struct tc *t, struct bytebuf *out)
{
    t->out = out;
    t->rc = PM_OK;
    t->depth = 0;
    t->last_id[0] = 0;
}

static void tc_bytes(struct tc *t, const void *p, size_t n)
{
    if (t->rc == PM_OK)
        t->rc = bytebuf_append(t->out, p, n);
}

static void tc_byte(struct tc *t, uint8_t b)
{
    tc_bytes(t, &b, 1);
}

int parquet_encode_varint(struct bytebuf *out, uint64_t v)
{
    uint8_t buf[10];
    size_t n = 0;
    while (v >= 0x80) {
        buf[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    buf[n++] = (uint8_t)v;
    return bytebuf_append(out, buf, n);
}

static void tc_varint(struct tc *t, uint64_t v)
{
    if (t->rc == PM_OK)
        t->rc = parquet_encode_varint(t->out, v);
}

static void tc_zigzag(struct tc *t, int64_t v)
{
    tc_varint(t, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static void tc_field(struct tc *t, int16_t id, enum thrift_compact_type type)
{
    int16_t *last = &t->last_id[t->depth];
    int delta = id - *last;
    if (delta > 0 && delta <= 15) {
        tc_byte(t, (uint8_t)(delta << 4 | type));
    } else {
        tc_byte(t, (uint8_t)type);
        tc_zigzag(t, id);
    }
    *last = id;
}

static void tc_struct_begin(struct tc *t)
{
    if (t->depth + 1 >= TC_MAX_DEPTH) {
        if (t->rc == PM_OK)
            t->rc = PM_ERR_INTERNAL;
        return;
    }
    t->last_id[++t->depth] = 0;
}

static void tc_struct_end(struct tc *t)
{
    tc_byte(t, THRIFT_STOP);
    if (t->depth > 0)
        t->depth--;
}

static void tc_list(struct tc *t, enum thrift_compact_type elem, size_t n)
{
    if (n < 15) {
        tc_byte(t, (uint8_t)(n << 4 | elem));
    } else {
        tc_byte(t, (uint8_t)(0xF0 | elem));
        tc_varint(t, n);
    }
}

static void tc_i32_field(struct tc *t, int16_t id, int32_t v)
{
    tc_field(t, id, THRIFT_I32);
    tc_zigzag(t, v);
}

static void tc_i64_field(struct tc *t, int16_t id, int64_t v)
{
    tc_field(t, id, THRIFT_I64);
    tc_zigzag(t, v);
}

static void tc_i16_field(struct tc *t, int16_t id, int16_t v)
{
    tc_field(t, id, THRIFT_I16);
    tc_zigzag(t, v);
}

static void tc_bool_field(struct tc *t, int16_t id, bool v)
{
    tc_field(t, id, v ? THRIFT_BOOL_TRUE : THRIFT_BOOL_FALSE);
}

static void tc_binary(struct tc *t, const void *p, size_t n)
{
    tc_varint(t, n);
    tc_bytes(t, p, n);
}

static void tc_binary_field(struct tc *t, int16_t id, const void *p, size_t n)
{
    tc_field(t, id, THRIFT_BINARY);
    tc_binary(t, p, n);
}

static void tc_string_field(struct tc *t, int16_t id, const char *s)
{
    tc_binary_field(t, id, s, strlen(s));
}

// An empty struct as field `id` (the members of the LogicalType and ColumnOrder unions).
static void tc_empty_struct_field(struct tc *t, int16_t id)
{
    tc_field(t, id, THRIFT_STRUCT);
    tc_struct_begin(t);
    tc_struct_end(t);
}

int parquet_encode_page_header(struct bytebuf *out, const struct parquet_encode_page_header *h)
{
    struct tc t;
    tc_init(&t, out);
    tc_i32_field(&t, 1, h->type);
    tc_i32_field(&t, 2, h->uncompressed_size);
    tc_i32_field(&t, 3, h->compressed_size);
    if (h->type == PARQUET_PAGE_DICTIONARY) {
        tc_field(&t, 7, THRIFT_STRUCT); // DictionaryPageHeader
        tc_struct_begin(&t);
        tc_i32_field(&t, 1, h->num_values);
        tc_i32_field(&t, 2, h->encoding);
        tc_bool_field(&t, 3, false); // is_sorted
        tc_struct_end(&t);
    } else {
        tc_field(&t, 5, THRIFT_STRUCT); // DataPageHeader
        tc_struct_begin(&t);
        tc_i32_field(&t, 1, h->num_values);
        tc_i32_field(&t, 2, h->encoding);
        tc_i32_field(&t, 3, PARQUET_ENC_RLE); // definition_level_encoding
        tc_i32_field(&t, 4, PARQUET_ENC_RLE); // repetition_level_encoding
        tc_struct_end(&t);
    }
    tc_byte(&t, THRIFT_STOP);
    return t.rc;
}

static void encode_statistics(struct tc *t, const struct parquet_encode_stats *s)
{
    tc_struct_begin(t);
    if (s->has_min_max && s->legacy_min_max) {
        tc_binary_field(t, 1, s->max, s->max_len);
        tc_binary_field(t, 2, s->min, s->min_len);
    }
    tc_i64_field(t, 3, s->null_count);
    if (s->has_min_max) {
        tc_binary_field(t, 5, s->max, s->max_len);
        tc_binary_field(t, 6, s->min, s->min_len);
        tc_bool_field(t, 7, true); // is_max_value_exact
        tc_bool_field(t, 8, true); // is_min_value_exact
    }
    tc_struct_end(t);
}

static void encode_page_encoding_stats(struct tc *t, enum parquet_page_type type,
                                       enum parquet_encoding enc, int32_t count)
{
    tc_struct_begin(t);
    tc_i32_field(t, 1, type);
    tc_i32_field(t, 2, enc);
    tc_i32_field(t, 3, count);
    tc_struct_end(t);
}

static void encode_column_metadata(struct tc *t, const struct parquet_encode_column_chunk *c)
{
    tc_struct_begin(t);
    tc_i32_field(t, 1, c->type);
    tc_field(t, 2, THRIFT_LIST);
    tc_list(t, THRIFT_I32, c->num_encodings);
    for (size_t i = 0; i < c->num_encodings; i++)
        tc_zigzag(t, c->encodings[i]);
    tc_field(t, 3, THRIFT_LIST);
    tc_list(t, THRIFT_BINARY, 1);
    tc_binary(t, c->name, strlen(c->name));
    tc_i32_field(t, 4, c->codec);
    tc_i64_field(t, 5, c->num_values);
    tc_i64_field(t, 6, c->total_uncompressed_size);
    tc_i64_field(t, 7, c->total_compressed_size);
    tc_i64_field(t, 9, c->data_page_offset);
    if (c->dictionary_page_offset >= 0)
        tc_i64_field(t, 11, c->dictionary_page_offset);
    tc_field(t, 12, THRIFT_STRUCT);
    encode_statistics(t, &c->stats);
    size_t kinds = (c->dictionary_pages > 0) + (c->dict_data_pages > 0) + (c->plain_data_pages > 0);
    if (kinds) {
        tc_field(t, 13, THRIFT_LIST);
        tc_list(t, THRIFT_STRUCT, kinds);
        if (c->dictionary_pages)
            encode_page_encoding_stats(t, PARQUET_PAGE_DICTIONARY, PARQUET_ENC_PLAIN,
                                       c->dictionary_pages);
        if (c->dict_data_pages)
            encode_page_encoding_stats(t, PARQUET_PAGE_DATA, PARQUET_ENC_RLE_DICTIONARY,
                                       c->dict_data_pages);
        if (c->plain_data_pages)
            encode_page_encoding_stats(t, PARQUET_PAGE_DATA, PARQUET_ENC_PLAIN,
                                       c->plain_data_pages);
    }
    tc_struct_end(t);
}

int parquet_encode_row_group(struct bytebuf *out, const struct parquet_encode_row_group *rg)
{
    struct tc t;
    tc_init(&t, out);
    tc_field(&t, 1, THRIFT_LIST);
    tc_list(&t, THRIFT_STRUCT, rg->num_columns);
    for (size_t i = 0; i < rg->num_columns; i++) {
        const struct parquet_encode_column_chunk *c = &rg->columns[i];
        tc_struct_begin(&t); // ColumnChunk
        tc_i64_field(&t, 2, c->file_offset);
        tc_field(&t, 3, THRIFT_STRUCT);
        encode_column_metadata(&t, c);
        tc_struct_end(&t);
    }
    tc_i64_field(&t, 2, rg->total_byte_size);
    tc_i64_field(&t, 3, rg->num_rows);
    tc_i64_field(&t, 5, rg->file_offset);
    tc_i64_field(&t, 6, rg->total_compressed_size);
    if (rg->ordinal >= 0 && rg->ordinal <= INT16_MAX)
        tc_i16_field(&t, 7, (int16_t)rg->ordinal);
    tc_byte(&t, THRIFT_STOP);
    return t.rc;
}

static void encode_schema_element(struct tc *t, const struct parquet_encode_schema_element *e)
{
    tc_struct_begin(t);
    if (e->type >= 0)
        tc_i32_field(t, 1, e->type);
    if (e->repetition >= 0)
        tc_i32_field(t, 3, e->repetition);
    tc_string_field(t, 4, e->name);
    if (e->num_children >= 0)
        tc_i32_field(t, 5, e->num_children);
    if (e->utf8_string) {
        tc_i32_field(t, 6, PARQUET_CONVERTED_UTF8);
        tc_field(t, 10, THRIFT_STRUCT); // LogicalType union
        tc_struct_begin(t);
        tc_empty_struct_field(t, 1); // STRING: StringType {}
        tc_struct_end(t);
    }
    tc_struct_end(t);
}

int parquet_encode_file_metadata(struct bytebuf *out, const struct parquet_encode_file_metadata *m)
{
    struct tc t;
    tc_init(&t, out);
    tc_i32_field(&t, 1, m->version);
    tc_field(&t, 2, THRIFT_LIST);
    tc_list(&t, THRIFT_STRUCT, m->num_schema);
    for (size_t i = 0; i < m->num_schema; i++)
        encode_schema_element(&t, &m->schema[i]);
    tc_i64_field(&t, 3, m->num_rows);
    tc_field(&t, 4, THRIFT_LIST);
    tc_list(&t, THRIFT_STRUCT, m->num_row_groups);
    tc_bytes(&t, m->row_groups, m->row_groups_len);
    if (m->num_key_values) {
        tc_field(&t, 5, THRIFT_LIST);
        tc_list(&t, THRIFT_STRUCT, m->num_key_values);
        for (size_t i = 0; i < m->num_key_values; i++) {
            tc_struct_begin(&t);
            tc_string_field(&t, 1, m->key_values[i].key);
            if (m->key_values[i].value)
                tc_string_field(&t, 2, m->key_values[i].value);
            tc_struct_end(&t);
        }
    }
    if (m->created_by)
        tc_string_field(&t, 6, m->created_by);
    if (m->num_column_orders) {
        tc_field(&t, 7, THRIFT_LIST);
        tc_list(&t, THRIFT_STRUCT, m->num_column_orders);
        for (size_t i = 0; i < m->num_column_orders; i++) {
            tc_struct_begin(&t);          // ColumnOrder union
            tc_empty_struct_field(&t, 1); // TYPE_ORDER: TypeDefinedOrder {}
            tc_struct_end(&t);
        }
    }
    tc_byte(&t, THRIFT_STOP);
    return t.rc;
}
