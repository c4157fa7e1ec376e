/*
 * pixelmill run — a pipeline file (INI, parsed with libinih) naming the stages to run in
 * order and their options. Each stage section becomes the stage's command line
 * (`key = value` -> `--key value`), the stages run one after the other in this process
 * (and this MPI job), a stage whose output is already complete is skipped, and the stage
 * that was interrupted resumes, as every stage resumes from its own output on a rerun.
 *
 * Completion is what each stage itself writes last (no second bookkeeping):
 *   download  DATASET/dataset.json          dedupe  DATASET/_dedupe/summary.json listing
 *   filter    DATASET/_views/VIEW/view.json         every method asked for
 *   pack      OUTPUT/dataset.json           train   CKDIR/latest at step >= --steps
 * A stage stopped by a signal exits 75 and so does `run`; a stop signal that arrives while
 * a stage that does not poll for it runs (dedupe, filter) stops `run` after that stage.
 * Format and example: docs/operators.md, cluster/pipelines/laion-demo.ini.
 */
#define _GNU_SOURCE // asprintf
#include "commands.h"
#include "pm_error.h"
#include "pm_log.h"
#include "pm_mpi.h"
#include "pm_signal.h"

#include <errno.h>
#include <stdarg.h>
#include <ini.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: pixelmill run PIPELINE.ini [--only STAGE] [--list] [--dry-run]\n"
    "\n"
    "Run the stages of a pipeline file in order: [download] [dedupe] [filter] [pack]\n"
    "[train] sections (each at most once, in the order of the file), keys = the stage's\n"
    "long options without the dashes (`where = punsafe < 0.5`; flags take true/false;\n"
    "repeat a key to repeat an option), and a [pipeline] section with `dataset = DIR`,\n"
    "the dataset that download writes and dedupe, filter and pack read. pack reads\n"
    "DATASET:VIEW (the [filter] view) unless `source` is given; train reads the [pack]\n"
    "output unless `data` is given, and always resumes (--resume auto).\n"
    "\n"
    "A stage whose output is complete is skipped (download, pack: dataset.json; dedupe:\n"
    "_dedupe/summary.json; filter: the view's view.json; train: a checkpoint at --steps);\n"
    "delete that output to run it again. The interrupted stage resumes where it stopped.\n"
    "\n"
    "  --only STAGE  run only this stage (the stages before it must be complete)\n"
    "  --list        print the stage names in order, one a line, and exit\n"
    "  --dry-run     print each stage's command line and whether it is complete\n"
    "\n"
    "Exit status: 0 done, 1 failed, 2 usage or pipeline file error, 75 interrupted by a\n"
    "signal (run the same command again to resume).\n";

enum opt_kind {
    OPT_VALUE,  /* --key value, at most once */
    OPT_REPEAT, /* --key value, repeatable */
    OPT_FLAG,   /* --key when true */
    OPT_OWN,    /* read by run itself, not passed on */
};

struct stage_opt {
    const char *name;
    enum opt_kind kind;
};

enum stage_id { ST_DOWNLOAD, ST_DEDUPE, ST_FILTER, ST_PACK, ST_TRAIN, ST_COUNT };

#define END                                                                                        \
    {                                                                                              \
        NULL, OPT_VALUE                                                                            \
    }
/*
 * The keys of each stage's section: a command with a getopt table (download, pack) gives
 * its long options (less --help and those in `skip`; `repeat` lists the repeatable ones),
 * plus the keys in `opts`; the others list theirs in `opts`, as in their --help
 * (tests/test_pipeline_run.py checks that every option of --help is a key).
 */
static const struct stage_opt dedupe_opts[] = {{"by", OPT_REPEAT},
                                               {"hamming", OPT_VALUE},
                                               {"keep", OPT_VALUE},
                                               {"memory-limit", OPT_VALUE},
                                               {"report", OPT_VALUE},
                                               {"json", OPT_FLAG},
                                               END};
static const struct stage_opt filter_opts[] = {
    {"where", OPT_REPEAT}, {"dedupe", OPT_VALUE}, {"view", OPT_VALUE}, {"json", OPT_FLAG}, END};
