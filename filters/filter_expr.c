#include "filter_expr.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum operand_kind { OPERAND_COLUMN, OPERAND_MIN, OPERAND_MAX, OPERAND_LEN };
enum cmp_op { CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_EQ, CMP_NE, CMP_IN };
enum eval_mode { EVAL_INT, EVAL_REAL, EVAL_STRING, EVAL_BOOL };

struct literal {
    char *text;     // as written (unquoted)
    bool quoted;    // was a quoted string
    bool is_number; // parses fully as a number
    bool is_int;    // ... and as an int64
    int64_t i;
    double d;
    int boolean; // -1: not a bool literal, else 0/1
};

struct clause {
    char *text;
    enum operand_kind kind;
    char *col[2];
    int colidx[2]; // bound batch column indices
    enum cmp_op op;
    struct literal *vals;
    size_t nvals;
    enum eval_mode mode; // set by bind
};

struct filter_expr {
    struct clause *clauses;
    size_t nclauses;
    char **columns; // distinct names
    size_t ncolumns;
};

// ---- tokenizer -------------------------------------------------------------------------

enum token_kind { TOK_END, TOK_WORD, TOK_STRING, TOK_OP, TOK_LPAREN, TOK_RPAREN, TOK_COMMA };

struct token {
    enum token_kind kind;
    char *text; // WORD, STRING, OP
    size_t pos;
};

struct tokens {
    struct token *v;
    size_t n, cap;
};

static void tokens_release(struct tokens *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].text);
    free(t->v);
}

static int tokens_push(struct tokens *t, enum token_kind kind, const char *s, size_t len,
                       size_t pos)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct token *v = realloc(t->v, cap * sizeof *v);
        if (!v)
            return PM_ERR_NOMEM;
        t->v = v;
        t->cap = cap;
    }
    char *text = NULL;
    if (s) {
        text = strndup(s, len);
        if (!text)
            return PM_ERR_NOMEM;
    }
    t->v[t->n++] = (struct token){kind, text, pos};
    return PM_OK;
}

static bool is_word_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-' || c == '+' ||
           c == '/' || c == ':' || (unsigned char)c >= 0x80;
}

static int tokenize(const char *s, struct tokens *t, struct pm_error *err)
{
    size_t i = 0, n = strlen(s);
    while (i < n) {
        char c = s[i];
        int rc = PM_OK;
        if (isspace((unsigned char)c)) {
            i++;
            continue;
        }
        if (c == '(' || c == '[') {
            rc = tokens_push(t, TOK_LPAREN, NULL, 0, i++);
        } else if (c == ')' || c == ']') {
            rc = tokens_push(t, TOK_RPAREN, NULL, 0, i++);
        } else if (c == ',') {
            rc = tokens_push(t, TOK_COMMA, NULL, 0, i++);
        } else if (c == '\'' || c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != c)
                j++;
            if (j >= n)
                return pm_error_set(err, PM_ERR_USAGE,
                                    "--where '%s': unterminated string at position %zu", s, i);
            rc = tokens_push(t, TOK_STRING, s + i + 1, j - i - 1, i);
            i = j + 1;
        } else if (c == '&' && i + 1 < n && s[i + 1] == '&') {
            rc = tokens_push(t, TOK_WORD, "and", 3, i);
            i += 2;
        } else if (strchr("<>=!", c)) {
            size_t len = (i + 1 < n && s[i + 1] == '=') ? 2 : 1;
            if (c == '!' && len == 1)
                return pm_error_set(err, PM_ERR_USAGE,
                                    "--where '%s': '!' must be followed by '=' (position %zu)",
                                    s, i);
            rc = tokens_push(t, TOK_OP, s + i, len, i);
            i += len;
        } else if (is_word_char(c)) {
            size_t j = i;
            while (j < n && is_word_char(s[j]))
                j++;
            rc = tokens_push(t, TOK_WORD, s + i, j - i, i);
            i = j;
        } else {
            return pm_error_set(err, PM_ERR_USAGE,
                                "--where '%s': unexpected character '%c' at position %zu", s, c,
                                i);
        }
        if (rc)
            return pm_error_set(err, rc, "out of memory parsing --where");
    }
    return tokens_push(t, TOK_END, NULL, 0, n) ? pm_error_set(err, PM_ERR_NOMEM, "out of memory")
                                               : PM_OK;
}

