#include "parquet_thrift.h"

#include "parquet_format.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

// A cursor over untrusted bytes. Every read checks `p < end`; the first failure sets
// `status` and all later reads return zeros, so callers check the status once.
struct tr {
    const uint8_t *p;
    const uint8_t *end;
    int status;
    int depth;
};

static void tr_fail(struct tr *t, int status)
{
    if (!t->status)
        t->status = status;
    t->p = t->end;
}

static uint8_t tr_byte(struct tr *t)
{
    if (t->p >= t->end) {
        tr_fail(t, PQ_THRIFT_TRUNCATED);
        return 0;
    }
    return *t->p++;
}

static uint64_t tr_varint(struct tr *t)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (t->p >= t->end) {
            tr_fail(t, PQ_THRIFT_TRUNCATED);
            return 0;
        }
        uint8_t b = *t->p++;
        if (shift == 63 && (b & 0x7e)) {
            tr_fail(t, PQ_THRIFT_INVALID);
            return 0;
        }
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    tr_fail(t, PQ_THRIFT_INVALID);
    return 0;
}

static int64_t tr_zigzag64(struct tr *t)
{
    uint64_t v = tr_varint(t);
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static int32_t tr_zigzag32(struct tr *t)
{
    int64_t v = tr_zigzag64(t);
    if (v < INT32_MIN || v > INT32_MAX) {
        tr_fail(t, PQ_THRIFT_INVALID);
        return 0;
    }
    return (int32_t)v;
}

static size_t tr_left(const struct tr *t)
{
    return (size_t)(t->end - t->p);
}

// A binary/string: sets *n and returns a pointer into the input (NULL on error).
static const uint8_t *tr_binary(struct tr *t, size_t *n)
{
    uint64_t len = tr_varint(t);
    *n = 0;
    if (t->status)
        return NULL;
    if (len > tr_left(t)) {
        tr_fail(t, PQ_THRIFT_TRUNCATED);
        return NULL;
    }
    const uint8_t *s = t->p;
    t->p += len;
    *n = (size_t)len;
    return s;
}

static void tr_skip(struct tr *t, int type, bool in_collection);

// List/set header: element type and size, the size checked against the bytes left
// (every element takes at least one byte).
static size_t tr_list_begin(struct tr *t, int *etype)
{
    uint8_t b = tr_byte(t);
    uint64_t n = b >> 4;
    *etype = b & 0x0f;
    if (n == 15)
        n = tr_varint(t);
    if (t->status)
        return 0;
    if (n > tr_left(t)) {
        tr_fail(t, PQ_THRIFT_TRUNCATED);
        return 0;
    }
    return (size_t)n;
}

static void tr_skip_struct(struct tr *t)
{
    if (++t->depth > PQ_THRIFT_MAX_DEPTH) {
        tr_fail(t, PQ_THRIFT_INVALID);
        return;
    }
    while (!t->status) {
        uint8_t b = tr_byte(t);
        if (t->status || b == THRIFT_STOP)
            break;
        if ((b >> 4) == 0)
            (void)tr_zigzag32(t); // long-form field id
        tr_skip(t, b & 0x0f, false);
    }
    t->depth--;
}

static void tr_skip(struct tr *t, int type, bool in_collection)
{
    if (t->status)
        return;
    switch (type) {
    case THRIFT_BOOL_TRUE:
    case THRIFT_BOOL_FALSE:
        if (in_collection)
            (void)tr_byte(t);
        break;
    case THRIFT_I8:
        (void)tr_byte(t);
        break;
    case THRIFT_I16:
    case THRIFT_I32:
    case THRIFT_I64:
        (void)tr_varint(t);
        break;
    case THRIFT_DOUBLE:
        if (tr_left(t) < 8)
            tr_fail(t, PQ_THRIFT_TRUNCATED);
        else
            t->p += 8;
        break;
    case THRIFT_BINARY: {
        size_t n;
        (void)tr_binary(t, &n);
        break;
    }
    case THRIFT_LIST:
    case THRIFT_SET: {
        if (++t->depth > PQ_THRIFT_MAX_DEPTH) {
            tr_fail(t, PQ_THRIFT_INVALID);
            return;
        }
        int et;
        size_t n = tr_list_begin(t, &et);
        for (size_t i = 0; i < n && !t->status; i++)
            tr_skip(t, et, true);
        t->depth--;
        break;
    }
    case THRIFT_MAP: {
        if (++t->depth > PQ_THRIFT_MAX_DEPTH) {
            tr_fail(t, PQ_THRIFT_INVALID);
            return;
        }
        uint64_t n = tr_varint(t);
        if (n > tr_left(t) / 2) {
            tr_fail(t, PQ_THRIFT_TRUNCATED);
            return;
        }
        if (n) {
            uint8_t kv = tr_byte(t);
            for (uint64_t i = 0; i < n && !t->status; i++) {
                tr_skip(t, kv >> 4, true);
                tr_skip(t, kv & 0x0f, true);
            }
        }
        t->depth--;
        break;
    }
    case THRIFT_STRUCT:
        tr_skip_struct(t);
        break;
    case 13: // UUID (newer Thrift)
        if (tr_left(t) < 16)
            tr_fail(t, PQ_THRIFT_TRUNCATED);
        else
            t->p += 16;
        break;
    default:
        tr_fail(t, PQ_THRIFT_INVALID);
        break;
    }
}

// Next field header of a struct: false at STOP (or on error). Tracks the last id for
// the short-form deltas.
static bool tr_field(struct tr *t, int16_t *last_id, int *type, int *id)
{
    uint8_t b = tr_byte(t);
    if (t->status || b == THRIFT_STOP)
        return false;
    *type = b & 0x0f;
    int delta = b >> 4;
    if (delta)
        *id = *last_id + delta;
    else
        *id = tr_zigzag32(t);
    *last_id = (int16_t)*id;
    return !t->status;
}

static bool is_int_type(int type)
{
    return type == THRIFT_I8 || type == THRIFT_I16 || type == THRIFT_I32 || type == THRIFT_I64;
}

static int32_t tr_i32(struct tr *t, int type)
{
    if (type == THRIFT_I8)
        return (int8_t)tr_byte(t);
    if (type == THRIFT_I64) {
        int64_t v = tr_zigzag64(t);
        if (v < INT32_MIN || v > INT32_MAX)
            tr_fail(t, PQ_THRIFT_INVALID);
        return (int32_t)v;
    }
    return tr_zigzag32(t);
}

static int64_t tr_i64(struct tr *t, int type)
{
    if (type == THRIFT_I8)
        return (int8_t)tr_byte(t);
    return tr_zigzag64(t);
}

// The structures are decoded from tables: one row per field the reader uses, giving
// its id, how to decode it and where it goes. Fields not in a table are skipped, and
// so is a field whose wire type does not fit its row (an integer row accepts any
// integer type; a struct or list row is decoded only the first time it appears).
enum field_kind {
    FK_I32,         // int32_t; `aux`: bool set to whether the wire type was an integer
    FK_I64,         // int64_t; `aux` as for FK_I32
    FK_BOOL,        // bool from a boolean field
    FK_PRESENT,     // only presence counts: `aux` bool set, the value skipped
    FK_STRING,      // char *: NUL-terminated copy of the first binary value
    FK_STRUCT,      // embedded struct `sub`, decoded once; `aux`: its bool has_ flag
    FK_STRUCT_LIST, // list<`sub`>: pointer at `off`, size_t count at `aux`; decoded once
    FK_I32_LIST,    // list<i32>: int32_t * at `off`, size_t count at `aux`; decoded once
};

#define NO_AUX SIZE_MAX

struct field_desc {
    int16_t id;
    uint8_t kind;
    size_t off;
    size_t aux;
    const struct struct_desc *sub;
};

struct struct_desc {
    const struct field_desc *fields;
    size_t nfields;
    size_t size;
};

// Rows of a table for the struct type S (#defined around each table).
#define FIELD(id, kind, f)                                                                         \
    {                                                                                              \
        id, kind, offsetof(S, f), NO_AUX, NULL                                                     \
    }
#define FIELD_HAS(id, kind, f, has)                                                                \
    {                                                                                              \
        id, kind, offsetof(S, f), offsetof(S, has), NULL                                           \
    }
#define FIELD_SUB(id, kind, f, aux, sub)                                                           \
    {                                                                                              \
        id, kind, offsetof(S, f), offsetof(S, aux), sub                                            \
    }
#define PRESENT(id, has)                                                                           \
    {                                                                                              \
        id, FK_PRESENT, offsetof(S, has), offsetof(S, has), NULL                                   \
    }
#define STRUCT_DESC(name, ...)                                                                     \
    static const struct field_desc name##_fields[] = {__VA_ARGS__};                                \
    static const struct struct_desc name = {                                                       \
        name##_fields, sizeof name##_fields / sizeof name##_fields[0], sizeof(S)}

static void decode_fields(struct tr *t, const struct struct_desc *d, void *obj);

static void *field_at(void *obj, size_t off)
{
    return (char *)obj + off;
}

static void set_aux(void *obj, const struct field_desc *f, bool v)
{
    if (f->aux != NO_AUX)
        *(bool *)field_at(obj, f->aux) = v;
}

// A nested struct, with the depth bound.
static void decode_struct(struct tr *t, const struct struct_desc *d, void *obj)
{
    if (++t->depth > PQ_THRIFT_MAX_DEPTH) {
        tr_fail(t, PQ_THRIFT_INVALID);
        return;
    }
    if (!t->status)
        decode_fields(t, d, obj);
    t->depth--;
}

static void decode_struct_list(struct tr *t, const struct field_desc *f, void *obj)
{
    int et;
    size_t n = tr_list_begin(t, &et);
    if (et != THRIFT_STRUCT) {
        for (size_t i = 0; i < n && !t->status; i++)
            tr_skip(t, et, true);
        return;
    }
    char *items = calloc(n ? n : 1, f->sub->size);
    if (!items) {
        tr_fail(t, PQ_THRIFT_NOMEM);
        return;
    }
    *(void **)field_at(obj, f->off) = items;
    *(size_t *)field_at(obj, f->aux) = n;
    for (size_t i = 0; i < n && !t->status; i++)
        decode_struct(t, f->sub, items + i * f->sub->size);
}

static void decode_i32_list(struct tr *t, const struct field_desc *f, void *obj)
{
    int et;
    size_t n = tr_list_begin(t, &et);
    if (!is_int_type(et)) {
        for (size_t i = 0; i < n && !t->status; i++)
            tr_skip(t, et, true);
        return;
    }
    int32_t *v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        tr_fail(t, PQ_THRIFT_NOMEM);
        return;
    }
    *(int32_t **)field_at(obj, f->off) = v;
    for (size_t i = 0; i < n && !t->status; i++)
        v[i] = tr_i32(t, et);
    *(size_t *)field_at(obj, f->aux) = t->status ? 0 : n;
}

static void decode_string(struct tr *t, char **out)
{
    size_t n;
    const uint8_t *s = tr_binary(t, &n);
    if (t->status)
        return;
    *out = malloc(n + 1);
    if (!*out) {
        tr_fail(t, PQ_THRIFT_NOMEM);
        return;
    }
    memcpy(*out, s, n);
    (*out)[n] = '\0';
}

// One field of type `type` described by f; false if its wire type does not fit (the
// caller skips it).
static bool decode_field(struct tr *t, const struct field_desc *f, int type, void *obj)
{
    void *p = field_at(obj, f->off);
    bool is_list = type == THRIFT_LIST;
    switch (f->kind) {
    case FK_I32:
    case FK_I64:
        set_aux(obj, f, is_int_type(type));
        if (!is_int_type(type))
            return false;
        if (f->kind == FK_I32)
            *(int32_t *)p = tr_i32(t, type);
        else
            *(int64_t *)p = tr_i64(t, type);
        return true;
    case FK_BOOL:
        if (type != THRIFT_BOOL_TRUE && type != THRIFT_BOOL_FALSE)
            return false;
        *(bool *)p = type == THRIFT_BOOL_TRUE;
        return true;
    case FK_PRESENT:
        set_aux(obj, f, true);
        return false;
    case FK_STRING:
        if (type != THRIFT_BINARY || *(char **)p)
            return false;
        decode_string(t, p);
        return true;
    case FK_STRUCT:
        if (type != THRIFT_STRUCT || *(bool *)field_at(obj, f->aux))
            return false;
        set_aux(obj, f, true);
        decode_struct(t, f->sub, p);
        return true;
    case FK_STRUCT_LIST:
        if (!is_list || *(void **)p)
            return false;
        decode_struct_list(t, f, obj);
        return true;
    case FK_I32_LIST:
        if (!is_list || *(void **)p)
            return false;
        decode_i32_list(t, f, obj);
        return true;
    }
    return false;
}

static void decode_fields(struct tr *t, const struct struct_desc *d, void *obj)
{
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        const struct field_desc *f = NULL;
        for (size_t i = 0; i < d->nfields && !f; i++)
            if (d->fields[i].id == id)
                f = &d->fields[i];
        if (!f || !decode_field(t, f, type, obj))
            tr_skip(t, type, false);
    }
}