static const struct stage_opt pack_opts[] = {{"source", OPT_OWN}, END};
static const struct stage_opt train_opts[] = {{"data", OPT_VALUE},
                                              {"model", OPT_VALUE},
                                              {"steps", OPT_VALUE},
                                              {"batch-size", OPT_VALUE},
                                              {"lr", OPT_VALUE},
                                              {"weight-decay", OPT_VALUE},
                                              {"ema-decay", OPT_VALUE},
                                              {"seed", OPT_VALUE},
                                              {"threads", OPT_VALUE},
                                              {"loader-threads", OPT_VALUE},
                                              {"device", OPT_VALUE},
                                              {"checkpoint-dir", OPT_VALUE},
                                              {"checkpoint-every", OPT_VALUE},
                                              {"keep", OPT_VALUE},
                                              {"metrics-file", OPT_VALUE},
                                              {"log-every", OPT_VALUE},
                                              {"eval-data", OPT_VALUE},
                                              {"eval-batches", OPT_VALUE},
                                              {"log-keys", OPT_VALUE},
                                              {"precision", OPT_VALUE},
                                              END};
#undef END

struct stage_def {
    const char *name;
    int (*fn)(int argc, char **argv, const struct pm_mpi *mpi);
    const struct stage_opt *opts;
    const struct option *getopts;
    const char *const *repeat; /* getopts that may be given more than once */
    const char *const *skip;   /* getopts that are no keys: run sets them */
};

static const char *const download_repeat[] = {"input", "where", "allow-address", NULL};
static const char *const download_skip[] = {"output", NULL};
static const char *const none[] = {NULL};

static const struct stage_def stage_defs[ST_COUNT] = {
    {"download", cmd_download, NULL, cmd_download_options, download_repeat, download_skip},
    {"dedupe", cmd_dedupe, dedupe_opts, NULL, none, none},
    {"filter", cmd_filter, filter_opts, NULL, none, none},
    {"pack", cmd_pack, pack_opts, cmd_pack_options, none, none},
    {"train", cmd_train, train_opts, NULL, none, none},
};

static bool name_in(const char *const *list, const char *name)
{
    for (; *list; list++)
        if (!strcmp(*list, name))
            return true;
    return false;
}

// The key `name` of stage d's section, if it has one.
static bool stage_opt_find(const struct stage_def *d, const char *name, struct stage_opt *out)
{
    for (const struct stage_opt *o = d->opts; o && o->name; o++)
        if (!strcmp(o->name, name)) {
            *out = *o;
            return true;
        }
    for (const struct option *g = d->getopts; g && g->name; g++)
        if (!strcmp(g->name, name) && strcmp(name, "help") != 0 && !name_in(d->skip, name)) {
            out->name = g->name;
            out->kind = g->has_arg == no_argument  ? OPT_FLAG
                        : name_in(d->repeat, name) ? OPT_REPEAT
                                                   : OPT_VALUE;
            return true;
        }
    return false;
}

struct kv {
    struct stage_opt opt;
    char *value;
    int line;
};

struct section {
    bool present;
    int line;  /* of the [header] */
    int order; /* position among the stage sections */
    struct kv *kv;
    size_t nkv;
};

#define MAX_ERR 512

struct pipeline {
    const char *path;
    char *dataset; /* [pipeline] dataset */
    int dataset_line;
    struct section st[ST_COUNT];
    int order[ST_COUNT]; /* stage ids in file order */
    int nstages;
    /* parsing state */
    int line;
    int cur;       /* stage id of the current section, -1 [pipeline], -2 none yet */
    bool too_long; /* a line did not fit libinih's line buffer */
    bool key_seen; /* a key since the last section header (indented lines continue it) */
    int err_line;  /* first error found by the handler or the reader, 0 if none */
    char err[MAX_ERR];
};

static void pipeline_release(struct pipeline *p)
{
    free(p->dataset);
    for (int s = 0; s < ST_COUNT; s++) {
        for (size_t i = 0; i < p->st[s].nkv; i++)
            free(p->st[s].kv[i].value);
        free(p->st[s].kv);
    }
}