// ---- parser ----------------------------------------------------------------------------

static void literal_release(struct literal *l)
{
    free(l->text);
}

static void clause_release(struct clause *c)
{
    free(c->text);
    free(c->col[0]);
    free(c->col[1]);
    for (size_t i = 0; i < c->nvals; i++)
        literal_release(&c->vals[i]);
    free(c->vals);
}

void filter_expr_free(struct filter_expr *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nclauses; i++)
        clause_release(&f->clauses[i]);
    free(f->clauses);
    for (size_t i = 0; i < f->ncolumns; i++)
        free(f->columns[i]);
    free(f->columns);
    free(f);
}

static int literal_from_token(const struct token *tk, struct literal *l)
{
    memset(l, 0, sizeof *l);
    l->boolean = -1;
    l->text = strdup(tk->text);
    if (!l->text)
        return PM_ERR_NOMEM;
    l->quoted = tk->kind == TOK_STRING;
    if (l->quoted)
        return PM_OK;
    if (!strcasecmp(l->text, "true"))
        l->boolean = 1;
    else if (!strcasecmp(l->text, "false"))
        l->boolean = 0;
    char *end;
    errno = 0;
    double d = strtod(l->text, &end);
    if (*l->text && *end == '\0' && errno != ERANGE) {
        l->is_number = true;
        l->d = d;
        errno = 0;
        long long v = strtoll(l->text, &end, 10);
        if (*end == '\0' && errno != ERANGE) {
            l->is_int = true;
            l->i = v;
            if (v == 0 || v == 1)
                l->boolean = (int)v;
        }
    }
    return PM_OK;
}

static const char *op_text(enum cmp_op op)
{
    static const char *names[] = {"<", "<=", ">", ">=", "==", "!=", "in"};
    return names[op];
}

static bool is_column_name(const char *s)
{
    if (!*s || isdigit((unsigned char)*s) || *s == '-' || *s == '+')
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.')
            return false;
    return true;
}