#define S struct pq_schema_element
STRUCT_DESC(schema_element_desc, FIELD_HAS(1, FK_I32, type, has_type),
            FIELD(2, FK_I32, type_length), FIELD_HAS(3, FK_I32, repetition, has_repetition),
            FIELD(4, FK_STRING, name), FIELD_HAS(5, FK_I32, num_children, has_num_children),
            FIELD_HAS(6, FK_I32, converted_type, has_converted_type));
#undef S
#define S struct pq_column_meta
STRUCT_DESC(column_meta_desc, FIELD(1, FK_I32, type),
            FIELD_SUB(2, FK_I32_LIST, encodings, num_encodings, NULL), FIELD(4, FK_I32, codec),
            FIELD(5, FK_I64, num_values), FIELD(6, FK_I64, total_uncompressed_size),
            FIELD(7, FK_I64, total_compressed_size), FIELD(9, FK_I64, data_page_offset),
            FIELD_HAS(11, FK_I64, dictionary_page_offset, has_dictionary_page_offset));
#undef S
#define S struct pq_column_chunk
STRUCT_DESC(column_chunk_desc, PRESENT(1, has_file_path), FIELD(2, FK_I64, file_offset),
            FIELD_SUB(3, FK_STRUCT, meta, has_meta, &column_meta_desc));