__attribute__((format(printf, 3, 4))) static void pipe_error(struct pipeline *p, int line,
                                                             const char *fmt, ...)
{
    if (p->err_line)
        return;
    p->err_line = line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, sizeof p->err, fmt, ap);
    va_end(ap);
}

static int stage_find(const char *name)
{
    for (int s = 0; s < ST_COUNT; s++)
        if (!strcmp(stage_defs[s].name, name))
            return s;
    return -1;
}

// A section header seen by the reader (libinih as packaged calls the handler only for
// keys, so empty sections and their line numbers are tracked here).
static void section_start(struct pipeline *p, const char *name)
{
    p->key_seen = false;
    if (!strcmp(name, "pipeline")) {
        p->cur = -1;
        return;
    }
    int s = stage_find(name);
    if (s < 0) {
        p->cur = -3;
        pipe_error(p, p->line,
                   "unknown section [%s]; sections are [pipeline], [download], [dedupe], "
                   "[filter], [pack] and [train]",
                   name);
        return;
    }
    if (p->st[s].present) {
        pipe_error(p, p->line, "section [%s] given twice (first at line %d)", name, p->st[s].line);
        p->cur = -3;
        return;
    }
    p->st[s].present = true;
    p->st[s].line = p->line;
    p->st[s].order = p->nstages;
    p->order[p->nstages++] = s;
    p->cur = s;
}

struct reader {
    FILE *f;
    struct pipeline *p;
};

// libinih's line reader: fgets plus line counting and section tracking.
static char *read_line(char *str, int num, void *stream)
{
    struct reader *r = stream;
    struct pipeline *p = r->p;
    if (!fgets(str, num, r->f))
        return NULL;
    p->line++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(r->f)) {
        pipe_error(p, p->line,
                   "line longer than %d characters (continue a value on an "
                   "indented line, or repeat a repeatable key)",
                   num - 2);
        p->too_long = true;
        return NULL;
    }
    const char *s = str;
    if (p->line == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
        s += 3; // a UTF-8 byte order mark, which libinih skips too
    const char *line = s;
    while (*s == ' ' || *s == '\t')
        s++;
    // as in libinih, an indented line after a key continues its value
    if (*s == '[' && !(s > line && p->key_seen)) {
        const char *e = strchr(s, ']');
        if (e) {
            char name[64];
            size_t l = (size_t)(e - s - 1);
            while (l && (s[1] == ' ' || s[1] == '\t'))
                s++, l--;
            while (l && (s[l] == ' ' || s[l] == '\t'))
                l--;
            if (l >= sizeof name)
                l = sizeof name - 1;
            memcpy(name, s + 1, l);
            name[l] = '\0';
            section_start(p, name);
        }
    }
    return str;
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i]))
            return *out = true, true;
        if (!strcasecmp(v, no[i]))
            return *out = false, true;
    }
    return false;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    (void)section; // the reader tracked it, with its line
    struct pipeline *p = user;
    p->key_seen = true;
    if (p->cur == -3)
        return 1; // the section's error is reported already
    if (p->cur == -2) {
        pipe_error(p, p->line, "'%s' outside a section; start with [pipeline]", name);
        return 0;
    }
    if (p->cur == -1) {
        if (strcmp(name, "dataset") != 0) {
            pipe_error(p, p->line, "unknown key '%s' in [pipeline] (known: dataset)", name);
            return 0;
        }
        if (p->dataset) {
            pipe_error(p, p->line, "'dataset' given twice (first at line %d)", p->dataset_line);
            return 0;
        }
        if (!*value) {
            pipe_error(p, p->line, "'dataset' is empty");
            return 0;
        }
        p->dataset = strdup(value);
        p->dataset_line = p->line;
        return p->dataset != NULL;
    }
    const struct stage_def *d = &stage_defs[p->cur];
    struct stage_opt o;
    if (!stage_opt_find(d, name, &o)) {
        if (p->cur == ST_DOWNLOAD && !strcmp(name, "output"))
            pipe_error(p, p->line,
                       "[download] writes the [pipeline] dataset; set "
                       "'dataset' there instead of 'output'");
        else if (p->cur == ST_TRAIN && !strcmp(name, "resume"))
            pipe_error(p, p->line, "[train] always resumes (--resume auto); remove 'resume'");
        else
            pipe_error(p, p->line, "unknown key '%s' in [%s]; see 'pixelmill %s --help'", name,
                       d->name, d->name);
        return 0;
    }
    struct section *sec = &p->st[p->cur];
    if (o.kind != OPT_REPEAT)
        for (size_t i = 0; i < sec->nkv; i++)
            if (!strcmp(sec->kv[i].opt.name, o.name)) {
                pipe_error(p, p->line, "'%s' given twice in [%s] (first at line %d)", name, d->name,
                           sec->kv[i].line);
                return 0;
            }
    bool b;
    if (o.kind == OPT_FLAG && !parse_bool(value, &b)) {
        pipe_error(p, p->line, "'%s' is a flag: true or false, not '%s'", name, value);
        return 0;
    }
    if (o.kind != OPT_FLAG && !*value) {
        pipe_error(p, p->line, "'%s' has no value", name);
        return 0;
    }
    struct kv *n = realloc(sec->kv, (sec->nkv + 1) * sizeof *n);
    if (!n)
        return 0;
    sec->kv = n;
    n[sec->nkv] = (struct kv){o, strdup(value), p->line};
    if (!n[sec->nkv].value)
        return 0;
    sec->nkv++;
    return 1;
}