// Parse one clause starting at tokens[*pos]; advances *pos past it.
static int parse_clause(const char *src, const struct tokens *t, size_t *pos, struct clause *c,
                        struct pm_error *err)
{
    memset(c, 0, sizeof *c);
    c->colidx[0] = c->colidx[1] = -1;
    size_t p = *pos;
    const struct token *tk = &t->v[p];
#define SYNTAX(what)                                                                           \
    pm_error_set(err, PM_ERR_USAGE, "--where '%s': %s at position %zu", src, what,            \
                 t->v[p].pos)
    if (tk->kind != TOK_WORD)
        return SYNTAX("expected a column name or min(), max(), len()");
    const char *fn = tk->text;
    int nargs = 0;
    if (t->v[p + 1].kind == TOK_LPAREN) {
        if (!strcasecmp(fn, "min")) {
            c->kind = OPERAND_MIN;
            nargs = 2;
        } else if (!strcasecmp(fn, "max")) {
            c->kind = OPERAND_MAX;
            nargs = 2;
        } else if (!strcasecmp(fn, "len")) {
            c->kind = OPERAND_LEN;
            nargs = 1;
        } else {
            return SYNTAX("unknown function (known: min, max, len)");
        }
        p += 2;
        for (int a = 0; a < nargs; a++) {
            if (a > 0) {
                if (t->v[p].kind != TOK_COMMA)
                    return SYNTAX("expected ','");
                p++;
            }
            if (t->v[p].kind != TOK_WORD || !is_column_name(t->v[p].text))
                return SYNTAX("expected a column name");
            c->col[a] = strdup(t->v[p].text);
            if (!c->col[a])
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            p++;
        }
        if (t->v[p].kind != TOK_RPAREN)
            return SYNTAX("expected ')'");
        p++;
    } else {
        if (!is_column_name(fn))
            return SYNTAX("expected a column name");
        c->kind = OPERAND_COLUMN;
        c->col[0] = strdup(fn);
        if (!c->col[0])
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        p++;
    }
    tk = &t->v[p];
    if (tk->kind == TOK_OP) {
        static const struct {
            const char *s;
            enum cmp_op op;
        } ops[] = {{"<", CMP_LT}, {"<=", CMP_LE}, {">", CMP_GT}, {">=", CMP_GE},
                   {"==", CMP_EQ}, {"=", CMP_EQ}, {"!=", CMP_NE}};
        bool found = false;
        for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
            if (!strcmp(tk->text, ops[i].s)) {
                c->op = ops[i].op;
                found = true;
            }
        if (!found)
            return SYNTAX("unknown operator");
        p++;
        tk = &t->v[p];
        if (tk->kind != TOK_WORD && tk->kind != TOK_STRING)
            return SYNTAX("expected a value");
        c->vals = calloc(1, sizeof *c->vals);
        if (!c->vals || literal_from_token(tk, &c->vals[0]))
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        c->nvals = 1;
        p++;
    } else if (tk->kind == TOK_WORD && !strcasecmp(tk->text, "in")) {
        c->op = CMP_IN;
        p++;
        if (t->v[p].kind != TOK_LPAREN)
            return SYNTAX("expected '(' or '[' after 'in'");
        p++;
        size_t cap = 0;
        while (t->v[p].kind != TOK_RPAREN) {
            if (c->nvals > 0) {
                if (t->v[p].kind != TOK_COMMA)
                    return SYNTAX("expected ',' or ')'");
                p++;
            }
            if (t->v[p].kind != TOK_WORD && t->v[p].kind != TOK_STRING)
                return SYNTAX("expected a value");
            if (c->nvals == cap) {
                cap = cap ? cap * 2 : 4;
                struct literal *v = realloc(c->vals, cap * sizeof *v);
                if (!v)
                    return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                c->vals = v;
            }
            if (literal_from_token(&t->v[p], &c->vals[c->nvals]))
                return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
            c->nvals++;
            p++;
        }
        if (c->nvals == 0)
            return SYNTAX("empty 'in' list");
        p++;
    } else {
        return SYNTAX("expected an operator (< <= > >= == != in)");
    }
#undef SYNTAX
    // normalised text
    struct bytebuf b;
    bytebuf_init(&b, 0);
    if (c->kind == OPERAND_COLUMN)
        bytebuf_append_str(&b, c->col[0]);
    else if (c->kind == OPERAND_LEN)
        bytebuf_printf(&b, "len(%s)", c->col[0]);
    else
        bytebuf_printf(&b, "%s(%s,%s)", c->kind == OPERAND_MIN ? "min" : "max", c->col[0],
                       c->col[1]);
    bytebuf_printf(&b, " %s ", op_text(c->op));
    if (c->op == CMP_IN)
        bytebuf_append_str(&b, "(");
    for (size_t i = 0; i < c->nvals; i++) {
        if (i)
            bytebuf_append_str(&b, ", ");
        if (c->vals[i].quoted)
            bytebuf_printf(&b, "'%s'", c->vals[i].text);
        else
            bytebuf_append_str(&b, c->vals[i].text);
    }
    if (c->op == CMP_IN)
        bytebuf_append_str(&b, ")");
    if (!b.data)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    c->text = b.data;
    *pos = p;
    return PM_OK;
}

static int add_column_name(struct filter_expr *f, const char *name)
{
    if (!name)
        return PM_OK;
    for (size_t i = 0; i < f->ncolumns; i++)
        if (!strcmp(f->columns[i], name))
            return PM_OK;
    char **v = realloc(f->columns, (f->ncolumns + 1) * sizeof *v);
    if (!v)
        return PM_ERR_NOMEM;
    f->columns = v;
    if (!(f->columns[f->ncolumns] = strdup(name)))
        return PM_ERR_NOMEM;
    f->ncolumns++;
    return PM_OK;
}

