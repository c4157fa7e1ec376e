#include "parquet_thrift.h"

#include "parquet_format.h"

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

// Struct entry/exit with the depth bound.
static bool tr_struct_enter(struct tr *t)
{
    if (++t->depth > PQ_THRIFT_MAX_DEPTH) {
        tr_fail(t, PQ_THRIFT_INVALID);
        return false;
    }
    return !t->status;
}

#define FIELD_INT(field, type, getter)                                                             \
    do {                                                                                           \
        if (is_int_type(type))                                                                     \
            (field) = getter(t, type);                                                             \
        else                                                                                       \
            tr_skip(t, type, false);                                                               \
    } while (0)

static void decode_schema_element(struct tr *t, struct pq_schema_element *e)
{
    if (!tr_struct_enter(t))
        return;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        switch (id) {
        case 1:
            e->has_type = is_int_type(type);
            FIELD_INT(e->type, type, tr_i32);
            break;
        case 2:
            FIELD_INT(e->type_length, type, tr_i32);
            break;
        case 3:
            e->has_repetition = is_int_type(type);
            FIELD_INT(e->repetition, type, tr_i32);
            break;
        case 4:
            if (type == THRIFT_BINARY && !e->name) {
                size_t n;
                const uint8_t *s = tr_binary(t, &n);
                if (t->status)
                    break;
                e->name = malloc(n + 1);
                if (!e->name) {
                    tr_fail(t, PQ_THRIFT_NOMEM);
                    break;
                }
                memcpy(e->name, s, n);
                e->name[n] = '\0';
            } else {
                tr_skip(t, type, false);
            }
            break;
        case 5:
            e->has_num_children = is_int_type(type);
            FIELD_INT(e->num_children, type, tr_i32);
            break;
        case 6:
            e->has_converted_type = is_int_type(type);
            FIELD_INT(e->converted_type, type, tr_i32);
            break;
        default:
            tr_skip(t, type, false);
            break;
        }
    }
    t->depth--;
    if (!t->status && !e->name) {
        e->name = calloc(1, 1);
        if (!e->name)
            tr_fail(t, PQ_THRIFT_NOMEM);
    }
}

static void decode_column_meta(struct tr *t, struct pq_column_meta *m)
{
    if (!tr_struct_enter(t))
        return;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        switch (id) {
        case 1:
            FIELD_INT(m->type, type, tr_i32);
            break;
        case 2: {
            if (type != THRIFT_LIST || m->encodings) {
                tr_skip(t, type, false);
                break;
            }
            int et;
            size_t n = tr_list_begin(t, &et);
            if (!is_int_type(et)) {
                for (size_t i = 0; i < n && !t->status; i++)
                    tr_skip(t, et, true);
                break;
            }
            m->encodings = calloc(n ? n : 1, sizeof *m->encodings);
            if (!m->encodings) {
                tr_fail(t, PQ_THRIFT_NOMEM);
                break;
            }
            for (size_t i = 0; i < n && !t->status; i++)
                m->encodings[i] = tr_i32(t, et);
            m->num_encodings = t->status ? 0 : n;
            break;
        }
        case 4:
            FIELD_INT(m->codec, type, tr_i32);
            break;
        case 5:
            FIELD_INT(m->num_values, type, tr_i64);
            break;
        case 6:
            FIELD_INT(m->total_uncompressed_size, type, tr_i64);
            break;
        case 7:
            FIELD_INT(m->total_compressed_size, type, tr_i64);
            break;
        case 9:
            FIELD_INT(m->data_page_offset, type, tr_i64);
            break;
        case 11:
            m->has_dictionary_page_offset = is_int_type(type);
            FIELD_INT(m->dictionary_page_offset, type, tr_i64);
            break;
        default:
            tr_skip(t, type, false);
            break;
        }
    }
    t->depth--;
}

static void decode_column_chunk(struct tr *t, struct pq_column_chunk *c)
{
    if (!tr_struct_enter(t))
        return;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        if (id == 1) {
            c->has_file_path = true;
            tr_skip(t, type, false);
        } else if (id == 2) {
            FIELD_INT(c->file_offset, type, tr_i64);
        } else if (id == 3 && type == THRIFT_STRUCT && !c->has_meta) {
            c->has_meta = true;
            decode_column_meta(t, &c->meta);
        } else {
            tr_skip(t, type, false);
        }
    }
    t->depth--;
}

static void decode_row_group(struct tr *t, struct pq_row_group *g)
{
    if (!tr_struct_enter(t))
        return;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        if (id == 1 && type == THRIFT_LIST && !g->columns) {
            int et;
            size_t n = tr_list_begin(t, &et);
            if (et != THRIFT_STRUCT) {
                for (size_t i = 0; i < n && !t->status; i++)
                    tr_skip(t, et, true);
                continue;
            }
            g->columns = calloc(n ? n : 1, sizeof *g->columns);
            if (!g->columns) {
                tr_fail(t, PQ_THRIFT_NOMEM);
                break;
            }
            g->num_columns = n;
            for (size_t i = 0; i < n && !t->status; i++)
                decode_column_chunk(t, &g->columns[i]);
        } else if (id == 2) {
            FIELD_INT(g->total_byte_size, type, tr_i64);
        } else if (id == 3) {
            FIELD_INT(g->num_rows, type, tr_i64);
        } else {
            tr_skip(t, type, false);
        }
    }
    t->depth--;
}