static const char *kv_get(const struct section *sec, const char *name)
{
    for (size_t i = 0; i < sec->nkv; i++)
        if (!strcmp(sec->kv[i].opt.name, name))
            return sec->kv[i].value;
    return NULL;
}

// Reads and checks the file; on error prints "FILE:LINE: message" and returns PM_EXIT_USAGE.
static int pipeline_load(struct pipeline *p, const char *path, int rank)
{
    memset(p, 0, sizeof *p);
    p->path = path;
    p->cur = -2;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (rank == 0)
            pm_log_error("run: cannot open '%s': %s", path, strerror(errno));
        return PM_EXIT_USAGE;
    }
    struct reader r = {f, p};
    int rc = ini_parse_stream(read_line, &r, on_key, p);
    bool read_err = ferror(f);
    fclose(f);
    if (read_err) {
        if (rank == 0)
            pm_log_error("run: error reading '%s'", path);
        return PM_EXIT_USAGE;
    }
    if (rc < 0) {
        if (rank == 0)
            pm_log_error("run: %s: out of memory", path);
        return PM_EXIT_USAGE;
    }
    // libinih reports its own syntax errors by line; the first error of either kind wins
    if (rc > 0 && (!p->err_line || rc < p->err_line)) {
        p->err_line = 0;
        pipe_error(p, rc, "syntax error (expected [section], key = value or a comment)");
    }
    if (!p->err_line && !p->nstages)
        pipe_error(p, p->line ? p->line : 1,
                   "no stage sections ([download], [dedupe], "
                   "[filter], [pack], [train])");
    // cross-section requirements, reported at the section that needs them
    for (int i = 0; i < p->nstages && !p->err_line; i++) {
        int s = p->order[i];
        struct section *sec = &p->st[s];
        if (s != ST_TRAIN && !p->dataset && !(s == ST_PACK && kv_get(sec, "source")))
            pipe_error(p, sec->line, "[%s] needs 'dataset' in [pipeline]", stage_defs[s].name);
        else if (s == ST_DOWNLOAD && !kv_get(sec, "input"))
            pipe_error(p, sec->line, "[download] needs 'input'");
        else if (s == ST_FILTER && !kv_get(sec, "view"))
            pipe_error(p, sec->line, "[filter] needs 'view' (the pipeline filters datasets)");
        else if (s == ST_FILTER && !kv_get(sec, "where") && !kv_get(sec, "dedupe"))
            pipe_error(p, sec->line, "[filter] needs 'where' or 'dedupe'");
        else if (s == ST_PACK && !kv_get(sec, "output"))
            pipe_error(p, sec->line, "[pack] needs 'output'");
        else if (s == ST_TRAIN && !kv_get(sec, "checkpoint-dir"))
            pipe_error(p, sec->line, "[train] needs 'checkpoint-dir'");
        else if (s == ST_TRAIN && !kv_get(sec, "steps"))
            pipe_error(p, sec->line, "[train] needs 'steps'");
        else if (s == ST_TRAIN && !kv_get(sec, "data") && !p->st[ST_PACK].present && !p->dataset)
            pipe_error(p, sec->line, "[train] needs 'data', a [pack] section or 'dataset'");
    }
    if (p->err_line) {
        if (rank == 0)
            pm_log_error("%s:%d: %s", path, p->err_line, p->err);
        return PM_EXIT_USAGE;
    }
    return -1;
}