int filter_expr_parse(struct filter_expr **out, const char *const *where, size_t n,
                      struct pm_error *err)
{
    *out = NULL;
    struct filter_expr *f = calloc(1, sizeof *f);
    if (!f)
        return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
    for (size_t w = 0; w < n; w++) {
        struct tokens t = {0};
        int rc = tokenize(where[w], &t, err);
        size_t p = 0;
        while (rc == PM_OK) {
            if (t.v[p].kind == TOK_END) {
                if (p == 0)
                    rc = pm_error_set(err, PM_ERR_USAGE, "--where '%s': empty expression",
                                      where[w]);
                break;
            }
            struct clause *cl = realloc(f->clauses, (f->nclauses + 1) * sizeof *cl);
            if (!cl) {
                rc = pm_error_set(err, PM_ERR_NOMEM, "out of memory");
                break;
            }
            f->clauses = cl;
            rc = parse_clause(where[w], &t, &p, &f->clauses[f->nclauses], err);
            f->nclauses++; // released by filter_expr_free even when incomplete
            if (rc)
                break;
            if (t.v[p].kind == TOK_WORD && !strcasecmp(t.v[p].text, "and")) {
                p++;
                if (t.v[p].kind == TOK_END)
                    rc = pm_error_set(err, PM_ERR_USAGE, "--where '%s': nothing after 'and'",
                                      where[w]);
            } else if (t.v[p].kind != TOK_END) {
                rc = pm_error_set(err, PM_ERR_USAGE,
                                  "--where '%s': expected 'and' or the end at position %zu",
                                  where[w], t.v[p].pos);
            }
        }
        tokens_release(&t);
        if (rc) {
            filter_expr_free(f);
            return rc;
        }
    }
    for (size_t i = 0; i < f->nclauses; i++)
        if (add_column_name(f, f->clauses[i].col[0]) ||
            add_column_name(f, f->clauses[i].col[1])) {
            filter_expr_free(f);
            return pm_error_set(err, PM_ERR_NOMEM, "out of memory");
        }
    *out = f;
    return PM_OK;
}

size_t filter_expr_num_clauses(const struct filter_expr *f)
{
    return f->nclauses;
}

const char *filter_expr_clause_text(const struct filter_expr *f, size_t i)
{
    return i < f->nclauses ? f->clauses[i].text : NULL;
}

size_t filter_expr_num_columns(const struct filter_expr *f)
{
    return f->ncolumns;
}

const char *filter_expr_column(const struct filter_expr *f, size_t i)
{
    return i < f->ncolumns ? f->columns[i] : NULL;
}

// ---- binding ---------------------------------------------------------------------------

static bool type_is_int(enum column_type t)
{
    return t == COLUMN_INT32 || t == COLUMN_INT64;
}