#undef S
#define S struct pq_row_group
STRUCT_DESC(row_group_desc, FIELD_SUB(1, FK_STRUCT_LIST, columns, num_columns, &column_chunk_desc),
            FIELD(2, FK_I64, total_byte_size), FIELD(3, FK_I64, num_rows));
#undef S
#define S struct pq_file_meta
STRUCT_DESC(file_meta_desc, FIELD(1, FK_I32, version),
            FIELD_SUB(2, FK_STRUCT_LIST, schema, num_schema, &schema_element_desc),
            FIELD(3, FK_I64, num_rows),
            FIELD_SUB(4, FK_STRUCT_LIST, row_groups, num_row_groups, &row_group_desc),
            PRESENT(8, encrypted));
#undef S
#define S struct pq_data_page_header
STRUCT_DESC(data_page_header_desc, FIELD(1, FK_I32, num_values), FIELD(2, FK_I32, encoding),
            FIELD(3, FK_I32, def_level_encoding), FIELD(4, FK_I32, rep_level_encoding));
#undef S
#define S struct pq_dictionary_page_header
STRUCT_DESC(dict_page_header_desc, FIELD(1, FK_I32, num_values), FIELD(2, FK_I32, encoding));
#undef S
#define S struct pq_data_page_header_v2
STRUCT_DESC(data_page_header_v2_desc, FIELD(1, FK_I32, num_values), FIELD(2, FK_I32, num_nulls),
            FIELD(3, FK_I32, num_rows), FIELD(4, FK_I32, encoding),
            FIELD(5, FK_I32, def_levels_byte_length), FIELD(6, FK_I32, rep_levels_byte_length),
            FIELD(7, FK_BOOL, is_compressed));