/* A stage's command line, built from its section. */
struct cmdline {
    char **argv;
    int argc;
    char **owned; /* strings built here */
    int nowned;
    char done_path[4096]; /* the file whose presence marks completion */
};

static void cmdline_release(struct cmdline *c)
{
    free(c->argv);
    for (int i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    free(c->owned);
}

static char *own(struct cmdline *c, char *s)
{
    if (s)
        c->owned[c->nowned++] = s;
    return s;
}

static char *join2(const char *a, const char *sep, const char *b)
{
    char *s;
    return asprintf(&s, "%s%s%s", a, sep, b) < 0 ? NULL : s;
}

// Builds argv (argv[0] = the stage name) and the completion marker path.
static int cmdline_build(const struct pipeline *p, int s, struct cmdline *c)
{
    memset(c, 0, sizeof *c);
    const struct section *sec = &p->st[s];
    c->argv = calloc(2 * sec->nkv + 8, sizeof *c->argv);
    c->owned = calloc(sec->nkv + 2, sizeof *c->owned);
    if (!c->argv || !c->owned)
        return PM_ERR_NOMEM;
    c->argv[c->argc++] = (char *)stage_defs[s].name;
    const char *fview = p->st[ST_FILTER].present ? kv_get(&p->st[ST_FILTER], "view") : NULL;
    switch (s) {
    case ST_DOWNLOAD:
        c->argv[c->argc++] = "--output";
        c->argv[c->argc++] = p->dataset;
        snprintf(c->done_path, sizeof c->done_path, "%s/dataset.json", p->dataset);
        break;
    case ST_DEDUPE:
        c->argv[c->argc++] = p->dataset;
        snprintf(c->done_path, sizeof c->done_path, "%s/_dedupe/summary.json", p->dataset);
        break;
    case ST_FILTER:
        c->argv[c->argc++] = p->dataset;
        snprintf(c->done_path, sizeof c->done_path, "%s/_views/%s/view.json", p->dataset,
                 kv_get(sec, "view"));
        break;
    case ST_PACK: {
        const char *src = kv_get(sec, "source");
        if (!src && fview && !(src = own(c, join2(p->dataset, ":", fview))))
            return PM_ERR_NOMEM;
        c->argv[c->argc++] = (char *)(src ? src : p->dataset);
        snprintf(c->done_path, sizeof c->done_path, "%s/dataset.json", kv_get(sec, "output"));
        break;
    }
    case ST_TRAIN: {
        const char *data = kv_get(sec, "data");
        if (!data && p->st[ST_PACK].present)
            data = kv_get(&p->st[ST_PACK], "output");
        if (!data && fview && !(data = own(c, join2(p->dataset, ":", fview))))
            return PM_ERR_NOMEM;
        if (!data)
            data = p->dataset;
        if (!kv_get(sec, "data")) {
            c->argv[c->argc++] = "--data";
            c->argv[c->argc++] = (char *)data;
        }
        c->argv[c->argc++] = "--resume";
        c->argv[c->argc++] = "auto";
        snprintf(c->done_path, sizeof c->done_path, "%s/latest", kv_get(sec, "checkpoint-dir"));
        break;
    }
    default:
        break;
    }
    for (size_t i = 0; i < sec->nkv; i++) {
        const struct kv *kv = &sec->kv[i];
        if (kv->opt.kind == OPT_OWN)
            continue;
        bool on = true;
        if (kv->opt.kind == OPT_FLAG && (parse_bool(kv->value, &on), !on))
            continue;
        char *opt = own(c, join2("--", "", kv->opt.name));
        if (!opt)
            return PM_ERR_NOMEM;
        c->argv[c->argc++] = opt;
        if (kv->opt.kind != OPT_FLAG)
            c->argv[c->argc++] = kv->value;
    }
    c->argv[c->argc] = NULL;
    return PM_OK;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// Whether stage s's output is complete (rank 0 decides; the file system may lag elsewhere).
static bool stage_complete(const struct pipeline *p, int s, const struct cmdline *c, char *why,
                           size_t whysize)
{
    const struct section *sec = &p->st[s];
    if (!strncmp(c->done_path, "s3://", 5)) {
        snprintf(why, whysize, "on S3: the stage resumes from what is there");
        return false;
    }
    if (s == ST_TRAIN) {
        FILE *f = fopen(c->done_path, "r");
        char buf[64] = "";
        if (!f) {
            snprintf(why, whysize, "no checkpoint (%s)", c->done_path);
            return false;
        }
        bool got = fgets(buf, sizeof buf, f) != NULL;
        fclose(f);
        unsigned long long step = 0, want = strtoull(kv_get(sec, "steps"), NULL, 10);
        if (!got || sscanf(buf, "step-%llu", &step) != 1) {
            snprintf(why, whysize, "%s unreadable", c->done_path);
            return false;
        }
        snprintf(why, whysize, "%s: step %llu of %llu", c->done_path, step, want);
        return step >= want;
    }
    if (!file_exists(c->done_path)) {
        snprintf(why, whysize, "no %s", c->done_path);
        return false;
    }
    if (s == ST_DEDUPE) {
        // every method asked for (default: all three) is in the summary
        json_error_t je;
        json_t *doc = json_load_file(c->done_path, 0, &je);
        json_t *ms = json_object_get(doc, "methods");
        const char *all[] = {"url", "content", "phash"};
        bool ok = json_is_object(ms);
        bool any_by = false;
        for (size_t i = 0; i < sec->nkv && ok; i++) {
            if (strcmp(sec->kv[i].opt.name, "by") != 0)
                continue;
            any_by = true;
            char *list = strdup(sec->kv[i].value);
            char *save = NULL;
            for (char *t = list ? strtok_r(list, ", ", &save) : NULL; t && ok;
                 t = strtok_r(NULL, ", ", &save))
                ok = json_object_get(ms, t) != NULL;
            free(list);
        }
        for (size_t i = 0; i < 3 && ok && !any_by; i++)
            ok = json_object_get(ms, all[i]) != NULL;
        json_decref(doc);
        snprintf(why, whysize, "%s %s", c->done_path,
                 ok ? "lists every method" : "lacks a method asked for");
        return ok;
    }
    snprintf(why, whysize, "%s", c->done_path);
    return true;
}

static void print_cmdline(FILE *out, const struct cmdline *c)
{
    fputs("pixelmill", out);
    for (int i = 0; i < c->argc; i++) {
        const char *a = c->argv[i];
        bool plain = *a != '\0';
        for (const char *q = a; *q && plain; q++)
            plain = strchr("-_./:=,+@%0123456789abcdefghijklmnopqrstuvwxyz"
                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                           *q) != NULL;
        if (plain) {
            fprintf(out, " %s", a);
        } else {
            fputs(" '", out);
            for (const char *q = a; *q; q++)
                *q == '\'' ? fputs("'\\''", out) : fputc(*q, out);
            fputc('\'', out);
        }
    }
    fputc('\n', out);
}

int cmd_run(int argc, char **argv, const struct pm_mpi *mpi)
{
    const char *file = NULL, *only = NULL;
    bool list = false, dry = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (mpi->rank == 0)
                fputs(usage, stdout);
            return PM_EXIT_OK;
        } else if (!strcmp(a, "--only") && i + 1 < argc) {
            only = argv[++i];
        } else if (!strncmp(a, "--only=", 7)) {
            only = a + 7;
        } else if (!strcmp(a, "--list")) {
            list = true;
        } else if (!strcmp(a, "--dry-run")) {
            dry = true;
        } else if (a[0] == '-' || file) {
            if (mpi->rank == 0)
                pm_log_error("run: unexpected argument '%s'; see 'pixelmill run --help'", a);
            return PM_EXIT_USAGE;
        } else {
            file = a;
        }
    }
    if (!file) {
        if (mpi->rank == 0)
            fputs(usage, stderr);
        return PM_EXIT_USAGE;
    }
    struct pipeline p;
    int rc = pipeline_load(&p, file, mpi->rank);
    if (rc >= 0) {
        pipeline_release(&p);
        return rc;
    }
    int only_id = -1;
    if (only && ((only_id = stage_find(only)) < 0 || !p.st[only_id].present)) {
        if (mpi->rank == 0)
            pm_log_error("run: --only %s: %s has no [%s] section", only, file, only);
        pipeline_release(&p);
        return PM_EXIT_USAGE;
    }
    if (list) {
        if (mpi->rank == 0)
            for (int i = 0; i < p.nstages; i++)
                printf("%s\n", stage_defs[p.order[i]].name);
        pipeline_release(&p);
        return PM_EXIT_OK;
    }
    rc = PM_EXIT_OK;
    for (int i = 0; i < p.nstages && rc == PM_EXIT_OK; i++) {
        int s = p.order[i];
        const char *name = stage_defs[s].name;
        struct cmdline c;
        if (cmdline_build(&p, s, &c) != PM_OK) {
            pm_log_error("run: out of memory");
            cmdline_release(&c);
            rc = PM_EXIT_FAILED;
            break;
        }
        char why[4200] = "";
        int complete = 0;
        if (mpi->rank == 0)
            complete = stage_complete(&p, s, &c, why, sizeof why);
        if (mpi->size > 1)
            MPI_CHECK(MPI_Bcast(&complete, 1, MPI_INT, 0, MPI_COMM_WORLD));
        if (dry) {
            if (mpi->rank == 0) {
                printf("# %s: %s (%s)\n", name, complete ? "complete" : "to run", why);
                print_cmdline(stdout, &c);
            }
        } else if (only_id >= 0 && s != only_id) {
            // --only: the stages before it must be complete; those after are not looked at
            if (!complete && p.st[s].order < p.st[only_id].order) {
                if (mpi->rank == 0)
                    pm_log_error("run: --only %s: the earlier stage %s is not complete (%s)", only,
                                 name, why);
                rc = PM_EXIT_FAILED;
            }
        } else if (complete) {
            if (mpi->rank == 0)
                pm_log_info("run: %s complete (%s), skipping", name, why);
        } else if (pm_signal_pending()) {
            rc = PM_EXIT_RESUMABLE;
        } else {
            if (mpi->rank == 0) {
                pm_log_info("run: %s (%s):", name, why);
                print_cmdline(stderr, &c);
                fflush(stderr);
            }
            pm_log_set_quiet(0); // a stage's --quiet is its own
            rc = stage_defs[s].fn(c.argc, c.argv, mpi);
            pm_log_set_quiet(0);
            fflush(stdout);
            if (rc == PM_EXIT_OK && pm_signal_pending())
                rc = PM_EXIT_RESUMABLE; // done, but asked to stop: the rest after requeue
            if (mpi->rank == 0 && rc != PM_EXIT_OK)
                pm_log_error("run: %s exited %d%s", name, rc,
                             rc == PM_EXIT_RESUMABLE ? " (stopped by a signal; rerun to resume)"
                                                     : "");
        }
        cmdline_release(&c);
    }
    if (rc == PM_EXIT_OK && !dry && mpi->rank == 0)
        pm_log_info("run: %s: %s", file, only ? "stage done" : "pipeline done");
    pipeline_release(&p);
    return rc;
}