int filter_expr_bind(struct filter_expr *f, const struct column_info *schema, size_t ncols,
                     struct pm_error *err)
{
    for (size_t i = 0; i < f->nclauses; i++) {
        struct clause *c = &f->clauses[i];
        enum column_type types[2] = {COLUMN_STRING, COLUMN_STRING};
        for (int a = 0; a < 2 && c->col[a]; a++) {
            c->colidx[a] = -1;
            for (size_t k = 0; k < ncols; k++)
                if (!strcmp(schema[k].name, c->col[a]))
                    c->colidx[a] = (int)k;
            if (c->colidx[a] < 0)
                return pm_error_set(err, PM_ERR_NOT_FOUND,
                                    "--where '%s': no column named '%s' in the input", c->text,
                                    c->col[a]);
            types[a] = schema[c->colidx[a]].type;
        }
        bool all_int = true, all_num = true, all_bool = true;
        for (size_t v = 0; v < c->nvals; v++) {
            all_int &= c->vals[v].is_int && !c->vals[v].quoted;
            all_num &= c->vals[v].is_number && !c->vals[v].quoted;
            all_bool &= c->vals[v].boolean >= 0 && !c->vals[v].quoted;
        }
        bool ordered = c->op != CMP_EQ && c->op != CMP_NE && c->op != CMP_IN;
        switch (c->kind) {
        case OPERAND_LEN:
            if (types[0] != COLUMN_STRING)
                return pm_error_set(err, PM_ERR_USAGE,
                                    "--where '%s': len() needs a string column; '%s' is %s",
                                    c->text, c->col[0], column_type_name(types[0]));
            if (!all_num)
                return pm_error_set(err, PM_ERR_USAGE, "--where '%s': len() compares to numbers",
                                    c->text);
            c->mode = all_int ? EVAL_INT : EVAL_REAL;
            break;
        case OPERAND_MIN:
        case OPERAND_MAX:
            for (int a = 0; a < 2; a++)
                if (!column_type_is_numeric(types[a]))
                    return pm_error_set(err, PM_ERR_USAGE,
                                        "--where '%s': min()/max() need numeric columns; '%s' "
                                        "is %s",
                                        c->text, c->col[a], column_type_name(types[a]));
            if (!all_num)
                return pm_error_set(err, PM_ERR_USAGE,
                                    "--where '%s': a numeric expression compares to numbers",
                                    c->text);
            c->mode = all_int && type_is_int(types[0]) && type_is_int(types[1]) ? EVAL_INT
                                                                                 : EVAL_REAL;
            break;
        case OPERAND_COLUMN:
            if (types[0] == COLUMN_STRING) {
                c->mode = EVAL_STRING;
            } else if (types[0] == COLUMN_BOOL) {
                if (!all_bool || ordered)
                    return pm_error_set(err, PM_ERR_USAGE,
                                        "--where '%s': bool column '%s' compares with ==, != or "
                                        "in to true/false",
                                        c->text, c->col[0]);
                c->mode = EVAL_BOOL;
            } else {
                if (!all_num)
                    return pm_error_set(err, PM_ERR_USAGE,
                                        "--where '%s': numeric column '%s' compares to numbers",
                                        c->text, c->col[0]);
                c->mode = all_int && type_is_int(types[0]) ? EVAL_INT : EVAL_REAL;
            }
            break;
        }
    }
    return PM_OK;
}

// ---- evaluation ------------------------------------------------------------------------

static int64_t utf8_length(const char *s, size_t n)
{
    int64_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += ((unsigned char)s[i] & 0xC0) != 0x80;
    return count;
}

static bool cmp_int(enum cmp_op op, int64_t a, const struct clause *c)
{
    int64_t b = c->vals[0].i;
    switch (op) {
    case CMP_LT: return a < b;
    case CMP_LE: return a <= b;
    case CMP_GT: return a > b;
    case CMP_GE: return a >= b;
    case CMP_EQ: return a == b;
    case CMP_NE: return a != b;
    case CMP_IN:
        for (size_t i = 0; i < c->nvals; i++)
            if (a == c->vals[i].i)
                return true;
        return false;
    }
    return false;
}

static bool cmp_real(enum cmp_op op, double a, const struct clause *c)
{
    double b = c->vals[0].d;
    switch (op) {
    case CMP_LT: return a < b;
    case CMP_LE: return a <= b;
    case CMP_GT: return a > b;
    case CMP_GE: return a >= b;
    case CMP_EQ: return a == b;
    case CMP_NE: return !(a == b);
    case CMP_IN:
        for (size_t i = 0; i < c->nvals; i++)
            if (a == c->vals[i].d)
                return true;
        return false;
    }
    return false;
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int r = memcmp(a, b, an < bn ? an : bn);
    return r ? r : (an > bn) - (an < bn);
}

