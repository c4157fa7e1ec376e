/* Unit tests for filter expressions: parsing, binding errors, and evaluation semantics
 * (nulls never pass, float32 compared exactly, int vs real, strings, len, min/max, in). */
#include "check.h"
#include "filter_expr.h"

#include <math.h>
#include <stdlib.h>

static struct column_info schema[] = {
    {"punsafe", COLUMN_FLOAT, true},  {"WIDTH", COLUMN_INT64, true},
    {"HEIGHT", COLUMN_INT32, true},   {"TEXT", COLUMN_STRING, true},
    {"LANGUAGE", COLUMN_STRING, true}, {"ok", COLUMN_BOOL, true},
    {"sim", COLUMN_DOUBLE, true},
};

static void fill(struct table_batch *b)
{
    // row: punsafe, WIDTH, HEIGHT, TEXT, LANGUAGE, ok, sim
    float p[] = {0.05f, 0.1f, 0.2f, 0.0f, 0.5f};
    int64_t w[] = {512, 300, 1024, 640, 100};
    int64_t h[] = {512, 600, 256, 480, 100};
    const char *text[] = {"a cat", "\xc3\xa9t\xc3\xa9", "", "dog and bird", NULL};
    const char *lang[] = {"en", "fr", "en", NULL, "de"};
    int ok[] = {1, 0, 1, 1, 0};
    for (int r = 0; r < 5; r++) {
        if (r == 3)
            column_append_null(&b->cols[0]);
        else
            column_append_real(&b->cols[0], p[r]);
        if (r == 4)
            column_append_null(&b->cols[1]);
        else
            column_append_int(&b->cols[1], w[r]);
        column_append_int(&b->cols[2], h[r]);
        if (text[r])
            column_append_string(&b->cols[3], text[r], strlen(text[r]));
        else
            column_append_null(&b->cols[3]);
        if (lang[r])
            column_append_string(&b->cols[4], lang[r], strlen(lang[r]));
        else
            column_append_null(&b->cols[4]);
        column_append_int(&b->cols[5], ok[r]);
        column_append_real(&b->cols[6], r == 2 ? NAN : 0.3 + r * 0.01);
    }
    b->nrows = 5;
}

// Evaluate `where` and return the keep mask as a string like "10100"; "ERR" on error.
static const char *eval(const char *where)
{
    static char out[8];
    struct filter_expr *f;
    struct pm_error err = PM_ERROR_INIT;
    const char *w[] = {where};
    if (filter_expr_parse(&f, w, 1, &err) != PM_OK)
        return "ERR";
    if (filter_expr_bind(f, schema, 7, &err) != PM_OK) {
        filter_expr_free(f);
        return "ERR";
    }
    struct table_batch b;
    table_batch_init(&b, schema, 7);
    fill(&b);
    uint8_t keep[5];
    filter_expr_eval(f, &b, keep, NULL);
    for (int i = 0; i < 5; i++)
        out[i] = keep[i] ? '1' : '0';
    out[5] = 0;
    table_batch_release(&b);
    filter_expr_free(f);
    return out;
}

static void test_semantics(void)
{
    CHECK_STR(eval("punsafe < 0.1"), "10000");
    // float32(0.1) = 0.100000001490116... is not < 0.1 and not <= 0.1 (exact comparison)
    CHECK_STR(eval("punsafe <= 0.1"), "10000");
    CHECK_STR(eval("punsafe >= 0.1"), "01101");
    CHECK_STR(eval("WIDTH >= 512"), "10110");
    CHECK_STR(eval("WIDTH > 511.5"), "10110");
    CHECK_STR(eval("min(WIDTH,HEIGHT) >= 300"), "11010");
    CHECK_STR(eval("max(WIDTH, HEIGHT) == 1024"), "00100");
    CHECK_STR(eval("len(TEXT) == 3"), "01000");
    CHECK_STR(eval("len(TEXT) >= 1"), "11010");
    CHECK_STR(eval("LANGUAGE in (en, 'de')"), "10101");
    CHECK_STR(eval("LANGUAGE != en"), "01001");
    CHECK_STR(eval("LANGUAGE == \"fr\""), "01000");
    CHECK_STR(eval("ok == true"), "10110");
    CHECK_STR(eval("ok != true"), "01001");
    CHECK_STR(eval("sim < 0.315"), "11000");
    CHECK_STR(eval("sim != 0.5"), "11111");
    CHECK_STR(eval("punsafe < 0.3 and WIDTH >= 512"), "10100");
    CHECK_STR(eval("punsafe < 0.3 && LANGUAGE == en"), "10100");
    CHECK_STR(eval("WIDTH in [300, 640]"), "01010");
}

static void test_errors(void)
{
    CHECK_STR(eval("nosuch < 1"), "ERR");
    CHECK_STR(eval("len(WIDTH) < 1"), "ERR");
    CHECK_STR(eval("WIDTH < abc"), "ERR");
    CHECK_STR(eval("WIDTH <"), "ERR");
    CHECK_STR(eval("WIDTH ! 3"), "ERR");
    CHECK_STR(eval("WIDTH < 3 and"), "ERR");
    CHECK_STR(eval("WIDTH < 3 4"), "ERR");
    CHECK_STR(eval("foo(WIDTH) < 3"), "ERR");
    CHECK_STR(eval("LANGUAGE in ()"), "ERR");
    CHECK_STR(eval("LANGUAGE == 'open"), "ERR");
    CHECK_STR(eval(""), "ERR");
    CHECK_STR(eval("ok < true"), "ERR");
    struct filter_expr *f;
    struct pm_error err = PM_ERROR_INIT;
    const char *w[] = {"WIDTH <= 'x"};
    CHECK(filter_expr_parse(&f, w, 1, &err) == PM_ERR_USAGE);
    CHECK(strstr(err.msg, "unterminated") != NULL);
}

static void test_counts(void)
{
    struct filter_expr *f;
    struct pm_error err = PM_ERROR_INIT;
    const char *w[] = {"punsafe < 0.3", "WIDTH >= 512"};
    CHECK(filter_expr_parse(&f, w, 2, &err) == PM_OK);
    CHECK(filter_expr_num_clauses(f) == 2);
    CHECK_STR(filter_expr_clause_text(f, 1), "WIDTH >= 512");
    CHECK(filter_expr_num_columns(f) == 2);
    CHECK(filter_expr_bind(f, schema, 7, &err) == PM_OK);
    struct table_batch b;
    table_batch_init(&b, schema, 7);
    fill(&b);
    uint64_t failed[2] = {0}, missing[2] = {0};
    struct filter_counts counts = {0, 0, 0, failed, missing};
    uint8_t keep[5];
    filter_expr_eval(f, &b, keep, &counts);
    CHECK(counts.rows == 5 && counts.kept == 2);
    CHECK(failed[0] == 2 && missing[0] == 1); // row 3 null, row 4 0.5
    CHECK(failed[1] == 2 && missing[1] == 1); // row 1 300, row 4 null
    CHECK(counts.missing == 2);
    table_batch_release(&b);
    filter_expr_free(f);
}

int main(void)
{
    test_semantics();
    test_errors();
    test_counts();
    return CHECK_DONE();
}