#undef S
#define S struct pq_page_header
STRUCT_DESC(page_header_desc, FIELD(1, FK_I32, type), FIELD(2, FK_I32, uncompressed_page_size),
            FIELD(3, FK_I32, compressed_page_size),
            FIELD_SUB(5, FK_STRUCT, data, has_data, &data_page_header_desc),
            FIELD_SUB(7, FK_STRUCT, dict, has_dict, &dict_page_header_desc),
            FIELD_SUB(8, FK_STRUCT, data_v2, has_data_v2, &data_page_header_v2_desc));
#undef S

int pq_file_meta_decode(struct pq_file_meta *m, const uint8_t *data, size_t size)
{
    memset(m, 0, sizeof *m);
    struct tr t = {data, data + size, 0, 0};
    decode_fields(&t, &file_meta_desc, m);
    // A schema element without a name gets "".
    for (size_t i = 0; i < m->num_schema && !t.status; i++)
        if (!m->schema[i].name && !(m->schema[i].name = calloc(1, 1)))
            tr_fail(&t, PQ_THRIFT_NOMEM);
    return t.status;
}

void pq_file_meta_release(struct pq_file_meta *m)
{
    if (!m)
        return;
    if (m->schema)
        for (size_t i = 0; i < m->num_schema; i++)
            free(m->schema[i].name);
    free(m->schema);
    if (m->row_groups) {
        for (size_t i = 0; i < m->num_row_groups; i++) {
            struct pq_row_group *g = &m->row_groups[i];
            if (g->columns)
                for (size_t j = 0; j < g->num_columns; j++)
                    free(g->columns[j].meta.encodings);
            free(g->columns);
        }
    }
    free(m->row_groups);
    memset(m, 0, sizeof *m);
}

int pq_page_header_decode(struct pq_page_header *h, const uint8_t *data, size_t size, size_t *used)
{
    memset(h, 0, sizeof *h);
    h->type = -1;
    h->data_v2.is_compressed = true;
    struct tr t = {data, data + size, 0, 0};
    decode_fields(&t, &page_header_desc, h);
    *used = (size_t)(t.p - data);
    return t.status;
}