static bool cmp_string(enum cmp_op op, const char *s, size_t n, const struct clause *c)
{
    if (op == CMP_IN) {
        for (size_t i = 0; i < c->nvals; i++)
            if (!bytes_cmp(s, n, c->vals[i].text, strlen(c->vals[i].text)))
                return true;
        return false;
    }
    int r = bytes_cmp(s, n, c->vals[0].text, strlen(c->vals[0].text));
    switch (op) {
    case CMP_LT: return r < 0;
    case CMP_LE: return r <= 0;
    case CMP_GT: return r > 0;
    case CMP_GE: return r >= 0;
    case CMP_EQ: return r == 0;
    case CMP_NE: return r != 0;
    case CMP_IN: break;
    }
    return false;
}

static double column_number(const struct column *col, size_t r)
{
    return col->reals ? col->reals[r] : (double)col->ints[r];
}

// Evaluate one clause on row r: 1 pass, 0 fail, -1 missing (null operand).
static int clause_eval(const struct clause *c, const struct table_batch *b, size_t r)
{
    const struct column *x = &b->cols[c->colidx[0]];
    if (!x->valid[r])
        return -1;
    switch (c->kind) {
    case OPERAND_COLUMN:
        switch (c->mode) {
        case EVAL_INT: return cmp_int(c->op, x->ints[r], c);
        case EVAL_REAL: return cmp_real(c->op, column_number(x, r), c);
        case EVAL_BOOL: {
            bool in = false;
            for (size_t i = 0; i < c->nvals; i++)
                in |= (x->ints[r] != 0) == (c->vals[i].boolean == 1);
            return c->op == CMP_NE ? (x->ints[r] != 0) != (c->vals[0].boolean == 1) : in;
        }
        case EVAL_STRING: {
            size_t n;
            const char *s = column_string(x, r, &n);
            return cmp_string(c->op, s, n, c);
        }
        }
        break;
    case OPERAND_LEN: {
        size_t n;
        const char *s = column_string(x, r, &n);
        int64_t len = utf8_length(s, n);
        return c->mode == EVAL_INT ? cmp_int(c->op, len, c) : cmp_real(c->op, (double)len, c);
    }
    case OPERAND_MIN:
    case OPERAND_MAX: {
        const struct column *y = &b->cols[c->colidx[1]];
        if (!y->valid[r])
            return -1;
        if (c->mode == EVAL_INT) {
            int64_t a = x->ints[r], v = y->ints[r];
            return cmp_int(c->op, (c->kind == OPERAND_MIN) == (a < v) ? a : v, c);
        }
        double a = column_number(x, r), v = column_number(y, r);
        double m = c->kind == OPERAND_MIN ? fmin(a, v) : fmax(a, v);
        if (isnan(a) || isnan(v))
            m = NAN; // pandas/pyarrow propagate NaN through min/max
        return cmp_real(c->op, m, c);
    }
    }
    return 0;
}

// Compare every row of a numeric array against the clause's first literal: res[r] = 1 pass,
// 0 fail, -1 null. One tight loop per operator so the compiler can vectorise it.
#define CMP_LOOP(EXPR_T, GET, LIT, OP)                                                        \
    for (size_t r = 0; r < n; r++) {                                                          \
        EXPR_T a_ = GET;                                                                      \
        res[r] = valid[r] ? (int8_t)(a_ OP LIT) : (int8_t)-1;                                 \
    }
#define CMP_SWITCH(EXPR_T, GET, LIT)                                                          \
    switch (c->op) {                                                                          \
    case CMP_LT: CMP_LOOP(EXPR_T, GET, LIT, <) return true;                                   \
    case CMP_LE: CMP_LOOP(EXPR_T, GET, LIT, <=) return true;                                  \
    case CMP_GT: CMP_LOOP(EXPR_T, GET, LIT, >) return true;                                   \
    case CMP_GE: CMP_LOOP(EXPR_T, GET, LIT, >=) return true;                                  \
    case CMP_EQ: CMP_LOOP(EXPR_T, GET, LIT, ==) return true;                                  \
    default: return false;                                                                    \
    }