int pq_file_meta_decode(struct pq_file_meta *m, const uint8_t *data, size_t size)
{
    memset(m, 0, sizeof *m);
    struct tr tt = {data, data + size, 0, 0}, *t = &tt;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        if (id == 1) {
            FIELD_INT(m->version, type, tr_i32);
        } else if (id == 2 && type == THRIFT_LIST && !m->schema) {
            int et;
            size_t n = tr_list_begin(t, &et);
            if (et != THRIFT_STRUCT) {
                for (size_t i = 0; i < n && !t->status; i++)
                    tr_skip(t, et, true);
                continue;
            }
            m->schema = calloc(n ? n : 1, sizeof *m->schema);
            if (!m->schema) {
                tr_fail(t, PQ_THRIFT_NOMEM);
                break;
            }
            m->num_schema = n;
            for (size_t i = 0; i < n && !t->status; i++)
                decode_schema_element(t, &m->schema[i]);
        } else if (id == 3) {
            FIELD_INT(m->num_rows, type, tr_i64);
        } else if (id == 4 && type == THRIFT_LIST && !m->row_groups) {
            int et;
            size_t n = tr_list_begin(t, &et);
            if (et != THRIFT_STRUCT) {
                for (size_t i = 0; i < n && !t->status; i++)
                    tr_skip(t, et, true);
                continue;
            }
            m->row_groups = calloc(n ? n : 1, sizeof *m->row_groups);
            if (!m->row_groups) {
                tr_fail(t, PQ_THRIFT_NOMEM);
                break;
            }
            m->num_row_groups = n;
            for (size_t i = 0; i < n && !t->status; i++)
                decode_row_group(t, &m->row_groups[i]);
        } else if (id == 8) {
            m->encrypted = true;
            tr_skip(t, type, false);
        } else {
            tr_skip(t, type, false);
        }
    }
    return t->status;
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

static void decode_data_page_header(struct tr *t, struct pq_data_page_header *h)
{
    if (!tr_struct_enter(t))
        return;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        switch (id) {
        case 1:
            FIELD_INT(h->num_values, type, tr_i32);
            break;
        case 2:
            FIELD_INT(h->encoding, type, tr_i32);
            break;
        case 3:
            FIELD_INT(h->def_level_encoding, type, tr_i32);
            break;
        case 4:
            FIELD_INT(h->rep_level_encoding, type, tr_i32);
            break;
        default:
            tr_skip(t, type, false);
            break;
        }
    }
    t->depth--;
}

static void decode_dict_page_header(struct tr *t, struct pq_dictionary_page_header *h)
{
    if (!tr_struct_enter(t))
        return;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        switch (id) {
        case 1:
            FIELD_INT(h->num_values, type, tr_i32);
            break;
        case 2:
            FIELD_INT(h->encoding, type, tr_i32);
            break;
        default:
            tr_skip(t, type, false);
            break;
        }
    }
    t->depth--;
}

static void decode_data_page_header_v2(struct tr *t, struct pq_data_page_header_v2 *h)
{
    if (!tr_struct_enter(t))
        return;
    h->is_compressed = true;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        switch (id) {
        case 1:
            FIELD_INT(h->num_values, type, tr_i32);
            break;
        case 2:
            FIELD_INT(h->num_nulls, type, tr_i32);
            break;
        case 3:
            FIELD_INT(h->num_rows, type, tr_i32);
            break;
        case 4:
            FIELD_INT(h->encoding, type, tr_i32);
            break;
        case 5:
            FIELD_INT(h->def_levels_byte_length, type, tr_i32);
            break;
        case 6:
            FIELD_INT(h->rep_levels_byte_length, type, tr_i32);
            break;
        case 7:
            if (type == THRIFT_BOOL_TRUE || type == THRIFT_BOOL_FALSE)
                h->is_compressed = type == THRIFT_BOOL_TRUE;
            else
                tr_skip(t, type, false);
            break;
        default:
            tr_skip(t, type, false);
            break;
        }
    }
    t->depth--;
}

int pq_page_header_decode(struct pq_page_header *h, const uint8_t *data, size_t size, size_t *used)
{
    memset(h, 0, sizeof *h);
    h->type = -1;
    struct tr tt = {data, data + size, 0, 0}, *t = &tt;
    int16_t last = 0;
    int type, id;
    while (tr_field(t, &last, &type, &id)) {
        if (id == 1) {
            FIELD_INT(h->type, type, tr_i32);
        } else if (id == 2) {
            FIELD_INT(h->uncompressed_page_size, type, tr_i32);
        } else if (id == 3) {
            FIELD_INT(h->compressed_page_size, type, tr_i32);
        } else if (id == 5 && type == THRIFT_STRUCT && !h->has_data) {
            h->has_data = true;
            decode_data_page_header(t, &h->data);
        } else if (id == 7 && type == THRIFT_STRUCT && !h->has_dict) {
            h->has_dict = true;
            decode_dict_page_header(t, &h->dict);
        } else if (id == 8 && type == THRIFT_STRUCT && !h->has_data_v2) {
            h->has_data_v2 = true;
            decode_data_page_header_v2(t, &h->data_v2);
        } else {
            tr_skip(t, type, false);
        }
    }
    *used = (size_t)(t->p - data);
    return t->status;
}