// Fast paths for the common clause shapes (column or min/max of two columns against one
// number). Returns false when the clause needs the general row-by-row evaluation.
static bool clause_eval_fast(const struct clause *c, const struct table_batch *b, size_t n,
                             int8_t *res)
{
    const struct column *x = &b->cols[c->colidx[0]];
    if (c->kind == OPERAND_COLUMN && (c->mode == EVAL_REAL || c->mode == EVAL_INT)) {
        const uint8_t *valid = x->valid;
        if (c->mode == EVAL_INT) {
            const int64_t *v = x->ints, lit = c->vals[0].i;
            CMP_SWITCH(int64_t, v[r], lit)
        }
        const double lit = c->vals[0].d;
        if (x->reals) {
            const double *v = x->reals;
            CMP_SWITCH(double, v[r], lit)
        }
        const int64_t *v = x->ints;
        CMP_SWITCH(double, (double)v[r], lit)
    }
    if ((c->kind == OPERAND_MIN || c->kind == OPERAND_MAX) && c->mode == EVAL_INT) {
        const struct column *y = &b->cols[c->colidx[1]];
        const int64_t *u = x->ints, *v = y->ints, lit = c->vals[0].i;
        const uint8_t *vx = x->valid, *vy = y->valid;
        uint8_t *valid = malloc(n ? n : 1);
        if (!valid)
            return false;
        for (size_t r = 0; r < n; r++)
            valid[r] = vx[r] & vy[r];
        bool done = true;
        if (c->kind == OPERAND_MIN) {
            switch (c->op) {
            case CMP_LT: CMP_LOOP(int64_t, u[r] < v[r] ? u[r] : v[r], lit, <) break;
            case CMP_LE: CMP_LOOP(int64_t, u[r] < v[r] ? u[r] : v[r], lit, <=) break;
            case CMP_GT: CMP_LOOP(int64_t, u[r] < v[r] ? u[r] : v[r], lit, >) break;
            case CMP_GE: CMP_LOOP(int64_t, u[r] < v[r] ? u[r] : v[r], lit, >=) break;
            default: done = false;
            }
        } else {
            switch (c->op) {
            case CMP_LT: CMP_LOOP(int64_t, u[r] > v[r] ? u[r] : v[r], lit, <) break;
            case CMP_LE: CMP_LOOP(int64_t, u[r] > v[r] ? u[r] : v[r], lit, <=) break;
            case CMP_GT: CMP_LOOP(int64_t, u[r] > v[r] ? u[r] : v[r], lit, >) break;
            case CMP_GE: CMP_LOOP(int64_t, u[r] > v[r] ? u[r] : v[r], lit, >=) break;
            default: done = false;
            }
        }
        free(valid);
        return done;
    }
    return false;
}

void filter_expr_eval(const struct filter_expr *f, const struct table_batch *batch,
                      uint8_t *keep, struct filter_counts *counts)
{
    size_t n = batch->nrows;
    memset(keep, 1, n);
    uint8_t *missing = counts ? calloc(n ? n : 1, 1) : NULL;
    int8_t *res = malloc(n ? n : 1);
    for (size_t i = 0; i < f->nclauses; i++) {
        const struct clause *c = &f->clauses[i];
        uint64_t failed = 0, nmissing = 0;
        if (res && clause_eval_fast(c, batch, n, res)) {
            for (size_t r = 0; r < n; r++) {
                int v = res[r];
                keep[r] &= (uint8_t)(v == 1);
                failed += v != 1;
                nmissing += v < 0;
                if (missing)
                    missing[r] |= (uint8_t)(v < 0);
            }
        } else {
            for (size_t r = 0; r < n; r++) {
                int v = clause_eval(c, batch, r);
                if (v == 1)
                    continue;
                keep[r] = 0;
                failed++;
                if (v < 0) {
                    nmissing++;
                    if (missing)
                        missing[r] = 1;
                }
            }
        }
        if (counts) {
            counts->clause_failed[i] += failed;
            counts->clause_missing[i] += nmissing;
        }
    }
    free(res);
    if (counts) {
        counts->rows += n;
        for (size_t r = 0; r < n; r++) {
            counts->kept += keep[r];
            counts->missing += missing ? missing[r] : 0;
        }
        free(missing);
    }
}
